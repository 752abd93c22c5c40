// The control-plane server: opens the store and CA, serves enrollment + the agent channel (TLS, policy push) and the admin API.

import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { CertificateAuthority } from '../ca';
import { formatHostPort, type HostPort } from '../config';
import { describeError, MeshError } from '../errors';
import { parseEnrollRequest, readBody, sendError, sendJson } from '../protocol';
import { Store } from '../store';
import { silentLogger, type Logger } from '../telemetry';
import { createAdminHandler } from './admin-api';
import { AgentChannel } from './agent-channel';
import { DashboardFeed } from './dashboard-data';
import { DashboardRoutes } from './dashboard-routes';
import { enrollAgent } from './enrollment';
import { HaReplica } from './ha/ha-replica';
import { PolicyDistributor } from './policy-distributor';
import { PolicyService } from './policy-service';
import { PolicySigner } from './policy-signer';
import type { ServerConfig } from './server-config';
import { serverIdentity } from './server-identity';

export class MeshServer {
  private store?: Store;
  private ca?: CertificateAuthority;
  private channel?: AgentChannel;
  private agentServer?: HttpsServer;
  private adminServer?: HttpServer;
  private ha?: HaReplica;
  private readonly log: Logger;
  private readonly now: () => number;
  private markReady!: () => void;
  private readonly readyPromise = new Promise<void>((resolve) => (this.markReady = resolve));
  /** Set when the admin token was created by this start (so the CLI prints it once). */
  newAdminToken: string | undefined;

  constructor(readonly config: ServerConfig, opts: { log?: Logger; now?: () => number } = {}) {
    this.log = opts.log ?? silentLogger;
    this.now = opts.now ?? Date.now;
  }

  /** Opens state and binds both ports. @throws MeshError MESH_ERR_STORE | MESH_ERR_CONFIG | MESH_ERR_LISTEN */
  async start(signal?: AbortSignal): Promise<void> {
    const { config } = this;
    mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
    const store = (this.store = Store.open(join(config.dataDir, 'mesh.db')));
    const ha = (this.ha = config.ha && new HaReplica({ config: config.ha, store, me: { name: config.ha.replicaName, admin: config.ha.adminAdvertise, agent: config.advertise }, log: this.log, now: this.now }));
    const ca = (this.ca = ha ? await this.sharedCa(store, ha) : this.openCa(store));
    const adminToken = ha ? await this.sharedAdminToken(ha) : this.adminToken();
    const identity = serverIdentity(store, ca, 'tls', this.now());
    const startedAt = this.now();
    const distributor = new PolicyDistributor({ store, signer: new PolicySigner(store, ca, this.now), now: this.now, log: this.log });
    const policy = new PolicyService({ store, connected: () => this.channel!.connected(), committed: () => distributor.publish(), now: this.now, log: this.log });
    const dashboard = new DashboardFeed(this.now);
    this.channel = new AgentChannel({
      store, ca, policy: distributor, dashboard, workloadCertTtlMs: config.workloadCertTtlMs, nodeCertTtlMs: config.nodeCertTtlMs, now: this.now, log: this.log,
      ...(ha ? { reported: (agentId: string) => ha.reportAgent(agentId) } : {}),
    });
    if (ha) await ha.start(policy);

    this.agentServer = createHttpsServer(
      { key: identity.keyPem, cert: identity.certPem, ca: [ca.root.pem], requestCert: true, rejectUnauthorized: false, minVersion: 'TLSv1.3' },
      (req, res) => this.handleAgentHttp(req, res),
    );
    this.agentServer.on('upgrade', (req, socket, head) => {
      if ((req.url ?? '').split('?')[0] === '/v1/channel') this.channel!.handleUpgrade(req, socket, head);
      else socket.end('HTTP/1.1 404 Not Found\r\nconnection: close\r\n\r\n');
    });
    this.agentServer.on('tlsClientError', (err, socket) => {
      this.log.debug('TLS handshake failed on the agent port', { peer: socket.remoteAddress, error: err.message });
    });
    this.agentServer.on('clientError', (_err, socket) => socket.destroy());
    this.adminServer = createHttpServer(
      createAdminHandler({
        store,
        ca,
        policy,
        ha,
        adminToken,
        advertise: config.advertise,
        listen: formatHostPort(config.listen),
        workloadCertTtlMs: config.workloadCertTtlMs,
        connected: () => this.channel!.connected(),
        taps: this.channel.taps,
        startedAt,
        now: this.now,
        log: this.log,
        dashboard: new DashboardRoutes({ feed: dashboard, store, policy, connected: () => this.channel!.connected(), now: this.now }),
      }),
    );
    await listen(this.agentServer, config.listen, 'agent');
    await listen(this.adminServer, config.adminListen, 'admin');
    if (ha) await ha.announce();
    signal?.addEventListener('abort', () => void this.close(), { once: true });
    this.log.info('server ready', {
      agents: formatHostPort(this.address('agent')),
      admin: formatHostPort(this.address('admin')),
      trustDomain: ca.trustDomain,
      ca: ca.fingerprint,
      dataDir: config.dataDir,
    });
    this.markReady();
  }

  /** Resolves once both ports are bound. */
  ready(): Promise<void> {
    return this.readyPromise;
  }

  /** The bound address of a port (useful with port 0). */
  address(which: 'agent' | 'admin'): HostPort {
    const a = (which === 'agent' ? this.agentServer : this.adminServer)?.address();
    if (!a || typeof a === 'string') throw new Error(`${which} port is not bound`);
    return { host: a.address, port: a.port };
  }

  get caFingerprint(): string {
    return this.ca!.fingerprint;
  }

  /** Stops accepting, closes agent channels (agents keep serving and reconnect), closes the store. */
  async close(): Promise<void> {
    await this.ha?.close();
    this.channel?.close();
    await Promise.all([closeServer(this.agentServer), closeServer(this.adminServer)]);
    this.store?.close();
  }

  /** Aborts at once. */
  destroy(err?: Error): void {
    if (err) this.log.error('server stopping on error', { error: describeError(err) });
    this.agentServer?.closeAllConnections();
    this.adminServer?.closeAllConnections();
    void this.close();
  }

  private openCa(store: Store): CertificateAuthority {
    const row = store.ca.active();
    if (row) {
      if (row.trustDomain !== this.config.trustDomain) {
        throw new MeshError(
          'MESH_ERR_CONFIG',
          `the data dir ${this.config.dataDir} holds a CA for trust domain "${row.trustDomain}", but trustDomain is "${this.config.trustDomain}": a trust domain cannot change without a new CA`,
        );
      }
      return CertificateAuthority.load(row, { now: this.now });
    }
    const ca = CertificateAuthority.create(this.config.trustDomain, { now: this.now });
    store.ca.insert({ ...ca.material, fingerprint: ca.fingerprint, createdAt: this.now() });
    this.log.info('created CA', { trustDomain: ca.trustDomain, fingerprint: ca.fingerprint });
    return ca;
  }

  private adminToken(): string {
    const file = join(this.config.dataDir, 'admin-token');
    if (existsSync(file)) return readFileSync(file, 'utf8').trim();
    const token = randomBytes(24).toString('base64url');
    writeFileSync(file, `${token}\n`, { mode: 0o600, flag: 'wx' });
    chmodSync(file, 0o600);
    this.newAdminToken = token;
    return token;
  }

  /** HA mode: the CA in Consul KV (the first replica stores this data dir's CA, or a new one); the local store follows it. */
  private async sharedCa(store: Store, ha: HaReplica): Promise<CertificateAuthority> {
    const row = await ha.sharedCa(this.config.trustDomain, () => {
      const local = store.ca.active();
      if (local) return local;
      const ca = CertificateAuthority.create(this.config.trustDomain, { now: this.now });
      return { ...ca.material, fingerprint: ca.fingerprint, createdAt: this.now() };
    });
    if (store.ca.active()?.fingerprint !== row.fingerprint) store.ca.insert(row);
    return CertificateAuthority.load(row, { now: this.now });
  }

  /** HA mode: one admin token for every replica, sealed in Consul KV; written to this data dir's admin-token too. */
  private async sharedAdminToken(ha: HaReplica): Promise<string> {
    const file = join(this.config.dataDir, 'admin-token');
    const local = existsSync(file) ? readFileSync(file, 'utf8').trim() : randomBytes(24).toString('base64url');
    const token = await ha.sharedAdminToken(local);
    if (!existsSync(file) || local !== token) {
      writeFileSync(file, `${token}\n`, { mode: 0o600 });
      chmodSync(file, 0o600);
    }
    return token;
  }

  private handleAgentHttp(req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse): void {
    void (async () => {
      try {
        const path = (req.url ?? '/').split('?')[0];
        if (req.method === 'GET' && path === '/v1/bundle') {
          sendJson(res, 200, { trustDomain: this.ca!.trustDomain, roots: [this.ca!.root.pem] });
        } else if (req.method === 'POST' && path === '/v1/enroll') {
          const body = parseEnrollRequest(await readBody(req));
          const address = (req.socket as TLSSocket).remoteAddress ?? '';
          const enroll = (): ReturnType<typeof enrollAgent> => enrollAgent(body, address, { store: this.store!, ca: this.ca!, nodeCertTtlMs: this.config.nodeCertTtlMs, now: this.now });
          const answer = this.ha ? await this.ha.enroll(body, enroll) : enroll();
          this.log.info('agent enrolled', { agent: answer.agentId, node: body.nodeName, token: body.tokenId, address });
          sendJson(res, 200, answer);
        } else {
          throw new MeshError('MESH_ERR_NOT_FOUND', `no route ${req.method} ${path} on the agent port`);
        }
      } catch (err) {
        this.log.warn('agent port request refused', { path: req.url, error: describeError(err) });
        sendError(res, err);
      }
    })();
  }
}

function listen(server: HttpServer | HttpsServer, at: HostPort, what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException): void =>
      reject(new MeshError('MESH_ERR_LISTEN', `cannot listen for ${what} on ${formatHostPort(at)}: ${err.code ?? err.message}`, { cause: err }));
    server.once('error', onError);
    server.listen(at.port, at.host, () => {
      server.off('error', onError);
      resolve();
    });
  });
}

function closeServer(server: HttpServer | HttpsServer | undefined): Promise<void> {
  if (!server?.listening) return Promise.resolve();
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeIdleConnections();
  });
}
