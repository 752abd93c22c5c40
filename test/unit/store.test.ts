// Unit tests for src/store: file mode and WAL, migrations, refusal of newer schemas, hashed join tokens and atomic token use.

import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { CertificateAuthority, hashTokenSecret, newTokenCredentials, parseJoinToken } from '../../src/ca';
import { isMeshError, type MeshErrorCode } from '../../src/errors';
import { createAdminHandler } from '../../src/server/admin-api';
import { PolicyService } from '../../src/server/policy-service';
import { MIGRATIONS, Store, type Migration } from '../../src/store';
import { silentLogger } from '../../src/telemetry';

const root = mkdtempSync(join(tmpdir(), 'mesh-store-test-'));
const open: Store[] = [];
after(() => {
  for (const s of open) s.close();
  rmSync(root, { recursive: true, force: true });
});

let dirNo = 0;
/** A fresh directory and the path of a store file in it. */
function freshFile(): string {
  const dir = join(root, `s${dirNo++}`);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir);
  return join(dir, 'mesh.db');
}

function openStore(file: string, migrations?: readonly Migration[]): Store {
  const s = migrations ? Store.open(file, migrations) : Store.open(file);
  open.push(s);
  return s;
}

/** Opens a second, independent connection to look at what the store wrote. */
function peek<T>(file: string, fn: (db: Database.Database) => T): T {
  const db = new Database(file, { readonly: true, fileMustExist: true });
  try {
    return fn(db);
  } finally {
    db.close();
  }
}

async function failsWithMesh(p: Promise<unknown> | (() => unknown), code: MeshErrorCode, re?: RegExp): Promise<void> {
  const check = (err: unknown): true => {
    assert.ok(isMeshError(err), `expected a MeshError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    if (re) assert.match(err.message, re);
    return true;
  };
  if (typeof p === 'function') assert.throws(p, check);
  else await assert.rejects(p, check);
}

/** The program's newest schema, and one step past it (a newer program). */
const CURRENT = MIGRATIONS.at(-1)!.version;
const NEXT: Migration = { version: CURRENT + 1, name: 'extra table', sql: 'CREATE TABLE extra (x INTEGER);' };

describe('Store.open', () => {
  test('creates the file with mode 0600 even under a permissive umask', () => {
    const file = freshFile();
    const old = process.umask(0o022);
    try {
      openStore(file);
    } finally {
      process.umask(old);
    }
    assert.equal(statSync(file).mode & 0o777, 0o600);
    // SQLite gives the WAL and shared-memory files the main file's mode; they hold the same secrets.
    for (const f of readdirSync(join(file, '..'))) assert.equal(statSync(join(file, '..', f)).mode & 0o777, 0o600, f);
  });

  test('uses WAL journaling (seen from a second connection, and the -wal file exists)', () => {
    const file = freshFile();
    const s = openStore(file);
    s.tokens.insert({ id: '00000001', secretHash: hashTokenSecret('x'.repeat(32)), description: '', createdAt: 1, expiresAt: null, maxUses: 1 });
    assert.equal(peek(file, (db) => db.pragma('journal_mode', { simple: true })), 'wal');
    assert.ok(existsSync(`${file}-wal`));
  });

  test('records applied migrations in schema_migrations; re-opening applies nothing again', () => {
    const file = freshFile();
    const first = openStore(file);
    assert.equal(first.schemaVersion, MIGRATIONS.at(-1)!.version);
    first.close();
    const before = peek(file, (db) => db.prepare('SELECT version, name, applied_at FROM schema_migrations ORDER BY version').all());
    assert.deepEqual(
      (before as { version: number; name: string }[]).map((r) => [r.version, r.name]),
      MIGRATIONS.map((m) => [m.version, m.name]),
    );
    const second = openStore(file);
    assert.equal(second.schemaVersion, MIGRATIONS.at(-1)!.version);
    second.close();
    const afterReopen = peek(file, (db) => db.prepare('SELECT version, name, applied_at FROM schema_migrations ORDER BY version').all());
    assert.deepEqual(afterReopen, before, 'the ledger (including applied_at) is unchanged');
  });

  test('re-opening with a newer program applies only the new migrations, and keeps the data', () => {
    const file = freshFile();
    const s = openStore(file);
    s.tokens.insert({ id: '0000000a', secretHash: hashTokenSecret('y'.repeat(32)), description: 'keep me', createdAt: 1, expiresAt: null, maxUses: 1 });
    s.close();
    const s2 = openStore(file, [...MIGRATIONS, NEXT]);
    assert.equal(s2.schemaVersion, CURRENT + 1);
    assert.equal(s2.tokens.get('0000000a')?.description, 'keep me');
    s2.close();
    assert.deepEqual(
      peek(file, (db) => db.prepare('SELECT version FROM schema_migrations ORDER BY version').pluck().all()),
      [...MIGRATIONS.map((m) => m.version), CURRENT + 1],
    );
  });

  test('a store with a schema newer than the code is refused with MESH_ERR_STORE, and left as it was', async () => {
    const file = freshFile();
    openStore(file, [...MIGRATIONS, NEXT]).close();
    await failsWithMesh(() => Store.open(file), 'MESH_ERR_STORE', new RegExp(`schema version ${CURRENT + 1} is newer than this mesh-agent understands \\(${CURRENT}\\)`));
    // Nothing was changed or left locked: the newer program still opens it.
    const again = openStore(file, [...MIGRATIONS, NEXT]);
    assert.equal(again.schemaVersion, CURRENT + 1);
  });

  test('a failing migration is rolled back whole and reported as MESH_ERR_STORE', async () => {
    const file = freshFile();
    openStore(file).close();
    const broken: Migration = { version: CURRENT + 1, name: 'broken', sql: 'CREATE TABLE half (x INTEGER); CREATE TABL oops;' };
    await failsWithMesh(() => Store.open(file, [...MIGRATIONS, broken]), 'MESH_ERR_STORE', /cannot migrate store/);
    peek(file, (db) => {
      assert.equal(db.prepare("SELECT COUNT(*) FROM sqlite_master WHERE name = 'half'").pluck().get(), 0);
      assert.equal(db.prepare('SELECT MAX(version) FROM schema_migrations').pluck().get(), CURRENT);
    });
  });

  test('a file that is not a SQLite database is refused with MESH_ERR_STORE naming it', async () => {
    const file = freshFile();
    writeFileSync(file, 'this is not a database, just some text that is long enough to have a header.'.repeat(20));
    await failsWithMesh(() => Store.open(file), 'MESH_ERR_STORE', new RegExp(file.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')));
  });
});

describe('join tokens in the store', () => {
  test('only the hash of a secret is stored: the raw secret is in no column and no byte of the files', async (t) => {
    const dir = join(root, `s${dirNo++}`);
    mkdirSync(dir);
    const file = join(dir, 'mesh.db');
    const store = openStore(file);
    const ca = CertificateAuthority.create('mesh.local');
    // Create the token the way the server does: through the admin API, over a real socket.
    const server: Server = createServer(
      createAdminHandler({
        store,
        ca,
        policy: new PolicyService({ store, connected: () => new Map(), committed: () => {}, now: Date.now, log: silentLogger }),
        adminToken: 'admin-secret',
        advertise: '127.0.0.1:15010',
        listen: '127.0.0.1:15010',
        workloadCertTtlMs: 86_400_000,
        connected: () => new Map(),
        startedAt: Date.now(),
        now: Date.now,
        log: silentLogger,
      }),
    );
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    t.after(() => server.close());
    const body = await postJson((server.address() as AddressInfo).port, '/v1/tokens', { ttl: '10m', uses: 2, description: 'test' }, 'admin-secret');
    const token = parseJoinToken((body as { token: string }).token);
    assert.ok(token.secret.length >= 32);

    const row = store.tokens.get(token.id)!;
    assert.equal(row.secretHash, hashTokenSecret(token.secret));
    assert.equal(row.maxUses, 2);

    // Every column of every table, read through a second connection.
    peek(file, (db) => {
      const tables = db.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").pluck().all() as string[];
      for (const t of tables) {
        for (const r of db.prepare(`SELECT * FROM "${t}"`).all() as Record<string, unknown>[]) {
          for (const [col, v] of Object.entries(r)) assert.ok(!String(v).includes(token.secret), `${t}.${col} holds the raw secret`);
        }
      }
    });
    // Every byte of the database, its WAL and shared memory, before and after a checkpoint.
    const scan = (): void => {
      for (const f of readdirSync(dir)) {
        const bytes = readFileSync(join(dir, f));
        assert.ok(bytes.length > 0 || f.endsWith('-shm') || f.endsWith('-wal'));
        assert.equal(bytes.indexOf(token.secret), -1, `${f} holds the raw secret`);
        assert.equal(bytes.indexOf(Buffer.from(token.secret, 'utf16le')), -1, `${f} holds the raw secret (UTF-16)`);
      }
    };
    scan();
    store.close();
    scan();
    // The hash is there, so the scan above looked at the right bytes.
    assert.notEqual(readFileSync(file).indexOf(hashTokenSecret(token.secret)), -1);
  });
});

describe('TokenRepository.consume', () => {
  const NOW = 1_900_000_000_000;

  function storeWithToken(opts: { maxUses?: number; expiresAt?: number | null } = {}): { store: Store; id: string; secret: string; file: string } {
    const file = freshFile();
    const store = openStore(file);
    const { id, secret } = newTokenCredentials();
    store.tokens.insert({
      id,
      secretHash: hashTokenSecret(secret),
      description: '',
      createdAt: NOW - 1000,
      expiresAt: opts.expiresAt === undefined ? NOW + 60_000 : opts.expiresAt,
      maxUses: opts.maxUses ?? 1,
    });
    return { store, id, secret, file };
  }

  test('a good token is consumed once; the second use is MESH_ERR_TOKEN_USED', async () => {
    const { store, id, secret } = storeWithToken();
    const seen = store.tokens.consume(id, secret, NOW, (row) => row);
    assert.equal(seen.used, 1);
    assert.equal(seen.lastUsedAt, NOW);
    assert.equal(store.tokens.get(id)?.used, 1);
    assert.equal(store.tokens.get(id)?.lastUsedAt, NOW);
    let ran = false;
    await failsWithMesh(() => store.tokens.consume(id, secret, NOW + 1, () => (ran = true)), 'MESH_ERR_TOKEN_USED', /already used \(1 of 1 use\)/);
    assert.equal(ran, false, 'the callback does not run for a refused token');
    assert.equal(store.tokens.get(id)?.used, 1);
  });

  test('a token with several uses can be used that many times', async () => {
    const { store, id, secret } = storeWithToken({ maxUses: 3 });
    for (let i = 1; i <= 3; i++) assert.equal(store.tokens.consume(id, secret, NOW, (r) => r.used), i);
    await failsWithMesh(() => store.tokens.consume(id, secret, NOW, () => 0), 'MESH_ERR_TOKEN_USED', /3 of 3 uses/);
  });

  test('an expired token is MESH_ERR_TOKEN_EXPIRED (at its expiry instant too) and is not counted', async () => {
    const { store, id, secret } = storeWithToken({ expiresAt: NOW });
    await failsWithMesh(() => store.tokens.consume(id, secret, NOW, () => 0), 'MESH_ERR_TOKEN_EXPIRED', new RegExp(`expired at ${new Date(NOW).toISOString()}`));
    await failsWithMesh(() => store.tokens.consume(id, secret, NOW + 1, () => 0), 'MESH_ERR_TOKEN_EXPIRED');
    assert.equal(store.tokens.get(id)?.used, 0);
    // One millisecond before expiry it is still good.
    assert.equal(store.tokens.consume(id, secret, NOW - 1, (r) => r.used), 1);
  });

  test('a token without expiry never expires', () => {
    const { store, id, secret } = storeWithToken({ expiresAt: null });
    assert.equal(store.tokens.consume(id, secret, Number.MAX_SAFE_INTEGER, (r) => r.used), 1);
  });

  test('an unknown id is MESH_ERR_TOKEN_UNKNOWN', async () => {
    const { store, secret } = storeWithToken();
    await failsWithMesh(() => store.tokens.consume('ffffffff', secret, NOW, () => 0), 'MESH_ERR_TOKEN_UNKNOWN', /ffffffff is unknown/);
  });

  test('a wrong secret is MESH_ERR_TOKEN_TAMPERED and does not use the token up', async () => {
    const { store, id, secret } = storeWithToken();
    await failsWithMesh(() => store.tokens.consume(id, `${secret.slice(0, -1)}${secret.endsWith('A') ? 'B' : 'A'}`, NOW, () => 0), 'MESH_ERR_TOKEN_TAMPERED');
    assert.equal(store.tokens.get(id)?.used, 0);
    assert.equal(store.tokens.consume(id, secret, NOW, (r) => r.used), 1);
  });

  test('a failing `then` rolls the use back (used count and last use unchanged), and its writes too', async () => {
    const { store, id, secret, file } = storeWithToken();
    const boom = new Error('issuing failed');
    assert.throws(
      () =>
        store.tokens.consume(id, secret, NOW, () => {
          store.agents.insert({ id: 'agent-1', nodeName: 'n1', address: '10.0.0.1', enrolledAt: NOW, joinTokenId: id });
          throw boom;
        }),
      (err) => err === boom,
    );
    assert.equal(store.tokens.get(id)?.used, 0);
    assert.equal(store.tokens.get(id)?.lastUsedAt, null);
    assert.equal(store.agents.get('agent-1'), undefined, 'writes made inside `then` are rolled back too');
    assert.equal(peek(file, (db) => db.prepare('SELECT used FROM join_tokens WHERE id = ?').pluck().get(id)), 0);
    // The token is still good for a real enrollment.
    assert.equal(store.tokens.consume(id, secret, NOW, (r) => r.used), 1);
  });
});

function postJson(port: number, path: string, body: unknown, bearer: string): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method: 'POST', headers: { authorization: `Bearer ${bearer}`, 'content-type': 'application/json' } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        if (res.statusCode !== 201) reject(new Error(`POST ${path}: ${res.statusCode} ${text}`));
        else resolve(JSON.parse(text));
      });
    });
    req.on('error', reject);
    req.end(JSON.stringify(body));
  });
}
