// The data plane: listeners, the mTLS connector, clusters and load balancers, configured from a compiled snapshot.
export { Cluster, type ClusterOptions, type ClusterPickContext, type ClusterSnapshot, type Lease, type Overflow, type LoadBalancerFactory } from './cluster';
export {
  createLoadBalancer,
  loadBalancerName,
  endpointWeight,
  RoundRobin,
  WeightedRandom,
  LeastRequest,
  RingHash,
  type LoadBalancer,
  type LoadBalancerKind,
  type LoadBalancerName,
  type LoadBalancerSettings,
  type ConsistentHashSettings,
  type PickContext,
  type EndpointStats,
} from './load-balancer';
export { HashRing, hashString } from './hash-ring';
export { OutlierDetector, OUTLIER_DETECTION_DEFAULTS, type OutlierDetectionConfig, type OutlierDetectionSnapshot, type Outcome } from './outlier-detector';
export {
  CircuitBreaker,
  ResourceLimit,
  CIRCUIT_BREAKER_DEFAULTS,
  OVERFLOW_HEADER,
  OVERFLOW_RESPONSE_FLAG,
  OVERFLOW_STATUS,
  type CircuitBreakerThresholds,
  type CircuitBreakerSnapshot,
  type OverflowKind,
} from './circuit-breaker';
export { InboundListener, type InboundStats } from './inbound-listener';
export { OutboundListener, type OutboundStats } from './outbound-listener';
export { MtlsConnector, type Connector, type ConnectOptions } from './mtls-connector';
export { pipeBoth, type PipeStats } from './pipe';
export { peerSpiffeId } from './peer-identity';
export { HttpFramingError, errorResponse } from './http1/http-framing-error';
export { Http1Session, type HttpRouter, type SessionErrorKind } from './http1/http1-session';
export type { Decision, ExchangeOutcome, Target, RetryPlan } from './route-decision';
export { parseHead, buildHead, forwardHead, setOnlyEdits, headerValue, simpleResponse, type HttpHead, type HeadEdits } from './http1/http1-head';
export { BodyFramer } from './http1/body-framer';
export { ConnectionPool, UpstreamConnection, type Dialer, type UpstreamOwner } from './connection-pool';
export type { CredentialStore, InboundRoute, OutboundRoute, Protocol } from './proxy-config';
export { DEFAULT_PROXY_LIMITS, type ProxyLimits } from './proxy-limits';
export { MuxDialer } from './mux/mux-dialer';
export { MUX_ALPN } from './mux/mux-frames';
