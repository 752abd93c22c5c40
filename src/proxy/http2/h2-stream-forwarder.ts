// Carries one HTTP/2 stream to the next hop over a shared session: headers, streamed bodies and trailers both ways, resets and cancels mapped.
//
// The life of a forwarded stream:
//   1. the request headers go on with pseudo-headers and edits applied (h2-headers.ts); a request
//      that is not over yet keeps its stream open for trailers (waitForTrailers), so request
//      trailers reach the server too;
//   2. the request body is piped up (HTTP/2 flow control is the back-pressure); the response
//      headers come back, then the body is piped down and the upstream trailers (grpc-status,
//      grpc-message) are sent after it; a trailers-only response (gRPC errors) stays trailers-only;
//   3. a reset from upstream before any response headers is answered here: for gRPC with the
//      status the caller would have seen had it been reset directly (grpc-status.ts), otherwise
//      502; after response headers, the reset is passed down with its code;
//   4. a downstream reset (a client CANCEL) is passed up with its code, so the server stops work.
// `done` is told the outcome once, for the cluster's lease and outlier detection.

import { constants, type ClientHttp2Session, type ClientHttp2Stream, type IncomingHttpHeaders, type OutgoingHttpHeaders, type ServerHttp2Stream } from 'node:http2';
import type { Outcome } from '../outlier-detector';
import { encodeGrpcMessage, GrpcStatus, grpcStatusForReset, h2ErrorName, httpStatusForGrpc } from './grpc-status';
import { forwardHeaders, NO_PSEUDO, REQUEST_PSEUDO, RESPONSE_PSEUDO, type HeaderEdits } from './h2-headers';

const { NGHTTP2_FLAG_END_STREAM, NGHTTP2_NO_ERROR, NGHTTP2_CANCEL, NGHTTP2_INTERNAL_ERROR, NGHTTP2_REFUSED_STREAM } = constants;

/** The Envoy response flag header the HTTP/1 path sets too. */
export const RESPONSE_FLAGS_HEADER = 'x-mesh-response-flags';

export interface ForwardOptions {
  /** Answer local failures the gRPC way (trailers-only with grpc-status) instead of with an HTTP status. */
  readonly grpc: boolean;
  /** Fields set on the request upstream, replacing any the caller sent. */
  readonly edits?: HeaderEdits;
  /** Called once when the exchange is over: the response status (for gRPC, grpc-status as HTTP), 'reset' or 'cancelled'. */
  readonly done: (outcome: Outcome, detail?: string) => void;
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

/** Forwards a held stream over `session`. Never throws: failures become a local reply or a reset. */
export function forwardStream(held: HeldStream, headers: IncomingHttpHeaders, flags: number, session: ClientHttp2Session, opts: ForwardOptions): void {
  const { down } = held;
  const requestEnded = (flags & NGHTTP2_FLAG_END_STREAM) !== 0 || down.readableEnded;
  let up: ClientHttp2Stream;
  try {
    up = session.request(forwardHeaders(headers, REQUEST_PSEUDO, opts.edits), requestEnded ? { endStream: true } : { waitForTrailers: true });
  } catch (err) {
    // The session went away between pick and request (GOAWAY, closed): nothing was sent, like a refused stream.
    const code = (err as NodeJS.ErrnoException).code ?? '';
    const gone = code === 'ERR_HTTP2_GOAWAY_SESSION' || code === 'ERR_HTTP2_INVALID_SESSION';
    if (gone) localReply(down, opts.grpc, 503, GrpcStatus.UNAVAILABLE, 'upstream connection closed before the request was sent', 'UC');
    else localReply(down, opts.grpc, 502, GrpcStatus.INTERNAL, `request cannot be forwarded: ${(err as Error).message}`, 'DPE');
    opts.done(gone ? 'reset' : 'cancelled', (err as Error).message);
    return;
  }
  up.on('error', noop);
  // A stream ends only once its data is consumed: END_STREAM seen (true) vs. torn down without it.
  let upEnded = false;
  up.once('end', () => (upEnded = true));

  let outcome: Outcome | undefined;
  /** The whole response is handed to HTTP/2 (headers, body and trailers): nothing can overtake it now. */
  let responseSubmitted = false;
  let onResponseSubmitted: (() => void) | undefined;
  let settled = false;
  const settle = (o: Outcome, detail?: string): void => {
    if (settled) return;
    settled = true;
    opts.done(o, detail);
  };

  // 1 + 2: request body and trailers upstream.
  if (!requestEnded) {
    up.once('wantTrailers', () => {
      try {
        up.sendTrailers(held.requestTrailers ? forwardHeaders(held.requestTrailers, NO_PSEUDO) : {});
      } catch {
        // the stream closed meanwhile; its close handler answers for it
      }
    });
    down.pipe(up);
  }

  // 2: response headers, body and trailers downstream.
  up.on('continue', () => additional(down, { ':status': 100 }));
  up.on('headers', (h: IncomingHttpHeaders) => additional(down, forwardHeaders(h, RESPONSE_PSEUDO)));
  up.once('response', (h: IncomingHttpHeaders, responseFlags: number) => {
    const status = Number(h[':status']);
    outcome = (opts.grpc && httpStatusForGrpc(h['grpc-status'])) || status;
    if (down.closed || down.destroyed) return;
    const trailersOnly = (responseFlags & NGHTTP2_FLAG_END_STREAM) !== 0;
    try {
      down.respond(forwardHeaders(h, RESPONSE_PSEUDO), trailersOnly ? { endStream: true } : { waitForTrailers: true });
    } catch (err) {
      up.close(NGHTTP2_INTERNAL_ERROR);
      localReply(down, opts.grpc, 502, GrpcStatus.INTERNAL, `upstream response cannot be forwarded: ${(err as Error).message}`, 'UPE');
      return;
    }
    if (trailersOnly) {
      responseSubmitted = true;
      up.resume(); // nothing to read, but the stream ends (and closes) only once read
      return;
    }
    let responseTrailers: IncomingHttpHeaders | undefined;
    up.once('trailers', (t: IncomingHttpHeaders) => {
      responseTrailers = t;
      if (opts.grpc) outcome = httpStatusForGrpc(t['grpc-status']) ?? outcome;
    });
    down.once('wantTrailers', () => {
      try {
        down.sendTrailers(responseTrailers ? forwardHeaders(responseTrailers, NO_PSEUDO) : {});
      } catch {
        // the client went away meanwhile
      }
      responseSubmitted = true;
      // Not from inside this callback: it runs within nghttp2's send loop, where a reset would be sent
      // ahead of the trailers just submitted (and they would be dropped).
      if (onResponseSubmitted) setImmediate(onResponseSubmitted);
    });
    up.pipe(down);
  });

  // 3: the upstream stream is over, normally or by a reset.
  up.once('close', () => {
    const code = up.rstCode ?? NGHTTP2_NO_ERROR;
    if (!down.headersSent) {
      if (down.closed || down.destroyed) return settle('cancelled');
      // A session that died (connection lost) is the upstream going away, not a stream error.
      if (session.destroyed && code !== NGHTTP2_REFUSED_STREAM) {
        localReply(down, opts.grpc, 503, GrpcStatus.UNAVAILABLE, 'upstream connection terminated before response headers', 'UC');
        return settle('reset', 'connection terminated');
      }
      localReply(down, opts.grpc, code === NGHTTP2_REFUSED_STREAM ? 503 : 502, grpcStatusForReset(code), `upstream reset the stream before response headers (${h2ErrorName(code)})`, 'UR');
      return settle('reset', h2ErrorName(code));
    }
    if (code !== NGHTTP2_NO_ERROR || !upEnded || outcome === undefined) {
      if (!down.closed) down.close(code === NGHTTP2_NO_ERROR ? NGHTTP2_INTERNAL_ERROR : code);
      return settle('reset', h2ErrorName(code));
    }
    // The response is complete. If the client is still sending, tell it to stop, as the server did
    // (RFC 9113 8.1: RST_STREAM NO_ERROR after a complete response), but only once the trailers are
    // out: 'finish' comes before them, and a reset sent then would overtake them.
    if (!down.readableEnded && !down.closed) {
      const stop = (): void => {
        if (!down.closed && !down.readableEnded) down.close(NGHTTP2_NO_ERROR);
      };
      if (responseSubmitted) stop();
      else onResponseSubmitted = stop;
    }
    settle(outcome);
  });

  // 4: the client is gone or reset the stream: the server should stop too.
  down.once('close', () => {
    if (up.closed || up.destroyed) return;
    // A reset the client sent goes up as it is; a client connection that is just gone is a CANCEL.
    const code = down.rstCode;
    const reset = code !== undefined && code !== NGHTTP2_NO_ERROR && down.session !== undefined && !down.session.destroyed;
    up.close(reset ? code : NGHTTP2_CANCEL);
    settle('cancelled', `downstream ${h2ErrorName(code ?? NGHTTP2_CANCEL)}`);
  });
}

/**
 * Answers a stream from the proxy itself: for gRPC a trailers-only response (HTTP 200, grpc-status,
 * grpc-message), otherwise `httpStatus` with the message as text. Both carry the response flag.
 * A stream whose headers already went out can only be reset.
 */
export function localReply(down: ServerHttp2Stream, grpc: boolean, httpStatus: number, grpcStatus: number, message: string, flag: string, extra?: HeaderEdits): void {
  if (down.closed || down.destroyed) return;
  if (down.headersSent) {
    down.close(NGHTTP2_INTERNAL_ERROR);
    return;
  }
  const headers: OutgoingHttpHeaders = grpc
    ? { ':status': 200, 'content-type': 'application/grpc', 'grpc-status': String(grpcStatus), 'grpc-message': encodeGrpcMessage(message), [RESPONSE_FLAGS_HEADER]: flag }
    : { ':status': httpStatus, 'content-type': 'text/plain; charset=utf-8', [RESPONSE_FLAGS_HEADER]: flag };
  if (extra) for (const [k, v] of extra) headers[k] = v;
  try {
    if (grpc) down.respond(headers, { endStream: true });
    else {
      down.respond(headers);
      down.end(`${message}\n`);
    }
  } catch {
    down.close(NGHTTP2_INTERNAL_ERROR);
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
