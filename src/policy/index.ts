// The policy model's public surface: parse and validate Istio documents, compile them, match requests against routes.

export { parsePolicyText, readPolicyFile, POLICY_KINDS, type PolicyDocument, type PolicyKind } from './documents';
export { compilePolicy, type CompiledPolicy } from './compile';
export { documentSlices, parsePolicySources, withFieldLines, type SourcedDocument } from './document-sources';
export { documentReach, reachesNode, type DocumentReach } from './policy-reach';
export { matchRoute, matchTcpRoute, pickWeighted, rewritePath, redirectLocation, type RouteRequest, type RouteConnection } from './route-match';
export {
  DEFAULT_RETRY_POLICY,
  NO_HEADER_OPS,
  type HttpRouteTable,
  type HttpRouteEntry,
  type HttpMatchConditions,
  type MatchedRoute,
  type RouteAction,
  type WeightedDestination,
  type HeaderOps,
  type HeaderOperationsPair,
  type RetryPolicy,
  type FaultPolicy,
  type MirrorPolicy,
  type RewritePolicy,
  type TcpRouteTable,
  type TcpRouteEntry,
  type TcpMatchedRoute,
  type L4MatchConditions,
  type NamedMatcher,
} from './route-table';
export {
  TRAFFIC_POLICY_DEFAULTS,
  ownSubsetPolicy,
  type DestinationPolicy,
  type EffectiveTrafficPolicy,
  type SubsetPolicy,
  type LoadBalancerPolicy,
  type ConnectionPoolPolicy,
  type OutlierDetectionPolicy,
} from './destination-policy';
export { normalizeHost, formatServiceRef, serviceRefKey, sameService, DEFAULT_NAMESPACE, type ServiceRef } from './hosts';
export { formatPolicyProblem, throwIfProblems, type PolicyProblem, type PolicyError, type DocumentOrigin } from './problems';
export { parseIstioDuration } from './fields';
export { describeResource, type PolicyMetadata, type PolicyResource } from './resource';
export { type StringMatch, type StringMatcher, type StringMatchKind } from './string-match';
export type { VirtualService, VirtualServiceSpec, L4Route } from './virtual-service';
export type { HttpRoute, HttpRetry, HttpRewrite, HttpRedirect, HttpDirectResponse, HttpFaultInjection } from './http-route';
export { RETRY_ON_CONDITIONS, GRPC_STATUS_CODES } from './http-route';
export type { HttpMatchRequest, L4MatchAttributes } from './http-match';
export type { Destination, RouteDestination, Headers, HeaderOperations } from './route-destination';
export type { DestinationRule, DestinationRuleSpec, Subset } from './destination-rule';
export type { TrafficPolicy, TrafficPolicySections, PortTrafficPolicy, LoadBalancerSettings, ConsistentHashKey, LocalityLbSetting, ConnectionPoolSettings, OutlierDetection, SimpleLb, TlsMode } from './traffic-policy';
export type { ServiceEntry, ServiceEntrySpec, ServicePort, WorkloadEntry, Resolution, Location, ServiceProtocol } from './service-entry';
export type { PeerAuthentication, PeerAuthenticationSpec, MtlsMode } from './peer-authentication';
export type { AuthorizationPolicy, AuthorizationPolicySpec, AuthzRule, AuthzSource, AuthzOperation, AuthzCondition, AuthzAction } from './authorization-policy';
export { AuthorizationIndex, WorkloadAuthorization, DRY_RUN_ANNOTATION, describeDenial, principalOf, type AuthzDecision, type AuthzReason, type RuleRef } from './authz';
export { normalizeAuthzPath, type AuthzRequest, type AuthzHttp } from './authz-match';
export { PeerAuthenticationIndex, acceptsMtls, acceptsPlaintext, DEFAULT_MTLS_MODE, type EffectiveMtlsMode, type MtlsModeDecision } from './peer-auth-mode';
export { ROOT_NAMESPACE, selectorMatches, workloadOf, type Workload } from './workload';
export { explainRequest, type ExplainQuery, type ExplainResult, type ExplainDestination } from './explain';
