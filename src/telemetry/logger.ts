// Structured log lines for every process: one line per event, human text or JSON.

/** Fields attached to a log line. */
export type LogFields = Record<string, string | number | boolean | undefined | null>;

/** The one logging interface every component takes. */
export interface Logger {
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  debug(msg: string, fields?: LogFields): void;
  child(fields: LogFields): Logger;
}

export type LogFormat = 'text' | 'json';

/** A logger writing to stderr (so stdout stays for command output). */
export function createLogger(opts: { format?: LogFormat; level?: 'debug' | 'info'; base?: LogFields; write?: (line: string) => void } = {}): Logger {
  const format = opts.format ?? 'text';
  const debug = opts.level === 'debug';
  const write = opts.write ?? ((line: string) => process.stderr.write(line));
  const base = opts.base ?? {};
  const emit = (level: string, msg: string, fields?: LogFields): void => {
    const all = { ...base, ...fields };
    if (format === 'json') {
      write(`${JSON.stringify({ time: new Date().toISOString(), level, msg, ...all })}\n`);
      return;
    }
    const kv = Object.entries(all)
      .filter(([, v]) => v !== undefined && v !== null)
      .map(([k, v]) => `${k}=${typeof v === 'string' && /\s/.test(v) ? JSON.stringify(v) : String(v)}`)
      .join(' ');
    write(`${new Date().toISOString()} ${level.toUpperCase().padEnd(5)} ${msg}${kv ? ` ${kv}` : ''}\n`);
  };
  return {
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
    debug: (m, f) => (debug ? emit('debug', m, f) : undefined),
    child: (fields) => createLogger({ ...opts, base: { ...base, ...fields } }),
  };
}

/** A logger that drops everything, for tests and library use. */
export const silentLogger: Logger = { info() {}, warn() {}, error() {}, debug() {}, child: () => silentLogger };
