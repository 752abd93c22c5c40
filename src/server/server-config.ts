// The server's configuration: file + MESH_* environment + flags, validated once (every problem reported) and frozen.

import { networkInterfaces } from 'node:os';
import { resolve } from 'node:path';
import { deepFreeze, FieldReader, formatHostPort, readLayers, type HostPort, type LayeredSetting } from '../config';
import { readConsulConnection, type ConsulSettingsInput } from '../registry';

/** HA mode (`--ha consul`): one of several replicas, the source of truth in Consul KV. See docs/ha.md. */
export interface HaConfig {
  readonly mode: 'consul';
  /** Consul connection, as the agent's `consul` block (unset fields: CONSUL_* variables). */
  readonly consul: ConsulSettingsInput;
  /** KV prefix that holds the mesh's state, ending in "/". @default "mesh-agent/" */
  readonly prefix: string;
  /** File with the 32-byte key-encryption key (64 hex characters, mode 0600); the same on every replica. */
  readonly keyFile: string;
  /** This replica's name, unique among replicas. @default the advertise address with ":" as "-" */
  readonly replicaName: string;
  /** The admin API URL other replicas redirect writes to. @default http://<adminListen> */
  readonly adminAdvertise: string;
  /** Consul session TTL (Consul accepts 10s to 24h). @default 15s */
  readonly sessionTtlMs: number;
  /** Consul lock delay after a leader's session ends (0 to 60s). @default 5s */
  readonly lockDelayMs: number;
  /** Blocking query wait on KV. @default 60s */
  readonly waitMs: number;
}

/** Validated server settings. Durations are milliseconds. */
export interface ServerConfig {
  /** Holds mesh.db (SQLite) and admin-token. @default "./mesh-server-data" */
  readonly dataDir: string;
  /** Agent channel and enrollment (TLS). @default 0.0.0.0:15010 */
  readonly listen: HostPort;
  /** The address agents dial, written into join tokens. @default first non-loopback IPv4 + listen port */
  readonly advertise: string;
  /** Admin HTTP API, loopback only by default. @default 127.0.0.1:15014 */
  readonly adminListen: HostPort;
  /** @default "mesh.local" */
  readonly trustDomain: string;
  /** @default 24h */
  readonly workloadCertTtlMs: number;
  /** @default 720h (30 days) */
  readonly nodeCertTtlMs: number;
  /** Set in HA mode only. */
  readonly ha: HaConfig | undefined;
}

/** Flag / env names for every setting, with the field path each one sets. */
export const SERVER_SETTINGS = [
  { flag: 'data-dir', env: 'MESH_DATA_DIR', path: 'dataDir' },
  { flag: 'listen', env: 'MESH_LISTEN', path: 'listen' },
  { flag: 'advertise', env: 'MESH_ADVERTISE', path: 'advertise' },
  { flag: 'admin-listen', env: 'MESH_ADMIN_LISTEN', path: 'adminListen' },
  { flag: 'trust-domain', env: 'MESH_TRUST_DOMAIN', path: 'trustDomain' },
  { flag: 'workload-cert-ttl', env: 'MESH_WORKLOAD_CERT_TTL', path: 'workloadCertTtl' },
  { flag: 'node-cert-ttl', env: 'MESH_NODE_CERT_TTL', path: 'nodeCertTtl' },
  { flag: 'ha', env: 'MESH_HA', path: 'ha.mode' },
  { flag: 'ha-consul', env: 'MESH_HA_CONSUL', path: 'ha.consul.address' },
  { flag: 'ha-prefix', env: 'MESH_HA_PREFIX', path: 'ha.prefix' },
  { flag: 'ha-key-file', env: 'MESH_HA_KEY_FILE', path: 'ha.keyFile' },
  { flag: 'ha-replica-name', env: 'MESH_HA_REPLICA_NAME', path: 'ha.replicaName' },
  { flag: 'ha-admin-advertise', env: 'MESH_HA_ADMIN_ADVERTISE', path: 'ha.adminAdvertise' },
  { flag: 'ha-session-ttl', env: 'MESH_HA_SESSION_TTL', path: 'ha.sessionTtl' },
  { flag: 'ha-lock-delay', env: 'MESH_HA_LOCK_DELAY', path: 'ha.lockDelay' },
] as const satisfies readonly LayeredSetting[];

export const SERVER_DEFAULTS = {
  dataDir: './mesh-server-data',
  listen: { host: '0.0.0.0', port: 15010 },
  adminListen: { host: '127.0.0.1', port: 15014 },
  trustDomain: 'mesh.local',
  workloadCertTtlMs: 24 * 3_600_000,
  nodeCertTtlMs: 720 * 3_600_000,
} as const;

function defaultAdvertiseHost(): string {
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  }
  return '127.0.0.1';
}

/**
 * Builds the server config from an optional file, the environment and flags (flags win, then env, then file).
 * @throws MeshError MESH_ERR_CONFIG listing every problem
 */
export function loadServerConfig(opts: { file?: string; flags?: Record<string, unknown>; env?: NodeJS.ProcessEnv }): ServerConfig {
  const { data, problems, baseDir } = readLayers(SERVER_SETTINGS, opts);
  const r = new FieldReader(data, [], problems);
  // Paths in a file are relative to the file; from flags and env, to the working directory.
  const dataDir = resolve(problems.origins.has('dataDir') || !opts.file ? process.cwd() : baseDir, r.string('dataDir', SERVER_DEFAULTS.dataDir));
  const listen = r.hostPort('listen', SERVER_DEFAULTS.listen);
  const adminListen = r.hostPort('adminListen', SERVER_DEFAULTS.adminListen, '127.0.0.1');
  const advertiseHost = listen.host === '0.0.0.0' || listen.host === '::' ? defaultAdvertiseHost() : listen.host;
  const advertise = r.hostPort('advertise', { host: advertiseHost, port: listen.port }, advertiseHost);
  if (advertise.host === '0.0.0.0' || advertise.host === '::') r.fail('advertise', `got ${advertise.host}, expected an address agents can dial (not a wildcard)`);
  const trustDomain = r.string('trustDomain', SERVER_DEFAULTS.trustDomain, { pattern: /^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$/, hint: 'a DNS-like name such as "mesh.local"' });
  const workloadCertTtlMs = r.duration('workloadCertTtl', SERVER_DEFAULTS.workloadCertTtlMs, { min: 2000 });
  const nodeCertTtlMs = r.duration('nodeCertTtl', SERVER_DEFAULTS.nodeCertTtlMs, { min: 2000 });
  const keyFileBase = problems.origins.has('ha.keyFile') || !opts.file ? process.cwd() : baseDir;
  const ha = r.has('ha') ? readHa(r.object('ha'), (p) => resolve(baseDir, p), (p) => resolve(keyFileBase, p), formatHostPort(advertise), adminListen) : undefined;
  r.done();
  problems.throwIfAny(`server configuration${opts.file ? ` in ${opts.file}` : ''}`);
  return deepFreeze({ dataDir, listen, advertise: formatHostPort(advertise), adminListen, trustDomain, workloadCertTtlMs, nodeCertTtlMs, ha });
}

function readHa(h: FieldReader, path: (p: string) => string, keyPath: (p: string) => string, advertise: string, adminListen: HostPort): HaConfig {
  h.oneOf('mode', ['consul'] as const, 'consul');
  if (!h.has('mode')) h.fail('mode', 'is required to turn HA mode on: "consul" (--ha consul)');
  const consul = h.has('consul') ? readConsulConnection(h.object('consul'), path) : {};
  const prefix = h.string('prefix', 'mesh-agent/', { pattern: /^[A-Za-z0-9_-]+(\/[A-Za-z0-9_-]+)*\/?$/, hint: 'a KV path such as "mesh-agent/" (no leading "/", no "..")' });
  const keyFile = keyPath(h.string('keyFile', '', { required: true, hint: 'a file holding 32 random bytes as hex ("openssl rand -hex 32 > ha.key; chmod 600 ha.key")' }));
  const replicaName = h.string('replicaName', advertise.replace(/[:[\]]/g, '-'), { pattern: /^[A-Za-z0-9_.-]{1,128}$/, hint: 'letters, digits, ".", "_" and "-"' });
  const adminHost = adminListen.host === '0.0.0.0' || adminListen.host === '::' ? '127.0.0.1' : adminListen.host;
  const adminAdvertise = h.string('adminAdvertise', `http://${formatHostPort({ host: adminHost, port: adminListen.port })}`, { pattern: /^https?:\/\/[^\s/]+\/?$/, hint: 'a URL such as http://10.0.0.5:15014' }).replace(/\/$/, '');
  const sessionTtlMs = h.duration('sessionTtl', 15_000, { min: 100 });
  const lockDelayMs = h.duration('lockDelay', 5000);
  if (lockDelayMs > 60_000) h.fail('lockDelay', `got ${lockDelayMs / 1000}s, Consul accepts at most 60s`);
  const waitMs = h.duration('wait', 60_000, { min: 100 });
  h.done();
  return { mode: 'consul', consul, prefix: prefix.endsWith('/') ? prefix : `${prefix}/`, keyFile, replicaName, adminAdvertise, sessionTtlMs, lockDelayMs, waitMs };
}
