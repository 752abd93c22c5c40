// A mesh on HostNetwork hosts: the CLI run inside a host, a server with its join tokens, and agents started from YAML.

import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Proc } from '../helpers/processes';
import type { Host, HostNetwork } from './host-network';

const READY = /agent ready: node \S+, inbound ([\d.]+:\d+)/;

/** Runs a mesh-agent command inside a host and returns its stdout; fails the test on a non-zero exit. */
export async function hostCli(net: HostNetwork, host: Host, args: string[]): Promise<string> {
  const p = net.meshAgent(host, args[0]!, args);
  const code = await p.exited;
  assert.equal(code, 0, `mesh-agent ${args.join(' ')} in ${host.name}: ${p.stderr}`);
  return p.stdout;
}

/** Starts the server in host `s` (state under `dir`); resolves once it is ready, with a maker of join tokens. */
export async function startHostServer(net: HostNetwork, s: Host, dir: string): Promise<{ server: Proc; token: () => Promise<string> }> {
  const dataDir = join(dir, 'server');
  const server = net.meshAgent(s, 'server', ['server', '--data-dir', dataDir, '--listen', `${s.address}:15010`, '--admin-listen', '127.0.0.1:15014']);
  await server.waitFor(/server ready/, 30_000);
  const token = async (): Promise<string> =>
    (JSON.parse(await hostCli(net, s, ['token', 'create', '--admin', '127.0.0.1:15014', '--data-dir', dataDir, '--server', `${s.address}:15010`, '-o', 'json'])) as { token: string }).token;
  return { server, token };
}

/** Writes `yaml` as the host's agent config and starts the agent with it (state under `dir`); resolves once it is ready. */
export async function startHostAgent(net: HostNetwork, host: Host, dir: string, yaml: string, token: string, extra: string[] = []): Promise<Proc> {
  const config = join(dir, `${host.name}.yaml`);
  writeFileSync(config, yaml);
  const p = net.meshAgent(host, 'agent', ['agent', '--config', config, '--state-dir', join(dir, `${host.name}-state`), '--node-name', `node-${host.name}`, '--join', token, ...extra]);
  await p.waitFor(READY, 30_000);
  return p;
}
