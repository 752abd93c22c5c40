// Unit tests for src/policy routing: compiled route tables, matchRoute semantics, defaults, rewrite/redirect, TCP routes, pickWeighted.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  compilePolicy,
  DEFAULT_RETRY_POLICY,
  matchRoute,
  matchTcpRoute,
  parsePolicyText,
  pickWeighted,
  redirectLocation,
  rewritePath,
  type CompiledPolicy,
  type HttpRouteTable,
  type MatchedRoute,
  type RouteRequest,
} from '../../src/policy';

const REVIEWS = { name: 'reviews', namespace: 'default' };

/** A policy with one VirtualService for "reviews" whose http list is `http`. */
function compiled(http: string, more = ''): CompiledPolicy {
  const text = `apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\nspec:\n  hosts: [reviews]\n  http:\n${http}${more ? `---\n${more}` : ''}`;
  return compilePolicy(parsePolicyText(text, 'routes.yaml'));
}

function table(http: string): HttpRouteTable {
  return compiled(http).routesFor(REVIEWS);
}

/** One rule per line of `matches` (each a flow mapping for one match entry), routing to subset r<i>. */
function rules(...matches: string[]): HttpRouteTable {
  return table(matches.map((m, i) => `  - match: [${m}]\n    route: [{destination: {host: reviews, subset: r${i}}}]\n`).join(''));
}

function req(path: string, opts: { method?: string; headers?: Record<string, string>; port?: number; labels?: Record<string, string>; authority?: string } = {}): RouteRequest {
  const headers = opts.headers ?? {};
  return {
    method: opts.method ?? 'GET',
    path,
    authority: opts.authority ?? 'reviews',
    header: (name) => headers[name],
    ...(opts.port !== undefined ? { port: opts.port } : {}),
    ...(opts.labels ? { sourceLabels: opts.labels } : {}),
  };
}

/** The subset the matched rule routes to ("none" when nothing matched). */
function subsetOf(t: HttpRouteTable, r: RouteRequest): string {
  const m = matchRoute(t, r);
  if (!m) return 'none';
  assert.equal(m.action.kind, 'route');
  return m.action.kind === 'route' ? (m.action.destinations[0]!.subset ?? 'no subset') : 'not a route';
}

describe('matchRoute: uri', () => {
  test('exact matches the path without its query string, nothing longer or shorter', () => {
    const t = rules('{uri: {exact: /a}}');
    assert.equal(subsetOf(t, req('/a')), 'r0');
    assert.equal(subsetOf(t, req('/a?x=1')), 'r0');
    for (const p of ['/a/', '/ab', '/', '/A']) assert.equal(subsetOf(t, req(p)), 'none', p);
  });

  test('prefix matches the start of the path (Envoy semantics: /api matches /apix), never the query', () => {
    const t = rules('{uri: {prefix: /api}}');
    for (const p of ['/api', '/api/v1', '/apix', '/api?q']) assert.equal(subsetOf(t, req(p)), 'r0', p);
    for (const p of ['/ap', '/x/api', '/ap?i', '/API']) assert.equal(subsetOf(t, req(p)), 'none', p);
  });

  test('regex must match the whole path (without query); (?i) makes it case-insensitive', () => {
    const t = rules('{uri: {regex: "/v[0-9]+"}}', '{uri: {regex: "(?i)/admin/.*"}}');
    assert.equal(subsetOf(t, req('/v12')), 'r0');
    assert.equal(subsetOf(t, req('/v12?debug=1')), 'r0');
    assert.equal(subsetOf(t, req('/v12/x')), 'none');
    assert.equal(subsetOf(t, req('/x/v12')), 'none');
    assert.equal(subsetOf(t, req('/ADMIN/users')), 'r1');
  });

  test('ignoreUriCase folds exact and prefix but not regex (as Istio)', () => {
    const t = rules('{uri: {exact: /Login}, ignoreUriCase: true}', '{uri: {prefix: /Static/}, ignoreUriCase: true}', '{uri: {regex: "/Up"}, ignoreUriCase: true}');
    assert.equal(subsetOf(t, req('/LOGIN?next=/')), 'r0');
    assert.equal(subsetOf(t, req('/login')), 'r0');
    assert.equal(subsetOf(t, req('/static/app.js')), 'r1');
    assert.equal(subsetOf(t, req('/Up')), 'r2');
    assert.equal(subsetOf(t, req('/up')), 'none');
  });
});

describe('matchRoute: headers, query, method, authority, port, source labels', () => {
  test('headers: exact, prefix, regex and presence ({}); a missing header never matches', () => {
    const t = rules('{headers: {x-user: {exact: jason}}}', '{headers: {x-user: {prefix: adm}}}', '{headers: {x-user: {regex: "u[0-9]+"}}}', '{headers: {x-canary: {}}}');
    assert.equal(subsetOf(t, req('/', { headers: { 'x-user': 'jason' } })), 'r0');
    assert.equal(subsetOf(t, req('/', { headers: { 'x-user': 'jasonx' } })), 'none');
    assert.equal(subsetOf(t, req('/', { headers: { 'x-user': 'admin' } })), 'r1');
    assert.equal(subsetOf(t, req('/', { headers: { 'x-user': 'u42' } })), 'r2');
    assert.equal(subsetOf(t, req('/', { headers: { 'x-user': 'u42x' } })), 'none');
    assert.equal(subsetOf(t, req('/', { headers: { 'x-canary': '' } })), 'r3');
    assert.equal(subsetOf(t, req('/')), 'none');
  });

  test('withoutHeaders: matches when the header is absent or does not match, not when it matches', () => {
    const t = rules('{withoutHeaders: {x-debug: {exact: "1"}}}', '{withoutHeaders: {x-internal: {}}}');
    assert.equal(subsetOf(t, req('/')), 'r0');
    assert.equal(subsetOf(t, req('/', { headers: { 'x-debug': '0' } })), 'r0');
    assert.equal(subsetOf(t, req('/', { headers: { 'x-debug': '1' } })), 'r1');
    assert.equal(subsetOf(t, req('/', { headers: { 'x-debug': '1', 'x-internal': 'yes' } })), 'none');
  });

  test('queryParams: exact, prefix, regex and presence, percent-decoded, first value wins', () => {
    const t = rules('{queryParams: {v: {exact: "a b"}}}', '{queryParams: {v: {prefix: beta}}}', '{queryParams: {id: {regex: "[0-9]+"}}}', '{queryParams: {flag: {}}}');
    assert.equal(subsetOf(t, req('/?v=a%20b')), 'r0');
    assert.equal(subsetOf(t, req('/?x=1&v=beta2')), 'r1');
    assert.equal(subsetOf(t, req('/?v=beta&v=a%20b')), 'r1');
    assert.equal(subsetOf(t, req('/p?id=123')), 'r2');
    assert.equal(subsetOf(t, req('/p?id=12a')), 'none');
    assert.equal(subsetOf(t, req('/p?flag')), 'r3');
    assert.equal(subsetOf(t, req('/p')), 'none');
    assert.equal(subsetOf(t, req('/p?v=%E0%A4%A')), 'none', 'a bad escape is compared raw, not a crash');
    assert.equal(subsetOf(t, req('/p?i%64=42')), 'r2', 'encoded names are decoded');
    assert.equal(subsetOf(t, req('/p?idx=1&id')), 'none', 'a name is matched whole; "id" without "=" is ""');
    assert.equal(subsetOf(t, req('/p?&&id=9&')), 'r2');
  });

  test('method, authority, port and sourceLabels', () => {
    const t = rules('{method: {exact: POST}}', '{authority: {prefix: "reviews.shop"}}', '{port: 9080}', '{sourceLabels: {app: web, version: v2}}');
    assert.equal(subsetOf(t, req('/', { method: 'POST' })), 'r0');
    assert.equal(subsetOf(t, req('/', { authority: 'reviews.shop:9080' })), 'r1');
    assert.equal(subsetOf(t, req('/', { port: 9080 })), 'r2');
    assert.equal(subsetOf(t, req('/', { port: 9081 })), 'none');
    assert.equal(subsetOf(t, req('/', { labels: { app: 'web', version: 'v2', extra: 'x' } })), 'r3');
    assert.equal(subsetOf(t, req('/', { labels: { app: 'web' } })), 'none');
    assert.equal(subsetOf(t, req('/')), 'none', 'no port and no labels given: those conditions fail');
  });

  test('within one match entry every condition must hold; any entry of the list is enough', () => {
    const t = table(`  - match:
    - uri: {prefix: /api}
      method: {exact: GET}
      headers: {x-user: {exact: jason}}
    - uri: {exact: /health}
    route: [{destination: {host: reviews, subset: v2}}]
`);
    assert.equal(matchRoute(t, req('/api/x', { headers: { 'x-user': 'jason' } }))?.matchIndex, 0);
    assert.equal(matchRoute(t, req('/api/x', { method: 'PUT', headers: { 'x-user': 'jason' } })), undefined);
    assert.equal(matchRoute(t, req('/api/x')), undefined);
    assert.equal(matchRoute(t, req('/health', { method: 'DELETE' }))?.matchIndex, 1);
  });

  test('the first rule that matches wins; a rule without match matches everything', () => {
    const t = table(`  - match: [{uri: {prefix: /api/v2}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - match: [{uri: {prefix: /api}}]
    route: [{destination: {host: reviews, subset: v1}}]
  - route: [{destination: {host: reviews, subset: catchall}}]
  - match: [{uri: {prefix: /never}}]
    route: [{destination: {host: reviews, subset: unreachable}}]
`);
    assert.equal(subsetOf(t, req('/api/v2/x')), 'v2');
    assert.equal(subsetOf(t, req('/api/v1/x')), 'v1');
    assert.equal(subsetOf(t, req('/never')), 'catchall');
    assert.equal(matchRoute(t, req('/api/v2'))!.ruleIndex, 0);
    assert.equal(matchRoute(t, req('/x'))!.ruleIndex, 2);
    assert.equal(matchRoute(t, req('/x'))!.matchIndex, -1);
  });
});

describe('matchRoute: per-request cost', () => {
  test('returns the precompiled (frozen, shared) route object and builds no RegExp per call', () => {
    const t = rules('{uri: {regex: "/v[0-9]+"}, queryParams: {id: {regex: "[0-9]+"}}, headers: {x-a: {regex: "a.*"}}}');
    const Original = RegExp;
    let constructed = 0;
    globalThis.RegExp = new Proxy(Original, { construct(target, args) { constructed++; return new target(...(args as [string])); }, apply(target, _this, args) { constructed++; return target(...(args as [string])); } });
    let first: MatchedRoute | undefined;
    let second: MatchedRoute | undefined;
    try {
      first = matchRoute(t, req('/v1?id=7', { headers: { 'x-a': 'abc' } }));
      second = matchRoute(t, req('/v2?id=8', { headers: { 'x-a': 'a' } }));
    } finally {
      globalThis.RegExp = Original;
    }
    assert.equal(constructed, 0);
    assert.ok(first && first === second);
    assert.ok(Object.isFrozen(first) && Object.isFrozen(first.action) && Object.isFrozen(t.entries[0]!.match));
  });
});

describe('compiled rules', () => {
  test('a service without a VirtualService gets one default rule: 100% to itself, Istio default retries, no timeout', () => {
    const c = compiled('  - route: [{destination: {host: reviews}}]\n');
    const t = c.routesFor({ name: 'ratings', namespace: 'shop' });
    assert.equal(t.source, undefined);
    const m = matchRoute(t, req('/anything?x=1', { method: 'DELETE' }))!;
    assert.equal(m.source, 'default');
    assert.deepEqual(m.action, { kind: 'route', destinations: [{ service: { name: 'ratings', namespace: 'shop' }, weight: 100, headers: m.headers }] });
    assert.equal(m.timeoutMs, 0);
    assert.equal(m.retries, DEFAULT_RETRY_POLICY);
    assert.deepEqual([...DEFAULT_RETRY_POLICY.retryOn], ['connect-failure', 'refused-stream', 'unavailable', 'cancelled', 'retriable-status-codes']);
    assert.deepEqual([...DEFAULT_RETRY_POLICY.retriableStatusCodes], [503]);
    assert.equal(DEFAULT_RETRY_POLICY.attempts, 2);
    assert.equal(c.routesFor({ name: 'ratings', namespace: 'shop' }), t, 'the default table is made once');
    const tcpOnly = compilePolicy(parsePolicyText('apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: db}\nspec:\n  hosts: [db]\n  tcp: [{route: [{destination: {host: db-v2}}]}]\n'));
    assert.equal(tcpOnly.routesFor({ name: 'db', namespace: 'default' }).source, undefined, 'a VirtualService without http rules leaves HTTP on the default');
  });

  test('every spelling of a host in the VirtualService finds the same table; destinations resolve in its namespace', () => {
    const c = compilePolicy(parsePolicyText(`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews, reviews-alias.shop.svc.cluster.local]
  http:
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 50}
    - {destination: {host: ratings.prod, port: {number: 9080}}, weight: 50}
`));
    const t = c.routesFor({ name: 'reviews', namespace: 'shop' });
    assert.equal(c.routesFor({ name: 'reviews-alias', namespace: 'shop' }), t);
    assert.equal(c.routesFor(c.resolveHost('reviews.shop.svc', 'default')), t);
    assert.equal(c.routesFor(c.resolveHost('reviews:9080', 'shop')), t);
    assert.notEqual(c.routesFor({ name: 'reviews', namespace: 'default' }), t);
    const m = matchRoute(t, req('/'))!;
    assert.ok(m.action.kind === 'route');
    assert.deepEqual(m.action.destinations.map((d) => [d.service, d.subset, d.port, d.weight]), [
      [{ name: 'reviews', namespace: 'shop' }, 'v1', undefined, 50],
      [{ name: 'ratings', namespace: 'prod' }, undefined, 9080, 50],
    ]);
  });

  test('timeout, retries, fault, mirror and header operations are precomputed in the proxy\'s units', () => {
    const t = table(`  - route:
    - destination: {host: reviews}
      headers:
        request: {set: {X-Dest: a}}
    timeout: 1.5s
    retries: {attempts: 4, perTryTimeout: 250ms, retryOn: "gateway-error,503,504"}
    fault:
      delay: {percentage: {value: 12.5}, fixedDelay: 2s}
      abort: {percentage: {value: 1}, grpcStatus: UNAVAILABLE}
    mirror: {host: reviews-shadow.test, subset: v1}
    headers:
      request: {set: {X-Env: prod}, add: {X-Trace: "1"}, remove: [X-Debug]}
      response: {set: {Cache-Control: no-store}}
`);
    const m = matchRoute(t, req('/'))!;
    assert.equal(m.timeoutMs, 1500);
    assert.equal(m.retries.attempts, 4);
    assert.equal(m.retries.perTryTimeoutMs, 250);
    assert.deepEqual([...m.retries.retryOn].sort(), ['gateway-error', 'retriable-status-codes']);
    assert.deepEqual([...m.retries.retriableStatusCodes], [503, 504]);
    assert.deepEqual(m.fault, { delay: { fraction: 0.125, ms: 2000 }, abort: { fraction: 0.01, grpcStatus: 14 } });
    assert.deepEqual(m.mirror, { service: { name: 'reviews-shadow', namespace: 'test' }, subset: 'v1', fraction: 1 });
    assert.deepEqual(m.headers, {
      request: { set: [['x-env', 'prod']], add: [['x-trace', '1']], remove: ['x-debug'] },
      response: { set: [['cache-control', 'no-store']], add: [], remove: [] },
    });
    assert.ok(m.action.kind === 'route');
    assert.deepEqual(m.action.destinations[0]!.headers.request.set, [['x-dest', 'a']]);
  });

  test('retries: attempts 0 disables, no retryOn keeps Istio\'s conditions, conditions without codes have none', () => {
    const t = table(`  - match: [{uri: {prefix: /a}}]
    route: [{destination: {host: reviews}}]
    retries: {attempts: 0}
  - match: [{uri: {prefix: /b}}]
    route: [{destination: {host: reviews}}]
    retries: {attempts: 5}
  - match: [{uri: {prefix: /c}}]
    route: [{destination: {host: reviews}}]
    retries: {attempts: 1, retryOn: "5xx,reset"}
`);
    assert.equal(matchRoute(t, req('/a'))!.retries.attempts, 0);
    const b = matchRoute(t, req('/b'))!.retries;
    assert.deepEqual([b.attempts, [...b.retryOn], [...b.retriableStatusCodes]], [5, [...DEFAULT_RETRY_POLICY.retryOn], [503]]);
    const c = matchRoute(t, req('/c'))!.retries;
    assert.deepEqual([[...c.retryOn], c.retriableStatusCodes.size], [['5xx', 'reset'], 0]);
  });

  test('redirect and directResponse actions', () => {
    const t = table(`  - match: [{uri: {prefix: /old}}]
    redirect: {uri: /new, redirectCode: 302}
  - match: [{uri: {prefix: /moved}}]
    redirect: {authority: "new.example.com:8443"}
  - match: [{uri: {exact: /teapot}}]
    directResponse: {status: 418, body: {string: "I'm a teapot"}}
`);
    const old = matchRoute(t, req('/old/page?x=1'))!;
    assert.deepEqual(old.action, { kind: 'redirect', uri: '/new', code: 302 });
    assert.ok(old.action.kind === 'redirect');
    assert.equal(redirectLocation(old.action, 'http', 'reviews', '/old/page?x=1'), 'http://reviews/new?x=1');
    const moved = matchRoute(t, req('/moved/a'))!;
    assert.ok(moved.action.kind === 'redirect');
    assert.equal(moved.action.code, 301);
    assert.equal(redirectLocation(moved.action, 'https', 'reviews', '/moved/a'), 'https://new.example.com:8443/moved/a');
    assert.deepEqual(matchRoute(t, req('/teapot'))!.action, { kind: 'directResponse', status: 418, body: "I'm a teapot" });
  });

  test('rewrite replaces the matched prefix, the whole path for exact/regex, and "/" without a uri match (as Istio); query kept', () => {
    const t = table(`  - match: [{uri: {prefix: /api/v1/}}, {uri: {exact: /old}}, {uri: {regex: "/r[0-9]"}}, {headers: {x-rw: {}}}]
    rewrite: {uri: /v2/, authority: backend}
    route: [{destination: {host: reviews}}]
`);
    const at = (path: string, headers: Record<string, string> = {}): string => {
      const m = matchRoute(t, req(path, { headers }))!;
      assert.equal(m.rewrite!.authority, 'backend');
      return rewritePath(m.rewrite!, path);
    };
    assert.equal(at('/api/v1/users?id=1'), '/v2/users?id=1');
    assert.equal(at('/old?x=1'), '/v2/?x=1');
    assert.equal(at('/r7'), '/v2/');
    assert.equal(at('/foo', { 'x-rw': '1' }), '/v2/foo');
    assert.equal(rewritePath({ authority: 'x', replaceLength: 3 }, '/abc'), '/abc', 'no uri: path unchanged');
  });
});

describe('TCP and TLS routes', () => {
  test('tls rules need a matching SNI; tcp rules match port and source labels; default when none', () => {
    const c = compilePolicy(parsePolicyText(`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db}
spec:
  hosts: [db]
  tls:
  - match: [{sniHosts: [db.example.com], port: 443}]
    route: [{destination: {host: db-tls}}]
  tcp:
  - match: [{port: 5432, sourceLabels: {app: api}}]
    route:
    - {destination: {host: db, subset: primary}, weight: 80}
    - {destination: {host: db, subset: replica}, weight: 20}
  - route: [{destination: {host: db, subset: replica}}]
`));
    const t = c.tcpRoutesFor({ name: 'db', namespace: 'default' });
    assert.deepEqual(matchTcpRoute(t, { port: 443, sni: 'DB.example.com' })!.destinations.map((d) => d.service.name), ['db-tls']);
    const api = matchTcpRoute(t, { port: 5432, sourceLabels: { app: 'api' } })!;
    assert.deepEqual([api.section, api.ruleIndex, api.destinations.map((d) => [d.subset, d.weight])], ['tcp', 0, [['primary', 80], ['replica', 20]]]);
    assert.deepEqual(matchTcpRoute(t, { port: 443 })!.destinations.map((d) => d.subset), ['replica'], 'no SNI: tls rules are skipped');
    const other = matchTcpRoute(c.tcpRoutesFor({ name: 'cache', namespace: 'default' }), {})!;
    assert.deepEqual([other.section, other.destinations[0]!.service, other.destinations[0]!.weight], ['default', { name: 'cache', namespace: 'default' }, 100]);
  });
});

describe('pickWeighted', () => {
  const dests = [{ id: 'a', weight: 70 }, { id: 'none', weight: 0 }, { id: 'b', weight: 20 }, { id: 'c', weight: 10 }];

  test('a uniform deterministic sequence lands on each destination in proportion to its weight', () => {
    const counts = new Map<string, number>();
    for (let i = 0; i < 1000; i++) {
      const d = pickWeighted(dests, i / 1000)!;
      counts.set(d.id, (counts.get(d.id) ?? 0) + 1);
    }
    assert.deepEqual(Object.fromEntries(counts), { a: 700, b: 200, c: 100 });
  });

  test('boundaries: 0 picks the first weighted, values just under a boundary stay, at the boundary move on, >= 1 picks the last', () => {
    assert.equal(pickWeighted(dests, 0)!.id, 'a');
    assert.equal(pickWeighted(dests, 0.6999)!.id, 'a');
    assert.equal(pickWeighted(dests, 0.7)!.id, 'b');
    assert.equal(pickWeighted(dests, 0.8999)!.id, 'b');
    assert.equal(pickWeighted(dests, 0.9)!.id, 'c');
    assert.equal(pickWeighted(dests, 0.99999)!.id, 'c');
    assert.equal(pickWeighted(dests, 1)!.id, 'c');
  });

  test('weights need not add up to 100; zero weights are never picked', () => {
    assert.equal(pickWeighted([{ weight: 1, id: 'x' }, { weight: 3, id: 'y' }], 0.3)!.id, 'y');
    assert.equal(pickWeighted([{ weight: 0 }], 0.5), undefined);
    assert.equal(pickWeighted([], 0.5), undefined);
    assert.equal(pickWeighted([{ weight: 0, id: 'z' }, { weight: 5, id: 'w' }], 0)!.id, 'w');
  });

  test('with compiled route destinations', () => {
    const m = matchRoute(table('  - route:\n    - {destination: {host: reviews, subset: v1}, weight: 90}\n    - {destination: {host: reviews, subset: v2}, weight: 10}\n'), req('/'))!;
    assert.ok(m.action.kind === 'route');
    let v2 = 0;
    for (let i = 0; i < 100; i++) if (pickWeighted(m.action.destinations, (i + 0.5) / 100)!.subset === 'v2') v2++;
    assert.equal(v2, 10);
  });
});
