// Trace context on the wire: W3C traceparent/tracestate and B3 (multi-header and single `b3`), read from a request and
// written for the next hop with this proxy's span as the parent.

import { randomFillSync } from 'node:crypto';

/** One span this proxy makes for one request (a client span on the outbound side, a server span on the inbound side). */
export interface SpanContext {
  /** 32 lower-case hex digits. */
  readonly traceId: string;
  /** 16 lower-case hex digits: this proxy's span. */
  readonly spanId: string;
  /** The caller's span, or '' for a root span. */
  readonly parentSpanId: string;
  readonly sampled: boolean;
}

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;
const HEX16 = /^[0-9a-f]{16}$/;
const HEX32 = /^[0-9a-f]{32}$/;
const ZERO_TRACE = '0'.repeat(32);
const ZERO_SPAN = '0'.repeat(16);

/** Random ids from a refilled pool: one crypto call per 512 spans. */
const pool = Buffer.alloc(4096);
let used = pool.length;
function randomHex(bytes: 8 | 16): string {
  if (used + bytes > pool.length) {
    randomFillSync(pool);
    used = 0;
  }
  const s = pool.toString('hex', used, used + bytes);
  used += bytes;
  return s;
}

/** The trace and parent span a request carries, by W3C traceparent first, then B3; undefined when none (or malformed). */
export function incomingContext(header: (name: string) => string | undefined): { traceId: string; parentSpanId: string; sampled: boolean | undefined } | undefined {
  const tp = header('traceparent');
  if (tp) {
    const m = TRACEPARENT.exec(tp.trim().toLowerCase());
    if (m && m[1] !== ZERO_TRACE && m[2] !== ZERO_SPAN) return { traceId: m[1]!, parentSpanId: m[2]!, sampled: (parseInt(m[3]!, 16) & 1) === 1 };
  }
  const single = header('b3');
  if (single) {
    const [t, s, flag] = single.trim().toLowerCase().split('-');
    if (t && s && (HEX16.test(t) || HEX32.test(t)) && HEX16.test(s)) return { traceId: t.padStart(32, '0'), parentSpanId: s, sampled: flag === undefined ? undefined : flag === '1' || flag === 'd' };
  }
  const bt = header('x-b3-traceid')?.trim().toLowerCase();
  const bs = header('x-b3-spanid')?.trim().toLowerCase();
  if (bt && bs && (HEX16.test(bt) || HEX32.test(bt)) && HEX16.test(bs)) {
    const flag = header('x-b3-sampled')?.trim();
    const debug = header('x-b3-flags')?.trim() === '1';
    return { traceId: bt.padStart(32, '0'), parentSpanId: bs, sampled: debug ? true : flag === undefined ? undefined : flag === '1' || flag === 'true' };
  }
  return undefined;
}

/** A new span for a request: a child of the caller's span when the request carries one, else the root of a new trace sampled at `sampleRate`. */
export function startSpan(header: (name: string) => string | undefined, sampleRate: number): SpanContext {
  const parent = incomingContext(header);
  const spanId = randomHex(8);
  if (parent) return { traceId: parent.traceId, spanId, parentSpanId: parent.parentSpanId, sampled: parent.sampled ?? Math.random() < sampleRate };
  return { traceId: randomHex(16), spanId, parentSpanId: '', sampled: Math.random() < sampleRate };
}

/** The headers the next hop gets: traceparent and B3 naming this span as the parent (tracestate passes through untouched). */
export function outgoingHeaders(span: SpanContext): [string, string][] {
  const s = span.sampled ? '1' : '0';
  const out: [string, string][] = [
    ['traceparent', `00-${span.traceId}-${span.spanId}-0${s}`],
    ['x-b3-traceid', span.traceId],
    ['x-b3-spanid', span.spanId],
    ['x-b3-sampled', s],
  ];
  if (span.parentSpanId) out.push(['x-b3-parentspanid', span.parentSpanId]);
  return out;
}

/** Headers replaced by outgoingHeaders(), removed first so a stale value never reaches the next hop. */
export const REPLACED_TRACE_HEADERS: readonly string[] = ['b3', 'x-b3-parentspanid'];
