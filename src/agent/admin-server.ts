// The agent's admin port (loopback): /ready for health checks; /status, /config_dump and /metrics behind the admin token.

import { timingSafeEqual } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { formatHostPort, type HostPort } from '../config';
import { MeshError } from '../errors';
import { requireBearer, sendError, sendJson } from '../protocol';
import { PROMETHEUS_CONTENT_TYPE, type Logger } from '../telemetry';

/** What the admin port shows. */
export interface AdminSources {
  readonly token: string;
  /** Why the agent is not ready, or [] when it is. */
  notReady(): string[];
  status(): unknown;
  configDump(): unknown;
  /** Prometheus text exposition format 0.0.4. */
  metrics(): string;
}

const equal = (a: string, b: string): boolean => a.length === b.length && timingSafeEqual(Buffer.from(a), Buffer.from(b));

export class AdminServer {
  private server?: Server;

  constructor(
    private readonly sources: AdminSources,
    private readonly log: Logger,
  ) {}

  listen(at: HostPort): Promise<HostPort> {
    const server = (this.server = createServer((req, res) => {
      try {
        const path = (req.url ?? '/').split('?')[0];
        if (req.method !== 'GET') throw new MeshError('MESH_ERR_NOT_FOUND', `the agent admin API has only GET routes, got ${req.method}`);
        if (path === '/ready') {
          const reasons = this.sources.notReady();
          res.writeHead(reasons.length === 0 ? 200 : 503, { 'content-type': 'text/plain' });
          res.end(reasons.length === 0 ? 'ready\n' : `not ready: ${reasons.join('; ')}\n`);
          return;
        }
        requireBearer(req, this.sources.token, equal);
        if (path === '/status') sendJson(res, 200, this.sources.status());
        else if (path === '/config_dump') sendJson(res, 200, this.sources.configDump());
        else if (path === '/metrics') {
          const text = this.sources.metrics();
          res.writeHead(200, { 'content-type': PROMETHEUS_CONTENT_TYPE, 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
          res.end(text);
        } else throw new MeshError('MESH_ERR_NOT_FOUND', `no admin route ${path} (try /ready, /status, /config_dump, /metrics)`);
      } catch (err) {
        sendError(res, err);
      }
    }));
    return new Promise((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) => reject(new MeshError('MESH_ERR_LISTEN', `cannot listen for admin on ${formatHostPort(at)}: ${err.code ?? err.message}`, { cause: err })));
      server.listen(at.port, at.host, () => {
        const a = server.address() as { address: string; port: number };
        this.log.info('admin listening', { listen: formatHostPort({ host: a.address, port: a.port }) });
        resolve({ host: a.address, port: a.port });
      });
    });
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      if (!this.server?.listening) return resolve();
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }
}
