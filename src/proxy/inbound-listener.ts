// The inbound mTLS port: SNI picks the local service and its certificate; the caller must prove a mesh workload identity.

import { createHash } from 'node:crypto';
import { connect as netConnect } from 'node:net';
import { createServer, type SecureContext, type Server, type TLSSocket } from 'node:tls';
import type { SpiffeId } from '../ca';
import { formatHostPort, type HostPort } from '../config';
import { describeError, MeshError } from '../errors';
import type { Logger } from '../telemetry';
import { ConnectionPool } from './connection-pool';
import { setOnlyEdits } from './http1/http1-head';
import { Http1Session } from './http1/http1-session';
import type { Decision } from './route-decision';
import { H2Inbound } from './http2/h2-inbound';
import { peerSpiffeId } from './peer-identity';
import { drainAndClose, trackConnections } from './drain';
import { pipeBoth } from './pipe';
import type { CredentialStore, InboundRoute } from './proxy-config';

/** Counters the agent reports. */
export interface InboundStats {
  accepted: number;
  refusedHandshake: number;
  refusedIdentity: number;
  malformed: number;
  upstreamFailures: number;
  /** HTTP/2 sessions (connections that chose h2 by ALPN) accepted, and streams they carried. */
  h2Sessions: number;
  h2Streams: number;
}

export class InboundListener {
  private open = new Set<import('node:net').Socket>();
  private server?: Server;
  private routes = new Map<string, InboundRoute>();
  readonly stats: InboundStats = { accepted: 0, refusedHandshake: 0, refusedIdentity: 0, malformed: 0, upstreamFailures: 0, h2Sessions: 0, h2Streams: 0 };
  /** Connections that chose h2 by ALPN. */
  private readonly h2: H2Inbound;

  constructor(
    private readonly credentials: CredentialStore,
    private readonly log: Logger,
  ) {
    this.h2 = new H2Inbound(this.stats, log);
  }

  /** Replaces the routes; open connections keep the route they started with. */
  setRoutes(routes: readonly InboundRoute[]): void {
    this.routes = new Map(routes.map((r) => [r.sni, r]));
  }

  listen(at: HostPort): Promise<HostPort> {
    const server = createServer({
      requestCert: true,
      rejectUnauthorized: true,
      minVersion: 'TLSv1.3',
      allowHalfOpen: true,
      // h2 for callers whose upstream is http2/grpc; the others send no ALPN and keep the HTTP/1 or TCP path.
      ALPNProtocols: ['h2', 'http/1.1'],
      SNICallback: (name, cb) => {
        const ctx = this.contextForSni(name);
        if (ctx) cb(null, ctx);
        else cb(new Error(`no local service for SNI ${JSON.stringify(name)}`));
      },
    } as import('node:tls').TlsOptions);
    this.server = server;
    this.open = trackConnections(server, 'secureConnection');
    server.on('secureConnection', (socket) => this.accept(socket));
    server.on('tlsClientError', (err, socket) => {
      this.stats.refusedHandshake++;
      this.log.warn('inbound connection refused during TLS handshake', { peer: `${socket.remoteAddress}:${socket.remotePort}`, error: err.message });
      socket.destroy();
    });
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

  private contextForSni(name: string): SecureContext | undefined {
    const route = this.routes.get(name);
    return route && this.credentials.contextFor(route.identity);
  }

  private accept(socket: TLSSocket): void {
    const route = this.routes.get((socket as TLSSocket & { servername?: string }).servername || '');
    const peer = peerSpiffeId(socket);
    const where = `${socket.remoteAddress}:${socket.remotePort}`;
    socket.on('error', (err) => this.log.debug('inbound socket error', { peer: where, error: err.message }));
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
    this.stats.accepted++;
    socket.setNoDelay(true);
    if (socket.alpnProtocol === 'h2') {
      this.h2.serve(socket, route, peer);
      return;
    }
    if (route.protocol === 'http') {
      this.serveHttp(socket, route, peer);
      return;
    }
    const app = netConnect({ host: route.target.host, port: route.target.port, allowHalfOpen: true });
    app.setNoDelay(true);
    app.once('error', (err) => {
      this.stats.upstreamFailures++;
      this.log.warn('local app unreachable', { service: route.sni, target: formatHostPort(route.target), error: describeError(err) });
    });
    pipeBoth(socket, app);
  }

  /**
   * HTTP: requests go one by one to the local app over pooled connections; each carries the caller's verified
   * identity as x-forwarded-client-cert (Envoy's format), replacing any the caller sent.
   */
  private serveHttp(socket: TLSSocket, route: InboundRoute, peer: SpiffeId): void {
    const hash = createHash('sha256').update(socket.getPeerX509Certificate()?.raw ?? Buffer.alloc(0)).digest('hex');
    const forward: Decision = {
      kind: 'forward',
      target: { endpoint: { address: route.target.host, port: route.target.port, weight: 1, labels: {} }, pool: this.appPool(route), done: this.onAppExchange },
      edits: setOnlyEdits([['x-forwarded-client-cert', `By=${route.identity};Hash=${hash};URI=${peer}`]]),
    };
    new Http1Session(socket, () => forward, (kind, msg) => {
      if (kind === 'malformed') {
        this.stats.malformed++;
        this.log.warn('malformed HTTP request on inbound connection', { service: route.sni, peer: peer.toString(), error: msg });
      } else this.log.debug('inbound http exchange failed', { service: route.sni, peer: peer.toString(), kind, error: msg });
    });
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
        (ep) =>
          new Promise((resolve, reject) => {
            const s = netConnect({ host: ep.address, port: ep.port });
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
