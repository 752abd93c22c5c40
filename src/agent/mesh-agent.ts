// The per-node agent, the one composition root: identity, server channel, discovery and proxy wired together.

import { formatHostPort, type HostPort } from '../config';
import { parseJoinToken, SpiffeId, splitPemBundle } from '../ca';
import { describeError, MeshError } from '../errors';
import { CHANNEL_PROTOCOL, MESH_VERSION, type PolicyMessage, type ServiceRef, type WorkloadRef } from '../protocol';
import { Cluster, InboundListener, MtlsConnector, OutboundListener, type InboundRoute, type OutboundRoute } from '../proxy';
import { CombinedSource, ConsulRegistration, ConsulSource, serviceKeyString, StaticFileSource, type DiscoverySource } from '../registry';
import { compilePolicy, readPolicyFile, workloadOf, type CompiledPolicy } from '../policy';
import { silentLogger, type Logger } from '../telemetry';
import { applyDestinationPolicy } from './cluster-policy';
import { AdminServer } from './admin-server';
import type { AgentConfig } from './agent-config';
import { CertificateManager } from './certificate-manager';
import { systemClock, type Clock } from './clock';
import { enrollWithToken } from './enrollment-client';
import { MeshPolicy } from './mesh-policy';
import { ServerConnection } from './server-connection';
import { StateDir, type Enrollment } from './state-dir';

/** How often the agent reports its certificates to the server. */
const REPORT_INTERVAL_MS = 30_000;

export class MeshAgent {
  private state!: StateDir;
  private enrollment!: Enrollment;
  private certs!: CertificateManager;
  private connection?: ServerConnection;
  private discovery?: DiscoverySource;
  private consul?: ConsulSource;
  private registration?: ConsulRegistration;
  private inbound?: InboundListener;
  private readonly outbound: OutboundListener[] = [];
  private readonly clusters = new Map<string, Cluster>();
  private policy: CompiledPolicy = compilePolicy([]);
  /** Versions pushed by the server; in force unless a local policy file overrides them. */
  private meshPolicy!: MeshPolicy;
  /** The service (and subset) each cluster is for (names may hold dots, so the key is not split back). */
  private readonly clusterRefs = new Map<string, { service: ServiceRef; subset: string | undefined }>();
  private admin?: AdminServer;
  private reportTimer?: NodeJS.Timeout;
  private bound: { inbound?: HostPort; admin?: HostPort; upstreams: Record<string, HostPort> } = { upstreams: {} };
  private readonly log: Logger;
  private readonly clock: Clock;
  private markReady!: () => void;
  private readonly readyPromise = new Promise<void>((r) => (this.markReady = r));

  constructor(
    readonly config: AgentConfig,
    private readonly opts: { joinToken?: string; log?: Logger; clock?: Clock } = {},
  ) {
    this.log = opts.log ?? silentLogger;
    this.clock = opts.clock ?? systemClock;
  }

  /**
   * Enrolls (first start, with a join token) or reuses saved state, then binds every port.
   * @throws MeshError MESH_ERR_NOT_ENROLLED, MESH_ERR_TOKEN_*, MESH_ERR_LISTEN, MESH_ERR_STATE_DIR
   */
  async start(signal?: AbortSignal): Promise<void> {
    const { config } = this;
    this.state = new StateDir(config.stateDir);
    this.state.lock();
    this.enrollment = await this.enroll();
    const td = this.enrollment.trustDomain;
    const roots = splitPemBundle(this.state.read('roots.pem') ?? '');
    if (roots.length === 0) throw new MeshError('MESH_ERR_STATE_DIR', `${config.stateDir}/roots.pem is missing or empty; remove the state dir and enroll again`);

    const nodeId = SpiffeId.agent(td, this.enrollment.agentId);
    this.certs = new CertificateManager(this.state, td, roots, (kind, csr, svc) => this.connection!.sign(kind, csr, svc), this.clock, this.log);
    this.certs.manage('node', nodeId);
    for (const s of config.services) this.certs.manage('workload', SpiffeId.workload(td, s.namespace, s.name), { name: s.name, namespace: s.namespace });

    this.meshPolicy = new MeshPolicy({ state: this.state, trustDomain: td, roots: () => this.certs.trustBundle, now: () => this.clock.now(), log: this.log });
    const cachedPolicy = this.meshPolicy.loadCached();
    const server = config.server ?? this.enrollment.server;
    this.connection = new ServerConnection(
      server,
      td,
      () => ({ ...this.certs.material(nodeId)!, roots: this.certs.trustBundle }),
      () => ({
        nodeName: config.nodeName,
        address: config.address,
        services: this.serviceRefs(),
        upstreams: this.upstreamRefs(),
        version: MESH_VERSION,
        protocol: CHANNEL_PROTOCOL,
        ...(this.meshPolicy.holding ? { policy: this.meshPolicy.holding } : {}),
        policyOverride: config.policyFile !== undefined,
      }),
      this.clock,
      this.log,
    );
    this.connection.on('welcome', (msg: { roots: string[] }) => this.certs.setRoots(msg.roots));
    this.connection.on('policy', (msg: PolicyMessage) => this.receivePolicy(msg));
    this.connection.on('connected', () => this.certs.renewDue());
    this.connection.start();

    // Endpoints: the file and Consul can be combined; for the same address:port the file wins.
    const sources: DiscoverySource[] = [];
    if (config.endpointsFile) sources.push(new StaticFileSource(config.endpointsFile, { log: this.log }));
    if (config.consul) {
      const { stale, waitMs, minIntervalMs, registerServices: _r, ...consul } = config.consul;
      this.consul = new ConsulSource({ consul, stale, waitMs, minIntervalMs, log: this.log.child({ source: 'consul' }) });
      sources.push(this.consul);
    }
    this.discovery = sources.length > 1 ? new CombinedSource(sources) : sources[0];
    // A policy file that is wrong at start is an error to fix, not something to run without. When set, it is
    // in force instead of the mesh policy (policyFile in docs/configuration.md says why).
    if (config.policyFile) {
      this.applyPolicy(compilePolicy(readPolicyFile(config.policyFile)));
      this.log.warn('the local policy file overrides the mesh policy: versions from the server are verified and cached, not applied', { file: config.policyFile });
    } else if (cachedPolicy) {
      this.applyPolicy(cachedPolicy);
    }
    await this.startProxy(td);
    this.admin = new AdminServer(
      {
        token: this.state.adminToken(),
        notReady: () => this.notReady(),
        status: () => this.status(),
        configDump: () => this.configDump(),
      },
      this.log,
    );
    this.bound.admin = await this.admin.listen(config.admin);
    if (config.consul) this.startRegistration(config.consul);
    this.reportTimer = setInterval(() => this.report(), REPORT_INTERVAL_MS).unref();
    this.certs.on('rotated', () => this.report());
    signal?.addEventListener('abort', () => void this.close(), { once: true });
    void this.waitUntilReady();
  }

  /** The bound addresses (useful with port 0). */
  addresses(): { inbound?: HostPort; admin?: HostPort; upstreams: Record<string, HostPort> } {
    return this.bound;
  }

  /** Resolves when every identity has a certificate and every port is bound. */
  ready(): Promise<void> {
    return this.readyPromise;
  }

  /** Registers the agent (and, when asked, its services) with the local Consul agent, retrying in the background. */
  private startRegistration(c: NonNullable<AgentConfig['consul']>): void {
    const { config } = this;
    const { stale: _s, waitMs: _w, minIntervalMs: _m, registerServices, ...consul } = c;
    const admin = this.bound.admin!;
    const self = {
      id: `mesh-agent-${config.nodeName}`,
      name: 'mesh-agent',
      namespace: 'default',
      address: config.address,
      port: this.bound.inbound!.port,
      meta: { 'mesh-agent-id': this.enrollment.agentId },
      check: { http: `http://${admin.host === '0.0.0.0' ? '127.0.0.1' : admin.host}:${admin.port}/ready`, interval: '10s' },
    };
    const services = registerServices
      ? config.services.map((s) => ({
          id: `${s.name}-${config.nodeName}`,
          name: s.name,
          namespace: s.namespace,
          address: config.address,
          port: s.target.port,
          tags: [`protocol=${s.protocol}`],
          check: { tcp: `${s.target.host}:${s.target.port}`, interval: '10s' },
        }))
      : [];
    this.registration = new ConsulRegistration(consul, this.bound.inbound!.port, [self, ...services], this.log.child({ source: 'consul' }));
    this.registration.start();
  }

  /** Stops listening and closes the channel; open connections drain on their own. */
  async close(): Promise<void> {
    // Leave the catalog first, so other agents stop sending here while we drain.
    await this.registration?.close();
    if (this.reportTimer) clearInterval(this.reportTimer);
    this.connection?.close();
    this.certs?.close();
    this.discovery?.close();
    await Promise.all([this.inbound?.close(), ...this.outbound.map((o) => o.close()), this.admin?.close()]);
    this.state?.unlock();
  }

  destroy(err?: Error): void {
    if (err) this.log.error('agent stopping on error', { error: describeError(err) });
    void this.close();
  }

  private async enroll(): Promise<Enrollment> {
    const saved = this.state.enrollment();
    if (saved) {
      if (this.opts.joinToken) this.log.info('already enrolled, ignoring the join token', { agent: saved.agentId, stateDir: this.config.stateDir });
      return saved;
    }
    if (!this.opts.joinToken) {
      throw new MeshError('MESH_ERR_NOT_ENROLLED', `no enrollment in ${this.config.stateDir}: start once with --join <token> (make one on the server with "mesh-agent token create")`);
    }
    const token = parseJoinToken(this.opts.joinToken);
    this.log.info('enrolling', { server: token.server, token: token.id });
    const res = await enrollWithToken(this.config.server ? { ...token, server: this.config.server } : token, this.config.nodeName);
    this.state.write('node.key', res.nodeKeyPem, 0o600);
    this.state.write('node.crt', res.nodeCert, 0o644);
    this.state.write('roots.pem', res.roots.join(''), 0o644);
    const e: Enrollment = { agentId: res.agentId, server: res.server, trustDomain: res.trustDomain, nodeName: this.config.nodeName, enrolledAt: new Date(this.clock.now()).toISOString() };
    this.state.saveEnrollment(e);
    this.log.info('enrolled', { agent: e.agentId, trustDomain: e.trustDomain });
    return e;
  }

  private serviceRefs(): WorkloadRef[] {
    return this.config.services.map((s) => ({ name: s.name, namespace: s.namespace, labels: s.labels }));
  }

  /** Each service the node's apps call, once. */
  private upstreamRefs(): ServiceRef[] {
    const refs = new Map<string, ServiceRef>();
    for (const s of this.config.services) for (const u of s.upstreams) refs.set(`${u.namespace}/${u.service}`, { name: u.service, namespace: u.namespace });
    return [...refs.values()];
  }

  /** A version pushed by the server: verified, compiled and cached, applied unless the policy file overrides it; ACK or NACK. */
  private receivePolicy(msg: PolicyMessage): void {
    const override = this.config.policyFile !== undefined;
    try {
      const compiled = this.meshPolicy.accept(msg);
      if (override) this.log.warn('mesh policy version held, not applied: the local policy file overrides it', { version: msg.version, file: this.config.policyFile });
      else this.applyPolicy(compiled);
      this.log.info('mesh policy version accepted', { version: msg.version, documents: compiled.documents.length, delta: msg.base !== undefined });
      this.connection?.send({ type: 'policy-ack', version: msg.version, digest: msg.digest, override });
    } catch (err) {
      const e = err instanceof MeshError ? err : new MeshError('MESH_ERR_INTERNAL', describeError(err));
      this.log.error('mesh policy version refused, keeping the last good one', { version: msg.version, error: describeError(e) });
      const holding = this.meshPolicy.holding;
      this.connection?.send({ type: 'policy-nack', version: msg.version, code: e.code, message: e.message.slice(0, 8000), ...(holding ? { holding } : {}) });
    }
  }

  private async startProxy(td: string): Promise<void> {
    const { config } = this;
    const inboundRoutes: InboundRoute[] = config.services.map((s) => ({
      sni: `${s.name}.${s.namespace}.${td}`,
      identity: SpiffeId.workload(td, s.namespace, s.name),
      target: s.target,
      protocol: s.protocol,
      workload: workloadOf(s.name, s.namespace, s.labels),
    }));
    this.inbound = new InboundListener(this.certs, this.log, () => this.policy);
    this.inbound.setRoutes(inboundRoutes);
    this.bound.inbound = await this.inbound.listen(config.inbound);
    const connector = new MtlsConnector();
    const catalog = { cluster: (svc: ServiceRef, subset?: string) => this.cluster(svc, subset) };
    for (const s of config.services) {
      for (const u of s.upstreams) {
        const key = serviceKeyString({ name: u.service, namespace: u.namespace });
        this.cluster({ name: u.service, namespace: u.namespace });
        const route: OutboundRoute = {
          listen: u.listen,
          service: { name: u.service, namespace: u.namespace },
          cluster: key,
          source: SpiffeId.workload(td, s.namespace, s.name),
          destination: SpiffeId.workload(td, u.namespace, u.service),
          sni: `${u.service}.${u.namespace}.${td}`,
          protocol: u.protocol,
          sourceLabels: s.labels,
        };
        const listener = new OutboundListener(route, catalog, () => this.policy, connector, this.certs, this.log);
        this.bound.upstreams[`${s.name}->${u.service}`] = await listener.listen();
        this.outbound.push(listener);
      }
    }
  }

  /**
   * The cluster of a service — or of one of its subsets, when the DestinationRule gives that subset its own
   * trafficPolicy (Envoy's cluster per subset: own balancer, outlier detection, circuit breaker) — made on first use,
   * fed by discovery, configured by the DestinationRule.
   */
  private cluster(svc: ServiceRef, subset?: string): Cluster {
    const key = subset === undefined ? serviceKeyString(svc) : `${serviceKeyString(svc)}#${subset}`;
    let cluster = this.clusters.get(key);
    if (!cluster) {
      const c = (cluster = new Cluster(key));
      this.clusters.set(key, c);
      this.clusterRefs.set(key, { service: { name: svc.name, namespace: svc.namespace }, subset });
      applyDestinationPolicy(c, this.policy.destinationFor(svc), subset);
      if (this.discovery) this.discovery.watch(svc, (update) => c.apply(update));
      else this.log.warn('no endpoints source configured (endpointsFile or consul); the service has no endpoints', { service: key });
    }
    return cluster;
  }

  /**
   * Reads the policy file again (SIGHUP). A file with any problem is refused as a whole, the reason logged, and the
   * policy in force stays. Returns whether the new policy was applied.
   */
  reloadPolicy(): boolean {
    const file = this.config.policyFile;
    if (!file) return false;
    try {
      this.applyPolicy(compilePolicy(readPolicyFile(file)));
      this.log.info('policy reloaded', { file, documents: this.policy.documents.length });
      return true;
    } catch (err) {
      this.log.error('policy rejected, keeping the previous one', { file, error: describeError(err) });
      return false;
    }
  }

  private applyPolicy(p: CompiledPolicy): void {
    this.policy = p;
    for (const w of p.warnings) this.log.warn('policy warning', { warning: w });
    for (const [key, c] of this.clusters) {
      const ref = this.clusterRefs.get(key)!;
      applyDestinationPolicy(c, p.destinationFor(ref.service), ref.subset);
    }
    // Open TCP connections and tunnels the new policy refuses are closed now, not when they end.
    const closed = this.inbound?.policyChanged() ?? 0;
    if (closed > 0) this.log.info('open inbound connections closed by the new policy', { closed });
  }

  private notReady(): string[] {
    const reasons: string[] = [];
    for (const c of this.certs.status()) if (!c.serial) reasons.push(`no certificate yet for ${c.identity}${c.lastError ? ` (${c.lastError})` : ''}`);
    if (!this.bound.admin) reasons.push('ports not bound yet');
    return reasons;
  }

  private async waitUntilReady(): Promise<void> {
    const check = (): void => {
      if (this.notReady().length === 0) {
        this.log.info('agent ready', { agent: this.enrollment.agentId, inbound: this.bound.inbound && formatHostPort(this.bound.inbound), admin: this.bound.admin && formatHostPort(this.bound.admin) });
        this.markReady();
        this.certs.off('rotated', check);
      }
    };
    this.certs.on('rotated', check);
    check();
  }

  private report(): void {
    this.connection?.send({
      type: 'report',
      certificates: this.certs.status().filter((c) => c.serial).map((c) => ({ spiffeId: c.identity, serial: c.serial!, notAfter: c.notAfter! })),
    });
  }

  /** What `mesh-agent status --agent` shows. */
  status(): unknown {
    return {
      agent: {
        id: this.enrollment.agentId,
        nodeName: this.config.nodeName,
        version: MESH_VERSION,
        trustDomain: this.enrollment.trustDomain,
        server: this.config.server ?? this.enrollment.server,
        serverConnected: this.connection?.connected ?? false,
        serverError: this.connection?.lastError ?? null,
        ready: this.notReady().length === 0,
        inbound: this.bound.inbound && formatHostPort(this.bound.inbound),
        admin: this.bound.admin && formatHostPort(this.bound.admin),
      },
      services: this.config.services.map((s) => ({
        name: s.name,
        namespace: s.namespace,
        protocol: s.protocol,
        target: formatHostPort(s.target),
        identity: SpiffeId.workload(this.enrollment.trustDomain, s.namespace, s.name).toString(),
      })),
      certificates: this.certs.status(),
      upstreams: this.outbound.map((o) => ({
        service: o.route.cluster,
        from: o.route.source.toString(),
        listen: formatHostPort(o.route.listen),
        endpoints: this.clusters.get(o.route.cluster)?.snapshot().endpoints.map((e) => `${e.address}:${e.port}`) ?? [],
        // tcp counters for protocol tcp; http ones (router) for protocol http.
        stats: o.route.protocol === 'http' ? { connections: o.stats.connections, ...o.router.stats } : o.stats,
      })),
      inboundStats: this.inbound?.stats,
      policy: {
        inForce: this.config.policyFile ? 'file' : this.meshPolicy.holding ? 'mesh' : 'defaults',
        file: this.config.policyFile ?? null,
        meshVersion: this.meshPolicy.holding?.version ?? null,
        meshDigest: this.meshPolicy.holding?.digest ?? null,
        lastRefusal: this.meshPolicy.lastRefusal ?? null,
      },
      // Per watched service: Consul's last index, when it last answered, and whether the endpoints are stale.
      consul: this.consul?.status() ?? null,
    };
  }

  private configDump(): unknown {
    return {
      config: this.config,
      bound: this.bound,
      clusters: [...this.clusters.values()].map((c) => c.snapshot()),
      policy: {
        file: this.config.policyFile ?? null,
        meshVersion: this.meshPolicy.holding?.version ?? null,
        documents: this.policy.documents.map((d) => `${d.kind} ${d.metadata.namespace}/${d.metadata.name}`),
      },
    };
  }
}
