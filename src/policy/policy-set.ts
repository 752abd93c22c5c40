// Rules that span documents: unique names, one VirtualService / DestinationRule / ServiceEntry per service, one
// PeerAuthentication per scope, host resolution.

import type { DestinationRule } from './destination-rule';
import type { PolicyDocument } from './documents';
import { formatServiceRef, normalizeHost, serviceRefKey, type ServiceRef } from './hosts';
import { describeResource } from './resource';

/** A problem found across documents, pointing at the field of `document` to blame. */
export interface SetProblem {
  readonly document: PolicyDocument;
  readonly path: readonly (string | number)[];
  readonly message: string;
}

/**
 * ServiceEntry hosts that would otherwise read as "name.namespace" (two labels, such as `httpbin.org`):
 * a ServiceEntry declaring one makes it an external host everywhere.
 */
export function externalHostsOf(documents: readonly PolicyDocument[]): Set<string> {
  const out = new Set<string>();
  for (const d of documents) {
    if (d.kind !== 'ServiceEntry') continue;
    for (const h of d.spec.hosts) if (h.split('.').length === 2) out.add(h);
  }
  return out;
}

/** Resolves host names written in resources of `namespace`, knowing the policy's external hosts. */
export type HostResolver = (host: string, namespace: string) => ServiceRef;

/** A HostResolver for this set of documents. */
export function hostResolver(documents: readonly PolicyDocument[]): HostResolver {
  const external = externalHostsOf(documents);
  return (host, namespace) => normalizeHost(host, namespace, external);
}

function where(d: PolicyDocument): string {
  return `${describeResource(d)} (${d.origin.file} document ${d.origin.index})`;
}

/** The services a document claims (VirtualService hosts, DestinationRule host, ServiceEntry hosts) with the field naming each. */
function claims(d: PolicyDocument, resolve: HostResolver): { ref: ServiceRef; path: (string | number)[] }[] {
  const ns = d.metadata.namespace;
  switch (d.kind) {
    case 'VirtualService':
    case 'ServiceEntry':
      return d.spec.hosts.map((h, i) => ({ ref: resolve(h, ns), path: ['spec', 'hosts', i] }));
    case 'DestinationRule':
      return [{ ref: resolve((d as DestinationRule).spec.host, ns), path: ['spec', 'host'] }];
    default:
      return [];
  }
}

const ONE_PER_SERVICE: Record<string, string> = {
  VirtualService: 'a service has one VirtualService; merge the rules into it',
  DestinationRule: 'a service has one DestinationRule; merge the subsets and policies into it',
  ServiceEntry: 'a host is declared by one ServiceEntry; merge the ports and endpoints into it',
};

/** Every cross-document conflict in `documents`, each blamed on the later document. */
export function findConflicts(documents: readonly PolicyDocument[]): SetProblem[] {
  const problems: SetProblem[] = [];
  const resolve = hostResolver(documents);
  const byName = new Map<string, PolicyDocument>();
  const owners = new Map<string, { document: PolicyDocument; path: readonly (string | number)[] }>();
  for (const d of documents) {
    const nameKey = `${d.kind}/${d.metadata.namespace}/${d.metadata.name}`;
    const first = byName.get(nameKey);
    if (first) {
      problems.push({ document: d, path: ['metadata', 'name'], message: `${describeResource(d)} is defined twice; the first is ${where(first)}` });
      continue;
    }
    byName.set(nameKey, d);
    if (d.kind === 'PeerAuthentication') {
      const scope = peerAuthenticationScope(d.metadata.namespace, d.spec.selector?.matchLabels);
      const first = owners.get(scope.key);
      if (first) problems.push({ document: d, path: d.spec.selector ? ['spec', 'selector'] : ['metadata', 'name'], message: `${scope.what} already has ${where(first.document)}; it takes one PeerAuthentication, merge them` });
      else owners.set(scope.key, { document: d, path: [] });
    }
    for (const { ref, path } of claims(d, resolve)) {
      const key = `${d.kind}|${serviceRefKey(ref)}`;
      const owner = owners.get(key);
      if (!owner) {
        owners.set(key, { document: d, path });
      } else if (owner.document === d) {
        problems.push({ document: d, path, message: `names the same service (${formatServiceRef(ref)}) as ${formatPath(owner.path)}` });
      } else {
        problems.push({ document: d, path, message: `service ${formatServiceRef(ref)} already has ${where(owner.document)}; ${ONE_PER_SERVICE[d.kind]}` });
      }
    }
  }
  return problems;
}

/** What one PeerAuthentication covers: its namespace as a whole, or the workloads of one exact selector there. */
function peerAuthenticationScope(namespace: string, matchLabels: Readonly<Record<string, string>> | undefined): { key: string; what: string } {
  if (!matchLabels) return { key: `PeerAuthentication|${namespace}|`, what: `namespace ${namespace}` };
  const labels = Object.keys(matchLabels).sort().map((k) => `${k}=${matchLabels[k]}`).join(',');
  return { key: `PeerAuthentication|${namespace}|${labels}`, what: `selector {${labels}} in namespace ${namespace}` };
}

function formatPath(path: readonly (string | number)[]): string {
  return path.reduce<string>((acc, p) => (typeof p === 'number' ? `${acc}[${p}]` : acc ? `${acc}.${p}` : p), '');
}
