// The shipped systemd units pass `systemd-analyze verify`, carry the hardening and signals the issue asks for, and
// score "OK" in `systemd-analyze security`; broken copies fail the same checks.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { buildProgram } from '../../src/cli/main';
import { tempDir } from '../helpers/processes';

const ROOT = join(__dirname, '..', '..', '..');
/** Highest acceptable `systemd-analyze security` exposure (0 = locked down, 10 = fully exposed; "OK" is below 2). */
const MAX_EXPOSURE = 2.0;

/** A unit file's directives by section: every assignment in order ("" for a reset such as `CapabilityBoundingSet=`). */
type Unit = Record<string, Record<string, string[]>>;

function parseUnit(text: string): Unit {
  const unit: Unit = {};
  let section = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#') || line.startsWith(';')) continue;
    const head = /^\[(.+)\]$/.exec(line);
    if (head) {
      section = head[1]!;
      unit[section] ??= {};
      continue;
    }
    const eq = line.indexOf('=');
    assert.ok(eq > 0 && section, `not a "Key=value" line inside a section: ${line}`);
    ((unit[section]![line.slice(0, eq)] ??= [])).push(line.slice(eq + 1));
  }
  return unit;
}

/** The value in effect for a single-valued directive (the last assignment). */
function value(unit: Unit, section: string, key: string): string | undefined {
  return unit[section]?.[key]?.at(-1);
}

/** What the issue asks of both units: hardening, a state directory, no capabilities, a clean stop on SIGTERM. */
function checkCommon(unit: Unit, name: string): void {
  const want: Record<string, string> = {
    Type: 'exec',
    User: 'mesh-agent',
    NoNewPrivileges: 'true',
    ProtectSystem: 'strict',
    ProtectHome: 'true',
    PrivateTmp: 'true',
    KillSignal: 'SIGTERM',
    Restart: 'on-failure',
    StateDirectoryMode: '0700',
  };
  for (const [k, v] of Object.entries(want)) assert.equal(value(unit, 'Service', k), v, `${name}: ${k}=${v}`);
  for (const k of ['CapabilityBoundingSet', 'AmbientCapabilities']) assert.equal(value(unit, 'Service', k), '', `${name}: ${k}= (no capabilities)`);
  const stop = Number(/^(\d+)s?$/.exec(value(unit, 'Service', 'TimeoutStopSec') ?? '')?.[1]);
  assert.ok(stop >= 10 && stop <= 90, `${name}: TimeoutStopSec gives the drain time, 10 to 90 s`);
  assert.notEqual(value(unit, 'Service', 'MemoryDenyWriteExecute'), 'true', `${name}: MemoryDenyWriteExecute breaks V8's JIT`);
  const state = value(unit, 'Service', 'StateDirectory');
  assert.ok(state, `${name}: StateDirectory`);
  const exec = (value(unit, 'Service', 'ExecStart') ?? '').split(/\s+/);
  assert.equal(exec[0], '/usr/bin/mesh-agent', `${name}: ExecStart runs /usr/bin/mesh-agent`);
  const cmd = buildProgram().commands.find((c) => c.name() === exec[1]);
  assert.ok(cmd, `${name}: ExecStart runs a mesh-agent command (got ${exec[1]})`);
  for (const f of exec.filter((w) => w.startsWith('--'))) assert.ok(cmd.options.some((o) => o.long === f), `${name}: mesh-agent ${exec[1]} has option ${f}`);
  // The process writes where systemd made the state directory.
  const envDir = (unit.Service?.Environment ?? []).map((e) => /^MESH_(?:STATE|DATA)_DIR=(.*)$/.exec(e)?.[1]).find(Boolean);
  assert.equal(envDir, `/var/lib/${state}`, `${name}: the MESH_*_DIR variable is the StateDirectory`);
}

function checkAgentUnit(unit: Unit): void {
  checkCommon(unit, 'mesh-agent.service');
  assert.equal(value(unit, 'Service', 'ExecReload'), '/bin/kill -HUP $MAINPID', 'mesh-agent.service: reload by SIGHUP');
  assert.match(value(unit, 'Service', 'ExecStart') ?? '', /^\/usr\/bin\/mesh-agent agent /, 'mesh-agent.service: runs the agent');
}

function checkServerUnit(unit: Unit): void {
  checkCommon(unit, 'mesh-server.service');
  // The server does not handle SIGHUP; Node's default for it is to exit, so `systemctl reload` must not send it.
  assert.equal(value(unit, 'Service', 'ExecReload'), undefined, 'mesh-server.service: no ExecReload');
  assert.match(value(unit, 'Service', 'ExecStart') ?? '', /^\/usr\/bin\/mesh-agent server/, 'mesh-server.service: runs the server');
}

const UNITS = [
  { file: 'mesh-agent.service', check: checkAgentUnit },
  { file: 'mesh-server.service', check: checkServerUnit },
];

const BROKEN: { file: string; from: string; to: string; fails: RegExp }[] = [
  { file: 'mesh-agent.service', from: 'NoNewPrivileges=true\n', to: '', fails: /NoNewPrivileges=true/ },
  { file: 'mesh-agent.service', from: 'ProtectSystem=strict', to: 'ProtectSystem=full', fails: /ProtectSystem=strict/ },
  { file: 'mesh-agent.service', from: 'AmbientCapabilities=\n', to: 'AmbientCapabilities=CAP_NET_ADMIN\n', fails: /AmbientCapabilities= \(no capabilities\)/ },
  { file: 'mesh-agent.service', from: 'ExecReload=/bin/kill -HUP $MAINPID', to: 'ExecReload=/bin/kill -USR1 $MAINPID', fails: /reload by SIGHUP/ },
  { file: 'mesh-agent.service', from: 'KillSignal=SIGTERM', to: 'KillSignal=SIGKILL', fails: /KillSignal=SIGTERM/ },
  { file: 'mesh-agent.service', from: 'agent --config', to: 'agent --conf', fails: /has option --conf/ },
  { file: 'mesh-server.service', from: 'StateDirectory=mesh-server', to: 'StateDirectory=mesh', fails: /is the StateDirectory/ },
  { file: 'mesh-server.service', from: 'KillSignal=SIGTERM', to: 'KillSignal=SIGTERM\nExecReload=/bin/kill -HUP $MAINPID', fails: /no ExecReload/ },
];

/** Runs systemd-analyze on a copy whose binary path exists here (the package installs /usr/bin/mesh-agent). */
function analyze(dir: string, file: string, text: string, args: string[]): { status: number | null; stdout: string; stderr: string } {
  const copy = join(dir, file);
  writeFileSync(copy, text.replaceAll('/usr/bin/mesh-agent', process.execPath));
  const r = spawnSync('systemd-analyze', [...args, copy], { encoding: 'utf8' });
  assert.equal(r.error, undefined, 'systemd-analyze is installed (.ci/test-deps.sh installs it)');
  return r;
}

describe('systemd units', () => {
  const tmp = tempDir();
  after(() => tmp.cleanup());
  const text = (file: string): string => readFileSync(join(ROOT, 'systemd', file), 'utf8');

  for (const { file, check } of UNITS) {
    it(`${file} passes systemd-analyze verify`, () => {
      const r = analyze(tmp.dir, file, text(file), ['verify']);
      assert.equal(r.stderr.trim(), '', r.stderr);
      assert.equal(r.status, 0);
    });

    it(`${file} is hardened, reloads and stops as the issue asks`, () => {
      check(parseUnit(text(file)));
    });

    it(`${file} has a systemd-analyze security exposure of at most ${MAX_EXPOSURE}`, () => {
      const r = analyze(tmp.dir, file, text(file), ['security', '--offline=true', '--no-pager']);
      const m = /Overall exposure level for \S+: (\d+\.\d)/.exec(r.stdout);
      assert.ok(m, `an exposure line in:\n${r.stdout}\n${r.stderr}`);
      assert.ok(Number(m[1]) <= MAX_EXPOSURE, `${file}: exposure ${m[1]} is above ${MAX_EXPOSURE}:\n${r.stdout}`);
    });
  }

  for (const b of BROKEN) {
    it(`a copy of ${b.file} with "${b.to.trim() || `no ${b.from.trim()}`}" fails the check`, () => {
      const t = text(b.file);
      assert.ok(t.includes(b.from), `${b.file} contains ${b.from}`);
      assert.throws(() => UNITS.find((u) => u.file === b.file)!.check(parseUnit(t.replace(b.from, b.to))), b.fails);
    });
  }

  it('a copy with a misspelt directive fails systemd-analyze verify', () => {
    const r = analyze(tmp.dir, 'mesh-agent.service', text('mesh-agent.service').replace('ProtectHome=true', 'ProtectHomes=true'), ['verify']);
    assert.match(r.stderr, /Unknown key.*ProtectHomes/);
  });

  it('a copy without the hardening scores as exposed', () => {
    const bare = text('mesh-agent.service').split('# Hardening.')[0]!;
    const r = analyze(tmp.dir, 'mesh-agent.service', `${bare}\n[Install]\nWantedBy=multi-user.target\n`, ['security', '--offline=true', '--no-pager']);
    const m = /Overall exposure level for \S+: (\d+\.\d)/.exec(r.stdout);
    assert.ok(m && Number(m[1]) > MAX_EXPOSURE, `exposure without hardening: ${m?.[1]}`);
  });
});
