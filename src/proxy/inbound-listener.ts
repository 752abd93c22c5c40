// The inbound mTLS port: SNI picks the local service and its certificate; the caller must prove a mesh workload identity.

import { createHash } from 'node:crypto';
import { connect as netConnect } from 'node:net';
import { createServer, type SecureContext, type Server, type TLSSocket } from 'node:tls';
import type { SpiffeId } from '../ca';
import { formatHostPort, type HostPort } from '../config';
import { describeError } from '../errors';
import type { Logger } from '../telemetry';
import { errorResponse, Http1RequestFramer, HttpFramingError } from './http1-request-framer';
import { peerSpiffeId } from './peer-identity';
import { pipeBoth } from './pipe';
import type { CredentialStore, InboundRoute } from './proxy-config';

/** Counters the agent reports. */
export interface InboundStats {
  accepted: number;
  refusedHandshake: number;
  refusedIdentity: number;
  malformed: number;
  upstreamFailures: number;
}

export class InboundListener {
  private server?: Server;
  private routes = new Map<string, InboundRoute>();
  readonly stats: InboundStats = { accepted: 0, refusedHandshake: 0, refusedIdentity: 0, malformed: 0, upstreamFailures: 0 };

  constructor(
    private readonly credentials: CredentialStore,
    private readonly log: Logger,
  ) {}

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
      SNICallback: (name, cb) => {
        const ctx = this.contextForSni(name);
        if (ctx) cb(null, ctx);
        else cb(new Error(`no local service for SNI ${JSON.stringify(name)}`));
      },
    } as import('node:tls').TlsOptions);
    this.server = server;
    server.on('secureConnection', (socket) => this.accept(socket));
    server.on('tlsClientError', (err, socket) => {
      this.stats.refusedHandshake++;
      this.log.warn('inbound connection refused during TLS handshake', { peer: `${socket.remoteAddress}:${socket.remotePort}`, error: err.message });
      socket.destroy();
    });
    server.on('error', (err) => this.log.error('inbound listener error', { error: err.message }));
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(at.port, at.host, () => {
        server.off('error', reject);
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
    const app = netConnect({ host: route.target.host, port: route.target.port, allowHalfOpen: true });
    app.setNoDelay(true);
    app.once('error', (err) => {
      this.stats.upstreamFailures++;
      this.log.warn('local app unreachable', { service: route.sni, target: formatHostPort(route.target), error: describeError(err) });
    });
    if (route.protocol === 'http') this.pipeHttp(socket, app, route.identity, peer);
    else pipeBoth(socket, app);
  }

  /** HTTP: every request head gets the caller's verified identity as x-forwarded-client-cert (Envoy's format). */
  private pipeHttp(socket: TLSSocket, app: import('node:net').Socket, local: SpiffeId, peer: SpiffeId): void {
    const hash = createHash('sha256').update(socket.getPeerX509Certificate()?.raw ?? Buffer.alloc(0)).digest('hex');
    const framer = new Http1RequestFramer({ xfcc: `By=${local};Hash=${hash};URI=${peer}` });
    framer.on('error', (err) => {
      this.stats.malformed++;
      this.log.warn('malformed HTTP request on inbound connection', { peer: peer.toString(), error: err.message });
      if (err instanceof HttpFramingError) socket.end(errorResponse(err));
      else socket.destroy();
      app.destroy();
    });
    socket.pipe(framer).pipe(app);
    app.pipe(socket);
    app.on('error', () => socket.destroy());
    socket.on('close', () => app.destroy());
    app.on('close', () => {
      if (!socket.writableFinished) socket.end();
    });
  }

  close(): Promise<void> {
    return new Promise((resolve) => (this.server?.listening ? this.server.close(() => resolve()) : resolve()));
  }
}
