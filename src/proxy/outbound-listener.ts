// An outbound upstream port: a local app connects in plain TCP; the agent carries it over mTLS to a remote agent.

import { createServer, type Server, type Socket } from 'node:net';
import { formatHostPort, type HostPort } from '../config';
import { describeError, MeshError } from '../errors';
import type { Logger } from '../telemetry';
import type { Cluster } from './cluster';
import type { Connector } from './mtls-connector';
import { ConnectionPool } from './connection-pool';
import { Http1Session, type Decision, type ExchangeOutcome, type HttpRouter } from './http1/http1-session';
import { simpleResponse } from './http1/http1-head';
import { pipeBoth } from './pipe';

const NO_HEALTHY_UPSTREAM = simpleResponse(503, 'Service Unavailable', 'no healthy upstream\n', [['x-mesh-response-flags', 'UH']]);
import type { CredentialStore, OutboundRoute } from './proxy-config';

/** Counters the agent reports. */
export interface OutboundStats {
  connections: number;
  noEndpoint: number;
  connectFailures: number;
}

export class OutboundListener {
  private server?: Server;
  readonly stats: OutboundStats = { connections: 0, noEndpoint: 0, connectFailures: 0 };

  /** Pooled mTLS connections per endpoint, for HTTP; a rotated certificate retires idle ones. */
  private readonly pool: ConnectionPool;
  private readonly router: HttpRouter;

  constructor(
    readonly route: OutboundRoute,
    private readonly cluster: Cluster,
    private readonly connector: Connector,
    private readonly credentials: CredentialStore,
    private readonly log: Logger,
  ) {
    const { source, sni, destination } = route;
    this.pool = new ConnectionPool(
      (endpoint) => {
        const context = credentials.contextFor(source);
        if (!context) return Promise.reject(new MeshError('MESH_ERR_UPSTREAM_CONNECT', `no workload certificate yet for ${source}`));
        return connector.connect({ endpoint, context, sni, expected: destination });
      },
      {},
      () => credentials.contextFor(source),
    );
    this.router = (): Decision => {
      const endpoint = this.cluster.pick();
      if (!endpoint) {
        this.stats.noEndpoint++;
        return { kind: 'respond', response: NO_HEALTHY_UPSTREAM };
      }
      return { kind: 'forward', endpoint, pool: this.pool, done: this.onExchange };
    };
  }

  private readonly onExchange = (o: ExchangeOutcome): void => {
    if (o.connectFailure) this.stats.connectFailures++;
  };

  listen(): Promise<HostPort> {
    const server = (this.server = createServer({ allowHalfOpen: true, pauseOnConnect: true }, (s) => void this.accept(s)));
    server.on('error', (err) => this.log.error('outbound listener error', { cluster: this.route.cluster, error: err.message }));
    const at = this.route.listen;
    return new Promise((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) =>
        reject(new MeshError('MESH_ERR_LISTEN', `cannot listen for upstream ${this.route.cluster} on ${formatHostPort(at)}: ${err.code ?? err.message}`, { cause: err })),
      );
      server.listen(at.port, at.host, () => {
        server.removeAllListeners('error');
        server.on('error', (err) => this.log.error('outbound listener error', { cluster: this.route.cluster, error: err.message }));
        const a = server.address() as { address: string; port: number };
        this.log.info('upstream listening', { cluster: this.route.cluster, listen: formatHostPort({ host: a.address, port: a.port }) });
        resolve({ host: a.address, port: a.port });
      });
    });
  }

  private async accept(down: Socket): Promise<void> {
    this.stats.connections++;
    down.on('error', (err) => this.log.debug('downstream socket error', { error: err.message }));
    down.setNoDelay(true);
    if (this.route.protocol === 'http') {
      new Http1Session(down, this.router, (kind, msg) => this.log.debug('http exchange failed', { cluster: this.route.cluster, kind, error: msg }));
      down.resume();
      return;
    }
    const endpoint = this.cluster.pick();
    const context = this.credentials.contextFor(this.route.source);
    if (!endpoint || !context) {
      this.stats.noEndpoint++;
      this.log.warn(endpoint ? 'no workload certificate yet for the calling service' : 'no endpoint for upstream', { cluster: this.route.cluster, source: this.route.source.toString() });
      down.destroy();
      return;
    }
    try {
      const up = await this.connector.connect({ endpoint, context, sni: this.route.sni, expected: this.route.destination });
      if (down.destroyed) {
        up.destroy();
        return;
      }
      pipeBoth(down, up);
      down.resume();
    } catch (err) {
      this.stats.connectFailures++;
      this.log.warn('upstream connection failed', { cluster: this.route.cluster, endpoint: `${endpoint.address}:${endpoint.port}`, error: describeError(err) });
      down.destroy();
    }
  }

  close(): Promise<void> {
    this.pool.close();
    return new Promise((resolve) => (this.server?.listening ? this.server.close(() => resolve()) : resolve()));
  }
}
