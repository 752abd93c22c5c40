// Which workloads a policy document concerns: the services it routes for (client side) and the ones it selects (server side).

import type { PolicyDocument } from './documents';
import { hostResolver } from './policy-set';
import { sameService, type ServiceRef } from './hosts';

/**
 * The namespace whose PeerAuthentication / AuthorizationPolicy without a selector apply to the whole mesh
 * (Istio's `istio-system`).
 */
const ROOT_NAMESPACE = 'mesh-system';

/** A workload: its service and its labels (the agent config's `services[].labels`, with `app: <service>` implied). */
export interface Workload {
  readonly service: ServiceRef;
  readonly labels: Readonly<Record<string, string>>;
}

/** What one document touches. */
export interface DocumentReach {
  /** Services whose callers it changes (VirtualService, DestinationRule and ServiceEntry hosts). */
  readonly upstreams: readonly ServiceRef[];
  /** Whether it applies to a workload (PeerAuthentication, AuthorizationPolicy). */
  selects(workload: Workload): boolean;
}

/** The reach of `document`, with hosts resolved knowing the ServiceEntries of `all` (the policy it belongs to). */
export function documentReach(document: PolicyDocument, all: readonly PolicyDocument[]): DocumentReach {
  const resolve = hostResolver(all);
  const ns = document.metadata.namespace;
  switch (document.kind) {
    case 'VirtualService':
    case 'ServiceEntry':
      return { upstreams: document.spec.hosts.map((h) => resolve(h, ns)), selects: () => false };
    case 'DestinationRule':
      return { upstreams: [resolve(document.spec.host, ns)], selects: () => false };
    case 'PeerAuthentication':
    case 'AuthorizationPolicy': {
      const match = document.spec.selector?.matchLabels;
      return {
        upstreams: [],
        selects: ({ service, labels }) => {
          if (ns !== ROOT_NAMESPACE && service.namespace !== ns) return false;
          return !match || Object.entries(match).every(([k, v]) => labels[k] === v);
        },
      };
    }
  }
}

/** True when a node running `services` and calling `upstreams` is concerned by any of `reaches`. */
export function reachesNode(reaches: readonly DocumentReach[], node: { services: readonly Workload[]; upstreams: readonly ServiceRef[] }): boolean {
  return reaches.some((r) => node.services.some((s) => r.selects(s)) || r.upstreams.some((u) => node.upstreams.some((x) => sameService(u, x))));
}
