// HA control plane at scale: three real `mesh-agent server --ha consul` replicas on the Consul STAND-IN (a child process),
// N simulated agents spread over them by the agent's own discovery; per apply the time to every agent's ACK (overall and
// per replica) and each process's CPU and RSS; then a follower and later the leader killed with SIGKILL: the time until
// their agents are on another replica, and an apply reaching all agents after that. Not a test: results go to
// docs/benchmarks.md. Run: npx tsc -p . && node dist/bench/ha-scale.js [agents=2000] [rounds=5]
//
// Each simulated agent is the agent's ServerConnection with a real enrollment and the agent's real server discovery
// (ConsulLink.serverReplicas: passing `mesh-server` instances, a random one first, the next one on failure); one
// ConsulLink serves all of them. Agents ACK on arrival (a real agent verifies and compiles first, on its own CPU).

import { fork, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { ConsulLink } from '../src/agent/consul-link';
import { parseJoinToken } from '../src/ca';
import { silentLogger } from '../src/telemetry';
import { CLI, freePort, runMeshAgent, tempDir } from '../test/helpers/processes';
import { applyDocuments, channelErrors, ms, pct, roundDocuments, startSimAgents, usage, waitUntil, type SimAgent } from './sim-agents';

const AGENTS = Number(process.argv[2] ?? 2000);
const ROUNDS = Number(process.argv[3] ?? 5);
const DOCUMENTS = 50;
const PREFIX = 'mesh/';

interface Replica {
  readonly name: string;
  readonly child: ChildProcess;
  readonly admin: string;
  /** Its agent port, host:port (what agents connect to). */
  readonly agent: string;
  readonly dataDir: string;
  readonly logFile: string;
}

const { dir: root, cleanup } = tempDir('mesh-ha-bench-');
const keyFile = join(root, 'ha.key');
const replicas: Replica[] = [];
const agents: SimAgent[] = [];
let standin: ChildProcess | undefined;
let consulAddr = '';
let adminToken = '';

const sleep = (n: number): Promise<void> => new Promise((r) => setTimeout(r, n));
const live = (): Replica[] => replicas.filter((r) => r.child.exitCode === null && r.child.signalCode === null);
const seconds = (n: number): string => `${(n / 1000).toFixed(1)} s`;

/** Starts a replica (server logs to <root>/<name>.log) and waits for "server ready". */
async function startReplica(name: string): Promise<Replica> {
  const [adminPort, agentPort] = [await freePort(), await freePort()];
  const dataDir = join(root, name);
  const logFile = join(root, `${name}.log`);
  const fd = openSync(logFile, 'a');
  const args = ['server', '--data-dir', dataDir, '--listen', `127.0.0.1:${agentPort}`, '--admin-listen', `127.0.0.1:${adminPort}`,
    '--ha', 'consul', '--ha-consul', consulAddr, '--ha-prefix', PREFIX, '--ha-key-file', keyFile, '--ha-replica-name', name];
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', fd, fd] });
  closeSync(fd);
  const r: Replica = { name, child, admin: `http://127.0.0.1:${adminPort}`, agent: `127.0.0.1:${agentPort}`, dataDir, logFile };
  replicas.push(r);
  await waitUntil(`${name} ready (log: ${logFile})`, () => {
    if (r.child.exitCode !== null) throw new Error(`${name} exited ${r.child.exitCode}:\n${readFileSync(logFile, 'utf8').slice(-3000)}`);
    return /server ready/.test(readFileSync(logFile, 'utf8'));
  }, 60_000);
  return r;
}

async function isLeading(r: Replica): Promise<boolean> {
  const res = await fetch(`${r.admin}/v1/status`, { headers: { authorization: `Bearer ${adminToken}` }, signal: AbortSignal.timeout(5000) });
  return ((await res.json()) as { ha: { leading: boolean } }).ha.leading;
}

/** Polls the live replicas until one leads. */
async function leader(): Promise<Replica> {
  for (const deadline = Date.now() + 120_000; Date.now() < deadline; await sleep(50)) {
    for (const r of live()) if (await isLeading(r).catch(() => false)) return r;
  }
  throw new Error('no replica leads within 120 s');
}

/** A join token for `uses` enrollments at replica `r` (created on the leader). */
async function joinToken(r: Replica, via: Replica, uses: number): Promise<string> {
  const res = await runMeshAgent(['token', 'create', '--admin', via.admin, '--admin-token', adminToken, '--server', r.agent, '--ttl', '1h', '--uses', String(uses), '-o', 'json']);
  if (res.code !== 0) throw new Error(`token create failed: ${res.stderr}`);
  return (JSON.parse(res.stdout) as { token: string }).token;
}

/** The stand-in's requests since the last ask, by method and folded path. */
function standinCounts(): Promise<Record<string, { n: number; bytes: number }>> {
  return new Promise((resolve) => {
    standin!.once('message', (m: { counts: Record<string, { n: number; bytes: number }> }) => resolve(m.counts));
    standin!.send('counts');
  });
}

function printCounts(what: string, counts: Record<string, { n: number; bytes: number }>): void {
  const rows = Object.entries(counts).sort((a, b) => b[1].bytes - a[1].bytes || b[1].n - a[1].n);
  const size = (b: number): string => (b >= 1 << 20 ? `${(b / (1 << 20)).toFixed(1)} MiB` : `${(b / 1024).toFixed(1)} KiB`);
  console.log(`  stand-in answered ${what}: ${rows.map(([k, c]) => `${k} ${c.n}× ${size(c.bytes)}`).join('; ')}`);
}

/** CPU and RSS of every live replica, the stand-in and this process (the simulated agents). */
function snapshot(): Map<string, { cpu: number; rssMiB: number }> {
  const m = new Map<string, { cpu: number; rssMiB: number }>();
  for (const r of live()) m.set(r.name, usage(r.child.pid!));
  m.set('stand-in', usage(standin!.pid!));
  m.set('bench', usage(process.pid));
  return m;
}

function printUsage(before: Map<string, { cpu: number; rssMiB: number }>, after: Map<string, { cpu: number; rssMiB: number }>, wallMs: number): void {
  const parts = [...after].map(([k, u]) => `${k} ${(u.cpu - (before.get(k)?.cpu ?? 0)).toFixed(2)} s CPU, ${u.rssMiB.toFixed(0)} MiB`);
  console.log(`  over ${seconds(wallMs)}: ${parts.join('; ')}`);
}

/** Applies one round on the leader and reports the ACK times overall and per replica, and each process's CPU. */
async function applyRound(label: string, round: number, via: Replica): Promise<number> {
  await standinCounts();
  const before = snapshot();
  const { version, start, answeredMs } = await applyDocuments(via.admin, adminToken, roundDocuments(round, DOCUMENTS));
  await waitUntil(`every agent holds version ${version}`, () => agents.every((a) => a.arrived.has(version)), 120_000);
  const times = agents.map((a) => a.arrived.get(version)! - start).sort((x, y) => x - y);
  const byReplica = new Map<string, number[]>();
  for (const a of agents) {
    const name = replicas.find((r) => r.agent === a.arrivedFrom.get(version))?.name ?? '?';
    byReplica.set(name, [...(byReplica.get(name) ?? []), a.arrived.get(version)! - start]);
  }
  const wall = performance.now() - start;
  // Each replica records the ACKs after the agents sent them: let it finish before reading CPU times.
  await sleep(500);
  const after = snapshot();
  const per = [...byReplica].sort().map(([name, t]) => {
    t.sort((x, y) => x - y);
    return `${name}${name === via.name ? ' (leader)' : ''} ${t.length} agents p50 ${ms(pct(t, 50))} last ${ms(t.at(-1)!)}`;
  });
  console.log(`${label} v${version} ${round === 0 ? `${DOCUMENTS} docs (whole)` : '1 doc (delta)'}: apply answered ${ms(answeredMs)}; all ${agents.length}: p50 ${ms(pct(times, 50))} p99 ${ms(pct(times, 99))} last ${ms(times.at(-1)!)}`);
  console.log(`  per replica: ${per.join('; ')}`);
  printUsage(before, after, wall);
  printCounts('during it', await standinCounts());
  return times.at(-1)!;
}

/** SIGKILLs `victim`; reports when all its agents were connected elsewhere holding `head`, and the stand-in's load meanwhile. */
async function killReplica(victim: Replica, role: string, head: number): Promise<void> {
  const moved = agents.filter((a) => a.connection.server === victim.agent && a.connection.connected);
  await standinCounts();
  const before = snapshot();
  const killedAt = performance.now();
  victim.child.kill('SIGKILL');
  await waitUntil(`the ${moved.length} agents of ${victim.name} on another replica`, () => moved.every((a) => a.connection.connected && a.connection.server !== victim.agent && a.holding?.version === head), 180_000);
  const back = moved.map((a) => a.connects.find((t) => t > killedAt)! - killedAt).sort((x, y) => x - y);
  const wall = performance.now() - killedAt;
  const spread = new Map<string, number>();
  for (const a of moved) spread.set(a.connection.server, (spread.get(a.connection.server) ?? 0) + 1);
  console.log(`killed ${role} ${victim.name} (SIGKILL) with ${moved.length} agents: all on another replica holding v${head} after ${ms(back.at(-1)!)} (p50 ${ms(pct(back, 50))}, p99 ${ms(pct(back, 99))}); now on ${[...spread].map(([s, n]) => `${replicas.find((r) => r.agent === s)?.name} ${n}`).join(', ')}`);
  await sleep(500);
  printUsage(before, snapshot(), wall);
  printCounts('during the move', await standinCounts());
  printChannelErrors();
}

/** The reasons the agents' channel attempts failed since the last call. */
function printChannelErrors(): void {
  console.log(`  agents' channel failures: ${[...channelErrors].map(([why, n]) => `${n}× ${why}`).join('; ') || 'none'}`);
  channelErrors.clear();
}

/** Total value bytes and key count under each part of the prefix, from the stand-in's KV. */
async function kvSizes(): Promise<string> {
  const res = await fetch(`http://${consulAddr}/v1/kv/${PREFIX}?recurse=true`);
  const entries = (await res.json()) as { Key: string; Value: string | null }[];
  const parts = new Map<string, { keys: number; bytes: number }>();
  for (const e of entries) {
    const part = e.Key.slice(PREFIX.length).replace(/(^|\/)(agents|tokens|replicas|versions)\/[^/]+$/, '$1$2/');
    const p = parts.get(part) ?? { keys: 0, bytes: 0 };
    p.keys++;
    p.bytes += e.Value ? Buffer.from(e.Value, 'base64').length : 0;
    parts.set(part, p);
  }
  return [...parts].map(([k, p]) => `${k} ${p.keys} keys ${(p.bytes / 1024).toFixed(1)} KiB`).join('; ');
}

async function main(): Promise<void> {
  console.log(`load average before: ${loadavg().map((l) => l.toFixed(2)).join(' ')}; ${AGENTS} agents, ${ROUNDS} delta rounds`);
  writeFileSync(keyFile, randomBytes(32).toString('hex'), { mode: 0o600 });
  standin = fork(join(__dirname, 'consul-standin-child.js'), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  consulAddr = `127.0.0.1:${await new Promise<number>((resolve) => standin!.once('message', (m: { port: number }) => resolve(m.port)))}`;
  console.log(`Consul STAND-IN (test/consul-standin, not Consul) in child process ${standin.pid} on ${consulAddr}`);

  const t0 = performance.now();
  await Promise.all(['r1', 'r2', 'r3'].map(startReplica));
  adminToken = readFileSync(join(replicas[0]!.dataDir, 'admin-token'), 'utf8').trim();
  let lead = await leader();
  console.log(`3 replicas ready and ${lead.name} leads after ${seconds(performance.now() - t0)} (session TTL 15 s, lock delay 5 s: the defaults)`);

  // Enrollment spread over the replicas: agent i enrolls at replica i % 3 with that replica's token.
  const tokens = await Promise.all(replicas.map(async (r) => parseJoinToken(await joinToken(r, lead, Math.ceil(AGENTS / replicas.length)))));
  const link = new ConsulLink({ address: consulAddr, registerServices: false, localServices: false, discoverServers: true, resyncIntervalMs: 30_000, stale: false, waitMs: 60_000, minIntervalMs: 250 }, silentLogger);
  await standinCounts();
  const before = snapshot();
  const t1 = performance.now();
  await startSimAgents(agents, AGENTS, (i) => tokens[i % tokens.length]!, () => link.serverReplicas());
  const enrolled = performance.now() - t1;
  await waitUntil('every agent connected', () => agents.every((a) => a.connection.connected), 300_000);
  const connected = performance.now() - t1;
  // The hellos land in KV (agents/<id>) and every replica reads them back: wait until that settles.
  await sleep(3000);
  console.log(`${AGENTS} agents enrolled in ${seconds(enrolled)}, all connected after ${seconds(connected)}; spread: ${replicas.map((r) => `${r.name} ${agents.filter((a) => a.connection.server === r.agent).length}`).join(', ')}`);
  printUsage(before, snapshot(), performance.now() - t1);
  printCounts('during enrollment and connect', await standinCounts());
  printChannelErrors();
  console.log(`  KV: ${await kvSizes()}`);

  const lasts: number[] = [];
  for (let round = 0; round <= ROUNDS; round++) {
    const last = await applyRound(`round ${round}`, round, lead);
    if (round > 0) lasts.push(last);
  }
  const sorted = [...lasts].sort((x, y) => x - y);
  console.log(`delta rounds: last ACK median ${ms(pct(sorted, 50))}, worst ${ms(sorted.at(-1)!)}`);

  const head = (): number => Math.max(...agents.map((a) => a.holding?.version ?? 0));
  const follower = live().find((r) => r !== lead)!;
  await killReplica(follower, 'follower', head());
  await applyRound('after the follower kill', ROUNDS + 1, lead);

  // A fresh replica (empty data dir) catches up from KV alone, then the leader dies.
  const t2 = performance.now();
  const fresh = await startReplica('r4');
  console.log(`r4 (empty data dir) ready after ${seconds(performance.now() - t2)}`);
  const killedAt = performance.now();
  const oldLeader = lead;
  const moving = killReplica(oldLeader, 'leader', head());
  lead = await leader();
  const electedMs = performance.now() - killedAt;
  await moving;
  console.log(`new leader ${lead.name} after ${ms(electedMs)}; r4 holds ${agents.filter((a) => a.connection.server === fresh.agent).length} agents`);
  await applyRound('after the leader kill', ROUNDS + 2, lead);
  console.log(`  KV: ${await kvSizes()}`);
  const end = snapshot();
  console.log(`peak RSS: ${live().map((r) => `${r.name} ${usage(r.child.pid!).peakMiB.toFixed(0)} MiB`).join(', ')}, stand-in ${usage(standin.pid!).peakMiB.toFixed(0)} MiB, bench ${usage(process.pid).peakMiB.toFixed(0)} MiB; stand-in CPU in all ${end.get('stand-in')!.cpu.toFixed(1)} s`);
  console.log(`load average after: ${loadavg().map((l) => l.toFixed(2)).join(' ')}`);
}

main()
  .catch((err: unknown) => {
    console.error(err);
    console.error(`server logs kept in ${root}`);
    process.exitCode = 1;
  })
  .finally(() => {
    for (const a of agents) a.connection.close();
    for (const r of live()) r.child.kill('SIGKILL');
    standin?.kill('SIGKILL');
    if (process.exitCode !== 1) cleanup();
    setTimeout(() => process.exit(), 500).unref();
  });
