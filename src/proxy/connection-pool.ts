// Keeps upstream connections open between requests and hands them out again, one request at a time each.

import { MeshError } from '../errors';
import { endpointKey, type Endpoint } from '../registry';
import type { OverflowKind, ResourceLimit } from './circuit-breaker';
import type { ByteStream } from './byte-stream';
import { DirectReads } from './direct-reads';

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
    readonly socket: ByteStream,
    readonly key: string,
    /** What the connection was opened with (a TLS context); a pool drops idle ones opened with an older one. */
    readonly generation: unknown,
    private readonly pool: ConnectionPool,
    reads: DirectReads,
  ) {
    const onData = (c: Buffer): void => {
      if (this.owner) this.owner.onUpstreamData(c);
      else socket.destroy(); // bytes on an idle connection: the peer is confused; never hand it out again
    };
    reads.deliver = onData;
    socket.on('data', onData); // for a dialer that did not use the direct reads
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

/**
 * Opens a connection to an endpoint (mTLS to a remote agent, a stream multiplexed on one, or plain TCP to a local
 * app) within `timeoutMs`. A dialer of sockets should pass `reads.onread` as the connect option `onread` (the pool's
 * hot path reads that way).
 */
export type Dialer = (endpoint: Endpoint, timeoutMs: number, reads: DirectReads) => Promise<ByteStream>;

export interface ConnectionPoolOptions {
  /** Idle connections kept per endpoint. @default 64 */
  readonly maxIdlePerEndpoint?: number;
  /** Idle connections are closed after this long (DestinationRule connectionPool.http.idleTimeout). @default 60000 */
  readonly idleTimeoutMs?: number;
  /** Requests per connection before it is retired, 0 = no limit (connectionPool.http.maxRequestsPerConnection). @default 0 */
  readonly maxRequestsPerConnection?: number;
  /** Time to connect, and the longest a request waits for a connection (connectionPool.tcp.connectTimeout). @default 10000 */
  readonly connectTimeoutMs?: number;
}

/**
 * The circuit breaker limits a pool honours, shared by every pool of one cluster: `connections`
 * counts open connections; a request that finds none idle and no connection slot waits for one,
 * taking a `pendingRequests` slot, or is refused with a PoolOverflow when those are full too.
 * As in Envoy, the first connection to an endpoint is always allowed, so one busy endpoint
 * cannot starve the others.
 */
export interface PoolLimits {
  readonly connections: ResourceLimit;
  readonly pendingRequests: ResourceLimit;
}

/** A request refused because the cluster's connections and pending requests are all taken. */
export class PoolOverflow extends Error {
  readonly overflow: OverflowKind = 'max-pending-requests';
  constructor() {
    super('upstream overflow: max-pending-requests');
  }
}

interface Waiter {
  readonly key: string;
  readonly endpoint: Endpoint;
  readonly owner: UpstreamOwner;
  readonly resolve: (c: UpstreamConnection) => void;
  readonly reject: (err: Error) => void;
  readonly timer: NodeJS.Timeout;
}

export class ConnectionPool {
  private readonly idle = new Map<string, UpstreamConnection[]>();
  private readonly all = new Set<UpstreamConnection>();
  /** Connections open or being opened, per endpoint (for the no-starvation rule). */
  private readonly perEndpoint = new Map<string, number>();
  /** Requests waiting for a connection, oldest first. */
  private readonly waiters: Waiter[] = [];
  private readonly unsubscribe: () => void;
  /** One sweep for the whole pool instead of a timer per idle period: releases are on the hot path. */
  private sweeper: NodeJS.Timeout | null = null;
  private maxIdle = 64;
  private idleTimeoutMs = 60_000;
  private maxRequests = 0;
  private connectTimeoutMs = 10_000;
  opened = 0;
  reused = 0;

  constructor(
    private readonly dial: Dialer,
    opts: ConnectionPoolOptions = {},
    /** The current generation (e.g. the TLS context in force); compared by identity. */
    private readonly generation: () => unknown = () => undefined,
    private readonly limits?: PoolLimits,
  ) {
    this.configure(opts);
    this.unsubscribe = limits ? limits.connections.onRelease(() => this.serveWaiter()) : () => {};
  }

  /** New settings (a changed DestinationRule); connections already open keep going. Unset fields take the defaults. */
  configure(opts: ConnectionPoolOptions): void {
    const idleChanged = (opts.idleTimeoutMs ?? 60_000) !== this.idleTimeoutMs;
    this.maxIdle = opts.maxIdlePerEndpoint ?? 64;
    this.idleTimeoutMs = opts.idleTimeoutMs ?? 60_000;
    this.maxRequests = opts.maxRequestsPerConnection ?? 0;
    this.connectTimeoutMs = opts.connectTimeoutMs ?? 10_000;
    if (idleChanged && this.sweeper) {
      clearInterval(this.sweeper);
      this.sweeper = null;
      this.startSweeper();
    }
  }

  /** Connections open now (idle or in use). */
  get size(): number {
    return this.all.size;
  }

  /** Requests waiting for a connection now. */
  get pending(): number {
    return this.waiters.length;
  }

  /**
   * An idle connection to `endpoint` when there is one (synchronously), else (or when `fresh`) a new one,
   * else — all connection slots taken — a wait for one.
   * @throws (rejects with) PoolOverflow when no connection may be opened and no request may wait.
   */
  acquire(endpoint: Endpoint, owner: UpstreamOwner, fresh = false): UpstreamConnection | Promise<UpstreamConnection> {
    const key = endpointKey(endpoint);
    const list = fresh ? undefined : this.idle.get(key);
    const gen = this.generation();
    while (list && list.length > 0) {
      const c = list.pop()!;
      if (c.closed) continue;
      if (c.generation !== gen || c.socket.reusable === false) {
        c.socket.destroy();
        continue;
      }
      return this.handOut(c, owner);
    }
    const limits = this.limits;
    if (limits && !limits.connections.tryAcquire()) {
      if ((this.perEndpoint.get(key) ?? 0) > 0) return this.wait(key, endpoint, owner);
      limits.connections.forceAcquire();
    }
    return this.open(key, endpoint, owner);
  }

  /** Opens a connection for `owner`; the connection slot is already taken. */
  private open(key: string, endpoint: Endpoint, owner: UpstreamOwner): Promise<UpstreamConnection> {
    this.perEndpoint.set(key, (this.perEndpoint.get(key) ?? 0) + 1);
    const gen = this.generation();
    const reads = new DirectReads();
    return this.dial(endpoint, this.connectTimeoutMs, reads).then(
      (socket) => {
        const c = new UpstreamConnection(socket, key, gen, this, reads);
        this.all.add(c);
        this.opened++;
        c.owner = owner;
        c.requests++;
        return c;
      },
      (err: unknown) => {
        this.closed(key);
        throw err;
      },
    );
  }

  private wait(key: string, endpoint: Endpoint, owner: UpstreamOwner): Promise<UpstreamConnection> {
    if (!this.limits!.pendingRequests.tryAcquire()) return Promise.reject(new PoolOverflow());
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        const i = this.waiters.indexOf(w);
        if (i >= 0) this.waiters.splice(i, 1);
        this.limits!.pendingRequests.release();
        reject(new MeshError('MESH_ERR_UPSTREAM_CONNECT', `no upstream connection became free within ${this.connectTimeoutMs} ms (connectionPool.tcp.maxConnections reached)`));
      }, this.connectTimeoutMs);
      timer.unref();
      const w: Waiter = { key, endpoint, owner, resolve, reject, timer };
      this.waiters.push(w);
    });
  }

  /** Takes `w` off the wait list (its pending slot goes back). */
  private unqueue(i: number): Waiter {
    const w = this.waiters.splice(i, 1)[0]!;
    clearTimeout(w.timer);
    this.limits!.pendingRequests.release();
    return w;
  }

  /** A connection slot came back: the oldest waiter opens a connection with it. */
  private serveWaiter(): void {
    if (this.waiters.length === 0 || !this.limits!.connections.tryAcquire()) return;
    const w = this.unqueue(0);
    this.open(w.key, w.endpoint, w.owner).then(w.resolve, w.reject);
  }

  private handOut(c: UpstreamConnection, owner: UpstreamOwner): UpstreamConnection {
    c.owner = owner;
    c.requests++;
    this.reused++;
    return c;
  }

  /** Gives a connection back; `reusable` false (or a full pool, or too many requests) closes it. A waiter for its endpoint gets it at once. */
  release(c: UpstreamConnection, reusable: boolean): void {
    c.owner = null;
    if (c.closed) return;
    const retire = !reusable || (this.maxRequests > 0 && c.requests >= this.maxRequests);
    // A waiter gets the connection at once, so it is checked here; an idle one is checked by acquire() when taken.
    if (!retire && this.waiters.length > 0 && c.generation === this.generation()) {
      const i = this.waiters.findIndex((w) => w.key === c.key);
      if (i >= 0) {
        const w = this.unqueue(i);
        c.socket.resume();
        w.resolve(this.handOut(c, w.owner));
        return;
      }
    }
    const list = this.idle.get(c.key) ?? [];
    if (retire || list.length >= this.maxIdle) {
      c.socket.destroy();
      return;
    }
    // The last owner may have paused reading for backpressure; an idle connection must notice a close.
    c.socket.resume();
    c.idleSince = Date.now();
    if (list.length === 0) this.idle.set(c.key, list);
    list.push(c);
    this.startSweeper();
  }

  private startSweeper(): void {
    if (this.sweeper) return;
    this.sweeper = setInterval(() => this.sweep(), Math.max(250, Math.min(this.idleTimeoutMs / 2, 10_000)));
    this.sweeper.unref();
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
    if (!this.all.delete(c)) return;
    const list = this.idle.get(c.key);
    if (list) {
      const i = list.indexOf(c);
      if (i >= 0) list.splice(i, 1);
    }
    this.closed(c.key);
  }

  /** A connection (or an attempt at one) to `key` is gone: its slot goes back. */
  private closed(key: string): void {
    const n = (this.perEndpoint.get(key) ?? 1) - 1;
    if (n > 0) this.perEndpoint.set(key, n);
    else this.perEndpoint.delete(key);
    this.limits?.connections.release();
  }

  /** Closes idle connections now; busy ones close when their owner releases them. */
  close(): void {
    this.unsubscribe();
    if (this.sweeper) clearInterval(this.sweeper);
    this.sweeper = null;
    for (const list of this.idle.values()) for (const c of [...list]) c.socket.destroy();
    this.idle.clear();
  }

  /** Closes everything; waiting requests fail. */
  destroy(): void {
    this.close();
    while (this.waiters.length > 0) this.unqueue(0).reject(new MeshError('MESH_ERR_UPSTREAM_CONNECT', 'connection pool closed'));
    for (const c of [...this.all]) c.socket.destroy();
    this.all.clear();
    this.idle.clear();
  }
}
