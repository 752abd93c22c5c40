// Which workloads a policy document concerns: the services it routes for (client side) and the ones it selects (server side).

import type { PolicyDocument } from './documents';
import { hostResolver } from './policy-set';
import { sameService, type ServiceRef } from './hosts';
import { ROOT_NAMESPACE, selectorMatches, type Workload } from './workload';

/** What one document touches. */
export interface DocumentReach {
  /** Services whose callers it changes (VirtualService, DestinationRule and ServiceEntry hosts). */
  readonly upstreams: readonly ServiceRef[];
  /** Whether it applies to a workload (PeerAuthentication, AuthorizationPolicy), scoped as src/policy/authz.ts and peer-auth-mode.ts scope them. */
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
    case 'AuthorizationPolicy':
      // In the root namespace: every namespace, with or without a selector.
      return { upstreams: [], selects: (w) => (w.namespace === ns || ns === ROOT_NAMESPACE) && selectorMatches(document.spec.selector, w.labels) };
    case 'PeerAuthentication': {
      // A selector selects in its own namespace only; without one, the namespace, or the mesh from the root namespace.
      const selector = document.spec.selector;
      return { upstreams: [], selects: (w) => (selector ? w.namespace === ns && selectorMatches(selector, w.labels) : w.namespace === ns || ns === ROOT_NAMESPACE) };
    }
  }
}

/** True when a node running `workloads` and calling `upstreams` is concerned by any of `reaches`. */
export function reachesNode(reaches: readonly DocumentReach[], node: { workloads: readonly Workload[]; upstreams: readonly ServiceRef[] }): boolean {
  return reaches.some((r) => node.workloads.some((w) => r.selects(w)) || r.upstreams.some((u) => node.upstreams.some((x) => sameService(u, x))));
}
