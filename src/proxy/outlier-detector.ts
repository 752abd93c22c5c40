// Outlier detection (Envoy's consecutive-5xx and consecutive-gateway-failure detectors): eject endpoints that keep failing, for longer each time.
//
// Semantics follow Envoy (source/common/upstream/outlier_detection_impl.cc), with local-origin
// errors not split from HTTP ones (Envoy's default, and what Istio configures):
// - A 5xx counts toward consecutive5xxErrors; 502, 503, 504, a failed connect, a reset and a
//   timeout also count toward consecutiveGatewayErrors. Any other status resets both counts.
// - On reaching a threshold the endpoint is ejected, unless that would put more than
//   maxEjectionPercent of the cluster's endpoints out: ejecting is allowed while
//   100 × (ejected + 1) / endpoints <= maxEjectionPercent, so with Istio's default of 10 % a
//   cluster of fewer than 10 endpoints ejects nothing. `alwaysEjectOneHost` (Envoy >= 1.31,
//   off by default as there) lets one endpoint go regardless. A refused ejection counts in
//   ejectionsOverflow, and the count that tripped starts again from zero.
// - An ejection lasts min(baseEjectionTime × k, maxEjectionTime), where k goes up by one with
//   each ejection and down by one for every full `interval` the endpoint spends back in
//   service (Envoy decrements it on each interval sweep that finds the endpoint healthy).
//
// Where this differs from Envoy, on purpose: there is no interval timer. Ejected endpoints are
// returned lazily, exactly when their time is up, by refresh() (the cluster calls it before a
// pick, and only while something is ejected); Envoy returns them on the next sweep, up to one
// interval late. The decay of k is likewise worked out when the endpoint is next ejected, from
// how long it has been back. Nothing runs while nothing fails, and there is no timer to stop.

/** What outlier detection needs of time. */
type Clock = { now(): number };
import { MeshError } from '../errors';
import { endpointKey, type Endpoint } from '../registry';

/** A DestinationRule's `trafficPolicy.outlierDetection`, durations in milliseconds. */
export interface OutlierDetectionConfig {
  /** 5xx responses in a row that eject an endpoint; 0 turns this detector off. @default 5 */
  readonly consecutive5xxErrors?: number;
  /** 502/503/504 responses or local connect/reset/timeout failures in a row that eject an endpoint; 0 turns it off. @default 0 */
  readonly consecutiveGatewayErrors?: number;
  /** How often, in effect, the ejection multiplier of a healthy endpoint decays by one. @default 10 000 */
  readonly intervalMs?: number;
  /** Length of a first ejection. @default 30 000 */
  readonly baseEjectionTimeMs?: number;
  /** Cap on an ejection's length (Envoy's max_ejection_time; not in Istio's API). @default max(300 000, baseEjectionTimeMs) */
  readonly maxEjectionTimeMs?: number;
  /** Most of the endpoints, in percent, that may be ejected at once. @default 10 */
  readonly maxEjectionPercent?: number;
  /** Allow one ejection even when maxEjectionPercent rounds down to none (Envoy's always_eject_one_host). @default false */
  readonly alwaysEjectOneHost?: boolean;
}

/** The defaults, as in Istio's DestinationRule (and Envoy for the two fields Istio lacks). */
export const OUTLIER_DETECTION_DEFAULTS = Object.freeze({
  consecutive5xxErrors: 5,
  consecutiveGatewayErrors: 0,
  intervalMs: 10_000,
  baseEjectionTimeMs: 30_000,
  maxEjectionTimeMs: 300_000,
  maxEjectionPercent: 10,
  alwaysEjectOneHost: false,
});

/**
 * What became of one request to an endpoint: the upstream's HTTP status (a number), 'success'
 * for a non-HTTP exchange that went well, a local-origin failure ('connect-failed', 'reset',
 * 'timeout': each counts as a gateway error, as Envoy maps them to 503/504), or 'cancelled' when
 * the caller gave up first (not the endpoint's fault: it counts for nothing).
 */
export type Outcome = number | 'success' | 'connect-failed' | 'reset' | 'timeout' | 'cancelled';

/** Counters for metrics and status output. */
export interface OutlierDetectionSnapshot {
  /** Ejections that happened, ever (Envoy's ejections_enforced_total). */
  readonly ejectionsTotal: number;
  /** Endpoints ejected now (ejections_active). */
  readonly ejectionsActive: number;
  /** Ejections refused by maxEjectionPercent (ejections_overflow). */
  readonly ejectionsOverflow: number;
  readonly ejected: readonly { endpoint: string; ejections: number; remainingMs: number }[];
}

/** Per endpoint; kept across updates while the endpoint's address:port stays in the set. */
class EndpointMonitor {
  consecutive5xx = 0;
  consecutiveGateway = 0;
  ejected = false;
  ejectedUntil = 0;
  /** When it last came back: ejectedUntil of the last ejection; -1 if never ejected. */
  returnedAt = -1;
  /** The ejection-time multiplier k. */
  backoff = 0;
  ejections = 0;

  constructor(readonly key: string) {}
}

const SUCCESS = 0;
const ERROR_5XX = 1;
const GATEWAY_ERROR = 2;
const NOTHING = 3;

function classify(outcome: Outcome): number {
  if (typeof outcome === 'number') {
    if (outcome < 500 || outcome > 599) return SUCCESS;
    return outcome >= 502 && outcome <= 504 ? GATEWAY_ERROR : ERROR_5XX;
  }
  if (outcome === 'success') return SUCCESS;
  return outcome === 'cancelled' ? NOTHING : GATEWAY_ERROR;
}

/** Watches outcomes per endpoint and decides which endpoints are out of service. */
export class OutlierDetector {
  readonly config: Readonly<Required<OutlierDetectionConfig>>;
  private readonly byKey = new Map<string, EndpointMonitor>();
  /** By object identity, so record() costs no string building. */
  private byEndpoint = new Map<Endpoint, EndpointMonitor>();
  private readonly ejected = new Set<EndpointMonitor>();
  private nextReturnAt = Infinity;
  private total = 0;
  private overflow = 0;
  private changes = 0;

  /** @throws MeshError MESH_ERR_CONFIG listing every invalid field. */
  constructor(
    config: OutlierDetectionConfig,
    private readonly clock: Pick<Clock, 'now'>,
  ) {
    this.config = resolveConfig(config);
  }

  /** Endpoints ejected now (as of the last refresh). Cheap: the cluster reads it on every pick. */
  get ejectionsActive(): number {
    return this.ejected.size;
  }

  get ejectionsTotal(): number {
    return this.total;
  }

  get ejectionsOverflow(): number {
    return this.overflow;
  }

  /** Goes up whenever the set of ejected endpoints changes, so a cluster knows to rebuild its balancers. */
  get version(): number {
    return this.changes;
  }

  /** Sets the endpoints to watch. State (counts, ejection, multiplier) carries over for each address:port that stays. */
  update(endpoints: readonly Endpoint[]): void {
    const byEndpoint = new Map<Endpoint, EndpointMonitor>();
    const keep = new Set<string>();
    for (const e of endpoints) {
      const key = endpointKey(e);
      let m = this.byKey.get(key);
      if (m === undefined) this.byKey.set(key, (m = new EndpointMonitor(key)));
      byEndpoint.set(e, m);
      keep.add(key);
    }
    for (const [key, m] of this.byKey) {
      if (keep.has(key)) continue;
      this.byKey.delete(key);
      if (m.ejected) {
        this.ejected.delete(m);
        this.changes++;
      }
    }
    this.byEndpoint = byEndpoint;
    this.nextReturnAt = Infinity;
    for (const m of this.ejected) this.nextReturnAt = Math.min(this.nextReturnAt, m.ejectedUntil);
  }

  /**
   * Records how a request to `endpoint` ended. Returns true when this ejected the endpoint.
   * Endpoints not in the set (removed while the request was in flight) and ejected ones are ignored.
   */
  record(endpoint: Endpoint, outcome: Outcome): boolean {
    const m = this.byEndpoint.get(endpoint);
    if (m === undefined) return false;
    if (m.ejected) {
      // Its time may be up without anyone having asked yet.
      this.refresh();
      if (m.ejected) return false;
    }
    const kind = classify(outcome);
    if (kind === SUCCESS) {
      m.consecutive5xx = 0;
      m.consecutiveGateway = 0;
      return false;
    }
    if (kind === NOTHING) return false;
    let tripped = false;
    if (kind === GATEWAY_ERROR) {
      if (++m.consecutiveGateway === this.config.consecutiveGatewayErrors) {
        tripped = true;
        m.consecutiveGateway = 0;
      }
    } else {
      m.consecutiveGateway = 0;
    }
    if (++m.consecutive5xx === this.config.consecutive5xxErrors) {
      tripped = true;
      m.consecutive5xx = 0;
    }
    return tripped && this.eject(m);
  }

  /** Returns to service every endpoint whose ejection is over; true if any came back. O(1) while none is due. */
  refresh(): boolean {
    if (this.ejected.size === 0) return false;
    const now = this.clock.now();
    if (now < this.nextReturnAt) return false;
    let next = Infinity;
    let returned = 0;
    for (const m of this.ejected) {
      if (m.ejectedUntil <= now) {
        returned++;
        this.ejected.delete(m);
        m.ejected = false;
        m.returnedAt = m.ejectedUntil;
        // As Envoy: start counting afresh, so a few errors right after coming back do not re-eject.
        m.consecutive5xx = 0;
        m.consecutiveGateway = 0;
      } else {
        next = Math.min(next, m.ejectedUntil);
      }
    }
    this.nextReturnAt = next;
    if (returned > 0) this.changes++;
    return returned > 0;
  }

  /** Whether `endpoint` is out of service now. */
  isEjected(endpoint: Endpoint): boolean {
    this.refresh();
    return this.byEndpoint.get(endpoint)?.ejected ?? false;
  }

  snapshot(): OutlierDetectionSnapshot {
    this.refresh();
    const now = this.clock.now();
    return {
      ejectionsTotal: this.total,
      ejectionsActive: this.ejected.size,
      ejectionsOverflow: this.overflow,
      ejected: [...this.ejected].map((m) => ({ endpoint: m.key, ejections: m.ejections, remainingMs: m.ejectedUntil - now })),
    };
  }

  private eject(m: EndpointMonitor): boolean {
    const { maxEjectionPercent, alwaysEjectOneHost, intervalMs, baseEjectionTimeMs, maxEjectionTimeMs } = this.config;
    // Ejections whose time is up must not count against maxEjectionPercent.
    this.refresh();
    const active = this.ejected.size;
    if (!((100 * (active + 1)) / this.byKey.size <= maxEjectionPercent || (alwaysEjectOneHost && active === 0))) {
      this.overflow++;
      return false;
    }
    const now = this.clock.now();
    if (m.returnedAt >= 0 && now > m.returnedAt) m.backoff = Math.max(0, m.backoff - Math.floor((now - m.returnedAt) / intervalMs));
    // Envoy's cap: stop growing once the multiplier alone passes maxEjectionTime.
    if (m.backoff * baseEjectionTimeMs < maxEjectionTimeMs + baseEjectionTimeMs) m.backoff++;
    m.ejected = true;
    m.ejectedUntil = now + Math.min(baseEjectionTimeMs * m.backoff, maxEjectionTimeMs);
    m.ejections++;
    this.ejected.add(m);
    this.nextReturnAt = Math.min(this.nextReturnAt, m.ejectedUntil);
    this.total++;
    this.changes++;
    return true;
  }
}

function resolveConfig(config: OutlierDetectionConfig): Readonly<Required<OutlierDetectionConfig>> {
  const d = OUTLIER_DETECTION_DEFAULTS;
  const base = config.baseEjectionTimeMs ?? d.baseEjectionTimeMs;
  const c: Required<OutlierDetectionConfig> = {
    consecutive5xxErrors: config.consecutive5xxErrors ?? d.consecutive5xxErrors,
    consecutiveGatewayErrors: config.consecutiveGatewayErrors ?? d.consecutiveGatewayErrors,
    intervalMs: config.intervalMs ?? d.intervalMs,
    baseEjectionTimeMs: base,
    maxEjectionTimeMs: config.maxEjectionTimeMs ?? Math.max(d.maxEjectionTimeMs, base),
    maxEjectionPercent: config.maxEjectionPercent ?? d.maxEjectionPercent,
    alwaysEjectOneHost: config.alwaysEjectOneHost ?? d.alwaysEjectOneHost,
  };
  const problems: string[] = [];
  const whole = (field: keyof OutlierDetectionConfig, min: number, max = Number.MAX_SAFE_INTEGER): void => {
    const v = c[field];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) problems.push(`outlierDetection.${field}: ${JSON.stringify(v)} is not a whole number from ${min} to ${max}`);
  };
  whole('consecutive5xxErrors', 0);
  whole('consecutiveGatewayErrors', 0);
  whole('intervalMs', 1);
  whole('baseEjectionTimeMs', 1);
  whole('maxEjectionTimeMs', 1);
  whole('maxEjectionPercent', 0, 100);
  if (typeof c.alwaysEjectOneHost !== 'boolean') problems.push(`outlierDetection.alwaysEjectOneHost: ${JSON.stringify(c.alwaysEjectOneHost)} is not true or false`);
  if (c.maxEjectionTimeMs < c.baseEjectionTimeMs) problems.push(`outlierDetection.maxEjectionTimeMs: ${c.maxEjectionTimeMs} is less than baseEjectionTimeMs (${c.baseEjectionTimeMs})`);
  if (problems.length > 0) throw new MeshError('MESH_ERR_CONFIG', problems.join('; '));
  return Object.freeze(c);
}
