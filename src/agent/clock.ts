// Time as a dependency, so renewal and backoff can be driven by a fake clock in tests.

/** What the agent needs of time. */
export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): { unref?(): unknown };
  clearTimeout(handle: { unref?(): unknown }): void;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  // Node caps timers at 2^31-1 ms; a longer wait is re-armed by the caller's own logic.
  setTimeout: (fn, ms) => setTimeout(fn, Math.min(ms, 2 ** 31 - 1)),
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
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
