// The store's schema, as numbered migrations applied in order, each in its own transaction.

/** One schema step. Never edit a released migration; add the next number. */
export interface Migration {
  readonly version: number;
  readonly name: string;
  readonly sql: string;
}

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'ca, join tokens, agents, issued certificates',
    sql: `
      CREATE TABLE ca (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        trust_domain  TEXT    NOT NULL,
        cert_pem      TEXT    NOT NULL,
        key_pem       TEXT    NOT NULL,
        fingerprint   TEXT    NOT NULL UNIQUE,
        active        INTEGER NOT NULL DEFAULT 1,
        created_at    INTEGER NOT NULL
      );
      CREATE TABLE join_tokens (
        id            TEXT    PRIMARY KEY,
        secret_hash   TEXT    NOT NULL,
        description   TEXT    NOT NULL DEFAULT '',
        created_at    INTEGER NOT NULL,
        expires_at    INTEGER,
        max_uses      INTEGER NOT NULL,
        used          INTEGER NOT NULL DEFAULT 0,
        last_used_at  INTEGER
      );
      CREATE TABLE agents (
        id            TEXT    PRIMARY KEY,
        node_name     TEXT    NOT NULL,
        address       TEXT    NOT NULL DEFAULT '',
        enrolled_at   INTEGER NOT NULL,
        join_token_id TEXT,
        last_seen_at  INTEGER,
        services_json TEXT    NOT NULL DEFAULT '[]'
      );
      CREATE TABLE certificates (
        serial        TEXT    PRIMARY KEY,
        spiffe_id     TEXT    NOT NULL,
        kind          TEXT    NOT NULL CHECK (kind IN ('server', 'node', 'workload')),
        agent_id      TEXT    REFERENCES agents(id),
        not_before    INTEGER NOT NULL,
        not_after     INTEGER NOT NULL,
        issued_at     INTEGER NOT NULL
      );
      CREATE INDEX certificates_by_agent ON certificates(agent_id, spiffe_id, not_after);
      CREATE TABLE server_identity (
        id            INTEGER PRIMARY KEY CHECK (id = 1),
        cert_pem      TEXT    NOT NULL,
        key_pem       TEXT    NOT NULL
      );
    `,
  },
];
