// The dashboard on the admin port: the page and its assets, the login that sets the session cookie, and the JSON behind the page.

import type { IncomingMessage, ServerResponse } from 'node:http';
import { MeshError } from '../errors';
import { sendJson } from '../protocol';
import { agentsJson, graphJson, policiesJson, servicesJson, type DashboardSources } from './dashboard-data';
import { DashboardLogins } from './dashboard-login';
import { DASHBOARD_HTML, DASHBOARD_SCRIPT, DASHBOARD_STYLE, LOGIN_NEEDED_HTML } from './dashboard-page';

/** Read-only JSON, each for a bearer token or a dashboard session. */
const DATA: Record<string, (src: DashboardSources) => unknown> = {
  '/v1/dashboard/services': servicesJson,
  '/v1/dashboard/graph': graphJson,
  '/v1/dashboard/agents': agentsJson,
  '/v1/dashboard/policies': policiesJson,
};

const ASSETS: Record<string, { type: string; body: string }> = {
  '/dashboard': { type: 'text/html; charset=utf-8', body: DASHBOARD_HTML },
  '/dashboard/': { type: 'text/html; charset=utf-8', body: DASHBOARD_HTML },
  '/dashboard/app.js': { type: 'text/javascript; charset=utf-8', body: DASHBOARD_SCRIPT },
  '/dashboard/style.css': { type: 'text/css; charset=utf-8', body: DASHBOARD_STYLE },
};

/** The page may load only its own script and style, may not be framed, and sends no Referer (the login URL held a code). */
const PAGE_HEADERS = {
  'content-security-policy': "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'cache-control': 'no-store',
};

/** The dashboard's routes; the admin API hands it every request for a path it `handles`. */
export class DashboardRoutes {
  private readonly logins: DashboardLogins;

  constructor(private readonly src: DashboardSources) {
    this.logins = new DashboardLogins(src.now);
  }

  handles(path: string): boolean {
    return path === '/dashboard' || path.startsWith('/dashboard/') || path.startsWith('/v1/dashboard/');
  }

  /**
   * Answers one request. `bearer` throws MESH_ERR_ADMIN_AUTH unless the request carries the admin token. Only the
   * login-code route needs the token; the page and the JSON also take a session cookie (GET only, so a cookie can
   * never change anything).
   * @throws MeshError MESH_ERR_ADMIN_AUTH | MESH_ERR_NOT_FOUND
   */
  handle(req: IncomingMessage, res: ServerResponse, url: URL, bearer: () => void): void {
    const path = url.pathname;
    if (req.method === 'POST' && path === '/v1/dashboard/login-codes') {
      bearer();
      const { code, expiresAt } = this.logins.newCode();
      return sendJson(res, 201, { code, expiresAt: new Date(expiresAt).toISOString(), path: `/dashboard/login?code=${code}` });
    }
    if (req.method !== 'GET') throw new MeshError('MESH_ERR_NOT_FOUND', `no dashboard route ${req.method} ${path} (see docs/dashboard.md)`);
    if (path === '/dashboard/login') return this.login(res, url.searchParams.get('code') ?? '');
    const data = DATA[path];
    const asset = ASSETS[path];
    if (!data && !asset) throw new MeshError('MESH_ERR_NOT_FOUND', `no dashboard route GET ${path} (see docs/dashboard.md)`);
    if (!this.logins.hasSession(req.headers.cookie)) {
      // A browser without a session gets a page that says how to get one; scripts get the usual JSON error.
      if (asset && req.headers.authorization === undefined) return page(res, 401, LOGIN_NEEDED_HTML);
      bearer();
    }
    if (data) return sendJson(res, 200, data(this.src));
    res.writeHead(200, { 'content-type': asset!.type, 'content-length': Buffer.byteLength(asset!.body), ...PAGE_HEADERS });
    res.end(asset!.body);
  }

  private login(res: ServerResponse, code: string): void {
    const session = code ? this.logins.redeem(code) : undefined;
    if (!session) return page(res, 401, LOGIN_NEEDED_HTML);
    res.writeHead(303, { location: '/dashboard/', 'set-cookie': DashboardLogins.cookie(session), 'content-length': 0, ...PAGE_HEADERS });
    res.end();
  }
}

function page(res: ServerResponse, status: number, html: string): void {
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'content-length': Buffer.byteLength(html), ...PAGE_HEADERS });
  res.end(html);
}
