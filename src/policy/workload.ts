// Workloads as security policies select them: a local service's name, namespace and labels, and the mesh's root namespace.

/**
 * The namespace whose PeerAuthentication and AuthorizationPolicy documents apply to the whole mesh (Istio's
 * `istio-system`): without a selector to every workload, with one to matching workloads in every namespace
 * (AuthorizationPolicy only; a PeerAuthentication selector selects in its own namespace, as in Istio).
 */
export const ROOT_NAMESPACE = 'mesh-system';

/** A workload policies can select: one local service of an agent. */
export interface Workload {
  readonly name: string;
  readonly namespace: string;
  /** `app: <name>` and the service's configured labels. */
  readonly labels: Readonly<Record<string, string>>;
}

/** A selector's labels: every one must be on the workload. */
export type MatchLabels = Readonly<Record<string, string>>;

/** True when `selector` (undefined = every workload) selects a workload with `labels`. */
export function selectorMatches(selector: { readonly matchLabels: MatchLabels } | undefined, labels: Readonly<Record<string, string>>): boolean {
  if (!selector) return true;
  for (const [k, v] of Object.entries(selector.matchLabels)) if (labels[k] !== v) return false;
  return true;
}

/** The labels of a local service as policies see them: `app` is the service name unless the service sets it. */
export function workloadOf(name: string, namespace: string, labels: Readonly<Record<string, string>> = {}): Workload {
  return Object.freeze({ name, namespace, labels: Object.freeze({ app: name, ...labels }) });
}

/** "namespace/name" with the labels, sorted: a cache key for a workload. */
export function workloadKey(w: Workload): string {
  const labels = Object.keys(w.labels)
    .sort()
    .map((k) => `${k}=${w.labels[k]}`)
    .join(',');
  return `${w.namespace}/${w.name}|${labels}`;
}
