// ConsulSource against the Consul stand-in on a real socket: conversion, blocking-query index handling, rate limit, outage and recovery; CombinedSource; settings from env.

import { describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isMeshError } from '../../src/errors';
import {
  CombinedSource,
  consulSettingsFromEnv,
  ConsulSource,
  resolveConsulSettings,
  StaticFileSource,
  type ConsulSourceOptions,
  type ConsulWatchStatus,
  type DiscoverySource,
  type DiscoveryUpdate,
  type Endpoint,
  type ServiceKey,
} from '../../src/registry';
import { ConsulStandin } from '../consul-standin/consul-standin';

const svc = (name: string, namespace = 'default'): ServiceKey => ({ name, namespace });
const ep = (address: string, port = 15443, weight = 1, labels: Record<string, string> = {}): Endpoint => ({ address, port, weight, labels });

/** Collects updates; next() resolves with the first update (already seen or coming) after the ones consumed. */
class Updates {
  readonly all: DiscoveryUpdate[] = [];
  private consumed = 0;
  private waiter: (() => void) | undefined;
  readonly push = (u: DiscoveryUpdate): void => {
    this.all.push(u);
    this.waiter?.();
  };
  async next(what = 'an update', deadlineMs = 5_000): Promise<DiscoveryUpdate> {
    let guard: NodeJS.Timeout | undefined;
    try {
      while (this.all.length <= this.consumed) {
        await new Promise<void>((resolve, reject) => {
          this.waiter = resolve;
          guard = setTimeout(() => reject(new Error(`${what} did not come within ${deadlineMs} ms`)), deadlineMs);
        });
        clearTimeout(guard);
      }
      return this.all[this.consumed++]!;
    } finally {
      clearTimeout(guard);
      this.waiter = undefined;
    }
  }
}

/** A deadline for awaiting an event, not a wait: the event ends it. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let guard: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => (guard = setTimeout(() => reject(new Error(`${what} did not happen within ${ms} ms`)), ms)));
  return Promise.race([p, deadline]).finally(() => clearTimeout(guard));
}

async function setup(t: TestContext, opts: ConsulSourceOptions = {}, standinOpts: ConstructorParameters<typeof ConsulStandin>[0] = {}): Promise<{ consul: ConsulStandin; source: ConsulSource; statuses: ConsulWatchStatus[] }> {
  const consul = new ConsulStandin({ waitJitter: false, ...standinOpts });
  await consul.start(0);
  const statuses: ConsulWatchStatus[] = [];
  const source = new ConsulSource({ env: {}, consul: { address: consul.address }, waitMs: 30_000, minIntervalMs: 0, ...opts, onStatus: (s) => (statuses.push(s), opts.onStatus?.(s)) });
  t.after(async () => {
    source.close();
    await consul.close();
  });
  return { consul, source, statuses };
}

async function put(consul: ConsulStandin, path: string, body: unknown): Promise<void> {
  const res = await fetch(`http://${consul.address}${path}`, { method: 'PUT', body: JSON.stringify(body) });
  assert.equal(res.status, 200, await res.text());
}

/** Registers a service instance on another node, as Nomad or an operator would, with one check. */
function registerRemote(consul: ConsulStandin, node: string, address: string, service: Record<string, unknown>, status = 'passing', nodeMeta: Record<string, string> = { 'mesh-inbound-port': '15443' }): Promise<void> {
  const id = (service.ID ?? service.Service) as string;
  return put(consul, '/v1/catalog/register', { Node: node, Address: address, NodeMeta: nodeMeta, Service: service, Check: { CheckID: `service:${id}`, ServiceID: id, Name: 'app', Status: status } });
}

describe('ConsulSource', () => {
  test('endpoints appear on registration with the address, port, labels and weight conventions', async (t) => {
    const { consul, source } = await setup(t);
    const got = new Updates();
    source.watch(svc('api'), got.push);
    assert.deepEqual(await got.next('the first update'), { type: 'reset', endpoints: [] }, 'an unknown service is a reset with no endpoints');

    await registerRemote(consul, 'node-b', '10.0.0.2', { ID: 'api-1', Service: 'api', Port: 8080, Tags: ['canary', 'zone=a', 'version=v1'], Meta: { version: 'v2' }, Weights: { Passing: 5, Warning: 1 } });
    assert.deepEqual(await got.next('api-1'), { type: 'reset', endpoints: [ep('10.0.0.2', 15443, 5, { zone: 'a', version: 'v2' })] }, 'node address + node meta port; meta wins over a tag');

    // Service address and service meta port win over the node's.
    await registerRemote(consul, 'node-c', '10.0.0.3', { ID: 'api-2', Service: 'api', Address: '10.0.1.3', Meta: { 'mesh-inbound-port': '16000' } });
    assert.deepEqual(await got.next('api-2'), { type: 'reset', endpoints: [ep('10.0.0.2', 15443, 5, { zone: 'a', version: 'v2' }), ep('10.0.1.3', 16000)] });

    // Not in the mesh (no port) or in another namespace: no endpoint, and no update since nothing changed.
    await registerRemote(consul, 'node-d', '10.0.0.4', { ID: 'api-3', Service: 'api' }, 'passing', {});
    await registerRemote(consul, 'node-e', '10.0.0.5', { ID: 'api-4', Service: 'api', Meta: { 'mesh-namespace': 'prod' } });
    const prod = new Updates();
    source.watch(svc('api', 'prod'), prod.push);
    assert.deepEqual(await prod.next('api in prod'), { type: 'reset', endpoints: [ep('10.0.0.5')] });
    await registerRemote(consul, 'node-b', '10.0.0.2', { ID: 'api-1', Service: 'api', Tags: ['zone=b'] });
    assert.deepEqual(await got.next('api-1 changed'), { type: 'reset', endpoints: [ep('10.0.0.2', 15443, 1, { zone: 'b' }), ep('10.0.1.3', 16000)] });
    assert.equal(got.all.length, 4, 'the two changes that touched no default-namespace endpoint emitted nothing');
    const status = source.status().find((s) => s.service === 'api.default')!;
    assert.equal(status.skipped, 1);
    assert.equal(status.endpoints, 2);
    assert.equal(status.stale, false);
    assert.equal(status.knownLeader, true);
  });

  test('an instance without port meta takes the port of the passing mesh-agent on its node (as for a service Nomad registered)', async (t) => {
    const { consul, source } = await setup(t);
    const got = new Updates();
    await registerRemote(consul, 'node-n', '10.0.0.9', { ID: '_nomad-task-api', Service: 'api', Port: 23456, Tags: ['mesh'] }, 'passing', {});
    source.watch(svc('api'), got.push);
    assert.deepEqual(await got.next('no port known yet'), { type: 'reset', endpoints: [] });
    await registerRemote(consul, 'node-n', '10.0.0.9', { ID: 'mesh-agent-node-n', Service: 'mesh-agent', Port: 17443, Meta: { 'mesh-inbound-port': '17443' } }, 'passing', {});
    assert.deepEqual(await got.next('the agent registered'), { type: 'reset', endpoints: [ep('10.0.0.9', 17443)] });
    consul.setCheckStatus('service:mesh-agent-node-n', 'critical', 'agent down', 'node-n');
    assert.deepEqual(await got.next('the agent failing its check'), { type: 'reset', endpoints: [] });
    assert.equal(source.status().find((s) => s.service === 'api.default')!.skipped, 1);
  });

  test('a failing check removes the instance within a second of the blocking query returning', async (t) => {
    const { consul, source } = await setup(t);
    await registerRemote(consul, 'node-b', '10.0.0.2', { ID: 'pay-1', Service: 'pay' });
    await registerRemote(consul, 'node-c', '10.0.0.3', { ID: 'pay-2', Service: 'pay' });
    // A local service with a TTL check, as the agent or Nomad registers it: critical until the first pass.
    await put(consul, '/v1/agent/service/register', { Name: 'pay', ID: 'pay-local', Meta: { 'mesh-inbound-port': '15443' }, Check: { TTL: '30s' } });
    const got = new Updates();
    source.watch(svc('pay'), got.push);
    assert.deepEqual(await got.next(), { type: 'reset', endpoints: [ep('10.0.0.2'), ep('10.0.0.3')] });

    await put(consul, '/v1/agent/check/pass/service:pay-local', {});
    assert.deepEqual(await got.next('the TTL pass'), { type: 'reset', endpoints: [ep('10.0.0.2'), ep('10.0.0.3'), ep('127.0.0.1')] });

    // The source blocks with a 30 s wait, so only the blocking query returning on the change can bring this.
    const t0 = Date.now();
    consul.setCheckStatus('service:pay-2', 'critical', 'connection refused', 'node-c');
    assert.deepEqual(await got.next('the failing check', 1_000), { type: 'reset', endpoints: [ep('10.0.0.2'), ep('127.0.0.1')] });
    assert.ok(Date.now() - t0 < 1_000);

    await put(consul, '/v1/agent/check/warn/service:pay-local', {});
    assert.deepEqual(await got.next('the warning', 1_000), { type: 'reset', endpoints: [ep('10.0.0.2')] }, 'warning is not passing');
    await put(consul, '/v1/catalog/deregister', { Node: 'node-b', ServiceID: 'pay-1' });
    assert.deepEqual(await got.next('the deregistration', 1_000), { type: 'reset', endpoints: [] });
  });

  test('a wake-up with unchanged data emits nothing', async (t) => {
    const { consul, source } = await setup(t, { waitMs: 50 });
    await registerRemote(consul, 'node-b', '10.0.0.2', { ID: 'q-1', Service: 'q' });
    const got = new Updates();
    source.watch(svc('q'), got.push);
    await got.next();
    const since = Date.now();
    await within(new Promise<void>((resolve) => {
      const tick = setInterval(() => consul.requestCount('/v1/health/service/q', since) >= 3 && (clearInterval(tick), resolve()), 10);
    }), 5_000, 'three wait expiries');
    assert.equal(got.all.length, 1);
  });

  test('the index going backwards resets it to 0 and the source still converges', async (t) => {
    const { consul, source } = await setup(t);
    await registerRemote(consul, 'node-b', '10.0.0.2', { ID: 'db-1', Service: 'db' });
    for (let i = 0; i < 20; i++) await put(consul, '/v1/agent/service/register', { Name: `noise-${i}` }); // push the index up
    await registerRemote(consul, 'node-c', '10.0.0.3', { ID: 'db-2', Service: 'db' });
    const got = new Updates();
    source.watch(svc('db'), got.push);
    await got.next();
    const before = source.status()[0]!.lastIndex;
    assert.ok(before > 20);

    await within(consul.whenParked('db'), 2_000, 'the blocking query');
    const since = Date.now();
    consul.forceIndex(3); // a snapshot restore; parked queries return with index 3
    await within(new Promise<void>((resolve) => {
      const tick = setInterval(() => consul.requests.some((r) => r.at >= since && r.path === '/v1/health/service/db' && !r.query.has('index')) && (clearInterval(tick), resolve()), 5);
    }), 2_000, 'a non-blocking re-read after the reset');

    // New writes have indexes far below the old one; a client that kept blocking on it would not see them for 30 s.
    await registerRemote(consul, 'node-d', '10.0.0.4', { ID: 'db-3', Service: 'db' });
    assert.deepEqual(await got.next('db-3 after the restore', 2_000), { type: 'reset', endpoints: [ep('10.0.0.2'), ep('10.0.0.3'), ep('10.0.0.4')] });
    assert.ok(source.status()[0]!.lastIndex < before);
  });

  test('an index of 0 is never blocked on: no hot loop, and changes still arrive', async (t) => {
    const { consul, source } = await setup(t, { minIntervalMs: 0 });
    consul.zeroIndex = true;
    await registerRemote(consul, 'node-b', '10.0.0.2', { ID: 'z-1', Service: 'z' });
    const got = new Updates();
    source.watch(svc('z'), got.push);
    await got.next();
    const since = Date.now();
    await new Promise((r) => setTimeout(r, 300)); // a window to count requests in: no event marks "did not loop"
    // A hot loop would make hundreds; one re-read that was already under way when the window opened is fine (seen under load).
    assert.ok(consul.requestCount('/v1/health/service/z', since) <= 2, `requests in 300 ms: ${consul.requestCount('/v1/health/service/z', since)}`);
    assert.ok(consul.requests.filter((r) => r.path === '/v1/health/service/z').every((r) => r.query.get('index') !== '0'));
    await registerRemote(consul, 'node-c', '10.0.0.3', { ID: 'z-2', Service: 'z' });
    assert.deepEqual(await got.next('z-2', 2_000), { type: 'reset', endpoints: [ep('10.0.0.2'), ep('10.0.0.3')] });
  });

  test('the loop is rate-limited when the data churns', async (t) => {
    const { consul, source } = await setup(t, { minIntervalMs: 200 });
    await registerRemote(consul, 'node-b', '10.0.0.2', { ID: 'c-1', Service: 'c' });
    const got = new Updates();
    source.watch(svc('c'), got.push);
    await got.next();
    const since = Date.now();
    let flip = false;
    const churn = setInterval(() => consul.setCheckStatus('service:c-1', (flip = !flip) ? 'critical' : 'passing', '', 'node-b'), 5);
    await new Promise((r) => setTimeout(r, 600)); // a window to count requests in
    clearInterval(churn);
    const n = consul.requestCount('/v1/health/service/c', since);
    assert.ok(n >= 2 && n <= 5, `requests in 600 ms at one per 200 ms: ${n}`);
  });

  test('Consul stopped: the last endpoints are kept and status is stale; restarted: it recovers by itself', async (t) => {
    let onStatus: ((s: ConsulWatchStatus) => void) | undefined;
    const { consul, source } = await setup(t, { backoffBaseMs: 20, backoffCapMs: 100, onStatus: (s) => onStatus?.(s) });
    const statusWhere = (pred: (s: ConsulWatchStatus) => boolean, what: string): Promise<ConsulWatchStatus> =>
      within(new Promise((resolve) => (onStatus = (s) => pred(s) && resolve(s))), 5_000, what);
    await registerRemote(consul, 'node-b', '10.0.0.2', { ID: 'w-1', Service: 'w' });
    await registerRemote(consul, 'node-c', '10.0.0.3', { ID: 'w-2', Service: 'w' });
    const got = new Updates();
    source.watch(svc('w'), got.push);
    await got.next();

    const failing = statusWhere((s) => s.consecutiveErrors >= 3, 'three failed queries');
    await consul.stop();
    const down = await failing;
    assert.equal(down.stale, true);
    assert.match(down.lastError ?? '', /^MESH_ERR_CONSUL: /);
    assert.equal(got.all.length, 1, 'nothing emitted: the last endpoints stay');
    assert.equal(source.status()[0]!.endpoints, 2);

    // A change made while this agent could not see Consul arrives once it can.
    consul.setCheckStatus('service:w-2', 'critical', '', 'node-c');
    const recovered = statusWhere((s) => !s.stale, 'recovery');
    await consul.start();
    const up = await recovered;
    assert.equal(up.lastError, undefined);
    assert.deepEqual(await got.next('the change made during the outage'), { type: 'reset', endpoints: [ep('10.0.0.2')] });
  });

  test('watchers of one service share one query loop; a late watcher gets the current endpoints at once', async (t) => {
    const { consul, source } = await setup(t);
    await registerRemote(consul, 'node-b', '10.0.0.2', { ID: 's-1', Service: 's' });
    const a = new Updates();
    const stopA = source.watch(svc('s'), a.push);
    await a.next();
    const b: DiscoveryUpdate[] = [];
    source.watch(svc('s'), (u) => b.push(u));
    assert.deepEqual(b, [{ type: 'reset', endpoints: [ep('10.0.0.2')] }]);
    assert.equal(source.status().length, 1);
    stopA();
    await registerRemote(consul, 'node-c', '10.0.0.3', { ID: 's-2', Service: 's' });
    await within(new Promise<void>((r) => { const tick = setInterval(() => b.length === 2 && (clearInterval(tick), r()), 5); }), 2_000, 'the second watcher\'s update');
    assert.equal(a.all.length, 1, 'a stopped watcher hears nothing');
  });

  test('the token is sent as X-Consul-Token and stale reads ask for ?stale', async (t) => {
    const consul = new ConsulStandin();
    await consul.start(0);
    const source = new ConsulSource({ env: { CONSUL_HTTP_ADDR: 'http://127.0.0.1:1', CONSUL_HTTP_TOKEN: 'from-env' }, consul: { address: consul.address, token: 'secret' }, stale: true });
    t.after(async () => {
      source.close();
      await consul.close();
    });
    const got = new Updates();
    source.watch(svc('t'), got.push);
    await got.next();
    const req = consul.requests.find((r) => r.path === '/v1/health/service/t')!;
    assert.equal(req.headers['x-consul-token'], 'secret');
    assert.ok(req.query.has('stale'));
    assert.equal(req.query.get('passing'), 'true');
  });
});

describe('CombinedSource', () => {
  /** A source driven by hand. */
  class HandSource implements DiscoverySource {
    readonly fns = new Set<(u: DiscoveryUpdate) => void>();
    watch(_s: ServiceKey, fn: (u: DiscoveryUpdate) => void): () => void {
      this.fns.add(fn);
      return () => this.fns.delete(fn);
    }
    send(u: DiscoveryUpdate): void {
      for (const fn of this.fns) fn(u);
    }
    close(): void {}
  }

  test('merges an endpoints file and Consul', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'mesh-combined-'));
    const file = join(dir, 'endpoints.yaml');
    writeFileSync(file, 'services:\n  api:\n    - { address: 10.9.9.9, port: 15443, labels: { source: file } }\n    - { address: 10.0.0.2, port: 15443, weight: 7 }\n');
    const { consul, source } = await setup(t);
    const combined = new CombinedSource([new StaticFileSource(file), source]);
    t.after(() => {
      combined.close();
      rmSync(dir, { recursive: true, force: true });
    });
    await registerRemote(consul, 'node-b', '10.0.0.2', { ID: 'api-1', Service: 'api' });
    await registerRemote(consul, 'node-c', '10.0.0.3', { ID: 'api-2', Service: 'api' });
    const got = new Updates();
    combined.watch(svc('api'), got.push);
    assert.deepEqual(await got.next('the file'), { type: 'reset', endpoints: [ep('10.9.9.9', 15443, 1, { source: 'file' }), ep('10.0.0.2', 15443, 7)] });
    assert.deepEqual(await got.next('consul'), { type: 'reset', endpoints: [ep('10.9.9.9', 15443, 1, { source: 'file' }), ep('10.0.0.2', 15443, 7), ep('10.0.0.3')] }, 'the first source wins for the same address:port');
    consul.setCheckStatus('service:api-2', 'critical', '', 'node-c');
    assert.deepEqual(await got.next('consul removal'), { type: 'reset', endpoints: [ep('10.9.9.9', 15443, 1, { source: 'file' }), ep('10.0.0.2', 15443, 7)] });

    const other = new Updates();
    combined.watch(svc('nowhere'), other.push);
    assert.deepEqual(await other.next(), { type: 'reset', endpoints: [] }, 'the file does not know it, Consul has no instance');
  });

  test('does-not-exist only when every source says so; add and remove are applied', () => {
    const a = new HandSource();
    const b = new HandSource();
    const got: DiscoveryUpdate[] = [];
    new CombinedSource([a, b]).watch(svc('x'), (u) => got.push(u));
    a.send({ type: 'does-not-exist' });
    assert.deepEqual(got, [], 'held back until b answers');
    b.send({ type: 'does-not-exist' });
    assert.deepEqual(got, [{ type: 'does-not-exist' }]);
    b.send({ type: 'add', endpoints: [ep('1.1.1.1'), ep('2.2.2.2')] });
    b.send({ type: 'remove', addresses: [{ address: '1.1.1.1', port: 15443 }] });
    a.send({ type: 'does-not-exist' });
    assert.deepEqual(got.slice(1), [
      { type: 'reset', endpoints: [ep('1.1.1.1'), ep('2.2.2.2')] },
      { type: 'reset', endpoints: [ep('2.2.2.2')] },
    ]);
  });
});

describe('Consul settings', () => {
  test('come from the standard variables', () => {
    assert.deepEqual(consulSettingsFromEnv({}), {});
    assert.deepEqual(
      consulSettingsFromEnv({ CONSUL_HTTP_ADDR: 'https://consul.internal:8501', CONSUL_HTTP_TOKEN: 't', CONSUL_CACERT: '/ca.pem', CONSUL_CLIENT_CERT: '/c.pem', CONSUL_CLIENT_KEY: '/k.pem', CONSUL_TLS_SERVER_NAME: 'server.dc1.consul' }),
      { address: 'consul.internal:8501', scheme: 'https', token: 't', caFile: '/ca.pem', certFile: '/c.pem', keyFile: '/k.pem', tlsServerName: 'server.dc1.consul' },
    );
    assert.equal(consulSettingsFromEnv({ CONSUL_HTTP_ADDR: '10.0.0.1:8500', CONSUL_HTTP_SSL: 'true' }).scheme, 'https');
    assert.equal(consulSettingsFromEnv({ CONSUL_HTTP_ADDR: 'https://10.0.0.1:8501', CONSUL_HTTP_SSL: 'false' }).scheme, 'https', 'SSL=false does not downgrade an https:// address');
    assert.throws(() => consulSettingsFromEnv({ CONSUL_HTTP_SSL: 'yes' }), (e) => isMeshError(e, 'MESH_ERR_CONFIG') && /CONSUL_HTTP_SSL/.test(e.message));
    assert.throws(() => consulSettingsFromEnv({ CONSUL_HTTP_ADDR: 'unix:///run/consul.sock' }), (e) => isMeshError(e, 'MESH_ERR_CONFIG'));
  });

  test('config overrides env field by field; the token file wins over the token; cert and key go together', (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'mesh-consul-settings-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const tokenFile = join(dir, 'token');
    writeFileSync(tokenFile, '  file-token\n');
    const s = resolveConsulSettings({ address: 'consul.local:8500' }, { CONSUL_HTTP_ADDR: '10.0.0.1:8500', CONSUL_HTTP_TOKEN: 'env-token', CONSUL_HTTP_TOKEN_FILE: tokenFile, CONSUL_HTTP_SSL: '1' });
    assert.equal(s.address, 'consul.local:8500');
    assert.equal(s.scheme, 'https');
    assert.equal(s.token, 'file-token');
    assert.equal(resolveConsulSettings({ token: 'config-token' }, { CONSUL_HTTP_TOKEN_FILE: tokenFile }).token, 'config-token', 'config beats the env token file');
    assert.deepEqual(resolveConsulSettings({}, {}), { address: '127.0.0.1:8500', scheme: 'http' });
    assert.equal(resolveConsulSettings({ address: 'http://c:8500' }, { CONSUL_HTTP_SSL: 'true' }).scheme, 'http', 'a scheme in the config address wins');
    assert.throws(() => resolveConsulSettings({ tokenFile: join(dir, 'missing') }, {}), (e) => isMeshError(e, 'MESH_ERR_CONFIG') && e.message.includes('missing'));
    assert.throws(() => resolveConsulSettings({ certFile: '/c.pem' }, {}), (e) => isMeshError(e, 'MESH_ERR_CONFIG'));
  });
});
