// The per-request side of routing: first matching entry of a table, weighted pick, path rewrite, redirect target.

import type { HttpMatchConditions, HttpRouteTable, L4MatchConditions, MatchedRoute, RewritePolicy, RouteAction, TcpMatchedRoute, TcpRouteTable } from './route-table';
import { matchString } from './string-match';

/** What routing needs to know about a request. Header names are asked for in lower case. */
export interface RouteRequest {
  readonly method: string;
  /** The request target: path with its query string. */
  readonly path: string;
  readonly authority: string;
  header(name: string): string | undefined;
  /** The port the client addressed (for `match.port`). */
  readonly port?: number;
  /** Labels of the calling workload (for `match.sourceLabels`). */
  readonly sourceLabels?: Readonly<Record<string, string>>;
  /** The client's address (for `consistentHash.useSourceIp`). */
  readonly sourceAddress?: string;
}

/** What routing needs to know about a TCP connection. */
export interface RouteConnection {
  readonly port?: number;
  /** TLS server name, for `tls[]` routes. */
  readonly sni?: string;
  readonly sourceLabels?: Readonly<Record<string, string>>;
}

function labelsMatch(want: readonly (readonly [string, string])[], have: Readonly<Record<string, string>> | undefined): boolean {
  if (want.length === 0) return true;
  if (have === undefined) return false;
  for (let i = 0; i < want.length; i++) if (have[want[i]![0]] !== want[i]![1]) return false;
  return true;
}

function decode(s: string): string {
  if (s.indexOf('%') < 0) return s;
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/**
 * The first value of query parameter `name` in `path` (whose "?" is at `q`), percent-decoded; "" when it has no "=";
 * undefined when absent. Scans in place: only the value found is copied.
 */
function queryValue(path: string, q: number, name: string): string | undefined {
  if (q < 0) return undefined;
  const end = path.length;
  let i = q + 1;
  while (i < end) {
    let amp = path.indexOf('&', i);
    if (amp < 0) amp = end;
    let eq = path.indexOf('=', i);
    if (eq < 0 || eq > amp) eq = amp;
    const pct = path.indexOf('%', i);
    const hit = eq - i === name.length ? path.startsWith(name, i) : pct >= 0 && pct < eq && decode(path.slice(i, eq)) === name;
    if (hit) return eq === amp ? '' : decode(path.slice(eq + 1, amp));
    i = amp + 1;
  }
  return undefined;
}

/**
 * The route for `req`: the first entry of `table` whose conditions all hold, or undefined when none does (the proxy
 * answers 404, as Envoy does). Builds no regex and no objects per call; the path without its query string and its
 * lower-case form are made at most once, and only when an entry needs them.
 */
export function matchRoute(table: HttpRouteTable, req: RouteRequest): MatchedRoute | undefined {
  const entries = table.entries;
  const path = req.path;
  const q = path.indexOf('?');
  const pathLen = q < 0 ? path.length : q;
  let bare: string | undefined;
  let lower: string | undefined;
  for (let i = 0; i < entries.length; i++) {
    const entry = entries[i]!;
    const m: HttpMatchConditions | undefined = entry.match;
    if (m === undefined) return entry.route;
    if (m.port !== 0 && req.port !== m.port) continue;
    if (m.method !== undefined && !matchString(m.method, req.method)) continue;
    const uri = m.uri;
    if (uri !== undefined) {
      let ok: boolean;
      if (uri.kind === 'regex') {
        bare ??= q < 0 ? path : path.slice(0, q);
        ok = uri.re!.test(bare);
      } else if (m.ignoreUriCase) {
        lower ??= (bare ??= q < 0 ? path : path.slice(0, q)).toLowerCase();
        ok = uri.kind === 'exact' ? lower === uri.value : lower.startsWith(uri.value);
      } else if (uri.kind === 'exact') {
        ok = pathLen === uri.value.length && path.startsWith(uri.value);
      } else {
        ok = uri.value.length <= pathLen && path.startsWith(uri.value);
      }
      if (!ok) continue;
    }
    if (m.authority !== undefined && !matchString(m.authority, req.authority)) continue;
    let pass = true;
    for (let j = 0; pass && j < m.headers.length; j++) pass = matchString(m.headers[j]!.matcher, req.header(m.headers[j]!.name));
    for (let j = 0; pass && j < m.withoutHeaders.length; j++) pass = !matchString(m.withoutHeaders[j]!.matcher, req.header(m.withoutHeaders[j]!.name));
    for (let j = 0; pass && j < m.queryParams.length; j++) pass = matchString(m.queryParams[j]!.matcher, queryValue(path, q, m.queryParams[j]!.name));
    if (!pass || !labelsMatch(m.sourceLabels, req.sourceLabels)) continue;
    return entry.route;
  }
  return undefined;
}

function l4Matches(m: L4MatchConditions, conn: RouteConnection): boolean {
  if (m.port !== 0 && conn.port !== m.port) return false;
  if (m.sniHosts !== undefined && (conn.sni === undefined || !m.sniHosts.includes(conn.sni.toLowerCase()))) return false;
  return labelsMatch(m.sourceLabels, conn.sourceLabels);
}

/** The route for a TCP connection: the first entry whose conditions hold (`tls[]` entries need an SNI), or undefined. */
export function matchTcpRoute(table: TcpRouteTable, conn: RouteConnection): TcpMatchedRoute | undefined {
  for (const entry of table.entries) {
    if (entry.match === undefined || l4Matches(entry.match, conn)) return entry.route;
  }
  return undefined;
}

/**
 * Picks a destination by weight with `random` uniform in [0, 1): destination i gets the share weight_i / sum.
 * Weight-0 destinations are never picked. Undefined only when no destination has a weight.
 */
export function pickWeighted<T extends { readonly weight: number }>(destinations: readonly T[], random: number): T | undefined {
  const n = destinations.length;
  if (n === 1) return destinations[0]!.weight > 0 ? destinations[0] : undefined;
  let total = 0;
  for (let i = 0; i < n; i++) total += destinations[i]!.weight;
  let x = random * total;
  let last: T | undefined;
  for (let i = 0; i < n; i++) {
    const d = destinations[i]!;
    if (d.weight <= 0) continue;
    if (x < d.weight) return d;
    x -= d.weight;
    last = d;
  }
  return last;
}

/** The path to forward after a rewrite: the matched prefix (or whole path) replaced by `rewrite.uri`, query kept. */
export function rewritePath(rewrite: RewritePolicy, path: string): string {
  if (rewrite.uri === undefined) return path;
  if (rewrite.replaceLength >= 0) return rewrite.uri + path.slice(rewrite.replaceLength);
  const q = path.indexOf('?');
  return q < 0 ? rewrite.uri : rewrite.uri + path.slice(q);
}

/** The Location of a redirect action: authority and/or path replaced; the query is kept unless the new uri has one. */
export function redirectLocation(action: Extract<RouteAction, { kind: 'redirect' }>, scheme: string, authority: string, path: string): string {
  let target = path;
  if (action.uri !== undefined) {
    const q = path.indexOf('?');
    target = q < 0 || action.uri.includes('?') ? action.uri : action.uri + path.slice(q);
  }
  return `${scheme}://${action.authority ?? authority}${target}`;
}
