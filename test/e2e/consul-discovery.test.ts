// Two agents that find each other only through the Consul catalog (the test's Consul stand-in).

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { request } from 'undici';
import { ConsulStandin } from '../consul-standin/consul-standin';
import { startHttpApp } from '../helpers/apps';
import { TestMesh, type AgentHandle } from '../helpers/mesh';
import { freePort, runMeshAgent } from '../helpers/processes';

describe('discovery through Consul', () => {
  const mesh = new TestMesh();
  const consul = new ConsulStandin({ waitJitter: false });
  let api: Awaited<ReturnType<typeof startHttpApp>>;
  let a: AgentHandle;
  let b: AgentHandle;
  let upstream = 0;
  let billingUpstream = 0;
  let server: Awaited<ReturnType<TestMesh['startServer']>>;

  const put = async (path: string, body: unknown): Promise<void> => {
    const res = await fetch(`http://${consul.address}${path}`, { method: 'PUT', body: JSON.stringify(body) });
    assert.equal(res.status, 200, await res.text());
  };
  const call = async (): Promise<{ status: number; flags: unknown }> => {
    const r = await request(`http://127.0.0.1:${upstream}/`, { headersTimeout: 5000 });
    await r.body.text();
    return { status: r.statusCode, flags: r.headers['x-mesh-response-flags'] };
  };
  /** Waits until agent A's status shows `n` endpoints for an upstream (an event the agent reports, not a fixed sleep). */
  const endpoints = async (n: number, which = 0): Promise<void> => {
    const deadline = Date.now() + 10_000;
    for (;;) {
      const s = JSON.parse((await runMeshAgent(['status', '--agent', a.admin, '--state-dir', a.stateDir, '-o', 'json'])).stdout) as { upstreams: { endpoints: string[] }[] };
      if (s.upstreams[which]!.endpoints.length === n) return;
      if (Date.now() > deadline) throw new Error(`api never had ${n} endpoints: ${JSON.stringify(s.upstreams)}`);
    }
  };

  before(async () => {
    await consul.start(0);
    api = await startHttpApp('api');
    server = await mesh.startServer();
    b = await mesh.startAgent('node-b', mesh.writeConfig('b.yaml', `inbound: { listen: "127.0.0.1:0" }\nadmin: { listen: "127.0.0.1:0" }\nservices: [{ name: api, port: ${api.port}, protocol: http }]\n`), { join: await mesh.token(server) });
    upstream = await freePort();
    billingUpstream = await freePort();
    a = await mesh.startAgent(
      'node-a',
      mesh.writeConfig('a.yaml', `inbound: { listen: "127.0.0.1:0" }\nadmin: { listen: "127.0.0.1:0" }\nconsul: { address: "${consul.address}", wait: 5s, minInterval: 0s }\nservices:\n  - name: web\n    port: 1\n    upstreams: [{ service: api, port: ${upstream}, protocol: http }, { service: billing, port: ${billingUpstream}, protocol: http }]\n`),
      { join: await mesh.token(server) },
    );
  });

  after(async () => {
    api?.server.close();
    await mesh.close();
    await consul.close();
  });

  it('reaches a service registered in the catalog (as Nomad would), and follows its health check', async () => {
    assert.equal((await call()).flags, 'UH', 'nothing registered yet: no healthy upstream');
    await put('/v1/catalog/register', {
      Node: 'node-b',
      Address: '127.0.0.1',
      Service: { ID: 'api-1', Service: 'api', Port: api.port, Tags: ['version=v1'], Meta: { 'mesh-inbound-port': b.inbound.split(':')[1] } },
      Check: { CheckID: 'service:api-1', ServiceID: 'api-1', Name: 'app', Status: 'passing' },
    });
    await endpoints(1);
    assert.equal((await call()).status, 200);
    const seen = api.seen[api.seen.length - 1]!;
    assert.match(String(seen['x-forwarded-client-cert']), /URI=spiffe:\/\/mesh\.local\/ns\/default\/sa\/web$/);

    await put('/v1/catalog/register', { Node: 'node-b', Address: '127.0.0.1', Check: { CheckID: 'service:api-1', ServiceID: 'api-1', Name: 'app', Status: 'critical' } });
    await endpoints(0);
    assert.equal((await call()).flags, 'UH', 'a failing check takes the instance out');

    await put('/v1/catalog/register', { Node: 'node-b', Address: '127.0.0.1', Check: { CheckID: 'service:api-1', ServiceID: 'api-1', Name: 'app', Status: 'passing' } });
    await endpoints(1);
    assert.equal((await call()).status, 200);
  });

  it('an agent registers itself and its services; others find them; a clean stop deregisters them', async () => {
    const billing = await startHttpApp('billing');
    try {
      const c = await mesh.startAgent(
        'node-c',
        mesh.writeConfig('c.yaml', `inbound: { listen: "127.0.0.1:0" }\nadmin: { listen: "127.0.0.1:0" }\nconsul: { address: "${consul.address}", registerServices: true }\nservices: [{ name: billing, port: ${billing.port}, protocol: http }]\n`),
        { join: await mesh.token(server) },
      );
      const services = (await (await fetch(`http://${consul.address}/v1/agent/services`)).json()) as Record<string, { Service: string; Meta: Record<string, string> }>;
      const deadline = Date.now() + 10_000;
      let registered = services;
      while (!registered['billing-node-c'] && Date.now() < deadline) registered = (await (await fetch(`http://${consul.address}/v1/agent/services`)).json()) as typeof services;
      assert.equal(registered['mesh-agent-node-c']?.Service, 'mesh-agent');
      assert.equal(registered['billing-node-c']?.Meta['mesh-inbound-port'], c.inbound.split(':')[1]);
      // Its TCP check starts critical, as in Consul; the stand-in's hook plays the Consul agent's probe passing.
      consul.setCheckStatus('service:billing-node-c', 'passing');
      await endpoints(1, 1);
      const r = await request(`http://127.0.0.1:${billingUpstream}/`, { headersTimeout: 5000 });
      await r.body.text();
      assert.equal(r.statusCode, 200);

      assert.equal(await c.proc.stop('SIGTERM'), 0);
      const after = (await (await fetch(`http://${consul.address}/v1/agent/services`)).json()) as typeof services;
      assert.equal(after['billing-node-c'], undefined, 'deregistered on a clean stop');
      assert.equal(after['mesh-agent-node-c'], undefined);
      await endpoints(0, 1);
    } finally {
      billing.server.close();
    }
  });

  it('keeps the last known endpoints and traffic when Consul goes away', async () => {
    await consul.stop();
    for (let i = 0; i < 5; i++) assert.equal((await call()).status, 200);
    const s = JSON.parse((await runMeshAgent(['status', '--agent', a.admin, '--state-dir', a.stateDir, '-o', 'json'])).stdout) as { consul: { service: string; stale: boolean }[] };
    const deadline = Date.now() + 10_000;
    let stale = s.consul.find((w) => w.service.startsWith('api'))?.stale;
    while (!stale && Date.now() < deadline) {
      const again = JSON.parse((await runMeshAgent(['status', '--agent', a.admin, '--state-dir', a.stateDir, '-o', 'json'])).stdout) as { consul: { service: string; stale: boolean }[] };
      stale = again.consul.find((w) => w.service.startsWith('api'))?.stale;
    }
    assert.equal(stale, true, 'status reports the endpoints as stale');
  });
});
