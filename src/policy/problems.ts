// Policy problems: what is wrong, in which file, document, line and field, collected so every one is reported at once.

import { MeshError } from '../errors';

/** One thing wrong with a policy document. */
export interface PolicyProblem {
  /** The file (or label, such as "request body") the document came from. */
  readonly file: string;
  /** 1-based position of the document in its file (`---` separated). */
  readonly document: number;
  readonly kind?: string;
  /** metadata.name, when the document has one. */
  readonly name?: string;
  /** 1-based line in the file. */
  readonly line?: number;
  /** Field path inside the document, such as `spec.http[0].route[1].weight`; empty for the document itself. */
  readonly path: string;
  /** What was seen and what is accepted. */
  readonly message: string;
}

/** Where a document sits: enough to point a user at it. */
export interface DocumentOrigin {
  readonly file: string;
  /** 1-based position in the file. */
  readonly index: number;
  /** Line of the document's first field. */
  readonly line?: number;
}

/** `policy.yaml: document 2 (VirtualService reviews), line 14, spec.http[0].route[1].weight: got 150, expected ...` */
export function formatPolicyProblem(p: PolicyProblem): string {
  const what = p.kind ? ` (${p.kind}${p.name ? ` ${p.name}` : ''})` : '';
  return `${p.file}: document ${p.document}${what}${p.line ? `, line ${p.line}` : ''}${p.path ? `, ${p.path}` : ''}: ${p.message}`;
}

/** A MeshError carrying the problems it lists. */
export type PolicyError = MeshError & { readonly problems: readonly PolicyProblem[] };

/**
 * Throws one MESH_ERR_POLICY_INVALID listing every problem, when there is at least one.
 * @throws MeshError MESH_ERR_POLICY_INVALID with a `problems` array
 */
export function throwIfProblems(problems: readonly PolicyProblem[], what = 'policy'): void {
  if (problems.length === 0) return;
  const sorted = [...problems].sort((a, b) => (a.file === b.file ? a.document - b.document || (a.line ?? 0) - (b.line ?? 0) : a.file < b.file ? -1 : 1));
  const n = sorted.length;
  const err = new MeshError('MESH_ERR_POLICY_INVALID', `invalid ${what} (${n} problem${n > 1 ? 's' : ''}):\n${sorted.map((p) => `  - ${formatPolicyProblem(p)}`).join('\n')}`);
  throw Object.assign(err, { problems: Object.freeze(sorted) }) as PolicyError;
}
