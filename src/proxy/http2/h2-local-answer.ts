// What the proxy answers on an HTTP/2 stream by itself: one answer, sent the gRPC way (trailers-only, grpc-status) to gRPC callers and as an HTTP status to others.

import { constants, type OutgoingHttpHeaders, type ServerHttp2Stream } from 'node:http2';
import { encodeGrpcMessage } from './grpc-status';
import type { HeaderEdits } from './h2-headers';

/** The Envoy response flag header the HTTP/1 path sets too. */
export const RESPONSE_FLAGS_HEADER = 'x-mesh-response-flags';

/** An answer the proxy makes itself. */
export interface H2Answer {
  /** The HTTP status of the plain HTTP/2 form. */
  readonly status: number;
  /** The grpc-status of the gRPC form; undefined: answered as plain HTTP/2 even to a gRPC caller (a redirect, a direct response). */
  readonly grpcStatus?: number;
  /** Answered the gRPC way to every caller (a fault abort that names a grpcStatus, as Envoy does). */
  readonly grpcOnly?: boolean;
  /** grpc-message of the gRPC form; the plain form's text body (with a newline) unless `body` is given. */
  readonly message: string;
  /** The plain form's body exactly (a direct response's). */
  readonly body?: string;
  /** The response flag; absent on answers a route configured (redirect, direct response). */
  readonly flag?: string;
  /** More response fields (lower-case names). */
  readonly headers?: HeaderEdits;
}

/**
 * Answers a stream: for a gRPC caller a trailers-only response (HTTP 200, grpc-status, grpc-message), otherwise the
 * HTTP status with the text. A stream whose response headers already went out can only be reset.
 */
export function answerStream(down: ServerHttp2Stream, grpc: boolean, a: H2Answer): void {
  if (down.closed || down.destroyed) return;
  if (down.headersSent) {
    down.close(constants.NGHTTP2_INTERNAL_ERROR);
    return;
  }
  const asGrpc = a.grpcStatus !== undefined && (grpc || a.grpcOnly === true);
  const body = asGrpc ? '' : (a.body ?? `${a.message}\n`);
  const headers: OutgoingHttpHeaders = asGrpc
    ? { ':status': 200, 'content-type': 'application/grpc', 'grpc-status': String(a.grpcStatus) }
    : { ':status': a.status, ...(body ? { 'content-type': 'text/plain; charset=utf-8' } : {}) };
  if (asGrpc && a.message) headers['grpc-message'] = encodeGrpcMessage(a.message);
  if (a.flag) headers[RESPONSE_FLAGS_HEADER] = a.flag;
  if (a.headers) for (const [k, v] of a.headers) headers[k] = v;
  try {
    if (!body) down.respond(headers, { endStream: true });
    else {
      down.respond(headers);
      down.end(body);
    }
  } catch {
    down.close(constants.NGHTTP2_INTERNAL_ERROR);
  }
  // The caller may still be sending: its bytes are read and dropped, so its stream can finish.
  if (!down.readableEnded) down.resume();
}
