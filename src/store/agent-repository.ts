// Enrolled agents: who they are, when they were last heard from, which services they run and call, and their policy state.

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
  /** Each service's workload labels, by `<namespace>/<service>`, from the last hello. */
  readonly serviceLabels: Readonly<Record<string, Readonly<Record<string, string>>>>;
  /** `<namespace>/<service>` of each service its apps call, from the last hello. */
  readonly upstreams: readonly string[];
  /** The mesh policy version it last reported holding (hello or ACK); null before any. */
  readonly policyVersion: number | null;
  /** Whether a local policy file is in force there instead of the mesh policy. */
  readonly policyOverride: boolean;
  /** Its last refusal (NACK) of a policy version, cleared when it acknowledges that version or a later one. */
  readonly policyError: { readonly version: number; readonly message: string; readonly at: number } | null;
}

interface RawRow {
  id: string;
  node_name: string;
  address: string;
  enrolled_at: number;
  join_token_id: string | null;
  last_seen_at: number | null;
  services_json: string;
  service_labels_json: string;
  upstreams_json: string;
  policy_version: number | null;
  policy_override: number;
  policy_error: string | null;
  policy_error_version: number | null;
  policy_error_at: number | null;
}

const toRow = (r: RawRow): AgentRow => ({
  id: r.id,
  nodeName: r.node_name,
  address: r.address,
  enrolledAt: r.enrolled_at,
  joinTokenId: r.join_token_id,
  lastSeenAt: r.last_seen_at,
  services: JSON.parse(r.services_json) as string[],
  serviceLabels: JSON.parse(r.service_labels_json) as Record<string, Record<string, string>>,
  upstreams: JSON.parse(r.upstreams_json) as string[],
  policyVersion: r.policy_version,
  policyOverride: r.policy_override === 1,
  policyError: r.policy_error === null ? null : { version: r.policy_error_version!, message: r.policy_error, at: r.policy_error_at! },
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

  /** Adds an agent another replica enrolled (HA mode); an agent already known is left as it is. */
  insertIfMissing(row: Pick<AgentRow, 'id' | 'nodeName' | 'address' | 'enrolledAt' | 'joinTokenId'>): void {
    this.db.transaction(() => {
      this.db
        .prepare('INSERT OR IGNORE INTO agents (id, node_name, address, enrolled_at, join_token_id) VALUES (?, ?, ?, ?, ?)')
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
  touch(id: string, at: number, report?: { address?: string; services?: readonly string[]; serviceLabels?: AgentRow['serviceLabels']; upstreams?: readonly string[] }): void {
    this.db.transaction(() => {
      this.db.prepare('UPDATE agents SET last_seen_at = ? WHERE id = ?').run(at, id);
      if (report?.address !== undefined) this.db.prepare('UPDATE agents SET address = ? WHERE id = ?').run(report.address, id);
      if (report?.services !== undefined) this.db.prepare('UPDATE agents SET services_json = ? WHERE id = ?').run(JSON.stringify(report.services), id);
      if (report?.serviceLabels !== undefined) this.db.prepare('UPDATE agents SET service_labels_json = ? WHERE id = ?').run(JSON.stringify(report.serviceLabels), id);
      if (report?.upstreams !== undefined) this.db.prepare('UPDATE agents SET upstreams_json = ? WHERE id = ?').run(JSON.stringify(report.upstreams), id);
    })();
  }

  /** Records the policy version an agent holds; a refusal of that version or an older one is forgotten. */
  recordPolicy(id: string, version: number | null, override: boolean): void {
    this.db.transaction(() => {
      this.db.prepare('UPDATE agents SET policy_version = ?, policy_override = ? WHERE id = ?').run(version, override ? 1 : 0, id);
      if (version !== null) {
        this.db.prepare('UPDATE agents SET policy_error = NULL, policy_error_version = NULL, policy_error_at = NULL WHERE id = ? AND policy_error_version <= ?').run(id, version);
      }
    })();
  }

  /** Records that an agent refused a policy version, and why. */
  recordPolicyRefusal(id: string, version: number, message: string, at: number): void {
    this.db.transaction(() => {
      this.db.prepare('UPDATE agents SET policy_error = ?, policy_error_version = ?, policy_error_at = ? WHERE id = ?').run(message, version, at, id);
    })();
  }
}
