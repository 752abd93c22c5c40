// Leader election among server replicas: a Consul session (TTL + lock delay, renewed) and a lock key, as Consul's docs describe.

import { EventEmitter } from 'node:events';
import { describeError } from '../../errors';
import type { Logger } from '../../telemetry';
import type { ConsulApi } from './consul-api';

/** Who a replica is, as written into the lock key and its replica record. */
export interface ReplicaInfo {
  readonly name: string;
  /** Its admin API URL (followers redirect writes there). */
  readonly admin: string;
  /** Its agent port, host:port. */
  readonly agent: string;
}

/** Election timing. */
export interface ElectionTiming {
  readonly sessionTtlMs: number;
  readonly lockDelayMs: number;
  /** Blocking-query wait on the lock key. */
  readonly waitMs: number;
}

/**
 * Events: 'leading' (true when this replica became leader, false when it stepped down), 'session' (a new session id).
 * A failed renewal, a renewal Consul answers 404, the lock key held by another session, or stepDown() end
 * leadership at once; the replica then makes a new session and competes again (after Consul's lock delay).
 */
export class LeaderElection extends EventEmitter {
  private leading = false;
  private closed = false;
  private sessionId: string | undefined;
  private renewTimer: NodeJS.Timeout | undefined;
  private wakeLoop: (() => void) | undefined;
  private waiting: AbortController | undefined;
  /** The leader the lock key names now; undefined while nobody holds it. */
  leader: ReplicaInfo | undefined;

  constructor(
    private readonly api: ConsulApi,
    private readonly lockKey: string,
    private readonly me: ReplicaInfo,
    private readonly timing: ElectionTiming,
    private readonly log: Logger,
  ) {
    super();
  }

  get isLeader(): boolean {
    return this.leading;
  }

  /** The session that holds (or would hold) the lock; undefined between a loss and the next session. */
  get session(): string | undefined {
    return this.sessionId;
  }

  start(): void {
    void this.loop();
  }

  /** Ends leadership at once (a write was refused, the session was lost) and drops the session. */
  stepDown(reason: string): void {
    const old = this.sessionId;
    this.sessionId = undefined;
    clearTimeout(this.renewTimer);
    if (this.leading) {
      this.leading = false;
      this.log.warn('stepped down as leader', { reason });
      this.emit('leading', false);
    }
    if (old) void this.api.destroySession(old).catch(() => undefined);
    this.wakeLoop?.();
    this.waiting?.abort();
  }

  /** Releases the lock and destroys the session (a clean shutdown lets another replica lead at once). */
  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.renewTimer);
    this.wakeLoop?.();
    this.waiting?.abort();
    const id = this.sessionId;
    this.sessionId = undefined;
    if (!id) return;
    try {
      if (this.leading) await this.api.put(this.lockKey, JSON.stringify(this.me), { release: id });
      await this.api.destroySession(id);
    } catch (err) {
      this.log.warn('could not release the leader lock at shutdown', { error: describeError(err) });
    }
    this.leading = false;
  }

  private async loop(): Promise<void> {
    let index = 0;
    let backoff = 100;
    while (!this.closed) {
      try {
        if (!this.sessionId) {
          this.sessionId = await this.api.createSession(`mesh-server ${this.me.name}`, this.timing.sessionTtlMs, this.timing.lockDelayMs);
          this.armRenew();
          this.emit('session', this.sessionId);
          index = 0;
        }
        this.waiting = new AbortController();
        const { entry, index: now } = await this.api.get(this.lockKey, index > 0 ? { index, waitMs: this.timing.waitMs } : undefined, this.waiting.signal);
        backoff = 100;
        index = now;
        this.leader = entry?.session ? (JSON.parse(entry.value) as ReplicaInfo) : undefined;
        if (this.closed) return;
        if (entry?.session === this.sessionId) {
          if (!this.leading) this.become();
          continue;
        }
        if (this.leading) this.stepDown(`the lock key is held by ${entry?.session ? `session ${entry.session}` : 'nobody'}`);
        if (entry?.session || !this.sessionId) continue;
        if (await this.api.put(this.lockKey, JSON.stringify(this.me), { acquire: this.sessionId })) {
          this.leader = this.me;
          this.become();
          index = 0;
          continue;
        }
        // Refused while the key is free: Consul's lock delay runs. Try again shortly rather than block.
        await this.pause(Math.max(50, this.timing.lockDelayMs / 10));
        index = 0;
      } catch (err) {
        if (this.closed) return;
        if (this.waiting?.signal.aborted) {
          index = 0;
          continue;
        }
        this.log.warn('leader election: Consul request failed', { error: describeError(err), retryInMs: backoff });
        if (this.leading) this.stepDown(`Consul failed: ${describeError(err)}`);
        await this.pause(backoff);
        backoff = Math.min(backoff * 2, 5000);
        index = 0;
      }
    }
  }

  private become(): void {
    this.leading = true;
    this.log.info('leading', { replica: this.me.name, session: this.sessionId });
    this.emit('leading', true);
  }

  private armRenew(): void {
    clearTimeout(this.renewTimer);
    const every = this.timing.sessionTtlMs / 3;
    this.renewTimer = setTimeout(() => {
      const id = this.sessionId;
      if (!id) return;
      this.api
        .renewSession(id, every)
        .then((alive) => {
          if (id !== this.sessionId) return;
          if (alive) this.armRenew();
          else this.stepDown('Consul no longer has the session (it expired or was destroyed)');
        })
        .catch((err: unknown) => {
          if (id === this.sessionId) this.stepDown(`session renewal failed: ${describeError(err)}`);
        });
    }, every);
    this.renewTimer.unref();
  }

  private pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.wakeLoop = undefined;
        resolve();
      }, ms);
      t.unref();
      this.wakeLoop = () => {
        clearTimeout(t);
        this.wakeLoop = undefined;
        resolve();
      };
    });
  }
}
