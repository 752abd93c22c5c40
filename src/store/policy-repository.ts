// Mesh policy versions: each document's text with the range of versions it belongs to, one history row and its changes per version.

import { createHash } from 'node:crypto';
import type Database from 'better-sqlite3';
import { MeshError } from '../errors';

export type PolicyOperation = 'apply' | 'delete' | 'rollback';
export type PolicyChangeAction = 'added' | 'changed' | 'removed';

/** Which document: one per (kind, namespace, name) in a version. */
export interface PolicyKey {
  readonly kind: string;
  readonly namespace: string;
  readonly name: string;
}

/** A document of a version, its text exactly as applied. */
export interface StoredPolicyDocument extends PolicyKey {
  readonly source: string;
  /** SHA-256 hex of `source`. */
  readonly sha256: string;
  /** The version that stored this text. */
  readonly sinceVersion: number;
}

/** What changed for one document in a version. */
export interface PolicyChangeRow extends PolicyKey {
  readonly action: PolicyChangeAction;
}

/** One version: who made it, when, how, and what it changed. */
export interface PolicyVersionRow {
  readonly version: number;
  readonly createdAt: number;
  /** The name of the admin token that made it. */
  readonly actor: string;
  readonly operation: PolicyOperation;
  /** For a rollback: the version whose documents it restored. */
  readonly rollbackTo: number | null;
  /** `sha256:<hex>` of the whole document set (src/protocol/policy-digest.ts). */
  readonly digest: string;
  /** How many documents the version holds. */
  readonly documents: number;
  readonly changes: readonly PolicyChangeRow[];
}

/** A version to store: the next number, and its changes from the head. */
export interface NewPolicyVersion {
  readonly version: number;
  readonly createdAt: number;
  readonly actor: string;
  readonly operation: PolicyOperation;
  readonly rollbackTo?: number;
  readonly digest: string;
  /** Documents added, or whose text changed. */
  readonly upserts: readonly (PolicyKey & { readonly source: string })[];
  readonly removals: readonly PolicyKey[];
}

interface RawVersion {
  version: number;
  created_at: number;
  actor: string;
  operation: PolicyOperation;
  rollback_to: number | null;
  digest: string;
  documents: number;
}

interface RawDocument {
  kind: string;
  namespace: string;
  name: string;
  source: string;
  sha256: string;
  since_version: number;
}

const sha256 = (text: string): string => createHash('sha256').update(text).digest('hex');

export class PolicyRepository {
  constructor(private readonly db: Database.Database) {}

  /** The newest version number; 0 before the first change. */
  headVersion(): number {
    return (this.db.prepare('SELECT COALESCE(MAX(version), 0) AS v FROM policy_versions').get() as { v: number }).v;
  }

  get(version: number): PolicyVersionRow | undefined {
    const r = this.db.prepare('SELECT * FROM policy_versions WHERE version = ?').get(version) as RawVersion | undefined;
    return r && this.withChanges(r);
  }

  /** The documents of `version` (0: none), ordered by kind, namespace, name. */
  documentsAt(version: number): StoredPolicyDocument[] {
    const rows = this.db
      .prepare(
        `SELECT kind, namespace, name, source, sha256, since_version FROM policy_documents
         WHERE since_version <= ? AND (until_version IS NULL OR until_version > ?)
         ORDER BY kind, namespace, name`,
      )
      .all(version, version) as RawDocument[];
    return rows.map((r) => ({ kind: r.kind, namespace: r.namespace, name: r.name, source: r.source, sha256: r.sha256, sinceVersion: r.since_version }));
  }

  /** Versions newest first; with a document filter, only the versions that changed a matching document. */
  history(filter: Partial<PolicyKey> = {}, limit = 100): PolicyVersionRow[] {
    const where: string[] = [];
    const args: (string | number)[] = [];
    for (const k of ['kind', 'namespace', 'name'] as const) {
      if (filter[k] !== undefined) {
        where.push(`${k} = ?`);
        args.push(filter[k]!);
      }
    }
    const sql =
      where.length === 0
        ? 'SELECT * FROM policy_versions ORDER BY version DESC LIMIT ?'
        : `SELECT * FROM policy_versions WHERE version IN (SELECT version FROM policy_changes WHERE ${where.join(' AND ')}) ORDER BY version DESC LIMIT ?`;
    return (this.db.prepare(sql).all(...args, limit) as RawVersion[]).map((r) => this.withChanges(r));
  }

  /**
   * Stores a version and its changes in one transaction: all of it lands, or nothing does.
   * @throws MeshError MESH_ERR_STORE when `v.version` is not the head + 1, or a change does not fit the head
   *   (an upsert identical to the head's text, a removal of a document the head lacks)
   */
  commit(v: NewPolicyVersion): PolicyVersionRow {
    return this.db.transaction(() => {
      const head = this.headVersion();
      if (v.version !== head + 1) throw new MeshError('MESH_ERR_STORE', `policy version ${v.version} cannot follow version ${head}`);
      const live = this.db.prepare('SELECT id, sha256 FROM policy_documents WHERE kind = ? AND namespace = ? AND name = ? AND until_version IS NULL');
      const close = this.db.prepare('UPDATE policy_documents SET until_version = ? WHERE id = ?');
      const insert = this.db.prepare('INSERT INTO policy_documents (kind, namespace, name, source, sha256, since_version) VALUES (?, ?, ?, ?, ?, ?)');
      const change = this.db.prepare('INSERT INTO policy_changes (version, kind, namespace, name, action) VALUES (?, ?, ?, ?, ?)');
      this.db
        .prepare('INSERT INTO policy_versions (version, created_at, actor, operation, rollback_to, digest, documents) VALUES (?, ?, ?, ?, ?, ?, 0)')
        .run(v.version, v.createdAt, v.actor, v.operation, v.rollbackTo ?? null, v.digest);
      const at = (k: PolicyKey): string => `${k.kind} ${k.namespace}/${k.name}`;
      for (const d of v.upserts) {
        const hash = sha256(d.source);
        const old = live.get(d.kind, d.namespace, d.name) as { id: number; sha256: string } | undefined;
        if (old?.sha256 === hash) throw new MeshError('MESH_ERR_STORE', `policy version ${v.version}: ${at(d)} is unchanged, it is not a change`);
        if (old) close.run(v.version, old.id);
        insert.run(d.kind, d.namespace, d.name, d.source, hash, v.version);
        change.run(v.version, d.kind, d.namespace, d.name, old ? 'changed' : 'added');
      }
      for (const k of v.removals) {
        const old = live.get(k.kind, k.namespace, k.name) as { id: number } | undefined;
        if (!old) throw new MeshError('MESH_ERR_STORE', `policy version ${v.version}: ${at(k)} cannot be removed, version ${head} does not hold it`);
        close.run(v.version, old.id);
        change.run(v.version, k.kind, k.namespace, k.name, 'removed');
      }
      const count = (this.db.prepare('SELECT COUNT(*) AS n FROM policy_documents WHERE until_version IS NULL').get() as { n: number }).n;
      this.db.prepare('UPDATE policy_versions SET documents = ? WHERE version = ?').run(count, v.version);
      return this.get(v.version)!;
    })();
  }

  private withChanges(r: RawVersion): PolicyVersionRow {
    const changes = this.db.prepare('SELECT kind, namespace, name, action FROM policy_changes WHERE version = ? ORDER BY kind, namespace, name').all(r.version) as PolicyChangeRow[];
    return { version: r.version, createdAt: r.created_at, actor: r.actor, operation: r.operation, rollbackTo: r.rollback_to, digest: r.digest, documents: r.documents, changes };
  }
}
