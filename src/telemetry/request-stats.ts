// Per-request counts and latency histograms in the agent, per (source workload, destination service, response code), taken and reset for each stats message to the server.
//
// The data plane calls `record()` once per finished request on the calling side (the agent whose app made
// the request: Istio's reporter=source). Like the metrics registry, a caller on the hot path can resolve an edge once
// with `edge()` and keep it; recording is then a map lookup by status code and a bucket count.

import type { ServiceRef } from '../protocol';
import { DURATION_BUCKETS_MS } from './istio-metrics';

/**
 * Upper bounds (milliseconds) of the latency buckets every agent uses; one more bucket counts what is above the last.
 * Fixed, so the server can add histograms from many agents bucket by bucket. They are Istio's default buckets of
 * istio_request_duration_milliseconds (the same array), so the dashboard's percentiles agree with histogram_quantile over those.
 */
export const LATENCY_BUCKETS_MS: readonly number[] = DURATION_BUCKETS_MS;

/** At most this many (source, destination, code) series between two takes; records of further series are counted as dropped. */
export const MAX_REQUEST_SERIES = 500;

/** One series as the agent sends it: what happened between two takes. */
export interface RequestSeries {
  readonly source: ServiceRef;
  readonly destination: ServiceRef;
  /** HTTP status of the answer the app got; 0 when it got none (reset, timeout). */
  readonly code: number;
  readonly count: number;
  /** Sum of the durations, milliseconds. */
  readonly sumMs: number;
  /** Per bucket of LATENCY_BUCKETS_MS, plus one for the rest (not cumulative). */
  readonly buckets: readonly number[];
}

/** What one take returns. */
export interface RequestStatsSnapshot {
  readonly series: RequestSeries[];
  /** Records left out since the last take because MAX_REQUEST_SERIES series were already held. */
  readonly dropped: number;
}

class Series {
  count = 0;
  sumMs = 0;
  readonly buckets = new Array<number>(LATENCY_BUCKETS_MS.length + 1).fill(0);
  constructor(readonly code: number) {}

  observe(ms: number): void {
    let i = 0;
    while (i < LATENCY_BUCKETS_MS.length && ms > LATENCY_BUCKETS_MS[i]!) i++;
    this.buckets[i]!++;
    this.count++;
    this.sumMs += ms;
  }
}

/** The requests from one local service to one destination service, by response code. */
export class RequestEdge {
  /** @internal by RequestAggregator */
  readonly codes = new Map<number, Series>();
  constructor(
    readonly source: ServiceRef,
    readonly destination: ServiceRef,
    private readonly stats: RequestAggregator,
  ) {}

  /** Counts one finished request: its status (0: no answer) and how long it took, milliseconds. */
  record(status: number, durationMs: number): void {
    let s = this.codes.get(status);
    if (!s) {
      if (!this.stats.admitSeries()) return;
      this.codes.set(status, (s = new Series(status)));
    }
    s.observe(durationMs > 0 && Number.isFinite(durationMs) ? durationMs : 0);
  }
}

/**
 * The agent's request aggregator. `take()` hands out what was recorded since the previous take and starts afresh,
 * so every request is reported once.
 */
export class RequestAggregator {
  private readonly edges = new Map<string, RequestEdge>();
  private series = 0;
  private dropped = 0;

  /** The edge from `source` to `destination`, made on first use. Keep it: the lookup builds a key. */
  edge(source: ServiceRef, destination: ServiceRef): RequestEdge {
    const key = `${source.namespace}/${source.name}\u0000${destination.namespace}/${destination.name}`;
    let e = this.edges.get(key);
    if (!e) this.edges.set(key, (e = new RequestEdge({ name: source.name, namespace: source.namespace }, { name: destination.name, namespace: destination.namespace }, this)));
    return e;
  }

  /** Counts one finished request from `source` (a local workload) to `destination` (the service it called). */
  record(source: ServiceRef, destination: ServiceRef, status: number, durationMs: number): void {
    this.edge(source, destination).record(status, durationMs);
  }

  /** @internal Whether one more series fits before the next take. */
  admitSeries(): boolean {
    if (this.series >= MAX_REQUEST_SERIES) {
      this.dropped++;
      return false;
    }
    this.series++;
    return true;
  }

  /** Everything recorded since the last take; resets the counts (edges handed out by edge() stay valid). */
  take(): RequestStatsSnapshot {
    const series: RequestSeries[] = [];
    for (const e of this.edges.values()) {
      for (const s of e.codes.values()) {
        series.push({ source: e.source, destination: e.destination, code: s.code, count: s.count, sumMs: s.sumMs, buckets: [...s.buckets] });
      }
      e.codes.clear();
    }
    const dropped = this.dropped;
    this.series = 0;
    this.dropped = 0;
    return { series, dropped };
  }
}
