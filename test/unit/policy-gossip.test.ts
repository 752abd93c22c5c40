// Unit tests for policy gossip's edges: what a peer may send (parsed and bounded), what an agent takes from a peer
// (only newer versions, verified like pushed ones; forged or replayed ones refused, the held version kept), and when
// rounds run.

import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { once } from 'node:events';
import { connect, createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { createSecureContext, type TLSSocket } from 'node:tls';
import { AgentMetrics } from '../../src/agent/agent-metrics';
import { MeshPolicy, POLICY_CACHE_FILE, type HeldPolicyVersion } from '../../src/agent/mesh-policy';
import { PolicyGossip, type PolicyGossipDeps } from '../../src/agent/policy-gossip';
import { StateDir } from '../../src/agent/state-dir';
import { CertificateAuthority, SpiffeId } from '../../src/ca';
import { isMeshError, type MeshErrorCode } from '../../src/errors';
import { parseGossipMessage, policyDigest, type PolicyDocumentSource } from '../../src/protocol';
import { PolicySigner } from '../../src/server/policy-signer';
import { Store } from '../../src/store';
import { silentLogger } from '../../src/telemetry';

const TD = 'mesh.local';
const root = mkdtempSync(join(tmpdir(), 'mesh-policy-gossip-'));
const store = Store.open(join(root, 'mesh.db'));
after(() => {
  store.close();
  rmSync(root, { recursive: true, force: true });
});
const ca = CertificateAuthority.create(TD);
const signer = new PolicySigner(store, ca, Date.now);

const vs = (host: string, timeout: string): PolicyDocumentSource => ({
  kind: 'VirtualService',
  namespace: 'default',
  name: host,
  source: `apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { name: ${host} }\nspec:\n  hosts: [${host}]\n  http:\n    - timeout: ${timeout}\n      route: [{ destination: { host: ${host} } }]\n`,
});

/** A version as the server would sign it. */
function signed(version: number, documents: PolicyDocumentSource[]): HeldPolicyVersion {
  const digest = policyDigest(documents);
  return { version, digest, ...signer.sign(version, digest), documents };
}

function refuses(fn: () => unknown, code: MeshErrorCode, re: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(isMeshError(err, code), `expected ${code}, got ${String(err)}`);
    assert.match(err.message, re);
    return true;
  });
}

let n = 0;
function agent(): { policy: MeshPolicy; state: StateDir } {
  const state = new StateDir(join(root, `agent-${n++}`));
  return { policy: new MeshPolicy({ state, trustDomain: TD, roots: () => [ca.root.pem], now: Date.now, log: silentLogger }), state };
}

describe('policy from a peer', () => {
  test('a newer signed version is taken, compiled and cached; an older or equal one is refused', () => {
    const { policy, state } = agent();
    const v2 = signed(2, [vs('reviews', '2s')]);
    assert.equal(policy.acceptFromPeer(v2).routesFor({ name: 'reviews', namespace: 'default' }).entries[0]!.route.timeoutMs, 2000);
    assert.deepEqual(policy.holding, { version: 2, digest: v2.digest });
    assert.equal((JSON.parse(readFileSync(join(state.dir, POLICY_CACHE_FILE), 'utf8')) as { version: number }).version, 2);
    refuses(() => policy.acceptFromPeer(signed(1, [vs('reviews', '1s')])), 'MESH_ERR_GOSSIP', /version 1 from a peer is not newer than version 2/);
    refuses(() => policy.acceptFromPeer(v2), 'MESH_ERR_GOSSIP', /not newer/);
    assert.equal(policy.current?.signature, v2.signature, 'the whole signed version is held, to serve to peers');
  });

  test('tampered documents, a signature replayed under another number, and a self-signed signer are refused; the held version stays', () => {
    const { policy } = agent();
    const v2 = signed(2, [vs('reviews', '2s')]);
    policy.acceptFromPeer(v2);
    const v3 = signed(3, [vs('reviews', '3s')]);
    refuses(() => policy.acceptFromPeer({ ...v3, documents: [vs('reviews', '9s')] }), 'MESH_ERR_POLICY_SIGNATURE', /hash to sha256:[0-9a-f]+, not to the signed/);
    refuses(() => policy.acceptFromPeer({ ...v3, version: 4 }), 'MESH_ERR_POLICY_SIGNATURE', /policy version 4: the signature does not match/);
    const other = CertificateAuthority.create(TD);
    const otherStore = Store.open(join(root, 'other.db'));
    const forged = new PolicySigner(otherStore, other, Date.now).sign(3, v3.digest);
    otherStore.close();
    refuses(() => policy.acceptFromPeer({ ...v3, ...forged }), 'MESH_ERR_POLICY_SIGNATURE', /not issued by a root of this agent's trust bundle/);
    assert.deepEqual(policy.holding, { version: 2, digest: v2.digest });
    assert.equal(policy.acceptFromPeer(v3).documents.length, 1, 'the genuine version 3 is still taken');
  });
});

describe('gossip messages from a peer', () => {
  test('the four messages parse', () => {
    const digest = `sha256:${'a'.repeat(64)}`;
    assert.deepEqual(parseGossipMessage(`{"type":"hello","protocol":1,"policy":{"version":3,"digest":"${digest}"}}`), { type: 'hello', protocol: 1, policy: { version: 3, digest } });
    assert.deepEqual(parseGossipMessage('{"type":"hello","protocol":1}'), { type: 'hello', protocol: 1 });
    assert.deepEqual(parseGossipMessage('{"type":"pull","version":3}'), { type: 'pull', version: 3 });
    assert.deepEqual(parseGossipMessage('{"type":"done"}'), { type: 'done' });
    const doc = vs('reviews', '1s');
    const p = parseGossipMessage(JSON.stringify({ type: 'policy', version: 3, digest, signature: 'c2ln', signerCert: 'PEM', documents: [{ ...doc, extra: 1 }] }));
    assert.deepEqual(p, { type: 'policy', version: 3, digest, signature: 'c2ln', signerCert: 'PEM', documents: [doc] }, 'only the known fields are kept');
  });

  test('bad messages are refused with MESH_ERR_GOSSIP naming what is wrong', () => {
    const cases: [string, RegExp][] = [
      ['not json', /not valid JSON/],
      ['[]', /must be a JSON object/],
      ['{"type":"gimme"}', /unknown gossip message type "gimme"/],
      ['{"type":"hello"}', /hello.protocol must be an integer/],
      ['{"type":"hello","protocol":1,"policy":{"version":0,"digest":"x"}}', /hello.policy.version must be an integer of at least 1/],
      ['{"type":"hello","protocol":1,"policy":{"version":2,"digest":"md5:abc"}}', /hello.policy.digest must look like sha256/],
      ['{"type":"pull","version":"3"}', /pull.version/],
      [`{"type":"policy","version":3,"digest":"sha256:${'a'.repeat(64)}","signature":"s","signerCert":"c","documents":{}}`, /policy.documents must be a list/],
      [`{"type":"policy","version":3,"digest":"sha256:${'a'.repeat(64)}","signature":"s","signerCert":"c","documents":[{"kind":"VirtualService"}]}`, /policy.documents\[0\].namespace must be a non-empty string/],
    ];
    for (const [text, re] of cases) refuses(() => parseGossipMessage(text), 'MESH_ERR_GOSSIP', re);
  });
});

/** Gossip for an agent cut off from the server (it may pull), with one peer and no timer. */
function gossipFor(policy: MeshPolicy, connector: PolicyGossipDeps['connector']): PolicyGossip {
  return new PolicyGossip({
    policy,
    context: () => createSecureContext(),
    trustDomain: TD,
    peers: () => [{ endpoint: { address: '127.0.0.1', port: 1, weight: 1, labels: {} }, sni: `api.default.${TD}`, expected: SpiffeId.workload(TD, 'default', 'api') }],
    mayPull: () => true,
    onAccepted: () => undefined,
    connector,
    intervalMs: 3_600_000,
    fanout: 3,
    now: Date.now,
    log: silentLogger,
  });
}

describe('gossip rounds', () => {
  test('a version taken while a round runs is told in a round right after it, not dropped', async () => {
    // Dials that hang until the test ends them: a peer that is slow to answer (a dial may take up to 15 s).
    const dials: ((err: Error) => void)[] = [];
    const gossip = gossipFor(agent().policy, { connect: () => new Promise<TLSSocket>((_, reject) => dials.push(reject)) });
    try {
      const timerRound = gossip.round();
      assert.equal(dials.length, 1, 'the round dials its peer');
      gossip.nudge(); // the agent took a new version (from the server, or from a peer in this very round)
      await new Promise((r) => setTimeout(r, 20));
      assert.equal(dials.length, 1, 'one round at a time');
      dials[0]!(new Error('peer unreachable'));
      await timerRound;
      for (const deadline = Date.now() + 2000; dials.length < 2 && Date.now() < deadline; ) await new Promise((r) => setTimeout(r, 5));
      assert.equal(dials.length, 2, 'the nudge during the round ran a round after it');
      assert.equal(gossip.stats.failures, 1);
    } finally {
      gossip.close();
      for (const reject of dials) reject(new Error('test over'));
    }
  });
});

describe('gossip counters', () => {
  test('a newer version heard and refused is counted by reason, in the status and in /metrics', async () => {
    const { policy } = agent();
    const v2 = signed(2, [vs('reviews', '2s')]);
    policy.acceptFromPeer(v2);
    const gossip = gossipFor(policy, { connect: () => Promise.reject(new Error('not dialed here')) });
    // A peer with a valid agent identity offers "version 3": version 2's signature over other documents.
    const documents = [vs('reviews', '9s')];
    const forged = { type: 'policy', version: 3, digest: policyDigest(documents), signature: v2.signature, signerCert: v2.signerCert, documents };
    const server = createServer((socket) => gossip.serve(socket as unknown as TLSSocket, SpiffeId.agent(TD, 'peer-1')));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const peer: Socket = connect((server.address() as { port: number }).port, '127.0.0.1');
    let buf = '';
    peer.on('data', (chunk: Buffer) => {
      buf += chunk.toString();
      for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
        const type = (JSON.parse(buf.slice(0, nl)) as { type: string }).type;
        buf = buf.slice(nl + 1);
        if (type === 'hello') peer.write(`${JSON.stringify({ type: 'hello', protocol: 1, policy: { version: 3, digest: forged.digest } })}\n`);
        else if (type === 'pull') peer.write(`${JSON.stringify(forged)}\n`);
        else if (type === 'done') peer.end(`${JSON.stringify({ type: 'done' })}\n`);
      }
    });
    await once(peer, 'close');
    server.close();
    gossip.close();
    assert.deepEqual(policy.holding, { version: 2, digest: v2.digest }, 'the forged version is not held');
    const { exchanges, newerHeard, pulls, refused, refusedBy } = gossip.stats;
    assert.deepEqual({ exchanges, newerHeard, pulls, refused, refusedBy }, { exchanges: 1, newerHeard: 1, pulls: 0, refused: 1, refusedBy: { MESH_ERR_POLICY_SIGNATURE: 1 } });
    const metrics = new AgentMetrics({ consulWatches: () => [], clusters: () => [], certificates: () => [], policyVersion: () => 2, upstreams: () => [], gossip: () => gossip.stats, now: Date.now });
    const text = metrics.registry.render();
    for (const line of ['mesh_gossip_exchanges_total 1', 'mesh_gossip_failures_total 0', 'mesh_gossip_newer_versions_heard_total 1', 'mesh_gossip_pulls_total 0', 'mesh_gossip_refusals_total{reason="MESH_ERR_POLICY_SIGNATURE"} 1']) {
      assert.ok(text.split('\n').includes(line), `${line} in:\n${text}`);
    }
  });
});
