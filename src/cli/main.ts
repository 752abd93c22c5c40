// The mesh-agent command line: thin commands over the agent, the server and the admin API.

import { Command, Option } from 'commander';
import { loadAgentConfig, MeshAgent, type AgentConfig } from '../agent';
import { describeError, MeshError } from '../errors';
import { MESH_COMMIT, MESH_VERSION } from '../protocol';
import { loadServerConfig, MeshServer, migrateToHa } from '../server';
import { createLogger, type LogFormat } from '../telemetry';
import { adminCall, type AdminFlags } from './admin-client';
import { addAdminTokenCommands } from './admin-token-commands';
import { agentStatus } from './agent-admin-client';
import { adminOptions, examples, json, output } from './command-helpers';
import { addDashboardCommand } from './dashboard-command';
import { runDemo } from './demo';
import { addCaptureCommands } from './capture-commands';
import { addExplainCommand } from './explain-command';
import { addPolicyCommands } from './policy-commands';
import { addTapCommand } from './tap-command';
import { printAgentStatus, printServerStatus } from './status-output';
import { runUntilSignal } from './run-until-signal';
import { runSampleService } from './sample-service';


export function buildProgram(): Command {
  const program = new Command('mesh-agent')
    .description('A service mesh for VMs and Nomad nodes: mTLS workload identities and a proxy on every node, a small control plane.')
    .version(MESH_VERSION, '-v, --version')
    .showHelpAfterError('(run with --help for usage)')
    .addHelpText('after', examples(['mesh-agent demo', 'mesh-agent server --data-dir /var/lib/mesh-server', 'mesh-agent token create --ttl 1h', 'mesh-agent agent --config /etc/mesh-agent/agent.yaml --join <token>', 'mesh-agent apply -f policy/', 'mesh-agent status -o json', 'mesh-agent dashboard']));

  program
    .command('server')
    .description('run the control plane: CA, enrollment, agent channel (TLS, :15010) and admin API (loopback, :15014)')
    .option('-c, --config <file>', 'server config file (YAML or JSON)')
    .option('--data-dir <dir>', 'where mesh.db and admin-token live (env MESH_DATA_DIR) [./mesh-server-data]')
    .option('--listen <addr>', 'agent channel and enrollment address (env MESH_LISTEN) [0.0.0.0:15010]')
    .option('--advertise <addr>', 'address agents dial, written into join tokens (env MESH_ADVERTISE)')
    .option('--admin-listen <addr>', 'admin API address (env MESH_ADMIN_LISTEN) [127.0.0.1:15014]')
    .option('--trust-domain <name>', 'SPIFFE trust domain, fixed when the CA is created (env MESH_TRUST_DOMAIN) [mesh.local]')
    .option('--workload-cert-ttl <duration>', 'workload certificate lifetime (env MESH_WORKLOAD_CERT_TTL) [24h]')
    .option('--node-cert-ttl <duration>', 'node certificate lifetime (env MESH_NODE_CERT_TTL) [720h]')
    .addOption(new Option('--ha <mode>', 'run as one of several replicas with Consul KV as the source of truth (env MESH_HA; see docs/ha.md)').choices(['consul']))
    .option('--ha-consul <addr>', 'Consul HTTP address in HA mode (env MESH_HA_CONSUL; default CONSUL_HTTP_ADDR, then 127.0.0.1:8500)')
    .option('--ha-prefix <prefix>', 'Consul KV prefix of the mesh state (env MESH_HA_PREFIX) [mesh-agent/]')
    .option('--ha-key-file <file>', 'key-encryption key, 64 hex characters, mode 0600, the same on every replica (env MESH_HA_KEY_FILE)')
    .option('--ha-replica-name <name>', 'this replica\'s unique name (env MESH_HA_REPLICA_NAME) [advertise address]')
    .option('--ha-admin-advertise <url>', 'admin API URL followers redirect writes to (env MESH_HA_ADMIN_ADVERTISE) [http://<admin-listen>]')
    .option('--ha-session-ttl <duration>', 'Consul session TTL of the leader lock (env MESH_HA_SESSION_TTL) [15s]')
    .option('--ha-lock-delay <duration>', 'Consul lock delay after a leader is lost (env MESH_HA_LOCK_DELAY) [5s]')
    .addOption(new Option('--log-format <format>', 'log line format').choices(['text', 'json']).default('text'))
    .addOption(new Option('--log-level <level>', 'least important log lines shown').choices(['info', 'debug']).default('info'))
    .addHelpText('after', examples(['mesh-agent server --data-dir ./mesh-server-data', 'mesh-agent server --listen 10.0.0.5:15010 --workload-cert-ttl 12h', 'MESH_DATA_DIR=/var/lib/mesh-server mesh-agent server', 'mesh-agent server --ha consul --ha-key-file /etc/mesh-server/ha.key --listen 10.0.0.5:15010 --admin-listen 10.0.0.5:15014']))
    .action(async (opts: Record<string, unknown>) => {
      const config = loadServerConfig({ ...(opts.config ? { file: opts.config as string } : {}), flags: opts, env: process.env });
      const server = new MeshServer(config, { log: createLogger({ format: opts.logFormat as LogFormat, level: opts.logLevel as 'info' | 'debug', base: { component: 'server' } }) });
      await runUntilSignal(server, () => {
        if (server.newAdminToken) {
          process.stdout.write(`admin token (shown once; also in ${config.dataDir}/admin-token, mode 0600): ${server.newAdminToken}\n`);
        }
        const a = server.address('agent');
        const m = server.address('admin');
        process.stdout.write(`mesh-agent server ready: agents on ${a.host}:${a.port}, admin on http://${m.host}:${m.port}, CA ${server.caFingerprint}\n`);
      });
    });

  program
    .command('migrate-to-ha')
    .description("copy a single server's state (CA, admin token, policy history, join tokens, agents) into Consul KV for HA mode; stop that server first")
    .option('-c, --config <file>', 'server config file (YAML or JSON)')
    .option('--data-dir <dir>', 'the single server\'s data dir (env MESH_DATA_DIR) [./mesh-server-data]')
    .option('--trust-domain <name>', 'its trust domain (env MESH_TRUST_DOMAIN) [mesh.local]')
    .option('--ha-consul <addr>', 'Consul HTTP address (env MESH_HA_CONSUL; default CONSUL_HTTP_ADDR, then 127.0.0.1:8500)')
    .option('--ha-prefix <prefix>', 'Consul KV prefix to fill; it must hold no mesh state (env MESH_HA_PREFIX) [mesh-agent/]')
    .option('--ha-key-file <file>', 'key-encryption key the replicas will use (env MESH_HA_KEY_FILE)')
    .addOption(output())
    .addHelpText('after', examples(['mesh-agent migrate-to-ha --data-dir /var/lib/mesh-server --ha-key-file /etc/mesh-server/ha.key', 'CONSUL_HTTP_ADDR=10.0.0.2:8500 mesh-agent migrate-to-ha --ha-prefix prod/mesh/ --ha-key-file ha.key -o json']))
    .action(async (opts: Record<string, unknown> & { output: string }) => {
      const config = loadServerConfig({ ...(opts.config ? { file: opts.config as string } : {}), flags: { ...opts, ha: 'consul' }, env: process.env });
      const r = await migrateToHa(config);
      if (opts.output === 'json') return json(r);
      process.stdout.write(`migrated ${config.dataDir} to Consul KV ${r.prefix}: CA ${r.caFingerprint}, policy version ${r.policyVersion}, ${r.tokens} join token(s), ${r.agents} agent(s)\nstart the replicas with --ha consul --ha-prefix ${r.prefix} (see docs/ha.md)\n`);
    });

  program
    .command('agent')
    .description('run the node agent: enrolls once, then proxies inbound (mTLS :15443) and outbound (one port per upstream); SIGHUP reloads the config file')
    .option('-c, --config <file>', 'agent config file (YAML or JSON): services, upstreams, ports')
    .option('--join <token>', 'join token for the first start (env MESH_JOIN_TOKEN); later starts reuse the state dir')
    .option('--state-dir <dir>', 'keys, certificates, enrollment (env MESH_STATE_DIR) [./mesh-agent-state]')
    .option('--server <addr>', 'server agent address, overriding the one in the token (env MESH_SERVER)')
    .option('--node-name <name>', 'this node\'s name (env MESH_NODE_NAME) [hostname]')
    .option('--address <ip>', 'address other agents reach this node at (env MESH_ADDRESS)')
    .option('--inbound-listen <addr>', 'inbound mTLS address (env MESH_INBOUND_LISTEN) [0.0.0.0:15443]')
    .option('--admin-listen <addr>', 'admin address (env MESH_ADMIN_LISTEN) [127.0.0.1:15000]')
    .option('--endpoints-file <file>', 'static endpoints of remote services (env MESH_ENDPOINTS_FILE)')
    .option('--capture', 'transparent capture: program iptables so apps reach mesh services at their own names and ports, and remove it on stop (Linux, CAP_NET_ADMIN; env MESH_CAPTURE; docs/capture.md)')
    .option('--policy <file>', 'a local Istio policy file (VirtualService, DestinationRule, PeerAuthentication, AuthorizationPolicy, ...) used instead of the mesh policy from the server, re-read on SIGHUP (env MESH_POLICY_FILE)')
    .addOption(new Option('--log-format <format>', 'log line format').choices(['text', 'json']).default('text'))
    .addOption(new Option('--log-level <level>', 'least important log lines shown').choices(['info', 'debug']).default('info'))
    .addHelpText('after', examples(['mesh-agent agent --config agent.yaml --join meshjoin1_eyJ...', 'mesh-agent agent --config agent.yaml            # restart: no token needed',
          'mesh-agent agent -c agent.yaml --policy routes.yaml && kill -HUP <pid>   # reload services, upstreams, routes, consul', 'MESH_STATE_DIR=/var/lib/mesh-agent mesh-agent agent -c /etc/mesh-agent/agent.yaml', 'sudo mesh-agent agent -c agent.yaml --capture   # apps call api.service.consul:8080 unchanged']))
    .action(async (opts: Record<string, unknown>) => {
      // The same file, flags and environment again on each SIGHUP.
      const load = (): AgentConfig => loadAgentConfig({ ...(opts.config ? { file: opts.config as string } : {}), flags: opts, env: process.env });
      const config = load();
      const joinToken = (opts.join as string | undefined) ?? process.env.MESH_JOIN_TOKEN;
      const agent = new MeshAgent(config, { ...(joinToken ? { joinToken } : {}), log: createLogger({ format: opts.logFormat as LogFormat, level: opts.logLevel as 'info' | 'debug', base: { component: 'agent', node: config.nodeName } }) });
      process.on('SIGHUP', () => void agent.reload(load));
      await runUntilSignal(agent, () => {
        const a = agent.addresses();
        const fmt = (hp?: { host: string; port: number }): string => (hp ? `${hp.host}:${hp.port}` : '-');
        process.stdout.write(`mesh-agent agent ready: node ${config.nodeName}, inbound ${fmt(a.inbound)}, admin ${fmt(a.admin)}, ${config.services.length} service(s)\n`);
      });
    });

  const token = program
    .command('token')
    .description('manage join tokens (server admin API)')
    .addHelpText('after', examples(['mesh-agent token create --ttl 1h', 'mesh-agent token list -o json']));
  adminOptions(
    token
      .command('create')
      .description('create a join token that embeds the server address and the CA fingerprint')
      .option('--ttl <duration>', 'how long the token is valid', '1h')
      .option('--uses <n>', 'how many agents may enroll with it', '1')
      .option('--description <text>', 'a note stored with the token')
      .option('--server <addr>', 'server address to embed (default: the server\'s advertise address)')
      .addOption(output())
      .addHelpText('after', examples(['mesh-agent token create', 'mesh-agent token create --ttl 24h --uses 10 --description "rack 4"', 'TOKEN=$(mesh-agent token create -o json | jq -r .token)'])),
  ).action(async (opts: AdminFlags & Record<string, string>) => {
    const uses = Number(opts.uses);
    if (!Number.isInteger(uses)) throw new MeshError('MESH_ERR_USAGE', `--uses: got ${JSON.stringify(opts.uses)}, expected an integer`);
    const res = await adminCall(opts, 'POST', '/v1/tokens', { ttl: opts.ttl, uses, ...(opts.description ? { description: opts.description } : {}), ...(opts.server ? { server: opts.server } : {}) });
    if (opts.output === 'json') json(res);
    else process.stdout.write(`${res.token as string}\n`);
    if (opts.output !== 'json') process.stderr.write(`token ${res.id as string}: ${res.uses as number} use(s), expires ${res.expiresAt as string}, server ${res.server as string}\n`);
  });
  adminOptions(token.command('list').description('list join tokens (never their secrets)').addOption(output()).addHelpText('after', examples(['mesh-agent token list', 'mesh-agent token list -o json --data-dir /var/lib/mesh-server']))).action(async (opts: AdminFlags & { output: string }) => {
    const res = await adminCall(opts, 'GET', '/v1/tokens');
    if (opts.output === 'json') return json(res);
    for (const t of res.tokens as { id: string; used: number; maxUses: number; expiresAt: string | null; description: string }[]) {
      process.stdout.write(`${t.id}  used ${t.used}/${t.maxUses}  expires ${t.expiresAt ?? 'never'}  ${t.description}\n`);
    }
  });

  addAdminTokenCommands(program);

  adminOptions(
    program
      .command('status')
      .description('show the server (agents, last contact, certificate expiries) or, with --agent, one node agent')
      .option('--agent [addr]', "ask a node agent's admin port instead (default 127.0.0.1:15000)")
      .option('--state-dir <dir>', "the agent's state dir, to read its admin-token [./mesh-agent-state]")
      .addOption(output())
      .addHelpText('after', examples(['mesh-agent status', 'mesh-agent status -o json', 'mesh-agent status --agent --state-dir /var/lib/mesh-agent'])),
  ).action(async (opts: AdminFlags & { agent?: string | boolean; stateDir?: string; output: string }) => {
    if (opts.agent) {
      const res = await agentStatus(typeof opts.agent === 'string' ? opts.agent : '127.0.0.1:15000', opts.stateDir ?? process.env.MESH_STATE_DIR ?? './mesh-agent-state');
      return opts.output === 'json' ? json(res) : printAgentStatus(res);
    }
    const res = await adminCall(opts, 'GET', '/v1/status');
    return opts.output === 'json' ? json(res) : printServerStatus(res);
  });

  const ca = program
    .command('ca')
    .description('the mesh certificate authority')
    .addHelpText('after', examples(['mesh-agent ca show']));
  adminOptions(
    ca
      .command('show')
      .description('print the root certificate (PEM) and its fingerprint')
      .addOption(new Option('-o, --output <format>', 'output format').choices(['text', 'json', 'pem']).default('text'))
      .addHelpText('after', examples(['mesh-agent ca show', 'mesh-agent ca show -o pem > mesh-root.pem'])),
  ).action(async (opts: AdminFlags & { output: string }) => {
    const res = await adminCall(opts, 'GET', '/v1/ca');
    if (opts.output === 'json') return json(res);
    if (opts.output === 'pem') return void process.stdout.write(res.pem as string);
    process.stdout.write(`trust domain: ${res.trustDomain as string}\nfingerprint:  ${res.fingerprint as string}\nnot after:    ${res.notAfter as string}\n${res.pem as string}`);
  });

  addPolicyCommands(program);
  addExplainCommand(program);
  addCaptureCommands(program);
  addDashboardCommand(program);
  addTapCommand(program);

  program
    .command('version')
    .description('print the version, the git commit of a release build, and the Node.js version running it')
    .addOption(output())
    .addHelpText('after', examples(['mesh-agent version', 'mesh-agent version -o json']))
    .action((opts: { output: string }) => {
      const v = { version: MESH_VERSION, commit: MESH_COMMIT, node: process.version, platform: `${process.platform}-${process.arch}` };
      if (opts.output === 'json') json(v);
      else process.stdout.write(`mesh-agent ${v.version} (commit ${v.commit ?? 'unknown: built from source'}, node ${v.node}, ${v.platform})\n`);
    });

  program
    .command('demo')
    .description('run a whole mesh on loopback: a server, two agents (nodes A and B) and two sample services, web -> api')
    .option('--base-port <port>', 'first port of the block the demo uses (it takes base..base+300)', '25000')
    .option('--data-dir <dir>', 'keep the demo\'s state here instead of a temporary dir')
    .addHelpText('after', examples(['mesh-agent demo', 'mesh-agent demo --base-port 31000']))
    .action(async (opts: { basePort: string; dataDir?: string }) => {
      const base = Number(opts.basePort);
      if (!Number.isInteger(base) || base < 1024 || base > 65000) throw new MeshError('MESH_ERR_USAGE', `--base-port: got ${opts.basePort}, expected an integer from 1024 to 65000`);
      await runDemo({ basePort: base, ...(opts.dataDir ? { dataDir: opts.dataDir } : {}) });
    });

  program
    .command('sample-service', { hidden: true })
    .description('a small HTTP service used by the demo and tests')
    .requiredOption('--name <name>')
    .requiredOption('--port <port>')
    .option('--host <addr>', 'address to listen on [127.0.0.1]')
    .option('--upstream <url>')
    .action(async (opts: { name: string; port: string; host?: string; upstream?: string }) => {
      await runSampleService({ name: opts.name, port: Number(opts.port), ...(opts.host ? { host: opts.host } : {}), ...(opts.upstream ? { upstream: opts.upstream } : {}) });
    });

  return program;
}

export async function main(argv: string[]): Promise<void> {
  try {
    await buildProgram().parseAsync(argv);
  } catch (err) {
    process.stderr.write(`error: ${describeError(err)}\n`);
    // Exit now: a failed start may still hold timers or sockets that would keep the process alive.
    process.exit(err instanceof MeshError && err.code === 'MESH_ERR_USAGE' ? 2 : 1);
  }
}

if (require.main === module) void main(process.argv);
