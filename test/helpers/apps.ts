// In-test apps behind the mesh: an HTTP app that records what it saw, a TCP echo, and a raw TLS client.

import { createServer as createHttpServer, type IncomingHttpHeaders, type Server } from 'node:http';
import { createServer as createNetServer, connect as netConnect, type Server as NetServer } from 'node:net';
import { connect as tlsConnect, type ConnectionOptions } from 'node:tls';

/** An HTTP app that answers 200 with the request's headers as JSON, and remembers them. */
export async function startHttpApp(name: string): Promise<{ server: Server; port: number; seen: IncomingHttpHeaders[]; trailers: NodeJS.Dict<string>[] }> {
  const seen: IncomingHttpHeaders[] = [];
  const trailers: NodeJS.Dict<string>[] = [];
  const server = createHttpServer((req, res) => {
    seen.push(req.headers);
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      trailers.push(req.trailers);
      const body = JSON.stringify({ app: name, path: req.url, headers: req.headers, body: Buffer.concat(chunks).toString() });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, port: (server.address() as { port: number }).port, seen, trailers };
}

/** A TCP app that echoes bytes. */
export async function startEchoApp(): Promise<{ server: NetServer; port: number }> {
  const server = createNetServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => {});
    s.pipe(s);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, port: (server.address() as { port: number }).port };
}

/** Sends `data` on a plain TCP connection and collects what comes back until the peer closes (or timeout). */
export function tcpExchange(port: number, data: Buffer | string, opts: { host?: string; timeoutMs?: number; endAfterWrite?: boolean } = {}): Promise<{ received: Buffer; closed: boolean; error?: string }> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const s = netConnect({ host: opts.host ?? '127.0.0.1', port, allowHalfOpen: false });
    const timer = setTimeout(() => {
      s.destroy();
      resolve({ received: Buffer.concat(chunks), closed: false });
    }, opts.timeoutMs ?? 5000);
    s.on('connect', () => (opts.endAfterWrite === false ? s.write(data) : s.end(data)));
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('error', (err) => {
      clearTimeout(timer);
      resolve({ received: Buffer.concat(chunks), closed: true, error: err.message });
    });
    s.on('close', () => {
      clearTimeout(timer);
      resolve({ received: Buffer.concat(chunks), closed: true });
    });
  });
}

/** Opens a TLS connection with `opts`, writes `data`, and reports what happened. */
export function tlsExchange(port: number, opts: ConnectionOptions, data: string, timeoutMs = 5000): Promise<{ handshake: boolean; received: string; error?: string }> {
  return new Promise((resolve) => {
    let handshake = false;
    let received = '';
    const s = tlsConnect({ host: '127.0.0.1', port, rejectUnauthorized: false, ...opts });
    const done = (error?: string): void => {
      clearTimeout(timer);
      s.destroy();
      resolve({ handshake, received, ...(error ? { error } : {}) });
    };
    const timer = setTimeout(() => done('timeout'), timeoutMs);
    s.on('secureConnect', () => {
      handshake = true;
      s.write(data);
    });
    s.on('data', (c: Buffer) => (received += c.toString()));
    s.on('error', (err) => done(err.message));
    s.on('close', () => done());
  });
}
