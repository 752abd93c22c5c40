// Killing the server (SIGKILL) while it applies policy leaves the store either before or after each apply: after every
// kill the store opens, passes SQLite's integrity check, and every version holds its whole apply and nothing else.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { Agent, request } from 'undici';
import { policyDigest } from '../../src/protocol';
import { Store } from '../../src/store';
import { TestMesh, type ServerHandle } from '../helpers/mesh';

/** Documents per apply: a half-stored apply would show as a version mixing two apply markers. */
const DOCS = 20;

function applyBody(seq: number): string {
  const text = Array.from(
    { length: DOCS },
    (_, i) => `# apply ${seq}\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { name: svc-${i} }\nspec:\n  hosts: [svc-${i}]\n  http:\n    - timeout: ${seq + 1}ms\n      route: [{ destination: { host: svc-${i} } }]\n`,
  ).join('---\n');
  return JSON.stringify({ files: [{ name: `apply-${seq}.yaml`, text }] });
}

/** Applies in a loop, killing the server `killAfterMs` after the first apply; resolves with the newest version it confirmed and whether a request was cut off. */
async function applyUntilKilled(server: ServerHandle, firstSeq: number, killAfterMs: number): Promise<{ confirmed: number; cutOff: boolean; applies: number }> {
  const token = readFileSync(join(server.dataDir, 'admin-token'), 'utf8').trim();
  const dispatcher = new Agent({ connections: 1 });
  let confirmed = 0;
  let applies = 0;
  let killed = false;
  let killer: NodeJS.Timeout | undefined;
  // Armed after the first apply went through, so every round has applied something before its kill.
  const arm = (): void => {
    killer ??= setTimeout(() => {
      killed = true;
      server.proc.child.kill('SIGKILL');
    }, killAfterMs);
  };
  try {
    for (let seq = firstSeq; ; seq++) {
      try {
        const r = await request(`http://${server.adminAddr}/v1/policy/apply`, { method: 'POST', dispatcher, headers: { authorization: `Bearer ${token}` }, body: applyBody(seq) });
        const json = (await r.body.json()) as { version: number; created: boolean };
        assert.equal(r.statusCode, 200, JSON.stringify(json));
        assert.equal(json.created, true);
        confirmed = json.version;
        applies++;
        arm();
      } catch (err) {
        if (!killed) throw err;
        return { confirmed, cutOff: true, applies };
      }
      if (killed) return { confirmed, cutOff: false, applies };
    }
  } finally {
    clearTimeout(killer);
    await server.proc.exited;
    await dispatcher.close();
  }
}

/** Opens the store the dead server left and checks every version; returns the newest. */
function checkStore(file: string): number {
  const raw = new Database(file);
  try {
    assert.equal(raw.pragma('integrity_check', { simple: true }), 'ok');
  } finally {
    raw.close();
  }
  const store = Store.open(file);
  try {
    const head = store.policy.headVersion();
    for (let v = 1; v <= head; v++) {
      const row = store.policy.get(v);
      assert.ok(row, `version ${v} exists (versions have no gaps)`);
      const docs = store.policy.documentsAt(v);
      assert.equal(docs.length, DOCS, `version ${v} holds every document`);
      assert.equal(row.documents, DOCS);
      assert.equal(row.changes.length, DOCS, `version ${v} records a change per document`);
      const markers = new Set(docs.map((d) => /^# apply (\d+)$/m.exec(d.source)?.[1]));
      assert.equal(markers.size, 1, `version ${v} is one whole apply, not parts of ${[...markers].join(' and ')}`);
      assert.equal(policyDigest(docs), row.digest, `version ${v} hashes to its digest`);
    }
    return head;
  } finally {
    store.close();
  }
}

describe('server killed during applies', () => {
  const mesh = new TestMesh();
  after(() => mesh.close());

  it('leaves the store before or after each apply, never in between (3 kills)', { timeout: 180_000 }, async () => {
    const dataDir = join(mesh.root, 'server');
    const file = join(dataDir, 'mesh.db');
    let seq = 0;
    let head = 0;
    let cutOff = 0;
    for (const killAfterMs of [300, 900, 1700]) {
      const server = await mesh.startServer([], dataDir);
      const round = await applyUntilKilled(server, seq, killAfterMs);
      seq += round.applies + 1;
      if (round.cutOff) cutOff++;
      const newest = checkStore(file);
      assert.ok(newest >= round.confirmed && newest <= round.confirmed + 1, `the store holds version ${newest}; the server had confirmed ${round.confirmed}, and at most one more was under way`);
      assert.ok(newest >= head, 'no confirmed version was lost');
      assert.ok(round.applies > 0, 'the server applied something before it was killed');
      head = newest;
    }
    assert.ok(cutOff > 0, 'at least one kill cut off an apply in flight');
    // The server starts again on what it left and answers with the same newest version.
    const server = await mesh.startServer([], dataDir);
    const token = readFileSync(join(dataDir, 'admin-token'), 'utf8').trim();
    const r = await request(`http://${server.adminAddr}/v1/policy`, { headers: { authorization: `Bearer ${token}` } });
    assert.equal(((await r.body.json()) as { version: number }).version, head);
  });
});
