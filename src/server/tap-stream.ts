// GET /v1/tap on the admin API: a live tap streamed as JSON lines (NDJSON) until the client goes away.
//
// Lines: {"type":"started","agents":N,"ready":M} once the agents asked have started it (or after TAP_START_WAIT_MS),
// then {"type":"request","agent":"<id>", ...the access log record} per matching request, and
// {"type":"dropped","count":N} when agents or this stream had to drop records to stay bounded.

import type { IncomingMessage, ServerResponse } from 'node:http';
import { tapFilter } from '../protocol';
import type { TapHub } from './tap-hub';

/** How long the stream waits for the asked agents to start the tap before saying it started. */
export const TAP_START_WAIT_MS = 3000;
/** Lines waiting for a slow client beyond this are dropped (and counted), never buffered without bound. */
const MAX_BUFFERED_BYTES = 1024 * 1024;

/**
 * Streams tap `query` (to, from, path) to `res` until the request closes.
 * @throws MeshError MESH_ERR_BAD_REQUEST (a bad filter), MESH_ERR_TAP_LIMIT (too many taps)
 */
export function serveTap(hub: TapHub, req: IncomingMessage, res: ServerResponse, query: URLSearchParams): void {
  const raw: Record<string, string> = {};
  for (const [k, v] of [['to', 'to'], ['from', 'from'], ['path', 'pathPrefix']] as const) {
    const value = query.get(k);
    if (value !== null && value !== '') raw[v] = value;
  }
  const filter = tapFilter(raw);
  let dropped = 0;
  const line = (obj: unknown): void => {
    if (res.writableLength > MAX_BUFFERED_BYTES) {
      dropped++;
      return;
    }
    if (dropped > 0) {
      res.write(`${JSON.stringify({ type: 'dropped', count: dropped })}\n`);
      dropped = 0;
    }
    res.write(`${JSON.stringify(obj)}\n`);
  };
  const ready = new Set<string>();
  let started = false;
  let asked = 0;
  const announce = (): void => {
    if (started) return;
    started = true;
    clearTimeout(timer);
    line({ type: 'started', agents: asked, ready: ready.size });
  };
  const tap = hub.start(filter, {
    ready: (agentId) => {
      ready.add(agentId);
      if (ready.size >= asked) announce();
    },
    records: (agentId, records, lost) => {
      announce();
      if (lost > 0) line({ type: 'dropped', count: lost });
      for (const r of records) line({ type: 'request', agent: agentId, ...r });
    },
  });
  asked = tap.asked;
  res.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store' });
  const timer = setTimeout(announce, asked === 0 ? 0 : TAP_START_WAIT_MS);
  req.once('close', () => {
    clearTimeout(timer);
    tap.stop();
  });
}
