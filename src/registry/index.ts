// Where endpoints come from: the discovery update stream and its sources (static file now; Consul next).
export { endpointKey, serviceKeyString, type DiscoverySource, type DiscoveryUpdate, type Endpoint, type ServiceKey } from './discovery';
export { StaticFileSource, readEndpointsFile } from './static-file-source';
