// Carries one HTTP/2 stream to the next hop over shared sessions: headers, streamed bodies and trailers both ways, resets and cancels mapped, with the route's timeout and retries.
//
// The life of a forwarded stream:
//   1. an attempt takes its endpoint's session from the pool (dialing it if needed; a failed dial is
//      a connect failure) and opens a stream with the request header block; a request that is not
//      over yet keeps its stream open for trailers (waitForTrailers), so request trailers reach the
//      server too;
//   2. the request body is read and written up (HTTP/2 flow control is the back-pressure); while a
//      retry is possible a copy of it is kept, up to RETRY_BODY_LIMIT, and a retry sends the copy
//      first, then what follows;
//   3. the response headers come back: a retriable answer (retryOn: a status, a grpc-status in the
//      headers of a trailers-only answer) is dropped and the stream cancelled, and the next attempt
//      starts after a backoff; otherwise the response is committed: headers (with the route's
//      edits), body and trailers go down, and from then on nothing is retried;
//   4. a reset from upstream before any response headers, a connect failure or a per-try timeout
//      are retried when the plan allows; else answered here, for gRPC with the status the caller
//      would have seen had it been reset directly (grpc-status.ts), otherwise 502/503/504; after
//      response headers, a reset is passed down with its code;
//   5. the route timeout ends it all: before response headers 504 / DEADLINE_EXCEEDED, flag UT;
//      after, both streams are reset (CANCEL);
//   6. a downstream reset (a client CANCEL) is passed up with its code, so the server stops work.
// Each attempt's outcome goes to its target's done() once (the cluster's lease, outlier detection).

import { constants, type ClientHttp2Session, type ClientHttp2Stream, type IncomingHttpHeaders, type OutgoingHttpHeaders, type ServerHttp2Stream } from 'node:http2';
import { describeError } from '../../errors';
import type { Endpoint } from '../../registry';
import type { HeadEdits } from '../http1/http1-head';
import { RETRY_BODY_LIMIT, retryBackoffMs, type ExchangeOutcome, type RetryPlan, type Target } from '../route-decision';
import { GrpcStatus, grpcStatusForReset, grpcStatusOf, h2ErrorName } from './grpc-status';
import { applyHeadEdits, forwardHeaders, NO_PSEUDO, RESPONSE_PSEUDO } from './h2-headers';
import { answerStream, type H2Answer } from './h2-local-answer';

const { NGHTTP2_FLAG_END_STREAM, NGHTTP2_NO_ERROR, NGHTTP2_CANCEL, NGHTTP2_INTERNAL_ERROR, NGHTTP2_REFUSED_STREAM } = constants;

/** Where an attempt's session comes from (H2SessionPool). */
export interface SessionSource {
  /** The endpoint's session when one is open: the fast path. */
  ready(endpoint: Endpoint): ClientHttp2Session | undefined;
  /** @throws (rejects) when the endpoint cannot be reached */
  session(endpoint: Endpoint): Promise<ClientHttp2Session>;
}

/** What to do with one stream. */
export interface StreamPlan {
  /** Answer local failures the gRPC way (trailers-only with grpc-status) instead of with an HTTP status. */
  readonly grpc: boolean;
  /** The request header block to send (pseudo-headers and edits applied: see forwardHeaders, applyHeadEdits). */
  readonly headers: OutgoingHttpHeaders;
  readonly target: Target<SessionSource>;
  /** Edits to the response headers. */
  readonly responseEdits?: HeadEdits;
  /** From the start of the stream until the response is complete; 0 or absent = none. */
  readonly timeoutMs?: number;
  readonly retry?: RetryPlan<H2Answer, SessionSource>;
  /** Told why an attempt failed, or why the stream ended badly (for logs). */
  readonly onError?: (message: string) => void;
}

const noop = (): void => {};

/** A stream a client opened on us, held from the moment it arrives: its trailers may come before the upstream session is ready. */
export interface HeldStream {
  readonly down: ServerHttp2Stream;
  requestTrailers?: IncomingHttpHeaders;
}

/** Takes charge of a new downstream stream at once (call it in the 'stream' handler, before any wait): errors and request trailers are caught. */
export function holdStream(down: ServerHttp2Stream): HeldStream {
  const held: HeldStream = { down };
  down.on('error', noop); // a reset by the client surfaces as 'close' with its code
  down.once('trailers', (t: IncomingHttpHeaders) => (held.requestTrailers = t));
  return held;
}

const outcome = (o: Partial<ExchangeOutcome>): ExchangeOutcome => ({ status: 0, connectFailure: false, reset: false, timeout: false, ...o });
const TIMEOUT: H2Answer = { status: 504, grpcStatus: GrpcStatus.DEADLINE_EXCEEDED, message: 'upstream request timeout', flag: 'UT' };
/** Flags of failures that, after several attempts, become URX (retries exhausted). */
const RETRIED_FLAGS = new Set(['UF', 'UC', 'UR']);

/** Forwards a held stream as `plan` says, starting at once. Never throws: failures become a local answer or a reset. */
export function forwardStream(held: HeldStream, flags: number, plan: StreamPlan): void {
  new StreamForwarder(held, flags, plan);
}

class StreamForwarder {
  private readonly down: ServerHttp2Stream;
  /** The request ended with its headers: every attempt is sent with END_STREAM. */
  private readonly bodyless: boolean;
  /** The current attempt's stream; undefined between attempts (and once given up on). */
  private up: ClientHttp2Stream | undefined;
  private target: Target<SessionSource>;
  private reported = false;
  private attempt = 0;
  /** The current attempt's response was read to its END_STREAM (not torn down before it). */
  private upEnded = false;
  /** Response headers went downstream: nothing is retried from here on. */
  private committed = false;
  /** The committed response's outcome (its grpc-status updated from the trailers). */
  private result: ExchangeOutcome | undefined;
  /** The whole response is handed to HTTP/2 (headers, body and trailers): nothing can overtake it now. */
  private responseSubmitted = false;
  private onResponseSubmitted: (() => void) | undefined;
  /** The exchange is over for this proxy (answered, completed, or the client left). */
  private over = false;
  /** The request body read so far, while a retry could still send it again; null once too large (or no retries). */
  private copy: Buffer[] | null;
  private copySize = 0;
  private reading = false;
  /** The whole request body has been read. */
  private requestRead = false;
  private timer: NodeJS.Timeout | undefined;
  private tryTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly held: HeldStream,
    flags: number,
    private readonly plan: StreamPlan,
  ) {
    const down = (this.down = held.down);
    this.bodyless = (flags & NGHTTP2_FLAG_END_STREAM) !== 0 || down.readableEnded;
    this.copy = plan.retry && plan.retry.attempts > 0 ? [] : null;
    this.target = plan.target;
    down.once('close', () => this.onDownClose());
    if (plan.timeoutMs) this.timer = setTimeout(() => this.timedOut(false), plan.timeoutMs);
    this.dispatch(plan.target);
  }

  /** Starts an attempt at `target`: its session (fast path, or a dial), then the stream. */
  private dispatch(target: Target<SessionSource>): void {
    this.target = target;
    this.reported = false;
    const per = this.plan.retry?.perTryTimeoutMs;
    if (per) this.tryTimer = setTimeout(() => this.timedOut(true), per);
    const ready = target.pool.ready(target.endpoint);
    if (ready) {
      this.open(ready);
      return;
    }
    const attempt = this.attempt;
    const current = (): boolean => attempt === this.attempt && !this.over && this.target === target;
    target.pool.session(target.endpoint).then(
      (s) => {
        if (current()) this.open(s);
      },
      (err: unknown) => {
        if (current()) this.failed({ connectFailure: true }, { status: 503, grpcStatus: GrpcStatus.UNAVAILABLE, message: `upstream connect error: ${describeError(err)}`, flag: 'UF' });
      },
    );
  }

  private open(session: ClientHttp2Session): void {
    let up: ClientHttp2Stream;
    try {
      up = session.request(this.plan.headers, this.bodyless ? { endStream: true } : { waitForTrailers: true });
    } catch (err) {
      // The session went away between pick and request (GOAWAY, closed): nothing was sent, like a refused stream.
      const code = (err as NodeJS.ErrnoException).code ?? '';
      if (code === 'ERR_HTTP2_GOAWAY_SESSION' || code === 'ERR_HTTP2_INVALID_SESSION') {
        this.failed({ reset: true, refused: true }, { status: 503, grpcStatus: GrpcStatus.UNAVAILABLE, message: 'upstream connection closed before the request was sent', flag: 'UC' });
      } else this.failed({}, { status: 502, grpcStatus: GrpcStatus.INTERNAL, message: `request cannot be forwarded: ${(err as Error).message}`, flag: 'DPE' });
      return;
    }
    this.up = up;
    this.upEnded = false;
    up.on('error', noop);
    // A stream ends only once its data is consumed: END_STREAM seen (true) vs. torn down without it.
    up.once('end', () => up === this.up && (this.upEnded = true));
    if (!this.bodyless) {
      up.once('wantTrailers', () => {
        try {
          up.sendTrailers(this.held.requestTrailers ? forwardHeaders(this.held.requestTrailers, NO_PSEUDO) : {});
        } catch {
          // the stream closed meanwhile; its close handler answers for it
        }
      });
      up.on('drain', () => {
        if (up === this.up) this.down.resume();
      });
      // A retry sends again what the earlier attempts were sent.
      if (this.attempt > 0) for (const b of this.copy ?? []) up.write(b);
      if (this.requestRead) up.end();
      else this.read();
    }
    up.on('continue', () => up === this.up && additional(this.down, { ':status': 100 }));
    up.on('headers', (h: IncomingHttpHeaders) => up === this.up && additional(this.down, forwardHeaders(h, RESPONSE_PSEUDO)));
    up.once('response', (h: IncomingHttpHeaders, responseFlags: number) => this.onResponse(up, h, responseFlags));
    up.once('close', () => this.onUpClose(up, session));
  }

  /** Request body: read as it comes, kept while a retry may need it, written to the current attempt. */
  private read(): void {
    if (!this.reading) {
      this.reading = true;
      this.down.on('data', (chunk: Buffer) => this.onRequestData(chunk));
      this.down.once('end', () => {
        this.requestRead = true;
        if (this.up && !this.over) this.up.end();
      });
    }
    this.down.resume();
  }

  private onRequestData(chunk: Buffer): void {
    if (this.over) return; // answered: the rest is dropped
    const up = this.up;
    if (!up) {
      // Between attempts reading is paused; a chunk already on its way is sent by the next attempt with the copy.
      this.copySize += chunk.length;
      this.copy?.push(chunk);
      this.down.pause();
      return;
    }
    if (this.copy) {
      this.copySize += chunk.length;
      if (this.copySize > RETRY_BODY_LIMIT) this.copy = null;
      else this.copy.push(chunk);
    }
    if (!up.write(chunk)) this.down.pause();
  }

  private onResponse(up: ClientHttp2Stream, h: IncomingHttpHeaders, responseFlags: number): void {
    if (up !== this.up) return;
    const o = outcome({ status: Number(h[':status']), grpcStatus: this.plan.grpc ? grpcStatusOf(h['grpc-status']) : undefined });
    if (this.mayRetry(o)) {
      this.retry(o);
      return;
    }
    this.committed = true;
    this.clearTryTimer();
    this.result = o;
    const down = this.down;
    if (down.closed || down.destroyed) return; // its close handler reports the attempt
    const trailersOnly = (responseFlags & NGHTTP2_FLAG_END_STREAM) !== 0;
    const headers = forwardHeaders(h, RESPONSE_PSEUDO);
    if (this.plan.responseEdits) applyHeadEdits(headers, this.plan.responseEdits, false);
    try {
      down.respond(headers, trailersOnly ? { endStream: true } : { waitForTrailers: true });
    } catch (err) {
      this.up = undefined;
      up.close(NGHTTP2_INTERNAL_ERROR);
      this.committed = false; // nothing went down: the answer below can still be sent
      this.end(o, { status: 502, grpcStatus: GrpcStatus.INTERNAL, message: `upstream response cannot be forwarded: ${(err as Error).message}`, flag: 'UPE' });
      return;
    }
    if (trailersOnly) {
      this.responseSubmitted = true;
      up.resume(); // nothing to read, but the stream ends (and closes) only once read
      return;
    }
    let responseTrailers: IncomingHttpHeaders | undefined;
    up.once('trailers', (t: IncomingHttpHeaders) => {
      responseTrailers = t;
      if (this.plan.grpc) o.grpcStatus = grpcStatusOf(t['grpc-status']) ?? o.grpcStatus;
    });
    down.once('wantTrailers', () => {
      try {
        down.sendTrailers(responseTrailers ? forwardHeaders(responseTrailers, NO_PSEUDO) : {});
      } catch {
        // the client went away meanwhile
      }
      this.responseSubmitted = true;
      // Not from inside this callback: it runs within nghttp2's send loop, where a reset would be sent
      // ahead of the trailers just submitted (and they would be dropped).
      if (this.onResponseSubmitted) setImmediate(this.onResponseSubmitted);
    });
    up.pipe(down);
  }

  /** The attempt's stream is over, normally or by a reset. */
  private onUpClose(up: ClientHttp2Stream, session: ClientHttp2Session): void {
    if (up !== this.up) return; // an attempt given up on (retried, timed out, client gone)
    this.up = undefined;
    const code = up.rstCode ?? NGHTTP2_NO_ERROR;
    const down = this.down;
    if (!this.committed) {
      // A session that died (connection lost) is the upstream going away, not a stream error.
      if (session.destroyed && code !== NGHTTP2_REFUSED_STREAM) {
        this.failed({ reset: true }, { status: 503, grpcStatus: GrpcStatus.UNAVAILABLE, message: 'upstream connection terminated before response headers', flag: 'UC' });
        return;
      }
      const refused = code === NGHTTP2_REFUSED_STREAM;
      this.failed(
        { reset: true, refused },
        { status: refused ? 503 : 502, grpcStatus: grpcStatusForReset(code), message: `upstream reset the stream before response headers (${h2ErrorName(code)})`, flag: 'UR' },
      );
      return;
    }
    if (code !== NGHTTP2_NO_ERROR || !this.upEnded || this.result === undefined) {
      if (!down.closed) down.close(code === NGHTTP2_NO_ERROR ? NGHTTP2_INTERNAL_ERROR : code);
      this.plan.onError?.(`upstream reset the stream after response headers (${h2ErrorName(code)})`);
      this.end({ reset: true });
      return;
    }
    // The response is complete. If the client is still sending, tell it to stop, as the server did
    // (RFC 9113 8.1: RST_STREAM NO_ERROR after a complete response), but only once the trailers are
    // out: 'finish' comes before them, and a reset sent then would overtake them.
    if (!down.readableEnded && !down.closed) {
      const stop = (): void => {
        if (!down.closed && !down.readableEnded) down.close(NGHTTP2_NO_ERROR);
      };
      if (this.responseSubmitted) stop();
      else this.onResponseSubmitted = stop;
    }
    this.end(this.result);
  }

  /** Whether this outcome may be retried now: nothing went down, attempts left, the body can be sent again, the plan says so. */
  private mayRetry(o: ExchangeOutcome): boolean {
    const r = this.plan.retry;
    if (!r || this.committed || this.over || this.attempt >= r.attempts || this.copy === null || !r.retriable(o)) return false;
    // A retry gives its own slot back (by ending its attempt) before asking for the next one.
    if (this.attempt > 0) this.reportAttempt(o);
    return r.admit();
  }

  private retry(o: ExchangeOutcome): void {
    this.reportAttempt(o);
    const up = this.up;
    this.up = undefined;
    if (up && !up.closed) up.close(NGHTTP2_CANCEL);
    this.clearTryTimer();
    this.attempt++;
    if (this.reading) this.down.pause();
    const plan = this.plan.retry!;
    setTimeout(() => {
      if (this.over) {
        plan.cancel();
        return;
      }
      const next = plan.next();
      if ('endpoint' in next) this.dispatch(next);
      else this.end(undefined, next);
    }, retryBackoffMs(this.attempt)).unref();
  }

  /** An attempt ended without a usable response: retried when allowed, else answered with `a`. */
  private failed(o: Partial<ExchangeOutcome>, a: H2Answer): void {
    const full = outcome(o);
    this.up = undefined;
    if (this.mayRetry(full)) {
      this.retry(full);
      return;
    }
    this.plan.onError?.(a.message);
    const tries = this.attempt + 1;
    this.end(full, tries > 1 && RETRIED_FLAGS.has(a.flag ?? '') ? { ...a, message: `${a.message} after ${tries} attempts`, flag: 'URX' } : a);
  }

  private timedOut(perTry: boolean): void {
    if (this.over) return;
    const up = this.up;
    this.up = undefined;
    if (up && !up.closed) up.close(NGHTTP2_CANCEL);
    if (this.committed) {
      // Part of the response is out already: the only honest signal left is to reset the stream.
      this.plan.onError?.('request timed out in the middle of the response');
      if (!this.down.closed) this.down.close(NGHTTP2_CANCEL);
      this.end({ timeout: true });
      return;
    }
    if (perTry) {
      this.tryTimer = undefined;
      this.failed({ timeout: true }, TIMEOUT);
      return;
    }
    this.timer = undefined;
    this.plan.onError?.('request timeout');
    this.end({ timeout: true }, TIMEOUT); // the whole request is out of time: no retry
  }

  /** The client is gone or reset the stream: the server should stop too. */
  private onDownClose(): void {
    if (this.over) return;
    const up = this.up;
    this.up = undefined;
    if (this.committed && this.upEnded && this.result) {
      this.end(this.result); // the whole response came: its stream just has not reported its close yet
      return;
    }
    if (up && !up.closed && !up.destroyed) {
      // A reset the client sent goes up as it is; a client connection that is just gone is a CANCEL.
      const code = this.down.rstCode;
      const reset = code !== undefined && code !== NGHTTP2_NO_ERROR && this.down.session !== undefined && !this.down.session.destroyed;
      up.close(reset ? code : NGHTTP2_CANCEL);
    }
    this.end({}); // cancelled: not the endpoint's fault
  }

  /** The exchange is over: timers stop, the attempt is reported, and `a` is answered when given. */
  private end(o: Partial<ExchangeOutcome> | undefined, a?: H2Answer): void {
    if (this.over) return;
    this.over = true;
    if (this.timer) clearTimeout(this.timer);
    this.clearTryTimer();
    if (o) this.reportAttempt(o);
    if (a) answerStream(this.down, this.plan.grpc, a);
  }

  /** Reports how the current attempt ended, once. */
  private reportAttempt(o: Partial<ExchangeOutcome>): void {
    if (this.reported) return;
    this.reported = true;
    this.target.done?.(outcome(o));
  }

  private clearTryTimer(): void {
    if (this.tryTimer) clearTimeout(this.tryTimer);
    this.tryTimer = undefined;
  }
}

function additional(down: ServerHttp2Stream, headers: OutgoingHttpHeaders): void {
  if (down.headersSent || down.closed || down.destroyed) return;
  try {
    down.additionalHeaders(headers);
  } catch {
    // informational only: losing it loses nothing the final response does not say
  }
}
