// The single-file binary and the Debian package, each built once: the binary alone in an empty directory runs a mesh that
// carries traffic; the .deb passes lintian, then installs, upgrades, removes and purges cleanly on this machine.

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { appendFileSync, copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { request } from 'undici';
import { buildBinary, gitCommit, ROOT, type BuiltBinary } from '../../packaging/build-binary';
import { buildDeb, type BuiltDeb } from '../../packaging/build-deb';
import { SEA_NODE } from '../../packaging/node-runtime';
import { startHttpApp } from '../helpers/apps';
import { TestMesh } from '../helpers/mesh';
import { runMeshAgent, tempDir } from '../helpers/processes';

const VERSION = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
const sh = (cmd: string, args: string[]): { status: number | null; out: string } => {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  return { status: r.status, out: `${r.stdout ?? ''}${r.stderr ?? ''}${r.error ? String(r.error) : ''}` };
};

// The binary carries its own Node.js 24 whatever runs the tests, so CI's second pass (on Node 24) skips this file:
// it would build and check the very same artefacts again (about 2 minutes).
const secondPass = process.env.MESH_TEST_SECOND_PASS === '1' ? 'built and checked in the first pass: the binary runs its own Node.js 24 either way' : false;

describe('single-file binary', { skip: secondPass }, () => {
  const tmp = tempDir('mesh-pkg-test-');
  let binary: BuiltBinary;
  let alone: string;

  before(() => {
    binary = buildBinary(join(tmp.dir, 'build'));
    const dir = join(tmp.dir, 'empty');
    mkdirSync(dir);
    alone = join(dir, 'mesh-agent');
    copyFileSync(binary.path, alone);
    assert.deepEqual(readdirSync(dir), ['mesh-agent']);
  });
  after(() => tmp.cleanup());

  it('reports its version, the git commit it was built from and the Node.js inside', async () => {
    const r = await runMeshAgent(['version', '-o', 'json'], {}, alone);
    assert.equal(r.code, 0, r.stderr);
    const v = JSON.parse(r.stdout) as { version: string; commit: string; node: string; platform: string };
    assert.deepEqual(v, { version: VERSION, commit: gitCommit(), node: `v${SEA_NODE.version}`, platform: 'linux-x64' });
    assert.match(v.commit, /^[0-9a-f]{40}(-dirty)?$/);
    assert.equal((await runMeshAgent(['--version'], {}, alone)).stdout.trim(), VERSION);
  });

  it('alone in a directory, runs a server and two agents that enroll and carry a request over mTLS', async () => {
    const mesh = new TestMesh(alone);
    const api = await startHttpApp('api');
    try {
      const server = await mesh.startServer();
      // The server's SQLite addon came out of the binary, into its data dir.
      assert.ok(readdirSync(server.dataDir).some((f) => /^\.better_sqlite3-[0-9a-f]{16}\.node$/.test(f)), readdirSync(server.dataDir).join(' '));
      const { upstream } = await mesh.startPair(server, api.port);
      const res = await request(`http://127.0.0.1:${upstream}/through-the-binary`, { headersTimeout: 10_000 });
      assert.equal(res.statusCode, 200);
      const body = (await res.body.json()) as { headers: Record<string, string> };
      assert.match(body.headers['x-forwarded-client-cert']!, /URI=spiffe:\/\/mesh\.local\/ns\/default\/sa\/web$/);
      assert.deepEqual(readdirSync(join(alone, '..')), ['mesh-agent'], 'the binary needed nothing beside it');
    } finally {
      api.server.close();
      await mesh.close();
    }
  });

  describe('Debian package', { skip: process.getuid?.() !== 0 ? 'installing a .deb needs root' : false }, () => {
    let deb: BuiltDeb;
    let upgrade: BuiltDeb;
    let release: () => Promise<void> = async () => {};

    before(async () => {
      // gzip: a tenth of xz's CPU time; lintian and dpkg see the same package either way.
      deb = buildDeb({ binary, out: join(tmp.dir, 'build'), compression: 'gzip' });
      upgrade = buildDeb({ binary, out: join(tmp.dir, 'build-upgrade'), compression: 'none', version: `${VERSION}+upgrade1` });
      // One install test at a time on this machine: other checkouts run this suite too.
      release = await lock('/run/lock/mesh-agent-package-test.lock');
      purgeLeftoverOfThisTest();
    });
    after(async () => {
      if (installedVersion()) sh('dpkg', ['--purge', 'mesh-agent']);
      await release();
    });

    it('passes lintian with no errors', () => {
      const r = sh('lintian', ['--fail-on', 'error', deb.path]);
      assert.equal(r.status, 0, r.out);
      assert.doesNotMatch(r.out, /^E: /m, r.out);
    });

    it('installs the binary, the units, the sample config (a conffile) and a system user with private state', () => {
      const r = sh('dpkg', ['--install', deb.path]);
      assert.equal(r.status, 0, r.out);
      writeFileSync(MARKER, 'installed by test/e2e/packaging.test.ts\n');
      assert.equal(installedVersion(), VERSION);
      assert.equal(statSync('/usr/bin/mesh-agent').mode & 0o777, 0o755);
      for (const unit of ['mesh-agent.service', 'mesh-server.service']) assert.ok(existsSync(`/lib/systemd/system/${unit}`), unit);
      assert.match(sh('dpkg-query', ['--show', '--showformat=${Conffiles}', 'mesh-agent']).out, /\/etc\/mesh-agent\/agent\.yaml [0-9a-f]{32}/);
      const user = sh('getent', ['passwd', 'mesh-agent']).out.trim().split(':');
      assert.equal(user[6], '/usr/sbin/nologin');
      assert.ok(Number(user[2]) < 1000, `system uid, got ${user[2]}`);
      for (const dir of ['/var/lib/mesh-agent', '/var/lib/mesh-server']) {
        const st = statSync(dir);
        assert.equal(st.uid, Number(user[2]), dir);
        assert.equal(st.mode & 0o777, 0o700, dir);
      }
    });

    it('runs: --version, the Node.js inside, and the shipped sample config is valid as it is', async () => {
      assert.equal(sh('/usr/bin/mesh-agent', ['--version']).out.trim(), VERSION);
      assert.match(sh('/usr/bin/mesh-agent', ['version']).out, new RegExp(`^mesh-agent ${VERSION.replaceAll('.', '\\.')} \\(commit [0-9a-f]{40}.*, node v${SEA_NODE.version.replaceAll('.', '\\.')}, linux-x64\\)$`, 'm'));
      const state = tempDir();
      try {
        // Without a join token the agent stops at enrollment, which it reaches only after the config was accepted.
        const r = await runMeshAgent(['agent', '--config', '/etc/mesh-agent/agent.yaml', '--state-dir', state.dir], {}, '/usr/bin/mesh-agent');
        assert.equal(r.code, 1);
        assert.match(r.stderr, /MESH_ERR_NOT_ENROLLED/);
      } finally {
        state.cleanup();
      }
    });

    it('has units that pass systemd-analyze verify where they are installed', () => {
      const r = sh('systemd-analyze', ['verify', '/lib/systemd/system/mesh-agent.service', '/lib/systemd/system/mesh-server.service']);
      assert.equal(r.status, 0, r.out);
      assert.equal(r.out.trim(), '');
    });

    it('upgrades keeping the edited config and the state', () => {
      appendFileSync('/etc/mesh-agent/agent.yaml', '#nodeName: edited-by-the-operator\n');
      writeFileSync('/var/lib/mesh-agent/enrollment.json', '{"kept":true}\n');
      assert.equal(sh('systemctl', ['enable', 'mesh-agent.service']).status, 0);
      const r = sh('dpkg', ['--install', upgrade.path]);
      assert.equal(r.status, 0, r.out);
      assert.equal(installedVersion(), upgrade.version);
      assert.match(readFileSync('/etc/mesh-agent/agent.yaml', 'utf8'), /edited-by-the-operator/);
      assert.equal(readFileSync('/var/lib/mesh-agent/enrollment.json', 'utf8'), '{"kept":true}\n');
      assert.ok(existsSync('/etc/systemd/system/multi-user.target.wants/mesh-agent.service'), 'still enabled');
    });

    it('remove takes the program and units away and keeps config and state; purge leaves nothing behind', () => {
      const files = sh('dpkg-query', ['--listfiles', 'mesh-agent']).out.trim().split('\n').filter((f) => f.includes('mesh-agent') || f.includes('mesh-server'));
      assert.ok(files.includes('/usr/bin/mesh-agent'), files.join(' '));
      let r = sh('dpkg', ['--remove', 'mesh-agent']);
      assert.equal(r.status, 0, r.out);
      assert.equal(existsSync('/usr/bin/mesh-agent'), false);
      assert.equal(existsSync('/lib/systemd/system/mesh-agent.service'), false);
      assert.ok(existsSync('/etc/mesh-agent/agent.yaml'));
      assert.ok(existsSync('/var/lib/mesh-agent/enrollment.json'));

      r = sh('dpkg', ['--purge', 'mesh-agent']);
      assert.equal(r.status, 0, r.out);
      assert.equal(installedVersion(), null);
      const left = [...files, '/etc/mesh-agent', '/var/lib/mesh-agent', '/var/lib/mesh-server'].filter((f) => existsSync(f));
      assert.deepEqual(left, []);
      assert.notEqual(sh('getent', ['passwd', 'mesh-agent']).status, 0, 'user removed');
      assert.notEqual(sh('getent', ['group', 'mesh-agent']).status, 0, 'group removed');
      const links = sh('find', ['/etc/systemd/system', '/var/lib/systemd', '-name', '*mesh-*']).out.trim();
      assert.equal(links, '', 'no enablement links, masks or deb-systemd-helper state');
    });
  });
});

const MARKER = '/var/lib/mesh-agent/.installed-by-packaging-test';

/** The installed version of mesh-agent, or null. */
function installedVersion(): string | null {
  const r = sh('dpkg-query', ['--show', '--showformat=${Status} ${Version}', 'mesh-agent']);
  const m = /^install ok (?:installed|half-configured|unpacked|half-installed) (\S+)/.exec(r.out);
  return r.status === 0 && m ? m[1]! : null;
}

/** Purges a mesh-agent package (installed, or removed with its config kept) that an interrupted run of this test left; refuses to touch another. */
function purgeLeftoverOfThisTest(): void {
  const status = sh('dpkg-query', ['--show', '--showformat=${db:Status-Status}', 'mesh-agent']);
  if (status.status !== 0 || status.out.trim() === 'not-installed') return;
  if (!existsSync(MARKER)) throw new Error(`a mesh-agent package not installed by this test is on this machine (${status.out.trim()}); purge it first: dpkg --purge mesh-agent`);
  assert.equal(sh('dpkg', ['--purge', 'mesh-agent']).status, 0);
}

/** Holds an exclusive flock(1) on `file` until the returned release is called. */
async function lock(file: string): Promise<() => Promise<void>> {
  const holder = spawn('flock', ['--exclusive', '--timeout', '1200', file, 'sh', '-c', 'echo locked; read _'], { stdio: ['pipe', 'pipe', 'inherit'] });
  const [chunk] = (await Promise.race([once(holder.stdout!, 'data'), once(holder, 'exit')])) as [Buffer | number];
  if (!Buffer.isBuffer(chunk) || !chunk.toString().startsWith('locked')) throw new Error(`could not lock ${file} (flock exited ${String(chunk)})`);
  return async () => {
    holder.stdin!.end();
    if (holder.exitCode === null) await once(holder, 'exit');
  };
}
