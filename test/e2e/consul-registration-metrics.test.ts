// Registration with checks, re-registration when Consul forgets, and staleness on /metrics while Consul is away — through real agents and the stand-in.

import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { request } from 'undici';
import { ConsulStandin } from '../consul-standin/consul-standin';
import { adminGet, metric, until } from '../helpers/agent-admin';
import { startHttpApp } from '../helpers/apps';
import { TestMesh, type AgentHandle } from '../helpers/mesh';
import { freePort } from '../helpers/processes';

describe('Consul registration, anti-entropy and staleness metrics', () => {
  const mesh = new TestMesh();
  // The stand-in probes HTTP and TCP checks itself, as a Consul agent does.
  const consul = new ConsulStandin({ waitJitter: false, probeChecks: true });
  let api: Awaited<ReturnType<typeof startHttpApp>>;
  let a: AgentHandle;
  let b: AgentHandle;
  let upstream = 0;
  const bConfig = (tags: string, consulExtra = ''): string =>
    `inbound: { listen: "127.0.0.1:0" }\nadmin: { listen: "127.0.0.1:0" }\nconsul: { address: "${consul.address}", registerServices: true, resyncInterval: 1s${consulExtra} }\nservices:\n  - { name: api, port: ${api.port}, protocol: http, tags: [${tags}], meta: { team: payments }, check: { http: /health, interval: 1s, timeout: 1s } }\n`;
  const aConfig = (consulExtra = ''): string =>
    `inbound: { listen: "127.0.0.1:0" }\nadmin: { listen: "127.0.0.1:0" }\nconsul: { address: "${consul.address}", wait: 5s, minInterval: 0s, resyncInterval: 1s${consulExtra} }\nservices:\n  - name: web\n    port: 1\n    upstreams: [{ service: api, port: ${upstream}, protocol: http }]\n`;

  type AgentService = { Service: string; Tags: string[]; Meta: Record<string, string> };
  const agentServices = async (): Promise<Record<string, AgentService>> => (await fetch(`http://${consul.address}/v1/agent/services`)).json() as Promise<Record<string, AgentService>>;
  const call = async (): Promise<number> => {
    const r = await request(`http://127.0.0.1:${upstream}/`, { headersTimeout: 5000 });
    await r.body.text();
    return r.statusCode;
  };
  const sighup = async (h: AgentHandle, yaml: string, re: RegExp): Promise<void> => {
    writeFileSync(h.configFile, yaml);
    const from = h.proc.stderr.length;
    h.proc.child.kill('SIGHUP');
    await until(`${h.proc.name}: ${re}`, () => re.test(h.proc.stderr.slice(from)));
  };

  before(async () => {
    await consul.start(0);
    api = await startHttpApp('api');
    const server = await mesh.startServer();
    upstream = await freePort();
    b = await mesh.startAgent('node-b', mesh.writeConfig('b.yaml', bConfig('v1')), { join: await mesh.token(server) });
    a = await mesh.startAgent('node-a', mesh.writeConfig('a.yaml', aConfig()), { join: await mesh.token(server) });
  });

  after(async () => {
    api?.server.close();
    await mesh.close();
    await consul.close();
  });

  it('registers the agent and its service with tags, meta and an HTTP check on the app; the check passing makes it reachable', async () => {
    const s = await until('both registered', async () => {
      const all = await agentServices();
      return all['api-node-b'] && all['mesh-agent-node-b'] ? all : undefined;
    });
    assert.deepEqual(s['api-node-b']!.Tags, ['v1', 'protocol=http']);
    assert.deepEqual(s['api-node-b']!.Meta, { team: 'payments', 'mesh-inbound-port': b.inbound.split(':')[1] });
    const [entry] = (await (await fetch(`http://${consul.address}/v1/health/service/api`)).json()) as { Checks: { CheckID: string; Type: string }[] }[];
    assert.deepEqual(entry!.Checks.map((c) => `${c.CheckID}:${c.Type}`), ['serfHealth:', 'service:api-node-b:http']);
    await until('web -> api answers 200 once the stand-in probed /health', async () => (await call()) === 200);
  });

  it('/metrics: needs the admin token; shows fresh Consul watches, endpoints and no registration failures', async () => {
    assert.equal((await adminGet(a, '/metrics', false)).status, 401);
    const res = await adminGet(a, '/metrics');
    assert.equal(res.headers.get('content-type'), 'text/plain; version=0.0.4; charset=utf-8');
    const text = await res.text();
    assert.match(text, /^# TYPE mesh_consul_stale gauge$/m);
    assert.equal(await metric(a, 'mesh_consul_stale{service="api.default"}'), 0);
    assert.equal(await metric(a, 'mesh_endpoints{service="api.default"}'), 1);
    assert.ok((await metric(a, 'mesh_consul_index{service="api.default"}'))! > 0);
    assert.ok((await metric(a, 'mesh_consul_last_contact_seconds{service="api.default"}'))! >= 0);
    assert.equal(await metric(a, 'mesh_consul_registration_failures_total'), 0);
  });

  it('Consul away: stale goes to 1 while traffic flows; a registration change fails and is counted; all recovers when it is back', async () => {
    await consul.stop();
    try {
      await until('stale on node A', async () => (await metric(a, 'mesh_consul_stale{service="api.default"}')) === 1);
      for (let i = 0; i < 3; i++) assert.equal(await call(), 200, 'the last known endpoints keep serving');
      assert.equal(await metric(a, 'mesh_endpoints{service="api.default"}'), 1);
      await sighup(b, bConfig('v2'), /configuration reloaded/);
      await until('a failed registration counted on node B', async () => ((await metric(b, 'mesh_consul_registration_failures_total')) ?? 0) > 0);
    } finally {
      await consul.start();
    }
    await until('fresh again on node A', async () => (await metric(a, 'mesh_consul_stale{service="api.default"}')) === 0);
    await until('the changed tags registered', async () => ((await agentServices())['api-node-b']?.Tags.includes('v2') ? true : undefined));
    assert.equal(await call(), 200);
  });

  it('Consul restarted without its data: every agent registers again within seconds, and traffic comes back', async () => {
    await consul.stop();
    consul.wipeAgent();
    await consul.start();
    const back = await until(
      'all registrations back',
      async () => {
        const s = await agentServices();
        return s['api-node-b'] && s['mesh-agent-node-b'] && s['mesh-agent-node-a'] ? s : undefined;
      },
      10_000,
    );
    assert.deepEqual(back['api-node-b']!.Tags, ['v2', 'protocol=http']);
    await b.proc.waitFor(/Consul no longer lists our registration .*id=api-node-b/);
    await until('web -> api answers again after the check passes', async () => (await call()) === 200);
  });

  it('a changed consul block on SIGHUP is applied as a whole (here: registering the config services too)', async () => {
    assert.equal((await agentServices())['web-node-a'], undefined);
    await sighup(a, aConfig(', registerServices: true'), /configuration reloaded .*changed=consul/);
    await until('web registered by node A', async () => ((await agentServices())['web-node-a'] ? true : undefined));
    await until('node A still reaches api', async () => (await call()) === 200);
  });
});
