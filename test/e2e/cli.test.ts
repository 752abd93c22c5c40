// The command line itself: help with examples on every command, clear errors for bad flags and configs.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { CLI, freePort, meshAgent, runMeshAgent, tempDir } from '../helpers/processes';

const COMMANDS = [[], ['server'], ['agent'], ['token'], ['token', 'create'], ['token', 'list'], ['admin-token'], ['admin-token', 'create'], ['admin-token', 'list'], ['admin-token', 'revoke'], ['status'], ['ca'], ['ca', 'show'], ['apply'], ['get'], ['delete'], ['history'], ['rollback'], ['version'], ['demo']];

describe('mesh-agent CLI', () => {
  const tmp = tempDir();
  after(() => tmp.cleanup());

  for (const cmd of COMMANDS) {
    it(`mesh-agent ${cmd.join(' ') || '(top)'} --help describes itself with examples`, async () => {
      const r = await runMeshAgent([...cmd, '--help']);
      assert.equal(r.code, 0);
      assert.match(r.stdout, /^Usage: mesh-agent/m);
      assert.match(r.stdout, /Examples:\n {2}\$ mesh-agent/);
    });
  }

  it('reports every mistake of an agent config at once, with field paths and lines', async () => {
    const file = join(tmp.dir, 'bad.yaml');
    writeFileSync(file, 'services:\n  - name: web\n    port: 99999\n    protocl: http\n');
    const r = await runMeshAgent(['agent', '--config', file]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /MESH_ERR_CONFIG: invalid agent configuration in .*bad\.yaml \(2 problems\)/);
    assert.match(r.stderr, /services\[0\]\.port \(.*bad\.yaml:3\): got 99999, expected an integer from 1 to 65535/);
    assert.match(r.stderr, /services\[0\]\.protocl \(.*bad\.yaml:4\): unknown field/);
  });

  it('names the flag a bad value came from', async () => {
    const r = await runMeshAgent(['server', '--data-dir', join(tmp.dir, 's'), '--listen', 'nowhere', '--workload-cert-ttl', 'soon']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /listen \(from --listen\): got "nowhere", expected an address "host:port"/);
    assert.match(r.stderr, /workloadCertTtl \(from --workload-cert-ttl\): got "soon", expected a duration/);
  });

  it('names the environment variable a bad value came from', async () => {
    const r = await runMeshAgent(['agent'], { MESH_ADMIN_LISTEN: '127.0.0.1:http' });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /admin\.listen \(from env MESH_ADMIN_LISTEN\)/);
  });

  it('rejects an unknown option with usage help and exit code 1', async () => {
    const r = await runMeshAgent(['server', '--no-such-flag']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /unknown option '--no-such-flag'/);
  });

  it('keeps quiet and stops on the first SIGTERM when its output pipe was closed', { timeout: 15_000 }, async () => {
    const dir = join(tmp.dir, 'epipe');
    const child = spawn(process.execPath, [CLI, 'server', '--data-dir', dir, '--listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0'], { stdio: ['ignore', 'pipe', 'pipe'] });
    // Close both read ends as soon as the server has said anything, like `mesh-agent server | head -1`.
    await new Promise<void>((r) => child.stderr!.once('data', () => r()));
    child.stdout!.destroy();
    child.stderr!.destroy();
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    const cpu = (): number => {
      const f = readFileSync(`/proc/${child.pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
      return Number(f[11]) + Number(f[12]); // utime + stime, in clock ticks
    };
    await new Promise((r) => setTimeout(r, 300)); // let it reach ready and write into the closed pipes
    const before = cpu();
    await new Promise((r) => setTimeout(r, 1000)); // a window to measure a busy loop in: no event marks its absence
    assert.ok(cpu() - before < 20, `used ${cpu() - before} ticks of CPU in 1 s with nobody reading its output`);
    child.kill('SIGTERM');
    const code = await Promise.race([exited, new Promise<string>((r) => setTimeout(() => r('still running'), 5000))]);
    if (code === 'still running') child.kill('SIGKILL');
    assert.equal(code, 0, 'the first SIGTERM stops it');
  });

  it('sample-service listens on the address --host names (the Nomad example binds its Nomad address)', async () => {
    const port = await freePort();
    const p = meshAgent('sample-service', ['sample-service', '--name', 'api', '--host', '127.0.0.2', '--port', String(port)]);
    try {
      await p.waitFor(new RegExp(`sample service api listening on 127\\.0\\.0\\.2:${port}`));
      const res = await fetch(`http://127.0.0.2:${port}/hello`);
      assert.equal(((await res.json()) as { service: string }).service, 'api');
    } finally {
      await p.stop();
    }
  });

  it('policy commands refuse bad arguments with usage errors (exit 2), before calling the server', async () => {
    const none = ['--admin', '127.0.0.1:1', '--admin-token', 'x'];
    const empty = join(tmp.dir, 'no-policy');
    mkdirSync(empty);
    const cases: [string[], RegExp][] = [
      [['apply'], /apply needs at least one -f FILE\|DIR\|-/],
      [['apply', '-f', join(tmp.dir, 'missing.yaml')], /-f .*missing\.yaml: cannot read it \(ENOENT\)/],
      [['apply', '-f', empty], /the directory holds no \*\.yaml, \*\.yml or \*\.json file/],
      [['get', 'gateways'], /unknown kind "gateways": expected one of VirtualService, DestinationRule, ServiceEntry, PeerAuthentication, AuthorizationPolicy/],
      [['history', 'reviews'], /history: got "reviews", expected KIND\/NAME/],
      [['rollback', '--to', 'last'], /--to: got "last", expected a version number/],
    ];
    for (const [args, message] of cases) {
      const r = await runMeshAgent([...args, ...none]);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, /MESH_ERR_USAGE/);
      assert.match(r.stderr, message);
    }
  });

  it('prints the version as text and JSON', async () => {
    const r = await runMeshAgent(['version', '-o', 'json']);
    const v = JSON.parse(r.stdout) as { version: string; node: string };
    assert.match(v.version, /^\d+\.\d+\.\d+/);
    assert.equal(v.node, process.version);
  });

  it('says how to reach the server when the admin API is not there', async () => {
    const r = await runMeshAgent(['status', '--admin', '127.0.0.1:1', '--admin-token', 'x']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /MESH_ERR_SERVER_UNREACHABLE: cannot reach the admin API at http:\/\/127\.0\.0\.1:1/);
  });
});
