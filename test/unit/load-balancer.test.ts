// One shared suite run against every load balancer: weights honoured, only endpoints from the set, empty set, updates.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createLoadBalancer, RoundRobin, type EndpointStats, type LoadBalancer, type PickContext } from '../../src/proxy/load-balancer';
import type { Endpoint } from '../../src/registry';
import { seeded } from '../helpers/seeded-random';


const ep = (n: number, weight = 1): Endpoint => ({ address: `10.0.0.${n}`, port: 15443, weight, labels: {} });
const idle: EndpointStats = { activeRequests: () => 0 };

interface Implementation {
  readonly name: string;
  readonly make: (stats: EndpointStats) => LoadBalancer;
  /** Largest allowed gap between an endpoint's share of picks and its share of the weight, over 20 000 seeded picks. */
  readonly tolerance: number;
  /** Consistent hashing needs a key per request. */
  readonly keyed?: boolean;
}

const implementations: readonly Implementation[] = [
  // Smooth WRR over whole periods is exact.
  { name: 'ROUND_ROBIN', make: () => createLoadBalancer('ROUND_ROBIN'), tolerance: 0 },
  { name: 'PASSTHROUGH (round robin)', make: () => createLoadBalancer({ simple: 'PASSTHROUGH' }), tolerance: 0 },
  // A period longer than maxSequence switches to the EDF schedule: still exact per period.
  { name: 'ROUND_ROBIN, EDF schedule', make: () => new RoundRobin(4), tolerance: 0.0001 },
  // Binomial: sd of a share is at most 0.0035 at 20 000 picks; 0.015 is over 4 sd.
  { name: 'RANDOM', make: () => createLoadBalancer({ simple: 'RANDOM' }), tolerance: 0.015 },
  { name: 'LEAST_REQUEST', make: (stats) => createLoadBalancer({ simple: 'LEAST_REQUEST' }, { stats }), tolerance: 0.015 },
  // Ring arcs vary: a share's sd is about share / sqrt(100 × weight) (7 % relative, measured), plus sampling noise.
  // 0.05 still tells 1:2:3:4 from equal shares (0.10 vs 0.25, 0.40 vs 0.25).
  { name: 'consistentHash', make: () => createLoadBalancer({ consistentHash: { httpHeaderName: 'x-user' } }), tolerance: 0.05, keyed: true },
];

for (const impl of implementations) {
  describe(`load balancer ${impl.name}`, () => {
    const contexts = (seed: number): (() => PickContext) => {
      const random = seeded(seed);
      let i = 0;
      return () => (impl.keyed ? { hashKey: `user-${i++}-${Math.floor(random() * 1e9)}`, random } : { random });
    };

    test('an empty set picks nothing, before and after an update', () => {
      const lb = impl.make(idle);
      assert.equal(lb.pick(), undefined);
      lb.update([ep(1)]);
      lb.update([]);
      const ctx = contexts(1);
      for (let i = 0; i < 10; i++) assert.equal(lb.pick(ctx()), undefined);
    });

    test('a single endpoint is always picked, with or without a context', () => {
      const lb = impl.make(idle);
      const only = ep(9, 3);
      lb.update([only]);
      assert.equal(lb.pick(), only);
      const ctx = contexts(2);
      for (let i = 0; i < 50; i++) assert.equal(lb.pick(ctx()), only);
    });

    test('picks in proportion to weight (1:2:3:4)', () => {
      const lb = impl.make(idle);
      const set = [ep(1, 1), ep(2, 2), ep(3, 3), ep(4, 4)];
      lb.update(set);
      const counts = new Map<Endpoint | undefined, number>();
      const ctx = contexts(3);
      const n = 20_000;
      for (let i = 0; i < n; i++) {
        const e = lb.pick(ctx());
        counts.set(e, (counts.get(e) ?? 0) + 1);
      }
      assert.equal(counts.get(undefined), undefined);
      for (const e of set) {
        const share = (counts.get(e) ?? 0) / n;
        const expected = e.weight / 10;
        assert.ok(Math.abs(share - expected) <= impl.tolerance, `${e.address} (weight ${e.weight}) got ${share.toFixed(4)} of picks, expected ${expected} ± ${impl.tolerance}`);
      }
    });

    test('equal weights split evenly, and a missing, zero or invalid weight counts as 1', () => {
      const lb = impl.make(idle);
      const set = [ep(1, 1), ep(2, 0), ep(3, Number.NaN), { address: '10.0.0.4', port: 15443, labels: {} } as unknown as Endpoint];
      lb.update(set);
      const counts = new Map<Endpoint | undefined, number>();
      const ctx = contexts(4);
      const n = 20_000;
      for (let i = 0; i < n; i++) {
        const e = lb.pick(ctx());
        counts.set(e, (counts.get(e) ?? 0) + 1);
      }
      for (const e of set) {
        const share = (counts.get(e) ?? 0) / n;
        assert.ok(Math.abs(share - 0.25) <= impl.tolerance, `${e.address} got ${share.toFixed(4)}, expected 0.25 ± ${impl.tolerance}`);
      }
    });

    test('never picks an endpoint outside the current set, through shrinking and growing updates', () => {
      const lb = impl.make(idle);
      const ctx = contexts(5);
      const sets = [
        [ep(1), ep(2, 5), ep(3)],
        [ep(2, 5)],
        [ep(4), ep(5, 2), ep(6, 7), ep(7)],
        [ep(1), ep(7, 3)],
        Array.from({ length: 50 }, (_, i) => ep(100 + i, 1 + (i % 4))),
      ];
      for (const set of sets) {
        lb.update(set);
        const allowed = new Set(set);
        for (let i = 0; i < 1000; i++) {
          const e = lb.pick(ctx());
          assert.ok(e !== undefined && allowed.has(e), `picked ${e?.address} outside ${set.map((s) => s.address).join(',')}`);
        }
      }
    });

    test('update() takes effect at once, and every endpoint of the new set gets picks', () => {
      const lb = impl.make(idle);
      const ctx = contexts(6);
      const [a, b, c, d] = [ep(1), ep(2), ep(3), ep(4)];
      lb.update([a, b]);
      lb.pick(ctx());
      lb.update([c]);
      for (let i = 0; i < 20; i++) assert.equal(lb.pick(ctx()), c);
      lb.update([a, b, c, d]);
      const seen = new Set<Endpoint | undefined>();
      for (let i = 0; i < 400; i++) seen.add(lb.pick(ctx()));
      assert.deepEqual(new Set([...seen].map((e) => e?.address)), new Set([a, b, c, d].map((e) => e.address)));
    });

    test('update() copies the list, so later changes to the caller\'s array do not leak in', () => {
      const lb = impl.make(idle);
      const list = [ep(1)];
      lb.update(list);
      list.push(ep(2));
      const ctx = contexts(7);
      for (let i = 0; i < 50; i++) assert.equal(lb.pick(ctx())?.address, '10.0.0.1');
    });
  });
}
