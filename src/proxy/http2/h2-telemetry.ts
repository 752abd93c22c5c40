// What an HTTP/2 stream tells telemetry: counted once when the downstream stream closes, from the headers and
// trailers that went out (status, grpc-status, the proxy's response flags); its trace span, when tracing.

import type { IncomingHttpHeaders, OutgoingHttpHeaders, ServerHttp2Stream } from 'node:http2';
import type { Endpoint } from '../../registry';
import { NO_FLAGS, outgoingHeaders, REPLACED_TRACE_HEADERS, startSpan, type Hop, type MeshTelemetry, type SpanContext } from '../../telemetry';
import { requestRecord, spanName, withDelayFlag } from '../exchange-report';
import { grpcStatusOf } from './grpc-status';
import { RESPONSE_FLAGS_HEADER } from './h2-local-answer';

/** One stream being observed; the protocol path sets `delayed` and `upstream` as it learns them. */
export interface H2Observation {
  readonly span: SpanContext | undefined;
  delayed: boolean;
  upstream: Endpoint | undefined;
}

const one = (v: string | string[] | undefined): string | undefined => (Array.isArray(v) ? v[0] : v);
const size = (h: OutgoingHttpHeaders | IncomingHttpHeaders | undefined): number => Number(h?.['content-length']) || 0;

/** Starts observing a stream that arrived with `headers`; it is counted on `hop` when it closes. */
export function observeStream(t: MeshTelemetry, hop: Hop, down: ServerHttp2Stream, headers: IncomingHttpHeaders, grpc: boolean): H2Observation {
  const startedAt = performance.now();
  const wall = Date.now();
  const span = t.tracing ? startSpan((n) => one(headers[n]), t.tracing.sampleRate) : undefined;
  const o: H2Observation = { span, delayed: false, upstream: undefined };
  down.once('close', () => {
    const sent = down.sentHeaders as OutgoingHttpHeaders | undefined;
    const code = sent && down.headersSent ? Number(sent[':status']) || 0 : 0;
    const grpcStatus = grpc ? (grpcStatusOf(one(down.sentTrailers?.['grpc-status'] as string | undefined) ?? one(sent?.['grpc-status'] as string | undefined)) ?? -1) : -1;
    const own = sent?.[RESPONSE_FLAGS_HEADER];
    const base = typeof own === 'string' ? own : code === 0 ? 'DC' : NO_FLAGS;
    const flags = o.delayed ? withDelayFlag(base) : base;
    const durationMs = performance.now() - startedAt;
    const requestBytes = size(headers);
    const responseBytes = size(sent);
    hop.request(code, flags, grpcStatus, durationMs, requestBytes, responseBytes);
    if (!t.detailed && !span?.sampled) return;
    const authority = one(headers[':authority']) ?? '';
    const path = one(headers[':path']) ?? '';
    const method = one(headers[':method']) ?? '';
    if (t.detailed) {
      const sourceAddress = down.session?.socket?.remoteAddress ?? '';
      t.record(requestRecord(hop, { startedAt: wall, durationMs, sourceAddress, method, authority, path, code, grpcStatus, flags, requestBytes, responseBytes, upstream: o.upstream, attempts: 1, traceId: span?.traceId }));
    }
    if (span?.sampled) {
      const l = hop.labels;
      const client = l.reporter === 'source';
      t.span({
        context: span,
        service: client ? l.sourceWorkload : l.destinationWorkload,
        name: spanName(authority, path),
        kind: client ? 'client' : 'server',
        startMs: wall,
        endMs: wall + durationMs,
        attributes: { 'http.method': method, 'http.url': path, 'http.status_code': code, 'response_flags': flags, ...(grpcStatus >= 0 ? { 'grpc.status_code': grpcStatus } : {}) },
        error: code === 0 || code >= 500 || grpcStatus > 0,
      });
    }
  });
  return o;
}

/** Puts the span's trace headers on a request header block going to the next hop. */
export function addTraceHeaders(out: OutgoingHttpHeaders, span: SpanContext | undefined): void {
  if (!span) return;
  for (const n of REPLACED_TRACE_HEADERS) delete out[n];
  for (const [n, v] of outgoingHeaders(span)) out[n] = v;
}
