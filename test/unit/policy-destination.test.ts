// Unit tests for src/policy destinations: DestinationRule subsets and traffic-policy merging, documented defaults, ServiceEntries.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { compilePolicy, parsePolicyText, TRAFFIC_POLICY_DEFAULTS, type CompiledPolicy } from '../../src/policy';

const REVIEWS = { name: 'reviews', namespace: 'default' };

function compile(text: string): CompiledPolicy {
  return compilePolicy(parsePolicyText(text, 'dr.yaml'));
}

const DR = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews.default.svc.cluster.local
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
    connectionPool:
      tcp: {maxConnections: 100}
      http: {http1MaxPendingRequests: 10}
    outlierDetection: {consecutive5xxErrors: 3}
    portLevelSettings:
    - port: {number: 9443}
      tls: {mode: SIMPLE}
      loadBalancer: {simple: RANDOM}
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      connectionPool:
        http: {http2MaxRequests: 50}
      loadBalancer: {consistentHash: {httpHeaderName: X-User}}
      portLevelSettings:
      - port: {number: 9443}
        outlierDetection: {interval: 1s}
`;

describe('destinationFor', () => {
  test('subsets keep their labels; the service-level policy has the DR settings with defaults filled', () => {
    const d = compile(DR).destinationFor(REVIEWS);
    assert.equal(d.source, 'DestinationRule reviews.default');
    assert.deepEqual([...d.subsets.keys()], ['v1', 'v2']);
    assert.deepEqual(d.subsets.get('v2')!.labels, { version: 'v2' });
    assert.deepEqual(d.ports, [9443]);
    assert.deepEqual(d.trafficPolicy, {
      loadBalancer: { kind: 'ROUND_ROBIN', warmupMs: 0 },
      connectionPool: { ...TRAFFIC_POLICY_DEFAULTS.connectionPool, maxConnections: 100, http1MaxPendingRequests: 10 },
      outlierDetection: { ...TRAFFIC_POLICY_DEFAULTS.outlierDetection, consecutive5xxErrors: 3 },
      tlsMode: 'ISTIO_MUTUAL',
    });
  });

  test('a subset\'s trafficPolicy replaces whole sections of the DR\'s (Istio merge); sections it leaves out are inherited', () => {
    const d = compile(DR).destinationFor(REVIEWS);
    const v2 = d.subsets.get('v2')!.trafficPolicy;
    assert.deepEqual(v2.loadBalancer, { kind: 'CONSISTENT_HASH', hashKey: { httpHeaderName: 'x-user' }, warmupMs: 0 });
    assert.deepEqual(v2.connectionPool, { ...TRAFFIC_POLICY_DEFAULTS.connectionPool, http2MaxRequests: 50 }, 'the subset connectionPool replaces tcp.maxConnections too');
    assert.deepEqual(v2.outlierDetection, { ...TRAFFIC_POLICY_DEFAULTS.outlierDetection, consecutive5xxErrors: 3 }, 'inherited');
    assert.equal(d.policyFor('v2'), v2);
    assert.equal(d.policyFor('v1'), d.trafficPolicy, 'a subset without trafficPolicy has the service policy');
    assert.equal(d.policyFor('v9'), d.trafficPolicy, 'an unknown subset gets the service policy');
    assert.equal(d.policyFor(), d.trafficPolicy);
  });

  test('port-level settings apply in Istio order: DR, DR port, subset, subset port', () => {
    const d = compile(DR).destinationFor(REVIEWS);
    const port = d.policyFor(undefined, 9443);
    assert.deepEqual([port.tlsMode, port.loadBalancer.kind, port.connectionPool.maxConnections], ['SIMPLE', 'RANDOM', 100]);
    assert.equal(d.policyFor(undefined, 80), d.trafficPolicy, 'a port without settings gets the service policy');
    const v1Port = d.policyFor('v1', 9443);
    assert.deepEqual([v1Port.tlsMode, v1Port.loadBalancer.kind], ['SIMPLE', 'RANDOM']);
    const v2Port = d.policyFor('v2', 9443);
    assert.equal(v2Port.tlsMode, 'SIMPLE', 'from the DR port settings');
    assert.equal(v2Port.loadBalancer.kind, 'CONSISTENT_HASH', 'the subset overrides the DR port settings');
    assert.equal(v2Port.connectionPool.http2MaxRequests, 50);
    assert.deepEqual(v2Port.outlierDetection, { ...TRAFFIC_POLICY_DEFAULTS.outlierDetection, intervalMs: 1000 }, 'the subset port section replaces the whole section');
  });

  test('without a DestinationRule: the documented defaults, no subsets, outlier detection off', () => {
    const d = compile(DR).destinationFor({ name: 'ratings', namespace: 'default' });
    assert.equal(d.source, undefined);
    assert.equal(d.subsets.size, 0);
    assert.deepEqual(d.trafficPolicy, {
      loadBalancer: { kind: 'LEAST_REQUEST', warmupMs: 0 },
      connectionPool: {
        maxConnections: 4_294_967_295,
        connectTimeoutMs: 10_000,
        http1MaxPendingRequests: 4_294_967_295,
        http2MaxRequests: 4_294_967_295,
        maxRequestsPerConnection: 0,
        maxRetries: 4_294_967_295,
        idleTimeoutMs: 3_600_000,
      },
      outlierDetection: undefined,
      tlsMode: 'ISTIO_MUTUAL',
    });
    assert.equal(d.policyFor('v1', 9080), d.trafficPolicy);
  });

  test('TRAFFIC_POLICY_DEFAULTS match the @default values documented on the policy types', () => {
    const text = readFileSync(join(__dirname, '../../../src/policy/destination-policy.ts'), 'utf8');
    const docs = new Map<string, string>();
    const re = /@default ([^*]+?)\s*\*\/\s*readonly (\w+)/g;
    for (let m = re.exec(text); m; m = re.exec(text)) docs.set(m[2]!, m[1]!);
    const d = TRAFFIC_POLICY_DEFAULTS;
    for (const [k, v] of Object.entries({ ...d.connectionPool, ...d.outlierDetection })) assert.equal(docs.get(k), String(v), k);
    assert.equal(docs.get('kind'), `"${d.loadBalancer.kind}"`);
    assert.equal(docs.get('warmupMs'), String(d.loadBalancer.warmupMs));
    assert.equal(docs.get('tlsMode'), `"${d.tlsMode}"`);
    assert.equal(docs.size, 15);
  });

  test('an outlierDetection section fills the fields it leaves out', () => {
    const d = compile(DR.replace('outlierDetection: {consecutive5xxErrors: 3}', 'outlierDetection: {baseEjectionTime: 1m, maxEjectionPercent: 100}')).destinationFor(REVIEWS);
    assert.deepEqual(d.trafficPolicy.outlierDetection, { consecutive5xxErrors: 5, consecutiveGatewayErrors: 0, intervalMs: 10_000, baseEjectionTimeMs: 60_000, maxEjectionPercent: 100 });
  });

  test('destination policies are frozen', () => {
    const d = compile(DR).destinationFor(REVIEWS);
    assert.ok(Object.isFrozen(d) && Object.isFrozen(d.trafficPolicy.connectionPool) && Object.isFrozen(d.subsets.get('v2')!.trafficPolicy) && Object.isFrozen(d.policyFor('v2', 9443)));
  });
});

describe('ServiceEntries and external hosts', () => {
  const SE = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: httpbin, namespace: egress}
spec:
  hosts: [httpbin.org, api.example.com]
  ports: [{number: 443, name: https, protocol: TLS}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: vm-db}
spec:
  hosts: [legacy-db]
  location: MESH_INTERNAL
  ports: [{number: 5432, name: pg, protocol: TCP}]
  resolution: STATIC
  endpoints: [{address: 10.1.2.3, labels: {version: v1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: httpbin}
spec:
  hosts: [httpbin.org]
  http:
  - timeout: 3s
    route: [{destination: {host: httpbin.org}}]
`;

  test('a two-label ServiceEntry host is external, not "name.namespace"; external hosts default to TLS mode DISABLE', () => {
    const c = compile(SE);
    const httpbin = c.resolveHost('httpbin.org', 'default');
    assert.deepEqual(httpbin, { name: 'httpbin.org', namespace: '' });
    assert.equal(c.serviceEntryFor(httpbin)!.metadata.name, 'httpbin');
    assert.equal(c.serviceEntryFor(c.resolveHost('api.example.com', 'x'))!.metadata.name, 'httpbin');
    assert.equal(c.destinationFor(httpbin).trafficPolicy.tlsMode, 'DISABLE');
    const m = c.routesFor(httpbin).entries[0]!.route;
    assert.equal(m.timeoutMs, 3000);
    assert.ok(m.action.kind === 'route');
    assert.deepEqual(m.action.destinations[0]!.service, httpbin);
    assert.deepEqual(c.resolveHost('httpbin.test', 'default'), { name: 'httpbin', namespace: 'test' }, 'undeclared two-label hosts stay mesh names');
  });

  test('a MESH_INTERNAL ServiceEntry is a mesh service (ISTIO_MUTUAL), found under its namespace', () => {
    const c = compile(SE);
    const db = { name: 'legacy-db', namespace: 'default' };
    assert.deepEqual(c.serviceEntryFor(db)!.spec.endpoints, [{ address: '10.1.2.3', ports: {}, labels: { version: 'v1' } }]);
    assert.equal(c.destinationFor(db).trafficPolicy.tlsMode, 'ISTIO_MUTUAL');
    assert.equal(c.serviceEntryFor({ name: 'legacy-db', namespace: 'egress' }), undefined);
  });

  test('services lists every service the policy names; documents are kept in order', () => {
    const c = compile(SE);
    assert.deepEqual(c.services, [
      { name: 'api.example.com', namespace: '' },
      { name: 'httpbin.org', namespace: '' },
      { name: 'legacy-db', namespace: 'default' },
    ]);
    assert.deepEqual(c.documents.map((d) => d.metadata.name), ['httpbin', 'vm-db', 'httpbin']);
    assert.ok(Object.isFrozen(c));
  });
});

describe('warnings', () => {
  test('routes to subsets that no DestinationRule defines are warned about, not rejected', () => {
    const c = compile(`${DR}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 50}
    - {destination: {host: reviews, subset: v3}, weight: 50}
    mirror: {host: ratings, subset: shadow}
`);
    assert.deepEqual(c.warnings, [
      'VirtualService reviews.default routes to subset v3 of reviews.default, which DestinationRule reviews.default does not define (it defines: v1, v2)',
      'VirtualService reviews.default (mirror) routes to subset shadow of ratings.default, but no DestinationRule defines subsets for it',
    ]);
    assert.deepEqual(compile(DR).warnings, []);
  });
});
