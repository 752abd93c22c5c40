// The server's configuration: file + MESH_* environment + flags, validated once (every problem reported) and frozen.

import { networkInterfaces } from 'node:os';
import { resolve } from 'node:path';
import { deepFreeze, FieldReader, formatHostPort, readLayers, type HostPort, type LayeredSetting } from '../config';

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
  r.done();
  problems.throwIfAny(`server configuration${opts.file ? ` in ${opts.file}` : ''}`);
  return deepFreeze({ dataDir, listen, advertise: formatHostPort(advertise), adminListen, trustDomain, workloadCertTtlMs, nodeCertTtlMs });
}
