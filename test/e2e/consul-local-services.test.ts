// A service registered in the local Consul agent (as Nomad would) joins the mesh without a restart, with its upstreams; it leaves the same way.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { request } from 'undici';
import { ConsulStandin } from '../consul-standin/consul-standin';
import { agentStatus, until } from '../helpers/agent-admin';
import { startHttpApp } from '../helpers/apps';
import { TestMesh, type AgentHandle } from '../helpers/mesh';
import { freePort } from '../helpers/processes';

const MESH = 'spiffe://mesh.local/ns/default/sa';

describe('local services from the Consul agent', () => {
  const mesh = new TestMesh();
  // The stand-in's own node plays node B's local Consul agent.
  const consul = new ConsulStandin({ waitJitter: false });
  let api: Awaited<ReturnType<typeof startHttpApp>>;
  let billing: Awaited<ReturnType<typeof startHttpApp>>;
  let a: AgentHandle;
  let b: AgentHandle;
  let apiUpstream = 0; // on node A: web -> api
  let billingUpstream = 0; // on node B, declared in api's mesh-upstreams: api -> billing
  const nomadId = '_nomad-task-0b1c-api-api-http';

  const put = async (path: string, body?: unknown): Promise<void> => {
    const res = await fetch(`http://${consul.address}${path}`, { method: 'PUT', ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
    assert.equal(res.status, 200, await res.text());
  };
  const get = async (port: number): Promise<{ status: number; body: string }> => {
    const r = await request(`http://127.0.0.1:${port}/`, { headersTimeout: 5000 });
    return { status: r.statusCode, body: await r.body.text() };
  };
  const services = async (h: AgentHandle): Promise<{ name: string; origin: string; consulId?: string }[]> => (await agentStatus(h)).services;

  before(async () => {
    await consul.start(0);
    api = await startHttpApp('api');
    billing = await startHttpApp('billing');
    const server = await mesh.startServer();
    apiUpstream = await freePort();
    billingUpstream = await freePort();
    // Node A: web calls api; billing runs here and is registered with a TTL check the agent keeps passing.
    a = await mesh.startAgent(
      'node-a',
      mesh.writeConfig(
        'a.yaml',
        `inbound: { listen: "127.0.0.1:0" }\nadmin: { listen: "127.0.0.1:0" }\nconsul: { address: "${consul.address}", wait: 5s, minInterval: 0s, registerServices: true }\nservices:\n  - name: web\n    port: 1\n    upstreams: [{ service: api, port: ${apiUpstream}, protocol: http }]\n  - { name: billing, port: ${billing.port}, protocol: http, check: { ttl: 3s } }\n`,
      ),
      { join: await mesh.token(server) },
    );
    // Node B: no service in its config; it takes them from its Consul agent.
    b = await mesh.startAgent('node-b', mesh.writeConfig('b.yaml', `inbound: { listen: "127.0.0.1:0" }\nadmin: { listen: "127.0.0.1:0" }\nconsul: { address: "${consul.address}", wait: 5s, minInterval: 100ms, localServices: true }\n`), { join: await mesh.token(server) });
  });

  after(async () => {
    api?.server.close();
    billing?.server.close();
    await mesh.close();
    await consul.close();
  });

  it('a service that opts in (tag mesh) gets a certificate, an inbound route and its upstreams, with no restart', async () => {
    assert.deepEqual(await services(b), [], 'node B starts with no service');
    await put('/v1/agent/service/register', {
      ID: nomadId,
      Name: 'api',
      Port: api.port,
      Tags: ['mesh', 'v1'],
      Meta: { 'external-source': 'nomad', 'mesh-protocol': 'http', 'mesh-upstreams': `billing:${billingUpstream}/http`, 'mesh-inbound-port': b.inbound.split(':')[1] },
      Check: { Name: 'api alive', TTL: '10m', Status: 'passing' },
    });
    const row = await until('node B runs api from Consul', async () => (await services(b)).find((s) => s.name === 'api'));
    assert.deepEqual([row.origin, row.consulId], ['consul', nomadId]);
    await b.proc.waitFor(/local services from Consul changed.*servicesAdded=default\/api.*upstreamsAdded=default\/api->default\/billing@127\.0\.0\.1:\d+\/http/);
    // The server signed api's identity for node B: its hello was sent again when api appeared.
    await until('api certificate on node B', async () => (await agentStatus(b)).certificates.find((c: { identity: string; serial: string | null }) => c.identity === `${MESH}/api` && c.serial));

    // Node A reaches it through Consul discovery; node B presents api's certificate for SNI api.
    const r = await until('web -> api answers 200', async () => {
      const res = await get(apiUpstream);
      return res.status === 200 ? res : undefined;
    });
    assert.equal((JSON.parse(r.body) as { app: string }).app, 'api');
    assert.match(String(api.seen.at(-1)!['x-forwarded-client-cert']), new RegExp(`By=${MESH}/api;.*URI=${MESH}/web$`));

    // api's upstream from its mesh-upstreams meta: billing on node A, registered by node A with a TTL check it keeps passing.
    const billed = await until('api -> billing answers 200', async () => {
      const res = await get(billingUpstream).catch(() => undefined);
      return res?.status === 200 ? res : undefined;
    });
    assert.equal((JSON.parse(billed.body) as { app: string }).app, 'billing');
    assert.match(String(billing.seen.at(-1)!['x-forwarded-client-cert']), new RegExp(`URI=${MESH}/api$`), 'node B called as api, with the certificate it got for it');
    const reg = (await agentStatus(a)).consulRegistrations.find((x: { id: string }) => x.id === 'billing-node-a');
    assert.deepEqual([reg.check, reg.registered, reg.ttlStatus], ['ttl', true, 'passing'], 'node A keeps billing\'s TTL check passing');
  });

  it('a registration with bad mesh meta is left out with a warning naming it and the field; the others stay', async () => {
    await put('/v1/agent/service/register', { ID: 'broken-1', Name: 'broken', Port: 8081, Tags: ['mesh'], Meta: { 'mesh-upstreams': 'orders:not-a-port' } });
    await b.proc.waitFor(/WARN\s+local service skipped .*service=broken id=broken-1 field=Meta\.mesh-upstreams .*MESH_ERR_LOCAL_SERVICE_INVALID/);
    const st = await agentStatus(b);
    assert.deepEqual(st.localServices.problems.map((p: { service: string; field: string }) => `${p.service} ${p.field}`), ['broken Meta.mesh-upstreams']);
    assert.deepEqual(st.services.map((s: { name: string }) => s.name), ['api']);
    assert.equal((await get(apiUpstream)).status, 200, 'api keeps working');
    await put('/v1/agent/service/deregister/broken-1');
  });

  it('when the registration goes away, node B drops its route, its upstream listener and its certificate', async () => {
    await put(`/v1/agent/service/deregister/${nomadId}`);
    await until('api gone from node B', async () => !(await services(b)).some((s) => s.name === 'api'));
    await b.proc.waitFor(/local services from Consul changed.*servicesRemoved=default\/api.*upstreamsRemoved=default\/api->default\/billing/);
    const st = await agentStatus(b);
    assert.equal(st.certificates.some((c: { identity: string }) => c.identity === `${MESH}/api`), false, 'no longer renewed');
    assert.deepEqual(st.upstreams, []);
    await assert.rejects(get(billingUpstream), /ECONNREFUSED/, 'the upstream port is closed');
    const r = await until('web -> api fails', async () => {
      const res = await get(apiUpstream);
      return res.status !== 200 ? res : undefined;
    });
    assert.ok(r.status >= 500, `got ${r.status}`);
  });
});
