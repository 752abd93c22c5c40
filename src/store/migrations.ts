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
  {
    version: 2,
    name: 'policy versions, documents, changes and signer; agents\' labels, upstreams and policy state',
    sql: `
      CREATE TABLE policy_versions (
        version       INTEGER PRIMARY KEY,
        created_at    INTEGER NOT NULL,
        actor         TEXT    NOT NULL,
        operation     TEXT    NOT NULL CHECK (operation IN ('apply', 'delete', 'rollback')),
        rollback_to   INTEGER,
        digest        TEXT    NOT NULL,
        documents     INTEGER NOT NULL
      );
      CREATE TABLE policy_documents (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        kind          TEXT    NOT NULL,
        namespace     TEXT    NOT NULL,
        name          TEXT    NOT NULL,
        source        TEXT    NOT NULL,
        sha256        TEXT    NOT NULL,
        since_version INTEGER NOT NULL REFERENCES policy_versions(version),
        until_version INTEGER REFERENCES policy_versions(version),
        CHECK (until_version IS NULL OR until_version > since_version)
      );
      CREATE UNIQUE INDEX policy_documents_head ON policy_documents(kind, namespace, name) WHERE until_version IS NULL;
      CREATE INDEX policy_documents_by_version ON policy_documents(since_version, until_version);
      CREATE TABLE policy_changes (
        version       INTEGER NOT NULL REFERENCES policy_versions(version),
        kind          TEXT    NOT NULL,
        namespace     TEXT    NOT NULL,
        name          TEXT    NOT NULL,
        action        TEXT    NOT NULL CHECK (action IN ('added', 'changed', 'removed')),
        PRIMARY KEY (version, kind, namespace, name)
      );
      CREATE INDEX policy_changes_by_document ON policy_changes(kind, namespace, name, version);
      CREATE TABLE policy_signer (
        id            INTEGER PRIMARY KEY CHECK (id = 1),
        cert_pem      TEXT    NOT NULL,
        key_pem       TEXT    NOT NULL
      );
      ALTER TABLE agents ADD COLUMN service_labels_json TEXT NOT NULL DEFAULT '{}';
      ALTER TABLE agents ADD COLUMN upstreams_json TEXT NOT NULL DEFAULT '[]';
      ALTER TABLE agents ADD COLUMN policy_version INTEGER;
      ALTER TABLE agents ADD COLUMN policy_override INTEGER NOT NULL DEFAULT 0;
      ALTER TABLE agents ADD COLUMN policy_error TEXT;
      ALTER TABLE agents ADD COLUMN policy_error_version INTEGER;
      ALTER TABLE agents ADD COLUMN policy_error_at INTEGER;
    `,
  },
  {
    version: 3,
    name: 'named admin tokens (only the SHA-256 of each secret)',
    sql: `
      CREATE TABLE admin_tokens (
        name          TEXT    PRIMARY KEY,
        secret_hash   TEXT    NOT NULL,
        created_at    INTEGER NOT NULL,
        created_by    TEXT    NOT NULL,
        last_used_at  INTEGER
      );
    `,
  },
];
