// The outbound request path: a chain of small steps from a request head to a Decision, in the order written below.

import { STATUS_CODES } from 'node:http';
import type { CompiledPolicy, ConsistentHashKey, HeaderOps, HttpRouteTable, MatchedRoute, RouteRequest, ServiceRef, WeightedDestination } from '../policy';
import { matchRoute, ownSubsetPolicy, pickWeighted, redirectLocation, rewritePath, serviceRefKey } from '../policy';
import type { Cluster, Lease } from './cluster';
import type { ConnectionPool } from './connection-pool';
import { headerValue, simpleResponse, type HeadEdits, type HttpHead } from './http1/http1-head';
import { overflowResponse, type Decision, type ExchangeOutcome, type RetryPlan, type Target } from './http1/http1-session';
import type { Outcome } from './outlier-detector';
import { mirrorRequest } from './mirror';

/** Where the router finds clusters and connections for a destination service. */
export interface UpstreamCatalog {
  /** The service's cluster, or a subset's own cluster (when its DestinationRule subset has its own trafficPolicy). */
  cluster(service: ServiceRef, subset?: string): Cluster;
  pool(service: ServiceRef, subset?: string): ConnectionPool;
}

/** What a destination needs per request, looked up once per policy. */
interface DestinationState {
  readonly cluster: Cluster;
  readonly pool: ConnectionPool;
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

const flagged = (status: number, reason: string, text: string, flag: string, extra: readonly (readonly [string, string])[] = []): Buffer =>
  simpleResponse(status, reason, text ? `${text}\n` : '', [['x-mesh-response-flags', flag], ...extra]);
const reason = (s: number): string => STATUS_CODES[s] ?? 'Status';
const NO_ROUTE = flagged(404, 'Not Found', 'no route matched the request', 'NR');

/** An outcome as the outlier detector counts it. */
function toOutcome(o: ExchangeOutcome): Outcome {
  if (o.connectFailure) return 'connect-failed';
  if (o.timeout) return 'timeout';
  if (o.reset && o.status === 0) return 'reset';
  return o.status || 'cancelled';
}

/** A request head seen through the interface route matching needs (no copies of headers). */
class HeadRequest implements RouteRequest {
  constructor(
    readonly h: HttpHead,
    /** The port the app addressed: this upstream's local port (for `match.port`). */
    readonly port: number,
    /** The calling workload's labels (for `match.sourceLabels`). */
    readonly sourceLabels: Readonly<Record<string, string>>,
    /** The client's address (for `consistentHash.useSourceIp`). */
    readonly sourceAddress: string,
  ) {}
  get method(): string {
    return this.h.method;
  }
  get path(): string {
    return this.h.target;
  }
  get authority(): string {
    return headerValue(this.h, 'host') ?? '';
  }
  header(name: string): string | undefined {
    return headerValue(this.h, name);
  }
}

export class OutboundHttpRouter {
  readonly stats: RouterStats = { noRoute: 0, noEndpoint: 0, overflow: 0, faultAborts: 0, faultDelays: 0, retries: 0, retryOverflow: 0, mirrored: 0, connectFailures: 0 };

  constructor(
    /** The service this upstream port leads to (the VirtualService host). */
    private readonly service: ServiceRef,
    private readonly policy: () => CompiledPolicy,
    private readonly catalog: UpstreamCatalog,
    private readonly random: () => number = Math.random,
    private readonly port = 0,
    private readonly sourceLabels: Readonly<Record<string, string>> = {},
  ) {}

  /** The chain, in order. Each step either answers or passes on; the comment says why it sits where it does. */
  readonly route = (head: HttpHead, source = ''): Decision | Promise<Decision> => {
    const req = new HeadRequest(head, this.port, this.sourceLabels, source);
    // 1. Route match first: everything after depends on the rule (first match wins).
    const route = matchRoute(this.table(), req);
    if (!route) {
      this.stats.noRoute++;
      return { kind: 'respond', response: NO_ROUTE };
    }
    const fault = route.fault;
    // 2. Fault delay before any upstream work, then the abort (Envoy's order: a delayed request may still be aborted).
    if (fault?.delay && this.random() < fault.delay.fraction) {
      this.stats.faultDelays++;
      return new Promise((resolve) => setTimeout(() => resolve(this.afterDelay(route, head, req)), fault.delay!.ms).unref());
    }
    return this.afterDelay(route, head, req);
  };

  private afterDelay(route: MatchedRoute, head: HttpHead, req: HeadRequest): Decision {
    const abort = route.fault?.abort;
    // 3. Fault abort: act as if the upstream failed, without touching it.
    if (abort && this.random() < abort.fraction) {
      this.stats.faultAborts++;
      const status = abort.httpStatus ?? 200;
      const grpc = abort.grpcStatus;
      return { kind: 'respond', response: flagged(status, reason(status), grpc === undefined ? 'fault filter abort' : '', 'FI', grpc === undefined ? [] : [['grpc-status', String(grpc)], ['content-type', 'application/grpc']]) };
    }
    return this.afterFaults(route, head, req);
  }

  private afterFaults(route: MatchedRoute, head: HttpHead, req: HeadRequest): Decision {
    const action = route.action;
    // 4. Answers the route gives itself.
    if (action.kind === 'redirect') {
      const location = redirectLocation(action, 'http', req.authority, head.target);
      return { kind: 'respond', response: simpleResponse(action.code, reason(action.code), '', [['location', location]]) };
    }
    if (action.kind === 'directResponse') {
      return { kind: 'respond', response: simpleResponse(action.status, reason(action.status), action.body ?? '') };
    }
    // 5. Weighted destination (canary splits), then an endpoint of its cluster (subset, balancer, breaker).
    const dest = pickWeighted(action.destinations, this.random());
    if (!dest) return { kind: 'respond', response: flagged(503, 'Service Unavailable', 'no destination with weight', 'UH') };
    const first = this.target(dest, req);
    if (Buffer.isBuffer(first)) return { kind: 'respond', response: first };
    // 6. Mirror after the primary is settled, so shadow traffic never takes the primary's place.
    if (route.mirror && !head.upgrade && head.contentLength <= 0 && !head.chunked && this.random() < route.mirror.fraction) {
      this.stats.mirrored++;
      const m = route.mirror;
      const cluster = this.catalog.cluster(m.service);
      const lease = cluster.acquire(m.subset ? { subset: m.subset } : undefined);
      if (lease && 'endpoint' in lease) mirrorRequest(head, lease, this.catalog.pool(m.service));
    }
    // 7. Edits: rewrite and header operations of the rule and of the destination.
    const edits = requestEdits(route, dest, head);
    const responseEdits = responseEditsOf(route.headers.response, dest.headers.response);
    // 8. Timeout and retries last: they wrap the attempts the steps above set up.
    const retry = route.retries.attempts > 0 ? this.retryPlan(route, dest, req) : undefined;
    return { kind: 'forward', target: first, edits, responseEdits, timeoutMs: route.timeoutMs, retry };
  }

  /** Retries of one request. Retries in flight are a cluster-wide limit (circuit breaker maxRetries): a slot per retry, given back when it ends. */
  private retryPlan(route: MatchedRoute, dest: WeightedDestination, req: HeadRequest): RetryPlan {
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
        if (Buffer.isBuffer(t)) {
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
  private dests = new WeakMap<WeightedDestination, DestinationState>();

  private table(): HttpRouteTable {
    const p = this.policy();
    if (p !== this.seen) {
      this.seen = p;
      this.routes = p.routesFor(this.service);
      this.dests = new WeakMap();
    }
    return this.routes!;
  }

  private stateOf(dest: WeightedDestination): DestinationState {
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

  /** An endpoint of the destination's cluster with its pool, or the response that says why there is none. */
  private target(dest: WeightedDestination, req: HeadRequest): Target | Buffer {
    const s = this.stateOf(dest);
    const key = s.hashKey && hashKeyOf(s.hashKey, req.h, req.sourceAddress);
    // A request without the key lands on a random point of the ring, as in Envoy (not all on one endpoint).
    const got = s.cluster.acquire(key ? { subset: dest.subset, hashKey: key } : s.ctx);
    if (!got) {
      this.stats.noEndpoint++;
      return flagged(503, 'Service Unavailable', `no healthy upstream for ${serviceRefKey(dest.service)}${dest.subset ? ` subset ${dest.subset}` : ''}`, 'UH');
    }
    if (!('endpoint' in got)) {
      this.stats.overflow++;
      return overflowResponse(got.overflow);
    }
    const lease: Lease = got;
    return {
      endpoint: lease.endpoint,
      pool: s.pool,
      done: (o) => {
        if (o.connectFailure) this.stats.connectFailures++;
        lease.done(toOutcome(o));
      },
    };
  }
}

/** Istio/Envoy retry conditions for HTTP/1.1 (the gRPC ones apply to gRPC traffic). */
function retriable(on: ReadonlySet<string>, codes: ReadonlySet<number>, o: ExchangeOutcome): boolean {
  const noResponse = o.status === 0;
  if (o.connectFailure && (on.has('connect-failure') || on.has('5xx') || on.has('gateway-error') || on.has('reset'))) return true;
  if (noResponse && (o.reset || o.timeout) && (on.has('reset') || on.has('5xx'))) return true;
  if (o.timeout && on.has('gateway-error')) return true;
  if (o.status >= 500 && on.has('5xx')) return true;
  if ((o.status === 502 || o.status === 503 || o.status === 504) && on.has('gateway-error')) return true;
  if (o.status === 409 && on.has('retriable-4xx')) return true;
  return o.status > 0 && on.has('retriable-status-codes') && codes.has(o.status);
}

function requestEdits(route: MatchedRoute, dest: WeightedDestination, head: HttpHead): HeadEdits | undefined {
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
    ...(rw?.uri !== undefined ? { target: rewritePath(rw, head.target) } : {}),
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
function hashKeyOf(hk: ConsistentHashKey, head: HttpHead, source: string): string {
  if ('useSourceIp' in hk) return source;
  if ('httpHeaderName' in hk) return headerValue(head, hk.httpHeaderName.toLowerCase()) ?? '';
  if ('httpCookie' in hk) {
    const cookies = headerValue(head, 'cookie') ?? '';
    const m = new RegExp(`(?:^|;\\s*)${hk.httpCookie.name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}=([^;]*)`).exec(cookies);
    return m?.[1] ?? '';
  }
  if ('httpQueryParameterName' in hk) {
    const q = head.target.indexOf('?');
    return q < 0 ? '' : (new URLSearchParams(head.target.slice(q + 1)).get(hk.httpQueryParameterName) ?? '');
  }
  return '';
}
