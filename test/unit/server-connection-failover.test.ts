// Unit tests for ServerConnection's choice of server replica (HA discovery): agents start spread over the replicas,
// the agents of a failed replica spread over the others, and each agent tries every replica in turn.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Clock } from '../../src/agent/clock';
import { ServerConnection } from '../../src/agent/server-connection';
import { CertificateAuthority } from '../../src/ca';
import { CHANNEL_PROTOCOL, MESH_VERSION } from '../../src/protocol';
import { silentLogger } from '../../src/telemetry';
import { freePort } from '../helpers/processes';
import { seeded } from '../helpers/seeded-random';

const AGENTS = 150;
const ATTEMPTS = 3;

/**
 * Starts AGENTS connections discovering three replicas where nothing listens; each connect is refused at once. The
 * retry timer (the clock) records the replica just tried and retries at once, ATTEMPTS times. Resolves with each
 * agent's replicas in the order tried.
 */
async function dialOrders(replicas: string[]): Promise<string[][]> {
  const { certPem, keyPem } = CertificateAuthority.create('failover.test').material;
  return Promise.all(
    Array.from({ length: AGENTS }, (_, i) => {
      const tried: string[] = [];
      return new Promise<string[]>((resolve) => {
        const clock: Clock = {
          now: Date.now,
          setTimeout: (fn) => {
            tried.push(conn.server);
            if (tried.length < ATTEMPTS) return setTimeout(fn, 0);
            conn.close();
            resolve(tried);
            return {};
          },
          clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
        };
        const conn = new ServerConnection(
          '127.0.0.1:1',
          'failover.test',
          () => ({ key: keyPem, cert: certPem, roots: [certPem] }),
          () => ({ nodeName: `n${i}`, address: '127.0.0.1', services: [], upstreams: [], version: MESH_VERSION, protocol: CHANNEL_PROTOCOL, policyOverride: false }),
          clock,
          silentLogger,
          async () => replicas,
          seeded(i + 1),
        );
        conn.start();
      });
    }),
  );
}

test('HA discovery: agents start spread, a failed replica\'s agents spread over the others, every replica is tried in turn', async () => {
  const replicas = await Promise.all([freePort(), freePort(), freePort()]).then((ports) => ports.map((p) => `127.0.0.1:${p}`));
  const orders = await dialOrders(replicas);
  const share = (list: string[], r: string): number => list.filter((x) => x === r).length / list.length;
  for (const r of replicas) {
    assert.ok(share(orders.map((o) => o[0]!), r) > 0.2, `first connects spread: ${share(orders.map((o) => o[0]!), r)} on ${r}`);
    // The agents whose first replica failed move on; they must not all take the same next one.
    const next = orders.filter((o) => o[0] === r).map((o) => o[1]!);
    for (const other of replicas.filter((x) => x !== r)) {
      assert.ok(share(next, other) > 0.25, `the agents of failed ${r} spread over the others: ${share(next, other)} of ${next.length} went to ${other}`);
    }
  }
  for (const o of orders) assert.equal(new Set(o).size, ATTEMPTS, `each agent tries every replica in turn: ${o.join(', ')}`);
});
