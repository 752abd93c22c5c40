// Telemetry: logs and metrics now; access logs and traces grow here.
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
