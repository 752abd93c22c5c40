// Fuzz input: the corpus files (test/fuzz/corpus/) and seeded mutations of them, so every run sends the same bytes.

import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { seeded } from '../helpers/seeded-random';

/** The corpus in the source tree (tests run from dist/test/fuzz). */
export const CORPUS_DIR = join(__dirname, '..', '..', '..', 'test', 'fuzz', 'corpus');

/** One corpus entry: `<name>.<expect>.<ext>`; `expect` is a status, a status + `c` (or closed), or `any`. */
export interface CorpusEntry {
  readonly name: string;
  readonly expect: string;
  readonly bytes: Buffer;
}

/**
 * Decodes a corpus file: line breaks in the file are layout only; `\r`, `\n`, `\t`, `\0`, `\\` and `\xNN` are the
 * bytes. So a file shows every CR, LF and NUL of a request, and no editor or git setting can change them.
 */
export function decodeEscapes(text: string): Buffer {
  const out: number[] = [];
  const s = text.replace(/\r?\n/g, '');
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    if (c !== '\\') {
      out.push(...Buffer.from(c, 'utf8'));
      continue;
    }
    const e = s[++i];
    if (e === 'r') out.push(13);
    else if (e === 'n') out.push(10);
    else if (e === 't') out.push(9);
    else if (e === '0') out.push(0);
    else if (e === 'x') {
      out.push(parseInt(s.slice(i + 1, i + 3), 16));
      i += 2;
    } else out.push(e!.charCodeAt(0));
  }
  return Buffer.from(out);
}

/** Every file of a corpus folder, decoded (`.http` files) or as they are (others). */
export function loadCorpus(folder: string): CorpusEntry[] {
  const dir = join(CORPUS_DIR, folder);
  return readdirSync(dir)
    .sort()
    .map((f) => {
      const [name, expect] = f.split('.');
      const text = readFileSync(join(dir, f));
      return { name: name!, expect: expect!, bytes: f.endsWith('.http') ? decodeEscapes(text.toString('utf8')) : text };
    });
}

/** Byte strings that parsers trip on, spliced in by the mutator. */
const TOKENS = ['\r\n', '\n', '\r', '\0', ':', ' ', '\t', '\r\n\r\n', 'chunked', 'content-length: ', 'transfer-encoding: chunked\r\n', '-1', 'ffffffffffffffff', '0\r\n\r\n', ';', '\xff', 'HTTP/1.1', '%00', '\x7f'].map((t) => Buffer.from(t, 'latin1'));

/** A seeded source of fuzz cases. */
export class Mutator {
  readonly random: () => number;

  constructor(seed: number) {
    this.random = seeded(seed);
  }

  int(n: number): number {
    return Math.floor(this.random() * n);
  }

  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)]!;
  }

  bytes(n: number): Buffer {
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) b[i] = this.int(256);
    return b;
  }

  /** 1 to 4 mutations of `input`: flip, insert, delete, duplicate a slice, splice a token, truncate. */
  mutate(input: Buffer): Buffer {
    let b = input;
    for (let k = 1 + this.int(4); k > 0; k--) {
      const at = this.int(b.length + 1);
      switch (this.int(6)) {
        case 0:
          if (b.length > 0) {
            b = Buffer.from(b);
            b[Math.min(at, b.length - 1)]! ^= 1 << this.int(8);
          }
          break;
        case 1:
          b = Buffer.concat([b.subarray(0, at), this.bytes(1 + this.int(8)), b.subarray(at)]);
          break;
        case 2:
          b = Buffer.concat([b.subarray(0, at), b.subarray(Math.min(b.length, at + 1 + this.int(8)))]);
          break;
        case 3: {
          const len = this.int(Math.max(1, b.length - at));
          b = Buffer.concat([b.subarray(0, at + len), b.subarray(at, at + len), b.subarray(at + len)]);
          break;
        }
        case 4:
          b = Buffer.concat([b.subarray(0, at), this.pick(TOKENS), b.subarray(at)]);
          break;
        default:
          b = b.subarray(0, at);
      }
    }
    return b;
  }

  /** `b` cut into 1 to 4 pieces, sent as separate writes (parsers must not care where TCP splits). */
  split(b: Buffer): Buffer[] {
    const cuts = [...new Set(Array.from({ length: this.int(4) }, () => this.int(b.length)))].sort((x, y) => x - y);
    const out: Buffer[] = [];
    let prev = 0;
    for (const c of [...cuts, b.length]) {
      if (c > prev) out.push(b.subarray(prev, c));
      prev = c;
    }
    return out;
  }
}
