// Enrolled agents: who they are, when they were last heard from, and which services they run.

import type Database from 'better-sqlite3';

/** A stored agent. */
export interface AgentRow {
  readonly id: string;
  readonly nodeName: string;
  readonly address: string;
  readonly enrolledAt: number;
  readonly joinTokenId: string | null;
  readonly lastSeenAt: number | null;
  readonly services: readonly string[];
}

interface RawRow {
  id: string;
  node_name: string;
  address: string;
  enrolled_at: number;
  join_token_id: string | null;
  last_seen_at: number | null;
  services_json: string;
}

const toRow = (r: RawRow): AgentRow => ({
  id: r.id,
  nodeName: r.node_name,
  address: r.address,
  enrolledAt: r.enrolled_at,
  joinTokenId: r.join_token_id,
  lastSeenAt: r.last_seen_at,
  services: JSON.parse(r.services_json) as string[],
});

export class AgentRepository {
  constructor(private readonly db: Database.Database) {}

  insert(row: Pick<AgentRow, 'id' | 'nodeName' | 'address' | 'enrolledAt' | 'joinTokenId'>): void {
    this.db.transaction(() => {
      this.db
        .prepare('INSERT INTO agents (id, node_name, address, enrolled_at, join_token_id) VALUES (?, ?, ?, ?, ?)')
        .run(row.id, row.nodeName, row.address, row.enrolledAt, row.joinTokenId);
    })();
  }

  get(id: string): AgentRow | undefined {
    const r = this.db.prepare('SELECT * FROM agents WHERE id = ?').get(id) as RawRow | undefined;
    return r && toRow(r);
  }

  list(): AgentRow[] {
    return (this.db.prepare('SELECT * FROM agents ORDER BY enrolled_at').all() as RawRow[]).map(toRow);
  }

  /** Records contact from an agent, with what it reported. */
  touch(id: string, at: number, report?: { address?: string; services?: readonly string[] }): void {
    this.db.transaction(() => {
      this.db.prepare('UPDATE agents SET last_seen_at = ? WHERE id = ?').run(at, id);
      if (report?.address !== undefined) this.db.prepare('UPDATE agents SET address = ? WHERE id = ?').run(report.address, id);
      if (report?.services !== undefined) this.db.prepare('UPDATE agents SET services_json = ? WHERE id = ?').run(JSON.stringify(report.services), id);
    })();
  }
}
