// Shared by the control-plane benchmarks: simulated agents (the agent's own ServerConnection with a real enrollment,
// ACKing each policy version on arrival), policy documents to apply, and /proc readings of a process's CPU and RSS.

import { readFileSync } from 'node:fs';
import { enrollWithToken } from '../src/agent/enrollment-client';
import { ServerConnection } from '../src/agent/server-connection';
import { systemClock } from '../src/agent';
import type { JoinToken } from '../src/ca';
import { CHANNEL_PROTOCOL, MESH_VERSION, type PolicyMessage, type PolicyVersionRef } from '../src/protocol';
import { silentLogger, type Logger } from '../src/telemetry';

/** Enrollments in flight at once. */
const ENROLL_CONCURRENCY = 16;

/** One VirtualService document; `timeoutMs` makes a changed version of it. */
export const virtualService = (i: number, timeoutMs: number): string =>
  `apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: { name: svc-${i} }\nspec:\n  hosts: [svc-${i}]\n  http:\n    - timeout: ${timeoutMs}ms\n      route: [{ destination: { host: svc-${i} } }]\n`;

/** The documents of a round: all `documents` in round 0 (sent whole), one changed document after (a delta). */
export const roundDocuments = (round: number, documents: number): string[] =>
  round === 0 ? Array.from({ length: documents }, (_, i) => virtualService(i, 1000)) : [virtualService(round % documents, 1000 + round)];

/** Why the simulated agents' channel attempts failed ("server channel down" warnings, addresses folded), with counts. */
export const channelErrors = new Map<string, number>();

/** The agents' logger: silent, but tallies the reasons of channel failures in channelErrors. */
const tallyLogger: Logger = {
  ...silentLogger,
  warn(msg, fields) {
    const why = `${msg}: ${String(fields?.['error'] ?? '')}`.replace(/\d+\.\d+\.\d+\.\d+:\d+/g, '<address>');
    channelErrors.set(why, (channelErrors.get(why) ?? 0) + 1);
  },
  child: () => tallyLogger,
};

/** One simulated agent: holds what it was pushed, records when each version arrived and on which server, ACKs at once. */
export class SimAgent {
  holding: PolicyVersionRef | undefined;
  /** Version -> performance.now() at arrival. */
  readonly arrived = new Map<number, number>();
  /** Version -> the server address it arrived from. */
  readonly arrivedFrom = new Map<number, string>();
  /** performance.now() of each channel connect. */
  readonly connects: number[] = [];
  connection!: ServerConnection;
}

/**
 * Enrolls `count` agents named sim-<i> with `token(i)` (ENROLL_CONCURRENCY at a time) and starts their channels,
 * adding each to `agents` as soon as it exists (so the caller can close them all on failure). `discover`: the
 * agent's own HA discovery (consul.discoverServers), else the token's server.
 */
export async function startSimAgents(agents: SimAgent[], count: number, token: (i: number) => JoinToken, discover?: () => Promise<string[]>): Promise<void> {
  for (let next = 0; next < count; ) {
    const batch = Array.from({ length: Math.min(ENROLL_CONCURRENCY, count - next) }, (_, k) => next + k);
    next += batch.length;
    await Promise.all(
      batch.map(async (i) => {
        const t = token(i);
        const e = await enrollWithToken(t, `sim-${i}`);
        const a = new SimAgent();
        a.connection = new ServerConnection(
          t.server,
          e.trustDomain,
          () => ({ key: e.nodeKeyPem, cert: e.nodeCert, roots: e.roots }),
          () => ({ nodeName: `sim-${i}`, address: '127.0.0.1', services: [], upstreams: [], version: MESH_VERSION, protocol: CHANNEL_PROTOCOL, ...(a.holding ? { policy: a.holding } : {}), policyOverride: false }),
          systemClock,
          tallyLogger,
          discover,
        );
        a.connection.on('connected', () => a.connects.push(performance.now()));
        a.connection.on('policy', (msg: PolicyMessage) => {
          a.arrived.set(msg.version, performance.now());
          a.arrivedFrom.set(msg.version, a.connection.server);
          a.holding = { version: msg.version, digest: msg.digest };
          a.connection.send({ type: 'policy-ack', version: msg.version, digest: msg.digest, override: false });
        });
        a.connection.start();
        agents.push(a);
      }),
    );
  }
}

/** Applies `docs` as one file through the admin API; the version and how long the answer took. @throws on a non-200 answer */
export async function applyDocuments(adminUrl: string, adminToken: string, docs: readonly string[]): Promise<{ version: number; start: number; answeredMs: number }> {
  const start = performance.now();
  const res = await fetch(`${adminUrl}/v1/policy/apply`, {
    method: 'POST',
    headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
    body: JSON.stringify({ files: [{ name: 'p.yaml', text: docs.join('---\n') }] }),
  });
  const answeredMs = performance.now() - start;
  const body = (await res.json()) as { version: number };
  if (res.status !== 200) throw new Error(`apply answered ${res.status}: ${JSON.stringify(body)}`);
  return { version: body.version, start, answeredMs };
}

/** CPU seconds (user + system) and RSS / peak RSS in MiB of a process, from /proc. */
export function usage(pid: number): { cpu: number; rssMiB: number; peakMiB: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (field: string): number => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? 0);
  return { cpu: (Number(stat[11]) + Number(stat[12])) / 100, rssMiB: kb('VmRSS') / 1024, peakMiB: kb('VmHWM') / 1024 };
}

/** The p-th percentile of an ascending array. */
export const pct = (sorted: readonly number[], p: number): number => sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
export const ms = (n: number): string => `${n.toFixed(0)} ms`;

/** Polls `check` every 5 ms. @throws when it is not true within `timeoutMs` */
export async function waitUntil(what: string, check: () => boolean, timeoutMs: number): Promise<void> {
  for (const deadline = Date.now() + timeoutMs; !check(); await new Promise((r) => setTimeout(r, 5))) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
  }
}
