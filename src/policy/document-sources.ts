// The exact text of each document of a policy file, so the server can store and give back what was applied, byte for byte.

import { LineCounter, parseAllDocuments, Parser } from 'yaml';
import { MeshError } from '../errors';
import { lineFinder, parsePolicyText, type PolicyDocument } from './documents';
import type { PolicyProblem } from './problems';

/** A validated document together with its text exactly as it was written. */
export interface SourcedDocument {
  readonly document: PolicyDocument;
  /** The document's own slice of the file: parsed alone, it gives the same document. */
  readonly source: string;
}

/**
 * Cuts a YAML (or JSON) stream into one slice per document, numbered as parsePolicyText numbers them. A slice runs
 * from the first byte after the previous document (its comments and directives included) to the start of whatever
 * follows the document (a `...` end marker stays with the document it ends). Text after the last document joins it.
 */
export function documentSlices(text: string): string[] {
  const starts: number[] = [];
  let next: number | undefined = 0;
  let justEnded = false;
  for (const t of new Parser().parse(text)) {
    if (t.type === 'document') {
      starts.push(next ?? t.offset);
      next = undefined;
      justEnded = true;
      continue;
    }
    // The `...` that closes a document belongs to it; anything else starts the next document's slice.
    if (!(t.type === 'doc-end' && justEnded)) next ??= t.offset;
    justEnded = false;
  }
  return starts.map((s, i) => text.slice(s, starts[i + 1] ?? text.length));
}

/**
 * Parses and validates a policy file like parsePolicyText, and pairs each document with its source slice.
 * @throws MeshError MESH_ERR_POLICY_INVALID listing every problem (file, document, line, field path)
 */
export function parsePolicySources(text: string, file: string): SourcedDocument[] {
  const documents = parsePolicyText(text, file);
  const slices = documentSlices(text);
  return documents.map((document) => {
    const source = slices[document.origin.index - 1];
    if (source === undefined) throw new MeshError('MESH_ERR_INTERNAL', `${file}: document ${document.origin.index} has no source slice (${slices.length} found)`);
    return { document, source };
  });
}

/**
 * Places problems found across documents (conflicts, which compilePolicy can only place at a document's first line)
 * on the line of their field, for the problems of `files`; others are returned as they are.
 */
export function withFieldLines(problems: readonly PolicyProblem[], files: readonly { name: string; text: string }[]): PolicyProblem[] {
  const finders = new Map<string, ((document: number, path: (string | number)[]) => number | undefined) | undefined>();
  const finderOf = (name: string): ((document: number, path: (string | number)[]) => number | undefined) | undefined => {
    if (!finders.has(name)) {
      const text = files.find((f) => f.name === name)?.text;
      const lc = new LineCounter();
      const docs = text === undefined ? [] : parseAllDocuments(text, { lineCounter: lc });
      finders.set(name, text === undefined ? undefined : (document, path) => {
        const doc = Array.isArray(docs) ? docs[document - 1] : undefined;
        return doc ? lineFinder(doc, lc)(path) : undefined;
      });
    }
    return finders.get(name);
  };
  return problems.map((p) => {
    const path = [...p.path.matchAll(/([^.[\]]+)|\[(\d+)\]/g)].map((m) => (m[2] !== undefined ? Number(m[2]) : m[1]!));
    const line = finderOf(p.file)?.(p.document, path);
    return line === undefined ? p : { ...p, line };
  });
}
