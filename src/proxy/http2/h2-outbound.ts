// An upstream port for protocol http2/grpc: the app speaks h2c (prior knowledge); each of its streams is routed like an HTTP/1.1 request and goes to an endpoint over one shared mTLS HTTP/2 session.
//
// Per stream, in this order:
//   1. the router (outbound-http-router.ts, the same chain as HTTP/1.1) matches the stream's headers
//      against the VirtualService, applies faults, answers redirects and direct responses, picks a
//      weighted destination and an endpoint of its cluster (subset, balancer, outlier detection,
//      circuit breaker request slot), and says what to edit, how long to wait and how to retry; its
//      local answers go out gRPC-style to gRPC callers (h2-local-answer.ts);
//   2. the stream is forwarded (h2-stream-forwarder.ts) over the destination service's session pool:
//      one session per endpoint, dialed once by the connector with ALPN h2, the service's SNI and
//      its SPIFFE ID checked; concurrent streams wait on the same dial. Each attempt's outcome goes
//      to its lease.

import { connect as h2Connect, createServer, type ClientHttp2Session, type Http2Server, type IncomingHttpHeaders, type ServerHttp2Session, type ServerHttp2Stream } from 'node:http2';
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { SpiffeId } from '../../ca';
import { describeError, MeshError } from '../../errors';
import { serviceRefKey, type CompiledPolicy, type ServiceRef } from '../../policy';
import type { Endpoint } from '../../registry';
import type { Hop, Logger, MeshTelemetry } from '../../telemetry';
import { outboundHop } from '../exchange-report';
import type { Connector } from '../mtls-connector';
import { OutboundHttpRouter, type UpstreamCatalog } from '../outbound-http-router';
import type { CredentialStore, OutboundRoute } from '../proxy-config';
import type { Decision } from '../route-decision';
import { GrpcStatus, isGrpcContentType } from './grpc-status';
import { applyHeadEdits, forwardHeaders, headerListTooLarge, REQUEST_PSEUDO } from './h2-headers';
import { answerStream, type H2Answer } from './h2-local-answer';
import { H2_ROUTING } from './h2-routing';
import { closeWhenIdle, downstreamH2Options, H2_CONNECTION_WINDOW, H2_SETTINGS, H2SessionPool } from './h2-session-pool';
import { DEFAULT_PROXY_LIMITS, type ProxyLimits } from '../proxy-limits';
import { forwardStream, holdStream, type HeldStream } from './h2-stream-forwarder';
import { addTraceHeaders, observeStream, type H2Observation } from './h2-telemetry';

/** Counters of this port's HTTP/2 side; the router's are next to them in the agent's status. */
export interface H2OutboundStats {
  /** mTLS HTTP/2 sessions opened to remote agents, ever. */
  h2Sessions: number;
  /** Streams the app opened, ever. */
  h2Streams: number;
}

type H2Decision = Decision<H2Answer, H2SessionPool>;

export class H2Outbound {
  readonly stats: H2OutboundStats = { h2Sessions: 0, h2Streams: 0 };
  readonly router: OutboundHttpRouter<IncomingHttpHeaders, H2Answer, H2SessionPool>;
  private readonly server: Http2Server;
  /** One session pool per destination service: each has its own SNI and SPIFFE ID to check. */
  private readonly pools = new Map<string, H2SessionPool>();
  private readonly downstream = new Set<ServerHttp2Session>();

  constructor(
    private readonly route: OutboundRoute,
    clusters: Pick<UpstreamCatalog<H2SessionPool>, 'cluster'>,
    policy: () => CompiledPolicy,
    private readonly connector: Connector,
    private readonly credentials: CredentialStore,
    private readonly log: Logger,
    private readonly limits: ProxyLimits = DEFAULT_PROXY_LIMITS,
    /** Metrics, access log, traces and taps of each stream; absent when nothing reports. */
    private readonly telemetry?: MeshTelemetry,
  ) {
    const catalog: UpstreamCatalog<H2SessionPool> = { cluster: (s, subset) => clusters.cluster(s, subset), pool: (s) => this.pool(s) };
    this.router = new OutboundHttpRouter(route.service, policy, catalog, H2_ROUTING, Math.random, route.listen.port, route.sourceLabels);
    this.server = createServer(downstreamH2Options(limits));
    this.server.on('session', (session: ServerHttp2Session) => {
      this.downstream.add(session);
      closeWhenIdle(session, limits);
      session.on('error', (err) => this.log.debug('downstream h2 session error', { cluster: route.cluster, error: err.message }));
      session.once('close', () => this.downstream.delete(session));
    });
    // Bytes that are not HTTP/2 (a bad preface, a protocol error): that connection is closed with a GOAWAY; nothing else is touched.
    this.server.on('sessionError', (err: Error) => this.log.warn('malformed HTTP/2 from the app; connection closed', { cluster: route.cluster, error: err.message }));
    this.server.on('stream', (down: ServerHttp2Stream, headers: IncomingHttpHeaders, flags: number) => this.onStream(down, headers, flags));
  }

  /** Takes over a connection the app opened on the upstream port (it must speak HTTP/2 with prior knowledge). */
  accept(down: Socket): void {
    down.on('error', (err) => this.log.debug('downstream socket error', { error: err.message }));
    down.setNoDelay(true);
    // HTTP/2 has no half-closed connection: a client's end of input ends the session (else it would wait for ever).
    down.allowHalfOpen = false;
    this.server.emit('connection', down);
    down.resume(); // the listener accepts paused; the session reads from here on
  }

  /** Sessions open to remote agents now. */
  get sessions(): number {
    let n = 0;
    for (const p of this.pools.values()) n += p.size;
    return n;
  }

  /** Drains: every session, both sides, is closed gracefully (streams in flight finish). */
  close(): void {
    for (const p of this.pools.values()) p.close();
    for (const s of this.downstream) s.close();
  }

  private onStream(down: ServerHttp2Stream, headers: IncomingHttpHeaders, flags: number): void {
    this.stats.h2Streams++;
    const held = holdStream(down);
    const grpc = this.route.protocol === 'grpc' || isGrpcContentType(headers['content-type']);
    const seen = this.telemetry && observeStream(this.telemetry, this.hop(grpc), down, headers, grpc);
    const tooLarge = headerListTooLarge(headers, this.limits.maxHeadBytes);
    if (tooLarge) {
      answerStream(down, grpc, tooLarge);
      return;
    }
    const d = this.router.route(headers, down.session?.socket?.remoteAddress ?? '');
    if (d instanceof Promise) {
      if (seen) seen.delayed = true;
      d.then(
        (x) => this.decided(held, headers, flags, grpc, x, seen),
        (err: unknown) => answerStream(down, grpc, { status: 500, grpcStatus: GrpcStatus.INTERNAL, message: `routing failed: ${describeError(err)}`, flag: 'RF' }),
      );
    } else this.decided(held, headers, flags, grpc, d, seen);
  }

  /** The hop streams count under: one for gRPC calls, one for other HTTP/2 requests. */
  private readonly hops: (Hop | undefined)[] = [];
  private hop(grpc: boolean): Hop {
    const i = grpc ? 1 : 0;
    return (this.hops[i] ??= outboundHop(this.telemetry!, this.route, grpc));
  }

  private decided(held: HeldStream, headers: IncomingHttpHeaders, flags: number, grpc: boolean, d: H2Decision, seen: H2Observation | undefined): void {
    const { down } = held;
    if (d.kind === 'respond') {
      answerStream(down, grpc, d.response);
      return;
    }
    if (down.closed || down.destroyed) {
      // Decided after the client left (a fault delay): the lease goes back as cancelled.
      d.target.done?.({ status: 0, connectFailure: false, reset: false, timeout: false });
      return;
    }
    const out = forwardHeaders(headers, REQUEST_PSEUDO);
    if (d.edits) applyHeadEdits(out, d.edits, true);
    if (seen) {
      seen.upstream = d.target.endpoint;
      addTraceHeaders(out, seen.span);
    }
    const { cluster } = this.route;
    forwardStream(held, flags, {
      grpc,
      headers: out,
      target: d.target,
      ...(d.responseEdits ? { responseEdits: d.responseEdits } : {}),
      ...(d.timeoutMs ? { timeoutMs: d.timeoutMs } : {}),
      ...(d.retry ? { retry: d.retry } : {}),
      onError: (message) => this.log.debug('h2 stream failed', { cluster, path: String(headers[':path']), error: message }),
    });
  }

  /** The session pool of a destination service: mTLS with its SNI, checking its workload identity; a rotated certificate retires sessions. */
  private pool(service: ServiceRef): H2SessionPool {
    const key = serviceRefKey(service);
    let pool = this.pools.get(key);
    if (!pool) {
      const { source } = this.route;
      const { credentials, connector } = this;
      const td = credentials.trustDomain;
      const sni = `${service.name}.${service.namespace}.${td}`;
      const expected = SpiffeId.workload(td, service.namespace, service.name);
      pool = new H2SessionPool(
        async (endpoint) => {
          const context = credentials.contextFor(source);
          if (!context) throw new MeshError('MESH_ERR_UPSTREAM_CONNECT', `no workload certificate yet for ${source}`);
          try {
            return await openOverTls(await connector.connect({ endpoint, context, sni, expected, alpn: ['h2'] }), endpoint);
          } catch (err) {
            this.log.warn('upstream connection failed', { cluster: key, endpoint: `${endpoint.address}:${endpoint.port}`, error: describeError(err) });
            throw err;
          }
        },
        { generation: () => credentials.contextFor(source), onOpen: () => this.stats.h2Sessions++ },
      );
      this.pools.set(key, pool);
    }
    return pool;
  }
}

/** Starts an HTTP/2 client session on a verified mTLS connection; the remote agent must have agreed to h2 by ALPN. */
function openOverTls(socket: TLSSocket, endpoint: Endpoint): Promise<ClientHttp2Session> {
  if (socket.alpnProtocol !== 'h2') {
    socket.destroy();
    return Promise.reject(
      new MeshError('MESH_ERR_UPSTREAM_CONNECT', `${endpoint.address}:${endpoint.port} did not agree to HTTP/2 (ALPN ${socket.alpnProtocol || 'none'}); the remote agent must be one that serves h2 on its inbound port`),
    );
  }
  return new Promise((resolve, reject) => {
    // The authority is only the default for requests; every forwarded request carries its own.
    const session = h2Connect(`https://${endpoint.address.includes(':') ? `[${endpoint.address}]` : endpoint.address}:${endpoint.port}`, {
      createConnection: () => socket,
      settings: H2_SETTINGS,
    });
    const onError = (err: Error): void => reject(new MeshError('MESH_ERR_UPSTREAM_CONNECT', `HTTP/2 session to ${endpoint.address}:${endpoint.port} failed: ${err.message}`, { cause: err }));
    session.once('error', onError);
    session.once('connect', () => {
      session.off('error', onError);
      session.setLocalWindowSize(H2_CONNECTION_WINDOW);
      resolve(session);
    });
  });
}
