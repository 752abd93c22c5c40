// Failure 5: every certificate lives 6 s (renewed every 3 s) under steady traffic whose connections are recycled every
// 10 requests (streams, when multiplexed; the mTLS connection under them is new with every renewed certificate), so
// handshakes with fresh certificates never stop: zero failed requests, without any retry to hide one.

import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { agentAdmin, apiRetries, apiTrafficPolicy, failureText, Fleet, report } from './fleet';
import { LOAD } from './steady-load';

/** No retry to hide a failure, and a new mTLS connection every 10 requests. */
const NO_RETRIES_NEW_CONNECTIONS = [apiRetries('{ attempts: 0 }'), apiTrafficPolicy('{ connectionPool: { http: { maxRequestsPerConnection: 10 } } }')].join('---\n');

const ISSUED = /certificate issued/g;

describe('failure: certificates rotating under load', () => {
  const fleet = new Fleet();
  after(() => fleet.close());

  it('zero failed requests while every workload and node certificate is renewed every 3 s', async (t) => {
    await fleet.start({ apiNodes: 1, serverArgs: ['--workload-cert-ttl', '6s', '--node-cert-ttl', '6s'], policy: NO_RETRIES_NEW_CONNECTIONS });
    const agents = [fleet.caller, ...fleet.apis.map((n) => n.agent)];
    const issued = (): number => agents.reduce((sum, a) => sum + ((a.proc.stdout + a.proc.stderr).match(ISSUED) ?? []).length, 0);
    /** mTLS connections (handshakes), and upstream connections the caller's pools opened: TLS ones of their own or streams on a multiplexed one. */
    const accepted = async (): Promise<[number, number]> => {
      let handshakes = 0;
      let pooled = 0;
      for (const n of fleet.apis) {
        const i = (await agentAdmin<{ inboundStats: { accepted: number; muxSessions: number; muxStreams: number } }>(n.agent, '/status')).inboundStats;
        handshakes += i.accepted;
        pooled += i.accepted - i.muxSessions + i.muxStreams;
      }
      return [handshakes, pooled];
    };
    const serials = async (): Promise<Set<string>> => new Set((await agentAdmin<{ certificates: { serial: string }[] }>(fleet.caller, '/status')).certificates.map((c) => c.serial));
    const [issuedBefore, acceptedBefore, serialsBefore] = [issued(), await accepted(), await serials()];

    const load = fleet.startLoad();
    await load.runFor(LOAD.seconds);
    const s = await load.stop();

    const renewals = issued() - issuedBefore;
    const after = await accepted();
    const [handshakes, pooled] = [after[0] - acceptedBefore[0], after[1] - acceptedBefore[1]];
    const serialsAfter = await serials();
    report(t, s, { 'certificates issued during the run': renewals, 'mTLS connections accepted': handshakes, 'upstream connections opened': pooled });
    // 2 agents × 2 identities (node + workload), each renewed every 3 s.
    assert.ok(renewals >= 4 * (LOAD.seconds / 3 - 1), `${renewals} certificates issued in ${LOAD.seconds} s`);
    assert.ok(pooled >= (s.sent / 10) * 0.9, `connections were recycled: ${pooled} opened for ${s.sent} requests`);
    // Multiplexed (docs/mux.md), the caller opens a new mTLS connection with each certificate it renews.
    assert.ok(handshakes >= LOAD.seconds / 3 - 1, `${handshakes} mTLS handshakes in ${LOAD.seconds} s of certificates renewed every 3 s`);
    assert.ok([...serialsAfter].every((x) => !serialsBefore.has(x)), 'the caller holds only new certificates');
    assert.equal(s.failed, 0, failureText(s));
  });
});
