// VirtualService routing and resilience on gRPC / HTTP/2 upstreams, through real agents: subsets by header, a weighted split,
// fault abort, route timeout, retries by gRPC status and on connect failure, the retry body limit, edits, local answers.

import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { constants, createServer, type ClientHttp2Session, type Http2Server, type IncomingHttpHeaders, type ServerHttp2Stream } from 'node:http2';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { call, Deframer, exchange, frame, h2c } from '../helpers/grpc';
import { TestMesh, upstreamStats, type AgentHandle } from '../helpers/mesh';
import { freePort } from '../helpers/processes';

const { NGHTTP2_CANCEL } = constants;

/** A gRPC app of one version; it records what reached it. */
interface GrpcApp {
  readonly server: Http2Server;
  readonly version: string;
  readonly hits: { path: string; headers: IncomingHttpHeaders }[];
  /** Attempts per x-call-id. */
  readonly attempts: Map<string, number>;
  /** How each stream tagged x-call-tag closed (its RST_STREAM code, 0 for none). */
  readonly closes: Map<string, Promise<number>>;
  port: number;
}

const OK = { ':status': 200, 'content-type': 'application/grpc' };

/** Reads a whole unary request, then answers with `reply` (a trailers-only status when it gives one). */
function unary(stream: ServerHttp2Stream, reply: (messages: Buffer[]) => { status: number; message?: Buffer; headers?: Record<string, string> }): void {
  const d = new Deframer();
  stream.on('data', (c: Buffer) => d.push(c));
  stream.on('end', () => {
    const r = reply(d.messages);
    if (r.status !== 0) {
      stream.respond({ ...OK, ...r.headers, 'grpc-status': String(r.status), 'grpc-message': 'try%20again' }, { endStream: true });
      return;
    }
    stream.respond({ ...OK, ...r.headers }, { waitForTrailers: true });
    stream.once('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
    stream.end(frame(r.message ?? Buffer.alloc(0)));
  });
}

async function startApp(version: string): Promise<GrpcApp> {
  const app: GrpcApp = { server: createServer(), version, hits: [], attempts: new Map(), closes: new Map(), port: 0 };
  app.server.on('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => {
    const path = String(headers[':path']);
    app.hits.push({ path, headers });
    stream.on('error', () => {});
    const tag = headers['x-call-tag'];
    if (typeof tag === 'string') app.closes.set(tag, new Promise((r) => stream.once('close', () => r(stream.rstCode ?? 0))));
    const id = String(headers['x-call-id'] ?? '');
    const n = (app.attempts.get(id) ?? 0) + 1;
    app.attempts.set(id, n);
    if (path === '/test.Echo/Slow') {
      setTimeout(() => unary(stream, () => ({ status: 0 })), 3000).unref();
      return;
    }
    if (path.startsWith('/test.Retry/')) {
      // UNAVAILABLE (trailers-only) twice per call id, then OK with the request's size.
      unary(stream, (m) => (n <= 2 ? { status: 14 } : { status: 0, message: Buffer.from(String(m[0]?.length ?? 0)) }));
      return;
    }
    unary(stream, (m) => ({ status: 0, message: Buffer.concat([Buffer.from(`${version}:`), ...m]), headers: { 'x-version': version } }));
  });
  await new Promise<void>((r) => app.server.listen(0, '127.0.0.1', r));
  app.port = (app.server.address() as { port: number }).port;
  return app;
}

const POLICY = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: api }
spec:
  host: api
  trafficPolicy: { loadBalancer: { simple: ROUND_ROBIN } }
  subsets:
    - { name: v1, labels: { version: v1 } }
    - { name: v2, labels: { version: v2 } }
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: flaky }
spec:
  host: flaky
  trafficPolicy: { loadBalancer: { simple: ROUND_ROBIN } }
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: flaky }
spec:
  hosts: [flaky]
  http:
    - retries: { attempts: 2, retryOn: connect-failure }
      route: [{ destination: { host: flaky } }]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: api }
spec:
  hosts: [api]
  http:
    - match: [{ headers: { x-canary: { exact: "yes" } } }]
      route: [{ destination: { host: api, subset: v2 } }]
    - match: [{ uri: { prefix: /test.Fault/ } }]
      fault: { abort: { percentage: { value: 100 }, grpcStatus: PERMISSION_DENIED } }
      route: [{ destination: { host: api, subset: v1 } }]
    - match: [{ uri: { exact: /test.Echo/Slow } }]
      timeout: 0.5s
      retries: { attempts: 0 }
      route: [{ destination: { host: api, subset: v1 } }]
    - match: [{ uri: { prefix: /test.Retry/On } }]
      retries: { attempts: 3, retryOn: unavailable }
      route: [{ destination: { host: api, subset: v1 } }]
    - match: [{ uri: { prefix: /test.Retry/Off } }]
      retries: { attempts: 3, retryOn: "connect-failure,5xx,503" }
      route: [{ destination: { host: api, subset: v1 } }]
    - match: [{ uri: { prefix: /test.Split/ } }]
      route:
        - { destination: { host: api, subset: v1 }, weight: 50 }
        - { destination: { host: api, subset: v2 }, weight: 50 }
    - match: [{ uri: { prefix: /test.Edit/ } }]
      rewrite: { uri: /test.Echo/, authority: api.internal }
      headers:
        request: { set: { x-added: "yes" }, remove: [x-secret] }
        response: { set: { x-resp: "1" } }
      route: [{ destination: { host: api, subset: v1 } }]
    - match: [{ uri: { prefix: /test.Moved/ } }]
      rewrite: { uri: /test.Echo/ }
      route: [{ destination: { host: moved } }]
    - match: [{ uri: { exact: /plain/direct } }]
      directResponse: { status: 200, body: { string: "answered by the mesh" } }
    - match: [{ uri: { exact: /plain/redirect } }]
      redirect: { uri: /plain/moved, redirectCode: 302 }
    - match: [{ uri: { prefix: /test.Echo/ } }]
      route: [{ destination: { host: api, subset: v1 } }]
`;

describe('VirtualService routing and resilience on gRPC upstreams', () => {
  const mesh = new TestMesh();
  let v1: GrpcApp;
  let v2: GrpcApp;
  let a: AgentHandle;
  const ports = { api: 0, flaky: 0, plain: 0 };
  let client: ClientHttp2Session;

  before(async () => {
    v1 = await startApp('v1');
    v2 = await startApp('v2');
    const server = await mesh.startServer();
    const node = async (name: string, services: string): Promise<AgentHandle> =>
      mesh.startAgent(name, mesh.writeConfig(`${name}.yaml`, `inbound: { listen: "127.0.0.1:0" }\nadmin: { listen: "127.0.0.1:0" }\nservices:\n${services}`), { join: await mesh.token(server) });
    const b1 = await node('node-b1', `  - { name: api, port: ${v1.port}, protocol: grpc }\n  - { name: flaky, port: ${v1.port}, protocol: grpc }\n`);
    const b2 = await node('node-b2', `  - { name: api, port: ${v2.port}, protocol: grpc }\n  - { name: moved, port: ${v2.port}, protocol: grpc }\n`);
    const port = (h: AgentHandle): string => h.inbound.split(':')[1]!;
    // flaky: one endpoint where nothing listens, one that works.
    mesh.writeConfig(
      'endpoints.yaml',
      `services:\n  api:\n    - { address: 127.0.0.1, port: ${port(b1)}, labels: { version: v1 } }\n    - { address: 127.0.0.1, port: ${port(b2)}, labels: { version: v2 } }\n` +
        `  flaky:\n    - { address: 127.0.0.1, port: ${await freePort()} }\n    - { address: 127.0.0.1, port: ${port(b1)} }\n` +
        `  moved:\n    - { address: 127.0.0.1, port: ${port(b2)} }\n`,
    );
    writeFileSync(join(mesh.root, 'policy.yaml'), POLICY);
    ports.api = await freePort();
    ports.flaky = await freePort();
    ports.plain = await freePort();
    a = await mesh.startAgent(
      'node-a',
      mesh.writeConfig(
        'a.yaml',
        `inbound: { listen: "127.0.0.1:0" }\nadmin: { listen: "127.0.0.1:0" }\nendpointsFile: {{root}}/endpoints.yaml\npolicyFile: {{root}}/policy.yaml\nservices:\n  - name: web\n    port: 1\n    upstreams:\n` +
          `      - { service: api, port: ${ports.api}, protocol: grpc }\n      - { service: flaky, port: ${ports.flaky}, protocol: grpc }\n` +
          // The same service as plain HTTP/2 from another caller: local answers in their HTTP form.
          `  - name: tool\n    port: 2\n    upstreams: [{ service: api, port: ${ports.plain}, protocol: http2 }]\n`,
      ),
      { join: await mesh.token(server) },
    );
    client = await h2c(ports.api);
  });

  after(async () => {
    client?.destroy();
    v1?.server.close();
    v2?.server.close();
    await mesh.close();
  });

  it('routes a stream by header to a subset, and the rest by the later rules', async () => {
    for (let i = 0; i < 6; i++) {
      const canary = await call(client, '/test.Echo/Unary', [`c${i}`], { headers: { 'x-canary': 'yes' } });
      assert.equal(canary.status, 0);
      assert.deepEqual(canary.messages.map(String), [`v2:c${i}`], 'x-canary: yes goes to subset v2');
      const plain = await call(client, '/test.Echo/Unary', [`p${i}`]);
      assert.deepEqual(plain.messages.map(String), [`v1:p${i}`], 'the rest go to subset v1');
    }
  });

  it('splits streams 50/50 between subsets by weight (200 streams, each side within 100 ± 30)', async () => {
    const before = { v1: v1.hits.length, v2: v2.hits.length };
    const versions: string[] = [];
    for (let batch = 0; batch < 4; batch++) {
      const results = await Promise.all(Array.from({ length: 50 }, (_, i) => call(client, '/test.Split/Unary', [`${batch}-${i}`])));
      for (const r of results) {
        assert.equal(r.status, 0);
        versions.push(String(r.headers['x-version']));
      }
    }
    const n1 = versions.filter((v) => v === 'v1').length;
    const n2 = versions.filter((v) => v === 'v2').length;
    assert.equal(n1 + n2, 200);
    // Binomial(200, 0.5): standard deviation 7.1, so ±30 is more than 4 of them.
    assert.ok(Math.abs(n1 - 100) <= 30, `v1 got ${n1} of 200`);
    assert.equal(v1.hits.length - before.v1, n1, 'counted at the apps too');
    assert.equal(v2.hits.length - before.v2, n2);
  });

  it('aborts with the rule\'s gRPC status (trailers-only, flag FI) without reaching an app', async () => {
    const hits = v1.hits.length + v2.hits.length;
    const r = await call(client, '/test.Fault/Anything', ['x']);
    assert.equal(r.headers[':status'], 200);
    assert.equal(r.status, 7, 'PERMISSION_DENIED');
    assert.equal(r.headers['x-mesh-response-flags'], 'FI');
    assert.equal(v1.hits.length + v2.hits.length, hits);
    assert.equal((await upstreamStats(a, 'api')).faultAborts, 1);
  });

  it('answers DEADLINE_EXCEEDED (flag UT) when the route timeout runs out, and cancels the upstream stream', async () => {
    const r = await call(client, '/test.Echo/Slow', ['x'], { headers: { 'x-call-tag': 'slow' } });
    assert.equal(r.status, 4, JSON.stringify(r.headers));
    assert.equal(r.headers['x-mesh-response-flags'], 'UT');
    assert.match(r.message ?? '', /upstream request timeout/);
    assert.equal(await v1.closes.get('slow'), NGHTTP2_CANCEL, 'the app saw its stream cancelled');
  });

  it('retries UNAVAILABLE with retryOn: unavailable until it succeeds, and not without it', async () => {
    const retries = (await upstreamStats(a, 'api')).retries!;
    const on = await call(client, '/test.Retry/On', ['hello'], { headers: { 'x-call-id': 'on-1' } });
    assert.equal(on.status, 0, JSON.stringify(on));
    assert.deepEqual(on.messages.map(String), ['5']);
    assert.equal(v1.attempts.get('on-1'), 3, 'two UNAVAILABLE answers, then OK');
    assert.equal((await upstreamStats(a, 'api')).retries, retries + 2);
    const off = await call(client, '/test.Retry/Off', ['hello'], { headers: { 'x-call-id': 'off-1' } });
    assert.equal(off.status, 14, 'connect-failure,5xx,503 do not cover a grpc-status (the HTTP status is 200)');
    assert.equal(off.message, 'try%20again', "the app's own answer is passed on");
    assert.equal(v1.attempts.get('off-1'), 1);
  });

  it('retries a request body up to 64 KiB, and never one larger', async () => {
    const mid = await call(client, '/test.Retry/On', [Buffer.alloc(60 * 1024, 1)], { headers: { 'x-call-id': 'mid-1' } });
    assert.equal(mid.status, 0);
    assert.deepEqual(mid.messages.map(String), [String(60 * 1024)], 'the retry carried the whole body');
    assert.equal(v1.attempts.get('mid-1'), 3);
    const big = await call(client, '/test.Retry/On', [Buffer.alloc(100 * 1024, 2)], { headers: { 'x-call-id': 'big-1' } });
    assert.equal(big.status, 14, 'not retried: the body went past the buffer limit');
    assert.equal(v1.attempts.get('big-1'), 1);
  });

  it('retries a connect failure to one of two endpoints on the other one', async () => {
    const c = await h2c(ports.flaky);
    try {
      for (let i = 0; i < 6; i++) {
        const r = await call(c, '/test.Echo/Unary', [`f${i}`]);
        assert.equal(r.status, 0, JSON.stringify(r));
        assert.deepEqual(r.messages.map(String), [`v1:f${i}`]);
      }
    } finally {
      c.close();
    }
    const s = await upstreamStats(a, 'flaky');
    assert.ok(s.connectFailures! >= 1, 'round robin sent some first tries to the dead endpoint');
    assert.equal(s.retries, s.connectFailures, 'each connect failure was retried once');
  });

  it('applies rewrite and header edits both ways', async () => {
    const r = await call(client, '/test.Edit/Unary', ['e'], { headers: { 'x-secret': 'hush', 'x-call-tag': 'edit' } });
    assert.equal(r.status, 0);
    assert.equal(r.headers['x-resp'], '1', 'response header set');
    const hit = v1.hits.find((h) => h.headers['x-call-tag'] === 'edit')!;
    assert.equal(hit.path, '/test.Echo/Unary', 'the matched prefix was rewritten');
    assert.equal(hit.headers[':authority'], 'api.internal');
    assert.equal(hit.headers['x-added'], 'yes');
    assert.equal(hit.headers['x-secret'], undefined);
  });

  it('sends a stream routed to another service over that service\'s own session (its SNI, its identity checked)', async () => {
    const r = await call(client, '/test.Moved/Unary', ['m'], { headers: { 'x-call-tag': 'moved' } });
    assert.equal(r.status, 0, JSON.stringify(r));
    assert.deepEqual(r.messages.map(String), ['v2:m']);
    const hit = v2.hits.find((h) => h.headers['x-call-tag'] === 'moved')!;
    assert.match(String(hit.headers['x-forwarded-client-cert']), /^By=spiffe:\/\/mesh\.local\/ns\/default\/sa\/moved;.*URI=spiffe:\/\/mesh\.local\/ns\/default\/sa\/web$/, 'node-b2 served it as service moved');
  });

  it('answers no route with UNIMPLEMENTED (gRPC) or 404 (plain HTTP/2), flag NR; direct responses and redirects locally', async () => {
    const g = await call(client, '/other.Service/Method', ['x']);
    assert.equal(g.status, 12);
    assert.equal(g.headers['x-mesh-response-flags'], 'NR');
    const c = await h2c(ports.plain);
    try {
      const plain = await exchange(c, { ':path': '/nowhere' });
      assert.equal(plain.headers[':status'], 404);
      assert.equal(plain.headers['x-mesh-response-flags'], 'NR');
      const direct = await exchange(c, { ':path': '/plain/direct' });
      assert.equal(direct.headers[':status'], 200);
      assert.equal(direct.body.toString(), 'answered by the mesh');
      const moved = await exchange(c, { ':path': '/plain/redirect?q=1' });
      assert.equal(moved.headers[':status'], 302);
      assert.equal(moved.headers.location, `http://127.0.0.1:${ports.plain}/plain/moved?q=1`);
      const fault = await exchange(c, { ':path': '/test.Fault/x' });
      assert.equal(fault.headers['grpc-status'], '7', 'an abort with grpcStatus answers the gRPC way to any caller');
      const echo = await call(c, '/test.Echo/Unary', ['over http2']);
      assert.deepEqual(echo.messages.map(String), ['v1:over http2'], 'a gRPC call over an http2 upstream is routed the same way');
    } finally {
      c.close();
    }
  });
});
