// The few Consul HTTP API calls the HA server makes: KV (with cas/acquire and blocking reads), transactions, sessions, its service.

import type { Agent as HttpAgent } from 'node:http';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { MeshError } from '../../errors';
import { consulHttpAgent, type ConsulSettings } from '../../registry';

/** A KV entry with its value decoded to text. */
export interface KvEntry {
  readonly key: string;
  readonly value: string;
  readonly modifyIndex: number;
  readonly lockIndex: number;
  readonly session: string | undefined;
}

/** One KV operation of a transaction (Consul's /v1/txn KV verbs). */
export type KvOp =
  | { readonly verb: 'set' | 'cas'; readonly key: string; readonly value: string; readonly index?: number }
  | { readonly verb: 'check-session'; readonly key: string; readonly session: string }
  | { readonly verb: 'check-index'; readonly key: string; readonly index: number };

interface RawResponse {
  readonly status: number;
  readonly index: number;
  readonly body: string;
}

/** Requests that are not blocking queries get this long. */
const REQUEST_TIMEOUT_MS = 5000;

export class ConsulApi {
  private readonly agent: HttpAgent;

  /** @throws MeshError MESH_ERR_CONFIG when a TLS file cannot be read */
  constructor(private readonly settings: ConsulSettings) {
    this.agent = consulHttpAgent(settings);
  }

  /** One entry, or undefined (with the index to block on). @throws MeshError MESH_ERR_CONSUL */
  async get(key: string, block?: { index: number; waitMs: number }, signal?: AbortSignal): Promise<{ entry: KvEntry | undefined; index: number }> {
    const r = await this.call('GET', `/v1/kv/${key}`, blockQuery(block), undefined, block ? block.waitMs * 1.1 + 1000 : REQUEST_TIMEOUT_MS, [], signal);
    return { entry: r.status === 404 ? undefined : entries(r.body)[0], index: r.index };
  }

  /** Every entry under `prefix`, key order. @throws MeshError MESH_ERR_CONSUL */
  async list(prefix: string, block?: { index: number; waitMs: number }, signal?: AbortSignal): Promise<{ entries: KvEntry[]; index: number }> {
    const r = await this.call('GET', `/v1/kv/${prefix}`, { recurse: '', ...blockQuery(block) }, undefined, block ? block.waitMs * 1.1 + 1000 : REQUEST_TIMEOUT_MS, [], signal);
    return { entries: r.status === 404 ? [] : entries(r.body), index: r.index };
  }

  /** PUT a value; with cas / acquire / release, false when Consul refused. @throws MeshError MESH_ERR_CONSUL */
  async put(key: string, value: string, opts: { cas?: number; acquire?: string; release?: string } = {}): Promise<boolean> {
    const query: Record<string, string> = {};
    if (opts.cas !== undefined) query.cas = String(opts.cas);
    if (opts.acquire) query.acquire = opts.acquire;
    if (opts.release) query.release = opts.release;
    return (await this.call('PUT', `/v1/kv/${key}`, query, value)).body.trim() === 'true';
  }

  /** Runs KV ops atomically: undefined when applied, else what failed (Consul's rollback reasons). @throws MeshError MESH_ERR_CONSUL */
  async txn(ops: readonly KvOp[]): Promise<string | undefined> {
    const body = ops.map((op) => ({
      KV: {
        Verb: op.verb,
        Key: op.key,
        ...('value' in op ? { Value: Buffer.from(op.value).toString('base64') } : {}),
        ...('index' in op && op.index !== undefined ? { Index: op.index } : {}),
        ...('session' in op ? { Session: op.session } : {}),
      },
    }));
    const r = await this.call('PUT', '/v1/txn', {}, JSON.stringify(body), REQUEST_TIMEOUT_MS, [409]);
    if (r.status !== 409) return undefined;
    const errors = (JSON.parse(r.body) as { Errors?: { OpIndex: number; What: string }[] }).Errors ?? [];
    return errors.map((e) => `op ${e.OpIndex} (${ops[e.OpIndex]?.verb} ${ops[e.OpIndex]?.key}): ${e.What}`).join('; ') || 'transaction rolled back';
  }

  /** Creates a session (behaviour release). @throws MeshError MESH_ERR_CONSUL */
  async createSession(name: string, ttlMs: number, lockDelayMs: number): Promise<string> {
    const r = await this.call('PUT', '/v1/session/create', {}, JSON.stringify({ Name: name, TTL: `${ttlMs / 1000}s`, LockDelay: `${lockDelayMs}ms`, Behavior: 'release' }));
    return (JSON.parse(r.body) as { ID: string }).ID;
  }

  /** Renews a session: false when Consul no longer has it. @throws MeshError MESH_ERR_CONSUL */
  async renewSession(id: string, timeoutMs = REQUEST_TIMEOUT_MS): Promise<boolean> {
    return (await this.call('PUT', `/v1/session/renew/${id}`, {}, undefined, timeoutMs, [404])).status === 200;
  }

  async destroySession(id: string): Promise<void> {
    await this.call('PUT', `/v1/session/destroy/${id}`, {});
  }

  /** Registers a service on the local Consul agent with one TTL check. @throws MeshError MESH_ERR_CONSUL */
  async registerService(s: { id: string; name: string; address: string; port: number; meta: Record<string, string>; ttlMs: number }): Promise<void> {
    const body = { ID: s.id, Name: s.name, Address: s.address, Port: s.port, Meta: s.meta, Check: { CheckID: `service:${s.id}`, TTL: `${s.ttlMs / 1000}s`, DeregisterCriticalServiceAfter: '10m' } };
    await this.call('PUT', '/v1/agent/service/register', { 'replace-existing-checks': '' }, JSON.stringify(body));
  }

  /** Marks the service's TTL check passing. @throws MeshError MESH_ERR_CONSUL */
  async passCheck(serviceId: string): Promise<void> {
    await this.call('PUT', `/v1/agent/check/pass/service:${serviceId}`, {});
  }

  async deregisterService(serviceId: string): Promise<void> {
    await this.call('PUT', `/v1/agent/service/deregister/${serviceId}`, {}, undefined, REQUEST_TIMEOUT_MS, [404]);
  }

  close(): void {
    this.agent.destroy();
  }

  private call(method: string, path: string, query: Record<string, string>, body?: string, timeoutMs = REQUEST_TIMEOUT_MS, accept: number[] = [], signal?: AbortSignal): Promise<RawResponse> {
    const qs = new URLSearchParams({ ...query, ...(this.settings.datacenter ? { dc: this.settings.datacenter } : {}) }).toString().replace(/=(&|$)/g, '$1');
    const secure = this.settings.scheme === 'https';
    const where = `Consul ${method} ${path} at ${this.settings.address}`;
    return new Promise((resolve, reject) => {
      const [host, port] = splitHostPort(this.settings.address, secure ? 443 : 80);
      const req = (secure ? httpsRequest : httpRequest)(
        { host, port, method, path: `${path}${qs ? `?${qs}` : ''}`, agent: this.agent, headers: { ...(this.settings.token ? { 'x-consul-token': this.settings.token } : {}), ...(body !== undefined ? { 'content-length': Buffer.byteLength(body) } : {}) } },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('error', (err) => reject(new MeshError('MESH_ERR_CONSUL', `${where}: ${err.message}`, { cause: err })));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString();
            const status = res.statusCode ?? 0;
            if (status >= 400 && !accept.includes(status) && !(status === 404 && method === 'GET')) {
              return reject(new MeshError('MESH_ERR_CONSUL', `${where} answered ${status}: ${text.trim().slice(0, 300)}`));
            }
            resolve({ status, index: Number(res.headers['x-consul-index'] ?? 0) || 0, body: text });
          });
        },
      );
      if (signal) {
        if (signal.aborted) req.destroy(new Error('cancelled'));
        else signal.addEventListener('abort', () => req.destroy(new Error('cancelled')), { once: true });
      }
      req.setTimeout(timeoutMs, () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
      req.on('error', (err) => {
        const code = (err as NodeJS.ErrnoException).code;
        // A kept-alive socket that Consul (or a proxy before it) closed while idle fails the next request before it
        // was read: a read is sent again on another socket (each retry uses up one such socket, so this ends).
        if (method === 'GET' && req.reusedSocket && code === 'ECONNRESET') return resolve(this.call(method, path, query, body, timeoutMs, accept, signal));
        reject(new MeshError('MESH_ERR_CONSUL', `${where}: ${code ?? err.message}`, { cause: err }));
      });
      req.end(body);
    });
  }
}

function blockQuery(block: { index: number; waitMs: number } | undefined): Record<string, string> {
  // Never block on index 0: Consul answers at once, and looping on it would spin.
  return block ? { index: String(Math.max(1, block.index)), wait: `${Math.round(block.waitMs)}ms` } : {};
}

function entries(text: string): KvEntry[] {
  const list = JSON.parse(text) as { Key: string; Value: string | null; ModifyIndex: number; LockIndex: number; Session?: string }[];
  return list.map((e) => ({ key: e.Key, value: e.Value === null ? '' : Buffer.from(e.Value, 'base64').toString(), modifyIndex: e.ModifyIndex, lockIndex: e.LockIndex, session: e.Session || undefined }));
}

function splitHostPort(address: string, dflt: number): [string, number] {
  const m = address.match(/^\[?([^\]]+?)\]?(?::(\d+))?$/);
  return [m?.[1] ?? address, m?.[2] ? Number(m[2]) : dflt];
}
