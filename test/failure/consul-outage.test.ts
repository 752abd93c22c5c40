// Failure 2: the Consul stand-in stops for 10 s under steady traffic: no request to the known endpoints fails.

import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { ConsulStandin } from '../consul-standin/consul-standin';
import { agentAdmin, failureText, Fleet, report, until } from './fleet';
import { LOAD } from './steady-load';

interface ConsulStatus {
  upstreams: { endpoints: string[] }[];
  consul: { service: string; stale: boolean }[];
}

const OUTAGE_S = 10;

describe('failure: Consul away for 10 s under load', () => {
  const consul = new ConsulStandin({ waitJitter: false });
  const fleet = new Fleet();
  after(async () => {
    await fleet.close();
    await consul.close();
  });

  it('zero failed requests to the endpoints known before; the watch recovers when Consul is back', async (t) => {
    await consul.start(0);
    await fleet.start({ apiNodes: 1, consulAddress: consul.address });
    for (const [i, n] of fleet.apis.entries()) {
      const res = await fetch(`http://${consul.address}/v1/catalog/register`, {
        method: 'PUT',
        body: JSON.stringify({
          Node: n.name,
          Address: '127.0.0.1',
          Service: { ID: `api-${i + 1}`, Service: 'api', Port: n.appPort, Meta: { 'mesh-inbound-port': String(n.inboundPort) } },
          Check: { CheckID: `service:api-${i + 1}`, ServiceID: `api-${i + 1}`, Name: 'app', Status: 'passing' },
        }),
      });
      assert.equal(res.status, 200);
    }
    const status = (): Promise<ConsulStatus> => agentAdmin<ConsulStatus>(fleet.caller, '/status');
    await until('the caller learns the api endpoint from Consul', async () => ((await status()).upstreams[0]!.endpoints.length === 1 ? true : undefined));

    const load = fleet.startLoad();
    await load.runFor(LOAD.seconds / 5);
    const stoppedAt = Date.now();
    await consul.stop();
    await until('the caller marks api stale', async () => ((await status()).consul.find((w) => w.service.startsWith('api'))?.stale ? true : undefined));
    const staleAfterMs = Date.now() - stoppedAt;
    await load.runFor(OUTAGE_S - staleAfterMs / 1000);
    assert.equal((await status()).upstreams[0]!.endpoints.length, 1, 'the last known endpoints are kept');
    const backAt = Date.now();
    await consul.start();
    await until('the caller has a fresh answer from Consul', async () => ((await status()).consul.find((w) => w.service.startsWith('api'))?.stale === false ? true : undefined));
    const freshAfterMs = Date.now() - backAt;
    await load.runFor(LOAD.seconds / 5);

    const s = await load.stop();
    const during = load.summary(stoppedAt, backAt);
    report(t, s, { 'requests while Consul was down': during.sent, 'marked stale after (ms)': staleAfterMs, 'fresh again after (ms)': freshAfterMs });
    assert.ok(during.sent >= LOAD.rate * OUTAGE_S * 0.8, `traffic ran through the outage: ${during.sent} requests`);
    assert.equal(s.failed, 0, failureText(s));
  });
});
