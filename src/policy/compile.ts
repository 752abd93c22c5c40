// compilePolicy: validated documents in, per-service route tables and destination policies out, ready for the proxy.

import { AuthorizationIndex, type WorkloadAuthorization } from './authz';
import { buildDestinationPolicy, type DestinationPolicy } from './destination-policy';
import { toProblem, type PolicyDocument } from './documents';
import { formatServiceRef, normalizeHost, serviceRefKey, type ServiceRef } from './hosts';
import { PeerAuthenticationIndex, type MtlsModeDecision } from './peer-auth-mode';
import { externalHostsOf, findConflicts, hostResolver } from './policy-set';
import { throwIfProblems } from './problems';
import {
  compileHttpRouteTable,
  compileTcpRouteTable,
  defaultHttpRouteTable,
  defaultTcpRouteTable,
  type HttpRouteTable,
  type TcpRouteTable,
  type WeightedDestination,
} from './route-table';
import type { ServiceEntry } from './service-entry';
import type { Workload } from './workload';

/** The policy an agent (or `explain`) works from: lookups by service, everything precomputed and frozen. */
export interface CompiledPolicy {
  /** The HTTP routes for requests to `service`; one default rule (100% to the service) when no VirtualService has HTTP rules for it. */
  routesFor(service: ServiceRef): HttpRouteTable;
  /** The TCP/TLS routes for connections to `service`; one default rule when none exist. */
  tcpRoutesFor(service: ServiceRef): TcpRouteTable;
  /** The DestinationRule view of `service`; defaults when no DestinationRule names it. */
  destinationFor(service: ServiceRef): DestinationPolicy;
  /** The ServiceEntry declaring `service`, if any. */
  serviceEntryFor(service: ServiceRef): ServiceEntry | undefined;
  /** The AuthorizationPolicies that apply to a workload, ready to decide its requests (the inbound proxy and `explain` both use it). */
  authorizationFor(workload: Workload): WorkloadAuthorization;
  /** The mTLS mode PeerAuthentication sets on a workload's port (where its app listens). */
  mtlsModeFor(workload: Workload, port: number): MtlsModeDecision;
  /** The service a host (a Host header, a destination) written in `namespace` names, knowing this policy's ServiceEntries. */
  resolveHost(host: string, namespace: string): ServiceRef;
  /** Every service a VirtualService, DestinationRule or ServiceEntry names, sorted. */
  readonly services: readonly ServiceRef[];
  /** The documents compiled, in order. */
  readonly documents: readonly PolicyDocument[];
  /** Things that are allowed but probably wrong, such as a route to a subset no DestinationRule defines. */
  readonly warnings: readonly string[];
}

/** Defaults made for services without their own entry are kept up to this many (Host headers are client input). */
const DEFAULT_CACHE_LIMIT = 4096;

class PolicySnapshot implements CompiledPolicy {
  readonly services: readonly ServiceRef[];
  readonly warnings: readonly string[];
  private readonly http = new Map<string, HttpRouteTable>();
  private readonly tcp = new Map<string, TcpRouteTable>();
  private readonly destinations = new Map<string, DestinationPolicy>();
  private readonly entries = new Map<string, ServiceEntry>();
  private readonly defaultHttp = new Map<string, HttpRouteTable>();
  private readonly defaultTcp = new Map<string, TcpRouteTable>();
  private readonly defaultDestinations = new Map<string, DestinationPolicy>();
  private readonly externalHosts: ReadonlySet<string>;
  private readonly authorization: AuthorizationIndex;
  private readonly peerAuthentication: PeerAuthenticationIndex;

  constructor(readonly documents: readonly PolicyDocument[]) {
    const resolve = hostResolver(documents);
    this.externalHosts = externalHostsOf(documents);
    this.authorization = new AuthorizationIndex(documents);
    this.peerAuthentication = new PeerAuthenticationIndex(documents);
    const services = new Map<string, ServiceRef>();
    const note = (ref: ServiceRef): string => {
      const key = serviceRefKey(ref);
      services.set(key, ref);
      return key;
    };
    for (const d of documents) {
      if (d.kind === 'ServiceEntry') for (const h of d.spec.hosts) this.entries.set(note(resolve(h, d.metadata.namespace)), d);
    }
    for (const d of documents) {
      const ns = d.metadata.namespace;
      if (d.kind === 'VirtualService') {
        const http = d.spec.http.length > 0 ? compileHttpRouteTable(d, resolve) : undefined;
        const tcp = d.spec.tcp.length + d.spec.tls.length > 0 ? compileTcpRouteTable(d, resolve) : undefined;
        for (const h of d.spec.hosts) {
          const key = note(resolve(h, ns));
          if (http) this.http.set(key, http);
          if (tcp) this.tcp.set(key, tcp);
        }
      } else if (d.kind === 'DestinationRule') {
        const ref = resolve(d.spec.host, ns);
        this.destinations.set(note(ref), buildDestinationPolicy(ref, d, this.isExternal(serviceRefKey(ref), ref)));
      }
    }
    this.services = Object.freeze([...services.values()].sort((a, b) => (serviceRefKey(a) < serviceRefKey(b) ? -1 : 1)));
    this.warnings = Object.freeze(this.findWarnings());
    Object.freeze(this);
  }

  routesFor(service: ServiceRef): HttpRouteTable {
    const key = serviceRefKey(service);
    return this.http.get(key) ?? this.cached(this.defaultHttp, key, () => defaultHttpRouteTable(service));
  }

  tcpRoutesFor(service: ServiceRef): TcpRouteTable {
    const key = serviceRefKey(service);
    return this.tcp.get(key) ?? this.cached(this.defaultTcp, key, () => defaultTcpRouteTable(service));
  }

  destinationFor(service: ServiceRef): DestinationPolicy {
    const key = serviceRefKey(service);
    return this.destinations.get(key) ?? this.cached(this.defaultDestinations, key, () => buildDestinationPolicy(service, undefined, this.isExternal(key, service)));
  }

  serviceEntryFor(service: ServiceRef): ServiceEntry | undefined {
    return this.entries.get(serviceRefKey(service));
  }

  authorizationFor(workload: Workload): WorkloadAuthorization {
    return this.authorization.forWorkload(workload);
  }

  mtlsModeFor(workload: Workload, port: number): MtlsModeDecision {
    return this.peerAuthentication.modeFor(workload, port);
  }

  resolveHost(host: string, namespace: string): ServiceRef {
    return normalizeHost(host, namespace, this.externalHosts);
  }

  /** External: declared by a MESH_EXTERNAL ServiceEntry, or a host outside the mesh's naming. */
  private isExternal(key: string, ref: ServiceRef): boolean {
    const se = this.entries.get(key);
    return se ? se.spec.location === 'MESH_EXTERNAL' : ref.namespace === '';
  }

  private cached<T>(map: Map<string, T>, key: string, make: () => T): T {
    let v = map.get(key);
    if (v === undefined) {
      v = make();
      if (map.size < DEFAULT_CACHE_LIMIT) map.set(key, v);
    }
    return v;
  }

  private findWarnings(): string[] {
    const out: string[] = [];
    const check = (from: string, d: { service: ServiceRef; subset?: string }): void => {
      if (d.subset === undefined) return;
      const dr = this.destinations.get(serviceRefKey(d.service));
      if (!dr) out.push(`${from} routes to subset ${d.subset} of ${formatServiceRef(d.service)}, but no DestinationRule defines subsets for it`);
      else if (!dr.subsets.has(d.subset)) out.push(`${from} routes to subset ${d.subset} of ${formatServiceRef(d.service)}, which ${dr.source} does not define (it defines: ${[...dr.subsets.keys()].join(', ') || 'none'})`);
    };
    const seen = new Set<unknown>();
    for (const table of [...this.http.values(), ...this.tcp.values()]) {
      if (seen.has(table)) continue;
      seen.add(table);
      for (const e of table.entries) {
        const r = e.route;
        const dests: readonly WeightedDestination[] = 'action' in r ? (r.action.kind === 'route' ? r.action.destinations : []) : r.destinations;
        for (const d of dests) check(table.source ?? 'default', d);
        if ('mirror' in r && r.mirror) check(`${table.source} (mirror)`, r.mirror);
      }
    }
    return [...new Set(out)];
  }
}

/**
 * Compiles validated documents (from parsePolicyText, one or more files) into the lookups the proxy uses.
 * Hosts resolve relative to each resource's namespace; ServiceEntry hosts are external.
 * @throws MeshError MESH_ERR_POLICY_INVALID when documents conflict (two VirtualServices, DestinationRules or
 *   ServiceEntries for one service, two PeerAuthentications for one scope, or one name used twice), listing every conflict
 */
export function compilePolicy(documents: readonly PolicyDocument[]): CompiledPolicy {
  throwIfProblems(findConflicts(documents).map((c) => toProblem(c.document, c.path, c.message)), 'policy');
  return new PolicySnapshot(Object.freeze([...documents]));
}

