// Streaming HTTP/1.1 request framer for the inbound proxy: strips client-sent XFCC and injects the mesh's own into every request head.

import { Transform, type TransformCallback } from 'node:stream';
import { MeshError } from '../errors';

/** Options of {@link Http1RequestFramer}. */
export interface Http1RequestFramerOptions {
  /** Header value injected as x-forwarded-client-cert into each request head. */
  xfcc: string;
  /** Max bytes of one request head (request line + headers). @default 65536 */
  maxHeadBytes?: number;
}

/** A malformed request; `status` is the HTTP status to answer (400, 431, 501), `reason` a short text naming what was wrong. */
export class HttpFramingError extends MeshError {
  declare readonly code: 'MESH_ERR_HTTP_MALFORMED';
  readonly status: number;
  /** Same text as `message`; kept separately so callers can log it without the class prefix. */
  readonly reason: string;

  constructor(status: number, message: string) {
    super('MESH_ERR_HTTP_MALFORMED', message);
    this.name = 'HttpFramingError';
    this.status = status;
    this.reason = message;
  }
}

const CR = 0x0d;
const LF = 0x0a;
const XFCC = 'x-forwarded-client-cert';
/** Chunk-size lines are tiny in practice; the bound stops a peer from making us buffer an endless extension. */
const MAX_CHUNK_LINE = 4096;
const REQUEST_LINE = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+ [^\x00-\x20\x7f]+ HTTP\/1\.[0-9]$/;
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
/** Field values may hold VCHAR, obs-text, SP and HTAB only; other controls are a smuggling vector. */
const BAD_VALUE_CHAR = /[\x00-\x08\x0a-\x1f\x7f]/;
const DIGITS = /^[0-9]+$/;

const enum State { Head, Fixed, ChunkSize, ChunkData, ChunkDataCR, ChunkDataLF, Trailer, Tunnel, Failed }

const STATUS_TEXT: Record<number, string> = { 400: 'Bad Request', 431: 'Request Header Fields Too Large', 501: 'Not Implemented' };

/** The bytes of a minimal `connection: close` plain-text response answering `err`. */
export function errorResponse(err: HttpFramingError): Buffer {
  const body = Buffer.from(`${err.message}\n`, 'utf8');
  const head = `HTTP/1.1 ${err.status} ${STATUS_TEXT[err.status] ?? 'Error'}\r\ncontent-type: text/plain\r\nconnection: close\r\ncontent-length: ${body.length}\r\n\r\n`;
  return Buffer.concat([Buffer.from(head, 'latin1'), body]);
}

/** Copy-on-append byte buffer that grows by doubling, so byte-at-a-time input stays linear. */
class Bytes {
  buf = Buffer.allocUnsafe(0);
  len = 0;
  append(src: Buffer, start: number, end: number): void {
    const need = this.len + end - start;
    if (need > this.buf.length) {
      const next = Buffer.allocUnsafe(Math.max(need, this.buf.length * 2, 256));
      this.buf.copy(next, 0, 0, this.len);
      this.buf = next;
    }
    this.len += src.copy(this.buf, this.len, start, end);
  }
  view(): Buffer { return this.buf.subarray(0, this.len); }
  /** Drops the bytes; large buffers are released so idle keep-alive connections stay small. */
  reset(): void { this.len = 0; if (this.buf.length > 8192) this.buf = Buffer.allocUnsafe(0); }
}

/** Validates a header or trailer field line (without CRLF) and returns its lower-cased name. */
function fieldName(line: string): string {
  const c = line.charCodeAt(0);
  if (c === 0x20 || c === 0x09) throw new HttpFramingError(400, 'obs-fold (header line starting with whitespace) is not allowed');
  const colon = line.indexOf(':');
  if (colon === -1) throw new HttpFramingError(400, 'header line without a colon');
  const name = line.slice(0, colon);
  if (!TOKEN.test(name)) {
    throw new HttpFramingError(400, /[ \t]$/.test(name) ? 'whitespace between header name and colon' : 'invalid header name');
  }
  if (BAD_VALUE_CHAR.test(line.slice(colon + 1))) throw new HttpFramingError(400, 'invalid character in header value');
  return name.toLowerCase();
}

function listItems(value: string): string[] {
  return value.split(',').map((v) => v.trim()).filter((v) => v !== '');
}

/**
 * A Transform: raw request bytes in, rewritten bytes out. Every request head gets `x-forwarded-client-cert: <xfcc>`
 * as its FIRST header (right after the request line) and loses any client-sent XFCC field (also in chunked trailers).
 * Everything else is passed through unchanged; bodies leave as slices of the input buffers. After an Upgrade
 * (`Upgrade` + `Connection: upgrade`, once its body is done) or a CONNECT head, the rest of the stream is a tunnel.
 * On malformed input it emits 'error' with an {@link HttpFramingError}; bytes of earlier, valid requests in the same
 * write are still pushed first, bytes of the bad request never are.
 */
export class Http1RequestFramer extends Transform {
  private readonly xfccLine: Buffer;
  private readonly maxHead: number;
  private state = State.Head;
  /** After the current body: Head for keep-alive, Tunnel after an upgrade request. */
  private afterBody = State.Head;
  private remaining = 0;
  private trailerBytes = 0;
  /** Head bytes held across writes; offsets below are relative to its start (or to the head's start in the chunk). */
  private readonly head = new Bytes();
  private headStart = 0;
  private lineStart = 0;
  private scanPos = 0;
  /** Partial chunk-size/trailer line held across writes until it can be validated. */
  private readonly line = new Bytes();
  private lineEnd = 0;
  /** Cursor in the current chunk, and start of the validated run not yet pushed. */
  private pos = 0;
  private emitFrom = 0;

  /** @throws TypeError when `xfcc` could inject extra header lines; RangeError for a bad `maxHeadBytes`. */
  constructor(opts: Http1RequestFramerOptions) {
    super();
    if (/[^\x09\x20-\x7e\x80-\xff]/.test(opts.xfcc)) throw new TypeError('xfcc value holds characters not allowed in a header value');
    this.xfccLine = Buffer.from(`${XFCC}: ${opts.xfcc}\r\n`, 'latin1');
    this.maxHead = opts.maxHeadBytes ?? 65536;
    if (!Number.isInteger(this.maxHead) || this.maxHead < 16) throw new RangeError('maxHeadBytes must be an integer >= 16');
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    if (this.state === State.Failed) return cb();
    this.pos = 0;
    this.emitFrom = 0;
    try {
      this.consume(chunk);
      this.flushRun(chunk, chunk.length);
      cb();
    } catch (err) {
      // pos only ever moves past validated bytes, so everything before it belongs to well-formed requests.
      this.flushRun(chunk, this.pos);
      this.state = State.Failed;
      cb(err as Error);
    }
  }

  override _flush(cb: TransformCallback): void {
    if (this.state === State.Head && this.head.len > this.headStart) {
      return cb(new HttpFramingError(400, 'connection ended inside a request head'));
    }
    if ((this.state === State.ChunkSize || this.state === State.Trailer) && this.line.len > 0) {
      return cb(new HttpFramingError(400, 'connection ended inside a chunk-size or trailer line'));
    }
    cb();
  }

  private consume(chunk: Buffer): void {
    const len = chunk.length;
    while (this.pos < len) {
      switch (this.state) {
        case State.Head: this.onHead(chunk); break;
        case State.Fixed:
        case State.ChunkData: {
          const n = Math.min(this.remaining, len - this.pos);
          this.pos += n;
          this.remaining -= n;
          if (this.remaining === 0) this.state = this.state === State.Fixed ? this.afterBody : State.ChunkDataCR;
          break;
        }
        case State.ChunkDataCR:
        case State.ChunkDataLF:
          if (chunk[this.pos] !== (this.state === State.ChunkDataCR ? CR : LF)) throw new HttpFramingError(400, 'missing CRLF after chunk data');
          this.pos++;
          this.state = this.state === State.ChunkDataCR ? State.ChunkDataLF : State.ChunkSize;
          break;
        case State.ChunkSize: this.onChunkSize(chunk); break;
        case State.Trailer: this.onTrailer(chunk); break;
        default: this.pos = len; // Tunnel; Failed never reaches here
      }
    }
  }

  private flushRun(chunk: Buffer, upTo: number): void {
    if (upTo > this.emitFrom) this.push(upTo - this.emitFrom === chunk.length ? chunk : chunk.subarray(this.emitFrom, upTo));
    this.emitFrom = upTo;
  }

  private onHead(chunk: Buffer): void {
    if (this.head.len === 0) {
      // Fast path: the whole head usually sits in this chunk, so scan it in place without copying.
      const base = this.pos;
      const end = this.scanHead(chunk, base);
      this.flushRun(chunk, base);
      if (end === -1) {
        this.head.append(chunk, base, chunk.length);
      } else {
        this.emitHead(chunk, base, end);
      }
      this.pos = this.emitFrom = end === -1 ? chunk.length : end;
      return;
    }
    // Only a full head can be forwarded, so copy no more than could still fit in one.
    const prev = this.head.len;
    const take = Math.min(chunk.length - this.pos, this.maxHead - prev);
    this.head.append(chunk, this.pos, this.pos + take);
    const view = this.head.view();
    const end = this.scanHead(view, 0);
    if (end !== -1) this.emitHead(view, 0, end);
    this.pos = this.emitFrom = end === -1 ? this.pos + take : this.pos + end - prev;
    if (end !== -1) this.head.reset();
  }

  /** Finds the end of the head (index past its blank line) or -1; rejects bare CR/LF and oversize heads. */
  private scanHead(buf: Buffer, base: number): number {
    const limit = base + this.maxHead;
    let ls = base + this.lineStart;
    let pos = base + this.scanPos;
    for (;;) {
      const lf = buf.indexOf(LF, pos);
      if (lf === -1 || lf >= limit) {
        if (buf.length >= limit) throw new HttpFramingError(431, `request head larger than ${this.maxHead} bytes`);
        this.lineStart = ls - base;
        this.scanPos = buf.length - base;
        return -1;
      }
      if (lf === ls || buf[lf - 1] !== CR) throw new HttpFramingError(400, 'bare LF line ending in request head');
      if (buf.indexOf(CR, ls) < lf - 1) throw new HttpFramingError(400, 'bare CR in request head');
      if (lf - 1 === ls) {
        // RFC 9112 §2.2: empty lines before the request line are ignored (they still count towards maxHeadBytes).
        if (ls !== base + this.headStart) return lf + 1;
        this.headStart = lf + 1 - base;
      }
      ls = pos = lf + 1;
    }
  }

  /** Parses the head in buf[base+headStart, end), pushes its rewritten form and sets up body framing. */
  private emitHead(buf: Buffer, base: number, end: number): void {
    const start = base + this.headStart;
    this.headStart = this.lineStart = this.scanPos = 0;
    const lines = buf.toString('latin1', start, end - 4).split('\r\n');
    const requestLine = lines[0]!;
    if (!REQUEST_LINE.test(requestLine)) throw new HttpFramingError(400, 'malformed request line (expected "METHOD SP target SP HTTP/1.x")');
    const isConnect = requestLine.startsWith('CONNECT ');
    const http10 = requestLine.endsWith('/1.0');
    let contentLength = -1;
    let codings: string[] | undefined;
    let upgrade = false;
    let connectionUpgrade = false;
    // latin1 maps bytes 1:1 to chars, so string offsets are byte offsets into buf.
    let off = start + requestLine.length + 2;
    const out: Buffer[] = [buf.subarray(start, off), this.xfccLine];
    let runFrom = off;
    for (let i = 1; i < lines.length; i++) {
      const line = lines[i]!;
      const name = fieldName(line);
      const value = line.slice(line.indexOf(':') + 1);
      if (name === XFCC) {
        if (off > runFrom) out.push(buf.subarray(runFrom, off));
        runFrom = off + line.length + 2;
      } else if (name === 'content-length') {
        for (const item of value.split(',')) {
          const v = item.trim();
          if (!DIGITS.test(v)) throw new HttpFramingError(400, 'Content-Length is not a decimal number');
          const n = Number(v);
          if (!Number.isSafeInteger(n)) throw new HttpFramingError(400, 'Content-Length too large');
          if (contentLength !== -1 && n !== contentLength) throw new HttpFramingError(400, 'several differing Content-Length values');
          contentLength = n;
        }
      } else if (name === 'transfer-encoding') {
        codings = (codings ?? []).concat(listItems(value).map((c) => c.toLowerCase()));
      } else if (name === 'upgrade') {
        upgrade ||= value.trim() !== '';
      } else if (name === 'connection') {
        connectionUpgrade ||= listItems(value).some((t) => t.toLowerCase() === 'upgrade');
      }
      off += line.length + 2;
    }
    out.push(buf.subarray(runFrom, end));

    if (codings !== undefined) {
      if (contentLength !== -1) throw new HttpFramingError(400, 'both Content-Length and Transfer-Encoding present');
      // RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing.
      if (http10) throw new HttpFramingError(400, 'Transfer-Encoding in an HTTP/1.0 request');
      const chunked = codings.indexOf('chunked');
      if (chunked === -1 || chunked !== codings.length - 1) {
        throw new HttpFramingError(400, chunked === -1 ? 'Transfer-Encoding whose final coding is not chunked' : 'chunked is not the final Transfer-Encoding or is applied twice');
      }
    }
    this.push(Buffer.concat(out));
    if (isConnect) {
      this.state = State.Tunnel;
      return;
    }
    this.afterBody = upgrade && connectionUpgrade ? State.Tunnel : State.Head;
    if (codings !== undefined) this.state = State.ChunkSize;
    else if (contentLength > 0) { this.state = State.Fixed; this.remaining = contentLength; }
    else this.state = this.afterBody;
  }

  /**
   * Returns the next complete line (with its LF) starting at pos, or null after holding a partial line for the next
   * write. The caller must then call keepLine() or dropLine().
   */
  private takeLine(chunk: Buffer, limit: number, tooLong: () => HttpFramingError): Buffer | null {
    const lf = chunk.indexOf(LF, this.pos);
    const held = this.line.len;
    if (lf === -1) {
      if (held + chunk.length - this.pos > limit) throw tooLong();
      this.flushRun(chunk, this.pos);
      this.line.append(chunk, this.pos, chunk.length);
      this.pos = this.emitFrom = chunk.length;
      return null;
    }
    if (held + lf + 1 - this.pos > limit) throw tooLong();
    this.lineEnd = lf + 1;
    const line = held === 0 ? chunk.subarray(this.pos, lf + 1) : Buffer.concat([this.line.view(), chunk.subarray(0, lf + 1)]);
    if (line.length < 2 || line[line.length - 2] !== CR) throw new HttpFramingError(400, 'bare LF line ending in chunked body');
    if (line.indexOf(CR) < line.length - 2) throw new HttpFramingError(400, 'bare CR in chunked body');
    return line;
  }

  private keepLine(): void {
    // A held line starts the chunk's run (pos is 0 then), so pushing its copy here keeps byte order.
    if (this.line.len > 0) this.push(Buffer.from(this.line.view()));
    this.line.reset();
    this.pos = this.lineEnd;
  }

  private dropLine(chunk: Buffer): void {
    this.flushRun(chunk, this.pos);
    this.line.reset();
    this.pos = this.emitFrom = this.lineEnd;
  }

  private onChunkSize(chunk: Buffer): void {
    const line = this.takeLine(chunk, MAX_CHUNK_LINE, () => new HttpFramingError(400, 'bad chunk size (line too long)'));
    if (line === null) return;
    const end = line.length - 2;
    let size = 0;
    let i = 0;
    for (; i < end; i++) {
      const c = line[i]!;
      const d = c >= 0x30 && c <= 0x39 ? c - 0x30 : (c | 0x20) >= 0x61 && (c | 0x20) <= 0x66 ? (c | 0x20) - 0x57 : -1;
      if (d === -1) break;
      size = size * 16 + d;
    }
    if (i === 0) throw new HttpFramingError(400, 'bad chunk size (not hexadecimal)');
    if (i > 16) throw new HttpFramingError(400, 'bad chunk size (more than 16 hex digits)');
    if (!Number.isSafeInteger(size)) throw new HttpFramingError(400, 'bad chunk size (too large)');
    while (i < end && (line[i] === 0x20 || line[i] === 0x09)) i++;
    if (i < end) {
      if (line[i] !== 0x3b) throw new HttpFramingError(400, 'bad chunk size (not hexadecimal)');
      if (BAD_VALUE_CHAR.test(line.toString('latin1', i, end))) throw new HttpFramingError(400, 'invalid character in chunk extension');
    }
    this.keepLine();
    if (size === 0) { this.state = State.Trailer; this.trailerBytes = 0; }
    else { this.state = State.ChunkData; this.remaining = size; }
  }

  private onTrailer(chunk: Buffer): void {
    const line = this.takeLine(chunk, this.maxHead - this.trailerBytes, () => new HttpFramingError(431, `trailer section larger than ${this.maxHead} bytes`));
    if (line === null) return;
    this.trailerBytes += line.length;
    if (line.length === 2) {
      this.keepLine();
      this.state = this.afterBody;
      return;
    }
    // Some apps merge trailers into headers, so a forged XFCC trailer is dropped just like a forged header.
    if (fieldName(line.toString('latin1', 0, line.length - 2)) === XFCC) this.dropLine(chunk);
    else this.keepLine();
  }
}
