// Readers for the value forms Istio resources share: durations, percentages, label maps, string lists, hosts, oneofs.

import { FieldReader, parseDuration, type ProblemList } from '../config';
import { hostProblem } from './hosts';

/** What a duration must look like, for error messages. */
export const DURATION_HINT = 'a duration such as "0.5s", "10s", "1m", "100ms"';

/** Parses an Istio (Go-style) duration such as "0.5s", "1m30s" or "100ms" into milliseconds; undefined when it is not one. */
export function parseIstioDuration(text: string): number | undefined {
  return parseDuration(text, { days: false });
}

/** Reads a duration field into milliseconds; undefined when absent or wrong (a problem is recorded). */
export function readDuration(r: FieldReader, key: string, opts: { required?: boolean; min?: number } = {}): number | undefined {
  const v = r.raw(key);
  if (v === undefined || v === null) {
    if (opts.required) r.fail(key, `is required (${DURATION_HINT})`);
    return undefined;
  }
  const ms = typeof v === 'string' ? parseIstioDuration(v) : undefined;
  const min = opts.min ?? 0;
  if (ms === undefined || ms < min) {
    r.fail(key, `got ${describe(v)}, expected ${DURATION_HINT}${min > 0 ? ` of at least ${min}ms` : ''}`);
    return undefined;
  }
  return ms;
}

/** Reads a number (integer or decimal) in [min, max]; undefined when absent or wrong. */
export function readNumber(r: FieldReader, key: string, min: number, max: number): number | undefined {
  const v = r.raw(key);
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max) {
    r.fail(key, `got ${describe(v)}, expected a number from ${min} to ${max}`);
    return undefined;
  }
  return v;
}

/** Reads an integer in [min, max]; undefined when absent or wrong. */
export function readInteger(r: FieldReader, key: string, min: number, max: number, opts: { required?: boolean } = {}): number | undefined {
  if (!r.has(key)) {
    if (opts.required) r.fail(key, 'is required');
    return undefined;
  }
  const n = r.integer(key, Number.NaN, { min, max });
  return Number.isNaN(n) ? undefined : n;
}

/** Reads Istio's `Percent` ({value: 0..100}) into a percentage; undefined when absent. */
export function readPercent(r: FieldReader, key: string): number | undefined {
  if (!r.has(key)) return undefined;
  const p = r.object(key);
  const value = readNumber(p, 'value', 0, 100);
  if (!p.has('value')) p.fail('value', 'is required (a percentage from 0 to 100)');
  p.done();
  return value;
}

/** Reads a mapping of string to string (labels, header values); scalar values are taken as text. */
export function readStringMap(r: FieldReader, key: string, opts: { keyPattern?: RegExp; keyHint?: string } = {}): Record<string, string> {
  const v = r.raw(key);
  const out: Record<string, string> = {};
  if (v === undefined || v === null) return out;
  if (typeof v !== 'object' || Array.isArray(v)) {
    r.fail(key, `got ${describe(v)}, expected a mapping of name: value`);
    return out;
  }
  for (const [k, item] of Object.entries(v as Record<string, unknown>)) {
    if (opts.keyPattern && !opts.keyPattern.test(k)) r.problems.add([...r.path, key, k], `${JSON.stringify(k)} is not ${opts.keyHint ?? `a name matching ${opts.keyPattern}`}`);
    else if (typeof item === 'string' || typeof item === 'number' || typeof item === 'boolean') out[k] = String(item);
    else r.problems.add([...r.path, key, k], `got ${describe(item)}, expected a text value`);
  }
  return out;
}

/** Reads a list of strings; non-string items are problems. */
export function readStringList(r: FieldReader, key: string, opts: { required?: boolean } = {}): string[] {
  const v = r.raw(key);
  if (v === undefined || v === null) {
    if (opts.required) r.fail(key, 'is required (a list)');
    return [];
  }
  if (!Array.isArray(v)) {
    r.fail(key, `got ${describe(v)}, expected a list`);
    return [];
  }
  const out: string[] = [];
  v.forEach((item, i) => {
    if (typeof item === 'string' || typeof item === 'number') out.push(String(item));
    else r.problems.add([...r.path, key, i], `got ${describe(item)}, expected a text value`);
  });
  if (opts.required && v.length === 0) r.fail(key, 'must list at least one entry');
  return out;
}

/** Reads a host name field, checking its form; returns it lower-cased. */
export function readHost(r: FieldReader, key: string, opts: { required?: boolean } = {}): string {
  const host = r.string(key, '', opts.required ? { required: true, hint: 'a host name such as "reviews"' } : {});
  if (host === '') return host;
  const problem = hostProblem(host.toLowerCase());
  if (problem) r.fail(key, problem);
  return host.toLowerCase();
}

/** Reads a list of host names (at least one when required), reporting bad ones by index. */
export function readHostList(r: FieldReader, key: string, opts: { required?: boolean } = {}): string[] {
  const hosts = readStringList(r, key, opts).map((h) => h.toLowerCase());
  hosts.forEach((h, i) => {
    const problem = hostProblem(h);
    if (problem) r.problems.add([...r.path, key, i], problem);
  });
  return hosts;
}

/**
 * A FieldReader whose readers of nested objects are PolicyReaders too, and whose unknown-field message lists only the
 * fields mesh-agent accepts (not the Istio fields it recognises but rejects as unimplemented).
 */
export class PolicyReader extends FieldReader {
  private readonly asked = new Set<string>();
  private readonly unimplemented = new Set<string>();
  private readonly value: Readonly<Record<string, unknown>>;

  constructor(value: unknown, path: readonly (string | number)[], problems: ProblemList) {
    super(value, path, problems);
    this.value = value !== null && typeof value === 'object' && !Array.isArray(value) ? (value as Record<string, unknown>) : {};
  }

  override raw(key: string): unknown {
    this.asked.add(key);
    return super.raw(key);
  }

  override has(key: string): boolean {
    this.asked.add(key);
    return super.has(key);
  }

  override object(key: string): PolicyReader {
    return new PolicyReader(this.raw(key), [...this.path, key], this.problems);
  }

  override list(key: string): PolicyReader[] {
    const v = this.raw(key);
    if (v === undefined || v === null) return [];
    if (!Array.isArray(v)) {
      this.fail(key, `must be a list, got ${describe(v)}`);
      return [];
    }
    return v.map((item, i) => new PolicyReader(item, [...this.path, key, i], this.problems));
  }

  /** Marks `keys` as recognised-but-rejected, so done() leaves them out of the accepted list. */
  markUnimplemented(keys: readonly string[]): void {
    for (const k of keys) this.unimplemented.add(k);
  }

  override done(): void {
    const accepted = [...this.asked].filter((k) => !this.unimplemented.has(k)).sort();
    for (const k of Object.keys(this.value)) {
      if (!this.asked.has(k)) this.fail(k, `unknown field${accepted.length ? ` (accepted here: ${accepted.join(', ')})` : ''}`);
    }
  }
}

/** Reports Istio fields mesh-agent knows of but does not implement, so they are never silently ignored. */
export function rejectUnimplemented(r: FieldReader, keys: readonly string[]): void {
  if (r instanceof PolicyReader) r.markUnimplemented(keys);
  for (const k of keys) if (r.has(k)) r.fail(k, 'is an Istio field that mesh-agent does not implement yet; remove it');
}

/** Reports when more than one of `keys` is set (an Istio oneof); returns the keys that are set. */
export function oneOf(r: FieldReader, keys: readonly string[]): string[] {
  const set = keys.filter((k) => r.has(k));
  if (set.length > 1) r.fail(set[1]!, `cannot be set together with ${set[0]}; set only one of ${keys.join(', ')}`);
  return set;
}

/** A value as shown in a message. */
export function describe(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v);
  if (Array.isArray(v)) return 'a list';
  if (v === null) return 'null';
  if (typeof v === 'object') return 'a mapping';
  return String(v);
}
