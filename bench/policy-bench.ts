// What the single-server policy benchmarks share (policy-push.ts, policy-gossip.ts) on top of sim-agents.ts: the
// policy applied each round through the admin API of a TestMesh server, and the label of a round's row.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ServerHandle } from '../test/helpers/mesh';
import { applyDocuments, roundDocuments } from './sim-agents';

export { ms, pct, usage, waitUntil } from './sim-agents';

/** Documents in the first version (sent whole to every agent); each later round changes one (a delta). */
export const DOCUMENTS = 50;

/** The change column of a round's row. */
export const roundChange = (round: number): string => (round === 0 ? `${DOCUMENTS} docs (whole)` : '1 doc (delta)');

/** Applies a round's documents through the admin API; `start` is performance.now() just before sending. */
export function applyRound(server: ServerHandle, round: number): Promise<{ version: number; start: number; answeredMs: number }> {
  const adminToken = readFileSync(join(server.dataDir, 'admin-token'), 'utf8').trim();
  return applyDocuments(`http://${server.adminAddr}`, adminToken, roundDocuments(round, DOCUMENTS));
}
