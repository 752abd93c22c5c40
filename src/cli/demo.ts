// `mesh-agent demo`: a server, two agents and two sample services on loopback, web (node A) -> api (node B).

import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { adminCall } from './admin-client';
import { selfArgs, selfCommandLine } from './self-command';

interface Child {
  readonly name: string;
  readonly proc: ChildProcess;
}

const say = (s = ''): boolean => process.stdout.write(`${s}\n`);

/** Starts `mesh-agent <args>` as a child, logging to <dir>/<name>.log; resolves when a stdout line matches `readyLine`. */
function startChild(name: string, args: string[], dir: string, readyLine: RegExp, children: Child[]): Promise<Child> {
  const proc = spawn(process.execPath, selfArgs(args), { stdio: ['ignore', 'pipe', 'pipe'] });
  const child = { name, proc };
  children.push(child);
  const log = createWriteStream(join(dir, `${name}.log`));
  proc.stderr!.pipe(log);
  let lastError = '';
  proc.stderr!.on('data', (c: Buffer) => (lastError = /^error: .*$/m.exec(c.toString())?.[0] ?? lastError));
  return new Promise((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => reject(new Error(`${name} did not become ready within 15 s (see ${join(dir, `${name}.log`)})`)), 15_000);
    proc.stdout!.on('data', (c: Buffer) => {
      log.write(c);
      buf += c.toString();
      if (readyLine.test(buf)) {
        clearTimeout(timer);
        resolve(child);
      }
    });
    proc.once('exit', (code) => {
      clearTimeout(timer);
      const why = lastError || `see ${join(dir, `${name}.log`)}`;
      reject(new Error(`${name} exited with code ${code} before it was ready: ${why}`));
    });
  });
}

async function stopAll(children: Child[]): Promise<void> {
  await Promise.all(
    children.map(
      (c) =>
        new Promise<void>((resolve) => {
          if (c.proc.exitCode !== null || c.proc.signalCode !== null) return resolve();
          const kill = setTimeout(() => c.proc.kill('SIGKILL'), 5000);
          c.proc.once('exit', () => {
            clearTimeout(kill);
            resolve();
          });
          c.proc.kill('SIGTERM');
        }),
    ),
  );
}

export async function runDemo(opts: { basePort: number; dataDir?: string }): Promise<void> {
  const started = Date.now();
  const dir = opts.dataDir ?? mkdtempSync(join(tmpdir(), 'mesh-demo-'));
  mkdirSync(dir, { recursive: true });
  const p = (offset: number): number => opts.basePort + offset;
  const ports = { agents: p(10), admin: p(14), web: p(80), api: p(90), aAdmin: p(100), aUpstream: p(101), aInbound: p(143), bAdmin: p(200), bInbound: p(243) };
  const children: Child[] = [];
  let stopping = false;
  const shutdown = async (code: number): Promise<void> => {
    if (stopping) return;
    stopping = true;
    say('\nstopping the demo mesh ...');
    await stopAll(children);
    if (!opts.dataDir) rmSync(dir, { recursive: true, force: true });
    say(`stopped ${children.length} processes${opts.dataDir ? `; state kept in ${dir}` : ''}`);
    process.exit(code);
  };
  process.on('SIGINT', () => void shutdown(0));
  process.on('SIGTERM', () => void shutdown(0));

  try {
    say(`mesh-agent demo: state and logs in ${dir}`);
    const serverDir = join(dir, 'server');
    await startChild('server', ['server', '--data-dir', serverDir, '--listen', `127.0.0.1:${ports.agents}`, '--advertise', `127.0.0.1:${ports.agents}`, '--admin-listen', `127.0.0.1:${ports.admin}`], dir, /server ready/, children);
    say(`  [1/5] server up: agents on 127.0.0.1:${ports.agents}, admin on 127.0.0.1:${ports.admin}`);
    const admin = { admin: `127.0.0.1:${ports.admin}`, dataDir: serverDir };
    const tokenA = (await adminCall(admin, 'POST', '/v1/tokens', { ttl: '10m', uses: 1, description: 'demo node-a' })).token as string;
    const tokenB = (await adminCall(admin, 'POST', '/v1/tokens', { ttl: '10m', uses: 1, description: 'demo node-b' })).token as string;
    say('  [2/5] two single-use join tokens created');

    await startChild('api', ['sample-service', '--name', 'api', '--port', String(ports.api)], dir, /listening/, children);
    await startChild('web', ['sample-service', '--name', 'web', '--port', String(ports.web), '--upstream', `http://127.0.0.1:${ports.aUpstream}`], dir, /listening/, children);
    say(`  [3/5] sample apps up: web on 127.0.0.1:${ports.web}, api on 127.0.0.1:${ports.api}`);

    writeFileSync(join(dir, 'endpoints.yaml'), `# api runs on node B; reach it through node B's inbound mTLS port\nservices:\n  api:\n    - address: 127.0.0.1\n      port: ${ports.bInbound}\n`);
    writeFileSync(
      join(dir, 'node-a.yaml'),
      `nodeName: node-a\nstateDir: ./node-a-state\ninbound: { listen: "127.0.0.1:${ports.aInbound}" }\nadmin: { listen: "127.0.0.1:${ports.aAdmin}" }\nendpointsFile: ./endpoints.yaml\nservices:\n  - name: web\n    port: ${ports.web}\n    protocol: http\n    upstreams:\n      - service: api\n        port: ${ports.aUpstream}\n        protocol: http\n`,
    );
    writeFileSync(
      join(dir, 'node-b.yaml'),
      `nodeName: node-b\nstateDir: ./node-b-state\ninbound: { listen: "127.0.0.1:${ports.bInbound}" }\nadmin: { listen: "127.0.0.1:${ports.bAdmin}" }\nservices:\n  - name: api\n    port: ${ports.api}\n    protocol: http\n`,
    );
    await Promise.all([
      startChild('agent-a', ['agent', '--config', join(dir, 'node-a.yaml'), '--join', tokenA], dir, /agent ready/, children),
      startChild('agent-b', ['agent', '--config', join(dir, 'node-b.yaml'), '--join', tokenB], dir, /agent ready/, children),
    ]);
    say(`  [4/5] agents enrolled and ready: node-a (web) inbound :${ports.aInbound}, node-b (api) inbound :${ports.bInbound}`);

    const res = await request(`http://127.0.0.1:${ports.web}/hello`, { headersTimeout: 5000 });
    const body = (await res.body.json()) as { upstream?: { meshCaller?: string } };
    const caller = body.upstream?.meshCaller;
    say(`  [5/5] checked web -> api through the mesh: api saw caller ${caller ?? 'NONE (something is wrong; see the logs)'}`);
    say('');
    say(`Ready in ${((Date.now() - started) / 1000).toFixed(1)} s. Try it (curl -> web -> agent A -> mTLS -> agent B -> api):`);
    say('');
    say(`  curl -s http://127.0.0.1:${ports.web}/hello`);
    say('');
    say(`"upstream.meshCaller" is the SPIFFE ID agent B verified on the mTLS connection and passed to api`);
    say('as x-forwarded-client-cert. More:');
    say(`  ${selfCommandLine(['status', '--admin', `127.0.0.1:${ports.admin}`, '--data-dir', serverDir])}`);
    say(`  ${selfCommandLine(['status', '--agent', `127.0.0.1:${ports.aAdmin}`, '--state-dir', join(dir, 'node-a-state')])}`);
    say(`  ${selfCommandLine(['dashboard', '--admin', `127.0.0.1:${ports.admin}`, '--data-dir', serverDir])}   # a login link to the web dashboard`);
    say('');
    say('Press Ctrl-C to stop everything.');
    for (const c of children) {
      c.proc.once('exit', (code) => {
        if (!stopping) {
          say(`${c.name} exited unexpectedly (code ${code}); see ${join(dir, `${c.name}.log`)}`);
          void shutdown(1);
        }
      });
    }
  } catch (err) {
    say(`demo failed: ${(err as Error).message}`);
    await shutdown(1);
  }
}
