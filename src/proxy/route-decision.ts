// What the router decides for one request and how its attempts are retried: the contract between the router and a protocol's session (HTTP/1.1 or HTTP/2).

import type { Endpoint } from '../registry';
import type { ConnectionPool } from './connection-pool';
import type { HeadEdits } from './http1/http1-head';
import { httpStatusForGrpcCode } from './http2/grpc-status';
import type { Outcome } from './outlier-detector';

/** How one attempt ended, for load balancing, outlier detection, retries and stats. */
export interface ExchangeOutcome {
  /** Response status from upstream (0 when none came). */
  status: number;
  /** The upstream could not be reached. */
  connectFailure: boolean;
  /** The upstream closed before a complete response. */
  reset: boolean;
  /** The attempt ran out of time. */
  timeout: boolean;
  /** HTTP/2: the upstream refused the stream (RST_STREAM REFUSED_STREAM, or a GOAWAY before it was sent): nothing was processed. */
  refused?: boolean;
  /** gRPC: the call's grpc-status (from the response headers of a trailers-only answer, else from the trailers). */
  grpcStatus?: number;
}

/** Where one attempt goes: an endpoint and the pool of connections (or HTTP/2 sessions) that reaches it. */
export interface Target<P = ConnectionPool> {
  readonly endpoint: Endpoint;
  readonly pool: P;
  /** Called once when this attempt ends. */
  readonly done?: (outcome: ExchangeOutcome) => void;
}

/**
 * Retries of one request: `next()` picks the target of the next attempt (Envoy picks a host again per try), or gives
 * the protocol's local answer (`A`) when there is none to pick.
 */
export interface RetryPlan<A = Buffer, P = ConnectionPool> {
  readonly attempts: number;
  /** 0 = none. */
  readonly perTryTimeoutMs: number;
  retriable(outcome: ExchangeOutcome): boolean;
  /** Takes a retry slot of the cluster's circuit breaker (maxRetries); false = no retry now. */
  admit(): boolean;
  /** The next attempt's target; its done() gives the retry slot back (a local answer gives it back at once). */
  next(): Target<P> | A;
  /** Gives back a slot taken by admit() whose attempt never started (the request ended while waiting). */
  cancel(): void;
}

/** What to do with one request: answer it here (`A` is the protocol's form of a local answer), or forward it. */
export type Decision<A = Buffer, P = ConnectionPool> =
  | { readonly kind: 'respond'; readonly response: A }
  | {
      readonly kind: 'forward';
      readonly target: Target<P>;
      readonly edits?: HeadEdits;
      readonly responseEdits?: HeadEdits;
      /** Whole-request timeout from the first attempt; 0 or absent = none. */
      readonly timeoutMs?: number;
      readonly retry?: RetryPlan<A, P>;
    };

/** An attempt's outcome as the outlier detector counts it; a gRPC call counts by its grpc-status, mapped as Envoy maps it. */
export function outlierOutcome(o: ExchangeOutcome): Outcome {
  if (o.connectFailure) return 'connect-failed';
  if (o.timeout) return 'timeout';
  if (o.reset && o.status === 0) return 'reset';
  if (o.grpcStatus !== undefined && o.status === 200) return httpStatusForGrpcCode(o.grpcStatus);
  return o.status || 'cancelled';
}

/** Request bodies up to this size are kept so a retry can send them again; a larger one is never retried. */
export const RETRY_BODY_LIMIT = 64 * 1024;
const RETRY_BACKOFF_BASE_MS = 25;

/** The wait before retry number `attempt` (1, 2, ...): random below 25 ms × 2^attempt (Envoy's jittered exponential backoff). */
export function retryBackoffMs(attempt: number): number {
  return Math.random() * RETRY_BACKOFF_BASE_MS * 2 ** attempt;
}

/** gRPC retry conditions and the grpc-status each stands for (Envoy's x-envoy-retry-grpc-on). */
const GRPC_CONDITIONS: readonly (readonly [string, number])[] = [
  ['cancelled', 1],
  ['deadline-exceeded', 4],
  ['resource-exhausted', 8],
  ['internal', 13],
  ['unavailable', 14],
];

/**
 * Whether Istio/Envoy retry conditions `on` (with the bare status codes `codes`) ask for a retry after `o`. The gRPC
 * conditions match the grpc-status of an answer that carries it in its headers (a trailers-only answer: nothing else
 * of a gRPC response can be retried, since its body would have started); `refused-stream` matches an HTTP/2 refusal.
 */
export function retriable(on: ReadonlySet<string>, codes: ReadonlySet<number>, o: ExchangeOutcome): boolean {
  const noResponse = o.status === 0;
  if (o.connectFailure && (on.has('connect-failure') || on.has('5xx') || on.has('gateway-error') || on.has('reset'))) return true;
  if (o.refused && on.has('refused-stream')) return true;
  if (noResponse && (o.reset || o.timeout) && (on.has('reset') || on.has('5xx'))) return true;
  if (o.timeout && on.has('gateway-error')) return true;
  if (o.status >= 500 && on.has('5xx')) return true;
  if ((o.status === 502 || o.status === 503 || o.status === 504) && on.has('gateway-error')) return true;
  if (o.status === 409 && on.has('retriable-4xx')) return true;
  if (o.status > 0 && on.has('retriable-status-codes') && codes.has(o.status)) return true;
  if (o.grpcStatus !== undefined) for (const [name, code] of GRPC_CONDITIONS) if (o.grpcStatus === code && on.has(name)) return true;
  return false;
}
