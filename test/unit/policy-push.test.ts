// Unit tests for policy distribution: signed versions pushed as deltas (newest wins, nobody waits for a slow agent),
// verified by the agent after applying each delta; tampered documents and forged signatures are refused (NACK) and
// the last good version stays, in memory and in the cache file.

import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createPublicKey, generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MeshPolicy, POLICY_CACHE_FILE } from '../../src/agent/mesh-policy';
import { StateDir } from '../../src/agent/state-dir';
import { CertificateAuthority, signPolicyVersion, SpiffeId } from '../../src/ca';
import { isMeshError, type MeshErrorCode } from '../../src/errors';
import { parseServerMessage, policyDigest, type PolicyMessage } from '../../src/protocol';
import { PolicyDistributor, type PolicySubscriber } from '../../src/server/policy-distributor';
import { PolicyService } from '../../src/server/policy-service';
import { PolicySigner } from '../../src/server/policy-signer';
import { Store } from '../../src/store';
import { silentLogger } from '../../src/telemetry';

const TD = 'mesh.local';
const root = mkdtempSync(join(tmpdir(), 'mesh-policy-push-'));
const stores: Store[] = [];
after(() => {
  for (const s of stores) s.close();
  rmSync(root, { recursive: true, force: true });
});

const vs = (host: string, timeout = '1s'): string =>
  `apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { name: ${host} }\nspec:\n  hosts: [${host}]\n  http:\n    - timeout: ${timeout}\n      route: [{ destination: { host: ${host} } }]\n`;

/** A fake connected agent: it records the messages the server queued for it. */
class FakeAgent implements PolicySubscriber {
  readonly texts: string[] = [];
  readonly send = (text: string): void => void this.texts.push(text);
  constructor(readonly agentId: string) {}
  get messages(): PolicyMessage[] {
    return this.texts.map((t) => parseServerMessage(t) as PolicyMessage);
  }
  get last(): PolicyMessage {
    return this.messages.at(-1)!;
  }
}

let n = 0;
function server(ca = CertificateAuthority.create(TD)): { ca: CertificateAuthority; store: Store; service: PolicyService; distributor: PolicyDistributor; signer: PolicySigner } {
  const store = Store.open(join(root, `mesh-${n++}.db`));
  stores.push(store);
  const signer = new PolicySigner(store, ca, Date.now);
  const distributor = new PolicyDistributor({ store, signer, now: Date.now, log: silentLogger });
  const service = new PolicyService({ store, connected: () => new Map(), committed: () => distributor.publish(), now: Date.now, log: silentLogger });
  for (const id of ['aaaaaaaaaaaaaaaa', 'bbbbbbbbbbbbbbbb']) store.agents.insert({ id, nodeName: `node-${id[0]}`, address: '', enrolledAt: 1, joinTokenId: null });
  return { ca, store, service, distributor, signer };
}

function agentPolicy(ca: CertificateAuthority, now = Date.now): { policy: MeshPolicy; state: StateDir } {
  const state = new StateDir(join(root, `agent-${n++}`));
  return { policy: new MeshPolicy({ state, trustDomain: TD, roots: () => [ca.root.pem], now, log: silentLogger }), state };
}

const apply = (s: ReturnType<typeof server>, ...docs: string[]): void => void s.service.apply([{ name: 'p.yaml', text: docs.join('---\n') }], 'admin', false);

function refuses(fn: () => unknown, code: MeshErrorCode, re: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(isMeshError(err, code), `expected ${code}, got ${String(err)}`);
    assert.match(err.message, re);
    return true;
  });
}

describe('policy push: server to agent', () => {
  test('the first version travels whole, later ones as deltas; the agent checks the whole set after each delta', () => {
    const s = server();
    const { policy, state } = agentPolicy(s.ca);
    const fake = new FakeAgent('aaaaaaaaaaaaaaaa');
    apply(s, vs('reviews'), vs('ratings'));
    s.distributor.subscribe(fake, policy.holding);
    const full = fake.last;
    assert.equal(full.base, undefined);
    assert.equal(full.upserts.length, 2);
    assert.equal(policy.accept(full).documents.length, 2);
    s.distributor.acknowledged(fake, full.version, full.digest, false);

    apply(s, vs('reviews', '2s'));
    const delta = fake.last;
    assert.deepEqual(delta.base, { version: 1, digest: full.digest });
    assert.deepEqual(
      delta.upserts.map((d) => d.name),
      ['reviews'],
      'only the changed document travels',
    );
    const compiled = policy.accept(delta);
    assert.equal(compiled.routesFor({ name: 'reviews', namespace: 'default' }).entries[0]!.route.timeoutMs, 2000);
    assert.equal(compiled.routesFor({ name: 'ratings', namespace: 'default' }).entries[0]!.route.timeoutMs, 1000, 'the unchanged document is kept');
    s.distributor.acknowledged(fake, delta.version, delta.digest, false);

    s.service.remove([{ kind: 'VirtualService', namespace: 'default', name: 'ratings' }], 'admin', false);
    assert.deepEqual(fake.last.removals, [{ kind: 'VirtualService', namespace: 'default', name: 'ratings' }]);
    assert.equal(policy.accept(fake.last).documents.length, 1);
    assert.deepEqual(policy.holding, { version: 3, digest: s.store.policy.get(3)!.digest });
    const cacheFile = join(state.dir, POLICY_CACHE_FILE);
    assert.equal(statSync(cacheFile).mode & 0o777, 0o644);
    assert.equal((JSON.parse(readFileSync(cacheFile, 'utf8')) as { version: number }).version, 3);
  });

  test('newest version wins: a slow agent gets the newest version when it answers, and nobody waits for it', () => {
    const s = server();
    const slow = new FakeAgent('aaaaaaaaaaaaaaaa');
    const quick = new FakeAgent('bbbbbbbbbbbbbbbb');
    apply(s, vs('reviews', '1s'));
    s.distributor.subscribe(slow, undefined);
    s.distributor.subscribe(quick, undefined);
    assert.equal(slow.texts[0], quick.texts[0], 'one message text, built once, for every agent holding the same version');
    s.distributor.acknowledged(quick, 1, quick.last.digest, false);
    for (const t of ['2s', '3s', '4s']) {
      apply(s, vs('reviews', t));
      s.distributor.acknowledged(quick, quick.last.version, quick.last.digest, false);
    }
    assert.deepEqual(
      quick.messages.map((m) => m.version),
      [1, 2, 3, 4],
    );
    assert.deepEqual(
      slow.messages.map((m) => m.version),
      [1],
      'one message in flight per agent: nothing queues up behind it',
    );
    s.distributor.subscribe(slow, undefined);
    assert.equal(slow.texts.length, 1, 'a repeated hello (the agent\'s services changed) sends nothing while a version is in flight');
    s.distributor.acknowledged(slow, 1, slow.last.digest, false);
    assert.deepEqual(
      slow.messages.map((m) => m.version),
      [1, 4],
      'then straight to the newest',
    );
    assert.equal(slow.last.base?.version, 1);
    assert.equal(s.store.agents.get('bbbbbbbbbbbbbbbb')!.policyVersion, 4, 'the ACK is recorded');
  });

  test('an agent that says it holds the newest version gets nothing; one holding an unknown digest gets everything', () => {
    const s = server();
    apply(s, vs('reviews'));
    apply(s, vs('reviews', '5s'), vs('ratings'));
    const head = s.store.policy.get(2)!;
    const current = new FakeAgent('aaaaaaaaaaaaaaaa');
    s.distributor.subscribe(current, { version: 2, digest: head.digest });
    assert.equal(current.texts.length, 0);
    const stranger = new FakeAgent('bbbbbbbbbbbbbbbb');
    s.distributor.subscribe(stranger, { version: 1, digest: `sha256:${'0'.repeat(64)}` });
    assert.equal(stranger.last.base, undefined, 'a version the store does not know is no base for a delta');
    assert.equal(stranger.last.upserts.length, 2);
  });

  test('a NACK is recorded with its reason, the refused version is not sent again, and a later ACK clears it', () => {
    const s = server();
    const fake = new FakeAgent('aaaaaaaaaaaaaaaa');
    apply(s, vs('reviews'));
    s.distributor.subscribe(fake, undefined);
    s.distributor.refused(fake, 1, 'MESH_ERR_POLICY_INVALID: no good', undefined);
    assert.deepEqual({ ...s.store.agents.get('aaaaaaaaaaaaaaaa')!.policyError!, at: 0 }, { version: 1, message: 'MESH_ERR_POLICY_INVALID: no good', at: 0 });
    s.distributor.publish();
    assert.equal(fake.texts.length, 1, 'not sent again on this connection');
    apply(s, vs('reviews', '2s'));
    assert.equal(fake.last.version, 2);
    s.distributor.acknowledged(fake, 2, fake.last.digest, false);
    assert.equal(s.store.agents.get('aaaaaaaaaaaaaaaa')!.policyError, null);
  });
});

describe('policy verification on the agent', () => {
  /** A server with two versions, and an agent holding version 1 with version 2 (a delta) in hand. */
  function twoVersions(): { s: ReturnType<typeof server>; policy: MeshPolicy; state: StateDir; v2: PolicyMessage; v2Text: string; cacheBefore: string } {
    const s = server();
    const { policy, state } = agentPolicy(s.ca);
    const fake = new FakeAgent('aaaaaaaaaaaaaaaa');
    apply(s, vs('reviews'), vs('ratings'));
    s.distributor.subscribe(fake, undefined);
    policy.accept(fake.last);
    s.distributor.acknowledged(fake, 1, fake.last.digest, false);
    apply(s, vs('reviews', '7s'));
    return { s, policy, state, v2: fake.last, v2Text: fake.texts.at(-1)!, cacheBefore: readFileSync(join(state.dir, POLICY_CACHE_FILE), 'utf8') };
  }

  /** Asserts the agent refused and still holds version 1, in memory and on disk. */
  function keptVersion1(t: ReturnType<typeof twoVersions>): void {
    assert.equal(t.policy.holding?.version, 1);
    assert.equal(readFileSync(join(t.state.dir, POLICY_CACHE_FILE), 'utf8'), t.cacheBefore, 'the cache file is untouched');
    assert.ok(t.policy.lastRefusal, 'the refusal is remembered for status');
  }

  test('a tampered document is refused: the set no longer hashes to the signed digest', () => {
    const t = twoVersions();
    const tampered = { ...t.v2, upserts: [{ ...t.v2.upserts[0]!, source: t.v2.upserts[0]!.source.replace('7s', '9s') }] };
    refuses(() => t.policy.accept(tampered), 'MESH_ERR_POLICY_SIGNATURE', /policy version 2: its documents hash to sha256:[0-9a-f]{64}, not to the signed sha256:/);
    keptVersion1(t);
    assert.equal(t.policy.accept(t.v2).documents.length, 2, 'the genuine version is still accepted afterwards');
  });

  test('a tampered digest (matching tampered documents) is refused: the signature no longer matches', () => {
    const t = twoVersions();
    const upserts = [{ ...t.v2.upserts[0]!, source: t.v2.upserts[0]!.source.replace('7s', '9s') }];
    const ratings = t.s.store.policy.documentsAt(1).find((d) => d.name === 'ratings')!;
    const digest = policyDigest([...upserts, ratings]);
    refuses(() => t.policy.accept({ ...t.v2, upserts, digest }), 'MESH_ERR_POLICY_SIGNATURE', /the signature does not match version 2 and digest/);
    keptVersion1(t);
  });

  test('a signature by a key the certificate does not hold is refused', () => {
    const t = twoVersions();
    const forged = signPolicyVersion(generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey, 2, t.v2.digest);
    refuses(() => t.policy.accept({ ...t.v2, signature: forged }), 'MESH_ERR_POLICY_SIGNATURE', /the signature does not match/);
    refuses(() => t.policy.accept({ ...t.v2, signature: 'bm90IGEgc2lnbmF0dXJl' }), 'MESH_ERR_POLICY_SIGNATURE', /the signature does not match/);
    keptVersion1(t);
  });

  test('a signer certified by another CA is refused, even with the right SPIFFE ID', () => {
    const t = twoVersions();
    const evilCa = CertificateAuthority.create(TD);
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const cert = evilCa.issue({ spiffeId: SpiffeId.policySigner(TD), publicKey: createPublicKey(privateKey), lifetimeMs: 3_600_000 });
    refuses(() => t.policy.accept({ ...t.v2, signature: signPolicyVersion(privateKey, 2, t.v2.digest), signerCert: cert.pem }), 'MESH_ERR_POLICY_SIGNATURE', /not issued by a root of this agent's trust bundle/);
    keptVersion1(t);
  });

  test('a certificate of the mesh CA for another identity (a workload key) cannot sign policy', () => {
    const t = twoVersions();
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const cert = t.s.ca.issue({ spiffeId: SpiffeId.workload(TD, 'default', 'web'), publicKey: createPublicKey(privateKey), lifetimeMs: 3_600_000 });
    refuses(
      () => t.policy.accept({ ...t.v2, signature: signPolicyVersion(privateKey, 2, t.v2.digest), signerCert: cert.pem }),
      'MESH_ERR_POLICY_SIGNATURE',
      /signed by spiffe:\/\/mesh\.local\/ns\/default\/sa\/web, expected the policy signer spiffe:\/\/mesh\.local\/server\/policy/,
    );
    refuses(() => t.policy.accept({ ...t.v2, signerCert: 'not a certificate' }), 'MESH_ERR_POLICY_SIGNATURE', /cannot be parsed/);
    keptVersion1(t);
  });

  test('a genuine signature replayed under another version number is refused', () => {
    const t = twoVersions();
    refuses(() => t.policy.accept({ ...t.v2, version: 3 }), 'MESH_ERR_POLICY_SIGNATURE', /the signature does not match version 3/);
    keptVersion1(t);
  });

  test('a document whose source is not the document its key names is refused, even when properly signed', () => {
    const s = server();
    const { policy } = agentPolicy(s.ca);
    const documents = [{ kind: 'VirtualService', namespace: 'default', name: 'ratings', source: vs('reviews') }];
    const digest = policyDigest(documents);
    const msg: PolicyMessage = { type: 'policy', version: 1, digest, ...s.signer.sign(1, digest), upserts: documents, removals: [] };
    refuses(() => policy.accept(msg), 'MESH_ERR_POLICY_INVALID', /policy version 1 VirtualService\/default\/ratings: the source holds VirtualService\/default\/reviews, not that one document/);
    assert.equal(policy.holding, undefined);
  });

  test('a delta from a version the agent does not hold is refused', () => {
    const t = twoVersions();
    refuses(() => t.policy.accept({ ...t.v2, base: { version: 1, digest: `sha256:${'1'.repeat(64)}` } }), 'MESH_ERR_BAD_REQUEST', /a delta from version 1, but this agent holds version 1/);
    keptVersion1(t);
  });

  test('a signer certificate outside its validity is refused on arrival, but a cached version still loads after it expired', () => {
    const s = server();
    const fresh = agentPolicy(s.ca);
    const fake = new FakeAgent('aaaaaaaaaaaaaaaa');
    apply(s, vs('reviews'));
    s.distributor.subscribe(fake, undefined);
    fresh.policy.accept(fake.last);
    const twoYears = (): number => Date.now() + 2 * 365 * 86_400_000;
    const late = agentPolicy(s.ca, twoYears);
    refuses(() => late.policy.accept(fake.last), 'MESH_ERR_POLICY_SIGNATURE', /the signer certificate is valid from .* not now/);
    const restarted = new MeshPolicy({ state: fresh.state, trustDomain: TD, roots: () => [s.ca.root.pem], now: twoYears, log: silentLogger });
    const compiled = restarted.loadCached();
    assert.equal(compiled?.documents.length, 1, 'the server may be away for long; the cached version was checked when it arrived');
    assert.equal(restarted.holding?.version, 1);
  });

  test('a damaged or forged cache file is not used: the agent starts without it', () => {
    const t = twoVersions();
    const file = join(t.state.dir, POLICY_CACHE_FILE);
    const reopen = (): MeshPolicy => new MeshPolicy({ state: t.state, trustDomain: TD, roots: () => [t.s.ca.root.pem], now: Date.now, log: silentLogger });
    const good = reopen();
    assert.equal(good.loadCached()?.documents.length, 2);
    writeFileSync(file, t.cacheBefore.replace('1s', '9s'));
    const edited = reopen();
    assert.equal(edited.loadCached(), undefined, 'an edited document does not hash to the signed digest');
    assert.equal(edited.holding, undefined);
    writeFileSync(file, '{"version": 1');
    assert.equal(reopen().loadCached(), undefined, 'not JSON');
  });
});
