// A test mesh of real processes: one server, agents that enroll with tokens, and cleanup of all of them.

import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { freePort, meshAgent, runMeshAgent, tempDir, type Proc } from './processes';

export interface ServerHandle {
  readonly proc: Proc;
  readonly dataDir: string;
  readonly agentAddr: string;
  readonly adminAddr: string;
  readonly fingerprint: string;
}

export interface AgentHandle {
  readonly proc: Proc;
  readonly stateDir: string;
  readonly configFile: string;
  readonly inbound: string;
  readonly admin: string;
}

/** The part of an agent's GET /status that tests read. */
export interface AgentStatus {
  upstreams: { service: string; stats: Record<string, number> }[];
  inboundStats: Record<string, number>;
}

/** An agent's GET /status, through its admin API with its token. */
export async function agentStatus(agent: AgentHandle): Promise<AgentStatus> {
  const token = readFileSync(join(agent.stateDir, 'admin-token'), 'utf8').trim();
  const res = await fetch(`http://${agent.admin}/status`, { headers: { authorization: `Bearer ${token}` } });
  if (res.status !== 200) throw new Error(`GET /status of ${agent.admin}: ${res.status} ${await res.text()}`);
  return (await res.json()) as AgentStatus;
}

/** An agent's GET /metrics (Prometheus text), through its admin API with its token. */
export async function agentMetrics(agent: AgentHandle): Promise<string> {
  const token = readFileSync(join(agent.stateDir, 'admin-token'), 'utf8').trim();
  const res = await fetch(`http://${agent.admin}/metrics`, { headers: { authorization: `Bearer ${token}` } });
  if (res.status !== 200) throw new Error(`GET /metrics of ${agent.admin}: ${res.status} ${await res.text()}`);
  return res.text();
}

/** The value of the one sample of `name` whose labels include all of `labels` (undefined: none; throws when several match). */
export function metricSample(text: string, name: string, labels: Record<string, string>): number | undefined {
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  const lines = text.split('\n').filter((l) => l.startsWith(`${name}{`) && want.every((w) => l.includes(w)));
  if (lines.length > 1) throw new Error(`${lines.length} samples of ${name} match ${want.join(',')}:\n${lines.join('\n')}`);
  return lines[0] === undefined ? undefined : Number(lines[0].slice(lines[0].lastIndexOf(' ') + 1));
}

/** The counters of an agent's upstream to `service` (in namespace default). */
export async function upstreamStats(agent: AgentHandle, service: string): Promise<Record<string, number>> {
  const u = (await agentStatus(agent)).upstreams.find((x) => x.service === `${service}.default`);
  if (!u) throw new Error(`no upstream ${service}.default in the status of ${agent.admin}`);
  return u.stats;
}

/** Owns every process and directory a test makes, and removes them in `close()`. */
export class TestMesh {
  readonly root: string;
  private readonly cleanupDir: () => void;
  private readonly procs: Proc[] = [];

  /** `binary`: run this single-file build instead of the compiled CLI under the current node. */
  constructor(private readonly binary?: string) {
    const t = tempDir();
    this.root = t.dir;
    this.cleanupDir = t.cleanup;
  }

  track(p: Proc): Proc {
    this.procs.push(p);
    return p;
  }

  async startServer(extra: string[] = [], dataDir = join(this.root, 'server')): Promise<ServerHandle> {
    const proc = this.track(meshAgent('server', ['server', '--data-dir', dataDir, '--listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0', ...extra], {}, { binary: this.binary }));
    const m = await proc.waitFor(/server ready: agents on ([\d.]+:\d+), admin on http:\/\/([\d.]+:\d+), CA (sha256:[0-9a-f]+)/);
    return { proc, dataDir, agentAddr: m[1]!, adminAddr: m[2]!, fingerprint: m[3]! };
  }

  /** Creates a join token through the CLI; the server's advertise address is its bound agent port. */
  async token(server: ServerHandle, opts: { ttl?: string; uses?: number } = {}): Promise<string> {
    const r = await runMeshAgent(['token', 'create', '--admin', server.adminAddr, '--data-dir', server.dataDir, '--server', server.agentAddr, '--ttl', opts.ttl ?? '10m', '--uses', String(opts.uses ?? 1), '-o', 'json'], {}, this.binary);
    if (r.code !== 0) throw new Error(`token create failed: ${r.stderr}`);
    return (JSON.parse(r.stdout) as { token: string }).token;
  }

  /** Writes an agent config (YAML text with `{{root}}` replaced) and returns its path. */
  writeConfig(name: string, yaml: string): string {
    const file = join(this.root, name);
    writeFileSync(file, yaml.replaceAll('{{root}}', this.root));
    return file;
  }

  /** Starts an agent and waits until it is ready (all certificates issued). */
  async startAgent(name: string, configFile: string, opts: { join?: string; stateDir?: string; extra?: string[]; wrap?: readonly string[] } = {}): Promise<AgentHandle> {
    const stateDir = opts.stateDir ?? join(this.root, `${name}-state`);
    const args = ['agent', '--config', configFile, '--state-dir', stateDir, '--node-name', name, ...(opts.join ? ['--join', opts.join] : []), ...(opts.extra ?? [])];
    const proc = this.track(meshAgent(name, args, {}, { binary: this.binary, wrap: opts.wrap }));
    const m = await proc.waitFor(/agent ready: node \S+, inbound ([\d.]+:\d+), admin ([\d.]+:\d+)/);
    return { proc, stateDir, configFile, inbound: m[1]!, admin: m[2]! };
  }

  /**
   * Writes `text` to the agent's policy file and sends SIGHUP; resolves once the agent logged that it reloaded.
   * @throws when the agent rejected the file (the error names the problems) or did not answer in time
   */
  async reloadPolicy(agent: AgentHandle, file: string, text: string, timeoutMs = 15_000): Promise<void> {
    const outcomes = (): string[] => agent.proc.stderr.match(/policy (reloaded|rejected, keeping the previous one)/g) ?? [];
    const seen = outcomes().length;
    writeFileSync(file, text);
    agent.proc.child.kill('SIGHUP');
    for (const deadline = Date.now() + timeoutMs; outcomes().length === seen; await new Promise((r) => setTimeout(r, 20))) {
      if (Date.now() > deadline || !agent.proc.running) throw new Error(`${agent.proc.name} did not reload its policy within ${timeoutMs} ms\n${agent.proc.stderr}`);
    }
    if (outcomes()[seen] !== 'policy reloaded') throw new Error(`${agent.proc.name} rejected the policy:\n${agent.proc.stderr.split('\n').filter((l) => l.includes('policy rejected')).pop()}`);
  }

  /** Starts an agent that is expected to fail; resolves with its exit code and output. */
  async failAgent(name: string, configFile: string, opts: { join?: string; stateDir?: string; env?: NodeJS.ProcessEnv } = {}): Promise<{ code: number | null; stderr: string }> {
    const stateDir = opts.stateDir ?? join(this.root, `${name}-state`);
    const proc = this.track(meshAgent(name, ['agent', '--config', configFile, '--state-dir', stateDir, '--node-name', name, ...(opts.join ? ['--join', opts.join] : [])], opts.env ?? {}, { binary: this.binary }));
    const code = await proc.exited;
    return { code, stderr: proc.stderr };
  }

  /**
   * The two-node shape most tests need: node-b runs `api` (protocol http, the app on `apiPort`), node-a runs
   * `web` with an upstream to api on a local port (http: pooled per request; tcp: one mTLS connection per
   * downstream connection). Resolves when both agents are ready.
   */
  async startPair(server: ServerHandle, apiPort: number, upstreamProtocol: 'http' | 'tcp' = 'http'): Promise<{ a: AgentHandle; b: AgentHandle; upstream: number }> {
    const b = await this.startAgent('node-b', this.writeConfig('b.yaml', `inbound: { listen: "127.0.0.1:0" }\nadmin: { listen: "127.0.0.1:0" }\nservices:\n  - { name: api, port: ${apiPort}, protocol: http }\n`), { join: await this.token(server) });
    this.writeConfig('endpoints.yaml', `services:\n  api: [{ address: 127.0.0.1, port: ${b.inbound.split(':')[1]} }]\n`);
    const upstream = await freePort();
    const a = await this.startAgent(
      'node-a',
      this.writeConfig('a.yaml', `inbound: { listen: "127.0.0.1:0" }\nadmin: { listen: "127.0.0.1:0" }\nendpointsFile: {{root}}/endpoints.yaml\nservices:\n  - name: web\n    port: 1\n    protocol: http\n    upstreams: [{ service: api, port: ${upstream}, protocol: ${upstreamProtocol} }]\n`),
      { join: await this.token(server) },
    );
    return { a, b, upstream };
  }

  async close(): Promise<void> {
    await Promise.all(this.procs.map((p) => p.stop('SIGKILL')));
    this.cleanupDir();
  }
}
