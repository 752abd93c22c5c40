// The data plane: listeners, the mTLS connector, clusters and load balancers, configured from a compiled snapshot.
export { Cluster } from './cluster';
export { createLoadBalancer, RoundRobin, type LoadBalancer, type LoadBalancerKind } from './load-balancer';
export { InboundListener, type InboundStats } from './inbound-listener';
export { OutboundListener, type OutboundStats } from './outbound-listener';
export { MtlsConnector, type Connector, type ConnectOptions } from './mtls-connector';
export { pipeBoth, type PipeStats } from './pipe';
export { peerSpiffeId } from './peer-identity';
export { Http1RequestFramer, HttpFramingError, errorResponse } from './http1-request-framer';
export type { CredentialStore, InboundRoute, OutboundRoute, ProxyConfig, Protocol } from './proxy-config';
