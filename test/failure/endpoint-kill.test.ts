// Failure 4: the app behind one api endpoint is SIGKILLed under steady traffic: outlier detection ejects that
// endpoint, retries carry the requests it failed to the other one (zero failures), and it returns once restarted.

import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { agentAdmin, failureText, Fleet, report, RESILIENT_API_POLICY, until } from './fleet';
import { LOAD } from './steady-load';

interface Dump {
  clusters: { name: string; outlierDetection: { ejected: { endpoint: string; remainingMs: number }[] } | null }[];
}

describe('failure: an upstream endpoint killed under load', () => {
  const fleet = new Fleet();
  after(() => fleet.close());

  it('outlier detection ejects it; with retries no request fails; it serves again after a restart', async (t) => {
    await fleet.start({ policy: RESILIENT_API_POLICY });
    const b1 = fleet.apis[0]!;
    const ejected = async (): Promise<{ endpoint: string; remainingMs: number }[]> => (await agentAdmin<Dump>(fleet.caller, '/config_dump')).clusters.find((c) => c.name === 'api.default')!.outlierDetection!.ejected;
    const retries = async (): Promise<number> => (await agentAdmin<{ upstreams: { stats: { retries: number } }[] }>(fleet.caller, '/status')).upstreams[0]!.stats.retries;
    const load = fleet.startLoad();
    await load.runFor(LOAD.seconds / 4);
    await load.waitFor((o) => o.servedBy === 'api-1', 0);

    const killedAt = Date.now();
    assert.equal(await b1.app.stop('SIGKILL'), -1);
    const ejections = await until('the caller ejects node-b1', async () => {
      const now = await ejected();
      return now.some((e) => e.endpoint === `127.0.0.1:${b1.inboundPort}`) ? now : undefined;
    }, 10_000);
    const ejectedMs = Date.now() - killedAt;
    assert.deepEqual(ejections.map((e) => e.endpoint), [`127.0.0.1:${b1.inboundPort}`], 'only node-b1 is ejected');
    // While ejected, node-b1 is not picked: its failures stop, and with them the retries (before, about every other
    // request needed one). Watched for most of what is left of the ejection, which ends after 5 s.
    const retriesAtEjection = await retries();
    const windowStart = Date.now();
    await load.runFor(Math.max(0.5, (ejections[0]!.remainingMs - 1000) / 1000));
    const retriesWhileEjected = (await retries()) - retriesAtEjection;
    const sentWhileEjected = load.summary(windowStart, Date.now()).sent;
    assert.ok(retriesWhileEjected <= sentWhileEjected / 20, `${retriesWhileEjected} retries for ${sentWhileEjected} requests while node-b1 was ejected`);

    const restartAt = Date.now();
    b1.app = await fleet.startApp(1, b1.appPort);
    const back = await load.waitFor((o) => o.servedBy === 'api-1', restartAt, 40_000);
    await load.runFor(LOAD.seconds / 4);

    const s = await load.stop();
    report(t, s, { 'ejected after (ms)': ejectedMs, 'retries before the ejection': retriesAtEjection, 'retries while ejected': retriesWhileEjected, 'served again after restart (ms)': back.startedAt - restartAt });
    assert.equal(s.failed, 0, failureText(s));
    assert.ok(retriesAtEjection > 0, 'the requests node-b1 failed before its ejection were retried');
  });
});
