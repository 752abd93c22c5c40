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

/** Fields that describe one connection, never forwarded as they are (RFC 9110 7.6.1). */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'upgrade', 'transfer-encoding', 'trailer', 'proxy-authenticate', 'proxy-authorization']);
const CRLFCRLF = Buffer.from('\r\n\r\n', 'latin1');
const CR = 0x0d;
const LF = 0x0a;
const SP = 0x20;
const HT = 0x09;

/** Byte classes: 1 = token character (RFC 9110 5.6.2), 2 = not allowed in a field value (CTLs but HTAB, and DEL). */
const CLASS = new Uint8Array(256);
for (const c of "!#$%&'*+-.^_`|~") CLASS[c.charCodeAt(0)] = 1;
for (let b = 0x30; b <= 0x39; b++) CLASS[b] = 1;
for (let b = 0x41; b <= 0x5a; b++) CLASS[b] = CLASS[b + 0x20] = 1;
for (let b = 0; b < 0x20; b++) if (b !== HT) CLASS[b] = 2;
CLASS[0x7f] = 2;

/** Known field names as lower-case bytes, looked up by length first. */
const enum Known { None, ContentLength, TransferEncoding, Connection, Upgrade, Expect, HopByHop }
const KNOWN: [Buffer, Known][] = [
  ['content-length', Known.ContentLength], ['transfer-encoding', Known.TransferEncoding], ['connection', Known.Connection],
  ['upgrade', Known.Upgrade], ['expect', Known.Expect],
  ...[...HOP_BY_HOP].filter((n) => !['connection', 'upgrade', 'transfer-encoding'].includes(n)).map((n): [string, Known] => [n, Known.HopByHop]),
].map(([n, k]) => [Buffer.from(n as string, 'latin1'), k as Known]);
const KNOWN_BY_LENGTH: [Buffer, Known][][] = [];
for (const e of KNOWN) (KNOWN_BY_LENGTH[e[0].length] ??= []).push(e);

/** Whether buf[at, at+lower.length) equals `lower` ignoring ASCII case (`lower` holds only letters and '-'). */
function sameLower(buf: Buffer, at: number, lower: Buffer): boolean {
  for (let i = 0; i < lower.length; i++) if ((buf[at + i]! | 0x20) !== lower[i]) return false;
  return true;
}

function knownName(buf: Buffer, at: number, len: number): Known {
  const candidates = KNOWN_BY_LENGTH[len];
  if (candidates) for (const [name, k] of candidates) if (sameLower(buf, at, name)) return k;
  return Known.None;
}

const KEEP_ALIVE = Buffer.from('keep-alive', 'latin1');
const CLOSE = Buffer.from('close', 'latin1');

/** Default limit on a head's size. */
export const MAX_HEAD_BYTES = 65536;

/**
 * A head parsed from bytes. Header fields stay as offsets into the bytes until asked for: a head forwarded as
 * received (most are) never turns its fields into strings.
 */
class ParsedHead implements HttpHead {
  method = '';
  target = '';
  status = 0;
  minor = 0;
  contentLength = -1;
  chunked = false;
  close = false;
  upgrade = false;
  expectContinue = false;
  hasHopByHop = false;
  size = 0;
  reasonStart = 0;
  reasonEnd = 0;
  /** name start, name end, value start, value end: four numbers a field. */
  readonly spans: number[] = [];
  private list: string[] | null = null;

  constructor(readonly buf: Buffer) {}

  get reason(): string {
    return this.buf.toString('latin1', this.reasonStart, this.reasonEnd);
  }

  get fields(): string[] {
    if (this.list) return this.list;
    const s = this.spans;
    const out: string[] = new Array(s.length / 2);
    for (let i = 0; i < s.length; i += 4) {
      out[i / 2] = this.buf.toString('latin1', s[i]!, s[i + 1]!);
      out[i / 2 + 1] = this.buf.toString('latin1', s[i + 2]!, s[i + 3]!);
    }
    return (this.list = out);
  }

  /** The value of the first field named `lower` (lower-case), read straight from the bytes. */
  value(lower: string): string | undefined {
    const s = this.spans;
    const buf = this.buf;
    for (let i = 0; i < s.length; i += 4) {
      const a = s[i]!;
      if (s[i + 1]! - a !== lower.length) continue;
      let same = true;
      for (let j = 0; j < lower.length; j++) {
        if ((buf[a + j]! | 0x20) !== (lower.charCodeAt(j) | 0x20)) {
          same = false;
          break;
        }
      }
      if (same) return buf.toString('latin1', s[i + 2]!, s[i + 3]!);
    }
    return undefined;
  }
}

const bad = (why: string): HttpFramingError => new HttpFramingError(400, why);
const shown = (buf: Buffer, a: number, b: number, max: number): string => JSON.stringify(buf.toString('latin1', a, Math.min(b, a + max)));

/**
 * Parses the head starting at `start` in `buf`. Returns undefined when the head is not complete yet. `maxFields`
 * limits the header count (requests: the agent's `limits.maxHeaders`).
 * @throws HttpFramingError (400 malformed, 431 too large or too many header fields)
 */
export function parseHead(buf: Buffer, start: number, kind: 'request' | 'response', maxBytes = MAX_HEAD_BYTES, maxFields = Infinity): HttpHead | undefined {
  const end = buf.indexOf(CRLFCRLF, start);
  if (end === -1) {
    if (buf.length - start > maxBytes) throw new HttpFramingError(431, `${kind} head is larger than ${maxBytes} bytes`);
    return undefined;
  }
  if (end - start + 4 > maxBytes) throw new HttpFramingError(431, `${kind} head is larger than ${maxBytes} bytes`);
  const h = new ParsedHead(buf);
  h.size = end - start + 4;
  let pos = kind === 'request' ? requestLine(buf, start, end, h) : statusLine(buf, start, end, h);
  let contentLength = -1;
  let transferEncoding = false;
  let connClose = false;
  let connKeepAlive = false;
  let connUpgrade = false;
  let hasUpgrade = false;
  // `pos` is at the CR ending the previous line; the head's last line ends at `end`.
  while (pos < end) {
    if (buf[pos + 1] !== LF) throw bad('a CR not followed by LF');
    const a = pos + 2;
    let i = a;
    while (CLASS[buf[i]!] === 1) i++;
    const c = buf[i];
    if (c !== 0x3a || i === a) {
      if (i === a && (c === SP || c === HT)) throw bad('obs-fold (a header line starting with whitespace) is not allowed');
      const colon = buf.indexOf(0x3a, a);
      if (colon === -1 || colon > end || buf.indexOf(CR, a) < colon) throw bad('header line without a colon');
      if (c === SP || c === HT) throw bad('whitespace between header name and colon');
      throw bad(`invalid header name ${shown(buf, a, colon, 40)}`);
    }
    const nameEnd = i;
    i++;
    while (buf[i] === SP || buf[i] === HT) i++;
    const vs = i;
    while (CLASS[buf[i]!] !== 2) i++;
    if (buf[i] !== CR) throw bad(`invalid character in the value of ${buf.toString('latin1', a, nameEnd)}`);
    pos = i;
    while (i > vs && (buf[i - 1] === SP || buf[i - 1] === HT)) i--;
    const ve = i;
    if (h.spans.length >= maxFields * 4) throw new HttpFramingError(431, `${kind} head has more than ${maxFields} header fields`);
    h.spans.push(a, nameEnd, vs, ve);
    switch (knownName(buf, a, nameEnd - a)) {
      case Known.None:
        break;
      case Known.ContentLength: {
        if (ve === vs || ve - vs > 15) throw bad(`bad Content-Length ${shown(buf, vs, ve, 20)}`);
        let n = 0;
        for (let j = vs; j < ve; j++) {
          const d = buf[j]! - 0x30;
          if (d < 0 || d > 9) throw bad(`bad Content-Length ${shown(buf, vs, ve, 20)}`);
          n = n * 10 + d;
        }
        if (contentLength !== -1 && contentLength !== n) throw bad('several different Content-Length values');
        contentLength = n;
        break;
      }
      case Known.TransferEncoding: {
        transferEncoding = true;
        h.hasHopByHop = true;
        const value = buf.toString('latin1', vs, ve);
        const codings = value.toLowerCase().split(',').map((x) => x.trim());
        if (codings[codings.length - 1] !== 'chunked' || codings.indexOf('chunked') !== codings.length - 1) {
          throw bad(`Transfer-Encoding ${JSON.stringify(value)} does not end in chunked`);
        }
        h.chunked = true;
        break;
      }
      case Known.Connection:
        if (ve - vs === KEEP_ALIVE.length && sameLower(buf, vs, KEEP_ALIVE)) connKeepAlive = true;
        else if (ve - vs === CLOSE.length && sameLower(buf, vs, CLOSE)) connClose = h.hasHopByHop = true;
        else {
          for (const t of buf.toString('latin1', vs, ve).toLowerCase().split(',')) {
            const o = t.trim();
            if (o === 'close') connClose = true;
            else if (o === 'keep-alive') connKeepAlive = true;
            else if (o === 'upgrade') connUpgrade = true;
            if (o !== 'keep-alive' && o !== '') h.hasHopByHop = true;
          }
        }
        break;
      case Known.Upgrade:
        hasUpgrade = true;
        h.hasHopByHop = true;
        break;
      case Known.Expect:
        h.expectContinue = buf.toString('latin1', vs, ve).toLowerCase() === '100-continue';
        break;
      case Known.HopByHop:
        h.hasHopByHop = true;
        break;
    }
  }
  if (transferEncoding && contentLength !== -1) throw bad('both Content-Length and Transfer-Encoding present');
  if (transferEncoding && h.minor === 0) throw bad('Transfer-Encoding in an HTTP/1.0 message');
  h.contentLength = h.chunked ? -1 : contentLength;
  h.close = connClose || (h.minor === 0 && !connKeepAlive);
  h.upgrade = (connUpgrade && hasUpgrade) || h.method === 'CONNECT';
  return h;
}

/** "HTTP/1.x" at `at`: the minor version, or -1. */
function httpVersion(buf: Buffer, at: number): number {
  if (buf[at] !== 0x48 || buf[at + 1] !== 0x54 || buf[at + 2] !== 0x54 || buf[at + 3] !== 0x50 || buf[at + 4] !== 0x2f || buf[at + 5] !== 0x31 || buf[at + 6] !== 0x2e) return -1;
  const m = buf[at + 7];
  return m === 0x31 ? 1 : m === 0x30 ? 0 : -1;
}

/** Reads "METHOD target HTTP/1.x" into `h`; returns the offset of the CR ending it. */
function requestLine(buf: Buffer, start: number, end: number, h: ParsedHead): number {
  const lineEnd = buf.indexOf(CR, start);
  const fail = (): HttpFramingError => bad(`not an HTTP/1.x request line: ${JSON.stringify(buf.toString('latin1', start, lineEnd).slice(0, 60))}`);
  let i = start;
  while (CLASS[buf[i]!] === 1) i++;
  if (i === start || buf[i] !== SP) throw fail();
  h.method = i - start === 3 && buf[start] === 0x47 && buf[start + 1] === 0x45 && buf[start + 2] === 0x54 ? 'GET' : buf.toString('latin1', start, i);
  const t = ++i;
  for (let b = buf[i]!; b > SP && b !== 0x7f; b = buf[++i]!);
  if (i === t || buf[i] !== SP) throw fail();
  h.target = buf.toString('latin1', t, i);
  const minor = httpVersion(buf, i + 1);
  if (minor < 0 || i + 9 !== lineEnd || lineEnd > end) throw fail();
  h.minor = minor;
  return lineEnd;
}

/** Reads "HTTP/1.x NNN reason" into `h`; returns the offset of the CR ending it. */
function statusLine(buf: Buffer, start: number, end: number, h: ParsedHead): number {
  let lineEnd = start;
  while (buf[lineEnd] !== CR && buf[lineEnd] !== LF) lineEnd++;
  const fail = (): HttpFramingError => bad(`not an HTTP/1.x status line: ${JSON.stringify(buf.toString('latin1', start, lineEnd).slice(0, 60))}`);
  const minor = httpVersion(buf, start);
  const d0 = buf[start + 9]! - 0x30;
  const d1 = buf[start + 10]! - 0x30;
  const d2 = buf[start + 11]! - 0x30;
  if (minor < 0 || buf[start + 8] !== SP || !(d0 >= 1 && d0 <= 9) || !(d1 >= 0 && d1 <= 9) || !(d2 >= 0 && d2 <= 9)) throw fail();
  if (lineEnd !== start + 12 && buf[start + 12] !== SP) throw fail();
  if (buf[lineEnd] !== CR || lineEnd > end) throw fail();
  h.minor = minor;
  h.status = d0 * 100 + d1 * 10 + d2;
  h.reasonStart = h.reasonEnd = lineEnd;
  if (lineEnd > start + 12) h.reasonStart = start + 13;
  return lineEnd;
}

/** The value of the first field named `lowerName`, or undefined. */
export function headerValue(head: HttpHead, lowerName: string): string | undefined {
  if (head instanceof ParsedHead) return head.value(lowerName);
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
