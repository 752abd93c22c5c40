// The policy lifecycle through real processes: apply with the CLI, pushed and applied by the agents (routing changes
// through two agents), dry run, get as applied, history (with named admin tokens), rollback, an agent that was down catching up, and an agent
// restarted while the server is gone coming up with its cached version.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Agent, request } from 'undici';
import { startHttpApp } from '../helpers/apps';
import { TestMesh, type AgentHandle, type ServerHandle } from '../helpers/mesh';
import { CLI, freePort, runMeshAgent } from '../helpers/processes';

type App = Awaited<ReturnType<typeof startHttpApp>>;

const DR = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: reviews }
spec:
  host: reviews
  subsets:
    - { name: v1, labels: { version: v1 } }
    - { name: v2, labels: { version: v2 } }
`;
// Comments and spacing are part of what must come back byte for byte.
const VS_ALL_V1 = `# every request to reviews v1   (team B)
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: reviews }
spec:
  hosts: [reviews]
  http:
    - route: [{ destination: { host: reviews, subset: v1 } }]
`;
const VS_JASON_V2 = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: reviews }
spec:
  hosts: [reviews]
  http:
    - match: [{ headers: { end-user: { exact: jason } } }]
      route: [{ destination: { host: reviews, subset: v2 } }]
    - route: [{ destination: { host: reviews, subset: v1 } }]
`;
const VS_FAULT = VS_JASON_V2.replace(
  '    - route: [{ destination: { host: reviews, subset: v1 } }]\n',
  '    - match: [{ uri: { prefix: /fault } }]\n      fault: { abort: { percentage: { value: 100 }, httpStatus: 418 } }\n      route: [{ destination: { host: reviews, subset: v1 } }]\n    - route: [{ destination: { host: reviews, subset: v1 } }]\n',
);

describe('policy lifecycle through real agents', () => {
  const mesh = new TestMesh();
  const dispatcher = new Agent({ connections: 4 });
  let v1: App;
  let v2: App;
  let server: ServerHandle;
  let a: AgentHandle;
  let upstream = 0;

  const admin = (): string[] => ['--admin', server.adminAddr, '--data-dir', server.dataDir];
  const cli = async (args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> => {
    const r = await runMeshAgent([...args, ...admin()]);
    assert.equal(r.code, 0, `mesh-agent ${args.join(' ')} failed:\n${r.stderr}`);
    return r;
  };
  /** `mesh-agent apply -f -` with `text` on stdin. */
  const applyStdin = (text: string): Promise<{ code: number | null; stdout: string; stderr: string }> =>
    new Promise((resolve) => {
      const child = spawn(process.execPath, [CLI, 'apply', '-f', '-', ...admin()], { stdio: ['pipe', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
      child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
      child.on('exit', (code) => resolve({ code, stdout, stderr }));
      child.stdin.end(text);
    });
  /** A request through node-a's upstream port; `body` is the name of the app that answered, or the body the mesh made. */
  const get = async (path: string, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> => {
    const r = await request(`http://127.0.0.1:${upstream}${path}`, { headers, dispatcher, headersTimeout: 10_000 });
    const text = await r.body.text();
    return { status: r.statusCode, body: r.statusCode === 200 ? (JSON.parse(text) as { app: string }).app : text };
  };
  /** Polls until `check` holds for an answer of node-a's upstream port: pushed policy is applied within seconds. */
  const eventually = async (what: string, check: () => Promise<boolean>, timeoutMs = 15_000): Promise<void> => {
    const deadline = Date.now() + timeoutMs;
    while (!(await check())) {
      if (Date.now() > deadline) assert.fail(`${what}: not within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  const jasonGets = async (version: string): Promise<boolean> => (await get('/', { 'end-user': 'jason' })).body === version;

  before(async () => {
    v1 = await startHttpApp('v1');
    v2 = await startHttpApp('v2');
    server = await mesh.startServer(['--listen', `127.0.0.1:${await freePort()}`, '--admin-listen', `127.0.0.1:${await freePort()}`]);
    const node = (name: string, port: number): string => mesh.writeConfig(`${name}.yaml`, `inbound: { listen: "127.0.0.1:0" }\nadmin: { listen: "127.0.0.1:0" }\nservices: [{ name: reviews, port: ${port}, protocol: http }]\n`);
    const b1 = await mesh.startAgent('node-b1', node('node-b1', v1.port), { join: await mesh.token(server) });
    const b2 = await mesh.startAgent('node-b2', node('node-b2', v2.port), { join: await mesh.token(server) });
    const port = (h: AgentHandle): string => h.inbound.split(':')[1]!;
    mesh.writeConfig('endpoints.yaml', `services:\n  reviews:\n    - { address: 127.0.0.1, port: ${port(b1)}, labels: { version: v1 } }\n    - { address: 127.0.0.1, port: ${port(b2)}, labels: { version: v2 } }\n`);
    upstream = await freePort();
    const config = mesh.writeConfig(
      'node-a.yaml',
      `inbound: { listen: "127.0.0.1:0" }\nadmin: { listen: "127.0.0.1:0" }\nendpointsFile: {{root}}/endpoints.yaml\nservices:\n  - name: productpage\n    port: 1\n    upstreams: [{ service: reviews, port: ${upstream}, protocol: http }]\n`,
    );
    a = await mesh.startAgent('node-a', config, { join: await mesh.token(server) });
  });

  after(async () => {
    await dispatcher.close();
    for (const app of [v1, v2]) {
      app?.server.close();
      app?.server.closeAllConnections();
    }
    await mesh.close();
  });

  it('apply -f DIR stores version 1 and node-a routes by it within seconds', async () => {
    const dir = join(mesh.root, 'policy');
    mkdirSync(dir);
    writeFileSync(join(dir, '10-dr.yaml'), DR);
    writeFileSync(join(dir, '20-vs.yml'), VS_ALL_V1);
    writeFileSync(join(dir, 'README.md'), 'not policy');
    const r = await cli(['apply', '-f', dir]);
    assert.match(r.stdout, /^policy version 1 \(was 0\)$/m);
    assert.match(r.stdout, /added\s+DestinationRule\s+default\/reviews/);
    assert.match(r.stdout, /reaches 1 agent: node-a \(/);
    await eventually('all requests to v1', async () => (await Promise.all([get('/'), get('/'), get('/'), get('/')])).every((x) => x.body === 'v1'));
    for (let i = 0; i < 10; i++) assert.equal((await get('/')).body, 'v1');
  });

  it('apply -f - changes the routing through two agents: jason goes to v2 on node-b2', async () => {
    const hitsBefore = v2.seen.length;
    const r = await applyStdin(VS_JASON_V2);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^policy version 2 \(was 1\)$/m);
    assert.match(r.stdout, /changed\s+VirtualService\s+default\/reviews/);
    await eventually('jason routed to v2', () => jasonGets('v2'));
    assert.ok(v2.seen.length > hitsBefore, 'the request reached the v2 app behind node-b2');
    assert.match(String(v2.seen.at(-1)!['x-forwarded-client-cert']), /spiffe:\/\/mesh\.local\/ns\/default\/sa\/productpage/, 'through node-b2, over mTLS from node-a');
    for (let i = 0; i < 5; i++) assert.equal((await get('/')).body, 'v1', 'everyone else still to v1');
  });

  it('status shows every agent connected with the version it applied', async () => {
    const token = readFileSync(join(server.dataDir, 'admin-token'), 'utf8').trim();
    await eventually('every agent acknowledged version 2', async () => {
      const r = await request(`http://${server.adminAddr}/v1/status`, { headers: { authorization: `Bearer ${token}` } });
      const s = (await r.body.json()) as { agents: { connected: boolean; policy: { version: number | null } }[] };
      return s.agents.length === 3 && s.agents.every((x) => x.connected && x.policy.version === 2);
    });
    const text = (await cli(['status'])).stdout;
    assert.match(text, /^policy version 2$/m);
    assert.match(text, /POLICY/);
    assert.match(text, /node-a .* v2 /);
  });

  it('get shows the documents, and -o yaml gives each back exactly as applied', async () => {
    assert.equal((await cli(['get', 'vs', 'reviews', '-o', 'yaml'])).stdout, VS_JASON_V2);
    assert.equal((await cli(['get', 'DestinationRule', 'reviews', '-n', 'default', '-o', 'yaml'])).stdout, DR);
    const table = (await cli(['get', 'all'])).stdout;
    assert.match(table, /^KIND\s+NAMESPACE\s+NAME\s+SINCE VERSION$/m);
    assert.match(table, /^DestinationRule\s+default\s+reviews\s+1$/m);
    assert.match(table, /^VirtualService\s+default\s+reviews\s+2$/m);
    const json = JSON.parse((await cli(['get', 'virtualservices', '-o', 'json'])).stdout) as { version: number; documents: { source: string }[] };
    assert.equal(json.version, 2);
    assert.equal(json.documents[0]!.source, VS_JASON_V2);
  });

  it('explain answers from the server\'s current version with the routing the agents apply', async () => {
    const jason = JSON.parse((await cli(['explain', '--from', 'productpage', '--to', 'reviews', 'GET', '/', '-H', 'end-user: jason', '-o', 'json'])).stdout) as {
      route: { source: string; rule: number; destinations: { service: string; subset: string }[] };
      mtls: { mode: string };
      authorization: { allowed: boolean };
    };
    assert.equal(jason.route.source, 'VirtualService reviews.default');
    assert.deepEqual(jason.route.destinations.map((d) => [d.service, d.subset]), [['reviews.default', 'v2']], 'the same subset the request above reached');
    assert.equal(jason.mtls.mode, 'STRICT');
    assert.equal(jason.authorization.allowed, true);
    const other = (await cli(['explain', '--from', 'productpage', '--to', 'reviews', 'GET', '/'])).stdout;
    assert.match(other, /destination: {2}reviews\.default subset v1/);
  });

  it('apply --dry-run says what would change and whom it would reach, and stores nothing', async () => {
    const file = join(mesh.root, 'fault.yaml');
    writeFileSync(file, VS_FAULT);
    const r = await cli(['apply', '--dry-run', '-f', file]);
    assert.match(r.stdout, /^dry run: would make policy version 3 \(now 2\); nothing was stored$/m);
    assert.match(r.stdout, /changed\s+VirtualService\s+default\/reviews/);
    assert.match(r.stdout, /would reach 1 agent: node-a \(/);
    const json = JSON.parse((await cli(['apply', '--dry-run', '-f', file, '-o', 'json'])).stdout) as { created: boolean; agents: { nodeName: string }[] };
    assert.equal(json.created, false);
    assert.deepEqual(
      json.agents.map((x) => x.nodeName),
      ['node-a'],
    );
    const history = JSON.parse((await cli(['history', '-o', 'json'])).stdout) as { versions: { version: number }[] };
    assert.deepEqual(
      history.versions.map((v) => v.version),
      [2, 1],
    );
    assert.equal((await get('/fault')).status, 200, 'the dry-run fault is not in force');
  });

  it('rollback --to 1 restores the exact earlier documents as version 3, and the routing with them', async () => {
    const r = await cli(['rollback', '--to', '1']);
    assert.match(r.stdout, /^policy version 3 \(was 2\)$/m);
    await eventually('jason back on v1', () => jasonGets('v1'));
    assert.equal((await cli(['get', 'vs', 'reviews', '-o', 'yaml'])).stdout, VS_ALL_V1, 'byte for byte, comment included');
    const h = (await cli(['history'])).stdout;
    assert.match(h, /^VERSION\s+WHEN\s+WHO\s+OPERATION\s+CHANGES$/m);
    assert.match(h, /^3\s+\S+ \(.*\)\s+admin\s+rollback to 1\s+~VirtualService default\/reviews$/m);
    assert.match(h, /^1\s+.*admin\s+apply\s+\+DestinationRule default\/reviews, \+VirtualService default\/reviews$/m);
    const one = JSON.parse((await cli(['history', 'DestinationRule/reviews', '-o', 'json'])).stdout) as { versions: { version: number }[] };
    assert.deepEqual(
      one.versions.map((v) => v.version),
      [1],
    );
  });

  it('an agent that was down gets the newest version when it comes back; history names the admin token that applied it', async () => {
    assert.equal(await a.proc.stop('SIGTERM'), 0);
    const alice = JSON.parse((await cli(['admin-token', 'create', '--name', 'alice', '-o', 'json'])).stdout) as { name: string; token: string; createdBy: string };
    assert.equal(alice.createdBy, 'admin');
    const r = await cli(['apply', '-f', join(mesh.root, 'fault.yaml'), '--admin-token', alice.token]);
    assert.match(r.stdout, /^policy version 4 \(was 3\)$/m);
    assert.match((await cli(['history'])).stdout, /^4\s+\S+ \(.*\)\s+alice\s+apply\s+~VirtualService default\/reviews$/m);
    assert.match((await cli(['admin-token', 'list'])).stdout, /^alice {2}created \S+ by admin {2}last used \d{4}-/m);
    await cli(['admin-token', 'revoke', '--name', 'alice']);
    const revoked = await runMeshAgent(['history', '--admin-token', alice.token, ...admin()]);
    assert.equal(revoked.code, 1);
    assert.match(revoked.stderr, /MESH_ERR_ADMIN_AUTH: wrong admin token/);
    assert.match(r.stdout, /reaches 1 agent: node-a \(\w+, disconnected: gets it when it reconnects\)/);
    a = await mesh.startAgent('node-a', a.configFile, { stateDir: a.stateDir });
    await a.proc.waitFor(/mesh policy loaded from the cache.*version=3/);
    await eventually('the fault of version 4 in force', async () => (await get('/fault')).status === 418);
    assert.equal((await get('/', { 'end-user': 'jason' })).body, 'v2');
  });

  it('an agent restarted while the server is down comes up with its cached version in force', async () => {
    await a.proc.waitFor(/mesh policy version accepted.*version=4/);
    assert.equal(await server.proc.stop('SIGKILL'), -1);
    assert.equal(await a.proc.stop('SIGTERM'), 0);
    a = await mesh.startAgent('node-a', a.configFile, { stateDir: a.stateDir });
    await a.proc.waitFor(/mesh policy loaded from the cache.*version=4/);
    assert.equal((await get('/fault')).status, 418, 'the fault injected by version 4');
    assert.equal((await get('/', { 'end-user': 'jason' })).body, 'v2', 'the header route of version 4, through node-b2');
    assert.equal((await get('/')).body, 'v1');
    assert.doesNotMatch(a.proc.stdout + a.proc.stderr, /connected to server/, 'the server really is gone');
    // A config reload without a policy file keeps the mesh version in force.
    a.proc.child.kill('SIGHUP');
    await a.proc.waitFor(/configuration reloaded/);
    assert.equal((await get('/fault')).status, 418, 'still version 4 after SIGHUP');
  });
});
