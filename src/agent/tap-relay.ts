// The agent's side of live taps: the server asks for one (tap-start), the agent taps its telemetry and sends the
// matching request records back in small batches, bounded: what does not fit in a batch is dropped and counted.

import { MAX_TAP_RECORDS, type AgentMessage, type TapFilterMessage } from '../protocol';
import type { MeshTelemetry, RequestRecord } from '../telemetry';

/** How often a running tap sends what it collected. */
export const TAP_FLUSH_MS = 200;

interface RunningTap {
  stop(): void;
  records: RequestRecord[];
  dropped: number;
}

export class TapRelay {
  private readonly taps = new Map<string, RunningTap>();
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly telemetry: MeshTelemetry,
    private readonly send: (msg: AgentMessage) => void,
  ) {}

  /** Starts tap `id` and tells the server at once (an empty batch), so it knows this agent is listening. */
  start(id: string, filter: TapFilterMessage): void {
    this.stop(id);
    const tap: RunningTap = {
      records: [],
      dropped: 0,
      stop: this.telemetry.tap(filter, (r) => {
        if (tap.records.length < MAX_TAP_RECORDS) tap.records.push(r);
        else tap.dropped++;
      }),
    };
    this.taps.set(id, tap);
    this.send({ type: 'tap-records', id, records: [], dropped: 0 });
    this.timer ??= setInterval(() => this.flush(), TAP_FLUSH_MS).unref();
  }

  stop(id: string): void {
    this.taps.get(id)?.stop();
    this.taps.delete(id);
    if (this.taps.size === 0 && this.timer) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
  }

  /** The server connection is gone: every tap stops (the server starts them again when it wants). */
  stopAll(): void {
    for (const id of [...this.taps.keys()]) this.stop(id);
  }

  private flush(): void {
    for (const [id, t] of this.taps) {
      if (t.records.length === 0 && t.dropped === 0) continue;
      this.send({ type: 'tap-records', id, records: t.records as unknown as Record<string, unknown>[], dropped: t.dropped });
      t.records = [];
      t.dropped = 0;
    }
  }
}
