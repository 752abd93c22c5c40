// Starts real mesh-agent processes for end-to-end tests and waits on what they print, never on fixed sleeps.

import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** The compiled CLI, the same file bin/mesh-agent loads. */
export const CLI = join(__dirname, '..', '..', 'src', 'cli', 'main.js');
export const BIN = join(__dirname, '..', '..', '..', 'bin', 'mesh-agent');

/** A running child process with its output captured. */
export class Proc {
  stdout = '';
  stderr = '';
  readonly exited: Promise<number | null>;
  private readonly waiters: { re: RegExp; resolve: (m: RegExpExecArray) => void }[] = [];

  constructor(readonly name: string, readonly child: ChildProcess) {
    child.stdout!.on('data', (c: Buffer) => {
      this.stdout += c.toString();
      this.check();
    });
    child.stderr!.on('data', (c: Buffer) => {
      this.stderr += c.toString();
      this.check();
    });
    this.exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve(code ?? (signal ? -1 : null))));
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Resolves with the first match of `re` in stdout+stderr (past or future); rejects on exit or timeout. */
  waitFor(re: RegExp, timeoutMs = 15_000): Promise<RegExpExecArray> {
    const now = re.exec(this.stdout + this.stderr);
    if (now) return Promise.resolve(now);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${this.name}: no ${re} within ${timeoutMs} ms\n--- stdout\n${this.stdout}\n--- stderr\n${this.stderr}`)), timeoutMs);
      const w = {
        re,
        resolve: (m: RegExpExecArray) => {
          clearTimeout(timer);
          resolve(m);
        },
      };
      this.waiters.push(w);
      void this.exited.then((code) => {
        clearTimeout(timer);
        if (this.waiters.includes(w)) reject(new Error(`${this.name} exited (${code}) before printing ${re}\n--- stdout\n${this.stdout}\n--- stderr\n${this.stderr}`));
      });
    });
  }

  /** Sends `signal` and waits for the exit code. */
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
    if (this.running) this.child.kill(signal);
    return this.exited;
  }

  private check(): void {
    const text = this.stdout + this.stderr;
    for (const w of [...this.waiters]) {
      const m = w.re.exec(text);
      if (m) {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        w.resolve(m);
      }
    }
  }
}

/**
 * Runs `mesh-agent <args>`: the compiled CLI under the current node, or `binary` (a single-file build) when given.
 * `wrap` is a command the CLI runs under, such as `['ip', 'netns', 'exec', 'ns1']`; it must exec the CLI in place, so
 * that signals reach the agent itself.
 */
export function meshAgent(name: string, args: string[], env: NodeJS.ProcessEnv = {}, launch: { binary?: string; wrap?: readonly string[] } = {}): Proc {
  const argv = [...(launch.wrap ?? []), ...(launch.binary ? [launch.binary] : [process.execPath, CLI]), ...args];
  return new Proc(name, spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } }));
}

/** Runs a command to completion. */
export async function runMeshAgent(args: string[], env: NodeJS.ProcessEnv = {}, binary?: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const p = meshAgent(`mesh-agent ${args[0]}`, args, env, { binary });
  const code = await p.exited;
  return { code, stdout: p.stdout, stderr: p.stderr };
}

/** Ports freePort() handed out in this process: the kernel may give a just-closed port 0 bind the same port again. */
const handedOut = new Set<number>();

/** A port free right now on 127.0.0.1 (for ports that must be known before a process starts), never one handed out before. */
export async function freePort(): Promise<number> {
  for (;;) {
    const port = await new Promise<number>((resolve, reject) => {
      const s = createServer();
      s.once('error', reject);
      s.listen(0, '127.0.0.1', () => {
        const { port } = s.address() as { port: number };
        s.close(() => resolve(port));
      });
    });
    if (handedOut.has(port)) continue;
    handedOut.add(port);
    return port;
  }
}

/** A temporary directory, removed by the returned cleanup. */
export function tempDir(prefix = 'mesh-test-'): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}
