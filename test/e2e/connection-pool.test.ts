// DestinationRule connectionPool through real agents: maxConnections with pending requests, maxRetries, TCP
// maxConnections, connectTimeout, idleTimeout and maxRequestsPerConnection on the pooled mTLS connections.

import assert from 'node:assert/strict';
import { createServer as createHttpServer, type Server } from 'node:http';
import { createServer as createTcpServer, Socket, type Server as NetServer } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { Agent, request } from 'undici';
import { startEchoApp, tcpExchange } from '../helpers/apps';
import { TestMesh, type AgentHandle } from '../helpers/mesh';
import { freePort, runMeshAgent } from '../helpers/processes';

/** /slow answers after 600 ms, /fail with 503 after 500 ms, anything else at once; counts requests per path prefix. */
async function startApp(): Promise<{ server: Server; port: number; hits: Map<string, number> }> {
  const hits = new Map<string, number>();
  const server = createHttpServer((req, res) => {
    const path = req.url ?? '/';
    const key = path.split('/')[1] ?? '';
    hits.set(key, (hits.get(key) ?? 0) + 1);
    req.resume();
    const reply = (status: number): void => void res.writeHead(status, { 'content-length': 2 }).end('ok');
    if (path.startsWith('/slow')) return void setTimeout(() => reply(200), 600).unref();
    if (path.startsWith('/fail')) return void setTimeout(() => reply(503), 500).unref();
    reply(200);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, port: (server.address() as { port: number }).port, hits };
}

const POLICY = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: limited }
spec:
  host: limited
  trafficPolicy:
    connectionPool:
      tcp: { maxConnections: 1 }
      http: { http1MaxPendingRequests: 1 }
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: limited }
spec:
  hosts: [limited]
  http:
    - retries: { attempts: 0 }
      route: [{ destination: { host: limited } }]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: retrying }
spec:
  host: retrying
  trafficPolicy:
    connectionPool:
      http: { maxRetries: 1 }
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: retrying }
spec:
  hosts: [retrying]
  http:
    - retries: { attempts: 3, retryOn: 5xx }
      route: [{ destination: { host: retrying } }]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: churn }
spec:
  host: churn
  trafficPolicy:
    connectionPool:
      http: { maxRequestsPerConnection: 1 }
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: idle }
spec:
  host: idle
  trafficPolicy:
    connectionPool:
      http: { idleTimeout: 300ms }
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: hung }
spec:
  host: hung
  trafficPolicy:
    connectionPool:
      tcp: { connectTimeout: 300ms }
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: split }
spec:
  host: split
  subsets:
    - { name: all, labels: { tier: a } }
    - name: limited
      labels: { version: v2 }
      trafficPolicy: { connectionPool: { http: { http2MaxRequests: 1 } } }
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: split }
spec:
  hosts: [split]
  http:
    - match: [{ headers: { x-subset: { exact: limited } } }]
      retries: { attempts: 0 }
      route: [{ destination: { host: split, subset: limited } }]
    - retries: { attempts: 0 }
      route: [{ destination: { host: split, subset: all } }]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: echo }
spec:
  host: echo
  trafficPolicy:
    connectionPool:
      tcp: { maxConnections: 1 }
`;

describe('connection pool settings through the mesh', () => {
  const mesh = new TestMesh();
  let app: Awaited<ReturnType<typeof startApp>>;
  let echo: NetServer;
  let hung: NetServer;
  const hungSockets: Socket[] = [];
  let b: AgentHandle;
  const ports: Record<string, number> = {};
  const dispatcher = new Agent({ connections: 8, pipelining: 0 });

  const get = async (service: string, path: string, headers: Record<string, string> = {}): Promise<{ status: number; overflow: string | undefined; flags: string | undefined }> => {
    const r = await request(`http://127.0.0.1:${ports[service]}${path}`, { dispatcher, headersTimeout: 15_000, reset: true, headers });
    await r.body.text();
    return { status: r.statusCode, overflow: r.headers['x-mesh-overflow'] as string | undefined, flags: r.headers['x-mesh-response-flags'] as string | undefined };
  };
  /**
   * Upstream connections node B's inbound port has taken so far: TLS connections of their own, and streams on a
   * multiplexed one (each stream is one pooled connection of the caller's; docs/mux.md).
   */
  const accepted = async (): Promise<number> => {
    const r = await runMeshAgent(['status', '--agent', b.admin, '--state-dir', b.stateDir, '-o', 'json']);
    const s = (JSON.parse(r.stdout) as { inboundStats: { accepted: number; muxSessions: number; muxStreams: number } }).inboundStats;
    return s.accepted - s.muxSessions + s.muxStreams;
  };

  before(async () => {
    app = await startApp();
    echo = (await startEchoApp()).server;
    hung = createTcpServer((s) => void hungSockets.push(s)); // accepts, never answers a TLS handshake
    await new Promise<void>((r) => hung.listen(0, '127.0.0.1', r));
    const server = await mesh.startServer();
    const echoPort = (echo.address() as { port: number }).port;
    b = await mesh.startAgent(
      'node-b',
      mesh.writeConfig(
        'b.yaml',
        `inbound: { listen: "127.0.0.1:0" }\nadmin: { listen: "127.0.0.1:0" }\nservices:\n` +
          ['limited', 'retrying', 'churn', 'idle', 'split'].map((s) => `  - { name: ${s}, port: ${app.port}, protocol: http }\n`).join('') +
          `  - { name: echo, port: ${echoPort}, protocol: tcp }\n`,
      ),
      { join: await mesh.token(server) },
    );
    const bPort = b.inbound.split(':')[1];
    const hungPort = (hung.address() as { port: number }).port;
    mesh.writeConfig(
      'endpoints.yaml',
      `services:\n` +
        ['limited', 'retrying', 'churn', 'idle', 'echo'].map((s) => `  ${s}: [{ address: 127.0.0.1, port: ${bPort} }]\n`).join('') +
        `  hung: [{ address: 127.0.0.1, port: ${hungPort} }]\n  split: [{ address: 127.0.0.1, port: ${bPort}, labels: { tier: a, version: v2 } }]\n`,
    );
    mesh.writeConfig('policy.yaml', POLICY);
    for (const s of ['limited', 'retrying', 'churn', 'idle', 'hung', 'echo', 'split']) ports[s] = await freePort();
    const upstreams = ['limited', 'retrying', 'churn', 'idle', 'hung', 'split'].map((s) => `{ service: ${s}, port: ${ports[s]}, protocol: http }`).concat(`{ service: echo, port: ${ports.echo}, protocol: tcp }`);
    await mesh.startAgent(
      'node-a',
      mesh.writeConfig('a.yaml', `inbound: { listen: "127.0.0.1:0" }\nadmin: { listen: "127.0.0.1:0" }\nendpointsFile: {{root}}/endpoints.yaml\npolicyFile: {{root}}/policy.yaml\nservices:\n  - name: web\n    port: 1\n    upstreams: [${upstreams.join(', ')}]\n`),
      { join: await mesh.token(server) },
    );
  });

  after(async () => {
    await dispatcher.close();
    app?.server.close();
    app?.server.closeAllConnections();
    echo?.close();
    for (const s of hungSockets) s.destroy();
    hung?.close();
    await mesh.close();
  });

  it('maxConnections 1 with one pending request: the second waits for the connection, the third overflows', async () => {
    const results = await Promise.all([get('limited', '/slow/1'), get('limited', '/slow/2'), get('limited', '/slow/3')]);
    const statuses = results.map((r) => r.status).sort();
    assert.deepEqual(statuses, [200, 200, 503], JSON.stringify(results));
    const refused = results.find((r) => r.status === 503)!;
    assert.equal(refused.overflow, 'max-pending-requests');
    assert.equal(refused.flags, 'UO');
    assert.equal(app.hits.get('slow'), 2, 'the refused request never reached the app');
  });

  it('maxRetries 1: of three requests failing at once only one is retried, and it gets all its attempts', async () => {
    const results = await Promise.all([get('retrying', '/fail/1'), get('retrying', '/fail/2'), get('retrying', '/fail/3')]);
    assert.deepEqual(results.map((r) => r.status), [503, 503, 503]);
    // 3 first attempts; the one admitted retry runs its 3 attempts one after another; the others answer at once.
    assert.equal(app.hits.get('fail'), 6);
  });

  it('a subset with its own trafficPolicy gets its own limits; the service level and other subsets keep theirs', async () => {
    const limited = await Promise.all([1, 2, 3].map((i) => get('split', `/slow/l${i}`, { 'x-subset': 'limited' })));
    assert.deepEqual(limited.map((r) => r.status).sort(), [200, 503, 503], JSON.stringify(limited));
    assert.ok(limited.filter((r) => r.status === 503).every((r) => r.overflow === 'max-requests'));
    const all = await Promise.all([1, 2, 3].map((i) => get('split', `/slow/a${i}`)));
    assert.deepEqual(all.map((r) => r.status), [200, 200, 200], 'subset "all" uses the service-level policy (no limit)');
  });

  it('maxRequestsPerConnection 1: every request opens a new mTLS connection', async () => {
    const start = await accepted();
    for (let i = 0; i < 4; i++) assert.equal((await get('churn', '/x')).status, 200);
    assert.equal((await accepted()) - start, 4);
  });

  it('between agents HTTP/1.1 is multiplexed: concurrent requests are streams on one mTLS connection', async () => {
    const inbound = async (): Promise<{ accepted: number; muxSessions: number; muxStreams: number }> =>
      (JSON.parse((await runMeshAgent(['status', '--agent', b.admin, '--state-dir', b.stateDir, '-o', 'json'])).stdout) as { inboundStats: { accepted: number; muxSessions: number; muxStreams: number } }).inboundStats;
    const before = await inbound();
    const results = await Promise.all([1, 2, 3, 4, 5, 6].map((i) => get('churn', `/m${i}`)));
    assert.deepEqual(results.map((r) => r.status), [200, 200, 200, 200, 200, 200]);
    const after = await inbound();
    assert.equal(after.muxStreams - before.muxStreams, 6, 'one stream per request (maxRequestsPerConnection 1)');
    assert.ok(after.accepted - before.accepted <= 1, `${after.accepted - before.accepted} mTLS connections for 6 concurrent requests`);
    assert.equal(after.accepted - before.accepted, after.muxSessions - before.muxSessions, 'every mTLS connection was a multiplexed one');
  });

  it('idleTimeout: an idle pooled connection is closed and the next request opens a new one', async () => {
    const start = await accepted();
    assert.equal((await get('idle', '/x')).status, 200);
    assert.equal((await get('idle', '/x')).status, 200, 'reuses the pooled connection');
    assert.equal((await accepted()) - start, 1, 'two requests back to back, one connection');
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal((await get('idle', '/x')).status, 200);
    assert.equal((await accepted()) - start, 2, 'the idle connection was closed, a new one was opened');
  });

  it('connectTimeout: an endpoint that never completes the handshake fails the request with UF, not after 10 s', async () => {
    const t0 = Date.now();
    const r = await get('hung', '/x');
    assert.equal(r.status, 503);
    // Istio's default retries (2, on connect-failure) run too: three attempts of 300 ms each.
    assert.match(r.flags ?? '', /^(UF|URX)$/);
    assert.ok(Date.now() - t0 < 8000, `took ${Date.now() - t0} ms`);
  });

  it('TCP maxConnections 1: a second connection is closed while the first is open', async () => {
    const first = new Socket();
    await new Promise<void>((r) => first.connect(ports.echo!, '127.0.0.1', r));
    const got = new Promise<string>((r) => first.once('data', (d) => r(d.toString())));
    first.write('one');
    assert.equal(await got, 'one');
    const second = await tcpExchange(ports.echo!, 'two', { timeoutMs: 5000 });
    assert.equal(second.received.length, 0);
    assert.ok(second.closed, 'closed by the agent');
    first.destroy();
    await new Promise((r) => setTimeout(r, 300));
    const third = await tcpExchange(ports.echo!, 'three', { timeoutMs: 5000 });
    assert.equal(third.received.toString(), 'three', 'the slot came back when the first connection closed');
  });
});
