// HA mode: real server replicas on the Consul stand-in's KV and sessions — failover, fencing, catch-up, migration.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createServer, request as httpRequest, type IncomingMessage, type Server } from 'node:http';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { request } from 'undici';
import { ConsulStandin } from '../consul-standin/consul-standin';
import { startHttpApp } from '../helpers/apps';
import { TestMesh, type AgentHandle } from '../helpers/mesh';
import { freePort, meshAgent, runMeshAgent, tempDir, type Proc } from '../helpers/processes';

const TTL_MS = 1000;
const LOCK_DELAY_MS = 500;

interface Replica {
  readonly name: string;
  readonly proc: Proc;
  readonly admin: string;
  /** Its agent port, host:port. */
  readonly agent: string;
  readonly dataDir: string;
  readonly fingerprint: string;
}

const vs = (name: string): string => `apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { name: ${name} }\nspec:\n  hosts: [${name}]\n  http:\n    - route: [{ destination: { host: ${name} } }]\n`;

describe('HA control plane on Consul KV (stand-in)', () => {
  const consul = new ConsulStandin({ waitJitter: false, minSessionTtlMs: 100 });
  const { dir: root, cleanup } = tempDir('mesh-ha-');
  const keyFile = join(root, 'ha.key');
  const procs: Proc[] = [];
  const mesh = new TestMesh();
  let app: Awaited<ReturnType<typeof startHttpApp>> | undefined;
  let proxy: Server | undefined;
  before(async () => {
    await consul.start(0);
    writeFileSync(keyFile, randomBytes(32).toString('hex'), { mode: 0o600 });
  });
  after(async () => {
    traffic.stop = true;
    app?.server.close();
    await mesh.close();
    await Promise.all(procs.map((p) => p.stop('SIGKILL')));
    proxy?.closeAllConnections();
    proxy?.close();
    await consul.close();
    cleanup();
  });

  /** Starts a replica on fresh ports; a port another process took between freePort() and the bind is tried again. */
  async function startReplica(name: string, opts: { prefix?: string; consulAddr?: string; ttl?: string; dataDir?: string } = {}): Promise<Replica> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await startReplicaOnce(name, opts);
      } catch (err) {
        if (attempt >= 3 || !String(err).includes('EADDRINUSE')) throw err;
      }
    }
  }

  async function startReplicaOnce(name: string, opts: { prefix?: string; consulAddr?: string; ttl?: string; dataDir?: string }): Promise<Replica> {
    const adminPort = await freePort();
    const agent = `127.0.0.1:${await freePort()}`;
    const dataDir = opts.dataDir ?? join(root, name);
    const args = [
      'server', '--data-dir', dataDir, '--listen', agent, '--admin-listen', `127.0.0.1:${adminPort}`,
      '--ha', 'consul', '--ha-consul', opts.consulAddr ?? consul.address, '--ha-prefix', opts.prefix ?? 'mesh/', '--ha-key-file', keyFile,
      '--ha-replica-name', name, '--ha-session-ttl', opts.ttl ?? `${TTL_MS}ms`, '--ha-lock-delay', `${LOCK_DELAY_MS}ms`,
    ];
    const proc = meshAgent(name, args);
    procs.push(proc);
    const m = await proc.waitFor(/server ready: .* CA (sha256:[0-9a-f]+)/, 20_000);
    return { name, proc, admin: `http://127.0.0.1:${adminPort}`, agent, dataDir, fingerprint: m[1]! };
  }

  const token = (r: Replica): string => readFileSync(join(r.dataDir, 'admin-token'), 'utf8').trim();

  async function admin(r: Replica, method: 'GET' | 'POST', path: string, body?: unknown, base = r.admin): Promise<{ status: number; json: any; location?: string }> {
    const res = await request(`${base}${path}`, { method, headers: { authorization: `Bearer ${token(r)}` }, ...(body ? { body: JSON.stringify(body) } : {}), headersTimeout: 10_000 });
    return { status: res.statusCode, json: await res.body.json(), ...(typeof res.headers.location === 'string' ? { location: res.headers.location } : {}) };
  }

  const apply = (r: Replica, name: string, base?: string): ReturnType<typeof admin> => admin(r, 'POST', '/v1/policy/apply', { files: [{ name: `${name}.yaml`, text: vs(name) }] }, base);

  async function leading(r: Replica): Promise<boolean> {
    return (await admin(r, 'GET', '/v1/status')).json.ha.leading as boolean;
  }

  async function until<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 20_000): Promise<T> {
    for (const deadline = Date.now() + timeoutMs; ; await new Promise((r) => setTimeout(r, 25))) {
      const v = await fn().catch(() => undefined);
      if (v !== undefined) return v;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    }
  }

  const leaderOf = (rs: readonly Replica[]): Promise<Replica> =>
    until('a leader', async () => {
      for (const r of rs) if (await leading(r)) return r;
      return undefined;
    });

  /** Applies one document, trying the live replicas in turn (following a redirect) until one acknowledges it. */
  async function applyAcknowledged(live: () => readonly Replica[], name: string): Promise<number> {
    return until(`an acknowledged apply of ${name}`, async () => {
      for (const r of live()) {
        const res = await apply(r, name).catch(() => undefined);
        if (!res) continue;
        const done = res.status === 307 ? await apply(r, name, new URL(res.location!).origin).catch(() => undefined) : res;
        if (done?.status === 200) return done.json.version as number;
      }
      return undefined;
    });
  }

  let replicas: Replica[] = [];
  let acked: { name: string; version: number }[] = [];
  let agents: { a: AgentHandle; b: AgentHandle; upstream: number } | undefined;
  /** Requests through the mesh (node-a -> node-b) from the first leader kill to the end. */
  const traffic = { stop: false, ok: 0, failed: [] as string[], done: Promise.resolve() };

  /** node-b runs api, node-a calls it; both find the server replicas in Consul (consul.discoverServers). */
  async function startAgents(leader: Replica): Promise<void> {
    app = await startHttpApp('api');
    const server = { proc: leader.proc, dataDir: leader.dataDir, agentAddr: leader.agent, adminAddr: leader.admin.slice('http://'.length), fingerprint: leader.fingerprint };
    const consulBlock = `consul: { address: "${consul.address}", discoverServers: true }\n`;
    const b = await mesh.startAgent('node-b', mesh.writeConfig('b.yaml', `inbound: { listen: "127.0.0.1:0" }\nadmin: { listen: "127.0.0.1:0" }\n${consulBlock}services:\n  - { name: api, port: ${app.port}, protocol: http }\n`), { join: await mesh.token(server) });
    mesh.writeConfig('endpoints.yaml', `services:\n  api: [{ address: 127.0.0.1, port: ${b.inbound.split(':')[1]} }]\n`);
    const upstream = await freePort();
    const a = await mesh.startAgent(
      'node-a',
      mesh.writeConfig('a.yaml', `inbound: { listen: "127.0.0.1:0" }\nadmin: { listen: "127.0.0.1:0" }\nendpointsFile: {{root}}/endpoints.yaml\n${consulBlock}services:\n  - name: web\n    port: 1\n    protocol: http\n    upstreams: [{ service: api, port: ${upstream}, protocol: http }]\n`),
      { join: await mesh.token(server) },
    );
    agents = { a, b, upstream };
    traffic.done = (async () => {
      while (!traffic.stop) {
        try {
          const res = await request(`http://127.0.0.1:${upstream}/`, { headersTimeout: 5000 });
          await res.body.text();
          if (res.statusCode === 200) traffic.ok++;
          else traffic.failed.push(`HTTP ${res.statusCode}`);
        } catch (err) {
          traffic.failed.push((err as Error).message);
        }
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
  }

  async function agentStatusOf(a: AgentHandle): Promise<{ agent: { server: string; serverConnected: boolean; id: string }; policy: { meshVersion: number | null } }> {
    const res = await fetch(`http://${a.admin}/status`, { headers: { authorization: `Bearer ${readFileSync(join(a.stateDir, 'admin-token'), 'utf8').trim()}` } });
    return (await res.json()) as { agent: { server: string; serverConnected: boolean; id: string }; policy: { meshVersion: number | null } };
  }
  const agentServer = async (a: AgentHandle): Promise<{ server: string; serverConnected: boolean; id: string }> => (await agentStatusOf(a)).agent;
  const agentPolicy = async (a: AgentHandle): Promise<number | null> => (await agentStatusOf(a)).policy.meshVersion;

  it('three replicas: one leads, a follower redirects writes; killing the leader mid-stream loses no acknowledged apply', async () => {
    replicas = await Promise.all(['r1', 'r2', 'r3'].map((n) => startReplica(n)));
    assert.equal(new Set(replicas.map((r) => r.fingerprint)).size, 1, 'one CA shared through KV');
    assert.equal(new Set(replicas.map(token)).size, 1, 'one admin token shared through KV');
    const leader = await leaderOf(replicas);
    const follower = replicas.find((r) => r !== leader)!;
    const redirected = await apply(follower, 'redirected');
    assert.equal(redirected.status, 307);
    assert.equal(redirected.json.error.code, 'MESH_ERR_NOT_LEADER');
    assert.equal(redirected.location, `${leader.admin}/v1/policy/apply`);
    // The CLI follows the redirect by itself.
    const cli = await runMeshAgent(['apply', '--admin', follower.admin, '--admin-token', token(follower), '-f', writePolicy('cli', vs('cli')), '-o', 'json']);
    assert.equal(cli.code, 0, cli.stderr);
    acked.push({ name: 'cli', version: (JSON.parse(cli.stdout) as { version: number }).version });

    await startAgents(leader);
    const live = (): Replica[] => replicas.filter((r) => r.proc.running);
    for (let i = 0; i < 4; i++) acked.push({ name: `before-${i}`, version: await applyAcknowledged(live, `before-${i}`) });
    const killedAt = Date.now();
    await leader.proc.stop('SIGKILL');
    const writes = (async () => {
      for (let i = 0; i < 6; i++) acked.push({ name: `after-${i}`, version: await applyAcknowledged(live, `after-${i}`) });
    })();
    const next = await leaderOf(live());
    const electedInMs = Date.now() - killedAt;
    await writes;
    // The stand-in ends a session exactly at its TTL (real Consul may take up to 2×TTL); 1.5 s of slack for a loaded machine.
    assert.ok(electedInMs <= TTL_MS + LOCK_DELAY_MS + 1500, `new leader ${next.name} after ${electedInMs} ms (TTL ${TTL_MS} + lock delay ${LOCK_DELAY_MS})`);

    const versions = acked.map((a) => a.version);
    assert.equal(new Set(versions).size, versions.length, `no version number acknowledged twice: ${versions.join(',')}`);
    const history = (await admin(next, 'GET', '/v1/policy/history')).json.versions as { version: number; changes: { name: string }[] }[];
    const head = Math.max(...history.map((h) => h.version));
    assert.deepEqual(history.map((h) => h.version).sort((a, b) => a - b), Array.from({ length: head }, (_, i) => i + 1), 'versions run 1..head without gaps');
    for (const a of acked) {
      const v = history.find((h) => h.version === a.version);
      assert.deepEqual(v?.changes.map((c) => c.name), [a.name], `acknowledged version ${a.version} holds ${a.name}`);
    }
    // Every live replica applies the head (followers learn it through blocking queries).
    await until('followers at the head', async () => {
      const s = (await admin(next, 'GET', '/v1/status')).json.ha.replicas as { name: string; live: boolean; appliedVersion: number; leader: boolean }[];
      const alive = s.filter((x) => x.live);
      return alive.length === 2 && alive.every((x) => x.appliedVersion === head) && alive.some((x) => x.leader && x.name === next.name) ? true : undefined;
    });
    const text = await runMeshAgent(['status', '--admin', next.admin, '--admin-token', token(next)]);
    assert.match(text.stdout, new RegExp(`${next.name} leads`));
    assert.match(text.stdout, new RegExp(`${leader.name}\\s+follower\\s+gone`));
  });

  it('a new replica with an empty data dir catches up from KV alone', async () => {
    const head = Math.max(...acked.map((a) => a.version));
    const fresh = await startReplica('r4');
    replicas.push(fresh);
    const live = replicas.filter((r) => r.proc.running)[0]!;
    const theirs = (await admin(live, 'GET', '/v1/policy')).json;
    const mine = (await admin(fresh, 'GET', '/v1/policy')).json;
    assert.equal(mine.version, head);
    assert.equal(mine.digest, theirs.digest);
    assert.equal(fresh.fingerprint, live.fingerprint);
  });

  it('agents find the replicas in Consul and move to another when theirs dies, without enrolling again; traffic never fails', async () => {
    const { a } = agents!;
    const before = await until('node-a connected', async () => {
      const s = await agentServer(a);
      return s.serverConnected ? s : undefined;
    });
    const theirs = replicas.find((r) => r.agent === before.server && r.proc.running);
    assert.ok(theirs, `node-a is connected to a live replica (${before.server})`);
    await theirs.proc.stop('SIGKILL');
    const after = await until('node-a on another replica', async () => {
      const s = await agentServer(a);
      return s.serverConnected && s.server !== before.server ? s : undefined;
    });
    assert.equal(after.id, before.id, 'the same enrolled agent');
    assert.equal((a.proc.stdout + a.proc.stderr).match(/enrolling/g)?.length, 1, 'enrolled once, at its first start');
    // Whichever replica each agent is on (a follower learns versions from KV) pushed it the head.
    const head = Math.max(...acked.map((x) => x.version));
    for (const agent of [agents!.a, agents!.b]) await until(`${agent.proc.name} at policy v${head}`, async () => ((await agentPolicy(agent)) === head ? true : undefined));
    traffic.stop = true;
    await traffic.done;
    assert.ok(traffic.ok > 0, 'requests went through');
    assert.deepEqual(traffic.failed, [], `no failed request out of ${traffic.ok + traffic.failed.length}`);
  });

  it('a partitioned old leader (its session expired unnoticed) has its write refused by Consul and steps down', async () => {
    let partitioned = false;
    const port = await freePort();
    // p1 reaches Consul through this proxy; "partitioned" holds the answers it would notice the loss by.
    proxy = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const up = httpRequest({ host: '127.0.0.1', port: consul.port, method: req.method, path: req.url, headers: req.headers }, (answer: IncomingMessage) => {
          const body: Buffer[] = [];
          answer.on('data', (c: Buffer) => body.push(c));
          answer.on('end', () => {
            const url = req.url ?? '';
            if (partitioned && (url.startsWith('/v1/session/renew') || (url.startsWith('/v1/kv/part/leader') && url.includes('index=')))) return; // lost on the way
            res.writeHead(answer.statusCode ?? 502, answer.headers);
            res.end(Buffer.concat(body));
          });
        });
        up.on('error', () => res.destroy());
        up.end(Buffer.concat(chunks));
      });
    });
    await new Promise<void>((r) => proxy!.listen(port, '127.0.0.1', () => r()));
    const p1 = await startReplica('p1', { prefix: 'part/', consulAddr: `127.0.0.1:${port}`, ttl: '30s' });
    await until('p1 leading', async () => ((await leading(p1)) ? true : undefined));
    const p2 = await startReplica('p2', { prefix: 'part/', ttl: '30s' });
    assert.equal((await apply(p1, 'first')).json.version, 1);

    partitioned = true;
    const lock = await (await fetch(`http://${consul.address}/v1/kv/part/leader`)).json() as { Session: string }[];
    consul.kv.expireSession(lock[0]!.Session);
    await until('p2 leading', async () => ((await leading(p2)) ? true : undefined));
    assert.equal((await apply(p2, 'second')).json.version, 2);
    assert.equal(await leading(p1), true, 'p1 has not noticed yet');

    const stale = await apply(p1, 'stale');
    assert.equal(stale.status, 503);
    assert.equal(stale.json.error.code, 'MESH_ERR_NOT_LEADER');
    assert.match(stale.json.error.message, /refused by Consul .*session/);
    assert.equal(await leading(p1), false, 'p1 stepped down');
    const history = (await admin(p2, 'GET', '/v1/policy/history')).json.versions as { version: number; changes: { name: string }[] }[];
    assert.deepEqual(history.map((h) => [h.version, h.changes[0]!.name]), [[2, 'second'], [1, 'first']], 'the stale write left no trace');
  });

  it('migrate-to-ha copies a single server into KV; a replica started on it keeps its CA, policy and tokens', async () => {
    const adminPort = await freePort();
    const dataDir = join(root, 'single');
    const single = meshAgent('single', ['server', '--data-dir', dataDir, '--listen', '127.0.0.1:0', '--admin-listen', `127.0.0.1:${adminPort}`]);
    procs.push(single);
    const fingerprint = (await single.waitFor(/CA (sha256:[0-9a-f]+)/))[1]!;
    const as = { name: 'single', proc: single, admin: `http://127.0.0.1:${adminPort}`, agent: '', dataDir, fingerprint };
    await apply(as, 'one');
    await apply(as, 'two');
    await admin(as, 'POST', '/v1/tokens', { ttl: '1h', uses: 3 });
    assert.equal(await single.stop('SIGTERM'), 0);

    const flags = ['--data-dir', dataDir, '--ha-consul', consul.address, '--ha-prefix', 'mig/', '--ha-key-file', keyFile];
    const r = await runMeshAgent(['migrate-to-ha', ...flags, '-o', 'json']);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), { prefix: 'mig/', caFingerprint: fingerprint, policyVersion: 2, tokens: 1, agents: 0 });
    const again = await runMeshAgent(['migrate-to-ha', ...flags]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /MESH_ERR_CONFIG: Consul KV already holds mesh state at mig\/ca/);
    const kv = await (await fetch(`http://${consul.address}/v1/kv/mig/ca?raw`)).text();
    assert.doesNotMatch(kv, /PRIVATE KEY/, 'the CA key is never in KV in clear');

    const replica = await startReplica('m1', { prefix: 'mig/' });
    assert.equal(replica.fingerprint, fingerprint);
    assert.equal((await admin(replica, 'GET', '/v1/policy')).json.version, 2);
    assert.equal((await admin(replica, 'GET', '/v1/tokens')).json.tokens.length, 1);
    assert.equal((await apply(replica, 'three')).json.version, 3, 'the replica leads and continues the history');
  });

  function writePolicy(name: string, text: string): string {
    const file = join(root, `${name}.yaml`);
    writeFileSync(file, text);
    return file;
  }
});
