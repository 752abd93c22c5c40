// Unit tests for src/policy validation: every kind of mistake is reported with file, document, line, field path and what is accepted.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { isMeshError } from '../../src/errors';
import { compilePolicy, formatPolicyProblem, parsePolicyText, type PolicyError, type PolicyProblem } from '../../src/policy';

/** Parses `text`, asserts it fails with MESH_ERR_POLICY_INVALID, and returns the error. */
function policyError(text: string, file = 'policy.yaml'): PolicyError {
  try {
    parsePolicyText(text, file);
  } catch (err) {
    assert.ok(isMeshError(err, 'MESH_ERR_POLICY_INVALID'), `expected MESH_ERR_POLICY_INVALID, got ${String(err)}`);
    assert.ok(Array.isArray((err as PolicyError).problems));
    return err as PolicyError;
  }
  assert.fail('expected MESH_ERR_POLICY_INVALID, nothing was thrown');
}

/** 1-based line of the first line of `text` containing `needle`. */
function lineOf(text: string, needle: string): number {
  const i = text.split('\n').findIndex((l) => l.includes(needle));
  assert.ok(i >= 0, `test bug: ${needle} not in text`);
  return i + 1;
}

/** Asserts `text` has exactly one problem, at `path`, on the line containing `needle`, whose message matches. */
function expectOne(text: string, path: string, needle: string, message: RegExp): PolicyProblem {
  const { problems } = policyError(text);
  assert.equal(problems.length, 1, `expected one problem, got:\n${problems.map(formatPolicyProblem).join('\n')}`);
  const p = problems[0]!;
  assert.equal(p.path, path);
  assert.equal(p.line, lineOf(text, needle), `line of ${path}`);
  assert.match(p.message, message);
  return p;
}

/** A VirtualService for host "reviews" whose http list is `http` (indented as the items of `http:`). */
function vs(http: string, extraSpec = ''): string {
  return `apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: reviews\nspec:\n  hosts: [reviews]\n${extraSpec}  http:\n${http}`;
}

function dr(spec: string): string {
  return `apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: reviews\nspec:\n  host: reviews\n${spec}`;
}

const ROUTE = '    route:\n    - destination: {host: reviews}\n';

describe('problem reports', () => {
  test('the message names file, document (kind and name), line, field path, the value and what is accepted', () => {
    const text = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec: {host: reviews}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 50}
    - weight: 150
      destination: {host: reviews, subset: v2}
`;
    const err = policyError(text);
    assert.equal(err.problems.length, 1);
    assert.deepEqual(err.problems[0], {
      file: 'policy.yaml', document: 2, kind: 'VirtualService', name: 'reviews', line: 14,
      path: 'spec.http[0].route[1].weight', message: 'got 150, expected an integer from 0 to 100',
    });
    assert.equal(formatPolicyProblem(err.problems[0]!), 'policy.yaml: document 2 (VirtualService reviews), line 14, spec.http[0].route[1].weight: got 150, expected an integer from 0 to 100');
    assert.match(err.message, /^invalid policy file policy\.yaml \(1 problem\):\n {2}- policy\.yaml: document 2 \(VirtualService reviews\), line 14, spec\.http\[0\]\.route\[1\]\.weight: got 150/);
    assert.equal(err.retryable, false);
  });

  test('two mistakes in one document and one in another are all reported, in file order', () => {
    const text = `${vs(`  - route:\n    - destination: {host: reviews}\n    timeout: 5\n    retries: {attempts: -1}\n`)}---\n${dr('  trafficPolicy: {tls: {mode: NOPE}}\n')}`;
    const { problems } = policyError(text);
    assert.deepEqual(problems.map((p) => [p.document, p.path, p.line]), [
      [1, 'spec.http[0].timeout', lineOf(text, 'timeout: 5')],
      [1, 'spec.http[0].retries.attempts', lineOf(text, 'attempts: -1')],
      [2, 'spec.trafficPolicy.tls.mode', lineOf(text, 'mode: NOPE')],
    ]);
  });

  test('nothing is returned when any document is bad (no partial results)', () => {
    const text = `${dr('')}---\n${vs('  - bogus: 1\n' + ROUTE.replace('    route', '    route'))}`;
    assert.throws(() => parsePolicyText(text), (e: unknown) => isMeshError(e, 'MESH_ERR_POLICY_INVALID'));
  });
});

describe('VirtualService mistakes', () => {
  const cases: [string, string, string, string, RegExp][] = [
    ['weights that do not add up to 100', vs('  - route:\n    - {destination: {host: reviews, subset: v1}, weight: 60}\n    - {destination: {host: reviews, subset: v2}, weight: 30}\n'), 'spec.http[0].route', 'route:', /weights add up to 90 \(60 \+ 30\), expected 100/],
    ['a missing weight among several destinations counts as 0', vs('  - route:\n    - {destination: {host: reviews, subset: v1}, weight: 60}\n    - destination: {host: reviews, subset: v2}\n'), 'spec.http[0].route', 'route:', /add up to 60 \(60 \+ 0\), expected 100; a destination without weight counts as 0/],
    ['a lone destination with a weight other than 100', vs('  - route:\n    - {destination: {host: reviews}, weight: 50}\n'), 'spec.http[0].route', 'route:', /add up to 50 \(50\), expected 100; a single destination may also leave weight out/],
    ['a bad regex', vs('  - match:\n    - uri: {regex: "/v[0-9"}\n' + ROUTE), 'spec.http[0].match[0].uri.regex', 'regex:', /invalid regular expression "\/v\[0-9": Unterminated character class/],
    ['a lookahead (not RE2)', vs('  - match:\n    - headers: {x-user: {regex: "(?!admin).*"}}\n' + ROUTE), 'spec.http[0].match[0].headers.x-user.regex', 'regex:', /lookahead and lookbehind are not RE2 syntax/],
    ['a backreference (not RE2)', vs('  - match:\n    - uri: {regex: "/(a)\\\\1"}\n' + ROUTE), 'spec.http[0].match[0].uri.regex', 'regex:', /backreferences are not RE2/],
    ['an unknown field', vs('  - route:\n    - destination: {host: reviews}\n    retry: {attempts: 3}\n'), 'spec.http[0].retry', 'retry:', /^unknown field \(accepted here: .*retries.*\)$/],
    ['an unknown field deep down', vs('  - route:\n    - destination: {host: reviews, version: v1}\n'), 'spec.http[0].route[0].destination.version', 'version: v1', /unknown field \(accepted here: host, port, subset\)/],
    ['an Istio field mesh-agent does not implement', vs(ROUTE.replace('    route', '  - route') + '    corsPolicy: {allowOrigins: [{exact: "*"}]}\n'), 'spec.http[0].corsPolicy', 'corsPolicy', /is an Istio field that mesh-agent does not implement yet/],
    ['an unimplemented top-level field', vs(ROUTE.replace('    route', '  - route'), '  gateways: [mesh]\n'), 'spec.gateways', 'gateways', /does not implement/],
    ['a duration without a unit', vs(ROUTE.replace('    route', '  - route') + '    timeout: 5\n'), 'spec.http[0].timeout', 'timeout', /got 5, expected a duration such as "0\.5s", "10s", "1m", "100ms"/],
    ['a duration in words', vs(ROUTE.replace('    route', '  - route') + '    retries: {attempts: 2, perTryTimeout: 2 seconds}\n'), 'spec.http[0].retries.perTryTimeout', 'perTryTimeout', /got "2 seconds", expected a duration/],
    ['an unknown retryOn condition', vs(ROUTE.replace('    route', '  - route') + '    retries: {attempts: 2, retryOn: "5xx,gateway-eror,999"}\n'), 'spec.http[0].retries.retryOn', 'retryOn', /got "gateway-eror", "999", expected comma-separated conditions from 5xx, gateway-error, .* or HTTP status codes/],
    ['retries without attempts', vs(ROUTE.replace('    route', '  - route') + '    retries: {retryOn: 5xx}\n'), 'spec.http[0].retries.attempts', 'retries:', /is required/],
    ['route and redirect together', vs(ROUTE.replace('    route', '  - route') + '    redirect: {uri: /x}\n'), 'spec.http[0].redirect', 'redirect:', /cannot be set together with route/],
    ['a rule that does nothing', vs('  - match: [{uri: {prefix: /}}]\n'), 'spec.http[0]', '- match', /must set one of route, redirect or directResponse/],
    ['rewrite with a redirect', vs('  - redirect: {uri: /x}\n    rewrite: {uri: /y}\n'), 'spec.http[0].rewrite', 'rewrite:', /applies only to rules that route/],
    ['a bad redirect code', vs('  - redirect: {uri: /x, redirectCode: 200}\n'), 'spec.http[0].redirect.redirectCode', 'redirect:', /got 200, expected one of 301, 302, 303, 307, 308/],
    ['a directResponse status out of range', vs('  - directResponse: {status: 99}\n'), 'spec.http[0].directResponse.status', 'directResponse', /got 99, expected an integer from 200 to 599/],
    ['an abort with both statuses', vs(ROUTE.replace('    route', '  - route') + '    fault: {abort: {percentage: {value: 1}, httpStatus: 503, grpcStatus: UNAVAILABLE}}\n'), 'spec.http[0].fault.abort.grpcStatus', 'fault:', /cannot be set together with httpStatus/],
    ['an unknown gRPC status', vs(ROUTE.replace('    route', '  - route') + '    fault:\n      abort: {percentage: {value: 1}, grpcStatus: BROKEN}\n'), 'spec.http[0].fault.abort.grpcStatus', 'grpcStatus', /got "BROKEN", expected a gRPC status name: OK, CANCELLED/],
    ['a percentage over 100', vs(ROUTE.replace('    route', '  - route') + '    fault:\n      delay:\n        percentage: {value: 101}\n        fixedDelay: 1s\n'), 'spec.http[0].fault.delay.percentage.value', 'percentage:', /got 101, expected a number from 0 to 100/],
    ['a delay without fixedDelay', vs(ROUTE.replace('    route', '  - route') + '    fault:\n      delay:\n        percentage: {value: 1}\n'), 'spec.http[0].fault.delay.fixedDelay', 'delay:', /is required \(a duration/],
    ['mirrorPercentage without mirror', vs(ROUTE.replace('    route', '  - route') + '    mirrorPercentage: {value: 5}\n'), 'spec.http[0].mirrorPercentage', 'mirrorPercentage', /needs mirror/],
    ['a StringMatch with two kinds', vs('  - match:\n    - uri: {exact: /a, prefix: /b}\n' + ROUTE), 'spec.http[0].match[0].uri.prefix', 'uri:', /cannot be set together with exact/],
    ['a StringMatch written as a plain string', vs('  - match:\n    - uri: /a\n' + ROUTE), 'spec.http[0].match[0].uri', 'uri: /a', /must be a mapping/],
    ['an empty uri match', vs('  - match:\n    - uri: {}\n' + ROUTE), 'spec.http[0].match[0].uri', 'uri: {}', /must set one of exact, prefix or regex/],
    ['an upper-case header name', vs('  - match:\n    - headers: {X-User: {exact: a}}\n' + ROUTE), 'spec.http[0].match[0].headers.X-User', 'headers:', /header names must be lower-case in Istio; write "x-user"/],
    ['a port out of range', vs('  - match:\n    - port: 70000\n' + ROUTE), 'spec.http[0].match[0].port', 'port: 70000', /got 70000, expected an integer from 1 to 65535/],
    ['ignoreUriCase that is not a boolean', vs('  - match:\n    - ignoreUriCase: yes\n' + ROUTE), 'spec.http[0].match[0].ignoreUriCase', 'ignoreUriCase', /expected true or false/],
    ['a destination without host', vs('  - route:\n    - destination: {subset: v1}\n'), 'spec.http[0].route[0].destination.host', 'destination:', /is required/],
    ['a wildcard host', vs(ROUTE.replace('    route', '  - route')).replace('hosts: [reviews]', 'hosts: ["*.example.com"]'), 'spec.hosts[0]', 'hosts:', /wildcard hosts are not supported/],
    ['a host with bad characters', vs('  - route:\n    - destination: {host: rev_iews}\n'), 'spec.http[0].route[0].destination.host', 'rev_iews', /got "rev_iews", expected a host name/],
    ['no hosts', vs(ROUTE.replace('    route', '  - route')).replace('  hosts: [reviews]\n', ''), 'spec.hosts', 'spec:', /is required/],
    ['no rules at all', vs('').replace('  http:\n', ''), 'spec', 'spec:', /at least one http, tcp or tls rule/],
    ['the Host header in header operations', vs('  - route:\n    - destination: {host: reviews}\n      headers: {request: {set: {Host: x}}}\n'), 'spec.http[0].route[0].headers.request.set.Host', 'headers:', /use rewrite.authority/],
    ['a tls route without sniHosts', vs('').replace('  http:\n', '  tls:\n  - match: [{port: 443}]\n    route: [{destination: {host: reviews}}]\n'), 'spec.tls[0].match[0].sniHosts', 'match:', /is required/],
    ['the same host twice', vs(ROUTE.replace('    route', '  - route')).replace('hosts: [reviews]', 'hosts: [reviews, reviews.default.svc.cluster.local]'), 'spec.hosts[1]', 'hosts:', /names the same service \(reviews\.default\) as spec\.hosts\[0\]/],
  ];
  for (const [title, text, path, needle, message] of cases) {
    test(title, () => {
      expectOne(text, path, needle, message);
    });
  }
});

describe('DestinationRule and ServiceEntry mistakes', () => {
  const se = (spec: string) => `apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: ext\nspec:\n  hosts: [api.example.com]\n${spec}`;
  const cases: [string, string, string, string, RegExp][] = [
    ['a subset defined twice', dr('  subsets:\n  - name: v1\n  - {name: v1}\n'), 'spec.subsets[1].name', '{name: v1}', /subset "v1" is defined twice/],
    ['a bad subset name', dr('  subsets:\n  - name: V_1\n'), 'spec.subsets[0].name', 'V_1', /expected a subset name/],
    ['an unknown load balancer', dr('  trafficPolicy:\n    loadBalancer: {simple: FASTEST}\n'), 'spec.trafficPolicy.loadBalancer.simple', 'FASTEST', /got "FASTEST", expected one of ROUND_ROBIN, LEAST_REQUEST, RANDOM, PASSTHROUGH/],
    ['simple and consistentHash together', dr('  trafficPolicy:\n    loadBalancer: {simple: RANDOM, consistentHash: {useSourceIp: true}}\n'), 'spec.trafficPolicy.loadBalancer.consistentHash', 'loadBalancer', /cannot be set together with simple/],
    ['two consistentHash keys', dr('  trafficPolicy:\n    loadBalancer:\n      consistentHash: {httpHeaderName: x, useSourceIp: true}\n'), 'spec.trafficPolicy.loadBalancer.consistentHash.useSourceIp', 'consistentHash', /cannot be set together with httpHeaderName/],
    ['a cookie without name', dr('  trafficPolicy:\n    loadBalancer:\n      consistentHash:\n        httpCookie: {ttl: 10s}\n'), 'spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.name', 'httpCookie', /is required/],
    ['maxEjectionPercent over 100', dr('  trafficPolicy:\n    outlierDetection:\n      maxEjectionPercent: 150\n'), 'spec.trafficPolicy.outlierDetection.maxEjectionPercent', 'maxEjectionPercent', /got 150, expected an integer from 0 to 100/],
    ['maxConnections of 0', dr('  trafficPolicy:\n    connectionPool:\n      tcp: {maxConnections: 0}\n'), 'spec.trafficPolicy.connectionPool.tcp.maxConnections', 'tcp:', /expected an integer from 1 to/],
    ['a zero connectTimeout', dr('  trafficPolicy:\n    connectionPool:\n      tcp: {connectTimeout: 0s}\n'), 'spec.trafficPolicy.connectionPool.tcp.connectTimeout', 'tcp:', /of at least 1ms/],
    ['portLevelSettings without port', dr('  trafficPolicy:\n    portLevelSettings:\n    - loadBalancer: {simple: RANDOM}\n'), 'spec.trafficPolicy.portLevelSettings[0].port', 'loadBalancer', /is required/],
    ['a port with settings twice', dr('  trafficPolicy:\n    portLevelSettings:\n    - port: {number: 80}\n    - {port: {number: 80}, tls: {mode: DISABLE}}\n'), 'spec.trafficPolicy.portLevelSettings[1].port', '{port: {number: 80}, tls', /port 80 has settings twice/],
    ['tls without mode', dr('  trafficPolicy:\n    tls: {}\n'), 'spec.trafficPolicy.tls.mode', 'tls:', /is required/],
    ['locality weights not adding to 100', dr('  trafficPolicy:\n    loadBalancer:\n      localityLbSetting:\n        distribute:\n        - from: a\n          to: {b: 50}\n'), 'spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to', 'to: {b: 50}', /add up to 50, expected 100/],
    ['a DestinationRule without host', dr('').replace('  host: reviews\n', '  subsets: []\n'), 'spec.host', 'spec:', /is required/],
    ['STATIC without endpoints', se('  ports: [{number: 443, name: https, protocol: TLS}]\n  resolution: STATIC\n'), 'spec.endpoints', 'spec:', /is required when resolution is STATIC/],
    ['a STATIC endpoint that is not an IP', se('  ports: [{number: 443, name: https}]\n  resolution: STATIC\n  endpoints:\n  - address: db.internal\n'), 'spec.endpoints[0].address', 'db.internal', /expected an IP address \(resolution is STATIC\)/],
    ['an endpoint port naming no port', se('  ports: [{number: 443, name: https}]\n  resolution: DNS\n  endpoints:\n  - address: db.internal\n    ports: {http: 8080}\n'), 'spec.endpoints[0].ports.http', 'ports: {http', /names no port of this ServiceEntry; port names: https/],
    ['an unknown resolution', se('  ports: [{number: 443}]\n  resolution: DNS_ROUND_ROBIN\n'), 'spec.resolution', 'resolution', /expected one of NONE, STATIC, DNS/],
    ['an unknown protocol', se('  ports: [{number: 443, protocol: QUIC}]\n'), 'spec.ports[0].protocol', 'ports:', /expected one of HTTP, HTTPS/],
    ['a ServiceEntry without ports', se(''), 'spec.ports', 'spec:', /is required/],
  ];
  for (const [title, text, path, needle, message] of cases) {
    test(title, () => {
      expectOne(text, path, needle, message);
    });
  }
});

describe('envelope, kind and YAML mistakes', () => {
  test('an unsupported kind is named as such', () => {
    const text = 'apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw}\nspec: {}\n';
    const p = expectOne(text, 'kind', 'kind:', /^kind Gateway is not supported by this version of the policy parser; supported kinds: VirtualService, DestinationRule, ServiceEntry, PeerAuthentication, AuthorizationPolicy$/);
    assert.equal(p.kind, 'Gateway');
    assert.equal(p.name, 'gw');
  });

  test('an apiVersion of another group or version', () => {
    expectOne(dr('').replace('networking.istio.io/v1', 'security.istio.io/v1'), 'apiVersion', 'apiVersion', /got "security\.istio\.io\/v1", expected networking\.istio\.io\/v1 or networking\.istio\.io\/v1beta1 or networking\.istio\.io\/v1alpha3 for DestinationRule/);
    expectOne(dr('').replace('networking.istio.io/v1', 'networking.istio.io/v2'), 'apiVersion', 'apiVersion', /got "networking\.istio\.io\/v2"/);
  });

  test('metadata: name required, name and namespace checked, unknown metadata fields rejected', () => {
    expectOne(dr('').replace('  name: reviews\n', '  namespace: shop\n'), 'metadata.name', 'metadata:', /is required/);
    expectOne(dr('').replace('  name: reviews\n', '  name: Reviews\n'), 'metadata.name', 'Reviews', /expected a name of lower-case letters/);
    expectOne(dr('').replace('  name: reviews\n', '  name: reviews\n  namespace: Shop_1\n'), 'metadata.namespace', 'Shop_1', /expected a namespace/);
    expectOne(dr('').replace('  name: reviews\n', '  name: reviews\n  uid: abc\n'), 'metadata.uid', 'uid', /unknown field \(accepted here: annotations, labels, name, namespace\)/);
  });

  test('a document that is not a mapping, and one without spec', () => {
    expectOne('- a\n- b\n', '', '- a', /must be a mapping/);
    expectOne('apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: x}\n', 'spec', 'apiVersion', /is required/);
  });

  test('YAML syntax errors name their line, and other documents are still checked', () => {
    const text = `${dr('')}---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: b\n---\n${dr('  bogus: 1\n').replace('name: reviews', 'name: c')}`;
    const { problems } = policyError(text);
    assert.equal(problems.length, 2, problems.map(formatPolicyProblem).join('\n'));
    assert.equal(problems[0]!.document, 2);
    assert.match(problems[0]!.message, /^YAML syntax:/);
    assert.ok(problems[0]!.line! >= lineOf(text, 'name: b'));
    assert.deepEqual([problems[1]!.document, problems[1]!.path, problems[1]!.line], [3, 'spec.bogus', lineOf(text, 'bogus')]);
  });

  test('duplicate keys are a YAML error', () => {
    const { problems } = policyError(dr('  host: ratings\n'));
    assert.match(problems[0]!.message, /Map keys must be unique/);
  });
});

describe('security kind mistakes', () => {
  const ap = (spec: string) => `apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: a\nspec:\n${spec}`;
  const cases: [string, string, string, string, RegExp][] = [
    ['CUSTOM action', ap('  action: CUSTOM\n'), 'spec.action', 'action', /CUSTOM \(external authorization\) is not supported/],
    ['a bad ipBlock', ap('  rules:\n  - from:\n    - source: {ipBlocks: [10.0.0.0/33]}\n'), 'spec.rules[0].from[0].source.ipBlocks[0]', 'ipBlocks', /expected an IP address or CIDR block/],
    ['an unknown when key', ap('  rules:\n  - when:\n    - {key: request.body, values: [x]}\n'), 'spec.rules[0].when[0].key', 'request.body', /expected one of request\.headers\[<name>\]/],
    ['a JWT when key', ap('  rules:\n  - when:\n    - {key: "request.auth.claims[iss]", values: [x]}\n'), 'spec.rules[0].when[0].key', 'request.auth', /needs request authentication \(JWT\)/],
    ['a pattern with a * in the middle', ap('  rules:\n  - to:\n    - operation: {paths: ["/a/*/b"]}\n'), 'spec.rules[0].to[0].operation.paths[0]', 'paths', /expected an exact value, "prefix\*", "\*suffix" or "\*"/],
    ['an empty source', ap('  rules:\n  - from:\n    - source: {}\n'), 'spec.rules[0].from[0].source', 'source', /must set at least one of principals/],
    ['a port that is not a number', ap('  rules:\n  - to:\n    - operation: {ports: [http]}\n'), 'spec.rules[0].to[0].operation.ports[0]', 'ports', /expected a port number/],
    ['portLevelMtls without selector', 'apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: p}\nspec:\n  portLevelMtls:\n    "80": {mode: DISABLE}\n', 'spec.portLevelMtls', 'portLevelMtls', /needs a selector/],
    ['an unknown mTLS mode', 'apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: p}\nspec:\n  mtls: {mode: ON}\n', 'spec.mtls.mode', 'mtls', /expected one of UNSET, DISABLE, PERMISSIVE, STRICT/],
  ];
  for (const [title, text, path, needle, message] of cases) {
    test(title, () => {
      expectOne(text, path, needle, message);
    });
  }
});

describe('conflicts between documents', () => {
  test('the same kind, namespace and name twice', () => {
    const text = `${dr('')}---\n${dr('').replace('host: reviews', 'host: ratings')}`;
    const { problems } = policyError(text);
    assert.equal(problems.length, 1);
    assert.deepEqual([problems[0]!.document, problems[0]!.path], [2, 'metadata.name']);
    assert.equal(problems[0]!.line, 11, 'the second document\'s metadata.name');
    assert.match(problems[0]!.message, /DestinationRule reviews\.default is defined twice; the first is DestinationRule reviews\.default \(policy\.yaml document 1\)/);
  });

  test('two VirtualServices for one service, spelled differently, blame the later one at its host', () => {
    const first = vs(ROUTE.replace('    route', '  - route'));
    const second = first.replace('name: reviews', 'name: reviews-b').replace('hosts: [reviews]', 'hosts: [ratings, reviews.default.svc.cluster.local]');
    const text = `${first}---\n${second}`;
    const { problems } = policyError(text);
    assert.equal(problems.length, 1);
    assert.equal(problems[0]!.path, 'spec.hosts[1]');
    assert.equal(problems[0]!.name, 'reviews-b');
    assert.equal(problems[0]!.line, lineOf(text, 'hosts: [ratings'));
    assert.match(problems[0]!.message, /service reviews\.default already has VirtualService reviews\.default \(policy\.yaml document 1\); a service has one VirtualService/);
  });

  test('compilePolicy finds conflicts across files', () => {
    const a = parsePolicyText(dr(''), 'a.yaml');
    const b = parsePolicyText(dr('').replace('name: reviews', 'name: other').replace('host: reviews', 'host: reviews.default.mesh'), 'b.yaml');
    assert.throws(() => compilePolicy([...a, ...b]), (e: unknown) => {
      assert.ok(isMeshError(e, 'MESH_ERR_POLICY_INVALID'));
      const [p] = (e as PolicyError).problems;
      assert.deepEqual([p!.file, p!.document, p!.path], ['b.yaml', 1, 'spec.host']);
      assert.match(p!.message, /already has DestinationRule reviews\.default \(a\.yaml document 1\)/);
      return true;
    });
  });

  test('resources in different namespaces may use the same name', () => {
    const other = dr('').replace('  name: reviews\n', '  name: reviews\n  namespace: shop\n');
    assert.equal(parsePolicyText(`${dr('')}---\n${other}`).length, 2);
  });
});
