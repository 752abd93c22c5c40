// A consistent-hash ring (ketama style): each endpoint owns points in proportion to its weight; a key goes to the next point clockwise.

import { endpointKey, type Endpoint } from '../registry';

/**
 * Ring points per unit of endpoint weight. 100 keeps each endpoint's share within about ±10 %
 * of its weight (one standard deviation) while a ring of 100 endpoints stays at 10 000 points.
 */
export const RING_POINTS_PER_WEIGHT = 100;

/**
 * Upper bound on ring points. Past it every endpoint's point count is scaled down by the same
 * factor, so keys still move only when their own endpoint comes or goes; until the total weight
 * crosses the bound again, that is.
 */
export const RING_MAX_POINTS = 1 << 17;

/** Owner indexes are packed below the hash in one float64 for a native numeric sort. */
const OWNER_BITS = 2 ** 20;

/** murmur3's 32-bit finaliser: spreads nearby inputs over the whole ring. */
export function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** A 32-bit hash of a string: FNV-1a over UTF-16 code units, then fmix32. No allocation. */
export function hashString(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return fmix32(h);
}

/**
 * The ring itself: sorted point hashes and, for each, the index of the endpoint that owns it.
 * Point `i` of an endpoint hashes from its `address:port` and `i` only, so adding or removing one
 * endpoint adds or removes its own points and nothing else: only the keys on those arcs (about
 * 1/n of them) change endpoint.
 */
export class HashRing<E extends Endpoint = Endpoint> {
  private hashes = new Uint32Array(0);
  private owners = new Uint32Array(0);
  private endpoints: readonly E[] = [];

  constructor(
    /** @default RING_POINTS_PER_WEIGHT */
    readonly pointsPerWeight = RING_POINTS_PER_WEIGHT,
    /** @default RING_MAX_POINTS */
    readonly maxPoints = RING_MAX_POINTS,
  ) {}

  /** Number of points on the ring. */
  get size(): number {
    return this.hashes.length;
  }

  /**
   * Rebuilds the ring for a new endpoint set: O(P log P) for P points.
   * @param weights whole numbers >= 1, one per endpoint (the load balancer normalises them).
   */
  build(endpoints: readonly E[], weights: ArrayLike<number>): void {
    if (endpoints.length >= OWNER_BITS) throw new RangeError(`HashRing: ${endpoints.length} endpoints is more than ${OWNER_BITS - 1}`);
    this.endpoints = [...endpoints];
    let total = 0;
    for (let i = 0; i < endpoints.length; i++) total += weights[i];
    const perWeight = Math.max(1, Math.min(this.pointsPerWeight, Math.floor(this.maxPoints / Math.max(1, total))));
    const packed = new Float64Array(total * perWeight);
    let k = 0;
    for (let owner = 0; owner < endpoints.length; owner++) {
      const e = endpoints[owner];
      const base = hashString(endpointKey(e));
      const points = weights[owner] * perWeight;
      for (let i = 0; i < points; i++) packed[k++] = fmix32(base ^ fmix32(i + 1)) * OWNER_BITS + owner;
    }
    packed.sort();
    this.hashes = new Uint32Array(packed.length);
    this.owners = new Uint32Array(packed.length);
    for (let i = 0; i < packed.length; i++) {
      const h = Math.floor(packed[i] / OWNER_BITS);
      this.hashes[i] = h;
      this.owners[i] = packed[i] - h * OWNER_BITS;
    }
  }

  /** The endpoint owning the first point at or after `hash` (wrapping past the top), or undefined on an empty ring. O(log P). */
  lookup(hash: number): E | undefined {
    const hashes = this.hashes;
    const n = hashes.length;
    if (n === 0) return undefined;
    let lo = 0;
    let hi = n;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (hashes[mid] < hash) lo = mid + 1;
      else hi = mid;
    }
    return this.endpoints[this.owners[lo === n ? 0 : lo]];
  }
}
