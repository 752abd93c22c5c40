// HaReplica.reportAgent on the Consul stand-in: an agent that moves to another replica and reports the same hello
// writes nothing to KV (a failover must not make every replica re-read all agent records once per moved agent).

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { HaReplica } from '../../src/server/ha/ha-replica';
import type { PolicyService } from '../../src/server/policy-service';
import type { HaConfig } from '../../src/server/server-config';
import { Store } from '../../src/store';
import { silentLogger } from '../../src/telemetry';
import { ConsulStandin } from '../consul-standin/consul-standin';
import { tempDir } from '../helpers/processes';

const consul = new ConsulStandin({ waitJitter: false, minSessionTtlMs: 100 });
const { dir, cleanup } = tempDir('mesh-ha-report-');
const replicas: HaReplica[] = [];
const stores: Store[] = [];
before(() => consul.start(0));
after(async () => {
  await Promise.all(replicas.map((r) => r.close()));
  for (const s of stores) s.close();
  await consul.close();
  cleanup();
});

function replica(name: string): { ha: HaReplica; store: Store } {
  const keyFile = join(dir, 'ha.key');
  writeFileSync(keyFile, randomBytes(32).toString('hex'), { mode: 0o600 });
  const config: HaConfig = { mode: 'consul', consul: { address: consul.address }, prefix: 'report/', keyFile, replicaName: name, adminAdvertise: `http://${name}`, sessionTtlMs: 10_000, lockDelayMs: 0, waitMs: 5000 };
  const store = Store.open(join(dir, `${name}.db`));
  const ha = new HaReplica({ config, store, me: { name, admin: `http://${name}`, agent: `${name}:1` }, log: silentLogger, now: Date.now });
  stores.push(store);
  replicas.push(ha);
  return { ha, store };
}

async function until(what: string, check: () => boolean | Promise<boolean>): Promise<void> {
  for (const deadline = Date.now() + 10_000; !(await check()); await new Promise((r) => setTimeout(r, 10))) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
  }
}

const agentPuts = (): number => consul.requests.filter((r) => r.method === 'PUT' && r.path.startsWith('/v1/kv/report/agents/')).length;
const kvRecord = async (id: string): Promise<unknown> => {
  const res = await fetch(`http://${consul.address}/v1/kv/report/agents/${id}?raw`);
  return res.status === 200 ? res.json() : undefined;
};

test('an agent reporting to a second replica what the first one already wrote to KV causes no write; a changed report does', async () => {
  const a = replica('a');
  const b = replica('b');
  // b follows KV (its policy service is not used: KV holds no policy versions here).
  await b.ha.start(undefined as unknown as PolicyService);
  const agent = { id: 'agent-1', nodeName: 'node-1', address: '10.0.0.1', enrolledAt: 1000, joinTokenId: null };
  const hello = { address: '10.0.0.1', services: ['api'], serviceLabels: { api: { app: 'api' } }, upstreams: ['db'] };
  a.store.agents.insert(agent);
  a.store.agents.touch(agent.id, 2000, hello);
  a.ha.reportAgent(agent.id);
  await until('the report in KV and on replica b', () => b.store.agents.get(agent.id)?.services.length === 1);
  assert.equal(agentPuts(), 1);

  // The agent moves to b and says the same hello.
  b.store.agents.touch(agent.id, 3000, hello);
  b.ha.reportAgent(agent.id);
  // Then it reports a new service: that one is written.
  b.store.agents.touch(agent.id, 4000, { ...hello, services: ['api', 'web'] });
  b.ha.reportAgent(agent.id);
  await until('the changed report in KV', async () => JSON.stringify((await kvRecord(agent.id)) as { services: string[] }).includes('web'));
  assert.equal(agentPuts(), 2, 'the unchanged report on b wrote nothing; the changed one did');
});
