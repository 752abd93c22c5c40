// The Nomad job files in nomad/ parse as HCL and say what the mesh needs; broken copies of them fail the same checks.

import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { after, describe, it } from 'node:test';
import { loadAgentConfig } from '../../src/agent';
import { buildProgram } from '../../src/cli/main';
import { readPolicyFile } from '../../src/policy';
import { block, blocks, goDurationMs, jobText, labelled, labels, parseJob, renderTemplate, type Block } from '../helpers/nomad-job';
import { tempDir } from '../helpers/processes';

const LINUX = { attribute: '${attr.kernel.name}', value: 'linux' };
/** Nomad clients cap kill_timeout at max_kill_timeout, 30s unless the client config raises it. */
const MAX_KILL_TIMEOUT_MS = 30_000;
const UPSTREAM = /^([a-z0-9-]+)(?:\.([a-z0-9-]+))?:(\d{1,5})(?:\/(tcp|http|http2|grpc))?$/;

function assertLinuxOnly(job: Block, where: string): void {
  const c = block(job, 'constraint', where);
  assert.equal(c.attribute, LINUX.attribute, `${where}: constraint on the kernel name`);
  assert.equal(c.value, LINUX.value, `${where}: constraint value`);
  assert.ok(c.operator === undefined || c.operator === '=', `${where}: constraint operator "=" (got ${String(c.operator)})`);
}

/** Each --flag in a task's args is an option of that mesh-agent command. */
function assertFlagsExist(args: string[], where: string): void {
  const cmd = buildProgram().commands.find((c) => c.name() === args[0]);
  assert.ok(cmd, `${where}: "${args[0]}" is a mesh-agent command`);
  const known = new Set(cmd.options.map((o) => o.long));
  for (const a of args.filter((x) => x.startsWith('--'))) assert.ok(known.has(a.split('=')[0]), `${where}: mesh-agent ${args[0]} has no option ${a}`);
}

/** The value that follows `flag` in args. */
function argAfter(args: string[], flag: string, where: string): string {
  const i = args.indexOf(flag);
  assert.ok(i >= 0 && i + 1 < args.length, `${where}: args give ${flag} <value>`);
  return args[i + 1]!;
}

function assertDaemonRestart(group: Block, where: string): void {
  const r = block(group, 'restart', where);
  assert.equal(r.mode, 'delay', `${where}: restart mode "delay" keeps a daemon restarting instead of failing the allocation`);
  assert.ok(Number(r.attempts) >= 1, `${where}: restart attempts`);
  goDurationMs(r.delay, `${where}: restart delay`);
}

function assertCleanStop(task: Block, where: string): void {
  assert.equal(task.kill_signal, 'SIGTERM', `${where}: kill_signal SIGTERM (Nomad's default is SIGINT)`);
  const ms = goDurationMs(task.kill_timeout, `${where}: kill_timeout`);
  assert.ok(ms >= 10_000 && ms <= MAX_KILL_TIMEOUT_MS, `${where}: kill_timeout between 10s (time to drain) and the client's 30s cap, got ${String(task.kill_timeout)}`);
}

function assertCheck(check: Block, want: Partial<Record<'type' | 'path' | 'protocol' | 'port', string>>, where: string): void {
  for (const [k, v] of Object.entries(want)) assert.equal(check[k], v, `${where}: check ${k}`);
  goDurationMs(check.interval, `${where}: check interval`);
  goDurationMs(check.timeout, `${where}: check timeout`);
}

function assertTemplatesValid(task: Block, where: string): void {
  for (const t of blocks(task, 'template')) {
    const w = `${where} template ${String(t.destination)}`;
    // Nomad refuses env templates with change_mode "signal": the environment cannot change under a process.
    if (t.env === true) assert.notEqual(t.change_mode, 'signal', `${w}: an env template cannot use change_mode "signal"`);
    if (t.change_mode === 'signal') assert.match(String(t.change_signal), /^SIG[A-Z0-9]+$/, `${w}: change_signal`);
  }
}

function templateAt(task: Block, destination: string, where: string): Block {
  const t = blocks(task, 'template').find((x) => x.destination === destination);
  assert.ok(t, `${where}: a template renders ${destination}`);
  return t;
}

/** nomad/mesh-agent.nomad.hcl */
function checkAgentJob({ name, job }: { name: string; job: Block }): void {
  const w = 'mesh-agent job';
  assert.equal(name, 'mesh-agent');
  assert.equal(job.type, 'system', `${w}: type "system" (one agent per client)`);
  assertLinuxOnly(job, w);
  assert.deepEqual(labels(job, 'group'), ['agent'], `${w}: one group`);
  const group = labelled(job, 'group', 'agent', w);
  const net = block(group, 'network', w);
  assert.equal(net.mode, 'host', `${w}: host networking`);
  assert.equal(labelled(net, 'port', 'inbound', w).static, 15443, `${w}: the inbound port is static 15443 (other agents dial it)`);
  const adminPort = labelled(net, 'port', 'admin', w).static;
  assertDaemonRestart(group, w);
  const task = labelled(group, 'task', 'mesh-agent', w);
  assert.equal(task.driver, 'raw_exec', `${w}: driver raw_exec`);
  const config = block(task, 'config', w);
  assert.equal(config.command, '/usr/bin/mesh-agent', `${w}: command`);
  const args = config.args as string[];
  assert.equal(args[0], 'agent', `${w}: runs "mesh-agent agent"`);
  assertFlagsExist(args, w);
  assertCleanStop(task, w);
  assertTemplatesValid(task, w);
  const configFile = argAfter(args, '--config', w);
  assert.match(configFile, /^\$\{NOMAD_TASK_DIR\}\//, `${w}: --config points into the task dir`);
  const cfg = templateAt(task, configFile.replace('${NOMAD_TASK_DIR}/', 'local/'), w);
  assert.equal(cfg.change_mode, 'signal', `${w}: the config template reloads the agent`);
  assert.equal(cfg.change_signal, 'SIGHUP', `${w}: by SIGHUP`);
  assert.match(String(cfg.data), /nodeName: \{\{ env "node\.unique\.name" \}\}/, `${w}: the node name comes from Nomad`);
  const svc = block(task, 'service', w);
  assert.equal(svc.provider, 'consul', `${w}: service provider`);
  assert.equal(svc.name, 'mesh-agent-admin', `${w}: service name`);
  assert.equal(svc.port, 'admin', `${w}: service port label`);
  // The admin API listens on loopback; the check (at the service address) must go there.
  assert.equal(svc.address, '127.0.0.1', `${w}: service address`);
  assert.match(String(cfg.data), /admin:\n {2}listen: 127\.0\.0\.1:\{\{ env "NOMAD_PORT_admin" \}\}/, `${w}: admin listens on 127.0.0.1 at the reserved port`);
  assert.equal(typeof adminPort, 'number', `${w}: the admin port is reserved (static)`);
  const check = block(svc, 'check', w);
  assertCheck(check, { type: 'http', path: '/ready' }, w);
  assert.ok(block(check, 'check_restart', w).limit, `${w}: check_restart restarts an agent that stays unready`);
}

/** nomad/mesh-server.nomad.hcl */
function checkServerJob({ name, job }: { name: string; job: Block }): void {
  const w = 'mesh-server job';
  assert.equal(name, 'mesh-server');
  assert.equal(job.type, 'service', `${w}: type "service"`);
  assertLinuxOnly(job, w);
  const group = labelled(job, 'group', 'server', w);
  assert.equal(group.count, 1, `${w}: one instance (one SQLite writer)`);
  const net = block(group, 'network', w);
  assert.equal(labelled(net, 'port', 'agent', w).static, 15010, `${w}: static agent port (join tokens carry it)`);
  assertDaemonRestart(group, w);
  const [volName] = labels(group, 'volume');
  assert.ok(volName, `${w}: a volume for the state`);
  const vol = labelled(group, 'volume', volName, w);
  assert.equal(vol.type, 'host', `${w}: a host volume`);
  assert.notEqual(vol.read_only, true, `${w}: the volume is writable`);
  const task = labelled(group, 'task', 'mesh-server', w);
  assert.equal(task.driver, 'exec', `${w}: driver exec`);
  const args = block(task, 'config', w).args as string[];
  assert.equal(args[0], 'server', `${w}: runs "mesh-agent server"`);
  assertFlagsExist(args, w);
  const mount = block(task, 'volume_mount', w);
  assert.equal(mount.volume, volName, `${w}: the task mounts the group's volume`);
  assert.equal(argAfter(args, '--data-dir', w), mount.destination, `${w}: --data-dir is the mounted volume`);
  assert.equal(argAfter(args, '--advertise', w), '${NOMAD_ADDR_agent}', `${w}: advertises the node address and agent port`);
  assertCleanStop(task, w);
  const svc = block(task, 'service', w);
  assert.equal(svc.provider, 'consul', `${w}: service provider`);
  assert.equal(svc.port, 'agent', `${w}: service port`);
  assertCheck(block(svc, 'check', w), { type: 'http', protocol: 'https', path: '/v1/bundle' }, w);
}

/** nomad/example-app.nomad.hcl */
function checkExampleJob({ job }: { name: string; job: Block }): void {
  const w = 'example-app job';
  assert.equal(job.type, 'service', `${w}: type`);
  const services = new Set<string>();
  const calls: { from: string; service: string; port: number; url: string | undefined }[] = [];
  for (const g of labels(job, 'group')) {
    const group = labelled(job, 'group', g, w);
    for (const t of labels(group, 'task')) {
      const task = labelled(group, 'task', t, `${w} ${g}`);
      const where = `${w} task ${t}`;
      const args = block(task, 'config', where).args as string[];
      assertFlagsExist(args, where);
      const svc = block(task, 'service', where);
      assert.equal(svc.provider, 'consul', `${where}: service provider`);
      assert.ok(labels(block(group, 'network', where), 'port').includes(String(svc.port)), `${where}: service port is a port label of the group`);
      assert.ok((svc.tags as string[] | undefined)?.includes('mesh'), `${where}: tag "mesh" opts the service into the mesh`);
      const meta = block(svc, 'meta', where);
      assert.ok(['tcp', 'http', 'http2', 'grpc'].includes(String(meta['mesh-protocol'])), `${where}: meta mesh-protocol is tcp, http, http2 or grpc (got ${String(meta['mesh-protocol'])})`);
      assertCheck(block(svc, 'check', where), {}, where);
      services.add(String(svc.name));
      for (const u of String(meta['mesh-upstreams'] ?? '').split(',').filter(Boolean)) {
        const m = UPSTREAM.exec(u.trim());
        assert.ok(m, `${where}: mesh-upstreams item "${u}" is service[.namespace]:port[/protocol]`);
        calls.push({ from: t, service: m[1]!, port: Number(m[3]), url: args.includes('--upstream') ? argAfter(args, '--upstream', where) : undefined });
      }
    }
  }
  assert.ok(calls.length > 0, `${w}: some service has mesh-upstreams`);
  for (const c of calls) {
    assert.ok(services.has(c.service), `${w}: upstream ${c.service} of ${c.from} is a service of the job`);
    // The app calls what its agent opens: the upstream's local port on 127.0.0.1.
    assert.equal(c.url, `http://127.0.0.1:${c.port}`, `${w}: ${c.from} calls its upstream at 127.0.0.1:${c.port}`);
  }
}

const JOBS = [
  { file: 'mesh-agent.nomad.hcl', check: checkAgentJob },
  { file: 'mesh-server.nomad.hcl', check: checkServerJob },
  { file: 'example-app.nomad.hcl', check: checkExampleJob },
];

/** Changes that break what matters; each must make its file's check fail with the message shown. */
const BROKEN: { file: string; from: string; to: string; fails: RegExp }[] = [
  { file: 'mesh-agent.nomad.hcl', from: 'type        = "system"', to: 'type        = "service"', fails: /type "system"/ },
  { file: 'mesh-agent.nomad.hcl', from: 'value     = "linux"', to: 'value     = "windows"', fails: /constraint value/ },
  { file: 'mesh-agent.nomad.hcl', from: 'driver = "raw_exec"', to: 'driver = "docker"', fails: /driver raw_exec/ },
  { file: 'mesh-agent.nomad.hcl', from: 'kill_signal  = "SIGTERM"', to: 'kill_signal  = "SIGINT"', fails: /kill_signal SIGTERM/ },
  { file: 'mesh-agent.nomad.hcl', from: 'kill_timeout = "30s"', to: 'kill_timeout = "2m"', fails: /kill_timeout between/ },
  { file: 'mesh-agent.nomad.hcl', from: 'mode     = "delay"', to: 'mode     = "fail"', fails: /restart mode "delay"/ },
  { file: 'mesh-agent.nomad.hcl', from: 'change_signal = "SIGHUP"', to: 'change_signal = "SIGUSR1"', fails: /by SIGHUP/ },
  { file: 'mesh-agent.nomad.hcl', from: 'change_mode = "noop"', to: 'change_mode = "signal"', fails: /env template cannot use change_mode "signal"/ },
  { file: 'mesh-agent.nomad.hcl', from: 'provider = "consul"', to: 'provider = "nomad"', fails: /service provider/ },
  { file: 'mesh-agent.nomad.hcl', from: 'path     = "/ready"', to: 'path     = "/healthz"', fails: /check path/ },
  { file: 'mesh-agent.nomad.hcl', from: 'interval = "10s"', to: 'interval = "often"', fails: /check interval: got "often"/ },
  { file: 'mesh-agent.nomad.hcl', from: '"--log-format", "json"', to: '"--log-fmt", "json"', fails: /no option --log-fmt/ },
  { file: 'mesh-server.nomad.hcl', from: 'count = 1', to: 'count = 2', fails: /one instance/ },
  { file: 'mesh-server.nomad.hcl', from: 'destination = "/var/lib/mesh-server"', to: 'destination = "/data"', fails: /--data-dir is the mounted volume/ },
  { file: 'mesh-server.nomad.hcl', from: 'path            = "/v1/bundle"', to: 'path            = "/"', fails: /check path/ },
  { file: 'example-app.nomad.hcl', from: 'tags = ["mesh", "version=v1"]', to: 'tags = ["version=v1"]', fails: /tag "mesh"/ },
  { file: 'example-app.nomad.hcl', from: 'mesh-upstreams = "api:9001/http"', to: 'mesh-upstreams = "api:9002/http"', fails: /calls its upstream at 127\.0\.0\.1:9002/ },
  { file: 'example-app.nomad.hcl', from: 'mesh-upstreams = "api:9001/http"', to: 'mesh-upstreams = "api/9001"', fails: /service\[\.namespace\]:port/ },
  { file: 'example-app.nomad.hcl', from: 'mesh-protocol = "http"', to: 'mesh-protocol = "udp"', fails: /got udp/ },
];

describe('Nomad job files', () => {
  const tmp = tempDir();
  after(() => tmp.cleanup());

  for (const { file, check } of JOBS) {
    it(`${file} parses and has the fields the mesh needs`, async () => {
      check(await parseJob(file, jobText(file)));
    });
  }

  for (const b of BROKEN) {
    it(`a copy of ${b.file} with ${b.to} fails the check`, async () => {
      const text = jobText(b.file);
      assert.ok(text.includes(b.from), `${b.file} contains ${b.from}`);
      const check = JOBS.find((j) => j.file === b.file)!.check;
      const job = await parseJob(b.file, text.replace(b.from, b.to));
      assert.throws(() => check(job), b.fails);
    });
  }

  it('a job file that is not HCL is refused with its line', async () => {
    const text = jobText('mesh-agent.nomad.hcl');
    const line = text.slice(0, text.indexOf('type        = "system"')).split('\n').length;
    await assert.rejects(parseJob('mesh-agent.nomad.hcl', text.replace('type        = "system"', 'type        =')), new RegExp(`mesh-agent\\.nomad\\.hcl:${line},\\d+-.*Invalid expression`));
  });

  // consul.localServices comes with the local-services slice of issue 4; until that merges, the agent refuses it.
  it("the agent job's templates render a config the agent accepts, with this node's identity", async () => {
    const { job } = await parseJob('mesh-agent.nomad.hcl', jobText('mesh-agent.nomad.hcl'));
    const group = labelled(job, 'group', 'agent', 'job');
    const task = labelled(group, 'task', 'mesh-agent', 'job');
    const ports = block(group, 'network', 'job');
    const env = {
      'node.unique.name': 'client-7',
      'attr.unique.network.ip-address': '10.0.0.7',
      NOMAD_PORT_inbound: String(labelled(ports, 'port', 'inbound', 'job').static),
      NOMAD_PORT_admin: String(labelled(ports, 'port', 'admin', 'job').static),
      NOMAD_SECRETS_DIR: join(tmp.dir, 'secrets'),
    };
    const policy = 'apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { name: api }\nspec:\n  hosts: [api]\n  http:\n    - route:\n        - destination: { host: api }\n';
    const vars = { 'nomad/jobs/mesh-agent': { join_token: 'meshjoin1_example', policy } };
    for (const t of blocks(task, 'template')) {
      const file = join(tmp.dir, String(t.destination));
      mkdirSync(dirname(file), { recursive: true });
      writeFileSync(file, renderTemplate(String(t.data), env, vars));
    }
    const config = loadAgentConfig({ file: join(tmp.dir, 'local', 'agent.yaml'), env: {} });
    assert.equal(config.nodeName, 'client-7');
    assert.equal(config.address, '10.0.0.7');
    assert.deepEqual(config.inbound, { host: '0.0.0.0', port: 15443 });
    assert.deepEqual(config.admin, { host: '127.0.0.1', port: 15000 });
    assert.equal(config.stateDir, '/var/lib/mesh-agent');
    assert.equal(config.consul?.tokenFile, join(tmp.dir, 'secrets', 'consul-token'));
    assert.equal((config.consul as unknown as { localServices?: boolean }).localServices, true);
    assert.equal(config.policyFile, join(tmp.dir, 'local', 'policy.yaml'));
    assert.equal(readPolicyFile(config.policyFile).length, 1, 'the policy from the Nomad variable reaches the agent');
    // Without a policy key the policy file is empty, which the agent accepts as "no policy".
    writeFileSync(config.policyFile, renderTemplate(String(templateAt(task, 'local/policy.yaml', 'job').data), env, { 'nomad/jobs/mesh-agent': {} }));
    assert.deepEqual(readPolicyFile(config.policyFile), []);
  });
});
