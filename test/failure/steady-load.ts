// Steady HTTP traffic at a fixed rate (open loop: a slow answer does not slow the sending), with every outcome recorded.

import { Pool } from 'undici';

/** One request's outcome. `status` 0 means no response (the error says why). */
export interface Outcome {
  readonly startedAt: number;
  readonly ms: number;
  readonly status: number;
  /** The app that answered (sample-service's `x-served-by`). */
  readonly servedBy?: string;
  /** The agent's own answer (`x-mesh-response-flags`), when it made one. */
  readonly flags?: string;
  readonly error?: string;
}

/** What a run of traffic came to. */
export interface LoadSummary {
  readonly sent: number;
  readonly ok: number;
  readonly failed: number;
  readonly seconds: number;
  /** Requests sent per second, measured. */
  readonly rate: number;
  readonly p99Ms: number;
  readonly maxMs: number;
  /** The first few failures, described. */
  readonly examples: string[];
}

/** The rate and length of the suite's traffic; MESH_FAILURE_RATE / MESH_FAILURE_SECONDS change them. */
export const LOAD = {
  rate: Number(process.env.MESH_FAILURE_RATE ?? 100),
  seconds: Number(process.env.MESH_FAILURE_SECONDS ?? 12),
};

export class SteadyLoad {
  readonly outcomes: Outcome[] = [];
  private readonly pool: Pool;
  private timer?: NodeJS.Timeout;
  private startedAt = 0;
  private sent = 0;
  private stopped = false;
  private readonly inFlight = new Set<Promise<void>>();

  /** @param url what to GET, such as the agent's upstream port `http://127.0.0.1:9001/` */
  constructor(
    private readonly url: string,
    private readonly opts: { rate?: number; timeoutMs?: number } = {},
  ) {
    const u = new URL(url);
    // Keep-alive connections, as an app's HTTP client keeps them; enough of them that a slow answer queues nothing.
    this.pool = new Pool(u.origin, { connections: 64, headersTimeout: opts.timeoutMs ?? 10_000, bodyTimeout: opts.timeoutMs ?? 10_000 });
  }

  get rate(): number {
    return this.opts.rate ?? LOAD.rate;
  }

  /** Starts sending; every 10 ms it sends what the rate owes since the start, so a stalled event loop catches up. */
  start(): this {
    this.startedAt = Date.now();
    this.timer = setInterval(() => {
      const due = Math.floor(((Date.now() - this.startedAt) * this.rate) / 1000);
      while (this.sent < due) this.send();
    }, 10);
    return this;
  }

  /** Lets the traffic run for `seconds` more. */
  runFor(seconds: number): Promise<void> {
    return new Promise((r) => setTimeout(r, seconds * 1000));
  }

  /** Resolves with the first outcome after `since` that satisfies `pred` (polling the record; no fixed sleep). */
  async waitFor(pred: (o: Outcome) => boolean, since: number, timeoutMs = 30_000): Promise<Outcome> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const hit = this.outcomes.find((o) => o.startedAt >= since && pred(o));
      if (hit) return hit;
      if (Date.now() > deadline) throw new Error(`no matching response within ${timeoutMs} ms (last: ${JSON.stringify(this.outcomes.at(-1))})`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** Stops sending, waits for the answers still due, and summarises. */
  async stop(): Promise<LoadSummary> {
    clearInterval(this.timer);
    await Promise.all([...this.inFlight]);
    this.stopped = true;
    await this.pool.close();
    return this.summary();
  }

  /** Stops sending and drops what is in flight (cleanup after a failed test). */
  async destroy(): Promise<void> {
    clearInterval(this.timer);
    if (!this.stopped) await this.pool.destroy();
    this.stopped = true;
  }

  /** The summary of the outcomes so far, or of those started in [from, to). */
  summary(from = 0, to = Infinity): LoadSummary {
    const os = this.outcomes.filter((o) => o.startedAt >= from && o.startedAt < to);
    const bad = os.filter((o) => o.status !== 200);
    const times = os.map((o) => o.ms).sort((x, y) => x - y);
    const first = Math.min(...os.map((o) => o.startedAt));
    const last = Math.max(...os.map((o) => o.startedAt));
    const seconds = os.length > 1 ? (last - first) / 1000 : 0;
    return {
      sent: os.length,
      ok: os.length - bad.length,
      failed: bad.length,
      seconds: Math.round(seconds * 10) / 10,
      rate: seconds > 0 ? Math.round((os.length - 1) / seconds) : 0,
      p99Ms: times[Math.floor(times.length * 0.99)] ?? 0,
      maxMs: times.at(-1) ?? 0,
      examples: bad.slice(0, 5).map((o) => `${new Date(o.startedAt).toISOString()} status ${o.status}${o.flags ? ` flags ${o.flags}` : ''}${o.error ? ` error ${o.error}` : ''}`),
    };
  }

  private send(): void {
    this.sent++;
    const p = this.exchange().finally(() => this.inFlight.delete(p));
    this.inFlight.add(p);
  }

  /** One GET; never rejects: every outcome, a broken one included, is recorded. */
  private async exchange(): Promise<void> {
    const startedAt = Date.now();
    try {
      const res = await this.pool.request({ path: new URL(this.url).pathname, method: 'GET' });
      const flags = res.headers['x-mesh-response-flags'];
      const servedBy = res.headers['x-served-by'];
      await res.body.text();
      this.outcomes.push({
        startedAt,
        ms: Date.now() - startedAt,
        status: res.statusCode,
        ...(typeof servedBy === 'string' ? { servedBy } : {}),
        ...(typeof flags === 'string' ? { flags } : {}),
      });
    } catch (err) {
      this.outcomes.push({ startedAt, ms: Date.now() - startedAt, status: 0, error: `${(err as { code?: string }).code ?? ''} ${(err as Error).message}`.trim() });
    }
  }
}
