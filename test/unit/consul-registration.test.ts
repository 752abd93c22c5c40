// ConsulRegistration and ConsulLocalServices against the Consul stand-in on a real socket: checks, TTL upkeep, re-registration when Consul forgets, set changes, outages.

import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:net';
import { after, before, describe, test } from 'node:test';
import Consul from 'consul';
import { ConsulLink } from '../../src/agent/consul-link';
import { ConsulLocalServices, ConsulRegistration, createConsulClient, resolveConsulSettings, type ConsulLocalService, type LocalServicesStatus, type RegisteredService } from '../../src/registry';
import { createLogger } from '../../src/telemetry';
import { ConsulStandin } from '../consul-standin/consul-standin';

/** Polls `check` until it returns a value (a deadline, not a wait: the condition ends it). */
async function eventually<T>(what: string, check: () => Promise<T | undefined> | T | undefined, ms = 8000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`${what} did not happen within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const consul = new ConsulStandin({ waitJitter: false });
let client: Consul;
let app: Server;
let appPort = 0;
const logs: string[] = [];
const log = createLogger({ write: (l) => void logs.push(l) });

before(async () => {
  await consul.start(0);
  client = createConsulClient(resolveConsulSettings({ address: consul.address }, {}));
  app = createServer((s) => s.end());
  await new Promise<void>((r) => app.listen(0, '127.0.0.1', r));
  appPort = (app.address() as { port: number }).port;
});
after(async () => {
  client.destroy();
  app.close();
  await consul.close();
});

const services = async (): Promise<Record<string, { Service: string; Tags: string[]; Meta: Record<string, string>; Port: number }>> => (await fetch(`http://${consul.address}/v1/agent/services`)).json() as never;
const checkOf = async (service: string, id: string): Promise<{ Status: string; Output: string; Type: string } | undefined> => {
  const entries = (await (await fetch(`http://${consul.address}/v1/health/service/${service}`)).json()) as { Service: { ID: string }; Checks: { CheckID: string; Status: string; Output: string; Type: string }[] }[];
  return entries.find((e) => e.Service.ID === id)?.Checks.find((c) => c.CheckID === `service:${id}`);
};

describe('ConsulRegistration', () => {
  test('registers each service with its meta, tags and check kind; deregisters on close', async () => {
    const reg = new ConsulRegistration({ client, inboundPort: 15443, log });
    const list: RegisteredService[] = [
      { id: 'h-1', name: 'h', namespace: 'default', address: '10.0.0.1', port: appPort, tags: ['v1'], meta: { team: 'a' }, check: { http: `http://127.0.0.1:${appPort}/health`, intervalMs: 10_000, timeoutMs: 2000 } },
      { id: 't-1', name: 't', namespace: 'shop', address: '10.0.0.1', port: appPort, check: { tcp: `127.0.0.1:${appPort}`, intervalMs: 10_000, timeoutMs: 2000 } },
    ];
    reg.set(list);
    const got = await eventually('both registered', async () => {
      const s = await services();
      return s['h-1'] && s['t-1'] ? s : undefined;
    });
    assert.deepEqual(got['h-1']!.Meta, { team: 'a', 'mesh-inbound-port': '15443' });
    assert.deepEqual(got['h-1']!.Tags, ['v1']);
    assert.deepEqual(got['t-1']!.Meta, { 'mesh-inbound-port': '15443', 'mesh-namespace': 'shop' });
    assert.equal((await checkOf('h', 'h-1'))?.Type, 'http');
    assert.equal((await checkOf('t', 't-1'))?.Type, 'tcp');
    assert.deepEqual(reg.status().map((r) => [r.id, r.check, r.registered]), [['h-1', 'http', true], ['t-1', 'tcp', true]]);
    await reg.close();
    const after = await services();
    assert.equal(after['h-1'], undefined);
    assert.equal(after['t-1'], undefined);
  });

  test('set(): a removed service is deregistered, a changed one registered again, an unchanged one left alone', async () => {
    const reg = new ConsulRegistration({ client, inboundPort: 1, log });
    const a: RegisteredService = { id: 'a-1', name: 'a', namespace: 'default', address: '127.0.0.1', port: 1, check: { tcp: '127.0.0.1:1', intervalMs: 10_000, timeoutMs: 2000 } };
    const b: RegisteredService = { ...a, id: 'b-1', name: 'b' };
    reg.set([a, b]);
    await eventually('registered', async () => ((await services())['b-1'] ? true : undefined));
    const puts = consul.requestCount('/v1/agent/service/register');
    reg.set([{ ...a, port: 2 }]);
    await eventually('b deregistered and a updated', async () => {
      const s = await services();
      return !s['b-1'] && s['a-1']?.Port === 2 ? true : undefined;
    });
    assert.equal(consul.requestCount('/v1/agent/service/register') - puts, 1, 'only the changed one was registered again');
    reg.set([{ ...a, port: 2 }]);
    assert.equal(consul.requestCount('/v1/agent/service/register') - puts, 1, 'an identical set sends nothing');
    await reg.close();
  });

  test('a TTL check is kept by the agent: passing while the app answers, critical when it does not', async () => {
    const down = createServer();
    await new Promise<void>((r) => down.listen(0, '127.0.0.1', r));
    const downPort = (down.address() as { port: number }).port;
    await new Promise<void>((r) => down.close(() => r()));
    const reg = new ConsulRegistration({ client, inboundPort: 1, log });
    reg.set([
      { id: 'ttl-up', name: 'ttl-up', namespace: 'default', address: '127.0.0.1', port: appPort, check: { ttlMs: 3000, probe: { host: '127.0.0.1', port: appPort } } },
      { id: 'ttl-down', name: 'ttl-down', namespace: 'default', address: '127.0.0.1', port: downPort, check: { ttlMs: 3000, probe: { host: '127.0.0.1', port: downPort } } },
    ]);
    const up = await eventually('ttl-up passing', async () => ((await checkOf('ttl-up', 'ttl-up'))?.Status === 'passing' ? checkOf('ttl-up', 'ttl-up') : undefined));
    assert.equal(up!.Type, 'ttl');
    assert.match(up!.Output, /^mesh-agent: TCP connect 127\.0\.0\.1:\d+: ok$/);
    const dn = await eventually('ttl-down failing with a note', async () => {
      const c = await checkOf('ttl-down', 'ttl-down');
      return c?.Output.includes('ECONNREFUSED') ? c : undefined;
    });
    assert.equal(dn.Status, 'critical');
    // Updates keep coming every ttl/3, so the check never expires on its own.
    const before = consul.requestCount('/v1/agent/check/pass/service%3Attl-up');
    await eventually('another TTL update', () => (consul.requestCount('/v1/agent/check/pass/service%3Attl-up') > before ? true : undefined));
    assert.deepEqual(reg.status().find((r) => r.id === 'ttl-up')?.ttlStatus, 'passing');
    await reg.close();
  });

  test('Consul forgets us: a TTL update answered 404 registers again; the anti-entropy pass catches the others', async () => {
    const reg = new ConsulRegistration({ client, inboundPort: 1, resyncIntervalMs: 300, log });
    reg.set([
      { id: 'forgot-ttl', name: 'forgot-ttl', namespace: 'default', address: '127.0.0.1', port: appPort, check: { ttlMs: 3000, probe: { host: '127.0.0.1', port: appPort } } },
      { id: 'forgot-tcp', name: 'forgot-tcp', namespace: 'default', address: '127.0.0.1', port: appPort, check: { tcp: `127.0.0.1:${appPort}`, intervalMs: 10_000, timeoutMs: 2000 } },
    ]);
    reg.start();
    await eventually('registered', async () => ((await checkOf('forgot-ttl', 'forgot-ttl'))?.Status === 'passing' && (await services())['forgot-tcp'] ? true : undefined));
    logs.length = 0;
    consul.wipeAgent();
    await eventually('both registered again', async () => {
      const s = await services();
      return s['forgot-ttl'] && s['forgot-tcp'] && (await checkOf('forgot-ttl', 'forgot-ttl'))?.Status === 'passing' ? true : undefined;
    });
    assert.ok(logs.some((l) => /Consul no longer knows the TTL check; registering again|Consul no longer lists our registration/.test(l)), logs.join(''));
    assert.ok(reg.status().every((r) => r.registered && r.registrations === 2), JSON.stringify(reg.status()));
    await reg.close();
  });

  test('while Consul is down registration fails, is counted, and succeeds by itself when it is back', async () => {
    await consul.stop();
    let failures = 0;
    const reg = new ConsulRegistration({ client, inboundPort: 1, log, onFailure: () => failures++ });
    try {
      reg.set([{ id: 'late', name: 'late', namespace: 'default', address: '127.0.0.1', port: 1, check: { tcp: '127.0.0.1:1', intervalMs: 10_000, timeoutMs: 2000 } }]);
      await eventually('a failure counted', () => (failures > 0 ? true : undefined));
      const s = reg.status()[0]!;
      assert.equal(s.registered, false);
      assert.match(s.lastError ?? '', /^MESH_ERR_CONSUL: PUT \/v1\/agent\/service\/register \(late\)/);
    } finally {
      await consul.start();
    }
    await eventually('registered after the outage', async () => ((await services())['late'] ? true : undefined), 10_000);
    await reg.close();
  });

  test('a Consul that accepts and never answers times out: the registration fails, is counted and retried', async (t) => {
    const silent = createServer(() => {});
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    const hung = createConsulClient(resolveConsulSettings({ address: `127.0.0.1:${(silent.address() as { port: number }).port}` }, {}), 200);
    let failures = 0;
    const reg = new ConsulRegistration({ client: hung, inboundPort: 1, log, onFailure: () => failures++ });
    t.after(async () => {
      await reg.close();
      hung.destroy();
      silent.close();
    });
    reg.set([{ id: 'x', name: 'x', namespace: 'default', address: '127.0.0.1', port: 1, check: { tcp: '127.0.0.1:1', intervalMs: 10_000, timeoutMs: 2000 } }]);
    await eventually('a timed-out registration counted', () => (failures > 0 ? true : undefined), 5000);
    assert.match(reg.status()[0]!.lastError ?? '', /^MESH_ERR_CONSUL: PUT \/v1\/agent\/service\/register \(x\): request timed out \(200ms\)$/);
  });
});

describe('ConsulLocalServices', () => {
  test('reports the opted-in set on each change, skips invalid ones with a warning, keeps the set while Consul is away', async () => {
    const sets: (readonly ConsulLocalService[])[] = [];
    const lines: string[] = [];
    const local = new ConsulLocalServices({ client, intervalMs: 50, onChange: (s) => void sets.push(s), ignore: (id) => id === 'mine', log: createLogger({ write: (l) => void lines.push(l) }) });
    const put = (body: unknown): Promise<Response> => fetch(`http://${consul.address}/v1/agent/service/register`, { method: 'PUT', body: JSON.stringify(body) });
    local.start();
    try {
      await eventually('first answer', () => (sets.length > 0 ? true : undefined));
      assert.deepEqual(sets.at(-1), []);
      await put({ ID: 'web-1', Name: 'web', Port: appPort, Tags: ['mesh'], Meta: { 'mesh-upstreams': 'api:9001/http' } });
      await put({ ID: 'mine', Name: 'web2', Port: 1, Tags: ['mesh'] });
      await put({ ID: 'bad-1', Name: 'bad', Port: 1, Tags: ['mesh'], Meta: { 'mesh-protocol': 'udp' } });
      const withWeb = await eventually('web appears', () => sets.find((s) => s.some((x) => x.id === 'web-1')));
      assert.deepEqual(withWeb.map((s) => s.id), ['web-1'], 'the ignored and the invalid ones are left out');
      await eventually('a warning naming the service and field', () => (lines.some((l) => /local service skipped.*service=bad.*field=Meta\.mesh-protocol.*MESH_ERR_LOCAL_SERVICE_INVALID/.test(l)) ? true : undefined));
      const count = sets.length;
      const polls = consul.requestCount('/v1/agent/services');
      await eventually('a few more polls', () => (consul.requestCount('/v1/agent/services') > polls + 3 ? true : undefined));
      assert.equal(lines.filter((l) => l.includes('local service skipped')).length, 1, 'a problem is warned once, not on every poll');
      assert.equal(sets.length, count, 'an unchanged answer is no change');

      await consul.stop();
      const stale = await eventually('stale while Consul is away', () => (local.status().stale ? local.status() : undefined));
      assert.match(stale.lastError ?? '', /^MESH_ERR_CONSUL: GET \/v1\/agent\/services/);
      assert.equal(stale.services, 1, 'the last known set is kept');
      assert.equal(sets.length, count, 'an outage changes nothing');
      await consul.start();
      await eventually('fresh again', () => (!local.status().stale ? true : undefined), 10_000);

      await fetch(`http://${consul.address}/v1/agent/service/deregister/web-1`, { method: 'PUT' });
      const empty = await eventually('web leaves', () => (sets.length > count && sets.at(-1)!.length === 0 ? sets.at(-1) : undefined));
      assert.deepEqual(empty, []);
      const st: LocalServicesStatus = local.status();
      assert.deepEqual(st.problems.map((p) => p.id), ['bad-1']);
    } finally {
      local.close();
      for (const id of ['mine', 'bad-1']) await fetch(`http://${consul.address}/v1/agent/service/deregister/${id}`, { method: 'PUT' });
    }
  });

  test('through the agent\'s Consul link, a minInterval of 0 still polls at most every 100 ms', async () => {
    const link = new ConsulLink({ address: consul.address, registerServices: false, localServices: true, resyncIntervalMs: 30_000, stale: false, waitMs: 5000, minIntervalMs: 0 }, log);
    const since = Date.now();
    link.watchLocalServices(() => {}, () => false);
    try {
      await eventually('four polls', () => (consul.requestCount('/v1/agent/services', since) >= 4 ? true : undefined));
    } finally {
      await link.close();
    }
    const at = consul.requests.filter((r) => r.path === '/v1/agent/services' && r.at >= since).map((r) => r.at);
    for (let i = 1; i < at.length; i++) assert.ok(at[i]! - at[i - 1]! >= 90, `polls ${at[i]! - at[i - 1]!} ms apart`);
  });
});
