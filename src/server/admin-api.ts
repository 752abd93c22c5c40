// The server's admin HTTP API (loopback, bearer token): status, join tokens, admin tokens, CA, policy. Documented in docs/api.md.

import type { IncomingMessage, ServerResponse } from 'node:http';
import { formatJoinToken, hashTokenSecret, newTokenCredentials, type CertificateAuthority } from '../ca';
import { parseDuration } from '../config';
import { isMeshError, MeshError } from '../errors';
import { bearerToken, MESH_VERSION, parseJson, readBody, sendError, sendJson } from '../protocol';
import type { PolicyVersionRow, Store, StoredPolicyDocument } from '../store';
import type { Logger } from '../telemetry';
import { adminTokenName, createAdminToken, listAdminTokens, revokeAdminToken } from './admin-tokens';
import type { DashboardRoutes } from './dashboard-routes';
import { NotLeaderError, type HaReplica } from './ha/ha-replica';
import { MAX_APPLY_BODY_BYTES, parseApplyRequest, parseDeleteRequest, parsePolicyQuery, parseRollbackRequest } from './policy-requests';
import type { PolicyChangeResult, PolicyService } from './policy-service';
import type { TapHub } from './tap-hub';
import { serveTap } from './tap-stream';

/** What the admin API reads and changes. */
export interface AdminDeps {
  readonly store: Store;
  readonly ca: CertificateAuthority;
  readonly policy: PolicyService;
  /** HA mode: writes go through the leader and Consul KV; followers redirect them. */
  readonly ha?: HaReplica | undefined;
  readonly adminToken: string;
  readonly advertise: string;
  readonly listen: string;
  readonly workloadCertTtlMs: number;
  readonly connected: () => ReadonlyMap<string, { connectedAt: number }>;
  readonly startedAt: number;
  readonly now: () => number;
  readonly log: Logger;
  /** The page and JSON under /dashboard and /v1/dashboard (docs/dashboard.md); absent: no dashboard. */
  readonly dashboard?: DashboardRoutes;
  /** Live taps (GET /v1/tap); absent: the route answers MESH_ERR_NOT_FOUND. */
  readonly taps?: TapHub;
}

const iso = (ms: number): string => new Date(ms).toISOString();

/** Builds the request handler. Every route needs an admin token, the bootstrap one or a named one (`who`); the dashboard's read-only ones also take its session cookie. */
export function createAdminHandler(deps: AdminDeps): (req: IncomingMessage, res: ServerResponse) => void {
  const routes: Record<string, (req: IncomingMessage, query: URLSearchParams, who: string) => Promise<[number, unknown]> | [number, unknown]> = {
    'GET /v1/status': async () => [200, { ...(status(deps) as object), ...(deps.ha ? { ha: await deps.ha.status() } : {}) }],
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
    'POST /v1/tokens': async (req) => {
      deps.ha?.requireLeader();
      return [201, await createToken(deps, await readBody(req))];
    },
    'GET /v1/admin-tokens': () => [200, listAdminTokens(deps.store)],
    'POST /v1/admin-tokens': async (req, _query, who) => {
      const created = createAdminToken(deps.store, await readBody(req), who, deps.now());
      deps.log.info('admin token created', { name: (created as { name: string }).name, by: who });
      return [201, created];
    },
    'POST /v1/admin-tokens/revoke': async (req, _query, who) => {
      const revoked = revokeAdminToken(deps.store, await readBody(req));
      deps.log.info('admin token revoked', { name: (revoked as { name: string }).name, by: who });
      return [200, revoked];
    },
    'GET /v1/policy': (_req, query) => {
      const { filter } = parsePolicyQuery(query, 'policy query', false);
      const found = deps.policy.documents(filter);
      if (filter.name !== undefined && found.documents.length === 0) {
        throw new MeshError('MESH_ERR_NOT_FOUND', `policy version ${found.version} has no ${filter.kind} ${filter.namespace ?? '<any namespace>'}/${filter.name}`);
      }
      return [200, { version: found.version, digest: found.digest, documents: found.documents.map(documentJson) }];
    },
    'GET /v1/policy/history': (_req, query) => {
      const { filter, limit } = parsePolicyQuery(query, 'history query', true);
      return [200, { version: deps.policy.version, versions: deps.store.policy.history(filter, limit).map(versionJson) }];
    },
    'POST /v1/policy/apply': async (req, _query, who) => {
      const r = parseApplyRequest(await readBody(req, MAX_APPLY_BODY_BYTES));
      return [200, await write(() => deps.policy.apply(r.files, who, r.dryRun))];
    },
    'POST /v1/policy/delete': async (req, _query, who) => {
      const r = parseDeleteRequest(await readBody(req));
      return [200, await write(() => deps.policy.remove([r.key], who, r.dryRun))];
    },
    'POST /v1/policy/rollback': async (req, _query, who) => {
      const r = parseRollbackRequest(await readBody(req));
      return [200, await write(() => deps.policy.rollback(r.to, who, r.dryRun))];
    },
  };
  const write = (change: () => PolicyChangeResult): PolicyChangeResult | Promise<PolicyChangeResult> => (deps.ha ? deps.ha.write(change) : change());
  return (req, res) => {
    void (async () => {
      try {
        const url = new URL(req.url ?? '/', 'http://admin');
        const authorize = (): string => adminTokenName(bearerToken(req), deps.adminToken, deps.store, deps.now());
        if (deps.dashboard?.handles(url.pathname)) return deps.dashboard.handle(req, res, url, () => void authorize());
        const who = authorize();
        if (req.method === 'GET' && url.pathname === '/v1/tap' && deps.taps) {
          serveTap(deps.taps, req, res, url.searchParams);
          return;
        }
        const route = routes[`${req.method} ${url.pathname}`];
        if (!route) throw new MeshError('MESH_ERR_NOT_FOUND', `no admin route ${req.method} ${url.pathname} (see docs/api.md)`);
        const [code, body] = await route(req, url.searchParams, who);
        sendJson(res, code, body);
      } catch (err) {
        if (err instanceof NotLeaderError && err.leaderAdmin && isMeshError(err, 'MESH_ERR_NOT_LEADER')) {
          // A follower redirects a write to the leader; the CLI follows with the same token (docs/ha.md).
          res.setHeader('location', `${err.leaderAdmin}${new URL(req.url ?? '/', 'http://admin').pathname}`);
          return sendJson(res, 307, { error: err.toJSON(), leader: err.leaderAdmin });
        }
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
    policy: { version: deps.policy.version },
    agents: deps.store.agents.list().map((a) => ({
      id: a.id,
      nodeName: a.nodeName,
      address: a.address,
      connected: connected.has(a.id),
      enrolledAt: new Date(a.enrolledAt).toISOString(),
      lastSeenAt: a.lastSeenAt === null ? null : new Date(connected.has(a.id) ? deps.now() : a.lastSeenAt).toISOString(),
      services: a.services,
      upstreams: a.upstreams,
      policy: {
        version: a.policyVersion,
        override: a.policyOverride,
        error: a.policyError && { version: a.policyError.version, message: a.policyError.message, at: iso(a.policyError.at) },
      },
      certificates: deps.store.certificates.latestForAgent(a.id).map((c) => ({
        identity: c.spiffeId,
        kind: c.kind,
        serial: c.serial,
        notAfter: new Date(c.notAfter).toISOString(),
      })),
    })),
  };
}

function documentJson(d: StoredPolicyDocument): unknown {
  return { kind: d.kind, namespace: d.namespace, name: d.name, version: d.sinceVersion, sha256: d.sha256, source: d.source };
}

function versionJson(v: PolicyVersionRow): unknown {
  return { ...v, createdAt: iso(v.createdAt) };
}

function caInfo(ca: CertificateAuthority): unknown {
  return { trustDomain: ca.trustDomain, fingerprint: ca.fingerprint, notAfter: ca.root.notAfter.toISOString(), pem: ca.root.pem };
}

async function createToken(deps: AdminDeps, text: string): Promise<unknown> {
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
  const row = { id, secretHash: hashTokenSecret(secret), description, createdAt: now, expiresAt, maxUses: uses as number };
  if (deps.ha) await deps.ha.createToken(row);
  else deps.store.tokens.insert(row);
  deps.log.info('join token created', { id, uses: uses as number, expiresAt: new Date(expiresAt).toISOString() });
  return { id, token: formatJoinToken({ server, caFingerprint: deps.ca.fingerprint, id, secret }), expiresAt: new Date(expiresAt).toISOString(), uses, server };
}
