// The HA key-encryption key: secrets (the CA private key, the admin token) go to Consul KV only sealed with AES-256-GCM under it.

import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { MeshError } from '../../errors';

/** A sealed secret as stored in KV. `aad` binds it to what it belongs to (a CA fingerprint, "admin-token"). */
export interface SealedSecret {
  readonly alg: 'aes-256-gcm';
  readonly iv: string;
  readonly tag: string;
  readonly data: string;
}

/**
 * Reads the key file: 32 bytes written as 64 hex characters (`openssl rand -hex 32`), readable by its owner only.
 * @throws MeshError MESH_ERR_HA_KEY naming what is wrong
 */
export function readKeyEncryptionKey(file: string): Buffer {
  let text: string;
  try {
    const mode = statSync(file).mode & 0o777;
    if ((mode & 0o077) !== 0) throw new MeshError('MESH_ERR_HA_KEY', `key-encryption key file ${file} has mode ${mode.toString(8).padStart(4, '0')}; it must be readable by its owner only (chmod 600)`);
    text = readFileSync(file, 'utf8').trim();
  } catch (err) {
    if (err instanceof MeshError) throw err;
    throw new MeshError('MESH_ERR_HA_KEY', `cannot read the key-encryption key file ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err });
  }
  if (!/^[0-9a-fA-F]{64}$/.test(text)) throw new MeshError('MESH_ERR_HA_KEY', `key-encryption key file ${file} must hold 32 bytes as 64 hex characters (make one with "openssl rand -hex 32"), got ${text.length} characters`);
  return Buffer.from(text, 'hex');
}

/** Seals `plain` under `key`, bound to `aad`. */
export function seal(key: Buffer, plain: string, aad: string): SealedSecret {
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', key, iv);
  cipher.setAAD(Buffer.from(aad));
  const data = Buffer.concat([cipher.update(plain, 'utf8'), cipher.final()]);
  return { alg: 'aes-256-gcm', iv: iv.toString('base64'), tag: cipher.getAuthTag().toString('base64'), data: data.toString('base64') };
}

/** Opens a sealed secret. @throws MeshError MESH_ERR_HA_KEY when the key (or the aad) is not the one that sealed it */
export function open(key: Buffer, sealed: SealedSecret, aad: string, what: string): string {
  try {
    if (sealed.alg !== 'aes-256-gcm') throw new Error(`unknown algorithm ${String(sealed.alg)}`);
    const decipher = createDecipheriv('aes-256-gcm', key, Buffer.from(sealed.iv, 'base64'));
    decipher.setAAD(Buffer.from(aad));
    decipher.setAuthTag(Buffer.from(sealed.tag, 'base64'));
    return Buffer.concat([decipher.update(Buffer.from(sealed.data, 'base64')), decipher.final()]).toString('utf8');
  } catch (err) {
    throw new MeshError('MESH_ERR_HA_KEY', `cannot open the ${what} stored in Consul KV: this replica's key-encryption key is not the one that sealed it (${(err as Error).message})`, { cause: err });
  }
}
