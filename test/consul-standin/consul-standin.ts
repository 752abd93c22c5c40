// A STAND-IN for Consul's HTTP API, built from Consul's documented API for tests. It is NOT Consul.
//
// No Consul binary can run here, so tests talk to this small HTTP server instead. It implements only what
// mesh-agent relies on, following Consul's API docs and the Go client (facts in
// ../shared/reference/consul-nomad.md): one raft-like global modify index, `/v1/health/service/:name` with
// `passing`, `tag`, `stale` and blocking queries (`index` + `wait`), the agent service/check endpoints for
// the stand-in's own node, and `/v1/catalog/register|deregister` for "other nodes". Known simplifications:
// - one datacenter, no ACLs (every token is accepted), no Connect; KV, sessions and KV transactions live in
//   ./standin-kv.ts with their own stated simplifications (and the minSessionTtlMs test knob);
// - HTTP and TCP checks are probed at their Interval only when `probeChecks` is on (default off: they stay
//   in their initial status and tests move them with `setCheckStatus`);
// - re-registering a service keeps the status of a check that already existed (⚠ assumed, not verified);
// - the index of a service that never existed is the current global index.
// Test hooks: forceIndex(n) (a snapshot restore: the index goes backwards and parked queries return),
// zeroIndex (answer X-Consul-Index: 0, which real Consul never does), stop()/start() (same port, state kept),
// wipeAgent() (the local agent restarted without a data dir: its services and checks are gone), and a request log.

import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect as netConnect, type Socket } from 'node:net';
import { randomUUID } from 'node:crypto';
import { StandinHttpError, StandinKv, type StandinAnswer } from './standin-kv';

type Status = 'passing' | 'warning' | 'critical';
type Obj = Record<string, unknown>;

interface NodeRecord { ID: string; Node: string; Address: string; Datacenter: string; TaggedAddresses: Record<string, string>; Meta: Record<string, string>; CreateIndex: number; ModifyIndex: number }
interface ServiceRecord { node: string; ID: string; Service: string; Tags: string[]; Address: string; Meta: Record<string, string>; Port: number; Weights: { Passing: number; Warning: number }; EnableTagOverride: boolean; CreateIndex: number; ModifyIndex: number }
interface CheckRecord {
  Node: string; CheckID: string; Name: string; Status: Status; Notes: string; Output: string; ServiceID: string; ServiceName: string; Type: string;
  CreateIndex: number; ModifyIndex: number;
  ttlMs?: number; http?: string; tcp?: string; intervalMs?: number; timer?: NodeJS.Timeout;
}

/** What the stand-in was asked, for tests that count requests. */
export interface StandinRequest { readonly method: string; readonly path: string; readonly query: URLSearchParams; readonly headers: IncomingMessage['headers']; readonly at: number }

export interface ConsulStandinOptions {
  /** The node the /v1/agent/* endpoints act on. @default "standin-node" */
  nodeName?: string;
  /** @default "127.0.0.1" */
  nodeAddress?: string;
  nodeMeta?: Record<string, string>;
  /** Probe HTTP/TCP checks at their Interval. @default false */
  probeChecks?: boolean;
  /** Add Consul's random extra of up to wait/16 to blocking queries. @default true */
  waitJitter?: boolean;
  /** TEST KNOB (not Consul): the least session TTL accepted, below Consul's 10 s minimum. @default 10000 */
  minSessionTtlMs?: number;
}

/** Parses a Go duration ("10s", "1m30s", "1500ms"); NaN when it is not one. */
export function parseGoDuration(s: string): number {
  const units: Record<string, number> = { ns: 1e-6, us: 1e-3, µs: 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
  if (s === '0') return 0;
  const re = /(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)/gy;
  let total = 0;
  let m: RegExpExecArray | null;
  let end = 0;
  while ((m = re.exec(s))) {
    total += Number(m[1]) * units[m[2]!]!;
    end = re.lastIndex;
  }
  return end === s.length && end > 0 ? total : NaN;
}

/** Reads a field whatever its spelling: PascalCase, camelCase or snake_case (Consul accepts them all). */
function field(o: unknown, name: string): unknown {
  if (!o || typeof o !== 'object') return undefined;
  const want = name.toLowerCase().replace(/_/g, '');
  for (const [k, v] of Object.entries(o)) if (k.toLowerCase().replace(/_/g, '') === want) return v;
  return undefined;
}
const str = (o: unknown, name: string, dflt = ''): string => (typeof field(o, name) === 'string' ? (field(o, name) as string) : dflt);
const strMap = (v: unknown): Record<string, string> => (v && typeof v === 'object' ? Object.fromEntries(Object.entries(v).map(([k, x]) => [k, String(x)])) : {});

class HttpError extends StandinHttpError {
  constructor(status: number, message: string, readonly headers: Record<string, string> = {}) {
    super(status, message);
  }
}

interface Parked { service: string; minIndex: number; wake: () => void }

export class ConsulStandin {
  readonly nodeName: string;
  readonly requests: StandinRequest[] = [];
  /** Answer every X-Consul-Index as 0 (a misbehaving server; real Consul rewrites 0 to 1). */
  zeroIndex = false;

  private index = 1;
  private readonly nodes = new Map<string, NodeRecord>();
  private readonly services = new Map<string, ServiceRecord>(); // "<node>/<service id>"
  private readonly checks = new Map<string, CheckRecord>(); // "<node>/<check id>"
  /** Last index that changed anything a health query of this service name reads. */
  private readonly serviceIndex = new Map<string, number>();
  private readonly parked = new Set<Parked>();
  private readonly parkListeners = new Set<() => void>();
  private readonly sockets = new Set<Socket>();
  private server: Server | undefined;
  private boundPort = 0;
  /** KV, sessions and transactions (TEST HOOK: kv.expireSession(id)). */
  readonly kv: StandinKv;

  constructor(private readonly opts: ConsulStandinOptions = {}) {
    this.nodeName = opts.nodeName ?? 'standin-node';
    this.upsertNode(this.nodeName, opts.nodeAddress ?? '127.0.0.1', opts.nodeMeta ?? {});
    this.kv = new StandinKv({
      nextIndex: () => this.bump([]),
      currentIndex: () => this.index,
      nodeName: this.nodeName,
      parseDuration: parseGoDuration,
      ...(opts.minSessionTtlMs !== undefined ? { minSessionTtlMs: opts.minSessionTtlMs } : {}),
    });
  }

  /** Listens on `port` (0 picks one; a restart reuses the first port). Returns the port. */
  async start(port = this.boundPort): Promise<number> {
    const server = createServer((req, res) => void this.handle(req, res));
    server.on('connection', (s) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => resolve());
    });
    this.server = server;
    this.boundPort = (server.address() as { port: number }).port;
    return this.boundPort;
  }

  /** Stops answering (parked queries and open connections are cut, as when Consul dies); state is kept. */
  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    for (const p of this.parked) p.wake();
    this.kv.wakeAll();
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((r) => server.close(() => r()));
  }

  /** Stops and clears every timer. */
  async close(): Promise<void> {
    await this.stop();
    for (const c of this.checks.values()) clearTimeout(c.timer);
    this.kv.close();
  }

  get port(): number {
    return this.boundPort;
  }
  get address(): string {
    return `127.0.0.1:${this.boundPort}`;
  }
  get currentIndex(): number {
    return this.index;
  }

  /** Requests whose path starts with `prefix`, made at or after `since` (ms epoch). */
  requestCount(prefix: string, since = 0): number {
    return this.requests.filter((r) => r.path.startsWith(prefix) && r.at >= since).length;
  }

  /** Resolves once `n` blocking queries of `service` are parked (waiting for a change). */
  whenParked(service: string, n = 1): Promise<void> {
    const count = (): number => [...this.parked].filter((p) => p.service === service).length;
    if (count() >= n) return Promise.resolve();
    return new Promise((resolve) => {
      const check = (): void => {
        if (count() < n) return;
        this.parkListeners.delete(check);
        resolve();
      };
      this.parkListeners.add(check);
    });
  }

  /** A snapshot restore: the global index and every modify index drop to at most `n`; parked queries return. */
  forceIndex(n: number): void {
    this.index = n;
    for (const r of [...this.nodes.values(), ...this.services.values(), ...this.checks.values()]) {
      r.CreateIndex = Math.min(r.CreateIndex, n);
      r.ModifyIndex = Math.min(r.ModifyIndex, n);
    }
    for (const [k, v] of this.serviceIndex) this.serviceIndex.set(k, Math.min(v, n));
    for (const p of this.parked) p.wake();
  }

  /**
   * The local Consul agent restarted without its data dir (`-dev`, or a lost disk): every service and check
   * registered through /v1/agent on this node is gone, and anti-entropy removes them from the catalog. Services
   * of other nodes stay. Combine with stop()/start() for a restart that clients see as an outage.
   */
  wipeAgent(): void {
    const names = new Set<string>();
    for (const s of [...this.services.values()]) {
      if (s.node !== this.nodeName) continue;
      names.add(s.Service);
      this.services.delete(`${s.node}/${s.ID}`);
    }
    for (const [k, c] of this.checks) if (c.Node === this.nodeName && c.CheckID !== 'serfHealth') this.dropCheck(k);
    this.bump(names);
  }

  /** Sets a check's status as its probe or an operator would (any check type). */
  setCheckStatus(checkId: string, status: Status, output = '', node = this.nodeName): void {
    const c = this.checks.get(`${node}/${checkId}`);
    if (!c) throw new Error(`stand-in: no check ${checkId} on ${node}`);
    this.updateCheck(c, status, output);
  }

  // --- state changes; each bumps the global index and wakes the queries that read what changed ---

  private bump(serviceNames: Iterable<string>): number {
    this.index += 1;
    for (const name of serviceNames) this.serviceIndex.set(name, this.index);
    for (const p of [...this.parked]) if (this.indexOf(p.service) > p.minIndex) p.wake();
    return this.index;
  }

  private servicesOnNode(node: string): string[] {
    return [...this.services.values()].filter((s) => s.node === node).map((s) => s.Service);
  }

  private upsertNode(name: string, address: string, meta: Record<string, string>): void {
    const n = this.nodes.get(name);
    if (n && n.Address === address && JSON.stringify(n.Meta) === JSON.stringify(meta)) return;
    const idx = this.bump(this.servicesOnNode(name));
    this.nodes.set(name, { ID: n?.ID ?? randomUUID(), Node: name, Address: address, Datacenter: 'dc1', TaggedAddresses: { lan: address, wan: address }, Meta: meta, CreateIndex: n?.CreateIndex ?? idx, ModifyIndex: idx });
    if (!this.checks.has(`${name}/serfHealth`)) {
      this.checks.set(`${name}/serfHealth`, { Node: name, CheckID: 'serfHealth', Name: 'Serf Health Status', Status: 'passing', Notes: '', Output: 'Agent alive and reachable', ServiceID: '', ServiceName: '', Type: '', CreateIndex: idx, ModifyIndex: idx });
    }
  }

  private putService(node: string, body: Obj, checks: Obj[], replaceChecks: boolean): void {
    const name = str(body, 'Name') || str(body, 'Service');
    if (!name) throw new HttpError(400, 'Missing service name');
    const id = str(body, 'ID') || name;
    const key = `${node}/${id}`;
    const old = this.services.get(key);
    const weights = field(body, 'Weights');
    const touched = new Set([name, ...(old ? [old.Service] : [])]);
    const idx = this.bump(touched);
    this.services.set(key, {
      node, ID: id, Service: name, Tags: Array.isArray(field(body, 'Tags')) ? (field(body, 'Tags') as unknown[]).map(String) : [],
      Address: str(body, 'Address'), Meta: strMap(field(body, 'Meta')), Port: Number(field(body, 'Port') ?? 0),
      Weights: { Passing: Number(field(weights, 'Passing') ?? 1), Warning: Number(field(weights, 'Warning') ?? 1) },
      EnableTagOverride: field(body, 'EnableTagOverride') === true, CreateIndex: old?.CreateIndex ?? idx, ModifyIndex: idx,
    });
    const ids = checks.map((c, i) => this.putCheck(node, id, name, c, checks.length > 1 ? `service:${id}:${i + 1}` : `service:${id}`, idx));
    if (replaceChecks) for (const [k, c] of this.checks) if (c.Node === node && c.ServiceID === id && !ids.includes(c.CheckID)) this.dropCheck(k);
  }

  private putCheck(node: string, serviceId: string, serviceName: string, def: Obj, defaultId: string, idx: number): string {
    const checkId = str(def, 'CheckID') || str(def, 'ID') || defaultId;
    const key = `${node}/${checkId}`;
    const old = this.checks.get(key);
    clearTimeout(old?.timer);
    const given = str(def, 'Status') as Status | '';
    const ttlMs = str(def, 'TTL') ? parseGoDuration(str(def, 'TTL')) : undefined;
    const http = str(def, 'HTTP') || undefined;
    const tcp = str(def, 'TCP') || undefined;
    const c: CheckRecord = {
      Node: node, CheckID: checkId, Name: str(def, 'Name') || `Service '${serviceName}' check`,
      Status: given || old?.Status || 'critical', Notes: str(def, 'Notes'), Output: old?.Output ?? '', ServiceID: serviceId, ServiceName: serviceName,
      Type: ttlMs !== undefined ? 'ttl' : http ? 'http' : tcp ? 'tcp' : '', CreateIndex: old?.CreateIndex ?? idx, ModifyIndex: idx,
      ...(ttlMs !== undefined ? { ttlMs } : {}), ...(http ? { http } : {}), ...(tcp ? { tcp } : {}),
      ...(str(def, 'Interval') ? { intervalMs: parseGoDuration(str(def, 'Interval')) } : {}),
    };
    this.checks.set(key, c);
    this.armCheck(c);
    return checkId;
  }

  private armCheck(c: CheckRecord): void {
    clearTimeout(c.timer);
    if (c.ttlMs !== undefined) {
      c.timer = setTimeout(() => this.updateCheck(c, 'critical', 'TTL expired'), c.ttlMs).unref();
    } else if (this.opts.probeChecks && (c.http || c.tcp) && c.intervalMs) {
      c.timer = setTimeout(() => void this.probe(c).then(([s, out]) => { if (this.checks.get(`${c.Node}/${c.CheckID}`) === c) { this.updateCheck(c, s, out); this.armCheck(c); } }), c.intervalMs).unref();
    }
  }

  private async probe(c: CheckRecord): Promise<[Status, string]> {
    if (c.http) {
      try {
        const res = await fetch(c.http, { signal: AbortSignal.timeout(2000) });
        await res.arrayBuffer();
        return [res.status >= 200 && res.status < 300 ? 'passing' : res.status === 429 ? 'warning' : 'critical', `HTTP GET ${c.http}: ${res.status}`];
      } catch (err) {
        return ['critical', `HTTP GET ${c.http}: ${(err as Error).message}`];
      }
    }
    const [host, port] = [c.tcp!.slice(0, c.tcp!.lastIndexOf(':')), Number(c.tcp!.slice(c.tcp!.lastIndexOf(':') + 1))];
    return new Promise((resolve) => {
      const s = netConnect({ host, port, timeout: 2000 });
      s.once('connect', () => { s.destroy(); resolve(['passing', `TCP connect ${c.tcp}: Success`]); });
      s.once('error', (err) => resolve(['critical', `TCP connect ${c.tcp}: ${err.message}`]));
      s.once('timeout', () => { s.destroy(); resolve(['critical', `TCP connect ${c.tcp}: timeout`]); });
    });
  }

  private updateCheck(c: CheckRecord, status: Status, output: string): void {
    if (c.ttlMs !== undefined && output !== 'TTL expired') this.armCheck(c);
    if (c.Status === status && c.Output === output) return;
    c.Status = status;
    c.Output = output;
    c.ModifyIndex = this.bump(c.ServiceName ? [c.ServiceName] : this.servicesOnNode(c.Node));
  }

  private dropCheck(key: string): void {
    const c = this.checks.get(key)!;
    clearTimeout(c.timer);
    this.checks.delete(key);
  }

  private dropService(node: string, id: string): boolean {
    const s = this.services.get(`${node}/${id}`);
    if (!s) return false;
    this.services.delete(`${node}/${id}`);
    for (const [k, c] of this.checks) if (c.Node === node && c.ServiceID === id) this.dropCheck(k);
    this.bump([s.Service]);
    return true;
  }

  // --- reads ---

  private indexOf(service: string): number {
    return this.serviceIndex.get(service) ?? this.index;
  }

  private healthEntries(service: string, passing: boolean, tags: string[]): Obj[] {
    const out: Obj[] = [];
    const list = [...this.services.values()].filter((s) => s.Service === service && tags.every((t) => s.Tags.includes(t)));
    list.sort((a, b) => a.node.localeCompare(b.node) || a.ID.localeCompare(b.ID));
    for (const s of list) {
      const checks = [...this.checks.values()].filter((c) => c.Node === s.node && (c.ServiceID === '' || c.ServiceID === s.ID));
      if (passing && checks.some((c) => c.Status !== 'passing')) continue;
      const { node: _n, ...svc } = s;
      out.push({
        Node: this.nodes.get(s.node),
        Service: { ...svc, TaggedAddresses: {}, Proxy: {}, Connect: {} },
        Checks: checks.map(({ ttlMs: _t, http: _h, tcp: _c, intervalMs: _i, timer: _x, ...c }) => ({ ...c, ServiceTags: c.ServiceID ? s.Tags : [] })),
      });
    }
    return out;
  }

  private agentServices(): Obj {
    const out: Obj = {};
    for (const s of this.services.values()) {
      if (s.node !== this.nodeName) continue;
      const { node: _n, CreateIndex: _c, ModifyIndex: _m, ...svc } = s;
      out[s.ID] = { ...svc, Datacenter: 'dc1' };
    }
    return out;
  }

  // --- HTTP ---

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://standin');
    this.requests.push({ method: req.method ?? '', path: url.pathname, query: url.searchParams, headers: req.headers, at: Date.now() });
    try {
      const chunks: Buffer[] = [];
      for await (const c of req) chunks.push(c as Buffer);
      const bytes = Buffer.concat(chunks);
      if (url.pathname.startsWith('/v1/kv/') || url.pathname.startsWith('/v1/session/') || url.pathname === '/v1/txn') {
        return this.answer(res, await this.routeKv(req.method ?? 'GET', url, bytes), url.searchParams);
      }
      const raw = bytes.toString();
      let body: unknown = undefined;
      if (raw) {
        try {
          body = JSON.parse(raw);
        } catch (err) {
          throw new HttpError(400, `Request decode failed: ${(err as Error).message}`);
        }
      }
      await this.route(req.method ?? 'GET', url, body, res);
    } catch (err) {
      const e = err instanceof StandinHttpError ? err : new HttpError(500, (err as Error).message);
      if (res.headersSent) return void res.destroy();
      res.writeHead(e.status, { 'content-type': 'text/plain; charset=utf-8', 'x-consul-default-acl-policy': 'allow', ...(e instanceof HttpError ? e.headers : {}) });
      res.end(e.message);
    }
  }

  private async route(method: string, url: URL, body: unknown, res: ServerResponse): Promise<void> {
    const p = url.pathname;
    const q = url.searchParams;
    const want = (m: string): void => {
      if (method !== m) throw new HttpError(405, `method ${method} not allowed`, { allow: m });
    };
    const tail = (prefix: string): string => decodeURIComponent(p.slice(prefix.length));
    let m: RegExpMatchArray | null;

    if (p.startsWith('/v1/health/service/')) {
      want('GET');
      return this.healthService(tail('/v1/health/service/'), q, res);
    }
    if (p === '/v1/agent/service/register') {
      want('PUT');
      const checks = [...(Array.isArray(field(body, 'Checks')) ? (field(body, 'Checks') as Obj[]) : []), ...(field(body, 'Check') ? [field(body, 'Check') as Obj] : [])];
      this.putService(this.nodeName, (body ?? {}) as Obj, checks, q.has('replace-existing-checks'));
      return this.empty(res);
    }
    if (p.startsWith('/v1/agent/service/deregister/')) {
      want('PUT');
      const id = tail('/v1/agent/service/deregister/');
      if (!this.dropService(this.nodeName, id)) throw new HttpError(404, `Unknown service ID "${id}". Ensure that the service ID is passed, not the service name.`);
      return this.empty(res);
    }
    if (p === '/v1/agent/services') {
      want('GET');
      return this.json(res, this.agentServices());
    }
    if ((m = p.match(/^\/v1\/agent\/check\/(pass|warn|fail|update)\/(.+)$/))) {
      want('PUT');
      const id = decodeURIComponent(m[2]!);
      const c = this.checks.get(`${this.nodeName}/${id}`);
      if (!c) throw new HttpError(404, `Unknown check ID "${id}". Ensure that the check ID is passed, not the check name.`);
      if (c.ttlMs === undefined) throw new HttpError(500, `CheckID "${id}" does not have associated TTL`);
      let status: Status = m[1] === 'pass' ? 'passing' : m[1] === 'warn' ? 'warning' : 'critical';
      let output = q.get('note') ?? '';
      if (m[1] === 'update') {
        status = str(body, 'Status') as Status;
        if (!['passing', 'warning', 'critical'].includes(status)) throw new HttpError(400, `Invalid check status: "${status}"`);
        output = str(body, 'Output');
      }
      this.updateCheck(c, status, output);
      return this.empty(res);
    }
    if (p === '/v1/catalog/register') {
      want('PUT');
      const node = str(body, 'Node');
      if (!node) throw new HttpError(400, 'Must provide node');
      this.upsertNode(node, str(body, 'Address') || this.nodes.get(node)?.Address || '', strMap(field(body, 'NodeMeta') ?? this.nodes.get(node)?.Meta));
      const checks = [...(Array.isArray(field(body, 'Checks')) ? (field(body, 'Checks') as Obj[]) : []), ...(field(body, 'Check') ? [field(body, 'Check') as Obj] : [])];
      const svc = field(body, 'Service') as Obj | undefined;
      if (svc) {
        const own = checks.filter((c) => !str(c, 'ServiceID') || str(c, 'ServiceID') === (str(svc, 'ID') || str(svc, 'Service')));
        this.putService(node, svc, own, false);
      } else {
        for (const c of checks) this.putCheck(node, '', '', c, str(c, 'CheckID'), this.bump(this.servicesOnNode(node)));
      }
      return this.json(res, true);
    }
    if (p === '/v1/catalog/deregister') {
      want('PUT');
      const node = str(body, 'Node');
      if (!node) throw new HttpError(400, 'Must provide node');
      const serviceId = str(body, 'ServiceID');
      const checkId = str(body, 'CheckID');
      if (serviceId) this.dropService(node, serviceId);
      else if (checkId) {
        const c = this.checks.get(`${node}/${checkId}`);
        if (c) {
          this.dropCheck(`${node}/${checkId}`);
          this.bump(c.ServiceName ? [c.ServiceName] : this.servicesOnNode(node));
        }
      } else if (this.nodes.has(node)) {
        const names = this.servicesOnNode(node);
        for (const s of [...this.services.values()]) if (s.node === node) this.services.delete(`${node}/${s.ID}`);
        for (const [k, c] of this.checks) if (c.Node === node) this.dropCheck(k);
        this.nodes.delete(node);
        this.bump(names);
      }
      return this.json(res, true);
    }
    throw new HttpError(404, `404 page not found`);
  }

  /** The /v1/kv, /v1/session and /v1/txn routes. */
  private async routeKv(method: string, url: URL, bytes: Buffer): Promise<StandinAnswer> {
    const p = url.pathname;
    const q = url.searchParams;
    const json = (): unknown => {
      if (bytes.length === 0) return undefined;
      try {
        return JSON.parse(bytes.toString());
      } catch (err) {
        throw new HttpError(400, `Request decode failed: ${(err as Error).message}`);
      }
    };
    const want = (...ms: string[]): void => {
      if (!ms.includes(method)) throw new HttpError(405, `method ${method} not allowed`, { allow: ms.join(',') });
    };
    if (p.startsWith('/v1/kv/')) {
      const key = decodeURIComponent(p.slice('/v1/kv/'.length));
      want('GET', 'PUT', 'DELETE');
      if (method === 'PUT') return this.kv.put(key, q, bytes);
      if (method === 'DELETE') return this.kv.delete(key, q);
      let waitMs = q.has('wait') ? parseGoDuration(q.get('wait')!) : 300_000;
      if (Number.isNaN(waitMs)) throw new HttpError(400, `Invalid wait time: ${q.get('wait')}`);
      waitMs = Math.min(waitMs, 600_000);
      if (this.opts.waitJitter !== false) waitMs += Math.random() * (waitMs / 16);
      return this.kv.get(key, q, waitMs, () => this.server !== undefined);
    }
    if (p === '/v1/txn') {
      want('PUT');
      return this.kv.txn(json());
    }
    const id = (prefix: string): string => decodeURIComponent(p.slice(prefix.length));
    if (p === '/v1/session/create') return want('PUT'), this.kv.create(json());
    if (p.startsWith('/v1/session/renew/')) return want('PUT'), this.kv.renew(id('/v1/session/renew/'));
    if (p.startsWith('/v1/session/destroy/') || p === '/v1/session/destroy') return want('PUT'), this.kv.destroy(id('/v1/session/destroy/'));
    if (p.startsWith('/v1/session/info/')) return want('GET'), this.kv.info(id('/v1/session/info/'));
    if (p === '/v1/session/list') return want('GET'), this.kv.list();
    throw new HttpError(404, '404 page not found');
  }

  private answer(res: ServerResponse, a: StandinAnswer, q: URLSearchParams): void {
    if (a.status === -1) return void res.destroy(); // stopped while parked
    const headers: Record<string, string | number> = { 'x-consul-default-acl-policy': 'allow' };
    if (a.index !== undefined) {
      Object.assign(headers, { 'x-consul-index': String(this.zeroIndex ? 0 : a.index), 'x-consul-knownleader': 'true', 'x-consul-lastcontact': '0', 'x-consul-effective-consistency': q.has('stale') ? 'stale' : 'leader' });
    }
    if (a.raw) {
      res.writeHead(a.status, { ...headers, 'content-type': 'text/plain', 'x-content-type-options': 'nosniff', 'content-security-policy': 'sandbox', 'content-length': a.raw.length });
      return void res.end(a.raw);
    }
    const text = a.json === undefined ? '' : JSON.stringify(a.json);
    res.writeHead(a.status, { ...headers, ...(text ? { 'content-type': 'application/json' } : {}), 'content-length': Buffer.byteLength(text) });
    res.end(text);
  }

  private async healthService(service: string, q: URLSearchParams, res: ServerResponse): Promise<void> {
    const passing = q.has('passing') ? parseBool(q.get('passing')!) : false;
    if (passing === undefined) throw new HttpError(400, `Failed to parse passing: strconv.ParseBool: parsing "${q.get('passing')}": invalid syntax`);
    const minIndex = q.has('index') ? Number(q.get('index')) : 0;
    if (!Number.isInteger(minIndex) || minIndex < 0) throw new HttpError(400, `Invalid index: ${q.get('index')}`);
    let waitMs = q.has('wait') ? parseGoDuration(q.get('wait')!) : 300_000;
    if (Number.isNaN(waitMs)) throw new HttpError(400, `Invalid wait time: ${q.get('wait')}`);
    waitMs = Math.min(waitMs, 600_000);
    if (this.opts.waitJitter !== false) waitMs += Math.random() * (waitMs / 16);
    if (minIndex > 0 && this.reportedIndex(service) <= minIndex) {
      await new Promise<void>((resolve) => {
        const p: Parked = { service, minIndex, wake: () => { clearTimeout(t); this.parked.delete(p); resolve(); } };
        const t = setTimeout(p.wake, waitMs);
        this.parked.add(p);
        for (const l of [...this.parkListeners]) l();
      });
      if (!this.server) return void res.destroy(); // stopped while parked: the connection dies, like a dead agent
    }
    res.setHeader('x-consul-index', String(this.reportedIndex(service)));
    res.setHeader('x-consul-knownleader', 'true');
    res.setHeader('x-consul-lastcontact', '0');
    res.setHeader('x-consul-effective-consistency', q.has('stale') ? 'stale' : 'leader');
    this.json(res, this.healthEntries(service, passing, q.getAll('tag')));
  }

  /** The index a query reports: never 0, as Consul's setIndex rewrites 0 to 1, unless the zeroIndex hook is on. */
  private reportedIndex(service: string): number {
    return this.zeroIndex ? 0 : Math.max(1, this.indexOf(service));
  }

  private json(res: ServerResponse, v: unknown): void {
    const text = JSON.stringify(v);
    res.writeHead(200, { 'content-type': 'application/json', 'x-consul-default-acl-policy': 'allow', 'content-length': Buffer.byteLength(text) });
    res.end(text);
  }

  private empty(res: ServerResponse): void {
    res.writeHead(200, { 'x-consul-default-acl-policy': 'allow', 'content-length': 0 });
    res.end();
  }
}

function parseBool(s: string): boolean | undefined {
  if (s === '') return true;
  if (['1', 't', 'T', 'TRUE', 'true', 'True'].includes(s)) return true;
  if (['0', 'f', 'F', 'FALSE', 'false', 'False'].includes(s)) return false;
  return undefined;
}
