// Load balancers behind one small interface, chosen by a factory from a DestinationRule's trafficPolicy.loadBalancer.
//
// Every balancer is built for the request path: update() (a discovery or health change) may cost
// O(n log n); pick() is O(1) or O(log n) and allocates nothing. All of them honour endpoint weights.

import { MeshError } from '../errors';
import type { Endpoint } from '../registry';
import { HashRing, hashString } from './hash-ring';

/** What a pick may depend on. The caller can keep one object per request and reuse it for retries. */
export interface PickContext {
  /**
   * For consistent hashing: the value the route's hash policy took from the request (a header,
   * a cookie, the source IP or a query parameter). Without it a consistent-hash pick is random.
   */
  hashKey?: string;
  /** Uniform in [0, 1). @default Math.random (tests pass a seeded generator) */
  random?: () => number;
}

/** Picks the endpoint for the next request or connection. */
export interface LoadBalancer {
  /** Replaces the endpoints to choose among (the cluster passes only healthy ones). Not on the request path. */
  update(endpoints: readonly Endpoint[]): void;
  /** The next endpoint, or undefined when there is none. */
  pick(ctx?: PickContext): Endpoint | undefined;
}

/** Load figures a balancer may read; the cluster keeps them (incremented by acquire, decremented by done). */
export interface EndpointStats {
  /** Requests in flight to `endpoint`. */
  activeRequests(endpoint: Endpoint): number;
}

/**
 * Istio's `loadBalancer.simple`. PASSTHROUGH in Istio forwards to the address the caller dialled;
 * mesh-agent always reaches an endpoint's inbound mTLS port, so it is treated as ROUND_ROBIN.
 */
export type LoadBalancerKind = 'ROUND_ROBIN' | 'RANDOM' | 'LEAST_REQUEST' | 'PASSTHROUGH';

/**
 * Istio's `loadBalancer.consistentHash`. The fields name where the hash key comes from; the HTTP
 * filter that builds the PickContext reads them, the balancer only needs `hashKey`. Istio's
 * `ringHash` / `maglev` choices both become the ring of hash-ring.ts.
 */
export interface ConsistentHashSettings {
  readonly httpHeaderName?: string;
  readonly httpCookie?: { readonly name: string; readonly path?: string; readonly ttlMs?: number };
  readonly useSourceIp?: boolean;
  readonly httpQueryParameterName?: string;
}

/** A DestinationRule's `trafficPolicy.loadBalancer`, parsed: one of `simple` or `consistentHash`. */
export type LoadBalancerSettings = { readonly simple: LoadBalancerKind } | { readonly consistentHash: ConsistentHashSettings };

/** A balancer by name: a simple kind, or CONSISTENT_HASH (as the policy compiler's LoadBalancerPolicy.kind names them). */
export type LoadBalancerName = LoadBalancerKind | 'CONSISTENT_HASH';

/** Weights above this are clamped, so ring and round-robin tables stay bounded. */
export const MAX_ENDPOINT_WEIGHT = 10_000;

/** An endpoint's weight as every balancer uses it: a whole number in [1, MAX_ENDPOINT_WEIGHT]; missing, zero or invalid weights count as 1. */
export function endpointWeight(e: Endpoint): number {
  const w = e.weight;
  return w >= 1 ? Math.min(Math.floor(w), MAX_ENDPOINT_WEIGHT) : 1;
}

function weightsOf(endpoints: readonly Endpoint[]): { weights: Int32Array; total: number; uniform: boolean } {
  const weights = new Int32Array(endpoints.length);
  let total = 0;
  let uniform = true;
  for (let i = 0; i < endpoints.length; i++) {
    weights[i] = endpointWeight(endpoints[i]);
    total += weights[i];
    if (weights[i] !== weights[0]) uniform = false;
  }
  return { weights, total, uniform };
}

/**
 * Round robin; with unequal weights, nginx's smooth weighted round robin (weights 5,1,1 give
 * a a b a c a a, not a a a a a b c). The sequence over one period (sum of weights after dividing
 * by their gcd) is computed at update(), so a pick is an array read. When that period is longer
 * than `maxSequence`, or computing it would take more than `maxBuildSteps`, picks come from an
 * earliest-deadline-first schedule instead (Envoy's weighted round robin): the same shares,
 * O(log n) per pick, a slightly different order. The position survives updates, so a changed
 * endpoint set does not send the next picks back to the first endpoint.
 */
export class RoundRobin implements LoadBalancer {
  private endpoints: readonly Endpoint[] = [];
  /** Smooth WRR order over one period; undefined for equal weights (plain rotation) or when EDF is used. */
  private sequence: Int32Array | undefined;
  private edf: EdfSchedule | undefined;
  private next = 0;

  constructor(
    /** @default 65 536 */
    private readonly maxSequence = 65_536,
    /** @default 2^23 */
    private readonly maxBuildSteps = 2 ** 23,
  ) {}

  update(endpoints: readonly Endpoint[]): void {
    this.endpoints = [...endpoints];
    this.sequence = undefined;
    this.edf = undefined;
    const { weights, uniform } = weightsOf(endpoints);
    let period = endpoints.length;
    if (!uniform) {
      let g = 0;
      for (const w of weights) g = gcd(g, w);
      period = 0;
      for (let i = 0; i < weights.length; i++) period += weights[i] /= g;
      if (period <= this.maxSequence && period * weights.length <= this.maxBuildSteps) this.sequence = smoothWeightedSequence(weights, period);
      else this.edf = new EdfSchedule(weights);
    }
    this.next = period === 0 ? 0 : this.next % period;
  }

  pick(): Endpoint | undefined {
    const n = this.endpoints.length;
    if (n === 0) return undefined;
    if (this.edf !== undefined) return this.endpoints[this.edf.next()];
    const i = this.next;
    const seq = this.sequence;
    if (seq !== undefined) {
      this.next = i + 1 === seq.length ? 0 : i + 1;
      return this.endpoints[seq[i]];
    }
    this.next = i + 1 === n ? 0 : i + 1;
    return this.endpoints[i];
  }
}

/** Random, in proportion to weight: Vose's alias table, one random number and O(1) per pick. */
export class WeightedRandom implements LoadBalancer {
  private endpoints: readonly Endpoint[] = [];
  private readonly table = new AliasTable();

  update(endpoints: readonly Endpoint[]): void {
    this.endpoints = [...endpoints];
    this.table.build(weightsOf(endpoints).weights);
  }

  pick(ctx?: PickContext): Endpoint | undefined {
    if (this.endpoints.length === 0) return undefined;
    return this.endpoints[this.table.sample((ctx?.random ?? Math.random)())];
  }
}

/**
 * Least request by the power of two choices, weighted as in Envoy: draw two endpoints (in
 * proportion to weight) and take the one with fewer active requests per unit of weight. A tie,
 * as on an idle cluster, goes to the first draw, so with no load the split is exactly by weight.
 */
export class LeastRequest implements LoadBalancer {
  private endpoints: readonly Endpoint[] = [];
  private weights: Int32Array = new Int32Array(0);
  private readonly table = new AliasTable();

  constructor(private readonly stats: EndpointStats) {}

  update(endpoints: readonly Endpoint[]): void {
    this.endpoints = [...endpoints];
    this.weights = weightsOf(endpoints).weights;
    this.table.build(this.weights);
  }

  pick(ctx?: PickContext): Endpoint | undefined {
    const n = this.endpoints.length;
    if (n <= 1) return this.endpoints[0];
    const random = ctx?.random ?? Math.random;
    const a = this.table.sample(random());
    const b = this.table.sample(random());
    const ea = this.endpoints[a];
    if (a === b) return ea;
    const eb = this.endpoints[b];
    // active(b) / weight(b) < active(a) / weight(a), without dividing.
    return this.stats.activeRequests(eb) * this.weights[a] < this.stats.activeRequests(ea) * this.weights[b] ? eb : ea;
  }
}

/**
 * Consistent hashing on `PickContext.hashKey` over a ketama-style ring (hash-ring.ts): the same
 * key keeps going to the same endpoint while it stays healthy, and adding or removing one of n
 * endpoints moves about 1/n of the keys. A pick without a key lands on a random ring point.
 */
export class RingHash implements LoadBalancer {
  private readonly ring: HashRing;

  constructor(pointsPerWeight?: number, maxPoints?: number) {
    this.ring = new HashRing(pointsPerWeight, maxPoints);
  }

  update(endpoints: readonly Endpoint[]): void {
    this.ring.build(endpoints, weightsOf(endpoints).weights);
  }

  pick(ctx?: PickContext): Endpoint | undefined {
    const key = ctx?.hashKey;
    const hash = key === undefined ? Math.floor((ctx?.random ?? Math.random)() * 2 ** 32) : hashString(key);
    return this.ring.lookup(hash);
  }
}

const NO_STATS: EndpointStats = { activeRequests: () => 0 };
const NAMES: readonly LoadBalancerName[] = ['ROUND_ROBIN', 'RANDOM', 'LEAST_REQUEST', 'PASSTHROUGH', 'CONSISTENT_HASH'];

/** The name a status page shows for `settings`: a simple kind, or CONSISTENT_HASH. */
export function loadBalancerName(settings: LoadBalancerSettings | LoadBalancerName = 'ROUND_ROBIN'): LoadBalancerName {
  if (typeof settings === 'string') return settings;
  return 'consistentHash' in settings ? 'CONSISTENT_HASH' : settings.simple;
}

/**
 * Makes the load balancer a DestinationRule asks for.
 * @param settings `trafficPolicy.loadBalancer`, or a balancer by name. @default 'ROUND_ROBIN'
 * @param options.stats what LEAST_REQUEST reads active requests from (the cluster's counts);
 *   without it every endpoint looks idle and LEAST_REQUEST degrades to weighted random.
 * @throws MeshError MESH_ERR_CONFIG for an unknown kind, or both or neither of simple and consistentHash.
 */
export function createLoadBalancer(settings: LoadBalancerSettings | LoadBalancerName = 'ROUND_ROBIN', options: { stats?: EndpointStats } = {}): LoadBalancer {
  const s: Partial<{ simple: LoadBalancerName; consistentHash: ConsistentHashSettings }> =
    settings === 'CONSISTENT_HASH' ? { consistentHash: {} } : typeof settings === 'string' ? { simple: settings } : settings;
  if ((s.simple === undefined) === (s.consistentHash === undefined)) {
    throw new MeshError('MESH_ERR_CONFIG', `trafficPolicy.loadBalancer: give exactly one of "simple" or "consistentHash" (got ${JSON.stringify(settings)})`);
  }
  if (s.consistentHash !== undefined) return new RingHash();
  switch (s.simple) {
    case 'ROUND_ROBIN':
    case 'PASSTHROUGH':
      return new RoundRobin();
    case 'RANDOM':
      return new WeightedRandom();
    case 'LEAST_REQUEST':
      return new LeastRequest(options.stats ?? NO_STATS);
    default:
      throw new MeshError('MESH_ERR_CONFIG', `trafficPolicy.loadBalancer.simple: ${JSON.stringify(s.simple)} is not one of ${NAMES.join(', ')}`);
  }
}

function gcd(a: number, b: number): number {
  while (b !== 0) {
    const r = a % b;
    a = b;
    b = r;
  }
  return a;
}

/** nginx's smooth weighted round robin, run for one period: O(period × n), at update time only. */
function smoothWeightedSequence(weights: Int32Array, period: number): Int32Array {
  const current = new Float64Array(weights.length);
  const out = new Int32Array(period);
  for (let step = 0; step < period; step++) {
    let best = 0;
    for (let i = 0; i < weights.length; i++) {
      current[i] += weights[i];
      if (current[i] > current[best]) best = i;
    }
    current[best] -= period;
    out[step] = best;
  }
  return out;
}

/** Vose's alias method: sample(u) maps one uniform number to an index, in proportion to the weights. */
class AliasTable {
  private prob = new Float64Array(0);
  private alias = new Int32Array(0);

  build(weights: ArrayLike<number>): void {
    const n = weights.length;
    this.prob = new Float64Array(n);
    this.alias = new Int32Array(n);
    let total = 0;
    for (let i = 0; i < n; i++) total += weights[i];
    const scaled = new Float64Array(n);
    const small: number[] = [];
    const large: number[] = [];
    for (let i = 0; i < n; i++) {
      scaled[i] = (weights[i] * n) / total;
      (scaled[i] < 1 ? small : large).push(i);
      this.alias[i] = i;
    }
    while (small.length > 0 && large.length > 0) {
      const s = small.pop()!;
      const l = large.pop()!;
      this.prob[s] = scaled[s];
      this.alias[s] = l;
      scaled[l] = scaled[l] + scaled[s] - 1;
      (scaled[l] < 1 ? small : large).push(l);
    }
    // What is left is 1 up to rounding.
    for (const i of large) this.prob[i] = 1;
    for (const i of small) this.prob[i] = 1;
  }

  sample(u: number): number {
    const n = this.prob.length;
    const x = u * n;
    const i = Math.min(n - 1, Math.floor(x));
    return x - i < this.prob[i] ? i : this.alias[i];
  }
}

/** Earliest deadline first over weights (Envoy's weighted round robin): a binary heap, O(log n) per pick. */
class EdfSchedule {
  private readonly deadline: Float64Array;
  private readonly heap: Int32Array;

  constructor(private readonly weights: ArrayLike<number>) {
    const n = weights.length;
    this.deadline = new Float64Array(n);
    this.heap = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      this.deadline[i] = 1 / weights[i];
      this.heap[i] = i;
    }
    for (let i = (n >> 1) - 1; i >= 0; i--) this.siftDown(i);
  }

  next(): number {
    const top = this.heap[0];
    this.deadline[top] += 1 / this.weights[top];
    this.siftDown(0);
    return top;
  }

  private before(a: number, b: number): boolean {
    const da = this.deadline[a];
    const db = this.deadline[b];
    return da < db || (da === db && a < b);
  }

  private siftDown(i: number): void {
    const heap = this.heap;
    const n = heap.length;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < n && this.before(heap[l], heap[m])) m = l;
      if (r < n && this.before(heap[r], heap[m])) m = r;
      if (m === i) return;
      const t = heap[i];
      heap[i] = heap[m];
      heap[m] = t;
      i = m;
    }
  }
}
