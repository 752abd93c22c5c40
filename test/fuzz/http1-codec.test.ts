// The HTTP/1.1 codec in process under seeded mutations of the corpus: parseHead and BodyFramer only ever answer with a
// head, "not yet", or an HttpFramingError (400/431), and give the same answer however TCP splits the bytes.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { BodyFramer, HttpFramingError, parseHead, type HttpHead } from '../../src/proxy';
import { loadCorpus, Mutator } from './fuzz-input';

const CASES = 4000;

type HeadResult = { head: HttpHead } | { pending: true } | { status: number };

function head(buf: Buffer): HeadResult {
  try {
    const h = parseHead(buf, 0, 'request', 65536, 100);
    return h ? { head: h } : { pending: true };
  } catch (err) {
    assert.ok(err instanceof HttpFramingError, `not an HttpFramingError: ${String(err)} for ${JSON.stringify(buf.toString('latin1').slice(0, 100))}`);
    assert.ok([400, 431].includes(err.status), `status ${err.status}`);
    assert.ok(err.message.length > 0);
    return { status: err.status };
  }
}

/** Feeds `body` to a framer in `pieces`; the index where the body ended, 'more' when it goes on, or the error status. */
function frame(kind: number | 'chunked', pieces: readonly Buffer[]): number | 'more' | 'error' {
  const f = new BodyFramer();
  f.reset(kind);
  let offset = 0;
  try {
    for (const p of pieces) {
      if (f.done) return offset;
      const end = f.consume(p, 0, p.length);
      if (f.done) return offset + end;
      assert.equal(end, p.length, 'a framer that is not done consumed every byte');
      offset += p.length;
    }
  } catch (err) {
    assert.ok(err instanceof HttpFramingError, `not an HttpFramingError: ${String(err)}`);
    return 'error';
  }
  return f.done ? offset : 'more';
}

describe('fuzz: the HTTP/1.1 codec', () => {
  const corpus = loadCorpus('http1');

  test(`parseHead: ${CASES} mutated heads answer a head, "not yet", 400 or 431, and a prefix never answers another head`, () => {
    const m = new Mutator(101);
    const tally = { head: 0, pending: 0, 400: 0, 431: 0 };
    for (let i = 0; i < CASES; i++) {
      const buf = m.mutate(m.pick(corpus).bytes);
      const r = head(buf);
      if ('head' in r) {
        tally.head++;
        assert.ok(r.head.size <= buf.length);
        // Any cut before the head's end is "not yet" or an error found in the bytes already there.
        const cut = m.int(r.head.size);
        const p = head(buf.subarray(0, cut));
        assert.ok(!('head' in p), `a prefix of ${cut} bytes parsed as a head`);
      } else if ('pending' in r) tally.pending++;
      else tally[r.status as 400 | 431]++;
    }
    assert.ok(tally.head > 0 && tally[400] > 0, JSON.stringify(tally));
  });

  test(`BodyFramer: ${CASES} mutated chunked bodies end at the same byte (or fail alike) whole and split`, () => {
    const m = new Mutator(103);
    const bodies = corpus.filter((e) => e.name.startsWith('chunk') || e.name.includes('chunked')).map((e) => e.bytes.subarray(e.bytes.indexOf('\r\n\r\n') + 4));
    let ended = 0;
    for (let i = 0; i < CASES; i++) {
      const body = m.mutate(m.pick(bodies));
      const kind = i % 5 === 0 ? m.int(body.length + 2) : 'chunked';
      const whole = frame(kind, [body]);
      const split = frame(kind, Array.from(body, (_, j) => body.subarray(j, j + 1)));
      assert.equal(split, whole, `split and whole differ for ${JSON.stringify(body.toString('latin1'))}`);
      if (typeof whole === 'number') ended++;
    }
    assert.ok(ended > 0);
  });
});
