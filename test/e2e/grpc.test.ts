// HTTP/2 and gRPC through two agents: app h2c -> agent A -> one multiplexed mTLS h2 session -> agent B -> h2c app; trailers, statuses, resets, cancels, sharing.

import assert from 'node:assert/strict';
import { createHash, createPublicKey, randomBytes } from 'node:crypto';
import {
  constants,
  createServer as createH2Server,
  type ClientHttp2Session,
  type Http2Server,
  type IncomingHttpHeaders,
  type ServerHttp2Session,
  type ServerHttp2Stream,
} from 'node:http2';
import { connect as netConnect } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { connect as tlsConnect } from 'node:tls';
import { CertificateAuthority, generatePrivateKey, privateKeyToPem, SpiffeId } from '../../src/ca';
import { Store } from '../../src/store';
import { call, Deframer, exchange, frame, h2c } from '../helpers/grpc';
import { agentMetrics, agentStatus, metricSample, TestMesh, upstreamStats as upstreamStatsOf, type AgentHandle, type ServerHandle } from '../helpers/mesh';
import { freePort } from '../helpers/processes';

const { NGHTTP2_CANCEL, NGHTTP2_INTERNAL_ERROR, NGHTTP2_REFUSED_STREAM } = constants;
const XFCC = /^By=spiffe:\/\/mesh\.local\/ns\/default\/sa\/api;Hash=[0-9a-f]{64};URI=spiffe:\/\/mesh\.local\/ns\/default\/sa\/web$/;
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** The gRPC app behind agent B: one method per behaviour under test. */
function grpcApp(seen: { path: string; headers: IncomingHttpHeaders }[], sessions: Set<ServerHttp2Session>, closes: Map<string, Promise<number>>): Http2Server {
  const app = createH2Server();
  app.on('session', (s) => sessions.add(s));
  app.on('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => {
    const path = String(headers[':path']);
    seen.push({ path, headers });
    stream.on('error', () => {});
    const tag = String(headers['x-call-tag'] ?? '');
    if (tag) closes.set(tag, new Promise((r) => stream.once('close', () => r(stream.rstCode ?? 0))));
    const ok = { ':status': 200, 'content-type': 'application/grpc' };
    switch (path) {
      case '/test.Echo/Unary': {
        const d = new Deframer();
        stream.on('data', (c: Buffer) => d.push(c));
        stream.on('end', () => {
          stream.respond(ok, { waitForTrailers: true });
          stream.once('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0', 'x-echo-count': String(d.messages.length) }));
          stream.end(Buffer.concat(d.messages.map((m) => frame(Buffer.concat([Buffer.from('echo:'), m])))));
        });
        return;
      }
      case '/test.Echo/NotFound':
        stream.respond({ ...ok, 'grpc-status': '5', 'grpc-message': 'thing%20not%20found' }, { endStream: true });
        return;
      case '/test.Echo/FailLate':
        stream.respond(ok, { waitForTrailers: true });
        stream.once('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '5', 'grpc-message': 'gone after one %E2%9C%93' }));
        stream.end(frame('partial'));
        return;
      case '/test.Echo/ServerStream': {
        const d = new Deframer((m) => {
          const n = Number(m.toString());
          stream.respond(ok, { waitForTrailers: true });
          stream.once('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
          // Sizes up to 256 KiB, so flow control windows fill up on the way.
          for (let i = 0; i < n; i++) stream.write(frame(Buffer.concat([Buffer.from(`${i}:`), Buffer.alloc(i * 8192, i)])));
          stream.end();
        });
        stream.on('data', (c: Buffer) => d.push(c));
        return;
      }
      case '/test.Echo/Reset':
        stream.close(NGHTTP2_INTERNAL_ERROR);
        return;
      case '/test.Echo/Refuse':
        stream.close(NGHTTP2_REFUSED_STREAM);
        return;
      case '/test.Echo/ResetMid': {
        // Answers the first message, resets on the second (the client sends it once it has the answer).
        stream.respond(ok);
        let n = 0;
        const d = new Deframer(() => {
          if (++n === 1) stream.write(frame('first'));
          else stream.close(NGHTTP2_INTERNAL_ERROR);
        });
        stream.on('data', (c: Buffer) => d.push(c));
        return;
      }
      case '/test.Echo/PingPong': {
        // Bidirectional: one answer per message; the status once the caller stops.
        stream.respond(ok, { waitForTrailers: true });
        stream.once('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
        const d = new Deframer((m) => stream.write(frame(`pong:${m.toString()}`)));
        stream.on('data', (c: Buffer) => d.push(c));
        stream.on('end', () => stream.end());
        return;
      }
      case '/test.Echo/Watch': {
        // Answers every message and never finishes on its own: only a cancel ends it. (Not even the
        // caller's half-close: Node's client sends END_STREAM just before its RST_STREAM(CANCEL).)
        stream.respond(ok);
        const d = new Deframer((m) => stream.write(frame(`seen:${m.toString()}`)));
        stream.on('data', (c: Buffer) => d.push(c));
        return;
      }
      default:
        stream.respond({ ...ok, 'grpc-status': '12', 'grpc-message': `unknown method ${path}` }, { endStream: true });
    }
  });
  return app;
}

/** The plain HTTP/2 app: echoes the body, tells its digest in a header and its length in a trailer. */
function filesApp(seen: { headers: IncomingHttpHeaders; trailers?: IncomingHttpHeaders; bytes: number }[]): Http2Server {
  const app = createH2Server();
  app.on('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => {
    stream.on('error', () => {});
    const entry: (typeof seen)[number] = { headers, bytes: 0 };
    seen.push(entry);
    const chunks: Buffer[] = [];
    stream.on('trailers', (t: IncomingHttpHeaders) => (entry.trailers = t));
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => {
      const body = Buffer.concat(chunks);
      entry.bytes = body.length;
      stream.respond({ ':status': headers[':method'] === 'POST' ? 201 : 200, 'content-type': 'application/octet-stream', 'x-sha256': sha(body) }, { waitForTrailers: true });
      stream.once('wantTrailers', () => stream.sendTrailers({ 'x-body-bytes': String(body.length) }));
      stream.end(body);
    });
  });
  return app;
}

describe('HTTP/2 and gRPC through the mesh', () => {
  const mesh = new TestMesh();
  let server: ServerHandle;
  let a: AgentHandle;
  let b: AgentHandle;
  let grpc: Http2Server;
  let files: Http2Server;
  const seen: { path: string; headers: IncomingHttpHeaders }[] = [];
  const appSessions = new Set<ServerHttp2Session>();
  const closes = new Map<string, Promise<number>>();
  const filesSeen: { headers: IncomingHttpHeaders; trailers?: IncomingHttpHeaders; bytes: number }[] = [];
  const ports = { api: 0, files: 0, ghost: 0, nowhere: 0 };
  let client: ClientHttp2Session;

  const status = agentStatus;
  const upstreamStats = (service: string): Promise<Record<string, number>> => upstreamStatsOf(a, service);

  before(async () => {
    grpc = grpcApp(seen, appSessions, closes);
    files = filesApp(filesSeen);
    await new Promise<void>((r) => grpc.listen(0, '127.0.0.1', r));
    await new Promise<void>((r) => files.listen(0, '127.0.0.1', r));
    server = await mesh.startServer();
    b = await mesh.startAgent(
      'node-b',
      mesh.writeConfig(
        'b.yaml',
        `inbound: { listen: "127.0.0.1:0" }\nadmin: { listen: "127.0.0.1:0" }\nservices:\n  - { name: api, port: ${(grpc.address() as { port: number }).port}, protocol: grpc }\n  - { name: files, port: ${(files.address() as { port: number }).port}, protocol: http2 }\n`,
      ),
      { join: await mesh.token(server) },
    );
    const bPort = b.inbound.split(':')[1];
    // ghost has an endpoint where nothing listens; nowhere has none at all.
    mesh.writeConfig('endpoints.yaml', `services:\n  api: [{ address: 127.0.0.1, port: ${bPort} }]\n  files: [{ address: 127.0.0.1, port: ${bPort} }]\n  ghost: [{ address: 127.0.0.1, port: ${await freePort()} }]\n`);
    for (const k of Object.keys(ports) as (keyof typeof ports)[]) ports[k] = await freePort();
    a = await mesh.startAgent(
      'node-a',
      mesh.writeConfig(
        'a.yaml',
        `inbound: { listen: "127.0.0.1:0" }\nadmin: { listen: "127.0.0.1:0" }\nendpointsFile: {{root}}/endpoints.yaml\nservices:\n  - name: web\n    port: 1\n    protocol: http\n    upstreams:\n` +
          `      - { service: api, port: ${ports.api}, protocol: grpc }\n      - { service: files, port: ${ports.files}, protocol: http2 }\n` +
          `      - { service: ghost, port: ${ports.ghost}, protocol: grpc }\n      - { service: nowhere, port: ${ports.nowhere}, protocol: http2 }\n`,
      ),
      { join: await mesh.token(server) },
    );
    client = await h2c(ports.api);
  });

  after(async () => {
    client?.destroy();
    grpc?.close();
    files?.close();
    for (const s of appSessions) s.destroy();
    await mesh.close();
  });

  it('carries a unary call with its payload and grpc-status 0, and the app sees the verified caller as x-forwarded-client-cert', async () => {
    const r = await call(client, '/test.Echo/Unary', ['hello'], { headers: { 'x-forwarded-client-cert': 'By=forged;URI=spiffe://mesh.local/ns/default/sa/admin', 'x-custom': 'kept' } });
    assert.equal(r.headers[':status'], 200);
    assert.equal(r.headers['content-type'], 'application/grpc');
    assert.deepEqual(r.messages.map(String), ['echo:hello']);
    assert.equal(r.status, 0);
    assert.equal(r.trailers['x-echo-count'], '1', 'custom trailers arrive too');
    const h = seen.find((s) => s.path === '/test.Echo/Unary')!.headers;
    assert.match(String(h['x-forwarded-client-cert']), XFCC, 'the forged value was replaced');
    assert.equal(h['x-custom'], 'kept');
    assert.equal(h.te, 'trailers');
    assert.equal(h['content-type'], 'application/grpc');
  });

  it('passes an error status with its grpc-message intact, trailers-only and after data', async () => {
    const early = await call(client, '/test.Echo/NotFound', ['x']);
    assert.equal(early.status, 5);
    assert.equal(early.message, 'thing%20not%20found');
    assert.deepEqual(early.messages, []);
    const late = await call(client, '/test.Echo/FailLate', ['x']);
    assert.deepEqual(late.messages.map(String), ['partial']);
    assert.equal(late.status, 5, JSON.stringify(late));
    assert.equal(late.message, 'gone after one %E2%9C%93');
  });

  it('counts gRPC calls by grpc_response_status on both sides (Istio metrics)', async () => {
    const labels = { destination_service_name: 'api', request_protocol: 'grpc', response_code: '200', response_flags: '-', connection_security_policy: 'mutual_tls' };
    for (const [agent, reporter] of [[a, 'source'], [b, 'destination']] as const) {
      const text = await agentMetrics(agent);
      assert.equal(metricSample(text, 'istio_requests_total', { ...labels, reporter, grpc_response_status: '0' }), 1, `the unary call, ${reporter}\n${text}`);
      assert.equal(metricSample(text, 'istio_requests_total', { ...labels, reporter, grpc_response_status: '5' }), 2, `NotFound and FailLate, ${reporter}`);
    }
  });

  it('streams many server messages in order, then the status', async () => {
    const r = await call(client, '/test.Echo/ServerStream', ['33']);
    assert.equal(r.status, 0);
    assert.equal(r.messages.length, 33);
    r.messages.forEach((m, i) => {
      assert.ok(m.subarray(0, `${i}:`.length).equals(Buffer.from(`${i}:`)), `message ${i} in order`);
      assert.equal(m.length, `${i}:`.length + i * 8192);
    });
  });

  it('carries a bidirectional stream message by message', async () => {
    let n = 0;
    const r = await call(client, '/test.Echo/PingPong', ['0'], {
      keepOpen: true,
      onMessage: (_m, req) => {
        if (++n < 5) req.write(frame(String(n)));
        else req.end();
      },
    });
    assert.deepEqual(r.messages.map(String), ['pong:0', 'pong:1', 'pong:2', 'pong:3', 'pong:4']);
    assert.equal(r.status, 0);
    assert.equal(r.rstCode, 0);
  });

  it('maps a stream the server resets to the status a direct caller would see', async () => {
    const internal = await call(client, '/test.Echo/Reset', ['x']);
    assert.equal(internal.status, 13, 'INTERNAL_ERROR before headers -> INTERNAL');
    assert.match(internal.message ?? '', /reset/);
    assert.equal(internal.headers['x-mesh-response-flags'], 'UR');
    const refused = await call(client, '/test.Echo/Refuse', ['x']);
    assert.equal(refused.status, 14, 'REFUSED_STREAM -> UNAVAILABLE (safe to retry)');
    // Agent B answers the refusal UNAVAILABLE (flag UR); unavailable is in Istio's default retryOn, so agent A tries three times.
    assert.equal(seen.filter((x) => x.path === '/test.Echo/Refuse').length, 3, 'retried twice by default');
    assert.equal(refused.headers['x-mesh-response-flags'], 'UR', "the last answer is agent B's, passed on");
    assert.equal(seen.filter((x) => x.path === '/test.Echo/Reset').length, 1, 'an INTERNAL_ERROR reset is not in the default retryOn');
    // After response headers the reset itself is passed on: the client's gRPC library maps it.
    const mid = await call(client, '/test.Echo/ResetMid', ['1'], { keepOpen: true, onMessage: (_m, req) => req.write(frame('2')) });
    assert.equal(mid.headers[':status'], 200);
    assert.equal(mid.rstCode, NGHTTP2_INTERNAL_ERROR);
    assert.equal(mid.status, undefined);
  });

  it('propagates a client CANCEL to the server as a reset', async () => {
    let n = 0;
    const r = await call(client, '/test.Echo/Watch', ['0'], {
      keepOpen: true,
      headers: { 'x-call-tag': 'cancel-me' },
      onMessage: (_m, req) => {
        if (++n < 3) req.write(frame(String(n)));
        else req.close(NGHTTP2_CANCEL);
      },
    });
    assert.equal(r.rstCode, NGHTTP2_CANCEL);
    assert.equal(await closes.get('cancel-me'), NGHTTP2_CANCEL, 'the app saw RST_STREAM(CANCEL)');
  });

  it('answers UNAVAILABLE (14) when the upstream endpoint cannot be reached (after Istio\'s default 2 retries), and when there is none', async () => {
    const ghost = await h2c(ports.ghost);
    try {
      const r = await call(ghost, '/test.Echo/Unary', ['x']);
      assert.equal(r.headers[':status'], 200);
      assert.equal(r.status, 14);
      assert.match(r.message ?? '', /upstream connect error.* after 3 attempts/);
      assert.equal(r.headers['x-mesh-response-flags'], 'URX', 'connect failures retried until the attempts ran out');
    } finally {
      ghost.close();
    }
    const nowhere = await h2c(ports.nowhere);
    try {
      const g = await call(nowhere, '/test.Echo/Unary', ['x']);
      assert.equal(g.status, 14, 'a gRPC request on an http2 upstream is answered the gRPC way');
      assert.equal(g.headers['x-mesh-response-flags'], 'UH');
      const plain = await exchange(nowhere, { ':path': '/x' });
      assert.equal(plain.headers[':status'], 503);
      assert.equal(plain.headers['x-mesh-response-flags'], 'UH');
      assert.match(plain.body.toString(), /no healthy upstream/);
    } finally {
      nowhere.close();
    }
    const ghostStats = await upstreamStats('ghost');
    assert.equal(ghostStats.connectFailures, 3, 'the first try and two retries');
    assert.equal(ghostStats.retries, 2);
  });

  it('carries many concurrent streams from several app connections over ONE mTLS connection between the agents', async () => {
    const before = (await status(b)).inboundStats;
    const clients = await Promise.all([1, 2, 3, 4, 5].map(() => h2c(ports.api)));
    try {
      const results = await Promise.all(clients.flatMap((c, i) => Array.from({ length: 20 }, (_, j) => call(c, '/test.Echo/Unary', [`${i}-${j}`]))));
      results.forEach((r, k) => {
        assert.equal(r.status, 0);
        assert.equal(String(r.messages[0]), `echo:${Math.floor(k / 20)}-${k % 20}`);
      });
    } finally {
      for (const c of clients) c.close();
    }
    const after = (await status(b)).inboundStats;
    assert.equal(after.accepted, before.accepted!, 'no new mTLS connection at agent B');
    assert.equal(after.h2Sessions, before.h2Sessions!);
    assert.equal(after.h2Streams! - before.h2Streams!, 100);
    const api = await upstreamStats('api');
    assert.equal(api.h2Sessions, 1, 'agent A opened one session to B for api, ever');
    assert.equal(api.h2Streams! >= 100, true);
    assert.equal(appSessions.size, 1, 'agent B reached the app over one pooled h2c session');
  });

  it('carries plain HTTP/2 request and response bodies and trailers both ways, concurrent streams sharing one session', async () => {
    const c = await h2c(ports.files);
    try {
      const bodies = Array.from({ length: 8 }, (_, i) => randomBytes(256 * 1024 + i));
      const results = await Promise.all(bodies.map((body, i) => exchange(c, { ':method': 'POST', ':path': `/upload/${i}`, 'x-n': String(i) }, body, { 'x-client-trailer': `t${i}` })));
      results.forEach((r, i) => {
        assert.equal(r.headers[':status'], 201);
        assert.equal(r.headers['x-sha256'], sha(bodies[i]!));
        assert.equal(sha(r.body), sha(bodies[i]!), 'the body came back intact');
        assert.equal(r.trailers['x-body-bytes'], String(bodies[i]!.length));
      });
      for (let i = 0; i < 8; i++) {
        const s = filesSeen.find((e) => e.headers['x-n'] === String(i))!;
        assert.equal(s.bytes, bodies[i]!.length);
        assert.equal(s.trailers?.['x-client-trailer'], `t${i}`, 'request trailers reach the app');
        assert.match(String(s.headers['x-forwarded-client-cert']), /URI=spiffe:\/\/mesh\.local\/ns\/default\/sa\/web$/);
      }
      const get = await exchange(c, { ':path': '/empty' });
      assert.equal(get.headers[':status'], 200);
      assert.equal(get.body.length, 0);
    } finally {
      c.close();
    }
    assert.equal((await upstreamStats('files')).h2Sessions, 1, 'streams that came together waited on one dial');
  });

  it('closes a connection that sends garbage on an h2c upstream port and keeps serving', async () => {
    const closed = await new Promise<boolean>((resolve) => {
      const s = netConnect({ host: '127.0.0.1', port: ports.api }, () => s.write('GET / HTTP/1.1\r\nhost: api\r\n\r\n'));
      s.on('data', () => {});
      s.on('error', () => {});
      s.on('close', () => resolve(true));
      setTimeout(() => resolve(false), 5000).unref();
    });
    assert.ok(closed, 'the agent closed the connection');
    const fresh = await h2c(ports.api);
    try {
      const r = await call(fresh, '/test.Echo/Unary', ['still here']);
      assert.equal(r.status, 0);
      assert.deepEqual(r.messages.map(String), ['echo:still here']);
    } finally {
      fresh.close();
    }
    assert.equal((await call(client, '/test.Echo/Unary', ['old connection'])).status, 0, 'other connections were not touched');
    assert.ok(a.proc.running && b.proc.running);
  });

  it('closes an mTLS connection that chose h2 and then sends garbage, and keeps serving', async () => {
    // A genuine mesh workload (same CA, identity web) that speaks nonsense after the handshake.
    const store = Store.open(join(server.dataDir, 'mesh.db'));
    const ca = CertificateAuthority.load(store.ca.active()!);
    store.close();
    const key = generatePrivateKey();
    const cert = ca.issue({ spiffeId: SpiffeId.workload('mesh.local', 'default', 'web'), publicKey: createPublicKey(key), lifetimeMs: 3_600_000 }).pem;
    const before = (await status(b)).inboundStats;
    const outcome = await new Promise<{ alpn: string | false | null; closed: boolean }>((resolve) => {
      let alpn: string | false | null = false;
      const s = tlsConnect({ host: '127.0.0.1', port: Number(b.inbound.split(':')[1]), servername: 'api.default.mesh.local', ca: [ca.root.pem], key: privateKeyToPem(key), cert, ALPNProtocols: ['h2'], checkServerIdentity: () => undefined }, () => {
        alpn = s.alpnProtocol;
        s.write('PRI * HTTP/1.1\r\n\r\nthis is not the preface you are looking for\r\n\r\n');
      });
      s.on('data', () => {});
      s.on('error', () => {});
      s.on('close', () => resolve({ alpn, closed: true }));
      setTimeout(() => resolve({ alpn, closed: false }), 5000).unref();
    });
    assert.equal(outcome.alpn, 'h2', 'the inbound port offers h2 by ALPN');
    assert.ok(outcome.closed, 'agent B closed the connection');
    const afterStats = (await status(b)).inboundStats;
    assert.equal(afterStats.h2Sessions, before.h2Sessions! + 1);
    assert.equal((await call(client, '/test.Echo/Unary', ['after inbound garbage'])).status, 0);
    assert.ok(b.proc.running);
  });
});
