// What the policy benchmarks share (policy-push.ts, policy-gossip.ts): the policy applied each round, the apply call
// through the admin API, percentiles, a wait-for-condition loop and a process's CPU time and memory from /proc.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ServerHandle } from '../test/helpers/mesh';

/** Documents in the first version (sent whole to every agent); each later round changes one (a delta). */
export const DOCUMENTS = 50;

const vs = (i: number, timeoutMs: number): string =>
  `apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { name: svc-${i} }\nspec:\n  hosts: [svc-${i}]\n  http:\n    - timeout: ${timeoutMs}ms\n      route: [{ destination: { host: svc-${i} } }]\n`;

/** Round 0: DOCUMENTS VirtualServices; round r > 0: one of them with a new timeout. */
export function roundDocuments(round: number): string[] {
  return round === 0 ? Array.from({ length: DOCUMENTS }, (_, i) => vs(i, 1000)) : [vs(round % DOCUMENTS, 1000 + round)];
}

/** The change column of a round's row. */
export const roundChange = (round: number): string => (round === 0 ? `${DOCUMENTS} docs (whole)` : '1 doc (delta)');

/** Applies a round's documents through the admin API; `start` is performance.now() just before sending. */
export async function applyRound(server: ServerHandle, round: number): Promise<{ version: number; start: number; answeredMs: number }> {
  const adminToken = readFileSync(join(server.dataDir, 'admin-token'), 'utf8').trim();
  const start = performance.now();
  const res = await fetch(`http://${server.adminAddr}/v1/policy/apply`, {
    method: 'POST',
    headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
    body: JSON.stringify({ files: [{ name: 'p.yaml', text: roundDocuments(round).join('---\n') }] }),
  });
  const answeredMs = performance.now() - start;
  const { version } = (await res.json()) as { version: number };
  if (res.status !== 200) throw new Error(`apply answered ${res.status}`);
  return { version, start, answeredMs };
}

/** CPU seconds (user + system) and RSS / peak RSS in MiB of a process, from /proc. */
export function usage(pid: number): { cpu: number; rssMiB: number; peakMiB: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (field: string): number => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? 0);
  return { cpu: (Number(stat[11]) + Number(stat[12])) / 100, rssMiB: kb('VmRSS') / 1024, peakMiB: kb('VmHWM') / 1024 };
}

/** The p-th percentile of an ascending list (nearest rank). */
export const pct = (sorted: readonly number[], p: number): number => sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
export const ms = (n: number): string => `${n.toFixed(0)} ms`;

/** Polls `check` every 5 ms. @throws when it is not true within `timeoutMs` */
export async function waitUntil(what: string, check: () => boolean, timeoutMs: number): Promise<void> {
  for (const deadline = Date.now() + timeoutMs; !check(); await new Promise((r) => setTimeout(r, 5))) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
  }
}
