// Access logs: one JSON line per request or TCP connection, to stdout or a file, every one or a sample.

import { createWriteStream, type WriteStream } from 'node:fs';

/** One request (or TCP connection) as the access log, the tap and the traces see it. Field names follow Envoy's JSON access logs. */
export interface RequestRecord {
  /** When the request started (ISO 8601). */
  readonly start_time: string;
  /** Milliseconds from the first request byte to the last response byte (TCP: the connection's life). */
  readonly duration_ms: number;
  /** source: the caller's agent (outbound); destination: the callee's (inbound). */
  readonly reporter: 'source' | 'destination';
  readonly protocol: string;
  readonly source_principal: string;
  readonly source_workload: string;
  readonly source_namespace: string;
  readonly source_address: string;
  readonly destination_principal: string;
  readonly destination_service: string;
  readonly destination_namespace: string;
  readonly method?: string;
  readonly authority?: string;
  readonly path?: string;
  /** 0 when no response went out (the client left, the connection was cut). */
  readonly response_code?: number;
  readonly grpc_status?: number;
  /** Envoy's response flags (UH UF UO NR URX DI FI RBAC ...), '-' when none. */
  readonly response_flags: string;
  readonly bytes_received: number;
  readonly bytes_sent: number;
  /** The endpoint the request went to (host:port), '' when it went nowhere. */
  readonly upstream_host: string;
  readonly attempts?: number;
  /** The authorization decision on the inbound side: allow, or deny (RBAC, or the mTLS mode). */
  readonly policy_decision?: 'allow' | 'deny';
  readonly trace_id?: string;
}

/** `accessLog` in the agent config. */
export interface AccessLogSettings {
  /** off: nothing; on: every request; sampled: a `sampleRate` fraction of them. @default off */
  readonly mode: 'off' | 'on' | 'sampled';
  /** For mode sampled, 0..1. @default 0.01 */
  readonly sampleRate: number;
  /** A file to append to; stdout when absent. */
  readonly path: string | undefined;
}

/** Lines waiting in the stream beyond this are dropped (and counted) rather than held: a slow disk never grows memory. */
const MAX_BUFFERED_BYTES = 4 * 1024 * 1024;

export class AccessLog {
  /** Lines written, and lines dropped because the output could not keep up. */
  readonly stats = { written: 0, dropped: 0 };
  private readonly out: NodeJS.WritableStream & { writableLength: number };
  private readonly file: WriteStream | undefined;

  constructor(
    private readonly settings: AccessLogSettings,
    onError: (why: string) => void = () => {},
  ) {
    if (settings.path) {
      this.file = createWriteStream(settings.path, { flags: 'a', mode: 0o640 });
      this.file.on('error', (err) => onError(`access log ${settings.path}: ${err.message}`));
      this.out = this.file;
    } else this.out = process.stdout;
  }

  /** Whether this log takes any line at all (mode is not off). */
  get enabled(): boolean {
    return this.settings.mode !== 'off';
  }

  /** Writes the record as one JSON line when it is sampled. */
  write(r: RequestRecord): void {
    const s = this.settings;
    if (s.mode === 'off' || (s.mode === 'sampled' && Math.random() >= s.sampleRate)) return;
    if (this.out.writableLength > MAX_BUFFERED_BYTES) {
      this.stats.dropped++;
      return;
    }
    this.out.write(`${JSON.stringify(r)}\n`);
    this.stats.written++;
  }

  close(): Promise<void> {
    const f = this.file;
    return f ? new Promise((resolve) => f.end(() => resolve())) : Promise.resolve();
  }
}
