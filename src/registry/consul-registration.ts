// Registers the agent (and, when asked, the node's mesh services) with the local Consul agent; deregisters on stop.

import type Consul from 'consul';
import { describeError } from '../errors';
import { silentLogger, type Logger } from '../telemetry';
import { createConsulClient, resolveConsulSettings, type ConsulSettingsInput } from './consul-settings';
import { MESH_INBOUND_PORT_META, MESH_NAMESPACE_META } from './consul-source';

/** A service to register, as the agent knows it. */
export interface RegisteredService {
  readonly id: string;
  readonly name: string;
  readonly namespace: string;
  readonly address: string;
  readonly port: number;
  readonly tags?: readonly string[];
  readonly meta?: Readonly<Record<string, string>>;
  /** Consul check: an HTTP URL or a host:port for TCP, probed every `interval`. */
  readonly check: { readonly http?: string; readonly tcp?: string; readonly interval: string };
}

/**
 * Keeps registrations in the local Consul agent: the agent itself (service `mesh-agent`, HTTP check on its
 * admin /ready) and mesh services, each with service meta `mesh-inbound-port` so other agents know which port
 * leads to them (the convention ConsulSource reads). Registration is retried with backoff until it succeeds.
 */
export class ConsulRegistration {
  private readonly client: Consul;
  private readonly registered = new Set<string>();
  private timer: NodeJS.Timeout | null = null;
  private closed = false;

  constructor(
    consul: ConsulSettingsInput,
    private readonly inboundPort: number,
    private readonly services: readonly RegisteredService[],
    private readonly log: Logger = silentLogger,
    env: NodeJS.ProcessEnv = process.env,
  ) {
    this.client = createConsulClient(resolveConsulSettings(consul, env));
  }

  /** Registers everything; failures are logged and retried (1 s, doubling to 30 s) without blocking the agent. */
  start(): void {
    void this.registerAll(1000);
  }

  private async registerAll(nextDelay: number): Promise<void> {
    let failed = false;
    for (const s of this.services) {
      if (this.closed) return;
      try {
        const meta: Record<string, string> = { ...s.meta, [MESH_INBOUND_PORT_META]: String(this.inboundPort) };
        if (s.namespace !== 'default') meta[MESH_NAMESPACE_META] = s.namespace;
        await this.client.agent.service.register({ id: s.id, name: s.name, address: s.address, port: s.port, tags: [...(s.tags ?? [])], meta, check: { name: `${s.name} health`, timeout: '5s', ...s.check } });
        this.registered.add(s.id);
        this.log.info('registered with Consul', { service: s.name, id: s.id });
      } catch (err) {
        failed = true;
        this.log.warn('Consul registration failed, will retry', { service: s.name, error: describeError(err) });
      }
    }
    if (failed && !this.closed) {
      this.timer = setTimeout(() => void this.registerAll(Math.min(nextDelay * 2, 30_000)), nextDelay);
      this.timer.unref();
    }
  }

  /** Deregisters what was registered (clean shutdown). */
  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    await Promise.all(
      [...this.registered].map((id) =>
        this.client.agent.service.deregister(id).catch((err: unknown) => this.log.warn('Consul deregistration failed', { id, error: describeError(err) })),
      ),
    );
    this.registered.clear();
    this.client.destroy();
  }
}
