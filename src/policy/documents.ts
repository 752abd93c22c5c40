// Policy files: `---` separated YAML documents, each checked by its kind's reader, every problem reported with its line.

import { readFileSync } from 'node:fs';
import { isMap, isNode, isScalar, LineCounter, parseAllDocuments, type Document } from 'yaml';
import { deepFreeze, ProblemList, type ConfigSource, type FieldReader } from '../config';
import { MeshError } from '../errors';
import { readDestinationRuleSpec, type DestinationRule } from './destination-rule';
import { PolicyReader, readStringMap } from './fields';
import { DEFAULT_NAMESPACE, LABEL_PATTERN, RESOURCE_NAME_PATTERN } from './hosts';
import { findConflicts } from './policy-set';
import { throwIfProblems, type DocumentOrigin, type PolicyProblem } from './problems';
import type { PolicyMetadata } from './resource';
import { readServiceEntrySpec, type ServiceEntry } from './service-entry';
import { readVirtualServiceSpec, type VirtualService } from './virtual-service';
import { readPeerAuthenticationSpec, type PeerAuthentication } from './peer-authentication';
import { readAuthorizationPolicySpec, type AuthorizationPolicy } from './authorization-policy';

/** Any validated policy document. */
export type PolicyDocument = VirtualService | DestinationRule | ServiceEntry | PeerAuthentication | AuthorizationPolicy;
export type PolicyKind = PolicyDocument['kind'];

const NETWORKING = { group: 'networking.istio.io', versions: ['v1', 'v1beta1', 'v1alpha3'] };
const SECURITY = { group: 'security.istio.io', versions: ['v1', 'v1beta1'] };

/** The kinds this parser accepts, the API group and versions of each, and the reader of its spec. */
const KINDS: Record<PolicyKind, { group: string; versions: readonly string[]; readSpec(r: FieldReader): unknown }> = {
  VirtualService: { ...NETWORKING, readSpec: readVirtualServiceSpec },
  DestinationRule: { ...NETWORKING, readSpec: readDestinationRuleSpec },
  ServiceEntry: { ...NETWORKING, readSpec: readServiceEntrySpec },
  PeerAuthentication: { ...SECURITY, readSpec: readPeerAuthenticationSpec },
  AuthorizationPolicy: { ...SECURITY, readSpec: readAuthorizationPolicySpec },
};

/** The kinds accepted, for messages and `mesh-agent get`. */
export const POLICY_KINDS: readonly PolicyKind[] = Object.keys(KINDS) as PolicyKind[];

type Path = readonly (string | number)[];

/** Line of the value at `path` in one YAML document, falling back to the nearest enclosing field that has one. */
export function lineFinder(doc: Document.Parsed, lc: LineCounter): (path: Path) => number | undefined {
  const lineAt = (path: Path): number | undefined => {
    const last = path[path.length - 1];
    if (typeof last === 'string') {
      const parent = path.length === 1 ? doc.contents : doc.getIn(path.slice(0, -1), true);
      if (isMap(parent)) {
        const pair = parent.items.find((p) => isScalar(p.key) && String(p.key.value) === last);
        if (pair && isNode(pair.key) && pair.key.range) return lc.linePos(pair.key.range[0]).line;
      }
    }
    const node = path.length === 0 ? doc.contents : doc.getIn(path, true);
    return isNode(node) && node.range ? lc.linePos(node.range[0]).line : undefined;
  };
  return (path) => {
    for (let n = path.length; n >= 0; n--) {
      const line = lineAt(path.slice(0, n));
      if (line !== undefined) return line;
    }
    return undefined;
  };
}

/** Reads the envelope (apiVersion, kind, metadata) and the spec of one document. */
function readDocument(data: unknown, problems: ProblemList, origin: DocumentOrigin): PolicyDocument | undefined {
  const r = new PolicyReader(data, [], problems);
  if (typeof data !== 'object' || data === null || Array.isArray(data)) return undefined;
  const apiVersion = r.string('apiVersion', '', { required: true, hint: 'such as networking.istio.io/v1' });
  const kind = r.string('kind', '', { required: true, hint: `one of ${POLICY_KINDS.join(', ')}` });
  if (!r.has('metadata')) r.fail('metadata', 'is required (metadata: {name: ..., namespace: ...})');
  const m = r.object('metadata');
  const name = m.string('name', '', { required: true, pattern: RESOURCE_NAME_PATTERN, hint: 'a name of lower-case letters, digits, "-" and "."' });
  const namespace = m.string('namespace', DEFAULT_NAMESPACE, { pattern: LABEL_PATTERN, hint: 'a namespace of lower-case letters, digits and "-"' });
  const labels = readStringMap(m, 'labels');
  const annotations = readStringMap(m, 'annotations');
  m.done();
  const known = Object.hasOwn(KINDS, kind) ? KINDS[kind as PolicyKind] : undefined;
  if (!known) {
    if (kind) r.fail('kind', `kind ${kind} is not supported by this version of the policy parser; supported kinds: ${POLICY_KINDS.join(', ')}`);
    r.raw('spec');
    r.done();
    return undefined;
  }
  const slash = apiVersion.indexOf('/');
  if (apiVersion && (apiVersion.slice(0, slash) !== known.group || !known.versions.includes(apiVersion.slice(slash + 1)))) {
    r.fail('apiVersion', `got ${JSON.stringify(apiVersion)}, expected ${known.versions.map((v) => `${known.group}/${v}`).join(' or ')} for ${kind}`);
  }
  if (!r.has('spec')) r.fail('spec', `is required (the ${kind}'s settings)`);
  const spec = r.has('spec') ? known.readSpec(r.object('spec')) : undefined;
  r.done();
  const metadata: PolicyMetadata = { name, namespace, labels, annotations };
  return { apiVersion, kind, metadata, spec, origin } as PolicyDocument;
}

/**
 * Parses and validates a policy file's text: `---` separated VirtualService, DestinationRule, ServiceEntry,
 * PeerAuthentication and AuthorizationPolicy documents. Empty documents are skipped (but counted, so document
 * numbers match the file). Returns the documents, deeply frozen.
 * @throws MeshError MESH_ERR_POLICY_INVALID listing every problem of every document (syntax, fields, conflicts)
 */
const DEEP_NESTING = 'YAML nesting is too deep to read (the parser ran out of stack); policy documents nest a few levels, not thousands';

/** A YAML alias error: an alias bomb (more than 100 expansions), or an unquoted value that starts with "*". */
function aliasMessage(err: Error): string {
  if (/Excessive alias count/.test(err.message)) return 'YAML: aliases expand more than 100 times (an alias bomb?); policy documents need no aliases';
  if (/Maximum call stack/.test(err.message)) return DEEP_NESTING;
  return `YAML: ${err.message} (quote values that start with "*" or "&")`;
}

export function parsePolicyText(text: string, file = 'policy'): readonly PolicyDocument[] {
  const lc = new LineCounter();
  const docs = parseAllDocuments(text, { lineCounter: lc, prettyErrors: false, uniqueKeys: true });
  const problems: PolicyProblem[] = [];
  const out: PolicyDocument[] = [];
  const finders = new Map<PolicyDocument, (path: Path) => number | undefined>();
  (Array.isArray(docs) ? docs : []).forEach((doc, i) => {
    const index = i + 1;
    if (doc.errors.length > 0) {
      for (const e of doc.errors) problems.push({ file, document: index, line: lc.linePos(e.pos[0]).line, path: '', message: /Maximum call stack/.test(e.message) ? DEEP_NESTING : `YAML syntax: ${e.message.split('\n')[0]}` });
      return;
    }
    let data: unknown;
    try {
      data = doc.toJS({ maxAliasCount: 100 });
    } catch (err) {
      // Unresolvable aliases (an unquoted "*abc" is one) and alias bombs surface here, not in doc.errors.
      problems.push({ file, document: index, ...(doc.contents?.range ? { line: lc.linePos(doc.contents.range[0]).line } : {}), path: '', message: aliasMessage(err as Error) });
      return;
    }
    if (data === null || data === undefined) return;
    const lineOf = lineFinder(doc, lc);
    const source: ConfigSource = { name: file, data, lineOf };
    const found = new ProblemList(source);
    const origin: DocumentOrigin = { file, index, ...(lineOf([]) ? { line: lineOf([]) } : {}) };
    const parsed = readDocument(data, found, origin);
    const meta = (data as { kind?: unknown; metadata?: { name?: unknown } }) ?? {};
    const kind = typeof meta.kind === 'string' ? meta.kind : undefined;
    const name = typeof meta.metadata?.name === 'string' ? meta.metadata.name : undefined;
    for (const p of found.items) {
      problems.push({ file, document: index, ...(kind ? { kind } : {}), ...(name ? { name } : {}), ...(p.line ? { line: p.line } : {}), path: p.path, message: p.message });
    }
    if (parsed && found.items.length === 0) {
      out.push(parsed);
      finders.set(parsed, lineOf);
    }
  });
  for (const c of findConflicts(out)) problems.push(toProblem(c.document, c.path, c.message, finders.get(c.document)));
  throwIfProblems(problems, `policy file ${file}`);
  return deepFreeze(out);
}

/** A PolicyProblem for a field of a parsed document. */
export function toProblem(d: PolicyDocument, path: Path, message: string, lineOf?: (path: Path) => number | undefined): PolicyProblem {
  const line = lineOf?.(path) ?? d.origin.line;
  const p = path.reduce<string>((acc, k) => (typeof k === 'number' ? `${acc}[${k}]` : acc ? `${acc}.${k}` : k), '');
  return { file: d.origin.file, document: d.origin.index, kind: d.kind, name: d.metadata.name, ...(line ? { line } : {}), path: p, message };
}

/**
 * Reads and parses a policy file.
 * @throws MeshError MESH_ERR_POLICY_INVALID when unreadable or invalid
 */
export function readPolicyFile(file: string): readonly PolicyDocument[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new MeshError('MESH_ERR_POLICY_INVALID', `cannot read policy file ${file}: ${(err as Error).message}`, { cause: err });
  }
  return parsePolicyText(text, file);
}
