// Dials a remote agent's inbound port with mTLS and refuses it unless it proves the expected SPIFFE ID.

import { connect, type SecureContext, type TLSSocket } from 'node:tls';
import type { SpiffeId } from '../ca';
import { MeshError } from '../errors';
import { endpointKey, type Endpoint } from '../registry';
import type { DirectReads } from './direct-reads';
import { currentAt, peerCertificate } from './peer-identity';

/** How one upstream connection is made. */
export interface ConnectOptions {
  readonly endpoint: Endpoint;
  readonly context: SecureContext;
  readonly sni: string;
  readonly expected: SpiffeId;
  /** @default 10000 */
  readonly timeoutMs?: number;
  /** ALPN protocols to offer (HTTP/2 asks for ["h2"]); the caller checks socket.alpnProtocol. @default none */
  readonly alpn?: readonly string[];
  /** Node's `onread` connect option (reads that skip the stream machinery). @default none */
  readonly onread?: DirectReads['onread'];
}

/** When the certificate each connected socket's peer proved itself with expires (ms), resumed sessions included. */
const verifiedUntil = new WeakMap<TLSSocket, number>();

/**
 * When the remote agent's certificate behind a socket from MtlsConnector expires; undefined for other sockets. (Node
 * does not keep the peer's certificate on a client socket for long after the handshake, so it is noted then.)
 */
export function peerNotAfter(socket: TLSSocket): number | undefined {
  return verifiedUntil.get(socket);
}

/** Makes upstream connections; the seam where pooling plugs in. */
export interface Connector {
  connect(opts: ConnectOptions): Promise<TLSSocket>;
}

/** One fresh TLS 1.3 connection per call, with session resumption per endpoint to save handshakes. */
export class MtlsConnector implements Connector {
  /**
   * TLS sessions per client identity (context) and endpoint (a rotated certificate starts fresh sessions), each with
   * the expiry of the server certificate it was verified with: a session is not resumed past it.
   */
  private readonly sessions = new WeakMap<SecureContext, Map<string, { session: Buffer; notAfter: number }>>();

  connect(opts: ConnectOptions): Promise<TLSSocket> {
    const { endpoint, expected } = opts;
    let byEndpoint = this.sessions.get(opts.context);
    if (!byEndpoint) this.sessions.set(opts.context, (byEndpoint = new Map()));
    // A session resumes only to the same endpoint, name and expected identity it was verified for.
    const key = `${endpointKey(endpoint)}|${opts.sni}|${expected}`;
    const stored = byEndpoint.get(key);
    const session = stored && Date.now() < stored.notAfter ? stored.session : undefined;
    if (stored && !session) byEndpoint.delete(key);
    let notAfter = 0;
    return new Promise((resolve, reject) => {
      const socket = connect({
        ...(session ? { session } : {}),
        host: endpoint.address,
        port: endpoint.port,
        servername: opts.sni,
        secureContext: opts.context,
        minVersion: 'TLSv1.3',
        ...(opts.alpn ? { ALPNProtocols: [...opts.alpn] } : {}),
        ...(opts.onread ? { onread: opts.onread } : {}),
        // Called only after the chain verified against the mesh roots; the name that matters is the SPIFFE ID.
        checkServerIdentity: (_host, cert) => {
          const uri = cert.subjectaltname ?? '';
          return uri === `URI:${expected.toString()}`
            ? undefined
            : new MeshError('MESH_ERR_PEER_IDENTITY', `upstream ${endpoint.address}:${endpoint.port} presented ${uri || 'no URI SAN'}, expected ${expected}`);
        },
      });
      socket.setNoDelay(true);
      let verified = false;
      socket.on('session', (s: Buffer) => {
        if (verified && notAfter > 0) byEndpoint.set(key, { session: s, notAfter });
      });
      const timer = setTimeout(() => {
        socket.destroy(new MeshError('MESH_ERR_UPSTREAM_CONNECT', `connecting to ${endpoint.address}:${endpoint.port} timed out after ${opts.timeoutMs ?? 10000} ms`));
      }, opts.timeoutMs ?? 10000);
      socket.once('secureConnect', () => {
        clearTimeout(timer);
        socket.off('error', onError);
        // A full handshake must show the expected identity (belt and braces over checkServerIdentity). A resumed
        // session carries no certificate on the client side; it can only be one we stored after such a check.
        const cert = peerCertificate(socket);
        if (!socket.isSessionReused() && !cert?.id?.equals(expected)) {
          socket.destroy();
          reject(new MeshError('MESH_ERR_PEER_IDENTITY', `upstream ${endpoint.address}:${endpoint.port} did not prove ${expected}`));
          return;
        }
        // Resumed: the session was stored before its certificate's expiry, but the certificate it carries must be current too.
        if (cert && !currentAt(cert, Date.now())) {
          byEndpoint.delete(key);
          socket.destroy();
          reject(new MeshError('MESH_ERR_PEER_IDENTITY', `upstream ${endpoint.address}:${endpoint.port} resumed a TLS session whose certificate is not valid now`));
          return;
        }
        notAfter = cert?.notAfter ?? stored?.notAfter ?? 0;
        if (notAfter > 0) verifiedUntil.set(socket, notAfter);
        verified = true;
        resolve(socket);
      });
      const onError = (err: Error): void => {
        clearTimeout(timer);
        reject(err instanceof MeshError ? err : new MeshError('MESH_ERR_UPSTREAM_CONNECT', `connecting to ${endpoint.address}:${endpoint.port} failed: ${(err as NodeJS.ErrnoException).code ?? err.message}`, { cause: err }));
      };
      socket.once('error', onError);
    });
  }
}
