// AuthorizationPolicy and PeerAuthentication enforced by the inbound agent, through real agents: callers web, batch
// (namespace default) and ops (namespace ops) on node A; api (HTTP/1.1), echo (TCP) and h2api (HTTP/2) on node B,
// whose policy file each test rewrites and reloads with SIGHUP.

import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { createServer as createHttpServer, type Server } from 'node:http';
import { connect as h2Connect, createServer as createH2Server, type Http2Server, type IncomingHttpHeaders } from 'node:http2';
import { connect as netConnect, type Socket } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { request } from 'undici';
import WebSocket, { WebSocketServer } from 'ws';
import { startEchoApp, tcpExchange, tlsExchange } from '../helpers/apps';
import { TestMesh, type AgentHandle } from '../helpers/mesh';
import { freePort } from '../helpers/processes';

const WEB = 'mesh.local/ns/default/sa/web';
const BATCH = 'mesh.local/ns/default/sa/batch';

const ap = (name: string, spec: string, meta = ''): string => `apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: ${name}\n${meta}spec:\n${spec}`;
const pa = (name: string, namespace: string, spec: string): string => `apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: ${name}, namespace: ${namespace}}\nspec:\n${spec}`;

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** An HTTP app that answers with what it saw, and echoes WebSocket messages on /socket. */
async function startApi(): Promise<{ server: Server; port: number }> {
  const server = createHttpServer((req, res) => {
    req.resume();
    const body = JSON.stringify({ path: req.url, headers: req.headers });
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  });
  const wss = new WebSocketServer({ server, path: '/socket' });
  wss.on('connection', (ws) => ws.on('message', (m) => ws.send(`echo:${m.toString()}`)));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, port: (server.address() as { port: number }).port };
}

/** An h2c app that answers 200 "h2 ok". */
async function startH2App(): Promise<{ server: Http2Server; port: number }> {
  const server = createH2Server();
  server.on('stream', (s, headers) => {
    s.respond({ ':status': 200, 'content-type': 'text/plain' });
    // /stream/...: a long-lived stream (a server-streaming call) that sends one message and stays open.
    if (String(headers[':path']).startsWith('/stream/')) s.write('tick');
    else s.end('h2 ok');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, port: (server.address() as { port: number }).port };
}

/** One HTTP/2 request (h2c, prior knowledge) to `port`; resolves with the response headers, trailers and body. */
function h2Get(port: number, headers: Record<string, string> = {}): Promise<{ headers: IncomingHttpHeaders; trailers: IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const session = h2Connect(`http://127.0.0.1:${port}`);
    session.on('error', reject);
    const req = session.request({ ':path': '/h2', ...headers });
    let got: IncomingHttpHeaders = {};
    let trailers: IncomingHttpHeaders = {};
    let body = '';
    req.on('response', (h) => (got = h));
    req.on('trailers', (t) => (trailers = t));
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      session.close();
      resolve({ headers: got, trailers, body });
    });
    req.on('error', reject);
    req.end();
  });
}

/** A raw HTTP/1.1 request on a plain TCP connection (a client outside the mesh, such as curl). */
async function plainHttp(port: number, path: string, host: string, extra = ''): Promise<Reply | undefined> {
  const r = await tcpExchange(port, `GET ${path} HTTP/1.1\r\nHost: ${host}\r\n${extra}Connection: close\r\n\r\n`, { timeoutMs: 10_000 });
  const text = r.received.toString('latin1');
  const end = text.indexOf('\r\n\r\n');
  if (end < 0) return undefined;
  const [status, ...lines] = text.slice(0, end).split('\r\n');
  const headers = Object.fromEntries(lines.map((l) => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]));
  return { status: Number(status!.split(' ')[1]), headers, body: text.slice(end + 4) };
}

/** A TCP connection kept open: write a line, wait for its echo. */
class OpenTcp {
  readonly socket: Socket;
  private text = '';
  closed = false;
  private readonly closedPromise: Promise<void>;

  constructor(port: number) {
    this.socket = netConnect({ host: '127.0.0.1', port });
    this.socket.on('data', (c: Buffer) => (this.text += c.toString()));
    this.socket.on('error', () => {});
    this.closedPromise = new Promise((r) => this.socket.once('close', () => r()));
    void this.closedPromise.then(() => (this.closed = true));
  }

  async echo(line: string, timeoutMs = 10_000): Promise<void> {
    this.socket.write(line);
    const deadline = Date.now() + timeoutMs;
    while (!this.text.includes(line)) {
      if (this.closed || Date.now() > deadline) throw new Error(`no echo of ${line} (closed: ${this.closed}, got ${JSON.stringify(this.text)})`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** Resolves true when the connection closes within `ms`. */
  closesWithin(ms: number): Promise<boolean> {
    return Promise.race([this.closedPromise.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), ms))]);
  }
}

/** The last JSON log line of `agent` with message `msg` and matching `re`, once there is one. */
async function logLine(agent: AgentHandle, msg: string, re: RegExp = /./): Promise<Record<string, unknown>> {
  const line = new RegExp(`^\\{[^\\n]*"msg":"${msg}"[^\\n]*$`);
  await agent.proc.waitFor(new RegExp(`"msg":"${msg}"[^\\n]*${re.source}`));
  const found = agent.proc.stderr.split('\n').filter((l) => line.test(l) && re.test(l));
  return JSON.parse(found[found.length - 1]!) as Record<string, unknown>;
}

describe('authorization and mTLS modes, enforced by the inbound agent', () => {
  const mesh = new TestMesh();
  let api: Awaited<ReturnType<typeof startApi>>;
  let echo: Awaited<ReturnType<typeof startEchoApp>>;
  let h2app: Awaited<ReturnType<typeof startH2App>>;
  let b: AgentHandle;
  let bInbound = 0;
  let policyFile = '';
  const port = { webApi: 0, webEcho: 0, webH2: 0, batchApi: 0, batchEcho: 0, opsApi: 0 };

  const get = async (upstream: number, path: string, headers: Record<string, string> = {}): Promise<Reply> => {
    const r = await request(`http://127.0.0.1:${upstream}${path}`, { headers, headersTimeout: 15_000 });
    return { status: r.statusCode, headers: r.headers, body: await r.body.text() };
  };
  const policy = (...docs: string[]): Promise<void> => mesh.reloadPolicy(b, policyFile, docs.join('---\n'));

  before(async () => {
    api = await startApi();
    echo = await startEchoApp();
    h2app = await startH2App();
    const server = await mesh.startServer();
    policyFile = join(mesh.root, 'b-policy.yaml');
    writeFileSync(policyFile, '');
    b = await mesh.startAgent(
      'node-b',
      mesh.writeConfig(
        'b.yaml',
        `inbound: { listen: "127.0.0.1:0" }\nadmin: { listen: "127.0.0.1:0" }\npolicyFile: {{root}}/b-policy.yaml\nservices:\n  - { name: api, port: ${api.port}, protocol: http }\n  - { name: echo, port: ${echo.port}, protocol: tcp }\n  - { name: h2api, port: ${h2app.port}, protocol: http2 }\n`,
      ),
      { join: await mesh.token(server), extra: ['--log-format', 'json'] },
    );
    bInbound = Number(b.inbound.split(':')[1]);
    mesh.writeConfig('endpoints.yaml', `services:\n  api: [{ address: 127.0.0.1, port: ${bInbound} }]\n  echo: [{ address: 127.0.0.1, port: ${bInbound} }]\n  h2api: [{ address: 127.0.0.1, port: ${bInbound} }]\n`);
    for (const k of Object.keys(port) as (keyof typeof port)[]) port[k] = await freePort();
    await mesh.startAgent(
      'node-a',
      mesh.writeConfig(
        'a.yaml',
        `inbound: { listen: "127.0.0.1:0" }\nadmin: { listen: "127.0.0.1:0" }\nendpointsFile: {{root}}/endpoints.yaml\nservices:
  - name: web
    port: 1
    upstreams:
      - { service: api, port: ${port.webApi}, protocol: http }
      - { service: echo, port: ${port.webEcho} }
      - { service: h2api, port: ${port.webH2}, protocol: http2 }
  - name: batch
    port: 2
    upstreams:
      - { service: api, port: ${port.batchApi}, protocol: http }
      - { service: echo, port: ${port.batchEcho} }
  - name: ops
    namespace: ops
    port: 3
    upstreams:
      - { service: api, namespace: default, port: ${port.opsApi}, protocol: http }
`,
      ),
      { join: await mesh.token(server) },
    );
  });

  after(async () => {
    api?.server.close();
    echo?.server.close();
    h2app?.server.close();
    await mesh.close();
  });

  it('without any policy every mesh caller gets through over mTLS', async () => {
    for (const p of [port.webApi, port.batchApi, port.opsApi]) assert.equal((await get(p, '/hello')).status, 200);
    assert.equal((await tcpExchange(port.batchEcho, 'hi')).received.toString(), 'hi');
  });

  it('ALLOW by principal lets web in and refuses batch with 403 naming the policy; the deny is logged as one JSON line', async () => {
    await policy(ap('allow-web', `  selector: {matchLabels: {app: api}}\n  action: ALLOW\n  rules:\n  - from: [{source: {principals: [${WEB}]}}]\n`));
    const ok = await get(port.webApi, '/data');
    assert.equal(ok.status, 200);
    assert.match(JSON.parse(ok.body).headers['x-forwarded-client-cert'], /URI=spiffe:\/\/mesh\.local\/ns\/default\/sa\/web$/);
    const no = await get(port.batchApi, '/data');
    assert.equal(no.status, 403);
    assert.equal(no.body, 'RBAC: access denied: no rule of AuthorizationPolicy default/allow-web allows it\n');
    assert.equal(no.headers['x-mesh-response-flags'], 'RBAC');
    const line = await logLine(b, 'authorization denied', /sa\/batch/);
    assert.equal(line.code, 'MESH_ERR_AUTHZ_DENIED');
    assert.equal(line.policy, 'default/allow-web');
    assert.equal(line.reason, 'no-allow-match');
    assert.equal(line.principal, BATCH);
    assert.equal(line.service, 'api.default');
    assert.equal(line.path, '/data');
    assert.equal(line.level, 'warn');
  });

  it('DENY on a path answers 403 naming the policy and rule, for disguised paths too; other paths pass', async () => {
    await policy(ap('deny-admin', '  action: DENY\n  rules:\n  - to: [{operation: {paths: [/private]}}]\n  - to: [{operation: {paths: ["/admin*"]}}]\n'));
    for (const path of ['/admin', '/admin/users', '/%61dmin', '/public/../admin']) {
      const r = await get(port.webApi, path);
      assert.equal(r.status, 403, path);
      assert.equal(r.body, 'RBAC: access denied by AuthorizationPolicy default/deny-admin rule 1\n', path);
    }
    assert.equal((await get(port.webApi, '/public')).status, 200);
    const line = await logLine(b, 'authorization denied', /deny-admin/);
    assert.deepEqual([line.policy, line.rule, line.principal], ['default/deny-admin', 1, WEB]);
  });

  it('namespace rules: DENY from namespace ops refuses the ops caller only', async () => {
    await policy(ap('deny-ops', '  action: DENY\n  rules: [{from: [{source: {namespaces: [ops]}}]}]\n'));
    const r = await get(port.opsApi, '/x');
    assert.equal(r.status, 403);
    assert.match(r.body, /default\/deny-ops rule 0/);
    assert.equal((await get(port.webApi, '/x')).status, 200);
  });

  it('a TCP service with an L4 rule: the allowed caller gets its bytes echoed, the other is closed after the handshake', async () => {
    await policy(ap('echo-web-only', `  selector: {matchLabels: {app: echo}}\n  rules: [{from: [{source: {principals: ["*/sa/web"]}}], to: [{operation: {ports: ["${echo.port}"]}}]}]\n`));
    assert.equal((await tcpExchange(port.webEcho, 'from web')).received.toString(), 'from web');
    const refused = await tcpExchange(port.batchEcho, 'from batch');
    assert.deepEqual([refused.received.length, refused.closed], [0, true]);
    const line = await logLine(b, 'authorization denied', /echo-web-only/);
    assert.deepEqual([line.principal, line.protocol, line.service], [BATCH, 'tcp', 'echo.default']);
    // An ALLOW rule with an HTTP-only field never matches TCP: with only such a rule, nothing reaches echo.
    await policy(ap('echo-http-rule', '  selector: {matchLabels: {app: echo}}\n  rules: [{to: [{operation: {methods: [GET]}}]}]\n'));
    assert.equal((await tcpExchange(port.webEcho, 'x')).received.length, 0);
  });

  it('dry-run: a matching DENY only logs "would deny"', async () => {
    await policy(ap('deny-dry', '  action: DENY\n  rules: [{to: [{operation: {paths: [/dry]}}]}]\n', '  annotations: {istio.io/dry-run: "true"}\n'));
    assert.equal((await get(port.webApi, '/dry')).status, 200);
    const line = await logLine(b, 'authorization dry-run: would deny');
    assert.deepEqual([line.policy, line.rule, line.path, line.dryRun], ['default/deny-dry', 0, '/dry', true]);
  });

  it('HTTP/2: a denied stream gets 403, a denied gRPC call grpc-status 7 PERMISSION_DENIED', async () => {
    assert.equal((await h2Get(port.webH2)).body, 'h2 ok');
    await policy(ap('deny-h2', '  selector: {matchLabels: {app: h2api}}\n  action: DENY\n  rules: [{to: [{operation: {methods: [POST]}}]}]\n'));
    assert.equal((await h2Get(port.webH2)).headers[':status'], 200, 'GET is not denied');
    const plain = await h2Get(port.webH2, { ':method': 'POST' });
    assert.equal(plain.headers[':status'], 403);
    assert.equal(plain.headers['x-mesh-response-flags'], 'RBAC');
    assert.equal(plain.body, 'RBAC: access denied by AuthorizationPolicy default/deny-h2 rule 0\n');
    const grpc = await h2Get(port.webH2, { ':method': 'POST', 'content-type': 'application/grpc' });
    assert.equal(grpc.headers[':status'], 200);
    assert.equal(grpc.headers['grpc-status'] ?? grpc.trailers['grpc-status'], '7');
    assert.match(String(grpc.headers['grpc-message'] ?? grpc.trailers['grpc-message']), /RBAC: access denied by AuthorizationPolicy default\/deny-h2 rule 0/);
  });

  it('a policy change closes open TCP connections and WebSockets it denies within seconds, and keeps the others', async () => {
    await policy('');
    const web = new OpenTcp(port.webEcho);
    const batch = new OpenTcp(port.batchEcho);
    await web.echo('web-1');
    await batch.echo('batch-1');
    const ws = new WebSocket(`ws://127.0.0.1:${port.webApi}/socket`);
    await new Promise((r, j) => {
      ws.once('open', r);
      ws.once('error', j);
    });
    const wsClosed = new Promise<boolean>((r) => ws.once('close', () => r(true)));
    const firstMessage = new Promise<string>((r) => ws.once('message', (m) => r(m.toString())));
    ws.send('ping');
    assert.equal(await firstMessage, 'echo:ping');

    await policy(
      ap('deny-batch-echo', `  selector: {matchLabels: {app: echo}}\n  action: DENY\n  rules: [{from: [{source: {principals: [${BATCH}]}}]}]\n`),
      ap('deny-socket', '  selector: {matchLabels: {app: api}}\n  action: DENY\n  rules: [{to: [{operation: {paths: [/socket]}}]}]\n'),
    );
    assert.equal(await batch.closesWithin(5000), true, 'the denied TCP connection is closed');
    assert.equal(await Promise.race([wsClosed, new Promise<boolean>((r) => setTimeout(() => r(false), 5000))]), true, 'the denied WebSocket is closed');
    await web.echo('web-2');
    assert.equal(web.closed, false, 'the allowed TCP connection stays open');
    const line = await logLine(b, 'open connection closed: the new policy refuses it', /sa\/batch/);
    assert.match(String(line.reason), /deny-batch-echo rule 0/);
    web.socket.destroy();
  });

  it('a policy change cancels the open HTTP/2 streams it denies, and keeps the session\'s other streams', async () => {
    await policy('');
    const session = h2Connect(`http://127.0.0.1:${port.webH2}`);
    session.on('error', () => undefined);
    const open = (path: string): { first: Promise<string>; closed: Promise<boolean>; isClosed: () => boolean } => {
      const req = session.request({ ':path': path });
      req.on('error', () => undefined);
      req.end();
      let closed = false;
      return {
        first: new Promise((r) => req.once('data', (c: Buffer) => r(c.toString()))),
        closed: new Promise((r) => req.once('close', () => r((closed = true)))),
        isClosed: () => closed,
      };
    };
    const watch = open('/stream/watch');
    const other = open('/stream/other');
    assert.equal(await watch.first, 'tick');
    assert.equal(await other.first, 'tick');

    await policy(ap('deny-watch', '  selector: {matchLabels: {app: h2api}}\n  action: DENY\n  rules: [{to: [{operation: {paths: [/stream/watch]}}]}]\n'));
    assert.equal(await Promise.race([watch.closed, new Promise<boolean>((r) => setTimeout(() => r(false), 5000))]), true, 'the denied stream is cancelled');
    const line = await logLine(b, 'open connection closed: the new policy refuses it', /stream\/watch/);
    assert.match(String(line.reason), /deny-watch rule 0/);
    assert.equal(other.isClosed(), false, 'the allowed stream on the same session stays open');
    assert.equal((await h2Get(port.webH2)).body, 'h2 ok', 'and new allowed streams still pass');
    session.destroy();
    await policy('');
  });

  it('STRICT, the default: a plaintext client on the inbound port gets no answer and is closed', async () => {
    await policy('');
    const r = await tcpExchange(bInbound, 'GET /plain HTTP/1.1\r\nHost: api\r\n\r\n', { timeoutMs: 10_000 });
    assert.deepEqual([r.received.length, r.closed], [0, true]);
    await b.proc.waitFor(/inbound connection refused during TLS handshake/);
  });

  it('PERMISSIVE: a plaintext client and an mTLS agent on the same port; a forged x-forwarded-client-cert is dropped', async () => {
    await policy(pa('mesh', 'mesh-system', '  mtls: {mode: PERMISSIVE}\n'));
    const plain = await plainHttp(bInbound, '/plain', 'api.default.svc.cluster.local:15443', 'x-forwarded-client-cert: By=x;URI=spiffe://mesh.local/ns/default/sa/admin\r\n');
    assert.equal(plain?.status, 200);
    const seen = JSON.parse(plain!.body) as { path: string; headers: Record<string, string> };
    assert.equal(seen.path, '/plain');
    assert.equal(seen.headers['x-forwarded-client-cert'], undefined);
    const viaMesh = await get(port.webApi, '/mtls');
    assert.equal(viaMesh.status, 200);
    assert.match(JSON.parse(viaMesh.body).headers['x-forwarded-client-cert'], /sa\/web$/);
    const unknown = await plainHttp(bInbound, '/', 'nosuch');
    assert.deepEqual([unknown?.status, unknown?.headers['x-mesh-response-flags']], [404, 'NR']);
    // Plaintext TCP goes to the one tcp service that takes plaintext; h2c to the one http2 service.
    assert.equal((await tcpExchange(bInbound, 'hello plain')).received.toString(), 'hello plain');
    assert.equal((await h2Get(bInbound)).body, 'h2 ok');
  });

  it('a plaintext caller has no principal: a principals rule refuses it', async () => {
    await policy(pa('mesh', 'mesh-system', '  mtls: {mode: PERMISSIVE}\n'), ap('allow-web', `  selector: {matchLabels: {app: api}}\n  rules: [{from: [{source: {principals: ["*"]}}]}]\n`));
    const plain = await plainHttp(bInbound, '/', 'api');
    assert.equal(plain?.status, 403);
    assert.equal(plain?.headers['x-mesh-response-flags'], 'RBAC');
    assert.equal((await get(port.webApi, '/')).status, 200);
    const line = await logLine(b, 'authorization denied', /none \(plaintext\)/);
    assert.equal(line.principal, 'none (plaintext)');
  });

  it('a STRICT workload beside a PERMISSIVE mesh: its plaintext requests get 403 MTLS', async () => {
    await policy(pa('mesh', 'mesh-system', '  mtls: {mode: PERMISSIVE}\n'), pa('api-strict', 'default', '  selector: {matchLabels: {app: api}}\n  mtls: {mode: STRICT}\n'));
    const plain = await plainHttp(bInbound, '/', 'api');
    assert.equal(plain?.status, 403);
    assert.equal(plain?.headers['x-mesh-response-flags'], 'MTLS');
    assert.match(plain!.body, /^plaintext refused: service api\.default requires mutual TLS \(mTLS mode STRICT, from PeerAuthentication default\/api-strict\)/);
    assert.equal((await get(port.webApi, '/')).status, 200);
  });

  it('DISABLE: the service takes plaintext only; mTLS callers are refused, in the handshake when it is a full one', async () => {
    await policy(pa('api-plain', 'default', '  selector: {matchLabels: {app: api}}\n  mtls: {mode: DISABLE}\n'));
    assert.equal((await plainHttp(bInbound, '/', 'api'))?.status, 200);
    assert.equal((await get(port.webApi, '/')).status, 503, 'the agent caller cannot reach it');
    const hello = await tlsExchange(bInbound, { servername: 'api.default.mesh.local' }, 'x');
    assert.equal(hello.handshake, false);
    await b.proc.waitFor(/refused during TLS handshake[^\n]*MESH_ERR_MTLS_MODE: service api\.default takes plaintext only \(mTLS mode DISABLE, from PeerAuthentication default\/api-plain\)/);
    // Other services keep STRICT: echo takes mTLS and refuses plaintext.
    assert.equal((await tcpExchange(port.webEcho, 'still mtls')).received.toString(), 'still mtls');
    assert.equal((await tcpExchange(bInbound, 'plain to echo')).received.length, 0);
  });
});
