// What the proxy applies after routing picked a service: subsets and effective traffic policies, defaults filled, layers merged.

import { deepFreeze } from '../config';
import type { DestinationRule } from './destination-rule';
import { describeResource } from './resource';
import type { ServiceRef } from './hosts';
import type { ConsistentHashKey, LocalityLbSetting, SimpleLb, TlsMode, TrafficPolicy, TrafficPolicySections } from './traffic-policy';

/** The load balancer for a cluster. */
export interface LoadBalancerPolicy {
  /** @default "LEAST_REQUEST" */
  readonly kind: SimpleLb | 'CONSISTENT_HASH';
  /** Set when kind is CONSISTENT_HASH. */
  readonly hashKey?: ConsistentHashKey;
  readonly locality?: LocalityLbSetting;
  /** Slow start for new endpoints; 0 = none. @default 0 */
  readonly warmupMs: number;
}

/** Circuit-breaking limits; every field filled (4294967295 is Istio's "no limit"). */
export interface ConnectionPoolPolicy {
  /** @default 4294967295 */
  readonly maxConnections: number;
  /** @default 10000 */
  readonly connectTimeoutMs: number;
  /** @default 4294967295 */
  readonly http1MaxPendingRequests: number;
  /** @default 4294967295 */
  readonly http2MaxRequests: number;
  /** 0 = unlimited. @default 0 */
  readonly maxRequestsPerConnection: number;
  /** @default 4294967295 */
  readonly maxRetries: number;
  /** @default 3600000 */
  readonly idleTimeoutMs: number;
}

/** Passive health checking; fields an `outlierDetection` section leaves out get these defaults. */
export interface OutlierDetectionPolicy {
  /** 0 = do not eject on 5xx. @default 5 */
  readonly consecutive5xxErrors: number;
  /** 0 = do not eject on 502/503/504. @default 0 */
  readonly consecutiveGatewayErrors: number;
  /** @default 10000 */
  readonly intervalMs: number;
  /** @default 30000 */
  readonly baseEjectionTimeMs: number;
  /** @default 10 */
  readonly maxEjectionPercent: number;
}

/** The effective policy for one (subset, port) of a service. */
export interface EffectiveTrafficPolicy {
  readonly loadBalancer: LoadBalancerPolicy;
  readonly connectionPool: ConnectionPoolPolicy;
  /** Undefined: outlier detection is off (Istio's default without a DestinationRule setting it). */
  readonly outlierDetection: OutlierDetectionPolicy | undefined;
  /** DISABLE for hosts outside the mesh (MESH_EXTERNAL ServiceEntry or non-mesh names). @default "ISTIO_MUTUAL" */
  readonly tlsMode: TlsMode;
}

/** A subset: the labels its endpoints must carry and its merged policy. */
export interface SubsetPolicy {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly trafficPolicy: EffectiveTrafficPolicy;
}

/** Everything a DestinationRule (or its absence) says about one service. */
export interface DestinationPolicy {
  readonly service: ServiceRef;
  /** "DestinationRule reviews.default", or undefined when defaults apply. */
  readonly source: string | undefined;
  /** The service-level policy (no subset, ports without their own settings). */
  readonly trafficPolicy: EffectiveTrafficPolicy;
  /** Subset name -> subset, in the DestinationRule's order. */
  readonly subsets: ReadonlyMap<string, SubsetPolicy>;
  /** Ports with port-level settings (in the DR or any subset). */
  readonly ports: readonly number[];
  /** The policy for traffic to `subset` (undefined: none) on `port`; an unknown subset gets the service-level policy. */
  policyFor(subset?: string, port?: number): EffectiveTrafficPolicy;
}

const UNLIMITED = 4_294_967_295;

/** Defaults that apply when no DestinationRule says otherwise (Istio's and Envoy's). */
export const TRAFFIC_POLICY_DEFAULTS = {
  /** Istio's default since 1.14. */
  loadBalancer: { kind: 'LEAST_REQUEST', warmupMs: 0 } as LoadBalancerPolicy,
  connectionPool: {
    maxConnections: UNLIMITED,
    connectTimeoutMs: 10_000,
    http1MaxPendingRequests: UNLIMITED,
    http2MaxRequests: UNLIMITED,
    maxRequestsPerConnection: 0,
    maxRetries: UNLIMITED,
    idleTimeoutMs: 3_600_000,
  } as ConnectionPoolPolicy,
  /** Filled in for fields an `outlierDetection` section leaves out. */
  outlierDetection: { consecutive5xxErrors: 5, consecutiveGatewayErrors: 0, intervalMs: 10_000, baseEjectionTimeMs: 30_000, maxEjectionPercent: 10 } as OutlierDetectionPolicy,
  /** Mesh services; external (ServiceEntry MESH_EXTERNAL) hosts default to DISABLE. */
  tlsMode: 'ISTIO_MUTUAL' as TlsMode,
} as const;

/** Applies one layer: each section it sets replaces the whole section (Istio's merge), missing fields get defaults. */
function applyLayer(base: EffectiveTrafficPolicy, layer: TrafficPolicySections | undefined): EffectiveTrafficPolicy {
  if (!layer) return base;
  const d = TRAFFIC_POLICY_DEFAULTS;
  let { loadBalancer, connectionPool, outlierDetection, tlsMode } = base;
  if (layer.loadBalancer) {
    const lb = layer.loadBalancer;
    loadBalancer = {
      kind: lb.consistentHash ? 'CONSISTENT_HASH' : (lb.simple ?? d.loadBalancer.kind),
      ...(lb.consistentHash ? { hashKey: lb.consistentHash } : {}),
      ...(lb.localityLbSetting ? { locality: lb.localityLbSetting } : {}),
      warmupMs: lb.warmupDurationMs ?? 0,
    };
  }
  if (layer.connectionPool) {
    const { tcp = {}, http = {} } = layer.connectionPool;
    const p = d.connectionPool;
    connectionPool = {
      maxConnections: tcp.maxConnections ?? p.maxConnections,
      connectTimeoutMs: tcp.connectTimeoutMs ?? p.connectTimeoutMs,
      http1MaxPendingRequests: http.http1MaxPendingRequests ?? p.http1MaxPendingRequests,
      http2MaxRequests: http.http2MaxRequests ?? p.http2MaxRequests,
      maxRequestsPerConnection: http.maxRequestsPerConnection ?? p.maxRequestsPerConnection,
      maxRetries: http.maxRetries ?? p.maxRetries,
      idleTimeoutMs: http.idleTimeoutMs ?? p.idleTimeoutMs,
    };
  }
  if (layer.outlierDetection) outlierDetection = { ...d.outlierDetection, ...layer.outlierDetection };
  if (layer.tls) tlsMode = layer.tls.mode;
  return { loadBalancer, connectionPool, outlierDetection, tlsMode };
}

/**
 * The policy of `subset` when its DestinationRule entry has a trafficPolicy of its own (it then gets a cluster of its
 * own), else undefined: the service-level policy applies to it.
 */
export function ownSubsetPolicy(dp: DestinationPolicy, subset: string | undefined): EffectiveTrafficPolicy | undefined {
  const own = subset === undefined ? undefined : dp.subsets.get(subset)?.trafficPolicy;
  return own !== undefined && own !== dp.trafficPolicy ? own : undefined;
}

function portLayer(tp: TrafficPolicy | undefined, port: number): TrafficPolicySections | undefined {
  return tp?.portLevelSettings.find((p) => p.port === port);
}

/**
 * The effective policy of `service`: defaults, then the DR's trafficPolicy, then its settings for the port, then the
 * subset's trafficPolicy, then the subset's settings for the port (Istio's order). Everything is computed here, once.
 */
export function buildDestinationPolicy(service: ServiceRef, dr: DestinationRule | undefined, external: boolean): DestinationPolicy {
  const defaults: EffectiveTrafficPolicy = {
    loadBalancer: TRAFFIC_POLICY_DEFAULTS.loadBalancer,
    connectionPool: TRAFFIC_POLICY_DEFAULTS.connectionPool,
    outlierDetection: undefined,
    tlsMode: external ? 'DISABLE' : TRAFFIC_POLICY_DEFAULTS.tlsMode,
  };
  const top = dr?.spec.trafficPolicy;
  const ports = new Set<number>(top?.portLevelSettings.map((p) => p.port) ?? []);
  for (const s of dr?.spec.subsets ?? []) for (const p of s.trafficPolicy?.portLevelSettings ?? []) ports.add(p.port);
  const base = applyLayer(defaults, top);
  // "" is the service level; each entry holds the policy without a port and the policies of ports with settings.
  const levels = new Map<string, { policy: EffectiveTrafficPolicy; byPort: Map<number, EffectiveTrafficPolicy> }>();
  const serviceLevel = { policy: base, byPort: new Map<number, EffectiveTrafficPolicy>() };
  for (const port of ports) serviceLevel.byPort.set(port, applyLayer(base, portLayer(top, port)));
  levels.set('', serviceLevel);
  const subsets = new Map<string, SubsetPolicy>();
  for (const s of dr?.spec.subsets ?? []) {
    const policy = applyLayer(base, s.trafficPolicy);
    const byPort = new Map<number, EffectiveTrafficPolicy>();
    for (const port of ports) byPort.set(port, applyLayer(applyLayer(serviceLevel.byPort.get(port)!, s.trafficPolicy), portLayer(s.trafficPolicy, port)));
    subsets.set(s.name, { name: s.name, labels: s.labels, trafficPolicy: policy });
    levels.set(s.name, { policy, byPort });
  }
  for (const level of levels.values()) {
    deepFreeze(level.policy);
    for (const p of level.byPort.values()) deepFreeze(p);
  }
  for (const s of subsets.values()) deepFreeze(s);
  const portList = [...ports].sort((a, b) => a - b);
  return deepFreeze({
    service,
    source: dr ? describeResource(dr) : undefined,
    trafficPolicy: base,
    subsets,
    ports: portList,
    policyFor(subset?: string, port?: number): EffectiveTrafficPolicy {
      const level = (subset !== undefined ? levels.get(subset) : undefined) ?? serviceLevel;
      return (port !== undefined ? level.byPort.get(port) : undefined) ?? level.policy;
    },
  });
}
