// Http1Session replaying a request whose kept-alive upstream connection closed as it was reused: the replay leaves no
// timer of the first try behind (a stray per-try timeout used to answer a later request on the connection with 504 UT).

import assert from 'node:assert/strict';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { after, describe, it } from 'node:test';
import { ConnectionPool } from '../../src/proxy/connection-pool';
import { Http1Session, type HttpRouter } from '../../src/proxy/http1/http1-session';
import type { Endpoint } from '../../src/registry';
import { RawHttpConnection } from '../helpers/http-raw';

const listen = async (s: Server): Promise<number> => {
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  return (s.address() as { port: number }).port;
};

describe('Http1Session keep-alive replay', () => {
  const servers: Server[] = [];
  const sockets: Socket[] = [];
  after(() => {
    for (const s of sockets) s.destroy();
    for (const s of servers) s.close();
  });

  it('a replayed request is timed by its own per-try timer only: no stray 504 for a later request', async () => {
    // The upstream closes its first connection when the second request arrives on it, as a server whose keep-alive
    // timeout ran out just then; every other request gets 200.
    let connections = 0;
    const upstream = createServer((s) => {
      sockets.push(s);
      const n = ++connections;
      let requests = 0;
      s.on('data', (c: Buffer) => {
        for (let i = c.indexOf('\r\n\r\n'); i >= 0; i = c.indexOf('\r\n\r\n', i + 4)) {
          requests++;
          if (n === 1 && requests === 2) s.destroy();
          else s.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok');
        }
      });
    });
    servers.push(upstream);
    const endpoint: Endpoint = { address: '127.0.0.1', port: await listen(upstream), weight: 1, labels: {} };
    const pool = new ConnectionPool(
      (e) =>
        new Promise<Socket>((resolve, reject) => {
          const s = connect(e.port, e.address, () => resolve(s));
          s.once('error', reject);
        }),
      {},
    );
    const perTryTimeoutMs = 300;
    const router: HttpRouter = () => ({
      kind: 'forward',
      target: { endpoint, pool },
      retry: { attempts: 1, perTryTimeoutMs, retriable: (o) => o.reset || o.timeout || o.connectFailure, admit: () => true, next: () => ({ endpoint, pool }), cancel: () => {} },
    });
    const front = createServer((s) => {
      sockets.push(s);
      new Http1Session(s, router);
    });
    servers.push(front);
    const client = new RawHttpConnection(await listen(front));

    assert.equal((await client.get('/1')).status, 200);
    assert.equal((await client.get('/2')).status, 200, 'replayed on a new connection');
    assert.equal(connections, 2);
    // Past the first try's per-try timeout: a timer left from it would fire now, on an idle connection.
    await new Promise((r) => setTimeout(r, perTryTimeoutMs * 2));
    const third = await client.get('/3');
    assert.equal(third.status, 200, `the next request gets its own answer, not ${third.status} ${third.headers['x-mesh-response-flags'] ?? ''}`);
    client.close();
    pool.destroy();
  });
});
