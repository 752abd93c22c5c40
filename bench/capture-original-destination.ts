// Measures the ways to learn a captured connection's original destination (ADR capture-original-destination):
// installing per-destination DNAT rules, connecting through them, and looking a connection up in /proc/net/nf_conntrack.
// Root only; everything runs inside a network namespace of its own (mhbench-capture-<pid>), deleted at the end.
// Usage: npm run build && sudo node dist/bench/capture-original-destination.js

import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { connect, createServer, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { installCapture, removeCapture, type CaptureRules } from '../src/capture';
import { ipv4ToNumber, numberToIpv4 } from '../src/capture/virtual-ips';

/** The i-th destination address: 127.240.0.1 onwards. */
const address = (i: number): string => numberToIpv4(ipv4ToNumber('127.240.0.1')! + i);

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const fmt = (ms: number): string => (ms < 1 ? `${(ms * 1000).toFixed(0)} µs` : `${ms.toFixed(1)} ms`);

/** N destinations 127.240.x.y:80, all to `port`. */
function rules(n: number, port: number): CaptureRules {
  const outbound = Array.from({ length: n }, (_, i) => ({ address: address(i), port: 80, to: { host: '127.0.0.1', port }, service: `s${i}.default` }));
  return { excludeUids: [], excludeCidrs: [], excludePorts: [], agentPorts: [], outbound, inboundPorts: [], inboundPort: 15443 };
}

function connectOnce(host: string, port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ host, port }, () => resolve(s));
    s.once('error', reject);
  });
}

async function inside(): Promise<void> {
  const server = createServer((s) => s.on('error', () => {})).listen(0, '127.0.0.1');
  await new Promise((r) => server.once('listening', r));
  const port = (server.address() as { port: number }).port;
  const out = (line: string): boolean => process.stdout.write(`${line}\n`);

  out('setup: iptables-restore of the whole rule set (median of 5)');
  for (const n of [1, 100, 1000, 5000]) {
    const times: number[] = [];
    for (let i = 0; i < 5; i++) {
      const t = performance.now();
      await installCapture(rules(n, port));
      times.push(performance.now() - t);
    }
    out(`  ${String(n).padStart(5)} destinations: ${fmt(median(times))}`);
  }
  const t = performance.now();
  await removeCapture();
  out(`  remove (5000 destinations installed): ${fmt(performance.now() - t)}`);

  out('per connection: connect + close, median of 500 (the DNAT target is the last rule of the chain)');
  const direct: number[] = [];
  for (let i = 0; i < 200; i++) (await connectOnce('127.0.0.1', port)).destroy(); // warm-up, not counted
  for (let i = 0; i < 500; i++) {
    const t0 = performance.now();
    (await connectOnce('127.0.0.1', port)).destroy();
    direct.push(performance.now() - t0);
  }
  out(`  direct, no rules: ${fmt(median(direct))}`);
  for (const n of [10, 1000, 5000]) {
    await installCapture(rules(n, port));
    const last = address(n - 1);
    const times: number[] = [];
    for (let i = 0; i < 500; i++) {
      const t0 = performance.now();
      (await connectOnce(last, 80)).destroy();
      times.push(performance.now() - t0);
    }
    out(`  through DNAT, ${String(n).padStart(4)} rules: ${fmt(median(times))}`);
  }

  out('conntrack: read /proc/net/nf_conntrack and find one connection by its source port (median of 50)');
  for (const open of [100, 1000]) {
    const sockets = await Promise.all(Array.from({ length: open }, () => connectOnce('127.240.0.1', 80)));
    const wanted = sockets[open - 1]!.localPort;
    const times: number[] = [];
    let found = '';
    for (let i = 0; i < 50; i++) {
      const t0 = performance.now();
      const line = readFileSync('/proc/net/nf_conntrack', 'latin1').split('\n').find((l) => l.includes(` sport=${wanted} `) && l.includes(' dst=127.240.0.1 '));
      found = /dst=(\S+) sport=\d+ dport=(\d+)/.exec(line ?? '')?.slice(1).join(':') ?? 'not found';
      times.push(performance.now() - t0);
    }
    out(`  ${String(open).padStart(4)} open connections: ${fmt(median(times))} per lookup (found original destination ${found})`);
    for (const s of sockets) s.destroy();
  }
  await removeCapture();
  server.close();
}

function outside(): void {
  if (process.getuid?.() !== 0) throw new Error('needs root: it makes a network namespace');
  const ns = `mhbench-capture-${process.pid}`;
  execFileSync('ip', ['netns', 'add', ns]);
  try {
    execFileSync('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    const r = spawnSync('ip', ['netns', 'exec', ns, process.execPath, __filename, 'inside'], { stdio: 'inherit' });
    if (r.status !== 0) process.exitCode = 1;
  } finally {
    execFileSync('ip', ['netns', 'del', ns]);
  }
}

if (process.argv[2] === 'inside') void inside();
else outside();
