// Telemetry: logs, metrics and the per-request stats the dashboard shows; access logs and traces grow here.
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
