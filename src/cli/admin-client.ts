// How CLI commands reach the server's admin API: address and token from flags, MESH_* env, or the data dir.

import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { request } from 'undici';
import { MeshError, type MeshErrorCode } from '../errors';
import { SERVER_DEFAULTS } from '../server';

/** Flags every admin command accepts. */
export interface AdminFlags {
  admin?: string;
  adminToken?: string;
  dataDir?: string;
}

/** The admin API's base URL and token, from flags, MESH_* env, or the data dir. @throws MeshError MESH_ERR_ADMIN_AUTH */
export function adminTarget(flags: AdminFlags): { url: string; token: string } {
  const base = (flags.admin ?? process.env.MESH_ADMIN_ADDR ?? `http://${SERVER_DEFAULTS.adminListen.host}:${SERVER_DEFAULTS.adminListen.port}`).replace(/\/$/, '');
  return { url: /^https?:\/\//.test(base) ? base : `http://${base}`, token: adminToken(flags) };
}

/** The admin API's base URL (no trailing slash) from --admin, MESH_ADMIN_ADDR or the default address. */
export function adminUrl(flags: AdminFlags): string {
  return adminTarget(flags).url;
}

/** Calls the admin API. @throws MeshError with the server's code, or MESH_ERR_SERVER_UNREACHABLE */
export async function adminCall(flags: AdminFlags, method: 'GET' | 'POST', path: string, body?: unknown): Promise<Record<string, unknown>> {
  const { url, token } = adminTarget(flags);
  return call(url, token, method, path, body, true);
}

/** One request; a follower replica's 307 to the leader (HA mode) is followed once, with the same token and body. */
async function call(url: string, token: string, method: 'GET' | 'POST', path: string, body: unknown, follow: boolean): Promise<Record<string, unknown>> {
  let res;
  try {
    res = await request(`${url}${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      headersTimeout: 10_000,
      bodyTimeout: 10_000,
    });
  } catch (err) {
    throw new MeshError('MESH_ERR_SERVER_UNREACHABLE', `cannot reach the admin API at ${url}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message} (is "mesh-agent server" running? set --admin or MESH_ADMIN_ADDR)`);
  }
  const text = await res.body.text();
  const location = res.headers.location;
  if (res.statusCode === 307 && follow && typeof location === 'string') {
    const to = new URL(location);
    return call(to.origin, token, method, to.pathname, body, false);
  }
  return answerOf(url, res.statusCode, text);
}

/** The JSON body of an admin API answer. @throws MeshError with the server's code for an error status */
export function answerOf(url: string, statusCode: number, text: string): Record<string, unknown> {
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(text) as Record<string, unknown>;
  } catch {
    throw new MeshError('MESH_ERR_SERVER_UNREACHABLE', `the admin API at ${url} answered ${statusCode} with something that is not JSON`);
  }
  if (statusCode >= 400) {
    const e = (json.error ?? {}) as { code?: MeshErrorCode; message?: string };
    throw new MeshError(e.code ?? 'MESH_ERR_BAD_REQUEST', e.message ?? `admin API answered ${statusCode}`);
  }
  return json;
}

function adminToken(flags: AdminFlags): string {
  if (flags.adminToken) return flags.adminToken;
  if (process.env.MESH_ADMIN_TOKEN) return process.env.MESH_ADMIN_TOKEN;
  const dir = resolve(flags.dataDir ?? process.env.MESH_DATA_DIR ?? SERVER_DEFAULTS.dataDir);
  const file = join(dir, 'admin-token');
  try {
    return readFileSync(file, 'utf8').trim();
  } catch {
    throw new MeshError('MESH_ERR_ADMIN_AUTH', `no admin token: pass --admin-token, set MESH_ADMIN_TOKEN, or point --data-dir at the server's data dir (looked for ${file})`);
  }
}
