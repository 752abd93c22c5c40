// The canonical form of a mesh policy version's document set, and its SHA-256: what the server signs and agents check.

import { createHash } from 'node:crypto';

/** Which document: kind, namespace and name (one document per triple in a version). */
export interface PolicyDocumentKey {
  readonly kind: string;
  readonly namespace: string;
  readonly name: string;
}

/** One document of a version: its key and its text exactly as applied. */
export interface PolicyDocumentSource extends PolicyDocumentKey {
  readonly source: string;
}

/** A version as a pair: its number and the digest of its documents. */
export interface PolicyVersionRef {
  readonly version: number;
  readonly digest: string;
}

/** `Kind/namespace/name`, unique within a version. */
export function policyDocumentKey(d: PolicyDocumentKey): string {
  return `${d.kind}/${d.namespace}/${d.name}`;
}

const order = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

/** Canonical order: by kind, then namespace, then name (code-unit order, the same everywhere). */
export function comparePolicyDocuments(a: PolicyDocumentKey, b: PolicyDocumentKey): number {
  return order(a.kind, b.kind) || order(a.namespace, b.namespace) || order(a.name, b.name);
}

/**
 * `sha256:<hex>` of the canonical form of a document set: the documents in canonical order, as the JSON text of
 * `[[kind, namespace, name, source], ...]`. Any change to a key or a byte of a source changes it.
 */
export function policyDigest(documents: readonly PolicyDocumentSource[]): string {
  const canonical = [...documents].sort(comparePolicyDocuments).map((d) => [d.kind, d.namespace, d.name, d.source]);
  return `sha256:${createHash('sha256').update(JSON.stringify(canonical)).digest('hex')}`;
}

/** What a digest looks like on the wire and in the store. */
export const POLICY_DIGEST_PATTERN = /^sha256:[0-9a-f]{64}$/;
