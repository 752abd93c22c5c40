// A ledger of every certificate the CA issued: serial, identity, kind and validity.

import type Database from 'better-sqlite3';

/** One issued certificate. */
export interface CertificateRow {
  readonly serial: string;
  readonly spiffeId: string;
  readonly kind: 'server' | 'node' | 'workload';
  readonly agentId: string | null;
  readonly notBefore: number;
  readonly notAfter: number;
  readonly issuedAt: number;
}

interface RawRow {
  serial: string;
  spiffe_id: string;
  kind: CertificateRow['kind'];
  agent_id: string | null;
  not_before: number;
  not_after: number;
  issued_at: number;
}

const toRow = (r: RawRow): CertificateRow => ({
  serial: r.serial,
  spiffeId: r.spiffe_id,
  kind: r.kind,
  agentId: r.agent_id,
  notBefore: r.not_before,
  notAfter: r.not_after,
  issuedAt: r.issued_at,
});

export class CertificateRepository {
  constructor(private readonly db: Database.Database) {}

  insert(row: CertificateRow): void {
    this.db.transaction(() => {
      this.db
        .prepare('INSERT INTO certificates (serial, spiffe_id, kind, agent_id, not_before, not_after, issued_at) VALUES (?, ?, ?, ?, ?, ?, ?)')
        .run(row.serial, row.spiffeId, row.kind, row.agentId, row.notBefore, row.notAfter, row.issuedAt);
    })();
  }

  get(serial: string): CertificateRow | undefined {
    const r = this.db.prepare('SELECT * FROM certificates WHERE serial = ?').get(serial) as RawRow | undefined;
    return r && toRow(r);
  }

  /** The newest certificate per identity held by an agent. */
  latestForAgent(agentId: string): CertificateRow[] {
    return (
      this.db
        .prepare(
          `SELECT c.* FROM certificates c
           JOIN (SELECT spiffe_id, MAX(issued_at) AS at FROM certificates WHERE agent_id = ? GROUP BY spiffe_id) l
             ON c.spiffe_id = l.spiffe_id AND c.issued_at = l.at
           WHERE c.agent_id = ? ORDER BY c.spiffe_id`,
        )
        .all(agentId, agentId) as RawRow[]
    ).map(toRow);
  }
}
