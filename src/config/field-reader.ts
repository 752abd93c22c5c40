// Validates config data field by field, collecting every problem (with its path and line) before failing once.

import { MeshError } from '../errors';
import type { ConfigSource } from './config-source';
import { parseDuration } from './duration';
import { parseHostPort, type HostPort } from './host-port';

type Path = readonly (string | number)[];

/** One thing wrong with a config: where, and what is accepted. */
export interface ConfigProblem {
  readonly path: string;
  readonly message: string;
  readonly line?: number;
}

function formatPath(path: Path): string {
  return path.reduce<string>((acc, p) => (typeof p === 'number' ? `${acc}[${p}]` : acc ? `${acc}.${p}` : p), '');
}

/** Collects problems from every reader of one config; `throwIfAny` reports them all at once. */
export class ProblemList {
  readonly items: ConfigProblem[] = [];
  /** Where overlaid values (flags, env) came from, by dotted path. */
  readonly origins = new Map<string, string>();

  constructor(readonly source: ConfigSource) {}

  add(path: Path, message: string): void {
    const p = formatPath(path);
    const origin = this.origins.get(p);
    const line = origin ? undefined : this.source.lineOf(path);
    this.items.push({ path: origin ? `${p} (from ${origin})` : p, message, ...(line ? { line } : {}) });
  }

  /** @throws MeshError MESH_ERR_CONFIG listing every problem, when there is at least one. */
  throwIfAny(what: string): void {
    if (this.items.length === 0) return;
    const lines = this.items.map((p) => `  - ${p.path}${p.line ? ` (${this.source.name}:${p.line})` : ''}: ${p.message}`);
    const err = new MeshError('MESH_ERR_CONFIG', `invalid ${what} (${this.items.length} problem${this.items.length > 1 ? 's' : ''}):\n${lines.join('\n')}`);
    (err as MeshError & { problems: ConfigProblem[] }).problems = this.items;
    throw err;
  }
}

/** Sets `value` at dotted `path` inside `data`, creating objects on the way, and records its origin. */
export function overlay(data: Record<string, unknown>, path: string, value: unknown, origin: string, problems: ProblemList): void {
  const keys = path.split('.');
  let obj = data;
  for (const k of keys.slice(0, -1)) {
    const next = obj[k];
    if (typeof next !== 'object' || next === null || Array.isArray(next)) obj[k] = {};
    obj = obj[k] as Record<string, unknown>;
  }
  obj[keys[keys.length - 1]!] = value;
  problems.origins.set(path, origin);
}

/** Reads the fields of one object; each getter records a problem and returns the fallback on bad input. */
export class FieldReader {
  private readonly seen = new Set<string>();
  private readonly obj: Record<string, unknown>;

  constructor(value: unknown, readonly path: Path, readonly problems: ProblemList) {
    if (value !== undefined && value !== null && (typeof value !== 'object' || Array.isArray(value))) {
      problems.add(path, `must be a mapping (key: value), got ${describe(value)}`);
      this.obj = {};
    } else {
      this.obj = (value ?? {}) as Record<string, unknown>;
    }
  }

  /** The raw value of `key`, marking it as known. */
  raw(key: string): unknown {
    this.seen.add(key);
    return this.obj[key];
  }

  /** True when `key` has a value; null counts as absent. Marks the key as known. */
  has(key: string): boolean {
    this.seen.add(key);
    return this.obj[key] !== undefined && this.obj[key] !== null;
  }

  string(key: string, fallback: string, opts: { required?: boolean; pattern?: RegExp; hint?: string } = {}): string {
    const v = this.raw(key);
    if (v === undefined || v === null) {
      if (opts.required) this.problems.add([...this.path, key], `is required${opts.hint ? ` (${opts.hint})` : ''}`);
      return fallback;
    }
    if (typeof v !== 'string' && typeof v !== 'number') return this.bad(key, v, 'a string', fallback);
    const s = String(v);
    if (opts.pattern && !opts.pattern.test(s)) return this.bad(key, v, opts.hint ?? `text matching ${opts.pattern}`, fallback);
    return s;
  }

  integer(key: string, fallback: number, opts: { min?: number; max?: number; required?: boolean } = {}): number {
    const v = this.raw(key);
    if (v === undefined || v === null) {
      if (opts.required) this.problems.add([...this.path, key], 'is required');
      return fallback;
    }
    const n = typeof v === 'string' && /^\d+$/.test(v.trim()) ? Number(v) : v;
    const min = opts.min ?? 0;
    const max = opts.max ?? Number.MAX_SAFE_INTEGER;
    if (typeof n !== 'number' || !Number.isInteger(n) || n < min || n > max) {
      return this.bad(key, v, `an integer from ${min} to ${max}`, fallback);
    }
    return n;
  }

  port(key: string, fallback: number, opts: { required?: boolean; allowZero?: boolean } = {}): number {
    return this.integer(key, fallback, { min: opts.allowZero ? 0 : 1, max: 65535, ...(opts.required ? { required: true } : {}) });
  }

  boolean(key: string, fallback: boolean): boolean {
    const v = this.raw(key);
    if (v === undefined || v === null) return fallback;
    if (typeof v === 'boolean') return v;
    if (v === 'true' || v === 'false') return v === 'true';
    return this.bad(key, v, 'true or false', fallback);
  }

  /** Milliseconds from a duration such as "10s" or "24h". */
  duration(key: string, fallback: number, opts: { min?: number } = {}): number {
    const v = this.raw(key);
    if (v === undefined || v === null) return fallback;
    const ms = typeof v === 'string' ? parseDuration(v) : undefined;
    if (ms === undefined || ms < (opts.min ?? 0)) return this.bad(key, v, `a duration such as "500ms", "10s", "1h"${opts.min ? ` of at least ${opts.min}ms` : ''}`, fallback);
    return ms;
  }

  oneOf<T extends string>(key: string, values: readonly T[], fallback: T): T {
    const v = this.raw(key);
    if (v === undefined || v === null) return fallback;
    if (typeof v === 'string' && (values as readonly string[]).includes(v)) return v as T;
    return this.bad(key, v, `one of ${values.join(', ')}`, fallback);
  }

  hostPort(key: string, fallback: HostPort, defaultHost = '0.0.0.0'): HostPort {
    const v = this.raw(key);
    if (v === undefined || v === null) return fallback;
    const hp = typeof v === 'string' ? parseHostPort(v, defaultHost) : undefined;
    return hp ?? this.bad(key, v, 'an address "host:port" such as "127.0.0.1:15010"', fallback);
  }

  object(key: string): FieldReader {
    return new FieldReader(this.raw(key), [...this.path, key], this.problems);
  }

  /** Readers for each item of a list (an absent key is an empty list). */
  list(key: string): FieldReader[] {
    const v = this.raw(key);
    if (v === undefined || v === null) return [];
    if (!Array.isArray(v)) {
      this.problems.add([...this.path, key], `must be a list, got ${describe(v)}`);
      return [];
    }
    return v.map((item, i) => new FieldReader(item, [...this.path, key, i], this.problems));
  }

  /** Reports every key that no getter asked for: unknown fields are errors, not silently ignored. */
  done(): void {
    for (const k of Object.keys(this.obj)) {
      if (!this.seen.has(k)) {
        const known = [...this.seen].sort().join(', ');
        this.problems.add([...this.path, k], `unknown field${known ? ` (known here: ${known})` : ''}`);
      }
    }
  }

  /** Records a problem for `path` relative to this object. */
  fail(key: string | number, message: string): void {
    this.problems.add([...this.path, key], message);
  }

  private bad<T>(key: string, value: unknown, expected: string, fallback: T): T {
    this.problems.add([...this.path, key], `got ${describe(value)}, expected ${expected}`);
    return fallback;
  }
}

function describe(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v);
  if (Array.isArray(v)) return 'a list';
  if (v === null) return 'null';
  if (typeof v === 'object') return 'a mapping';
  return String(v);
}

/** Deeply freezes a validated config so nothing can change it after start. */
export function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value as Record<string, unknown>)) deepFreeze(v);
  }
  return value;
}
