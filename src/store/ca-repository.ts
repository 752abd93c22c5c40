// CA material rows: the active root (with its key) and the server's own TLS identity.

import type Database from 'better-sqlite3';

/** A stored CA root. */
export interface CaRow {
  readonly trustDomain: string;
  readonly certPem: string;
  readonly keyPem: string;
  readonly fingerprint: string;
  readonly createdAt: number;
}

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
  serverIdentity(): { certPem: string; keyPem: string } | undefined {
    const r = this.db.prepare('SELECT cert_pem, key_pem FROM server_identity WHERE id = 1').get() as { cert_pem: string; key_pem: string } | undefined;
    return r && { certPem: r.cert_pem, keyPem: r.key_pem };
  }

  saveServerIdentity(certPem: string, keyPem: string): void {
    this.db.transaction(() => {
      this.db.prepare('INSERT INTO server_identity (id, cert_pem, key_pem) VALUES (1, ?, ?) ON CONFLICT(id) DO UPDATE SET cert_pem = excluded.cert_pem, key_pem = excluded.key_pem').run(certPem, keyPem);
    })();
  }
}
