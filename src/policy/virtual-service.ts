// VirtualService: how requests to a set of hosts are routed (ordered HTTP rules, TCP and TLS routes).

import type { FieldReader } from '../config';
import { readHostList, rejectUnimplemented } from './fields';
import { readL4Match, type L4MatchAttributes } from './http-match';
import { readHttpRoute, type HttpRoute } from './http-route';
import type { PolicyResource } from './resource';
import { readRouteDestinations, type RouteDestination } from './route-destination';

/** `tcp[]` (and `tls[]`) rule: any match entry (or none) selects the weighted destinations. */
export interface L4Route {
  readonly match: readonly L4MatchAttributes[];
  readonly route: readonly RouteDestination[];
}

/** A VirtualService's spec; hosts as written, lower-cased. */
export interface VirtualServiceSpec {
  readonly hosts: readonly string[];
  /** Ordered: the first rule that matches wins. */
  readonly http: readonly HttpRoute[];
  readonly tcp: readonly L4Route[];
  readonly tls: readonly L4Route[];
}

/** A validated VirtualService document. */
export type VirtualService = PolicyResource<'VirtualService', VirtualServiceSpec>;

function readL4Route(r: FieldReader, tls: boolean): L4Route {
  const match = r.list('match').map((m) => readL4Match(m, tls));
  if (tls && match.length === 0) r.fail('match', 'is required for tls routes (match: [{sniHosts: [...]}])');
  const route = readRouteDestinations(r, 'route', { headers: false, required: true });
  r.done();
  return { match, route };
}

/** Reads and checks a VirtualService spec. */
export function readVirtualServiceSpec(r: FieldReader): VirtualServiceSpec {
  const hosts = readHostList(r, 'hosts', { required: true });
  const seen = new Set<string>();
  hosts.forEach((h, i) => {
    if (seen.has(h)) r.problems.add([...r.path, 'hosts', i], `${JSON.stringify(h)} is listed twice`);
    seen.add(h);
  });
  const http = r.list('http').map(readHttpRoute);
  const tcp = r.list('tcp').map((t) => readL4Route(t, false));
  const tls = r.list('tls').map((t) => readL4Route(t, true));
  if (http.length + tcp.length + tls.length === 0) r.problems.add(r.path, 'must have at least one http, tcp or tls rule');
  rejectUnimplemented(r, ['gateways', 'exportTo']);
  r.done();
  return { hosts, http, tcp, tls };
}
