// Failure 6: the server is SIGKILLed at seeded random points of a loop of applies, again and again: its SQLite store
// always opens, and holds every apply entirely or not at all (versions, history and documents agree).

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { seeded } from '../helpers/seeded-random';
import { TestMesh, type ServerHandle } from '../helpers/mesh';
import { LOAD } from './steady-load';

/** Documents per apply: each apply is one transaction of this many new rows. */
const DOCS = 20;
const ROUNDS = Math.max(4, Math.round(LOAD.seconds / 2));

/** One apply of DOCS AuthorizationPolicies named `a<n>-d<j>`. */
const applyText = (n: number): string =>
  Array.from(
    { length: DOCS },
    (_, j) => `apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: { name: a${n}-d${j}, namespace: default }\nspec:\n  selector: { matchLabels: { app: api } }\n  action: ALLOW\n  rules: [{ to: [{ operation: { paths: ["/a${n}/${j}"] } }] }]\n`,
  ).join('---\n');

interface History {
  version: number;
  versions: { version: number; documents: number; operation: string }[];
}

describe('failure: the server killed in the middle of applies', () => {
  const mesh = new TestMesh();
  after(() => mesh.close());

  it(`the store opens after each of ${ROUNDS} kills and holds each apply whole or not at all`, async (t) => {
    const random = seeded(6);
    const dataDir = join(mesh.root, 'server');
    let next = 0;
    const acknowledged = new Map<number, number>(); // apply n -> the version the server answered
    let killedMidApply = 0;
    for (let round = 0; round < ROUNDS; round++) {
      const server = await mesh.startServer([], dataDir);
      const call = adminCaller(server);
      await check(call, acknowledged, `after restart ${round}`);
      // Applies back to back until the kill, which comes at a random point of one of them.
      let killed = false;
      let inFlight = false;
      let done = 0;
      let lastMs = 0;
      const loop = (async () => {
        while (!killed) {
          const n = next++;
          inFlight = true;
          const startedAt = Date.now();
          try {
            const res = await call('POST', '/v1/policy/apply', JSON.stringify({ files: [{ name: `a${n}.yaml`, text: applyText(n) }] }));
            if (res.status === 200) acknowledged.set(n, (res.body as { version: number }).version);
            lastMs = Date.now() - startedAt;
            done++;
          } catch {
            // the kill cut this apply: it may be stored whole or not at all
          }
          inFlight = false;
        }
      })();
      // After one apply went through (its time tells how long one takes here), at a random point of the next two.
      while (done === 0) await new Promise((r) => setTimeout(r, 10));
      await new Promise((r) => setTimeout(r, random() * 2 * lastMs));
      if (inFlight) killedMidApply++;
      killed = true;
      assert.equal(await server.proc.stop('SIGKILL'), -1);
      await loop;
    }
    const server = await mesh.startServer([], dataDir);
    const final = await check(adminCaller(server), acknowledged, 'at the end');
    t.diagnostic(`${ROUNDS} kills (${killedMidApply} with an apply in flight), ${next} applies sent, ${acknowledged.size} acknowledged, ${final} stored whole, none partly`);
    assert.ok(acknowledged.size >= ROUNDS, 'applies went through between the kills');
  });
});

type Call = (method: string, path: string, body?: string) => Promise<{ status: number; body: unknown }>;

function adminCaller(server: ServerHandle): Call {
  const token = readFileSync(join(server.dataDir, 'admin-token'), 'utf8').trim();
  return async (method, path, body) => {
    const res = await fetch(`http://${server.adminAddr}${path}`, { method, headers: { authorization: `Bearer ${token}` }, ...(body ? { body } : {}) });
    return { status: res.status, body: await res.json() };
  };
}

/**
 * Versions 1..V with no gap, version v holding v × DOCS documents, the newest version's documents being exactly the
 * DOCS of each of V applies, and every acknowledged apply among them. Returns V.
 */
async function check(call: Call, acknowledged: ReadonlyMap<number, number>, when: string): Promise<number> {
  const history = (await call('GET', '/v1/policy/history?limit=10000')).body as History;
  const versions = [...history.versions].sort((x, y) => x.version - y.version);
  assert.deepEqual(versions.map((v) => v.version), Array.from({ length: history.version }, (_, i) => i + 1), `${when}: versions 1..${history.version} with no gap`);
  for (const v of versions) assert.equal(v.documents, v.version * DOCS, `${when}: version ${v.version} holds ${v.documents} documents`);
  const current = (await call('GET', '/v1/policy')).body as { version: number; documents: { name: string }[] };
  assert.equal(current.version, history.version);
  const perApply = new Map<string, number>();
  for (const d of current.documents) {
    const n = /^a(\d+)-d\d+$/.exec(d.name)![1]!;
    perApply.set(n, (perApply.get(n) ?? 0) + 1);
  }
  for (const [n, count] of perApply) assert.equal(count, DOCS, `${when}: apply ${n} is stored with ${count} of its ${DOCS} documents`);
  assert.equal(perApply.size, history.version, `${when}: one version per stored apply`);
  for (const [n, version] of acknowledged) {
    assert.ok(perApply.has(String(n)), `${when}: apply ${n}, acknowledged as version ${version}, is lost`);
  }
  return perApply.size;
}
