// One long-lived HTTP/2 client session per endpoint, shared by every stream to it: opened on first use, opened again once closed.

import type { ClientHttp2Session, Http2Session, Settings } from 'node:http2';
import { endpointKey, type Endpoint } from '../../registry';
import type { ProxyLimits } from '../proxy-limits';

/** Settings for the sessions the proxy opens and accepts: no server push; room for a busy multiplexed connection. */
export const H2_SETTINGS = { enablePush: false, initialWindowSize: 1 << 20 } as const;

/**
 * Options of a server that takes downstream HTTP/2 connections: H2_SETTINGS plus the agent's limits (streams at once,
 * header list size and count), and sessions closed with a GOAWAY when idle. The idle close also ends a session Node
 * leaves open after it answered a protocol error with GOAWAY (it does not close it on the peer's end of input).
 */
export function downstreamH2Options(limits: ProxyLimits): { settings: Settings; maxHeaderListPairs: number } {
  return { settings: { ...H2_SETTINGS, maxConcurrentStreams: limits.h2MaxConcurrentStreams, maxHeaderListSize: limits.maxHeadBytes }, maxHeaderListPairs: limits.maxHeaders };
}

/** Closes `session` (GOAWAY, streams in flight finish) after `limits.h2IdleTimeoutMs` without frames. */
export function closeWhenIdle(session: Http2Session, limits: ProxyLimits): void {
  session.setTimeout(limits.h2IdleTimeoutMs, () => session.close());
}
/** Connection-level receive window of a session the proxy opens: many streams share it. */
export const H2_CONNECTION_WINDOW = 16 << 20;

/** Opens a session to an endpoint (h2 over mTLS to a remote agent, or h2c to a local app); resolves once it is connected. */
export type SessionDialer = (endpoint: Endpoint) => Promise<ClientHttp2Session>;

export interface H2SessionPoolOptions {
  /** A session with no frames either way for this long is closed gracefully (0: never). @default 300000 */
  readonly idleTimeoutMs?: number;
  /** What a session is opened with (a TLS context); a session made with an older one takes no new streams. */
  readonly generation?: () => unknown;
  /** Told of every session opened (for counters). */
  readonly onOpen?: (endpoint: Endpoint, session: ClientHttp2Session) => void;
}

interface Entry {
  readonly generation: unknown;
  session?: ClientHttp2Session;
  /** While dialing: every stream that comes meanwhile waits on the same dial. */
  pending?: Promise<ClientHttp2Session>;
}

export class H2SessionPool {
  private readonly entries = new Map<string, Entry>();
  private readonly live = new Set<ClientHttp2Session>();
  private readonly idleTimeoutMs: number;
  private closed = false;
  /** Sessions opened, ever. */
  opened = 0;

  constructor(
    private readonly dial: SessionDialer,
    private readonly options: H2SessionPoolOptions = {},
  ) {
    this.idleTimeoutMs = options.idleTimeoutMs ?? 300_000;
  }

  /** Sessions open now. */
  get size(): number {
    return this.live.size;
  }

  /** The endpoint's session when one is open and current: the fast path, no promise. */
  ready(endpoint: Endpoint): ClientHttp2Session | undefined {
    const entry = this.entries.get(endpointKey(endpoint));
    const s = entry?.session;
    if (!s || s.closed || s.destroyed || !this.current(entry)) return undefined;
    return s;
  }

  /**
   * The endpoint's session, dialing it when there is none (or only one that is closing, or made with
   * an older generation, which is then closed gracefully: its streams finish).
   * @throws whatever the dialer rejects with
   */
  session(endpoint: Endpoint): Promise<ClientHttp2Session> {
    const s = this.ready(endpoint);
    if (s) return Promise.resolve(s);
    const key = endpointKey(endpoint);
    const entry = this.entries.get(key);
    if (entry?.pending && this.current(entry)) return entry.pending;
    if (entry?.session) entry.session.close();
    const fresh: Entry = { generation: this.options.generation?.() };
    this.entries.set(key, fresh);
    fresh.pending = this.dial(endpoint).then(
      (session) => {
        fresh.pending = undefined;
        if (this.closed) {
          session.close();
          throw new Error('the session pool is closed');
        }
        this.adopt(key, fresh, session);
        this.options.onOpen?.(endpoint, session);
        return session;
      },
      (err: unknown) => {
        if (this.entries.get(key) === fresh) this.entries.delete(key);
        throw err;
      },
    );
    return fresh.pending;
  }

  /** Closes every session gracefully: streams in flight finish, new ones go nowhere. */
  close(): void {
    this.closed = true;
    for (const s of this.live) s.close();
    this.entries.clear();
  }

  private current(entry: Entry): boolean {
    return !this.options.generation || this.options.generation() === entry.generation;
  }

  private adopt(key: string, entry: Entry, session: ClientHttp2Session): void {
    this.opened++;
    entry.session = session;
    this.live.add(session);
    const forget = (): void => {
      if (this.entries.get(key) === entry) this.entries.delete(key);
    };
    session.on('error', () => {}); // the streams on it see the failure and answer for it
    session.once('goaway', forget); // the peer takes no new streams on it
    session.once('close', () => {
      forget();
      this.live.delete(session);
    });
    if (this.idleTimeoutMs > 0) session.setTimeout(this.idleTimeoutMs, () => session.close());
  }
}
