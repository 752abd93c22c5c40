// The server's SQLite store: opened in WAL mode, migrated on open, every write in a transaction.

import { chmodSync, existsSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import { MeshError } from '../errors';
import { AdminTokenRepository } from './admin-token-repository';
import { AgentRepository } from './agent-repository';
import { CaRepository } from './ca-repository';
import { CertificateRepository } from './certificate-repository';
import { MIGRATIONS, type Migration } from './migrations';
import { PolicyRepository } from './policy-repository';
import { sqliteAddon } from './native-addon';
import { TokenRepository } from './token-repository';

/** The control plane's durable state. One file, owned by one server process. */
export class Store {
  readonly ca: CaRepository;
  readonly tokens: TokenRepository;
  readonly adminTokens: AdminTokenRepository;
  readonly agents: AgentRepository;
  readonly certificates: CertificateRepository;
  readonly policy: PolicyRepository;

  private constructor(private readonly db: Database.Database) {
    this.ca = new CaRepository(db);
    this.tokens = new TokenRepository(db);
    this.adminTokens = new AdminTokenRepository(db);
    this.agents = new AgentRepository(db);
    this.certificates = new CertificateRepository(db);
    this.policy = new PolicyRepository(db);
  }

  /**
   * Opens (creating when absent) the store at `file`, mode 0600, and applies pending migrations.
   * @throws MeshError MESH_ERR_STORE when the file cannot be opened or is newer than this program.
   */
  static open(file: string, migrations: readonly Migration[] = MIGRATIONS): Store {
    const isNew = !existsSync(file);
    let db: Database.Database;
    try {
      const nativeBinding = sqliteAddon(dirname(file)) as string | undefined; // the types know only the path form; an addon object is accepted too
      db = nativeBinding ? new Database(file, { nativeBinding }) : new Database(file);
      if (isNew) chmodSync(file, 0o600);
      db.pragma('journal_mode = WAL');
      db.pragma('synchronous = NORMAL');
      db.pragma('foreign_keys = ON');
      db.pragma('busy_timeout = 5000');
    } catch (err) {
      throw new MeshError('MESH_ERR_STORE', `cannot open store ${file}: ${(err as Error).message}`, { cause: err });
    }
    try {
      migrate(db, migrations);
    } catch (err) {
      db.close();
      throw err instanceof MeshError ? err : new MeshError('MESH_ERR_STORE', `cannot migrate store ${file}: ${(err as Error).message}`, { cause: err });
    }
    return new Store(db);
  }

  /** The schema version in effect. */
  get schemaVersion(): number {
    return (this.db.prepare('SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations').get() as { v: number }).v;
  }

  /** Runs `fn` in one immediate transaction: all of its writes land, or none do. */
  transaction<T>(fn: () => T): T {
    return this.db.transaction(fn).immediate();
  }

  close(): void {
    if (this.db.open) this.db.close();
  }
}

function migrate(db: Database.Database, migrations: readonly Migration[]): void {
  db.exec('CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)');
  const current = (db.prepare('SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations').get() as { v: number }).v;
  const newest = migrations.reduce((m, x) => Math.max(m, x.version), 0);
  if (current > newest) {
    throw new MeshError('MESH_ERR_STORE', `store schema version ${current} is newer than this mesh-agent understands (${newest}); use a newer mesh-agent`);
  }
  const record = db.prepare('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)');
  for (const m of migrations.filter((x) => x.version > current).sort((a, b) => a.version - b.version)) {
    db.transaction(() => {
      db.exec(m.sql);
      record.run(m.version, m.name, Date.now());
    }).immediate();
  }
}
