// The server's side of live taps: each tap (an admin API client streaming GET /v1/tap) is asked of the connected
// agents that may carry matching traffic, and the records they send back go to its sink. An agent that connects
// while a tap runs is asked too; a tap that ends is stopped on every agent it was asked of.

import { randomBytes } from 'node:crypto';
import { MeshError } from '../errors';
import type { ServerMessage, ServiceRef, TapFilterMessage } from '../protocol';

/** Taps running at once, at most (each costs every agent it reaches a little work per matching request). */
export const MAX_TAPS = 8;

/** A connected agent as taps see it. */
export interface TapTarget {
  readonly agentId: string;
  /** Its channel protocol (taps need 3 or later). */
  readonly protocol: number;
  readonly services: readonly ServiceRef[];
  readonly upstreams: readonly ServiceRef[];
  /** Sends a channel message (JSON text). */
  readonly send: (text: string) => void;
}

/** Where one tap's output goes. */
export interface TapSink {
  /** An agent started the tap (its first, empty, batch). */
  ready(agentId: string): void;
  records(agentId: string, records: readonly Record<string, unknown>[], dropped: number): void;
}

interface Tap {
  readonly filter: TapFilterMessage;
  readonly sink: TapSink;
  readonly asked: Set<string>;
}

const message = (m: ServerMessage): string => JSON.stringify(m);
const named = (want: string, s: ServiceRef): boolean => want === s.name || want === `${s.name}.${s.namespace}`;

/** Whether an agent may carry traffic the filter selects: it runs or calls `to`, and runs `from`. */
export function mayCarry(t: TapTarget, f: TapFilterMessage): boolean {
  if (t.protocol < 3) return false;
  if (f.to !== undefined && !t.services.some((s) => named(f.to!, s)) && !t.upstreams.some((s) => named(f.to!, s))) return false;
  if (f.from !== undefined && !t.services.some((s) => named(f.from!, s)) && f.to === undefined) return false;
  return true;
}

export class TapHub {
  private readonly taps = new Map<string, Tap>();

  constructor(private readonly targets: () => Iterable<TapTarget>) {}

  /**
   * Starts a tap on every agent that may carry matching traffic.
   * @throws MeshError MESH_ERR_TAP_LIMIT when MAX_TAPS are running
   */
  start(filter: TapFilterMessage, sink: TapSink): { asked: number; stop: () => void } {
    if (this.taps.size >= MAX_TAPS) throw new MeshError('MESH_ERR_TAP_LIMIT', `${MAX_TAPS} taps are running already; stop one (end its mesh-agent tap) and try again`);
    const id = randomBytes(8).toString('hex');
    const tap: Tap = { filter, sink, asked: new Set() };
    this.taps.set(id, tap);
    for (const t of this.targets()) this.ask(id, tap, t);
    return {
      asked: tap.asked.size,
      stop: () => {
        this.taps.delete(id);
        for (const t of this.targets()) if (tap.asked.has(t.agentId)) t.send(message({ type: 'tap-stop', id }));
      },
    };
  }

  /** An agent said hello (connected, or its services changed): it gets the running taps it may carry. */
  agentJoined(t: TapTarget): void {
    for (const [id, tap] of this.taps) this.ask(id, tap, t);
  }

  /** Records an agent sent for tap `id` (a tap that ended meanwhile: dropped). */
  records(agentId: string, id: string, records: readonly Record<string, unknown>[], dropped: number): void {
    const tap = this.taps.get(id);
    if (!tap || !tap.asked.has(agentId)) return;
    if (records.length === 0 && dropped === 0) tap.sink.ready(agentId);
    else tap.sink.records(agentId, records, dropped);
  }

  private ask(id: string, tap: Tap, t: TapTarget): void {
    if (!mayCarry(t, tap.filter)) return;
    tap.asked.add(t.agentId);
    t.send(message({ type: 'tap-start', id, filter: tap.filter }));
  }
}
