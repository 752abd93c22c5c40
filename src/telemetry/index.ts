// Telemetry: logs, metrics (the agent's own and Istio's standard ones), access logs, traces, live taps and the per-request stats the dashboard shows.
export { createLogger, silentLogger, type Logger, type LogFields, type LogFormat } from './logger';
export {
  MetricsRegistry,
  Counter,
  CounterChild,
  Gauge,
  GaugeChild,
  Histogram,
  HistogramChild,
  DEFAULT_BUCKETS,
  PROMETHEUS_CONTENT_TYPE,
  escapeHelp,
  escapeLabelValue,
  formatValue,
} from './metrics';
export { RequestAggregator, RequestEdge, LATENCY_BUCKETS_MS, MAX_REQUEST_SERIES, type RequestSeries, type RequestStatsSnapshot } from './request-stats';
export { IstioMetrics, Hop, NO_FLAGS, DURATION_BUCKETS_MS, SIZE_BUCKETS, type HopLabels, type Reporter, type RequestStats } from './istio-metrics';
export { AccessLog, type AccessLogSettings, type RequestRecord } from './access-log';
export { OtlpExporter, otlpBody, type FinishedSpan, type OtlpSettings, type ExporterStats } from './otlp-exporter';
export { incomingContext, outgoingHeaders, startSpan, REPLACED_TRACE_HEADERS, type SpanContext } from './trace-context';
export { MeshTelemetry, tapMatches, type TapFilter, type TracingSettings, type Tracing } from './mesh-telemetry';
