// The server's sliding window over the agents' stats messages: golden signals per service and the who-calls-whom graph of the last minute.

import type { StatsMessage } from '../protocol';
import { LATENCY_BUCKETS_MS, type RequestSeries } from '../telemetry';

/** How far back the dashboard looks. @default 60 s */
export const TRAFFIC_WINDOW_MS = 60_000;
/** At most this many series are kept in the window; the oldest messages go first (the window then covers less). */
const MAX_WINDOW_SERIES = 50_000;

/** The signals of a set of requests, as the dashboard serves them. */
export interface Signals {
  /** Requests in the window. */
  readonly requests: number;
  /** Of those, answered with 5xx or not answered at all (status 0). */
  readonly errors: number;
  /** Requests per second over the window. */
  readonly rps: number;
  /** errors / requests; 0 without requests. */
  readonly errorRatio: number;
  /** Latency percentiles, milliseconds, estimated from the histogram; null without requests. */
  readonly p50Ms: number | null;
  readonly p99Ms: number | null;
  /** Requests by response code ("0": no answer). */
  readonly codes: Readonly<Record<string, number>>;
}

/** One edge of the service graph: a workload calling a service. */
export interface Edge extends Signals {
  readonly source: string;
  readonly destination: string;
}

interface Sample {
  readonly at: number;
  readonly series: readonly RequestSeries[];
}

class Sum {
  requests = 0;
  errors = 0;
  readonly buckets = new Array<number>(LATENCY_BUCKETS_MS.length + 1).fill(0);
  readonly codes: Record<string, number> = {};

  add(s: RequestSeries): void {
    this.requests += s.count;
    if (s.code === 0 || s.code >= 500) this.errors += s.count;
    this.codes[s.code] = (this.codes[s.code] ?? 0) + s.count;
    for (let i = 0; i < this.buckets.length; i++) this.buckets[i]! += s.buckets[i] ?? 0;
  }

  signals(windowMs: number): Signals {
    const n = this.requests;
    return {
      requests: n,
      errors: this.errors,
      rps: round(n / (windowMs / 1000), 3),
      errorRatio: n === 0 ? 0 : round(this.errors / n, 4),
      p50Ms: n === 0 ? null : quantileMs(0.5, this.buckets),
      p99Ms: n === 0 ? null : quantileMs(0.99, this.buckets),
      codes: this.codes,
    };
  }
}

const round = (v: number, digits: number): number => Math.round(v * 10 ** digits) / 10 ** digits;

/** `namespace/name` → the name a person reads: `name` in namespace default, else `name.namespace`. */
export function serviceLabel(ref: { name: string; namespace: string }): string {
  return ref.namespace === 'default' ? ref.name : `${ref.name}.${ref.namespace}`;
}

/**
 * The q-quantile of a histogram over LATENCY_BUCKETS_MS (counts per bucket, the last above every bound), by linear
 * interpolation inside the bucket that holds it, as Prometheus' histogram_quantile does; in the top bucket, the
 * highest bound.
 */
export function quantileMs(q: number, buckets: readonly number[]): number | null {
  const total = buckets.reduce((a, b) => a + b, 0);
  if (total === 0) return null;
  const rank = q * total;
  let seen = 0;
  for (let i = 0; i < buckets.length; i++) {
    const c = buckets[i]!;
    if (c > 0 && seen + c >= rank) {
      if (i >= LATENCY_BUCKETS_MS.length) return LATENCY_BUCKETS_MS[LATENCY_BUCKETS_MS.length - 1]!;
      const lower = i === 0 ? 0 : LATENCY_BUCKETS_MS[i - 1]!;
      const upper = LATENCY_BUCKETS_MS[i]!;
      return round(lower + (upper - lower) * ((rank - seen) / c), 2);
    }
    seen += c;
  }
  return LATENCY_BUCKETS_MS[LATENCY_BUCKETS_MS.length - 1]!;
}

/** The stats messages of the last TRAFFIC_WINDOW_MS, from every agent, added up on demand. */
export class TrafficWindow {
  private samples: Sample[] = [];
  private held = 0;

  constructor(
    private readonly now: () => number,
    readonly windowMs = TRAFFIC_WINDOW_MS,
  ) {}

  /** Takes one agent's message, stamped with the time it arrived. */
  add(msg: StatsMessage): void {
    if (msg.series.length === 0) return;
    this.samples.push({ at: this.now(), series: msg.series });
    this.held += msg.series.length;
    this.prune();
  }

  /** Per destination service (`name` or `name.namespace`): what its callers saw in the window. */
  services(): Map<string, Signals> {
    const sums = new Map<string, Sum>();
    for (const s of this.inWindow()) sumFor(sums, serviceLabel(s.destination)).add(s);
    return new Map([...sums].map(([k, v]) => [k, v.signals(this.windowMs)]));
  }

  /** Every (source workload, destination service) pair that carried requests in the window. */
  edges(): Edge[] {
    const sums = new Map<string, { source: string; destination: string; sum: Sum }>();
    for (const s of this.inWindow()) {
      const source = serviceLabel(s.source);
      const destination = serviceLabel(s.destination);
      const key = `${source}\u0000${destination}`;
      let e = sums.get(key);
      if (!e) sums.set(key, (e = { source, destination, sum: new Sum() }));
      e.sum.add(s);
    }
    return [...sums.values()].map((e) => ({ source: e.source, destination: e.destination, ...e.sum.signals(this.windowMs) }));
  }

  private *inWindow(): Iterable<RequestSeries> {
    this.prune();
    for (const sample of this.samples) yield* sample.series;
  }

  private prune(): void {
    const from = this.now() - this.windowMs;
    let drop = 0;
    let held = this.held;
    while (drop < this.samples.length && (this.samples[drop]!.at <= from || held > MAX_WINDOW_SERIES)) held -= this.samples[drop++]!.series.length;
    if (drop > 0) {
      this.samples = this.samples.slice(drop);
      this.held = held;
    }
  }
}

function sumFor(sums: Map<string, Sum>, key: string): Sum {
  let s = sums.get(key);
  if (!s) sums.set(key, (s = new Sum()));
  return s;
}
