// The agent's state on disk: enrollment, node and workload keys (0600) and certificates, trust bundle, admin token.

import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { MeshError } from '../errors';

/** What enrollment left behind. */
export interface Enrollment {
  readonly agentId: string;
  readonly server: string;
  readonly trustDomain: string;
  readonly nodeName: string;
  readonly enrolledAt: string;
}

/** Files are replaced atomically (write + rename), so a crash never leaves half a key. */
export class StateDir {
  private locked = false;

  constructor(readonly dir: string) {
    try {
      mkdirSync(join(dir, 'workloads'), { recursive: true, mode: 0o700 });
      chmodSync(dir, 0o700);
    } catch (err) {
      throw new MeshError('MESH_ERR_STATE_DIR', `cannot use state dir ${dir}, which must be a writable directory: ${(err as Error).message}`, { cause: err });
    }
  }

  /**
   * Takes the dir for this process: two agents on one state dir would share one identity and fight over it.
   * A lock left by a process that no longer runs is taken over. @throws MeshError MESH_ERR_STATE_DIR
   */
  lock(): void {
    const file = join(this.dir, 'agent.lock');
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        writeFileSync(file, `${process.pid}\n`, { flag: 'wx', mode: 0o600 });
        this.locked = true;
        return;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw new MeshError('MESH_ERR_STATE_DIR', `cannot lock ${file}: ${(err as Error).message}`, { cause: err });
      }
      const pid = Number(readFileSync(file, 'utf8').trim());
      if (pid > 0 && pid !== process.pid && isAlive(pid)) {
        throw new MeshError('MESH_ERR_STATE_DIR', `state dir ${this.dir} is in use by another mesh-agent (pid ${pid}); give each agent its own --state-dir`);
      }
      rmSync(file, { force: true });
    }
    throw new MeshError('MESH_ERR_STATE_DIR', `cannot lock ${file}`);
  }

  /** Releases the lock. On a dir that turned read-only the file stays; the next start takes it over (this pid is gone). */
  unlock(): void {
    try {
      if (this.locked) rmSync(join(this.dir, 'agent.lock'), { force: true });
    } catch {
      // see above
    }
    this.locked = false;
  }

  enrollment(): Enrollment | undefined {
    const text = this.read('agent.json');
    if (text === undefined) return undefined;
    try {
      const e = JSON.parse(text) as Enrollment;
      if (!e.agentId || !e.server || !e.trustDomain) throw new Error('missing fields');
      return e;
    } catch (err) {
      throw new MeshError('MESH_ERR_STATE_DIR', `${join(this.dir, 'agent.json')} is damaged (${(err as Error).message}); remove the state dir and enroll again with a join token`);
    }
  }

  saveEnrollment(e: Enrollment): void {
    this.write('agent.json', `${JSON.stringify(e, null, 2)}\n`, 0o600);
  }

  read(name: string): string | undefined {
    const file = join(this.dir, name);
    if (!existsSync(file)) return undefined;
    try {
      return readFileSync(file, 'utf8');
    } catch (err) {
      throw new MeshError('MESH_ERR_STATE_DIR', `cannot read ${file}: ${(err as Error).message}`, { cause: err });
    }
  }

  /** Writes `name` atomically with `mode` (0600 for keys and tokens). @throws MeshError MESH_ERR_STATE_DIR */
  write(name: string, content: string, mode = 0o644): void {
    this.writeAll([{ name, content, mode }]);
  }

  /**
   * Writes several files that belong together (a key and its certificate): every one goes to a temporary file first,
   * and only when all are written are they renamed into place, so a full disk leaves the old set whole.
   * @throws MeshError MESH_ERR_STATE_DIR
   */
  writeAll(files: readonly { name: string; content: string; mode: number }[]): void {
    const staged = files.map((f) => ({ ...f, file: join(this.dir, f.name), tmp: `${join(this.dir, f.name)}.${randomBytes(4).toString('hex')}.tmp` }));
    let current = staged[0]!;
    try {
      for (const f of staged) {
        current = f;
        writeFileSync(f.tmp, f.content, { mode: f.mode });
        chmodSync(f.tmp, f.mode);
      }
      for (const f of staged) {
        current = f;
        renameSync(f.tmp, f.file);
      }
    } catch (err) {
      // A full disk can leave parts of temporary files behind; a read-only one refuses this too (the error says why).
      for (const f of staged) {
        try {
          rmSync(f.tmp, { force: true });
        } catch {
          // see above
        }
      }
      throw new MeshError('MESH_ERR_STATE_DIR', `cannot write ${current.file}: ${(err as Error).message}`, { cause: err });
    }
  }

  /** The agent's admin token, created 0600 on first use. */
  adminToken(): string {
    const saved = this.read('admin-token')?.trim();
    if (saved) return saved;
    const token = randomBytes(24).toString('base64url');
    this.write('admin-token', `${token}\n`, 0o600);
    return token;
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
