// The envelope every policy document shares: apiVersion, kind, metadata, spec, and where the document came from.

import type { DocumentOrigin } from './problems';

/** metadata of a resource; `namespace` defaults to "default". */
export interface PolicyMetadata {
  readonly name: string;
  readonly namespace: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly annotations: Readonly<Record<string, string>>;
}

/** One validated policy document of kind `K` with spec `S`. */
export interface PolicyResource<K extends string, S> {
  readonly apiVersion: string;
  readonly kind: K;
  readonly metadata: PolicyMetadata;
  readonly spec: S;
  readonly origin: DocumentOrigin;
}

/** "VirtualService reviews.default" — how messages and `explain` name a resource. */
export function describeResource(r: { kind: string; metadata: { name: string; namespace: string } }): string {
  return `${r.kind} ${r.metadata.name}.${r.metadata.namespace}`;
}
