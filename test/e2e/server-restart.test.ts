// The server restarted on the same data dir keeps its CA and its agents; agents keep serving while it is away.

import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { request } from 'undici';
import { startHttpApp } from '../helpers/apps';
import { TestMesh } from '../helpers/mesh';
import { freePort, runMeshAgent } from '../helpers/processes';

describe('server restart', () => {
  const mesh = new TestMesh();
  let api: Awaited<ReturnType<typeof startHttpApp>> | undefined;
  after(async () => {
    api?.server.close();
    await mesh.close();
  });

  it('keeps the CA fingerprint and the enrolled agents; traffic flows while the server is down', async () => {
    const listen = ['--listen', `127.0.0.1:${await freePort()}`, '--admin-listen', `127.0.0.1:${await freePort()}`];
    const server = await mesh.startServer(listen);
    api = await startHttpApp('api');
    const { a, b, upstream } = await mesh.startPair(server, api.port);
    const call = async (): Promise<number> => (await request(`http://127.0.0.1:${upstream}/`, { headersTimeout: 5000 })).statusCode;
    assert.equal(await call(), 200);

    assert.equal(await server.proc.stop('SIGTERM'), 0);
    assert.equal(await call(), 200, 'agents keep serving with their certificates while the server is down');

    const again = await mesh.startServer(listen, server.dataDir);
    assert.equal(again.fingerprint, server.fingerprint, 'same CA after restart');
    assert.doesNotMatch(again.proc.stdout, /admin token \(shown once/, 'the admin token is printed only on first start');
    const ca = await runMeshAgent(['ca', 'show', '--admin', again.adminAddr, '--data-dir', again.dataDir, '-o', 'json']);
    assert.equal((JSON.parse(ca.stdout) as { fingerprint: string }).fingerprint, server.fingerprint);

    // Both agents reconnect on their own (backoff), as the same enrolled agents.
    await a.proc.waitFor(/connected to server[\s\S]*connected to server/, 20_000);
    await b.proc.waitFor(/connected to server[\s\S]*connected to server/, 20_000);
    const status = JSON.parse((await runMeshAgent(['status', '--admin', again.adminAddr, '--data-dir', again.dataDir, '-o', 'json'])).stdout) as { agents: { nodeName: string; connected: boolean }[] };
    assert.deepEqual(status.agents.map((x) => x.nodeName).sort(), ['node-a', 'node-b']);
    assert.equal(await call(), 200);
  });
});
