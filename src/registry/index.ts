// Where endpoints come from: the discovery update stream and its sources (static file, Consul, or both combined).
export { endpointKey, serviceKeyString, type DiscoverySource, type DiscoveryUpdate, type Endpoint, type ServiceKey } from './discovery';
export { StaticFileSource, readEndpointsFile } from './static-file-source';
export { CombinedSource } from './combined-source';
export { consulHttpAgent, consulSettingsFromEnv, createConsulClient, readConsulConnection, resolveConsulSettings, type ConsulSettings, type ConsulSettingsInput } from './consul-settings';
export { ConsulSource, endpointsFromHealth, MESH_INBOUND_PORT_META, MESH_NAMESPACE_META, type ConsulSourceOptions, type ConsulWatchStatus } from './consul-source';
export { ConsulRegistration, checkIdOf, goDuration, probeTcp, type ConsulRegistrationOptions, type RegisteredService, type RegistrationCheck, type RegistrationStatus } from './consul-registration';
export {
  ConsulLocalServices,
  localServicesFromAgent,
  parseUpstreams,
  MESH_PROTOCOLS,
  MESH_TAG,
  MESH_ENABLED_META,
  MESH_PROTOCOL_META,
  MESH_UPSTREAMS_META,
  type MeshProtocol,
  type ConsulLocalService,
  type ConsulLocalUpstream,
  type ConsulLocalServicesOptions,
  type LocalServiceProblem,
  type LocalServicesStatus,
} from './consul-local-services';
