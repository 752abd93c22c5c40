// Failure 7: the caller agent's state dir fills up, then turns read-only, while certificates renew every 3 s under
// steady traffic: each failed save is logged with a clear error, renewals go on in memory, no request fails.
//
// The state dir is a 256 KiB tmpfs in a mount namespace of the agent's own (unshare), so filling it and remounting it
// read-only touch nothing outside that process, and disappear with it. As root, chmod would not stop the agent
// writing: that is why a real read-only mount is used, and why the test needs root.

import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { agentAdmin, apiTrafficPolicy, failureText, Fleet, report, until } from './fleet';
import { LOAD } from './steady-load';

const run = promisify(execFile);

/** A new mTLS connection every 10 requests, so renewed certificates are used all along. */
const NEW_CONNECTIONS = apiTrafficPolicy('{ connectionPool: { http: { maxRequestsPerConnection: 10 } } }');

function unavailable(): string | undefined {
  if (process.platform !== 'linux') return 'needs Linux mount namespaces';
  if (process.getuid?.() !== 0) return 'needs root (a private mount namespace with a tmpfs state dir); CI runs it as root';
  for (const cmd of ['unshare', 'nsenter']) if (spawnSync('sh', ['-c', `command -v ${cmd}`]).status !== 0) return `needs ${cmd} (apt-get install util-linux)`;
  return undefined;
}

describe('failure: the agent state dir full, then read-only, under load', { skip: unavailable() }, () => {
  const fleet = new Fleet();
  after(() => fleet.close());

  it('clear errors in the log, certificates renewed in memory, zero failed requests', async (t) => {
    const stateDir = join(fleet.mesh.root, 'node-a-state');
    mkdirSync(stateDir);
    // unshare execs sh, which mounts the tmpfs and execs the agent: one pid throughout, so nsenter finds the namespace.
    const wrap = ['unshare', '--mount', '--propagation', 'private', 'sh', '-c', 'mount -t tmpfs -o size=256k,mode=0700 mesh-state "$0" && exec "$@"', stateDir];
    await fleet.start({ apiNodes: 1, serverArgs: ['--workload-cert-ttl', '6s'], policy: NEW_CONNECTIONS, callerWrap: wrap });
    const pid = String(fleet.caller.proc.child.pid);
    const inAgentMounts = (argv: string[]): Promise<{ stdout: string }> => run('nsenter', ['-t', pid, '-m', '--', ...argv]);
    const log = (): string => fleet.caller.proc.stdout + fleet.caller.proc.stderr;
    // The admin token is on the tmpfs, which only the agent's mount namespace sees.
    const token = (await inAgentMounts(['cat', `${stateDir}/admin-token`])).stdout.trim();
    const webCert = async (): Promise<{ serial: string; lastError: string | null }> =>
      (await agentAdmin<{ certificates: { identity: string; serial: string; lastError: string | null }[] }>(fleet.caller, '/status', token)).certificates.find((c) => c.identity.endsWith('/sa/web'))!;
    const webSerial = async (): Promise<string> => (await webCert()).serial;
    const renewedAfter = async (serial: string): Promise<string> => until('a renewal in memory', async () => ((await webSerial()) !== serial ? webSerial() : undefined), 15_000);

    const load = fleet.startLoad();
    await load.runFor(LOAD.seconds / 5);

    // Full: dd stops with ENOSPC once the tmpfs is.
    await inAgentMounts(['dd', 'if=/dev/zero', `of=${stateDir}/filler`, 'bs=4k']).catch((err: { stderr?: string }) => assert.match(String(err.stderr), /No space left/));
    const fullAt = Date.now();
    await until('a save fails with ENOSPC', () => (/cannot save the renewed certificate[^\n]*ENOSPC/.test(log()) ? true : undefined), 15_000);
    const onDisk = (await inAgentMounts(['openssl', 'x509', '-noout', '-serial', '-in', `${stateDir}/workloads/default.web.crt`])).stdout;
    const serialFull = await webSerial();
    await renewedAfter(serialFull);
    assert.deepEqual((await inAgentMounts(['ls', '-A', `${stateDir}/workloads`])).stdout.split('\n').filter((f) => f.endsWith('.tmp')), [], 'no half-written temporary files left');

    // Read-only: room again, but no writes at all.
    await inAgentMounts(['rm', `${stateDir}/filler`]);
    await inAgentMounts(['mount', '-o', 'remount,ro', stateDir]);
    const readOnlyAt = Date.now();
    await until('a save fails with EROFS', () => (/cannot save the renewed certificate[^\n]*EROFS/.test(log()) ? true : undefined), 15_000);
    await renewedAfter(await webSerial());
    await load.runFor(LOAD.seconds / 5);

    const s = await load.stop();
    const certStatus = await webCert();
    assert.equal((await inAgentMounts(['openssl', 'x509', '-noout', '-serial', '-in', `${stateDir}/workloads/default.web.crt`])).stdout, onDisk, 'the file on disk stayed as it was');
    assert.match(String(certStatus.lastError), /MESH_ERR_STATE_DIR: cannot write .*default\.web\.(key|crt).*EROFS/, 'status --agent shows why the certificate is not saved');
    const saveErrors = (log().match(/cannot save the renewed certificate/g) ?? []).length;
    report(t, s, { 'full for (ms)': readOnlyAt - fullAt, 'read-only for (ms)': Date.now() - readOnlyAt, 'failed saves logged': saveErrors });
    assert.equal(s.failed, 0, failureText(s));
  });
});
