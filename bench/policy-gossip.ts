// Policy gossip at scale: N real agents (the agent's own MeshAgent, in this one process) of one real server process;
// a part of them is cut off from the server, and for each apply the bench measures the time until each connected
// agent verified, applied and ACKed the version, and until each cut-off agent pulled it from a peer and verified it.
// Not a test: results go to docs/benchmarks.md.
// Run: npx tsc -p . && node dist/bench/policy-gossip.js [agents=1000] [rounds=5] [cutOff=0.5] [gossipInterval]
//
// What runs is the agent, not a model of it: each simulated node is a MeshAgent (enrolled with a real join token, a
// node and a workload certificate from the server, its inbound mTLS port on 127.0.0.1, its admin port, its upstream
// listeners, policy gossip with the agent's defaults unless `gossipInterval` is given), so whom it gossips with, how
// often, what it verifies and how it applies a version are the agent's own code. Topology: agents run services of
// REPLICAS nodes each; each node calls UPSTREAMS other services (its gossip peers are those services' endpoints, from
// its endpoints file). The cut-off agents reach the server through a TCP relay in this process until the cut, which
// closes the relay: their channels drop and every reconnect is refused, as in a network partition.

import { writeFileSync } from 'node:fs';
import { connect, createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { loadAgentConfig, MeshAgent } from '../src/agent';
import type { LogFields, Logger } from '../src/telemetry';
import { TestMesh } from '../test/helpers/mesh';
import { seeded } from '../test/helpers/seeded-random';
import { applyRound, ms, pct, roundChange, usage, waitUntil } from './policy-bench';

const AGENTS = Number(process.argv[2] ?? 1000);
const ROUNDS = Number(process.argv[3] ?? 5);
const CUT_OFF = Number(process.argv[4] ?? 0.5);
/** Unset: the agent's default (docs/gossip.md). */
const GOSSIP_INTERVAL = process.argv[5];
/** Nodes running each service, and services each node calls. */
const REPLICAS = 10;
const UPSTREAMS = 3;
const START_CONCURRENCY = 16;
/** Between rounds, so a round does not meet the pull gap (1 s) left by the one before. */
const PAUSE_MS = 2000;
const GOSSIP_TIMEOUT_MS = 10 * 60_000;

/** Problems any agent logged (warn/error), by message and error, printed at the end. */
const problems = new Map<string, number>();

/** An agent's log, read for the moments it took a version; the version is ACKed right after "accepted" is logged. */
class AgentWatch implements Logger {
  readonly pushed = new Map<number, number>();
  readonly pulled = new Map<number, number>();
  /** The peer each version was pulled from, as gossip names it: "address:port (identity)". */
  readonly pulledFrom = new Map<number, string>();
  info(msg: string, fields?: LogFields): void {
    if (msg === 'mesh policy version accepted') this.pushed.set(Number(fields?.version), performance.now());
    else if (msg === 'mesh policy version taken from a peer') {
      this.pulled.set(Number(fields?.version), performance.now());
      this.pulledFrom.set(Number(fields?.version), String(fields?.peer));
    }
  }
  warn(msg: string, fields?: LogFields): void {
    // Numbers (ports, delays) differ on every line; the rest of the error says what it was.
    const key = fields?.error ? `${msg}: ${String(fields.error).replace(/\d+/g, 'N')}` : msg;
    problems.set(key, (problems.get(key) ?? 0) + 1);
  }
  error(msg: string, fields?: LogFields): void {
    this.warn(msg, fields);
  }
  debug(): void {}
  child(): Logger {
    return this;
  }
}

interface SimNode {
  readonly index: number;
  readonly service: string;
  readonly upstreams: readonly string[];
  readonly cutOff: boolean;
  readonly watch: AgentWatch;
  agent?: MeshAgent;
  inboundPort?: number;
  agentId?: string;
}

interface AgentView {
  agent: { id: string; serverConnected: boolean };
  upstreams: { service: string; endpoints: string[] }[];
  policy: { gossip: { exchanges: number; failures: number; pulls: number; refused: number } };
}
const view = (n: SimNode): AgentView => n.agent!.status() as AgentView;

/** A TCP relay to the server's agent port; cut() closes it and every connection through it. */
async function relay(target: string): Promise<{ address: string; cut: () => void }> {
  const [host, port] = [target.slice(0, target.lastIndexOf(':')), Number(target.slice(target.lastIndexOf(':') + 1))];
  const open = new Set<Socket>();
  const server = createServer((down) => {
    const up = connect(port, host);
    for (const s of [down, up]) {
      open.add(s);
      s.on('error', () => undefined);
      s.on('close', () => {
        open.delete(s);
        down.destroy();
        up.destroy();
      });
    }
    down.pipe(up).pipe(down);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    address: `127.0.0.1:${(server.address() as { port: number }).port}`,
    cut: () => {
      server.close();
      for (const s of open) s.destroy();
    },
  };
}

/** Who runs what, who calls whom and who is cut off, the same every run. */
function topology(): SimNode[] {
  const random = seeded(5);
  const services = Math.ceil(AGENTS / REPLICAS);
  const order = Array.from({ length: AGENTS }, (_, i) => i);
  for (let i = order.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  const cutOff = new Set(order.slice(0, Math.round(AGENTS * CUT_OFF)));
  return Array.from({ length: AGENTS }, (_, index) => {
    const own = index % services;
    const calls = new Set<number>();
    while (calls.size < Math.min(UPSTREAMS, services - 1)) {
      const s = Math.floor(random() * services);
      if (s !== own) calls.add(s);
    }
    return { index, service: `svc-${own}`, upstreams: [...calls].map((s) => `svc-${s}`), cutOff: cutOff.has(index), watch: new AgentWatch() };
  });
}

function configYaml(mesh: TestMesh, n: SimNode, server: string): string {
  // Each node's upstream listeners on a loopback address of its own (127.1.x.y), so fixed ports never clash.
  const bind = `127.1.${n.index >> 8}.${n.index & 255}`;
  return [
    `nodeName: sim-${n.index}`,
    `stateDir: ${join(mesh.root, `sim-${n.index}`)}`,
    `server: "${server}"`,
    'inbound: { listen: "127.0.0.1:0" }',
    'admin: { listen: "127.0.0.1:0" }',
    `endpointsFile: ${endpointsFile(mesh, n)}`,
    ...(GOSSIP_INTERVAL ? [`gossip: { interval: ${GOSSIP_INTERVAL} }`] : []),
    'services:',
    `  - name: ${n.service}`,
    '    port: 1',
    `    upstreams: [${n.upstreams.map((u, k) => `{ service: ${u}, port: ${20001 + k}, bind: ${bind} }`).join(', ')}]`,
    '',
  ].join('\n');
}

const endpointsFile = (mesh: TestMesh, n: SimNode): string => join(mesh.root, `sim-${n.index}-endpoints.yaml`);

/** p50, p99 and last of the times (ms after `start`) the nodes took `version`, and how many never did. */
function times(nodes: readonly SimNode[], taken: (n: SimNode) => number | undefined, start: number): { sorted: number[]; missing: number } {
  const got = nodes.map(taken).filter((t): t is number => t !== undefined);
  return { sorted: got.map((t) => t - start).sort((x, y) => x - y), missing: nodes.length - got.length };
}

const cell = (t: { sorted: number[]; missing: number }, p: number | 'last'): string =>
  t.sorted.length === 0 ? '-' : ms(p === 'last' ? t.sorted.at(-1)! : pct(t.sorted, p));

function gossipTotals(nodes: readonly SimNode[]): { exchanges: number; pulls: number; refused: number; failures: number } {
  const sum = { exchanges: 0, pulls: 0, refused: 0, failures: 0 };
  for (const n of nodes) {
    const g = view(n).policy.gossip;
    sum.exchanges += g.exchanges;
    sum.pulls += g.pulls;
    sum.refused += g.refused;
    sum.failures += g.failures;
  }
  return sum;
}

/**
 * How the cut-off nodes got `version`: pulled in an exchange a peer dialed (the peer's round after it took the
 * version, or its timer) or in the node's own timer round (the node dialed: the peer is named by its inbound port,
 * not by its agent identity); and each node's hops from a connected node (1: pulled from a connected node).
 */
function spread(nodes: readonly SimNode[], version: number): { dialedBy: number; ownRound: number; hops: Map<number, number> } {
  const byAgent = new Map(nodes.map((n) => [n.agentId!, n]));
  const byPort = new Map(nodes.map((n) => [n.inboundPort!, n]));
  const source = (n: SimNode): SimNode | undefined => {
    const from = n.watch.pulledFrom.get(version);
    if (!from) return undefined;
    const agent = /\/agent\/([^)\s]+)\)$/.exec(from)?.[1];
    return agent ? byAgent.get(agent) : byPort.get(Number(/^[^ ]+:(\d+) /.exec(from)?.[1]));
  };
  const memo = new Map<SimNode, number>();
  const hopsOf = (n: SimNode, depth = 0): number => {
    if (!n.cutOff) return 0;
    const known = memo.get(n);
    if (known !== undefined) return known;
    const from = source(n);
    const h = from && depth < nodes.length ? hopsOf(from, depth + 1) + 1 : NaN;
    memo.set(n, h);
    return h;
  };
  const out = { dialedBy: 0, ownRound: 0, hops: new Map<number, number>() };
  for (const n of nodes.filter((x) => x.cutOff && x.watch.pulledFrom.has(version))) {
    if (/\/agent\//.test(n.watch.pulledFrom.get(version)!)) out.dialedBy++;
    else out.ownRound++;
    const h = hopsOf(n);
    out.hops.set(h, (out.hops.get(h) ?? 0) + 1);
  }
  return out;
}

async function main(): Promise<void> {
  const mesh = new TestMesh();
  const nodes = topology();
  const connected = nodes.filter((n) => !n.cutOff);
  const cutOff = nodes.filter((n) => n.cutOff);
  let cut: (() => void) | undefined;
  try {
    const server = await mesh.startServer();
    const pid = server.proc.child.pid!;
    const joinToken = await mesh.token(server, { uses: AGENTS, ttl: '1h' });
    const via = await relay(server.agentAddr);
    cut = via.cut;
    const t0 = Date.now();
    for (const n of nodes) writeFileSync(endpointsFile(mesh, n), 'services: {}\n');
    for (let next = 0; next < AGENTS; next += START_CONCURRENCY) {
      await Promise.all(
        nodes.slice(next, next + START_CONCURRENCY).map(async (n) => {
          const config = loadAgentConfig({ file: mesh.writeConfig(`sim-${n.index}.yaml`, configYaml(mesh, n, n.cutOff ? via.address : server.agentAddr)) });
          n.agent = new MeshAgent(config, { joinToken, log: n.watch });
          await n.agent.start();
          n.inboundPort = n.agent.addresses().inbound!.port;
          n.agentId = view(n).agent.id;
        }),
      );
    }
    await Promise.all(nodes.map((n) => n.agent!.ready()));
    // Each node's endpoints file: every replica of each service it calls (what Consul would tell it).
    const byService = new Map<string, number[]>();
    for (const n of nodes) byService.set(n.service, [...(byService.get(n.service) ?? []), n.inboundPort!]);
    for (const n of nodes) {
      const lines = n.upstreams.map((u) => `  ${u}: [${byService.get(u)!.map((p) => `{ address: 127.0.0.1, port: ${p} }`).join(', ')}]`);
      writeFileSync(endpointsFile(mesh, n), `services:\n${lines.join('\n')}\n`);
    }
    await waitUntil('every node sees its peers', () => nodes.every((n) => view(n).upstreams.every((u) => u.endpoints.length === byService.get(u.service.replace(/\.default$/, ''))!.length)), 120_000);
    via.cut();
    await waitUntil('the cut-off nodes are off the server', () => cutOff.every((n) => !view(n).agent.serverConnected) && connected.every((n) => view(n).agent.serverConnected), 60_000);
    const peers = nodes.map((n) => view(n).upstreams.reduce((sum, u) => sum + u.endpoints.length, 0));
    const idle = usage(pid);
    console.log(
      `${AGENTS} agents started in ${((Date.now() - t0) / 1000).toFixed(1)} s, ${cutOff.length} cut off from the server; ` +
        `${peers[0]} gossip peers each (${UPSTREAMS} services x ${REPLICAS} replicas), gossip interval ${GOSSIP_INTERVAL ?? 'default (30s)'}; ` +
        `server RSS ${idle.rssMiB.toFixed(0)} MiB, bench RSS ${(process.memoryUsage().rss / 2 ** 20).toFixed(0)} MiB`,
    );
    console.log('round  change           apply answered | connected: p50 ACK  p99 ACK  last ACK | cut off: p50 held  p99 held  last held  missing | server CPU  server RSS  bench CPU  loop lag p99/max  pulls  exchanges');
    // How far behind the bench's one thread ran: every node's timers and sockets wait that long.
    const lag = monitorEventLoopDelay({ resolution: 10 });
    lag.enable();

    for (let round = 0; round <= ROUNDS; round++) {
      if (round > 0) await new Promise((r) => setTimeout(r, PAUSE_MS));
      const before = { server: usage(pid), bench: process.cpuUsage(), gossip: gossipTotals(nodes) };
      lag.reset();
      const { version, start, answeredMs } = await applyRound(server, round);
      await waitUntil(`every connected node ACKs version ${version}`, () => connected.every((n) => n.watch.pushed.has(version)), 120_000);
      await waitUntil(`every cut-off node holds version ${version}`, () => cutOff.every((n) => n.watch.pulled.has(version)), GOSSIP_TIMEOUT_MS).catch((err: Error) => console.log(err.message));
      const acks = times(connected, (n) => n.watch.pushed.get(version), start);
      const held = times(cutOff, (n) => n.watch.pulled.get(version), start);
      const leaked = cutOff.filter((n) => n.watch.pushed.has(version)).length;
      if (leaked > 0) throw new Error(`${leaked} cut-off nodes got version ${version} from the server: the cut leaks`);
      await new Promise((r) => setTimeout(r, 300));
      const after = { server: usage(pid), bench: process.cpuUsage(before.bench), gossip: gossipTotals(nodes) };
      console.log(
        [
          String(round).padEnd(5),
          roundChange(round).padEnd(15),
          ms(answeredMs).padStart(14),
          '|',
          cell(acks, 50).padStart(19),
          cell(acks, 99).padStart(8),
          cell(acks, 'last').padStart(9),
          '|',
          cell(held, 50).padStart(17),
          cell(held, 99).padStart(9),
          cell(held, 'last').padStart(10),
          String(held.missing).padStart(8),
          '|',
          `${(after.server.cpu - before.server.cpu).toFixed(2)} s`.padStart(10),
          `${after.server.rssMiB.toFixed(0)} MiB`.padStart(10),
          `${((after.bench.user + after.bench.system) / 1e6).toFixed(2)} s`.padStart(10),
          `${ms(lag.percentile(99) / 1e6)}/${ms(lag.max / 1e6)}`.padStart(16),
          String(after.gossip.pulls - before.gossip.pulls).padStart(6),
          String(after.gossip.exchanges - before.gossip.exchanges).padStart(10),
        ].join(' '),
      );
      const how = spread(nodes, version);
      const hops = [...how.hops].sort(([a], [b]) => a - b).map(([h, c]) => `${h}: ${c}`).join(', ');
      console.log(`      cut-off nodes got it in an exchange a peer dialed: ${how.dialedBy}, in their own timer round: ${how.ownRound}; hops from a connected node (hops: nodes): ${hops}`);
    }
    const totals = gossipTotals(nodes);
    console.log(`gossip totals: ${totals.exchanges} exchanges (both ends), ${totals.pulls} pulls, ${totals.refused} refused, ${totals.failures} failed; server peak RSS ${usage(pid).peakMiB.toFixed(0)} MiB, bench RSS ${(process.memoryUsage().rss / 2 ** 20).toFixed(0)} MiB`);
    console.log(`warnings and errors the agents logged: ${[...problems].map(([m, c]) => `${c} x "${m}"`).join('; ') || 'none'}`);
  } finally {
    cut?.();
    await Promise.all(nodes.map((n) => n.agent?.close()));
    await mesh.close();
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
