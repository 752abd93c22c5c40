// The agent's Prometheus metrics (GET /metrics on the admin port): its own health (Consul freshness, endpoints per
// cluster, registration failures, certificate expiry, policy version and NACKs, outlier ejections, circuit breaker
// overflows, retries, event-loop lag, RSS). The Istio request metrics sit in the same registry (MeshTelemetry).

import { monitorEventLoopDelay } from 'node:perf_hooks';
import type { Cluster } from '../proxy';
import type { ConsulWatchStatus } from '../registry';
import { MetricsRegistry, type CounterChild } from '../telemetry';
import type { GossipStatus } from './policy-gossip';

/** Where the gauges read from, at each scrape. */
export interface AgentMetricSources {
  /** One entry per service watched in Consul (none without a consul block). */
  consulWatches(): readonly ConsulWatchStatus[];
  clusters(): Iterable<Cluster>;
  /** The workload and node certificates with their expiry (ISO time, null before the first). */
  certificates(): readonly { identity: string; kind: string; notAfter: string | null }[];
  /** The mesh policy version held (applied unless a policy file overrides it); undefined before the first. */
  policyVersion(): number | undefined;
  /** The counters of each upstream port (overflow, retryOverflow and retries for http, http2 and grpc). */
  upstreams(): Iterable<{ cluster: string; stats: Readonly<Record<string, number>> }>;
  /** Policy gossip's counters; undefined when gossip is off. */
  gossip(): Readonly<GossipStatus> | undefined;
  now(): number;
}

/** The agent's registry, its families, and the collectors that fill the gauges before each scrape. */
export class AgentMetrics {
  readonly registry = new MetricsRegistry();
  /** Incremented by every failed Consul registration request. */
  readonly registrationFailures: CounterChild;
  /** Incremented by every policy version the agent refused (NACKed). */
  readonly policyNacks: CounterChild;

  constructor(sources: AgentMetricSources) {
    const r = this.registry;
    const stale = r.gauge('mesh_consul_stale', 'Whether the endpoints of a service watched in Consul may be out of date (1: no answer yet, or the last query failed).', ['service']);
    const contact = r.gauge('mesh_consul_last_contact_seconds', 'Seconds since Consul last answered the query of a watched service (absent until the first answer).', ['service']);
    const index = r.gauge('mesh_consul_index', 'The X-Consul-Index the next blocking query of a watched service waits on (0 before the first answer and after a reset).', ['service']);
    const endpoints = r.gauge('mesh_endpoints', 'Healthy endpoints (known, not ejected by outlier detection) of each upstream cluster.', ['service']);
    this.registrationFailures = r.counter('mesh_consul_registration_failures_total', 'Consul registration requests (PUT /v1/agent/service/register) that failed; each is retried with backoff.').labels();
    this.policyNacks = r.counter('mesh_policy_nacks_total', 'Mesh policy versions the server pushed that this agent refused (NACK); it keeps the last good one.').labels();
    const expiry = r.gauge('mesh_certificate_expiry_seconds', 'Seconds until each certificate of the agent expires (negative: expired).', ['identity', 'kind']);
    const version = r.gauge('mesh_policy_version', 'The mesh policy version this agent holds (0 before the first).').labels();
    const ejections = r.counter('mesh_outlier_ejections_total', 'Endpoints ejected by outlier detection, ever, per upstream cluster.', ['service']);
    const ejected = r.gauge('mesh_outlier_ejections_active', 'Endpoints ejected by outlier detection now, per upstream cluster.', ['service']);
    const overflows = r.counter('mesh_circuit_breaker_overflows_total', 'Requests refused (503 UO) or retries not made because a circuit breaker limit was reached, per upstream port.', ['upstream', 'kind']);
    const retries = r.counter('mesh_retries_total', 'Retries made, per upstream port.', ['upstream']);
    const lag = r.gauge('mesh_event_loop_lag_seconds', 'Event-loop delay since the previous scrape (Node perf_hooks monitorEventLoopDelay).', ['quantile']);
    const rss = r.gauge('process_resident_memory_bytes', 'Resident set size of the agent process.').labels();
    const gossipExchanges = r.counter('mesh_gossip_exchanges_total', 'Policy gossip exchanges with peers, dialed or answered.').labels();
    const gossipFailures = r.counter('mesh_gossip_failures_total', 'Policy gossip exchanges that failed: the peer unreachable, not speaking gossip, breaking the protocol or too slow.').labels();
    const gossipHeard = r.counter('mesh_gossip_newer_versions_heard_total', 'Peers that offered a newer policy version than the one held (pulled or not: one pull at a time, none while the server is reachable).').labels();
    const gossipPulls = r.counter('mesh_gossip_pulls_total', 'Policy versions pulled from peers, verified and held.').labels();
    const gossipRefusals = r.counter('mesh_gossip_refusals_total', 'Policy versions pulled from peers and refused, by error code (MESH_ERR_POLICY_SIGNATURE: forged or tampered).', ['reason']);
    const loop = monitorEventLoopDelay({ resolution: 10 });
    loop.enable();
    r.collect(() => {
      for (const g of [expiry, ejections, ejected, overflows, retries]) g.clear();
      const now = sources.now();
      for (const c of sources.certificates()) if (c.notAfter) expiry.labels(c.identity, c.kind).set((Date.parse(c.notAfter) - now) / 1000);
      version.set(sources.policyVersion() ?? 0);
      for (const c of sources.clusters()) {
        const o = c.outlierDetector?.snapshot();
        if (!o) continue;
        ejections.labels(c.name).value = o.ejectionsTotal;
        ejected.labels(c.name).set(o.ejectionsActive);
      }
      for (const u of sources.upstreams()) {
        if (u.stats.retries === undefined) continue; // a tcp port: no requests
        overflows.labels(u.cluster, 'requests').value = u.stats.overflow ?? 0;
        overflows.labels(u.cluster, 'retries').value = u.stats.retryOverflow ?? 0;
        retries.labels(u.cluster).value = u.stats.retries;
      }
      for (const [q, v] of [['0.5', loop.percentile(50)], ['0.99', loop.percentile(99)], ['1', loop.max]] as const) lag.labels(q).set(Number.isFinite(v) ? v / 1e9 : 0);
      loop.reset();
      rss.set(process.memoryUsage.rss());
      const g = sources.gossip();
      if (g) {
        gossipExchanges.value = g.exchanges;
        gossipFailures.value = g.failures;
        gossipHeard.value = g.newerHeard;
        gossipPulls.value = g.pulls;
        for (const [reason, n] of Object.entries(g.refusedBy)) gossipRefusals.labels(reason).value = n;
      }
    });
    r.collect(() => {
      // Watches and clusters come and go: rebuild the children from what exists now (scrape-time only).
      for (const g of [stale, contact, index, endpoints]) g.clear();
      const now = sources.now();
      for (const w of sources.consulWatches()) {
        stale.labels(w.service).set(w.stale ? 1 : 0);
        index.labels(w.service).set(w.lastIndex);
        if (w.lastSuccessAt !== undefined) contact.labels(w.service).set(Math.max(0, (now - w.lastSuccessAt) / 1000));
      }
      for (const c of sources.clusters()) endpoints.labels(c.name).set(c.healthyEndpoints);
    });
  }
}
