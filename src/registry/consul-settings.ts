// How to reach Consul: the standard CONSUL_* environment variables, overridden by config, turned into a `consul` client.

import { readFileSync } from 'node:fs';
import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import Consul from 'consul';
import type { FieldReader } from '../config';
import { MeshError } from '../errors';

/** Connection settings for Consul's HTTP API, after env and config are merged and files are read. */
export interface ConsulSettings {
  /** "host:port" of the Consul HTTP API. @default "127.0.0.1:8500" */
  readonly address: string;
  /** @default "http" ("https" when CONSUL_HTTP_SSL is true or the address starts with https://) */
  readonly scheme: 'http' | 'https';
  /** ACL token sent as X-Consul-Token. */
  readonly token?: string;
  /** Read at resolve time, trimmed; wins over `token` (as in Consul's Go client). */
  readonly tokenFile?: string;
  /** PEM file of the CA that signed Consul's HTTPS certificate. */
  readonly caFile?: string;
  /** Client certificate and key for mutual TLS; both or neither. */
  readonly certFile?: string;
  readonly keyFile?: string;
  /** Name to verify Consul's certificate against (SNI), when it differs from the address's host. */
  readonly tlsServerName?: string;
  /** `dc` query parameter; the local agent's datacenter when unset. */
  readonly datacenter?: string;
}

export type ConsulSettingsInput = { -readonly [K in keyof ConsulSettings]?: ConsulSettings[K] };

/** Reads the connection fields of a `consul` config block (address, scheme, token, TLS files, datacenter); file paths go through `path`. */
export function readConsulConnection(c: FieldReader, path: (p: string) => string): ConsulSettingsInput {
  const opt = (key: string): Record<string, string> => (c.has(key) ? { [key]: c.string(key, '') } : {});
  const file = (key: string): Record<string, string> => (c.has(key) ? { [key]: path(c.string(key, '')) } : {});
  return {
    ...opt('address'),
    ...(c.has('scheme') ? { scheme: c.oneOf('scheme', ['http', 'https'] as const, 'http') } : {}),
    ...opt('token'),
    ...file('tokenFile'),
    ...file('caFile'),
    ...file('certFile'),
    ...file('keyFile'),
    ...opt('tlsServerName'),
    ...opt('datacenter'),
  };
}

const ENV_BOOL_TRUE = new Set(['1', 't', 'T', 'TRUE', 'true', 'True']);
const ENV_BOOL_FALSE = new Set(['0', 'f', 'F', 'FALSE', 'false', 'False']);

/**
 * Reads the variables Consul's own CLI and Go client read: CONSUL_HTTP_ADDR (host:port, http://..., https://...),
 * CONSUL_HTTP_TOKEN, CONSUL_HTTP_TOKEN_FILE, CONSUL_HTTP_SSL, CONSUL_CACERT, CONSUL_CLIENT_CERT,
 * CONSUL_CLIENT_KEY, CONSUL_TLS_SERVER_NAME. Only the variables that are set appear in the result.
 * @throws MeshError MESH_ERR_CONFIG for a CONSUL_HTTP_SSL that is not a boolean or an unsupported address
 */
export function consulSettingsFromEnv(env: NodeJS.ProcessEnv = process.env): ConsulSettingsInput {
  const out: ConsulSettingsInput = {};
  const addr = env.CONSUL_HTTP_ADDR?.trim();
  if (addr) Object.assign(out, parseAddress(addr, 'env CONSUL_HTTP_ADDR'));
  const ssl = env.CONSUL_HTTP_SSL?.trim();
  if (ssl) {
    if (ENV_BOOL_TRUE.has(ssl)) out.scheme = 'https';
    else if (ENV_BOOL_FALSE.has(ssl)) out.scheme = out.scheme ?? 'http';
    else throw new MeshError('MESH_ERR_CONFIG', `env CONSUL_HTTP_SSL: got ${JSON.stringify(ssl)}; expected true or false`);
  }
  const pairs: [keyof ConsulSettingsInput, string][] = [
    ['token', 'CONSUL_HTTP_TOKEN'],
    ['tokenFile', 'CONSUL_HTTP_TOKEN_FILE'],
    ['caFile', 'CONSUL_CACERT'],
    ['certFile', 'CONSUL_CLIENT_CERT'],
    ['keyFile', 'CONSUL_CLIENT_KEY'],
    ['tlsServerName', 'CONSUL_TLS_SERVER_NAME'],
  ];
  for (const [key, name] of pairs) {
    const v = env[name]?.trim();
    if (v) (out as Record<string, string>)[key] = v;
  }
  return out;
}

/**
 * Merges config over env (config wins field by field), reads the token file and checks the TLS files pair up.
 * @throws MeshError MESH_ERR_CONFIG naming the field and the value seen
 */
export function resolveConsulSettings(config: ConsulSettingsInput = {}, env: NodeJS.ProcessEnv = process.env): ConsulSettings {
  const fromEnv = consulSettingsFromEnv(env);
  // A token given in config beats both token variables; within one layer the file wins, as in Consul's Go client.
  if (config.token !== undefined || config.tokenFile !== undefined) {
    delete fromEnv.token;
    delete fromEnv.tokenFile;
  }
  const fromConfig = config.address ? { ...config, ...parseAddress(config.address, 'consul.address', config.scheme) } : config;
  const merged: ConsulSettingsInput = { ...fromEnv, ...stripUndefined(fromConfig) };
  const address = merged.address ?? '127.0.0.1:8500';
  let token = merged.token;
  if (merged.tokenFile) {
    try {
      token = readFileSync(merged.tokenFile, 'utf8').trim();
    } catch (err) {
      throw new MeshError('MESH_ERR_CONFIG', `consul token file ${merged.tokenFile} (CONSUL_HTTP_TOKEN_FILE or consul.tokenFile) cannot be read: ${(err as Error).message}`, { cause: err });
    }
  }
  if (!merged.certFile !== !merged.keyFile) {
    throw new MeshError('MESH_ERR_CONFIG', `consul client certificate and key go together: got ${merged.certFile ? 'a certificate' : 'a key'} only (CONSUL_CLIENT_CERT / CONSUL_CLIENT_KEY or consul.certFile / consul.keyFile)`);
  }
  return Object.freeze({ ...merged, address, scheme: merged.scheme ?? 'http', ...(token ? { token } : {}) });
}

/** Splits a scheme off an address; like Consul's Go client, a missing port means the scheme's default (80/443). */
function parseAddress(raw: string, where: string, scheme?: 'http' | 'https'): { address: string; scheme?: 'http' | 'https' } {
  const m = raw.match(/^(?:(https?|unix):\/\/)?([^/\s]+?)\/?$/);
  if (!m || m[1] === 'unix') {
    throw new MeshError('MESH_ERR_CONFIG', `${where}: got ${JSON.stringify(raw)}; expected host:port, http://host:port or https://host:port (unix sockets are not supported yet)`);
  }
  const s = (m[1] as 'http' | 'https' | undefined) ?? scheme;
  return s ? { address: m[2]!, scheme: s } : { address: m[2]! };
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

function readPem(file: string | undefined, what: string): Buffer | undefined {
  if (!file) return undefined;
  try {
    return readFileSync(file);
  } catch (err) {
    throw new MeshError('MESH_ERR_CONFIG', `consul ${what} ${file} cannot be read: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * A keep-alive HTTP(S) agent for Consul's API carrying the TLS material of `settings`.
 * @throws MeshError MESH_ERR_CONFIG when a TLS file cannot be read
 */
export function consulHttpAgent(settings: ConsulSettings): HttpAgent | HttpsAgent {
  return settings.scheme === 'https'
    ? new HttpsAgent({
        keepAlive: true,
        ca: readPem(settings.caFile, 'CA file'),
        cert: readPem(settings.certFile, 'client certificate'),
        key: readPem(settings.keyFile, 'client key'),
        ...(settings.tlsServerName ? { servername: settings.tlsServerName.replace(/:\d+$/, '') } : {}),
      })
    : new HttpAgent({ keepAlive: true });
}

/** How long a request to Consul may take unless it says otherwise (blocking queries set their own). */
export const CONSUL_REQUEST_TIMEOUT_MS = 5000;

/**
 * A `consul` client for `settings`, with a keep-alive agent carrying the TLS material, and a timeout on every
 * request that does not set its own (a Consul that accepts and never answers must not hang registration or shutdown).
 * Call `destroy()` on it to close its sockets.
 * @throws MeshError MESH_ERR_CONFIG when a TLS file cannot be read
 */
export function createConsulClient(settings: ConsulSettings, requestTimeoutMs = CONSUL_REQUEST_TIMEOUT_MS): Consul {
  const secure = settings.scheme === 'https';
  const agent = consulHttpAgent(settings);
  const defaults = { timeout: requestTimeoutMs, ...(settings.token ? { token: settings.token } : {}), ...(settings.datacenter ? { dc: settings.datacenter } : {}) };
  // The published ConsulOptions type lacks baseUrl; the client (papi) honours it.
  return new Consul({ baseUrl: `${secure ? 'https' : 'http'}://${settings.address}/v1`, agent, defaults } as ConstructorParameters<typeof Consul>[0]);
}
