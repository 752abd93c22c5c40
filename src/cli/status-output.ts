// Human-readable status tables for `mesh-agent status` (JSON output is the API's own shape).

const out = (s: string): boolean => process.stdout.write(`${s}\n`);

function ago(iso: string | null, now = Date.now()): string {
  if (!iso) return 'never';
  const s = Math.round((now - Date.parse(iso)) / 1000);
  return s < 2 ? 'now' : s < 120 ? `${s}s ago` : s < 7200 ? `${Math.round(s / 60)}m ago` : `${Math.round(s / 3600)}h ago`;
}

function until(iso: string | null, now = Date.now()): string {
  if (!iso) return '-';
  const s = Math.round((Date.parse(iso) - now) / 1000);
  if (s <= 0) return 'EXPIRED';
  return s < 120 ? `in ${s}s` : s < 7200 ? `in ${Math.round(s / 60)}m` : `in ${Math.round(s / 3600)}h`;
}

function table(rows: string[][]): void {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  for (const r of rows) out(r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd());
}

interface ServerStatus {
  server: { version: string; trustDomain: string; caFingerprint: string; listen: string; advertise: string; uptimeSeconds: number };
  agents: { id: string; nodeName: string; address: string; connected: boolean; lastSeenAt: string | null; services: string[]; certificates: { identity: string; kind: string; notAfter: string }[] }[];
}

export function printServerStatus(raw: Record<string, unknown>): void {
  const s = raw as unknown as ServerStatus;
  out(`server ${s.server.version}  trust domain ${s.server.trustDomain}  agents on ${s.server.listen} (advertised ${s.server.advertise})  up ${s.server.uptimeSeconds}s`);
  out(`CA ${s.server.caFingerprint}`);
  out('');
  if (s.agents.length === 0) return void out('no agents enrolled yet (create a token with "mesh-agent token create")');
  const rows = [['AGENT', 'NODE', 'ADDRESS', 'STATE', 'LAST CONTACT', 'SERVICES', 'CERT EXPIRES']];
  for (const a of s.agents) {
    const soonest = a.certificates.map((c) => c.notAfter).sort()[0] ?? null;
    rows.push([a.id, a.nodeName, a.address || '-', a.connected ? 'connected' : 'disconnected', ago(a.lastSeenAt), a.services.join(',') || '-', until(soonest)]);
  }
  table(rows);
}

interface AgentStatus {
  agent: { id: string; nodeName: string; trustDomain: string; server: string; serverConnected: boolean; serverError: string | null; ready: boolean; inbound: string; admin: string };
  services: { name: string; namespace: string; protocol: string; target: string; identity: string; origin: string; consulId?: string }[];
  certificates: { identity: string; kind: string; serial: string | null; notAfter: string | null; renewAt: string | null; renewals: number; lastError: string | null }[];
  upstreams: { service: string; from: string; listen: string; endpoints: string[]; stats: { connections: number; connectFailures: number }; error?: string }[];
  consul: { service: string; stale: boolean; lastIndex: number; endpoints: number }[] | null;
  consulRegistrations: { id: string; check: string; registered: boolean; ttlStatus?: string; lastError?: string }[];
  localServices: { stale: boolean; lastError?: string; services: number; problems: { service: string; id: string; field: string; message: string }[] } | null;
}

export function printAgentStatus(raw: Record<string, unknown>): void {
  const s = raw as unknown as AgentStatus;
  const a = s.agent;
  out(`agent ${a.id} (node ${a.nodeName})  ${a.ready ? 'READY' : 'NOT READY'}  trust domain ${a.trustDomain}`);
  out(`server ${a.server}: ${a.serverConnected ? 'connected' : `disconnected${a.serverError ? ` (${a.serverError})` : ''}`}   inbound ${a.inbound}   admin ${a.admin}`);
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
  if (s.consul && s.consul.length > 0) {
    out('');
    table([['CONSUL WATCH', 'STATE', 'INDEX', 'ENDPOINTS'], ...s.consul.map((w) => [w.service, w.stale ? 'STALE' : 'fresh', String(w.lastIndex), String(w.endpoints)])]);
  }
  if (s.consulRegistrations.length > 0) {
    out('');
    table([['CONSUL REGISTRATION', 'CHECK', 'STATE'], ...s.consulRegistrations.map((r) => [r.id, r.ttlStatus ? `ttl (${r.ttlStatus})` : r.check, r.registered ? 'registered' : `not registered${r.lastError ? ` (${r.lastError})` : ''}`])]);
  }
}
