// The Consul STAND-IN's KV store, sessions and KV transactions (/v1/kv, /v1/session, /v1/txn). It is NOT Consul.
//
// Built from Consul's API docs (facts in /work/shared/reference/consul-nomad.md §3 and api-docs/txn.mdx):
// - KV: base64 `Value` (null when empty), Flags, CreateIndex/ModifyIndex/LockIndex, `Session` only while locked;
//   `cas` (0: create only), `acquire`/`release` (mutually exclusive with cas: 400), plain PUT overwrites a locked
//   key and keeps its lock; GET with recurse/keys/separator/raw; 404 with X-Consul-Index for a missing key;
//   blocking queries on a key or a prefix (index = max ModifyIndex under it, deletions included as tombstones).
// - Sessions: create (TTL, LockDelay as duration or number — below 1000 it means seconds — 0..60 s, Behavior
//   release|delete), renew (404 when gone), destroy (idempotent), info, list. Invalidation (TTL expiry or
//   destroy) releases or deletes the session's keys and starts each key's lock delay; acquire returns false
//   while the delay runs.
// - Txn: KV verbs set, cas, lock, unlock, get, check-index, check-session, check-not-exists, delete, delete-cas;
//   all or nothing; 409 with Errors[{OpIndex, What}] on rollback.
// Simplifications, stated: sessions are tied to no checks (NodeChecks is echoed, serfHealth never fails); a
// TTL session is invalidated exactly at TTL (real Consul may wait up to 2×TTL); session reads do not block.
// TEST KNOB: `minSessionTtlMs` lowers Consul's 10 s minimum session TTL so tests can use short TTLs.

import { randomUUID } from 'node:crypto';

/** Thrown for an HTTP error answer (text/plain, as Consul answers errors). */
export class StandinHttpError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

/** What a route answers: a JSON value, raw bytes, or a 404 carrying an index. */
export interface StandinAnswer {
  readonly status: number;
  readonly json?: unknown;
  readonly raw?: Buffer;
  readonly index?: number;
}

interface Entry { Key: string; Value: Buffer; Flags: number; CreateIndex: number; ModifyIndex: number; LockIndex: number; Session?: string }
interface Session { ID: string; Name: string; Node: string; LockDelay: number; Behavior: 'release' | 'delete'; TTL: string; NodeChecks: string[]; ServiceChecks: null; CreateIndex: number; ModifyIndex: number; ttlMs: number; timer?: NodeJS.Timeout }
interface Parked { key: string; prefix: boolean; minIndex: number; wake: () => void }

/** What the KV needs from the stand-in: its global raft-like index. */
export interface StandinKvOptions {
  /** Bumps the global index and returns the new value. */
  readonly nextIndex: () => number;
  readonly currentIndex: () => number;
  readonly nodeName: string;
  /** TEST KNOB: the least session TTL accepted. @default 10000 (Consul's minimum) */
  readonly minSessionTtlMs?: number;
  readonly parseDuration: (s: string) => number;
}

const MAX_VALUE_BYTES = 512 * 1024;
const MAX_LOCK_DELAY_MS = 60_000;

export class StandinKv {
  private readonly entries = new Map<string, Entry>();
  /** Index at which a key was deleted (Consul keeps tombstones so that a prefix's index rises on delete). */
  private readonly tombstones = new Map<string, number>();
  private readonly sessions = new Map<string, Session>();
  /** Key -> ms epoch until which acquire is refused (lock delay after an invalidation). */
  private readonly lockDelays = new Map<string, number>();
  private readonly parked = new Set<Parked>();
  /** Index of the last KV write of any key. */
  private tableIndex = 0;

  constructor(private readonly opts: StandinKvOptions) {}

  /** TEST HOOK: the session expires now, as if its TTL ran out (its holder does not know). */
  expireSession(id: string): void {
    this.invalidate(id);
  }

  /** Session ids alive now. */
  sessionIds(): string[] {
    return [...this.sessions.keys()];
  }

  /** Wakes every parked query (the stand-in is stopping). */
  wakeAll(): void {
    for (const p of [...this.parked]) p.wake();
  }

  /** Clears every session timer. */
  close(): void {
    for (const s of this.sessions.values()) clearTimeout(s.timer);
  }

  // --- KV ---

  /** GET /v1/kv/<key>. Parks when `index` is given and nothing under the key changed past it. */
  async get(key: string, q: URLSearchParams, waitMs: number, alive: () => boolean): Promise<StandinAnswer> {
    const prefix = q.has('recurse') || q.has('keys');
    const minIndex = q.has('index') ? Number(q.get('index')) : 0;
    if (!Number.isInteger(minIndex) || minIndex < 0) throw new StandinHttpError(400, `Invalid index: ${q.get('index')}`);
    if (minIndex > 0 && this.indexOf(key, prefix) <= minIndex) {
      await new Promise<void>((resolve) => {
        const p: Parked = { key, prefix, minIndex, wake: () => { clearTimeout(t); this.parked.delete(p); resolve(); } };
        const t = setTimeout(p.wake, waitMs);
        this.parked.add(p);
      });
      if (!alive()) return { status: -1 };
    }
    const index = Math.max(1, this.indexOf(key, prefix));
    if (q.has('keys')) {
      const sep = q.get('separator') ?? q.get('seperator') ?? '';
      const keys = new Set<string>();
      for (const k of [...this.entries.keys()].sort()) {
        if (!k.startsWith(key)) continue;
        const cut = sep ? k.indexOf(sep, key.length) : -1;
        keys.add(cut >= 0 ? k.slice(0, cut + sep.length) : k);
      }
      if (keys.size === 0 && key !== '') return { status: 404, index };
      return { status: 200, json: [...keys], index };
    }
    const found = prefix ? [...this.entries.values()].filter((e) => e.Key.startsWith(key)).sort((a, b) => a.Key.localeCompare(b.Key)) : this.entries.has(key) ? [this.entries.get(key)!] : [];
    if (found.length === 0) return { status: 404, index };
    if (q.has('raw') && !prefix) return { status: 200, raw: found[0]!.Value, index };
    return { status: 200, json: found.map((e) => entryJson(e)), index };
  }

  /** PUT /v1/kv/<key>: true/false as Consul answers. */
  put(key: string, q: URLSearchParams, body: Buffer): StandinAnswer {
    if (!key) throw new StandinHttpError(400, 'Missing key name');
    if (body.length > MAX_VALUE_BYTES) throw new StandinHttpError(413, `Request body(${body.length} bytes) too large, max size: ${MAX_VALUE_BYTES} bytes.`);
    const given = ['cas', 'acquire', 'release'].filter((f) => q.has(f));
    if (given.length > 1) throw new StandinHttpError(400, `Conflicting flags: ${q.toString()}`);
    const flags = q.has('flags') ? Number(q.get('flags')) : 0;
    if (!Number.isInteger(flags) || flags < 0) throw new StandinHttpError(400, `Invalid flags: ${q.get('flags')}`);
    let ok: boolean;
    if (q.has('acquire')) ok = this.lock(this.entries, key, body, flags, q.get('acquire')!, Date.now(), []);
    else if (q.has('release')) ok = this.unlock(this.entries, key, body, flags, q.get('release')!, []);
    else if (q.has('cas')) ok = this.cas(this.entries, key, body, flags, casIndex(q.get('cas')!), []);
    else ok = this.set(this.entries, key, body, flags, []);
    return { status: 200, json: ok };
  }

  /** DELETE /v1/kv/<key>: true, or the CAS result. */
  delete(key: string, q: URLSearchParams): StandinAnswer {
    if (q.has('recurse') && q.has('cas')) throw new StandinHttpError(400, 'Conflicting flags: cas, recurse');
    if (q.has('cas')) {
      const want = casIndex(q.get('cas')!);
      const e = this.entries.get(key);
      if (want === 0 || !e || e.ModifyIndex !== want) return { status: 200, json: false };
    }
    const keys = q.has('recurse') ? [...this.entries.keys()].filter((k) => k.startsWith(key)) : this.entries.has(key) ? [key] : [];
    if (keys.length > 0) {
      const idx = this.opts.nextIndex();
      for (const k of keys) this.remove(k, idx);
      this.wrote(keys, idx);
    }
    return { status: 200, json: true };
  }

  /** PUT /v1/txn: KV operations, all applied or none. */
  txn(body: unknown): StandinAnswer {
    if (!Array.isArray(body)) throw new StandinHttpError(400, 'Failed to parse body: expected a list of operations');
    if (body.length > 64) throw new StandinHttpError(413, `Transaction contains too many operations (${body.length} > 64)`);
    const work = new Map([...this.entries].map(([k, e]) => [k, { ...e }]));
    const touched: string[] = [];
    const errors: { OpIndex: number; What: string }[] = [];
    const now = Date.now();
    body.forEach((op: unknown, i) => {
      const kv = (op as { KV?: Record<string, unknown> })?.KV;
      if (!kv) throw new StandinHttpError(400, `operation ${i}: only KV operations are supported by the stand-in`);
      const key = typeof kv.Key === 'string' ? kv.Key : '';
      const value = typeof kv.Value === 'string' ? Buffer.from(kv.Value, 'base64') : Buffer.alloc(0);
      const flags = typeof kv.Flags === 'number' ? kv.Flags : 0;
      const index = typeof kv.Index === 'number' ? kv.Index : 0;
      const session = typeof kv.Session === 'string' ? kv.Session : '';
      const fail = (what: string): void => void errors.push({ OpIndex: i, What: what });
      const e = work.get(key);
      switch (kv.Verb) {
        case 'set': this.set(work, key, value, flags, touched); break;
        case 'cas': if (!this.cas(work, key, value, flags, index, touched)) fail(`failed to set key "${key}", index is stale`); break;
        case 'lock': if (!this.lock(work, key, value, flags, session, now, touched)) fail(`failed to lock key "${key}", lock is already held`); break;
        case 'unlock': if (!this.unlock(work, key, value, flags, session, touched)) fail(`failed to unlock key "${key}", lock isn't held, or is held by another session`); break;
        case 'get': if (!e) fail(`key "${key}" doesn't exist`); break;
        case 'check-index': if (!e || e.ModifyIndex !== index) fail(`current modify index ${e?.ModifyIndex ?? 0} for key "${key}" does not match ${index}`); break;
        case 'check-session': if (!e || e.Session !== session) fail(`failed session check for key "${key}", current session ${JSON.stringify(e?.Session ?? '')} != ${JSON.stringify(session)}`); break;
        case 'check-not-exists': if (e) fail(`key "${key}" exists`); break;
        case 'delete': if (e) { work.delete(key); touched.push(key); } break;
        case 'delete-cas': if (!e || e.ModifyIndex !== index) fail(`failed to delete key "${key}", index is stale`); else { work.delete(key); touched.push(key); } break;
        default: throw new StandinHttpError(400, `operation ${i}: unknown KV verb ${JSON.stringify(kv.Verb)}`);
      }
    });
    if (errors.length > 0) return { status: 409, json: { Results: null, Errors: errors } };
    const idx = touched.length > 0 ? this.opts.nextIndex() : 0;
    for (const k of new Set(touched)) {
      const e = work.get(k);
      if (!e) this.remove(k, idx);
      else {
        const old = this.entries.get(k);
        this.entries.set(k, { ...e, CreateIndex: old ? old.CreateIndex : idx, ModifyIndex: idx });
      }
    }
    if (touched.length > 0) this.wrote(touched, idx);
    // Consul returns the entry of every op; values only for reads (get).
    const final = body.map((op: { KV: { Key: string; Verb: string } }) => {
      const e = this.entries.get(op.KV.Key);
      return { KV: e ? entryJson(e, op.KV.Verb === 'get') : null };
    });
    return { status: 200, json: { Results: final, Errors: null } };
  }

  // --- sessions ---

  create(body: unknown): StandinAnswer {
    const b = (body ?? {}) as Record<string, unknown>;
    const f = (name: string): unknown => Object.entries(b).find(([k]) => k.toLowerCase() === name.toLowerCase())?.[1];
    const behavior = (f('Behavior') as string | undefined) ?? 'release';
    if (behavior !== 'release' && behavior !== 'delete') throw new StandinHttpError(400, `Invalid Behavior setting '${behavior}'`);
    const ttl = (f('TTL') as string | undefined) ?? '';
    let ttlMs = 0;
    if (ttl) {
      ttlMs = this.opts.parseDuration(ttl);
      const min = this.opts.minSessionTtlMs ?? 10_000;
      if (Number.isNaN(ttlMs) || ttlMs < min || ttlMs > 86_400_000) throw new StandinHttpError(400, `Invalid Session TTL '${ttl}', must be between [${min / 1000}s=24h0m0s]`);
    }
    const rawDelay = f('LockDelay');
    let delayMs = 15_000;
    if (typeof rawDelay === 'number') delayMs = rawDelay < 1000 ? rawDelay * 1000 : rawDelay / 1e6;
    else if (typeof rawDelay === 'string') delayMs = this.opts.parseDuration(rawDelay);
    if (Number.isNaN(delayMs) || delayMs < 0 || delayMs > MAX_LOCK_DELAY_MS) throw new StandinHttpError(400, `Invalid LockDelay: ${JSON.stringify(rawDelay)}`);
    const node = (f('Node') as string | undefined) || this.opts.nodeName;
    if (node !== this.opts.nodeName) throw new StandinHttpError(500, `Missing node registration`);
    const idx = this.opts.nextIndex();
    const checks = f('NodeChecks') ?? f('Checks');
    const s: Session = {
      ID: randomUUID(), Name: (f('Name') as string | undefined) ?? '', Node: node, LockDelay: delayMs * 1e6, Behavior: behavior, TTL: ttl,
      NodeChecks: Array.isArray(checks) ? checks.map(String) : ['serfHealth'], ServiceChecks: null, CreateIndex: idx, ModifyIndex: idx, ttlMs,
    };
    this.sessions.set(s.ID, s);
    this.arm(s);
    return { status: 200, json: { ID: s.ID } };
  }

  renew(id: string): StandinAnswer {
    const s = this.sessions.get(id);
    if (!s) throw new StandinHttpError(404, `Session id '${id}' not found`);
    this.arm(s);
    return { status: 200, json: [sessionJson(s)], index: this.opts.currentIndex() };
  }

  destroy(id: string): StandinAnswer {
    if (!id) throw new StandinHttpError(400, 'Missing session');
    this.invalidate(id);
    return { status: 200, json: true };
  }

  info(id: string): StandinAnswer {
    const s = this.sessions.get(id);
    return { status: 200, json: s ? [sessionJson(s)] : [], index: this.opts.currentIndex() };
  }

  list(): StandinAnswer {
    return { status: 200, json: [...this.sessions.values()].map(sessionJson), index: this.opts.currentIndex() };
  }

  // --- internals ---

  private arm(s: Session): void {
    clearTimeout(s.timer);
    if (s.ttlMs > 0) s.timer = setTimeout(() => this.invalidate(s.ID), s.ttlMs).unref();
  }

  /** Ends a session: its locks are released (or its keys deleted) and each of those keys' lock delay starts. */
  private invalidate(id: string): void {
    const s = this.sessions.get(id);
    if (!s) return;
    clearTimeout(s.timer);
    this.sessions.delete(id);
    const held = [...this.entries.values()].filter((e) => e.Session === id);
    if (held.length === 0) return;
    const idx = this.opts.nextIndex();
    const until = Date.now() + s.LockDelay / 1e6;
    for (const e of held) {
      if (s.LockDelay > 0) this.lockDelays.set(e.Key, until);
      if (s.Behavior === 'delete') this.remove(e.Key, idx);
      else {
        delete e.Session;
        e.ModifyIndex = idx;
      }
    }
    this.wrote(held.map((e) => e.Key), idx);
  }

  private set(into: Map<string, Entry>, key: string, value: Buffer, flags: number, touched: string[]): boolean {
    const old = into.get(key);
    const idx = into === this.entries ? this.opts.nextIndex() : 0;
    into.set(key, { Key: key, Value: value, Flags: flags, CreateIndex: old?.CreateIndex ?? idx, ModifyIndex: idx, LockIndex: old?.LockIndex ?? 0, ...(old?.Session ? { Session: old.Session } : {}) });
    this.changed(into, key, idx, touched);
    return true;
  }

  private cas(into: Map<string, Entry>, key: string, value: Buffer, flags: number, want: number, touched: string[]): boolean {
    const old = into.get(key);
    if (want === 0 ? old !== undefined : old?.ModifyIndex !== want) return false;
    return this.set(into, key, value, flags, touched);
  }

  private lock(into: Map<string, Entry>, key: string, value: Buffer, flags: number, session: string, now: number, touched: string[]): boolean {
    if (!this.sessions.has(session)) throw new StandinHttpError(500, `invalid session "${session}"`);
    const old = into.get(key);
    if (old?.Session && old.Session !== session) return false;
    if (old?.Session !== session && (this.lockDelays.get(key) ?? 0) > now) return false;
    const idx = into === this.entries ? this.opts.nextIndex() : 0;
    into.set(key, { Key: key, Value: value, Flags: flags, CreateIndex: old?.CreateIndex ?? idx, ModifyIndex: idx, LockIndex: (old?.LockIndex ?? 0) + (old?.Session === session ? 0 : 1), Session: session });
    this.changed(into, key, idx, touched);
    return true;
  }

  private unlock(into: Map<string, Entry>, key: string, value: Buffer, flags: number, session: string, touched: string[]): boolean {
    const old = into.get(key);
    if (!old || old.Session !== session) return false;
    const idx = into === this.entries ? this.opts.nextIndex() : 0;
    into.set(key, { Key: key, Value: value, Flags: flags, CreateIndex: old.CreateIndex, ModifyIndex: idx, LockIndex: old.LockIndex });
    this.changed(into, key, idx, touched);
    return true;
  }

  /** After a direct write (not in a transaction), wakes the queries that read `key`. */
  private changed(into: Map<string, Entry>, key: string, idx: number, touched: string[]): void {
    touched.push(key);
    if (into === this.entries) this.wrote([key], idx);
  }

  private remove(key: string, idx: number): void {
    this.entries.delete(key);
    this.tombstones.set(key, idx);
  }

  private wrote(keys: readonly string[], idx: number): void {
    this.tableIndex = idx;
    for (const k of keys) if (this.entries.has(k)) this.tombstones.delete(k);
    for (const p of [...this.parked]) if (this.indexOf(p.key, p.prefix) > p.minIndex) p.wake();
  }

  /** The index a query of `key` (or of the prefix) reports. */
  private indexOf(key: string, prefix: boolean): number {
    if (!prefix) return this.entries.get(key)?.ModifyIndex ?? this.tombstones.get(key) ?? this.tableIndex;
    let max = 0;
    for (const e of this.entries.values()) if (e.Key.startsWith(key)) max = Math.max(max, e.ModifyIndex);
    for (const [k, i] of this.tombstones) if (k.startsWith(key)) max = Math.max(max, i);
    return max || this.tableIndex;
  }
}

function casIndex(text: string): number {
  const n = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(n)) throw new StandinHttpError(400, `Invalid cas index: ${text}`);
  return n;
}

function entryJson(e: Entry, withValue = true): Record<string, unknown> {
  return {
    CreateIndex: e.CreateIndex, ModifyIndex: e.ModifyIndex, LockIndex: e.LockIndex, Key: e.Key, Flags: e.Flags,
    Value: withValue && e.Value.length > 0 ? e.Value.toString('base64') : null,
    ...(e.Session ? { Session: e.Session } : {}),
  };
}

function sessionJson(s: Session): Record<string, unknown> {
  const { ttlMs: _t, timer: _x, ...out } = s;
  return out;
}
