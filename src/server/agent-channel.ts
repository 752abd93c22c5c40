// The server side of the agent channel: authenticated WebSockets over mTLS that sign certificates, record agent state and carry policy.

import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import { WebSocketServer, type WebSocket } from 'ws';
import { inspectCertificate, SpiffeId, type CertificateAuthority } from '../ca';
import { describeError, MeshError } from '../errors';
import { CHANNEL_PROTOCOL, parseAgentMessage, type AgentMessage, type ServerMessage, type ServiceRef } from '../protocol';
import type { Store } from '../store';
import type { Logger } from '../telemetry';
import type { DashboardFeed } from './dashboard-data';
import type { PolicyDistributor, PolicySubscriber } from './policy-distributor';
import { TapHub, type TapTarget } from './tap-hub';

/** What the channel needs from the server. */
export interface AgentChannelDeps {
  readonly store: Store;
  readonly ca: CertificateAuthority;
  readonly workloadCertTtlMs: number;
  readonly nodeCertTtlMs: number;
  readonly policy: PolicyDistributor;
  /** Takes each agent's version and stats messages for the dashboard. */
  readonly dashboard: DashboardFeed;
  readonly now: () => number;
  readonly log: Logger;
  /** Called after an agent's hello was recorded (HA mode shares it through Consul KV). */
  readonly reported?: (agentId: string) => void;
}

interface Session extends PolicySubscriber, TapTarget {
  readonly ws: WebSocket;
  readonly connectedAt: number;
  services: readonly ServiceRef[];
  upstreams: readonly ServiceRef[];
  protocol: number;
}

/** Max size of one channel message; CSRs and reports are small, a stats message of MAX_REQUEST_SERIES series about 100 KiB. */
const MAX_MESSAGE_BYTES = 256 * 1024;

export class AgentChannel {
  private readonly wss = new WebSocketServer({ noServer: true, maxPayload: MAX_MESSAGE_BYTES });
  private readonly sessions = new Map<string, Session>();
  /** Live taps, asked of the connected agents. */
  readonly taps = new TapHub(() => this.sessions.values());

  constructor(private readonly deps: AgentChannelDeps) {}

  /** Agents connected now, by id, with when they connected. */
  connected(): ReadonlyMap<string, { connectedAt: number }> {
    return this.sessions;
  }

  /** Accepts an upgrade only from a client certificate of an enrolled agent. */
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const tls = socket as TLSSocket;
    const agentId = this.authenticate(tls);
    if (!agentId) {
      socket.end('HTTP/1.1 401 Unauthorized\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\nthe agent channel needs an enrolled agent\'s node certificate\n');
      return;
    }
    this.wss.handleUpgrade(req, socket, head, (ws) => this.open(agentId, ws, tls.remoteAddress ?? ''));
  }

  private authenticate(tls: TLSSocket): string | undefined {
    if (!tls.authorized) return undefined;
    const peer = tls.getPeerX509Certificate();
    const id = peer ? inspectCertificate(peer.toString()).spiffeId : undefined;
    const agentId = id?.trustDomain === this.deps.ca.trustDomain ? id.agentId : undefined;
    return agentId && this.deps.store.agents.get(agentId) ? agentId : undefined;
  }

  private open(agentId: string, ws: WebSocket, address: string): void {
    const previous = this.sessions.get(agentId);
    if (previous) previous.ws.close(4000, 'replaced by a newer connection');
    const session: Session = {
      agentId,
      ws,
      connectedAt: this.deps.now(),
      services: [],
      upstreams: [],
      protocol: 1,
      send: (text) => {
        if (ws.readyState === ws.OPEN) ws.send(text);
      },
    };
    this.sessions.set(agentId, session);
    const log = this.deps.log.child({ agent: agentId });
    log.info('agent connected', { address });
    this.deps.store.agents.touch(agentId, this.deps.now());
    send(ws, { type: 'welcome', trustDomain: this.deps.ca.trustDomain, roots: [this.deps.ca.root.pem], agentId, protocol: CHANNEL_PROTOCOL });
    ws.on('message', (data, isBinary) => {
      if (isBinary) return send(ws, { type: 'error', code: 'MESH_ERR_BAD_REQUEST', message: 'binary frames are not part of the channel protocol' });
      try {
        this.handle(session, parseAgentMessage(data.toString()), address);
      } catch (err) {
        log.warn('bad channel message', { error: describeError(err) });
        const e = err instanceof MeshError ? err : new MeshError('MESH_ERR_BAD_REQUEST', String(err));
        const id = (err as { requestId?: number }).requestId;
        send(ws, { type: 'error', ...(id !== undefined ? { id } : {}), code: e.code, message: e.message });
      }
    });
    ws.on('error', (err) => log.warn('agent channel error', { error: err.message }));
    ws.on('close', () => {
      this.deps.policy.unsubscribe(session);
      if (this.sessions.get(agentId) === session) this.sessions.delete(agentId);
      log.info('agent disconnected');
    });
  }

  private handle(session: Session, msg: AgentMessage, address: string): void {
    const now = this.deps.now();
    switch (msg.type) {
      case 'hello': {
        session.services = msg.services;
        session.upstreams = msg.upstreams;
        session.protocol = msg.protocol;
        const refs = (list: readonly ServiceRef[]): string[] => list.map((s) => `${s.namespace}/${s.name}`);
        this.deps.store.agents.touch(session.agentId, now, {
          address: msg.address || address,
          services: refs(msg.services),
          serviceLabels: Object.fromEntries(msg.services.map((s) => [`${s.namespace}/${s.name}`, s.labels])),
          upstreams: refs(msg.upstreams),
        });
        this.deps.dashboard.hello(session.agentId, msg.version);
        this.deps.reported?.(session.agentId);
        // Agents of protocol 1 know nothing of policy messages; they keep whatever they run.
        if (msg.protocol >= 2) {
          this.deps.store.agents.recordPolicy(session.agentId, msg.policy?.version ?? null, msg.policyOverride);
          this.deps.policy.subscribe(session, msg.policy);
        }
        this.taps.agentJoined(session);
        return;
      }
      case 'policy-ack':
        this.deps.policy.acknowledged(session, msg.version, msg.digest, msg.override);
        return;
      case 'policy-nack':
        this.deps.policy.refused(session, msg.version, `${msg.code}: ${msg.message}`, msg.holding);
        return;
      case 'tap-records':
        this.taps.records(session.agentId, msg.id, msg.records, msg.dropped);
        return;
      case 'report':
        this.deps.store.agents.touch(session.agentId, now);
        return;
      case 'stats': {
        // An agent counts requests its own services made; series for any other source would put words in their mouth.
        const own = new Set(session.services.map((s) => `${s.namespace}/${s.name}`));
        const series = msg.series.filter((s) => own.has(`${s.source.namespace}/${s.source.name}`));
        if (series.length < msg.series.length) this.deps.log.warn('stats for services the agent did not declare in its hello were ignored', { agent: session.agentId, ignored: msg.series.length - series.length });
        this.deps.dashboard.stats(session.agentId, { ...msg, series });
        return;
      }
      case 'sign':
        try {
          send(session.ws, { type: 'signed', id: msg.id, cert: this.sign(session, msg) });
        } catch (err) {
          throw Object.assign(err as Error, { requestId: msg.id });
        }
        return;
    }
  }

  private sign(session: Session, msg: Extract<AgentMessage, { type: 'sign' }>): string {
    const { ca, store } = this.deps;
    let spiffeId: SpiffeId;
    let lifetimeMs: number;
    if (msg.kind === 'workload') {
      const svc = msg.service!;
      // An agent gets identities only for services it declared in its hello (see docs/architecture.md, "Trust").
      if (!session.services.some((s) => s.name === svc.name && s.namespace === svc.namespace)) {
        throw new MeshError('MESH_ERR_CSR_INVALID', `service ${svc.namespace}/${svc.name} was not declared by this agent's hello`);
      }
      spiffeId = SpiffeId.workload(ca.trustDomain, svc.namespace, svc.name);
      lifetimeMs = this.deps.workloadCertTtlMs;
    } else {
      spiffeId = SpiffeId.agent(ca.trustDomain, session.agentId);
      lifetimeMs = this.deps.nodeCertTtlMs;
    }
    const cert = ca.issue({ spiffeId, csrPem: msg.csr, lifetimeMs });
    const now = this.deps.now();
    store.certificates.insert({
      serial: cert.serial,
      spiffeId: spiffeId.toString(),
      kind: msg.kind,
      agentId: session.agentId,
      notBefore: cert.notBefore.getTime(),
      notAfter: cert.notAfter.getTime(),
      issuedAt: now,
    });
    this.deps.log.info('certificate issued', { agent: session.agentId, identity: spiffeId.toString(), serial: cert.serial, notAfter: cert.notAfter.toISOString() });
    return cert.pem;
  }

  /** Closes every agent connection (agents reconnect to the next server start). */
  close(): void {
    for (const s of this.sessions.values()) s.ws.close(1001, 'server shutting down');
    this.sessions.clear();
    this.wss.close();
  }
}

function send(ws: WebSocket, msg: ServerMessage): void {
  if (ws.readyState === ws.OPEN) ws.send(JSON.stringify(msg));
}
