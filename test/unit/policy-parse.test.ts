// Unit tests for src/policy parsing: every accepted field of every kind lands in the typed model, envelopes, documents.

import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseIstioDuration, parsePolicyText, readPolicyFile, type PolicyDocument } from '../../src/policy';

const tmp = mkdtempSync(join(tmpdir(), 'mesh-policy-parse-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

function only(text: string): PolicyDocument {
  const docs = parsePolicyText(text, 'test.yaml');
  assert.equal(docs.length, 1);
  return docs[0]!;
}

const FULL_VS = `
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: shop
  labels: {app: reviews}
  annotations: {owner: team-a}
spec:
  hosts: [reviews, Reviews-Alias]
  http:
  - name: jason
    match:
    - name: m0
      uri: {prefix: /api}
      method: {exact: GET}
      authority: {regex: "rev.*"}
      headers:
        x-user: {exact: jason}
        x-any: {}
      withoutHeaders:
        x-debug: {prefix: "1"}
      queryParams:
        v: {regex: "[0-9]+"}
      port: 9080
      sourceLabels: {app: web, version: 2}
      ignoreUriCase: true
    - uri: {exact: /health}
    route:
    - destination: {host: reviews, subset: v2, port: {number: 9080}}
      weight: 75
      headers:
        request: {set: {x-a: "1"}, add: {x-b: 2}, remove: [x-c]}
        response: {remove: [server]}
    - destination: {host: reviews.shop, subset: v1}
      weight: 25
    rewrite: {uri: /v2, authority: "reviews-v2:9080"}
    timeout: 0.5s
    retries: {attempts: 3, perTryTimeout: 100ms, retryOn: "5xx,connect-failure, 503"}
    fault:
      delay: {percentage: {value: 0.5}, fixedDelay: 1m}
      abort: {percentage: {value: 10}, grpcStatus: UNAVAILABLE}
    mirror: {host: reviews-shadow, subset: v9, port: {number: 81}}
    mirrorPercentage: {value: 12.5}
    headers:
      request: {set: {x-route: jason}}
  - match: [{uri: {prefix: /old}}]
    redirect: {uri: /new, authority: new.example.com, redirectCode: 308}
  - match: [{uri: {prefix: /teapot}}]
    directResponse: {status: 418, body: {string: "short and stout"}}
  - route:
    - destination: {host: reviews}
    mirror: {host: shadow}
    fault: {abort: {percentage: {value: 100}, httpStatus: 503}}
  tcp:
  - match: [{port: 27017, sourceLabels: {app: db-client}}]
    route:
    - destination: {host: mongo, port: {number: 27017}}
  tls:
  - match: [{port: 443, sniHosts: [reviews.shop.svc.cluster.local]}]
    route:
    - destination: {host: reviews, port: {number: 443}}
`;

const empty = { headers: {}, withoutHeaders: {}, queryParams: {}, sourceLabels: {}, ignoreUriCase: false };

describe('VirtualService', () => {
  test('every field of the subset is parsed into the model', () => {
    const vs = only(FULL_VS);
    assert.equal(vs.kind, 'VirtualService');
    assert.equal(vs.apiVersion, 'networking.istio.io/v1');
    assert.deepEqual(vs.metadata, { name: 'reviews', namespace: 'shop', labels: { app: 'reviews' }, annotations: { owner: 'team-a' } });
    assert.deepEqual(vs.origin, { file: 'test.yaml', index: 1, line: 2 });
    assert.deepEqual(vs.spec, {
      hosts: ['reviews', 'reviews-alias'],
      http: [
        {
          name: 'jason',
          match: [
            {
              name: 'm0',
              uri: { kind: 'prefix', value: '/api' },
              method: { kind: 'exact', value: 'GET' },
              authority: { kind: 'regex', value: 'rev.*' },
              headers: { 'x-user': { kind: 'exact', value: 'jason' }, 'x-any': { kind: 'present', value: '' } },
              withoutHeaders: { 'x-debug': { kind: 'prefix', value: '1' } },
              queryParams: { v: { kind: 'regex', value: '[0-9]+' } },
              port: 9080,
              sourceLabels: { app: 'web', version: '2' },
              ignoreUriCase: true,
            },
            { ...empty, uri: { kind: 'exact', value: '/health' } },
          ],
          route: [
            {
              destination: { host: 'reviews', subset: 'v2', port: 9080 },
              weight: 75,
              headers: { request: { set: { 'x-a': '1' }, add: { 'x-b': '2' }, remove: ['x-c'] }, response: { set: {}, add: {}, remove: ['server'] } },
            },
            { destination: { host: 'reviews.shop', subset: 'v1' }, weight: 25 },
          ],
          rewrite: { uri: '/v2', authority: 'reviews-v2:9080' },
          timeoutMs: 500,
          retries: { attempts: 3, perTryTimeoutMs: 100, retryOn: ['5xx', 'connect-failure', '503'] },
          fault: { delay: { percent: 0.5, fixedDelayMs: 60_000 }, abort: { percent: 10, grpcStatus: 'UNAVAILABLE' } },
          mirror: { host: 'reviews-shadow', subset: 'v9', port: 81 },
          mirrorPercent: 12.5,
          headers: { request: { set: { 'x-route': 'jason' }, add: {}, remove: [] } },
        },
        { match: [{ ...empty, uri: { kind: 'prefix', value: '/old' } }], route: [], redirect: { uri: '/new', authority: 'new.example.com', redirectCode: 308 } },
        { match: [{ ...empty, uri: { kind: 'prefix', value: '/teapot' } }], route: [], directResponse: { status: 418, body: 'short and stout' } },
        {
          match: [],
          route: [{ destination: { host: 'reviews' }, weight: 100 }],
          fault: { abort: { percent: 100, httpStatus: 503 } },
          mirror: { host: 'shadow' },
          mirrorPercent: 100,
        },
      ],
      tcp: [{ match: [{ port: 27017, sourceLabels: { app: 'db-client' } }], route: [{ destination: { host: 'mongo', port: 27017 }, weight: 100 }] }],
      tls: [{ match: [{ port: 443, sourceLabels: {}, sniHosts: ['reviews.shop.svc.cluster.local'] }], route: [{ destination: { host: 'reviews', port: 443 }, weight: 100 }] }],
    });
  });

  test('apiVersions v1, v1beta1 and v1alpha3 are accepted; metadata.namespace defaults to "default"', () => {
    for (const v of ['v1', 'v1beta1', 'v1alpha3']) {
      const vs = only(`apiVersion: networking.istio.io/${v}\nkind: VirtualService\nmetadata: {name: r}\nspec:\n  hosts: [r]\n  http: [{route: [{destination: {host: r}}]}]\n`);
      assert.equal(vs.apiVersion, `networking.istio.io/${v}`);
      assert.equal(vs.metadata.namespace, 'default');
      assert.deepEqual(vs.metadata.labels, {});
    }
  });

  test('redirect defaults to 301; a route without retryOn keeps it undefined (Istio default applies at compile)', () => {
    const vs = only(`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: r}
spec:
  hosts: [r]
  http:
  - redirect: {authority: other}
  - route: [{destination: {host: r}}]
    retries: {attempts: 0}
`);
    assert.ok(vs.kind === 'VirtualService');
    assert.deepEqual(vs.spec.http[0]!.redirect, { authority: 'other', redirectCode: 301 });
    assert.deepEqual(vs.spec.http[1]!.retries, { attempts: 0 });
  });

  test('a JSON document is YAML too', () => {
    const vs = only(JSON.stringify({ apiVersion: 'networking.istio.io/v1', kind: 'VirtualService', metadata: { name: 'r' }, spec: { hosts: ['r'], tcp: [{ route: [{ destination: { host: 'r' } }] }] } }));
    assert.equal(vs.kind, 'VirtualService');
  });
});

const FULL_DR = `
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer:
      consistentHash: {httpCookie: {name: user, path: /, ttl: 10s}}
      localityLbSetting:
        enabled: true
        distribute: [{from: "us-west/zone1/*", to: {"us-west/zone1/*": 80, "us-west/zone2/*": 20}}]
        failoverPriority: [topology.kubernetes.io/region]
      warmupDurationSecs: 30s
    connectionPool:
      tcp: {maxConnections: 100, connectTimeout: 30ms}
      http: {http1MaxPendingRequests: 10, http2MaxRequests: 1000, maxRequestsPerConnection: 10, maxRetries: 3, idleTimeout: 1m}
    outlierDetection: {consecutive5xxErrors: 7, consecutiveGatewayErrors: 3, interval: 5m, baseEjectionTime: 15m, maxEjectionPercent: 50}
    tls: {mode: ISTIO_MUTUAL}
    portLevelSettings:
    - port: {number: 9080}
      loadBalancer: {simple: RANDOM}
      connectionPool: {tcp: {maxConnections: 5}}
      outlierDetection: {consecutive5xxErrors: 1}
      tls: {mode: DISABLE}
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2, track: canary}
    trafficPolicy:
      loadBalancer: {consistentHash: {httpHeaderName: X-User}}
  - name: v3
    labels: {version: v3}
    trafficPolicy:
      loadBalancer: {consistentHash: {useSourceIp: true}, localityLbSetting: {failover: [{from: us-east, to: eu-west}]}}
  - name: v4
    trafficPolicy: {loadBalancer: {consistentHash: {httpQueryParameterName: user}}}
`;

describe('DestinationRule', () => {
  test('every field of the subset is parsed into the model', () => {
    const dr = only(FULL_DR);
    assert.equal(dr.kind, 'DestinationRule');
    assert.deepEqual(dr.spec, {
      host: 'reviews',
      trafficPolicy: {
        loadBalancer: {
          consistentHash: { httpCookie: { name: 'user', path: '/', ttlMs: 10_000 } },
          localityLbSetting: {
            enabled: true,
            distribute: [{ from: 'us-west/zone1/*', to: { 'us-west/zone1/*': 80, 'us-west/zone2/*': 20 } }],
            failover: [],
            failoverPriority: ['topology.kubernetes.io/region'],
          },
          warmupDurationMs: 30_000,
        },
        connectionPool: {
          tcp: { maxConnections: 100, connectTimeoutMs: 30 },
          http: { http1MaxPendingRequests: 10, http2MaxRequests: 1000, maxRequestsPerConnection: 10, maxRetries: 3, idleTimeoutMs: 60_000 },
        },
        outlierDetection: { consecutive5xxErrors: 7, consecutiveGatewayErrors: 3, intervalMs: 300_000, baseEjectionTimeMs: 900_000, maxEjectionPercent: 50 },
        tls: { mode: 'ISTIO_MUTUAL' },
        portLevelSettings: [
          { port: 9080, loadBalancer: { simple: 'RANDOM' }, connectionPool: { tcp: { maxConnections: 5 } }, outlierDetection: { consecutive5xxErrors: 1 }, tls: { mode: 'DISABLE' } },
        ],
      },
      subsets: [
        { name: 'v1', labels: { version: 'v1' } },
        { name: 'v2', labels: { version: 'v2', track: 'canary' }, trafficPolicy: { loadBalancer: { consistentHash: { httpHeaderName: 'x-user' } }, portLevelSettings: [] } },
        {
          name: 'v3',
          labels: { version: 'v3' },
          trafficPolicy: {
            loadBalancer: { consistentHash: { useSourceIp: true }, localityLbSetting: { distribute: [], failover: [{ from: 'us-east', to: 'eu-west' }], failoverPriority: [] } },
            portLevelSettings: [],
          },
        },
        { name: 'v4', labels: {}, trafficPolicy: { loadBalancer: { consistentHash: { httpQueryParameterName: 'user' } }, portLevelSettings: [] } },
      ],
    });
  });

  test('every simple load balancer and tls mode is accepted', () => {
    for (const simple of ['ROUND_ROBIN', 'LEAST_REQUEST', 'RANDOM', 'PASSTHROUGH']) {
      for (const mode of ['DISABLE', 'SIMPLE', 'MUTUAL', 'ISTIO_MUTUAL']) {
        const dr = only(`apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d}\nspec:\n  host: d\n  trafficPolicy: {loadBalancer: {simple: ${simple}}, tls: {mode: ${mode}}}\n`);
        assert.ok(dr.kind === 'DestinationRule');
        assert.equal(dr.spec.trafficPolicy?.loadBalancer?.simple, simple);
        assert.equal(dr.spec.trafficPolicy?.tls?.mode, mode);
      }
    }
  });
});

describe('ServiceEntry, PeerAuthentication, AuthorizationPolicy', () => {
  test('ServiceEntry fields, with resolution NONE and location MESH_EXTERNAL by default', () => {
    const docs = parsePolicyText(`apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: payments}
spec:
  hosts: [api.payments.example.com]
  ports: [{number: 443, name: https, protocol: TLS}, {number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  location: MESH_INTERNAL
  endpoints:
  - {address: 10.0.0.1, ports: {https: 8443}, labels: {dc: a}}
  - address: "fd00::1"
---
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {name: httpbin}
spec:
  hosts: [httpbin.org]
  ports: [{number: 80}]
`, 'se.yaml');
    assert.deepEqual(docs.map((d) => d.spec), [
      {
        hosts: ['api.payments.example.com'],
        ports: [{ number: 443, name: 'https', protocol: 'TLS' }, { number: 80, name: 'http', protocol: 'HTTP' }],
        resolution: 'STATIC',
        endpoints: [{ address: '10.0.0.1', ports: { https: 8443 }, labels: { dc: 'a' } }, { address: 'fd00::1', ports: {}, labels: {} }],
        location: 'MESH_INTERNAL',
      },
      { hosts: ['httpbin.org'], ports: [{ number: 80, protocol: 'TCP' }], resolution: 'NONE', endpoints: [], location: 'MESH_EXTERNAL' },
    ]);
  });

  test('PeerAuthentication and AuthorizationPolicy (security.istio.io) are typed models', () => {
    const [pa, ap, deny] = parsePolicyText(`apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: strict, namespace: shop}
spec:
  selector: {matchLabels: {app: reviews}}
  mtls: {mode: STRICT}
  portLevelMtls:
    "9090": {mode: PERMISSIVE}
---
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: allow-web, namespace: shop, annotations: {istio.io/dry-run: "true"}}
spec:
  selector: {matchLabels: {app: reviews}}
  action: ALLOW
  rules:
  - from: [{source: {principals: [mesh.local/ns/shop/sa/web], notNamespaces: [dev*], ipBlocks: [10.0.0.0/8], remoteIpBlocks: ["fd00::/8"]}}]
    to: [{operation: {methods: [GET], paths: [/api/*], notPaths: ["*/admin"], ports: ["9080"], hosts: [reviews*]}}]
    when: [{key: "request.headers[x-tenant]", values: [acme]}, {key: source.namespace, notValues: [dev]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-all}
spec:
  action: DENY
  rules: [{}]
`, 'sec.yaml');
    assert.deepEqual(pa!.spec, { selector: { matchLabels: { app: 'reviews' } }, mtlsMode: 'STRICT', portLevelMtls: { 9090: 'PERMISSIVE' } });
    const none = { principals: [], notPrincipals: [], requestPrincipals: [], notRequestPrincipals: [], namespaces: [], notNamespaces: [], ipBlocks: [], notIpBlocks: [], remoteIpBlocks: [], notRemoteIpBlocks: [] };
    assert.deepEqual(ap!.spec, {
      selector: { matchLabels: { app: 'reviews' } },
      action: 'ALLOW',
      rules: [
        {
          from: [{ ...none, principals: ['mesh.local/ns/shop/sa/web'], notNamespaces: ['dev*'], ipBlocks: ['10.0.0.0/8'], remoteIpBlocks: ['fd00::/8'] }],
          to: [{ hosts: ['reviews*'], notHosts: [], ports: [9080], notPorts: [], methods: ['GET'], notMethods: [], paths: ['/api/*'], notPaths: ['*/admin'] }],
          when: [
            { key: 'request.headers[x-tenant]', values: ['acme'], notValues: [] },
            { key: 'source.namespace', values: [], notValues: ['dev'] },
          ],
        },
      ],
    });
    assert.deepEqual(ap!.metadata.annotations, { 'istio.io/dry-run': 'true' });
    assert.deepEqual(deny!.spec, { action: 'DENY', rules: [{ from: [], to: [], when: [] }] });
    const allowNothing = only('apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: a}\nspec: {}\n');
    assert.deepEqual(allowNothing.spec, { action: 'ALLOW' }, 'rules absent stays absent (allows nothing), unlike rules: [{}]');
  });
});

describe('documents', () => {
  test('--- separated documents keep their file position; empty and comment-only documents are skipped but counted', () => {
    const docs = parsePolicyText(`---
# only a comment
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: a}
spec: {host: a}
---
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: b}
spec: {host: b}
`, 'multi.yaml');
    assert.deepEqual(docs.map((d) => [d.metadata.name, d.origin.index, d.origin.line]), [['a', 2, 4], ['b', 4, 10]]);
    assert.deepEqual(parsePolicyText('', 'empty.yaml'), []);
  });

  test('parsed documents are deeply frozen', () => {
    const vs = only(FULL_VS);
    assert.ok(vs.kind === 'VirtualService');
    assert.ok(Object.isFrozen(vs) && Object.isFrozen(vs.spec.http[0]!.route[0]!.destination) && Object.isFrozen(vs.spec.http[0]!.match[0]!.headers));
    assert.throws(() => (vs.spec.hosts as string[]).push('x'));
  });

  test('readPolicyFile reads a file and names it in problems', () => {
    const file = join(tmp, 'p.yaml');
    writeFileSync(file, FULL_DR);
    assert.equal(readPolicyFile(file)[0]!.origin.file, file);
    assert.throws(() => readPolicyFile(join(tmp, 'missing.yaml')), (e: Error & { code?: string }) => e.code === 'MESH_ERR_POLICY_INVALID' && /cannot read policy file/.test(e.message));
  });

  test('Istio durations', () => {
    for (const [text, ms] of [['0.5s', 500], ['10s', 10_000], ['1m', 60_000], ['100ms', 100], ['1h30m', 5_400_000], ['1.5ms', 2], ['250us', 0], ['0', 0], ['.5s', 500]] as const) {
      assert.equal(parseIstioDuration(text), ms, text);
    }
    for (const bad of ['', '5', '10 s', '1d', 's', '-1s', '1.2.3s']) assert.equal(parseIstioDuration(bad), undefined, bad);
  });
});
