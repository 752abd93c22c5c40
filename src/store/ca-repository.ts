// CA material rows: the active root (with its key), the server's own TLS identity and its policy signing identity.

import type Database from 'better-sqlite3';

/** A stored CA root. */
export interface CaRow {
  readonly trustDomain: string;
  readonly certPem: string;
  readonly keyPem: string;
  readonly fingerprint: string;
  readonly createdAt: number;
}

/** A certificate and its key, as one of the server's own identities stores them. */
export interface StoredIdentity {
  readonly certPem: string;
  readonly keyPem: string;
}

/** The one-row tables that hold the server's own identities. */
type IdentityTable = 'server_identity' | 'policy_signer';

export class CaRepository {
  constructor(private readonly db: Database.Database) {}

  /** The active root, if the CA was created. */
  active(): CaRow | undefined {
    const r = this.db
      .prepare('SELECT trust_domain, cert_pem, key_pem, fingerprint, created_at FROM ca WHERE active = 1 ORDER BY id DESC LIMIT 1')
      .get() as { trust_domain: string; cert_pem: string; key_pem: string; fingerprint: string; created_at: number } | undefined;
    return r && { trustDomain: r.trust_domain, certPem: r.cert_pem, keyPem: r.key_pem, fingerprint: r.fingerprint, createdAt: r.created_at };
  }

  insert(row: CaRow): void {
    this.db.transaction(() => {
      this.db.prepare('UPDATE ca SET active = 0').run();
      this.db
        .prepare('INSERT INTO ca (trust_domain, cert_pem, key_pem, fingerprint, active, created_at) VALUES (?, ?, ?, ?, 1, ?)')
        .run(row.trustDomain, row.certPem, row.keyPem, row.fingerprint, row.createdAt);
    })();
  }

  /** The server's TLS certificate and key, reused across restarts while valid. */
  serverIdentity(): StoredIdentity | undefined {
    return this.identity('server_identity');
  }

  saveServerIdentity(certPem: string, keyPem: string): void {
    this.saveIdentity('server_identity', certPem, keyPem);
  }

  /** The policy signer's certificate and key (spiffe://<td>/server/policy). */
  policySigner(): StoredIdentity | undefined {
    return this.identity('policy_signer');
  }

  savePolicySigner(certPem: string, keyPem: string): void {
    this.saveIdentity('policy_signer', certPem, keyPem);
  }

  private identity(table: IdentityTable): StoredIdentity | undefined {
    const r = this.db.prepare(`SELECT cert_pem, key_pem FROM ${table} WHERE id = 1`).get() as { cert_pem: string; key_pem: string } | undefined;
    return r && { certPem: r.cert_pem, keyPem: r.key_pem };
  }

  private saveIdentity(table: IdentityTable, certPem: string, keyPem: string): void {
    this.db.transaction(() => {
      this.db.prepare(`INSERT INTO ${table} (id, cert_pem, key_pem) VALUES (1, ?, ?) ON CONFLICT(id) DO UPDATE SET cert_pem = excluded.cert_pem, key_pem = excluded.key_pem`).run(certPem, keyPem);
    })();
  }
}
