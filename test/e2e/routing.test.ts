// Routing and resilience from Istio VirtualService / DestinationRule, through real agents: splits, matches,
// retries, timeouts, faults, redirects, rewrites, header edits, mirroring, outlier detection, circuit breaking.

import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Agent, request } from 'undici';
import { TestMesh, type AgentHandle, type ServerHandle } from '../helpers/mesh';
import { freePort, runMeshAgent } from '../helpers/processes';

interface App {
  server: Server;
  port: number;
  hits: { path: string; headers: IncomingHttpHeaders }[];
  failLeft: number;
}

async function startApp(version: string): Promise<App> {
  const app: App = { server: undefined as unknown as Server, port: 0, hits: [], failLeft: 0 };
  app.server = createServer((req, res) => {
    app.hits.push({ path: req.url ?? '', headers: req.headers });
    req.resume();
    const path = req.url ?? '/';
    const reply = (status: number, body: string): void => {
      res.writeHead(status, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body), 'x-version': version });
      res.end(body);
    };
    if (path.startsWith('/retry') && app.failLeft > 0) {
      app.failLeft--;
      return reply(503, 'not yet');
    }
    if (path.startsWith('/slow')) return void setTimeout(() => reply(200, version), 3000).unref();
    if (path.startsWith('/flaky') && version === 'v2') return reply(500, 'broken');
    if (path.startsWith('/cb')) return void setTimeout(() => reply(200, version), 600).unref();
    reply(200, version);
  });
  await new Promise<void>((r) => app.server.listen(0, '127.0.0.1', r));
  app.port = (app.server.address() as { port: number }).port;
  return app;
}

const BASE_POLICY = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: reviews }
spec:
  host: reviews
  trafficPolicy: { loadBalancer: { simple: ROUND_ROBIN } }
  subsets:
    - { name: v1, labels: { version: v1 } }
    - { name: v2, labels: { version: v2 } }
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: reviews }
spec:
  hosts: [reviews]
  http:
    - match: [{ headers: { end-user: { exact: jason } } }]
      route: [{ destination: { host: reviews, subset: v2 } }]
    - match: [{ uri: { prefix: /fault } }]
      fault: { abort: { percentage: { value: 100 }, httpStatus: 418 } }
      route: [{ destination: { host: reviews, subset: v1 } }]
    - match: [{ uri: { prefix: /delay } }]
      fault: { delay: { percentage: { value: 100 }, fixedDelay: 300ms } }
      route: [{ destination: { host: reviews, subset: v1 } }]
    - match: [{ uri: { prefix: /slow } }]
      timeout: 0.5s
      retries: { attempts: 0 }
      route: [{ destination: { host: reviews, subset: v1 } }]
    - match: [{ uri: { prefix: /retry } }]
      retries: { attempts: 3, retryOn: 5xx }
      route: [{ destination: { host: reviews, subset: v1 } }]
    - match: [{ uri: { exact: /redirect } }]
      redirect: { uri: /moved, redirectCode: 301 }
    - match: [{ uri: { exact: /direct } }]
      directResponse: { status: 200, body: { string: "answered by the mesh" } }
    - match: [{ uri: { prefix: /old/ } }]
      rewrite: { uri: /new/ }
      headers:
        request: { set: { x-added: "yes" }, remove: [x-secret] }
        response: { set: { x-resp: "1" } }
      route: [{ destination: { host: reviews, subset: v1 } }]
    - match: [{ uri: { prefix: /mirror } }]
      route: [{ destination: { host: reviews, subset: v1 } }]
      mirror: { host: reviews, subset: v2 }
      mirrorPercentage: { value: 100 }
    - match: [{ uri: { prefix: /flaky } }, { uri: { prefix: /cb } }, { uri: { prefix: /any } }]
      retries: { attempts: 0 }
      route: [{ destination: { host: reviews } }]
    - route:
        - { destination: { host: reviews, subset: v1 }, weight: 90 }
        - { destination: { host: reviews, subset: v2 }, weight: 10 }
`;

describe('routing and resilience through the mesh', () => {
  const mesh = new TestMesh();
  let v1: App;
  let v2: App;
  let a: AgentHandle;
  let server: ServerHandle;
  let upstream = 0;
  let policyFile = '';
  const dispatcher = new Agent({ connections: 8 });

  const get = async (path: string, headers: Record<string, string> = {}): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }> => {
    const r = await request(`http://127.0.0.1:${upstream}${path}`, { headers, dispatcher, headersTimeout: 10_000 });
    return { status: r.statusCode, headers: r.headers, body: await r.body.text() };
  };
  let reloads = 0;
  const reload = async (text: string, expect: RegExp = /policy reloaded/): Promise<void> => {
    writeFileSync(policyFile, text);
    reloads++;
    const count = (): number => (a.proc.stderr.match(new RegExp(expect.source, 'g')) ?? []).length;
    const seen = count();
    a.proc.child.kill('SIGHUP');
    // Counted, not matched with a repeated group: that regex backtracks exponentially as the log grows.
    for (const deadline = Date.now() + 15_000; count() === seen; await new Promise((r) => setTimeout(r, 20))) {
      if (Date.now() > deadline) throw new Error(`no ${expect} after SIGHUP:\n${a.proc.stderr}`);
    }
  };

  before(async () => {
    v1 = await startApp('v1');
    v2 = await startApp('v2');
    server = await mesh.startServer();
    const b1 = await mesh.startAgent('node-b1', mesh.writeConfig('b1.yaml', `inbound: { listen: "127.0.0.1:0" }\nadmin: { listen: "127.0.0.1:0" }\nservices: [{ name: reviews, port: ${v1.port}, protocol: http }]\n`), { join: await mesh.token(server) });
    const b2 = await mesh.startAgent('node-b2', mesh.writeConfig('b2.yaml', `inbound: { listen: "127.0.0.1:0" }\nadmin: { listen: "127.0.0.1:0" }\nservices: [{ name: reviews, port: ${v2.port}, protocol: http }]\n`), { join: await mesh.token(server) });
    const port = (h: AgentHandle): string => h.inbound.split(':')[1]!;
    mesh.writeConfig('endpoints.yaml', `services:\n  reviews:\n    - { address: 127.0.0.1, port: ${port(b1)}, labels: { version: v1 } }\n    - { address: 127.0.0.1, port: ${port(b2)}, labels: { version: v2 } }\n`);
    policyFile = join(mesh.root, 'policy.yaml');
    writeFileSync(policyFile, BASE_POLICY);
    upstream = await freePort();
    a = await mesh.startAgent(
      'node-a',
      mesh.writeConfig('a.yaml', `inbound: { listen: "127.0.0.1:0" }\nadmin: { listen: "127.0.0.1:0" }\nendpointsFile: {{root}}/endpoints.yaml\npolicyFile: {{root}}/policy.yaml\nservices:\n  - name: productpage\n    port: 1\n    upstreams: [{ service: reviews, port: ${upstream}, protocol: http }]\n`),
      { join: await mesh.token(server) },
    );
  });

  after(async () => {
    await dispatcher.close();
    v1?.server.close();
    v2?.server.close();
    v1?.server.closeAllConnections();
    v2?.server.closeAllConnections();
    await mesh.close();
  });

  it('splits 90/10 between subsets over 2,000 requests (tolerance ±3 points)', async () => {
    const counts: Record<string, number> = { v1: 0, v2: 0 };
    for (let i = 0; i < 2000; i += 20) {
      const batch = await Promise.all(Array.from({ length: 20 }, () => get('/split')));
      for (const r of batch) counts[r.body] = (counts[r.body] ?? 0) + 1;
    }
    assert.equal(counts.v1! + counts.v2!, 2000);
    const share = counts.v2! / 2000;
    assert.ok(share > 0.07 && share < 0.13, `v2 got ${(share * 100).toFixed(1)} %`);
  });

  it('matches on a header before the split (first match wins)', async () => {
    for (let i = 0; i < 10; i++) assert.equal((await get('/split', { 'end-user': 'jason' })).body, 'v2');
  });

  it('retries 5xx up to the attempts, counted at the upstream', async () => {
    v1.failLeft = 2;
    const before = v1.hits.filter((h) => h.path === '/retry').length;
    const r = await get('/retry');
    assert.equal(r.status, 200);
    assert.equal(v1.hits.filter((h) => h.path === '/retry').length - before, 3, 'two failures and the success reached the app');
    v1.failLeft = 10;
    const gaveUp = await get('/retry');
    assert.equal(gaveUp.status, 503, 'after 1 + 3 attempts the last answer is passed on');
    assert.equal(v1.failLeft, 6);
    v1.failLeft = 0;
  });

  it('times a slow request out with 504 and flag UT', async () => {
    const r = await get('/slow');
    assert.equal(r.status, 504);
    assert.equal(r.headers['x-mesh-response-flags'], 'UT');
  });

  it('injects an abort (FI) and a delay (at least the fixed delay)', async () => {
    const before = v1.hits.length;
    const r = await get('/fault');
    assert.equal(r.status, 418);
    assert.equal(r.headers['x-mesh-response-flags'], 'FI');
    assert.equal(v1.hits.length, before, 'an aborted request never reaches the app');
    const t = Date.now();
    const d = await get('/delay');
    assert.equal(d.status, 200);
    assert.ok(Date.now() - t >= 290, 'delayed by the fault');
  });

  it('redirects and answers directly without the app', async () => {
    const r = await get('/redirect');
    assert.equal(r.status, 301);
    assert.match(String(r.headers.location), /\/moved$/);
    const d = await get('/direct');
    assert.equal(d.status, 200);
    assert.equal(d.body, 'answered by the mesh');
  });

  it('rewrites the path and edits request and response headers', async () => {
    const r = await get('/old/page?x=1', { 'x-secret': 'hush' });
    assert.equal(r.status, 200);
    assert.equal(r.headers['x-resp'], '1');
    const hit = v1.hits[v1.hits.length - 1]!;
    assert.equal(hit.path, '/new/page?x=1');
    assert.equal(hit.headers['x-added'], 'yes');
    assert.equal(hit.headers['x-secret'], undefined);
  });

  it('mirrors to another subset, fire and forget, with a -shadow host', async () => {
    const before = v2.hits.length;
    const r = await get('/mirror');
    assert.equal(r.body, 'v1');
    const deadline = Date.now() + 5000;
    while (v2.hits.length === before && Date.now() < deadline) await new Promise((res) => setTimeout(res, 20));
    const shadow = v2.hits[v2.hits.length - 1]!;
    assert.equal(shadow.path, '/mirror');
    assert.match(String(shadow.headers.host), /-shadow$/);
  });

  it('ejects an endpoint after consecutive 5xx: it gets no traffic until its ejection ends', async () => {
    await reload(BASE_POLICY.replace('trafficPolicy: { loadBalancer: { simple: ROUND_ROBIN } }', 'trafficPolicy:\n    loadBalancer: { simple: ROUND_ROBIN }\n    outlierDetection: { consecutive5xxErrors: 3, interval: 1s, baseEjectionTime: 60s, maxEjectionPercent: 100 }'));
    // Round robin over v1 and v2: v2 fails every /flaky request until ejected after 3.
    let v2Failures = 0;
    for (let i = 0; i < 6; i++) if ((await get('/flaky')).status === 500) v2Failures++;
    assert.equal(v2Failures, 3);
    const v2Before = v2.hits.length;
    for (let i = 0; i < 20; i++) assert.equal((await get('/flaky')).status, 200);
    assert.equal(v2.hits.length, v2Before, 'the ejected endpoint received nothing');
  });

  it('answers 503 with x-mesh-overflow when the circuit breaker is full', async () => {
    await reload(BASE_POLICY.replace('trafficPolicy: { loadBalancer: { simple: ROUND_ROBIN } }', 'trafficPolicy:\n    loadBalancer: { simple: ROUND_ROBIN }\n    connectionPool: { http: { http2MaxRequests: 1 } }'));
    const results = await Promise.all([get('/cb/1'), get('/cb/2'), get('/cb/3')]);
    const overflowed = results.filter((r) => r.status === 503 && r.headers['x-mesh-overflow'] === 'max-requests');
    assert.equal(overflowed.length, 2, JSON.stringify(results.map((r) => [r.status, r.headers['x-mesh-overflow']])));
    assert.equal(overflowed[0]!.headers['x-mesh-response-flags'], 'UO');
  });

  it('consistentHash useSourceIp keeps one client on one endpoint; a missing header key spreads requests', async () => {
    const versions = async (): Promise<Set<string>> => {
      const seen = new Set<string>();
      for (let i = 0; i < 20; i++) seen.add((await get('/any')).headers['x-version'] as string);
      return seen;
    };
    await reload(BASE_POLICY.replace('trafficPolicy: { loadBalancer: { simple: ROUND_ROBIN } }', 'trafficPolicy: { loadBalancer: { consistentHash: { useSourceIp: true } } }'));
    assert.equal((await versions()).size, 1, 'every request from 127.0.0.1 hashes to the same endpoint');
    await reload(BASE_POLICY.replace('trafficPolicy: { loadBalancer: { simple: ROUND_ROBIN } }', 'trafficPolicy: { loadBalancer: { consistentHash: { httpHeaderName: x-user } } }'));
    assert.equal((await versions()).size, 2, 'without the key each request lands on a random point of the ring');
  });

  it('refuses an invalid policy on reload and keeps serving with the previous one', async () => {
    await reload(BASE_POLICY);
    await reload('apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { name: reviews }\nspec:\n  hosts: [reviews]\n  http:\n    - route: [{ destination: { host: reviews }, weight: 150 }]\n', /policy rejected, keeping the previous one/);
    assert.match(a.proc.stderr, /spec\.http\[0\]\.route\[0\]\.weight/);
    assert.equal((await get('/direct')).body, 'answered by the mesh', 'the previous policy is still in force');
    assert.ok(reloads > 0);
  });

  it('keeps its policy file in force over the mesh policy: a pushed version is verified, held and acknowledged, not applied', async () => {
    const meshPolicy = BASE_POLICY.replace('answered by the mesh', 'answered by the mesh policy');
    const file = join(mesh.root, 'mesh-policy.yaml');
    writeFileSync(file, meshPolicy);
    const applied = await runMeshAgent(['apply', '-f', file, '--admin', server.adminAddr, '--data-dir', server.dataDir]);
    assert.equal(applied.code, 0, applied.stderr);
    await a.proc.waitFor(/mesh policy version held, not applied: the local policy file overrides it.*version=1/);
    assert.equal((await get('/direct')).body, 'answered by the mesh', 'the file still decides');
    const status = await runMeshAgent(['status', '-o', 'json', '--admin', server.adminAddr, '--data-dir', server.dataDir]);
    const nodeA = (JSON.parse(status.stdout) as { agents: { nodeName: string; policy: { version: number; override: boolean } }[] }).agents.find((x) => x.nodeName === 'node-a')!;
    assert.deepEqual(nodeA.policy, { version: 1, override: true, error: null });
  });
});
