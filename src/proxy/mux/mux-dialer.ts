// The calling side of mesh-mux/1: streams to a remote agent on one shared mTLS connection per endpoint, service and
// identity, or — when the remote agent does not offer mesh-mux/1 — plain connections as before.

import type { SecureContext, TLSSocket } from 'node:tls';
import type { Logger } from '../../telemetry';
import type { ByteStream } from '../byte-stream';
import { DirectReads } from '../direct-reads';
import { peerNotAfter, type ConnectOptions, type Connector } from '../mtls-connector';
import { MUX_ALPN } from './mux-frames';
import { MuxSession } from './mux-session';
import { endpointKey } from '../../registry';

/** How long an endpoint that answered without mesh-mux/1 is dialed the old way before it is asked again. */
const PLAIN_FOR_MS = 60_000;

/**
 * The longest a multiplexed connection takes new streams; earlier when the remote agent's certificate expires sooner.
 * A renewed certificate of this side's starts a new connection anyway (carriers are per client TLS context).
 */
const MAX_CARRIER_AGE_MS = 10 * 60_000;

/** A plain connection the carrier dial ended up with (the peer chose no mesh-mux/1), for the first caller to claim. */
interface Plain {
  socket: TLSSocket | null;
  readonly reads: DirectReads;
}

interface Carrier {
  session?: MuxSession;
  /** When the session stops taking new streams. */
  retireAt: number;
  connecting?: Promise<MuxSession | Plain>;
  plainUntil: number;
}

export class MuxDialer {
  /** Per client certificate (a rotated one starts new connections), per endpoint / SNI / expected identity. */
  private readonly carriers = new WeakMap<SecureContext, Map<string, Carrier>>();
  /** Multiplexed connections up now. */
  private readonly sessions = new Set<MuxSession>();
  /** Connections opened (carriers and plain ones after a refusal). */
  opened = 0;

  constructor(
    private readonly connector: Connector,
    private readonly log: Logger,
  ) {}

  /**
   * A stream to `opts.endpoint` — at once when a connection to it is up — or a plain connection reading through
   * `reads` when the endpoint does not speak mesh-mux/1.
   * @throws (rejects with) MeshError MESH_ERR_UPSTREAM_CONNECT, MESH_ERR_PEER_IDENTITY, as Connector.connect
   */
  open(opts: ConnectOptions, reads: DirectReads): Promise<ByteStream> {
    let byKey = this.carriers.get(opts.context);
    if (!byKey) this.carriers.set(opts.context, (byKey = new Map()));
    const key = `${endpointKey(opts.endpoint)}|${opts.sni}|${opts.expected}`;
    let c = byKey.get(key);
    if (!c) byKey.set(key, (c = { plainUntil: 0, retireAt: 0 }));
    if (c.session && Date.now() >= c.retireAt) {
      c.session.retire();
      c.session = undefined;
    }
    if (c.session?.canOpen) return Promise.resolve(c.session.open());
    if (Date.now() < c.plainUntil || c.session) return this.plain(opts, reads); // refused recently, or full
    const carrier = c;
    carrier.connecting ??= this.dial(opts, carrier, byKey, key);
    return carrier.connecting.then((got) => {
      if (got instanceof MuxSession) return got.canOpen ? got.open() : this.plain(opts, reads);
      const socket = got.socket;
      if (!socket) return this.plain(opts, reads);
      got.socket = null;
      got.reads.deliver = (chunk) => reads.deliver(chunk);
      return socket;
    });
  }

  /** Closes every multiplexed connection; their streams are lost (plain connections belong to their pools). */
  close(): void {
    for (const s of this.sessions) s.close();
  }

  private plain(opts: ConnectOptions, reads: DirectReads): Promise<TLSSocket> {
    this.opened++;
    return this.connector.connect({ ...opts, onread: reads.onread });
  }

  private async dial(opts: ConnectOptions, c: Carrier, byKey: Map<string, Carrier>, key: string): Promise<MuxSession | Plain> {
    const reads = new DirectReads();
    try {
      this.opened++;
      const socket = await this.connector.connect({ ...opts, alpn: [MUX_ALPN, 'http/1.1'], onread: reads.onread });
      if (socket.alpnProtocol !== MUX_ALPN) {
        c.plainUntil = Date.now() + PLAIN_FOR_MS;
        this.log.info('remote agent does not offer mesh-mux/1: one connection per request to it', { endpoint: key });
        return { socket, reads };
      }
      const session = new MuxSession(socket, {
        onProtocolError: (message) => this.log.warn('multiplexed connection closed: the remote agent broke the protocol', { code: 'MESH_ERR_MUX_PROTOCOL', endpoint: key, error: message }),
      });
      reads.deliver = session.onBytes;
      c.session = session;
      c.retireAt = Math.min(Date.now() + MAX_CARRIER_AGE_MS, peerNotAfter(socket) ?? Infinity);
      this.sessions.add(session);
      socket.once('close', () => {
        this.sessions.delete(session);
        if (c.session === session) c.session = undefined;
        if (!c.session && c.plainUntil === 0) byKey.delete(key);
      });
      return session;
    } finally {
      c.connecting = undefined;
      if (!c.session && c.plainUntil === 0) byKey.delete(key);
    }
  }
}
