// SIGHUP reloads the agent's config file: services and upstreams come and go, unchanged listeners keep their connections, a bad file changes nothing.

import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { request } from 'undici';
import { agentStatus, until } from '../helpers/agent-admin';
import { startHttpApp } from '../helpers/apps';
import { RawHttpConnection } from '../helpers/http-raw';
import { TestMesh, type AgentHandle } from '../helpers/mesh';
import { freePort } from '../helpers/processes';

const MESH = 'spiffe://mesh.local/ns/default/sa';

describe('reloading the agent config on SIGHUP', () => {
  const mesh = new TestMesh();
  let api: Awaited<ReturnType<typeof startHttpApp>>;
  let a: AgentHandle;
  let u1 = 0;
  let u2 = 0;
  let configFile = '';
  const base = (extra = ''): string =>
    `inbound: { listen: "127.0.0.1:0" }\nadmin: { listen: "127.0.0.1:0" }\nendpointsFile: {{root}}/endpoints.yaml\nservices:\n  - name: web\n    port: 1\n    upstreams: [{ service: api, port: ${u1}, protocol: http }]\n${extra}`;

  /** Rewrites node A's config, sends SIGHUP, and resolves with the next log line matching `re`. */
  const reload = async (yaml: string, re: RegExp): Promise<string> => {
    writeFileSync(configFile, yaml.replaceAll('{{root}}', mesh.root));
    const from = a.proc.stderr.length;
    a.proc.child.kill('SIGHUP');
    await until(`log line ${re}`, () => re.test(a.proc.stderr.slice(from)));
    return re.exec(a.proc.stderr.slice(from))![0];
  };
  const get = async (port: number): Promise<{ status: number; body: string }> => {
    const r = await request(`http://127.0.0.1:${port}/`, { headersTimeout: 5000 });
    return { status: r.statusCode, body: await r.body.text() };
  };

  before(async () => {
    api = await startHttpApp('api');
    const server = await mesh.startServer();
    const b = await mesh.startAgent('node-b', mesh.writeConfig('b.yaml', `inbound: { listen: "127.0.0.1:0" }\nadmin: { listen: "127.0.0.1:0" }\nservices: [{ name: api, port: ${api.port}, protocol: http }]\n`), { join: await mesh.token(server) });
    mesh.writeConfig('endpoints.yaml', `services:\n  api: [{ address: 127.0.0.1, port: ${b.inbound.split(':')[1]} }]\n`);
    mesh.writeConfig('no-api.yaml', 'services: {}\n');
    u1 = await freePort();
    u2 = await freePort();
    configFile = join(mesh.root, 'a.yaml');
    a = await mesh.startAgent('node-a', mesh.writeConfig('a.yaml', base()), { join: await mesh.token(server) });
  });

  after(async () => {
    api?.server.close();
    await mesh.close();
  });

  it('adds a service and an upstream without touching an open connection through an unchanged one', async () => {
    const kept = new RawHttpConnection(u1);
    try {
      assert.equal((await kept.get('/before')).status, 200);
      const accepted = async (): Promise<number> => (await agentStatus(a)).upstreams.find((u: { listen: string }) => u.listen === `127.0.0.1:${u1}`).stats.connections;
      const before = await accepted();
      assert.ok(before >= 1);
      const line = await reload(base(`  - name: reports\n    port: 2\n    upstreams: [{ service: api, port: ${u2}, protocol: http }]\n`), /INFO\s+configuration reloaded .*/);
      assert.match(line, new RegExp(`servicesAdded=default/reports upstreamsAdded=default/reports->default/api@127\\.0\\.0\\.1:${u2}/http`));
      assert.doesNotMatch(line, /upstreamsRemoved/);
      assert.equal((await kept.get('/after')).status, 200, 'the same connection still works');
      assert.equal(kept.closed, false);
      assert.equal(await accepted(), before, 'the listener is the same one (a new one would count from 0)');
      // The server signs the new service's identity: the agent declared it again in a hello.
      const r = await until('reports -> api answers 200', async () => {
        const res = await get(u2);
        return res.status === 200 ? res : undefined;
      });
      assert.equal((JSON.parse(r.body) as { app: string }).app, 'api');
      assert.match(String(api.seen.at(-1)!['x-forwarded-client-cert']), new RegExp(`URI=${MESH}/reports$`));
      const st = await agentStatus(a);
      assert.deepEqual(st.services.map((s: { name: string; origin: string }) => `${s.name}:${s.origin}`), ['web:config', 'reports:config']);
    } finally {
      kept.close();
    }
  });

  it('removes a service and its upstream: the port closes, the certificate is no longer renewed; a restart-only change is named, not applied', async () => {
    const kept = new RawHttpConnection(u1);
    try {
      assert.equal((await kept.get('/x')).status, 200);
      const line = await reload(base().replace('admin: { listen: "127.0.0.1:0" }', 'admin: { listen: "127.0.0.1:1" }'), /INFO\s+configuration reloaded .*/);
      assert.match(line, new RegExp(`servicesRemoved=default/reports upstreamsRemoved=default/reports->default/api@127\\.0\\.0\\.1:${u2}/http`));
      assert.match(a.proc.stderr, /WARN\s+this setting changes only with a restart; keeping the running value .*field="admin \(127\.0\.0\.1:0 -> 127\.0\.0\.1:1\)"/);
      await assert.rejects(get(u2), /ECONNREFUSED/);
      assert.equal((await kept.get('/y')).status, 200);
      const st = await agentStatus(a);
      assert.equal(st.certificates.some((c: { identity: string }) => c.identity === `${MESH}/reports`), false);
      assert.equal(st.agent.admin, a.admin, 'the admin port stays where it is');
    } finally {
      kept.close();
    }
  });

  it('refuses a bad config as a whole, naming every field, and keeps running the old one', async () => {
    const bad = base(`  - name: Reports\n    port: 2\n    upstreams: [{ service: api, port: ${u1} }]\n`).replace('endpointsFile:', 'endpointFile:');
    const line = await reload(bad, /ERROR\s+configuration rejected, keeping the running one .*/);
    assert.match(line, /MESH_ERR_CONFIG/);
    assert.match(line, /endpointFile .*unknown field/);
    assert.match(line, /services\[1\]\.name .*got \\"Reports\\"/);
    assert.match(line, new RegExp(`services\\[1\\]\\.upstreams\\[0\\]\\.port .*port ${u1} is already used by services\\[0\\]\\.upstreams\\[0\\]`));
    assert.ok(a.proc.running);
    assert.equal((await get(u1)).status, 200, 'the running config stays');
    assert.deepEqual((await agentStatus(a)).services.map((s: { name: string }) => s.name), ['web']);
  });

  it('takes a new endpoints file (and refuses one that does not parse)', async () => {
    await reload(base().replace('endpoints.yaml', 'no-api.yaml'), /INFO\s+configuration reloaded .*changed=endpointsFile/);
    await until('api has no endpoints', async () => (await get(u1)).status === 503);
    writeFileSync(join(mesh.root, 'broken.yaml'), 'services: [nope\n');
    await reload(base().replace('endpoints.yaml', 'broken.yaml'), /ERROR\s+configuration rejected, keeping the running one .*MESH_ERR_ENDPOINTS_FILE/);
    await reload(base(), /INFO\s+configuration reloaded .*changed=endpointsFile/);
    await until('api answers again', async () => (await get(u1)).status === 200);
  });
});
