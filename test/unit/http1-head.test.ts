// The HTTP/1.1 head parser: what it reads from valid heads, and the exact refusal for each malformed one.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { HttpFramingError } from '../../src/proxy/http1/http-framing-error';
import { buildHead, forwardHead, headerValue, parseHead, setOnlyEdits } from '../../src/proxy/http1/http1-head';

const bytes = (s: string): Buffer => Buffer.from(s, 'latin1');
const req = (s: string) => parseHead(bytes(s), 0, 'request');
const resp = (s: string) => parseHead(bytes(s), 0, 'response');

/** Asserts parsing `text` fails with `status` and a message matching `why`. */
function refused(kind: 'request' | 'response', text: string, why: RegExp, status = 400): void {
  assert.throws(
    () => parseHead(bytes(text), 0, kind),
    (err: unknown) => err instanceof HttpFramingError && err.status === status && why.test(err.message),
    `${JSON.stringify(text)} should be refused with ${status} ${why}`,
  );
}

describe('parseHead: requests', () => {
  it('reads the request line, fields in order and size; lookups ignore case', () => {
    const text = 'POST /a/b?x=1 HTTP/1.1\r\nHost: api:8080\r\nX-Empty:\r\nContent-Length: 12\r\nX-Tab:\t v \t\r\n\r\nbody';
    const h = req(text)!;
    assert.equal(h.method, 'POST');
    assert.equal(h.target, '/a/b?x=1');
    assert.equal(h.minor, 1);
    assert.equal(h.status, 0);
    assert.equal(h.contentLength, 12);
    assert.equal(h.size, text.length - 4);
    assert.deepEqual(h.fields, ['Host', 'api:8080', 'X-Empty', '', 'Content-Length', '12', 'X-Tab', 'v']);
    assert.equal(headerValue(h, 'host'), 'api:8080');
    assert.equal(headerValue(h, 'x-tab'), 'v');
    assert.equal(headerValue(h, 'x-missing'), undefined);
    assert.equal(h.close, false);
    assert.equal(h.hasHopByHop, false);
  });

  it('returns undefined until the head is complete, and honours the start offset', () => {
    assert.equal(req('GET / HTTP/1.1\r\nHost: a\r\n'), undefined);
    const b = bytes('xxGET /p HTTP/1.0\r\n\r\n');
    const h = parseHead(b, 2, 'request')!;
    assert.equal(h.target, '/p');
    assert.equal(h.minor, 0);
    assert.equal(h.close, true, 'HTTP/1.0 without keep-alive closes');
    assert.equal(h.size, b.length - 2);
  });

  it('reads framing and connection fields', () => {
    const chunked = req('PUT / HTTP/1.1\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n')!;
    assert.equal(chunked.chunked, true);
    assert.equal(chunked.contentLength, -1);
    assert.equal(chunked.hasHopByHop, true);
    assert.equal(req('GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n')!.close, false);
    const closing = req('GET / HTTP/1.1\r\nCONNECTION: close\r\n\r\n')!;
    assert.equal(closing.close, true);
    assert.equal(closing.hasHopByHop, true);
    const ws = req('GET /ws HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n')!;
    assert.equal(ws.upgrade, true);
    assert.equal(ws.hasHopByHop, true);
    assert.equal(req('GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n')!.upgrade, false, 'Upgrade without Connection: upgrade');
    assert.equal(req('POST / HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n')!.expectContinue, true);
    assert.equal(req('GET / HTTP/1.1\r\nKeep-Alive: timeout=5\r\n\r\n')!.hasHopByHop, true);
    assert.equal(req('GET / HTTP/1.1\r\nTE: trailers\r\n\r\n')!.hasHopByHop, true);
    assert.equal(req('GET / HTTP/1.1\r\nConnection: keep-alive\r\n\r\n')!.hasHopByHop, false);
    assert.equal(req('CONNECT a:443 HTTP/1.1\r\n\r\n')!.upgrade, true);
    assert.equal(req('GET / HTTP/1.1\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\n')!.contentLength, 5, 'repeated equal values are one');
  });

  it('refuses malformed request lines', () => {
    for (const line of ['GET / HTTP/2.0', 'GET  / HTTP/1.1', 'GET / HTTP/1.1 ', 'G(T / HTTP/1.1', 'GET /\x7f HTTP/1.1', ' GET / HTTP/1.1', 'GET / http/1.1', 'GET /', 'GET\n/ HTTP/1.1']) {
      refused('request', `${line}\r\nHost: a\r\n\r\n`, /not an HTTP\/1\.x request line/);
    }
  });

  it('refuses malformed fields, each with its reason', () => {
    const cases: [string, RegExp][] = [
      ['Host a', /without a colon/],
      [' folded: x', /obs-fold/],
      ['Host : a', /whitespace between header name and colon/],
      ['Ho"st: a', /invalid header name "Ho\\"st"/],
      ['X: a\x00b', /invalid character in the value of X/],
      ['X: a\nb', /invalid character in the value of X/],
      ['X: a\rb', /a CR not followed by LF/],
      ['Content-Length: 1x', /bad Content-Length "1x"/],
      ['Content-Length: ', /bad Content-Length ""/],
      ['Content-Length: 1234567890123456', /bad Content-Length/],
      ['Content-Length: 1\r\nContent-Length: 2', /several different Content-Length values/],
      ['Content-Length: 1\r\nTransfer-Encoding: chunked', /both Content-Length and Transfer-Encoding/],
      ['Transfer-Encoding: chunked, gzip', /does not end in chunked/],
      ['Transfer-Encoding: chunked, chunked', /does not end in chunked/],
    ];
    for (const [field, why] of cases) refused('request', `POST / HTTP/1.1\r\n${field}\r\n\r\n`, why);
    refused('request', 'POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n', /Transfer-Encoding in an HTTP\/1\.0 message/);
  });

  it('refuses heads over the size limit with 431, complete or not', () => {
    assert.throws(() => parseHead(bytes(`GET / HTTP/1.1\r\nX: ${'a'.repeat(100)}\r\n\r\n`), 0, 'request', 64), (e: unknown) => e instanceof HttpFramingError && e.status === 431);
    assert.throws(() => parseHead(bytes(`GET / HTTP/1.1\r\nX: ${'a'.repeat(100)}`), 0, 'request', 64), (e: unknown) => e instanceof HttpFramingError && e.status === 431);
  });
});

describe('parseHead: responses', () => {
  it('reads status, reason and fields', () => {
    const h = resp('HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\nServer: x\r\n\r\nabc')!;
    assert.equal(h.status, 404);
    assert.equal(h.reason, 'Not Found');
    assert.equal(h.contentLength, 3);
    assert.deepEqual(h.fields, ['Content-Length', '3', 'Server', 'x']);
    assert.equal(resp('HTTP/1.1 204\r\n\r\n')!.reason, '');
    assert.equal(resp('HTTP/1.1 200 \r\n\r\n')!.reason, '');
    assert.equal(resp('HTTP/1.0 200 OK\r\n\r\n')!.close, true);
    assert.equal(resp('HTTP/1.1 200 OK\r\n\r\n')!.contentLength, -1);
  });

  it('refuses malformed status lines', () => {
    for (const line of ['HTTP/1.1 20 OK', 'HTTP/1.1 099 X', 'HTTP/1.1 2000 OK', 'HTTP/1.1  200 OK', 'HTTP/3 200 OK', 'HTTP/1.1 2x0 OK', 'HTTP/1.1 200\nOK']) {
      refused('response', `${line}\r\n\r\n`, /not an HTTP\/1\.x status line/);
    }
  });
});

describe('forwarding heads', () => {
  it('forwards a head as received when nothing must change, and appends set-only fields to it', () => {
    const text = 'GET / HTTP/1.1\r\nHost: a\r\n\r\n';
    const raw = bytes(text);
    const h = req(text)!;
    assert.equal(forwardHead(h, raw, undefined), raw);
    assert.equal(forwardHead(h, raw, setOnlyEdits([['x-forwarded-client-cert', 'By=x']])).toString('latin1'), 'GET / HTTP/1.1\r\nHost: a\r\nx-forwarded-client-cert: By=x\r\n\r\n');
  });

  it('replaces a field the proxy sets, drops hop-by-hop fields and those Connection names', () => {
    const text = 'GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-Client-Cert: forged\r\nConnection: close, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: 5\r\n\r\n';
    const h = req(text)!;
    const out = forwardHead(h, bytes(text), { ...setOnlyEdits([['x-forwarded-client-cert', 'By=x']]), close: true }).toString('latin1');
    assert.equal(out, 'GET / HTTP/1.1\r\nHost: a\r\nx-forwarded-client-cert: By=x\r\nconnection: close\r\n\r\n');
    const r = resp('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive, close\r\n\r\n')!;
    assert.equal(buildHead(r), 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n');
  });
});
