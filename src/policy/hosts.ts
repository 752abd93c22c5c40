// Istio host names to services: every spelling of a mesh service's name (short, namespaced, FQDN) becomes one {name, namespace}.

/**
 * A service as policy names it. Mesh services have a DNS-label `name` and a `namespace`; hosts outside the mesh
 * (ServiceEntry hosts such as `api.example.com`) keep their full host name as `name` and have namespace `""`.
 */
export interface ServiceRef {
  readonly name: string;
  readonly namespace: string;
}

/** The namespace of a resource whose metadata names none, and of a short host written in it. */
export const DEFAULT_NAMESPACE = 'default';

/** A DNS-1123 label: what service names and namespaces look like. */
export const LABEL_PATTERN = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/** A DNS-1123 subdomain: what resource names look like. */
export const RESOURCE_NAME_PATTERN = /^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/;

const HOST_PATTERN = RESOURCE_NAME_PATTERN;

/** What a host must look like, for error messages. */
export const HOST_HINT =
  'a host name such as "reviews", "reviews.default", "reviews.default.svc.cluster.local" or "api.example.com" (lower-case letters, digits, "-" and ".")';

/** Returns why `host` is not a host policy accepts, or undefined when it is one. */
export function hostProblem(host: string): string | undefined {
  if (host.includes('*')) return `got ${JSON.stringify(host)}; wildcard hosts are not supported by mesh-agent yet, name each host`;
  if (!HOST_PATTERN.test(host)) return `got ${JSON.stringify(host)}, expected ${HOST_HINT}`;
  return undefined;
}

/**
 * The service a host names, seen from a resource (or client) in `namespace`:
 * `reviews` (in that namespace), `reviews.ns`, `reviews.ns.svc`, `reviews.ns.mesh` and `reviews.ns.svc.cluster.local`
 * all name {name: "reviews", namespace: "ns"}. A host listed in `externalHosts` (ServiceEntry hosts) and any other
 * dotted name is external: {name: host, namespace: ""}. A trailing ":port" and a trailing "." are ignored.
 */
export function normalizeHost(host: string, namespace: string, externalHosts?: ReadonlySet<string>): ServiceRef {
  let h = host;
  const colon = h.lastIndexOf(':');
  if (colon > 0 && h.indexOf(':') === colon) h = h.slice(0, colon);
  if (h.endsWith('.')) h = h.slice(0, -1);
  if (/[A-Z]/.test(h)) h = h.toLowerCase();
  if (externalHosts !== undefined && externalHosts.has(h)) return { name: h, namespace: '' };
  const d1 = h.indexOf('.');
  if (d1 < 0) return { name: h, namespace };
  const name = h.slice(0, d1);
  const d2 = h.indexOf('.', d1 + 1);
  if (d2 < 0) return { name, namespace: h.slice(d1 + 1) };
  const rest = h.slice(d2 + 1);
  if (rest === 'svc' || rest === 'mesh' || rest === 'svc.cluster.local') return { name, namespace: h.slice(d1 + 1, d2) };
  return { name: h, namespace: '' };
}

/** A map key for a service: "namespace/name" (external hosts: "/host"), never ambiguous. */
export function serviceRefKey(ref: ServiceRef): string {
  return `${ref.namespace}/${ref.name}`;
}

/** "reviews.default" for a mesh service, the host itself for an external one; for messages. */
export function formatServiceRef(ref: ServiceRef): string {
  return ref.namespace ? `${ref.name}.${ref.namespace}` : ref.name;
}

/** True when both name the same service. */
export function sameService(a: ServiceRef, b: ServiceRef): boolean {
  return a.name === b.name && a.namespace === b.namespace;
}
