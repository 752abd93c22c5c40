// Unit tests for the policy lifecycle on the server: versions and history in SQLite, one transaction per change,
// validation of everything before anything is stored, rollback byte for byte, dry runs and the agents a change reaches.

import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { isMeshError, type MeshErrorCode } from '../../src/errors';
import { documentSlices, type PolicyError } from '../../src/policy';
import { policyDigest } from '../../src/protocol';
import { PolicyService, type PolicyFile } from '../../src/server/policy-service';
import { Store, type PolicyVersionRow } from '../../src/store';
import { silentLogger } from '../../src/telemetry';

const root = mkdtempSync(join(tmpdir(), 'mesh-policy-store-'));
const stores: Store[] = [];
after(() => {
  for (const s of stores) s.close();
  rmSync(root, { recursive: true, force: true });
});

let n = 0;
function harness(): { store: Store; file: string; service: PolicyService; committed: PolicyVersionRow[]; clock: { t: number } } {
  const file = join(root, `mesh-${n++}.db`);
  const store = Store.open(file);
  stores.push(store);
  const committed: PolicyVersionRow[] = [];
  const clock = { t: 1_800_000_000_000 };
  const service = new PolicyService({ store, connected: () => new Map([['aaaaaaaaaaaaaaaa', {}]]), committed: (r) => committed.push(r), now: () => clock.t, log: silentLogger });
  return { store, file, service, committed, clock };
}

/** Every row of every policy table, to prove that nothing was written. */
function snapshot(file: string): unknown {
  const db = new Database(file, { readonly: true, fileMustExist: true });
  try {
    return ['policy_versions', 'policy_documents', 'policy_changes'].map((t) => db.prepare(`SELECT * FROM ${t}`).all());
  } finally {
    db.close();
  }
}

function fails(fn: () => unknown, code: MeshErrorCode, re?: RegExp): PolicyError {
  try {
    fn();
  } catch (err) {
    assert.ok(isMeshError(err, code), `expected ${code}, got ${String(err)}`);
    if (re) assert.match(err.message, re);
    return err as PolicyError;
  }
  assert.fail(`expected ${code}, nothing was thrown`);
}

const vs = (name: string, host: string, extra = ''): string =>
  `apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { name: ${name} }\nspec:\n  hosts: [${host}]\n  http:\n    - route: [{ destination: { host: ${host} } }]${extra}\n`;
const dr = (host: string): string => `apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: { name: ${host} }\nspec:\n  host: ${host}\n  subsets: [{ name: v1, labels: { version: v1 } }]\n`;
const ap = (name: string, app?: string, ns = 'default'): string =>
  `apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: { name: ${name}, namespace: ${ns} }\nspec:\n${app ? `  selector: { matchLabels: { app: ${app} } }\n` : ''}  rules: [{}]\n`;
const file = (name: string, ...docs: string[]): PolicyFile => ({ name, text: docs.join('---\n') });

describe('policy versions in the store', () => {
  test('each apply is one new version with a history row: who, when, and what was added, changed or removed', () => {
    const h = harness();
    const r1 = h.service.apply([file('a.yaml', vs('reviews', 'reviews'), dr('reviews'))], 'admin', false);
    assert.equal(r1.version, 1);
    assert.equal(r1.created, true);
    h.clock.t += 1000;
    const r2 = h.service.apply([file('b.yaml', vs('reviews', 'reviews', '\n      timeout: 2s'), vs('ratings', 'ratings'))], 'ops', false);
    assert.equal(r2.version, 2);
    assert.deepEqual(
      r2.changes.map((c) => [c.action, c.name]),
      [
        ['added', 'ratings'],
        ['changed', 'reviews'],
      ],
    );
    const r3 = h.service.remove([{ kind: 'DestinationRule', namespace: 'default', name: 'reviews' }], 'admin', false);
    assert.equal(r3.version, 3);
    const history = h.store.policy.history();
    assert.deepEqual(
      history.map((v) => [v.version, v.actor, v.operation, v.createdAt, v.documents]),
      [
        [3, 'admin', 'delete', 1_800_000_001_000, 2],
        [2, 'ops', 'apply', 1_800_000_001_000, 3],
        [1, 'admin', 'apply', 1_800_000_000_000, 2],
      ],
    );
    assert.deepEqual(history[0]!.changes, [{ kind: 'DestinationRule', namespace: 'default', name: 'reviews', action: 'removed' }]);
    assert.deepEqual(
      h.store.policy.history({ kind: 'VirtualService', name: 'reviews' }).map((v) => v.version),
      [2, 1],
      'history of one document lists only the versions that changed it',
    );
    assert.deepEqual(
      h.committed.map((r) => r.version),
      [1, 2, 3],
      'the distributor hears of each version once',
    );
  });

  test('every version keeps its own whole document set, and its digest is the digest of that set', () => {
    const h = harness();
    h.service.apply([file('a.yaml', vs('reviews', 'reviews'), dr('reviews'))], 'admin', false);
    h.service.apply([file('b.yaml', vs('reviews', 'reviews', '\n      timeout: 2s'))], 'admin', false);
    h.service.remove([{ kind: 'VirtualService', namespace: 'default', name: 'reviews' }], 'admin', false);
    assert.deepEqual(
      [0, 1, 2, 3].map((v) => h.store.policy.documentsAt(v).map((d) => `${d.kind}/${d.name}@${d.sinceVersion}`)),
      [[], ['DestinationRule/reviews@1', 'VirtualService/reviews@1'], ['DestinationRule/reviews@1', 'VirtualService/reviews@2'], ['DestinationRule/reviews@1']],
    );
    for (const v of [1, 2, 3]) assert.equal(h.store.policy.get(v)!.digest, policyDigest(h.store.policy.documentsAt(v)), `version ${v}`);
  });

  test('an apply with any invalid document, in any file, stores nothing and names file, document, line and field', () => {
    const h = harness();
    h.service.apply([file('base.yaml', vs('reviews', 'reviews'))], 'admin', false);
    const before = snapshot(h.file);
    const bad = 'apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { name: ratings }\nspec:\n  hosts: [ratings]\n  http:\n    - route: [{ destination: { host: ratings }, weight: 150 }]\n';
    const err = fails(() => h.service.apply([file('good.yaml', dr('reviews'), vs('details', 'details')), file('bad.yaml', vs('x', 'x'), bad)], 'admin', false), 'MESH_ERR_POLICY_INVALID');
    assert.equal(err.problems.length, 1);
    assert.deepEqual({ ...err.problems[0] }, { file: 'bad.yaml', document: 2, kind: 'VirtualService', name: 'ratings', line: 15, path: 'spec.http[0].route[0].weight', message: 'got 150, expected an integer from 0 to 100' });
    assert.deepEqual(snapshot(h.file), before, 'not one row changed');
    assert.equal(h.committed.length, 1);
  });

  test('the same document twice in one apply is refused, within a file and across files; nothing is stored', () => {
    const h = harness();
    const before = snapshot(h.file);
    fails(() => h.service.apply([file('one.yaml', vs('reviews', 'reviews'), vs('reviews', 'reviews'))], 'admin', false), 'MESH_ERR_POLICY_INVALID', /one\.yaml: document 2 \(VirtualService reviews\), line 11, metadata\.name: VirtualService reviews\.default is defined twice/);
    fails(() => h.service.apply([file('a.yaml', dr('reviews')), file('b.yaml', dr('reviews'))], 'admin', false), 'MESH_ERR_POLICY_INVALID', /b\.yaml: document 1 \(DestinationRule reviews\), line 3, metadata\.name: DestinationRule reviews\.default is defined twice; the first is DestinationRule reviews\.default \(a\.yaml document 1\)/);
    assert.deepEqual(snapshot(h.file), before);
  });

  test('a document that conflicts with a stored one is refused, naming the stored one; nothing is stored', () => {
    const h = harness();
    h.service.apply([file('base.yaml', vs('reviews', 'reviews'))], 'admin', false);
    const before = snapshot(h.file);
    fails(() => h.service.apply([file('other.yaml', vs('reviews-too', 'reviews'))], 'admin', false), 'MESH_ERR_POLICY_INVALID', /other\.yaml: document 1 \(VirtualService reviews-too\), line 5, spec\.hosts\[0\]: service reviews\.default already has VirtualService reviews\.default \(stored version 1/);
    assert.deepEqual(snapshot(h.file), before);
  });

  test('applying what is stored already makes no version; no documents at all is an error', () => {
    const h = harness();
    h.service.apply([file('a.yaml', vs('reviews', 'reviews'))], 'admin', false);
    const again = h.service.apply([file('a.yaml', vs('reviews', 'reviews'))], 'admin', false);
    assert.equal(again.created, false);
    assert.equal(again.version, 1);
    assert.equal(again.unchanged.length, 1);
    assert.equal(h.store.policy.headVersion(), 1);
    fails(() => h.service.apply([file('empty.yaml', '# nothing here\n')], 'admin', false), 'MESH_ERR_POLICY_INVALID', /no policy documents in empty\.yaml/);
  });

  test('rollback makes a new version with the earlier documents byte for byte, comments and spacing included', () => {
    const h = harness();
    const original = `# routes for reviews, owned by team B\napiVersion: networking.istio.io/v1\nkind:   VirtualService   # odd spacing kept\nmetadata: { name: reviews }\nspec:\n  hosts: [reviews]\n  http:\n    - route: [{ destination: { host: reviews } }]\n`;
    h.service.apply([{ name: 'r.yaml', text: `${original}---\n${dr('reviews')}` }], 'admin', false);
    const v1 = h.store.policy.documentsAt(1);
    h.service.apply([file('r.yaml', vs('reviews', 'reviews', '\n      timeout: 1s'), vs('ratings', 'ratings'))], 'admin', false);
    h.service.remove([{ kind: 'DestinationRule', namespace: 'default', name: 'reviews' }], 'admin', false);
    const r = h.service.rollback(1, 'admin', false);
    assert.equal(r.version, 4);
    assert.deepEqual(
      r.changes.map((c) => [c.action, c.kind, c.name]),
      [
        ['added', 'DestinationRule', 'reviews'],
        ['removed', 'VirtualService', 'ratings'],
        ['changed', 'VirtualService', 'reviews'],
      ],
    );
    const v4 = h.store.policy.documentsAt(4);
    assert.deepEqual(
      v4.map((d) => [d.kind, d.name, d.source]),
      v1.map((d) => [d.kind, d.name, d.source]),
    );
    assert.equal(v4.find((d) => d.kind === 'VirtualService')!.source, original, 'the text as applied, byte for byte');
    assert.equal(h.store.policy.get(4)!.digest, h.store.policy.get(1)!.digest, 'the same set has the same digest');
    const row = h.store.policy.get(4)!;
    assert.equal(row.operation, 'rollback');
    assert.equal(row.rollbackTo, 1);
    assert.equal(h.service.rollback(1, 'admin', false).created, false, 'rolling back to what is in force changes nothing');
    assert.equal(h.service.rollback(0, 'admin', false).version, 5);
    assert.deepEqual(h.store.policy.documentsAt(5), [], 'version 0 is the empty policy');
    fails(() => h.service.rollback(9, 'admin', false), 'MESH_ERR_NOT_FOUND', /there is no policy version 9 \(versions run from 0, the empty policy, to 5\)/);
  });

  test('delete of a document the newest version lacks is MESH_ERR_NOT_FOUND', () => {
    const h = harness();
    fails(() => h.service.remove([{ kind: 'VirtualService', namespace: 'default', name: 'nope' }], 'admin', false), 'MESH_ERR_NOT_FOUND', /policy version 0 has no VirtualService default\/nope/);
  });

  test('a dry run stores nothing and names the agents the change reaches (selected services, callers of changed ones)', () => {
    const h = harness();
    const agent = (id: string, node: string, services: string[], upstreams: string[], serviceLabels?: Record<string, Record<string, string>>): void => {
      h.store.agents.insert({ id, nodeName: node, address: '10.0.0.1', enrolledAt: 1, joinTokenId: null });
      h.store.agents.touch(id, 2, { services, upstreams, ...(serviceLabels ? { serviceLabels } : {}) });
    };
    agent('aaaaaaaaaaaaaaaa', 'web-node', ['default/web'], ['default/reviews']);
    agent('bbbbbbbbbbbbbbbb', 'reviews-node', ['default/reviews'], [], { 'default/reviews': { app: 'reviews', version: 'v2' } });
    agent('cccccccccccccccc', 'shop-node', ['shop/cart'], ['default/ratings']);
    const before = snapshot(h.file);
    const routes = h.service.apply([file('vs.yaml', vs('reviews', 'reviews'))], 'admin', true);
    assert.equal(routes.dryRun, true);
    assert.equal(routes.created, false);
    assert.equal(routes.version, 1, 'the version it would make');
    assert.deepEqual(routes.agents, [{ id: 'aaaaaaaaaaaaaaaa', nodeName: 'web-node', connected: true }], 'the caller of reviews, not reviews itself');
    const authz = h.service.apply([file('ap.yaml', ap('reviews-only', 'reviews'))], 'admin', true);
    assert.deepEqual(
      authz.agents.map((a) => a.nodeName),
      ['reviews-node'],
      'the node running the selected workload',
    );
    const byVersion = h.service.apply([{ name: 'ap.yaml', text: ap('v2-only', 'reviews').replace('app: reviews', 'version: v2') }], 'admin', true);
    assert.deepEqual(
      byVersion.agents.map((a) => a.nodeName),
      ['reviews-node'],
      'selectors match the labels the agent reported for its workload',
    );
    const namespaceWide = h.service.apply([file('ap.yaml', ap('shop-all', undefined, 'shop'))], 'admin', true);
    assert.deepEqual(
      namespaceWide.agents.map((a) => [a.nodeName, a.connected]),
      [['shop-node', false]],
    );
    const meshWide = h.service.apply([file('ap.yaml', ap('everyone', undefined, 'mesh-system'))], 'admin', true);
    assert.equal(meshWide.agents.length, 3, 'the root namespace selects every workload');
    assert.deepEqual(snapshot(h.file), before, 'dry runs wrote nothing');
    assert.equal(h.committed.length, 0);
  });
});

describe('PolicyRepository.commit', () => {
  test('a commit that fails half way leaves no trace: its version, documents and changes roll back together', () => {
    const h = harness();
    h.service.apply([file('a.yaml', vs('reviews', 'reviews'))], 'admin', false);
    const before = snapshot(h.file);
    fails(
      () =>
        h.store.policy.commit({
          version: 2,
          createdAt: 1,
          actor: 'admin',
          operation: 'apply',
          digest: policyDigest([]),
          upserts: [{ kind: 'VirtualService', namespace: 'default', name: 'ratings', source: vs('ratings', 'ratings') }],
          removals: [{ kind: 'DestinationRule', namespace: 'default', name: 'missing' }],
        }),
      'MESH_ERR_STORE',
      /cannot be removed, version 1 does not hold it/,
    );
    assert.deepEqual(snapshot(h.file), before);
  });

  test('versions only ever grow by one', () => {
    const h = harness();
    fails(() => h.store.policy.commit({ version: 2, createdAt: 1, actor: 'admin', operation: 'apply', digest: policyDigest([]), upserts: [], removals: [] }), 'MESH_ERR_STORE', /policy version 2 cannot follow version 0/);
  });
});

describe('documentSlices', () => {
  test('cuts a stream into one exact slice per document: together they are the input, byte for byte', () => {
    const text = '# header\n---\na: 1\n---\n# c2\nb: 2\n--- # hi\nc: 3\n...\n# between\n%YAML 1.2\n---\nd: |\n  ---text\n# trailing\n';
    const slices = documentSlices(text);
    assert.equal(slices.join(''), text);
    assert.deepEqual(slices, ['# header\n---\na: 1\n', '---\n# c2\nb: 2\n', '--- # hi\nc: 3\n...\n', '# between\n%YAML 1.2\n---\nd: |\n  ---text\n# trailing\n']);
  });

  test('a JSON document is one slice', () => {
    assert.deepEqual(documentSlices('{"kind": "VirtualService"}\n'), ['{"kind": "VirtualService"}\n']);
  });
});
