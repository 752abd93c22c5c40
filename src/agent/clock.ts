// Time as a dependency, so renewal and backoff can be driven by a fake clock in tests.

/** What the agent needs of time. */
export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): { unref?(): unknown };
  clearTimeout(handle: { unref?(): unknown }): void;
}

/** Node caps one timer at 2^31-1 ms (24.8 days); longer waits are chained. */
const MAX_TIMER_MS = 2 ** 31 - 1;

class LongTimer {
  private t: NodeJS.Timeout;
  private unrefd = false;
  constructor(fn: () => void, ms: number) {
    this.t = this.arm(fn, Date.now() + ms);
  }
  private arm(fn: () => void, at: number): NodeJS.Timeout {
    const left = at - Date.now();
    const t = left > MAX_TIMER_MS ? setTimeout(() => (this.t = this.arm(fn, at)), MAX_TIMER_MS) : setTimeout(fn, Math.max(0, left));
    if (this.unrefd) t.unref();
    return t;
  }
  unref(): this {
    this.unrefd = true;
    this.t.unref();
    return this;
  }
  clear(): void {
    clearTimeout(this.t);
  }
}

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => new LongTimer(fn, ms),
  clearTimeout: (h) => (h as LongTimer).clear(),
};

/** Exponential backoff with full jitter, capped. */
export class Backoff {
  private attempt = 0;

  constructor(
    private readonly baseMs = 500,
    private readonly capMs = 30_000,
    private readonly random: () => number = Math.random,
  ) {}

  next(): number {
    const ceiling = Math.min(this.capMs, this.baseMs * 2 ** this.attempt);
    this.attempt = Math.min(this.attempt + 1, 30);
    return Math.round(ceiling / 2 + (this.random() * ceiling) / 2);
  }

  reset(): void {
    this.attempt = 0;
  }
}
