// The HTTP/2 stream forwarder, header rules, gRPC status mapping and session pool, on real h2c sockets in one process.

import assert from 'node:assert/strict';
import {
  connect as h2Connect,
  constants,
  createServer,
  type ClientHttp2Session,
  type Http2Server,
  type IncomingHttpHeaders,
  type OutgoingHttpHeaders,
  type ServerHttp2Stream,
} from 'node:http2';
import { createServer as createNetServer } from 'node:net';
import { after, before, describe, it } from 'node:test';
import type { Outcome } from '../../src/proxy/outlier-detector';
import { encodeGrpcMessage, grpcStatusForReset, httpStatusForGrpc, isGrpcContentType } from '../../src/proxy/http2/grpc-status';
import { forwardHeaders, REQUEST_PSEUDO, RESPONSE_PSEUDO } from '../../src/proxy/http2/h2-headers';
import { H2SessionPool } from '../../src/proxy/http2/h2-session-pool';
import { forwardStream, holdStream, type HeldStream, type SessionSource } from '../../src/proxy/http2/h2-stream-forwarder';
import type { H2Answer } from '../../src/proxy/http2/h2-local-answer';
import { outlierOutcome, type ExchangeOutcome, type RetryPlan } from '../../src/proxy/route-decision';
import type { Endpoint } from '../../src/registry';

const { NGHTTP2_CANCEL, NGHTTP2_INTERNAL_ERROR, NGHTTP2_REFUSED_STREAM, NGHTTP2_ENHANCE_YOUR_CALM, NGHTTP2_NO_ERROR } = constants;

const listen = async (server: Http2Server | ReturnType<typeof createNetServer>): Promise<number> => {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return (server.address() as { port: number }).port;
};

const h2c = (port: number): Promise<ClientHttp2Session> =>
  new Promise((resolve, reject) => {
    const s = h2Connect(`http://127.0.0.1:${port}`);
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });

interface Reply {
  headers: IncomingHttpHeaders;
  body: string;
  trailers: IncomingHttpHeaders;
  rstCode: number;
}

/** One exchange; `body` is written in pieces, and the request ends after them unless `keepOpen`. */
function send(session: ClientHttp2Session, headers: OutgoingHttpHeaders, body: string[] = [], opts: { trailers?: OutgoingHttpHeaders; keepOpen?: boolean } = {}): Promise<Reply> {
  return new Promise((resolve) => {
    const req = session.request(headers, opts.trailers ? { waitForTrailers: true } : {});
    if (opts.trailers) req.once('wantTrailers', () => req.sendTrailers(opts.trailers!));
    const out: Reply = { headers: {}, body: '', trailers: {}, rstCode: 0 };
    req.on('response', (h) => (out.headers = h));
    req.on('trailers', (t) => (out.trailers = t));
    req.setEncoding('utf8');
    req.on('data', (c: string) => (out.body += c));
    req.on('error', () => {});
    req.on('close', () => resolve({ ...out, rstCode: req.rstCode ?? 0 }));
    for (const b of body) req.write(b);
    if (!opts.keepOpen) req.end();
  });
}

describe('h2 headers and gRPC statuses', () => {
  it('forwards the pseudo-headers of the message kind, drops connection-specific fields, keeps te only as trailers, applies edits', () => {
    const got = forwardHeaders(
      { ':method': 'POST', ':path': '/a', ':scheme': 'http', ':authority': 'api', ':status': '200', connection: 'x', 'keep-alive': '1', 'transfer-encoding': 'chunked', upgrade: 'h2c', 'proxy-connection': 'x', te: 'trailers', 'x-a': '1', 'set-cookie': ['a', 'b'], 'x-forwarded-client-cert': 'forged' },
      REQUEST_PSEUDO,
      [['x-forwarded-client-cert', 'real']],
    );
    assert.deepEqual({ ...got }, { ':method': 'POST', ':path': '/a', ':scheme': 'http', ':authority': 'api', te: 'trailers', 'x-a': '1', 'set-cookie': ['a', 'b'], 'x-forwarded-client-cert': 'real' });
    assert.deepEqual({ ...forwardHeaders({ ':status': '204', ':path': '/x', te: 'gzip' }, RESPONSE_PSEUDO) }, { ':status': '204' });
  });

  it('maps resets and statuses as gRPC and Envoy do, and percent-encodes grpc-message', () => {
    assert.equal(grpcStatusForReset(NGHTTP2_REFUSED_STREAM), 14);
    assert.equal(grpcStatusForReset(NGHTTP2_CANCEL), 1);
    assert.equal(grpcStatusForReset(NGHTTP2_ENHANCE_YOUR_CALM), 8);
    assert.equal(grpcStatusForReset(NGHTTP2_INTERNAL_ERROR), 13);
    assert.equal(grpcStatusForReset(NGHTTP2_NO_ERROR), 13);
    assert.equal(httpStatusForGrpc('0'), 200);
    assert.equal(httpStatusForGrpc('14'), 503);
    assert.equal(httpStatusForGrpc('4'), 504);
    assert.equal(httpStatusForGrpc('99'), 500);
    assert.equal(httpStatusForGrpc(undefined), undefined);
    assert.equal(httpStatusForGrpc('x'), undefined);
    assert.equal(encodeGrpcMessage('50% done ✓\n'), '50%25 done %E2%9C%93%0A');
    assert.ok(isGrpcContentType('application/grpc+proto'));
    assert.ok(!isGrpcContentType('application/json'));
  });
});

/** Always the one session given: the forwarder's pool when the test holds the session itself. */
const fixed = (session: ClientHttp2Session): SessionSource => ({ ready: () => session, session: () => Promise.resolve(session) });
const APP: Endpoint = { address: '127.0.0.1', port: 1, weight: 1, labels: {} };

describe('forwardStream', () => {
  let app: Http2Server;
  let proxy: Http2Server;
  let upstream: ClientHttp2Session;
  let client: ClientHttp2Session;
  /** What the app saw per path: headers, trailers, and how its stream closed. */
  const seen = new Map<string, { headers: IncomingHttpHeaders; trailers?: IncomingHttpHeaders; body: string; rstCode?: number; closed: Promise<number> }>();
  const outcomes = new Map<string, Outcome>();
  /** Paths the proxy forwards only once the request's trailers have come (as when the upstream session is still being dialed). */
  const holdUntilTrailers = new Set<string>();

  before(async () => {
    app = createServer();
    app.on('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => {
      const path = String(headers[':path']);
      let closedResolve!: (n: number) => void;
      const entry = { headers, body: '', trailers: undefined as IncomingHttpHeaders | undefined, closed: new Promise<number>((r) => (closedResolve = r)) };
      seen.set(path, entry);
      stream.on('error', () => {});
      stream.on('close', () => closedResolve(stream.rstCode ?? 0));
      stream.on('trailers', (t: IncomingHttpHeaders) => (entry.trailers = t));
      stream.setEncoding('utf8');
      if (path === '/reset') return void stream.close(NGHTTP2_INTERNAL_ERROR);
      if (path === '/refuse') return void stream.close(NGHTTP2_REFUSED_STREAM);
      if (path === '/hang') return void stream.respond({ ':status': 200 });
      if (path === '/early') {
        // Answers in full before the request is over (the client is still sending).
        stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
        stream.once('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '3', 'grpc-message': 'bad%20arg' }));
        stream.end('early');
        return;
      }
      stream.on('data', (c: string) => (entry.body += c));
      stream.on('end', () => {
        stream.respond({ ':status': 200, 'x-app': 'yes' }, { waitForTrailers: true });
        stream.once('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0', 'x-len': String(entry.body.length) }));
        stream.end(`echo:${entry.body}`);
      });
    });
    upstream = await h2c(await listen(app));
    proxy = createServer();
    proxy.on('stream', (down: ServerHttp2Stream, headers: IncomingHttpHeaders, flags: number) => {
      const path = String(headers[':path']);
      const held: HeldStream = holdStream(down);
      const go = (): void =>
        forwardStream(held, flags, {
          grpc: String(headers['content-type']).startsWith('application/grpc'),
          headers: forwardHeaders(headers, REQUEST_PSEUDO, [['x-forwarded-client-cert', 'By=test']]),
          target: { endpoint: APP, pool: fixed(upstream), done: (o) => outcomes.set(path, outlierOutcome(o)) },
        });
      if (holdUntilTrailers.has(path)) down.once('trailers', () => setImmediate(go));
      else go();
    });
    client = await h2c(await listen(proxy));
  });

  after(() => {
    client.destroy();
    upstream.destroy();
    proxy.close();
    app.close();
  });

  it('carries body, headers and trailers both ways and applies edits', async () => {
    const r = await send(client, { ':method': 'POST', ':path': '/echo', 'x-forwarded-client-cert': 'forged', te: 'trailers' }, ['a', 'b', 'c'], { trailers: { 'x-req-trailer': 'yes' } });
    assert.equal(r.headers[':status'], 200);
    assert.equal(r.headers['x-app'], 'yes');
    assert.equal(r.body, 'echo:abc');
    assert.equal(r.trailers['x-len'], '3');
    const s = seen.get('/echo')!;
    assert.equal(s.headers['x-forwarded-client-cert'], 'By=test');
    assert.equal(s.trailers?.['x-req-trailer'], 'yes');
    assert.equal(outcomes.get('/echo'), 200);
  });

  it('keeps request trailers that arrive while the stream is held (upstream session still dialing)', async () => {
    holdUntilTrailers.add('/held');
    const r = await send(client, { ':method': 'POST', ':path': '/held' }, ['x'], { trailers: { 'x-early': '1' } });
    assert.equal(r.body, 'echo:x');
    assert.equal(seen.get('/held')!.trailers?.['x-early'], '1');
  });

  it('answers an upstream reset before headers: grpc-status by the gRPC mapping, 502 for plain HTTP/2', async () => {
    const g = await send(client, { ':method': 'POST', ':path': '/reset', 'content-type': 'application/grpc' }, ['x']);
    assert.equal(g.headers[':status'], 200);
    assert.equal(g.headers['grpc-status'], '13');
    assert.equal(g.headers['x-mesh-response-flags'], 'UR');
    assert.equal(outcomes.get('/reset'), 'reset');
    const refused = await send(client, { ':method': 'POST', ':path': '/refuse', 'content-type': 'application/grpc' }, ['x']);
    assert.equal(refused.headers['grpc-status'], '14');
    const plain = await send(client, { ':method': 'GET', ':path': '/reset' });
    assert.equal(plain.headers[':status'], 502);
    assert.match(plain.body, /INTERNAL_ERROR/);
  });

  it('passes a client CANCEL up as a reset, and reports the stream cancelled', async () => {
    const r = await new Promise<number>((resolve) => {
      const req = client.request({ ':method': 'POST', ':path': '/hang' });
      req.on('error', () => {});
      req.on('response', () => req.close(NGHTTP2_CANCEL));
      req.on('close', () => resolve(req.rstCode ?? 0));
    });
    assert.equal(r, NGHTTP2_CANCEL);
    assert.equal(await seen.get('/hang')!.closed, NGHTTP2_CANCEL);
    assert.equal(outcomes.get('/hang'), 'cancelled');
  });

  it('delivers a complete response (trailers too) that comes while the client is still sending, then stops the client', async () => {
    for (let i = 0; i < 50; i++) {
      const r = await send(client, { ':method': 'POST', ':path': '/early', 'content-type': 'application/grpc' }, ['still sending'], { keepOpen: true });
      assert.equal(r.body, 'early');
      assert.equal(r.trailers['grpc-status'], '3', `round ${i}: trailers arrive before the stop`);
      assert.equal(r.trailers['grpc-message'], 'bad%20arg');
      assert.equal(r.rstCode, NGHTTP2_NO_ERROR);
    }
    assert.equal(outcomes.get('/early'), 400, 'INVALID_ARGUMENT counts as 400 for outlier detection');
  });

  it('answers UNAVAILABLE when the upstream connection dies before response headers', async () => {
    const dying = createNetServer((s) => s.destroy());
    const port = await listen(dying);
    const doomed = h2Connect(`http://127.0.0.1:${port}`);
    doomed.on('error', () => {});
    const p2 = createServer();
    p2.on('stream', (down: ServerHttp2Stream, headers: IncomingHttpHeaders, flags: number) => forwardStream(holdStream(down), flags, { grpc: true, headers: forwardHeaders(headers, REQUEST_PSEUDO), target: { endpoint: APP, pool: fixed(doomed) } }));
    const c2 = await h2c(await listen(p2));
    try {
      const r = await send(c2, { ':method': 'POST', ':path': '/x', 'content-type': 'application/grpc' }, ['x']);
      assert.equal(r.headers['grpc-status'], '14');
      assert.equal(r.headers['x-mesh-response-flags'], 'UC');
    } finally {
      c2.destroy();
      p2.close();
      dying.close();
    }
  });
});

describe('forwardStream with a timeout and retries', () => {
  let app: Http2Server;
  let proxy: Http2Server;
  let upstream: ClientHttp2Session;
  let client: ClientHttp2Session;
  /** Per path: the streams the app saw (body, request trailers, how each closed). */
  const streams = new Map<string, { body: string; trailers?: IncomingHttpHeaders; closed: Promise<number> }[]>();
  const outcomes: ExchangeOutcome[] = [];

  before(async () => {
    app = createServer();
    app.on('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => {
      const path = String(headers[':path']);
      const list = streams.get(path) ?? [];
      streams.set(path, list);
      const entry = { body: '', trailers: undefined as IncomingHttpHeaders | undefined, closed: new Promise<number>((r) => stream.once('close', () => r(stream.rstCode ?? 0))) };
      list.push(entry);
      stream.on('error', () => {});
      stream.setEncoding('utf8');
      stream.on('data', (c: string) => (entry.body += c));
      stream.on('trailers', (t: IncomingHttpHeaders) => (entry.trailers = t));
      if (path === '/silent') return; // never answers
      if (path === '/late') {
        stream.respond({ ':status': 200 });
        stream.write('partial'); // and never finishes
        return;
      }
      // /again: UNAVAILABLE (trailers-only) the first time, after reading the whole request; then the echo.
      stream.on('end', () => {
        if (list.length === 1) return void stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '14' }, { endStream: true });
        stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
        stream.once('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0', 'x-saw-trailer': String(entry.trailers?.['x-req'] ?? '') }));
        stream.end(`echo:${entry.body}`);
      });
    });
    upstream = await h2c(await listen(app));
    const target = { endpoint: APP, pool: fixed(upstream), done: (o: ExchangeOutcome) => outcomes.push(o) };
    const retry = (attempts: number, perTryTimeoutMs: number): RetryPlan<H2Answer, SessionSource> => ({
      attempts,
      perTryTimeoutMs,
      retriable: (o) => o.grpcStatus === 14 || o.timeout,
      admit: () => true,
      cancel: () => {},
      next: () => target,
    });
    proxy = createServer();
    proxy.on('stream', (down: ServerHttp2Stream, headers: IncomingHttpHeaders, flags: number) => {
      const path = String(headers[':path']);
      forwardStream(holdStream(down), flags, {
        grpc: true,
        headers: forwardHeaders(headers, REQUEST_PSEUDO),
        target,
        ...(path === '/late' ? { timeoutMs: 300 } : { retry: retry(path === '/silent' ? 1 : 2, path === '/silent' ? 200 : 0) }),
      });
    });
    client = await h2c(await listen(proxy));
  });

  after(() => {
    client.destroy();
    upstream.destroy();
    proxy.close();
    app.close();
  });

  it('sends the whole request body and its trailers again on a retry, and passes on the answer that came then', async () => {
    outcomes.length = 0;
    const r = await send(client, { ':method': 'POST', ':path': '/again', 'content-type': 'application/grpc' }, ['one,', 'two'], { trailers: { 'x-req': 'tr' } });
    assert.equal(r.headers['grpc-status'], undefined, 'not the trailers-only UNAVAILABLE');
    assert.equal(r.body, 'echo:one,two');
    assert.equal(r.trailers['grpc-status'], '0');
    assert.equal(r.trailers['x-saw-trailer'], 'tr', 'the retried stream carried the request trailers');
    const seen = streams.get('/again')!;
    assert.deepEqual(seen.map((s) => s.body), ['one,two', 'one,two']);
    assert.deepEqual(outcomes.map((o) => o.grpcStatus), [14, 0], 'each attempt reported once');
  });

  it('cancels an attempt past its per-try timeout, retries, then answers DEADLINE_EXCEEDED with flag UT', async () => {
    const r = await send(client, { ':method': 'POST', ':path': '/silent', 'content-type': 'application/grpc' }, ['x']);
    assert.equal(r.headers['grpc-status'], '4');
    assert.equal(r.headers['x-mesh-response-flags'], 'UT');
    const seen = streams.get('/silent')!;
    assert.equal(seen.length, 2, 'the first try and one retry');
    assert.deepEqual(await Promise.all(seen.map((s) => s.closed)), [NGHTTP2_CANCEL, NGHTTP2_CANCEL]);
  });

  it('resets both streams when the route timeout runs out after the response began', async () => {
    const r = await send(client, { ':method': 'POST', ':path': '/late', 'content-type': 'application/grpc' }, ['x']);
    assert.equal(r.headers[':status'], 200);
    assert.equal(r.body, 'partial');
    assert.equal(r.rstCode, NGHTTP2_CANCEL);
    assert.equal(await streams.get('/late')![0]!.closed, NGHTTP2_CANCEL);
  });
});

describe('H2SessionPool', () => {
  let app: Http2Server;
  let port = 0;
  const ep = (): Endpoint => ({ address: '127.0.0.1', port, weight: 1, labels: {} });

  before(async () => {
    app = createServer();
    app.on('stream', (s) => {
      s.respond({ ':status': 200 });
      s.end();
    });
    port = await listen(app);
  });
  after(() => app.close());

  it('shares one dial among concurrent callers, and dials again once the session is closed', async () => {
    let dials = 0;
    const pool = new H2SessionPool(async (e) => {
      dials++;
      return h2c(e.port);
    });
    const sessions = await Promise.all(Array.from({ length: 10 }, () => pool.session(ep())));
    assert.equal(dials, 1);
    assert.ok(sessions.every((s) => s === sessions[0]));
    assert.equal(pool.ready(ep()), sessions[0]);
    const closed = new Promise((r) => sessions[0]!.once('close', r));
    sessions[0]!.close();
    await closed;
    assert.equal(pool.ready(ep()), undefined);
    const again = await pool.session(ep());
    assert.notEqual(again, sessions[0]);
    assert.equal(dials, 2);
    assert.equal(pool.opened, 2);
    pool.close();
  });

  it('takes no new streams on a session of an older generation (a rotated certificate)', async () => {
    let generation = 1;
    const pool = new H2SessionPool((e) => h2c(e.port), { generation: () => generation });
    const first = await pool.session(ep());
    generation = 2;
    assert.equal(pool.ready(ep()), undefined);
    const second = await pool.session(ep());
    assert.notEqual(second, first);
    assert.ok(first.closed, 'the old session was closed gracefully');
    pool.close();
  });

  it('rejects every waiter when the dial fails, and tries again on the next call', async () => {
    let fail = true;
    const pool = new H2SessionPool(async (e) => {
      if (fail) throw new Error('refused');
      return h2c(e.port);
    });
    const results = await Promise.allSettled([pool.session(ep()), pool.session(ep())]);
    assert.deepEqual(results.map((r) => r.status), ['rejected', 'rejected']);
    fail = false;
    assert.ok(await pool.session(ep()));
    pool.close();
  });
});
