// Keeps the agent (and, when asked, the node's mesh services) registered in the local Consul agent, with checks; deregisters on stop.
//
// - Every registration carries service meta `mesh-inbound-port` (and `mesh-namespace` outside "default"), the
//   convention ConsulSource reads, and one check with CheckID `service:<id>` (Consul's own default ID).
// - HTTP and TCP checks are run by the Consul agent. A TTL check is kept by this class: every ttl/3 it opens a
//   TCP connection to the service's app and PUTs /v1/agent/check/pass/<id> or /fail/<id> with a note.
// - Consul may forget us (its agent restarted without a data dir, or an operator deregistered us). Two things
//   catch it: a TTL update answered 404 (or the older 500 "Unknown check" / "does not have associated TTL"),
//   and a periodic anti-entropy pass over GET /v1/agent/services (one request for every ID, instead of one GET
//   /v1/agent/service/<id> each). Either way the service is registered again.
// - A failed registration is retried with backoff (1 s doubling to 30 s, with jitter) and counted (onFailure).

import type Consul from 'consul';
import { connect as netConnect } from 'node:net';
import { Backoff, systemClock, type Clock } from '../agent/clock';
import { describeError, MeshError } from '../errors';
import { silentLogger, type Logger } from '../telemetry';
import { MESH_INBOUND_PORT_META, MESH_NAMESPACE_META } from './consul-source';

/** How Consul learns whether a service is healthy. */
export type RegistrationCheck =
  /** The Consul agent GETs this URL every interval (2xx passing, 429 warning, else critical). */
  | { readonly http: string; readonly intervalMs: number; readonly timeoutMs: number }
  /** The Consul agent connects to this host:port every interval. */
  | { readonly tcp: string; readonly intervalMs: number; readonly timeoutMs: number }
  /** Consul waits for updates; this class probes `probe` over TCP every ttl/3 and sends pass or fail. */
  | { readonly ttlMs: number; readonly probe: { readonly host: string; readonly port: number } };

/** A service to register, as the agent knows it. */
export interface RegisteredService {
  readonly id: string;
  readonly name: string;
  readonly namespace: string;
  readonly address: string;
  readonly port: number;
  readonly tags?: readonly string[];
  readonly meta?: Readonly<Record<string, string>>;
  readonly check: RegistrationCheck;
}

export interface ConsulRegistrationOptions {
  /** The agent's client; not destroyed here. */
  readonly client: Consul;
  /** The agent's inbound mTLS port, written into every registration's meta. */
  readonly inboundPort: number;
  /** Time between two anti-entropy passes. @default 30_000 */
  readonly resyncIntervalMs?: number;
  /** Called once per failed registration request (for mesh_consul_registration_failures_total). */
  readonly onFailure?: () => void;
  readonly clock?: Clock;
  readonly log?: Logger;
  readonly random?: () => number;
}

/** One row of the agent's status. */
export interface RegistrationStatus {
  readonly id: string;
  readonly name: string;
  readonly check: 'http' | 'tcp' | 'ttl';
  readonly registered: boolean;
  /** How many times it was registered (more than 1: Consul forgot it, or it changed). */
  readonly registrations: number;
  /** The last status sent for a TTL check. */
  readonly ttlStatus: 'passing' | 'critical' | undefined;
  readonly lastError: string | undefined;
}

interface Entry {
  readonly spec: RegisteredService;
  readonly fingerprint: string;
  readonly backoff: Backoff;
  registered: boolean;
  /** Sequence number of the last successful registration (anti-entropy ignores newer ones than its list). */
  registeredSeq: number;
  registrations: number;
  ttlStatus: 'passing' | 'critical' | undefined;
  lastError: string | undefined;
  timer: { unref?(): unknown } | undefined;
  gone: boolean;
}

/** The check's ID: Consul's default for a service's single check, set explicitly so TTL updates can name it. */
export const checkIdOf = (serviceId: string): string => `service:${serviceId}`;

/** A duration in Go syntax, as Consul reads it. */
export function goDuration(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000}s` : `${Math.round(ms)}ms`;
}

export class ConsulRegistration {
  private readonly entries = new Map<string, Entry>();
  private readonly clock: Clock;
  private readonly log: Logger;
  private queue: Promise<void> = Promise.resolve();
  private resyncTimer: { unref?(): unknown } | undefined;
  private seq = 0;
  private closed = false;

  constructor(private readonly opts: ConsulRegistrationOptions) {
    this.clock = opts.clock ?? systemClock;
    this.log = opts.log ?? silentLogger;
  }

  /**
   * The registrations to keep, replacing the previous set: new and changed ones are registered, those no longer
   * listed are deregistered. Unchanged ones are left alone. Failures are retried in the background.
   */
  set(services: readonly RegisteredService[]): void {
    if (this.closed) return;
    const next = new Map(services.map((s) => [s.id, s]));
    for (const [id, e] of this.entries) {
      if (next.has(id)) continue;
      this.retire(e);
      this.entries.delete(id);
      if (e.registrations > 0) this.enqueue(() => this.deregister(id));
    }
    for (const s of services) {
      const fingerprint = JSON.stringify(s);
      const old = this.entries.get(s.id);
      if (old?.fingerprint === fingerprint) continue;
      if (old) this.retire(old);
      const e: Entry = { spec: s, fingerprint, backoff: new Backoff(1000, 30_000, this.opts.random ?? Math.random), registered: false, registeredSeq: 0, registrations: old?.registrations ?? 0, ttlStatus: undefined, lastError: undefined, timer: undefined, gone: false };
      this.entries.set(s.id, e);
      this.enqueue(() => this.register(e));
    }
  }

  /** Starts the anti-entropy passes. */
  start(): void {
    this.scheduleResync();
  }

  status(): RegistrationStatus[] {
    return [...this.entries.values()].map((e) => ({
      id: e.spec.id,
      name: e.spec.name,
      check: 'http' in e.spec.check ? 'http' : 'tcp' in e.spec.check ? 'tcp' : 'ttl',
      registered: e.registered,
      registrations: e.registrations,
      ttlStatus: e.ttlStatus,
      lastError: e.lastError,
    }));
  }

  /** Deregisters everything that was registered (clean shutdown); a 404 counts as done. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.resyncTimer) this.clock.clearTimeout(this.resyncTimer);
    for (const e of this.entries.values()) this.retire(e);
    await this.queue;
    await Promise.all([...this.entries.values()].filter((e) => e.registrations > 0).map((e) => this.deregister(e.spec.id)));
    this.entries.clear();
  }

  /** Registration requests run one at a time, in order (a deregister never overtakes a register of the same ID). */
  private enqueue(op: () => Promise<void>): void {
    this.queue = this.queue.then(op, op);
  }

  private retire(e: Entry): void {
    e.gone = true;
    if (e.timer) this.clock.clearTimeout(e.timer);
    e.timer = undefined;
  }

  private async register(e: Entry): Promise<void> {
    if (e.gone || this.closed) return;
    const s = e.spec;
    try {
      const meta: Record<string, string> = { ...s.meta, [MESH_INBOUND_PORT_META]: String(this.opts.inboundPort) };
      if (s.namespace !== 'default') meta[MESH_NAMESPACE_META] = s.namespace;
      await this.opts.client.agent.service.register({ id: s.id, name: s.name, address: s.address, port: s.port, tags: [...(s.tags ?? [])], meta, check: consulCheck(s) });
      if (e.gone) return;
      e.registered = true;
      e.registeredSeq = ++this.seq;
      e.registrations++;
      e.lastError = undefined;
      e.backoff.reset();
      this.log.info('registered with Consul', { service: s.name, id: s.id, check: checkKind(s.check) });
      if ('ttlMs' in s.check) void this.heartbeat(e);
    } catch (err) {
      this.opts.onFailure?.();
      const wait = e.backoff.next();
      e.lastError = describeError(asConsulError(err, `PUT /v1/agent/service/register (${s.id})`));
      this.log.warn('Consul registration failed, will retry', { service: s.name, id: s.id, inMs: wait, error: e.lastError });
      if (e.gone || this.closed) return;
      e.timer = this.clock.setTimeout(() => this.enqueue(() => this.register(e)), wait);
      e.timer.unref?.();
    }
  }

  private async deregister(id: string): Promise<void> {
    try {
      await this.opts.client.agent.service.deregister(id);
      this.log.info('deregistered from Consul', { id });
    } catch (err) {
      if (statusOf(err) === 404) return;
      this.log.warn('Consul deregistration failed', { id, error: describeError(asConsulError(err, `PUT /v1/agent/service/deregister/${id}`)) });
    }
  }

  /** One TTL round: probe the app, tell Consul, come back in ttl/3. A check Consul no longer knows means registering again. */
  private async heartbeat(e: Entry): Promise<void> {
    if (e.gone || this.closed || !('ttlMs' in e.spec.check)) return;
    const { ttlMs, probe } = e.spec.check;
    const every = Math.max(1, Math.floor(ttlMs / 3));
    const failure = await probeTcp(probe.host, probe.port, Math.min(every, 5000));
    if (e.gone || this.closed) return;
    const status = failure === undefined ? 'passing' : 'critical';
    const note = failure === undefined ? `mesh-agent: TCP connect ${probe.host}:${probe.port}: ok` : `mesh-agent: TCP connect ${probe.host}:${probe.port}: ${failure}`;
    const id = checkIdOf(e.spec.id);
    try {
      if (status === 'passing') await this.opts.client.agent.check.pass({ id, note });
      else await this.opts.client.agent.check.fail({ id, note });
      if (e.ttlStatus !== status) this.log.info(`TTL check ${status}`, { id: e.spec.id, note });
      e.ttlStatus = status;
    } catch (err) {
      if (e.gone || this.closed) return;
      if (forgotten(err)) {
        this.log.warn('Consul no longer knows the TTL check; registering again', { id: e.spec.id, error: describeError(asConsulError(err, `PUT /v1/agent/check/${status === 'passing' ? 'pass' : 'fail'}/${id}`)) });
        e.registered = false;
        this.enqueue(() => this.register(e));
        return;
      }
      this.log.debug('TTL update failed', { id: e.spec.id, error: describeError(err) });
    }
    e.timer = this.clock.setTimeout(() => void this.heartbeat(e), every);
    e.timer.unref?.();
  }

  private scheduleResync(): void {
    if (this.closed) return;
    this.resyncTimer = this.clock.setTimeout(() => void this.resync().finally(() => this.scheduleResync()), this.opts.resyncIntervalMs ?? 30_000);
    this.resyncTimer.unref?.();
  }

  /** Anti-entropy: registers again whatever Consul no longer lists. */
  private async resync(): Promise<void> {
    const listed = [...this.entries.values()].filter((e) => e.registered);
    if (listed.length === 0) return;
    const seqAtStart = this.seq;
    let known: Record<string, unknown>;
    try {
      known = ((await this.opts.client.agent.service.list()) ?? {}) as Record<string, unknown>;
    } catch (err) {
      this.log.debug('anti-entropy: cannot list Consul services', { error: describeError(err) });
      return;
    }
    for (const e of listed) {
      if (e.gone || this.closed || !e.registered || e.registeredSeq > seqAtStart || e.spec.id in known) continue;
      this.log.warn('Consul no longer lists our registration (its agent restarted or lost its state); registering again', { id: e.spec.id });
      e.registered = false;
      if (e.timer) this.clock.clearTimeout(e.timer);
      this.enqueue(() => this.register(e));
    }
  }
}

function checkKind(c: RegistrationCheck): 'http' | 'tcp' | 'ttl' {
  return 'http' in c ? 'http' : 'tcp' in c ? 'tcp' : 'ttl';
}

/** The check as the `consul` client takes it (it turns keys into Consul's; its type wants a timeout even for TTL checks, where Consul has none). */
type ClientCheck = { name: string; timeout: string } & Record<string, string>;
function consulCheck(s: RegisteredService): ClientCheck {
  const c = s.check;
  const base = { checkid: checkIdOf(s.id), name: `${s.name} ${checkKind(c)}` };
  if ('http' in c) return { ...base, http: c.http, interval: goDuration(c.intervalMs), timeout: goDuration(c.timeoutMs) };
  if ('tcp' in c) return { ...base, tcp: c.tcp, interval: goDuration(c.intervalMs), timeout: goDuration(c.timeoutMs) };
  return { ...base, ttl: goDuration(c.ttlMs), notes: 'kept by mesh-agent: TCP connect to the app every ttl/3' } as unknown as ClientCheck;
}

const statusOf = (err: unknown): number | undefined => (err as { statusCode?: number })?.statusCode;

/** Consul's answers when it does not know a check: 404 now, 500 with these texts in older versions. */
function forgotten(err: unknown): boolean {
  const status = statusOf(err);
  const text = (err as Error)?.message ?? '';
  return status === 404 || (status === 500 && /Unknown check|does not have associated TTL/.test(text));
}

function asConsulError(err: unknown, what: string): MeshError {
  return err instanceof MeshError ? err : new MeshError('MESH_ERR_CONSUL', `${what}: ${(err as Error)?.message ?? String(err)}`, { cause: err });
}

/** Connects to host:port; resolves undefined on success, else why it failed. */
export function probeTcp(host: string, port: number, timeoutMs: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const s = netConnect({ host, port });
    const done = (why: string | undefined): void => {
      clearTimeout(timer);
      s.destroy();
      resolve(why);
    };
    const timer = setTimeout(() => done(`no answer within ${timeoutMs} ms`), timeoutMs);
    s.once('connect', () => done(undefined));
    s.once('error', (err: NodeJS.ErrnoException) => done(err.code ?? err.message));
  });
}
