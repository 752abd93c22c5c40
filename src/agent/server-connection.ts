// The agent's side of the channel to the server: one mTLS WebSocket, reconnected with backoff, with request/response signing.

import { EventEmitter } from 'node:events';
import WebSocket from 'ws';
import { describeError, MeshError, type MeshErrorCode } from '../errors';
import { parseServerMessage, type AgentMessage, type HelloMessage, type ServerMessage, type ServiceRef } from '../protocol';
import type { Logger } from '../telemetry';
import { Backoff, type Clock } from './clock';
import { serverIdentityCheck } from './enrollment-client';

/** TLS material for the channel, read fresh at each connect (the node certificate rotates). */
export interface ChannelCredentials {
  readonly key: string;
  readonly cert: string;
  readonly roots: readonly string[];
}

interface Pending {
  resolve(cert: string): void;
  reject(err: Error): void;
  timer: { unref?(): unknown };
}

/** Policy versions can be large: the whole mesh policy travels in one message when the agent holds none. */
const MAX_SERVER_MESSAGE_BYTES = 64 * 1024 * 1024;

/**
 * Events: 'welcome' (ServerMessage welcome), 'policy' (PolicyMessage), 'connected', 'disconnected'.
 * While disconnected, sign() fails fast with MESH_ERR_SERVER_UNREACHABLE; callers retry on their own schedule.
 */
export class ServerConnection extends EventEmitter {
  private ws?: WebSocket;
  private closed = false;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly backoff = new Backoff();
  private retryTimer?: { unref?(): unknown };
  connectedSince: number | undefined;
  lastError: string | undefined;

  /** The server address of the current (or last) connection. */
  server: string;
  /** Server replicas found last (HA mode, consul.discoverServers). */
  private replicas: string[] = [];
  /** This agent's own random rank of each replica address: its order of trying them. */
  private readonly ranks = new Map<string, number>();
  private picked = false;

  /**
   * `discover` (HA mode) lists the server replicas now; each connect picks the next one, so an agent whose
   * server fails moves to another (it is the same mesh: no new enrollment). `server` is used while it lists none.
   */
  constructor(
    private readonly fallbackServer: string,
    private readonly trustDomain: string,
    private readonly credentials: () => ChannelCredentials,
    private readonly hello: () => Omit<HelloMessage, 'type'>,
    private readonly clock: Clock,
    private readonly log: Logger,
    private readonly discover?: () => Promise<string[]>,
    private readonly random: () => number = Math.random,
  ) {
    super();
    this.server = fallbackServer;
  }

  get connected(): boolean {
    return this.ws?.readyState === WebSocket.OPEN;
  }

  start(): void {
    void this.connect();
  }

  /**
   * The next server to dial: with discovery, the replica after the last one tried in this agent's own random order of
   * them (its first one to begin with), so agents start spread over the replicas and the agents of a failed replica
   * spread over the others, while each one still tries every replica in turn.
   */
  private async pick(): Promise<string> {
    if (!this.discover) return this.fallbackServer;
    try {
      const found = await this.discover();
      if (found.length > 0) this.replicas = found;
    } catch (err) {
      this.log.warn('cannot list the server replicas, using the last known', { error: describeError(err) });
    }
    if (this.replicas.length === 0) return this.fallbackServer;
    const rank = (address: string): number => this.ranks.get(address) ?? this.ranks.set(address, this.random()).get(address)!;
    const order = [...this.replicas].sort((a, b) => rank(a) - rank(b));
    const at = this.picked ? order.indexOf(this.server) : -1;
    this.picked = true;
    return order[(at + 1) % order.length]!;
  }

  private async connect(): Promise<void> {
    if (this.closed) return;
    this.server = await this.pick();
    if (this.closed) return;
    const c = this.credentials();
    // ws hands these to tls.connect; its own typing of checkServerIdentity is narrower than Node's.
    const tlsOptions = {
      key: c.key,
      cert: c.cert,
      ca: [...c.roots],
      checkServerIdentity: serverIdentityCheck(this.trustDomain),
      handshakeTimeout: 10_000,
      maxPayload: MAX_SERVER_MESSAGE_BYTES,
    };
    const ws = new WebSocket(`wss://${this.server}/v1/channel`, tlsOptions as unknown as WebSocket.ClientOptions);
    this.ws = ws;
    ws.on('open', () => {
      this.backoff.reset();
      this.connectedSince = this.clock.now();
      this.lastError = undefined;
      this.log.info('connected to server', { server: this.server });
      this.send({ type: 'hello', ...this.hello() });
      this.emit('connected');
    });
    ws.on('message', (data) => this.onMessage(data.toString()));
    ws.on('unexpected-response', (_req, res) => {
      this.lastError = `server refused the channel: HTTP ${res.statusCode}`;
      ws.terminate();
    });
    ws.on('error', (err) => {
      this.lastError = describeError(err);
    });
    ws.on('close', () => {
      const wasOpen = this.connectedSince !== undefined;
      this.connectedSince = undefined;
      for (const [id, p] of this.pending) {
        this.clock.clearTimeout(p.timer);
        p.reject(new MeshError('MESH_ERR_SERVER_UNREACHABLE', 'the server connection closed before it answered'));
        this.pending.delete(id);
      }
      if (this.closed) return;
      const wait = this.backoff.next();
      if (wasOpen) this.emit('disconnected');
      this.log.warn('server channel down, retrying', { server: this.server, inMs: wait, error: this.lastError });
      this.retryTimer = this.clock.setTimeout(() => void this.connect(), wait);
      this.retryTimer.unref?.();
    });
  }

  private onMessage(text: string): void {
    let msg: ServerMessage;
    try {
      msg = parseServerMessage(text);
    } catch (err) {
      this.log.warn('bad message from server', { error: describeError(err) });
      return;
    }
    if (msg.type === 'welcome' || msg.type === 'policy' || msg.type === 'tap-start' || msg.type === 'tap-stop') {
      this.emit(msg.type, msg);
      return;
    }
    const p = msg.id !== undefined ? this.pending.get(msg.id) : undefined;
    if (!p) {
      if (msg.type === 'error') this.log.warn('server reported an error', { code: msg.code, error: msg.message });
      return;
    }
    this.pending.delete(msg.id!);
    this.clock.clearTimeout(p.timer);
    if (msg.type === 'signed') p.resolve(msg.cert);
    else p.reject(new MeshError((msg.code as MeshErrorCode) ?? 'MESH_ERR_BAD_REQUEST', msg.message));
  }

  /** Asks the server to sign a CSR. @throws MeshError MESH_ERR_SERVER_UNREACHABLE when not connected */
  sign(kind: 'workload' | 'node', csr: string, service?: ServiceRef): Promise<string> {
    if (!this.connected) return Promise.reject(new MeshError('MESH_ERR_SERVER_UNREACHABLE', `not connected to the server at ${this.server}${this.lastError ? ` (${this.lastError})` : ''}`));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = this.clock.setTimeout(() => {
        this.pending.delete(id);
        reject(new MeshError('MESH_ERR_SERVER_UNREACHABLE', 'the server did not answer a signing request within 15 s'));
      }, 15_000);
      this.pending.set(id, { resolve, reject, timer });
      this.send(kind === 'workload' ? { type: 'sign', id, kind, service: service!, csr } : { type: 'sign', id, kind, csr });
    });
  }

  send(msg: AgentMessage): void {
    if (this.connected) this.ws!.send(JSON.stringify(msg));
  }

  /** Sends hello again (the set of local services changed). */
  refreshHello(): void {
    this.send({ type: 'hello', ...this.hello() });
  }

  close(): void {
    this.closed = true;
    if (this.retryTimer) this.clock.clearTimeout(this.retryTimer);
    this.ws?.close(1000, 'agent shutting down');
    this.ws?.terminate();
  }
}
