// Small JSON-over-HTTP helpers for the admin and enrollment APIs: bounded bodies, JSON answers, typed errors.

import type { IncomingMessage, ServerResponse } from 'node:http';
import { MeshError, type MeshErrorCode } from '../errors';

const STATUS: Partial<Record<MeshErrorCode, number>> = {
  MESH_ERR_BAD_REQUEST: 400,
  MESH_ERR_TOO_LARGE: 413,
  MESH_ERR_CSR_INVALID: 400,
  MESH_ERR_CONFIG: 400,
  MESH_ERR_USAGE: 400,
  MESH_ERR_ADMIN_AUTH: 401,
  MESH_ERR_TOKEN_UNKNOWN: 403,
  MESH_ERR_TOKEN_TAMPERED: 403,
  MESH_ERR_TOKEN_EXPIRED: 403,
  MESH_ERR_TOKEN_USED: 403,
  MESH_ERR_TOKEN_MALFORMED: 400,
  MESH_ERR_NOT_FOUND: 404,
  MESH_ERR_POLICY_INVALID: 400,
  MESH_ERR_TAP_LIMIT: 429,
  MESH_ERR_NOT_LEADER: 503,
};

/**
 * Reads a request body of at most `limit` bytes. A larger one is refused at once and the rest of it discarded as
 * it arrives, so the client, still sending, gets the JSON answer instead of a reset connection.
 * @throws MeshError MESH_ERR_TOO_LARGE (413) when larger
 */
export function readBody(req: IncomingMessage, limit = 64 * 1024): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size <= limit) return void chunks.push(c);
      chunks.length = 0;
      reject(new MeshError('MESH_ERR_TOO_LARGE', `request body is larger than ${limit} bytes`));
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = `${JSON.stringify(body, null, 2)}\n`;
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
  res.end(text);
}

/** Answers with `{error: {code, message, retryable}}` and the status that fits the code (500 for unknown errors). */
export function sendError(res: ServerResponse, err: unknown): void {
  const e = err instanceof MeshError ? err : new MeshError('MESH_ERR_INTERNAL', (err as Error)?.message ?? String(err));
  const status = err instanceof MeshError ? (STATUS[e.code] ?? 500) : 500;
  if (res.headersSent) {
    res.destroy();
    return;
  }
  // A policy error also lists its problems one by one (file, document, line, path, message), for scripts.
  const problems = (err as { problems?: unknown }).problems;
  sendJson(res, status, { error: { ...e.toJSON(), ...(Array.isArray(problems) ? { problems } : {}) } });
}

/** The token of `authorization: Bearer <token>`. @throws MeshError MESH_ERR_ADMIN_AUTH when there is none */
export function bearerToken(req: IncomingMessage): string {
  const h = req.headers.authorization ?? '';
  const m = /^Bearer\s+(\S+)$/i.exec(h);
  if (!m) throw new MeshError('MESH_ERR_ADMIN_AUTH', 'missing admin token: send "authorization: Bearer <token>" (the token is in the admin-token file of the server\'s data dir or the agent\'s state dir)');
  return m[1]!;
}

/** Checks `authorization: Bearer <token>`. @throws MeshError MESH_ERR_ADMIN_AUTH */
export function requireBearer(req: IncomingMessage, token: string, equal: (a: string, b: string) => boolean): void {
  if (!equal(bearerToken(req), token)) throw new MeshError('MESH_ERR_ADMIN_AUTH', 'wrong admin token');
}
