// One downstream HTTP/1.1 connection: requests in order, each routed and forwarded over a pooled upstream connection.

import type { Socket } from 'node:net';
import { describeError } from '../../errors';
import type { Endpoint } from '../../registry';
import type { ConnectionPool, UpstreamConnection, UpstreamOwner } from '../connection-pool';
import { errorResponse, HttpFramingError } from './http-framing-error';
import { BodyFramer } from './body-framer';
import { buildHead, parseHead, simpleResponse, type HeadEdits, type HttpHead } from './http1-head';

/** How an exchange ended, for load balancing, outlier detection and stats. */
export interface ExchangeOutcome {
  /** Response status sent downstream (0 when none was). */
  status: number;
  /** The upstream could not be reached (no response head). */
  connectFailure: boolean;
  /** The upstream closed before a complete response. */
  reset: boolean;
}

/** What went wrong in a session: bad bytes from downstream, trouble upstream, or a bug. */
export type SessionErrorKind = 'malformed' | 'upstream' | 'internal';

/** What to do with one request. */
export type Decision =
  | { readonly kind: 'respond'; readonly response: Buffer }
  | {
      readonly kind: 'forward';
      readonly endpoint: Endpoint;
      readonly pool: ConnectionPool;
      readonly edits?: HeadEdits;
      /** Called once when the exchange ends. */
      readonly done?: (outcome: ExchangeOutcome) => void;
    };

/** Decides per request; the seam where routing, balancing and the rest of the filter chain plug in. */
export type HttpRouter = (head: HttpHead) => Decision;

const enum Req { Head, Body, Discard }
const enum Resp { Idle, Connecting, Head, Body }

const UPSTREAM_FAILED = (why: string): Buffer => simpleResponse(503, 'Service Unavailable', `upstream connect error or disconnect/reset before headers: ${why}\n`, [['x-mesh-response-flags', 'UF']]);

export class Http1Session implements UpstreamOwner {
  private pending: Buffer | null = null;
  private req = Req.Head;
  private resp = Resp.Idle;
  private readonly reqBody = new BodyFramer();
  private readonly respBody = new BodyFramer();
  private respPending: Buffer | null = null;
  private upstream: UpstreamConnection | null = null;
  private head: HttpHead | null = null;
  /** Bytes of the current request already queued before the upstream connection existed. */
  private queued: Buffer[] = [];
  private status = 0;
  private closeAfter = false;
  private tunnel = false;
  private ended = false;
  private driving = false;
  private closeUpstreamAfter = false;
  private pool: ConnectionPool | null = null;
  private onDone: ((outcome: ExchangeOutcome) => void) | undefined;
  /** For the one safe replay: a body-less request whose reused connection closed before answering. */
  private replay: { endpoint: Endpoint; head: Buffer } | null = null;
  private respSeen = false;

  constructor(
    private readonly down: Socket,
    private readonly router: HttpRouter,
    private readonly onError: (kind: SessionErrorKind, msg: string) => void = () => {},
  ) {
    down.on('data', (c: Buffer) => this.onDownData(c));
    down.on('drain', () => this.upstream?.socket.resume());
    down.on('end', () => this.onDownEnd());
    down.on('error', () => {});
    down.on('close', () => this.onDownClose());
  }

  private onDownData(chunk: Buffer): void {
    if (this.tunnel) {
      if (this.upstream && !this.upstream.socket.write(chunk)) this.down.pause();
      return;
    }
    this.pending = this.pending === null || this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    this.drive();
  }

  /** Moves the request side forward as far as the bytes and the state allow. */
  private drive(): void {
    if (this.driving) return;
    this.driving = true;
    try {
      for (;;) {
        const p = this.pending;
        if (this.req === Req.Head) {
          // Pipelined requests wait for the previous response: answers go out in order.
          if (this.resp !== Resp.Idle || this.ended) {
            if (p && p.length > 0) this.down.pause();
            return;
          }
          if (!p || p.length === 0) return;
          const head = parseHead(p, 0, 'request');
          if (!head) return;
          this.pending = p.length === head.size ? null : p.subarray(head.size);
          this.start(head, p.subarray(0, head.size));
          continue;
        }
        if (!p || p.length === 0) return;
        const end = this.reqBody.consume(p, 0, p.length);
        const body = end === p.length ? p : p.subarray(0, end);
        this.pending = end === p.length ? null : p.subarray(end);
        if (this.req === Req.Body) this.toUpstream(body);
        if (this.reqBody.done) this.req = Req.Head;
      }
    } catch (err) {
      this.fail(err);
    } finally {
      this.driving = false;
    }
  }

  /** Starts an exchange; `raw` is the head as received (forwarded as is when nothing must change). */
  private start(head: HttpHead, raw: Buffer): void {
    this.head = head;
    this.status = 0;
    this.closeAfter = head.close;
    this.reqBody.reset(head.chunked ? 'chunked' : head.contentLength > 0 ? head.contentLength : 'none');
    if (head.method === 'CONNECT') throw new HttpFramingError(400, 'CONNECT is not supported on this port');
    const d = this.router(head);
    if (d.kind === 'respond') {
      // A local answer: the request body, if any, is read and dropped.
      this.req = this.reqBody.done ? Req.Head : Req.Discard;
      this.resp = Resp.Body;
      this.writeDown(d.response);
      this.finish(false);
      return;
    }
    this.pool = d.pool;
    this.onDone = d.done;
    this.req = this.reqBody.done ? Req.Head : Req.Body;
    const edits = d.edits;
    const headBytes = !head.hasHopByHop && !edits ? raw : Buffer.from(buildHead(head, edits), 'latin1');
    this.replay = this.reqBody.done && !head.upgrade ? { endpoint: d.endpoint, head: headBytes } : null;
    this.respSeen = false;
    this.dispatch(d.pool, d.endpoint, headBytes, false);
  }

  private dispatch(pool: ConnectionPool, endpoint: Endpoint, headBytes: Buffer, fresh: boolean): void {
    this.resp = Resp.Connecting;
    const got = pool.acquire(endpoint, this, fresh);
    if (got instanceof Promise) {
      this.queued.push(headBytes);
      got.then(
        (c) => this.attach(c),
        (err: unknown) => this.connectFailed(err),
      );
    } else {
      this.upstream = got;
      this.resp = Resp.Head;
      got.socket.write(headBytes);
    }
  }

  private attach(c: UpstreamConnection): void {
    if (this.ended || this.resp !== Resp.Connecting) {
      c.owner = null;
      c.socket.destroy();
      return;
    }
    this.upstream = c;
    this.resp = Resp.Head;
    const s = c.socket;
    s.cork();
    for (const b of this.queued) s.write(b);
    s.uncork();
    this.queued = [];
    this.down.resume();
    this.drive();
  }

  private connectFailed(err: unknown): void {
    this.queued = [];
    if (this.ended) return;
    this.onError('upstream', `upstream connect failed: ${describeError(err)}`);
    this.status = 503;
    this.closeAfter ||= this.req !== Req.Head;
    this.writeDown(UPSTREAM_FAILED(describeError(err)));
    this.finish(false, { connectFailure: true });
  }

  private toUpstream(b: Buffer): void {
    if (this.resp === Resp.Connecting) {
      this.queued.push(b);
      return;
    }
    if (this.upstream && !this.upstream.socket.write(b)) this.down.pause();
  }

  onUpstreamDrain(): void {
    this.down.resume();
  }

  onUpstreamData(chunk: Buffer): void {
    this.respSeen = true;
    if (this.tunnel) {
      if (!this.down.write(chunk)) this.upstream?.socket.pause();
      return;
    }
    let p = this.respPending === null ? chunk : Buffer.concat([this.respPending, chunk]);
    this.respPending = null;
    try {
      while (p.length > 0) {
        if (this.resp === Resp.Head) {
          const head = parseHead(p, 0, 'response');
          if (!head) {
            this.respPending = p;
            return;
          }
          const rest = p.subarray(head.size);
          if (head.status < 200 && head.status !== 101) {
            this.writeDown(p.subarray(0, head.size)); // 100 Continue and friends pass straight through
            p = rest;
            continue;
          }
          this.status = head.status;
          if (head.status === 101 && this.head?.upgrade) {
            this.writeDown(Buffer.from(buildHead(head), 'latin1'));
            this.startTunnel(rest);
            return;
          }
          const noBody = this.head?.method === 'HEAD' || head.status === 204 || head.status === 304;
          this.respBody.reset(noBody ? 'none' : head.chunked ? 'chunked' : head.contentLength >= 0 ? head.contentLength : 'eof');
          if (this.respBody.untilClose || head.close) this.closeUpstreamAfter = true;
          if (this.respBody.untilClose) this.closeAfter = true;
          const raw = !head.hasHopByHop && !this.closeAfter;
          this.writeDown(raw ? p.subarray(0, head.size) : Buffer.from(buildHead(head, { close: this.closeAfter }), 'latin1'));
          this.resp = Resp.Body;
          p = rest;
          if (this.respBody.done) {
            this.finish(true);
            if (p.length > 0) this.upstream?.socket.destroy();
            return;
          }
          continue;
        }
        if (this.resp === Resp.Body) {
          const end = this.respBody.consume(p, 0, p.length);
          this.writeDown(end === p.length ? p : p.subarray(0, end));
          if (this.respBody.done) {
            // Bytes after a complete response were never asked for: the connection cannot be trusted again.
            if (end < p.length) this.closeUpstreamAfter = true;
            this.finish(true);
          }
          return;
        }
        // Bytes from upstream when no response is expected.
        this.upstream?.socket.destroy();
        return;
      }
    } catch (err) {
      this.onError('upstream', `bad response from upstream: ${describeError(err)}`);
      this.upstream?.socket.destroy();
      if (this.resp === Resp.Head) {
        this.status = 502;
        this.writeDown(simpleResponse(502, 'Bad Gateway', `upstream sent a malformed response: ${(err as Error).message}\n`, [['x-mesh-response-flags', 'UPE']], true));
        this.closeAfter = true;
        this.finish(false, { reset: true });
      } else this.down.destroy();
    }
  }

  onUpstreamClose(): void {
    if (this.tunnel) {
      this.down.end();
      return;
    }
    if (this.resp === Resp.Body && this.respBody.untilClose) {
      this.upstream = null;
      this.finish(false);
      return;
    }
    if (this.resp === Resp.Head || this.resp === Resp.Body) {
      const started = this.resp === Resp.Body;
      const c = this.upstream;
      this.upstream = null;
      // A kept-alive connection the upstream closed just as we reused it (the keep-alive race): the request
      // never reached the app, so send it once more on a new connection. Only for requests without a body.
      if (!started && !this.respSeen && this.replay && this.pool && c && c.requests > 1) {
        const { endpoint, head } = this.replay;
        this.replay = null;
        this.dispatch(this.pool, endpoint, head, true);
        return;
      }
      this.onError('upstream', started ? 'upstream closed in the middle of a response' : 'upstream closed before responding');
      if (started) {
        this.finishOutcome({ reset: true });
        this.down.destroy();
        return;
      }
      this.status = 503;
      this.closeAfter ||= this.req !== Req.Head;
      this.writeDown(UPSTREAM_FAILED('connection reset'));
      this.finish(false, { reset: true });
    }
  }

  private startTunnel(rest: Buffer): void {
    this.tunnel = true;
    this.resp = Resp.Idle;
    if (rest.length > 0) this.writeDown(rest);
    const leftover = this.pending;
    this.pending = null;
    if (leftover && leftover.length > 0) this.upstream?.socket.write(leftover);
    this.down.resume();
    this.finishOutcome({});
  }

  /** The response is complete (or answered locally): hand the connection back and take the next request. */
  private finish(reusable: boolean, outcome: Partial<ExchangeOutcome> = {}): void {
    const c = this.upstream;
    this.upstream = null;
    this.resp = Resp.Idle;
    this.finishOutcome(outcome);
    if (c && this.pool) {
      // Reusable only when the request went out whole too; else the upstream would read a half request.
      this.pool.release(c, reusable && !this.closeUpstreamAfter && this.req !== Req.Body);
    }
    this.closeUpstreamAfter = false;
    this.pool = null;
    if (this.closeAfter) {
      this.ended = true;
      this.down.end();
      return;
    }
    if (this.req === Req.Body) {
      // The upstream answered before the request body was done; the rest of the body has nowhere to go.
      this.ended = true;
      this.down.end();
      return;
    }
    this.down.resume();
    this.drive();
  }

  /** Reports the outcome once per exchange. */
  private finishOutcome(o: Partial<ExchangeOutcome>): void {
    const done = this.onDone;
    this.onDone = undefined;
    done?.({ status: this.status, connectFailure: o.connectFailure ?? false, reset: o.reset ?? false });
  }

  private writeDown(b: Buffer): void {
    if (!this.down.write(b)) this.upstream?.socket.pause();
  }

  private fail(err: unknown): void {
    this.onError(err instanceof HttpFramingError ? 'malformed' : 'internal', describeError(err));
    if (err instanceof HttpFramingError && this.resp === Resp.Idle) this.down.end(errorResponse(err));
    else this.down.destroy();
    this.ended = true;
    if (this.upstream) {
      this.upstream.socket.destroy();
      this.upstream = null;
    }
  }

  private onDownEnd(): void {
    if (this.tunnel) {
      this.upstream?.socket.end();
      return;
    }
    // The client finished sending. Answer what is in flight, then close.
    this.closeAfter = true;
    if (this.resp === Resp.Idle) {
      this.ended = true;
      this.down.end();
    }
  }

  private onDownClose(): void {
    this.ended = true;
    if (this.upstream) {
      this.upstream.socket.destroy();
      this.upstream = null;
    }
  }
}
