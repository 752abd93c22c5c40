// Unit tests for Cluster: discovery updates, picks through its balancer, subsets, acquire/done with active counts, circuit breaking and outlier ejection.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Cluster, type Lease, type Overflow } from '../../src/proxy/cluster';
import type { LoadBalancer } from '../../src/proxy/load-balancer';
import type { Endpoint } from '../../src/registry';
import { FakeClock } from '../helpers/fake-clock';

const ep = (address: string, port = 15443, weight = 1): Endpoint => ({ address, port, weight, labels: {} });
const A = ep('10.0.0.1');
const B = ep('10.0.0.2');
const C = ep('10.0.0.3');
const D = ep('10.0.0.4');

/** The addresses of the next `n` picks. */
const picks = (c: Cluster, n: number): string[] => Array.from({ length: n }, () => c.pick()?.address ?? 'none');

test('a new cluster knows nothing and picks nothing', () => {
  const c = new Cluster('api.default');
  assert.equal(c.pick(), undefined);
  const snap = c.snapshot();
  assert.deepEqual({ name: snap.name, known: snap.known, endpoints: snap.endpoints }, { name: 'api.default', known: false, endpoints: [] });
});

test('reset replaces the endpoints, and round robin takes each in turn', () => {
  const c = new Cluster('api.default');
  c.apply({ type: 'reset', endpoints: [A, B, C] });
  assert.equal(c.snapshot().known, true);
  assert.deepEqual(picks(c, 7), ['10.0.0.1', '10.0.0.2', '10.0.0.3', '10.0.0.1', '10.0.0.2', '10.0.0.3', '10.0.0.1']);
  c.apply({ type: 'reset', endpoints: [D] });
  assert.deepEqual(picks(c, 3), ['10.0.0.4', '10.0.0.4', '10.0.0.4']);
  c.apply({ type: 'reset', endpoints: [] });
  assert.equal(c.pick(), undefined);
  assert.equal(c.snapshot().known, true, 'an empty reset is a known service with no endpoints');
});

test('reset copies the list it was given', () => {
  const c = new Cluster('api.default');
  const list = [A, B];
  c.apply({ type: 'reset', endpoints: list });
  list.push(C);
  assert.deepEqual(c.snapshot().endpoints, [A, B]);
});

test('add appends new endpoints and replaces ones with the same address:port', () => {
  const c = new Cluster('api.default');
  c.apply({ type: 'add', endpoints: [A] });
  assert.equal(c.snapshot().known, true);
  c.apply({ type: 'add', endpoints: [B, C] });
  const heavierA = ep('10.0.0.1', 15443, 5);
  c.apply({ type: 'add', endpoints: [heavierA] });
  assert.deepEqual(c.snapshot().endpoints, [B, C, heavierA]);
  // Same address, another port: another endpoint.
  c.apply({ type: 'add', endpoints: [ep('10.0.0.1', 16443)] });
  assert.equal(c.snapshot().endpoints.length, 4);
  // Weights 1 + 1 + 5 + 1: one round-robin period is 8 picks.
  const seen = picks(c, 8);
  assert.deepEqual(new Set(seen), new Set(['10.0.0.1', '10.0.0.2', '10.0.0.3']));
  assert.equal(seen.filter((a) => a === '10.0.0.1').length, 6, 'both 10.0.0.1 endpoints are picked, the heavier one 5 times');
});

test('remove takes endpoints out by address:port; unknown ones are ignored', () => {
  const c = new Cluster('api.default');
  c.apply({ type: 'reset', endpoints: [A, B, C] });
  c.apply({ type: 'remove', addresses: [{ address: '10.0.0.2', port: 15443 }, { address: '10.9.9.9', port: 1 }, { address: '10.0.0.3', port: 1 }] });
  assert.deepEqual(c.snapshot().endpoints, [A, C]);
  assert.ok(!picks(c, 6).includes('10.0.0.2'));
  c.apply({ type: 'remove', addresses: [A, C] });
  assert.equal(c.pick(), undefined);
  assert.equal(c.snapshot().known, true, 'removing every endpoint does not make the service unknown');
});

test('does-not-exist empties the cluster and marks it unknown; a later reset brings it back', () => {
  const c = new Cluster('api.default');
  c.apply({ type: 'reset', endpoints: [A, B] });
  c.apply({ type: 'does-not-exist' });
  assert.equal(c.pick(), undefined);
  assert.equal(c.snapshot().known, false);
  assert.deepEqual(c.snapshot().endpoints, []);
  c.apply({ type: 'reset', endpoints: [C] });
  assert.equal(c.pick(), C);
  assert.equal(c.snapshot().known, true);
});

test('round robin spreads picks evenly and keeps going after the endpoint set changes', () => {
  const c = new Cluster('api.default', { loadBalancer: { simple: 'ROUND_ROBIN' } });
  c.apply({ type: 'reset', endpoints: [A, B, C, D] });
  const counts = new Map<string, number>();
  for (const a of picks(c, 400)) counts.set(a, (counts.get(a) ?? 0) + 1);
  assert.deepEqual([...counts.values()], [100, 100, 100, 100]);
  c.apply({ type: 'remove', addresses: [D] });
  const after = picks(c, 6);
  assert.deepEqual(new Set(after), new Set(['10.0.0.1', '10.0.0.2', '10.0.0.3']));
  assert.ok(after.every((a, i) => i === 0 || a !== after[i - 1]), `consecutive picks differ: ${after.join(',')}`);
});

test('the cluster picks through the load balancer its factory made, giving it the endpoints', () => {
  const calls: string[][] = [];
  let last: Endpoint | undefined;
  const lastOne: LoadBalancer = {
    update: (eps) => {
      calls.push(eps.map((e) => e.address));
      last = eps[eps.length - 1];
    },
    pick: () => last,
  };
  const c = new Cluster('api.default', { loadBalancer: () => lastOne });
  c.apply({ type: 'reset', endpoints: [A, B] });
  assert.equal(c.pick(), B, 'pick() returns the discovery object itself');
  assert.deepEqual(calls.at(-1), ['10.0.0.1', '10.0.0.2']);
  assert.equal(c.snapshot().loadBalancer, 'CUSTOM');
});

test('the load balancer follows the options and setLoadBalancer(); the default stays ROUND_ROBIN', () => {
  assert.equal(new Cluster('api.default').snapshot().loadBalancer, 'ROUND_ROBIN');
  const c = new Cluster('api.default', { loadBalancer: { simple: 'RANDOM' } });
  assert.equal(c.snapshot().loadBalancer, 'RANDOM');
  c.apply({ type: 'reset', endpoints: [A, B, C] });
  c.setLoadBalancer({ consistentHash: { httpHeaderName: 'x-user' } });
  assert.equal(c.snapshot().loadBalancer, 'CONSISTENT_HASH');
  const first = c.pick({ hashKey: 'alice' });
  for (let i = 0; i < 20; i++) assert.equal(c.pick({ hashKey: 'alice' }), first);
  assert.throws(() => c.setLoadBalancer({ simple: 'NOPE' as 'RANDOM' }), /NOPE/);
  assert.equal(c.snapshot().loadBalancer, 'CONSISTENT_HASH', 'a refused setting changes nothing');
  c.setLoadBalancer();
  assert.deepEqual(picks(c, 3), ['10.0.0.1', '10.0.0.2', '10.0.0.3']);
});

const v = (address: string, version: string, extra: Record<string, string> = {}): Endpoint => ({ address, port: 15443, weight: 1, labels: { version, ...extra } });

test('subsets: picks only among endpoints carrying all the subset\'s labels, and follow discovery updates', () => {
  const c = new Cluster('api.default');
  c.apply({ type: 'reset', endpoints: [v('10.0.1.1', 'v1'), v('10.0.1.2', 'v2'), v('10.0.1.3', 'v1', { zone: 'a' }), v('10.0.1.4', 'v2', { zone: 'a' })] });
  c.setSubsets({ v1: { version: 'v1' }, v2a: { version: 'v2', zone: 'a' }, all: {} });
  const of = (subset: string, n = 8): Set<string | undefined> => new Set(Array.from({ length: n }, () => c.pick({ subset })?.address));
  assert.deepEqual(of('v1'), new Set(['10.0.1.1', '10.0.1.3']));
  assert.deepEqual(of('v2a'), new Set(['10.0.1.4']));
  assert.equal(of('all').size, 4);
  assert.deepEqual(of('nope', 2), new Set([undefined]), 'an unknown subset has no endpoint');
  assert.equal(c.acquire({ subset: 'nope' }), undefined);
  c.apply({ type: 'add', endpoints: [v('10.0.1.5', 'v1')] });
  c.apply({ type: 'remove', addresses: [{ address: '10.0.1.1', port: 15443 }] });
  assert.deepEqual(of('v1'), new Set(['10.0.1.3', '10.0.1.5']));
  // A relabelled endpoint moves between subsets.
  c.apply({ type: 'add', endpoints: [v('10.0.1.5', 'v2', { zone: 'a' })] });
  assert.deepEqual(of('v1'), new Set(['10.0.1.3']));
  assert.deepEqual(of('v2a'), new Set(['10.0.1.4', '10.0.1.5']));
  assert.deepEqual(c.snapshot().subsets, {
    v1: { labels: { version: 'v1' }, healthyEndpoints: 1 },
    v2a: { labels: { version: 'v2', zone: 'a' }, healthyEndpoints: 2 },
    all: { labels: {}, healthyEndpoints: 4 },
  });
  c.setSubsets({});
  assert.equal(c.pick({ subset: 'v1' }), undefined, 'setSubsets replaces the earlier subsets');
});

const isLease = (r: Lease | Overflow | undefined): r is Lease => r !== undefined && 'endpoint' in r;

test('acquire/done: a lease for a healthy endpoint, active counts up and down, nothing allocated per request', () => {
  const c = new Cluster('api.default');
  assert.equal(c.acquire(), undefined, 'no endpoint');
  c.apply({ type: 'reset', endpoints: [A, B] });
  const l1 = c.acquire();
  const l2 = c.acquire();
  const l3 = c.acquire();
  assert.ok(isLease(l1) && isLease(l2) && isLease(l3));
  assert.deepEqual([l1.endpoint, l2.endpoint, l3.endpoint], [A, B, A]);
  assert.equal(l1, l3, 'the lease is the endpoint\'s own record, shared by its requests');
  assert.equal(c.activeRequests, 3);
  assert.equal(c.snapshot().activeRequests, 3);
  l1.done(200);
  c.release(l2, 200);
  assert.equal(c.activeRequests, 1);
  l3.done('cancelled');
  assert.equal(c.activeRequests, 0);
  assert.equal(c.circuitBreaker.requests.active, 0);
});

test('LEAST_REQUEST reads the cluster\'s active counts: leases held on one endpoint steer picks to the other', () => {
  const c = new Cluster('api.default', { loadBalancer: { simple: 'LEAST_REQUEST' } });
  c.apply({ type: 'reset', endpoints: [A, B] });
  // Draws alternate A then B; with equal load the first draw (A) wins, else the less loaded.
  let i = 0;
  const random = (): number => (i++ % 2 === 0 ? 0.1 : 0.9);
  const got = Array.from({ length: 4 }, () => {
    const l = c.acquire({ random });
    assert.ok(isLease(l));
    return l.endpoint.address;
  });
  assert.deepEqual(got, ['10.0.0.1', '10.0.0.2', '10.0.0.1', '10.0.0.2']);
  const held = [c.acquire({ random }), c.acquire({ random })];
  assert.ok(held.every(isLease));
  // Now A has 3 active, B 3; release two on B: B is less loaded even though A is drawn first.
  const b = held.find((l) => isLease(l) && l.endpoint === B) as Lease;
  b.done(200);
  b.done(200);
  const next = c.acquire({ random });
  assert.ok(isLease(next));
  assert.equal(next.endpoint, B);
});

test('circuit breaker: past maxRequests acquire returns the max-requests overflow until a lease is done', () => {
  const c = new Cluster('api.default', { circuitBreaker: { maxRequests: 2 } });
  c.apply({ type: 'reset', endpoints: [A, B] });
  const l1 = c.acquire();
  const l2 = c.acquire();
  assert.ok(isLease(l1) && isLease(l2));
  assert.deepEqual(c.acquire(), { overflow: 'max-requests' });
  assert.equal(c.activeRequests, 2, 'a refused request is not counted active');
  l1.done(200);
  assert.ok(isLease(c.acquire()));
  assert.deepEqual(c.snapshot().circuitBreaker.requests, { max: 2, active: 2, overflows: 1 });
  c.setCircuitBreaker({ maxRequests: 3 });
  assert.ok(isLease(c.acquire()));
  c.setCircuitBreaker(undefined);
  assert.equal(c.circuitBreaker.requests.max, 2 ** 32 - 1);
});

test('outlier detection: an endpoint failing N times in a row gets no picks until its ejection is over', () => {
  const clock = new FakeClock();
  const c = new Cluster('api.default', { clock, outlierDetection: { consecutive5xxErrors: 2, baseEjectionTimeMs: 30_000, maxEjectionPercent: 50 } });
  c.apply({ type: 'reset', endpoints: [A, B, C, D] });
  assert.equal(c.snapshot().outlierDetection?.ejectionsActive, 0);
  assert.equal(c.healthyEndpoints, 4);
  const fail = (e: Endpoint): void => {
    for (let i = 0; i < 20; i++) {
      const l = c.acquire();
      assert.ok(isLease(l));
      l.done(l.endpoint === e ? 503 : 200);
    }
  };
  fail(B);
  assert.ok(!picks(c, 12).includes('10.0.0.2'), 'B is out');
  assert.deepEqual(new Set(picks(c, 12)), new Set(['10.0.0.1', '10.0.0.3', '10.0.0.4']));
  fail(C);
  fail(D);
  assert.deepEqual(new Set(picks(c, 12)), new Set(['10.0.0.1', '10.0.0.4']), 'D stays: 50 % at most');
  assert.equal(c.healthyEndpoints, 2, 'ejected endpoints are not healthy (mesh_endpoints)');
  const od = c.snapshot().outlierDetection;
  assert.ok(od);
  assert.deepEqual([od.ejectionsTotal, od.ejectionsActive, od.ejectionsOverflow >= 1], [2, 2, true]);
  clock.advance(30_000);
  assert.deepEqual(new Set(picks(c, 12)), new Set(['10.0.0.1', '10.0.0.2', '10.0.0.3', '10.0.0.4']), 'back when the time is up');
  assert.equal(c.snapshot().outlierDetection?.ejectionsActive, 0);
  assert.equal(c.healthyEndpoints, 4);
});

test('outlier detection: with everything ejected there is no healthy endpoint, and subsets see ejections too', () => {
  const clock = new FakeClock();
  const c = new Cluster('api.default', { clock, outlierDetection: { consecutive5xxErrors: 1, maxEjectionPercent: 100 } });
  c.apply({ type: 'reset', endpoints: [v('10.0.1.1', 'v1'), v('10.0.1.2', 'v2')] });
  c.setSubsets({ v1: { version: 'v1' } });
  const l = c.acquire({ subset: 'v1' });
  assert.ok(isLease(l));
  l.done('connect-failed');
  assert.equal(c.acquire({ subset: 'v1' }), undefined, 'the only v1 endpoint is out');
  assert.equal(c.snapshot().subsets.v1.healthyEndpoints, 0);
  const other = c.acquire();
  assert.ok(isLease(other));
  assert.equal(other.endpoint.address, '10.0.1.2');
  other.done(500);
  assert.equal(c.acquire(), undefined);
  assert.equal(c.pick(), undefined);
  c.setOutlierDetection(undefined);
  assert.equal(c.snapshot().outlierDetection, null);
  assert.ok(isLease(c.acquire()), 'turning detection off brings every endpoint back');
});

test('done() after the endpoint was removed, or re-added, keeps counts sane', () => {
  const clock = new FakeClock();
  const c = new Cluster('api.default', { clock, outlierDetection: { consecutive5xxErrors: 1, maxEjectionPercent: 100 } });
  c.apply({ type: 'reset', endpoints: [A, B] });
  const l = c.acquire();
  assert.ok(isLease(l) && l.endpoint === A);
  c.apply({ type: 'remove', addresses: [A] });
  l.done(503);
  assert.equal(c.activeRequests, 0);
  assert.equal(c.snapshot().outlierDetection?.ejectionsTotal, 0, 'an outcome for a removed endpoint ejects nothing');
  c.apply({ type: 'add', endpoints: [A] });
  assert.deepEqual(new Set(picks(c, 4)), new Set(['10.0.0.1', '10.0.0.2']));
});
