// The connection pool under circuit breaker limits: slots per connection, waiting requests, overflow, no starvation.

import assert from 'node:assert/strict';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { CircuitBreaker } from '../../src/proxy/circuit-breaker';
import { ConnectionPool, PoolOverflow, type UpstreamConnection, type UpstreamOwner } from '../../src/proxy/connection-pool';
import type { Endpoint } from '../../src/registry';

const owner = (): UpstreamOwner => ({ onUpstreamData: () => {}, onUpstreamClose: () => {}, onUpstreamDrain: () => {} });
const endpoint = (port: number): Endpoint => ({ address: '127.0.0.1', port, weight: 1, labels: {} });

describe('ConnectionPool with circuit breaker limits', () => {
  let server: Server;
  let port = 0;
  let refusedPort = 0;
  const sockets: Socket[] = [];
  let dials = 0;
  const dial = (e: Endpoint): Promise<Socket> =>
    new Promise((resolve, reject) => {
      dials++;
      const s = connect(e.port, e.address, () => resolve(s));
      s.once('error', reject);
    });

  before(async () => {
    server = createServer((s) => void sockets.push(s));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    port = (server.address() as { port: number }).port;
    const closed = createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
    refusedPort = (closed.address() as { port: number }).port;
    await new Promise<void>((r) => closed.close(() => r()));
  });
  after(() => {
    for (const s of sockets) s.destroy();
    server.close();
  });

  it('a request over the connection limit waits for a released connection and gets it (FIFO)', async () => {
    const cb = new CircuitBreaker({ maxConnections: 1, maxPendingRequests: 2 });
    const pool = new ConnectionPool(dial, {}, undefined, cb);
    const first = await pool.acquire(endpoint(port), owner());
    const order: number[] = [];
    const w1 = (pool.acquire(endpoint(port), owner()) as Promise<UpstreamConnection>).then((c) => (order.push(1), c));
    const w2 = (pool.acquire(endpoint(port), owner()) as Promise<UpstreamConnection>).then((c) => (order.push(2), c));
    assert.equal(pool.pending, 2);
    await assert.rejects(Promise.resolve(pool.acquire(endpoint(port), owner())), PoolOverflow, 'the third waiter overflows');
    assert.equal(cb.pendingRequests.overflows, 1);
    pool.release(first, true);
    const c1 = await w1;
    assert.equal(c1, first, 'handed over, not reopened');
    pool.release(c1, true);
    assert.equal(await w2, first);
    assert.deepEqual(order, [1, 2]);
    assert.equal(cb.connections.active, 1);
    assert.equal(cb.pendingRequests.active, 0);
    pool.destroy();
  });

  it('a closed connection gives its slot to the oldest waiter, which opens a new one', async () => {
    const cb = new CircuitBreaker({ maxConnections: 1, maxPendingRequests: 1 });
    const pool = new ConnectionPool(dial, {}, undefined, cb);
    const first = await pool.acquire(endpoint(port), owner());
    const waiting = pool.acquire(endpoint(port), owner()) as Promise<UpstreamConnection>;
    first.socket.destroy();
    const c = await waiting;
    assert.notEqual(c, first);
    assert.equal(cb.connections.active, 1);
    pool.destroy();
  });

  it('the first connection to an endpoint is allowed over the limit (no starvation), the second waits', async () => {
    const cb = new CircuitBreaker({ maxConnections: 1, maxPendingRequests: 0 });
    const other = createServer((s) => void sockets.push(s));
    await new Promise<void>((r) => other.listen(0, '127.0.0.1', r));
    const otherPort = (other.address() as { port: number }).port;
    const pool = new ConnectionPool(dial, {}, undefined, cb);
    await pool.acquire(endpoint(port), owner());
    const second = await pool.acquire(endpoint(otherPort), owner());
    assert.ok(second.socket, 'a connection to the other endpoint despite the full limit');
    assert.equal(cb.connections.active, 2);
    await assert.rejects(Promise.resolve(pool.acquire(endpoint(otherPort), owner())), PoolOverflow);
    pool.destroy();
    other.close();
  });

  it('a failed dial gives its slot back; a waiter times out after connectTimeout with a clear error', async () => {
    const cb = new CircuitBreaker({ maxConnections: 1, maxPendingRequests: 1 });
    const pool = new ConnectionPool(dial, { connectTimeoutMs: 200 }, undefined, cb);
    await assert.rejects(Promise.resolve(pool.acquire(endpoint(refusedPort), owner())));
    assert.equal(cb.connections.active, 0);
    const held = await pool.acquire(endpoint(port), owner());
    await assert.rejects(Promise.resolve(pool.acquire(endpoint(port), owner())), /no upstream connection became free within 200 ms/);
    assert.equal(cb.pendingRequests.active, 0);
    pool.release(held, true);
    pool.destroy();
  });

  it('maxRequestsPerConnection retires a connection; without limits nothing is counted', async () => {
    dials = 0;
    const pool = new ConnectionPool(dial, { maxRequestsPerConnection: 2 });
    const c = await pool.acquire(endpoint(port), owner());
    pool.release(c, true);
    const again = pool.acquire(endpoint(port), owner());
    assert.equal(again, c, 'reused synchronously');
    pool.release(c, true);
    const third = await pool.acquire(endpoint(port), owner());
    assert.notEqual(third, c);
    assert.equal(dials, 2);
    pool.destroy();
  });
});
