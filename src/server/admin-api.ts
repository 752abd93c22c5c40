// The server's admin HTTP API (loopback, bearer token): status, join tokens, CA. Documented in docs/api.md.

import { timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { formatJoinToken, hashTokenSecret, newTokenCredentials, type CertificateAuthority } from '../ca';
import { parseDuration } from '../config';
import { MeshError } from '../errors';
import { MESH_VERSION, parseJson, readBody, requireBearer, sendError, sendJson } from '../protocol';
import type { Store } from '../store';
import type { Logger } from '../telemetry';

/** What the admin API reads and changes. */
export interface AdminDeps {
  readonly store: Store;
  readonly ca: CertificateAuthority;
  readonly adminToken: string;
  readonly advertise: string;
  readonly listen: string;
  readonly workloadCertTtlMs: number;
  readonly connected: () => ReadonlyMap<string, { connectedAt: number }>;
  readonly startedAt: number;
  readonly now: () => number;
  readonly log: Logger;
}

const iso = (ms: number): string => new Date(ms).toISOString();
const equal = (a: string, b: string): boolean => a.length === b.length && timingSafeEqual(Buffer.from(a), Buffer.from(b));

/** Builds the request handler. Every route needs the admin token. */
export function createAdminHandler(deps: AdminDeps): (req: IncomingMessage, res: ServerResponse) => void {
  const routes: Record<string, (req: IncomingMessage) => Promise<[number, unknown]> | [number, unknown]> = {
    'GET /v1/status': () => [200, status(deps)],
    'GET /v1/ca': () => [200, caInfo(deps.ca)],
    'GET /v1/tokens': () => [
      200,
      {
        tokens: deps.store.tokens.list().map((t) => ({
          id: t.id,
          description: t.description,
          createdAt: iso(t.createdAt),
          expiresAt: t.expiresAt === null ? null : iso(t.expiresAt),
          maxUses: t.maxUses,
          used: t.used,
          lastUsedAt: t.lastUsedAt === null ? null : iso(t.lastUsedAt),
        })),
      },
    ],
    'POST /v1/tokens': async (req) => [201, createToken(deps, await readBody(req))],
  };
  return (req, res) => {
    void (async () => {
      try {
        requireBearer(req, deps.adminToken, equal);
        const path = (req.url ?? '/').split('?')[0];
        const route = routes[`${req.method} ${path}`];
        if (!route) throw new MeshError('MESH_ERR_NOT_FOUND', `no admin route ${req.method} ${path} (see docs/api.md)`);
        const [code, body] = await route(req);
        sendJson(res, code, body);
      } catch (err) {
        sendError(res, err);
      }
    })();
  };
}

function status(deps: AdminDeps): unknown {
  const connected = deps.connected();
  return {
    server: {
      version: MESH_VERSION,
      trustDomain: deps.ca.trustDomain,
      caFingerprint: deps.ca.fingerprint,
      listen: deps.listen,
      advertise: deps.advertise,
      uptimeSeconds: Math.round((deps.now() - deps.startedAt) / 1000),
    },
    agents: deps.store.agents.list().map((a) => ({
      id: a.id,
      nodeName: a.nodeName,
      address: a.address,
      connected: connected.has(a.id),
      enrolledAt: new Date(a.enrolledAt).toISOString(),
      lastSeenAt: a.lastSeenAt === null ? null : new Date(connected.has(a.id) ? deps.now() : a.lastSeenAt).toISOString(),
      services: a.services,
      certificates: deps.store.certificates.latestForAgent(a.id).map((c) => ({
        identity: c.spiffeId,
        kind: c.kind,
        serial: c.serial,
        notAfter: new Date(c.notAfter).toISOString(),
      })),
    })),
  };
}

function caInfo(ca: CertificateAuthority): unknown {
  return { trustDomain: ca.trustDomain, fingerprint: ca.fingerprint, notAfter: ca.root.notAfter.toISOString(), pem: ca.root.pem };
}

function createToken(deps: AdminDeps, text: string): unknown {
  const body = (text.trim() === '' ? {} : parseJson(text, 'token request')) as Record<string, unknown>;
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new MeshError('MESH_ERR_BAD_REQUEST', 'token request must be a JSON object');
  for (const k of Object.keys(body)) {
    if (!['ttl', 'uses', 'description', 'server'].includes(k)) throw new MeshError('MESH_ERR_BAD_REQUEST', `unknown field "${k}" (known: ttl, uses, description, server)`);
  }
  const ttlMs = body.ttl === undefined || body.ttl === null ? 3_600_000 : typeof body.ttl === 'string' ? parseDuration(body.ttl) : undefined;
  if (ttlMs === undefined || ttlMs <= 0) throw new MeshError('MESH_ERR_BAD_REQUEST', `ttl: got ${JSON.stringify(body.ttl)}, expected a duration such as "10m" or "24h"`);
  const uses = body.uses ?? 1;
  if (!Number.isInteger(uses) || (uses as number) < 1 || (uses as number) > 10_000) throw new MeshError('MESH_ERR_BAD_REQUEST', `uses: got ${JSON.stringify(body.uses)}, expected an integer from 1 to 10000`);
  const server = body.server ?? deps.advertise;
  if (typeof server !== 'string' || !/^[^\s:]+:\d{1,5}$/.test(server)) throw new MeshError('MESH_ERR_BAD_REQUEST', `server: got ${JSON.stringify(body.server)}, expected "host:port"`);
  const description = typeof body.description === 'string' ? body.description.slice(0, 200) : '';
  const { id, secret } = newTokenCredentials();
  const now = deps.now();
  const expiresAt = now + ttlMs;
  deps.store.tokens.insert({ id, secretHash: hashTokenSecret(secret), description, createdAt: now, expiresAt, maxUses: uses as number });
  deps.log.info('join token created', { id, uses: uses as number, expiresAt: new Date(expiresAt).toISOString() });
  return { id, token: formatJoinToken({ server, caFingerprint: deps.ca.fingerprint, id, secret }), expiresAt: new Date(expiresAt).toISOString(), uses, server };
}
