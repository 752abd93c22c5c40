// The outbound request path for HTTP/1.1 and HTTP/2 alike: a chain of small steps from a request to a Decision, in the order written below.
//
// The chain is the same for every protocol; a RouterProtocol says how a protocol's request is seen by route
// matching, what its local answers look like (a ready HTTP/1.1 response, or what to answer on an HTTP/2 stream) and
// whether it can mirror. The catalog gives each destination's cluster and its protocol's connection pool.

import type { CompiledPolicy, ConsistentHashKey, HeaderOps, HttpRouteTable, MatchedRoute, RouteRequest, ServiceRef, WeightedDestination } from '../policy';
import { matchRoute, ownSubsetPolicy, pickWeighted, redirectLocation, rewritePath, serviceRefKey } from '../policy';
import type { OverflowKind } from './circuit-breaker';
import type { Cluster, Lease } from './cluster';
import type { HeadEdits } from './http1/http1-head';
import { outlierOutcome, retriable, type Decision, type RetryPlan, type Target } from './route-decision';

/** Where the router finds clusters and connections for a destination service. */
export interface UpstreamCatalog<P> {
  /** The service's cluster, or a subset's own cluster (when its DestinationRule subset has its own trafficPolicy). */
  cluster(service: ServiceRef, subset?: string): Cluster;
  pool(service: ServiceRef, subset?: string): P;
}

/** The answers the chain gives by itself, in a protocol's form `A`. */
export interface LocalAnswers<A> {
  /** No rule matched: 404 (gRPC: UNIMPLEMENTED), flag NR. */
  readonly noRoute: A;
  /** A fault abort, flag FI: `grpcStatus` (a gRPC answer) when the rule gives one, else `httpStatus`. */
  abort(httpStatus: number | undefined, grpcStatus: number | undefined): A;
  redirect(code: number, location: string): A;
  directResponse(status: number, body: string): A;
  /** No healthy endpoint (or no destination with weight): 503 (gRPC: UNAVAILABLE), flag UH. */
  noEndpoint(message: string): A;
  /** The destination's circuit breaker is full: 503 (gRPC: UNAVAILABLE), flag UO. */
  overflow(kind: OverflowKind): A;
}

/** What a protocol brings to the chain. */
export interface RouterProtocol<In, A, P> {
  /** The request as route matching (and consistent hashing) sees it. */
  request(input: In, port: number, sourceLabels: Readonly<Record<string, string>>, sourceAddress: string): RouteRequest;
  readonly answers: LocalAnswers<A>;
  /** Shadow traffic, for protocols that can send it: whether this request may be mirrored, and the fire-and-forget copy. */
  readonly mirror?: {
    accepts(input: In): boolean;
    send(input: In, lease: Lease, pool: P): void;
  };
}

/** What a destination needs per request, looked up once per policy. */
interface DestinationState<P> {
  readonly cluster: Cluster;
  readonly pool: P;
  readonly hashKey: ConsistentHashKey | undefined;
  readonly ctx: { subset: string } | undefined;
}

/** Counters the agent reports. */
export interface RouterStats {
  noRoute: number;
  noEndpoint: number;
  overflow: number;
  faultAborts: number;
  faultDelays: number;
  retries: number;
  /** Retries not made because the circuit breaker's maxRetries were all in flight. */
  retryOverflow: number;
  mirrored: number;
  connectFailures: number;
}

const isTarget = <P>(t: object): t is Target<P> => 'endpoint' in t && 'pool' in t;

export class OutboundHttpRouter<In, A extends object, P> {
  readonly stats: RouterStats = { noRoute: 0, noEndpoint: 0, overflow: 0, faultAborts: 0, faultDelays: 0, retries: 0, retryOverflow: 0, mirrored: 0, connectFailures: 0 };

  constructor(
    /** The service this upstream port leads to (the VirtualService host). */
    private readonly service: ServiceRef,
    private readonly policy: () => CompiledPolicy,
    private readonly catalog: UpstreamCatalog<P>,
    private readonly protocol: RouterProtocol<In, A, P>,
    private readonly random: () => number = Math.random,
    private readonly port = 0,
    private readonly sourceLabels: Readonly<Record<string, string>> = {},
  ) {}

  /** The chain, in order. Each step either answers or passes on; the comment says why it sits where it does. */
  readonly route = (input: In, source = ''): Decision<A, P> | Promise<Decision<A, P>> => {
    const req = this.protocol.request(input, this.port, this.sourceLabels, source);
    // 1. Route match first: everything after depends on the rule (first match wins).
    const route = matchRoute(this.table(), req);
    if (!route) {
      this.stats.noRoute++;
      return { kind: 'respond', response: this.protocol.answers.noRoute };
    }
    const fault = route.fault;
    // 2. Fault delay before any upstream work, then the abort (Envoy's order: a delayed request may still be aborted).
    if (fault?.delay && this.random() < fault.delay.fraction) {
      this.stats.faultDelays++;
      return new Promise((resolve) => setTimeout(() => resolve(this.afterDelay(route, input, req)), fault.delay!.ms).unref());
    }
    return this.afterDelay(route, input, req);
  };

  private afterDelay(route: MatchedRoute, input: In, req: RouteRequest): Decision<A, P> {
    const abort = route.fault?.abort;
    // 3. Fault abort: act as if the upstream failed, without touching it.
    if (abort && this.random() < abort.fraction) {
      this.stats.faultAborts++;
      return { kind: 'respond', response: this.protocol.answers.abort(abort.httpStatus, abort.grpcStatus) };
    }
    return this.afterFaults(route, input, req);
  }

  private afterFaults(route: MatchedRoute, input: In, req: RouteRequest): Decision<A, P> {
    const action = route.action;
    const answers = this.protocol.answers;
    // 4. Answers the route gives itself.
    if (action.kind === 'redirect') {
      return { kind: 'respond', response: answers.redirect(action.code, redirectLocation(action, 'http', req.authority, req.path)) };
    }
    if (action.kind === 'directResponse') {
      return { kind: 'respond', response: answers.directResponse(action.status, action.body ?? '') };
    }
    // 5. Weighted destination (canary splits), then an endpoint of its cluster (subset, balancer, breaker).
    const dest = pickWeighted(action.destinations, this.random());
    if (!dest) return { kind: 'respond', response: answers.noEndpoint('no destination with weight') };
    const first = this.target(dest, req);
    if (!isTarget<P>(first)) return { kind: 'respond', response: first };
    // 6. Mirror after the primary is settled, so shadow traffic never takes the primary's place.
    const mirror = this.protocol.mirror;
    if (route.mirror && mirror?.accepts(input) && this.random() < route.mirror.fraction) {
      this.stats.mirrored++;
      const m = route.mirror;
      const lease = this.catalog.cluster(m.service).acquire(m.subset ? { subset: m.subset } : undefined);
      if (lease && 'endpoint' in lease) mirror.send(input, lease, this.catalog.pool(m.service));
    }
    // 7. Edits: rewrite and header operations of the rule and of the destination.
    const edits = requestEdits(route, dest, req.path);
    const responseEdits = responseEditsOf(route.headers.response, dest.headers.response);
    // 8. Timeout and retries last: they wrap the attempts the steps above set up.
    const retry = route.retries.attempts > 0 ? this.retryPlan(route, dest, req) : undefined;
    return { kind: 'forward', target: first, edits, responseEdits, timeoutMs: route.timeoutMs, retry };
  }

  /** Retries of one request. Retries in flight are a cluster-wide limit (circuit breaker maxRetries): a slot per retry, given back when it ends. */
  private retryPlan(route: MatchedRoute, dest: WeightedDestination, req: RouteRequest): RetryPlan<A, P> {
    const r = route.retries;
    const slots = this.stateOf(dest).cluster.circuitBreaker.retries;
    return {
      attempts: r.attempts,
      perTryTimeoutMs: r.perTryTimeoutMs,
      retriable: (o) => retriable(r.retryOn, r.retriableStatusCodes, o),
      admit: () => {
        if (slots.tryAcquire()) return true;
        this.stats.retryOverflow++;
        return false;
      },
      cancel: () => slots.release(),
      next: () => {
        this.stats.retries++;
        const t = this.target(dest, req);
        if (!isTarget<P>(t)) {
          slots.release();
          return t;
        }
        const done = t.done;
        return { ...t, done: (o) => (slots.release(), done?.(o)) };
      },
    };
  }

  /** The route table and per-destination lookups, recomputed only when the policy object changes. */
  private seen: CompiledPolicy | undefined;
  private routes: HttpRouteTable | undefined;
  private dests = new WeakMap<WeightedDestination, DestinationState<P>>();

  private table(): HttpRouteTable {
    const p = this.policy();
    if (p !== this.seen) {
      this.seen = p;
      this.routes = p.routesFor(this.service);
      this.dests = new WeakMap();
    }
    return this.routes!;
  }

  private stateOf(dest: WeightedDestination): DestinationState<P> {
    let s = this.dests.get(dest);
    if (!s) {
      // A subset with a trafficPolicy of its own has its own cluster and pool (own balancer, outlier detection, limits).
      const dp = this.seen!.destinationFor(dest.service);
      const own = ownSubsetPolicy(dp, dest.subset);
      const split = own ? dest.subset : undefined;
      const hashKey = (own ?? dp.trafficPolicy).loadBalancer.hashKey;
      s = {
        cluster: this.catalog.cluster(dest.service, split),
        pool: this.catalog.pool(dest.service, split),
        hashKey,
        ctx: dest.subset ? { subset: dest.subset } : undefined,
      };
      this.dests.set(dest, s);
    }
    return s;
  }

  /** An endpoint of the destination's cluster with its pool, or the answer that says why there is none. */
  private target(dest: WeightedDestination, req: RouteRequest): Target<P> | A {
    const s = this.stateOf(dest);
    const key = s.hashKey && hashKeyOf(s.hashKey, req);
    // A request without the key lands on a random point of the ring, as in Envoy (not all on one endpoint).
    const got = s.cluster.acquire(key ? { subset: dest.subset, hashKey: key } : s.ctx);
    if (!got) {
      this.stats.noEndpoint++;
      return this.protocol.answers.noEndpoint(`no healthy upstream for ${serviceRefKey(dest.service)}${dest.subset ? ` subset ${dest.subset}` : ''}`);
    }
    if (!('endpoint' in got)) {
      this.stats.overflow++;
      return this.protocol.answers.overflow(got.overflow);
    }
    const lease: Lease = got;
    return {
      endpoint: lease.endpoint,
      pool: s.pool,
      done: (o) => {
        if (o.connectFailure) this.stats.connectFailures++;
        lease.done(outlierOutcome(o));
      },
    };
  }
}

function requestEdits(route: MatchedRoute, dest: WeightedDestination, path: string): HeadEdits | undefined {
  const rule = route.headers.request;
  const d = dest.headers.request;
  const rw = route.rewrite;
  if (!rw && isEmpty(rule) && isEmpty(d)) return undefined;
  const set = [...rule.set, ...d.set];
  if (rw?.authority !== undefined) set.push(['host', rw.authority]);
  return {
    set,
    add: [...rule.add, ...d.add],
    remove: new Set([...rule.remove, ...d.remove]),
    ...(rw?.uri !== undefined ? { target: rewritePath(rw, path) } : {}),
  };
}

function responseEditsOf(rule: HeaderOps, d: HeaderOps): HeadEdits | undefined {
  if (isEmpty(rule) && isEmpty(d)) return undefined;
  return { set: [...rule.set, ...d.set], add: [...rule.add, ...d.add], remove: new Set([...rule.remove, ...d.remove]) };
}

function isEmpty(ops: HeaderOps): boolean {
  return ops.set.length === 0 && ops.add.length === 0 && ops.remove.length === 0;
}

/** The consistent-hash key of a request, per the DestinationRule; '' when the request has none. */
function hashKeyOf(hk: ConsistentHashKey, req: RouteRequest): string {
  if ('useSourceIp' in hk) return req.sourceAddress ?? '';
  if ('httpHeaderName' in hk) return req.header(hk.httpHeaderName.toLowerCase()) ?? '';
  if ('httpCookie' in hk) {
    const cookies = req.header('cookie') ?? '';
    const m = new RegExp(`(?:^|;\\s*)${hk.httpCookie.name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}=([^;]*)`).exec(cookies);
    return m?.[1] ?? '';
  }
  if ('httpQueryParameterName' in hk) {
    const q = req.path.indexOf('?');
    return q < 0 ? '' : (new URLSearchParams(req.path.slice(q + 1)).get(hk.httpQueryParameterName) ?? '');
  }
  return '';
}
