// Named admin tokens, stored by name with only the SHA-256 of their secret; the name is what policy history records.

import type Database from 'better-sqlite3';
import { tokenSecretMatches } from '../ca';
import { MeshError } from '../errors';

/** A stored admin token (never its secret). */
export interface AdminTokenRow {
  readonly name: string;
  readonly secretHash: string;
  readonly createdAt: number;
  /** The name of the admin token that created it. */
  readonly createdBy: string;
  readonly lastUsedAt: number | null;
}

interface RawRow {
  name: string;
  secret_hash: string;
  created_at: number;
  created_by: string;
  last_used_at: number | null;
}

const toRow = (r: RawRow): AdminTokenRow => ({ name: r.name, secretHash: r.secret_hash, createdAt: r.created_at, createdBy: r.created_by, lastUsedAt: r.last_used_at });

export class AdminTokenRepository {
  constructor(private readonly db: Database.Database) {}

  /** @throws MeshError MESH_ERR_BAD_REQUEST when a token of that name exists */
  insert(row: Omit<AdminTokenRow, 'lastUsedAt'>): void {
    this.db.transaction(() => {
      if (this.get(row.name)) throw new MeshError('MESH_ERR_BAD_REQUEST', `an admin token named "${row.name}" exists already (revoke it first, or pick another name)`);
      this.db.prepare('INSERT INTO admin_tokens (name, secret_hash, created_at, created_by) VALUES (?, ?, ?, ?)').run(row.name, row.secretHash, row.createdAt, row.createdBy);
    }).immediate();
  }

  get(name: string): AdminTokenRow | undefined {
    const r = this.db.prepare('SELECT * FROM admin_tokens WHERE name = ?').get(name) as RawRow | undefined;
    return r && toRow(r);
  }

  list(): AdminTokenRow[] {
    return (this.db.prepare('SELECT * FROM admin_tokens ORDER BY name').all() as RawRow[]).map(toRow);
  }

  /** Removes a token; false when there was none of that name. */
  revoke(name: string): boolean {
    return this.db.prepare('DELETE FROM admin_tokens WHERE name = ?').run(name).changes > 0;
  }

  /** Whether `secret` is the secret of the token `name` (constant time); a match records the use. */
  verify(name: string, secret: string, now: number): boolean {
    const row = this.get(name);
    if (!row || !tokenSecretMatches(secret, row.secretHash)) return false;
    this.db.prepare('UPDATE admin_tokens SET last_used_at = ? WHERE name = ?').run(now, name);
    return true;
  }
}
