// A fake Clock for tests: time moves only when the test calls advance(), and due timers fire in order.

import type { Clock } from '../../src/agent/clock';

interface Timer {
  readonly id: number;
  readonly at: number;
  readonly fn: () => void;
}

/** The handle setTimeout returns; clearTimeout takes it back. */
export interface FakeTimerHandle {
  readonly id: number;
  unref(): FakeTimerHandle;
}

/**
 * A Clock whose time is set by the test. `now` is an arrow function so it can be handed on
 * (e.g. to CertificateAuthority.create) without binding.
 */
export class FakeClock implements Clock {
  private time: number;
  private nextId = 1;
  private readonly timers = new Map<number, Timer>();
  private scheduledWaiters: Array<(delayMs: number) => void> = [];

  /** @param start epoch ms; a whole second by default, since certificates carry seconds only. */
  constructor(start = Date.UTC(2030, 0, 1, 0, 0, 0)) {
    this.time = start;
  }

  readonly now = (): number => this.time;

  setTimeout(fn: () => void, ms: number): FakeTimerHandle {
    const id = this.nextId++;
    const delay = Math.max(0, Number.isFinite(ms) ? ms : 0);
    this.timers.set(id, { id, at: this.time + delay, fn });
    const waiters = this.scheduledWaiters;
    this.scheduledWaiters = [];
    for (const w of waiters) w(delay);
    const handle: FakeTimerHandle = { id, unref: () => handle };
    return handle;
  }

  clearTimeout(handle: { unref?(): unknown }): void {
    this.timers.delete((handle as FakeTimerHandle).id);
  }

  /**
   * Moves time forward by `ms`, firing every timer that falls due on the way, earliest first
   * (ties in the order they were set). A timer set by a firing timer fires too if it is due.
   */
  advance(ms: number): void {
    const end = this.time + ms;
    for (;;) {
      const due = this.earliest();
      if (!due || due.at > end) break;
      this.timers.delete(due.id);
      this.time = Math.max(this.time, due.at);
      due.fn();
    }
    this.time = end;
  }

  /** Advances exactly to the next pending timer and fires it; returns the delay that passed. */
  fireNext(): number {
    const due = this.earliest();
    if (!due) throw new Error('FakeClock.fireNext: no timer is pending');
    const delay = due.at - this.time;
    this.advance(delay);
    return delay;
  }

  /** Resolves with the delay of the next timer someone sets (an event, not a wait for time to pass). */
  nextTimerSet(): Promise<number> {
    return new Promise((resolve) => this.scheduledWaiters.push(resolve));
  }

  /** Epoch ms at which each pending timer is due, earliest first. */
  pendingDueTimes(): number[] {
    return [...this.timers.values()].map((t) => t.at).sort((a, b) => a - b);
  }

  get pendingCount(): number {
    return this.timers.size;
  }

  private earliest(): Timer | undefined {
    let best: Timer | undefined;
    for (const t of this.timers.values()) if (!best || t.at < best.at || (t.at === best.at && t.id < best.id)) best = t;
    return best;
  }
}
