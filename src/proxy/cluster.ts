// A cluster: the endpoints of one upstream service, kept current by discovery updates, and what picks one per request (subsets, load balancer, outlier detection, circuit breaker, active request counts).
//
// The request path is acquire() then lease.done(outcome), exactly once:
//   1. endpoints ejected by outlier detection whose time is up come back (checked only while
//      some are ejected: no clock read otherwise);
//   2. the balancer of the requested subset (or of the whole cluster) picks among the healthy
//      endpoints; none → undefined, which the caller answers with 503 and response flag UH;
//   3. the circuit breaker's max-requests slot is taken; none free → an Overflow, answered with
//      a fast 503, OVERFLOW_HEADER and flag UO (see circuit-breaker.ts);
//   4. the endpoint's active count goes up (LEAST_REQUEST reads it).
// done() undoes 3 and 4 and feeds the outcome to outlier detection. Balancers are rebuilt off
// the request path whenever the healthy set changes (discovery update, ejection, return), so a
// pick never looks at an ejected endpoint and never allocates. The lease is the cluster's own
// record of the endpoint, shared by all requests to it: nothing is allocated per request.
// The other breaker limits (connections, pending requests, retries) belong to the caller's
// connection pool and retry filter, through `circuitBreaker`.

/** What the cluster needs of time (the agent passes its Clock; tests a fake one). */
type Clock = { now(): number };
const systemClock: Clock = { now: () => Date.now() };
import { endpointKey, type DiscoveryUpdate, type Endpoint } from '../registry';
import { CircuitBreaker, type CircuitBreakerSnapshot, type CircuitBreakerThresholds, type OverflowKind } from './circuit-breaker';
import {
  createLoadBalancer,
  loadBalancerName,
  type EndpointStats,
  type LoadBalancer,
  type LoadBalancerName,
  type LoadBalancerSettings,
  type PickContext,
} from './load-balancer';
import { OutlierDetector, type OutlierDetectionConfig, type OutlierDetectionSnapshot, type Outcome } from './outlier-detector';

/** Makes a balancer given the cluster's load figures; for balancers that are not in createLoadBalancer. It must pick only among the endpoints it was last given. */
export type LoadBalancerFactory = (stats: EndpointStats) => LoadBalancer;

/** A DestinationRule's trafficPolicy for this cluster, parsed. */
export interface ClusterOptions {
  /** @default 'ROUND_ROBIN' */
  readonly loadBalancer?: LoadBalancerSettings | LoadBalancerName | LoadBalancerFactory;
  /** Absent: no outlier detection. */
  readonly outlierDetection?: OutlierDetectionConfig;
  /** Absent: Istio's defaults, effectively no limits. */
  readonly circuitBreaker?: CircuitBreakerThresholds;
  /** @default systemClock */
  readonly clock?: Pick<Clock, 'now'>;
}

/** A pick's inputs, plus the DestinationRule subset the route asked for. */
export interface ClusterPickContext extends PickContext {
  /** Pick only among endpoints whose labels match this subset's (see setSubsets). */
  subset?: string;
}

/** An endpoint handed to one request. Call done() exactly once when the request ends. */
export interface Lease {
  readonly endpoint: Endpoint;
  done(outcome: Outcome): void;
}

/** A request refused by the circuit breaker; `overflow` is the value of OVERFLOW_HEADER. */
export interface Overflow {
  readonly overflow: OverflowKind;
}

export interface ClusterSnapshot {
  readonly name: string;
  readonly known: boolean;
  readonly endpoints: readonly Endpoint[];
  readonly loadBalancer: string;
  /** Each subset's labels and how many healthy endpoints it has now. */
  readonly subsets: Readonly<Record<string, { labels: Readonly<Record<string, string>>; healthyEndpoints: number }>>;
  readonly activeRequests: number;
  /** Null when outlier detection is off. */
  readonly outlierDetection: OutlierDetectionSnapshot | null;
  readonly circuitBreaker: CircuitBreakerSnapshot;
}

const MAX_REQUESTS_OVERFLOW: Overflow = Object.freeze({ overflow: 'max-requests' });

/** An endpoint as the cluster tracks it, one per address:port: what balancers see, and the lease acquire() returns. */
class Host implements Endpoint, Lease {
  address: string;
  port: number;
  weight: number;
  labels: Readonly<Record<string, string>>;
  active = 0;

  constructor(
    public endpoint: Endpoint,
    private readonly cluster: Cluster,
  ) {
    this.address = endpoint.address;
    this.port = endpoint.port;
    this.weight = endpoint.weight;
    this.labels = endpoint.labels;
  }

  /** Takes the latest discovery data (an add for the same address:port may change weight or labels). */
  set(endpoint: Endpoint): void {
    this.endpoint = endpoint;
    this.weight = endpoint.weight;
    this.labels = endpoint.labels;
  }

  done(outcome: Outcome): void {
    this.cluster.release(this, outcome);
  }
}

interface Subset {
  readonly labels: Readonly<Record<string, string>>;
  readonly pairs: readonly (readonly [string, string])[];
  lb: LoadBalancer;
  healthy: number;
}

export class Cluster {
  private endpoints: Endpoint[] = [];
  /** False until the first update arrives, and after does-not-exist. */
  private known = false;
  private hosts = new Map<string, Host>();
  private lbSettings: LoadBalancerSettings | LoadBalancerName | LoadBalancerFactory;
  private lb: LoadBalancer;
  private readonly subsets = new Map<string, Subset>();
  private detector: OutlierDetector | undefined;
  /** The detector version the balancers were built for. */
  private builtVersion = 0;
  private inFlight = 0;
  private healthy = 0;
  private readonly clock: Pick<Clock, 'now'>;
  private readonly stats: EndpointStats = { activeRequests: (e) => (e as Partial<Host>).active ?? 0 };
  /** The cluster's limits; the connection pool and retry filter use connections, pendingRequests and retries directly. */
  readonly circuitBreaker: CircuitBreaker;

  /** @throws MeshError MESH_ERR_CONFIG for invalid options. */
  constructor(
    readonly name: string,
    options: ClusterOptions = {},
  ) {
    this.clock = options.clock ?? systemClock;
    this.lbSettings = options.loadBalancer ?? 'ROUND_ROBIN';
    this.lb = this.makeLoadBalancer();
    this.circuitBreaker = new CircuitBreaker(options.circuitBreaker);
    if (options.outlierDetection) this.detector = new OutlierDetector(options.outlierDetection, this.clock);
  }

  /** The outlier detector, when outlier detection is on. */
  get outlierDetector(): OutlierDetector | undefined {
    return this.detector;
  }

  /** Endpoints a pick may choose now: known and not ejected by outlier detection (mesh_endpoints). */
  get healthyEndpoints(): number {
    return this.healthy;
  }

  /** Requests acquired and not yet done. */
  get activeRequests(): number {
    return this.inFlight;
  }

  /** Applies one discovery update. */
  apply(update: DiscoveryUpdate): void {
    switch (update.type) {
      case 'reset':
        this.endpoints = [...update.endpoints];
        this.known = true;
        break;
      case 'add': {
        const keys = new Set(update.endpoints.map(endpointKey));
        this.endpoints = [...this.endpoints.filter((e) => !keys.has(endpointKey(e))), ...update.endpoints];
        this.known = true;
        break;
      }
      case 'remove': {
        const keys = new Set(update.addresses.map(endpointKey));
        this.endpoints = this.endpoints.filter((e) => !keys.has(endpointKey(e)));
        break;
      }
      case 'does-not-exist':
        this.endpoints = [];
        this.known = false;
        break;
    }
    const hosts = new Map<string, Host>();
    for (const e of this.endpoints) {
      const key = endpointKey(e);
      const host = this.hosts.get(key) ?? hosts.get(key);
      if (host) host.set(e);
      hosts.set(key, host ?? new Host(e, this));
    }
    this.hosts = hosts;
    this.detector?.update([...hosts.values()]);
    this.rebuild();
  }

  /**
   * Sets the DestinationRule's subsets: name → labels an endpoint must all carry. Each subset
   * gets its own balancer of the cluster's kind. Replaces any earlier subsets.
   */
  setSubsets(subsets: Readonly<Record<string, Readonly<Record<string, string>>>>): void {
    this.subsets.clear();
    for (const [name, labels] of Object.entries(subsets)) {
      this.subsets.set(name, { labels: { ...labels }, pairs: Object.entries(labels), lb: this.makeLoadBalancer(), healthy: 0 });
    }
    this.rebuild();
  }

  /** Replaces the balancer of the cluster and of every subset (a balancer's position or ring starts afresh). */
  setLoadBalancer(settings: LoadBalancerSettings | LoadBalancerName | LoadBalancerFactory = 'ROUND_ROBIN'): void {
    const previous = this.lbSettings;
    this.lbSettings = settings;
    try {
      this.lb = this.makeLoadBalancer();
    } catch (err) {
      this.lbSettings = previous;
      throw err;
    }
    for (const s of this.subsets.values()) s.lb = this.makeLoadBalancer();
    this.rebuild();
  }

  /** Turns outlier detection on with `config`, or off with undefined. A new config starts with nothing ejected. */
  setOutlierDetection(config: OutlierDetectionConfig | undefined): void {
    this.detector = config ? new OutlierDetector(config, this.clock) : undefined;
    this.detector?.update([...this.hosts.values()]);
    this.rebuild();
  }

  /** New circuit breaker limits; slots in use stay counted. */
  setCircuitBreaker(thresholds: CircuitBreakerThresholds | undefined): void {
    this.circuitBreaker.setThresholds(thresholds ?? {});
  }

  /**
   * For one request: a healthy endpoint with its lease, an Overflow when the circuit breaker
   * refuses, or undefined when the cluster (or subset) has no healthy endpoint.
   */
  acquire(ctx?: ClusterPickContext): Lease | Overflow | undefined {
    const host = this.pickHost(ctx);
    if (host === undefined) return undefined;
    if (!this.circuitBreaker.requests.tryAcquire()) return MAX_REQUESTS_OVERFLOW;
    host.active++;
    this.inFlight++;
    return host;
  }

  /** Ends a request: the same as `lease.done(outcome)`. */
  release(lease: Lease, outcome: Outcome): void {
    const host = lease as Host;
    if (host.active > 0) host.active--;
    if (this.inFlight > 0) this.inFlight--;
    this.circuitBreaker.requests.release();
    if (this.detector?.record(host, outcome)) this.rebuild();
  }

  /**
   * A healthy endpoint without taking a request slot or counting it active (for callers that
   * account on their own, such as the TCP proxy), or undefined when there is none.
   */
  pick(ctx?: ClusterPickContext): Endpoint | undefined {
    return this.pickHost(ctx)?.endpoint;
  }

  /** For status and config dumps. */
  snapshot(): ClusterSnapshot {
    const subsets: Record<string, { labels: Readonly<Record<string, string>>; healthyEndpoints: number }> = {};
    for (const [name, s] of this.subsets) subsets[name] = { labels: s.labels, healthyEndpoints: s.healthy };
    return {
      name: this.name,
      known: this.known,
      endpoints: this.endpoints,
      loadBalancer: typeof this.lbSettings === 'function' ? 'CUSTOM' : loadBalancerName(this.lbSettings),
      subsets,
      activeRequests: this.inFlight,
      outlierDetection: this.detector?.snapshot() ?? null,
      circuitBreaker: this.circuitBreaker.snapshot(),
    };
  }

  private pickHost(ctx: ClusterPickContext | undefined): Host | undefined {
    const d = this.detector;
    if (d !== undefined) {
      if (d.ejectionsActive > 0) d.refresh();
      if (d.version !== this.builtVersion) this.rebuild();
    }
    const subset = ctx?.subset;
    const lb = subset === undefined ? this.lb : this.subsets.get(subset)?.lb;
    return lb?.pick(ctx) as Host | undefined;
  }

  /** Gives every balancer the healthy endpoints it may pick from. O(n × subsets), plus the balancers' own build. */
  private rebuild(): void {
    let healthy = [...this.hosts.values()];
    const d = this.detector;
    if (d !== undefined) {
      d.refresh();
      this.builtVersion = d.version;
      if (d.ejectionsActive > 0) healthy = healthy.filter((h) => !d.isEjected(h));
    }
    this.lb.update(healthy);
    this.healthy = healthy.length;
    for (const s of this.subsets.values()) {
      const members = healthy.filter((h) => s.pairs.every(([k, v]) => h.labels[k] === v));
      s.lb.update(members);
      s.healthy = members.length;
    }
  }

  private makeLoadBalancer(): LoadBalancer {
    const s = this.lbSettings;
    return typeof s === 'function' ? s(this.stats) : createLoadBalancer(s, { stats: this.stats });
  }
}
