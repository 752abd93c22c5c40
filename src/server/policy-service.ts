// The policy lifecycle on the server: validate everything, diff against the newest version, store the next one in one transaction.

import { isMeshError, MeshError } from '../errors';
import {
  compilePolicy,
  documentReach,
  parsePolicySources,
  parsePolicyText,
  reachesNode,
  throwIfProblems,
  withFieldLines,
  workloadOf,
  type CompiledPolicy,
  type DocumentReach,
  type PolicyDocument,
  type PolicyError,
  type PolicyProblem,
} from '../policy';
import { comparePolicyDocuments, policyDigest, policyDocumentKey } from '../protocol';
import type { NewPolicyVersion, PolicyChangeAction, PolicyKey, PolicyOperation, PolicyVersionRow, Store, StoredPolicyDocument } from '../store';
import type { Logger } from '../telemetry';

/** One file of an apply: a name for messages and its text (multi-document YAML, or JSON). */
export interface PolicyFile {
  readonly name: string;
  readonly text: string;
}

/** An agent a change concerns: it runs a service the change selects, or calls one it routes. */
export interface ReachedAgent {
  readonly id: string;
  readonly nodeName: string;
  readonly connected: boolean;
}

/** What an apply, delete or rollback did (or, with dryRun, would do). */
export interface PolicyChangeResult {
  readonly dryRun: boolean;
  /** True when a version was stored. */
  readonly created: boolean;
  /** The version made, the one that would be made (dry run), or the newest when nothing changes. */
  readonly version: number;
  readonly previousVersion: number;
  readonly changes: readonly (PolicyKey & { readonly action: PolicyChangeAction })[];
  /** Documents of an apply that are already stored with the same text. */
  readonly unchanged: readonly PolicyKey[];
  readonly agents: readonly ReachedAgent[];
  /** Allowed but probably wrong (such as a route to a subset no DestinationRule defines). */
  readonly warnings: readonly string[];
}

/** A document of the newest version, parsed once. */
interface HeadEntry {
  readonly stored: StoredPolicyDocument;
  readonly document: PolicyDocument;
}

/** The next document set: the head's entries with the changes applied, in order (kept ones first, for blame). */
interface Plan {
  readonly operation: PolicyOperation;
  readonly rollbackTo?: number;
  readonly upserts: readonly { readonly source: string; readonly document: PolicyDocument }[];
  readonly removals: readonly PolicyKey[];
  readonly unchanged: readonly PolicyKey[];
  /** The files of an apply, to place conflicts on the line of their field. */
  readonly files?: readonly PolicyFile[];
}

const keyOf = (d: PolicyDocument): PolicyKey => ({ kind: d.kind, namespace: d.metadata.namespace, name: d.metadata.name });
const describe = (k: PolicyKey): string => `${k.kind} ${k.namespace}/${k.name}`;

/** What the service needs from the server. */
export interface PolicyServiceDeps {
  readonly store: Store;
  readonly connected: () => ReadonlyMap<string, unknown>;
  /** Called after a version is stored (the distributor pushes it). */
  readonly committed: (row: PolicyVersionRow) => void;
  readonly now: () => number;
  readonly log: Logger;
}

export class PolicyService {
  private head: { version: number; entries: Map<string, HeadEntry> } | undefined;
  /** Set while replicated() runs a change: the version is held here instead of being stored. */
  private staged: { version: NewPolicyVersion | undefined } | undefined;

  constructor(private readonly deps: PolicyServiceDeps) {}

  /**
   * Runs a change (apply, remove or rollback) whose new version must first be written elsewhere (HA mode: Consul
   * KV): `replicate` gets the version, and only when it resolves is the version stored here and published.
   * Callers serialize these calls. @throws whatever the change or `replicate` throws; then nothing is stored
   */
  async replicated(change: () => PolicyChangeResult, replicate: (v: NewPolicyVersion) => Promise<void>): Promise<PolicyChangeResult> {
    const staged: { version: NewPolicyVersion | undefined } = { version: undefined };
    this.staged = staged;
    let result: PolicyChangeResult;
    try {
      result = change();
    } finally {
      this.staged = undefined;
    }
    if (staged.version) {
      await replicate(staged.version);
      this.store(staged.version, result.changes.length);
    }
    return result;
  }

  /** Stores a version written by the leader replica (HA mode) and publishes it. @throws MeshError MESH_ERR_STORE */
  storeReplicated(v: NewPolicyVersion): void {
    this.store(v, v.upserts.length + v.removals.length);
  }

  /**
   * Adds or replaces documents (matched by kind, namespace and name). Every file is validated, then the whole
   * resulting policy, before anything is stored; the changed documents land as one version or not at all.
   * @throws MeshError MESH_ERR_POLICY_INVALID listing every problem of every file
   */
  apply(files: readonly PolicyFile[], actor: string, dryRun: boolean): PolicyChangeResult {
    const problems: PolicyProblem[] = [];
    const applied: { source: string; document: PolicyDocument }[] = [];
    for (const f of files) {
      try {
        applied.push(...parsePolicySources(f.text, f.name));
      } catch (err) {
        if (!isMeshError(err, 'MESH_ERR_POLICY_INVALID')) throw err;
        problems.push(...((err as PolicyError).problems ?? []));
      }
    }
    throwIfProblems(problems, 'policy');
    if (applied.length === 0) throw new MeshError('MESH_ERR_POLICY_INVALID', `no policy documents in ${files.map((f) => f.name).join(', ') || 'the request'}`);
    // The same document twice in one apply, or two documents claiming one service, across files.
    compileLocated(applied.map((a) => a.document), files);
    const head = this.current();
    const upserts: Plan['upserts'][number][] = [];
    const unchanged: PolicyKey[] = [];
    for (const a of applied) {
      const key = keyOf(a.document);
      if (head.entries.get(policyDocumentKey(key))?.stored.source === a.source) unchanged.push(key);
      else upserts.push(a);
    }
    return this.carryOut({ operation: 'apply', upserts, removals: [], unchanged, files }, actor, dryRun);
  }

  /**
   * Removes documents of the newest version.
   * @throws MeshError MESH_ERR_NOT_FOUND for a document the newest version does not hold
   */
  remove(keys: readonly PolicyKey[], actor: string, dryRun: boolean): PolicyChangeResult {
    const head = this.current();
    for (const k of keys) {
      if (!head.entries.has(policyDocumentKey(k))) throw new MeshError('MESH_ERR_NOT_FOUND', `policy version ${head.version} has no ${describe(k)} (see "mesh-agent get ${k.kind}")`);
    }
    return this.carryOut({ operation: 'delete', upserts: [], removals: keys, unchanged: [] }, actor, dryRun);
  }

  /**
   * Makes a new version holding exactly the documents of version `to` (0: none), byte for byte.
   * @throws MeshError MESH_ERR_NOT_FOUND when there is no such version
   */
  rollback(to: number, actor: string, dryRun: boolean): PolicyChangeResult {
    const head = this.current();
    if (to > head.version || (to > 0 && !this.deps.store.policy.get(to))) {
      throw new MeshError('MESH_ERR_NOT_FOUND', `there is no policy version ${to} (versions run from 0, the empty policy, to ${head.version})`);
    }
    const target = this.deps.store.policy.documentsAt(to);
    const wanted = new Set(target.map(policyDocumentKey));
    const upserts = target
      .filter((d) => head.entries.get(policyDocumentKey(d))?.stored.sha256 !== d.sha256)
      .map((d) => ({ source: d.source, document: parseStored(d) }));
    const removals = [...head.entries.values()].map((e) => e.stored).filter((d) => !wanted.has(policyDocumentKey(d)));
    return this.carryOut({ operation: 'rollback', rollbackTo: to, upserts, removals, unchanged: [] }, actor, dryRun);
  }

  /** The newest version's documents, filtered. */
  documents(filter: Partial<PolicyKey> = {}): { version: number; digest: string; documents: StoredPolicyDocument[] } {
    const head = this.current();
    const documents = [...head.entries.values()]
      .map((e) => e.stored)
      .filter((d) => (['kind', 'namespace', 'name'] as const).every((k) => filter[k] === undefined || d[k] === filter[k]));
    return { version: head.version, digest: this.deps.store.policy.get(head.version)?.digest ?? policyDigest([]), documents };
  }

  /** The newest version number (0 before the first change). */
  get version(): number {
    return this.current().version;
  }

  /** Validates the plan's resulting policy, then stores it as the next version (unless a dry run or no change). */
  private carryOut(plan: Plan, actor: string, dryRun: boolean): PolicyChangeResult {
    const head = this.current();
    const removed = new Set([...plan.removals, ...plan.upserts.map((u) => keyOf(u.document))].map(policyDocumentKey));
    const kept = [...head.entries.values()].filter((e) => !removed.has(policyDocumentKey(e.stored)));
    const next = [...kept.map((e) => e.document), ...plan.upserts.map((u) => u.document)];
    const compiled = compileLocated(next, plan.files ?? []);
    const changes = [
      ...plan.upserts.map((u) => ({ ...keyOf(u.document), action: (head.entries.has(policyDocumentKey(keyOf(u.document))) ? 'changed' : 'added') as PolicyChangeAction })),
      ...plan.removals.map((k) => ({ kind: k.kind, namespace: k.namespace, name: k.name, action: 'removed' as const })),
    ].sort(comparePolicyDocuments);
    const touched = [
      ...plan.upserts.map((u) => documentReach(u.document, next)),
      ...[...removed].flatMap((k) => {
        const e = head.entries.get(k);
        return e ? [documentReach(e.document, [...head.entries.values()].map((x) => x.document))] : [];
      }),
    ];
    const result = {
      dryRun,
      created: false,
      version: changes.length === 0 ? head.version : head.version + 1,
      previousVersion: head.version,
      changes,
      unchanged: [...plan.unchanged].sort(comparePolicyDocuments),
      agents: this.reachedAgents(touched),
      warnings: compiled.warnings,
    };
    if (dryRun || changes.length === 0) return result;
    const sources = [...kept.map((e) => ({ ...e.stored })), ...plan.upserts.map((u) => ({ ...keyOf(u.document), source: u.source }))];
    const version: NewPolicyVersion = {
      version: head.version + 1,
      createdAt: this.deps.now(),
      actor,
      operation: plan.operation,
      ...(plan.rollbackTo !== undefined ? { rollbackTo: plan.rollbackTo } : {}),
      digest: policyDigest(sources),
      upserts: plan.upserts.map((u) => ({ ...keyOf(u.document), source: u.source })),
      removals: plan.removals.map((k) => ({ kind: k.kind, namespace: k.namespace, name: k.name })),
    };
    if (this.staged) this.staged.version = version;
    else this.store(version, changes.length);
    return { ...result, created: true };
  }

  private store(v: NewPolicyVersion, changes: number): void {
    const row = this.deps.store.transaction(() => this.deps.store.policy.commit(v));
    this.head = undefined;
    this.deps.log.info('policy version stored', { version: row.version, actor: v.actor, operation: row.operation, changes, documents: row.documents });
    this.deps.committed(row);
  }

  private reachedAgents(reaches: readonly DocumentReach[]): ReachedAgent[] {
    const connected = this.deps.connected();
    const refs = (list: readonly string[]): { name: string; namespace: string }[] =>
      list.map((s) => {
        const slash = s.indexOf('/');
        return { namespace: s.slice(0, slash), name: s.slice(slash + 1) };
      });
    return this.deps.store.agents
      .list()
      .filter((a) => {
        // Agents of protocol 1 report no labels: their workloads have the implied `app: <service>` only.
        const workloads = refs(a.services).map((s) => workloadOf(s.name, s.namespace, a.serviceLabels[`${s.namespace}/${s.name}`]));
        return reachesNode(reaches, { workloads, upstreams: refs(a.upstreams) });
      })
      .map((a) => ({ id: a.id, nodeName: a.nodeName, connected: connected.has(a.id) }));
  }

  /** The newest version, its documents parsed (kept until the next commit). */
  private current(): { version: number; entries: Map<string, HeadEntry> } {
    const version = this.deps.store.policy.headVersion();
    if (this.head?.version !== version) {
      const entries = new Map(this.deps.store.policy.documentsAt(version).map((stored) => [policyDocumentKey(stored), { stored, document: parseStored(stored) }] as const));
      this.head = { version, entries };
    }
    return this.head;
  }
}

/** compilePolicy, with its conflicts placed on the line of their field in `files`. @throws MeshError MESH_ERR_POLICY_INVALID */
function compileLocated(documents: readonly PolicyDocument[], files: readonly PolicyFile[]): CompiledPolicy {
  try {
    return compilePolicy(documents);
  } catch (err) {
    if (!isMeshError(err, 'MESH_ERR_POLICY_INVALID') || files.length === 0) throw err;
    throwIfProblems(withFieldLines((err as PolicyError).problems, files), 'policy');
    throw err;
  }
}

/** Parses a stored document; its origin names it, so cross-document messages can point at it. */
function parseStored(d: StoredPolicyDocument): PolicyDocument {
  const docs = parsePolicyText(d.source, `stored version ${d.sinceVersion}`);
  if (docs.length !== 1) throw new MeshError('MESH_ERR_STORE', `stored ${describe(d)} holds ${docs.length} documents instead of one`);
  return docs[0]!;
}
