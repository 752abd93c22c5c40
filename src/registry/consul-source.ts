// A discovery source that watches Consul's health view of each service with blocking queries.
//
// Conventions (docs/consul.md should repeat them):
// - Query: GET /v1/health/service/<ServiceKey.name>?passing — an instance is an endpoint only while every
//   check on it and on its node passes (a `warning` drops it too, as Consul's `passing` filter does).
// - Namespace: Consul OSS has none, so an instance belongs to the mesh namespace in its service meta
//   `mesh-namespace` ("default" when absent); a watch sees only the instances of its ServiceKey.namespace.
// - Address: Service.Address, else Node.Address (Consul's own rule).
// - Port: the mesh inbound (mTLS) port of the agent on that node, never the app's Service.Port. It comes
//   from service meta `mesh-inbound-port` (set when the agent registers a local service), else node meta
//   `mesh-inbound-port` (Consul agent config `node_meta`). An instance with neither is not in the mesh: it is
//   skipped and counted in status().skipped.
// - Labels: every `key=value` tag, then Service.Meta (meta wins), minus the two mesh-* keys above.
// - Weight: Service.Weights.Passing (default 1). Instances that land on the same address:port (two instances
//   on one node) become one endpoint whose weight is the sum and whose labels are the first instance's.
// - Empty answer: Consul answers [] both for an unknown service and for one with no passing instance, so the
//   source emits `reset` with no endpoints; it never emits does-not-exist.
// - Every change is emitted as a full `reset` (a cluster keeps its per-endpoint state across resets by key).
//
// The loop follows Consul's "blocking queries" implementation notes: reset the index to 0 when it goes
// backwards, never block on index 0 (use 1), compare the data on every wake-up, rate-limit the loop, and back
// off with jitter on errors while keeping the last endpoints. The `consul` client is enough for this: with a
// context carrying `includeResponse` it returns the response headers, and `ctx.emit('cancel')` aborts.
// Its own `watch()` is not used: it re-issues at once without rate limiting and does not pass `stale`.

import { EventEmitter } from 'node:events';
import type { IncomingMessage } from 'node:http';
import type Consul from 'consul';
import { Backoff, systemClock, type Clock } from '../agent/clock';
import { describeError, MeshError } from '../errors';
import { silentLogger, type Logger } from '../telemetry';
import { createConsulClient, resolveConsulSettings, type ConsulSettingsInput } from './consul-settings';
import { endpointKey, serviceKeyString, type DiscoverySource, type DiscoveryUpdate, type Endpoint, type ServiceKey } from './discovery';

/** Meta key (service, then node) holding the mesh inbound port of the node's agent. */
export const MESH_INBOUND_PORT_META = 'mesh-inbound-port';
/** Service meta key naming the mesh namespace of an instance; "default" when absent. */
export const MESH_NAMESPACE_META = 'mesh-namespace';

export interface ConsulSourceOptions {
  /** Connection settings; each field set here overrides the CONSUL_* variable. */
  consul?: ConsulSettingsInput;
  /** @default process.env */
  env?: NodeJS.ProcessEnv;
  /** A ready client (tests, or sharing one with registration); the source does not destroy it. */
  client?: Consul;
  /** Allow any Consul server to answer (`?stale`), not only the leader. @default false */
  stale?: boolean;
  /** How long one blocking query may wait. @default 60_000 */
  waitMs?: number;
  /** Minimum time between the starts of two queries of one service. @default 250 */
  minIntervalMs?: number;
  /** Backoff on errors: first delay around baseMs, doubling up to capMs, with jitter. @default 500 / 30_000 */
  backoffBaseMs?: number;
  backoffCapMs?: number;
  random?: () => number;
  clock?: Clock;
  log?: Logger;
  /** Called after every query, success or failure (for metrics). */
  onStatus?: (status: ConsulWatchStatus) => void;
}

/** How fresh one watched service is. */
export interface ConsulWatchStatus {
  /** "name.namespace" */
  readonly service: string;
  /** The X-Consul-Index the next query blocks on (0 before the first answer or after a reset). */
  readonly lastIndex: number;
  /** Clock time (ms) of the last successful answer. */
  readonly lastSuccessAt: number | undefined;
  /** True until the first answer and while the last query failed: the endpoints served may be out of date. */
  readonly stale: boolean;
  /** The last failure, as "CODE: message"; cleared by a success. */
  readonly lastError: string | undefined;
  readonly consecutiveErrors: number;
  readonly endpoints: number;
  /** Passing instances left out because no mesh inbound port is known for them. */
  readonly skipped: number;
  /** X-Consul-KnownLeader and X-Consul-LastContact of the last answer (matter with `stale` reads). */
  readonly knownLeader: boolean | undefined;
  readonly lastContactMs: number | undefined;
}

/** Serves endpoints from Consul's catalog; one blocking-query loop per watched service, shared by its watchers. */
export class ConsulSource implements DiscoverySource {
  private readonly client: Consul;
  private readonly ownsClient: boolean;
  private readonly watches = new Map<string, ServiceWatch>();
  private readonly log: Logger;

  /** @throws MeshError MESH_ERR_CONFIG for invalid connection settings */
  constructor(private readonly opts: ConsulSourceOptions = {}) {
    this.log = opts.log ?? silentLogger;
    this.ownsClient = !opts.client;
    this.client = opts.client ?? createConsulClient(resolveConsulSettings(opts.consul, opts.env));
  }

  watch(service: ServiceKey, onUpdate: (update: DiscoveryUpdate) => void): () => void {
    const key = serviceKeyString(service);
    let w = this.watches.get(key);
    if (!w) {
      w = new ServiceWatch(service, this.client, this.opts, this.log.child({ service: key }));
      this.watches.set(key, w);
      w.start();
    }
    const watch = w;
    watch.listeners.add(onUpdate);
    if (watch.last) onUpdate(watch.last.update);
    return () => {
      watch.listeners.delete(onUpdate);
      if (watch.listeners.size === 0 && this.watches.get(key) === watch) {
        watch.stop();
        this.watches.delete(key);
      }
    };
  }

  /** One entry per watched service. */
  status(): ConsulWatchStatus[] {
    return [...this.watches.values()].map((w) => w.status());
  }

  close(): void {
    for (const w of this.watches.values()) w.stop();
    this.watches.clear();
    if (this.ownsClient) this.client.destroy();
  }
}

/** What /v1/health/service returns, as far as this file reads it. */
interface HealthEntry {
  Node?: { Address?: string; Meta?: Record<string, string> | null };
  Service?: { ID?: string; Address?: string; Tags?: string[] | null; Meta?: Record<string, string> | null; Weights?: { Passing?: number } | null };
}

/** A registration's labels: its `key=value` tags, then its Meta (which wins), without the mesh's own meta keys. */
export function labelsFromRegistration(tags: readonly string[], meta: Readonly<Record<string, string>>): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const tag of tags) {
    const eq = tag.indexOf('=');
    if (eq > 0) labels[tag.slice(0, eq)] = tag.slice(eq + 1);
  }
  for (const [k, v] of Object.entries(meta)) if (!k.startsWith('mesh-')) labels[k] = v;
  return labels;
}

/** Turns a health answer into endpoints, following the conventions in the file header. */
export function endpointsFromHealth(entries: readonly HealthEntry[], namespace: string): { endpoints: Endpoint[]; skipped: number } {
  const byKey = new Map<string, { address: string; port: number; weight: number; labels: Record<string, string> }>();
  let skipped = 0;
  const sorted = [...entries].sort((a, b) => `${a.Node?.Address}/${a.Service?.ID}`.localeCompare(`${b.Node?.Address}/${b.Service?.ID}`));
  for (const e of sorted) {
    const svc = e.Service ?? {};
    const meta = svc.Meta ?? {};
    if ((meta[MESH_NAMESPACE_META] ?? 'default') !== namespace) continue;
    const address = svc.Address || e.Node?.Address || '';
    const port = Number(meta[MESH_INBOUND_PORT_META] ?? e.Node?.Meta?.[MESH_INBOUND_PORT_META]);
    if (!address || !Number.isInteger(port) || port < 1 || port > 65535) {
      skipped++;
      continue;
    }
    const labels = labelsFromRegistration(svc.Tags ?? [], meta);
    const passing = Number(svc.Weights?.Passing ?? 1);
    const weight = Number.isInteger(passing) && passing >= 1 ? passing : 1;
    const key = endpointKey({ address, port });
    const seen = byKey.get(key);
    if (seen) seen.weight += weight;
    else byKey.set(key, { address, port, weight, labels });
  }
  const endpoints = [...byKey.values()].sort((a, b) => endpointKey(a).localeCompare(endpointKey(b)));
  return { endpoints, skipped };
}

const fingerprint = (eps: readonly Endpoint[]): string => JSON.stringify(eps.map((e) => [endpointKey(e), e.weight, Object.entries(e.labels).sort()]));

/** The blocking-query loop of one service. */
class ServiceWatch {
  readonly listeners = new Set<(u: DiscoveryUpdate) => void>();
  last: { update: DiscoveryUpdate; fingerprint: string } | undefined;
  private index = 0;
  private lastSuccessAt: number | undefined;
  private lastError: string | undefined;
  private consecutiveErrors = 0;
  private skipped = 0;
  private knownLeader: boolean | undefined;
  private lastContactMs: number | undefined;
  private stopped = false;
  private ctx: EventEmitter | undefined;
  private timer: { unref?(): unknown } | undefined;
  private wakeSleep: (() => void) | undefined;
  private readonly clock: Clock;
  private readonly backoff: Backoff;
  private readonly waitMs: number;
  private readonly minIntervalMs: number;

  constructor(
    private readonly key: ServiceKey,
    private readonly client: Consul,
    private readonly opts: ConsulSourceOptions,
    private readonly log: Logger,
  ) {
    this.clock = opts.clock ?? systemClock;
    this.backoff = new Backoff(opts.backoffBaseMs ?? 500, opts.backoffCapMs ?? 30_000, opts.random ?? Math.random);
    this.waitMs = opts.waitMs ?? 60_000;
    this.minIntervalMs = opts.minIntervalMs ?? 250;
  }

  start(): void {
    void this.loop();
  }

  stop(): void {
    this.stopped = true;
    this.ctx?.emit('cancel');
    if (this.timer) this.clock.clearTimeout(this.timer);
    this.wakeSleep?.();
    this.listeners.clear();
  }

  status(): ConsulWatchStatus {
    return {
      service: serviceKeyString(this.key),
      lastIndex: this.index,
      lastSuccessAt: this.lastSuccessAt,
      stale: this.lastSuccessAt === undefined || this.lastError !== undefined,
      lastError: this.lastError,
      consecutiveErrors: this.consecutiveErrors,
      endpoints: this.last?.update.type === 'reset' ? this.last.update.endpoints.length : 0,
      skipped: this.skipped,
      knownLeader: this.knownLeader,
      lastContactMs: this.lastContactMs,
    };
  }

  private async loop(): Promise<void> {
    while (!this.stopped) {
      const startedAt = this.clock.now();
      let delay: number;
      try {
        const [res, entries] = await this.query();
        if (this.stopped) return;
        this.onAnswer(res, entries);
        this.backoff.reset();
        // The rate limit: a query that came back at once (a change, a reset, a spurious wake-up) waits out the
        // rest of the interval; a query that blocked for a while goes again at once.
        delay = Math.max(0, this.minIntervalMs - (this.clock.now() - startedAt));
      } catch (err) {
        if (this.stopped) return;
        this.onError(err);
        delay = this.backoff.next();
      }
      this.opts.onStatus?.(this.status());
      if (delay > 0) await this.sleep(delay);
    }
  }

  private async query(): Promise<[IncomingMessage, HealthEntry[]]> {
    const ctx = Object.assign(new EventEmitter(), { includeResponse: true });
    this.ctx = ctx;
    const blocking = this.index > 0;
    const options = {
      service: this.key.name,
      passing: true,
      ctx,
      // Consul may add up to wait/16 to the wait; leave room for that and for the network.
      timeout: this.waitMs + Math.ceil(this.waitMs / 16) + 5_000,
      ...(this.opts.stale ? { stale: true } : {}),
      ...(blocking ? { index: String(this.index), wait: `${this.waitMs}ms` } : {}),
    };
    try {
      // The typed options lack ctx and timeout, which the client honours (papi request options).
      const out = (await this.client.health.service(options as never)) as unknown as [IncomingMessage, unknown];
      const [res, body] = out;
      if (!Array.isArray(body)) throw new Error(`expected a JSON array from /v1/health/service/${this.key.name}, got ${typeof body}`);
      return [res, body as HealthEntry[]];
    } finally {
      this.ctx = undefined;
    }
  }

  private onAnswer(res: IncomingMessage, entries: HealthEntry[]): void {
    const got = Number(res.headers['x-consul-index']);
    const index = Number.isSafeInteger(got) && got > 0 ? got : 0;
    if (index < this.index) {
      // A snapshot restore or a server with another history: start over with a non-blocking read.
      this.log.info('consul index went backwards, resetting', { from: this.index, to: index });
      this.index = 0;
    } else {
      // Never block on 0: a query with index 0 returns at once, and looping on it is a busy loop.
      this.index = Math.max(1, index);
    }
    this.knownLeader = res.headers['x-consul-knownleader'] === undefined ? undefined : res.headers['x-consul-knownleader'] === 'true';
    const contact = Number(res.headers['x-consul-lastcontact']);
    this.lastContactMs = Number.isFinite(contact) ? contact : undefined;
    if (this.lastError) this.log.info('consul reachable again', { index: this.index });
    this.lastSuccessAt = this.clock.now();
    this.lastError = undefined;
    this.consecutiveErrors = 0;

    const { endpoints, skipped } = endpointsFromHealth(entries, this.key.namespace);
    if (skipped > 0 && skipped !== this.skipped) this.log.warn(`instances without a ${MESH_INBOUND_PORT_META} meta (service or node) are not in the mesh`, { skipped });
    this.skipped = skipped;
    const fp = fingerprint(endpoints);
    if (this.last?.fingerprint === fp) return; // a wake-up with the same data is no change
    const update: DiscoveryUpdate = { type: 'reset', endpoints };
    this.last = { update, fingerprint: fp };
    for (const fn of [...this.listeners]) {
      try {
        fn(update);
      } catch (err) {
        // A watcher's failure is not Consul's: report it and keep the loop (and the index) going.
        this.log.error('discovery watcher failed on an update', { error: describeError(err) });
      }
    }
  }

  private onError(err: unknown): void {
    const e = err instanceof MeshError ? err : new MeshError('MESH_ERR_CONSUL', `GET /v1/health/service/${this.key.name}: ${(err as Error)?.message ?? String(err)}`, { cause: err });
    if (this.consecutiveErrors === 0) this.log.warn('consul query failed; keeping the last endpoints and retrying with backoff', { error: describeError(e) });
    else this.log.debug('consul query failed again', { error: describeError(e), attempts: this.consecutiveErrors + 1 });
    this.lastError = describeError(e);
    this.consecutiveErrors++;
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      this.wakeSleep = () => {
        this.wakeSleep = undefined;
        if (this.timer) this.clock.clearTimeout(this.timer);
        this.timer = undefined;
        resolve();
      };
      this.timer = this.clock.setTimeout(this.wakeSleep, ms);
      this.timer.unref?.();
    });
  }
}
