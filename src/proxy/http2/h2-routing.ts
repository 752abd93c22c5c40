// What HTTP/2 and gRPC bring to the outbound router: a stream's request headers as route matching sees them, and the router's local answers in their HTTP/2 form.

import type { IncomingHttpHeaders } from 'node:http2';
import type { RouteRequest } from '../../policy';
import { OVERFLOW_HEADER, OVERFLOW_RESPONSE_FLAG, OVERFLOW_STATUS } from '../circuit-breaker';
import type { RouterProtocol } from '../outbound-http-router';
import { GrpcStatus, grpcStatusForHttp } from './grpc-status';
import type { H2Answer } from './h2-local-answer';
import type { H2SessionPool } from './h2-session-pool';

const first = (v: string | string[] | undefined): string | undefined => (Array.isArray(v) ? v[0] : v);

/** A stream's request headers as route matching sees them: `:method`, `:path`, `:authority` (or `host`), lower-case fields. */
export class H2Request implements RouteRequest {
  constructor(
    private readonly h: IncomingHttpHeaders,
    /** The port the app addressed: this upstream's local port (for `match.port`). */
    readonly port: number,
    /** The calling workload's labels (for `match.sourceLabels`). */
    readonly sourceLabels: Readonly<Record<string, string>>,
    /** The client's address (for `consistentHash.useSourceIp`). */
    readonly sourceAddress: string,
  ) {}
  get method(): string {
    return first(this.h[':method']) ?? 'GET';
  }
  get path(): string {
    return first(this.h[':path']) ?? '/';
  }
  get authority(): string {
    return first(this.h[':authority']) ?? first(this.h.host) ?? '';
  }
  header(name: string): string | undefined {
    return first(this.h[name]);
  }
}

const NO_ROUTE: H2Answer = { status: 404, grpcStatus: GrpcStatus.UNIMPLEMENTED, message: 'no route matched the request', flag: 'NR' };

/** HTTP/2 in the router: answers say what to send on the stream; gRPC callers get them trailers-only. No mirroring yet. */
export const H2_ROUTING: RouterProtocol<IncomingHttpHeaders, H2Answer, H2SessionPool> = {
  request: (headers, port, sourceLabels, sourceAddress) => new H2Request(headers, port, sourceLabels, sourceAddress),
  answers: {
    noRoute: NO_ROUTE,
    abort: (httpStatus, grpcStatus) =>
      grpcStatus !== undefined
        ? { status: httpStatus ?? 200, grpcStatus, grpcOnly: true, message: 'fault filter abort', flag: 'FI' }
        : { status: httpStatus ?? 503, grpcStatus: grpcStatusForHttp(httpStatus ?? 503), message: 'fault filter abort', flag: 'FI' },
    redirect: (code, location) => ({ status: code, message: '', body: '', headers: [['location', location]] }),
    directResponse: (status, body) => ({ status, message: '', body }),
    noEndpoint: (message) => ({ status: 503, grpcStatus: GrpcStatus.UNAVAILABLE, message, flag: 'UH' }),
    overflow: (kind) => ({ status: OVERFLOW_STATUS, grpcStatus: GrpcStatus.UNAVAILABLE, message: `upstream overflow: ${kind}`, flag: OVERFLOW_RESPONSE_FLAG, headers: [[OVERFLOW_HEADER, kind]] }),
  },
};
