// Failure 1, second half: a policy applied while an agent is cut off from the server (its channel runs through a
// relay the test cuts) reaches the agent once the way is open again, and the server sees the agent acknowledge it.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { startHttpApp } from '../helpers/apps';
import { TestMesh } from '../helpers/mesh';
import { until } from './fleet';
import { LOAD } from './steady-load';

/** A TCP relay to `target` that the test can cut (every connection reset, new ones refused) and open again. */
class Relay {
  private readonly server: Server;
  private readonly open = new Set<Socket>();
  cut = false;

  constructor(target: string) {
    const [host, port] = [target.split(':')[0]!, Number(target.split(':')[1])];
    this.server = createServer((down) => {
      if (this.cut) return void down.destroy();
      const up = connect(port, host);
      for (const [a, b] of [[down, up], [up, down]] as const) {
        this.open.add(a);
        a.on('error', () => b.destroy());
        a.on('close', () => {
          this.open.delete(a);
          b.destroy();
        });
        a.pipe(b);
      }
    });
  }

  async listen(): Promise<number> {
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    return (this.server.address() as { port: number }).port;
  }

  sever(): void {
    this.cut = true;
    for (const s of this.open) s.resetAndDestroy();
  }

  close(): void {
    this.sever();
    this.server.close();
  }
}

const policy = (path: string): string =>
  `apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: { name: api, namespace: default }\nspec:\n  selector: { matchLabels: { app: api } }\n  action: ALLOW\n  rules: [{ to: [{ operation: { paths: ["${path}"] } }] }]\n`;

describe('failure: a policy applied while an agent is cut off from the server', () => {
  const mesh = new TestMesh();
  let relay: Relay | undefined;
  let app: Awaited<ReturnType<typeof startHttpApp>> | undefined;
  after(async () => {
    relay?.close();
    app?.server.close();
    await mesh.close();
  });

  it('reaches the agent after it reconnects, and the server sees it acknowledged', async (t) => {
    const server = await mesh.startServer();
    const token = readFileSync(join(server.dataDir, 'admin-token'), 'utf8').trim();
    const admin = async (method: string, path: string, body?: string): Promise<{ status: number; body: unknown }> => {
      const res = await fetch(`http://${server.adminAddr}${path}`, { method, headers: { authorization: `Bearer ${token}` }, ...(body ? { body } : {}) });
      return { status: res.status, body: await res.json() };
    };
    const apply = async (text: string): Promise<number> => {
      const r = await admin('POST', '/v1/policy/apply', JSON.stringify({ files: [{ name: 'api.yaml', text }] }));
      assert.equal(r.status, 200, JSON.stringify(r.body));
      return (r.body as { version: number }).version;
    };
    const agentView = async (): Promise<{ connected: boolean; version: number | null }> => {
      const a = ((await admin('GET', '/v1/status')).body as { agents: { connected: boolean; policy: { version: number | null } }[] }).agents[0]!;
      return { connected: a.connected, version: a.policy.version };
    };

    app = await startHttpApp('api');
    relay = new Relay(server.agentAddr);
    const relayPort = await relay.listen();
    const b = await mesh.startAgent('node-b', mesh.writeConfig('b.yaml', `server: "127.0.0.1:${relayPort}"\ninbound: { listen: "127.0.0.1:0" }\nadmin: { listen: "127.0.0.1:0" }\nservices: [{ name: api, port: ${app.port}, protocol: http }]\n`), { join: await mesh.token(server) });
    const log = (): string => b.proc.stdout + b.proc.stderr;
    const v1 = await apply(policy('/one'));
    await b.proc.waitFor(new RegExp(`mesh policy version accepted.*version=${v1}\\b`));
    await until('the server records the acknowledgement of the first version', async () => ((await agentView()).version === v1 ? true : undefined));

    const cutAt = Date.now();
    relay.sever();
    await until('the server sees the agent gone', async () => ((await agentView()).connected ? undefined : true));
    await b.proc.waitFor(/server channel down, retrying/);
    const v2 = await apply(policy('/two'));
    assert.deepEqual(await agentView(), { connected: false, version: v1 }, 'while cut off the agent holds the version before');
    assert.doesNotMatch(log(), new RegExp(`version accepted.*version=${v2}\\b`));
    // Cut off a while longer: the agent's reconnect attempts are refused and its backoff grows.
    await new Promise((r) => setTimeout(r, LOAD.seconds * 250));
    assert.doesNotMatch(log(), new RegExp(`version accepted.*version=${v2}\\b`));

    const openAt = Date.now();
    relay.cut = false;
    await b.proc.waitFor(new RegExp(`mesh policy version accepted.*version=${v2}\\b`), 60_000);
    const reachedMs = Date.now() - openAt;
    await until('the server records the acknowledgement', async () => ((await agentView()).version === v2 ? true : undefined));
    t.diagnostic(`cut off for ${openAt - cutAt} ms; version ${v2}, applied while cut off, reached the agent ${reachedMs} ms after the way opened`);
    assert.equal((await agentView()).connected, true);
  });
});
