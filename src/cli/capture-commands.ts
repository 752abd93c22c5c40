// `mesh-agent capture install|remove|status`: the nat rules of transparent capture, outside a running agent.

import type { Command } from 'commander';
import { loadAgentConfig } from '../agent';
import { chainRules, installCapture, planCapture, readCaptureState, removeCapture } from '../capture';
import { MeshError } from '../errors';
import { readEndpointsFile, serviceKeyString, type Endpoint } from '../registry';
import { examples, json, output } from './command-helpers';
import { out } from './text-output';

/** --agent-uid as a number, or the current uid. @throws MeshError MESH_ERR_USAGE */
function agentUid(text: string | undefined): number {
  if (text === undefined) return process.getuid?.() ?? 0;
  if (!/^\d+$/.test(text)) throw new MeshError('MESH_ERR_USAGE', `--agent-uid: got ${JSON.stringify(text)}, expected a numeric uid such as 998 (id -u mesh-agent)`);
  return Number(text);
}

export function addCaptureCommands(program: Command): void {
  const capture = program
    .command('capture')
    .description('transparent capture: iptables nat chains MESH_OUTPUT and MESH_INBOUND that lead apps\' TCP through the agent (Linux, CAP_NET_ADMIN); see docs/capture.md')
    .addHelpText('after', examples(['mesh-agent agent -c agent.yaml --capture     # the agent installs, updates and removes the rules itself', 'sudo mesh-agent capture install -c agent.yaml --agent-uid $(id -u mesh-agent)', 'sudo mesh-agent capture status -o json', 'sudo mesh-agent capture remove']));

  capture
    .command('install')
    .description('program the nat table for the config\'s services and upstreams (their virtual IPs, and the endpoints file\'s addresses); running it again replaces the rules, it never adds twice')
    .requiredOption('-c, --config <file>', 'agent config file (YAML or JSON)')
    .option('--agent-uid <uid>', 'the uid the agent runs as: its connections are never captured [the current uid]')
    .addOption(output())
    .addHelpText('after', examples(['sudo mesh-agent capture install -c /etc/mesh-agent/agent.yaml --agent-uid $(id -u mesh-agent)', 'sudo mesh-agent capture install -c agent.yaml -o json']))
    .action(async (opts: { config: string; agentUid?: string; output: string }) => {
      const uid = agentUid(opts.agentUid);
      const config = loadAgentConfig({ file: opts.config, env: process.env });
      const endpoints = config.endpointsFile ? readEndpointsFile(config.endpointsFile) : new Map<string, Endpoint[]>();
      const plan = planCapture(
        config.capture,
        {
          services: config.services,
          inboundPort: config.inbound.port,
          agentPorts: [config.inbound.port, config.admin.port],
          endpointAddresses: (s) => (endpoints.get(serviceKeyString(s)) ?? []).map((e) => e.address),
        },
        uid,
      );
      await installCapture(plan.rules);
      if (opts.output === 'json') return json({ installed: true, virtualIps: Object.fromEntries(plan.virtualIps), rules: chainRules(plan.rules), conflicts: plan.conflicts });
      out(`capture installed: ${plan.rules.outbound.length} destination(s), inbound ports ${plan.rules.inboundPorts.join(',') || '-'}, connections of uid ${plan.rules.excludeUids.join(',')} left alone`);
      for (const [service, ip] of plan.virtualIps) out(`  ${service.padEnd(30)} ${ip}`);
      for (const c of plan.conflicts) out(`warning: ${c}`);
    });

  capture
    .command('remove')
    .description('remove the mesh chains and the jumps to them from the nat table (nothing else is touched)')
    .addOption(output())
    .addHelpText('after', examples(['sudo mesh-agent capture remove', 'sudo mesh-agent capture remove -o json']))
    .action(async (opts: { output: string }) => {
      const removed = await removeCapture();
      const left = await readCaptureState();
      if (opts.output === 'json') return json({ removed, chains: Object.keys(left.chains) });
      out(removed ? 'capture removed: no mesh chains remain in the nat table' : 'capture was not installed: nothing to remove');
    });

  capture
    .command('status')
    .description('show whether the mesh chains are installed, and their rules')
    .addOption(output())
    .addHelpText('after', examples(['sudo mesh-agent capture status', 'sudo mesh-agent capture status -o json | jq .installed']))
    .action(async (opts: { output: string }) => {
      const state = await readCaptureState();
      if (opts.output === 'json') return json(state);
      out(state.installed ? 'capture installed' : Object.keys(state.chains).length > 0 ? 'capture partly installed (run "mesh-agent capture remove", then install again)' : 'capture not installed');
      for (const j of state.jumps) out(`  ${j}`);
      for (const [chain, rules] of Object.entries(state.chains)) {
        out(`${chain}: ${rules.length} rule(s)`);
        for (const r of rules) out(`  ${r}`);
      }
    });
}
