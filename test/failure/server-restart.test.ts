// Failure 1: the server is SIGKILLed and started again under steady traffic: no request fails, the agents reconnect.

import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { runMeshAgent } from '../helpers/processes';
import { failureText, Fleet, report, until } from './fleet';
import { LOAD } from './steady-load';

const CONNECTED = /connected to server/g;

describe('failure: server killed and restarted under load', () => {
  const fleet = new Fleet();
  after(() => fleet.close());

  it('zero failed requests; every agent reconnects to the restarted server', async (t) => {
    await fleet.start({ apiNodes: 1 });
    const agents = [fleet.caller, ...fleet.apis.map((n) => n.agent)];
    const load = fleet.startLoad();
    await load.runFor(LOAD.seconds / 4);

    const killedAt = Date.now();
    assert.equal(await fleet.server.proc.stop('SIGKILL'), -1);
    await until('every agent sees the server go', () => (agents.every((a) => /server channel down/.test(a.proc.stderr)) ? true : undefined));
    await load.runFor(LOAD.seconds / 4);
    const restartedAt = Date.now();
    const server = await fleet.restartServer();
    // Each agent logs "connected to server" once per connection: a second line is the reconnect.
    await until('every agent reconnects', () => (agents.every((a) => (a.proc.stderr.match(CONNECTED) ?? []).length >= 2) ? true : undefined), 60_000);
    const reconnectMs = Date.now() - restartedAt;
    const status = JSON.parse((await runMeshAgent(['status', '--admin', server.adminAddr, '--data-dir', server.dataDir, '-o', 'json'])).stdout) as { agents: { nodeName: string; connected: boolean }[] };
    assert.deepEqual(status.agents.filter((a) => a.connected).map((a) => a.nodeName).sort(), ['node-a', 'node-b1'], 'the restarted server knows every agent as connected');
    await load.runFor(LOAD.seconds / 2);

    const s = await load.stop();
    report(t, s, { 'server down for (ms)': restartedAt - killedAt, 'all agents reconnected after (ms)': reconnectMs });
    assert.equal(s.failed, 0, failureText(s));
    assert.ok(s.sent >= LOAD.rate * LOAD.seconds * 0.8, `steady traffic: ${s.sent} requests`);
  });
});
