// Reads the SPIFFE ID a TLS peer proved, from its verified certificate's URI SAN, and whether that certificate is current.

import type { TLSSocket } from 'node:tls';
import { spiffeIdOf, type SpiffeId } from '../ca';

/** What a peer's certificate says: its SPIFFE ID (undefined unless exactly one valid URI SAN) and validity period. */
export interface PeerCertificate {
  readonly id: SpiffeId | undefined;
  readonly notBefore: number;
  readonly notAfter: number;
}

/** The peer's certificate as far as the mesh cares, or undefined when it presented none. */
export function peerCertificate(socket: TLSSocket): PeerCertificate | undefined {
  const cert = socket.getPeerX509Certificate();
  if (!cert) return undefined;
  return { id: spiffeIdOf(cert), notBefore: Date.parse(cert.validFrom), notAfter: Date.parse(cert.validTo) };
}

/** The peer's SPIFFE ID, or undefined when it presented no certificate or not exactly one valid URI SAN. */
export function peerSpiffeId(socket: TLSSocket): SpiffeId | undefined {
  return peerCertificate(socket)?.id;
}

/**
 * Whether the certificate is valid at `now`. The handshake checks this, but a resumed TLS session skips the
 * certificate checks and carries the certificate of the handshake it resumes, which may have expired since.
 */
export function currentAt(cert: PeerCertificate, now: number): boolean {
  return cert.notBefore <= now && now <= cert.notAfter;
}
