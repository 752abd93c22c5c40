// The inbound side of HTTP/2 and gRPC: a verified mTLS connection that chose h2 by ALPN (or a plaintext h2c one the
// service's mTLS mode takes) serves streams, each authorized, then forwarded to the local app over one pooled h2c session.
//
// InboundListener has done the TLS handshake and checked the caller's identity before it hands the
// socket over; here every stream is admitted by the caller's `authorize` (AuthorizationPolicy: a
// denied stream gets 403, or grpc-status 7 PERMISSION_DENIED), gets that identity as
// x-forwarded-client-cert (the same value as the HTTP/1 path, replacing any the caller sent; a
// plaintext caller's is removed) and goes to the app with prior-knowledge h2c.

import { connect as h2Connect, constants, createServer, type ClientHttp2Session, type Http2Server, type IncomingHttpHeaders, type ServerHttp2Session, type ServerHttp2Stream } from 'node:http2';
import { connect as netConnect } from 'node:net';
import type { Duplex } from 'node:stream';
import { formatHostPort } from '../../config';
import type { Endpoint } from '../../registry';
import type { SpiffeId } from '../../ca';
import type { Hop, Logger, MeshTelemetry } from '../../telemetry';
import { inboundHop } from '../exchange-report';
import { refusalFlag, type Admission } from '../inbound-authorizer';
import type { InboundRoute } from '../proxy-config';
import { GrpcStatus, isGrpcContentType } from './grpc-status';
import { forwardHeaders, headerListTooLarge, REQUEST_PSEUDO, type HeaderEdits } from './h2-headers';
import { answerStream } from './h2-local-answer';
import { closeWhenIdle, downstreamH2Options, H2_SETTINGS, H2SessionPool } from './h2-session-pool';
import { DEFAULT_PROXY_LIMITS, type ProxyLimits } from '../proxy-limits';
import { forwardStream, holdStream } from './h2-stream-forwarder';
import { addTraceHeaders, observeStream } from './h2-telemetry';

/** The inbound counters this handler keeps. */
export interface H2InboundStats {
  /** HTTP/2 sessions (mTLS connections that chose h2) accepted, ever. */
  h2Sessions: number;
  /** Streams served, ever. */
  h2Streams: number;
  upstreamFailures: number;
}

/** Who is calling on one connection, what each of its streams may do, and where they go. */
export interface H2Caller {
  /** The caller's SPIFFE ID, or "plaintext", for logs. */
  readonly peer: string;
  /** The x-forwarded-client-cert value for the app; absent for a plaintext caller (any sent is removed). */
  readonly xfcc?: string;
  /** The caller's verified identity; absent for a plaintext caller. */
  readonly peerId?: SpiffeId;
  /** Admits one stream by its request headers. */
  authorize(headers: IncomingHttpHeaders): Admission;
  /**
   * Keeps the session (no `headers`) or an admitted stream to check again when the policy changes, calling `close`
   * when the new policy refuses it; returns what stops that.
   */
  watch(headers: IncomingHttpHeaders | undefined, close: () => void): () => void;
}

interface Caller extends H2Caller {
  readonly route: InboundRoute;
  readonly app: Endpoint;
  readonly edits?: HeaderEdits;
  /** The hops its streams count under (other HTTP/2, gRPC), made on first use. */
  readonly hops: (Hop | undefined)[];
}

export class H2Inbound {
  private readonly server: Http2Server;
  /** One h2c session per local app. */
  private readonly apps: H2SessionPool;
  private readonly sessions = new Set<ServerHttp2Session>();
  /** The caller of the connection being handed to the server right now (the server makes its session synchronously). */
  private handing: Caller | undefined;

  constructor(
    private readonly stats: H2InboundStats,
    private readonly log: Logger,
    private readonly limits: ProxyLimits = DEFAULT_PROXY_LIMITS,
    /** Metrics, access log, traces and taps of each stream; absent when nothing reports. */
    private readonly telemetry?: MeshTelemetry,
  ) {
    this.apps = new H2SessionPool(dialApp, { idleTimeoutMs: 60_000 });
    this.server = createServer(downstreamH2Options(limits));
    this.server.on('session', (session: ServerHttp2Session) => {
      const caller = this.handing;
      if (!caller) {
        session.destroy(); // not one of ours: cannot happen, as only serve() feeds this server
        return;
      }
      this.stats.h2Sessions++;
      this.sessions.add(session);
      closeWhenIdle(session, limits);
      session.on('error', (err) => this.log.debug('inbound h2 session error', { service: caller.route.sni, peer: caller.peer, error: err.message }));
      const unwatch = caller.watch(undefined, () => session.destroy());
      session.once('close', () => {
        this.sessions.delete(session);
        unwatch();
      });
      session.on('stream', (down: ServerHttp2Stream, headers: IncomingHttpHeaders, flags: number) => this.onStream(caller, down, headers, flags));
    });
    this.server.on('sessionError', (err: Error) => this.log.warn('malformed HTTP/2 on inbound connection; connection closed', { error: err.message }));
  }

  /** Serves HTTP/2 on a connection InboundListener has accepted for `route` (mTLS with a verified caller, or plaintext h2c). */
  serve(socket: Duplex, route: InboundRoute, who: H2Caller): void {
    const caller: Caller = {
      ...who,
      route,
      hops: [],
      app: { address: route.target.host, port: route.target.port, weight: 1, labels: {} },
      ...(who.xfcc ? { edits: [['x-forwarded-client-cert', who.xfcc]] } : {}),
    };
    this.handing = caller;
    // HTTP/2 has no half-closed connection: a peer's end of input ends the session (else it would wait for ever).
    socket.allowHalfOpen = false;
    try {
      this.server.emit('connection', socket);
    } finally {
      this.handing = undefined;
    }
  }

  /** Drains: sessions both ways are closed gracefully (streams in flight finish). */
  close(): void {
    this.apps.close();
    for (const s of this.sessions) s.close();
  }

  private onStream(caller: Caller, down: ServerHttp2Stream, headers: IncomingHttpHeaders, flags: number): void {
    this.stats.h2Streams++;
    const held = holdStream(down);
    // x-forwarded-client-cert is the agent's to set: a caller's never reaches the app, as a trailer neither.
    down.once('trailers', (t: IncomingHttpHeaders) => delete t['x-forwarded-client-cert']);
    const { route } = caller;
    const grpc = route.protocol === 'grpc' || isGrpcContentType(headers['content-type']);
    const t = this.telemetry;
    const seen = t && observeStream(t, (caller.hops[grpc ? 1 : 0] ??= inboundHop(t, route, caller.peerId, grpc)), down, headers, grpc);
    const tooLarge = headerListTooLarge(headers, this.limits.maxHeadBytes);
    if (tooLarge) {
      answerStream(down, grpc, tooLarge);
      return;
    }
    const admission = caller.authorize(headers);
    if (!admission.allowed) {
      answerStream(down, grpc, { status: 403, grpcStatus: GrpcStatus.PERMISSION_DENIED, message: admission.message, flag: refusalFlag(admission) });
      return;
    }
    // A long-lived stream (gRPC streaming) a new policy refuses is cancelled, as a TCP connection would be closed.
    const unwatch = caller.watch(headers, () => down.close(constants.NGHTTP2_CANCEL));
    down.once('close', unwatch);
    if (!caller.edits) delete headers['x-forwarded-client-cert'];
    if (route.protocol === 'http') {
      // The caller's upstream says HTTP/2, this node says the app speaks HTTP/1.1: one of the two configs is wrong.
      this.log.warn('HTTP/2 stream for a service declared protocol: http (HTTP/1.1); declare it http2 or grpc, or call it with protocol: http', { service: route.sni, peer: caller.peer });
      answerStream(down, grpc, { status: 502, grpcStatus: GrpcStatus.INTERNAL, message: `service ${route.sni} takes HTTP/1.1 only (protocol: http)`, flag: 'UPE' });
      return;
    }
    const out = forwardHeaders(headers, REQUEST_PSEUDO, caller.edits);
    if (seen) {
      seen.upstream = caller.app;
      addTraceHeaders(out, seen.span);
    }
    forwardStream(held, flags, {
      grpc,
      headers: out,
      target: {
        endpoint: caller.app,
        pool: this.apps,
        done: (o) => {
          if (!o.connectFailure) return;
          this.stats.upstreamFailures++;
          this.log.warn('local app unreachable', { service: route.sni, target: formatHostPort(route.target) });
        },
      },
      onError: (message) => this.log.debug('inbound h2 stream failed', { service: route.sni, target: formatHostPort(route.target), error: message }),
    });
  }
}

/** Opens a prior-knowledge h2c session to a local app; resolves once the TCP connection is up. */
function dialApp(app: Endpoint): Promise<ClientHttp2Session> {
  return new Promise((resolve, reject) => {
    const session = h2Connect(`http://${formatHostPort({ host: app.address, port: app.port })}`, {
      settings: H2_SETTINGS,
      createConnection: () => netConnect({ host: app.address, port: app.port }),
    });
    session.once('error', reject);
    session.once('connect', () => {
      session.off('error', reject);
      resolve(session);
    });
  });
}
