// Join tokens, stored by id with only the SHA-256 of their secret; consuming one is atomic.

import type Database from 'better-sqlite3';
import { tokenSecretMatches } from '../ca';
import { MeshError } from '../errors';

/** A stored join token (never its secret). */
export interface TokenRow {
  readonly id: string;
  readonly secretHash: string;
  readonly description: string;
  readonly createdAt: number;
  readonly expiresAt: number | null;
  readonly maxUses: number;
  readonly used: number;
  readonly lastUsedAt: number | null;
}

interface RawRow {
  id: string;
  secret_hash: string;
  description: string;
  created_at: number;
  expires_at: number | null;
  max_uses: number;
  used: number;
  last_used_at: number | null;
}

const toRow = (r: RawRow): TokenRow => ({
  id: r.id,
  secretHash: r.secret_hash,
  description: r.description,
  createdAt: r.created_at,
  expiresAt: r.expires_at,
  maxUses: r.max_uses,
  used: r.used,
  lastUsedAt: r.last_used_at,
});

export class TokenRepository {
  constructor(private readonly db: Database.Database) {}

  insert(row: Omit<TokenRow, 'used' | 'lastUsedAt'>): void {
    this.db.transaction(() => {
      this.db
        .prepare('INSERT INTO join_tokens (id, secret_hash, description, created_at, expires_at, max_uses) VALUES (?, ?, ?, ?, ?, ?)')
        .run(row.id, row.secretHash, row.description, row.createdAt, row.expiresAt, row.maxUses);
    })();
  }

  /** Stores a token as another replica (HA mode) recorded it, uses included. */
  upsert(row: TokenRow): void {
    this.db.transaction(() => {
      this.db
        .prepare(
          `INSERT INTO join_tokens (id, secret_hash, description, created_at, expires_at, max_uses, used, last_used_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT(id) DO UPDATE SET used = excluded.used, last_used_at = excluded.last_used_at`,
        )
        .run(row.id, row.secretHash, row.description, row.createdAt, row.expiresAt, row.maxUses, row.used, row.lastUsedAt);
    })();
  }

  get(id: string): TokenRow | undefined {
    const r = this.db.prepare('SELECT * FROM join_tokens WHERE id = ?').get(id) as RawRow | undefined;
    return r && toRow(r);
  }

  list(): TokenRow[] {
    return (this.db.prepare('SELECT * FROM join_tokens ORDER BY created_at').all() as RawRow[]).map(toRow);
  }

  /**
   * Checks a presented token and counts one use, atomically, then runs `then` in the same transaction.
   * @throws MeshError MESH_ERR_TOKEN_UNKNOWN | _TAMPERED | _EXPIRED | _USED, each with its own message
   */
  consume<T>(id: string, secret: string, now: number, then: (row: TokenRow) => T): T {
    return this.db.transaction(() => {
      const row = checkJoinToken(this.get(id), id, secret, now);
      this.db.prepare('UPDATE join_tokens SET used = used + 1, last_used_at = ? WHERE id = ?').run(now, id);
      return then({ ...row, used: row.used + 1, lastUsedAt: now });
    }).immediate();
  }
}

/**
 * Checks a presented token against its stored row (undefined: unknown) and returns the row.
 * @throws MeshError MESH_ERR_TOKEN_UNKNOWN | _TAMPERED | _EXPIRED | _USED, each with its own message
 */
export function checkJoinToken(row: TokenRow | undefined, id: string, secret: string, now: number): TokenRow {
  if (!row) throw new MeshError('MESH_ERR_TOKEN_UNKNOWN', `join token ${id} is unknown to this server (create one with "mesh-agent token create")`);
  if (!tokenSecretMatches(secret, row.secretHash)) throw new MeshError('MESH_ERR_TOKEN_TAMPERED', `join token ${id} was tampered with: its secret does not match`);
  if (row.expiresAt !== null && now >= row.expiresAt) {
    throw new MeshError('MESH_ERR_TOKEN_EXPIRED', `join token ${id} expired at ${new Date(row.expiresAt).toISOString()}`);
  }
  if (row.used >= row.maxUses) {
    throw new MeshError('MESH_ERR_TOKEN_USED', `join token ${id} was already used (${row.used} of ${row.maxUses} use${row.maxUses > 1 ? 's' : ''})`);
  }
  return row;
}
