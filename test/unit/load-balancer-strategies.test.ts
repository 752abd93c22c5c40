// What each load balancer does beyond the shared suite: the smooth WRR sequence, P2C under load, hash stability, the factory.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isMeshError } from '../../src/errors';
import { HashRing, hashString, RING_POINTS_PER_WEIGHT } from '../../src/proxy/hash-ring';
import {
  createLoadBalancer,
  endpointWeight,
  LeastRequest,
  loadBalancerName,
  RingHash,
  RoundRobin,
  WeightedRandom,
  type EndpointStats,
  type LoadBalancer,
  type LoadBalancerName,
} from '../../src/proxy/load-balancer';
import type { Endpoint } from '../../src/registry';
import { seeded } from '../helpers/seeded-random';


const ep = (name: string, weight = 1): Endpoint => ({ address: name, port: 15443, weight, labels: {} });
const names = (lb: LoadBalancer, n: number): string => Array.from({ length: n }, () => lb.pick()?.address ?? '-').join(' ');

test('smooth weighted round robin gives nginx\'s sequence: weights 5,1,1 → a a b a c a a', () => {
  const lb = new RoundRobin();
  lb.update([ep('a', 5), ep('b', 1), ep('c', 1)]);
  assert.equal(names(lb, 14), 'a a b a c a a a a b a c a a');
});

test('smooth weighted round robin interleaves 2:1 as a b a, and weights are reduced by their gcd', () => {
  const lb = new RoundRobin();
  lb.update([ep('a', 4), ep('b', 2)]);
  assert.equal(names(lb, 6), 'a b a a b a');
  lb.update([ep('a', 3), ep('b', 2)]);
  // nginx: 3,2 → a b a b a (never three a in a row).
  assert.equal(names(lb, 5).split(' ').sort().join(''), 'aaabb');
});

test('round robin with equal weights rotates in order and keeps its place across updates', () => {
  const lb = new RoundRobin();
  lb.update([ep('a'), ep('b'), ep('c')]);
  assert.equal(names(lb, 4), 'a b c a');
  lb.update([ep('a'), ep('b'), ep('c'), ep('d')]);
  assert.equal(names(lb, 4), 'b c d a', 'continues from position 1, not from the start');
});

test('round robin over a period longer than maxSequence uses an EDF schedule: exact shares, no long runs', () => {
  const lb = new RoundRobin(4);
  lb.update([ep('a', 3), ep('b', 1), ep('c', 1)]);
  const seq = names(lb, 50).split(' ');
  const count = (x: string): number => seq.filter((s) => s === x).length;
  assert.deepEqual([count('a'), count('b'), count('c')], [30, 10, 10]);
  let run = 0;
  let longest = 0;
  for (let i = 0; i < seq.length; i++) longest = Math.max(longest, (run = i > 0 && seq[i] === seq[i - 1] ? run + 1 : 1));
  assert.ok(longest <= 3, `longest run ${longest}`);
});

test('least request (P2C): of two equal endpoints the busy one is picked only when both draws hit it (~1/4)', () => {
  const [a, b] = [ep('a'), ep('b')];
  const active = new Map([[a, 10], [b, 0]]);
  const lb = new LeastRequest({ activeRequests: (e) => active.get(e) ?? 0 });
  lb.update([a, b]);
  const random = seeded(11);
  let busy = 0;
  const n = 20_000;
  for (let i = 0; i < n; i++) if (lb.pick({ random }) === a) busy++;
  assert.ok(Math.abs(busy / n - 0.25) < 0.015, `busy endpoint got ${(busy / n).toFixed(4)}`);
});

test('least request (P2C): with nine busy endpoints and one idle, the idle one gets 1 - 0.9² ≈ 19 %', () => {
  const set = Array.from({ length: 10 }, (_, i) => ep(`e${i}`));
  const lb = new LeastRequest({ activeRequests: (e) => (e === set[0] ? 0 : 5) });
  lb.update(set);
  const random = seeded(12);
  let idle = 0;
  const n = 20_000;
  for (let i = 0; i < n; i++) if (lb.pick({ random }) === set[0]) idle++;
  assert.ok(Math.abs(idle / n - 0.19) < 0.015, `idle endpoint got ${(idle / n).toFixed(4)}`);
});

test('least request compares active requests per unit of weight, and the first draw wins a tie', () => {
  const [a, b] = [ep('a', 3), ep('b', 1)];
  const active = new Map([[a, 3], [b, 0]]);
  const stats: EndpointStats = { activeRequests: (e) => active.get(e) ?? 0 };
  const lb = new LeastRequest(stats);
  lb.update([a, b]);
  // Draws come from the alias table for weights 3,1: u = 0.1 → a, u = 0.6 → b.
  const draws = (...u: number[]) => {
    let i = 0;
    return { random: () => u[i++] };
  };
  assert.equal(lb.pick(draws(0.1, 0.6)), b, '3/3 = 1 > 0/1: b is less loaded');
  active.set(b, 1);
  assert.equal(lb.pick(draws(0.1, 0.6)), a, '1 = 1: a tie goes to the first draw (a)');
  assert.equal(lb.pick(draws(0.6, 0.1)), b, '1 = 1: a tie goes to the first draw (b)');
  active.set(a, 2);
  assert.equal(lb.pick(draws(0.6, 0.1)), a, '2/3 < 1/1: a is less loaded per unit of weight');
});

test('ring hash: a key keeps its endpoint, across picks and across rebuilt rings', () => {
  const set = Array.from({ length: 10 }, (_, i) => ep(`10.1.0.${i}`));
  const one = new RingHash();
  const two = new RingHash();
  one.update(set);
  two.update([...set].reverse());
  for (let k = 0; k < 500; k++) {
    const hashKey = `session-${k}`;
    const e = one.pick({ hashKey });
    assert.equal(one.pick({ hashKey }), e);
    assert.equal(two.pick({ hashKey })?.address, e?.address, 'the ring does not depend on endpoint order');
  }
});

test('ring hash: removing one of 10 endpoints moves only its keys (~1/10); adding an 11th moves ~1/11, all to it', () => {
  const set = Array.from({ length: 10 }, (_, i) => ep(`10.1.0.${i}`));
  const lb = new RingHash();
  lb.update(set);
  const keys = Array.from({ length: 20_000 }, (_, k) => `user-${k}`);
  const before = keys.map((hashKey) => lb.pick({ hashKey })?.address);

  const gone = set[3].address;
  lb.update(set.filter((e) => e.address !== gone));
  const afterRemove = keys.map((hashKey) => lb.pick({ hashKey })?.address);
  let moved = 0;
  for (let k = 0; k < keys.length; k++) {
    if (before[k] !== afterRemove[k]) {
      moved++;
      assert.equal(before[k], gone, `${keys[k]} moved from ${before[k]}, which stayed`);
    }
  }
  assert.ok(Math.abs(moved / keys.length - 0.1) < 0.04, `moved ${(moved / keys.length).toFixed(4)} of keys`);

  const added = ep('10.1.0.99');
  lb.update([...set, added]);
  const afterAdd = keys.map((hashKey) => lb.pick({ hashKey })?.address);
  moved = 0;
  for (let k = 0; k < keys.length; k++) {
    if (before[k] !== afterAdd[k]) {
      moved++;
      assert.equal(afterAdd[k], added.address, `${keys[k]} moved to ${afterAdd[k]}, not to the new endpoint`);
    }
  }
  assert.ok(Math.abs(moved / keys.length - 1 / 11) < 0.04, `moved ${(moved / keys.length).toFixed(4)} of keys`);
});

test('ring hash: a pick without a key is random (over the ring, so still by weight)', () => {
  const lb = new RingHash();
  lb.update([ep('a'), ep('b'), ep('c')]);
  const random = seeded(13);
  const seen = new Set(Array.from({ length: 100 }, () => lb.pick({ random })?.address));
  assert.equal(seen.size, 3);
});

test('the ring has 100 points per unit of weight, scaled down past maxPoints', () => {
  const ring = new HashRing();
  ring.build([ep('a', 1), ep('b', 3)], [1, 3]);
  assert.equal(ring.size, 4 * RING_POINTS_PER_WEIGHT);
  const small = new HashRing(100, 1000);
  small.build([ep('a', 10), ep('b', 10)], [10, 10]);
  assert.equal(small.size, 1000);
  assert.equal(new HashRing().lookup(1), undefined);
  assert.equal(hashString('abc'), hashString('abc'));
  assert.notEqual(hashString('abc'), hashString('abd'));
});

test('endpointWeight: whole numbers from 1 to 10 000', () => {
  assert.deepEqual([0, -1, Number.NaN, 0.5, 1, 2.7, 7, 1e9].map((w) => endpointWeight(ep('x', w))), [1, 1, 1, 1, 1, 2, 7, 10_000]);
});

test('the factory: round robin by default, each kind to its class, PASSTHROUGH as round robin', () => {
  assert.ok(createLoadBalancer() instanceof RoundRobin);
  assert.ok(createLoadBalancer('ROUND_ROBIN') instanceof RoundRobin);
  assert.ok(createLoadBalancer({ simple: 'PASSTHROUGH' }) instanceof RoundRobin);
  assert.ok(createLoadBalancer({ simple: 'RANDOM' }) instanceof WeightedRandom);
  assert.ok(createLoadBalancer({ simple: 'LEAST_REQUEST' }) instanceof LeastRequest);
  assert.ok(createLoadBalancer({ consistentHash: { useSourceIp: true } }) instanceof RingHash);
  assert.ok(createLoadBalancer('CONSISTENT_HASH') instanceof RingHash);
  assert.equal(loadBalancerName(), 'ROUND_ROBIN');
  assert.equal(loadBalancerName({ simple: 'LEAST_REQUEST' }), 'LEAST_REQUEST');
  assert.equal(loadBalancerName({ consistentHash: { httpHeaderName: 'x-user' } }), 'CONSISTENT_HASH');
});

test('the factory rejects an unknown kind, and both or neither of simple and consistentHash', () => {
  const rejects = (settings: unknown, text: RegExp): void =>
    assert.throws(() => createLoadBalancer(settings as LoadBalancerName), (err: unknown) => isMeshError(err, 'MESH_ERR_CONFIG') && text.test(err.message));
  rejects('LEAST_CONN', /"LEAST_CONN" is not one of ROUND_ROBIN, RANDOM, LEAST_REQUEST, PASSTHROUGH, CONSISTENT_HASH/);
  rejects({}, /exactly one of "simple" or "consistentHash"/);
  rejects({ simple: 'RANDOM', consistentHash: {} }, /exactly one of/);
});
