// An upstream port for protocol http2/grpc: the app speaks h2c (prior knowledge); each of its streams goes to an endpoint over one shared mTLS HTTP/2 session.
//
// Per stream, in this order:
//   1. the cluster picks the endpoint and takes a request slot (acquire), so balancing, outlier
//      detection and circuit breaking work per stream, as for HTTP/1 requests; no endpoint →
//      503 / grpc-status 14 (UNAVAILABLE), flag UH; breaker full → 503 / 14, flag UO;
//   2. the endpoint's session comes from the pool (one per endpoint, dialed once by the connector
//      with ALPN h2 and the destination's SPIFFE ID checked; concurrent streams wait on the same
//      dial); a failed dial → 503 / 14, flag UF;
//   3. forwardStream carries it (h2-stream-forwarder.ts) and reports the outcome to the lease.

import { connect as h2Connect, createServer, type ClientHttp2Session, type Http2Server, type IncomingHttpHeaders, type ServerHttp2Session, type ServerHttp2Stream } from 'node:http2';
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { describeError, MeshError } from '../../errors';
import type { Endpoint } from '../../registry';
import type { Logger } from '../../telemetry';
import { OVERFLOW_HEADER, OVERFLOW_RESPONSE_FLAG } from '../circuit-breaker';
import type { Cluster, Lease } from '../cluster';
import type { Connector } from '../mtls-connector';
import type { CredentialStore, OutboundRoute } from '../proxy-config';
import { GrpcStatus, isGrpcContentType } from './grpc-status';
import { H2_CONNECTION_WINDOW, H2_SETTINGS, H2SessionPool } from './h2-session-pool';
import { forwardStream, holdStream, localReply, type HeldStream } from './h2-stream-forwarder';

/** The listener's counters this handler keeps; the h2 ones appear in the agent's status next to the others. */
export interface H2OutboundStats {
  connections: number;
  noEndpoint: number;
  connectFailures: number;
  /** mTLS HTTP/2 sessions opened to remote agents, ever. */
  h2Sessions?: number;
  /** Streams forwarded, ever. */
  h2Streams?: number;
}

export class H2Outbound {
  private readonly server: Http2Server;
  private readonly pool: H2SessionPool;
  private readonly downstream = new Set<ServerHttp2Session>();

  constructor(
    private readonly route: OutboundRoute,
    /** The cluster streams are balanced over (looked up per stream: the agent may replace it). */
    private readonly cluster: () => Cluster,
    connector: Connector,
    credentials: CredentialStore,
    private readonly stats: H2OutboundStats,
    private readonly log: Logger,
  ) {
    stats.h2Sessions ??= 0;
    stats.h2Streams ??= 0;
    const { source, sni, destination } = route;
    this.pool = new H2SessionPool(
      async (endpoint) => {
        const context = credentials.contextFor(source);
        if (!context) throw new MeshError('MESH_ERR_UPSTREAM_CONNECT', `no workload certificate yet for ${source}`);
        const socket = await connector.connect({ endpoint, context, sni, expected: destination, alpn: ['h2'] });
        return openOverTls(socket, endpoint);
      },
      { generation: () => credentials.contextFor(source), onOpen: () => this.stats.h2Sessions!++ },
    );
    this.server = createServer({ settings: H2_SETTINGS });
    this.server.on('session', (session: ServerHttp2Session) => {
      this.downstream.add(session);
      session.on('error', (err) => this.log.debug('downstream h2 session error', { cluster: route.cluster, error: err.message }));
      session.once('close', () => this.downstream.delete(session));
    });
    // Bytes that are not HTTP/2 (a bad preface, a protocol error): that connection is closed with a GOAWAY; nothing else is touched.
    this.server.on('sessionError', (err: Error) => this.log.warn('malformed HTTP/2 from the app; connection closed', { cluster: route.cluster, error: err.message }));
    this.server.on('stream', (down: ServerHttp2Stream, headers: IncomingHttpHeaders, flags: number) => this.onStream(down, headers, flags));
  }

  /** Takes over a connection the app opened on the upstream port (it must speak HTTP/2 with prior knowledge). */
  accept(down: Socket): void {
    this.stats.connections++;
    down.on('error', (err) => this.log.debug('downstream socket error', { error: err.message }));
    down.setNoDelay(true);
    this.server.emit('connection', down);
    down.resume(); // the listener accepts paused; the session reads from here on
  }

  /** Sessions open to remote agents now. */
  get sessions(): number {
    return this.pool.size;
  }

  /** Drains: every session, both sides, is closed gracefully (streams in flight finish). */
  close(): void {
    this.pool.close();
    for (const s of this.downstream) s.close();
  }

  private onStream(down: ServerHttp2Stream, headers: IncomingHttpHeaders, flags: number): void {
    this.stats.h2Streams!++;
    const held = holdStream(down);
    const grpc = this.route.protocol === 'grpc' || isGrpcContentType(headers['content-type']);
    const lease = this.cluster().acquire();
    if (lease === undefined) {
      this.stats.noEndpoint++;
      localReply(down, grpc, 503, GrpcStatus.UNAVAILABLE, 'no healthy upstream', 'UH');
      return;
    }
    if ('overflow' in lease) {
      localReply(down, grpc, 503, GrpcStatus.UNAVAILABLE, 'upstream overflow', OVERFLOW_RESPONSE_FLAG, [[OVERFLOW_HEADER, lease.overflow]]);
      return;
    }
    const session = this.pool.ready(lease.endpoint);
    if (session) {
      this.forward(held, headers, flags, session, lease, grpc);
      return;
    }
    this.pool.session(lease.endpoint).then(
      (s) => {
        if (down.closed || down.destroyed) lease.done('cancelled');
        else this.forward(held, headers, flags, s, lease, grpc);
      },
      (err: unknown) => {
        this.stats.connectFailures++;
        lease.done('connect-failed');
        this.log.warn('upstream connection failed', { cluster: this.route.cluster, endpoint: `${lease.endpoint.address}:${lease.endpoint.port}`, error: describeError(err) });
        localReply(down, grpc, 503, GrpcStatus.UNAVAILABLE, `upstream connect error: ${describeError(err)}`, 'UF');
      },
    );
  }

  private forward(held: HeldStream, headers: IncomingHttpHeaders, flags: number, session: ClientHttp2Session, lease: Lease, grpc: boolean): void {
    forwardStream(held, headers, flags, session, {
      grpc,
      done: (outcome, detail) => {
        lease.done(outcome);
        if (outcome === 'reset') this.log.debug('h2 stream reset', { cluster: this.route.cluster, endpoint: `${lease.endpoint.address}:${lease.endpoint.port}`, detail });
      },
    });
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
