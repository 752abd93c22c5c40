// Failure 3: an agent of a node that serves api is SIGKILLed and restarted under steady traffic: callers retry to the
// other node meanwhile (zero failures), and the restarted agent needs no token and serves with its cached certificates.

import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { agentAdmin, failureText, Fleet, report, RESILIENT_API_POLICY } from './fleet';
import { LOAD } from './steady-load';

interface CertStatus {
  certificates: { identity: string; serial: string | null }[];
}

const serials = async (f: Fleet, i: number): Promise<string[]> => (await agentAdmin<CertStatus>(f.apis[i]!.agent, '/status')).certificates.map((c) => `${c.identity} ${c.serial}`).sort();

describe('failure: an agent killed and restarted under load', () => {
  const fleet = new Fleet();
  after(() => fleet.close());

  it('zero failed requests with retries; the restarted agent uses its saved enrollment and certificates', async (t) => {
    await fleet.start({ policy: RESILIENT_API_POLICY });
    const b1 = fleet.apis[0]!;
    const before = await serials(fleet, 0);
    const load = fleet.startLoad();
    await load.runFor(LOAD.seconds / 4);
    await load.waitFor((o) => o.servedBy === 'api-1', 0);

    const killedAt = Date.now();
    assert.equal(await b1.agent.proc.stop('SIGKILL'), -1);
    await load.runFor(LOAD.seconds / 5);
    const restartAt = Date.now();
    const agent = await fleet.restartApiAgent(b1);
    const readyMs = Date.now() - restartAt;
    const output = agent.proc.stdout + agent.proc.stderr;
    assert.doesNotMatch(output, /enrolling|certificate issued/, 'no new enrollment and no new certificate: it came up with what it saved');
    assert.deepEqual(await serials(fleet, 0), before, 'the same node and workload certificates as before the kill');
    // The caller ejected node-b1 while it was down; it returns when the ejection ends.
    const back = await load.waitFor((o) => o.servedBy === 'api-1', restartAt, 30_000);
    const backMs = back.startedAt - restartAt;
    await load.runFor(LOAD.seconds / 4);

    const s = await load.stop();
    const down = load.summary(killedAt, restartAt + readyMs);
    const servedDuringOutage = new Set(load.outcomes.filter((o) => o.status === 200 && o.startedAt > killedAt + 1000 && o.startedAt < restartAt).map((o) => o.servedBy));
    const retries = (await agentAdmin<{ upstreams: { stats: { retries: number } }[] }>(fleet.caller, '/status')).upstreams[0]!.stats.retries;
    report(t, s, { 'requests while node-b1 was down': down.sent, 'restart to ready (ms)': readyMs, 'node-b1 served again after (ms)': backMs, 'caller retries': retries });
    assert.equal(s.failed, 0, failureText(s));
    assert.deepEqual([...servedDuringOutage], ['api-2'], 'while node-b1 was down, node-b2 served everything');
    assert.ok(retries > 0, 'the caller retried the requests node-b1 could not answer');
  });
});
