// The inbound port: mTLS (SNI picks the local service and its certificate, the caller proves a mesh workload identity)
// and, for services whose PeerAuthentication mode takes it, plaintext, told apart by the first bytes; every connection
// and request admitted by the service's mTLS mode and AuthorizationPolicies.
//
// How a connection finds its service:
//   mTLS        the SNI `<service>.<namespace>.<trust domain>` (refused in the handshake when the mode is DISABLE);
//   HTTP/1.1    plaintext: each request by its Host header (`api`, `api.shop`, `api.shop.svc.cluster.local`, ...),
//               among `protocol: http` services;
//   h2c / TCP   plaintext: the only `http2`/`grpc` (h2c) or `tcp` service that takes plaintext, if there is one.
// When no service takes plaintext (every mode STRICT, the default) the port is TLS only, as it always was.

import { createHash } from 'node:crypto';
import { connect as netConnect, createServer as createNetServer, type Server, type Socket } from 'node:net';
import { createServer as createTlsServer, type SecureContext, type Server as TlsServer, type TLSSocket } from 'node:tls';
import type { SpiffeId } from '../ca';
import { formatHostPort, type HostPort } from '../config';
import { describeError, MeshError } from '../errors';
import { GOSSIP_ALPN } from '../protocol';
import { acceptsMtls, acceptsPlaintext, formatServiceRef, normalizeHost, principalOf, type AuthzHttp, type CompiledPolicy } from '../policy';
import type { Logger, MeshTelemetry } from '../telemetry';
import type { ByteStream } from './byte-stream';
import { inboundHop, observeTcp, type ExchangeReporter } from './exchange-report';
import { ConnectionPool } from './connection-pool';
import { drainAndClose, trackConnections } from './drain';
import { classifyFirstBytes, type FirstBytesKind } from './first-bytes';
import { headerValue, setOnlyEdits, simpleResponse, type HeadEdits, type HttpHead } from './http1/http1-head';
import { Http1Session } from './http1/http1-session';
import type { Decision } from './route-decision';
import { H2Inbound, type H2Caller } from './http2/h2-inbound';
import { http1Attributes, InboundAuthorizer, refusalFlag, type AdmissionStats, type ConnectionFacts, type OpenConnection } from './inbound-authorizer';
import { currentAt, peerCertificate } from './peer-identity';
import { MUX_ALPN } from './mux/mux-frames';
import { MuxSession } from './mux/mux-session';
import { pipeBoth } from './pipe';
import type { CredentialStore, InboundRoute, Protocol } from './proxy-config';
import { DEFAULT_PROXY_LIMITS, type ProxyLimits } from './proxy-limits';

/** Counters the agent reports. */
export interface InboundStats extends AdmissionStats {
  accepted: number;
  /** Plaintext connections taken (PERMISSIVE or DISABLE services). */
  acceptedPlaintext: number;
  refusedHandshake: number;
  refusedIdentity: number;
  /** Plaintext connections no service could take (none, or several, fit). */
  refusedPlaintext: number;
  malformed: number;
  upstreamFailures: number;
  /** HTTP/2 sessions (connections that chose h2 by ALPN) accepted, and streams they carried. */
  h2Sessions: number;
  h2Streams: number;
  /** Connections closed at once because the port had limits.maxConnections open. */
  overLimit: number;
  /** Multiplexed connections (mesh-mux/1, from other agents) accepted, and the streams they carried. */
  muxSessions: number;
  muxStreams: number;
}

/**
 * How long a connection may stay silent before it is taken as plaintext TCP (server-first protocols such as MySQL or
 * SMTP wait for the server to speak). Only when some service takes plaintext.
 */
export const SNIFF_TIMEOUT_MS = 1000;

/** A plaintext caller's x-forwarded-client-cert never reaches the app: it proves nothing. */
const PLAINTEXT_EDITS: HeadEdits = { remove: new Set(['x-forwarded-client-cert']) };

export class InboundListener {
  private open = new Set<Socket>();
  private server?: Server;
  /** Fed the connections that start with a TLS ClientHello; never listens itself. */
  private readonly tls: TlsServer;
  private routes = new Map<string, InboundRoute>();
  private byService = new Map<string, InboundRoute>();
  readonly stats: InboundStats = {
    accepted: 0,
    acceptedPlaintext: 0,
    refusedHandshake: 0,
    refusedIdentity: 0,
    refusedPlaintext: 0,
    malformed: 0,
    upstreamFailures: 0,
    h2Sessions: 0,
    h2Streams: 0,
    overLimit: 0,
    muxSessions: 0,
    muxStreams: 0,
    authzDenied: 0,
    refusedMtlsMode: 0,
    closedOnPolicyChange: 0,
  };
  /** Connections that chose h2 by ALPN, or plaintext h2c. */
  private readonly h2: H2Inbound;
  private readonly authorizer: InboundAuthorizer;
  /** Whether some service takes plaintext, for the policy and routes it was computed from. */
  private plaintext?: { policy: CompiledPolicy; routes: Map<string, InboundRoute>; any: boolean };

  constructor(
    private readonly credentials: CredentialStore,
    private readonly log: Logger,
    private readonly policy: () => CompiledPolicy,
    private readonly limits: ProxyLimits = DEFAULT_PROXY_LIMITS,
    /** Metrics, access log, traces and taps of inbound traffic; absent when nothing reports. */
    private readonly telemetry?: MeshTelemetry,
    /** Takes the connections that chose the gossip ALPN (docs/gossip.md); without it they are closed. */
    private readonly gossip?: (socket: TLSSocket, peer: SpiffeId | undefined) => void,
  ) {
    this.h2 = new H2Inbound(this.stats, log, limits, telemetry);
    this.authorizer = new InboundAuthorizer(policy, this.stats, log);
    this.tls = createTlsServer({
      requestCert: true,
      rejectUnauthorized: true,
      minVersion: 'TLSv1.3',
      // h2 for callers whose upstream is http2/grpc; the others send no ALPN and keep the HTTP/1 or TCP path.
      // Agents gossiping policy versions ask for GOSSIP_ALPN alone; agents calling an HTTP/1.1 service offer MUX_ALPN
      // (many connections' requests multiplexed on one, docs/mux.md) and http/1.1: MUX_ALPN is chosen when the SNI's
      // service is `protocol: http`, else http/1.1 (the caller then keeps a connection per request, as before).
      ALPNCallback: ({ servername, protocols }) => chooseAlpn(protocols, this.routes.get(servername)?.protocol === 'http'),
      SNICallback: (name, cb) => {
        const found = this.contextForSni(name);
        if (typeof found === 'string') cb(new Error(found));
        else cb(null, found);
      },
    });
    this.tls.on('secureConnection', (socket: TLSSocket) => this.accept(socket));
    this.tls.on('tlsClientError', (err, socket) => {
      this.stats.refusedHandshake++;
      this.log.warn('inbound connection refused during TLS handshake', { peer: `${socket.remoteAddress}:${socket.remotePort}`, error: err.message });
      socket.destroy();
    });
  }

  /** Replaces the routes; open connections keep the route they started with. */
  setRoutes(routes: readonly InboundRoute[]): void {
    this.routes = new Map(routes.map((r) => [r.sni, r]));
    this.byService = new Map(routes.map((r) => [`${r.workload.namespace}/${r.workload.name}`, r]));
  }

  /**
   * The policy changed: open TCP connections, tunnels and HTTP/2 streams it refuses are closed, and HTTP/1 and HTTP/2
   * connections whose service's mTLS mode no longer takes them (their requests are admitted one by one anyway).
   * Returns how many were closed.
   */
  policyChanged(): number {
    return this.authorizer.recheck();
  }

  listen(at: HostPort): Promise<HostPort> {
    const server = createNetServer({ allowHalfOpen: true }, (socket) => this.onConnection(socket));
    this.server = server;
    this.open = trackConnections(server);
    return new Promise((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException): void =>
        reject(new MeshError('MESH_ERR_LISTEN', `cannot listen for inbound mTLS on ${formatHostPort(at)}: ${err.code ?? err.message}`, { cause: err }));
      server.once('error', onError);
      server.listen(at.port, at.host, () => {
        server.off('error', onError);
        const a = server.address() as { address: string; port: number };
        this.log.info('inbound listening', { listen: formatHostPort({ host: a.address, port: a.port }) });
        resolve({ host: a.address, port: a.port });
      });
    });
  }

  /** A TLS context for the SNI's service, or why there is none. */
  private contextForSni(name: string): SecureContext | string {
    const route = this.routes.get(name);
    if (!route) return `no local service for SNI ${JSON.stringify(name)}`;
    const mode = this.authorizer.modeOf(route);
    if (!acceptsMtls(mode.mode)) {
      this.stats.refusedMtlsMode++;
      return `MESH_ERR_MTLS_MODE: service ${formatServiceRef(route.workload)} takes plaintext only (mTLS mode ${mode.mode}, from ${mode.source})`;
    }
    return this.credentials.contextFor(route.identity) ?? `no certificate yet for ${route.identity}`;
  }

  private onConnection(socket: Socket): void {
    // From the first byte: the TLS handshake's last flights (session tickets) must not wait for a delayed ACK.
    socket.setNoDelay(true);
    socket.on('error', (err) => this.log.debug('inbound socket error', { peer: `${socket.remoteAddress}:${socket.remotePort}`, error: err.message }));
    // `open` does not count this connection yet (it is told of it after this handler). Nothing was read: a close.
    if (this.open.size >= this.limits.maxConnections) {
      this.stats.overLimit++;
      this.log.warn('inbound connection refused: limits.maxConnections are open', { peer: `${socket.remoteAddress}:${socket.remotePort}`, max: this.limits.maxConnections });
      socket.destroy();
      return;
    }
    if (!this.plaintextPossible()) {
      this.toTls(socket);
      return;
    }
    let buf: Buffer | undefined;
    const decide = (kind: FirstBytesKind): void => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('end', onEnd);
      socket.pause();
      if (buf) socket.unshift(buf);
      this.dispatch(kind, socket);
    };
    const onData = (chunk: Buffer): void => {
      buf = buf ? Buffer.concat([buf, chunk]) : chunk;
      const kind = classifyFirstBytes(buf);
      if (kind) decide(kind);
    };
    // A client that closes before its first bytes say what it speaks is not worth serving.
    const onEnd = (): void => {
      clearTimeout(timer);
      socket.destroy();
    };
    const timer = setTimeout(() => (buf ? decide(classifyFirstBytes(buf) ?? 'tcp') : decide('tcp')), SNIFF_TIMEOUT_MS);
    socket.on('data', onData);
    socket.once('end', onEnd);
    socket.once('close', () => clearTimeout(timer));
  }

  /**
   * Hands a connection to the TLS server. A client that half-closes before the handshake is done would otherwise hold
   * the connection until the handshake timeout (the listener is half-open for TCP): closed at once instead, and
   * half-open again once the handshake is done (`accept`).
   */
  private toTls(socket: Socket): void {
    socket.allowHalfOpen = false;
    this.tls.emit('connection', socket);
  }

  private plaintextPossible(): boolean {
    const policy = this.policy();
    const cached = this.plaintext;
    if (cached && cached.policy === policy && cached.routes === this.routes) return cached.any;
    const any = [...this.routes.values()].some((r) => acceptsPlaintext(this.authorizer.modeOf(r).mode));
    this.plaintext = { policy, routes: this.routes, any };
    return any;
  }

  private dispatch(kind: FirstBytesKind, socket: Socket): void {
    if (kind === 'tls') {
      this.toTls(socket);
      return;
    }
    const facts: ConnectionFacts = { tls: false, ...addresses(socket) };
    if (kind === 'http1') {
      this.stats.acceptedPlaintext++;
      this.servePlainHttp(socket, facts);
      return;
    }
    const route = this.onlyPlaintextService(kind === 'h2c' ? ['http2', 'grpc'] : ['tcp'], kind, socket);
    if (!route) return;
    this.stats.acceptedPlaintext++;
    if (kind === 'h2c') {
      this.h2.serve(socket, route, this.h2Caller(route, facts, 'plaintext'));
      return;
    }
    this.serveTcp(socket, route, facts, undefined);
  }

  /** The one service of `protocols` that takes plaintext; when none or several do, the connection is refused. */
  private onlyPlaintextService(protocols: readonly Protocol[], kind: FirstBytesKind, socket: Socket): InboundRoute | undefined {
    const fit = [...this.routes.values()].filter((r) => protocols.includes(r.protocol) && acceptsPlaintext(this.authorizer.modeOf(r).mode));
    if (fit.length === 1) return fit[0];
    this.stats.refusedPlaintext++;
    this.log.warn('plaintext connection refused: no single service to take it', {
      code: 'MESH_ERR_MTLS_MODE',
      peer: `${socket.remoteAddress}:${socket.remotePort}`,
      spoke: kind === 'h2c' ? 'HTTP/2 (h2c)' : 'TCP (not TLS, not HTTP)',
      candidates: fit.map((r) => formatServiceRef(r.workload)).join(',') || 'none',
      hint: `plaintext ${kind === 'h2c' ? 'h2c' : 'TCP'} goes to the one ${protocols.join('/')} service whose mTLS mode is PERMISSIVE or DISABLE`,
    });
    socket.destroy();
    return undefined;
  }

  private accept(socket: TLSSocket): void {
    socket.allowHalfOpen = true;
    const sni = (socket as TLSSocket & { servername?: string }).servername || '';
    const route = this.routes.get(sni);
    const cert = peerCertificate(socket);
    const peer = cert?.id;
    const where = `${socket.remoteAddress}:${socket.remotePort}`;
    socket.on('error', (err) => this.log.debug('inbound socket error', { peer: where, error: err.message }));
    // A resumed TLS session skips the certificate checks: one resumed after the certificate expired is refused here,
    // whatever the connection is for (traffic or gossip).
    if (cert && !currentAt(cert, Date.now())) {
      this.stats.refusedIdentity++;
      this.log.warn('inbound connection refused: peer certificate is not valid now (a resumed TLS session)', {
        code: 'MESH_ERR_PEER_IDENTITY',
        peer: where,
        identity: peer?.toString() ?? 'none',
        notAfter: new Date(cert.notAfter).toISOString(),
        service: sni,
      });
      socket.destroy();
      return;
    }
    if (socket.alpnProtocol === GOSSIP_ALPN) {
      if (route && this.gossip) this.gossip(socket, peer);
      else socket.destroy();
      return;
    }
    if (!route) {
      socket.destroy();
      return;
    }
    if (!peer || peer.trustDomain !== this.credentials.trustDomain || !peer.workloadParts) {
      this.stats.refusedIdentity++;
      this.log.warn('inbound connection refused: peer identity is not a workload of this trust domain', { peer: where, identity: peer?.toString() ?? 'none', service: route.sni });
      socket.destroy();
      return;
    }
    const facts: ConnectionFacts = { tls: true, ...principalOf(peer.toString()), ...addresses(socket), sni };
    // The SNI callback refuses mTLS to a DISABLE service, but a resumed TLS session skips it.
    if (!this.authorizer.checkMode(route, facts).allowed) {
      socket.destroy();
      return;
    }
    this.stats.accepted++;
    socket.setNoDelay(true);
    const xfcc = xfccOf(socket, route, peer);
    if (socket.alpnProtocol === 'h2') {
      this.h2.serve(socket, route, this.h2Caller(route, facts, peer.toString(), xfcc, peer));
      return;
    }
    if (socket.alpnProtocol === MUX_ALPN) {
      this.serveMux(socket, route, facts, peer, xfcc, cert?.notAfter);
      return;
    }
    if (route.protocol === 'http') {
      this.serveHttp(socket, route, facts, peer, xfcc);
      return;
    }
    this.serveTcp(socket, route, facts, peer);
  }

  /** An HTTP/2 connection's caller: each stream admitted, the session and open streams checked again on policy change. */
  private h2Caller(route: InboundRoute, facts: ConnectionFacts, peer: string, xfcc?: string, peerId?: SpiffeId): H2Caller {
    return {
      peer,
      ...(peerId ? { peerId } : {}),
      ...(xfcc ? { xfcc } : {}),
      authorize: (headers) => this.authorizer.admitStream(route, facts, headers),
      watch: (headers, close) => this.authorizer.watchH2(route, facts, headers, close),
    };
  }

  /** TCP: the connection is admitted once (L4 attributes), then piped to the app; a new policy may close it. */
  private serveTcp(socket: Socket, route: InboundRoute, facts: ConnectionFacts, peer: SpiffeId | undefined): void {
    const t = this.telemetry;
    const seen = t && observeTcp(t, inboundHop(t, route, peer), socket);
    if (!this.authorizer.admit(route, facts).allowed) {
      if (seen) seen.flags = 'RBAC';
      socket.destroy();
      return;
    }
    if (seen) seen.upstream = { address: route.target.host, port: route.target.port, weight: 1, labels: {} };
    const tracked: OpenConnection = { facts, current: () => ({ route }), close: () => socket.destroy() };
    this.authorizer.track(tracked);
    socket.once('close', () => this.authorizer.untrack(tracked));
    const app = netConnect({ host: route.target.host, port: route.target.port, allowHalfOpen: true });
    app.setNoDelay(true);
    app.once('error', (err) => {
      this.stats.upstreamFailures++;
      if (seen) seen.flags = 'UF';
      this.log.warn('local app unreachable', { service: route.sni, target: formatHostPort(route.target), error: describeError(err) });
    });
    pipeBoth(socket, app);
  }

  /**
   * mesh-mux/1 from another agent (chosen in the handshake only for a `protocol: http` service, chooseAlpn): each
   * stream is one HTTP/1.1 connection of the caller's, served as if it had come on a TLS connection of its own (same
   * identity, same admission, each stream closed alone by a policy change).
   */
  private serveMux(socket: TLSSocket, route: InboundRoute, facts: ConnectionFacts, peer: SpiffeId, xfcc: string, notAfter: number | undefined): void {
    this.stats.muxSessions++;
    const session = new MuxSession(socket, {
      onStream: (stream) => {
        this.stats.muxStreams++;
        this.serveHttp(stream, route, facts, peer, xfcc);
      },
      onProtocolError: (message) => this.log.warn('multiplexed connection closed: the calling agent broke the protocol', { code: 'MESH_ERR_MUX_PROTOCOL', peer: peer.toString(), error: message }),
    });
    socket.on('data', session.onBytes);
    // A mode that no longer takes mTLS closes the connection itself, not only its streams: the caller's next request
    // then meets the refusal in a new handshake, as it would without multiplexing.
    const tracked: OpenConnection = { facts, current: () => ({ route, modeOnly: true }), close: () => socket.destroy() };
    this.authorizer.track(tracked);
    // A connection that outlives the caller's certificate is cut (the caller moves to a new one when it renews).
    const expiry = notAfter === undefined ? null : setTimeout(() => socket.destroy(), Math.min(Math.max(0, notAfter - Date.now()), 2 ** 31 - 1)).unref();
    socket.once('close', () => {
      this.authorizer.untrack(tracked);
      if (expiry) clearTimeout(expiry);
    });
  }

  /**
   * HTTP over mTLS: requests go one by one to the local app over pooled connections, each admitted first; each
   * carries the caller's verified identity as x-forwarded-client-cert (Envoy's format), replacing any the caller sent.
   */
  private serveHttp(socket: ByteStream, route: InboundRoute, facts: ConnectionFacts, peer: SpiffeId, xfcc: string): void {
    const forward: Decision = { kind: 'forward', target: this.appTarget(route), edits: setOnlyEdits([['x-forwarded-client-cert', xfcc]]) };
    this.serveHttpSession(socket, facts, peer, route, () => route, () => forward);
  }

  /** Plaintext HTTP/1.1: each request picks its service by Host, must be let in by that service's mode and policies. */
  private servePlainHttp(socket: Socket, facts: ConnectionFacts): void {
    const forwards = new Map<InboundRoute, Decision>();
    this.serveHttpSession(
      socket,
      facts,
      undefined,
      undefined,
      (head) => {
        const host = headerValue(head, 'host') ?? '';
        return this.routeForHost(host) ?? simpleResponse(404, 'Not Found', `no local HTTP service for host ${JSON.stringify(host)}\n`, [['x-mesh-response-flags', 'NR']]);
      },
      (route) => {
        let d = forwards.get(route);
        if (!d) forwards.set(route, (d = { kind: 'forward', target: this.appTarget(route), edits: PLAINTEXT_EDITS }));
        return d;
      },
    );
    socket.resume();
  }

  /**
   * One HTTP/1.1 session: `pick` says which service a request is for (or answers it); the request is admitted, then
   * forwarded as `forward` says. When the policy changes, an upgraded connection (WebSocket) is checked again with its
   * upgrade request, any other against the mTLS mode of the service it last served (`first` until then).
   */
  private serveHttpSession(
    socket: ByteStream,
    facts: ConnectionFacts,
    peerId: SpiffeId | undefined,
    first: InboundRoute | undefined,
    pick: (head: HttpHead) => InboundRoute | Buffer,
    forward: (route: InboundRoute) => Decision,
  ): void {
    let upgrade: { route: InboundRoute; http: AuthzHttp } | undefined;
    let last = first;
    const peer = peerId?.toString() ?? 'plaintext';
    const t = this.telemetry;
    // The hop of the service a request is for, resolved again only when a connection's requests change service.
    const reporter: ExchangeReporter | null = t ? { telemetry: t, hop: inboundHop(t, first, peerId) } : null;
    let counted = first;
    const countAs = (route: InboundRoute | undefined): void => {
      if (reporter && route !== counted) reporter.hop = inboundHop(reporter.telemetry, (counted = route), peerId);
    };
    const session = new Http1Session(
      socket,
      (head) => {
        const route = pick(head);
        countAs(Buffer.isBuffer(route) ? undefined : route);
        if (Buffer.isBuffer(route)) return { kind: 'respond', response: route };
        last = route;
        // Most services have no policy to check: then no request attributes are built.
        if (this.authorizer.mustCheck(route, facts)) {
          const a = this.authorizer.admit(route, facts, http1Attributes(head));
          if (!a.allowed) return { kind: 'respond', response: simpleResponse(403, 'Forbidden', `${a.message}\n`, [['x-mesh-response-flags', refusalFlag(a)]]) };
        }
        if (head.upgrade) upgrade = { route, http: http1Attributes(head) };
        return forward(route);
      },
      (kind, msg) => {
        if (kind === 'malformed') {
          this.stats.malformed++;
          this.log.warn('malformed HTTP request on inbound connection', { peer, error: msg });
        } else this.log.debug('inbound http exchange failed', { peer, kind, error: msg });
      },
      this.limits,
      reporter,
    );
    const tracked: OpenConnection = { facts, current: () => (session.tunneling ? upgrade : last && { route: last, modeOnly: true }), close: () => socket.destroy() };
    this.authorizer.track(tracked);
    socket.once('close', () => this.authorizer.untrack(tracked));
  }

  /** The local `protocol: http` service a Host header names: `api`, `api.ns`, `api.ns.svc[.cluster.local]`, `api.ns.mesh`, or its SNI name. */
  private routeForHost(host: string): InboundRoute | undefined {
    const bare = host.replace(/:\d+$/, '').toLowerCase();
    const ref = normalizeHost(bare, 'default');
    const route = this.routes.get(bare) ?? this.byService.get(`${ref.namespace}/${ref.name}`);
    return route?.protocol === 'http' ? route : undefined;
  }

  private appTarget(route: InboundRoute): Extract<Decision, { kind: 'forward' }>['target'] {
    return { endpoint: { address: route.target.host, port: route.target.port, weight: 1, labels: {} }, pool: this.appPool(route), done: this.onAppExchange };
  }

  private readonly onAppExchange = (o: { connectFailure: boolean }): void => {
    if (o.connectFailure) this.stats.upstreamFailures++;
  };

  /** One pool of plain connections per local app. */
  private readonly appPools = new Map<string, ConnectionPool>();
  private appPool(route: InboundRoute): ConnectionPool {
    let pool = this.appPools.get(route.sni);
    if (!pool) {
      pool = new ConnectionPool(
        (ep, _timeoutMs, reads) =>
          new Promise((resolve, reject) => {
            const s = netConnect({ host: ep.address, port: ep.port, onread: reads.onread });
            s.setNoDelay(true);
            s.once('connect', () => {
              s.off('error', reject);
              resolve(s);
            });
            s.once('error', reject);
          }),
        // Apps close idle keep-alive connections themselves (Node: 5 s); retire ours a little sooner.
        { idleTimeoutMs: 4000 },
      );
      this.appPools.set(route.sni, pool);
    }
    return pool;
  }

  close(): Promise<void> {
    this.h2.close();
    for (const p of this.appPools.values()) p.close();
    return drainAndClose(this.server, this.open);
  }
}

/** The inbound port's ALPN ids in its order of preference. */
const ALPN_PREFERENCE = ['h2', MUX_ALPN, 'http/1.1', GOSSIP_ALPN];

/**
 * The ALPN id the inbound port takes among those a caller offers: the first of ALPN_PREFERENCE it offered, MUX_ALPN
 * only for an HTTP/1.1 service; undefined (the handshake fails) when it offered none of them.
 */
export function chooseAlpn(offered: readonly string[], httpService: boolean): string | undefined {
  return ALPN_PREFERENCE.find((p) => offered.includes(p) && (p !== MUX_ALPN || httpService));
}

/** The caller's verified identity as Envoy's x-forwarded-client-cert value. */
function xfccOf(socket: TLSSocket, route: InboundRoute, peer: SpiffeId): string {
  const hash = createHash('sha256').update(socket.getPeerX509Certificate()?.raw ?? Buffer.alloc(0)).digest('hex');
  return `By=${route.identity};Hash=${hash};URI=${peer}`;
}

function addresses(socket: Socket): Pick<ConnectionFacts, 'sourceIp' | 'sourcePort' | 'destinationIp'> {
  return {
    ...(socket.remoteAddress ? { sourceIp: socket.remoteAddress } : {}),
    ...(socket.remotePort ? { sourcePort: socket.remotePort } : {}),
    ...(socket.localAddress ? { destinationIp: socket.localAddress } : {}),
  };
}
