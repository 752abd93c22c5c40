// Header blocks from one HTTP/2 hop to the next: the pseudo-headers that belong to the message kind, no connection-specific fields, and edits.

import { sensitiveHeaders, type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http2';
import type { HeadEdits } from '../http1/http1-head';

/** Pseudo-headers a request carries on (RFC 9113 8.3.1; :protocol needs extended CONNECT, which the proxy does not offer). */
export const REQUEST_PSEUDO: readonly string[] = [':method', ':scheme', ':authority', ':path'];
/** Pseudo-headers of a response. */
export const RESPONSE_PSEUDO: readonly string[] = [':status'];
/** Trailers carry none. */
export const NO_PSEUDO: readonly string[] = [];

/**
 * The answer to a request whose header list is larger than `maxBytes` (RFC 9113 6.5.2 size: each field's name and value
 * plus 32), or undefined. Node advertises SETTINGS_MAX_HEADER_LIST_SIZE but does not refuse a larger list itself.
 */
export function headerListTooLarge(headers: IncomingHttpHeaders, maxBytes: number): { status: 431; grpcStatus: 8; message: string; flag: string } | undefined {
  let size = 0;
  for (const [name, value] of Object.entries(headers)) {
    for (const v of Array.isArray(value) ? value : [value ?? '']) size += name.length + String(v).length + 32;
  }
  return size > maxBytes ? { status: 431, grpcStatus: 8, message: `request header list is ${size} bytes, more than limits.maxHeadBytes ${maxBytes}`, flag: 'DPE' } : undefined;
}

/** Header edits: each name is set to the value, replacing whatever the sender put there (lower-case names). */
export type HeaderEdits = readonly (readonly [string, string])[];

/**
 * Fields that are about one connection and must not cross a hop (RFC 9113 8.2.2; an HTTP/2 peer
 * treats them as malformed). `te` is handled apart: only "trailers" may pass, and gRPC needs it.
 */
const CONNECTION_SPECIFIC = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'http2-settings']);

/**
 * The header block to send on, from one received: the listed pseudo-headers (others dropped), every
 * regular field except connection-specific ones, `te` only as "trailers", then `edits` applied.
 * Fields the sender marked sensitive (never indexed by HPACK) stay so.
 */
export function forwardHeaders(received: IncomingHttpHeaders, pseudo: readonly string[], edits?: HeaderEdits): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  for (const name in received) {
    const value = received[name];
    if (value === undefined) continue;
    if (name.charCodeAt(0) === 0x3a /* ":" */) {
      if (pseudo.includes(name)) out[name] = value;
      continue;
    }
    if (CONNECTION_SPECIFIC.has(name)) continue;
    if (name === 'te') {
      if (teHasTrailers(value)) out.te = 'trailers';
      continue;
    }
    out[name] = value;
  }
  if (edits) for (const [name, value] of edits) out[name] = value;
  const sensitive = (received as Record<symbol, unknown>)[sensitiveHeaders];
  if (Array.isArray(sensitive) && sensitive.length > 0) (out as Record<symbol, unknown>)[sensitiveHeaders] = sensitive;
  return out;
}

function teHasTrailers(value: string | string[]): boolean {
  const text = Array.isArray(value) ? value.join(',') : value;
  return text.split(',').some((t) => t.trim().toLowerCase() === 'trailers');
}

/**
 * Applies a route's header operations to a header block about to be sent (lower-case names): remove, then set
 * (replacing), then add (appending). On a request, a new target becomes `:path` and a set `host` (rewrite.authority)
 * becomes `:authority`, the HTTP/2 form of both.
 */
export function applyHeadEdits(out: OutgoingHttpHeaders, edits: HeadEdits, request: boolean): OutgoingHttpHeaders {
  if (edits.remove) for (const name of edits.remove) delete out[name];
  if (edits.set) {
    for (const [name, value] of edits.set) {
      if (request && name === 'host') {
        out[':authority'] = value;
        delete out.host;
      } else out[name] = value;
    }
  }
  if (edits.add) {
    for (const [name, value] of edits.add) {
      const had = out[name];
      out[name] = had === undefined ? value : Array.isArray(had) ? [...had, value] : [String(had), value];
    }
  }
  if (request && edits.target !== undefined) out[':path'] = edits.target;
  return out;
}
