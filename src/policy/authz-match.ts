// AuthorizationPolicy rules made ready to match: string patterns, IP blocks, ports, normalized paths, and one rule's from/to/when.

import { BlockList, isIP } from 'node:net';
import type { AuthzCondition, AuthzOperation, AuthzRule, AuthzSource } from './authorization-policy';

/** The HTTP side of a request, when there is one (absent for a TCP connection). */
export interface AuthzHttp {
  readonly method: string;
  /** The request target as sent (path and query); matched after normalization (normalizeAuthzPath). */
  readonly path: string;
  /** The Host (HTTP/1.1) or :authority (HTTP/2), as sent. */
  readonly host: string;
  /** Every field named `name` (lower case), joined with ","; undefined when absent. */
  header(name: string): string | undefined;
}

/** What authorization looks at: the connection's facts, and the request's when it is HTTP. */
export interface AuthzRequest {
  /** The caller's trust-domain-relative SPIFFE ID (`mesh.local/ns/default/sa/web`); absent without mTLS. */
  readonly principal?: string;
  /** The caller's namespace, from its SPIFFE ID; absent without mTLS. */
  readonly namespace?: string;
  /** The address the connection came from (also `remote.ip`: no X-Forwarded-For is trusted). */
  readonly sourceIp?: string;
  /** The local address the connection reached. */
  readonly destinationIp?: string;
  /** The workload's port: where its app listens (not the agent's inbound port). */
  readonly destinationPort: number;
  /** TLS server name the caller sent; absent for plaintext. */
  readonly sni?: string;
  readonly http?: AuthzHttp;
}

/** One check of a rule; HTTP-only checks (hosts, methods, paths, headers, request principals) cannot be made on TCP. */
interface Check {
  readonly httpOnly: boolean;
  test(req: AuthzRequest): boolean;
}

/** A rule ready to match. `httpOnly`: it has a check that needs HTTP (Istio then never lets it ALLOW TCP). */
export interface CompiledRule {
  readonly httpOnly: boolean;
  /** On TCP, HTTP-only checks count as matched (what Istio does for DENY and AUDIT rules). */
  matches(req: AuthzRequest): boolean;
}

type Matcher = (value: string | undefined) => boolean;

/** One pattern: exact, "prefix*", "*suffix", or "*" (any non-empty value). */
export function compilePattern(pattern: string, ignoreCase = false): Matcher {
  const fold = ignoreCase ? (s: string): string => s.toLowerCase() : (s: string): string => s;
  if (pattern === '*') return (v) => v !== undefined && v !== '';
  if (pattern.startsWith('*')) {
    const suffix = fold(pattern.slice(1));
    return (v) => v !== undefined && fold(v).endsWith(suffix);
  }
  if (pattern.endsWith('*')) {
    const prefix = fold(pattern.slice(0, -1));
    return (v) => v !== undefined && fold(v).startsWith(prefix);
  }
  const exact = fold(pattern);
  return (v) => v !== undefined && fold(v) === exact;
}

function anyOf(matchers: readonly Matcher[]): Matcher {
  return (v) => matchers.some((m) => m(v));
}

/** A Host matches with or without its port, case-insensitively (Istio: hosts "example.com" matches "example.com:8080"). */
function hostMatcher(patterns: readonly string[]): Matcher {
  const m = anyOf(patterns.map((p) => compilePattern(p, true)));
  return (v) => {
    if (v === undefined) return false;
    if (m(v)) return true;
    const colon = v.lastIndexOf(':');
    return colon > 0 && v.indexOf(']') < colon && m(v.slice(0, colon));
  };
}

/** "::ffff:10.0.0.1" is 10.0.0.1. */
function plainIp(ip: string): string {
  return ip.startsWith('::ffff:') && isIP(ip.slice(7)) === 4 ? ip.slice(7) : ip;
}

/** IP addresses and CIDR blocks (checked at parse). */
function ipMatcher(blocks: readonly string[]): Matcher {
  const list = new BlockList();
  for (const b of blocks) {
    const slash = b.indexOf('/');
    const addr = slash < 0 ? b : b.slice(0, slash);
    const type = isIP(addr) === 6 ? 'ipv6' : 'ipv4';
    if (slash < 0) list.addAddress(addr, type);
    else list.addSubnet(addr, Number(b.slice(slash + 1)), type);
  }
  return (v) => {
    if (v === undefined) return false;
    const ip = plainIp(v);
    const family = isIP(ip);
    return family !== 0 && list.check(ip, family === 6 ? 'ipv6' : 'ipv4');
  };
}

const UNRESERVED = /[A-Za-z0-9\-._~]/;

/**
 * The path authorization compares, as Istio's default (BASE) normalization makes it: query and fragment dropped,
 * "\" read as "/", percent-encoded unreserved characters decoded (other escapes upper-cased, %2F stays encoded), and
 * "." and ".." segments resolved (RFC 3986 5.2.4). So `/a/../admin` and `/%61dmin` are `/admin` to a policy.
 */
export function normalizeAuthzPath(target: string): string {
  let path = target;
  const cut = path.search(/[?#]/);
  if (cut >= 0) path = path.slice(0, cut);
  if (path.includes('\\')) path = path.replaceAll('\\', '/');
  if (!path.startsWith('/')) {
    // absolute-form (http://host/path) or "*"
    const m = /^[a-zA-Z][a-zA-Z0-9+.-]*:\/\/[^/]*(\/.*)?$/.exec(path);
    if (!m) return path;
    path = m[1] ?? '/';
  }
  if (path.includes('%')) {
    path = path.replace(/%([0-9a-fA-F]{2})/g, (all, hex: string) => {
      const c = String.fromCharCode(parseInt(hex, 16));
      return UNRESERVED.test(c) ? c : all.toUpperCase();
    });
  }
  if (!/(^|\/)\.\.?(\/|$)/.test(path)) return path;
  const out: string[] = [];
  const segments = path.split('/');
  for (let i = 1; i < segments.length; i++) {
    const s = segments[i]!;
    const last = i === segments.length - 1;
    if (s === '.' || s === '..') {
      if (s === '..') out.pop();
      if (last) out.push('');
    } else out.push(s);
  }
  return `/${out.join('/')}`;
}

/** A field with its values (any must match) and not-values (none may match); undefined when both are empty. */
function field(values: readonly string[], notValues: readonly string[], make: (list: readonly string[]) => Matcher, read: (req: AuthzRequest) => string | undefined, httpOnly = false): Check | undefined {
  if (values.length === 0 && notValues.length === 0) return undefined;
  const yes = values.length > 0 ? make(values) : undefined;
  const no = notValues.length > 0 ? make(notValues) : undefined;
  return {
    httpOnly,
    test: (req) => {
      if (httpOnly && req.http === undefined) return true;
      const v = read(req);
      return (!yes || yes(v)) && (!no || !no(v));
    },
  };
}

const patterns = (list: readonly string[]): Matcher => anyOf(list.map((p) => compilePattern(p)));
const ports = (list: readonly string[]): Matcher => {
  const set = new Set(list);
  return (v) => v !== undefined && set.has(v);
};
const present = (list: readonly string[]): Matcher => {
  // A header condition's "*" asks only that the header is there (Envoy's present match), empty or not.
  const rest = list.filter((p) => p !== '*');
  const m = patterns(rest);
  return (v) => v !== undefined && (rest.length < list.length || m(v));
};

const port = (req: AuthzRequest): string => String(req.destinationPort);
const http = <T>(f: (h: AuthzHttp) => T) => (req: AuthzRequest): T | undefined => (req.http ? f(req.http) : undefined);

function sourceChecks(s: AuthzSource): Check[] {
  return [
    field(s.principals, s.notPrincipals, patterns, (r) => r.principal),
    field(s.namespaces, s.notNamespaces, patterns, (r) => r.namespace),
    field(s.ipBlocks, s.notIpBlocks, ipMatcher, (r) => r.sourceIp),
    field(s.remoteIpBlocks, s.notRemoteIpBlocks, ipMatcher, (r) => r.sourceIp),
    // No request authentication (JWT) yet: a request never has a request principal.
    field(s.requestPrincipals, s.notRequestPrincipals, patterns, () => undefined, true),
  ].filter((c): c is Check => c !== undefined);
}

function operationChecks(o: AuthzOperation): Check[] {
  const str = (l: readonly number[]): string[] => l.map(String);
  return [
    field(o.hosts, o.notHosts, hostMatcher, http((h) => h.host), true),
    field(str(o.ports), str(o.notPorts), ports, port),
    field(o.methods, o.notMethods, patterns, http((h) => h.method), true),
    field(o.paths, o.notPaths, patterns, http((h) => normalizeAuthzPath(h.path)), true),
  ].filter((c): c is Check => c !== undefined);
}

function conditionCheck(c: AuthzCondition): Check {
  const header = /^request\.headers\[(.+)\]$/.exec(c.key);
  if (header) {
    const name = header[1]!.toLowerCase();
    return field(c.values, c.notValues, present, http((h) => h.header(name)), true)!;
  }
  switch (c.key) {
    case 'source.ip':
    case 'remote.ip':
      return field(c.values, c.notValues, ipMatcher, (r) => r.sourceIp)!;
    case 'destination.ip':
      return field(c.values, c.notValues, ipMatcher, (r) => r.destinationIp)!;
    case 'destination.port':
      return field(c.values, c.notValues, ports, port)!;
    case 'source.namespace':
      return field(c.values, c.notValues, patterns, (r) => r.namespace)!;
    case 'source.principal':
      return field(c.values, c.notValues, patterns, (r) => r.principal)!;
    case 'connection.sni':
      return field(c.values, c.notValues, patterns, (r) => r.sni)!;
    default:
      // The parser refuses every other key; reaching this is a bug, and a rule that cannot be read matches nothing.
      return { httpOnly: false, test: () => false };
  }
}

/**
 * Compiles one rule: it matches when one `from` entry (all its fields), one `to` entry (all its fields) and every
 * `when` condition match; an absent list matches anything, so `{}` matches every request.
 */
export function compileRule(rule: AuthzRule): CompiledRule {
  const from = rule.from.map(sourceChecks);
  const to = rule.to.map(operationChecks);
  const when = rule.when.map(conditionCheck);
  const all = (checks: readonly Check[], req: AuthzRequest): boolean => checks.every((c) => c.test(req));
  const httpOnly = [...from.flat(), ...to.flat(), ...when].some((c) => c.httpOnly);
  return {
    httpOnly,
    matches: (req) => (from.length === 0 || from.some((f) => all(f, req))) && (to.length === 0 || to.some((t) => all(t, req))) && all(when, req),
  };
}
