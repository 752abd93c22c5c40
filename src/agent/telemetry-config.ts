// The agent's `accessLog` and `tracing` blocks: read and checked with the rest of the agent config.

import { resolve } from 'node:path';
import type { FieldReader } from '../config';
import type { AccessLogSettings, TracingSettings } from '../telemetry';

/** A number from 0 to 1 (a sampling fraction). */
function fraction(r: FieldReader, key: string, fallback: number): number {
  const v = r.raw(key);
  if (v === undefined || v === null) return fallback;
  const n = typeof v === 'string' && v.trim() !== '' ? Number(v) : v;
  if (typeof n === 'number' && Number.isFinite(n) && n >= 0 && n <= 1) return n;
  r.fail(key, `got ${JSON.stringify(v)}, expected a number from 0 to 1 (such as 0.1 for one in ten)`);
  return fallback;
}

/** `accessLog: { mode: off | on | sampled, sampleRate, path }`; off when absent. */
export function readAccessLog(r: FieldReader, base: string): AccessLogSettings {
  const mode = r.oneOf('mode', ['off', 'on', 'sampled'] as const, 'off');
  const sampleRate = fraction(r, 'sampleRate', 0.01);
  const path = r.has('path') ? resolve(base, r.string('path', '')) : undefined;
  r.done();
  return { mode, sampleRate, path };
}

/** `tracing: { otlpEndpoint, sampleRate, batchSize, maxQueue, flushInterval }`; no tracing when absent. */
export function readTracing(r: FieldReader): TracingSettings {
  const endpoint = r.string('otlpEndpoint', '', { required: true, pattern: /^https?:\/\/[^\s/]+(\/\S*)?$/, hint: 'the collector\'s OTLP/HTTP traces URL, such as "http://127.0.0.1:4318/v1/traces"' });
  const sampleRate = fraction(r, 'sampleRate', 1);
  const batchSize = r.integer('batchSize', 100, { min: 1, max: 10_000 });
  const maxQueue = r.integer('maxQueue', 2048, { min: 1, max: 1_000_000 });
  const flushIntervalMs = r.duration('flushInterval', 1000, { min: 10 });
  r.done();
  return { endpoint, sampleRate, batchSize, maxQueue, flushIntervalMs };
}
