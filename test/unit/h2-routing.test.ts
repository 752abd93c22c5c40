// The outbound router's chain for HTTP/2 streams (H2_ROUTING), retry conditions with the gRPC ones, the gRPC/HTTP status maps and h2 header edits, without sockets.

import assert from 'node:assert/strict';
import type { IncomingHttpHeaders } from 'node:http2';
import { describe, it } from 'node:test';
import { compilePolicy, parsePolicyText, type CompiledPolicy, type ServiceRef } from '../../src/policy';
import { Cluster } from '../../src/proxy/cluster';
import { grpcStatusForHttp } from '../../src/proxy/http2/grpc-status';
import { applyHeadEdits } from '../../src/proxy/http2/h2-headers';
import type { H2Answer } from '../../src/proxy/http2/h2-local-answer';
import { H2_ROUTING, H2Request } from '../../src/proxy/http2/h2-routing';
import type { H2SessionPool } from '../../src/proxy/http2/h2-session-pool';
import { OutboundHttpRouter } from '../../src/proxy/outbound-http-router';
import { outlierOutcome, retriable, type Decision, type ExchangeOutcome } from '../../src/proxy/route-decision';

const API: ServiceRef = { name: 'api', namespace: 'default' };
const out = (o: Partial<ExchangeOutcome>): ExchangeOutcome => ({ status: 0, connectFailure: false, reset: false, timeout: false, ...o });

describe('retry conditions', () => {
  const on = (text: string): Set<string> => new Set(text.split(','));
  const none = new Set<number>();

  it('match the gRPC conditions against grpc-status, and nothing else does', () => {
    const cases: [string, number][] = [['cancelled', 1], ['deadline-exceeded', 4], ['resource-exhausted', 8], ['internal', 13], ['unavailable', 14]];
    for (const [name, code] of cases) {
      assert.ok(retriable(on(name), none, out({ status: 200, grpcStatus: code })), `${name} retries grpc-status ${code}`);
      assert.ok(!retriable(on(name), none, out({ status: 200, grpcStatus: code === 14 ? 13 : 14 })), `${name} does not retry another status`);
      assert.ok(!retriable(on('5xx,gateway-error,reset,connect-failure,retriable-status-codes'), new Set([503]), out({ status: 200, grpcStatus: code })), 'HTTP conditions look at the HTTP status, 200 here');
    }
    assert.ok(!retriable(on('unavailable'), none, out({ status: 200, grpcStatus: 0 })));
    assert.ok(!retriable(on('unavailable'), none, out({ status: 503 })), 'a gRPC condition needs a grpc-status');
  });

  it('retry a refused stream with refused-stream (and reset), and keep the HTTP/1.1 conditions as they were', () => {
    assert.ok(retriable(on('refused-stream'), none, out({ reset: true, refused: true })));
    assert.ok(!retriable(on('refused-stream'), none, out({ reset: true })), 'another reset is not a refusal');
    assert.ok(retriable(on('reset'), none, out({ reset: true, refused: true })));
    assert.ok(retriable(on('connect-failure'), none, out({ connectFailure: true })));
    assert.ok(!retriable(on('connect-failure'), none, out({ reset: true })));
    assert.ok(retriable(on('5xx'), none, out({ status: 502 })));
    assert.ok(retriable(on('gateway-error'), none, out({ timeout: true })));
    assert.ok(retriable(on('retriable-status-codes'), new Set([418]), out({ status: 418 })));
    assert.ok(!retriable(on('retriable-4xx'), none, out({ status: 404 })));
  });
});

describe('gRPC and HTTP statuses', () => {
  it('map an HTTP status to the gRPC status a caller sees (grpc http-grpc-status-mapping.md)', () => {
    assert.deepEqual([400, 401, 403, 404, 429, 502, 503, 504, 500, 418].map(grpcStatusForHttp), [13, 16, 7, 12, 14, 14, 14, 14, 2, 2]);
  });

  it('count a gRPC call for outlier detection by its grpc-status', () => {
    assert.equal(outlierOutcome(out({ status: 200, grpcStatus: 14 })), 503);
    assert.equal(outlierOutcome(out({ status: 200, grpcStatus: 0 })), 200);
    assert.equal(outlierOutcome(out({ status: 503, grpcStatus: 0 })), 503, 'an HTTP error status stands as it is');
    assert.equal(outlierOutcome(out({ reset: true })), 'reset');
    assert.equal(outlierOutcome(out({})), 'cancelled');
  });
});

describe('h2 header edits', () => {
  it('remove, set and add fields; a request gets :path from a rewrite and :authority from a set host', () => {
    const h = applyHeadEdits({ ':path': '/a', ':authority': 'api', 'x-secret': 's', 'x-keep': '1', 'x-list': 'a' }, { remove: new Set(['x-secret']), set: [['x-new', 'n'], ['host', 'other:80']], add: [['x-list', 'b'], ['x-more', 'm']], target: '/b' }, true);
    assert.deepEqual({ ...h }, { ':path': '/b', ':authority': 'other:80', 'x-keep': '1', 'x-list': ['a', 'b'], 'x-new': 'n', 'x-more': 'm' });
    const r = applyHeadEdits({ ':status': 200, host: 'kept' }, { set: [['host', 'x']], target: '/ignored' }, false);
    assert.deepEqual({ ...r }, { ':status': 200, host: 'x' }, 'a response has no :path or :authority');
  });

  it('read a stream as route matching sees it', () => {
    const r = new H2Request({ ':method': 'POST', ':path': '/svc/M?x=1', ':authority': 'api:80', 'x-a': ['1', '2'] }, 9001, { app: 'web' }, '127.0.0.1');
    assert.deepEqual([r.method, r.path, r.authority, r.header('x-a'), r.header('x-b'), r.port], ['POST', '/svc/M?x=1', 'api:80', '1', undefined, 9001]);
    assert.equal(new H2Request({ host: 'h' }, 0, {}, '').authority, 'h', 'host stands in for a missing :authority');
  });
});

describe('the router chain on HTTP/2 streams', () => {
  const POLICY = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: api }
spec:
  host: api
  subsets: [{ name: v2, labels: { version: v2 } }]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: api }
spec:
  hosts: [api]
  http:
    - match: [{ headers: { x-canary: { exact: "yes" } } }]
      route: [{ destination: { host: api, subset: v2 } }]
    - match: [{ uri: { prefix: /grpc-abort } }]
      fault: { abort: { percentage: { value: 100 }, grpcStatus: RESOURCE_EXHAUSTED } }
      route: [{ destination: { host: api } }]
    - match: [{ uri: { prefix: /http-abort } }]
      fault: { abort: { percentage: { value: 100 }, httpStatus: 503 } }
      route: [{ destination: { host: api } }]
    - match: [{ uri: { prefix: /old } }]
      redirect: { uri: /new }
    - match: [{ port: 9001, uri: { prefix: /svc } }]
      timeout: 2s
      retries: { attempts: 4, perTryTimeout: 1s, retryOn: "unavailable,refused-stream" }
      route: [{ destination: { host: api } }]
`;

  function router(policyText: string | undefined): { route: (h: IncomingHttpHeaders) => Decision<H2Answer, H2SessionPool>; cluster: Cluster } {
    const cluster = new Cluster('api.default');
    cluster.apply({ type: 'reset', endpoints: [{ address: '10.0.0.1', port: 1, weight: 1, labels: { version: 'v1' } }, { address: '10.0.0.2', port: 1, weight: 1, labels: { version: 'v2' } }] });
    cluster.setSubsets({ v2: { version: 'v2' } });
    const policy: CompiledPolicy = compilePolicy(policyText ? parsePolicyText(policyText) : []);
    const pool = {} as H2SessionPool;
    const r = new OutboundHttpRouter(API, () => policy, { cluster: () => cluster, pool: () => pool }, H2_ROUTING, () => 0, 9001, {});
    return { route: (h) => r.route(h) as Decision<H2Answer, H2SessionPool>, cluster };
  }
  const stream = (path: string, extra: IncomingHttpHeaders = {}): IncomingHttpHeaders => ({ ':method': 'POST', ':path': path, ':authority': 'api', 'content-type': 'application/grpc', ...extra });
  const answer = (d: Decision<H2Answer, H2SessionPool>): H2Answer => {
    assert.equal(d.kind, 'respond');
    return (d as { response: H2Answer }).response;
  };

  it('answers no route with 404 / UNIMPLEMENTED, flag NR', () => {
    assert.deepEqual(answer(router(POLICY).route(stream('/elsewhere'))), { status: 404, grpcStatus: 12, message: 'no route matched the request', flag: 'NR' });
  });

  it('answers fault aborts: a grpcStatus the gRPC way to every caller, an httpStatus mapped for gRPC callers', () => {
    const g = answer(router(POLICY).route(stream('/grpc-abort')));
    assert.deepEqual([g.grpcStatus, g.grpcOnly, g.flag], [8, true, 'FI']);
    const h = answer(router(POLICY).route(stream('/http-abort')));
    assert.deepEqual([h.status, h.grpcStatus, h.grpcOnly, h.flag], [503, 14, undefined, 'FI']);
  });

  it('answers a redirect as plain HTTP with a Location built from :authority and :path', () => {
    const a = answer(router(POLICY).route(stream('/old?q=1')));
    assert.deepEqual([a.status, a.grpcStatus, a.headers], [301, undefined, [['location', 'http://api/new?q=1']]]);
  });

  it('picks the subset a header match names, and leaves the other endpoints alone', () => {
    const { route, cluster } = router(POLICY);
    for (let i = 0; i < 4; i++) {
      const d = route(stream('/svc/M', { 'x-canary': 'yes' }));
      assert.equal(d.kind, 'forward');
      if (d.kind === 'forward') {
        assert.equal(d.target.endpoint.address, '10.0.0.2');
        d.target.done?.(out({ status: 200 }));
      }
    }
    assert.equal(cluster.activeRequests, 0, 'every lease went back');
  });

  it('gives a forwarded stream the route timeout and a retry plan that takes the breaker retry slot', () => {
    const { route, cluster } = router(POLICY);
    const d = route(stream('/svc/M'));
    assert.equal(d.kind, 'forward');
    if (d.kind !== 'forward') return;
    assert.equal(d.timeoutMs, 2000);
    const plan = d.retry!;
    assert.deepEqual([plan.attempts, plan.perTryTimeoutMs], [4, 1000]);
    assert.ok(plan.retriable(out({ status: 200, grpcStatus: 14 })));
    assert.ok(!plan.retriable(out({ status: 200, grpcStatus: 13 })));
    assert.ok(plan.admit());
    assert.equal(cluster.circuitBreaker.retries.snapshot().active, 1);
    d.target.done?.(out({ status: 200, grpcStatus: 14 }));
    const next = plan.next();
    assert.ok('endpoint' in next, 'a retry picks an endpoint again');
    next.done?.(out({ status: 200, grpcStatus: 0 }));
    assert.equal(cluster.circuitBreaker.retries.snapshot().active, 0, 'the retry gave its slot back');
    assert.equal(cluster.activeRequests, 0);
  });

  it("applies Istio's default retry policy without a VirtualService: 2 attempts on unavailable, cancelled, refused-stream, connect-failure, 503", () => {
    const d = router(undefined).route(stream('/anything'));
    assert.equal(d.kind, 'forward');
    if (d.kind !== 'forward') return;
    const plan = d.retry!;
    assert.equal(plan.attempts, 2);
    assert.ok(plan.retriable(out({ status: 200, grpcStatus: 14 })));
    assert.ok(plan.retriable(out({ status: 200, grpcStatus: 1 })));
    assert.ok(plan.retriable(out({ reset: true, refused: true })));
    assert.ok(plan.retriable(out({ connectFailure: true })));
    assert.ok(plan.retriable(out({ status: 503 })));
    assert.ok(!plan.retriable(out({ status: 200, grpcStatus: 4 })), 'deadline-exceeded is not in the default');
    d.target.done?.(out({ status: 200 }));
  });
});
