// What an HTTP/1.1 session tells telemetry about each exchange: one object per session, reset per request, so the
// session's hot path only bumps two byte counts and calls begin()/end() once each per request.

import { NO_FLAGS, outgoingHeaders, REPLACED_TRACE_HEADERS, startSpan, type SpanContext } from '../../telemetry';
import type { Endpoint } from '../../registry';
import { requestRecord, spanName, withDelayFlag, type ExchangeReporter } from '../exchange-report';
import { headerValue, type HeadEdits, type HttpHead } from './http1-head';

const FLAGS_FIELD = Buffer.from('\r\nx-mesh-response-flags: ', 'latin1');

/** The status and response flags of a response the proxy made itself ("HTTP/1.1 503 ...", x-mesh-response-flags). */
export function localAnswerFacts(response: Buffer): { status: number; flags: string } {
  const status = Number(response.toString('latin1', 9, 12)) || 0;
  const at = response.indexOf(FLAGS_FIELD);
  if (at < 0) return { status, flags: NO_FLAGS };
  const from = at + FLAGS_FIELD.length;
  return { status, flags: response.toString('latin1', from, response.indexOf('\r\n', from)) };
}

export class Http1Telemetry {
  /** Bytes of the current request and response (heads and bodies) as they crossed this proxy. */
  requestBytes = 0;
  responseBytes = 0;
  private open = false;
  private startedAt = 0;
  private wallStart = 0;
  private local = 0;
  private flags = NO_FLAGS;
  private delayed = false;
  private span: SpanContext | undefined;
  private head: HttpHead | undefined;

  constructor(
    private readonly reporter: ExchangeReporter,
    private readonly sourceAddress: string,
  ) {}

  /** A request head arrived. */
  begin(head: HttpHead): void {
    this.open = true;
    this.head = head;
    this.startedAt = performance.now();
    this.requestBytes = head.size;
    this.responseBytes = 0;
    this.local = 0;
    this.flags = NO_FLAGS;
    this.delayed = false;
    const t = this.reporter.telemetry;
    if (t.tracing || t.detailed) this.wallStart = Date.now();
    this.span = t.tracing ? startSpan((n) => headerValue(head, n), t.tracing.sampleRate) : undefined;
  }

  /** The router answered later (a fault delay): the request gets flag DI. */
  delayedByFault(): void {
    this.delayed = true;
  }

  /** The proxy answered by itself (no route, no endpoint, a fault, a refusal, a failed upstream): its status and flags. */
  answeredLocally(response: Buffer): void {
    const f = localAnswerFacts(response);
    this.local = f.status;
    this.flags = f.flags;
  }

  /** The route's request edits, plus this request's trace headers when tracing. */
  edits(route: HeadEdits | undefined): HeadEdits | undefined {
    const span = this.span;
    if (!span) return route;
    const remove = new Set(REPLACED_TRACE_HEADERS);
    if (route?.remove) for (const n of route.remove) remove.add(n);
    // With `remove` set, forwardHead rebuilds the head (its pre-serialised setBytes shortcut is not taken).
    return { ...route, set: [...(route?.set ?? []), ...outgoingHeaders(span)], remove };
  }

  /**
   * The exchange is over: `status` is the upstream's (or 0), `flags` what ended it abnormally (NO_FLAGS otherwise; a
   * local answer's own flags win). Counted once; later calls for the same request do nothing.
   */
  end(status: number, flags: string, upstream: Endpoint | undefined, attempts: number): void {
    if (!this.open) return;
    this.open = false;
    const code = this.local || status;
    const f0 = this.flags !== NO_FLAGS ? this.flags : flags;
    const f = this.delayed ? withDelayFlag(f0) : f0;
    const durationMs = performance.now() - this.startedAt;
    const r = this.reporter;
    r.hop.request(code, f, -1, durationMs, this.requestBytes, this.responseBytes);
    const t = r.telemetry;
    const span = this.span;
    if (!t.detailed && !span?.sampled) return;
    const head = this.head!;
    const authority = headerValue(head, 'host') ?? '';
    if (t.detailed) {
      t.record(
        requestRecord(r.hop, {
          startedAt: this.wallStart,
          durationMs,
          sourceAddress: this.sourceAddress,
          method: head.method,
          authority,
          path: head.target,
          code,
          grpcStatus: -1,
          flags: f,
          requestBytes: this.requestBytes,
          responseBytes: this.responseBytes,
          upstream,
          attempts,
          traceId: span?.traceId,
        }),
      );
    }
    if (span?.sampled) {
      const l = r.hop.labels;
      const client = l.reporter === 'source';
      t.span({
        context: span,
        service: client ? l.sourceWorkload : l.destinationWorkload,
        name: spanName(authority, head.target),
        kind: client ? 'client' : 'server',
        startMs: this.wallStart,
        endMs: this.wallStart + durationMs,
        attributes: {
          'http.method': head.method,
          'http.url': head.target,
          'http.status_code': code,
          'upstream_cluster': `${l.destinationService}.${l.destinationNamespace}`,
          'response_flags': f,
          'peer.address': this.sourceAddress,
          ...(upstream ? { 'upstream.address': `${upstream.address}:${upstream.port}` } : {}),
        },
        error: code === 0 || code >= 500,
      });
    }
  }
}
