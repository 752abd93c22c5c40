// Sending fuzz cases: raw bytes on TCP or after a TLS handshake, many at once, and the process checks after them.

import { readFileSync } from 'node:fs';
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect, type ConnectionOptions } from 'node:tls';

/** What one case got back. `timedOut`: neither an answer that ends nor a close within the time. */
export interface RawOutcome {
  readonly received: Buffer;
  readonly closed: boolean;
  readonly timedOut: boolean;
  readonly handshake: boolean;
}

/**
 * Connects (plain, or TLS with `tls`), writes `pieces` one by one, half-closes when `end`, and collects what comes
 * back until the peer closes or `timeoutMs` passes.
 */
export function rawExchange(port: number, pieces: readonly Buffer[], opts: { tls?: ConnectionOptions; end?: boolean; timeoutMs?: number } = {}): Promise<RawOutcome> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let handshake = false;
    let settled = false;
    const s: Socket = opts.tls ? tlsConnect({ host: '127.0.0.1', port, ...opts.tls }) : netConnect({ host: '127.0.0.1', port });
    const done = (closed: boolean, timedOut: boolean): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      s.destroy();
      resolve({ received: Buffer.concat(chunks), closed, timedOut, handshake });
    };
    const timer = setTimeout(() => done(false, true), opts.timeoutMs ?? 5000);
    s.once(opts.tls ? 'secureConnect' : 'connect', () => {
      handshake = opts.tls !== undefined;
      for (const p of pieces) s.write(p);
      if (opts.end !== false) s.end();
    });
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('error', () => done(true, false));
    s.on('close', () => done(true, false));
  });
}

/** The statuses of the HTTP/1.1 responses at the start of `b` (in order, as far as they can be read). */
export function statusesOf(b: Buffer): number[] {
  return [...b.toString('latin1').matchAll(/(?:^|\r\n)HTTP\/1\.1 (\d{3}) /g)].map((m) => Number(m[1]));
}

/** Runs `fn` over `items`, `concurrency` at a time. */
export async function eachLimited<T, R>(items: readonly T[], concurrency: number, fn: (item: T, i: number) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await fn(items[i]!, i);
      }
    }),
  );
  return out;
}

/** Resident memory of a process in KiB (VmRSS of /proc/<pid>/status). */
export function rssKib(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]);
}

/**
 * How much resident memory a process may grow by over a whole fuzz run (heap growth of a busy Node process included).
 * Node 22 and later size V8's heap more generously: the server, measured on 2026-11-30, grows by ~7 MiB on Node 20 and
 * by ~110-120 MiB on Node 24, where it levels off (the last three test groups added 16 KiB between them). The bound is
 * there to catch growth without end, not V8's sizing, so it follows the runtime.
 */
export const RSS_GROWTH_LIMIT_KIB = (Number(process.versions.node.split('.')[0]) >= 22 ? 192 : 96) * 1024;

/** Polls `check` every 50 ms until it holds; @throws after `timeoutMs`. */
export async function until(check: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  for (const deadline = Date.now() + timeoutMs; !(await check()); await new Promise((r) => setTimeout(r, 50))) {
    if (Date.now() > deadline) throw new Error(`not within ${timeoutMs} ms`);
  }
}
