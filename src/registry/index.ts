// Where endpoints come from: the discovery update stream and its sources (static file, Consul, or both combined).
export { endpointKey, serviceKeyString, type DiscoverySource, type DiscoveryUpdate, type Endpoint, type ServiceKey } from './discovery';
export { StaticFileSource, readEndpointsFile } from './static-file-source';
export { CombinedSource } from './combined-source';
export { consulSettingsFromEnv, createConsulClient, resolveConsulSettings, type ConsulSettings, type ConsulSettingsInput } from './consul-settings';
export { ConsulSource, endpointsFromHealth, MESH_INBOUND_PORT_META, MESH_NAMESPACE_META, type ConsulSourceOptions, type ConsulWatchStatus } from './consul-source';
export { ConsulRegistration, type RegisteredService } from './consul-registration';
