// Unit tests for PeerAuthentication resolution (src/policy/peer-auth-mode.ts): scopes, narrowest wins, port-level modes, conflicts.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { acceptsMtls, acceptsPlaintext, compilePolicy, parsePolicyText, workloadOf, type MtlsModeDecision, type PolicyError, type Workload } from '../../src/policy';

const API = workloadOf('api', 'shop', { version: 'v1' });

function pa(name: string, namespace: string, spec: string): string {
  return `apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: ${name}, namespace: ${namespace}}\nspec:\n${spec}`;
}

function mode(docs: string[], w: Workload = API, port = 8080): MtlsModeDecision {
  return compilePolicy(parsePolicyText(docs.join('---\n'), 'pa.yaml')).mtlsModeFor(w, port);
}

const MESH = pa('mesh', 'mesh-system', '  mtls: {mode: PERMISSIVE}\n');
const NS = pa('ns', 'shop', '  mtls: {mode: DISABLE}\n');
const WORKLOAD = pa('api', 'shop', '  selector: {matchLabels: {app: api}}\n  mtls: {mode: STRICT}\n  portLevelMtls:\n    "9090": {mode: PERMISSIVE}\n    "9091": {mode: UNSET}\n');

describe('PeerAuthentication mode resolution', () => {
  test('without any PeerAuthentication the mode is STRICT', () => {
    assert.deepEqual(mode([]), { mode: 'STRICT', source: 'default (no PeerAuthentication)' });
  });

  test('a policy in the root namespace mesh-system without selector sets the mesh-wide mode', () => {
    assert.deepEqual(mode([MESH]), { mode: 'PERMISSIVE', source: 'PeerAuthentication mesh-system/mesh' });
    assert.equal(mode([MESH], workloadOf('x', 'elsewhere')).mode, 'PERMISSIVE');
  });

  test('a namespace-wide policy overrides the mesh; other namespaces keep the mesh mode', () => {
    assert.deepEqual(mode([MESH, NS]), { mode: 'DISABLE', source: 'PeerAuthentication shop/ns' });
    assert.equal(mode([MESH, NS], workloadOf('api', 'other')).mode, 'PERMISSIVE');
  });

  test('a workload policy (selector) overrides its namespace; workloads it does not select keep the namespace mode', () => {
    assert.deepEqual(mode([MESH, NS, WORKLOAD]), { mode: 'STRICT', source: 'PeerAuthentication shop/api' });
    assert.equal(mode([MESH, NS, WORKLOAD], workloadOf('db', 'shop')).mode, 'DISABLE');
    assert.equal(mode([pa('v2', 'shop', '  selector: {matchLabels: {version: v2}}\n  mtls: {mode: DISABLE}\n')]).mode, 'STRICT', 'labels must all match');
  });

  test('portLevelMtls overrides the workload mode for that port only; UNSET at a port defers to the workload mode', () => {
    assert.deepEqual(mode([MESH, NS, WORKLOAD], API, 9090), { mode: 'PERMISSIVE', source: 'PeerAuthentication shop/api port 9090' });
    assert.equal(mode([MESH, NS, WORKLOAD], API, 9091).mode, 'STRICT');
    assert.equal(mode([MESH, NS, WORKLOAD], API, 8080).mode, 'STRICT');
  });

  test('UNSET inherits from the wider scope, up to the STRICT default', () => {
    const unsetWorkload = pa('api', 'shop', '  selector: {matchLabels: {app: api}}\n  mtls: {mode: UNSET}\n');
    assert.equal(mode([NS, unsetWorkload]).mode, 'DISABLE');
    assert.equal(mode([MESH, pa('ns', 'shop', '  mtls: {mode: UNSET}\n')]).mode, 'PERMISSIVE');
    assert.equal(mode([pa('ns', 'shop', '  {}\n')]).source, 'default (no PeerAuthentication)');
    const portOnly = pa('api', 'shop', '  selector: {matchLabels: {app: api}}\n  portLevelMtls:\n    "9090": {mode: DISABLE}\n');
    assert.equal(mode([NS, portOnly], API, 9090).mode, 'DISABLE');
    assert.equal(mode([MESH, portOnly], API, 8080).mode, 'PERMISSIVE');
  });

  test('a policy in another namespace does not apply; a root-namespace selector selects in the root namespace only', () => {
    assert.equal(mode([pa('ns', 'other', '  mtls: {mode: DISABLE}\n')]).mode, 'STRICT');
    const rootSelector = pa('sel', 'mesh-system', '  selector: {matchLabels: {app: api}}\n  mtls: {mode: DISABLE}\n');
    assert.equal(mode([rootSelector]).mode, 'STRICT');
    assert.equal(mode([rootSelector], workloadOf('api', 'mesh-system')).mode, 'DISABLE');
  });

  test('of several workload policies selecting one workload, the first by name wins', () => {
    const a = pa('a-api', 'shop', '  selector: {matchLabels: {app: api}}\n  mtls: {mode: DISABLE}\n');
    const b = pa('b-api', 'shop', '  selector: {matchLabels: {version: v1}}\n  mtls: {mode: PERMISSIVE}\n');
    assert.equal(mode([b, a]).source, 'PeerAuthentication shop/a-api');
  });

  test('the docs/security.md example: one selector over two services, the port level picks one of them', () => {
    const docs = [pa('default', 'mesh-system', '  mtls: {mode: STRICT}\n'), pa('billing', 'default', '  selector: {matchLabels: {team: billing}}\n  mtls: {mode: PERMISSIVE}\n  portLevelMtls:\n    "9090": {mode: DISABLE}\n')];
    assert.equal(mode(docs, workloadOf('billing', 'default', { team: 'billing' }), 9080).mode, 'PERMISSIVE');
    assert.equal(mode(docs, workloadOf('billing-metrics', 'default', { team: 'billing' }), 9090).mode, 'DISABLE');
    assert.equal(mode(docs, workloadOf('orders', 'default'), 8080).mode, 'STRICT');
  });

  test('which connections each mode takes', () => {
    assert.deepEqual([acceptsMtls('STRICT'), acceptsPlaintext('STRICT')], [true, false]);
    assert.deepEqual([acceptsMtls('PERMISSIVE'), acceptsPlaintext('PERMISSIVE')], [true, true]);
    assert.deepEqual([acceptsMtls('DISABLE'), acceptsPlaintext('DISABLE')], [false, true]);
  });
});

describe('PeerAuthentication conflicts', () => {
  const problems = (docs: string[]): string[] => {
    try {
      parsePolicyText(docs.join('---\n'), 'pa.yaml');
    } catch (err) {
      return (err as PolicyError).problems.map((p) => `${p.document} ${p.path}: ${p.message}`);
    }
    return [];
  };

  test('two namespace-wide policies in one namespace are refused', () => {
    assert.deepEqual(problems([NS, pa('ns2', 'shop', '  mtls: {mode: STRICT}\n')]), [
      '2 metadata.name: namespace shop already has PeerAuthentication ns.shop (pa.yaml document 1); it takes one PeerAuthentication, merge them',
    ]);
  });

  test('two policies with the same selector in one namespace are refused; different selectors or namespaces are not', () => {
    const again = pa('api2', 'shop', '  selector: {matchLabels: {app: api}}\n  mtls: {mode: DISABLE}\n');
    assert.match(problems([WORKLOAD, again])[0]!, /^2 spec\.selector: selector \{app=api\} in namespace shop already has PeerAuthentication api\.shop/);
    assert.deepEqual(problems([WORKLOAD, pa('db', 'shop', '  selector: {matchLabels: {app: db}}\n  mtls: {mode: DISABLE}\n'), pa('ns', 'other', '  {}\n'), NS, MESH]), []);
  });

  test('compilePolicy finds the conflict across files too', () => {
    const a = parsePolicyText(NS, 'a.yaml');
    const b = parsePolicyText(pa('ns2', 'shop', '  mtls: {mode: STRICT}\n'), 'b.yaml');
    assert.throws(() => compilePolicy([...a, ...b]), /b\.yaml: document 1 \(PeerAuthentication ns2\).*namespace shop already has PeerAuthentication ns\.shop \(a\.yaml document 1\)/);
  });
});
