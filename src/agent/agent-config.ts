// The agent's configuration: file + MESH_* environment + flags, validated once (every problem reported) and frozen.

import { hostname } from 'node:os';
import { resolve } from 'node:path';
import { NAME_PATTERN } from '../ca';
import { MESH_INBOUND_PORT_META, MESH_NAMESPACE_META, MESH_PROTOCOLS, readConsulConnection, type ConsulSettingsInput, type MeshProtocol } from '../registry';
import { deepFreeze, FieldReader, readLayers, type HostPort, type LayeredSetting } from '../config';
import { parseCidr } from '../capture/virtual-ips';
import type { CaptureSettings } from '../capture/capture-plan';
import type { AccessLogSettings, TracingSettings } from '../telemetry';
import { readAccessLog, readTracing } from './telemetry-config';
import { DEFAULT_PROXY_LIMITS, type ProxyLimits } from '../proxy';

export type ServiceProtocol = MeshProtocol;

/** An upstream a local service calls: a local port that leads to a remote service. */
export interface UpstreamConfig {
  readonly service: string;
  readonly namespace: string;
  readonly listen: HostPort;
  /** http: requests are parsed, routed and balanced one by one over pooled connections; tcp: bytes. @default tcp */
  readonly protocol: ServiceProtocol;
  /** With capture: the port apps dial on the service's name, virtual IP or endpoint addresses. @default the listen port */
  readonly servicePort: number;
}

/** The Consul check registered with a service (consul.registerServices); one kind. */
export type ServiceCheckConfig =
  /** The Consul agent GETs `path` on the service's target every interval. */
  | { readonly http: string; readonly intervalMs: number; readonly timeoutMs: number }
  /** The Consul agent connects to the service's target every interval. */
  | { readonly tcp: true; readonly intervalMs: number; readonly timeoutMs: number }
  /** The mesh agent probes the target over TCP every ttl/3 and reports pass or fail. */
  | { readonly ttlMs: number };

/** A service running on this node. */
export interface LocalServiceConfig {
  readonly name: string;
  readonly namespace: string;
  /** Where the local app listens. */
  readonly target: HostPort;
  readonly protocol: ServiceProtocol;
  /** The workload's labels, for VirtualService `match.sourceLabels` and policy selectors (`selector.matchLabels`); `app: <name>` unless set. */
  readonly labels: Readonly<Record<string, string>>;
  readonly upstreams: readonly UpstreamConfig[];
  /** Consul tags and meta of its registration (consul.registerServices). @default [] / {} */
  readonly tags: readonly string[];
  readonly meta: Readonly<Record<string, string>>;
  /** Its Consul check; a TCP check on the target when absent. */
  readonly check: ServiceCheckConfig | undefined;
}

/** The `consul` block: connection (as the CONSUL_* variables; unset fields come from them) and how to watch. */
export interface ConsulDiscoveryConfig extends ConsulSettingsInput {
  /** Register the node's mesh services too (the agent always registers itself as `mesh-agent`). @default false */
  readonly registerServices: boolean;
  /** Take the node's services from the local Consul agent (/v1/agent/services): those tagged `mesh` or with meta mesh-enabled=true. @default false */
  readonly localServices: boolean;
  /** Time between two anti-entropy passes that register again what Consul forgot. @default 30000 */
  readonly resyncIntervalMs: number;
  /** Find the server replicas (HA mode) in Consul's catalog, service `mesh-server`, and move to another when the one in use fails. @default false */
  readonly discoverServers?: boolean;
  /** Allow stale reads from any Consul server. @default false */
  readonly stale: boolean;
  /** Blocking query wait. @default 60000 */
  readonly waitMs: number;
  /** Least time between two queries of one service. @default 250 */
  readonly minIntervalMs: number;
}

/** Validated agent settings. */
export interface AgentConfig {
  readonly nodeName: string;
  /** Keys, certificates and enrollment. @default "./mesh-agent-state" */
  readonly stateDir: string;
  /** host:port of the server's agent port; when absent, taken from the join token / saved state. */
  readonly server: string | undefined;
  /** The address other agents dial for this node (reported to the server). @default inbound host, or 127.0.0.1 */
  readonly address: string;
  /** mTLS from other agents. @default 0.0.0.0:15443 */
  readonly inbound: HostPort;
  /** Admin: /ready, /status, /config_dump. @default 127.0.0.1:15000 */
  readonly admin: HostPort;
  /** Static endpoints of remote services (YAML). */
  readonly endpointsFile: string | undefined;
  /** Istio VirtualService / DestinationRule YAML applied to this agent's upstreams; re-read on SIGHUP. */
  readonly policyFile: string | undefined;
  /** Discovery through the Consul catalog, when the `consul` block is present (unset fields: CONSUL_* variables). */
  readonly consul: ConsulDiscoveryConfig | undefined;
  readonly services: readonly LocalServiceConfig[];
  /** Transparent capture (iptables nat rules and the DNS responder); see docs/capture.md. */
  readonly capture: CaptureConfig;
  /** Policy gossip with the agents this one calls (docs/gossip.md). */
  readonly gossip: GossipConfig;
  /** Per-request telemetry of the data plane (Istio metrics, access log, traces, taps); false takes it off the request path entirely. Read at start. @default true */
  readonly requestTelemetry: boolean;
  /** HTTP/1.1 to other agents multiplexed on one mTLS connection per endpoint (mesh-mux/1, docs/mux.md); false: one connection per request in flight. Read at start. @default true */
  readonly multiplex: boolean;
  /** JSON access logs of requests and TCP connections. @default mode off */
  readonly accessLog: AccessLogSettings;
  /** Spans exported as OTLP/HTTP JSON, when present. */
  readonly tracing: TracingSettings | undefined;
  /** What a client may send the proxy (heads, headers, retry bodies, connections, HTTP/2); a restart applies a change. */
  readonly limits: ProxyLimits;
}

/** The `capture` block: when the agent programs the rules, what they hold (CaptureSettings) and the DNS responder. */
export interface CaptureConfig extends CaptureSettings {
  /** Program the nat table while the agent runs (flag --capture). @default false */
  readonly enabled: boolean;
  /** The DNS responder's UDP address, or undefined when dns.enabled is false. @default 127.0.0.1:53 */
  readonly dns: HostPort | undefined;
}

/** The `gossip` block. */
export interface GossipConfig {
  /** @default true */
  readonly enabled: boolean;
  /** Time between two rounds. @default 30000 */
  readonly intervalMs: number;
  /** Peers dialed per round. @default 3 */
  readonly fanout: number;
}

/** Flag / env names for the settings that have them, with the field path each one sets. */
export const AGENT_SETTINGS = [
  { flag: 'state-dir', env: 'MESH_STATE_DIR', path: 'stateDir' },
  { flag: 'server', env: 'MESH_SERVER', path: 'server' },
  { flag: 'node-name', env: 'MESH_NODE_NAME', path: 'nodeName' },
  { flag: 'address', env: 'MESH_ADDRESS', path: 'address' },
  { flag: 'inbound-listen', env: 'MESH_INBOUND_LISTEN', path: 'inbound.listen' },
  { flag: 'admin-listen', env: 'MESH_ADMIN_LISTEN', path: 'admin.listen' },
  { flag: 'endpoints-file', env: 'MESH_ENDPOINTS_FILE', path: 'endpointsFile' },
  { flag: 'policy', env: 'MESH_POLICY_FILE', path: 'policyFile' },
  { flag: 'capture', env: 'MESH_CAPTURE', path: 'capture.enabled' },
] as const satisfies readonly LayeredSetting[];

export const AGENT_DEFAULTS = {
  stateDir: './mesh-agent-state',
  inbound: { host: '0.0.0.0', port: 15443 },
  admin: { host: '127.0.0.1', port: 15000 },
  namespace: 'default',
  protocol: 'tcp' as ServiceProtocol,
} as const;

const NAME_HINT = 'lower-case letters, digits and "-", at most 63 characters, such as "web" or "billing-api"';

/**
 * Builds the agent config from an optional file, the environment and flags (flags win, then env, then file).
 * Relative paths in the file are relative to the file; those from flags and env to the working directory.
 * @throws MeshError MESH_ERR_CONFIG listing every problem with its field path (and line)
 */
export function loadAgentConfig(opts: { file?: string; flags?: Record<string, unknown>; env?: NodeJS.ProcessEnv }): AgentConfig {
  const { data, problems, baseDir } = readLayers(AGENT_SETTINGS, opts);
  const base = (path: string): string => (problems.origins.has(path) ? process.cwd() : baseDir);
  const r = new FieldReader(data, [], problems);
  const nodeName = r.string('nodeName', hostname(), { pattern: /^[A-Za-z0-9._-]{1,253}$/, hint: 'letters, digits, ".", "_" and "-"' });
  const stateDir = resolve(base('stateDir'), r.string('stateDir', AGENT_DEFAULTS.stateDir));
  const server = r.has('server') ? r.string('server', '', { pattern: /^[^\s:]+:\d{1,5}$/, hint: 'an address "host:port" such as "10.0.0.5:15010"' }) : undefined;
  const inboundR = r.object('inbound');
  const inbound = inboundR.hostPort('listen', AGENT_DEFAULTS.inbound);
  inboundR.done();
  const adminR = r.object('admin');
  const admin = adminR.hostPort('listen', AGENT_DEFAULTS.admin, '127.0.0.1');
  adminR.done();
  const address = r.string('address', inbound.host === '0.0.0.0' || inbound.host === '::' ? '127.0.0.1' : inbound.host);
  const endpointsFile = r.has('endpointsFile') ? resolve(base('endpointsFile'), r.string('endpointsFile', '')) : undefined;
  const policyFile = r.has('policyFile') ? resolve(base('policyFile'), r.string('policyFile', '')) : undefined;
  const consul = r.has('consul') ? readConsul(r.object('consul'), (p) => resolve(baseDir, p)) : undefined;
  const services = r.list('services').map(readService);
  const capture = readCapture(r.object('capture'));
  const gossipR = r.object('gossip');
  const gossip = { enabled: gossipR.boolean('enabled', true), intervalMs: gossipR.duration('interval', 30_000, { min: 100 }), fanout: gossipR.integer('fanout', 3, { min: 1, max: 100 }) };
  gossipR.done();
  const requestTelemetry = r.boolean('requestTelemetry', true);
  const multiplex = r.boolean('multiplex', true);
  const accessLog = readAccessLog(r.object('accessLog'), baseDir);
  const tracing = r.has('tracing') ? readTracing(r.object('tracing')) : undefined;
  const limits = readLimits(r.object('limits'));
  r.done();
  checkConflicts(services, inbound, admin, r);
  problems.throwIfAny(`agent configuration${opts.file ? ` in ${opts.file}` : ''}`);
  return deepFreeze({ nodeName, stateDir, server, address, inbound, admin, endpointsFile, policyFile, consul, services, capture, gossip, requestTelemetry, multiplex, accessLog, tracing, limits });
}

function readLimits(l: FieldReader): ProxyLimits {
  const d = DEFAULT_PROXY_LIMITS;
  const out: ProxyLimits = {
    maxHeadBytes: l.integer('maxHeadBytes', d.maxHeadBytes, { min: 1024, max: 1 << 20 }),
    maxHeaders: l.integer('maxHeaders', d.maxHeaders, { min: 8, max: 10_000 }),
    maxRetryBodyBytes: l.integer('maxRetryBodyBytes', d.maxRetryBodyBytes, { min: 0, max: 64 << 20 }),
    maxConnections: l.integer('maxConnections', d.maxConnections, { min: 1, max: 1_000_000 }),
    h2MaxConcurrentStreams: l.integer('h2MaxConcurrentStreams', d.h2MaxConcurrentStreams, { min: 1, max: 2 ** 31 - 1 }),
    h2IdleTimeoutMs: l.duration('h2IdleTimeout', d.h2IdleTimeoutMs, { min: 1000 }),
  };
  l.done();
  return out;
}

function readService(s: FieldReader): LocalServiceConfig {
  const name = s.string('name', '', { required: true, pattern: NAME_PATTERN, hint: NAME_HINT });
  const namespace = s.string('namespace', AGENT_DEFAULTS.namespace, { pattern: NAME_PATTERN, hint: NAME_HINT });
  const port = s.port('port', 0, { required: true });
  const host = s.string('address', '127.0.0.1');
  const protocol = s.oneOf('protocol', MESH_PROTOCOLS, AGENT_DEFAULTS.protocol);
  const labels = { app: name, ...readLabels(s) };
  const upstreams = s.list('upstreams').map((u) => {
    const service = u.string('service', '', { required: true, pattern: NAME_PATTERN, hint: NAME_HINT });
    const ns = u.string('namespace', AGENT_DEFAULTS.namespace, { pattern: NAME_PATTERN, hint: NAME_HINT });
    const uport = u.port('port', 0, { required: true });
    const bind = u.string('bind', '127.0.0.1');
    const uprotocol = u.oneOf('protocol', MESH_PROTOCOLS, AGENT_DEFAULTS.protocol);
    const servicePort = u.port('servicePort', uport);
    u.done();
    return { service, namespace: ns, listen: { host: bind, port: uport }, protocol: uprotocol, servicePort };
  });
  const tags = readTags(s);
  const meta = readMeta(s);
  const check = s.has('check') ? readCheck(s.object('check')) : undefined;
  s.done();
  return { name, namespace, target: { host, port }, protocol, labels, upstreams, tags, meta, check };
}

function readCapture(c: FieldReader): CaptureConfig {
  const enabled = c.boolean('enabled', false);
  const virtualIpRange = c.string('virtualIpRange', '127.240.0.0/16');
  if (c.has('virtualIpRange')) checkCidr(c, 'virtualIpRange', virtualIpRange);
  const redirectInbound = c.boolean('redirectInbound', true);
  const excludeUids = numberList(c, 'excludeUids', 0, 2 ** 32 - 2, 'a uid');
  const excludeCidrs = stringList(c, 'excludeCidrs');
  excludeCidrs.forEach((cidr, i) => checkCidr(c, ['excludeCidrs', i], cidr));
  const excludePorts = numberList(c, 'excludePorts', 1, 65535, 'a port');
  const excludeInboundPorts = numberList(c, 'excludeInboundPorts', 1, 65535, 'a port');
  const d = c.object('dns');
  const dns = d.boolean('enabled', true) ? d.hostPort('listen', { host: '127.0.0.1', port: 53 }, '127.0.0.1') : undefined;
  d.done();
  c.done();
  return { enabled, virtualIpRange, redirectInbound, excludeUids, excludeCidrs, excludePorts, excludeInboundPorts, dns };
}

function checkCidr(c: FieldReader, at: string | (string | number)[], text: string): void {
  try {
    parseCidr(text);
  } catch (err) {
    c.problems.add([...c.path, ...(Array.isArray(at) ? at : [at])], (err as Error).message);
  }
}

function stringList(c: FieldReader, key: string): string[] {
  const raw = c.raw(key);
  if (raw === undefined || raw === null) return [];
  if (!Array.isArray(raw) || raw.some((v) => typeof v !== 'string')) {
    c.fail(key, 'must be a list of strings, such as ["10.0.0.0/8"]');
    return [];
  }
  return raw as string[];
}

function numberList(c: FieldReader, key: string, min: number, max: number, what: string): number[] {
  const raw = c.raw(key);
  if (raw === undefined || raw === null) return [];
  if (!Array.isArray(raw)) {
    c.fail(key, `must be a list, each ${what} (an integer from ${min} to ${max})`);
    return [];
  }
  return raw.flatMap((v, i) => {
    if (typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max) return [v];
    c.problems.add([...c.path, key, i], `got ${JSON.stringify(v)}, expected ${what} (an integer from ${min} to ${max})`);
    return [];
  });
}

function readTags(s: FieldReader): string[] {
  if (!s.has('tags')) return [];
  const raw = s.raw('tags');
  if (!Array.isArray(raw)) {
    s.fail('tags', 'must be a list of strings, such as [v1, primary]');
    return [];
  }
  return raw.flatMap((t, i) => {
    if ((typeof t !== 'string' && typeof t !== 'number') || String(t) === '') {
      s.problems.add([...s.path, 'tags', i], 'must be a non-empty string');
      return [];
    }
    return [String(t)];
  });
}

/** Consul's rules for service meta (structs.ValidateServiceMetadata), plus the keys the agent sets itself. */
const META_KEY = /^[a-zA-Z0-9_-]+$/;
const AGENT_META = new Set([MESH_INBOUND_PORT_META, MESH_NAMESPACE_META]);

function readMeta(s: FieldReader): Record<string, string> {
  if (!s.has('meta')) return {};
  const raw = s.raw('meta');
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    s.fail('meta', 'must be a mapping of key: "value"');
    return {};
  }
  const entries = Object.entries(raw as Record<string, unknown>);
  if (entries.length > 64) s.fail('meta', `has ${entries.length} keys; Consul allows at most 64`);
  const out: Record<string, string> = {};
  for (const [k, v] of entries) {
    const at = [...s.path, 'meta', k];
    if (!META_KEY.test(k) || k.length > 128) s.problems.add(at, 'a meta key is letters, digits, "_" and "-", at most 128 characters');
    else if (k.startsWith('consul-')) s.problems.add(at, 'the prefix "consul-" is reserved by Consul');
    else if (AGENT_META.has(k)) s.problems.add(at, `${k} is set by the agent itself`);
    else if ((typeof v !== 'string' && typeof v !== 'number' && typeof v !== 'boolean') || String(v).length > 512) s.problems.add(at, 'a meta value is a string of at most 512 characters');
    else out[k] = String(v);
  }
  return out;
}

const CHECK_DEFAULTS = { intervalMs: 10_000, timeoutMs: 2_000 } as const;

function readCheck(c: FieldReader): ServiceCheckConfig | undefined {
  const kinds = (['http', 'tcp', 'ttl'] as const).filter((k) => c.has(k));
  const interval = c.duration('interval', CHECK_DEFAULTS.intervalMs, { min: 1000 });
  const timeout = c.duration('timeout', CHECK_DEFAULTS.timeoutMs, { min: 1000 });
  let out: ServiceCheckConfig | undefined;
  if (kinds.length !== 1) {
    c.problems.add(c.path, kinds.length === 0 ? 'needs one of http (a path such as "/health"), tcp (true) or ttl (a duration)' : `has ${kinds.join(' and ')}; give exactly one of http, tcp or ttl`);
  } else if (kinds[0] === 'http') {
    const path = c.string('http', '/', { pattern: /^\/\S*$/, hint: 'a path on the service\'s app starting with "/", such as "/health"' });
    out = { http: path, intervalMs: interval, timeoutMs: timeout };
  } else if (kinds[0] === 'tcp') {
    if (c.boolean('tcp', true) !== true) c.fail('tcp', 'must be true (leave the check out for the default TCP check)');
    out = { tcp: true, intervalMs: interval, timeoutMs: timeout };
  } else {
    out = { ttlMs: c.duration('ttl', 30_000, { min: 3000 }) };
    for (const k of ['interval', 'timeout']) if (c.has(k)) c.fail(k, 'applies to http and tcp checks; a ttl check is kept by the agent every ttl/3');
  }
  c.done();
  return out;
}

/** Kubernetes-style label keys (optionally `prefix/`), values of at most 63 letters, digits, "-", "_" and ".". */
const LABEL_KEY = /^([a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?\/)?[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$/;
const LABEL_VALUE = /^([A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)?$/;

function readLabels(s: FieldReader): Record<string, string> {
  const raw = s.raw('labels');
  if (raw === undefined || raw === null) return {};
  if (typeof raw !== 'object' || Array.isArray(raw)) {
    s.fail('labels', 'must be a mapping of label: value, such as {version: v2}');
    return {};
  }
  const labels: Record<string, string> = {};
  for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
    const value = typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean' ? String(v) : undefined;
    if (!LABEL_KEY.test(k)) s.problems.add([...s.path, 'labels', k], `${JSON.stringify(k)} is not a label name (letters, digits, "-", "_", ".", optionally after "prefix/")`);
    else if (value === undefined || !LABEL_VALUE.test(value)) s.problems.add([...s.path, 'labels', k], `got ${JSON.stringify(v)}, expected a label value (at most 63 letters, digits, "-", "_" and ".")`);
    else labels[k] = value;
  }
  return labels;
}

function checkConflicts(services: readonly LocalServiceConfig[], inbound: HostPort, admin: HostPort, r: FieldReader): void {
  const seen = new Map<string, number>();
  services.forEach((s, i) => {
    const key = `${s.namespace}/${s.name}`;
    if (s.name && seen.has(key)) r.fail('services', `service ${key} is listed twice (items ${seen.get(key)} and ${i})`);
    seen.set(key, i);
  });
  const ports = new Map<number, string>([
    [inbound.port, 'inbound.listen'],
    [admin.port, 'admin.listen'],
  ]);
  services.forEach((s, i) =>
    s.upstreams.forEach((u, j) => {
      if (!u.listen.port) return;
      const other = ports.get(u.listen.port);
      if (other) r.problems.add(['services', i, 'upstreams', j, 'port'], `port ${u.listen.port} is already used by ${other}`);
      else ports.set(u.listen.port, `services[${i}].upstreams[${j}]`);
    }),
  );
}

function readConsul(c: FieldReader, path: (p: string) => string): ConsulDiscoveryConfig {
  const out: ConsulDiscoveryConfig = {
    ...readConsulConnection(c, path),
    registerServices: c.boolean('registerServices', false),
    localServices: c.boolean('localServices', false),
    discoverServers: c.boolean('discoverServers', false),
    resyncIntervalMs: c.duration('resyncInterval', 30_000, { min: 1000 }),
    stale: c.boolean('stale', false),
    waitMs: c.duration('wait', 60_000, { min: 1000 }),
    minIntervalMs: c.duration('minInterval', 250),
  };
  c.done();
  return out;
}
