// Start-up to ready: the single-file binary beside `node bin/mesh-agent`, for `version`, a server and a restarted agent.
// Run: npm run build:binary && node dist/bench/startup.js [rounds]
// Times run from spawn to the line the process prints when it is ready (the tests wait for the same lines); median of the rounds.

import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { statSync } from 'node:fs';
import { TestMesh } from '../test/helpers/mesh';
import { BIN, tempDir } from '../test/helpers/processes';

const ROUNDS = Number(process.argv[2] ?? 7);
const ROOT = join(__dirname, '..', '..');

/** ms from spawn until `ready` matches the output (then the process is killed), or until exit when `ready` is null. */
function timeTo(cmd: string, args: string[], ready: RegExp | null): Promise<number> {
  const t0 = process.hrtime.bigint();
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  return new Promise((resolve, reject) => {
    const done = (): void => resolve(Number(process.hrtime.bigint() - t0) / 1e6);
    const check = (c: Buffer): void => {
      out += c.toString();
      if (ready?.test(out)) {
        done();
        child.kill('SIGKILL');
      }
    };
    child.stdout.on('data', check);
    child.stderr.on('data', check);
    child.once('exit', (code) => (ready === null && code === 0 ? done() : ready?.test(out) ? undefined : reject(new Error(`${cmd} ${args.join(' ')} exited ${code}:\n${out}`))));
  });
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;

async function measure(label: string, cmd: string, pre: string[]): Promise<void> {
  const mesh = new TestMesh(pre.length === 0 ? cmd : undefined);
  const tmp = tempDir();
  try {
    const server = await mesh.startServer();
    const agent = await mesh.startAgent('bench', mesh.writeConfig('bench.yaml', 'inbound: { listen: "127.0.0.1:0" }\nadmin: { listen: "127.0.0.1:0" }\nservices:\n  - { name: api, port: 9, protocol: http }\n'), { join: await mesh.token(server) });
    await agent.proc.stop('SIGKILL');
    const rows: Record<string, number[]> = { version: [], 'server ready': [], 'agent ready (enrolled)': [] };
    for (let i = 0; i < ROUNDS; i++) {
      rows.version!.push(await timeTo(cmd, [...pre, 'version'], null));
      rows['server ready']!.push(await timeTo(cmd, [...pre, 'server', '--data-dir', join(tmp.dir, `s${i}`), '--listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0'], /server ready/));
      rows['agent ready (enrolled)']!.push(await timeTo(cmd, [...pre, 'agent', '--config', agent.configFile, '--state-dir', agent.stateDir, '--node-name', 'bench'], /agent ready/));
    }
    for (const [what, xs] of Object.entries(rows)) process.stdout.write(`| ${label} | ${what} | ${median(xs).toFixed(0)} ms | ${Math.min(...xs).toFixed(0)}–${Math.max(...xs).toFixed(0)} ms |\n`);
  } finally {
    await mesh.close();
    tmp.cleanup();
  }
}

async function main(): Promise<void> {
  const binary = join(ROOT, 'build', 'mesh-agent');
  process.stdout.write(`build/mesh-agent: ${statSync(binary).size} bytes (${(statSync(binary).size / 1048576).toFixed(1)} MiB); ${ROUNDS} rounds\n\n`);
  process.stdout.write('| program | until | median | min–max |\n|---|---|---|---|\n');
  await measure('single-file binary', binary, []);
  await measure(`node ${process.version} bin/mesh-agent`, process.execPath, [BIN]);
}

void main();
