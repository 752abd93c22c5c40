// Leader election on the Consul stand-in: one leader, takeover after TTL + lock delay, and stepping down at once when renewal fails.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { resolveConsulSettings } from '../../src/registry';
import { ConsulApi } from '../../src/server/ha/consul-api';
import { LeaderElection } from '../../src/server/ha/leader-election';
import { silentLogger } from '../../src/telemetry';
import { ConsulStandin } from '../consul-standin/consul-standin';

const consul = new ConsulStandin({ waitJitter: false, minSessionTtlMs: 100 });
const elections: LeaderElection[] = [];
const apis: ConsulApi[] = [];
before(() => consul.start(0));
after(async () => {
  await Promise.all(elections.map((e) => e.close()));
  for (const a of apis) a.close();
  await consul.close();
});

function elect(name: string, key: string, ttlMs: number, lockDelayMs: number): LeaderElection {
  const api = new ConsulApi(resolveConsulSettings({ address: consul.address }, {}));
  apis.push(api);
  const e = new LeaderElection(api, key, { name, admin: `http://${name}`, agent: `${name}:1` }, { sessionTtlMs: ttlMs, lockDelayMs, waitMs: 5000 }, silentLogger);
  elections.push(e);
  e.start();
  return e;
}

const when = (e: LeaderElection, leading: boolean): Promise<number> =>
  e.isLeader === leading ? Promise.resolve(Date.now()) : new Promise((resolve) => e.on('leading', (l: boolean) => l === leading && resolve(Date.now())));

describe('leader election', { timeout: 20_000 }, () => {
  test('one of two leads; when its session ends, a leader is elected again only after the lock delay, and both know who leads', async () => {
    const a = elect('a', 'e1/leader', 10_000, 300);
    await when(a, true);
    const b = elect('b', 'e1/leader', 10_000, 300);
    await until(() => b.leader?.name === 'a');
    assert.equal(b.isLeader, false);
    const lostAt = Date.now();
    const aDown = when(a, false);
    consul.kv.expireSession(a.session!);
    await aDown; // a sees the lock key released (its blocking query) and steps down
    // Both compete now (a with a new session): either may win, but neither before the lock delay is over.
    const [winner, other] = await Promise.race([when(a, true).then(() => [a, b] as const), when(b, true).then(() => [b, a] as const)]);
    const upAt = Date.now();
    assert.ok(upAt - lostAt >= 280, `the new leader waited for the lock delay (${upAt - lostAt} ms)`);
    const name = winner === a ? 'a' : 'b';
    assert.equal(winner.leader?.name, name);
    await until(() => other.leader?.name === name);
    assert.equal(other.isLeader, false);
  });

  test('a leader that loses Consul (its renewal or its watch of the lock fails) steps down at once, and leads again with a new session', async () => {
    const c = elect('c', 'e2/leader', 300, 0);
    await when(c, true);
    const down = when(c, false);
    await consul.stop(); // Consul unreachable: the next renewal (every TTL/3) fails
    const at = await down;
    await consul.start();
    assert.ok(at > 0);
    await when(c, true); // back: a new session, leading again
  });
});

async function until(ok: () => boolean): Promise<void> {
  for (const deadline = Date.now() + 5000; !ok(); await new Promise((r) => setTimeout(r, 20))) if (Date.now() > deadline) throw new Error('timed out');
}
