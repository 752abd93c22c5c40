// Key pairs for the CA, nodes and workloads: ECDSA P-256 made by Node's native crypto (see docs/adr/0002).

import { createPrivateKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { MeshError } from '../errors';

/** A fresh ECDSA P-256 private key. Native key generation takes well under a millisecond. */
export function generatePrivateKey(): KeyObject {
  return generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey;
}

/** PKCS#8 PEM of a private key, for files written 0600 and for TLS contexts. */
export function privateKeyToPem(key: KeyObject): string {
  return key.export({ type: 'pkcs8', format: 'pem' }).toString();
}

/** Loads a PEM private key. @throws MeshError MESH_ERR_CERT_INVALID */
export function privateKeyFromPem(pem: string, what = 'private key'): KeyObject {
  try {
    return createPrivateKey(pem);
  } catch (err) {
    throw new MeshError('MESH_ERR_CERT_INVALID', `cannot read ${what}: ${(err as Error).message}`, { cause: err });
  }
}
