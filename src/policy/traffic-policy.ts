// DestinationRule traffic policy as written: load balancing, connection pool limits, outlier detection, TLS, per-port settings.

import type { FieldReader } from '../config';
import { readDuration, readInteger, readStringList, readStringMap, rejectUnimplemented, oneOf } from './fields';

/** `loadBalancer.simple` values. */
export const SIMPLE_LB = ['ROUND_ROBIN', 'LEAST_REQUEST', 'RANDOM', 'PASSTHROUGH'] as const;
export type SimpleLb = (typeof SIMPLE_LB)[number];

/** `tls.mode` values. */
export const TLS_MODES = ['DISABLE', 'SIMPLE', 'MUTUAL', 'ISTIO_MUTUAL'] as const;
export type TlsMode = (typeof TLS_MODES)[number];

/** `loadBalancer.consistentHash`: exactly one key. */
export type ConsistentHashKey =
  | { readonly httpHeaderName: string }
  | { readonly httpCookie: { readonly name: string; readonly path?: string; readonly ttlMs?: number } }
  | { readonly useSourceIp: true }
  | { readonly httpQueryParameterName: string };

/** `loadBalancer.localityLbSetting`. */
export interface LocalityLbSetting {
  readonly enabled?: boolean;
  readonly distribute: readonly { readonly from: string; readonly to: Readonly<Record<string, number>> }[];
  readonly failover: readonly { readonly from: string; readonly to: string }[];
  readonly failoverPriority: readonly string[];
}

export interface LoadBalancerSettings {
  readonly simple?: SimpleLb;
  readonly consistentHash?: ConsistentHashKey;
  readonly localityLbSetting?: LocalityLbSetting;
  readonly warmupDurationMs?: number;
}

export interface ConnectionPoolSettings {
  readonly tcp?: { readonly maxConnections?: number; readonly connectTimeoutMs?: number };
  readonly http?: {
    readonly http1MaxPendingRequests?: number;
    readonly http2MaxRequests?: number;
    readonly maxRequestsPerConnection?: number;
    readonly maxRetries?: number;
    readonly idleTimeoutMs?: number;
  };
}

export interface OutlierDetection {
  readonly consecutive5xxErrors?: number;
  readonly consecutiveGatewayErrors?: number;
  readonly intervalMs?: number;
  readonly baseEjectionTimeMs?: number;
  readonly maxEjectionPercent?: number;
}

/** The four sections a traffic policy (or one port of it) can set; each replaces the whole section when merged. */
export interface TrafficPolicySections {
  readonly loadBalancer?: LoadBalancerSettings;
  readonly connectionPool?: ConnectionPoolSettings;
  readonly outlierDetection?: OutlierDetection;
  readonly tls?: { readonly mode: TlsMode };
}

/** `portLevelSettings[]` entry. */
export interface PortTrafficPolicy extends TrafficPolicySections {
  readonly port: number;
}

/** `trafficPolicy` of a DestinationRule or of one of its subsets. */
export interface TrafficPolicy extends TrafficPolicySections {
  readonly portLevelSettings: readonly PortTrafficPolicy[];
}

const INT32 = 2_147_483_647;

function readSections(r: FieldReader): TrafficPolicySections {
  const loadBalancer = r.has('loadBalancer') ? readLoadBalancer(r.object('loadBalancer')) : undefined;
  const connectionPool = r.has('connectionPool') ? readConnectionPool(r.object('connectionPool')) : undefined;
  const outlierDetection = r.has('outlierDetection') ? readOutlierDetection(r.object('outlierDetection')) : undefined;
  let tls: { mode: TlsMode } | undefined;
  if (r.has('tls')) {
    const t = r.object('tls');
    if (!t.has('mode')) t.fail('mode', `is required (one of ${TLS_MODES.join(', ')})`);
    tls = { mode: t.oneOf('mode', TLS_MODES, 'ISTIO_MUTUAL') };
    rejectUnimplemented(t, ['clientCertificate', 'privateKey', 'caCertificates', 'credentialName', 'subjectAltNames', 'sni', 'insecureSkipVerify', 'caCrl']);
    t.done();
  }
  return { ...(loadBalancer ? { loadBalancer } : {}), ...(connectionPool ? { connectionPool } : {}), ...(outlierDetection ? { outlierDetection } : {}), ...(tls ? { tls } : {}) };
}

/** Reads a `trafficPolicy` (of a DestinationRule or a subset). */
export function readTrafficPolicy(r: FieldReader): TrafficPolicy {
  const sections = readSections(r);
  const ports = new Set<number>();
  const portLevelSettings = r.list('portLevelSettings').map((p, i): PortTrafficPolicy => {
    let port = 0;
    if (!p.has('port')) p.fail('port', 'is required (port: {number: ...})');
    else {
      const pr = p.object('port');
      port = readInteger(pr, 'number', 1, 65535, { required: true }) ?? 0;
      pr.done();
    }
    if (port && ports.has(port)) r.problems.add([...r.path, 'portLevelSettings', i, 'port'], `port ${port} has settings twice; merge them into one entry`);
    ports.add(port);
    const s = readSections(p);
    p.done();
    return { port, ...s };
  });
  rejectUnimplemented(r, ['tunnel', 'proxyProtocol', 'retryBudget']);
  r.done();
  return { ...sections, portLevelSettings };
}

function readLoadBalancer(r: FieldReader): LoadBalancerSettings {
  oneOf(r, ['simple', 'consistentHash']);
  const simple = r.has('simple') ? r.oneOf('simple', SIMPLE_LB, 'LEAST_REQUEST') : undefined;
  const consistentHash = r.has('consistentHash') ? readConsistentHash(r.object('consistentHash')) : undefined;
  const localityLbSetting = r.has('localityLbSetting') ? readLocality(r.object('localityLbSetting')) : undefined;
  const warmupDurationMs = readDuration(r, 'warmupDurationSecs', { min: 1 });
  r.done();
  return {
    ...(simple ? { simple } : {}),
    ...(consistentHash ? { consistentHash } : {}),
    ...(localityLbSetting ? { localityLbSetting } : {}),
    ...(warmupDurationMs !== undefined ? { warmupDurationMs } : {}),
  };
}

function readConsistentHash(r: FieldReader): ConsistentHashKey | undefined {
  const keys = ['httpHeaderName', 'httpCookie', 'useSourceIp', 'httpQueryParameterName'];
  const set = oneOf(r, keys);
  if (set.length === 0) r.problems.add(r.path, `must set one of ${keys.join(', ')}`);
  let key: ConsistentHashKey | undefined;
  switch (set[0]) {
    case 'httpHeaderName':
      key = { httpHeaderName: r.string('httpHeaderName', '', { pattern: /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, hint: 'a header name' }).toLowerCase() };
      break;
    case 'httpQueryParameterName':
      key = { httpQueryParameterName: r.string('httpQueryParameterName', '', { pattern: /^\S+$/, hint: 'a query parameter name' }) };
      break;
    case 'useSourceIp':
      if (r.boolean('useSourceIp', false)) key = { useSourceIp: true };
      else r.fail('useSourceIp', 'must be true when set (remove it to not hash on the source address)');
      break;
    case 'httpCookie': {
      const c = r.object('httpCookie');
      const name = c.string('name', '', { required: true, pattern: /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, hint: 'a cookie name' });
      const path = c.has('path') ? c.string('path', '/', { pattern: /^\//, hint: 'a path starting with "/"' }) : undefined;
      const ttlMs = readDuration(c, 'ttl');
      rejectUnimplemented(c, ['attributes']);
      c.done();
      key = { httpCookie: { name, ...(path ? { path } : {}), ...(ttlMs !== undefined ? { ttlMs } : {}) } };
      break;
    }
  }
  rejectUnimplemented(r, ['minimumRingSize', 'ringHash', 'maglev']);
  r.done();
  return key;
}

function readLocality(r: FieldReader): LocalityLbSetting {
  const enabled = r.has('enabled') ? r.boolean('enabled', true) : undefined;
  const distribute = r.list('distribute').map((d) => {
    const from = d.string('from', '', { required: true });
    const toRaw = readStringMap(d, 'to');
    const to: Record<string, number> = {};
    let sum = 0;
    for (const [k, v] of Object.entries(toRaw)) {
      const n = Number(v);
      if (!/^\d+$/.test(v) || n > 100) d.problems.add([...d.path, 'to', k], `got ${JSON.stringify(v)}, expected a weight from 0 to 100`);
      to[k] = n;
      sum += n;
    }
    if (Object.keys(toRaw).length === 0) d.fail('to', 'is required (locality: weight)');
    else if (sum !== 100) d.fail('to', `weights add up to ${sum}, expected 100`);
    d.done();
    return { from, to };
  });
  const failover = r.list('failover').map((f) => {
    const from = f.string('from', '', { required: true });
    const to = f.string('to', '', { required: true });
    f.done();
    return { from, to };
  });
  const failoverPriority = readStringList(r, 'failoverPriority');
  if (distribute.length > 0 && failover.length > 0) r.fail('failover', 'cannot be set together with distribute');
  r.done();
  return { ...(enabled !== undefined ? { enabled } : {}), distribute, failover, failoverPriority };
}

function readConnectionPool(r: FieldReader): ConnectionPoolSettings {
  let tcp: ConnectionPoolSettings['tcp'];
  let http: ConnectionPoolSettings['http'];
  if (r.has('tcp')) {
    const t = r.object('tcp');
    const maxConnections = readInteger(t, 'maxConnections', 1, INT32);
    const connectTimeoutMs = readDuration(t, 'connectTimeout', { min: 1 });
    rejectUnimplemented(t, ['tcpKeepalive', 'maxConnectionDuration', 'idleTimeout']);
    t.done();
    tcp = { ...(maxConnections !== undefined ? { maxConnections } : {}), ...(connectTimeoutMs !== undefined ? { connectTimeoutMs } : {}) };
  }
  if (r.has('http')) {
    const h = r.object('http');
    const v = {
      http1MaxPendingRequests: readInteger(h, 'http1MaxPendingRequests', 1, INT32),
      http2MaxRequests: readInteger(h, 'http2MaxRequests', 1, INT32),
      maxRequestsPerConnection: readInteger(h, 'maxRequestsPerConnection', 0, INT32),
      maxRetries: readInteger(h, 'maxRetries', 0, INT32),
      idleTimeoutMs: readDuration(h, 'idleTimeout', { min: 1 }),
    };
    rejectUnimplemented(h, ['h2UpgradePolicy', 'useClientProtocol', 'maxConcurrentStreams']);
    h.done();
    http = Object.fromEntries(Object.entries(v).filter(([, x]) => x !== undefined));
  }
  r.done();
  return { ...(tcp ? { tcp } : {}), ...(http ? { http } : {}) };
}

function readOutlierDetection(r: FieldReader): OutlierDetection {
  const v = {
    consecutive5xxErrors: readInteger(r, 'consecutive5xxErrors', 0, INT32),
    consecutiveGatewayErrors: readInteger(r, 'consecutiveGatewayErrors', 0, INT32),
    intervalMs: readDuration(r, 'interval', { min: 1 }),
    baseEjectionTimeMs: readDuration(r, 'baseEjectionTime', { min: 1 }),
    maxEjectionPercent: readInteger(r, 'maxEjectionPercent', 0, 100),
  };
  rejectUnimplemented(r, ['consecutiveErrors', 'minHealthPercent', 'splitExternalLocalOriginErrors', 'consecutiveLocalOriginFailures']);
  r.done();
  return Object.fromEntries(Object.entries(v).filter(([, x]) => x !== undefined));
}
