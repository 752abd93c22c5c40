// Shadow traffic: a copy of a body-less request sent to another cluster, its response read and thrown away.

import type { Lease } from './cluster';
import type { ConnectionPool, UpstreamConnection, UpstreamOwner } from './connection-pool';
import { BodyFramer } from './http1/body-framer';
import { buildHead, headerValue, parseHead, type HttpHead } from './http1/http1-head';

/** Sends `head` to the leased endpoint with Host suffixed "-shadow" (as Envoy does); never blocks the caller. */
export function mirrorRequest(head: HttpHead, lease: Lease, pool: ConnectionPool): void {
  const host = headerValue(head, 'host') ?? '';
  const bytes = Buffer.from(buildHead(head, { set: [['host', `${host}-shadow`]] }), 'latin1');
  const owner = new Discard(lease, pool, head.method);
  const got = pool.acquire(lease.endpoint, owner);
  if (got instanceof Promise) got.then((c) => owner.send(c, bytes), () => lease.done('connect-failed'));
  else owner.send(got, bytes);
}

class Discard implements UpstreamOwner {
  private conn: UpstreamConnection | null = null;
  private buf: Buffer | null = null;
  private head: HttpHead | null = null;
  private readonly body = new BodyFramer();
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly lease: Lease,
    private readonly pool: ConnectionPool,
    private readonly method: string,
  ) {}

  send(c: UpstreamConnection, bytes: Buffer): void {
    this.conn = c;
    this.timer = setTimeout(() => c.socket.destroy(), 10_000).unref();
    c.socket.write(bytes);
  }

  onUpstreamData(chunk: Buffer): void {
    try {
      let p = this.buf ? Buffer.concat([this.buf, chunk]) : chunk;
      this.buf = null;
      if (!this.head) {
        const h = parseHead(p, 0, 'response');
        if (!h) {
          this.buf = p;
          return;
        }
        this.head = h;
        this.body.reset(this.method === 'HEAD' || h.status === 204 || h.status === 304 ? 'none' : h.chunked ? 'chunked' : h.contentLength >= 0 ? h.contentLength : 'eof');
        p = p.subarray(h.size);
      }
      const end = this.body.consume(p, 0, p.length);
      if (this.body.done) this.end(end === p.length && !this.head.close);
    } catch {
      this.conn?.socket.destroy();
    }
  }

  onUpstreamClose(): void {
    if (this.timer) clearTimeout(this.timer);
    this.lease.done(this.head ? this.head.status : 'reset');
  }

  onUpstreamDrain(): void {}

  private end(reusable: boolean): void {
    if (this.timer) clearTimeout(this.timer);
    this.lease.done(this.head!.status);
    const c = this.conn!;
    this.conn = null;
    this.pool.release(c, reusable);
  }
}
