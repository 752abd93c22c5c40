// Where the data plane reports finished requests and connections: the agent's telemetry and the hop (Istio labels)
// they count under, with the few helpers the protocol paths share.

import type { Socket } from 'node:net';
import type { SpiffeId } from '../ca';
import type { Endpoint } from '../registry';
import { NO_FLAGS, type Hop, type HopLabels, type MeshTelemetry, type RequestRecord } from '../telemetry';
import type { InboundRoute, OutboundRoute, Protocol } from './proxy-config';

/** The agent's telemetry and the hop a session's requests count under (the inbound side sets it per request, by service). */
export interface ExchangeReporter {
  readonly telemetry: MeshTelemetry;
  hop: Hop;
}

const UNKNOWN = 'unknown';

/** request_protocol as Istio reports it: gRPC apart, HTTP/1.1 and HTTP/2 both "http". */
const requestProtocol = (p: Protocol, grpc: boolean): HopLabels['protocol'] => (grpc || p === 'grpc' ? 'grpc' : p === 'tcp' ? 'tcp' : 'http');

/** The caller's side of an upstream port: the local service calling, the remote service called, always over mTLS. */
export function outboundHop(t: MeshTelemetry, route: OutboundRoute, grpc = false): Hop {
  const src = route.source.workloadParts;
  return t.hop({
    reporter: 'source',
    sourceWorkload: src?.service ?? UNKNOWN,
    sourceNamespace: src?.namespace ?? UNKNOWN,
    sourcePrincipal: route.source.toString(),
    destinationWorkload: route.service.name,
    destinationService: route.service.name,
    destinationNamespace: route.service.namespace,
    destinationPrincipal: route.destination.toString(),
    protocol: requestProtocol(route.protocol, grpc),
    mtls: true,
  });
}

/** The callee's side: a local service called by `peer` (undefined: a plaintext caller, or no service found for the request). */
export function inboundHop(t: MeshTelemetry, route: InboundRoute | undefined, peer: SpiffeId | undefined, grpc = false): Hop {
  const src = peer?.workloadParts;
  return t.hop({
    reporter: 'destination',
    sourceWorkload: src?.service ?? UNKNOWN,
    sourceNamespace: src?.namespace ?? UNKNOWN,
    sourcePrincipal: peer?.toString() ?? UNKNOWN,
    destinationWorkload: route?.workload.name ?? UNKNOWN,
    destinationService: route?.workload.name ?? UNKNOWN,
    destinationNamespace: route?.workload.namespace ?? UNKNOWN,
    destinationPrincipal: route?.identity.toString() ?? UNKNOWN,
    protocol: route ? requestProtocol(route.protocol, grpc) : 'http',
    mtls: peer !== undefined,
  });
}

/** Flags that mean the inbound side refused the request (the policy decision "deny"). */
const DENY_FLAGS = /(^|,)(RBAC|MTLS)(,|$)/;

/** The parts of a request record a protocol path fills in; the hop gives the rest. */
export interface ExchangeFacts {
  readonly startedAt: number;
  readonly durationMs: number;
  readonly sourceAddress: string;
  readonly method: string;
  readonly authority: string;
  readonly path: string;
  readonly code: number;
  /** -1 when not gRPC. */
  readonly grpcStatus: number;
  readonly flags: string;
  readonly requestBytes: number;
  readonly responseBytes: number;
  readonly upstream: Endpoint | undefined;
  readonly attempts: number;
  readonly traceId: string | undefined;
}

/** The access log / tap record of a request over `hop`. */
export function requestRecord(hop: Hop, f: ExchangeFacts): RequestRecord {
  const l = hop.labels;
  return {
    start_time: new Date(f.startedAt).toISOString(),
    duration_ms: Math.round(f.durationMs * 1000) / 1000,
    reporter: l.reporter,
    protocol: l.protocol,
    source_principal: l.sourcePrincipal,
    source_workload: l.sourceWorkload,
    source_namespace: l.sourceNamespace,
    source_address: f.sourceAddress,
    destination_principal: l.destinationPrincipal,
    destination_service: l.destinationService,
    destination_namespace: l.destinationNamespace,
    // A TCP connection has no request line and no status.
    ...(l.protocol === 'tcp' ? {} : { method: f.method, authority: f.authority, path: f.path, response_code: f.code }),
    ...(f.grpcStatus >= 0 ? { grpc_status: f.grpcStatus } : {}),
    response_flags: f.flags,
    bytes_received: f.requestBytes,
    bytes_sent: f.responseBytes,
    upstream_host: f.upstream ? (f.upstream.address.includes(':') ? `[${f.upstream.address}]:${f.upstream.port}` : `${f.upstream.address}:${f.upstream.port}`) : '',
    attempts: f.attempts,
    ...(l.reporter === 'destination' ? { policy_decision: DENY_FLAGS.test(f.flags) ? 'deny' : 'allow' } : {}),
    ...(f.traceId ? { trace_id: f.traceId } : {}),
  };
}

/** Joins a fault delay's DI with the flags the request ended with. */
export function withDelayFlag(flags: string): string {
  return flags === NO_FLAGS ? 'DI' : `DI,${flags}`;
}

/** The span name Envoy gives an HTTP request: the authority and path without the query. */
export function spanName(authority: string, path: string): string {
  const q = path.indexOf('?');
  return `${authority}${q < 0 ? path : path.slice(0, q)}`;
}

/**
 * Counts a TCP connection on `hop` from now until `down` closes (bytes as its downstream saw them) and, when records
 * are wanted, logs it. Set `flags` (why it was cut short) and `upstream` (where it went) on the result as they are known.
 */
export function observeTcp(t: MeshTelemetry, hop: Hop, down: Socket): { flags: string; upstream: Endpoint | undefined } {
  const o = { flags: NO_FLAGS, upstream: undefined as Endpoint | undefined };
  const startedAt = performance.now();
  const wall = Date.now();
  hop.tcpOpened();
  down.once('close', () => {
    hop.tcpClosed(down.bytesWritten, down.bytesRead);
    if (!t.detailed) return;
    t.record(requestRecord(hop, {
      startedAt: wall,
      durationMs: performance.now() - startedAt,
      sourceAddress: down.remoteAddress ?? '',
      method: '',
      authority: '',
      path: '',
      code: 0,
      grpcStatus: -1,
      flags: o.flags,
      requestBytes: down.bytesRead,
      responseBytes: down.bytesWritten,
      upstream: o.upstream,
      attempts: 1,
      traceId: undefined,
    }));
  });
  return o;
}
