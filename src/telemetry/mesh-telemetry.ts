// The agent's request telemetry in one place: Istio metrics per hop, the access log, traces and live taps. The data
// plane reports each finished request to a Hop (metrics, always) and, only when `detailed` is true, builds a
// RequestRecord for the access log and the taps; it starts spans only when `tracing` is set.

import { AccessLog, type AccessLogSettings, type RequestRecord } from './access-log';
import { IstioMetrics, type Hop, type HopLabels, type RequestStats } from './istio-metrics';
import type { MetricsRegistry } from './metrics';
import { OtlpExporter, type FinishedSpan, type OtlpSettings } from './otlp-exporter';
import type { RequestAggregator } from './request-stats';

/** `tracing` in the agent config. */
export interface TracingSettings extends OtlpSettings {
  /** The fraction of new traces sampled (a request that carries a sampling decision keeps it), 0..1. @default 1 */
  readonly sampleRate: number;
}

/** What a live tap wants to see; every given field must match. */
export interface TapFilter {
  /** The destination service: `name` or `name.namespace`. */
  readonly to?: string;
  /** The calling workload: `name` or `name.namespace`. */
  readonly from?: string;
  /** The request path starts with this. */
  readonly pathPrefix?: string;
}

interface Tap {
  readonly filter: TapFilter;
  readonly send: (r: RequestRecord) => void;
}

/** Active tracing: who decides sampling and where spans go. */
export interface Tracing {
  readonly sampleRate: number;
  readonly exporter: OtlpExporter;
}

const named = (want: string, name: string, namespace: string): boolean => want === name || want === `${name}.${namespace}`;

/** Whether a record is one a tap with this filter wants. */
export function tapMatches(f: TapFilter, r: RequestRecord): boolean {
  if (f.to !== undefined && !named(f.to, r.destination_service, r.destination_namespace)) return false;
  if (f.from !== undefined && !named(f.from, r.source_workload, r.source_namespace)) return false;
  if (f.pathPrefix !== undefined && !(r.path ?? '').startsWith(f.pathPrefix)) return false;
  return true;
}

export class MeshTelemetry {
  readonly istio: IstioMetrics;
  /** Whether per-request records are wanted (an access log is on, or someone taps): the one check the data plane makes per request. */
  detailed = false;
  /** Set when spans are made and exported. */
  tracing: Tracing | undefined;
  private accessLog: AccessLog | undefined;
  private readonly taps = new Set<Tap>();
  /** Counts kept across reconfigurations (a new access log or exporter starts its own from zero). */
  private readonly carried = { logWritten: 0, logDropped: 0, spansExported: 0, spansDropped: 0, exportFailures: 0 };

  constructor(
    registry: MetricsRegistry,
    private readonly onProblem: (why: string) => void = () => {},
    /** Where the caller's side of each hop also counts its requests for the dashboard. */
    edges?: RequestAggregator,
  ) {
    this.istio = new IstioMetrics(registry, edges);
    const written = registry.counter('mesh_access_log_lines_total', 'Access log lines written.').labels();
    const logDropped = registry.counter('mesh_access_log_dropped_total', 'Access log lines dropped because the output could not keep up.').labels();
    const exported = registry.counter('mesh_trace_spans_exported_total', 'Spans the OTLP collector accepted.').labels();
    const spansDropped = registry.counter('mesh_trace_spans_dropped_total', 'Spans dropped: the export queue was full, or the collector refused or could not be reached.').labels();
    const failures = registry.counter('mesh_trace_export_failures_total', 'OTLP export requests that failed.').labels();
    const taps = registry.gauge('mesh_taps_active', 'Live taps (mesh-agent tap) reading this agent now.').labels();
    registry.collect(() => {
      const c = this.counts();
      written.value = c.logWritten;
      logDropped.value = c.logDropped;
      exported.value = c.spansExported;
      spansDropped.value = c.spansDropped;
      failures.value = c.exportFailures;
      taps.set(this.taps.size);
    });
  }

  /** Applies the access log and tracing settings (at start and on reload); the old log and exporter are closed. */
  configure(opts: { accessLog: AccessLogSettings; tracing: TracingSettings | undefined }): void {
    Object.assign(this.carried, this.counts());
    if (this.accessLog) void this.accessLog.close();
    this.tracing?.exporter.close();
    this.accessLog = opts.accessLog.mode === 'off' ? undefined : new AccessLog(opts.accessLog, this.onProblem);
    this.tracing = opts.tracing ? { sampleRate: opts.tracing.sampleRate, exporter: new OtlpExporter(opts.tracing, (why) => this.onProblem(`trace export failed: ${why}`)) } : undefined;
    this.refresh();
  }

  /** The hop for these labels (resolve it once per listener or connection, not per request). */
  hop(labels: HopLabels): Hop {
    return this.istio.hop(labels);
  }

  /** A finished request or connection, for the access log and the taps (call only when `detailed`). */
  record(r: RequestRecord): void {
    this.accessLog?.write(r);
    for (const t of this.taps) if (tapMatches(t.filter, r)) t.send(r);
  }

  /** A finished span, for the exporter (call only when `tracing` is set and the span is sampled). */
  span(s: FinishedSpan): void {
    this.tracing?.exporter.add(s);
  }

  /** Starts a live tap; the returned function stops it. While no tap runs and the access log is off, no record is built. */
  tap(filter: TapFilter, send: (r: RequestRecord) => void): () => void {
    const t: Tap = { filter, send };
    this.taps.add(t);
    this.refresh();
    return () => {
      this.taps.delete(t);
      this.refresh();
    };
  }

  /** Per (hop, response code, grpc-status, flags): request counts and latency histograms, for the server's dashboard. */
  snapshot(): RequestStats[] {
    const out: RequestStats[] = [];
    for (const hop of this.istio.allHops()) out.push(...hop.snapshot());
    return out;
  }

  /** Stops the exporter (after one last flush) and closes the access log file. */
  async close(): Promise<void> {
    this.tracing?.exporter.close();
    await this.accessLog?.close();
  }

  private refresh(): void {
    this.detailed = this.accessLog !== undefined || this.taps.size > 0;
  }

  private counts(): typeof this.carried {
    const c = this.carried;
    const log = this.accessLog?.stats;
    const ex = this.tracing?.exporter.stats;
    return {
      logWritten: c.logWritten + (log?.written ?? 0),
      logDropped: c.logDropped + (log?.dropped ?? 0),
      spansExported: c.spansExported + (ex?.exported ?? 0),
      spansDropped: c.spansDropped + (ex?.dropped ?? 0),
      exportFailures: c.exportFailures + (ex?.failedBatches ?? 0),
    };
  }
}
