// Telemetry: logs now; metrics, access logs and traces grow here.
export { createLogger, silentLogger, type Logger, type LogFields, type LogFormat } from './logger';
