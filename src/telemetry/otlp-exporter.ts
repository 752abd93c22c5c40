// Spans sent to an OpenTelemetry collector as OTLP/HTTP JSON, in batches, from a bounded queue that drops (and
// counts) rather than ever making traffic wait.

import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { SpanContext } from './trace-context';

/** A finished span, as the exporter queues it. */
export interface FinishedSpan {
  readonly context: SpanContext;
  /** The service that made it (resource attribute service.name). */
  readonly service: string;
  readonly name: string;
  readonly kind: 'client' | 'server';
  /** Wall-clock start and end, in milliseconds since the epoch (fractional). */
  readonly startMs: number;
  readonly endMs: number;
  readonly attributes: Readonly<Record<string, string | number>>;
  /** An error (5xx, a local failure, a non-OK grpc-status). */
  readonly error: boolean;
}

/** Exporter settings (the agent's `tracing` block). */
export interface OtlpSettings {
  /** The collector's traces URL, such as http://127.0.0.1:4318/v1/traces. */
  readonly endpoint: string;
  /** Spans per POST. @default 100 */
  readonly batchSize: number;
  /** Spans waiting at most; more are dropped and counted. @default 2048 */
  readonly maxQueue: number;
  /** The longest a span waits before its batch is sent. @default 1000 */
  readonly flushIntervalMs: number;
}

/** What the exporter counts (the agent shows them as metrics). */
export interface ExporterStats {
  exported: number;
  dropped: number;
  failedBatches: number;
}

const KIND = { server: 2, client: 3 } as const;
const nanos = (ms: number): string => (BigInt(Math.floor(ms)) * 1_000_000n + BigInt(Math.round((ms % 1) * 1e6))).toString();

/** OTLP/HTTP JSON body for these spans: one resourceSpans per service. */
export function otlpBody(spans: readonly FinishedSpan[]): string {
  const byService = new Map<string, FinishedSpan[]>();
  for (const s of spans) {
    const list = byService.get(s.service);
    if (list) list.push(s);
    else byService.set(s.service, [s]);
  }
  return JSON.stringify({
    resourceSpans: [...byService].map(([service, list]) => ({
      resource: { attributes: [{ key: 'service.name', value: { stringValue: service } }] },
      scopeSpans: [
        {
          scope: { name: 'mesh-agent' },
          spans: list.map((s) => ({
            traceId: s.context.traceId,
            spanId: s.context.spanId,
            ...(s.context.parentSpanId ? { parentSpanId: s.context.parentSpanId } : {}),
            name: s.name,
            kind: KIND[s.kind],
            startTimeUnixNano: nanos(s.startMs),
            endTimeUnixNano: nanos(s.endMs),
            attributes: Object.entries(s.attributes).map(([key, v]) => ({ key, value: typeof v === 'number' ? { intValue: String(v) } : { stringValue: v } })),
            status: { code: s.error ? 2 : 0 },
          })),
        },
      ],
    })),
  });
}

export class OtlpExporter {
  readonly stats: ExporterStats = { exported: 0, dropped: 0, failedBatches: 0 };
  private queue: FinishedSpan[] = [];
  private timer: NodeJS.Timeout | undefined;
  private sending = false;
  private closed = false;
  private readonly url: URL;

  constructor(
    private readonly settings: OtlpSettings,
    private readonly onFailure: (why: string) => void = () => {},
  ) {
    this.url = new URL(settings.endpoint);
  }

  /** Queues a span; a full queue drops it (counted). Never blocks, never throws. */
  add(span: FinishedSpan): void {
    if (this.closed || this.queue.length >= this.settings.maxQueue) {
      this.stats.dropped++;
      return;
    }
    this.queue.push(span);
    if (this.queue.length >= this.settings.batchSize) this.flush();
    else if (!this.timer) this.timer = setTimeout(() => this.flush(), this.settings.flushIntervalMs).unref();
  }

  /** Sends one batch now (one POST in flight at a time; the rest waits for it). */
  flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.sending || this.queue.length === 0) return;
    const batch = this.queue.splice(0, this.settings.batchSize);
    this.sending = true;
    this.post(otlpBody(batch)).then(
      () => (this.stats.exported += batch.length),
      (err: Error) => {
        this.stats.failedBatches++;
        this.stats.dropped += batch.length;
        this.onFailure(err.message);
      },
    ).finally(() => {
      this.sending = false;
      if (this.queue.length >= this.settings.batchSize) this.flush();
      else if (this.queue.length > 0 && !this.timer) this.timer = setTimeout(() => this.flush(), this.settings.flushIntervalMs).unref();
    });
  }

  /** Stops taking spans; what is queued is sent once more. */
  close(): void {
    this.flush();
    this.closed = true;
  }

  private post(body: string): Promise<void> {
    const send = this.url.protocol === 'https:' ? httpsRequest : httpRequest;
    return new Promise((resolve, reject) => {
      const req = send(this.url, { method: 'POST', headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }, timeout: 10_000 }, (res) => {
        res.resume();
        res.once('end', () => ((res.statusCode ?? 0) < 300 ? resolve() : reject(new Error(`collector ${this.url.href} answered ${res.statusCode}`))));
      });
      req.once('timeout', () => req.destroy(new Error(`collector ${this.url.href} did not answer in 10 s`)));
      req.once('error', reject);
      req.end(body);
    });
  }
}
