// Join tokens: a single string carrying the server address, the pinned CA fingerprint, and the token's id and secret.

import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { MeshError } from '../errors';

const PREFIX = 'meshjoin1_';

/** The parts of a join token. Only `id` and the hash of `secret` are stored by the server. */
export interface JoinToken {
  /** Where the agent enrolls: host:port of the server's agent port. */
  readonly server: string;
  /** `sha256:<hex>` of the CA root the agent must see (like kubeadm's discovery hash). */
  readonly caFingerprint: string;
  readonly id: string;
  readonly secret: string;
}

/** A new random id (8 hex) and secret (32 base64url chars, 192 bits). */
export function newTokenCredentials(): { id: string; secret: string } {
  return { id: randomBytes(4).toString('hex'), secret: randomBytes(24).toString('base64url') };
}

function checksum(body: string): string {
  return createHash('sha256').update(body).digest('hex').slice(0, 8);
}

/** Encodes a token as one copyable string: `meshjoin1_<base64url JSON>.<checksum>`. */
export function formatJoinToken(t: JoinToken): string {
  const body = Buffer.from(JSON.stringify({ s: t.server, f: t.caFingerprint, i: t.id, k: t.secret })).toString('base64url');
  return `${PREFIX}${body}.${checksum(body)}`;
}

/** Decodes a token string. @throws MeshError MESH_ERR_TOKEN_MALFORMED naming what is wrong */
export function parseJoinToken(text: string): JoinToken {
  const s = text.trim();
  const bad = (why: string): MeshError => new MeshError('MESH_ERR_TOKEN_MALFORMED', `join token is malformed: ${why}`);
  if (!s.startsWith(PREFIX)) throw bad(`it must start with "${PREFIX}" (make one with "mesh-agent token create")`);
  const [body, sum, extra] = s.slice(PREFIX.length).split('.');
  if (!body || !sum || extra !== undefined) throw bad('expected "<body>.<checksum>"');
  if (checksum(body) !== sum) throw bad('checksum does not match (the token was damaged or altered while copied)');
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(Buffer.from(body, 'base64url').toString('utf8')) as Record<string, unknown>;
  } catch {
    throw bad('its body is not readable');
  }
  const { s: server, f: caFingerprint, i: id, k: secret } = raw;
  if (typeof server !== 'string' || !/^[^\s]+:\d+$/.test(server)) throw bad('no server address in it');
  if (typeof caFingerprint !== 'string' || !/^sha256:[0-9a-f]{64}$/.test(caFingerprint)) throw bad('no CA fingerprint in it');
  if (typeof id !== 'string' || !/^[0-9a-f]{8}$/.test(id)) throw bad('no token id in it');
  if (typeof secret !== 'string' || secret.length < 16) throw bad('no secret in it');
  return { server, caFingerprint, id, secret };
}

/** The stored form of a secret: SHA-256 hex. A 192-bit random secret needs no slow hash. */
export function hashTokenSecret(secret: string): string {
  return createHash('sha256').update(secret).digest('hex');
}

/** Constant-time check of a presented secret against its stored hash. */
export function tokenSecretMatches(secret: string, storedHash: string): boolean {
  const a = Buffer.from(hashTokenSecret(secret), 'hex');
  const b = Buffer.from(storedHash, 'hex');
  return a.length === b.length && timingSafeEqual(a, b);
}
