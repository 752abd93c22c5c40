// Human-readable status tables for `mesh-agent status` (JSON output is the API's own shape).

import type { CaptureStatus } from '../capture';
import { ago, out, table, until } from './text-output';

interface AgentPolicyState {
  version: number | null;
  override: boolean;
  error: { version: number; message: string; at: string } | null;
}

interface ServerStatus {
  server: { version: string; trustDomain: string; caFingerprint: string; listen: string; advertise: string; uptimeSeconds: number };
  policy: { version: number };
  ha?: { replica: string; leader: string | null; prefix: string; replicas: { name: string; admin: string; agent: string; appliedVersion: number; live: boolean; leader: boolean; updatedAt: number }[] };
  agents: {
    id: string;
    nodeName: string;
    address: string;
    connected: boolean;
    lastSeenAt: string | null;
    services: string[];
    policy: AgentPolicyState;
    certificates: { identity: string; kind: string; notAfter: string }[];
  }[];
}

/** "v7", "v7 (local file)", "v6, refused v7", or "-". */
function policyCell(p: AgentPolicyState): string {
  const held = p.version === null ? '-' : `v${p.version}${p.override ? ' (local file)' : ''}`;
  return p.error ? `${held}, refused v${p.error.version}` : held;
}

export function printServerStatus(raw: Record<string, unknown>): void {
  const s = raw as unknown as ServerStatus;
  out(`server ${s.server.version}  trust domain ${s.server.trustDomain}  agents on ${s.server.listen} (advertised ${s.server.advertise})  up ${s.server.uptimeSeconds}s`);
  out(`CA ${s.server.caFingerprint}`);
  out(`policy version ${s.policy.version}`);
  if (s.ha) {
    out('');
    out(`HA on Consul KV ${s.ha.prefix}: this is replica ${s.ha.replica}; ${s.ha.leader ? `${s.ha.leader} leads` : 'no replica leads right now'}`);
    const rows = [['REPLICA', 'ROLE', 'STATE', 'APPLIED', 'AGENTS ON', 'ADMIN']];
    for (const r of s.ha.replicas) rows.push([r.name, r.leader ? 'leader' : 'follower', r.live ? 'live' : 'gone', `v${r.appliedVersion}`, r.agent, r.admin]);
    table(rows);
  }
  out('');
  if (s.agents.length === 0) return void out('no agents enrolled yet (create a token with "mesh-agent token create")');
  const rows = [['AGENT', 'NODE', 'ADDRESS', 'STATE', 'LAST CONTACT', 'SERVICES', 'POLICY', 'CERT EXPIRES']];
  for (const a of s.agents) {
    const soonest = a.certificates.map((c) => c.notAfter).sort()[0] ?? null;
    rows.push([a.id, a.nodeName, a.address || '-', a.connected ? 'connected' : 'disconnected', ago(a.lastSeenAt), a.services.join(',') || '-', policyCell(a.policy), until(soonest)]);
  }
  table(rows);
  const refusals = s.agents.filter((a) => a.policy.error);
  if (refusals.length > 0) {
    out('');
    for (const a of refusals) out(`${a.nodeName} (${a.id}) refused policy version ${a.policy.error!.version} ${ago(a.policy.error!.at)}: ${a.policy.error!.message}`);
  }
}

interface AgentStatus {
  agent: { id: string; nodeName: string; trustDomain: string; server: string; serverConnected: boolean; serverError: string | null; ready: boolean; inbound: string; admin: string };
  services: { name: string; namespace: string; protocol: string; target: string; identity: string; origin: string; consulId?: string }[];
  certificates: { identity: string; kind: string; serial: string | null; notAfter: string | null; renewAt: string | null; renewals: number; lastError: string | null }[];
  upstreams: { service: string; from: string; listen: string; endpoints: string[]; stats: { connections: number; connectFailures: number }; error?: string }[];
  consul: { service: string; stale: boolean; lastIndex: number; endpoints: number }[] | null;
  consulRegistrations: { id: string; check: string; registered: boolean; ttlStatus?: string; lastError?: string }[];
  localServices: { stale: boolean; lastError?: string; services: number; problems: { service: string; id: string; field: string; message: string }[] } | null;
  policy: {
    inForce: 'file' | 'mesh' | 'defaults';
    file: string | null;
    meshVersion: number | null;
    lastRefusal: { version: number; error: string } | null;
    gossip: { lastPull: { version: number; from: string; at: string } | null; lastRefusal: { version: number; from: string; error: string; at: string } | null } | null;
  };
  capture: CaptureStatus | null;
}

function policyLine(p: AgentStatus['policy']): string {
  const mesh = p.meshVersion === null ? 'no mesh version yet' : `mesh version ${p.meshVersion}`;
  const inForce = p.inForce === 'file' ? `local file ${p.file} (overrides the mesh policy; ${mesh} held)` : p.inForce === 'mesh' ? mesh : "Istio's defaults (no mesh version yet)";
  return `policy: ${inForce}${p.lastRefusal ? `; refused version ${p.lastRefusal.version}: ${p.lastRefusal.error}` : ''}`;
}

/** What gossip last brought or refused, when it did anything. */
function gossipLine(g: AgentStatus['policy']['gossip']): string | undefined {
  const parts = [
    g?.lastPull && `pulled version ${g.lastPull.version} from ${g.lastPull.from} ${ago(g.lastPull.at)}`,
    g?.lastRefusal && `refused version ${g.lastRefusal.version} from ${g.lastRefusal.from} ${ago(g.lastRefusal.at)}: ${g.lastRefusal.error}`,
  ].filter(Boolean);
  return parts.length > 0 ? `gossip: ${parts.join('; ')}` : undefined;
}

export function printAgentStatus(raw: Record<string, unknown>): void {
  const s = raw as unknown as AgentStatus;
  const a = s.agent;
  out(`agent ${a.id} (node ${a.nodeName})  ${a.ready ? 'READY' : 'NOT READY'}  trust domain ${a.trustDomain}`);
  out(`server ${a.server}: ${a.serverConnected ? 'connected' : `disconnected${a.serverError ? ` (${a.serverError})` : ''}`}   inbound ${a.inbound}   admin ${a.admin}`);
  out(policyLine(s.policy));
  const gossip = gossipLine(s.policy.gossip);
  if (gossip) out(gossip);
  out('');
  table([['SERVICE', 'ORIGIN', 'PROTOCOL', 'LOCAL APP', 'IDENTITY'], ...s.services.map((x) => [`${x.namespace}/${x.name}`, x.consulId ? `consul (${x.consulId})` : x.origin, x.protocol, x.target, x.identity])]);
  if (s.localServices) {
    const l = s.localServices;
    out(`local services from Consul: ${l.services} in the mesh${l.stale ? `, STALE${l.lastError ? ` (${l.lastError})` : ''}` : ''}`);
    for (const p of l.problems) out(`  left out: ${p.service} (Consul ID ${p.id}): ${p.field}: ${p.message}`);
  }
  out('');
  table([['CERTIFICATE', 'KIND', 'SERIAL', 'EXPIRES', 'RENEWS', 'RENEWALS'], ...s.certificates.map((c) => [c.identity, c.kind, c.serial ?? '-', until(c.notAfter), until(c.renewAt), String(c.renewals)])]);
  if (s.upstreams.length > 0) {
    out('');
    table([['UPSTREAM', 'LOCAL PORT', 'FROM', 'ENDPOINTS', 'CONNS', 'FAILED'], ...s.upstreams.map((u) => [u.service, u.error ? `${u.listen} NOT OPEN: ${u.error}` : u.listen, u.from, u.endpoints.join(',') || 'none', String(u.stats.connections), String(u.stats.connectFailures ?? 0)])]);
  }
  if (s.capture) {
    const c = s.capture;
    out('');
    out(`capture: inbound ports ${c.inboundPorts.join(',') || '-'} to the mTLS port; DNS ${c.dns ? `on ${c.dns.listen} (${c.dns.answered} answered, ${c.dns.refused} refused)` : 'off'}${c.lastError ? `; LAST UPDATE FAILED: ${c.lastError}` : ''}`);
    table([['CAPTURED', 'SERVICE', 'TO'], ...c.destinations.map((d) => [d.dial, d.service, d.listener])]);
  }
  if (s.consul && s.consul.length > 0) {
    out('');
    table([['CONSUL WATCH', 'STATE', 'INDEX', 'ENDPOINTS'], ...s.consul.map((w) => [w.service, w.stale ? 'STALE' : 'fresh', String(w.lastIndex), String(w.endpoints)])]);
  }
  if (s.consulRegistrations.length > 0) {
    out('');
    table([['CONSUL REGISTRATION', 'CHECK', 'STATE'], ...s.consulRegistrations.map((r) => [r.id, r.ttlStatus ? `ttl (${r.ttlStatus})` : r.check, r.registered ? 'registered' : `not registered${r.lastError ? ` (${r.lastError})` : ''}`])]);
  }
}
