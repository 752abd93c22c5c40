// The outbound listeners of the node, one per upstream, kept in step with the service set without touching unchanged ones.

import type { HostPort } from '../config';
import { describeError } from '../errors';
import type { OutboundListener, OutboundRoute } from '../proxy';
import type { Logger } from '../telemetry';

/** An upstream the agent should listen for. */
export interface DesiredUpstream {
  /** Equal keys mean the same listener (see upstreamKey). */
  readonly key: string;
  /** The name `addresses()` reports it under: "<service>-><upstream>". */
  readonly name: string;
  readonly route: OutboundRoute;
}

interface Running {
  readonly desired: DesiredUpstream;
  readonly listener: OutboundListener;
  bound: HostPort | undefined;
  error: string | undefined;
}

/** Upstream listeners by key; apply() opens new ones and closes the ones no longer wanted. */
export class UpstreamListeners {
  private readonly running = new Map<string, Running>();

  constructor(
    private readonly make: (route: OutboundRoute) => OutboundListener,
    private readonly log: Logger,
  ) {}

  /**
   * Closes listeners whose key is gone (their open connections get the drain grace period), then binds the new
   * ones (and those that failed before). With `strict` a bind failure is thrown (at start); otherwise it is logged and shown in status.
   * @throws MeshError MESH_ERR_LISTEN with strict, when a port cannot be bound
   */
  async apply(desired: readonly DesiredUpstream[], strict = false): Promise<{ added: string[]; removed: string[]; failed: string[] }> {
    const want = new Map(desired.map((d) => [d.key, d]));
    const removed = [...this.running.keys()].filter((k) => !want.has(k));
    // Close first: an upstream that moved to a port another one just left must find it free.
    await Promise.all(removed.map((k) => this.running.get(k)!.listener.close()));
    for (const k of removed) this.running.delete(k);
    // One that failed to bind holds no port: try it again.
    for (const [k, r] of this.running) if (r.error !== undefined) this.running.delete(k);
    const added: string[] = [];
    const failed: string[] = [];
    for (const d of desired) {
      if (this.running.has(d.key)) continue;
      const listener = this.make(d.route);
      const r: Running = { desired: d, listener, bound: undefined, error: undefined };
      this.running.set(d.key, r);
      try {
        r.bound = await listener.listen();
        added.push(d.key);
      } catch (err) {
        if (strict) throw err;
        r.error = describeError(err);
        failed.push(d.key);
        this.log.error('upstream not opened', { upstream: d.key, error: r.error });
      }
    }
    return { added, removed, failed };
  }

  /** Every listener, bound or not, with its bind error. */
  list(): { listener: OutboundListener; bound: HostPort | undefined; error: string | undefined }[] {
    return [...this.running.values()];
  }

  /** Bound addresses by "<service>-><upstream>". */
  addresses(): Record<string, HostPort> {
    const out: Record<string, HostPort> = {};
    for (const r of this.running.values()) if (r.bound) out[r.desired.name] = r.bound;
    return out;
  }

  async close(): Promise<void> {
    await Promise.all([...this.running.values()].map((r) => r.listener.close()));
    this.running.clear();
  }
}
