// One downstream HTTP/1.1 connection: requests in order, each routed and forwarded over a pooled upstream connection,
// with the route's timeout and retries applied.

import { describeError } from '../../errors';
import type { ByteStream } from '../byte-stream';
import { OVERFLOW_HEADER, OVERFLOW_RESPONSE_FLAG, OVERFLOW_STATUS, type OverflowKind } from '../circuit-breaker';
import { PoolOverflow, type ConnectionPool, type UpstreamConnection, type UpstreamOwner } from '../connection-pool';
import { retryBackoffMs, type Decision, type ExchangeOutcome, type Target } from '../route-decision';
import { NO_FLAGS } from '../../telemetry';
import type { ExchangeReporter } from '../exchange-report';
import { BodyFramer } from './body-framer';
import { errorResponse, HttpFramingError } from './http-framing-error';
import { buildHead, forwardHead, parseHead, simpleResponse, type HttpHead } from './http1-head';
import { Http1Telemetry } from './http1-telemetry';
import { DEFAULT_PROXY_LIMITS, type ProxyLimits } from '../proxy-limits';

/** Decides per request, possibly later (a fault delay); the seam where the filter chain plugs in. `source` is the client's address. */
export type HttpRouter = (head: HttpHead, source: string) => Decision | Promise<Decision>;

/** What went wrong in a session: bad bytes from downstream, trouble upstream, or a bug. */
export type SessionErrorKind = 'malformed' | 'upstream' | 'internal';

const enum Req { Head, Body, Discard }
const enum Resp { Idle, Routing, Connecting, Head, Body, Waiting }

const flagged = (status: number, reason: string, text: string, flag: string, close = false): Buffer =>
  simpleResponse(status, reason, `${text}\n`, [['x-mesh-response-flags', flag]], close);

/** The fast answer to a request a circuit breaker refused: 503, the limit named in OVERFLOW_HEADER, flag UO. */
export function overflowResponse(kind: OverflowKind): Buffer {
  return simpleResponse(OVERFLOW_STATUS, 'Service Unavailable', `upstream overflow: ${kind}\n`, [
    ['x-mesh-response-flags', OVERFLOW_RESPONSE_FLAG],
    [OVERFLOW_HEADER, kind],
  ]);
}

export class Http1Session implements UpstreamOwner {
  private pending: Buffer | null = null;
  private req = Req.Head;
  private resp = Resp.Idle;
  private readonly reqBody = new BodyFramer();
  private readonly respBody = new BodyFramer();
  private respPending: Buffer | null = null;
  private upstream: UpstreamConnection | null = null;
  private head: HttpHead | null = null;
  private decision: Extract<Decision, { kind: 'forward' }> | null = null;
  private target: Target | null = null;
  private headBytes: Buffer | null = null;
  /** Bytes of the current request waiting for a connection (or for the route). */
  private queued: Buffer[] = [];
  /** Copy of the request body while it may still be replayed; null once too large to retry. */
  private bodyCopy: Buffer[] | null = null;
  private bodyCopySize = 0;
  private attempt = 0;
  private respSeen = false;
  private closeAfter = false;
  private closeUpstreamAfter = false;
  private tunnel = false;
  private ended = false;
  private driving = false;
  private timer: NodeJS.Timeout | null = null;
  private tryTimer: NodeJS.Timeout | null = null;
  /** The client's address, read once (for consistent hashing on the source IP). */
  private readonly source: string;
  /** Metrics, access log, traces and taps of each exchange; null when nothing reports. */
  private readonly tel: Http1Telemetry | null;

  constructor(
    private readonly down: ByteStream,
    private readonly router: HttpRouter,
    private readonly onError: (kind: SessionErrorKind, msg: string) => void = () => {},
    private readonly limits: ProxyLimits = DEFAULT_PROXY_LIMITS,
    reporter: ExchangeReporter | null = null,
  ) {
    this.source = down.remoteAddress ?? '';
    this.tel = reporter && new Http1Telemetry(reporter, this.source);
    down.on('data', (c: Buffer) => this.onDownData(c));
    down.on('drain', () => this.upstream?.socket.resume());
    down.on('end', () => this.onDownEnd());
    down.on('error', () => {});
    down.on('close', () => this.onDownClose());
  }

  /** True once an upgrade (WebSocket) was accepted: the connection is a byte tunnel to the upstream now. */
  get tunneling(): boolean {
    return this.tunnel;
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
          const head = parseHead(p, 0, 'request', this.limits.maxHeadBytes, this.limits.maxHeaders);
          if (!head) return;
          this.pending = p.length === head.size ? null : p.subarray(head.size);
          this.start(head, p.subarray(0, head.size));
          continue;
        }
        if (!p || p.length === 0) return;
        const end = this.reqBody.consume(p, 0, p.length);
        const body = end === p.length ? p : p.subarray(0, end);
        this.pending = end === p.length ? null : p.subarray(end);
        if (this.tel) this.tel.requestBytes += body.length;
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
    this.tel?.begin(head);
    this.closeAfter = head.close;
    this.attempt = 0;
    this.reqBody.reset(head.chunked ? 'chunked' : head.contentLength > 0 ? head.contentLength : 'none');
    if (head.method === 'CONNECT') throw new HttpFramingError(400, 'CONNECT is not supported on this port');
    this.req = this.reqBody.done ? Req.Head : Req.Body;
    const d = this.router(head, this.source);
    if (d instanceof Promise) {
      this.tel?.delayedByFault();
      this.resp = Resp.Routing;
      d.then(
        (x) => this.decided(x, raw),
        (err: unknown) => this.decided({ kind: 'respond', response: flagged(500, 'Internal Server Error', `routing failed: ${describeError(err)}`, 'RF') }, raw),
      );
    } else this.decided(d, raw);
  }

  private decided(d: Decision, raw: Buffer): void {
    if (this.ended) {
      // Decided after the client left (a fault delay): give the lease back as cancelled.
      if (d.kind === 'forward') d.target.done?.({ status: 0, connectFailure: false, reset: false, timeout: false });
      return;
    }
    const head = this.head!;
    if (d.kind === 'respond') {
      // A local answer: the request body, if any, is read and dropped.
      if (this.req === Req.Body) this.req = Req.Discard;
      this.queued = [];
      this.resp = Resp.Body;
      this.tel?.answeredLocally(d.response);
      this.writeDown(d.response);
      this.finish(false);
      return;
    }
    this.decision = d;
    this.headBytes = forwardHead(head, raw, this.tel ? this.tel.edits(d.edits) : d.edits);
    // A field the proxy sets or removes on the request must not reach the app as a trailer (e.g. a forged XFCC).
    this.reqBody.forbiddenTrailers = (d.edits?.set || d.edits?.remove) && head.chunked ? new Set([...(d.edits.set ?? []).map(([n]) => n), ...(d.edits.remove ?? [])]) : null;
    // Keep the body for a retry only when it is known to be small.
    this.bodyCopy = d.retry && d.retry.attempts > 0 && !head.upgrade && (this.reqBody.done || (head.contentLength > 0 && head.contentLength <= this.limits.maxRetryBodyBytes)) ? [] : null;
    this.bodyCopySize = 0;
    for (const b of this.queued) this.keepCopy(b);
    if (d.timeoutMs) this.timer = setTimeout(() => this.timedOut(false), d.timeoutMs);
    this.dispatch(d.target, false);
  }

  /** Sends the request (head and what body is here) to `target` over a pooled or new connection. */
  private dispatch(target: Target, fresh: boolean): void {
    this.target = target;
    this.reported = false;
    this.respSeen = false;
    this.resp = Resp.Connecting;
    const per = this.decision?.retry?.perTryTimeoutMs;
    // A replay after the keep-alive race comes here with the first try's timer still set: one timer per try.
    this.clearTryTimer();
    if (per) this.tryTimer = setTimeout(() => this.timedOut(true), per);
    const got = target.pool.acquire(target.endpoint, this, fresh);
    if (got instanceof Promise) {
      const attempt = this.attempt;
      got.then(
        (c) => this.attach(c, attempt, target.pool),
        (err: unknown) => {
          if (attempt !== this.attempt) return;
          if (err instanceof PoolOverflow) this.attemptFailed({}, err.message, overflowResponse(err.overflow));
          else this.attemptFailed({ connectFailure: true }, `upstream connect failed: ${describeError(err)}`);
        },
      );
    } else this.attach(got, this.attempt, target.pool);
  }

  private attach(c: UpstreamConnection, attempt: number, pool: ConnectionPool): void {
    if (this.ended || this.resp !== Resp.Connecting || attempt !== this.attempt) {
      pool.release(c, true); // nothing was written on it: another request can have it
      return;
    }
    this.upstream = c;
    this.resp = Resp.Head;
    const s = c.socket;
    // A retry replays the body kept so far; a first attempt sends what arrived while connecting.
    const body = this.attempt > 0 ? (this.bodyCopy ?? []) : this.queued;
    if (body.length === 0) s.write(this.headBytes!); // the common case: one write, no cork/writev
    else {
      s.cork();
      s.write(this.headBytes!);
      for (const b of body) s.write(b);
      s.uncork();
    }
    if (this.queued.length > 0) this.queued = [];
    this.down.resume();
    this.drive();
  }

  private keepCopy(b: Buffer): void {
    if (!this.bodyCopy) return;
    this.bodyCopySize += b.length;
    if (this.bodyCopySize > this.limits.maxRetryBodyBytes) this.bodyCopy = null;
    else this.bodyCopy.push(Buffer.from(b));
  }

  private toUpstream(b: Buffer): void {
    if (this.bodyCopy) this.keepCopy(b);
    if (this.resp === Resp.Routing || this.resp === Resp.Connecting || this.resp === Resp.Waiting) {
      if (this.attempt === 0) this.queued.push(b);
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
          if (head.status === 101 && this.head?.upgrade) {
            this.writeDown(Buffer.from(buildHead(head), 'latin1'));
            this.startTunnel(rest);
            return;
          }
          const outcome = { status: head.status, connectFailure: false, reset: false, timeout: false };
          if (this.mayRetry(outcome)) {
            // The answer is not forwarded; its connection cannot be reused without reading it, so it goes.
            this.retry(outcome);
            return;
          }
          const noBody = this.head?.method === 'HEAD' || head.status === 204 || head.status === 304;
          this.respBody.reset(noBody ? 'none' : head.chunked ? 'chunked' : head.contentLength >= 0 ? head.contentLength : 'eof');
          if (this.respBody.untilClose || head.close) this.closeUpstreamAfter = true;
          if (this.respBody.untilClose) this.closeAfter = true;
          this.clearTryTimer();
          this.status = head.status;
          const edits = this.decision?.responseEdits;
          const raw = !head.hasHopByHop && !this.closeAfter && !edits;
          this.resp = Resp.Body;
          if (raw) {
            // Head and the body bytes that came with it leave in one write (one TLS record, one syscall).
            const end = this.respBody.consume(p, head.size, p.length);
            this.writeDown(end === p.length ? p : p.subarray(0, end));
            if (this.respBody.done) {
              if (end < p.length) this.closeUpstreamAfter = true;
              this.finish(true);
            }
            return;
          }
          this.writeDown(Buffer.from(buildHead(head, edits ? { ...edits, close: this.closeAfter } : { close: this.closeAfter }), 'latin1'));
          p = rest;
          if (this.respBody.done) {
            if (p.length > 0) this.closeUpstreamAfter = true;
            this.finish(true);
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
        this.upstream?.socket.destroy(); // bytes from upstream when no response is expected
        return;
      }
    } catch (err) {
      this.onError('upstream', `bad response from upstream: ${describeError(err)}`);
      this.upstream?.socket.destroy();
      if (this.resp === Resp.Head) this.attemptFailed({ reset: true, status: 502 }, 'malformed response', flagged(502, 'Bad Gateway', `upstream sent a malformed response: ${(err as Error).message}`, 'UPE', true));
      else this.down.destroy();
    }
  }

  private status = 0;

  onUpstreamClose(): void {
    if (this.tunnel) {
      this.down.end();
      return;
    }
    const c = this.upstream;
    this.upstream = null;
    if (this.resp === Resp.Body && this.respBody.untilClose) {
      this.finish(false);
      return;
    }
    if (this.resp === Resp.Head) {
      // A kept-alive connection the upstream closed just as we reused it (the keep-alive race): the request never
      // reached the app, so send it again on a new connection, once, without counting it as an attempt.
      if (!this.respSeen && c && c.requests > 1 && !this.head?.upgrade && this.head!.contentLength <= 0 && !this.head!.chunked && this.target) {
        this.reportAttempt({}); // the lease of this try ends; the replay takes a fresh one below
        this.respSeen = true;
        this.dispatch(this.target, true);
        return;
      }
      this.attemptFailed({ reset: true }, 'upstream closed before responding');
      return;
    }
    if (this.resp === Resp.Body) {
      this.onError('upstream', 'upstream closed in the middle of a response');
      this.tel?.end(this.status, 'UC', this.target?.endpoint, this.attempt + 1);
      this.reportAttempt({ reset: true });
      this.down.destroy();
    }
  }

  /** Whether this outcome may be retried now: attempts left, the plan says so, and the request can be replayed. */
  private mayRetry(o: ExchangeOutcome): boolean {
    const r = this.decision?.retry;
    const h = this.head!;
    if (!r || this.attempt >= r.attempts || !this.reqBody.done || (this.bodyCopy === null && (h.contentLength > 0 || h.chunked)) || !r.retriable(o)) return false;
    // A retry gives its own slot back (by ending its attempt) before asking for the next one.
    if (this.attempt > 0) this.reportAttempt(o);
    return r.admit();
  }

  private retry(o: ExchangeOutcome): void {
    this.reportAttempt(o);
    const c = this.upstream;
    this.upstream = null;
    if (c) {
      c.owner = null;
      c.socket.destroy();
    }
    this.clearTryTimer();
    this.attempt++;
    this.resp = Resp.Waiting;
    const wait = retryBackoffMs(this.attempt);
    const plan = this.decision!.retry!;
    setTimeout(() => {
      if (this.ended || this.resp !== Resp.Waiting) {
        plan.cancel();
        return;
      }
      const next = plan.next();
      if (Buffer.isBuffer(next)) {
        this.resp = Resp.Body;
        this.tel?.answeredLocally(next);
        this.writeDown(next);
        this.finish(false);
      } else this.dispatch(next as Target, false);
    }, wait).unref();
  }

  /** An attempt ended without a usable response: retry when allowed, else answer with `response` (503 by default). */
  private attemptFailed(o: Partial<ExchangeOutcome>, why: string, response?: Buffer): void {
    const outcome = { status: o.status ?? 0, connectFailure: o.connectFailure ?? false, reset: o.reset ?? false, timeout: o.timeout ?? false };
    if (this.mayRetry(outcome)) {
      this.retry(outcome);
      return;
    }
    this.onError('upstream', why);
    this.reportAttempt(outcome);
    const c = this.upstream;
    this.upstream = null;
    if (c) {
      c.owner = null;
      c.socket.destroy();
    }
    this.queued = [];
    this.closeAfter ||= this.req !== Req.Head;
    this.resp = Resp.Body;
    const attempts = this.attempt > 0 ? ` after ${this.attempt + 1} attempts` : '';
    const answer =
      response ??
      (o.timeout
        ? flagged(504, 'Gateway Timeout', `upstream request timeout${attempts}`, 'UT')
        : flagged(503, 'Service Unavailable', `upstream connect error or disconnect/reset before headers${attempts}: ${why}`, this.attempt > 0 ? 'URX' : o.connectFailure ? 'UF' : 'UC'));
    this.tel?.answeredLocally(answer);
    this.writeDown(answer);
    this.finish(false);
  }

  private timedOut(perTry: boolean): void {
    if (this.ended) return;
    if (this.resp === Resp.Body) {
      // Part of the response is out already: the only honest signal left is to cut the connection.
      this.onError('upstream', 'request timed out in the middle of the response');
      this.tel?.end(this.status, 'UT', this.target?.endpoint, this.attempt + 1);
      this.reportAttempt({ timeout: true });
      this.upstream?.socket.destroy();
      this.down.destroy();
      return;
    }
    if (perTry) {
      this.tryTimer = null;
      this.attemptFailed({ timeout: true }, 'per-try timeout');
      return;
    }
    this.timer = null;
    this.decision = this.decision && { ...this.decision, retry: undefined }; // the whole request is out of time
    this.attemptFailed({ timeout: true }, 'request timeout');
  }

  private clearTryTimer(): void {
    if (this.tryTimer) clearTimeout(this.tryTimer);
    this.tryTimer = null;
  }

  private startTunnel(rest: Buffer): void {
    this.tunnel = true;
    this.resp = Resp.Idle;
    this.clearTimers();
    if (rest.length > 0) this.writeDown(rest);
    const leftover = this.pending;
    this.pending = null;
    if (leftover && leftover.length > 0) this.upstream?.socket.write(leftover);
    this.down.resume();
    this.tel?.end(101, NO_FLAGS, this.target?.endpoint, this.attempt + 1);
    this.reportAttempt({ status: 101 });
  }

  private clearTimers(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.clearTryTimer();
  }

  /** The response is complete (or answered locally): hand the connection back and take the next request. */
  private finish(reusable: boolean): void {
    const c = this.upstream;
    this.upstream = null;
    this.resp = Resp.Idle;
    this.clearTimers();
    this.tel?.end(this.status, NO_FLAGS, this.target?.endpoint, this.attempt + 1);
    this.reportAttempt({ status: this.status });
    if (c && this.target) {
      // Reusable only when the request went out whole too; else the upstream would read a half request.
      this.target.pool.release(c, reusable && !this.closeUpstreamAfter && this.req !== Req.Body);
    }
    this.closeUpstreamAfter = false;
    this.target = null;
    this.decision = null;
    this.bodyCopy = null;
    this.status = 0;
    if (this.closeAfter || this.req === Req.Body) {
      // Asked to close, or the upstream answered before the request body was done (the rest has nowhere to go).
      this.ended = true;
      this.down.end();
      return;
    }
    this.down.resume();
    this.drive();
  }

  /** Reports how the current attempt ended, once. */
  private reportAttempt(o: Partial<ExchangeOutcome>): void {
    const done = this.reported ? undefined : this.target?.done;
    this.reported = true;
    done?.({ status: o.status ?? 0, connectFailure: o.connectFailure ?? false, reset: o.reset ?? false, timeout: o.timeout ?? false });
  }

  private reported = true;

  private writeDown(b: Buffer): void {
    if (this.tel) this.tel.responseBytes += b.length;
    if (!this.down.write(b)) this.upstream?.socket.pause();
  }

  private fail(err: unknown): void {
    this.onError(err instanceof HttpFramingError ? 'malformed' : 'internal', describeError(err));
    if (err instanceof HttpFramingError && this.resp === Resp.Idle) this.down.end(errorResponse(err));
    else this.down.destroy();
    this.ended = true;
    this.clearTimers();
    this.reportAttempt({}); // cancelled by our side: not the endpoint's fault
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
    // The client finished sending in the middle of a request body: that request can never be whole, and the
    // upstream would wait for the rest for ever; both connections go.
    if (this.req === Req.Body) {
      this.fail(new HttpFramingError(400, 'the client closed its side in the middle of the request body'));
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
    this.clearTimers();
    this.tel?.end(this.status, 'DC', this.target?.endpoint, this.attempt + 1); // the client left before the response was complete
    // The client left: whatever attempt is open (connecting, waiting, answering) ends as cancelled, which gives
    // its lease back without counting against the endpoint.
    this.reportAttempt({});
    if (this.upstream) {
      this.upstream.socket.destroy();
      this.upstream = null;
    }
  }
}
