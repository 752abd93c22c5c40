// Route tables: a VirtualService compiled for the proxy (ordered entries, matchers built, every per-request answer precomputed).

import { deepFreeze } from '../config';
import type { HttpMatchRequest, L4MatchAttributes } from './http-match';
import { GRPC_STATUS_CODES, type HttpRoute, type HttpRetry } from './http-route';
import type { ServiceRef } from './hosts';
import type { HostResolver } from './policy-set';
import { describeResource } from './resource';
import type { HeaderOperations, Headers, RouteDestination } from './route-destination';
import { compileStringMatch, type StringMatch, type StringMatcher } from './string-match';
import type { VirtualService } from './virtual-service';

/** Header operations ready to apply: names lower-cased, maps turned into lists. */
export interface HeaderOps {
  readonly set: readonly (readonly [name: string, value: string])[];
  readonly add: readonly (readonly [name: string, value: string])[];
  readonly remove: readonly string[];
}

/** Header operations on the request and on the response. */
export interface HeaderOperationsPair {
  readonly request: HeaderOps;
  readonly response: HeaderOps;
}

/** One destination of a route action, with its share of traffic (0..100) and its own header operations. */
export interface WeightedDestination {
  readonly service: ServiceRef;
  readonly subset?: string;
  readonly port?: number;
  readonly weight: number;
  readonly headers: HeaderOperationsPair;
}

/** What a matched rule does. */
export type RouteAction =
  | { readonly kind: 'route'; readonly destinations: readonly WeightedDestination[] }
  | { readonly kind: 'redirect'; readonly uri?: string; readonly authority?: string; readonly code: number }
  | { readonly kind: 'directResponse'; readonly status: number; readonly body?: string };

/** Retries: `retriableStatusCodes` applies when retryOn has `retriable-status-codes`. */
export interface RetryPolicy {
  /** 0 = no retries. */
  readonly attempts: number;
  /** 0 = no per-try timeout (the route timeout bounds every try together). */
  readonly perTryTimeoutMs: number;
  readonly retryOn: ReadonlySet<string>;
  readonly retriableStatusCodes: ReadonlySet<number>;
}

/** Fault injection; fractions are 0..1, compared with a uniform random number per request. */
export interface FaultPolicy {
  readonly delay?: { readonly fraction: number; readonly ms: number };
  readonly abort?: { readonly fraction: number; readonly httpStatus?: number; readonly grpcStatus?: number };
}

/** Shadow traffic: a copy of `fraction` (0..1) of requests goes to the service, its response ignored. */
export interface MirrorPolicy {
  readonly service: ServiceRef;
  readonly subset?: string;
  readonly port?: number;
  readonly fraction: number;
}

/** Rewrite before forwarding; `replaceLength` chars of the path (the matched prefix; -1 = the whole path) become `uri`. */
export interface RewritePolicy {
  readonly uri?: string;
  readonly authority?: string;
  readonly replaceLength: number;
}

/** Everything the proxy needs once a request matched; precomputed, shared, frozen. */
export interface MatchedRoute {
  /** "VirtualService reviews.default", or "default" for the implicit route. */
  readonly source: string;
  /** http[].name, when set. */
  readonly name?: string;
  /** Index into http[] (-1 for the default route) and into its match[] (-1 when it has none). */
  readonly ruleIndex: number;
  readonly matchIndex: number;
  readonly action: RouteAction;
  readonly rewrite?: RewritePolicy;
  /** Rule-level header operations (destinations carry their own too). */
  readonly headers: HeaderOperationsPair;
  /** 0 = no timeout. */
  readonly timeoutMs: number;
  readonly retries: RetryPolicy;
  readonly fault?: FaultPolicy;
  readonly mirror?: MirrorPolicy;
}

/** A named condition on a header or query parameter. */
export interface NamedMatcher {
  readonly name: string;
  readonly matcher: StringMatcher;
}

/** One compiled `match[]` entry; every condition present must hold. */
export interface HttpMatchConditions {
  /** 0 = any port. */
  readonly port: number;
  readonly method: StringMatcher | undefined;
  readonly uri: StringMatcher | undefined;
  readonly ignoreUriCase: boolean;
  readonly authority: StringMatcher | undefined;
  readonly headers: readonly NamedMatcher[];
  readonly withoutHeaders: readonly NamedMatcher[];
  readonly queryParams: readonly NamedMatcher[];
  readonly sourceLabels: readonly (readonly [string, string])[];
}

/** One row of a table: a condition (undefined = every request) and the answer. */
export interface HttpRouteEntry {
  readonly match: HttpMatchConditions | undefined;
  readonly route: MatchedRoute;
}

/** The ordered HTTP routes of one service; the first entry that matches wins. */
export interface HttpRouteTable {
  /** "VirtualService reviews.default", or undefined for the implicit default table. */
  readonly source: string | undefined;
  readonly entries: readonly HttpRouteEntry[];
}

/** Compiled `tcp[]`/`tls[]` match entry. */
export interface L4MatchConditions {
  readonly port: number;
  readonly sourceLabels: readonly (readonly [string, string])[];
  /** TLS routes: SNI names, one of which must equal the connection's. */
  readonly sniHosts: readonly string[] | undefined;
}

/** What a matched TCP/TLS rule does. */
export interface TcpMatchedRoute {
  readonly source: string;
  /** Which list of the VirtualService the rule is in ("default" for the implicit route). */
  readonly section: 'tls' | 'tcp' | 'default';
  readonly ruleIndex: number;
  readonly destinations: readonly WeightedDestination[];
}

export interface TcpRouteEntry {
  readonly match: L4MatchConditions | undefined;
  readonly route: TcpMatchedRoute;
}

/** Ordered TCP routes: `tls[]` rules (which need an SNI) first, then `tcp[]` rules. */
export interface TcpRouteTable {
  readonly source: string | undefined;
  readonly entries: readonly TcpRouteEntry[];
}

const EMPTY_OPS: HeaderOps = deepFreeze({ set: [], add: [], remove: [] });
/** No header changes. */
export const NO_HEADER_OPS: HeaderOperationsPair = deepFreeze({ request: EMPTY_OPS, response: EMPTY_OPS });

/** Istio's retry policy for routes that say nothing about retries. */
export const DEFAULT_RETRY_POLICY: RetryPolicy = deepFreeze({
  attempts: 2,
  perTryTimeoutMs: 0,
  retryOn: new Set(['connect-failure', 'refused-stream', 'unavailable', 'cancelled', 'retriable-status-codes']),
  retriableStatusCodes: new Set([503]),
});

const NO_RETRIES: RetryPolicy = deepFreeze({ attempts: 0, perTryTimeoutMs: 0, retryOn: new Set<string>(), retriableStatusCodes: new Set<number>() });

function compileOps(ops: HeaderOperations | undefined): HeaderOps {
  if (!ops) return EMPTY_OPS;
  const pairs = (m: Readonly<Record<string, string>>) => Object.entries(m).map(([k, v]) => [k.toLowerCase(), v] as const);
  return { set: pairs(ops.set), add: pairs(ops.add), remove: ops.remove.map((n) => n.toLowerCase()) };
}

function compileHeaders(h: Headers | undefined): HeaderOperationsPair {
  return h ? { request: compileOps(h.request), response: compileOps(h.response) } : NO_HEADER_OPS;
}

function compileDestinations(route: readonly RouteDestination[], namespace: string, resolve: HostResolver): WeightedDestination[] {
  return route.map((d) => ({
    service: resolve(d.destination.host, namespace),
    ...(d.destination.subset ? { subset: d.destination.subset } : {}),
    ...(d.destination.port ? { port: d.destination.port } : {}),
    weight: d.weight,
    headers: compileHeaders(d.headers),
  }));
}

/** Retries as the proxy applies them, Istio's defaults filled in. */
export function compileRetries(r: HttpRetry | undefined): RetryPolicy {
  if (!r) return DEFAULT_RETRY_POLICY;
  if (r.attempts === 0) return NO_RETRIES;
  const perTryTimeoutMs = r.perTryTimeoutMs ?? 0;
  if (!r.retryOn) return { ...DEFAULT_RETRY_POLICY, attempts: r.attempts, perTryTimeoutMs };
  const retryOn = new Set(r.retryOn.filter((c) => !/^\d+$/.test(c)));
  const retriableStatusCodes = new Set(r.retryOn.filter((c) => /^\d+$/.test(c)).map(Number));
  // Bare status codes only take effect through this condition (Istio adds it the same way).
  if (retriableStatusCodes.size > 0) retryOn.add('retriable-status-codes');
  return { attempts: r.attempts, perTryTimeoutMs, retryOn, retriableStatusCodes };
}

function compileMatch(m: HttpMatchRequest): HttpMatchConditions {
  const named = (rec: Readonly<Record<string, StringMatch>>) =>
    Object.entries(rec).map(([name, sm]) => ({ name, matcher: compileStringMatch(sm) }));
  return {
    port: m.port ?? 0,
    method: m.method ? compileStringMatch(m.method) : undefined,
    uri: m.uri ? compileStringMatch(m.uri, m.ignoreUriCase) : undefined,
    ignoreUriCase: m.ignoreUriCase,
    authority: m.authority ? compileStringMatch(m.authority) : undefined,
    headers: named(m.headers),
    withoutHeaders: named(m.withoutHeaders),
    queryParams: named(m.queryParams),
    sourceLabels: Object.entries(m.sourceLabels),
  };
}

/** Path chars a prefix rewrite replaces: the matched prefix; the whole path for exact/regex; "/" when uri is not matched (Istio). */
function replaceLength(m: HttpMatchRequest | undefined): number {
  if (!m?.uri) return 1;
  return m.uri.kind === 'prefix' ? m.uri.value.length : -1;
}

function compileRule(rule: HttpRoute, ruleIndex: number, source: string, namespace: string, resolve: HostResolver): HttpRouteEntry[] {
  const action: RouteAction = rule.redirect
    ? { kind: 'redirect', ...(rule.redirect.uri ? { uri: rule.redirect.uri } : {}), ...(rule.redirect.authority ? { authority: rule.redirect.authority } : {}), code: rule.redirect.redirectCode }
    : rule.directResponse
      ? { kind: 'directResponse', status: rule.directResponse.status, ...(rule.directResponse.body !== undefined ? { body: rule.directResponse.body } : {}) }
      : { kind: 'route', destinations: compileDestinations(rule.route, namespace, resolve) };
  const f = rule.fault;
  const fault: FaultPolicy | undefined = f && {
    ...(f.delay ? { delay: { fraction: f.delay.percent / 100, ms: f.delay.fixedDelayMs } } : {}),
    ...(f.abort
      ? { abort: { fraction: f.abort.percent / 100, ...(f.abort.httpStatus ? { httpStatus: f.abort.httpStatus } : {}), ...(f.abort.grpcStatus ? { grpcStatus: GRPC_STATUS_CODES[f.abort.grpcStatus]! } : {}) } }
      : {}),
  };
  const mirror: MirrorPolicy | undefined = rule.mirror && {
    service: resolve(rule.mirror.host, namespace),
    ...(rule.mirror.subset ? { subset: rule.mirror.subset } : {}),
    ...(rule.mirror.port ? { port: rule.mirror.port } : {}),
    fraction: (rule.mirrorPercent ?? 100) / 100,
  };
  const shared = {
    source,
    ...(rule.name ? { name: rule.name } : {}),
    ruleIndex,
    action,
    headers: compileHeaders(rule.headers),
    timeoutMs: rule.timeoutMs ?? 0,
    retries: compileRetries(rule.retries),
    ...(fault ? { fault } : {}),
    ...(mirror ? { mirror } : {}),
  };
  const route = (m: HttpMatchRequest | undefined, matchIndex: number): MatchedRoute => ({
    ...shared,
    matchIndex,
    ...(rule.rewrite ? { rewrite: { ...rule.rewrite, replaceLength: replaceLength(m) } } : {}),
  });
  if (rule.match.length === 0) return [{ match: undefined, route: route(undefined, -1) }];
  return rule.match.map((m, i) => ({ match: compileMatch(m), route: route(m, i) }));
}

/** Compiles a VirtualService's `http[]` rules; hosts in it resolve relative to its namespace. */
export function compileHttpRouteTable(vs: VirtualService, resolve: HostResolver): HttpRouteTable {
  const source = describeResource(vs);
  const entries = vs.spec.http.flatMap((rule, i) => compileRule(rule, i, source, vs.metadata.namespace, resolve));
  return deepFreeze({ source, entries });
}

/** Compiles a VirtualService's `tls[]` and `tcp[]` rules. */
export function compileTcpRouteTable(vs: VirtualService, resolve: HostResolver): TcpRouteTable {
  const source = describeResource(vs);
  const ns = vs.metadata.namespace;
  const l4 = (m: L4MatchAttributes): L4MatchConditions => ({ port: m.port ?? 0, sourceLabels: Object.entries(m.sourceLabels), sniHosts: m.sniHosts });
  const entries: TcpRouteEntry[] = [];
  const add = (rules: VirtualService['spec']['tcp'], section: 'tls' | 'tcp'): void => {
    rules.forEach((rule, ruleIndex) => {
      const route: TcpMatchedRoute = { source, section, ruleIndex, destinations: compileDestinations(rule.route, ns, resolve) };
      if (rule.match.length === 0) entries.push({ match: undefined, route });
      for (const m of rule.match) entries.push({ match: l4(m), route });
    });
  };
  add(vs.spec.tls, 'tls');
  add(vs.spec.tcp, 'tcp');
  return deepFreeze({ source, entries });
}

/** The table of a service without a VirtualService: everything to the service itself, Istio's default retries. */
export function defaultHttpRouteTable(service: ServiceRef): HttpRouteTable {
  const destinations = [{ service, weight: 100, headers: NO_HEADER_OPS }];
  const route: MatchedRoute = { source: 'default', ruleIndex: -1, matchIndex: -1, action: { kind: 'route', destinations }, headers: NO_HEADER_OPS, timeoutMs: 0, retries: DEFAULT_RETRY_POLICY };
  return deepFreeze({ source: undefined, entries: [{ match: undefined, route }] });
}

/** The TCP table of a service without TCP routes: every connection to the service itself. */
export function defaultTcpRouteTable(service: ServiceRef): TcpRouteTable {
  const route: TcpMatchedRoute = { source: 'default', section: 'default', ruleIndex: -1, destinations: [{ service, weight: 100, headers: NO_HEADER_OPS }] };
  return deepFreeze({ source: undefined, entries: [{ match: undefined, route }] });
}
