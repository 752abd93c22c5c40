// The agent's link to Consul: one client shared by discovery, registration and the local-service poller, made from the `consul` block.

import type Consul from 'consul';
import { formatHostPort, type HostPort } from '../config';
import { describeError, MeshError } from '../errors';
import { MESH_SERVER_SERVICE } from '../protocol';
import {
  ConsulLocalServices,
  ConsulRegistration,
  ConsulSource,
  createConsulClient,
  resolveConsulSettings,
  type ConsulLocalService,
  type LocalServicesStatus,
  type RegisteredService,
  type RegistrationCheck,
  type RegistrationStatus,
} from '../registry';
import type { Logger } from '../telemetry';
import type { AgentConfig, ConsulDiscoveryConfig, LocalServiceConfig } from './agent-config';

/** The least time between two polls of /v1/agent/services. */
const LOCAL_POLL_FLOOR_MS = 100;

/** The default check of a registered service: TCP to its app. */
const DEFAULT_CHECK = { intervalMs: 10_000, timeoutMs: 2_000 } as const;

/** A host Consul's agent (on this node) can dial for an app bound to a wildcard address. */
const dialable = (hp: HostPort): HostPort => ({ host: hp.host === '0.0.0.0' ? '127.0.0.1' : hp.host === '::' ? '::1' : hp.host, port: hp.port });

/** The Consul check of a configured service (the app is `target`; an http path is relative to it). */
export function checkFor(s: LocalServiceConfig): RegistrationCheck {
  const target = dialable(s.target);
  const c = s.check;
  if (c && 'ttlMs' in c) return { ttlMs: c.ttlMs, probe: target };
  const timing = c ? { intervalMs: c.intervalMs, timeoutMs: c.timeoutMs } : DEFAULT_CHECK;
  if (c && 'http' in c) return { http: `http://${formatHostPort(target)}${c.http}`, ...timing };
  return { tcp: formatHostPort(target), ...timing };
}

/** The Consul service ID the agent registers a configured service under. */
export const registrationId = (s: { name: string; namespace: string }, nodeName: string): string =>
  s.namespace === 'default' ? `${s.name}-${nodeName}` : `${s.name}-${s.namespace}-${nodeName}`;

/**
 * What the agent keeps registered: itself (`mesh-agent`, ID `mesh-agent-<node>`, port = the inbound port,
 * HTTP check on the admin /ready) and, with registerServices, every service of the config file (those from
 * Consul were registered by whoever runs them).
 */
export function registrationsFor(config: AgentConfig, agent: { id: string; inbound: HostPort; admin: HostPort }): RegisteredService[] {
  const self: RegisteredService = {
    id: `mesh-agent-${config.nodeName}`,
    name: 'mesh-agent',
    namespace: 'default',
    address: config.address,
    port: agent.inbound.port,
    meta: { 'mesh-agent-id': agent.id },
    check: { http: `http://${formatHostPort(dialable(agent.admin))}/ready`, ...DEFAULT_CHECK },
  };
  if (!config.consul?.registerServices) return [self];
  return [
    self,
    ...config.services.map((s) => ({
      id: registrationId(s, config.nodeName),
      name: s.name,
      namespace: s.namespace,
      address: config.address,
      port: s.target.port,
      tags: [...s.tags, `protocol=${s.protocol}`],
      meta: s.meta,
      check: checkFor(s),
    })),
  ];
}

/** Services whose tags, meta or check cannot take effect because nothing registers them (no consul.registerServices). */
export function unusedRegistrationFields(config: AgentConfig): string[] {
  if (config.consul?.registerServices) return [];
  return config.services.filter((s) => s.tags.length > 0 || Object.keys(s.meta).length > 0 || s.check !== undefined).map((s) => `${s.namespace}/${s.name}`);
}

/** Everything the agent does with Consul for one `consul` block; replaced as a whole when the block changes. */
export class ConsulLink {
  private readonly client: Consul;
  readonly source: ConsulSource;
  private registration: ConsulRegistration | undefined;
  private local: ConsulLocalServices | undefined;

  /** @throws MeshError MESH_ERR_CONFIG for connection settings that cannot be used (token file, TLS files) */
  constructor(
    readonly settings: ConsulDiscoveryConfig,
    private readonly log: Logger,
  ) {
    const { stale, waitMs, minIntervalMs, registerServices: _r, localServices: _l, resyncIntervalMs: _s, discoverServers: _d, ...connection } = settings;
    this.client = createConsulClient(resolveConsulSettings(connection));
    this.source = new ConsulSource({ client: this.client, stale, waitMs, minIntervalMs, log: log.child({ source: 'consul' }) });
  }

  /** Starts keeping `services` registered (retrying, re-registering what Consul forgets). */
  register(inboundPort: number, services: readonly RegisteredService[], onFailure: () => void): void {
    this.registration = new ConsulRegistration({ client: this.client, inboundPort, resyncIntervalMs: this.settings.resyncIntervalMs, onFailure, log: this.log.child({ source: 'consul' }) });
    this.registration.set(services);
    this.registration.start();
  }

  /** The agent ports (host:port) of the server replicas whose `mesh-server` registration passes its checks. @throws MeshError MESH_ERR_CONSUL */
  async serverReplicas(): Promise<string[]> {
    try {
      const entries = (await this.client.health.service({ service: MESH_SERVER_SERVICE, passing: true })) as { Node: { Address: string }; Service: { Address: string; Port: number } }[];
      return entries.map((e) => formatHostPort({ host: e.Service.Address || e.Node.Address, port: e.Service.Port }));
    } catch (err) {
      throw new MeshError('MESH_ERR_CONSUL', `cannot list the ${MESH_SERVER_SERVICE} replicas in Consul: ${describeError(err)}`, { cause: err });
    }
  }

  /** Replaces the registered set (config reloaded). */
  setRegistrations(services: readonly RegisteredService[]): void {
    this.registration?.set(services);
  }

  /** With consul.localServices, polls the local agent and hands every change of the opted-in set to `onChange`. */
  watchLocalServices(onChange: (services: readonly ConsulLocalService[]) => void, ignore: (id: string) => boolean): void {
    if (!this.settings.localServices) return;
    // minInterval may be 0 for the blocking queries (they wait in Consul); a poll needs a floor.
    const intervalMs = Math.max(LOCAL_POLL_FLOOR_MS, this.settings.minIntervalMs);
    this.local = new ConsulLocalServices({ client: this.client, intervalMs, ignore, onChange, log: this.log.child({ source: 'consul-local' }) });
    this.local.start();
  }

  status(): { watches: ReturnType<ConsulSource['status']>; registrations: RegistrationStatus[]; localServices: LocalServicesStatus | null } {
    return { watches: this.source.status(), registrations: this.registration?.status() ?? [], localServices: this.local?.status() ?? null };
  }

  /** Stops polling and watching, deregisters, and closes the client's sockets. */
  async close(): Promise<void> {
    this.local?.close();
    this.source.close();
    await this.registration?.close();
    this.client.destroy();
  }
}
