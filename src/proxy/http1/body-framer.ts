// Finds where an HTTP/1.1 body ends (Content-Length, chunked, or connection close) while its bytes pass through unchanged.

import { HttpFramingError } from './http-framing-error';

const enum S { Done, Length, Eof, Size, SizeExt, SizeLF, Data, DataCR, DataLF, TrailerStart, TrailerLine, TrailerLF, FinalLF }

const MAX_CHUNK_SIZE = 2 ** 52;

/** One body at a time; `reset` for the next message. Holds no buffers: the caller forwards the consumed bytes. */
export class BodyFramer {
  private s = S.Done;
  private remaining = 0;
  private size = 0;
  private sizeDigits = 0;
  /** Trailer field names (lower-case) refused with 400: fields the proxy itself sets, which a trailer must not smuggle. */
  forbiddenTrailers: ReadonlySet<string> | null = null;
  private trailerName = '';
  private inName = false;

  /** Starts a body: `length` >= 0 for Content-Length, 'chunked', 'eof' (until the peer closes), or 'none'. */
  reset(kind: number | 'chunked' | 'eof' | 'none'): void {
    if (kind === 'none' || kind === 0) this.s = S.Done;
    else if (kind === 'chunked') {
      this.s = S.Size;
      this.size = 0;
      this.sizeDigits = 0;
    } else if (kind === 'eof') this.s = S.Eof;
    else {
      this.s = S.Length;
      this.remaining = kind;
    }
  }

  get done(): boolean {
    return this.s === S.Done;
  }

  /** True for a body that ends only when the connection does. */
  get untilClose(): boolean {
    return this.s === S.Eof;
  }

  /**
   * Consumes body bytes of buf[start, end). Returns the index just past the last body byte seen: `end` when the
   * body goes on, less when it ended inside (the rest belongs to the next message). @throws HttpFramingError
   */
  consume(buf: Buffer, start: number, end: number): number {
    let i = start;
    while (i < end) {
      switch (this.s) {
        case S.Done:
          return i;
        case S.Eof:
          return end;
        case S.Length: {
          const n = Math.min(this.remaining, end - i);
          this.remaining -= n;
          i += n;
          if (this.remaining === 0) this.s = S.Done;
          break;
        }
        case S.Data: {
          const n = Math.min(this.remaining, end - i);
          this.remaining -= n;
          i += n;
          if (this.remaining === 0) this.s = S.DataCR;
          break;
        }
        case S.Size: {
          const c = buf[i++]!;
          const d = hex(c);
          if (d >= 0) {
            if (++this.sizeDigits > 13) throw new HttpFramingError(400, 'chunk size too long');
            this.size = this.size * 16 + d;
          } else if (this.sizeDigits === 0) throw new HttpFramingError(400, 'bad chunk size');
          else if (c === 0x0d) this.s = S.SizeLF;
          else if (c === 0x3b || c === 0x20 || c === 0x09) this.s = S.SizeExt;
          else throw new HttpFramingError(400, 'bad chunk size');
          break;
        }
        case S.SizeExt: {
          const c = buf[i++]!;
          if (c === 0x0d) this.s = S.SizeLF;
          else if (c < 0x20 && c !== 0x09) throw new HttpFramingError(400, 'control character in a chunk extension');
          break;
        }
        case S.SizeLF:
          if (buf[i++] !== 0x0a) throw new HttpFramingError(400, 'chunk size line not ended by CRLF');
          if (this.size > MAX_CHUNK_SIZE) throw new HttpFramingError(400, 'chunk size too large');
          if (this.size === 0) this.s = S.TrailerStart;
          else {
            this.remaining = this.size;
            this.s = S.Data;
          }
          this.size = 0;
          this.sizeDigits = 0;
          break;
        case S.DataCR:
          if (buf[i++] !== 0x0d) throw new HttpFramingError(400, 'chunk data not followed by CRLF');
          this.s = S.DataLF;
          break;
        case S.DataLF:
          if (buf[i++] !== 0x0a) throw new HttpFramingError(400, 'chunk data not followed by CRLF');
          this.s = S.Size;
          break;
        case S.TrailerStart: {
          const c = buf[i++]!;
          this.s = c === 0x0d ? S.FinalLF : S.TrailerLine;
          this.trailerName = c === 0x0d ? '' : String.fromCharCode(c);
          this.inName = c !== 0x0d && c !== 0x3a;
          break;
        }
        case S.TrailerLine: {
          const c = buf[i++]!;
          if (c === 0x0d) this.s = S.TrailerLF;
          else if (c === 0x0a) throw new HttpFramingError(400, 'bare LF in a trailer');
          else if (this.inName) {
            if (c === 0x3a) {
              this.inName = false;
              if (this.forbiddenTrailers?.has(this.trailerName.toLowerCase())) throw new HttpFramingError(400, `${this.trailerName} is not allowed in a trailer`);
            } else if (this.trailerName.length < 64) this.trailerName += String.fromCharCode(c);
          }
          break;
        }
        case S.TrailerLF:
          if (buf[i++] !== 0x0a) throw new HttpFramingError(400, 'trailer line not ended by CRLF');
          this.s = S.TrailerStart;
          break;
        case S.FinalLF:
          if (buf[i++] !== 0x0a) throw new HttpFramingError(400, 'chunked body not ended by CRLF');
          this.s = S.Done;
          return i;
      }
    }
    return i;
  }
}

function hex(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x57;
  if (c >= 0x41 && c <= 0x46) return c - 0x37;
  return -1;
}
