// The dashboard against a running mesh: a real server and agent processes, traffic web -> api through the mesh, exact
// counts in the JSON, the login link and its cookie, and the page itself in Debian's chromium (a screenshot is kept).
//
// The counts come from the data plane: node A's outbound side counts each request (Istio metrics' caller-side hop) into
// the aggregator its stats messages carry over the mTLS channel to the server's window, the admin port and the page.
// Node A runs in this process only so the test can also forge a series for a service it does not run.

import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { request } from 'undici';
import { loadAgentConfig, MeshAgent } from '../../src/agent';
import { MESH_VERSION } from '../../src/protocol';
import { TestMesh, type AgentHandle, type ServerHandle } from '../helpers/mesh';
import { freePort, runMeshAgent } from '../helpers/processes';

const ROOT = join(__dirname, '..', '..', '..');
const CHROMIUM = '/usr/bin/chromium';
const OK_REQUESTS = 20;
const FAILED_REQUESTS = 5;

interface ServiceJson {
  name: string;
  nodes: string[];
  requests: number;
  errors: number;
  rps: number;
  errorRatio: number;
  p50Ms: number | null;
  p99Ms: number | null;
  codes: Record<string, number>;
}
interface EdgeJson extends Omit<ServiceJson, 'name' | 'nodes'> {
  source: string;
  destination: string;
}

/** The api app: 503 on /fail, 200 otherwise. */
async function startApi(): Promise<{ server: Server; port: number }> {
  const server = createServer((req, res) => {
    req.resume();
    const fail = req.url === '/fail';
    res.writeHead(fail ? 503 : 200, { 'content-type': 'text/plain' });
    res.end(fail ? 'failing on purpose\n' : 'api ok\n');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, port: (server.address() as { port: number }).port };
}

async function waitFor<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

describe('dashboard', () => {
  const mesh = new TestMesh();
  let server: ServerHandle;
  let nodeB: AgentHandle;
  let nodeA: MeshAgent;
  let api: { server: Server; port: number };
  let token: string;
  let upstream: number;

  /** Sends `ok` requests that api answers 200 and `failed` that it answers 503 through node A. */
  const traffic = async (ok: number, failed: number): Promise<void> => {
    for (const path of [...new Array<string>(ok).fill('/ok'), ...new Array<string>(failed).fill('/fail')]) {
      const res = await request(`http://127.0.0.1:${upstream}${path}`, { headersTimeout: 10_000 });
      await res.body.text();
      assert.equal(res.statusCode, path === '/ok' ? 200 : 503, `${path} through the mesh`);
    }
  };

  const admin = async (method: 'GET' | 'POST', path: string, headers: Record<string, string> = { authorization: `Bearer ${token}` }): Promise<{ status: number; body: string; headers: Record<string, string | string[] | undefined> }> => {
    const res = await request(`http://${server.adminAddr}${path}`, { method, headers });
    return { status: res.statusCode, body: await res.body.text(), headers: res.headers };
  };
  const dashboardLink = async (): Promise<string> => {
    const r = await runMeshAgent(['dashboard', '--admin', server.adminAddr, '--data-dir', server.dataDir, '-o', 'json']);
    assert.equal(r.code, 0, r.stderr);
    return (JSON.parse(r.stdout) as { url: string }).url;
  };

  before(async () => {
    server = await mesh.startServer();
    token = readFileSync(join(server.dataDir, 'admin-token'), 'utf8').trim();
    api = await startApi();
    nodeB = await mesh.startAgent('node-b', mesh.writeConfig('b.yaml', `inbound: { listen: "127.0.0.1:0" }\nadmin: { listen: "127.0.0.1:0" }\nservices:\n  - { name: api, port: ${api.port}, protocol: http }\n`), { join: await mesh.token(server) });
    mesh.writeConfig('endpoints.yaml', `services:\n  api: [{ address: 127.0.0.1, port: ${nodeB.inbound.split(':')[1]} }]\n`);
    upstream = await freePort();
    const file = mesh.writeConfig('a.yaml', `nodeName: node-a\nstateDir: {{root}}/node-a-state\ninbound: { listen: "127.0.0.1:0" }\nadmin: { listen: "127.0.0.1:0" }\nendpointsFile: {{root}}/endpoints.yaml\nservices:\n  - name: web\n    port: 1\n    protocol: http\n    upstreams: [{ service: api, port: ${upstream}, protocol: http }]\n`);
    nodeA = new MeshAgent(loadAgentConfig({ file, env: {} }), { joinToken: await mesh.token(server) });
    await nodeA.start();
    await nodeA.ready();
    // A series for a service node A does not run: the server must not believe it.
    nodeA.requestStats.record({ name: 'payments', namespace: 'default' }, { name: 'api', namespace: 'default' }, 200, 1);
    await traffic(OK_REQUESTS, FAILED_REQUESTS);
  });

  after(async () => {
    await nodeA?.close();
    api?.server.close();
    await mesh.close();
  });

  it('serves exact counts, rates and percentiles of the traffic as JSON, and both agents with version and certificates', async () => {
    const services = await waitFor('the api service to show all requests', async () => {
      const r = await admin('GET', '/v1/dashboard/services');
      assert.equal(r.status, 200, r.body);
      const all = (JSON.parse(r.body) as { services: ServiceJson[] }).services;
      return all.find((s) => s.name === 'api')?.requests === OK_REQUESTS + FAILED_REQUESTS ? all : undefined;
    });
    const apiRow = services.find((s) => s.name === 'api')!;
    assert.equal(apiRow.errors, FAILED_REQUESTS);
    assert.deepEqual(apiRow.codes, { 200: OK_REQUESTS, 503: FAILED_REQUESTS });
    assert.equal(apiRow.errorRatio, FAILED_REQUESTS / (OK_REQUESTS + FAILED_REQUESTS));
    assert.equal(apiRow.rps, Math.round(((OK_REQUESTS + FAILED_REQUESTS) / 60) * 1000) / 1000);
    assert.ok(apiRow.p50Ms! > 0 && apiRow.p99Ms! >= apiRow.p50Ms!, `p50 ${apiRow.p50Ms} p99 ${apiRow.p99Ms}`);
    assert.deepEqual(apiRow.nodes, ['node-b']);
    assert.deepEqual(services.find((s) => s.name === 'web')!.requests, 0, 'web runs on node-a and is called by nobody');

    const graph = JSON.parse((await admin('GET', '/v1/dashboard/graph')).body) as { nodes: { id: string }[]; edges: EdgeJson[] };
    assert.deepEqual(graph.nodes.map((n) => n.id), ['api', 'web'], 'no "payments": node A did not declare it, so its series were ignored');
    assert.deepEqual(graph.edges.map((e) => [e.source, e.destination, e.requests, e.errors, e.errorRatio]), [['web', 'api', 25, 5, 0.2]]);

    const agents = (JSON.parse((await admin('GET', '/v1/dashboard/agents')).body) as { agents: { nodeName: string; connected: boolean; version: string; services: string[]; certificates: { identity: string; expiresInSeconds: number }[] }[] }).agents;
    assert.deepEqual(agents.map((a) => [a.nodeName, a.connected, a.version, a.services]).sort(), [['node-a', true, MESH_VERSION, ['web']], ['node-b', true, MESH_VERSION, ['api']]]);
    const webCert = agents.find((a) => a.nodeName === 'node-a')!.certificates.find((c) => c.identity === 'spiffe://mesh.local/ns/default/sa/web');
    assert.ok(webCert && webCert.expiresInSeconds > 3600, 'node-a reports its workload certificate and when it expires');
  });

  it('shows the policy in force and its history', async () => {
    const file = join(mesh.root, 'dr.yaml');
    writeFileSync(file, 'apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: { name: api }\nspec:\n  host: api\n  trafficPolicy: { loadBalancer: { simple: ROUND_ROBIN } }\n');
    const applied = await runMeshAgent(['apply', '-f', file, '--admin', server.adminAddr, '--data-dir', server.dataDir]);
    assert.equal(applied.code, 0, applied.stderr);
    const policies = JSON.parse((await admin('GET', '/v1/dashboard/policies')).body) as { version: number; documents: { kind: string; name: string }[]; history: { version: number; actor: string; changes: { action: string; name: string }[] }[] };
    assert.equal(policies.version, 1);
    assert.deepEqual(policies.documents.map((d) => `${d.kind}/${d.name}`), ['DestinationRule/api']);
    assert.deepEqual(policies.history.map((v) => [v.version, v.actor, v.changes.map((c) => `${c.action} ${c.name}`)]), [[1, 'admin', ['added api']]]);
  });

  it('lets a browser in with a one-time link that sets an HttpOnly cookie good only for reading the dashboard', async () => {
    assert.equal((await admin('GET', '/v1/dashboard/graph', {})).status, 401, 'no token, no cookie');
    assert.equal((await admin('GET', '/dashboard/', {})).status, 401);
    const url = new URL(await dashboardLink());
    assert.equal(url.host, server.adminAddr);
    const login = await admin('GET', `${url.pathname}${url.search}`, {});
    assert.equal(login.status, 303);
    assert.equal(login.headers.location, '/dashboard/');
    const cookie = String(login.headers['set-cookie']);
    assert.match(cookie, /^mesh_dashboard=[\w-]+; Path=\/; HttpOnly; SameSite=Strict/);
    const session = { cookie: cookie.split(';')[0]! };
    assert.equal((await admin('GET', `${url.pathname}${url.search}`, {})).status, 401, 'the link works once');
    const page = await admin('GET', '/dashboard/', session);
    assert.equal(page.status, 200);
    assert.match(String(page.headers['content-security-policy']), /script-src 'self'/);
    assert.equal((await admin('GET', '/v1/dashboard/graph', session)).status, 200);
    assert.equal((await admin('GET', '/v1/status', session)).status, 401, 'the cookie opens the dashboard only');
    assert.equal((await admin('POST', '/v1/dashboard/login-codes', session)).status, 401, 'a session cannot make more links');
  });

  it('draws the web -> api edge with its rate in chromium (screenshot in test-artifacts/)', async (t) => {
    if (!existsSync(CHROMIUM)) return t.skip(`${CHROMIUM} is missing: apt-get install -y chromium (.ci/test-deps.sh installs it as root)`);
    const { chromium } = await import('playwright-core');
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--headless', '--no-sandbox', '--disable-gpu'] });
    try {
      // More of the same mix (20 % errors), so the edge is in the window however slowly the browser started.
      await traffic(4, 1);
      const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
      const errors: string[] = [];
      page.on('pageerror', (e) => errors.push(e.message));
      page.on('response', (r) => void (r.status() >= 400 && errors.push(`${r.status()} ${r.url()}`)));
      await page.goto(await dashboardLink());
      assert.equal(new URL(page.url()).pathname, '/dashboard/');
      const edge = page.locator('#graph g.edge[data-source="web"][data-destination="api"]');
      await edge.waitFor({ timeout: 20_000 });
      assert.ok(Number(await edge.getAttribute('data-rps')) > 0, 'the edge carries a non-zero rate');
      assert.match((await edge.locator('text').textContent()) ?? '', /^[\d.]+ req\/s, 20\.0 % err$/);
      assert.equal(await edge.getAttribute('class'), 'edge bad', '20 % errors colour the edge red');
      const apiRow = page.locator('#services tbody tr', { hasText: 'api' }).first();
      assert.ok(Number(await apiRow.locator('td').nth(2).textContent()) > 0, 'the services table shows a non-zero rate for api');
      assert.match((await page.locator('#agents tbody').textContent()) ?? '', /node-a[\s\S]*node-b|node-b[\s\S]*node-a/);
      assert.match((await page.locator('#history tbody').textContent()) ?? '', /added DestinationRule default\/api/);
      mkdirSync(join(ROOT, 'test-artifacts'), { recursive: true });
      await page.screenshot({ path: join(ROOT, 'test-artifacts', 'dashboard.png'), fullPage: true });
      assert.deepEqual(errors, [], 'no script errors and no failed requests on the page');
    } finally {
      await browser.close();
    }
  });
});
