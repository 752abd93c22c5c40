// Named admin tokens: `meshadmin1_<name>_<secret>`, only the secret's SHA-256 stored; create, list, revoke, and who a
// presented token is (the name policy history records; the bootstrap token of <dataDir>/admin-token is `admin`).

import { randomBytes, timingSafeEqual } from 'node:crypto';
import { hashTokenSecret } from '../ca';
import { MeshError } from '../errors';
import { parseJson } from '../protocol';
import type { Store } from '../store';

/** The name history records for changes made with the bootstrap token of `<dataDir>/admin-token`. */
export const ADMIN_TOKEN_NAME = 'admin';

/** A named token's name: a person or a pipeline, as history shows it. */
const NAME = /^[a-z0-9][a-z0-9.-]{0,62}$/;
const PREFIX = 'meshadmin1_';

const iso = (ms: number | null): string | null => (ms === null ? null : new Date(ms).toISOString());
const equal = (a: string, b: string): boolean => a.length === b.length && timingSafeEqual(Buffer.from(a), Buffer.from(b));

/**
 * The name of the admin token presented: `admin` for the bootstrap token, else the named token's name.
 * @throws MeshError MESH_ERR_ADMIN_AUTH when it is neither
 */
export function adminTokenName(presented: string, bootstrap: string, store: Store, now: number): string {
  if (equal(presented, bootstrap)) return ADMIN_TOKEN_NAME;
  if (presented.startsWith(PREFIX)) {
    const rest = presented.slice(PREFIX.length);
    const cut = rest.indexOf('_');
    const name = rest.slice(0, cut);
    if (cut > 0 && store.adminTokens.verify(name, rest.slice(cut + 1), now)) return name;
  }
  throw new MeshError('MESH_ERR_ADMIN_AUTH', 'wrong admin token (neither the bootstrap token nor a named one that exists)');
}

/** `{name}` → a new token, shown once. @throws MeshError MESH_ERR_BAD_REQUEST naming the problem */
export function createAdminToken(store: Store, text: string, by: string, now: number): unknown {
  const name = nameOf(text, 'admin token request');
  const secret = randomBytes(24).toString('base64url');
  store.adminTokens.insert({ name, secretHash: hashTokenSecret(secret), createdAt: now, createdBy: by });
  return { name, token: `${PREFIX}${name}_${secret}`, createdAt: iso(now), createdBy: by };
}

/** Every named token, never a secret. */
export function listAdminTokens(store: Store): unknown {
  return { tokens: store.adminTokens.list().map((t) => ({ name: t.name, createdAt: iso(t.createdAt), createdBy: t.createdBy, lastUsedAt: iso(t.lastUsedAt) })) };
}

/** `{name}` → removed. @throws MeshError MESH_ERR_NOT_FOUND when there is no such token */
export function revokeAdminToken(store: Store, text: string): unknown {
  const name = nameOf(text, 'revoke request');
  if (!store.adminTokens.revoke(name)) throw new MeshError('MESH_ERR_NOT_FOUND', `no admin token named "${name}" (see "mesh-agent admin-token list")`);
  return { name, revoked: true };
}

function nameOf(text: string, what: string): string {
  const o = text.trim() === '' ? undefined : parseJson(text, what);
  if (typeof o !== 'object' || o === null || Array.isArray(o)) throw new MeshError('MESH_ERR_BAD_REQUEST', `${what} must be a JSON object {"name": "..."}`);
  for (const k of Object.keys(o)) if (k !== 'name') throw new MeshError('MESH_ERR_BAD_REQUEST', `${what}: unknown field "${k}" (known: name)`);
  const name = (o as { name?: unknown }).name;
  if (typeof name !== 'string' || !NAME.test(name)) {
    throw new MeshError('MESH_ERR_BAD_REQUEST', `${what}.name: got ${JSON.stringify(name)}, expected lower-case letters, digits, "." and "-", at most 63 characters, such as "alice" or "ci-deploy"`);
  }
  if (name === ADMIN_TOKEN_NAME) throw new MeshError('MESH_ERR_BAD_REQUEST', `${what}.name: "${ADMIN_TOKEN_NAME}" is the bootstrap token's name (in the data dir's admin-token file); pick another`);
  return name;
}
