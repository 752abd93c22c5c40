// Keeps upstream connections open between requests and hands them out again, one request at a time each.

import type { Socket } from 'node:net';
import { endpointKey, type Endpoint } from '../registry';

/** Whoever is using a pooled connection right now receives its bytes and its close. */
export interface UpstreamOwner {
  onUpstreamData(chunk: Buffer): void;
  onUpstreamClose(err?: Error): void;
  onUpstreamDrain(): void;
}

/** A pooled connection: one permanent set of listeners, dispatching to the current owner (no per-request churn). */
export class UpstreamConnection {
  owner: UpstreamOwner | null = null;
  closed = false;
  requests = 0;
  /** When it last went idle (ms). */
  idleSince = 0;

  constructor(
    readonly socket: Socket,
    readonly key: string,
    /** What the connection was opened with (a TLS context); a pool drops idle ones opened with an older one. */
    readonly generation: unknown,
    private readonly pool: ConnectionPool,
  ) {
    socket.on('data', (c: Buffer) => {
      if (this.owner) this.owner.onUpstreamData(c);
      else socket.destroy(); // bytes on an idle connection: the peer is confused; never hand it out again
    });
    socket.on('drain', () => this.owner?.onUpstreamDrain());
    socket.on('error', () => {});
    socket.on('close', () => {
      this.closed = true;
      this.pool.forget(this);
      const o = this.owner;
      this.owner = null;
      o?.onUpstreamClose();
    });
  }
}

/** Opens a connection to an endpoint (mTLS to a remote agent, or plain TCP to a local app). */
export type Dialer = (endpoint: Endpoint) => Promise<Socket>;

export interface ConnectionPoolOptions {
  /** Idle connections kept per endpoint. @default 64 */
  readonly maxIdlePerEndpoint?: number;
  /** Idle connections are closed after this long. @default 60000 */
  readonly idleTimeoutMs?: number;
  /** Requests per connection before it is retired (0 = no limit). @default 0 */
  readonly maxRequestsPerConnection?: number;
}

export class ConnectionPool {
  private readonly idle = new Map<string, UpstreamConnection[]>();
  private readonly all = new Set<UpstreamConnection>();
  /** One sweep for the whole pool instead of a timer per idle period: releases are on the hot path. */
  private sweeper: NodeJS.Timeout | null = null;
  private readonly maxIdle: number;
  private readonly idleTimeoutMs: number;
  private readonly maxRequests: number;
  opened = 0;
  reused = 0;

  constructor(
    private readonly dial: Dialer,
    opts: ConnectionPoolOptions = {},
    /** The current generation (e.g. the TLS context in force); compared by identity. */
    private readonly generation: () => unknown = () => undefined,
  ) {
    this.maxIdle = opts.maxIdlePerEndpoint ?? 64;
    this.idleTimeoutMs = opts.idleTimeoutMs ?? 60_000;
    this.maxRequests = opts.maxRequestsPerConnection ?? 0;
  }

  /** Connections open now (idle or in use). */
  get size(): number {
    return this.all.size;
  }

  /** An idle connection to `endpoint` when there is one (synchronously), else (or when `fresh`) a new one. */
  acquire(endpoint: Endpoint, owner: UpstreamOwner, fresh = false): UpstreamConnection | Promise<UpstreamConnection> {
    const key = endpointKey(endpoint);
    const list = fresh ? undefined : this.idle.get(key);
    const gen = this.generation();
    while (list && list.length > 0) {
      const c = list.pop()!;
      if (c.closed) continue;
      if (c.generation !== gen) {
        c.socket.destroy();
        continue;
      }
      c.owner = owner;
      c.requests++;
      this.reused++;
      return c;
    }
    return this.dial(endpoint).then((socket) => {
      const c = new UpstreamConnection(socket, key, gen, this);
      this.all.add(c);
      this.opened++;
      c.owner = owner;
      c.requests++;
      return c;
    });
  }

  /** Gives a connection back; `reusable` false (or a full pool, or too many requests) closes it. */
  release(c: UpstreamConnection, reusable: boolean): void {
    c.owner = null;
    if (c.closed) return;
    const list = this.idle.get(c.key) ?? [];
    if (!reusable || list.length >= this.maxIdle || (this.maxRequests > 0 && c.requests >= this.maxRequests)) {
      c.socket.destroy();
      return;
    }
    // The last owner may have paused reading for backpressure; an idle connection must notice a close.
    c.socket.resume();
    c.idleSince = Date.now();
    if (list.length === 0) this.idle.set(c.key, list);
    list.push(c);
    if (!this.sweeper) {
      this.sweeper = setInterval(() => this.sweep(), Math.max(250, Math.min(this.idleTimeoutMs / 2, 10_000)));
      this.sweeper.unref();
    }
  }

  /** Closes connections idle for longer than the idle timeout. */
  private sweep(): void {
    const cutoff = Date.now() - this.idleTimeoutMs;
    for (const list of this.idle.values()) {
      // Lists are in release order: the oldest idle connections are at the front.
      while (list.length > 0 && list[0]!.idleSince <= cutoff) list.shift()!.socket.destroy();
    }
  }

  /** Called when a connection closed. */
  forget(c: UpstreamConnection): void {
    this.all.delete(c);
    const list = this.idle.get(c.key);
    if (list) {
      const i = list.indexOf(c);
      if (i >= 0) list.splice(i, 1);
    }
  }

  /** Closes idle connections now; busy ones close when their owner releases them. */
  close(): void {
    if (this.sweeper) clearInterval(this.sweeper);
    this.sweeper = null;
    for (const list of this.idle.values()) for (const c of [...list]) c.socket.destroy();
    this.idle.clear();
  }

  /** Closes everything. */
  destroy(): void {
    this.close();
    for (const c of [...this.all]) c.socket.destroy();
    this.all.clear();
    this.idle.clear();
  }
}
