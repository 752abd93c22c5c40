// Micro-benchmark of endpoint selection on the request path: ns per pick for each load balancer, and per cluster acquire + done.
// Run: npx tsc -p . && node dist/bench/lb-microbench.js [picksPerRound]
// Each row is the median of 7 rounds after a warm-up; the numbers include Math.random where the balancer draws.

import { Cluster } from '../src/proxy/cluster';
import { createLoadBalancer, type LoadBalancer, type LoadBalancerSettings, type PickContext } from '../src/proxy/load-balancer';
import type { Endpoint } from '../src/registry';

const PICKS = Number(process.argv[2] ?? 2_000_000);
const ROUNDS = 7;
const KEYS = Array.from({ length: 4096 }, (_, i) => `user-${i * 7919}`);

const endpoints = (n: number, weighted: boolean): Endpoint[] =>
  Array.from({ length: n }, (_, i) => ({ address: `10.0.${i >> 8}.${i & 255}`, port: 15443, weight: weighted ? 1 + (i % 4) : 1, labels: { version: i % 2 ? 'v2' : 'v1' } }));

let sink = 0;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1];
}

/** ns per call of `body(i)`, median over rounds. */
function measure(body: (i: number) => number): number {
  for (let i = 0; i < Math.min(PICKS, 200_000); i++) sink += body(i);
  const rounds: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < PICKS; i++) sink += body(i);
    rounds.push(Number(process.hrtime.bigint() - t0) / PICKS);
  }
  return median(rounds);
}

/** ms per update(), for the build cost that discovery and ejection changes pay. */
function measureUpdate(lb: LoadBalancer, set: Endpoint[]): number {
  const n = 50;
  lb.update(set);
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) lb.update(set);
  return Number(process.hrtime.bigint() - t0) / n / 1e6;
}

const kinds: [string, LoadBalancerSettings][] = [
  ['ROUND_ROBIN', { simple: 'ROUND_ROBIN' }],
  ['RANDOM', { simple: 'RANDOM' }],
  ['LEAST_REQUEST', { simple: 'LEAST_REQUEST' }],
  ['CONSISTENT_HASH', { consistentHash: { httpHeaderName: 'x-user' } }],
];

const rows: string[][] = [['balancer', 'endpoints', 'weights', 'ns/pick', 'update ms']];
for (const [name, settings] of kinds) {
  for (const n of [10, 100]) {
    for (const weighted of [false, true]) {
      const set = endpoints(n, weighted);
      const active = new Map<Endpoint, number>(set.map((e, i) => [e, i % 3]));
      const lb = createLoadBalancer(settings, { stats: { activeRequests: (e) => active.get(e) ?? 0 } });
      lb.update(set);
      const ctx: PickContext = { random: Math.random };
      const ns =
        name === 'CONSISTENT_HASH'
          ? measure((i) => {
              ctx.hashKey = KEYS[i & 4095];
              return lb.pick(ctx)!.port;
            })
          : measure(() => lb.pick(ctx)!.port);
      rows.push([name, String(n), weighted ? '1..4' : 'equal', ns.toFixed(1), measureUpdate(lb, set).toFixed(3)]);
    }
  }
}

const clusterRows: string[][] = [['cluster acquire + done', 'endpoints', 'ns/request']];
for (const [label, options, subset] of [
  ['ROUND_ROBIN', {}, undefined],
  ['LEAST_REQUEST', { loadBalancer: { simple: 'LEAST_REQUEST' } }, undefined],
  ['LEAST_REQUEST + subset', { loadBalancer: { simple: 'LEAST_REQUEST' } }, 'v1'],
  ['LEAST_REQUEST + outlier + breaker', { loadBalancer: { simple: 'LEAST_REQUEST' }, outlierDetection: { consecutive5xxErrors: 5 }, circuitBreaker: { maxRequests: 1000 } }, undefined],
] as const) {
  for (const n of [10, 100]) {
    const c = new Cluster('bench', options as ConstructorParameters<typeof Cluster>[1]);
    c.apply({ type: 'reset', endpoints: endpoints(n, true) });
    c.setSubsets({ v1: { version: 'v1' } });
    const ctx = { random: Math.random, subset: subset as string | undefined };
    const ns = measure(() => {
      const lease = c.acquire(ctx);
      if (lease === undefined || !('endpoint' in lease)) throw new Error('no lease');
      lease.done(200);
      return lease.endpoint.port;
    });
    clusterRows.push([label, String(n), ns.toFixed(1)]);
  }
}

const print = (table: string[][]): void => {
  const widths = table[0].map((_, i) => Math.max(...table.map((r) => r[i].length)));
  for (const r of table) console.log(r.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]) : cell.padStart(widths[i]))).join('  '));
};
console.log(`node ${process.version}, ${PICKS} picks per round, median of ${ROUNDS} rounds`);
print(rows);
console.log();
print(clusterRows);
if (sink === 42) console.log('');
