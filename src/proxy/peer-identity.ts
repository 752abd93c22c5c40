// Reads the SPIFFE ID a TLS peer proved, from its verified certificate's URI SAN.

import type { TLSSocket } from 'node:tls';
import { SpiffeId, uriSans } from '../ca';

/** The peer's SPIFFE ID, or undefined when it presented no certificate or not exactly one valid URI SAN. */
export function peerSpiffeId(socket: TLSSocket): SpiffeId | undefined {
  const cert = socket.getPeerX509Certificate();
  if (!cert) return undefined;
  const uris = uriSans(cert);
  if (uris.length !== 1) return undefined;
  try {
    return SpiffeId.parse(uris[0]!);
  } catch {
    return undefined;
  }
}
