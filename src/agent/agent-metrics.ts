// The agent's Prometheus metrics (GET /metrics on the admin port): Consul freshness, endpoints per cluster, registration failures.

import type { Cluster } from '../proxy';
import type { ConsulWatchStatus } from '../registry';
import { MetricsRegistry, type CounterChild } from '../telemetry';

/** Where the gauges read from, at each scrape. */
export interface AgentMetricSources {
  /** One entry per service watched in Consul (none without a consul block). */
  consulWatches(): readonly ConsulWatchStatus[];
  clusters(): Iterable<Cluster>;
  now(): number;
}

/** The agent's registry, its families, and the collectors that fill the gauges before each scrape. */
export class AgentMetrics {
  readonly registry = new MetricsRegistry();
  /** Incremented by every failed Consul registration request. */
  readonly registrationFailures: CounterChild;

  constructor(sources: AgentMetricSources) {
    const r = this.registry;
    const stale = r.gauge('mesh_consul_stale', 'Whether the endpoints of a service watched in Consul may be out of date (1: no answer yet, or the last query failed).', ['service']);
    const contact = r.gauge('mesh_consul_last_contact_seconds', 'Seconds since Consul last answered the query of a watched service (absent until the first answer).', ['service']);
    const index = r.gauge('mesh_consul_index', 'The X-Consul-Index the next blocking query of a watched service waits on (0 before the first answer and after a reset).', ['service']);
    const endpoints = r.gauge('mesh_endpoints', 'Healthy endpoints (known, not ejected by outlier detection) of each upstream cluster.', ['service']);
    this.registrationFailures = r.counter('mesh_consul_registration_failures_total', 'Consul registration requests (PUT /v1/agent/service/register) that failed; each is retried with backoff.').labels();
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
