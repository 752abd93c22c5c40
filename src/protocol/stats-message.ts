// The `stats` channel message (protocol 3): an agent's request counts and latency histograms since its last one, its version and certificate expiries.

import { MeshError } from '../errors';
import { LATENCY_BUCKETS_MS, MAX_REQUEST_SERIES, type RequestSeries } from '../telemetry/request-stats';

/** Agent to server, every few seconds while there is traffic (and now and then without). */
export interface StatsMessage {
  readonly type: 'stats';
  /** mesh-agent's version. */
  readonly version: string;
  /** Milliseconds the series cover (since the previous stats message, or since the agent started). */
  readonly intervalMs: number;
  readonly series: readonly RequestSeries[];
  /** Records the agent left out because it already held MAX_REQUEST_SERIES series. @default 0 */
  readonly dropped: number;
  /** The agent's certificates in use now (node and workloads) and when each expires (ISO 8601). */
  readonly certificates: readonly { readonly spiffeId: string; readonly notAfter: string }[];
}

const bad = (why: string): MeshError => new MeshError('MESH_ERR_BAD_REQUEST', why);
const NAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isCount = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;

function ref(v: unknown, at: string): { name: string; namespace: string } {
  if (!isObject(v) || typeof v.name !== 'string' || typeof v.namespace !== 'string' || !NAME.test(v.name) || !NAME.test(v.namespace)) {
    throw bad(`${at} must be {name, namespace} with lower-case letters, digits and "-"`);
  }
  return { name: v.name, namespace: v.namespace };
}

function series(v: unknown, at: string): RequestSeries {
  if (!isObject(v)) throw bad(`${at} must be a JSON object`);
  const { code, count, sumMs, buckets } = v;
  if (!Number.isInteger(code) || (code as number) < 0 || (code as number) > 999) throw bad(`${at}.code must be an HTTP status (0 for no answer)`);
  if (!isCount(count) || count === 0) throw bad(`${at}.count must be a positive integer`);
  if (typeof sumMs !== 'number' || !Number.isFinite(sumMs) || sumMs < 0) throw bad(`${at}.sumMs must be a number of at least 0`);
  const n = LATENCY_BUCKETS_MS.length + 1;
  if (!Array.isArray(buckets) || buckets.length !== n || !buckets.every(isCount)) throw bad(`${at}.buckets must be ${n} counts (the fixed latency buckets and one above them)`);
  if ((buckets as number[]).reduce((a, b) => a + b, 0) !== count) throw bad(`${at}.buckets must add up to count (${count})`);
  return { source: ref(v.source, `${at}.source`), destination: ref(v.destination, `${at}.destination`), code: code as number, count, sumMs, buckets: buckets as number[] };
}

function dropped(v: unknown): number {
  if (v === undefined) return 0;
  if (!isCount(v)) throw bad('stats.dropped must be an integer of at least 0');
  return v;
}

/** Checks a stats message (already known to be an object of type "stats"). @throws MeshError MESH_ERR_BAD_REQUEST naming the bad field */
export function parseStatsMessage(o: Record<string, unknown>): StatsMessage {
  if (!Array.isArray(o.series) || o.series.length > MAX_REQUEST_SERIES) throw bad(`stats.series must be a list of at most ${MAX_REQUEST_SERIES}`);
  if (!isCount(o.intervalMs) || o.intervalMs > 3_600_000) throw bad('stats.intervalMs must be an integer from 0 to 3600000');
  const certificates = o.certificates ?? [];
  if (!Array.isArray(certificates) || certificates.length > 1000) throw bad('stats.certificates must be a list of at most 1000');
  return {
    type: 'stats',
    version: typeof o.version === 'string' ? o.version.slice(0, 64) : 'unknown',
    intervalMs: o.intervalMs,
    series: o.series.map((s, i) => series(s, `stats.series[${i}]`)),
    dropped: dropped(o.dropped),
    certificates: certificates.map((c, i) => {
      if (!isObject(c) || typeof c.spiffeId !== 'string' || typeof c.notAfter !== 'string' || Number.isNaN(Date.parse(c.notAfter)) || c.spiffeId.length > 2048) {
        throw bad(`stats.certificates[${i}] must be {spiffeId, notAfter (ISO 8601)}`);
      }
      return { spiffeId: c.spiffeId, notAfter: c.notAfter };
    }),
  };
}
