// Pins the semantics of the Consul stand-in (test/consul-standin) that mesh-agent's tests rely on.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { createServer as createNetServer } from 'node:net';
import { ConsulStandin, parseGoDuration } from '../consul-standin/consul-standin';

const consul = new ConsulStandin({ waitJitter: false });
let base = '';
before(async () => {
  await consul.start(0);
  base = `http://${consul.address}`;
});
after(() => consul.close());

async function call(method: string, path: string, body?: unknown): Promise<{ status: number; headers: Headers; text: string; json: () => any }> {
  const res = await fetch(base + path, { method, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
  const text = await res.text();
  return { status: res.status, headers: res.headers, text, json: () => JSON.parse(text) };
}

const health = (name: string, query = ''): ReturnType<typeof call> => call('GET', `/v1/health/service/${name}${query}`);

describe('consul stand-in', () => {
  test('parses Go durations', () => {
    assert.equal(parseGoDuration('1500ms'), 1500);
    assert.equal(parseGoDuration('1m30s'), 90_000);
    assert.ok(Number.isNaN(parseGoDuration('10')));
  });

  test('agent registration: ID defaults to Name, checks start critical, default check IDs, passing filter', async () => {
    assert.equal((await call('PUT', '/v1/agent/service/register', { Name: 'web', Port: 80, Tags: ['v1'], Checks: [{ TTL: '30s' }, { TTL: '30s', Status: 'passing' }] })).status, 200);
    const services = (await call('GET', '/v1/agent/services')).json();
    assert.equal(services.web.Service, 'web');
    assert.equal(services.web.ID, 'web');
    const all = (await health('web')).json();
    assert.equal(all.length, 1);
    assert.deepEqual(all[0].Checks.map((c: any) => [c.CheckID, c.Status]), [['serfHealth', 'passing'], ['service:web:1', 'critical'], ['service:web:2', 'passing']]);
    assert.equal(all[0].Checks[1].Name, "Service 'web' check");
    assert.deepEqual((await health('web', '?passing')).json(), []);
    assert.equal((await call('PUT', '/v1/agent/check/pass/service:web:1')).status, 200);
    assert.equal((await health('web', '?passing=true')).json().length, 1);
    assert.equal((await call('PUT', '/v1/agent/check/warn/service:web:1?note=slow')).status, 200);
    assert.deepEqual((await health('web', '?passing=1')).json(), [], 'warning is not passing');
    assert.equal((await call('PUT', '/v1/agent/check/update/service:web:1', { Status: 'passing', Output: 'ok' })).status, 200);
    const [entry] = (await health('web', '?passing')).json();
    assert.equal(entry.Checks[1].Output, 'ok');
    assert.equal((await health('web', '?passing=maybe')).status, 400);
  });

  test('a single Check gets the ID service:<id>; snake_case keys are accepted', async () => {
    await call('PUT', '/v1/agent/service/register', { name: 'db', id: 'db-1', check: { ttl: '30s', deregister_critical_service_after: '10m' } });
    const [entry] = (await health('db')).json();
    assert.equal(entry.Service.ID, 'db-1');
    assert.equal(entry.Checks[1].CheckID, 'service:db-1');
    assert.equal(entry.Checks[1].Type, 'ttl');
  });

  test('unknown ids answer 404 with Consul\'s plain-text bodies; a non-TTL check update is 500', async () => {
    const s = await call('PUT', '/v1/agent/service/deregister/nope');
    assert.equal(s.status, 404);
    assert.match(s.headers.get('content-type') ?? '', /text\/plain/);
    assert.equal(s.text, 'Unknown service ID "nope". Ensure that the service ID is passed, not the service name.');
    const c = await call('PUT', '/v1/agent/check/pass/nope');
    assert.equal(c.status, 404);
    assert.equal(c.text, 'Unknown check ID "nope". Ensure that the check ID is passed, not the check name.');
    await call('PUT', '/v1/agent/service/register', { Name: 'h', Check: { HTTP: 'http://127.0.0.1:1/', Interval: '10s' } });
    const t = await call('PUT', '/v1/agent/check/pass/service:h');
    assert.equal(t.status, 500);
    assert.equal(t.text, 'CheckID "service:h" does not have associated TTL');
    assert.equal((await call('GET', '/v1/agent/service/register')).status, 405);
  });

  test('deregistration removes the service and its checks', async () => {
    await call('PUT', '/v1/agent/service/register', { Name: 'gone', Check: { TTL: '30s', Status: 'passing' } });
    assert.equal((await call('PUT', '/v1/agent/service/deregister/gone')).status, 200);
    assert.deepEqual((await health('gone')).json(), []);
    assert.equal((await call('PUT', '/v1/agent/check/pass/service:gone')).status, 404);
    assert.equal((await call('GET', '/v1/agent/services')).json().gone, undefined);
  });

  test('a TTL check not refreshed in time turns critical', async () => {
    await call('PUT', '/v1/agent/service/register', { Name: 'ttl', Check: { TTL: '50ms', Status: 'passing' } });
    const { headers } = await health('ttl', '?passing');
    const idx = headers.get('x-consul-index');
    const r = await health('ttl', `?passing&index=${idx}&wait=5s`);
    assert.deepEqual(r.json(), []);
    assert.equal(r.json().length, 0);
    const [entry] = (await health('ttl')).json();
    assert.equal(entry.Checks[1].Status, 'critical');
    assert.equal(entry.Checks[1].Output, 'TTL expired');
  });

  test('catalog register/deregister for other nodes, with node meta and a node-level failing check', async () => {
    assert.equal((await call('PUT', '/v1/catalog/register', { Node: 'node-b', Address: '10.0.0.2', NodeMeta: { 'mesh-inbound-port': '15443' }, Service: { ID: 'api-1', Service: 'api', Port: 8080, Meta: { version: 'v2' } }, Check: { CheckID: 'service:api-1', ServiceID: 'api-1', Status: 'passing' } })).json(), true);
    let [entry] = (await health('api', '?passing')).json();
    assert.equal(entry.Node.Node, 'node-b');
    assert.equal(entry.Node.Address, '10.0.0.2');
    assert.deepEqual(entry.Node.Meta, { 'mesh-inbound-port': '15443' });
    assert.equal(entry.Service.Address, '');
    assert.deepEqual(entry.Service.Weights, { Passing: 1, Warning: 1 });
    await call('PUT', '/v1/catalog/register', { Node: 'node-b', Address: '10.0.0.2', Check: { CheckID: 'maint', Name: 'node maintenance', Status: 'critical' } });
    assert.deepEqual((await health('api', '?passing')).json(), [], 'a failing node check fails the node\'s services');
    await call('PUT', '/v1/catalog/deregister', { Node: 'node-b', CheckID: 'maint' });
    [entry] = (await health('api', '?passing')).json();
    assert.ok(entry);
    await call('PUT', '/v1/catalog/deregister', { Node: 'node-b' });
    assert.deepEqual((await health('api')).json(), []);
  });

  test('blocking queries: immediate when the index is behind, park until a relevant change, time out with the same data', async () => {
    await call('PUT', '/v1/agent/service/register', { Name: 'blk', Port: 0 });
    const first = await health('blk');
    const idx = Number(first.headers.get('x-consul-index'));
    assert.ok(idx >= 1);
    assert.equal(first.headers.get('x-consul-knownleader'), 'true');
    assert.equal(first.headers.get('x-consul-lastcontact'), '0');
    assert.equal((await health('blk', `?index=${idx - 1}&wait=10s`)).status, 200, 'an older index returns at once');

    let t0 = Date.now();
    const timedOut = await health('blk', `?index=${idx}&wait=150ms`);
    assert.ok(Date.now() - t0 >= 140, 'waited');
    assert.equal(timedOut.json()[0].Service.Port, 0);
    assert.equal(timedOut.headers.get('x-consul-index'), String(idx));

    t0 = Date.now();
    const parked = health('blk', `?index=${idx}&wait=10s&stale`);
    await consul.whenParked('blk');
    await call('PUT', '/v1/agent/service/register', { Name: 'other' }); // irrelevant: must not wake it
    await call('PUT', '/v1/agent/service/register', { Name: 'blk', Port: 1 });
    const woke = await parked;
    assert.ok(Date.now() - t0 < 5000, 'woken by the change, not by the wait');
    assert.ok(Number(woke.headers.get('x-consul-index')) > idx);
    assert.equal(woke.headers.get('x-consul-effective-consistency'), 'stale');
    assert.equal(woke.json()[0].Service.Port, 1);
  });

  test('the index of a service is the last write that touched it; writes elsewhere do not move it', async () => {
    await call('PUT', '/v1/agent/service/register', { Name: 'still' });
    const a = (await health('still')).headers.get('x-consul-index');
    await call('PUT', '/v1/agent/service/register', { Name: 'noise' });
    assert.equal((await health('still')).headers.get('x-consul-index'), a);
    assert.ok(consul.currentIndex > Number(a));
  });

  test('hooks: forceIndex moves the index backwards and releases parked queries; zeroIndex answers 0', async () => {
    await call('PUT', '/v1/agent/service/register', { Name: 'back' });
    const idx = Number((await health('back')).headers.get('x-consul-index'));
    const parked = health('back', `?index=${idx}&wait=10s`);
    await consul.whenParked('back');
    consul.forceIndex(3);
    const r = await parked;
    assert.equal(r.headers.get('x-consul-index'), '3');
    assert.equal(consul.currentIndex, 3);
    consul.zeroIndex = true;
    try {
      assert.equal((await health('back')).headers.get('x-consul-index'), '0');
    } finally {
      consul.zeroIndex = false;
    }
  });

  test('stop() cuts parked queries and refuses connections; start() serves the same state on the same port', async () => {
    const port = consul.port;
    const idx = (await health('web')).headers.get('x-consul-index');
    const parked = health('web', `?index=${idx}&wait=10s`).then(() => 'answered', () => 'cut');
    await consul.whenParked('web');
    await consul.stop();
    assert.equal(await parked, 'cut');
    await assert.rejects(fetch(`${base}/v1/agent/services`));
    assert.equal(await consul.start(), port);
    assert.equal((await call('GET', '/v1/agent/services')).json().web.Service, 'web');
  });

  test('wipeAgent(): the local agent forgets its services and checks (a TTL update answers 404); other nodes keep theirs', async () => {
    await call('PUT', '/v1/agent/service/register', { Name: 'local-one', Check: { TTL: '30s', Status: 'passing' } });
    await call('PUT', '/v1/catalog/register', { Node: 'node-w', Address: '10.0.0.9', Service: { ID: 'far-1', Service: 'far' } });
    const parked = health('local-one', `?index=${(await health('local-one')).headers.get('x-consul-index')}&wait=10s`);
    await consul.whenParked('local-one');
    consul.wipeAgent();
    assert.deepEqual((await parked).json(), [], 'a parked query of a wiped service returns, empty');
    assert.deepEqual((await call('GET', '/v1/agent/services')).json(), {});
    const ttl = await call('PUT', '/v1/agent/check/pass/service:local-one');
    assert.equal(ttl.status, 404);
    assert.equal(ttl.text, 'Unknown check ID "service:local-one". Ensure that the check ID is passed, not the check name.');
    assert.equal((await health('far')).json().length, 1, 'another node\'s service stays');
    assert.equal((await health('local-one')).json().length, 0);
    await call('PUT', '/v1/catalog/deregister', { Node: 'node-w' });
  });

  test('with probeChecks, HTTP and TCP checks are probed at their interval', async (t) => {
    const probing = new ConsulStandin({ probeChecks: true, waitJitter: false });
    await probing.start(0);
    const app = createServer((_req, res) => res.end('ok'));
    await new Promise<void>((r) => app.listen(0, '127.0.0.1', r));
    const tcp = createNetServer((s) => s.end());
    await new Promise<void>((r) => tcp.listen(0, '127.0.0.1', r));
    t.after(async () => {
      await probing.close();
      app.close();
      tcp.close();
    });
    const at = (path: string, init?: RequestInit): Promise<Response> => fetch(`http://${probing.address}${path}`, init);
    const appPort = (app.address() as { port: number }).port;
    const tcpPort = (tcp.address() as { port: number }).port;
    await at('/v1/agent/service/register', { method: 'PUT', body: JSON.stringify({ Name: 'probed', Checks: [{ HTTP: `http://127.0.0.1:${appPort}/ready`, Interval: '20ms' }, { TCP: `127.0.0.1:${tcpPort}`, Interval: '20ms' }] }) });
    // Block until the health view changes, as a client would; the probes make it pass, then fail.
    const until = async (done: (entries: { Checks: { Status: string; Output: string }[] }[]) => boolean): Promise<{ Checks: { Status: string; Output: string }[] }[]> => {
      let index = '0';
      for (;;) {
        const res = await at(`/v1/health/service/probed?passing&index=${index}&wait=5s`);
        index = res.headers.get('x-consul-index') ?? '1';
        const entries = (await res.json()) as { Checks: { Status: string; Output: string }[] }[];
        if (done(entries)) return entries;
      }
    };
    const [entry] = await until((e) => e.length === 1);
    assert.deepEqual(entry!.Checks.map((c) => c.Status), ['passing', 'passing', 'passing']);
    assert.match(entry!.Checks[1]!.Output, /: 200$/);
    app.close();
    app.closeAllConnections();
    assert.deepEqual(await until((e) => e.length === 0), []);
  });
});
