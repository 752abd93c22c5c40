// Tests for the inbound HTTP/1.1 request framer: XFCC rewriting, framing of bodies/tunnels, and rejection of malformed input.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { Http1RequestFramer, HttpFramingError, errorResponse } from '../../src/proxy/http1-request-framer';
import { isMeshError } from '../../src/errors';

const XFCC = 'By=spiffe://mesh.local/ns/default/sa/api;Hash=9f2c;URI=spiffe://mesh.local/ns/default/sa/web';
const INJ = `x-forwarded-client-cert: ${XFCC}\r\n`;

const b = (s: string): Buffer => Buffer.from(s, 'latin1');
const sha = (buf: Buffer): string => createHash('sha256').update(buf).digest('hex');

interface Result { out: Buffer; chunks: Buffer[]; err: Error | undefined }

/** Writes each piece, ends the stream and collects what comes out (or the error). */
function run(writes: Array<Buffer | string>, maxHeadBytes?: number): Promise<Result> {
  const framer = new Http1RequestFramer(maxHeadBytes === undefined ? { xfcc: XFCC } : { xfcc: XFCC, maxHeadBytes });
  const chunks: Buffer[] = [];
  return new Promise((resolve) => {
    framer.on('data', (c: Buffer) => chunks.push(c));
    framer.on('end', () => resolve({ out: Buffer.concat(chunks), chunks, err: undefined }));
    framer.on('error', (err) => resolve({ out: Buffer.concat(chunks), chunks, err }));
    for (const w of writes) framer.write(typeof w === 'string' ? b(w) : w);
    framer.end();
  });
}

async function ok(writes: Array<Buffer | string>, maxHeadBytes?: number): Promise<string> {
  const r = await run(writes, maxHeadBytes);
  assert.equal(r.err, undefined, `unexpected error: ${r.err?.message}`);
  return r.out.toString('latin1');
}

function bytes(s: string): string[] {
  return [...s];
}

// A keep-alive stream mixing every framing kind; used for the split tests.
const MIXED_IN =
  'GET /a HTTP/1.1\r\nHost: svc\r\nX-Forwarded-Client-Cert: forged\r\n\r\n' +
  'POST /b HTTP/1.1\r\nContent-Length: 30\r\n\r\nGET /x HTTP/1.1\r\nHost: no\r\n\r\n' +
  'POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4;name=val\r\nwiki\r\n5\r\npedia\r\n0\r\nExpires: never\r\n\r\n' +
  'GET /d HTTP/1.0\r\nx-forwarded-client-cert: forged2\r\nAccept: */*\r\n\r\n';
const MIXED_OUT =
  `GET /a HTTP/1.1\r\n${INJ}Host: svc\r\n\r\n` +
  `POST /b HTTP/1.1\r\n${INJ}Content-Length: 30\r\n\r\nGET /x HTTP/1.1\r\nHost: no\r\n\r\n` +
  `POST /c HTTP/1.1\r\n${INJ}Transfer-Encoding: chunked\r\n\r\n4;name=val\r\nwiki\r\n5\r\npedia\r\n0\r\nExpires: never\r\n\r\n` +
  `GET /d HTTP/1.0\r\n${INJ}Accept: */*\r\n\r\n`;

test('single GET gets XFCC injected as the first header', async () => {
  assert.equal(await ok(['GET /health?x=1 HTTP/1.1\r\nHost: api\r\nAccept: */*\r\n\r\n']),
    `GET /health?x=1 HTTP/1.1\r\n${INJ}Host: api\r\nAccept: */*\r\n\r\n`);
  assert.equal(await ok(['GET / HTTP/1.1\r\n\r\n']), `GET / HTTP/1.1\r\n${INJ}\r\n`);
});

test('client XFCC is removed in any case and position; prefix-named headers stay', async () => {
  const input = 'GET / HTTP/1.1\r\nX-Forwarded-Client-Cert: By=evil\r\nHost: a\r\nx-forwarded-client-cert-foo: keep\r\n' +
    'X-FORWARDED-CLIENT-CERT:By=evil2\r\nx-xforwarded-client-cert: keep2\r\nx-forwarded-client-cert: \t By=evil3\r\n\r\n';
  const out = await ok([input]);
  assert.equal(out, `GET / HTTP/1.1\r\n${INJ}Host: a\r\nx-forwarded-client-cert-foo: keep\r\nx-xforwarded-client-cert: keep2\r\n\r\n`);
  assert.ok(!out.includes('evil'));
  assert.equal(await ok(['GET / HTTP/1.1\r\nx-forwarded-client-cert: only\r\n\r\n']), `GET / HTTP/1.1\r\n${INJ}\r\n`);
});

test('pipelined keep-alive requests in one write each get the header', async () => {
  assert.equal(await ok([MIXED_IN]), MIXED_OUT);
  assert.equal(MIXED_OUT.split('x-forwarded-client-cert:').length - 1, 4);
});

test('a stream written one byte at a time gives the same output', async () => {
  assert.equal(await ok(bytes(MIXED_IN)), MIXED_OUT);
});

test('every two-way split of the stream gives the same output', async () => {
  for (let i = 0; i <= MIXED_IN.length; i++) {
    assert.equal(await ok([MIXED_IN.slice(0, i), MIXED_IN.slice(i)]), MIXED_OUT, `split at ${i}`);
  }
});

test('leading empty lines before a request line are skipped', async () => {
  assert.equal(await ok(['\r\n\r\nGET / HTTP/1.1\r\n\r\n']), `GET / HTTP/1.1\r\n${INJ}\r\n`);
  // A stray CRLF after a body (old clients do this) must not break the next request nor error at EOF.
  assert.equal(await ok(['POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi\r\n', 'GET / HTTP/1.1\r\n\r\n', '\r\n']),
    `POST / HTTP/1.1\r\n${INJ}Content-Length: 2\r\n\r\nhiGET / HTTP/1.1\r\n${INJ}\r\n`);
});

test('Content-Length body that looks like a request head is not rewritten', async () => {
  const body = 'GET /inner HTTP/1.1\r\nX-Forwarded-Client-Cert: forged\r\n\r\n';
  const input = `POST /p HTTP/1.1\r\nContent-Length: ${body.length}\r\nContent-Length: ${body.length}\r\n\r\n${body}GET /next HTTP/1.1\r\n\r\n`;
  const expected = `POST /p HTTP/1.1\r\n${INJ}Content-Length: ${body.length}\r\nContent-Length: ${body.length}\r\n\r\n${body}GET /next HTTP/1.1\r\n${INJ}\r\n`;
  assert.equal(await ok([input]), expected);
  assert.equal(await ok(bytes(input)), expected);
  // Content-Length: 0 means no body, so the next bytes are a new request.
  assert.equal(await ok(['POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\nGET / HTTP/1.1\r\n\r\n']),
    `POST / HTTP/1.1\r\n${INJ}Content-Length: 0\r\n\r\nGET / HTTP/1.1\r\n${INJ}\r\n`);
});

test('chunked body with extensions and trailers, then another request, passes through', async () => {
  const data = 'GET /inner HTTP/1.1\r\nx-forwarded-client-cert: x\r\n\r\n';
  const body = `${data.length.toString(16).toUpperCase()} ; foo=bar;baz="q"\r\n${data}\r\n3\r\nabc\r\n000;last\r\n` +
    'Server-Timing: db;dur=53\r\nX-Forwarded-Client-Cert: trailer-forged\r\nDigest: x\r\n\r\n';
  const input = `POST /up HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n${body}GET /after HTTP/1.1\r\n\r\n`;
  const expectedBody = body.replace('X-Forwarded-Client-Cert: trailer-forged\r\n', '');
  const expected = `POST /up HTTP/1.1\r\n${INJ}Transfer-Encoding: gzip, chunked\r\n\r\n${expectedBody}GET /after HTTP/1.1\r\n${INJ}\r\n`;
  assert.equal(await ok([input]), expected);
  assert.equal(await ok(bytes(input)), expected);
  for (let i = 0; i <= input.length; i += 7) assert.equal(await ok([input.slice(0, i), input.slice(i)]), expected, `split at ${i}`);
});

test('Upgrade + Connection: upgrade switches to a tunnel; later bytes are untouched', async () => {
  const after = 'GET /x HTTP/1.1\r\nX-Forwarded-Client-Cert: forged\r\n\r\n\x00\xff garbage \n\r';
  const head = 'GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\r\n';
  const expected = `GET /ws HTTP/1.1\r\n${INJ}Upgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\r\n${after}`;
  assert.equal(await ok([head + after]), expected);
  assert.equal(await ok(bytes(head + after)), expected);
  // The upgrade request's own body is framed first, then the tunnel starts.
  assert.equal(await ok([`POST /h2c HTTP/1.1\r\nUpgrade: h2c\r\nConnection: Upgrade\r\nContent-Length: 3\r\n\r\nabc${after}`]),
    `POST /h2c HTTP/1.1\r\n${INJ}Upgrade: h2c\r\nConnection: Upgrade\r\nContent-Length: 3\r\n\r\nabc${after}`);
});

test('CONNECT switches to a tunnel; Upgrade without Connection: upgrade does not', async () => {
  const after = 'GET /x HTTP/1.1\r\nx-forwarded-client-cert: forged\r\n\r\n';
  assert.equal(await ok([`CONNECT db:5432 HTTP/1.1\r\nHost: db:5432\r\n\r\n${after}`]),
    `CONNECT db:5432 HTTP/1.1\r\n${INJ}Host: db:5432\r\n\r\n${after}`);
  assert.equal(await ok([`GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: keep-alive\r\n\r\n${after}`]),
    `GET / HTTP/1.1\r\n${INJ}Upgrade: websocket\r\nConnection: keep-alive\r\n\r\nGET /x HTTP/1.1\r\n${INJ}\r\n`);
});

const CHUNKED_HEAD = 'POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n';

const MALFORMED: Array<{ name: string; input: string; status: number; reason: RegExp }> = [
  { name: 'CL and TE', input: 'POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n', status: 400, reason: /both Content-Length and Transfer-Encoding/ },
  { name: 'TE final not chunked', input: 'POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n', status: 400, reason: /final coding is not chunked/ },
  { name: 'TE chunked then gzip', input: 'POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n', status: 400, reason: /chunked is not the final/ },
  { name: 'TE chunked twice', input: 'POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n', status: 400, reason: /chunked is not the final/ },
  { name: 'TE empty', input: 'POST / HTTP/1.1\r\nTransfer-Encoding: \r\n\r\n', status: 400, reason: /final coding is not chunked/ },
  { name: 'TE in HTTP/1.0', input: 'POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n', status: 400, reason: /HTTP\/1\.0/ },
  { name: 'differing CL headers', input: 'POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n', status: 400, reason: /differing Content-Length/ },
  { name: 'differing CL list', input: 'POST / HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\n', status: 400, reason: /differing Content-Length/ },
  { name: 'CL non-digit', input: 'POST / HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n', status: 400, reason: /Content-Length is not a decimal/ },
  { name: 'CL signed', input: 'POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n', status: 400, reason: /Content-Length is not a decimal/ },
  { name: 'CL empty', input: 'POST / HTTP/1.1\r\nContent-Length:\r\n\r\n', status: 400, reason: /Content-Length is not a decimal/ },
  { name: 'CL huge', input: 'POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n', status: 400, reason: /Content-Length too large/ },
  { name: 'chunk size non-hex', input: 'POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n', status: 400, reason: /bad chunk size \(not hex/ },
  { name: 'chunk size empty', input: 'POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\r\n', status: 400, reason: /bad chunk size/ },
  { name: 'chunk size trailing junk', input: 'POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5x\r\nhello\r\n', status: 400, reason: /bad chunk size/ },
  { name: 'chunk size 17 digits', input: 'POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n00000000000000005\r\nhello\r\n', status: 400, reason: /more than 16 hex digits/ },
  { name: 'chunk size too large', input: 'POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n', status: 400, reason: /too large/ },
  { name: 'chunk line bare LF', input: 'POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n', status: 400, reason: /bare LF/ },
  { name: 'chunk line bare CR', input: 'POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;a\rb\r\nhello\r\n', status: 400, reason: /bare CR/ },
  { name: 'chunk line too long', input: `POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;${'e'.repeat(5000)}`, status: 400, reason: /line too long/ },
  { name: 'no CRLF after chunk data', input: 'POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloX\r\n0\r\n\r\n', status: 400, reason: /missing CRLF after chunk data/ },
  { name: 'only CR after chunk data', input: 'POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r0\r\n\r\n', status: 400, reason: /missing CRLF after chunk data/ },
  { name: 'TLS bytes instead of HTTP', input: '\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n', status: 400, reason: /malformed request line/ },
  { name: 'HTTP/2.0 version', input: 'GET / HTTP/2.0\r\n\r\n', status: 400, reason: /malformed request line/ },
  { name: 'h2 PRI preface', input: 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', status: 400, reason: /malformed request line/ },
  { name: 'missing version', input: 'GET /\r\n\r\n', status: 400, reason: /malformed request line/ },
  { name: 'double space', input: 'GET  / HTTP/1.1\r\n\r\n', status: 400, reason: /malformed request line/ },
  { name: 'lower-case version', input: 'GET / http/1.1\r\n\r\n', status: 400, reason: /malformed request line/ },
  { name: 'header without colon', input: 'GET / HTTP/1.1\r\nHost\r\n\r\n', status: 400, reason: /without a colon/ },
  { name: 'space before colon', input: 'GET / HTTP/1.1\r\nHost : a\r\n\r\n', status: 400, reason: /whitespace between header name and colon/ },
  { name: 'XFCC with space before colon', input: 'GET / HTTP/1.1\r\nx-forwarded-client-cert : forged\r\n\r\n', status: 400, reason: /whitespace between header name and colon/ },
  { name: 'empty header name', input: 'GET / HTTP/1.1\r\n: a\r\n\r\n', status: 400, reason: /invalid header name/ },
  { name: 'obs-fold', input: 'GET / HTTP/1.1\r\nHost: a\r\n b\r\n\r\n', status: 400, reason: /obs-fold/ },
  { name: 'obs-fold tab', input: 'GET / HTTP/1.1\r\nX: a\r\n\tx-forwarded-client-cert: forged\r\n\r\n', status: 400, reason: /obs-fold/ },
  { name: 'NUL in header value', input: 'GET / HTTP/1.1\r\nHost: a\x00b\r\n\r\n', status: 400, reason: /invalid character in header value/ },
  { name: 'bare CR in head', input: 'GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n', status: 400, reason: /bare CR/ },
  { name: 'bare LF in head', input: 'GET / HTTP/1.1\nHost: a\n\n', status: 400, reason: /bare LF/ },
  { name: 'bad trailer', input: 'POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nno colon\r\n\r\n', status: 400, reason: /without a colon/ },
  { name: 'head over maxHeadBytes', input: `GET / HTTP/1.1\r\nX: ${'a'.repeat(70000)}\r\n\r\n`, status: 431, reason: /larger than 65536/ },
  { name: 'garbage without LF over maxHeadBytes', input: '\x00'.repeat(65537), status: 431, reason: /request head larger/ },
];

for (const c of MALFORMED) {
  test(`malformed: ${c.name} -> ${c.status}`, async () => {
    for (const writes of [[c.input], c.input.length < 200 ? bytes(c.input) : [c.input.slice(0, 100), c.input.slice(100)]]) {
      const r = await run(writes);
      assert.ok(r.err instanceof HttpFramingError, `expected HttpFramingError, got ${String(r.err)}`);
      assert.equal(r.err.status, c.status);
      assert.equal(r.err.code, 'MESH_ERR_HTTP_MALFORMED');
      assert.match(r.err.reason, c.reason);
      const out = r.out.toString('latin1');
      if (c.input.startsWith(CHUNKED_HEAD)) {
        // A body error comes after its head was sent; only validated bytes may follow it.
        const rewritten = CHUNKED_HEAD.replace('\r\n', `\r\n${INJ}`) + c.input.slice(CHUNKED_HEAD.length);
        assert.ok(out.length >= CHUNKED_HEAD.length + INJ.length && rewritten.startsWith(out), JSON.stringify(out));
      } else {
        assert.equal(out, '', 'nothing of a rejected head is forwarded');
      }
    }
  });
}

test('maxHeadBytes is inclusive: a head of exactly the limit passes, one byte more is 431', async () => {
  const head = (n: number): string => `GET / HTTP/1.1\r\nx: ${'a'.repeat(n - 23)}\r\n\r\n`;
  assert.equal(head(100).length, 100);
  assert.equal(await ok([head(100) + 'GET / HTTP/1.1\r\n\r\n'], 100), `GET / HTTP/1.1\r\n${INJ}x: ${'a'.repeat(77)}\r\n\r\nGET / HTTP/1.1\r\n${INJ}\r\n`);
  assert.equal(await ok(bytes(head(100)), 100), `GET / HTTP/1.1\r\n${INJ}x: ${'a'.repeat(77)}\r\n\r\n`);
  for (const writes of [[head(101)], bytes(head(101)), [head(101).slice(0, 50), head(101).slice(50)]]) {
    const r = await run(writes, 100);
    assert.ok(r.err instanceof HttpFramingError);
    assert.equal(r.err.status, 431);
    assert.equal(r.out.length, 0);
  }
});

test('valid requests before a malformed one in the same write are still forwarded', async () => {
  const r = await run(['GET /ok HTTP/1.1\r\nHost: a\r\n\r\nGET /bad HTTP/1.1\r\nHost : a\r\n\r\n']);
  assert.ok(r.err instanceof HttpFramingError);
  assert.equal(r.out.toString('latin1'), `GET /ok HTTP/1.1\r\n${INJ}Host: a\r\n\r\n`);
});

test('end of stream inside a head or a chunk-size line is an error; after a whole request it is not', async () => {
  for (const writes of [['GET / HTTP/1.1\r\nHost: a\r\n'], ['POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;ext']]) {
    const r = await run(writes);
    assert.ok(r.err instanceof HttpFramingError);
    assert.equal(r.err.status, 400);
    assert.match(r.err.reason, /connection ended inside/);
  }
  assert.equal(await ok(['GET / HTTP/1.1\r\n\r\n']), `GET / HTTP/1.1\r\n${INJ}\r\n`);
});

test('errorResponse formats a minimal close response', () => {
  const err = new HttpFramingError(400, 'both Content-Length and Transfer-Encoding present');
  assert.equal(errorResponse(err).toString('latin1'),
    'HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\nconnection: close\r\ncontent-length: 50\r\n\r\n' +
    'both Content-Length and Transfer-Encoding present\n');
  assert.equal(errorResponse(new HttpFramingError(431, 'too big')).toString('latin1'),
    'HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain\r\nconnection: close\r\ncontent-length: 8\r\n\r\ntoo big\n');
  assert.match(errorResponse(new HttpFramingError(501, 'x')).toString('latin1'), /^HTTP\/1\.1 501 Not Implemented\r\n/);
});

test('HttpFramingError is a MeshError with code, status and reason', () => {
  const err = new HttpFramingError(431, 'head too big');
  assert.ok(err instanceof Error);
  assert.ok(isMeshError(err, 'MESH_ERR_HTTP_MALFORMED'));
  assert.equal(err.status, 431);
  assert.equal(err.reason, 'head too big');
  assert.equal(err.message, 'head too big');
  assert.equal(err.name, 'HttpFramingError');
});

test('constructor rejects an xfcc value that could inject header lines', () => {
  assert.throws(() => new Http1RequestFramer({ xfcc: 'By=a\r\nx-admin: 1' }), TypeError);
  assert.throws(() => new Http1RequestFramer({ xfcc: 'By=a\n' }), TypeError);
  assert.throws(() => new Http1RequestFramer({ xfcc: 'x', maxHeadBytes: 0 }), RangeError);
});

test('an 8 MiB Content-Length body in 64 KiB writes passes intact', async () => {
  const size = 8 * 1024 * 1024;
  const body = createHash('sha512').update('seed').digest();
  const big = Buffer.alloc(size);
  for (let i = 0; i < size; i += body.length) body.copy(big, i);
  big.writeUInt32BE(0xdeadbeef, size - 4);
  const head = `POST /upload HTTP/1.1\r\nContent-Length: ${size}\r\n\r\n`;
  const writes: Buffer[] = [b(head)];
  for (let i = 0; i < size; i += 65536) writes.push(big.subarray(i, i + 65536));
  writes.push(b('GET /after HTTP/1.1\r\n\r\n'));
  const r = await run(writes);
  assert.equal(r.err, undefined);
  const outHead = `POST /upload HTTP/1.1\r\n${INJ}Content-Length: ${size}\r\n\r\n`;
  assert.equal(r.out.subarray(0, outHead.length).toString('latin1'), outHead);
  assert.equal(sha(r.out.subarray(outHead.length, outHead.length + size)), sha(big));
  assert.equal(r.out.subarray(outHead.length + size).toString('latin1'), `GET /after HTTP/1.1\r\n${INJ}\r\n`);
});

test('an 8 MiB chunked body in 64 KiB chunks passes intact', async () => {
  const size = 8 * 1024 * 1024;
  const big = Buffer.alloc(size);
  for (let i = 0; i < size; i++) big[i] = (i * 31 + (i >> 13)) & 0xff;
  const writes: Buffer[] = [b('POST /u HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n')];
  for (let i = 0; i < size; i += 65536) writes.push(Buffer.concat([b('10000\r\n'), big.subarray(i, i + 65536), b('\r\n')]));
  writes.push(b('0\r\n\r\n'));
  const r = await run(writes);
  assert.equal(r.err, undefined);
  const expected = Buffer.concat([b(`POST /u HTTP/1.1\r\n${INJ}Transfer-Encoding: chunked\r\n\r\n`), ...writes.slice(1)]);
  assert.equal(r.out.length, expected.length);
  assert.equal(sha(r.out), sha(expected));
});

test('body bytes are forwarded as slices of the input, not copies', async () => {
  const head = 'POST / HTTP/1.1\r\nContent-Length: 8192\r\n\r\n';
  // Buffer.alloc is never pool-backed, so sharing its ArrayBuffer proves a zero-copy slice.
  const first = Buffer.alloc(head.length + 4096, 7);
  first.write(head, 0, 'latin1');
  const second = Buffer.alloc(4096, 9);
  const r = await run([first, second]);
  assert.equal(r.err, undefined);
  const bodyChunks = r.chunks.filter((c) => c.buffer === first.buffer || c.buffer === second.buffer);
  assert.equal(bodyChunks.length, 2);
  assert.equal(bodyChunks[0]!.byteOffset, first.byteOffset + head.length);
  assert.equal(bodyChunks[1], second);
});
