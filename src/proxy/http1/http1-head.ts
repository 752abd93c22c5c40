// HTTP/1.1 message heads for the proxy: parsed once from raw bytes, forwarded raw when nothing must change.

import { HttpFramingError } from './http-framing-error';

/** A parsed request or response head. Header names keep their case; lookups lower-case them. */
export interface HttpHead {
  /** Request: method; response: "". */
  readonly method: string;
  /** Request: target (path and query); response: "". */
  readonly target: string;
  /** Response: status code; request: 0. */
  readonly status: number;
  readonly reason: string;
  /** 0 for HTTP/1.0, 1 for HTTP/1.1. */
  readonly minor: number;
  /** Flat list: name, value, name, value, ... as received. */
  readonly fields: string[];
  /** -1 when there is no Content-Length. */
  readonly contentLength: number;
  readonly chunked: boolean;
  /** The sender will close after this message (Connection: close, or HTTP/1.0 without keep-alive). */
  readonly close: boolean;
  /** Connection: upgrade with an Upgrade header (or CONNECT). */
  readonly upgrade: boolean;
  /** Expect: 100-continue. */
  readonly expectContinue: boolean;
  /** Hop-by-hop fields other than a plain "connection: keep-alive" are present, so the head must be rebuilt. */
  readonly hasHopByHop: boolean;
  /** Bytes of the head including the final CRLFCRLF. */
  readonly size: number;
}

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const REQUEST_LINE = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+) ([^\x00-\x20\x7f]+) HTTP\/1\.([01])$/;
const STATUS_LINE = /^HTTP\/1\.([01]) ([1-9]\d\d)(?: ([^\r\n]*))?$/;
const BAD_VALUE = /[\x00-\x08\x0a-\x1f\x7f]/;
const DIGITS = /^\d{1,15}$/;
/** Fields that describe one connection, never forwarded as they are (RFC 9110 7.6.1). */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'upgrade', 'transfer-encoding', 'trailer', 'proxy-authenticate', 'proxy-authorization']);

/** Default limit on a head's size. */
export const MAX_HEAD_BYTES = 65536;

/**
 * Parses the head starting at `start` in `buf`. Returns undefined when the head is not complete yet. `maxFields`
 * limits the header count (requests: the agent's `limits.maxHeaders`).
 * @throws HttpFramingError (400 malformed, 431 too large or too many header fields)
 */
export function parseHead(buf: Buffer, start: number, kind: 'request' | 'response', maxBytes = MAX_HEAD_BYTES, maxFields = Infinity): HttpHead | undefined {
  const end = buf.indexOf('\r\n\r\n', start, 'latin1');
  if (end === -1) {
    if (buf.length - start > maxBytes) throw new HttpFramingError(431, `${kind} head is larger than ${maxBytes} bytes`);
    return undefined;
  }
  if (end - start + 4 > maxBytes) throw new HttpFramingError(431, `${kind} head is larger than ${maxBytes} bytes`);
  const lines = buf.toString('latin1', start, end).split('\r\n');
  if (lines.length - 1 > maxFields) throw new HttpFramingError(431, `${kind} head has ${lines.length - 1} header fields, more than ${maxFields}`);
  const first = lines[0]!;
  let method = '';
  let target = '';
  let status = 0;
  let reason = '';
  let minor: number;
  if (kind === 'request') {
    const m = REQUEST_LINE.exec(first);
    if (!m) throw new HttpFramingError(400, `not an HTTP/1.x request line: ${JSON.stringify(first.slice(0, 60))}`);
    method = m[1]!;
    target = m[2]!;
    minor = m[3] === '1' ? 1 : 0;
  } else {
    const m = STATUS_LINE.exec(first);
    if (!m) throw new HttpFramingError(400, `not an HTTP/1.x status line: ${JSON.stringify(first.slice(0, 60))}`);
    minor = m[1] === '1' ? 1 : 0;
    status = Number(m[2]);
    reason = m[3] ?? '';
  }
  const fields: string[] = [];
  let contentLength = -1;
  let chunked = false;
  let transferEncoding = false;
  let connClose = false;
  let connKeepAlive = false;
  let connUpgrade = false;
  let hasUpgrade = false;
  let expectContinue = false;
  let hasHopByHop = false;
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!;
    const colon = line.indexOf(':');
    if (colon <= 0) throw new HttpFramingError(400, line.charCodeAt(0) === 0x20 || line.charCodeAt(0) === 0x09 ? 'obs-fold (a header line starting with whitespace) is not allowed' : 'header line without a colon');
    const name = line.slice(0, colon);
    if (!TOKEN.test(name)) throw new HttpFramingError(400, /[ \t]$/.test(name) ? 'whitespace between header name and colon' : `invalid header name ${JSON.stringify(name.slice(0, 40))}`);
    const value = line.slice(colon + 1).trim();
    if (BAD_VALUE.test(value)) throw new HttpFramingError(400, `invalid character in the value of ${name}`);
    fields.push(name, value);
    // Only names as long as the longest field looked at below need lower-casing.
    const lower = name.length <= 19 ? name.toLowerCase() : '';
    if (lower === 'content-length') {
      if (!DIGITS.test(value)) throw new HttpFramingError(400, `bad Content-Length ${JSON.stringify(value.slice(0, 20))}`);
      const n = Number(value);
      if (contentLength !== -1 && contentLength !== n) throw new HttpFramingError(400, 'several different Content-Length values');
      contentLength = n;
    } else if (lower === 'transfer-encoding') {
      transferEncoding = true;
      hasHopByHop = true;
      const codings = value.toLowerCase().split(',').map((s) => s.trim());
      if (codings[codings.length - 1] !== 'chunked' || codings.indexOf('chunked') !== codings.length - 1) {
        throw new HttpFramingError(400, `Transfer-Encoding ${JSON.stringify(value)} does not end in chunked`);
      }
      chunked = true;
    } else if (lower === 'connection') {
      for (const t of value.toLowerCase().split(',')) {
        const o = t.trim();
        if (o === 'close') connClose = true;
        else if (o === 'keep-alive') connKeepAlive = true;
        else if (o === 'upgrade') connUpgrade = true;
        if (o !== 'keep-alive' && o !== '') hasHopByHop = true;
      }
    } else if (lower === 'upgrade') {
      hasUpgrade = true;
      hasHopByHop = true;
    } else if (lower === 'expect') {
      expectContinue = value.toLowerCase() === '100-continue';
    } else if (lower !== '' && HOP_BY_HOP.has(lower)) {
      hasHopByHop = true;
    }
  }
  if (transferEncoding && contentLength !== -1) throw new HttpFramingError(400, 'both Content-Length and Transfer-Encoding present');
  if (transferEncoding && minor === 0) throw new HttpFramingError(400, 'Transfer-Encoding in an HTTP/1.0 message');
  return {
    method,
    target,
    status,
    reason,
    minor,
    fields,
    contentLength: chunked ? -1 : contentLength,
    chunked,
    close: connClose || (minor === 0 && !connKeepAlive),
    upgrade: (connUpgrade && hasUpgrade) || method === 'CONNECT',
    expectContinue,
    hasHopByHop,
    size: end - start + 4,
  };
}

/** The value of the first field named `lowerName`, or undefined. */
export function headerValue(head: HttpHead, lowerName: string): string | undefined {
  const f = head.fields;
  for (let i = 0; i < f.length; i += 2) if (f[i]!.length === lowerName.length && f[i]!.toLowerCase() === lowerName) return f[i + 1];
  return undefined;
}

/** Names listed in Connection (besides close/keep-alive/upgrade): also hop-by-hop. */
function connectionNamed(head: HttpHead): Set<string> | undefined {
  const v = headerValue(head, 'connection');
  if (!v) return undefined;
  const s = new Set(v.toLowerCase().split(',').map((x) => x.trim()));
  return s.size > 0 ? s : undefined;
}

/** Changes to apply while rebuilding a head. */
export interface HeadEdits {
  /** Fields to drop (lower-case names). */
  readonly remove?: ReadonlySet<string>;
  /** Fields to set (replacing any with that name), lower-case names. */
  readonly set?: readonly (readonly [string, string])[];
  /** Fields to append. */
  readonly add?: readonly (readonly [string, string])[];
  /** A new request target (rewrite). */
  readonly target?: string;
  /** Ask the next hop to close after this message. */
  readonly close?: boolean;
  /**
   * The `set` fields pre-serialised ("name: value\r\n" each, then "\r\n"): when the head needs no other change
   * and has none of those fields, the head is forwarded as received with these bytes in place of its final CRLF.
   */
  readonly setBytes?: Buffer;
}

/** `HeadEdits` that only set fields, with their bytes prepared once (for a per-connection constant edit). */
export function setOnlyEdits(set: readonly (readonly [string, string])[]): HeadEdits {
  return { set, setBytes: Buffer.from(`${set.map(([n, v]) => `${n}: ${v}\r\n`).join('')}\r\n`, 'latin1') };
}

/** The forwarded bytes of a head: raw when nothing must change, raw plus set fields when only those, else rebuilt. */
export function forwardHead(head: HttpHead, raw: Buffer, edits: HeadEdits | undefined): Buffer {
  if (!head.hasHopByHop) {
    if (!edits) return raw;
    if (edits.setBytes && !edits.add && !edits.remove && !edits.target && !edits.close && !edits.set!.some(([n]) => headerValue(head, n) !== undefined)) {
      return Buffer.concat([raw.subarray(0, raw.length - 2), edits.setBytes]);
    }
  }
  return Buffer.from(buildHead(head, edits), 'latin1');
}

/**
 * Serialises a head for the next hop: hop-by-hop fields dropped (chunked framing and an upgrade kept, since the
 * proxy forwards those as they are), edits applied. Always HTTP/1.1 on the wire.
 */
export function buildHead(head: HttpHead, edits?: HeadEdits): string {
  const named = head.hasHopByHop ? connectionNamed(head) : undefined;
  const setNames = edits?.set ? new Set(edits.set.map(([n]) => n)) : undefined;
  let out = head.status === 0 ? `${head.method} ${edits?.target ?? head.target} HTTP/1.1\r\n` : `HTTP/1.1 ${head.status} ${head.reason}\r\n`;
  const f = head.fields;
  for (let i = 0; i < f.length; i += 2) {
    const lower = f[i]!.toLowerCase();
    // Kept although hop-by-hop: chunked framing and an upgrade are forwarded as they are.
    const kept = lower === 'transfer-encoding' || (lower === 'upgrade' && head.upgrade);
    if (!kept && (HOP_BY_HOP.has(lower) || named?.has(lower))) continue;
    if (edits?.remove?.has(lower) || setNames?.has(lower)) continue;
    out += `${f[i]}: ${f[i + 1]}\r\n`;
  }
  if (edits?.set) for (const [n, v] of edits.set) out += `${n}: ${v}\r\n`;
  if (edits?.add) for (const [n, v] of edits.add) out += `${n}: ${v}\r\n`;
  if (head.upgrade && head.method !== 'CONNECT') out += 'connection: upgrade\r\n';
  else if (edits?.close) out += 'connection: close\r\n';
  return `${out}\r\n`;
}

/** A complete small response, for answers the proxy makes itself (errors, direct responses, redirects). */
export function simpleResponse(status: number, reason: string, body: string, extra: readonly (readonly [string, string])[] = [], close = false): Buffer {
  const b = Buffer.from(body, 'utf8');
  let head = `HTTP/1.1 ${status} ${reason}\r\ncontent-length: ${b.length}\r\n`;
  if (body) head += 'content-type: text/plain\r\n';
  for (const [n, v] of extra) head += `${n}: ${v}\r\n`;
  if (close) head += 'connection: close\r\n';
  return Buffer.concat([Buffer.from(`${head}\r\n`, 'latin1'), b]);
}
