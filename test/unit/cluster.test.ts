// Unit tests for Cluster: applying reset / add / remove / does-not-exist updates, and round-robin picks over the result.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Cluster } from '../../src/proxy/cluster';
import { RoundRobin, type LoadBalancer } from '../../src/proxy/load-balancer';
import type { Endpoint } from '../../src/registry';

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
  assert.deepEqual(c.snapshot(), { name: 'api.default', known: false, endpoints: [] });
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
  const seen = picks(c, 8);
  assert.deepEqual(new Set(seen), new Set(['10.0.0.1', '10.0.0.2', '10.0.0.3']));
  assert.equal(seen.filter((a) => a === '10.0.0.1').length, 4, 'both 10.0.0.1 endpoints are picked');
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
  assert.deepEqual(c.snapshot(), { name: 'api.default', known: false, endpoints: [] });
  c.apply({ type: 'reset', endpoints: [C] });
  assert.equal(c.pick(), C);
  assert.equal(c.snapshot().known, true);
});

test('round robin spreads picks evenly and keeps going after the endpoint set changes', () => {
  const c = new Cluster('api.default', new RoundRobin());
  c.apply({ type: 'reset', endpoints: [A, B, C, D] });
  const counts = new Map<string, number>();
  for (const a of picks(c, 400)) counts.set(a, (counts.get(a) ?? 0) + 1);
  assert.deepEqual([...counts.values()], [100, 100, 100, 100]);
  c.apply({ type: 'remove', addresses: [D] });
  const after = picks(c, 6);
  assert.deepEqual(new Set(after), new Set(['10.0.0.1', '10.0.0.2', '10.0.0.3']));
  assert.ok(after.every((a, i) => i === 0 || a !== after[i - 1]), `consecutive picks differ: ${after.join(',')}`);
});

test('the cluster picks through the load balancer it was given', () => {
  const calls: Endpoint[][] = [];
  const last: LoadBalancer = { pick: (eps) => (calls.push([...eps]), eps[eps.length - 1]) };
  const c = new Cluster('api.default', last);
  c.apply({ type: 'reset', endpoints: [A, B] });
  assert.equal(c.pick(), B);
  assert.deepEqual(calls, [[A, B]]);
});
