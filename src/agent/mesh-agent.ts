// The per-node agent, the one composition root: identity, server channel, discovery and proxy wired together.

import { formatHostPort, type HostPort } from '../config';
import { parseJoinToken, SpiffeId, splitPemBundle } from '../ca';
import { describeError, isMeshError, MeshError } from '../errors';
import { CHANNEL_PROTOCOL, MESH_VERSION, type PolicyMessage, type ServiceRef, type TapFilterMessage, type WorkloadRef } from '../protocol';
import { Cluster, InboundListener, MtlsConnector, MuxDialer, OutboundListener, type InboundRoute } from '../proxy';
import { CombinedSource, readEndpointsFile, serviceKeyString, StaticFileSource, type ConsulLocalService, type DiscoverySource, type DiscoveryUpdate } from '../registry';
import { compilePolicy, readPolicyFile, workloadOf, type CompiledPolicy } from '../policy';
import { MeshTelemetry, RequestAggregator, silentLogger, type Logger } from '../telemetry';
import { CaptureController, type CaptureSubject } from '../capture';
import { applyDestinationPolicy } from './cluster-policy';
import { AdminServer } from './admin-server';
import type { AgentConfig } from './agent-config';
import { AgentMetrics } from './agent-metrics';
import { CertificateManager } from './certificate-manager';
import { systemClock, type Clock } from './clock';
import { planReload } from './config-reload';
import { ConsulLink, registrationsFor, unusedRegistrationFields } from './consul-link';
import { enrollWithToken } from './enrollment-client';
import { diffServices, mergeLocalServices, noChanges, serviceKey, upstreamKey, type ActiveService, type ServiceChanges } from './local-services';
import { MeshPolicy } from './mesh-policy';
import { PolicyGossip, type GossipPeer } from './policy-gossip';
import { ServerConnection } from './server-connection';
import { StateDir, type Enrollment } from './state-dir';
import { StatsReporter } from './stats-reporter';
import { TapRelay } from './tap-relay';
import { UpstreamListeners, type DesiredUpstream } from './upstream-listeners';

/** How often the agent reports its certificates to the server. */
const REPORT_INTERVAL_MS = 30_000;

export class MeshAgent {
  private state!: StateDir;
  private enrollment!: Enrollment;
  private certs!: CertificateManager;
  private connection?: ServerConnection;
  /** The config in force: the one started with, then each accepted reload. */
  private current: AgentConfig;
  private fileSource?: StaticFileSource;
  private consul?: ConsulLink;
  private discovery?: DiscoverySource;
  /** Stops the discovery watch of each cluster (to re-watch when the sources change). */
  private readonly unwatch = new Map<string, () => void>();
  private inbound?: InboundListener;
  private upstreams?: UpstreamListeners;
  /** With capture.enabled: the nat rules and the DNS responder. */
  private capture?: CaptureController;
  private readonly connector = new MtlsConnector();
  /** HTTP/1.1 to other agents multiplexed (config `multiplex`). */
  private mux: MuxDialer | undefined;
  private readonly clusters = new Map<string, Cluster>();
  private policy: CompiledPolicy = compilePolicy([]);
  /** Versions pushed by the server; in force unless a local policy file overrides them. */
  private meshPolicy!: MeshPolicy;
  /** Versions exchanged with the agents this one calls, pulled when the server is out of reach. */
  private gossip?: PolicyGossip;
  /** The service (and subset) each cluster is for (names may hold dots, so the key is not split back). */
  private readonly clusterRefs = new Map<string, { service: ServiceRef; subset: string | undefined }>();
  /** The services running now (config and Consul), and the last opted-in set the local Consul agent listed. */
  private active: readonly ActiveService[] = [];
  private consulServices: readonly ConsulLocalService[] = [];
  /** Reloads and service-set changes run one at a time. */
  private chain: Promise<unknown> = Promise.resolve();
  private closing = false;
  readonly metrics: AgentMetrics;
  /** Requests per caller -> service edge, counted by the caller's side of every hop (Istio metrics), sent to the server's dashboard by the StatsReporter. */
  readonly requestStats = new RequestAggregator();
  private statsReporter?: StatsReporter;
  /** Istio request metrics, access logs, traces and live taps of the data plane. */
  readonly telemetry: MeshTelemetry;
  private admin?: AdminServer;
  private reportTimer?: NodeJS.Timeout;
  private bound: { inbound?: HostPort; admin?: HostPort } = {};
  private readonly log: Logger;
  private readonly clock: Clock;
  private markReady!: () => void;
  private readonly readyPromise = new Promise<void>((r) => (this.markReady = r));

  constructor(
    config: AgentConfig,
    private readonly opts: { joinToken?: string; log?: Logger; clock?: Clock } = {},
  ) {
    this.current = config;
    this.log = opts.log ?? silentLogger;
    this.clock = opts.clock ?? systemClock;
    this.metrics = new AgentMetrics({
      consulWatches: () => this.consul?.source.status() ?? [],
      clusters: () => this.clusters.values(),
      certificates: () => (this.certs ? this.certs.status() : []),
      policyVersion: () => this.meshPolicy?.holding?.version,
      upstreams: () => (this.upstreams?.list() ?? []).map((u) => ({ cluster: u.listener.route.cluster, stats: u.listener.statusStats() })),
      gossip: () => this.gossip?.stats,
      now: () => this.clock.now(),
    });
    this.telemetry = new MeshTelemetry(this.metrics.registry, (why) => this.log.warn('telemetry output failed', { error: why }), this.requestStats);
    this.telemetry.configure(config);
  }

  /** The configuration in force. */
  get config(): AgentConfig {
    return this.current;
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

    this.meshPolicy = new MeshPolicy({ state: this.state, trustDomain: td, roots: () => this.certs.trustBundle, now: () => this.clock.now(), log: this.log });
    const cachedPolicy = this.meshPolicy.loadCached();
    const server = config.server ?? this.enrollment.server;
    this.connection = new ServerConnection(
      server,
      td,
      () => ({ ...this.certs.material(nodeId)!, roots: this.certs.trustBundle }),
      // Sent on every connect and again whenever the service set changes: the server signs only what it lists.
      () => ({
        nodeName: this.config.nodeName,
        address: this.config.address,
        services: this.serviceRefs(),
        upstreams: this.upstreamRefs(),
        version: MESH_VERSION,
        protocol: CHANNEL_PROTOCOL,
        ...(this.meshPolicy.holding ? { policy: this.meshPolicy.holding } : {}),
        policyOverride: this.config.policyFile !== undefined,
      }),
      this.clock,
      this.log,
      config.consul?.discoverServers ? () => this.consul!.serverReplicas() : undefined,
    );
    this.connection.on('welcome', (msg: { roots: string[] }) => this.certs.setRoots(msg.roots));
    this.connection.on('policy', (msg: PolicyMessage) => this.receivePolicy(msg));
    this.connection.on('connected', () => this.certs.renewDue());
    this.statsReporter = new StatsReporter({
      stats: this.requestStats,
      channel: this.connection,
      certificates: () => this.certs.status().flatMap((c) => (c.notAfter ? [{ spiffeId: c.identity, notAfter: c.notAfter }] : [])),
      now: () => this.clock.now(),
    });
    const taps = new TapRelay(this.telemetry, (msg) => this.connection?.send(msg));
    this.connection.on('tap-start', (msg: { id: string; filter: TapFilterMessage }) => taps.start(msg.id, msg.filter));
    this.connection.on('tap-stop', (msg: { id: string }) => taps.stop(msg.id));
    this.connection.on('disconnected', () => taps.stopAll());

    // Endpoints: the file and Consul can be combined; for the same address:port the file wins.
    if (config.endpointsFile) this.fileSource = new StaticFileSource(config.endpointsFile, { log: this.log });
    if (config.consul) this.consul = new ConsulLink(config.consul, this.log);
    this.discovery = this.combineSources();
    // A policy file that is wrong at start is an error to fix, not something to run without. When set, it is
    // in force instead of the mesh policy (policyFile in docs/configuration.md says why).
    if (config.policyFile) {
      this.applyPolicy(compilePolicy(readPolicyFile(config.policyFile)));
      this.log.warn('the local policy file overrides the mesh policy: versions from the server are verified and cached, not applied', { file: config.policyFile });
    } else if (cachedPolicy) {
      this.applyPolicy(cachedPolicy);
    }

    if (config.gossip.enabled) {
      this.gossip = new PolicyGossip({
        policy: this.meshPolicy,
        context: () => this.certs.contextFor(nodeId),
        trustDomain: td,
        peers: () => this.gossipPeers(),
        mayPull: () => !this.connection?.connected,
        onAccepted: (compiled, version, from) => this.peerPolicy(compiled, version, from),
        connector: this.connector,
        intervalMs: config.gossip.intervalMs,
        fanout: config.gossip.fanout,
        now: () => this.clock.now(),
        log: this.log,
      });
    }
    const gossip = this.gossip;
    // With requestTelemetry off the listeners get none: no per-request telemetry work at all.
    const requests = config.requestTelemetry ? this.telemetry : undefined;
    this.inbound = new InboundListener(this.certs, this.log, () => this.policy, config.limits, requests, gossip && ((socket, peer) => gossip.serve(socket, peer)));
    this.bound.inbound = await this.inbound.listen(config.inbound);
    const mux = (this.mux = config.multiplex ? new MuxDialer(this.connector, this.log) : undefined);
    this.upstreams = new UpstreamListeners((route) => new OutboundListener(route, { cluster: (svc, subset) => this.cluster(svc, subset) }, () => this.policy, this.connector, this.certs, this.log, this.config.limits, requests, mux), this.log);
    this.admin = new AdminServer(
      {
        token: this.state.adminToken(),
        notReady: () => this.notReady(),
        status: () => this.status(),
        configDump: () => this.configDump(),
        metrics: () => this.metrics.registry.render(),
      },
      this.log,
    );
    this.bound.admin = await this.admin.listen(config.admin);
    // The config's services before the first hello, so the server knows them when the channel opens.
    await this.applyServices(true);
    if (config.capture.enabled) {
      this.capture = new CaptureController(config.capture, () => this.captureSubject(), this.log);
      await this.capture.start();
    }
    this.statsReporter.start();
    this.connection.start();
    this.gossip?.start();
    this.warnUnused();
    this.startConsul();
    this.reportTimer = setInterval(() => this.report(), REPORT_INTERVAL_MS).unref();
    this.certs.on('rotated', () => this.report());
    signal?.addEventListener('abort', () => void this.close(), { once: true });
    void this.waitUntilReady();
  }

  /** The bound addresses (useful with port 0); upstreams by "<service>-><upstream>". */
  addresses(): { inbound?: HostPort; admin?: HostPort; upstreams: Record<string, HostPort> } {
    return { ...this.bound, upstreams: this.upstreams?.addresses() ?? {} };
  }

  /** Resolves when every identity has a certificate and every port is bound. */
  ready(): Promise<void> {
    return this.readyPromise;
  }

  /** Registration with the local Consul agent and, with consul.localServices, the node's services from it. */
  private startConsul(): void {
    const link = this.consul;
    if (!link) return;
    link.register(this.bound.inbound!.port, this.registrations(), () => this.metrics.registrationFailures.inc());
    link.watchLocalServices(
      (services) => void this.serially(() => this.onConsulServices(link, services)),
      (id) => this.registrations().some((r) => r.id === id),
    );
  }

  private warnUnused(): void {
    const unused = unusedRegistrationFields(this.config);
    if (unused.length > 0) this.log.warn('services[].tags, meta and check are used only with consul.registerServices: true; they have no effect', { services: unused.join(',') });
  }

  private async onConsulServices(link: ConsulLink, services: readonly ConsulLocalService[]): Promise<void> {
    if (this.consul !== link) return; // a link replaced by a reload speaks no more
    this.consulServices = services;
    const changes = await this.applyServices(false);
    if (!noChanges(changes)) this.log.info('local services from Consul changed', summary(changes));
  }

  private registrations(): ReturnType<typeof registrationsFor> {
    return registrationsFor(this.config, { id: this.enrollment.agentId, inbound: this.bound.inbound!, admin: this.bound.admin! });
  }

  /** Runs `fn` after every earlier reload or service change has finished; nothing runs once the agent closes. */
  private serially<T>(fn: () => Promise<T>): Promise<T | undefined> {
    const run = this.chain.then(() => (this.closing ? undefined : fn()));
    this.chain = run.catch((err: unknown) => this.log.error('applying a change failed', { error: describeError(err) }));
    return run;
  }

  /**
   * Merges the config's and Consul's services and brings everything in line with the result: the server's view
   * (hello), workload certificates, inbound routes (SNI), upstream listeners and Consul registrations. Unchanged
   * listeners are not touched. With `strict` (at start) a port that cannot be bound is an error.
   */
  private async applyServices(strict: boolean): Promise<ServiceChanges & { upstreamsFailed: string[] }> {
    const td = this.enrollment.trustDomain;
    const { services, warnings } = mergeLocalServices(this.config.services, this.consulServices, { inbound: this.bound.inbound!, admin: this.bound.admin! });
    for (const w of warnings) this.log.warn('local service from Consul left out', { service: w.service, id: w.id, reason: w.message });
    const changes = diffServices(this.active, services);
    const identity = (s: ServiceRef): SpiffeId => SpiffeId.workload(td, s.namespace, s.name);
    const before = new Map(this.active.map((s) => [serviceKey(s), s]));
    this.active = services;
    // The server must know a service before it is asked to sign for it; the channel keeps the order.
    if (changes.servicesAdded.length + changes.servicesRemoved.length + changes.upstreamsAdded.length + changes.upstreamsRemoved.length > 0) this.connection?.refreshHello();
    for (const k of changes.servicesRemoved) this.certs.unmanage(identity(before.get(k)!));
    for (const s of services) this.certs.manage('workload', identity(s), { name: s.name, namespace: s.namespace });
    this.inbound!.setRoutes(
      services.map((s): InboundRoute => ({ sni: `${s.name}.${s.namespace}.${td}`, identity: identity(s), target: s.target, protocol: s.protocol, workload: workloadOf(s.name, s.namespace, s.labels) })),
    );
    const desired = services.flatMap((s) =>
      s.upstreams.map((u): DesiredUpstream => {
        const service = { name: u.service, namespace: u.namespace };
        this.cluster(service);
        return {
          key: upstreamKey(s, u),
          name: `${s.name}->${u.service}`,
          route: { listen: u.listen, service, cluster: serviceKeyString(service), source: identity(s), destination: identity(service), sni: `${u.service}.${u.namespace}.${td}`, protocol: u.protocol, sourceLabels: s.labels },
        };
      }),
    );
    const { failed } = await this.upstreams!.apply(desired, strict);
    this.capture?.refresh();
    this.consul?.setRegistrations(this.registrations());
    return { ...changes, upstreamsFailed: failed };
  }

  /**
   * SIGHUP: reads the config again with `load` and applies what can change without rebinding the inbound and
   * admin ports: services, upstreams, endpointsFile, policyFile (always read again), address and the consul
   * block. Everything is checked first; a config, endpoints file or policy file with any problem is refused as a
   * whole (logged with its field paths) and the running configuration stays. Returns whether it was applied.
   */
  async reload(load: () => AgentConfig): Promise<boolean> {
    return (await this.serially(() => this.reloadNow(load))) ?? false;
  }

  private async reloadNow(load: () => AgentConfig): Promise<boolean> {
    let plan: ReturnType<typeof planReload>;
    let policy: CompiledPolicy;
    let fileSource: StaticFileSource | undefined;
    let link: ConsulLink | undefined;
    try {
      plan = planReload(this.config, load());
      const next = plan.config;
      // Without a policy file the mesh version held is in force (Istio's defaults before the first one).
      policy = next.policyFile ? compilePolicy(readPolicyFile(next.policyFile)) : (this.meshPolicy.compiled ?? compilePolicy([]));
      if (next.endpointsFile && !plan.endpointsFileChanged) readEndpointsFile(next.endpointsFile);
      if (next.endpointsFile && plan.endpointsFileChanged) fileSource = new StaticFileSource(next.endpointsFile, { log: this.log });
      if (next.consul && plan.consulChanged) link = new ConsulLink(next.consul, this.log);
    } catch (err) {
      fileSource?.close();
      const policyProblem = isMeshError(err, 'MESH_ERR_POLICY_INVALID');
      this.log.error(policyProblem ? 'policy rejected, keeping the previous one' : 'configuration rejected, keeping the running one', { error: describeError(err) });
      return false;
    }
    for (const f of plan.restartNeeded) this.log.warn('this setting changes only with a restart; keeping the running value', { field: f });
    const overrideChanged = (this.config.policyFile === undefined) !== (plan.config.policyFile === undefined);
    const telemetryChanged = JSON.stringify([this.config.accessLog, this.config.tracing ?? null]) !== JSON.stringify([plan.config.accessLog, plan.config.tracing ?? null]);
    this.current = plan.config;
    if (telemetryChanged) this.telemetry.configure(plan.config);
    this.applyPolicy(policy);
    if (plan.config.policyFile) this.log.info('policy reloaded', { file: plan.config.policyFile, documents: policy.documents.length });
    if (overrideChanged && plan.config.policyFile) this.log.warn('the local policy file overrides the mesh policy from now on', { file: plan.config.policyFile });
    else if (overrideChanged) this.log.info('no policy file any more: the mesh policy is in force', { version: this.meshPolicy.holding?.version ?? null });
    if (plan.endpointsFileChanged) {
      this.fileSource?.close();
      this.fileSource = fileSource;
    } else this.fileSource?.reload();
    if (plan.consulChanged) {
      const old = this.consul;
      this.consul = link;
      // Without local services in the new block, the ones Consul gave leave; with them, the new poller's first answer replaces them.
      if (!link?.settings.localServices) this.consulServices = [];
      await old?.close();
    }
    if (plan.endpointsFileChanged || plan.consulChanged) this.rewatch();
    // The server shows whether a local file overrides the mesh policy here; it learns it from hello.
    if (plan.addressChanged || overrideChanged) this.connection?.refreshHello();
    const changes = await this.applyServices(false);
    this.warnUnused();
    if (plan.consulChanged) this.startConsul();
    const changed = [plan.endpointsFileChanged && 'endpointsFile', plan.consulChanged && 'consul', plan.addressChanged && 'address'].filter(Boolean).join(',');
    this.log.info('configuration reloaded', { ...summary(changes), ...(changed ? { changed } : {}) });
    return true;
  }

  /** The discovery source for the current parts: the file, Consul, or both (the file wins on the same address:port). */
  private combineSources(): DiscoverySource | undefined {
    const sources = [this.fileSource, this.consul?.source].filter((s): s is NonNullable<typeof s> => s !== undefined);
    return sources.length > 1 ? new CombinedSource(sources) : sources[0];
  }

  /** The sources changed: every cluster watches the new ones (keeping its endpoints until they answer). */
  private rewatch(): void {
    for (const stop of this.unwatch.values()) stop();
    this.unwatch.clear();
    this.discovery = this.combineSources();
    for (const [key, c] of this.clusters) this.watch(key, c);
  }

  private watch(key: string, c: Cluster): void {
    const onUpdate = (update: DiscoveryUpdate): void => {
      c.apply(update);
      // Captured connections to endpoint addresses follow the endpoints.
      this.capture?.refresh();
    };
    if (this.discovery) this.unwatch.set(key, this.discovery.watch(this.clusterRefs.get(key)!.service, onUpdate));
    else this.log.warn('no endpoints source configured (endpointsFile or consul); the service has no endpoints', { service: key });
  }

  /** Stops listening and closes the channel; open connections drain on their own. */
  async close(): Promise<void> {
    this.closing = true;
    await this.chain;
    // Leave the catalog first, so other agents stop sending here while we drain.
    await this.consul?.close();
    // Apps' connections go where they were addressed again before the listeners close.
    await this.capture?.close().catch((err: unknown) => this.log.error('capture rules not removed; run "mesh-agent capture remove"', { error: describeError(err) }));
    if (this.reportTimer) clearInterval(this.reportTimer);
    this.statsReporter?.close();
    this.connection?.close();
    this.gossip?.close();
    this.certs?.close();
    this.fileSource?.close();
    await Promise.all([this.inbound?.close(), this.upstreams?.close(), this.admin?.close()]);
    this.mux?.close();
    await this.telemetry.close();
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
    return this.active.map((s) => ({ name: s.name, namespace: s.namespace, labels: s.labels }));
  }

  /** Each service the node's apps call, once. */
  private upstreamRefs(): ServiceRef[] {
    const refs = new Map<string, ServiceRef>();
    for (const s of this.active) for (const u of s.upstreams) refs.set(`${u.namespace}/${u.service}`, { name: u.service, namespace: u.namespace });
    return [...refs.values()];
  }

  /** A version pushed by the server: verified, compiled and cached, applied unless the policy file overrides it; ACK or NACK. */
  private receivePolicy(msg: PolicyMessage): void {
    const override = this.config.policyFile !== undefined;
    const held = this.meshPolicy.holding;
    // Gossip may have brought this very version while the server built its message from an older one.
    if (held?.version === msg.version && held.digest === msg.digest) {
      this.connection?.send({ type: 'policy-ack', version: msg.version, digest: msg.digest, override });
      return;
    }
    try {
      const compiled = this.meshPolicy.accept(msg);
      if (override) this.log.warn('mesh policy version held, not applied: the local policy file overrides it', { version: msg.version, file: this.config.policyFile });
      else this.applyPolicy(compiled);
      this.log.info('mesh policy version accepted', { version: msg.version, documents: compiled.documents.length, delta: msg.base !== undefined });
      this.connection?.send({ type: 'policy-ack', version: msg.version, digest: msg.digest, override });
      this.gossip?.nudge();
    } catch (err) {
      const e = err instanceof MeshError ? err : new MeshError('MESH_ERR_INTERNAL', describeError(err));
      this.log.error('mesh policy version refused, keeping the last good one', { version: msg.version, error: describeError(e) });
      const holding = this.meshPolicy.holding;
      this.metrics.policyNacks.inc();
      this.connection?.send({ type: 'policy-nack', version: msg.version, code: e.code, message: e.message.slice(0, 8000), ...(holding ? { holding } : {}) });
    }
  }

  /** A newer version pulled from a peer and verified: applied unless the policy file overrides it; the server hears of it in hello. */
  private peerPolicy(compiled: CompiledPolicy, version: number, from: string): void {
    if (this.config.policyFile) this.log.warn('mesh policy version held, not applied: the local policy file overrides it', { version, file: this.config.policyFile });
    else this.applyPolicy(compiled);
    this.log.info('mesh policy version taken from a peer', { version, peer: from, documents: compiled.documents.length });
    this.connection?.refreshHello();
    this.gossip?.nudge();
  }

  /** The agents this one calls: every endpoint of its clusters, with the name and identity of the service there. */
  private gossipPeers(): GossipPeer[] {
    const td = this.enrollment.trustDomain;
    const peers: GossipPeer[] = [];
    for (const [key, c] of this.clusters) {
      const { service } = this.clusterRefs.get(key)!;
      const expected = SpiffeId.workload(td, service.namespace, service.name);
      for (const endpoint of c.snapshot().endpoints) peers.push({ endpoint, sni: `${service.name}.${service.namespace}.${td}`, expected });
    }
    return peers;
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
      this.watch(key, c);
    }
    return cluster;
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

  /** What capture needs to know of the agent now: services and upstreams, its ports, the endpoints of each upstream service. */
  private captureSubject(): CaptureSubject {
    return {
      services: this.active,
      inboundPort: this.bound.inbound!.port,
      agentPorts: [this.bound.inbound!.port, this.bound.admin!.port],
      endpointAddresses: (svc) => this.clusters.get(serviceKeyString(svc))?.snapshot().endpoints.map((e) => e.address) ?? [],
    };
  }

  /** What `mesh-agent status --agent` shows. */
  status(): unknown {
    const consul = this.consul?.status();
    return {
      agent: {
        id: this.enrollment.agentId,
        nodeName: this.config.nodeName,
        version: MESH_VERSION,
        trustDomain: this.enrollment.trustDomain,
        server: this.connection?.server ?? this.config.server ?? this.enrollment.server,
        serverConnected: this.connection?.connected ?? false,
        serverError: this.connection?.lastError ?? null,
        ready: this.notReady().length === 0,
        inbound: this.bound.inbound && formatHostPort(this.bound.inbound),
        admin: this.bound.admin && formatHostPort(this.bound.admin),
      },
      services: this.active.map((s) => ({
        name: s.name,
        namespace: s.namespace,
        protocol: s.protocol,
        target: formatHostPort(s.target),
        identity: SpiffeId.workload(this.enrollment.trustDomain, s.namespace, s.name).toString(),
        origin: s.origin,
        ...(s.consulId ? { consulId: s.consulId } : {}),
      })),
      certificates: this.certs.status(),
      upstreams: (this.upstreams?.list() ?? []).map(({ listener: o, error }) => ({
        service: o.route.cluster,
        from: o.route.source.toString(),
        listen: formatHostPort(o.route.listen),
        protocol: o.route.protocol,
        endpoints: this.clusters.get(o.route.cluster)?.snapshot().endpoints.map((e) => `${e.address}:${e.port}`) ?? [],
        stats: o.statusStats(),
        ...(error ? { error } : {}),
      })),
      inboundStats: this.inbound?.stats,
      capture: this.capture?.status() ?? null,
      policy: {
        inForce: this.config.policyFile ? 'file' : this.meshPolicy.holding ? 'mesh' : 'defaults',
        file: this.config.policyFile ?? null,
        meshVersion: this.meshPolicy.holding?.version ?? null,
        meshDigest: this.meshPolicy.holding?.digest ?? null,
        lastRefusal: this.meshPolicy.lastRefusal ?? null,
        gossip: this.gossip?.stats ?? null,
      },
      // Per watched service: Consul's last index, when it last answered, and whether the endpoints are stale.
      consul: consul?.watches ?? null,
      consulRegistrations: consul?.registrations ?? [],
      // With consul.localServices: how fresh the node's service list from Consul is, and what was left out.
      localServices: consul?.localServices ?? null,
    };
  }

  private configDump(): unknown {
    return {
      config: this.config,
      bound: this.addresses(),
      services: this.active,
      clusters: [...this.clusters.values()].map((c) => c.snapshot()),
      policy: {
        file: this.config.policyFile ?? null,
        meshVersion: this.meshPolicy.holding?.version ?? null,
        documents: this.policy.documents.map((d) => `${d.kind} ${d.metadata.namespace}/${d.metadata.name}`),
      },
    };
  }
}

/** The fields of the one log line that says what a change did. */
function summary(c: ServiceChanges & { upstreamsFailed: string[] }): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(c)) if (v.length > 0) out[k] = v.join(',');
  return out;
}
