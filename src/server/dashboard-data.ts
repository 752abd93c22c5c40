// What the dashboard shows, as JSON: services with golden signals, the service graph, agents, policies with history; fed by the agent channel.

import type { StatsMessage } from '../protocol';
import type { Store } from '../store';
import { serviceLabel, TrafficWindow, type Signals } from './traffic-window';
import type { PolicyService } from './policy-service';

/** What an agent last said of itself on the channel (kept in memory: agents say it again after a server restart). */
interface AgentReport {
  version: string;
  certificates: readonly { spiffeId: string; notAfter: string }[] | null;
  statsAt: number | null;
  dropped: number;
}

/** The channel's side: it hands every hello and stats message here. */
export class DashboardFeed {
  readonly traffic: TrafficWindow;
  private readonly reports = new Map<string, AgentReport>();

  constructor(private readonly now: () => number) {
    this.traffic = new TrafficWindow(now);
  }

  hello(agentId: string, version: string): void {
    const r = this.reports.get(agentId);
    if (r) r.version = version;
    else this.reports.set(agentId, { version, certificates: null, statsAt: null, dropped: 0 });
  }

  stats(agentId: string, msg: StatsMessage): void {
    const r = this.reports.get(agentId);
    this.reports.set(agentId, { version: msg.version, certificates: msg.certificates, statsAt: this.now(), dropped: (r?.dropped ?? 0) + msg.dropped });
    this.traffic.add(msg);
  }

  report(agentId: string): Readonly<AgentReport> | undefined {
    return this.reports.get(agentId);
  }
}

/** What the dashboard's JSON is built from. */
export interface DashboardSources {
  readonly feed: DashboardFeed;
  readonly store: Store;
  readonly policy: PolicyService;
  readonly connected: () => ReadonlyMap<string, unknown>;
  readonly now: () => number;
}

const iso = (ms: number): string => new Date(ms).toISOString();
/** Stored service refs are `namespace/name`. */
const labelOf = (ref: string): string => {
  const [namespace, name] = ref.split('/');
  return serviceLabel({ name: name ?? ref, namespace: namespace ?? 'default' });
};

const NO_TRAFFIC: Signals = { requests: 0, errors: 0, rps: 0, errorRatio: 0, p50Ms: null, p99Ms: null, codes: {} };

/** GET /v1/dashboard/services: every service agents run or callers reached, with its signals over the window. */
export function servicesJson(src: DashboardSources): unknown {
  const signals = src.feed.traffic.services();
  const nodes = new Map<string, string[]>();
  for (const a of src.store.agents.list()) for (const s of a.services) nodes.set(labelOf(s), [...(nodes.get(labelOf(s)) ?? []), a.nodeName]);
  const names = [...new Set([...nodes.keys(), ...signals.keys()])].sort();
  return {
    windowSeconds: src.feed.traffic.windowMs / 1000,
    services: names.map((name) => ({ name, nodes: nodes.get(name) ?? [], ...(signals.get(name) ?? NO_TRAFFIC) })),
  };
}

/** GET /v1/dashboard/graph: nodes (services) and edges (a workload calling a service) with rates and error ratios. */
export function graphJson(src: DashboardSources): unknown {
  const edges = src.feed.traffic.edges().sort((a, b) => a.source.localeCompare(b.source) || a.destination.localeCompare(b.destination));
  const names = new Set<string>();
  for (const a of src.store.agents.list()) for (const s of a.services) names.add(labelOf(s));
  for (const e of edges) names.add(e.source).add(e.destination);
  return { windowSeconds: src.feed.traffic.windowMs / 1000, nodes: [...names].sort().map((id) => ({ id })), edges };
}

/** GET /v1/dashboard/agents: each enrolled agent, whether it is connected, its version and certificate expiries. */
export function agentsJson(src: DashboardSources): unknown {
  const connected = src.connected();
  const now = src.now();
  return {
    agents: src.store.agents.list().map((a) => {
      const report = src.feed.report(a.id);
      // The agent's own list of certificates in use, else the latest the server issued to it.
      const certs = report?.certificates ?? src.store.certificates.latestForAgent(a.id).map((c) => ({ spiffeId: c.spiffeId, notAfter: iso(c.notAfter) }));
      return {
        id: a.id,
        nodeName: a.nodeName,
        address: a.address,
        connected: connected.has(a.id),
        version: report?.version ?? null,
        lastSeenAt: a.lastSeenAt === null ? null : iso(connected.has(a.id) ? now : a.lastSeenAt),
        lastStatsAt: report?.statsAt ? iso(report.statsAt) : null,
        droppedStats: report?.dropped ?? 0,
        services: a.services.map(labelOf),
        policyVersion: a.policyVersion,
        policyError: a.policyError?.message ?? null,
        certificates: certs.map((c) => ({ identity: c.spiffeId, notAfter: c.notAfter, expiresInSeconds: Math.round((Date.parse(c.notAfter) - now) / 1000) })),
      };
    }),
  };
}

/** GET /v1/dashboard/policies: the documents in force and the latest versions (who, when, what changed). */
export function policiesJson(src: DashboardSources, historyLimit = 50): unknown {
  const current = src.policy.documents();
  return {
    version: current.version,
    digest: current.digest,
    documents: current.documents.map((d) => ({ kind: d.kind, namespace: d.namespace, name: d.name, version: d.sinceVersion, sha256: d.sha256 })),
    history: src.store.policy.history({}, historyLimit).map((v) => ({
      version: v.version,
      createdAt: iso(v.createdAt),
      actor: v.actor,
      operation: v.operation,
      rollbackTo: v.rollbackTo,
      documents: v.documents,
      changes: v.changes.map((c) => ({ action: c.action, kind: c.kind, namespace: c.namespace, name: c.name })),
    })),
  };
}
