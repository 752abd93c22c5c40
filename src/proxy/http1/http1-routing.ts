// What HTTP/1.1 brings to the outbound router: a request head as route matching sees it, local answers as ready responses, and mirroring.

import { STATUS_CODES } from 'node:http';
import type { RouteRequest } from '../../policy';
import type { ConnectionPool } from '../connection-pool';
import { mirrorRequest } from '../mirror';
import type { RouterProtocol } from '../outbound-http-router';
import { headerValue, simpleResponse, type HttpHead } from './http1-head';
import { overflowResponse } from './http1-session';

const flagged = (status: number, text: string, flag: string, extra: readonly (readonly [string, string])[] = []): Buffer =>
  simpleResponse(status, reason(status), text ? `${text}\n` : '', [['x-mesh-response-flags', flag], ...extra]);
const reason = (s: number): string => STATUS_CODES[s] ?? 'Status';
const NO_ROUTE = flagged(404, 'no route matched the request', 'NR');

/** A request head seen through the interface route matching needs (no copies of headers). */
class HeadRequest implements RouteRequest {
  constructor(
    private readonly h: HttpHead,
    /** The port the app addressed: this upstream's local port (for `match.port`). */
    readonly port: number,
    /** The calling workload's labels (for `match.sourceLabels`). */
    readonly sourceLabels: Readonly<Record<string, string>>,
    /** The client's address (for `consistentHash.useSourceIp`). */
    readonly sourceAddress: string,
  ) {}
  get method(): string {
    return this.h.method;
  }
  get path(): string {
    return this.h.target;
  }
  get authority(): string {
    return headerValue(this.h, 'host') ?? '';
  }
  header(name: string): string | undefined {
    return headerValue(this.h, name);
  }
}

/** HTTP/1.1 in the router: answers are complete responses (Buffers) the session writes as they are. */
export const HTTP1_ROUTING: RouterProtocol<HttpHead, Buffer, ConnectionPool> = {
  request: (head, port, sourceLabels, sourceAddress) => new HeadRequest(head, port, sourceLabels, sourceAddress),
  answers: {
    noRoute: NO_ROUTE,
    abort: (httpStatus, grpcStatus) => {
      const status = httpStatus ?? 200;
      if (grpcStatus === undefined) return flagged(status, 'fault filter abort', 'FI');
      return flagged(status, '', 'FI', [['grpc-status', String(grpcStatus)], ['content-type', 'application/grpc']]);
    },
    redirect: (code, location) => simpleResponse(code, reason(code), '', [['location', location]]),
    directResponse: (status, body) => simpleResponse(status, reason(status), body),
    noEndpoint: (message) => flagged(503, message, 'UH'),
    overflow: overflowResponse,
  },
  // Only body-less requests: the copy is sent from the head alone.
  mirror: {
    accepts: (head) => !head.upgrade && head.contentLength <= 0 && !head.chunked,
    send: mirrorRequest,
  },
};
