// Policy push at scale: N simulated agents on the real ws channel (mTLS, enrolled with a real join token) to one real
// server process; for each apply, the time from sending it to each agent's ACK (p50, p99, last), and the server's
// RSS and CPU. Not a test: results go to docs/benchmarks.md.
// Run: npx tsc -p . && node dist/bench/policy-push.js [agents=1000] [rounds=10]
//
// Each simulated agent is the agent's own ServerConnection (TLS, hello, reconnect) with a node certificate from a real
// enrollment; it ACKs a version as soon as it arrives (a real agent verifies and compiles first, on its own CPU, in
// parallel with the others — that cost is not the server's and is left out here).

import { parseJoinToken } from '../src/ca';
import { TestMesh } from '../test/helpers/mesh';
import { applyRound, ms, pct, roundChange, usage, waitUntil } from './policy-bench';
import { startSimAgents, type SimAgent } from './sim-agents';

const AGENTS = Number(process.argv[2] ?? 1000);
const ROUNDS = Number(process.argv[3] ?? 10);

async function main(): Promise<void> {
  const mesh = new TestMesh();
  const agents: SimAgent[] = [];
  try {
    const server = await mesh.startServer();
    const pid = server.proc.child.pid!;
    const token = parseJoinToken(await mesh.token(server, { uses: AGENTS, ttl: '1h' }));
    const t0 = Date.now();
    await startSimAgents(agents, AGENTS, () => token);
    await waitUntil('every agent connected', () => agents.every((a) => a.connection.connected), 120_000);
    const idle = usage(pid);
    console.log(`${AGENTS} agents enrolled and connected in ${((Date.now() - t0) / 1000).toFixed(1)} s; server RSS ${idle.rssMiB.toFixed(0)} MiB`);
    console.log('round  change           apply answered  p50 ACK   p99 ACK   last ACK  server CPU  server RSS');

    const lasts: number[] = [];
    for (let round = 0; round <= ROUNDS; round++) {
      const before = usage(pid);
      const { version, start, answeredMs: answered } = await applyRound(server, round);
      await waitUntil(`every agent holds version ${version}`, () => agents.every((a) => a.arrived.has(version)), 60_000);
      const times = agents.map((a) => a.arrived.get(version)! - start).sort((x, y) => x - y);
      // The server records each ACK after the agent sent it: let it finish before reading its CPU time.
      await new Promise((r) => setTimeout(r, 300));
      const after = usage(pid);
      if (round > 0) lasts.push(times.at(-1)!);
      console.log(
        [
          String(round).padEnd(5),
          roundChange(round).padEnd(15),
          ms(answered).padStart(14),
          ms(pct(times, 50)).padStart(8),
          ms(pct(times, 99)).padStart(8),
          ms(times.at(-1)!).padStart(8),
          `${(after.cpu - before.cpu).toFixed(2)} s`.padStart(10),
          `${after.rssMiB.toFixed(0)} MiB`.padStart(10),
        ].join('  '),
      );
    }
    const sorted = [...lasts].sort((x, y) => x - y);
    const end = usage(pid);
    console.log(`delta rounds: last ACK median ${ms(pct(sorted, 50))}, worst ${ms(sorted.at(-1)!)}; server peak RSS ${end.peakMiB.toFixed(0)} MiB`);
  } finally {
    for (const a of agents) a.connection.close();
    await mesh.close();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
