// The node's own services from the local Consul agent (/v1/agent/services): which opted in to the mesh, and their mesh settings.
//
// Conventions (docs/consul.md should repeat them):
// - Opt in: tag `mesh`, or meta `mesh-enabled = "true"`. Meta `mesh-enabled = "false"` opts out even with the
//   tag; any other value of it is a problem.
// - Name: the registration's Service; namespace: meta `mesh-namespace` ("default" when absent). Both must be
//   mesh names (lower-case letters, digits, "-").
// - Target (where inbound traffic goes): the registration's Address, 127.0.0.1 when empty, and its Port (1..65535).
// - Protocol: meta `mesh-protocol`, one of tcp | http | http2 | grpc (default tcp).
// - Upstreams: meta `mesh-upstreams`, a comma-separated list of `service[.namespace]:localPort[/protocol]`
//   (e.g. `api:9001/http,billing.payments:9002`); each opens 127.0.0.1:localPort for this service.
// - A registration that opted in with any problem is skipped as a whole (one warning per problem, naming the
//   service and the field); the others are kept.
//
// /v1/agent/services is not a blocking endpoint (it sends no X-Consul-Index and takes no hash), so it is
// polled: one GET per `intervalMs`, the answer compared with the last one, backoff with jitter on errors while
// the last known set is kept.

import type Consul from 'consul';
import { NAME_PATTERN } from '../ca';
import { Backoff, systemClock, type Clock } from '../agent/clock';
import { describeError, MeshError } from '../errors';
import { silentLogger, type Logger } from '../telemetry';
import { labelsFromRegistration, MESH_NAMESPACE_META } from './consul-source';

/** What services and upstreams may declare; http2 and grpc speak prior-knowledge h2c to the app and h2 (ALPN) between agents. */
export const MESH_PROTOCOLS = ['http', 'http2', 'grpc', 'tcp'] as const;
export type MeshProtocol = (typeof MESH_PROTOCOLS)[number];

/** Tag that puts a Consul registration into the mesh. */
export const MESH_TAG = 'mesh';
/** Meta keys read from a local registration. */
export const MESH_ENABLED_META = 'mesh-enabled';
export const MESH_PROTOCOL_META = 'mesh-protocol';
export const MESH_UPSTREAMS_META = 'mesh-upstreams';

/** An upstream declared in `mesh-upstreams`. */
export interface ConsulLocalUpstream {
  readonly service: string;
  readonly namespace: string;
  readonly port: number;
  readonly protocol: MeshProtocol;
}

/** A local service that opted in, as the mesh will run it. */
export interface ConsulLocalService {
  /** The Consul service ID (Nomad's `_nomad-task-...`). */
  readonly id: string;
  readonly name: string;
  readonly namespace: string;
  readonly address: string;
  readonly port: number;
  readonly protocol: MeshProtocol;
  /** Its `key=value` tags and Meta (without mesh-* keys), as discovery labels endpoints. */
  readonly labels: Readonly<Record<string, string>>;
  readonly upstreams: readonly ConsulLocalUpstream[];
}

/** Why an opted-in registration was skipped. */
export interface LocalServiceProblem {
  readonly id: string;
  readonly service: string;
  /** The registration field, such as `Port` or `Meta.mesh-upstreams`. */
  readonly field: string;
  readonly message: string;
}

/** An entry of /v1/agent/services, as far as this file reads it. */
export interface AgentServiceEntry {
  ID?: string;
  Service?: string;
  Tags?: string[] | null;
  Meta?: Record<string, string> | null;
  Address?: string;
  Port?: number;
  Kind?: string;
}

const UPSTREAM = /^([^.:/]+)(?:\.([^.:/]+))?:(\d{1,5})(?:\/(.+))?$/;

/** Reads the opted-in services out of a /v1/agent/services answer, following the conventions in the file header. */
export function localServicesFromAgent(entries: Readonly<Record<string, AgentServiceEntry>>): { services: ConsulLocalService[]; problems: LocalServiceProblem[] } {
  const services: ConsulLocalService[] = [];
  const problems: LocalServiceProblem[] = [];
  for (const [key, e] of Object.entries(entries).sort(([a], [b]) => a.localeCompare(b))) {
    const id = e.ID ?? key;
    const name = e.Service ?? '';
    const meta = e.Meta ?? {};
    const found: LocalServiceProblem[] = [];
    const problem = (field: string, message: string): void => void found.push({ id, service: name, field, message });
    const enabled = meta[MESH_ENABLED_META];
    if (enabled === 'false' || (enabled === undefined && !(e.Tags ?? []).includes(MESH_TAG))) continue;
    // Connect sidecars and gateways carry the parent's tags; they are not apps.
    if (e.Kind) continue;
    if (enabled !== undefined && enabled !== 'true') problem(`Meta.${MESH_ENABLED_META}`, `got ${JSON.stringify(enabled)}, expected "true" or "false"`);
    if (!NAME_PATTERN.test(name)) problem('Service', `got ${JSON.stringify(name)}, expected a mesh name (lower-case letters, digits and "-", at most 63 characters)`);
    const namespace = meta[MESH_NAMESPACE_META] ?? 'default';
    if (!NAME_PATTERN.test(namespace)) problem(`Meta.${MESH_NAMESPACE_META}`, `got ${JSON.stringify(namespace)}, expected a mesh name (lower-case letters, digits and "-")`);
    const port = Number(e.Port ?? 0);
    if (!Number.isInteger(port) || port < 1 || port > 65535) problem('Port', `got ${JSON.stringify(e.Port ?? null)}, expected the port the app listens on (1 to 65535)`);
    const protocol = meta[MESH_PROTOCOL_META] ?? 'tcp';
    if (!(MESH_PROTOCOLS as readonly string[]).includes(protocol)) problem(`Meta.${MESH_PROTOCOL_META}`, `got ${JSON.stringify(protocol)}, expected one of ${MESH_PROTOCOLS.join(', ')}`);
    const upstreams = parseUpstreams(meta[MESH_UPSTREAMS_META] ?? '', (m) => problem(`Meta.${MESH_UPSTREAMS_META}`, m));
    if (found.length > 0) {
      problems.push(...found);
      continue;
    }
    services.push({ id, name, namespace, address: e.Address || '127.0.0.1', port, protocol: protocol as MeshProtocol, labels: labelsFromRegistration(e.Tags ?? [], meta), upstreams });
  }
  return { services, problems };
}

/** Parses `service[.namespace]:localPort[/protocol]` items separated by commas; reports each bad item. */
export function parseUpstreams(text: string, problem: (message: string) => void): ConsulLocalUpstream[] {
  const out: ConsulLocalUpstream[] = [];
  const ports = new Set<number>();
  for (const raw of text.split(',')) {
    const item = raw.trim();
    if (!item) continue;
    const m = UPSTREAM.exec(item);
    const hint = 'expected service[.namespace]:localPort[/protocol], such as "api:9001/http" or "billing.payments:9002"';
    if (!m) {
      problem(`item ${JSON.stringify(item)}: ${hint}`);
      continue;
    }
    const [, service, namespace = 'default', portText, protocol = 'tcp'] = m;
    const port = Number(portText);
    const bad: string[] = [];
    if (!NAME_PATTERN.test(service!)) bad.push(`service ${JSON.stringify(service)} is not a mesh name`);
    if (!NAME_PATTERN.test(namespace)) bad.push(`namespace ${JSON.stringify(namespace)} is not a mesh name`);
    if (port < 1 || port > 65535) bad.push(`port ${portText} is not 1 to 65535`);
    else if (ports.has(port)) bad.push(`port ${port} is listed twice`);
    if (!(MESH_PROTOCOLS as readonly string[]).includes(protocol)) bad.push(`protocol ${JSON.stringify(protocol)} is not one of ${MESH_PROTOCOLS.join(', ')}`);
    if (bad.length > 0) {
      problem(`item ${JSON.stringify(item)}: ${bad.join('; ')}`);
      continue;
    }
    ports.add(port);
    out.push({ service: service!, namespace, port, protocol: protocol as MeshProtocol });
  }
  return out;
}

export interface ConsulLocalServicesOptions {
  readonly client: Consul;
  /** Time between two polls. @default 250 */
  readonly intervalMs?: number;
  /** Registrations to leave out (the agent's own). */
  readonly ignore?: (id: string) => boolean;
  /** Called with the full set each time it changes (the first answer always counts as a change). */
  readonly onChange: (services: readonly ConsulLocalService[]) => void;
  readonly clock?: Clock;
  readonly log?: Logger;
  readonly random?: () => number;
}

/** How fresh the local service list is. */
export interface LocalServicesStatus {
  readonly lastSuccessAt: number | undefined;
  /** True until the first answer and while the last poll failed. */
  readonly stale: boolean;
  readonly lastError: string | undefined;
  readonly services: number;
  /** Opted-in registrations left out, with why. */
  readonly problems: readonly LocalServiceProblem[];
}

/** Polls the local Consul agent for the node's opted-in services. */
export class ConsulLocalServices {
  private readonly clock: Clock;
  private readonly log: Logger;
  private readonly backoff: Backoff;
  private timer: { unref?(): unknown } | undefined;
  private stopped = false;
  private fingerprint: string | undefined;
  private lastSuccessAt: number | undefined;
  private lastError: string | undefined;
  private count = 0;
  private problems: readonly LocalServiceProblem[] = [];
  private warned = new Set<string>();

  constructor(private readonly opts: ConsulLocalServicesOptions) {
    this.clock = opts.clock ?? systemClock;
    this.log = opts.log ?? silentLogger;
    this.backoff = new Backoff(500, 30_000, opts.random ?? Math.random);
  }

  start(): void {
    void this.poll();
  }

  close(): void {
    this.stopped = true;
    if (this.timer) this.clock.clearTimeout(this.timer);
  }

  status(): LocalServicesStatus {
    return { lastSuccessAt: this.lastSuccessAt, stale: this.lastSuccessAt === undefined || this.lastError !== undefined, lastError: this.lastError, services: this.count, problems: this.problems };
  }

  private async poll(): Promise<void> {
    if (this.stopped) return;
    let delay = this.opts.intervalMs ?? 250;
    try {
      const entries = (await this.opts.client.agent.service.list()) as Record<string, AgentServiceEntry> | null;
      if (this.stopped) return;
      if (!entries || typeof entries !== 'object') throw new Error(`expected a JSON object from /v1/agent/services, got ${entries === null ? 'null' : typeof entries}`);
      this.onAnswer(entries);
      this.backoff.reset();
    } catch (err) {
      if (this.stopped) return;
      const e = err instanceof MeshError ? err : new MeshError('MESH_ERR_CONSUL', `GET /v1/agent/services: ${(err as Error)?.message ?? String(err)}`, { cause: err });
      if (this.lastError === undefined) this.log.warn('cannot list the local Consul agent\'s services; keeping the last known ones', { error: describeError(e) });
      this.lastError = describeError(e);
      delay = this.backoff.next();
    }
    this.timer = this.clock.setTimeout(() => void this.poll(), delay);
    this.timer.unref?.();
  }

  private onAnswer(entries: Record<string, AgentServiceEntry>): void {
    if (this.lastError !== undefined) this.log.info('local Consul agent reachable again');
    this.lastError = undefined;
    this.lastSuccessAt = this.clock.now();
    const ignore = this.opts.ignore;
    const mine = ignore ? Object.fromEntries(Object.entries(entries).filter(([k, e]) => !ignore(e.ID ?? k))) : entries;
    const { services, problems } = localServicesFromAgent(mine);
    this.problems = problems;
    const warned = new Set<string>();
    for (const p of problems) {
      const key = `${p.id}\u0000${p.field}\u0000${p.message}`;
      warned.add(key);
      if (!this.warned.has(key)) {
        const e = new MeshError('MESH_ERR_LOCAL_SERVICE_INVALID', `local service ${JSON.stringify(p.service)} (Consul ID ${p.id}): ${p.field}: ${p.message}; the service is left out of the mesh`);
        this.log.warn('local service skipped', { service: p.service, id: p.id, field: p.field, error: describeError(e) });
      }
    }
    this.warned = warned;
    const fp = JSON.stringify(services);
    if (fp === this.fingerprint) return;
    this.fingerprint = fp;
    this.count = services.length;
    try {
      this.opts.onChange(services);
    } catch (err) {
      this.log.error('applying the local services failed', { error: describeError(err) });
    }
  }
}
