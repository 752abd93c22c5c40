// One VirtualService HTTP rule: its matches and what it does (route, redirect, direct response) with rewrite, timeout, retries, fault, mirror.

import type { FieldReader } from '../config';
import { readDuration, readInteger, readPercent, rejectUnimplemented, oneOf } from './fields';
import { readHttpMatch, type HttpMatchRequest } from './http-match';
import { readDestination, readHeaders, readRouteDestinations, type Destination, type Headers, type RouteDestination } from './route-destination';

/** `rewrite`: replaces the matched path part (Istio/Envoy prefix rewrite) and/or the authority before forwarding. */
export interface HttpRewrite {
  readonly uri?: string;
  readonly authority?: string;
}

/** `redirect`: answers with a redirect instead of forwarding. */
export interface HttpRedirect {
  readonly uri?: string;
  readonly authority?: string;
  /** @default 301 */
  readonly redirectCode: number;
}

/** `directResponse`: answers with a fixed status and body instead of forwarding. */
export interface HttpDirectResponse {
  readonly status: number;
  readonly body?: string;
}

/** `retries`: `retryOn` holds the comma-separated conditions as written (absent: Istio's default conditions). */
export interface HttpRetry {
  readonly attempts: number;
  readonly perTryTimeoutMs?: number;
  readonly retryOn?: readonly string[];
}

/** `fault`: percentages are 0..100. */
export interface HttpFaultInjection {
  readonly delay?: { readonly percent: number; readonly fixedDelayMs: number };
  readonly abort?: { readonly percent: number; readonly httpStatus?: number; readonly grpcStatus?: string };
}

/** One entry of `http[]`, with durations in milliseconds. */
export interface HttpRoute {
  readonly name?: string;
  /** Any entry matching is enough; empty = every request. */
  readonly match: readonly HttpMatchRequest[];
  readonly route: readonly RouteDestination[];
  readonly redirect?: HttpRedirect;
  readonly directResponse?: HttpDirectResponse;
  readonly rewrite?: HttpRewrite;
  readonly timeoutMs?: number;
  readonly retries?: HttpRetry;
  readonly fault?: HttpFaultInjection;
  readonly mirror?: Destination;
  /** Percentage of requests mirrored. @default 100 when mirror is set */
  readonly mirrorPercent?: number;
  readonly headers?: Headers;
}

/** The retry conditions Istio accepts in retryOn (besides bare HTTP status codes). */
export const RETRY_ON_CONDITIONS: readonly string[] = [
  '5xx', 'gateway-error', 'reset', 'connect-failure', 'retriable-4xx', 'refused-stream', 'retriable-status-codes',
  'cancelled', 'deadline-exceeded', 'internal', 'resource-exhausted', 'unavailable',
];

/** gRPC status names accepted by fault.abort.grpcStatus, with their codes. */
export const GRPC_STATUS_CODES: Readonly<Record<string, number>> = {
  OK: 0, CANCELLED: 1, UNKNOWN: 2, INVALID_ARGUMENT: 3, DEADLINE_EXCEEDED: 4, NOT_FOUND: 5, ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7, RESOURCE_EXHAUSTED: 8, FAILED_PRECONDITION: 9, ABORTED: 10, OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12, INTERNAL: 13, UNAVAILABLE: 14, DATA_LOSS: 15, UNAUTHENTICATED: 16,
};

const REDIRECT_CODES = [301, 302, 303, 307, 308];

/** Reads one `http[]` rule. */
export function readHttpRoute(r: FieldReader): HttpRoute {
  const name = r.has('name') ? r.string('name', '') : undefined;
  const match = r.list('match').map(readHttpMatch);
  const actions = oneOf(r, ['route', 'redirect', 'directResponse']);
  if (actions.length === 0) r.problems.add(r.path, 'must set one of route, redirect or directResponse');
  const route = readRouteDestinations(r, 'route', { headers: true, required: false });
  if (r.has('route') && route.length === 0 && Array.isArray(r.raw('route'))) r.fail('route', 'must list at least one destination');
  const redirect = r.has('redirect') ? readRedirect(r.object('redirect')) : undefined;
  const directResponse = r.has('directResponse') ? readDirectResponse(r.object('directResponse')) : undefined;
  const rewrite = r.has('rewrite') ? readRewrite(r.object('rewrite')) : undefined;
  if (rewrite && !r.has('route')) r.fail('rewrite', 'applies only to rules that route; it cannot go with redirect or directResponse');
  const timeoutMs = readDuration(r, 'timeout');
  const retries = r.has('retries') ? readRetries(r.object('retries')) : undefined;
  const fault = r.has('fault') ? readFault(r.object('fault')) : undefined;
  const mirror = r.has('mirror') ? readDestination(r.object('mirror')) : undefined;
  if (mirror && !r.has('route')) r.fail('mirror', 'applies only to rules that route; it cannot go with redirect or directResponse');
  const mirrorPercent = readPercent(r, 'mirrorPercentage');
  if (mirrorPercent !== undefined && !mirror) r.fail('mirrorPercentage', 'needs mirror to be set');
  const headers = r.has('headers') ? readHeaders(r.object('headers')) : undefined;
  rejectUnimplemented(r, ['delegate', 'mirrors', 'mirrorPercent', 'corsPolicy']);
  r.done();
  return {
    ...(name ? { name } : {}),
    match,
    route,
    ...(redirect ? { redirect } : {}),
    ...(directResponse ? { directResponse } : {}),
    ...(rewrite ? { rewrite } : {}),
    ...(timeoutMs !== undefined ? { timeoutMs } : {}),
    ...(retries ? { retries } : {}),
    ...(fault ? { fault } : {}),
    ...(mirror ? { mirror, mirrorPercent: mirrorPercent ?? 100 } : {}),
    ...(headers ? { headers } : {}),
  };
}

function readPathLike(r: FieldReader, key: string): string | undefined {
  if (!r.has(key)) return undefined;
  return r.string(key, '', { pattern: /^\/\S*$/, hint: 'a path starting with "/"' }) || undefined;
}

function readAuthority(r: FieldReader, key: string): string | undefined {
  if (!r.has(key)) return undefined;
  return r.string(key, '', { pattern: /^[A-Za-z0-9.-]+(:\d{1,5})?$/, hint: 'a host name, optionally with ":port"' }) || undefined;
}

function readRewrite(r: FieldReader): HttpRewrite {
  const uri = readPathLike(r, 'uri');
  const authority = readAuthority(r, 'authority');
  rejectUnimplemented(r, ['uriRegexRewrite']);
  r.done();
  return { ...(uri ? { uri } : {}), ...(authority ? { authority } : {}) };
}

function readRedirect(r: FieldReader): HttpRedirect {
  const uri = readPathLike(r, 'uri');
  const authority = readAuthority(r, 'authority');
  let redirectCode = 301;
  if (r.has('redirectCode')) {
    const code = r.integer('redirectCode', 0);
    if (REDIRECT_CODES.includes(code)) redirectCode = code;
    else if (code !== 0) r.fail('redirectCode', `got ${code}, expected one of ${REDIRECT_CODES.join(', ')}`);
  }
  if (!uri && !authority) r.problems.add(r.path, 'must set uri and/or authority');
  rejectUnimplemented(r, ['port', 'derivePort', 'scheme']);
  r.done();
  return { ...(uri ? { uri } : {}), ...(authority ? { authority } : {}), redirectCode };
}

function readDirectResponse(r: FieldReader): HttpDirectResponse {
  const status = readInteger(r, 'status', 200, 599, { required: true }) ?? 200;
  let body: string | undefined;
  if (r.has('body')) {
    const b = r.object('body');
    rejectUnimplemented(b, ['bytes']);
    body = b.string('string', '', { required: true });
    b.done();
  }
  r.done();
  return { status, ...(body !== undefined ? { body } : {}) };
}

function readRetries(r: FieldReader): HttpRetry {
  const attempts = readInteger(r, 'attempts', 0, 1000, { required: true }) ?? 0;
  const perTryTimeoutMs = readDuration(r, 'perTryTimeout', { min: 1 });
  let retryOn: string[] | undefined;
  if (r.has('retryOn')) {
    const text = r.string('retryOn', '');
    retryOn = text.split(',').map((s) => s.trim());
    const bad = retryOn.filter((c) => !RETRY_ON_CONDITIONS.includes(c) && !(/^\d{3}$/.test(c) && Number(c) >= 100 && Number(c) <= 599));
    if (bad.length > 0) {
      r.fail('retryOn', `got ${bad.map((c) => JSON.stringify(c)).join(', ')}, expected comma-separated conditions from ${RETRY_ON_CONDITIONS.join(', ')} or HTTP status codes such as 503`);
    }
  }
  rejectUnimplemented(r, ['retryRemoteLocalities', 'backoff', 'retryIgnorePreviousHosts']);
  r.done();
  return { attempts, ...(perTryTimeoutMs !== undefined ? { perTryTimeoutMs } : {}), ...(retryOn ? { retryOn } : {}) };
}

function readFault(r: FieldReader): HttpFaultInjection {
  let delay: HttpFaultInjection['delay'];
  let abort: HttpFaultInjection['abort'];
  const required = (f: FieldReader): number => {
    const percent = readPercent(f, 'percentage');
    if (!f.has('percentage')) f.fail('percentage', 'is required (percentage: {value: 0-100}); without it Istio injects nothing');
    return percent ?? 0;
  };
  if (r.has('delay')) {
    const d = r.object('delay');
    rejectUnimplemented(d, ['percent', 'exponentialDelay']);
    const percent = required(d);
    const fixedDelayMs = readDuration(d, 'fixedDelay', { required: true, min: 1 }) ?? 0;
    d.done();
    delay = { percent, fixedDelayMs };
  }
  if (r.has('abort')) {
    const a = r.object('abort');
    rejectUnimplemented(a, ['percent', 'http2Error']);
    const percent = required(a);
    const set = oneOf(a, ['httpStatus', 'grpcStatus']);
    if (set.length === 0) a.problems.add(a.path, 'must set httpStatus or grpcStatus');
    const httpStatus = readInteger(a, 'httpStatus', 200, 599);
    let grpcStatus: string | undefined;
    if (a.has('grpcStatus')) {
      const g = a.string('grpcStatus', '');
      if (g in GRPC_STATUS_CODES) grpcStatus = g;
      else if (g !== '') a.fail('grpcStatus', `got ${JSON.stringify(g)}, expected a gRPC status name: ${Object.keys(GRPC_STATUS_CODES).join(', ')}`);
    }
    a.done();
    abort = { percent, ...(httpStatus !== undefined ? { httpStatus } : {}), ...(grpcStatus ? { grpcStatus } : {}) };
  }
  if (!delay && !abort) r.problems.add(r.path, 'must set delay and/or abort');
  r.done();
  return { ...(delay ? { delay } : {}), ...(abort ? { abort } : {}) };
}
