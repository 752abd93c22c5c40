// HTTP/1.1 through two agents over pooled mTLS: keep-alive, pipelining, chunked, large bodies, 100-continue, close, hop-by-hop, WebSocket.

import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { connect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { Client, request } from 'undici';
import WebSocket, { WebSocketServer } from 'ws';
import { TestMesh, type AgentHandle } from '../helpers/mesh';

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** The data of a chunked body (extensions and trailers ignored). */
function dechunk(text: string): string {
  let out = '';
  let i = 0;
  for (;;) {
    const eol = text.indexOf('\r\n', i);
    const size = parseInt(text.slice(i, eol).split(';')[0]!, 16);
    if (!size) return out;
    out += text.slice(eol + 2, eol + 2 + size);
    i = eol + 2 + size + 2;
  }
}

/** Writes `data` on a raw connection and reads until `until` matches the text received (or the peer closes). */
function raw(port: number, data: string, until: RegExp, onData?: (text: string, write: (s: string) => void) => void): Promise<{ text: string; closed: boolean }> {
  return new Promise((resolve, reject) => {
    let text = '';
    const s = connect({ host: '127.0.0.1', port });
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`timed out; got ${JSON.stringify(text.slice(0, 500))}`));
    }, 10_000);
    s.on('connect', () => s.write(data));
    s.on('data', (c: Buffer) => {
      text += c.toString('latin1');
      onData?.(text, (x) => s.write(x));
      if (until.test(text)) {
        clearTimeout(timer);
        // Give a closing peer a moment to close, so "closed" can be checked by the caller with s.once.
        s.end();
        resolve({ text, closed: false });
      }
    });
    s.on('close', () => {
      clearTimeout(timer);
      resolve({ text, closed: true });
    });
    s.on('error', () => {});
  });
}

describe('HTTP/1.1 through the mesh', () => {
  const mesh = new TestMesh();
  let app: Server;
  let wss: WebSocketServer;
  let a: AgentHandle;
  let upstream = 0;
  const seen: { path: string; headers: Record<string, unknown>; remotePort: number }[] = [];
  const big = randomBytes(8 * 1024 * 1024);

  before(async () => {
    app = createServer((req, res) => {
      seen.push({ path: req.url ?? '', headers: req.headers, remotePort: req.socket.remotePort ?? 0 });
      const url = new URL(req.url ?? '/', 'http://x');
      if (url.pathname === '/echo') {
        // Streams the request body back, chunked (no content-length), with a hop-by-hop header the proxy must drop.
        res.writeHead(200, { 'x-app': 'echo', connection: 'x-secret', 'x-secret': 'hop' });
        req.pipe(res);
        return;
      }
      if (url.pathname === '/big') {
        res.writeHead(200, { 'content-length': big.length });
        res.end(big);
        return;
      }
      req.resume();
      req.on('end', () => {
        const body = JSON.stringify({ path: req.url, headers: req.headers });
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
        res.end(body);
      });
    });
    wss = new WebSocketServer({ server: app });
    wss.on('connection', (ws, req) => {
      seen.push({ path: req.url ?? '', headers: req.headers, remotePort: req.socket.remotePort ?? 0 });
      ws.on('message', (m, isBinary) => ws.send(isBinary ? m : `echo:${m.toString()}`));
    });
    await new Promise<void>((r) => app.listen(0, '127.0.0.1', r));
    const server = await mesh.startServer();
    ({ a, upstream } = await mesh.startPair(server, (app.address() as { port: number }).port));
  });

  after(async () => {
    wss?.close();
    app?.close();
    app?.closeAllConnections();
    await mesh.close();
  });

  it('keeps the downstream connection alive across requests and reuses pooled upstream connections', async () => {
    const client = new Client(`http://127.0.0.1:${upstream}`, { pipelining: 1 });
    try {
      for (let i = 0; i < 20; i++) {
        const r = await client.request({ path: `/ka/${i}`, method: 'GET' });
        assert.equal(r.statusCode, 200);
        assert.equal((JSON.parse(await r.body.text()) as { path: string }).path, `/ka/${i}`);
      }
    } finally {
      await client.close();
    }
    const ports = new Set(seen.filter((s) => s.path.startsWith('/ka/')).map((s) => s.remotePort));
    assert.equal(ports.size, 1, 'all 20 requests reached the app over one connection (one pooled mTLS connection behind it)');
  });

  it('answers pipelined requests in order', async () => {
    const r = await raw(upstream, ['/p/1', '/p/2', '/p/3'].map((p) => `GET ${p} HTTP/1.1\r\nhost: api\r\n\r\n`).join(''), /"path":"\/p\/3"/);
    const order = [...r.text.matchAll(/"path":"(\/p\/\d)"/g)].map((m) => m[1]);
    assert.deepEqual(order, ['/p/1', '/p/2', '/p/3']);
  });

  it('streams chunked bodies both ways and drops hop-by-hop fields in both directions', async () => {
    const r = await raw(
      upstream,
      'POST /echo HTTP/1.1\r\nhost: api\r\ntransfer-encoding: chunked\r\nconnection: keep-alive, x-private\r\nx-private: 1\r\nkeep-alive: timeout=5\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\n\r\n',
      /\r\n0\r\n\r\n$/,
    );
    assert.match(r.text, /^HTTP\/1\.1 200 OK\r\n/);
    assert.match(r.text, /transfer-encoding: chunked/i);
    assert.match(r.text, /x-app: echo/i);
    assert.doesNotMatch(r.text, /x-secret/i, 'a field the app named in Connection is not forwarded');
    assert.equal(dechunk(r.text.slice(r.text.indexOf('\r\n\r\n') + 4)), 'hello world');
    const h = seen.find((s) => s.path === '/echo')!.headers;
    assert.equal(h['x-private'], undefined, 'a field the client named in Connection is not forwarded');
    assert.equal(h['keep-alive'], undefined);
  });

  it('streams an 8 MiB upload and an 8 MiB download intact', async () => {
    const up = await request(`http://127.0.0.1:${upstream}/echo`, { method: 'POST', body: big });
    assert.equal(sha(Buffer.from(await up.body.arrayBuffer())), sha(big));
    const down = await request(`http://127.0.0.1:${upstream}/big`);
    assert.equal(down.headers['content-length'], String(big.length));
    assert.equal(sha(Buffer.from(await down.body.arrayBuffer())), sha(big));
  });

  it('passes Expect: 100-continue through and sends the body after the 100', async () => {
    let sent = false;
    const r = await raw(upstream, 'POST /echo HTTP/1.1\r\nhost: api\r\ncontent-length: 4\r\nexpect: 100-continue\r\n\r\n', /\r\n0\r\n\r\n$/, (text, write) => {
      if (!sent && text.includes('HTTP/1.1 100 Continue')) {
        sent = true;
        write('body');
      }
    });
    assert.ok(sent, 'the client saw 100 Continue before sending the body');
    assert.match(r.text, /HTTP\/1\.1 200 OK[\s\S]*\r\n4\r\nbody\r\n0\r\n\r\n$/);
  });

  it('closes the downstream connection after a request with Connection: close', async () => {
    const r = await new Promise<{ text: string }>((resolve) => {
      let text = '';
      const s = connect({ host: '127.0.0.1', port: upstream }, () => s.write('GET /bye HTTP/1.1\r\nhost: api\r\nconnection: close\r\n\r\n'));
      s.on('data', (c: Buffer) => (text += c.toString()));
      s.on('close', () => resolve({ text }));
    });
    assert.match(r.text, /^HTTP\/1\.1 200 OK\r\n/);
    assert.match(r.text, /connection: close/i);
  });

  it('answers garbage on the outbound port with 400 and keeps serving', async () => {
    const r = await raw(upstream, 'GARBAGE\r\n\r\n', /\r\n\r\n/);
    assert.match(r.text, /^HTTP\/1\.1 400 /);
    assert.equal((await request(`http://127.0.0.1:${upstream}/after-garbage`)).statusCode, 200);
  });

  it('routes a WebSocket upgrade, then carries messages both ways', async () => {
    const ws = new WebSocket(`ws://127.0.0.1:${upstream}/socket`);
    await new Promise((r, j) => {
      ws.once('open', r);
      ws.once('error', j);
    });
    const got = new Promise<string>((r) => ws.once('message', (m) => r(m.toString())));
    ws.send('ping');
    assert.equal(await got, 'echo:ping');
    const bin = new Promise<Buffer>((r) => ws.once('message', (m) => r(m as Buffer)));
    const payload = randomBytes(200_000);
    ws.send(payload);
    assert.equal(sha(await bin), sha(payload));
    ws.close();
    assert.ok(seen.some((s) => s.path === '/socket' && String(s.headers['x-forwarded-client-cert']).includes('sa/web')));
  });

  it('keeps working after the app closes idle keep-alive connections', async () => {
    // Node's HTTP server closes idle connections after 5 s; force it now instead of waiting.
    app.closeIdleConnections();
    for (let i = 0; i < 5; i++) assert.equal((await request(`http://127.0.0.1:${upstream}/after-idle-close/${i}`)).statusCode, 200);
    void a;
  });
});
