// The failure suite's fleet: a server, `api` on N nodes (an agent and a sample-service app each) and a caller node
// whose app reaches api through its upstream port. Fixed ports, so any part can be killed and started again in place.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { TestMesh, type AgentHandle, type ServerHandle } from '../helpers/mesh';
import { freePort, meshAgent, type Proc } from '../helpers/processes';
import { SteadyLoad, type LoadSummary } from './steady-load';

/** A node running api: its app, its agent, and what it takes to start either again. */
export interface ApiNode {
  readonly name: string;
  /** The sample-service app; its `x-served-by` is `api-<n>`. */
  app: Proc;
  readonly appPort: number;
  agent: AgentHandle;
  readonly configFile: string;
  readonly inboundPort: number;
}

/** A VirtualService that sends every request to api with these `retries` (YAML flow text). */
export const apiRetries = (retries: string): string => `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: api }
spec:
  hosts: [api]
  http:
    - route: [{ destination: { host: api } }]
      retries: ${retries}
`;

/** A DestinationRule for api with this `trafficPolicy` (YAML flow text). */
export const apiTrafficPolicy = (trafficPolicy: string): string => `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: api }
spec:
  host: api
  trafficPolicy: ${trafficPolicy}
`;

/** Retries and outlier detection for api, as an operator would write them for a service on several nodes. */
export const RESILIENT_API_POLICY = [
  apiRetries('{ attempts: 3, perTryTimeout: 3s, retryOn: "connect-failure,reset,503" }'),
  apiTrafficPolicy('{ outlierDetection: { consecutive5xxErrors: 3, interval: 1s, baseEjectionTime: 5s, maxEjectionPercent: 50 } }'),
].join('---\n');

export interface FleetOptions {
  /** How many nodes run api. @default 2 */
  apiNodes?: number;
  /** Extra server flags, such as `--workload-cert-ttl 4s`. */
  serverArgs?: string[];
  /** The caller's policy file (VirtualService / DestinationRule YAML). */
  policy?: string;
  /** Find api through Consul at this address instead of the endpoints file. */
  consulAddress?: string;
  /** A command the caller's agent runs under (see meshAgent). */
  callerWrap?: readonly string[];
}

export class Fleet {
  readonly mesh = new TestMesh();
  server!: ServerHandle;
  readonly apis: ApiNode[] = [];
  caller!: AgentHandle;
  callerConfig = '';
  upstream = 0;
  private serverListen: string[] = [];
  private readonly loads: SteadyLoad[] = [];

  /** The URL an app on the caller's node uses for api. */
  get url(): string {
    return `http://127.0.0.1:${this.upstream}/`;
  }

  async start(opts: FleetOptions = {}): Promise<this> {
    const { mesh } = this;
    this.serverListen = ['--listen', `127.0.0.1:${await freePort()}`, '--admin-listen', `127.0.0.1:${await freePort()}`, ...(opts.serverArgs ?? [])];
    this.server = await mesh.startServer(this.serverListen);
    for (let i = 1; i <= (opts.apiNodes ?? 2); i++) {
      const appPort = await freePort();
      const app = await this.startApp(i, appPort);
      const inboundPort = await freePort();
      const name = `node-b${i}`;
      const configFile = mesh.writeConfig(`${name}.yaml`, `inbound: { listen: "127.0.0.1:${inboundPort}" }\nadmin: { listen: "127.0.0.1:${await freePort()}" }\nservices: [{ name: api, port: ${appPort}, protocol: http }]\n`);
      const agent = await mesh.startAgent(name, configFile, { join: await mesh.token(this.server) });
      this.apis.push({ name, app, appPort, agent, configFile, inboundPort });
    }
    mesh.writeConfig('endpoints.yaml', `services:\n  api:\n${this.apis.map((n) => `    - { address: 127.0.0.1, port: ${n.inboundPort} }\n`).join('')}`);
    if (opts.policy) mesh.writeConfig('policy.yaml', opts.policy);
    this.upstream = await freePort();
    this.callerConfig = mesh.writeConfig(
      'node-a.yaml',
      [
        `inbound: { listen: "127.0.0.1:${await freePort()}" }`,
        `admin: { listen: "127.0.0.1:${await freePort()}" }`,
        opts.consulAddress ? `consul: { address: "${opts.consulAddress}", wait: 5s, minInterval: 0s }` : 'endpointsFile: {{root}}/endpoints.yaml',
        ...(opts.policy ? ['policyFile: {{root}}/policy.yaml'] : []),
        'services:',
        '  - name: web',
        '    port: 1',
        `    upstreams: [{ service: api, port: ${this.upstream}, protocol: http }]`,
        '',
      ].join('\n'),
    );
    this.caller = await mesh.startAgent('node-a', this.callerConfig, { join: await mesh.token(this.server), ...(opts.callerWrap ? { wrap: opts.callerWrap } : {}) });
    return this;
  }

  /** Starts steady traffic from the caller's node to api (stopped in `close()` if the test has not). */
  startLoad(): SteadyLoad {
    const load = new SteadyLoad(this.url).start();
    this.loads.push(load);
    return load;
  }

  /** Starts (again) the app of api node `i` on its port. */
  async startApp(i: number, port: number): Promise<Proc> {
    const app = this.mesh.track(meshAgent(`api-${i}`, ['sample-service', '--name', `api-${i}`, '--port', String(port)]));
    await app.waitFor(/listening on/);
    return app;
  }

  /** Starts the server again on the same ports and data dir. */
  async restartServer(): Promise<ServerHandle> {
    this.server = await this.mesh.startServer(this.serverListen, this.server.dataDir);
    return this.server;
  }

  /** Starts api node `n`'s agent again from its state dir: no join token. */
  async restartApiAgent(n: ApiNode): Promise<AgentHandle> {
    n.agent = await this.mesh.startAgent(n.name, n.configFile, { stateDir: n.agent.stateDir });
    return n.agent;
  }

  async close(): Promise<void> {
    await Promise.all(this.loads.map((l) => l.destroy()));
    await this.mesh.close();
  }
}

/** GETs an agent admin path with the agent's admin token (read from its state dir unless given). */
export async function agentAdmin<T>(agent: AgentHandle, path: '/status' | '/config_dump', adminToken?: string): Promise<T> {
  const token = adminToken ?? readFileSync(join(agent.stateDir, 'admin-token'), 'utf8').trim();
  const res = await fetch(`http://${agent.admin}${path}`, { headers: { authorization: `Bearer ${token}` } });
  if (res.status !== 200) throw new Error(`${path}: HTTP ${res.status} ${await res.text()}`);
  return (await res.json()) as T;
}

/** Polls `check` until it returns a value (not undefined); @throws after `timeoutMs`. */
export async function until<T>(what: string, check: () => Promise<T | undefined> | T | undefined, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Writes a scenario's numbers into the test output (docs/reliability.md collects them). */
export function report(t: TestContext, s: LoadSummary, extra: Record<string, string | number> = {}): void {
  const more = Object.entries(extra).map(([k, v]) => `, ${k} ${v}`).join('');
  t.diagnostic(`${t.name}: sent ${s.sent} in ${s.seconds} s (${s.rate}/s), failed ${s.failed}, p99 ${s.p99Ms} ms, max ${s.maxMs} ms${more}`);
}

/** The failure details for an assertion message. */
export const failureText = (s: LoadSummary): string => `${s.failed} of ${s.sent} requests failed: ${s.examples.join('; ')}`;
