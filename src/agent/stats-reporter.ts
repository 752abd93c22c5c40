// Sends the agent's request stats, version and certificate expiries to the server every few seconds (channel protocol 3), for the dashboard.

import { MESH_VERSION, type AgentMessage } from '../protocol';
import type { RequestAggregator } from '../telemetry';

/** How often the agent sends what it recorded. @default 2 s */
export const STATS_INTERVAL_MS = 2000;
/** Without traffic, one message every this many intervals still says the agent's version and certificates. */
const IDLE_INTERVALS = 15;

/** What the reporter needs of the agent. */
export interface StatsReporterDeps {
  readonly stats: RequestAggregator;
  /** The channel: whether it is open, and sending on it. */
  readonly channel: { readonly connected: boolean; send(msg: AgentMessage): void; on(event: 'welcome', fn: (msg: { protocol: number }) => void): unknown; on(event: 'disconnected', fn: () => void): unknown };
  readonly certificates: () => { spiffeId: string; notAfter: string }[];
  readonly now: () => number;
  /** @default STATS_INTERVAL_MS */
  readonly intervalMs?: number;
}

/**
 * Takes the request stats and sends them while the channel is open to a server that speaks protocol 3; otherwise the
 * counts keep adding up in the agent (bounded by MAX_REQUEST_SERIES) and go with the first message after.
 */
export class StatsReporter {
  private timer?: NodeJS.Timeout;
  /** The protocol of the server on the other end; 0 while none is known. */
  private serverProtocol = 0;
  private since: number;
  private idle = 0;

  constructor(private readonly deps: StatsReporterDeps) {
    this.since = deps.now();
  }

  start(): void {
    this.deps.channel.on('welcome', (msg) => {
      this.serverProtocol = msg.protocol;
      // A fresh server learns the version and certificates at once, not at the next idle message.
      this.send(true);
    });
    this.deps.channel.on('disconnected', () => (this.serverProtocol = 0));
    this.timer = setInterval(() => this.send(false), this.deps.intervalMs ?? STATS_INTERVAL_MS).unref();
  }

  private send(always: boolean): void {
    // An older server answers an unknown message type with an error: send it nothing.
    if (!this.deps.channel.connected || this.serverProtocol < 3) return;
    const { series, dropped } = this.deps.stats.take();
    if (series.length === 0 && dropped === 0 && !always && ++this.idle < IDLE_INTERVALS) return;
    this.idle = 0;
    const now = this.deps.now();
    this.deps.channel.send({ type: 'stats', version: MESH_VERSION, intervalMs: Math.max(0, Math.round(now - this.since)), series, dropped, certificates: this.deps.certificates() });
    this.since = now;
  }

  close(): void {
    if (this.timer) clearInterval(this.timer);
  }
}
