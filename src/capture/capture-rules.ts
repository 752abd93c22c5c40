// The nat-table rules of transparent capture as iptables-restore text: install (idempotent), remove, and what is installed.

import { formatHostPort, type HostPort } from '../config';

/** The chain outbound TCP of local apps goes through (jumped to from nat OUTPUT). */
export const OUTPUT_CHAIN = 'MESH_OUTPUT';
/** The chain inbound TCP from other hosts goes through (jumped to from nat PREROUTING). */
export const INBOUND_CHAIN = 'MESH_INBOUND';
/** Each mesh chain and the built-in chain that jumps to it. */
const JUMPS = [
  { from: 'OUTPUT', chain: OUTPUT_CHAIN },
  { from: 'PREROUTING', chain: INBOUND_CHAIN },
] as const;

/** A destination apps dial (a service's virtual IP or an endpoint's address, at the service's port) and the agent's local listener for it. */
export interface CapturedDestination {
  readonly address: string;
  readonly port: number;
  readonly to: HostPort;
  /** "name.namespace" of the service, written into the rule as a comment. */
  readonly service: string;
}

/** Everything the rules are made of. */
export interface CaptureRules {
  /** Uids whose connections are never captured: the agent's own (its mTLS connections leave as they are). */
  readonly excludeUids: readonly number[];
  /** Destinations (IPv4 CIDRs) and destination ports never captured. */
  readonly excludeCidrs: readonly string[];
  readonly excludePorts: readonly number[];
  /** The agent's own ports: connections to them over loopback are never redirected. */
  readonly agentPorts: readonly number[];
  readonly outbound: readonly CapturedDestination[];
  /** Local service ports whose TCP from other hosts is redirected to the agent's inbound (mTLS) port. */
  readonly inboundPorts: readonly number[];
  readonly inboundPort: number;
}

/** The rules of the two mesh chains, in order, as `-A <chain> ...` lines. */
export function chainRules(r: CaptureRules): string[] {
  const out = OUTPUT_CHAIN;
  const lines: string[] = [];
  for (const uid of r.excludeUids) lines.push(`-A ${out} -m owner --uid-owner ${uid} -j RETURN`);
  if (r.agentPorts.length > 0) lines.push(`-A ${out} -o lo -p tcp -m multiport --dports ${[...new Set(r.agentPorts)].join(',')} -j RETURN`);
  for (const cidr of r.excludeCidrs) lines.push(`-A ${out} -d ${cidr} -j RETURN`);
  for (const port of r.excludePorts) lines.push(`-A ${out} -p tcp --dport ${port} -j RETURN`);
  const seen = new Set<string>();
  for (const d of r.outbound) {
    const key = `${d.address}:${d.port}`;
    if (seen.has(key)) continue;
    seen.add(key);
    const to = formatHostPort({ host: d.to.host === '0.0.0.0' ? '127.0.0.1' : d.to.host, port: d.to.port });
    lines.push(`-A ${out} -d ${d.address}/32 -p tcp --dport ${d.port} -m comment --comment ${d.service} -j DNAT --to-destination ${to}`);
  }
  for (const port of [...new Set(r.inboundPorts)]) if (port !== r.inboundPort) lines.push(`-A ${INBOUND_CHAIN} -p tcp --dport ${port} -j REDIRECT --to-ports ${r.inboundPort}`);
  return lines;
}

/** The `-A <built-in> ... -j MESH_*` lines of an `iptables-save -t nat` output. */
function jumpsIn(save: string): string[] {
  return save.split('\n').filter((l) => JUMPS.some((j) => l.startsWith(`-A ${j.from} `) && l.endsWith(` -j ${j.chain}`)));
}

/** Which mesh chains an `iptables-save -t nat` output declares. */
function chainsIn(save: string): string[] {
  return JUMPS.map((j) => j.chain).filter((c) => save.split('\n').some((l) => l.startsWith(`:${c} `)));
}

/**
 * The iptables-restore text (for `--noflush`) that makes the nat table hold exactly `rules` in the mesh chains:
 * declaring a chain empties it, so running it again gives the same table; the jumps from OUTPUT and PREROUTING
 * are added only when `currentSave` (iptables-save -t nat) lacks them. All of it applies at once or not at all.
 */
export function installScript(currentSave: string, rules: CaptureRules): string {
  const have = jumpsIn(currentSave);
  const lines = ['*nat', ...JUMPS.map((j) => `:${j.chain} - [0:0]`)];
  for (const j of JUMPS) if (!have.some((l) => l.startsWith(`-A ${j.from} `) && l.endsWith(` -j ${j.chain}`))) lines.push(`-A ${j.from} -p tcp -j ${j.chain}`);
  lines.push(...chainRules(rules), 'COMMIT');
  return `${lines.join('\n')}\n`;
}

/** The iptables-restore text that removes every mesh jump and chain `currentSave` shows, or undefined when there is none. */
export function removeScript(currentSave: string): string | undefined {
  const chains = chainsIn(currentSave);
  const jumps = jumpsIn(currentSave);
  if (chains.length === 0 && jumps.length === 0) return undefined;
  const lines = ['*nat', ...chains.map((c) => `:${c} - [0:0]`), ...jumps.map((l) => `-D${l.slice(2)}`), ...chains.map((c) => `-X ${c}`), 'COMMIT'];
  return `${lines.join('\n')}\n`;
}

/** What `capture status` reports. */
export interface CaptureState {
  /** Both chains exist and both jumps are in place. */
  readonly installed: boolean;
  readonly jumps: readonly string[];
  /** The rules of each mesh chain present, as iptables-save prints them. */
  readonly chains: Readonly<Record<string, readonly string[]>>;
}

/** Reads the mesh chains out of an `iptables-save -t nat` output. */
export function captureState(save: string): CaptureState {
  const chains = Object.fromEntries(chainsIn(save).map((c) => [c, save.split('\n').filter((l) => l.startsWith(`-A ${c} `))]));
  const jumps = jumpsIn(save);
  return { installed: Object.keys(chains).length === JUMPS.length && JUMPS.every((j) => jumps.some((l) => l.endsWith(` -j ${j.chain}`))), jumps, chains };
}
