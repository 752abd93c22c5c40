// Unit tests for AuthorizationPolicy evaluation (src/policy/authz.ts, authz-match.ts): each rule of Istio's semantics.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  compilePolicy,
  describeDenial,
  normalizeAuthzPath,
  parsePolicyText,
  principalOf,
  workloadOf,
  type AuthzDecision,
  type AuthzHttp,
  type AuthzRequest,
  type Workload,
} from '../../src/policy';

const API = workloadOf('api', 'default', { version: 'v1' });
const WEB = 'mesh.local/ns/default/sa/web';

/** An AuthorizationPolicy document; `head` goes under metadata (name and more), `spec` is the spec's lines. */
function ap(name: string, spec: string, meta = ''): string {
  return `apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: ${name}\n${meta}spec:\n${spec}`;
}

function decider(docs: string[], w: Workload = API): (req: AuthzRequest) => AuthzDecision {
  const policy = compilePolicy(parsePolicyText(docs.join('---\n'), 'authz.yaml'));
  return (req) => policy.authorizationFor(w).evaluate(req);
}

function http(path: string, opts: { method?: string; host?: string; headers?: Record<string, string> } = {}): AuthzHttp {
  const headers = Object.fromEntries(Object.entries(opts.headers ?? {}).map(([k, v]) => [k.toLowerCase(), v]));
  return { method: opts.method ?? 'GET', path, host: opts.host ?? 'api', header: (n) => headers[n] };
}

/** An HTTP request from `principal` (undefined: plaintext) to port 8080. */
function req(principal: string | undefined, path = '/', opts: Parameters<typeof http>[1] & { ip?: string; port?: number; sni?: string; destinationIp?: string } = {}): AuthzRequest {
  return {
    ...(principal ? principalOf(principal) : {}),
    sourceIp: opts.ip ?? '10.1.2.3',
    destinationIp: opts.destinationIp ?? '10.9.9.9',
    destinationPort: opts.port ?? 8080,
    ...(opts.sni ? { sni: opts.sni } : {}),
    http: http(path, opts),
  };
}

/** A TCP connection (no HTTP attributes). */
function tcp(principal: string | undefined, port = 9000, ip = '10.1.2.3'): AuthzRequest {
  return { ...(principal ? principalOf(principal) : {}), sourceIp: ip, destinationPort: port };
}

const allows = (d: AuthzDecision): boolean => d.allowed;

describe('evaluation order', () => {
  test('no policy: allowed, nothing decided it', () => {
    const d = decider([])(req(WEB));
    assert.deepEqual([d.allowed, d.reason, d.by], [true, 'no-allow-policy', undefined]);
  });

  test('a matching DENY rule denies and is named with its index', () => {
    const decide = decider([ap('deny-admin', '  action: DENY\n  rules:\n  - to: [{operation: {paths: [/other]}}]\n  - to: [{operation: {paths: ["/admin*"]}}]\n')]);
    const d = decide(req(WEB, '/admin/users'));
    assert.deepEqual([d.allowed, d.reason, d.by], [false, 'denied-by-rule', { policy: 'default/deny-admin', rule: 1 }]);
    assert.equal(describeDenial(d), 'RBAC: access denied by AuthorizationPolicy default/deny-admin rule 1');
    assert.equal(decide(req(WEB, '/public')).allowed, true, 'a DENY policy alone allows what it does not match');
  });

  test('DENY is evaluated before ALLOW', () => {
    const decide = decider([ap('allow-all', '  rules: [{}]\n'), ap('deny-admin', '  action: DENY\n  rules: [{to: [{operation: {paths: [/admin]}}]}]\n')]);
    assert.equal(decide(req(WEB, '/admin')).reason, 'denied-by-rule');
    assert.equal(decide(req(WEB, '/x')).reason, 'allowed-by-rule');
  });

  test('when an ALLOW policy applies, a request must match one of its rules', () => {
    const decide = decider([ap('allow-web', `  rules:\n  - from: [{source: {principals: [${WEB}]}}]\n`), ap('allow-ops', '  rules:\n  - from: [{source: {namespaces: [ops]}}]\n')]);
    const ok = decide(req(WEB));
    assert.deepEqual([ok.allowed, ok.reason, ok.by], [true, 'allowed-by-rule', { policy: 'default/allow-web', rule: 0 }]);
    assert.deepEqual(decide(req('mesh.local/ns/ops/sa/x')).by, { policy: 'default/allow-ops', rule: 0 });
    const no = decide(req('mesh.local/ns/default/sa/batch'));
    assert.deepEqual([no.allowed, no.reason, no.allowPolicies], [false, 'no-allow-match', ['default/allow-ops', 'default/allow-web']]);
    assert.equal(describeDenial(no), 'RBAC: access denied: no rule of AuthorizationPolicies default/allow-ops, default/allow-web allows it');
  });

  test('ALLOW without rules allows nothing; rules: [{}] allows everything', () => {
    assert.equal(decider([ap('nothing', '  {}\n')])(req(WEB)).reason, 'no-allow-match');
    assert.equal(describeDenial(decider([ap('nothing', '  {}\n')])(req(WEB))), 'RBAC: access denied: no rule of AuthorizationPolicy default/nothing allows it');
    assert.equal(decider([ap('everything', '  rules: [{}]\n')])(req(undefined)).allowed, true);
  });

  test('DENY without rules denies nothing and does not make an ALLOW policy', () => {
    const d = decider([ap('empty-deny', '  action: DENY\n')])(req(WEB));
    assert.deepEqual([d.allowed, d.reason], [true, 'no-allow-policy']);
  });

  test('AUDIT rules are reported and never change the decision, nor count as ALLOW policies', () => {
    const decide = decider([ap('audit-admin', '  action: AUDIT\n  rules:\n  - to: [{operation: {paths: [/x]}}]\n  - to: [{operation: {paths: ["/admin*"]}}]\n')]);
    const d = decide(req(WEB, '/admin'));
    assert.deepEqual([d.allowed, d.reason, d.audit], [true, 'no-allow-policy', [{ policy: 'default/audit-admin', rule: 1 }]]);
    assert.deepEqual(decide(req(WEB, '/public')).audit, []);
    const denied = decider([ap('audit-all', '  action: AUDIT\n  rules: [{}]\n'), ap('deny-all', '  action: DENY\n  rules: [{}]\n')])(req(WEB));
    assert.deepEqual([denied.allowed, denied.audit], [false, [{ policy: 'default/audit-all', rule: 0 }]]);
  });

  test('dry-run policies are decided apart and never enforced', () => {
    const dry = '  annotations: {istio.io/dry-run: "true"}\n';
    const denyDry = decider([ap('deny-dry', '  action: DENY\n  rules: [{to: [{operation: {paths: [/dry]}}]}]\n', dry)]);
    const d = denyDry(req(WEB, '/dry'));
    assert.deepEqual([d.allowed, d.reason], [true, 'no-allow-policy'], 'enforced: nothing denies');
    assert.deepEqual([d.dryRun?.allowed, d.dryRun?.by], [false, { policy: 'default/deny-dry', rule: 0 }], 'would deny');
    assert.equal(denyDry(req(WEB, '/other')).dryRun?.allowed, true);
    // A dry-run ALLOW does not turn on "some ALLOW applies so one must match" for real traffic.
    const allowDry = decider([ap('allow-dry', `  rules: [{from: [{source: {principals: [${WEB}]}}]}]\n`, dry)]);
    const other = allowDry(req('mesh.local/ns/default/sa/batch'));
    assert.deepEqual([other.allowed, other.dryRun?.allowed, other.dryRun?.reason], [true, false, 'no-allow-match']);
    assert.equal(allowDry(req(WEB)).dryRun?.allowed, true);
    assert.equal(decider([ap('not-dry', '  action: DENY\n  rules: [{}]\n', '  annotations: {istio.io/dry-run: "false"}\n')])(req(WEB)).allowed, false, 'only "true" makes a dry run');
    assert.equal(decider([])(req(WEB)).dryRun, undefined);
  });

  test('the deciding policy does not depend on document order', () => {
    const a = ap('a-deny', '  action: DENY\n  rules: [{}]\n');
    const b = ap('b-deny', '  action: DENY\n  rules: [{}]\n');
    assert.equal(decider([a, b])(req(WEB)).by?.policy, 'default/a-deny');
    assert.equal(decider([b, a])(req(WEB)).by?.policy, 'default/a-deny');
  });
});

describe('which workloads a policy applies to', () => {
  const denyAll = (name: string, meta: string, selector = ''): string => ap(name, `${selector}  action: DENY\n  rules: [{}]\n`, meta);
  test('a policy applies to its own namespace only', () => {
    assert.equal(decider([denyAll('d', '  namespace: shop\n')])(req(WEB)).allowed, true);
    assert.equal(decider([denyAll('d', '  namespace: shop\n')], workloadOf('api', 'shop'))(req(WEB)).allowed, false);
  });

  test('in the root namespace mesh-system without a selector, to every workload of the mesh', () => {
    const decide = decider([denyAll('d', '  namespace: mesh-system\n')], workloadOf('x', 'anywhere'));
    assert.deepEqual(decide(req(WEB)).by, { policy: 'mesh-system/d', rule: 0 });
  });

  test('a selector picks workloads by label: app is the service name, other labels come from the service', () => {
    const sel = (labels: string): string => `  selector: {matchLabels: {${labels}}}\n`;
    assert.equal(decider([denyAll('d', '', sel('app: api'))])(req(WEB)).allowed, false);
    assert.equal(decider([denyAll('d', '', sel('app: api, version: v1'))])(req(WEB)).allowed, false);
    assert.equal(decider([denyAll('d', '', sel('app: api, version: v2'))])(req(WEB)).allowed, true);
    assert.equal(decider([denyAll('d', '', sel('app: web'))])(req(WEB)).allowed, true);
    // In the root namespace, a selector matches workloads of every namespace.
    assert.equal(decider([denyAll('d', '  namespace: mesh-system\n', sel('version: v1'))], workloadOf('api', 'shop', { version: 'v1' }))(req(WEB)).allowed, false);
    assert.equal(decider([denyAll('d', '  namespace: other\n', sel('version: v1'))], workloadOf('api', 'shop', { version: 'v1' }))(req(WEB)).allowed, true);
  });

  test('the workload label app defaults to the name but a service may set it', () => {
    assert.deepEqual(workloadOf('api', 'default').labels, { app: 'api' });
    assert.deepEqual(workloadOf('api', 'default', { app: 'reviews', version: 'v2' }).labels, { app: 'reviews', version: 'v2' });
  });
});

describe('from: sources', () => {
  const allowFrom = (source: string): ((r: AuthzRequest) => AuthzDecision) => decider([ap('a', `  rules: [{from: [{source: {${source}}}]}]\n`)]);

  test('principals: exact, prefix, suffix and * (any authenticated caller)', () => {
    assert.ok(allows(allowFrom(`principals: [${WEB}]`)(req(WEB))));
    assert.ok(!allows(allowFrom(`principals: [${WEB}]`)(req('mesh.local/ns/default/sa/webby'))));
    assert.ok(allows(allowFrom('principals: ["mesh.local/ns/default/*"]')(req(WEB))));
    assert.ok(!allows(allowFrom('principals: ["mesh.local/ns/prod/*"]')(req(WEB))));
    assert.ok(allows(allowFrom('principals: ["*/sa/web"]')(req(WEB))));
    assert.ok(!allows(allowFrom('principals: ["*/sa/api"]')(req(WEB))));
    assert.ok(allows(allowFrom('principals: ["*"]')(req(WEB))));
    assert.ok(!allows(allowFrom('principals: ["*"]')(req(undefined))), 'a plaintext caller has no principal');
  });

  test('notPrincipals: matches callers that are none of them, plaintext callers included', () => {
    assert.ok(allows(allowFrom(`notPrincipals: [${WEB}]`)(req('mesh.local/ns/default/sa/batch'))));
    assert.ok(!allows(allowFrom(`notPrincipals: [${WEB}]`)(req(WEB))));
    // The Istio idiom: DENY notPrincipals ["*"] refuses every caller without mTLS.
    const denyPlain = decider([ap('require-mtls', '  action: DENY\n  rules: [{from: [{source: {notPrincipals: ["*"]}}]}]\n')]);
    assert.equal(denyPlain(req(undefined)).allowed, false);
    assert.equal(denyPlain(req(WEB)).allowed, true);
  });

  test('namespaces and notNamespaces come from the caller identity', () => {
    assert.ok(allows(allowFrom('namespaces: [default]')(req(WEB))));
    assert.ok(allows(allowFrom('namespaces: ["def*"]')(req(WEB))));
    assert.ok(!allows(allowFrom('namespaces: [prod]')(req(WEB))));
    assert.ok(!allows(allowFrom('namespaces: ["*"]')(req(undefined))));
    assert.ok(!allows(allowFrom('notNamespaces: [default]')(req(WEB))));
    assert.ok(allows(allowFrom('notNamespaces: [default]')(req('mesh.local/ns/ops/sa/x'))));
  });

  test('ipBlocks and notIpBlocks: addresses and CIDR blocks, IPv4-mapped IPv6 read as IPv4, IPv6 blocks', () => {
    assert.ok(allows(allowFrom('ipBlocks: [10.0.0.0/8]')(req(WEB, '/', { ip: '10.200.0.1' }))));
    assert.ok(allows(allowFrom('ipBlocks: [10.0.0.0/8]')(req(WEB, '/', { ip: '::ffff:10.200.0.1' }))));
    assert.ok(!allows(allowFrom('ipBlocks: [10.0.0.0/8]')(req(WEB, '/', { ip: '192.168.0.1' }))));
    assert.ok(allows(allowFrom('ipBlocks: [192.168.0.1]')(req(WEB, '/', { ip: '192.168.0.1' }))));
    assert.ok(!allows(allowFrom('ipBlocks: [192.168.0.1]')(req(WEB, '/', { ip: '192.168.0.2' }))));
    assert.ok(allows(allowFrom('ipBlocks: ["fd00::/8"]')(req(WEB, '/', { ip: 'fd00::5' }))));
    assert.ok(!allows(allowFrom('notIpBlocks: [10.0.0.0/8]')(req(WEB, '/', { ip: '10.0.0.9' }))));
    assert.ok(allows(allowFrom('notIpBlocks: [10.0.0.0/8]')(req(WEB, '/', { ip: '172.16.0.1' }))));
  });

  test('remoteIpBlocks are the connection source address (no X-Forwarded-For is trusted)', () => {
    assert.ok(allows(allowFrom('remoteIpBlocks: [10.0.0.0/8]')(req(WEB, '/', { ip: '10.0.0.1', headers: { 'x-forwarded-for': '1.2.3.4' } }))));
    assert.ok(!allows(allowFrom('notRemoteIpBlocks: [10.0.0.0/8]')(req(WEB, '/', { ip: '10.0.0.1' }))));
  });

  test('requestPrincipals: no request authentication yet, so never present', () => {
    assert.ok(!allows(allowFrom('requestPrincipals: ["*"]')(req(WEB))));
    assert.ok(allows(allowFrom('notRequestPrincipals: ["*"]')(req(WEB))));
  });

  test('fields of one source are ANDed, sources of one rule ORed', () => {
    const both = allowFrom('principals: ["*/sa/web"], ipBlocks: [10.0.0.0/8]');
    assert.ok(allows(both(req(WEB, '/', { ip: '10.0.0.1' }))));
    assert.ok(!allows(both(req(WEB, '/', { ip: '11.0.0.1' }))));
    assert.ok(!allows(both(req('mesh.local/ns/default/sa/x', '/', { ip: '10.0.0.1' }))));
    const either = decider([ap('a', '  rules: [{from: [{source: {principals: ["*/sa/web"]}}, {source: {namespaces: [ops]}}]}]\n')]);
    assert.ok(allows(either(req(WEB))));
    assert.ok(allows(either(req('mesh.local/ns/ops/sa/y'))));
    assert.ok(!allows(either(req('mesh.local/ns/default/sa/y'))));
  });
});

describe('to: operations', () => {
  const allowTo = (op: string): ((r: AuthzRequest) => AuthzDecision) => decider([ap('a', `  rules: [{to: [{operation: {${op}}}]}]\n`)]);

  test('methods and notMethods, case-sensitive', () => {
    assert.ok(allows(allowTo('methods: [GET, HEAD]')(req(WEB, '/', { method: 'HEAD' }))));
    assert.ok(!allows(allowTo('methods: [GET]')(req(WEB, '/', { method: 'POST' }))));
    assert.ok(!allows(allowTo('methods: [GET]')(req(WEB, '/', { method: 'get' }))));
    assert.ok(!allows(allowTo('notMethods: [DELETE]')(req(WEB, '/', { method: 'DELETE' }))));
    assert.ok(allows(allowTo('notMethods: [DELETE]')(req(WEB, '/', { method: 'GET' }))));
  });

  test('paths: exact, prefix, suffix, *; the query string is not part of the path', () => {
    assert.ok(allows(allowTo('paths: [/info]')(req(WEB, '/info?x=1'))));
    assert.ok(!allows(allowTo('paths: [/info]')(req(WEB, '/info/x'))));
    assert.ok(allows(allowTo('paths: ["/api/*"]')(req(WEB, '/api/v1'))));
    assert.ok(allows(allowTo('paths: ["/api*"]')(req(WEB, '/api'))));
    assert.ok(allows(allowTo('paths: ["*.png"]')(req(WEB, '/img/a.png'))));
    assert.ok(!allows(allowTo('paths: ["*.png"]')(req(WEB, '/img/a.png.exe'))));
    assert.ok(allows(allowTo('paths: ["*"]')(req(WEB, '/anything'))));
    assert.ok(!allows(allowTo('notPaths: ["/admin*"]')(req(WEB, '/admin/x'))));
    assert.ok(allows(allowTo('notPaths: ["/admin*"]')(req(WEB, '/public'))));
  });

  test('paths are normalized first, so a DENY cannot be dodged with dot segments or escapes', () => {
    const deny = decider([ap('d', '  action: DENY\n  rules: [{to: [{operation: {paths: ["/admin*"]}}]}]\n')]);
    for (const sneaky of ['/public/../admin', '/./admin', '/%61dmin', '/%2e/admin', '/x/%2E%2E/admin/y', '\\admin', '/public/..%2Fadmin/../../admin']) {
      assert.equal(deny(req(WEB, sneaky)).allowed, false, sneaky);
    }
    assert.equal(deny(req(WEB, '/adm%69n')).allowed, false);
    assert.equal(deny(req(WEB, '/a%2Fdmin')).allowed, true, '%2F is not a slash to the app either, so it stays encoded');
  });

  test('path normalization', () => {
    const cases: [string, string][] = [
      ['/', '/'], ['/a/b', '/a/b'], ['/a/./b', '/a/b'], ['/a/../b', '/b'], ['/a/b/..', '/a/'], ['/..', '/'], ['/../../x', '/x'],
      ['/a//b', '/a//b'], ['/a?b=/../c', '/a'], ['/a#frag', '/a'], ['/%7euser', '/~user'], ['/%2f', '/%2F'], ['/a\\b', '/a/b'],
      ['http://host:80/a/../b?q', '/b'], ['http://host', '/'], ['*', '*'], ['/%zz', '/%zz'],
    ];
    for (const [input, out] of cases) assert.equal(normalizeAuthzPath(input), out, input);
  });

  test('hosts and notHosts: case-insensitive, with or without the port', () => {
    assert.ok(allows(allowTo('hosts: [api.example.com]')(req(WEB, '/', { host: 'API.Example.com' }))));
    assert.ok(allows(allowTo('hosts: [api.example.com]')(req(WEB, '/', { host: 'api.example.com:8443' }))));
    assert.ok(allows(allowTo('hosts: ["*.example.com"]')(req(WEB, '/', { host: 'a.example.com:80' }))));
    assert.ok(allows(allowTo('hosts: ["api.example.com:8443"]')(req(WEB, '/', { host: 'api.example.com:8443' }))));
    assert.ok(!allows(allowTo('hosts: ["api.example.com:8443"]')(req(WEB, '/', { host: 'api.example.com' }))));
    assert.ok(!allows(allowTo('hosts: [api.example.com]')(req(WEB, '/', { host: 'evil.com' }))));
    assert.ok(!allows(allowTo('notHosts: [evil.com]')(req(WEB, '/', { host: 'EVIL.com:1' }))));
  });

  test('ports and notPorts are the workload port', () => {
    assert.ok(allows(allowTo('ports: ["8080"]')(req(WEB, '/', { port: 8080 }))));
    assert.ok(!allows(allowTo('ports: ["8080"]')(req(WEB, '/', { port: 9090 }))));
    assert.ok(!allows(allowTo('notPorts: ["8080"]')(req(WEB, '/', { port: 8080 }))));
  });

  test('fields of one operation are ANDed, operations ORed', () => {
    const both = allowTo('methods: [GET], paths: ["/read*"]');
    assert.ok(allows(both(req(WEB, '/read/1'))));
    assert.ok(!allows(both(req(WEB, '/read/1', { method: 'POST' }))));
    const either = decider([ap('a', '  rules: [{to: [{operation: {methods: [GET]}}, {operation: {paths: [/write]}}]}]\n')]);
    assert.ok(allows(either(req(WEB, '/write', { method: 'POST' }))));
    assert.ok(!allows(either(req(WEB, '/other', { method: 'POST' }))));
  });
});

describe('when: conditions', () => {
  const allowWhen = (...conds: string[]): ((r: AuthzRequest) => AuthzDecision) => decider([ap('a', `  rules:\n  - when:\n${conds.map((c) => `    - ${c}\n`).join('')}`)]);

  test('request.headers[...]: values and notValues, header names in any case, * means present', () => {
    const tenant = allowWhen('{key: "request.headers[X-Tenant]", values: ["acme", "beta*"]}');
    assert.ok(allows(tenant(req(WEB, '/', { headers: { 'x-tenant': 'acme' } }))));
    assert.ok(allows(tenant(req(WEB, '/', { headers: { 'x-tenant': 'beta-2' } }))));
    assert.ok(!allows(tenant(req(WEB, '/', { headers: { 'x-tenant': 'other' } }))));
    assert.ok(!allows(tenant(req(WEB, '/'))), 'an absent header does not match values');
    const notDebug = allowWhen('{key: "request.headers[x-debug]", notValues: ["1"]}');
    assert.ok(allows(notDebug(req(WEB, '/'))), 'an absent header passes notValues');
    assert.ok(!allows(notDebug(req(WEB, '/', { headers: { 'x-debug': '1' } }))));
    const present = allowWhen('{key: "request.headers[x-token]", values: ["*"]}');
    assert.ok(allows(present(req(WEB, '/', { headers: { 'x-token': '' } }))));
    assert.ok(!allows(present(req(WEB, '/'))));
  });

  test('connection keys: source.ip, remote.ip, destination.ip, destination.port, source.namespace, source.principal, connection.sni', () => {
    assert.ok(allows(allowWhen('{key: source.ip, values: [10.0.0.0/8]}')(req(WEB, '/', { ip: '10.1.1.1' }))));
    assert.ok(!allows(allowWhen('{key: source.ip, values: [10.0.0.0/8]}')(req(WEB, '/', { ip: '11.1.1.1' }))));
    assert.ok(!allows(allowWhen('{key: remote.ip, notValues: [10.0.0.0/8]}')(req(WEB, '/', { ip: '10.1.1.1' }))));
    assert.ok(allows(allowWhen('{key: destination.ip, values: [10.9.9.9]}')(req(WEB))));
    assert.ok(!allows(allowWhen('{key: destination.ip, values: [10.9.9.8]}')(req(WEB))));
    assert.ok(allows(allowWhen('{key: destination.port, values: ["8080"]}')(req(WEB))));
    assert.ok(!allows(allowWhen('{key: destination.port, notValues: ["8080"]}')(req(WEB))));
    assert.ok(allows(allowWhen('{key: source.namespace, values: [default]}')(req(WEB))));
    assert.ok(!allows(allowWhen('{key: source.namespace, values: [default]}')(req(undefined))));
    assert.ok(allows(allowWhen('{key: source.principal, values: ["*/sa/web"]}')(req(WEB))));
    assert.ok(!allows(allowWhen('{key: source.principal, values: ["*/sa/web"]}')(req('mesh.local/ns/default/sa/x'))));
    assert.ok(allows(allowWhen('{key: connection.sni, values: ["api.*"]}')(req(WEB, '/', { sni: 'api.default.mesh.local' }))));
    assert.ok(!allows(allowWhen('{key: connection.sni, values: ["*"]}')(req(undefined))), 'plaintext has no SNI');
  });

  test('every condition of a rule must hold', () => {
    const decide = allowWhen('{key: source.namespace, values: [default]}', '{key: "request.headers[x-a]", values: ["1"]}');
    assert.ok(allows(decide(req(WEB, '/', { headers: { 'x-a': '1' } }))));
    assert.ok(!allows(decide(req(WEB, '/'))));
    assert.ok(!allows(decide(req('mesh.local/ns/ops/sa/web', '/', { headers: { 'x-a': '1' } }))));
  });

  test('from, to and when of one rule must all match; rules of a policy are ORed', () => {
    const decide = decider([ap('a', `  rules:\n  - from: [{source: {principals: [${WEB}]}}]\n    to: [{operation: {methods: [GET]}}]\n    when: [{key: "request.headers[x-a]", values: ["1"]}]\n  - to: [{operation: {paths: [/health]}}]\n`)]);
    assert.deepEqual(decide(req(WEB, '/', { headers: { 'x-a': '1' } })).by, { policy: 'default/a', rule: 0 });
    assert.ok(!allows(decide(req('mesh.local/ns/default/sa/x', '/', { headers: { 'x-a': '1' } }))));
    assert.ok(!allows(decide(req(WEB, '/', { method: 'PUT', headers: { 'x-a': '1' } }))));
    assert.ok(!allows(decide(req(WEB, '/'))));
    assert.deepEqual(decide(req(undefined, '/health')).by, { policy: 'default/a', rule: 1 });
  });
});

describe('TCP connections (no HTTP attributes)', () => {
  test('L4-only ALLOW rules work on TCP', () => {
    const decide = decider([ap('a', `  rules: [{from: [{source: {principals: [${WEB}]}}], to: [{operation: {ports: ["9000"]}}], when: [{key: source.ip, values: [10.0.0.0/8]}]}]\n`)]);
    assert.equal(decide(tcp(WEB, 9000)).allowed, true);
    assert.equal(decide(tcp('mesh.local/ns/default/sa/x', 9000)).allowed, false);
    assert.equal(decide(tcp(WEB, 9001)).allowed, false);
  });

  test('an ALLOW rule with an HTTP-only field never matches TCP', () => {
    for (const rule of ['to: [{operation: {methods: [GET]}}]', 'to: [{operation: {paths: ["*"]}}]', 'to: [{operation: {hosts: ["*"]}}]', 'to: [{operation: {notPaths: [/x]}}]', 'when: [{key: "request.headers[x]", notValues: ["1"]}]', 'from: [{source: {notRequestPrincipals: ["*"]}}]']) {
      const decide = decider([ap('a', `  rules: [{${rule}}]\n`)]);
      const d = decide(tcp(WEB));
      assert.deepEqual([d.allowed, d.reason], [false, 'no-allow-match'], rule);
      assert.equal(decide(req(WEB, '/y', { headers: {} })).allowed, true, `${rule} still matches HTTP`);
    }
    // The rule with an HTTP field is skipped, another rule of the policy may still allow.
    const mixed = decider([ap('a', '  rules:\n  - to: [{operation: {methods: [GET]}}]\n  - to: [{operation: {ports: ["9000"]}}]\n')]);
    assert.deepEqual(mixed(tcp(WEB, 9000)).by, { policy: 'default/a', rule: 1 });
  });

  test('a DENY rule counts its HTTP-only fields as matched on TCP, so it denies more, never less', () => {
    const decide = decider([ap('d', '  action: DENY\n  rules: [{to: [{operation: {methods: [POST], ports: ["9000"]}}]}]\n')]);
    assert.equal(decide(tcp(WEB, 9000)).allowed, false, 'every TCP connection to port 9000 is denied');
    assert.equal(decide(tcp(WEB, 9001)).allowed, true, 'the L4 fields still count');
    assert.equal(decide(req(WEB, '/', { method: 'GET', port: 9000 })).allowed, true, 'HTTP: the method counts');
    const audit = decider([ap('au', '  action: AUDIT\n  rules: [{to: [{operation: {paths: [/x]}}]}]\n')]);
    assert.deepEqual(audit(tcp(WEB)).audit, [{ policy: 'default/au', rule: 0 }]);
  });
});

describe('principalOf', () => {
  test('SPIFFE IDs become trust-domain-relative principals with their namespace', () => {
    assert.deepEqual(principalOf('spiffe://mesh.local/ns/shop/sa/web'), { principal: 'mesh.local/ns/shop/sa/web', namespace: 'shop' });
    assert.deepEqual(principalOf('spiffe://mesh.local/agent/x'), { principal: 'mesh.local/agent/x' });
  });
});

describe('AuthorizationPolicy parse errors for when values', () => {
  const bad = (cond: string): string => {
    try {
      parsePolicyText(ap('a', `  rules: [{when: [${cond}]}]\n`), 'bad.yaml');
    } catch (err) {
      return (err as Error).message;
    }
    return 'no error';
  };
  test('IP keys take IP addresses or CIDR blocks; destination.port takes port numbers', () => {
    assert.match(bad('{key: source.ip, values: [not-an-ip]}'), /spec\.rules\[0\]\.when\[0\]\.values\[0\]: got "not-an-ip", expected an IP address or CIDR block such as "10\.0\.0\.0\/8" for source\.ip/);
    assert.match(bad('{key: destination.ip, notValues: [10.0.0.0/40]}'), /when\[0\]\.notValues\[0\]: got "10\.0\.0\.0\/40", expected an IP address/);
    assert.match(bad('{key: destination.port, values: ["http"]}'), /when\[0\]\.values\[0\]: got "http", expected a port number from 1 to 65535 for destination\.port/);
    assert.match(bad('{key: destination.port, values: ["70000"]}'), /expected a port number/);
    assert.equal(bad('{key: source.ip, values: ["10.0.0.0/8", "fd00::1"]}'), 'no error');
  });
});
