// Policy gossip between agents (docs/gossip.md): each round dials a few of the agents this one talks to, both sides say
// which version they hold, and one that is behind pulls the other's whole signed version and verifies it before use.

import type { SecureContext, TLSSocket } from 'node:tls';
import type { Duplex } from 'node:stream';
import type { SpiffeId } from '../ca';
import { describeError, MeshError } from '../errors';
import type { CompiledPolicy } from '../policy';
import { GOSSIP_ALPN, MAX_GOSSIP_MESSAGE_BYTES, parseGossipMessage, type GossipMessage, type PolicyVersionRef } from '../protocol';
import type { Connector } from '../proxy';
import type { Endpoint } from '../registry';
import type { Logger } from '../telemetry';
import type { MeshPolicy } from './mesh-policy';

/** The gossip protocol's version, sent in hello. */
const GOSSIP_PROTOCOL = 1;
/** One exchange, dial to last byte, must end within this. */
const EXCHANGE_TIMEOUT_MS = 15_000;
/** Least time between two pulls, and after a refused one. */
const PULL_GAP_MS = 1000;
const PULL_GAP_AFTER_REFUSAL_MS = 10_000;
/** Exchanges served at once for peers; more are closed at once. */
const MAX_INBOUND_EXCHANGES = 8;
/** How many refused (version, digest) pairs are remembered and never pulled again. */
const REFUSED_MEMORY = 64;

/** An agent to dial: one endpoint of a service this node calls, with the name and identity it must prove. */
export interface GossipPeer {
  readonly endpoint: Endpoint;
  readonly sni: string;
  readonly expected: SpiffeId;
}

/** What gossip needs from the agent. */
export interface PolicyGossipDeps {
  readonly policy: MeshPolicy;
  /** The node identity's TLS context (gossip is node to node), if it has a certificate yet. */
  readonly context: () => SecureContext | undefined;
  readonly trustDomain: string;
  /** The agents this one talks to now. */
  readonly peers: () => readonly GossipPeer[];
  /** False while the server is reachable: it is the authority then, and pushes what this agent needs. */
  readonly mayPull: () => boolean;
  /** A newer version was pulled, verified and is held. */
  readonly onAccepted: (compiled: CompiledPolicy, version: number, from: string) => void;
  readonly connector: Connector;
  readonly intervalMs: number;
  /** Peers dialed per round. */
  readonly fanout: number;
  readonly now: () => number;
  readonly log: Logger;
}

/** What `mesh-agent status --agent` shows of gossip. */
export interface GossipStatus {
  exchanges: number;
  failures: number;
  /** Hellos from peers offering a newer version than the one held (pulled or not). */
  newerHeard: number;
  pulls: number;
  refused: number;
  /** Refused pulled versions by MeshError code (MESH_ERR_POLICY_SIGNATURE, MESH_ERR_POLICY_INVALID, MESH_ERR_GOSSIP). */
  refusedBy: Record<string, number>;
  lastPull: { version: number; from: string; at: string } | null;
  lastRefusal: { version: number; from: string; error: string; at: string } | null;
}

export class PolicyGossip {
  private timer?: NodeJS.Timeout;
  private roundRunning = false;
  private nudged?: NodeJS.Timeout;
  /** A nudge came while a round ran: that round may have dialed its peers before the new version, so run one more. */
  private nudgedDuringRound = false;
  private pulling = false;
  private nextPullAt = 0;
  private inbound = 0;
  private readonly refusedVersions = new Set<string>();
  private closed = false;
  readonly stats: GossipStatus = { exchanges: 0, failures: 0, newerHeard: 0, pulls: 0, refused: 0, refusedBy: {}, lastPull: null, lastRefusal: null };

  constructor(private readonly deps: PolicyGossipDeps) {}

  start(): void {
    this.timer = setInterval(() => void this.round(), this.deps.intervalMs).unref();
  }

  /** Runs a round soon (a new version is held: tell the peers). */
  nudge(): void {
    if (this.closed || this.nudged) return;
    this.nudged = setTimeout(() => {
      this.nudged = undefined;
      if (this.roundRunning) this.nudgedDuringRound = true;
      else void this.round();
    }, 0).unref();
  }

  close(): void {
    this.closed = true;
    clearInterval(this.timer);
    clearTimeout(this.nudged);
  }

  /** Dials up to `fanout` peers picked at random, one after the other. */
  async round(): Promise<void> {
    if (this.roundRunning || this.closed) return;
    const context = this.deps.context();
    if (!context) return;
    this.roundRunning = true;
    try {
      for (const peer of pick(this.deps.peers(), this.deps.fanout)) {
        if (this.closed) break;
        await this.dial(peer, context);
      }
    } finally {
      this.roundRunning = false;
      if (this.nudgedDuringRound) {
        this.nudgedDuringRound = false;
        this.nudge();
      }
    }
  }

  private async dial(peer: GossipPeer, context: SecureContext): Promise<void> {
    const label = `${peer.endpoint.address}:${peer.endpoint.port} (${peer.expected})`;
    let socket: TLSSocket;
    try {
      socket = await this.deps.connector.connect({ endpoint: peer.endpoint, context, sni: peer.sni, expected: peer.expected, alpn: [GOSSIP_ALPN], timeoutMs: EXCHANGE_TIMEOUT_MS });
    } catch (err) {
      this.stats.failures++;
      this.deps.log.debug('policy gossip: cannot reach a peer', { peer: label, error: describeError(err) });
      return;
    }
    if (socket.alpnProtocol !== GOSSIP_ALPN) {
      this.stats.failures++;
      this.deps.log.debug('policy gossip: the peer does not speak it (an older mesh-agent?)', { peer: label });
      socket.destroy();
      return;
    }
    await this.exchange(socket, label);
  }

  /**
   * An inbound connection that chose the gossip ALPN; InboundListener has verified the TLS chain. The caller must be
   * an agent (node identity) of this trust domain.
   */
  serve(socket: TLSSocket, peer: SpiffeId | undefined): void {
    const label = `${socket.remoteAddress}:${socket.remotePort} (${peer?.toString() ?? 'no identity'})`;
    if (!peer || peer.trustDomain !== this.deps.trustDomain || peer.agentId === undefined) {
      this.deps.log.warn('policy gossip refused: the caller is not an agent of this trust domain', { code: 'MESH_ERR_PEER_IDENTITY', peer: label });
      socket.destroy();
      return;
    }
    if (this.closed || this.inbound >= MAX_INBOUND_EXCHANGES) {
      this.deps.log.debug('policy gossip refused: too many exchanges at once', { peer: label });
      socket.destroy();
      return;
    }
    this.inbound++;
    void this.exchange(socket, label).finally(() => this.inbound--);
  }

  /** The exchange, the same on both ends: hello both ways, then a pull (and its answer) or not, then done both ways. */
  private exchange(socket: Duplex, peer: string): Promise<void> {
    this.stats.exchanges++;
    return new Promise((resolve) => {
      let sentDone = false;
      let gotDone = false;
      let pulled = false;
      let reservedPull = false;
      const send = (m: GossipMessage): void => void socket.write(`${JSON.stringify(m)}\n`);
      const sendDone = (): void => {
        sentDone = true;
        send({ type: 'done' });
        if (gotDone) socket.end();
      };
      const fail = (err: unknown): void => {
        this.stats.failures++;
        this.deps.log.warn('policy gossip with a peer failed', { peer, error: describeError(err) });
        socket.destroy();
      };
      const timer = setTimeout(() => fail(new MeshError('MESH_ERR_GOSSIP', `the exchange did not finish within ${EXCHANGE_TIMEOUT_MS} ms`)), EXCHANGE_TIMEOUT_MS);
      socket.once('close', () => {
        clearTimeout(timer);
        if (reservedPull) this.pulling = false;
        resolve();
      });
      socket.on('error', (err) => this.deps.log.debug('policy gossip socket error', { peer, error: err.message }));
      const onMessage = (m: GossipMessage): void => {
        switch (m.type) {
          case 'hello':
            if (m.policy && m.policy.version > (this.deps.policy.holding?.version ?? 0)) this.stats.newerHeard++;
            if (this.claimPull(m.policy)) {
              reservedPull = pulled = true;
              send({ type: 'pull', version: m.policy!.version });
            } else sendDone();
            return;
          case 'pull': {
            const held = this.deps.policy.current;
            if (!held) throw new MeshError('MESH_ERR_GOSSIP', `the peer pulled version ${m.version}, but this agent holds none`);
            send({ type: 'policy', version: held.version, digest: held.digest, signature: held.signature, signerCert: held.signerCert, documents: held.documents });
            return;
          }
          case 'policy':
            if (!pulled) throw new MeshError('MESH_ERR_GOSSIP', 'the peer sent a policy version nobody pulled');
            pulled = false;
            this.take(m, peer);
            reservedPull = false;
            this.pulling = false;
            sendDone();
            return;
          case 'done':
            gotDone = true;
            if (sentDone) socket.end();
        }
      };
      readLines(socket, (line) => {
        try {
          onMessage(parseGossipMessage(line));
        } catch (err) {
          fail(err);
        }
      }, fail);
      send({ type: 'hello', protocol: GOSSIP_PROTOCOL, ...(this.deps.policy.holding ? { policy: this.deps.policy.holding } : {}) });
    });
  }

  /** Whether to pull what a peer holds now; reserves the one pull that may run at a time. */
  private claimPull(theirs: PolicyVersionRef | undefined): boolean {
    if (!theirs || this.pulling || this.closed || !this.deps.mayPull()) return false;
    const mine = this.deps.policy.holding;
    if (mine && theirs.version <= mine.version) return false;
    if (this.refusedVersions.has(`${theirs.version} ${theirs.digest}`) || this.deps.now() < this.nextPullAt) return false;
    this.pulling = true;
    return true;
  }

  /** Verifies and holds a pulled version, or records why not (that version is never pulled again). */
  private take(v: Extract<GossipMessage, { type: 'policy' }>, from: string): void {
    const at = new Date(this.deps.now()).toISOString();
    try {
      const compiled = this.deps.policy.acceptFromPeer(v);
      this.stats.pulls++;
      this.stats.lastPull = { version: v.version, from, at };
      this.nextPullAt = this.deps.now() + PULL_GAP_MS;
      this.deps.onAccepted(compiled, v.version, from);
    } catch (err) {
      this.stats.refused++;
      const reason = err instanceof MeshError ? err.code : 'MESH_ERR_INTERNAL';
      this.stats.refusedBy[reason] = (this.stats.refusedBy[reason] ?? 0) + 1;
      this.stats.lastRefusal = { version: v.version, from, error: describeError(err), at };
      this.nextPullAt = this.deps.now() + PULL_GAP_AFTER_REFUSAL_MS;
      if (this.refusedVersions.size >= REFUSED_MEMORY) this.refusedVersions.delete(this.refusedVersions.values().next().value!);
      this.refusedVersions.add(`${v.version} ${v.digest}`);
      this.deps.log.error('policy version from a peer refused, keeping the one held', { version: v.version, peer: from, held: this.deps.policy.holding?.version ?? null, error: describeError(err) });
    }
  }
}

/** Calls `onLine` for each newline-terminated line; a line over the cap is an error and reading stops. */
function readLines(socket: Duplex, onLine: (line: string) => void, onError: (err: MeshError) => void): void {
  let parts: Buffer[] = [];
  let size = 0;
  const onData = (chunk: Buffer): void => {
    let start = 0;
    for (let nl = chunk.indexOf(0x0a); nl >= 0; nl = chunk.indexOf(0x0a, start)) {
      parts.push(chunk.subarray(start, nl));
      const line = Buffer.concat(parts).toString('utf8');
      parts = [];
      size = 0;
      start = nl + 1;
      onLine(line);
      if (socket.destroyed) return;
    }
    size += chunk.length - start;
    if (size > MAX_GOSSIP_MESSAGE_BYTES) {
      socket.off('data', onData);
      onError(new MeshError('MESH_ERR_GOSSIP', `a gossip message is larger than ${MAX_GOSSIP_MESSAGE_BYTES} bytes`));
      return;
    }
    if (start < chunk.length) parts.push(chunk.subarray(start));
  };
  socket.on('data', onData);
}

/** Up to `n` peers at random, one per address and port. */
function pick(peers: readonly GossipPeer[], n: number): GossipPeer[] {
  const byAddress = new Map(peers.map((p) => [`${p.endpoint.address}:${p.endpoint.port}`, p]));
  const all = [...byAddress.values()];
  for (let i = all.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [all[i], all[j]] = [all[j]!, all[i]!];
  }
  return all.slice(0, n);
}
