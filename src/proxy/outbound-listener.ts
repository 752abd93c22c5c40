// An outbound upstream port: a local app connects in plain TCP; the agent carries it over mTLS to a remote agent.

import { createServer, type Server, type Socket } from 'node:net';
import { SpiffeId } from '../ca';
import { formatHostPort, type HostPort } from '../config';
import { describeError, MeshError } from '../errors';
import { matchTcpRoute, ownSubsetPolicy, pickWeighted, serviceRefKey, type CompiledPolicy, type ServiceRef } from '../policy';
import type { MeshTelemetry, Logger } from '../telemetry';
import { observeTcp, outboundHop, type ExchangeReporter } from './exchange-report';
import type { Cluster } from './cluster';
import { ConnectionPool } from './connection-pool';
import { Http1Session } from './http1/http1-session';
import { H2Outbound } from './http2/h2-outbound';
import type { Connector } from './mtls-connector';
import type { MuxDialer } from './mux/mux-dialer';
import { HTTP1_ROUTING } from './http1/http1-routing';
import type { HttpHead } from './http1/http1-head';
import { OutboundHttpRouter } from './outbound-http-router';
import { drainAndClose, trackConnections } from './drain';
import { pipeBoth } from './pipe';
import type { CredentialStore, OutboundRoute } from './proxy-config';
import { DEFAULT_PROXY_LIMITS, type ProxyLimits } from './proxy-limits';
import { simpleResponse } from './http1/http1-head';

/** Counters the agent reports. */
export interface OutboundStats {
  connections: number;
  noEndpoint: number;
  connectFailures: number;
  /** TCP connections that no VirtualService tcp[] rule matched. */
  noRoute: number;
  /** TCP connections refused because the cluster's circuit breaker maxConnections were all open. */
  overflow: number;
  /** Connections refused because the listener had limits.maxConnections open (HTTP: answered 503 first). */
  overLimit: number;
}

/** Clusters are shared by every listener of the agent; the agent keeps them fed by discovery. */
export interface ClusterCatalog {
  /** The service's cluster, or a subset's own cluster (when its DestinationRule subset has its own trafficPolicy). */
  cluster(service: ServiceRef, subset?: string): Cluster;
}

export class OutboundListener {
  private open = new Set<Socket>();
  private server?: Server;
  readonly stats: OutboundStats = { connections: 0, noEndpoint: 0, connectFailures: 0, noRoute: 0, overflow: 0, overLimit: 0 };
  /** Pooled mTLS connections per destination service (each has its own SNI and identity), for HTTP, with the policy they were configured by. */
  private readonly pools = new Map<string, { pool: ConnectionPool; policy: CompiledPolicy | undefined }>();
  readonly router: OutboundHttpRouter<HttpHead, Buffer, ConnectionPool>;

  constructor(
    readonly route: OutboundRoute,
    private readonly catalog: ClusterCatalog,
    private readonly policy: () => CompiledPolicy,
    private readonly connector: Connector,
    private readonly credentials: CredentialStore,
    private readonly log: Logger,
    private readonly limits: ProxyLimits = DEFAULT_PROXY_LIMITS,
    /** Metrics, access log, traces and taps of this port's traffic; absent when nothing reports. */
    telemetry?: MeshTelemetry,
    /** HTTP/1.1 to remote agents multiplexed (mesh-mux/1) through it; absent: one connection per request in flight. */
    private readonly mux?: MuxDialer,
  ) {
    this.reporter = telemetry ? { telemetry, hop: outboundHop(telemetry, route) } : null;
    const upstreams = { cluster: (s: ServiceRef, subset?: string) => catalog.cluster(s, subset), pool: (s: ServiceRef, subset?: string) => this.pool(s, subset) };
    this.router = new OutboundHttpRouter(route.service, policy, upstreams, HTTP1_ROUTING, Math.random, route.listen.port, route.sourceLabels);
    if (route.protocol === 'http2' || route.protocol === 'grpc') this.h2 = new H2Outbound(route, catalog, policy, connector, credentials, log, limits, telemetry);
  }

  /** The hop this port's HTTP/1.1 requests and TCP connections count under. */
  private readonly reporter: ExchangeReporter | null;

  /** The counters the agent's status shows: the router's for http, http2 and grpc (with stream and session counts for h2), the TCP ones for tcp. */
  statusStats(): Readonly<Record<string, number>> {
    if (this.h2) return { connections: this.stats.connections, ...this.h2.stats, ...this.h2.router.stats };
    if (this.route.protocol === 'http') return { connections: this.stats.connections, ...this.router.stats };
    return { ...this.stats };
  }

  /**
   * The pool for a destination service: mTLS with its SNI, checking its workload identity; a rotated certificate
   * retires idle connections. Its limits are the cluster's circuit breaker; its timeouts follow the service's
   * DestinationRule (connectionPool), re-read when the policy changes.
   */
  private pool(service: ServiceRef, subset?: string): ConnectionPool {
    const key = subset === undefined ? serviceRefKey(service) : `${serviceRefKey(service)}#${subset}`;
    let entry = this.pools.get(key);
    if (!entry) {
      const { source } = this.route;
      const td = this.credentials.trustDomain;
      const sni = `${service.name}.${service.namespace}.${td}`;
      const expected = SpiffeId.workload(td, service.namespace, service.name);
      const credentials = this.credentials;
      const pool = new ConnectionPool(
        (endpoint, timeoutMs, reads) => {
          const context = credentials.contextFor(source);
          if (!context) return Promise.reject(new MeshError('MESH_ERR_UPSTREAM_CONNECT', `no workload certificate yet for ${source}`));
          const opts = { endpoint, context, sni, expected, timeoutMs };
          return this.mux ? this.mux.open(opts, reads) : this.connector.connect({ ...opts, onread: reads.onread });
        },
        {},
        () => credentials.contextFor(source),
        this.catalog.cluster(service, subset).circuitBreaker,
      );
      this.pools.set(key, (entry = { pool, policy: undefined }));
    }
    const policy = this.policy();
    if (entry.policy !== policy) {
      entry.policy = policy;
      const dp = policy.destinationFor(service);
      const cp = (ownSubsetPolicy(dp, subset) ?? dp.trafficPolicy).connectionPool;
      entry.pool.configure({ idleTimeoutMs: cp.idleTimeoutMs, maxRequestsPerConnection: cp.maxRequestsPerConnection, connectTimeoutMs: cp.connectTimeoutMs });
    }
    return entry.pool;
  }

  listen(): Promise<HostPort> {
    const server = (this.server = createServer({ allowHalfOpen: true, pauseOnConnect: true }, (s) => void this.accept(s)));
    this.open = trackConnections(server);
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

  /** HTTP/2 and gRPC (protocol http2 / grpc): streams routed one by one, multiplexed over one mTLS session per endpoint (src/proxy/http2). */
  private readonly h2?: H2Outbound;

  private async accept(down: Socket): Promise<void> {
    this.stats.connections++;
    // `open` does not count this connection yet (it is told of it after this handler).
    if (this.open.size >= this.limits.maxConnections) {
      this.stats.overLimit++;
      this.log.warn('connection refused: the upstream port has limits.maxConnections open', { cluster: this.route.cluster, max: this.limits.maxConnections });
      if (this.route.protocol !== 'http') {
        down.destroy();
        return;
      }
      // Read and drop what the client sends, so that its close is seen; a client that stays gets cut after 2 s.
      down.allowHalfOpen = false;
      down.resume();
      down.end(simpleResponse(503, 'Service Unavailable', `too many connections to this upstream port (limits.maxConnections ${this.limits.maxConnections})\n`, [['x-mesh-response-flags', 'OL']], true));
      setTimeout(() => down.destroy(), 2000).unref();
      return;
    }
    if (this.h2) {
      this.h2.accept(down);
      return;
    }
    down.on('error', (err) => this.log.debug('downstream socket error', { error: err.message }));
    down.setNoDelay(true);
    if (this.route.protocol === 'http') {
      new Http1Session(down, this.router.route, (kind, msg) => this.log.debug('http exchange failed', { cluster: this.route.cluster, kind, error: msg }), this.limits, this.reporter);
      down.resume();
      return;
    }
    // A VirtualService's tcp[] rules pick the destination (service, subset, weight); without one, the route's service.
    const { route } = this;
    const seen = this.reporter && observeTcp(this.reporter.telemetry, this.reporter.hop, down);
    const matched = matchTcpRoute(this.policy().tcpRoutesFor(route.service), { port: route.listen.port, sourceLabels: route.sourceLabels });
    const dest = matched && pickWeighted(matched.destinations, Math.random());
    if (!dest) {
      this.stats.noRoute++;
      if (seen) seen.flags = 'NR';
      this.log.debug('no tcp route matched, connection closed', { cluster: route.cluster });
      down.destroy();
      return;
    }
    const cluster = this.catalog.cluster(dest.service, ownSubsetPolicy(this.policy().destinationFor(dest.service), dest.subset) ? dest.subset : undefined);
    // A TCP connection holds one of the cluster's connection slots (maxConnections) from accept to close; none free → closed at once (Envoy's UO).
    const slots = cluster.circuitBreaker.connections;
    if (!slots.tryAcquire()) {
      this.stats.overflow++;
      if (seen) seen.flags = 'UO';
      this.log.debug('upstream overflow: max-connections, connection closed', { cluster: cluster.name, max: slots.max });
      down.destroy();
      return;
    }
    down.once('close', () => slots.release());
    const endpoint = cluster.pick(dest.subset ? { subset: dest.subset } : undefined);
    const context = this.credentials.contextFor(route.source);
    if (!endpoint || !context) {
      this.stats.noEndpoint++;
      if (seen) seen.flags = 'UH';
      this.log.warn(endpoint ? 'no workload certificate yet for the calling service' : 'no endpoint for upstream', { cluster: cluster.name, subset: dest.subset, source: route.source.toString() });
      down.destroy();
      return;
    }
    const td = this.credentials.trustDomain;
    const { name, namespace } = dest.service;
    if (seen) seen.upstream = endpoint;
    try {
      const up = await this.connector.connect({ endpoint, context, sni: `${name}.${namespace}.${td}`, expected: SpiffeId.workload(td, namespace, name) });
      if (down.destroyed) {
        up.destroy();
        return;
      }
      pipeBoth(down, up);
      down.resume();
    } catch (err) {
      this.stats.connectFailures++;
      if (seen) seen.flags = 'UF';
      this.log.warn('upstream connection failed', { cluster: cluster.name, endpoint: `${endpoint.address}:${endpoint.port}`, error: describeError(err) });
      down.destroy();
    }
  }

  close(): Promise<void> {
    this.h2?.close();
    for (const p of this.pools.values()) p.pool.close();
    return drainAndClose(this.server, this.open);
  }
}
