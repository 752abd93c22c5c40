// Circuit breaking with Envoy's per-cluster thresholds: a ceiling on connections, pending requests, requests and retries, each an O(1) counter.
//
// A breaker does not queue or wait: try*() either takes a slot or counts an overflow and says no.
// The caller answers a refused request at once with OVERFLOW_STATUS, the OVERFLOW_HEADER naming
// the limit, and response flag OVERFLOW_RESPONSE_FLAG in the access log (Envoy's UO).

import { MeshError } from '../errors';

/** Which limit refused a request; the value of OVERFLOW_HEADER. */
export type OverflowKind = 'max-connections' | 'max-pending-requests' | 'max-requests' | 'max-retries';

/** Response header on a request refused by a circuit breaker; its value is the OverflowKind. */
export const OVERFLOW_HEADER = 'x-mesh-overflow';
/** Access-log response flag for a request refused by a circuit breaker (Envoy's "upstream overflow"). */
export const OVERFLOW_RESPONSE_FLAG = 'UO';
/** Status of the fast answer to a refused request. */
export const OVERFLOW_STATUS = 503;

/** A DestinationRule's connectionPool limits: tcp.maxConnections, http.http1MaxPendingRequests, http.http2MaxRequests, http.maxRetries. */
export interface CircuitBreakerThresholds {
  /** Open connections to all endpoints of the cluster. @default 2^32 - 1 */
  readonly maxConnections?: number;
  /** Requests waiting for a connection. @default 2^32 - 1 */
  readonly maxPendingRequests?: number;
  /** Requests in flight. @default 2^32 - 1 */
  readonly maxRequests?: number;
  /** Retries in flight. @default 2^32 - 1 */
  readonly maxRetries?: number;
}

/**
 * Istio's defaults: every limit at 2^32 - 1, i.e. none (Envoy's own defaults, 1024/1024/1024/3,
 * are meant for a single proxy in front of many clients). The policy compiler turns Istio's
 * "0 or unset" into undefined; a 0 given here means "refuse everything".
 */
export const CIRCUIT_BREAKER_DEFAULTS = Object.freeze({
  maxConnections: 2 ** 32 - 1,
  maxPendingRequests: 2 ** 32 - 1,
  maxRequests: 2 ** 32 - 1,
  maxRetries: 2 ** 32 - 1,
});

/** One limited resource: slots taken now, the ceiling, and how often it refused. */
export class ResourceLimit {
  active = 0;
  overflows = 0;
  /** Told when a slot comes back (connection pools waiting for one); empty for most limits. */
  private readonly releaseListeners = new Set<() => void>();

  constructor(
    readonly overflow: OverflowKind,
    public max: number,
  ) {}

  /** Takes a slot; false (and one more overflow) when all are taken. */
  tryAcquire(): boolean {
    if (this.active >= this.max) {
      this.overflows++;
      return false;
    }
    this.active++;
    return true;
  }

  /** Takes a slot even over the ceiling (a pool's first connection to an endpoint, which must not starve). */
  forceAcquire(): void {
    this.active++;
  }

  /** Gives a slot back. Extra releases are ignored rather than letting the count go negative. */
  release(): void {
    if (this.active > 0) this.active--;
    if (this.releaseListeners.size > 0 && this.active < this.max) for (const l of this.releaseListeners) l();
  }

  /** Calls `listener` whenever a slot is given back below the ceiling; returns the unsubscribe. */
  onRelease(listener: () => void): () => void {
    this.releaseListeners.add(listener);
    return () => this.releaseListeners.delete(listener);
  }

  /** True while every slot is taken (Envoy's *_open gauges). */
  get open(): boolean {
    return this.active >= this.max;
  }

  snapshot(): { max: number; active: number; overflows: number } {
    return { max: this.max, active: this.active, overflows: this.overflows };
  }
}

export interface CircuitBreakerSnapshot {
  readonly connections: ReturnType<ResourceLimit['snapshot']>;
  readonly pendingRequests: ReturnType<ResourceLimit['snapshot']>;
  readonly requests: ReturnType<ResourceLimit['snapshot']>;
  readonly retries: ReturnType<ResourceLimit['snapshot']>;
}

/** The four limits of one cluster. Use a resource's tryAcquire() before taking it and release() exactly once after. */
export class CircuitBreaker {
  readonly connections = new ResourceLimit('max-connections', CIRCUIT_BREAKER_DEFAULTS.maxConnections);
  readonly pendingRequests = new ResourceLimit('max-pending-requests', CIRCUIT_BREAKER_DEFAULTS.maxPendingRequests);
  readonly requests = new ResourceLimit('max-requests', CIRCUIT_BREAKER_DEFAULTS.maxRequests);
  readonly retries = new ResourceLimit('max-retries', CIRCUIT_BREAKER_DEFAULTS.maxRetries);

  /** @throws MeshError MESH_ERR_CONFIG listing every invalid threshold. */
  constructor(thresholds: CircuitBreakerThresholds = {}) {
    this.setThresholds(thresholds);
  }

  /**
   * Changes the ceilings in place: slots already taken stay taken, so a lowered limit refuses new
   * work until enough is released. Unset fields go back to their defaults.
   * @throws MeshError MESH_ERR_CONFIG listing every invalid threshold.
   */
  setThresholds(thresholds: CircuitBreakerThresholds): void {
    const d = CIRCUIT_BREAKER_DEFAULTS;
    const t = {
      maxConnections: thresholds.maxConnections ?? d.maxConnections,
      maxPendingRequests: thresholds.maxPendingRequests ?? d.maxPendingRequests,
      maxRequests: thresholds.maxRequests ?? d.maxRequests,
      maxRetries: thresholds.maxRetries ?? d.maxRetries,
    };
    const problems = Object.entries(t)
      .filter(([, v]) => typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 2 ** 32 - 1)
      .map(([k, v]) => `circuitBreaker.${k}: ${JSON.stringify(v)} is not a whole number from 0 to ${2 ** 32 - 1}`);
    if (problems.length > 0) throw new MeshError('MESH_ERR_CONFIG', problems.join('; '));
    this.connections.max = t.maxConnections;
    this.pendingRequests.max = t.maxPendingRequests;
    this.requests.max = t.maxRequests;
    this.retries.max = t.maxRetries;
  }

  snapshot(): CircuitBreakerSnapshot {
    return {
      connections: this.connections.snapshot(),
      pendingRequests: this.pendingRequests.snapshot(),
      requests: this.requests.snapshot(),
      retries: this.retries.snapshot(),
    };
  }
}
