// A small HTTP service for the demo and tests: answers with what the mesh told it, and can call one upstream.

import { createServer, request as httpRequest } from 'node:http';

/** Starts the sample service; resolves when it listens. */
export function runSampleService(opts: { name: string; port: number; host?: string; upstream?: string }): Promise<void> {
  const server = createServer((req, res) => {
    const caller = /URI=([^;,]+)/.exec(String(req.headers['x-forwarded-client-cert'] ?? ''))?.[1] ?? null;
    const answer = (upstream?: unknown): void => {
      const body = `${JSON.stringify({ service: opts.name, path: req.url, method: req.method, callerIdentity: caller, xfcc: req.headers['x-forwarded-client-cert'] ?? null, ...(upstream !== undefined ? { upstream } : {}) }, null, 2)}\n`;
      res.writeHead(200, { 'content-type': 'application/json', 'x-served-by': opts.name, ...(caller ? { 'x-mesh-caller': caller } : {}), 'content-length': Buffer.byteLength(body) });
      res.end(body);
    };
    req.resume();
    if (!opts.upstream || req.url?.startsWith('/local')) return answer();
    const up = httpRequest(`${opts.upstream}${req.url ?? '/'}`, { method: 'GET', timeout: 5000 }, (r) => {
      const chunks: Buffer[] = [];
      r.on('data', (c: Buffer) => chunks.push(c));
      r.on('end', () => {
        const text = Buffer.concat(chunks).toString();
        let parsed: unknown = text;
        try {
          parsed = JSON.parse(text);
        } catch {
          // not JSON: pass the text along
        }
        answer({ status: r.statusCode, meshCaller: r.headers['x-mesh-caller'] ?? null, body: parsed });
      });
    });
    up.on('timeout', () => up.destroy(new Error('upstream timed out')));
    up.on('error', (err) => {
      res.writeHead(502, { 'content-type': 'text/plain' });
      res.end(`${opts.name}: upstream ${opts.upstream} failed: ${err.message}\n`);
    });
    up.end();
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host ?? '127.0.0.1', () => {
      process.stdout.write(`sample service ${opts.name} listening on ${opts.host ?? '127.0.0.1'}:${opts.port}\n`);
      resolve();
    });
    const stop = (): void => {
      server.close();
      server.closeAllConnections();
      process.exit(0);
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
}
