// ConsulApi against a server that closes kept-alive sockets when they are used again: a read is sent again on a new
// socket (an enrollment on a replica failed this way in the HA benchmark); a write is not.

import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { Socket } from 'node:net';
import { after, before, test } from 'node:test';
import { resolveConsulSettings } from '../../src/registry';
import { ConsulApi } from '../../src/server/ha/consul-api';

/** Answers the first request on each socket; a second request on one closes that socket unanswered. */
let server: Server;
let address = '';
const used = new WeakSet<Socket>();
let answered = 0;
before(async () => {
  server = createServer((req, res) => {
    if (used.has(req.socket)) return void req.socket.destroy();
    used.add(req.socket);
    answered++;
    if (req.method === 'PUT') return void res.end('true');
    res.setHeader('x-consul-index', '7');
    res.end(JSON.stringify([{ Key: 'k', Value: Buffer.from('v').toString('base64'), ModifyIndex: 7, LockIndex: 0 }]));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  address = `127.0.0.1:${(server.address() as { port: number }).port}`;
});
after(() => server.close());

test('a read on a kept-alive socket the server closed is sent again on a new socket; a write fails with MESH_ERR_CONSUL', async () => {
  const api = new ConsulApi(resolveConsulSettings({ address }, {}));
  try {
    assert.equal((await api.get('k')).entry?.value, 'v');
    const again = await api.get('k'); // the pooled socket is refused: read again on a new one
    assert.deepEqual([again.entry?.value, again.index, answered], ['v', 7, 2]);
    // A write may have been applied before the socket closed: it is not repeated.
    await assert.rejects(api.put('k', 'w', { cas: 7 }), (err: Error & { code?: string }) => err.code === 'MESH_ERR_CONSUL' && /ECONNRESET/.test(err.message));
  } finally {
    api.close();
  }
});
