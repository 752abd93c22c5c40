// gRPC status codes as the proxy needs them: what an HTTP/2 reset means to a gRPC caller, what a gRPC status means to outlier detection, and grpc-message encoding.

import { constants } from 'node:http2';

/** The gRPC status codes (grpc/doc/statuscodes.md). */
export const GrpcStatus = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
} as const;

/**
 * The status a gRPC client reports when its stream is reset with `code` before any status arrived
 * (grpc/doc/PROTOCOL-HTTP2.md, "Errors"). The proxy answers with this status itself when it has
 * not sent response headers yet, so the caller sees what it would have seen talking directly.
 */
export function grpcStatusForReset(code: number): number {
  switch (code) {
    case constants.NGHTTP2_REFUSED_STREAM:
      return GrpcStatus.UNAVAILABLE; // not processed: safe to retry
    case constants.NGHTTP2_CANCEL:
      return GrpcStatus.CANCELLED;
    case constants.NGHTTP2_ENHANCE_YOUR_CALM:
      return GrpcStatus.RESOURCE_EXHAUSTED;
    case constants.NGHTTP2_INADEQUATE_SECURITY:
      return GrpcStatus.PERMISSION_DENIED;
    default:
      return GrpcStatus.INTERNAL;
  }
}

/** HTTP status per gRPC status (Envoy's Grpc::Utility::grpcToHttpStatus), so outlier detection sees gRPC failures as 5xx. */
const HTTP_FOR_GRPC = [200, 499, 500, 400, 504, 404, 409, 403, 429, 400, 409, 400, 501, 500, 503, 500, 401] as const;

/** The HTTP status that stands for a grpc-status header value; undefined when the value is absent or not a number. */
export function httpStatusForGrpc(value: string | string[] | undefined): number | undefined {
  const code = grpcStatusOf(value);
  return code === undefined ? undefined : httpStatusForGrpcCode(code);
}

/** The HTTP status that stands for a gRPC status code (500 for codes beyond the known ones). */
export function httpStatusForGrpcCode(code: number): number {
  return HTTP_FOR_GRPC[code] ?? 500;
}

/** A grpc-status header value as a number; undefined when absent or not a number. */
export function grpcStatusOf(value: string | string[] | undefined): number | undefined {
  return typeof value === 'string' && /^\d{1,3}$/.test(value) ? Number(value) : undefined;
}

/**
 * The gRPC status a caller sees for an HTTP status that came without one (grpc/doc/http-grpc-status-mapping.md):
 * how the proxy answers a gRPC caller when its answer is an HTTP status, such as a fault abort with httpStatus.
 */
export function grpcStatusForHttp(status: number): number {
  switch (status) {
    case 400:
      return GrpcStatus.INTERNAL;
    case 401:
      return GrpcStatus.UNAUTHENTICATED;
    case 403:
      return GrpcStatus.PERMISSION_DENIED;
    case 404:
      return GrpcStatus.UNIMPLEMENTED;
    case 429:
    case 502:
    case 503:
    case 504:
      return GrpcStatus.UNAVAILABLE;
    default:
      return GrpcStatus.UNKNOWN;
  }
}

/** True for application/grpc, application/grpc+proto, application/grpc-web... (the gRPC content types). */
export function isGrpcContentType(value: string | string[] | undefined): boolean {
  return typeof value === 'string' && value.startsWith('application/grpc');
}

/** Percent-encodes a grpc-message value as the gRPC spec asks: bytes outside printable ASCII, and "%". */
export function encodeGrpcMessage(text: string): string {
  let out = '';
  for (const byte of Buffer.from(text, 'utf8')) {
    out += byte >= 0x20 && byte <= 0x7e && byte !== 0x25 ? String.fromCharCode(byte) : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

/** The name of an HTTP/2 error code, for messages and logs ("CANCEL", "REFUSED_STREAM"...). */
export function h2ErrorName(code: number): string {
  return H2_ERROR_NAMES[code] ?? `0x${code.toString(16)}`;
}

const H2_ERROR_NAMES: readonly string[] = [
  'NO_ERROR',
  'PROTOCOL_ERROR',
  'INTERNAL_ERROR',
  'FLOW_CONTROL_ERROR',
  'SETTINGS_TIMEOUT',
  'STREAM_CLOSED',
  'FRAME_SIZE_ERROR',
  'REFUSED_STREAM',
  'CANCEL',
  'COMPRESSION_ERROR',
  'CONNECT_ERROR',
  'ENHANCE_YOUR_CALM',
  'INADEQUATE_SECURITY',
  'HTTP_1_1_REQUIRED',
];
