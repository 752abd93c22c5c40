// mesh-mux/1: the frame reader's refusals, and streams over a real mTLS connection on loopback — many at once,
// batched writes, windows (backpressure), FIN and RESET, protocol errors, the stream cap, and the dialer's fallback to
// one connection per request when the peer does not offer mesh-mux/1.

import assert from 'node:assert/strict';
import { createHash, createPublicKey, randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { connect as tlsConnect, createSecureContext, createServer as createTlsServer, type SecureContext, type Server, type TLSSocket } from 'node:tls';
import { CertificateAuthority, generatePrivateKey, privateKeyToPem, SpiffeId } from '../../src/ca';
import { MeshError } from '../../src/errors';
import { DirectReads } from '../../src/proxy/direct-reads';
import { chooseAlpn } from '../../src/proxy/inbound-listener';
import { MtlsConnector } from '../../src/proxy/mtls-connector';
import { FRAME_HEADER_BYTES, frameHeader, FrameReader, FrameType, MUX_ALPN, STREAM_WINDOW_BYTES, windowFrame, type FrameSink } from '../../src/proxy/mux/mux-frames';
import { MuxDialer } from '../../src/proxy/mux/mux-dialer';
import { MUX_MAX_STREAMS, MuxSession } from '../../src/proxy/mux/mux-session';
import type { MuxStream } from '../../src/proxy/mux/mux-stream';
import { createLogger } from '../../src/telemetry';

const TD = 'mesh.local';
const ca = CertificateAuthority.create(TD);
const credentialsFor = (name: string): { key: string; cert: string; ca: string[] } => {
  const key = generatePrivateKey();
  const cert = ca.issue({ spiffeId: SpiffeId.workload(TD, 'default', name), publicKey: createPublicKey(key), lifetimeMs: 3_600_000 });
  return { key: privateKeyToPem(key), cert: cert.pem, ca: [ca.root.pem] };
};
const serverCredentials = credentialsFor('api');
/** What the remote agent presents in the expiry test: a certificate that expires in 1.5 s. */
const shortLived = (() => {
  const key = generatePrivateKey();
  const cert = ca.issue({ spiffeId: SpiffeId.workload(TD, 'default', 'api'), publicKey: createPublicKey(key), lifetimeMs: 1500 });
  return { key: privateKeyToPem(key), cert: cert.pem, ca: [ca.root.pem] };
})();
const clientCtx: SecureContext = createSecureContext({ ...credentialsFor('web'), minVersion: 'TLSv1.3' });
const silent = createLogger({ format: 'json', write: () => {} });
const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

/** Records what a FrameReader parsed. */
function recorder(): { sink: FrameSink; seen: string[] } {
  const seen: string[] = [];
  return {
    seen,
    sink: {
      onData: (s, p) => seen.push(`data ${s} ${p.toString()}`),
      onFin: (s) => seen.push(`fin ${s}`),
      onReset: (s) => seen.push(`reset ${s}`),
      onWindow: (s, n) => seen.push(`window ${s} ${n}`),
    },
  };
}

describe('mesh-mux/1 frames', () => {
  test('frames cut anywhere into reads parse to the same frames', () => {
    const wire = Buffer.concat([frameHeader(FrameType.Data, 1, 5), Buffer.from('hello'), frameHeader(FrameType.Fin, 1, 0), windowFrame(3, 1000), frameHeader(FrameType.Reset, 7, 0)]);
    const whole = recorder();
    new FrameReader(whole.sink).push(wire);
    assert.deepEqual(whole.seen, ['data 1 hello', 'fin 1', 'window 3 1000', 'reset 7']);
    for (let cut = 1; cut < wire.length; cut++) {
      const r = recorder();
      const reader = new FrameReader(r.sink);
      reader.push(wire.subarray(0, cut));
      reader.push(wire.subarray(cut));
      assert.deepEqual(r.seen, whole.seen, `cut at ${cut}`);
    }
  });

  const refused: Array<[string, Buffer, RegExp]> = [
    ['stream 0', frameHeader(FrameType.Data, 0, 0), /a frame on stream 0/],
    ['an unknown type', frameHeader(9 as FrameType, 1, 0), /unknown frame type 9/],
    ['a payload over the limit', frameHeader(FrameType.Data, 1, STREAM_WINDOW_BYTES + 1), /a frame of 262145 bytes \(at most 262144\)/],
    ['a FIN with a payload', frameHeader(FrameType.Fin, 1, 1), /a FIN frame with a payload/],
    ['a RESET with a payload', frameHeader(FrameType.Reset, 1, 2), /a RESET frame with a payload/],
    ['a WINDOW of the wrong size', frameHeader(FrameType.Window, 1, 8), /WINDOW frame whose payload is not 4 bytes/],
    ['a WINDOW of 0', windowFrame(1, 0), /a WINDOW frame of 0 bytes/],
  ];
  for (const [what, bytes, message] of refused) {
    test(`refuses ${what} with MESH_ERR_MUX_PROTOCOL`, () => {
      assert.throws(
        () => new FrameReader(recorder().sink).push(bytes),
        (err: unknown) => err instanceof MeshError && err.code === 'MESH_ERR_MUX_PROTOCOL' && message.test(err.message),
      );
    });
  }

  test('an oversized length is refused from its header alone, before its payload is waited for', () => {
    assert.throws(() => new FrameReader(recorder().sink).push(frameHeader(FrameType.Data, 1, 0xffff_ffff)), /MESH_ERR_MUX_PROTOCOL|at most/);
    assert.equal(FRAME_HEADER_BYTES, 9);
  });
});

/** A TLS server offering `alpn`; each accepted connection goes to `onSocket`. */
async function tlsServer(alpn: string[], onSocket: (s: TLSSocket) => void, credentials = serverCredentials): Promise<{ server: Server; port: number }> {
  const server = createTlsServer({ ...credentials, requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.3', ALPNProtocols: alpn }, (s) => {
    s.on('error', () => {});
    onSocket(s);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, port: (server.address() as { port: number }).port };
}

/** A dialed mux session to `port` (real mTLS), with a count of the socket writes it made. */
async function dialSession(port: number): Promise<{ session: MuxSession; socket: TLSSocket; writes: () => number }> {
  const socket = tlsConnect({ host: '127.0.0.1', port, secureContext: clientCtx, servername: 'api', minVersion: 'TLSv1.3', ALPNProtocols: [MUX_ALPN], checkServerIdentity: () => undefined });
  await new Promise<void>((resolve, reject) => {
    socket.once('secureConnect', resolve);
    socket.once('error', reject);
  });
  assert.equal(socket.alpnProtocol, MUX_ALPN);
  let writes = 0;
  const write = socket.write.bind(socket) as (b: Buffer) => boolean;
  socket.write = ((b: Buffer) => {
    writes++;
    return write(b);
  }) as typeof socket.write;
  const session = new MuxSession(socket);
  socket.on('data', session.onBytes);
  return { session, socket, writes: () => writes };
}

/** Everything a stream delivers until it closes, and whether it saw its end. */
function collect(s: MuxStream): Promise<{ bytes: Buffer; ended: boolean }> {
  const parts: Buffer[] = [];
  let ended = false;
  s.on('data', (d: Buffer) => parts.push(Buffer.from(d)));
  s.on('end', () => (ended = true));
  return new Promise((resolve) => s.once('close', () => resolve({ bytes: Buffer.concat(parts), ended })));
}

describe('mesh-mux/1 streams over mTLS', () => {
  /** What the accepting side does with each stream, per test. */
  let serve: (s: MuxStream) => void = () => {};
  const protocolErrors: string[] = [];
  let accepted: MuxSession | undefined;
  let port = 0;
  let server: Server;

  before(async () => {
    ({ server, port } = await tlsServer([MUX_ALPN], (socket) => {
      accepted = new MuxSession(socket, { onStream: (s) => serve(s), onProtocolError: (m) => protocolErrors.push(m) });
      socket.on('data', accepted.onBytes);
    }));
  });

  after(() => server.close());

  test('100 streams at once each get their own answer, and the requests of one turn leave in one write', async () => {
    serve = (s) => {
      const parts: Buffer[] = [];
      s.on('data', (d: Buffer) => parts.push(Buffer.from(d)));
      s.on('end', () => s.end(Buffer.from(Buffer.concat(parts).toString().toUpperCase())));
    };
    const { session, writes } = await dialSession(port);
    const streams = Array.from({ length: 100 }, () => session.open());
    const answers = streams.map(collect);
    streams.forEach((s, i) => s.end(Buffer.from(`request ${i}`)));
    const got = await Promise.all(answers);
    got.forEach((g, i) => assert.deepEqual([g.bytes.toString(), g.ended], [`REQUEST ${i}`, true]));
    assert.equal(writes(), 1, '100 streams opened, written and ended in one turn: one socket write');
    assert.equal(session.size, 0, 'closed streams are forgotten');
    session.close();
  });

  test('streams that write in another order than they were opened are all served (the peer sees ids in order)', async () => {
    serve = (s) => s.on('data', (d: Buffer) => s.end(d));
    const { session } = await dialSession(port);
    const streams = Array.from({ length: 5 }, () => session.open());
    await tick(); // the opening frames leave first
    const answers = streams.map(collect);
    for (const i of [4, 2, 0, 3, 1]) streams[i]!.write(Buffer.from(`s${i}`));
    assert.deepEqual((await Promise.all(answers)).map((a) => a.bytes.toString()), ['s0', 's1', 's2', 's3', 's4']);
    session.close();
  });

  test('DATA for a stream the receiver already closed is answered with a RESET, so the writer does not wait for ever', async () => {
    serve = (s) => s.destroy();
    const socket = tlsConnect({ host: '127.0.0.1', port, secureContext: clientCtx, servername: 'api', ALPNProtocols: [MUX_ALPN], checkServerIdentity: () => undefined });
    socket.on('error', () => {});
    const resets: number[] = [];
    const reader = new FrameReader({ onData: () => {}, onFin: () => {}, onWindow: () => {}, onReset: (id) => resets.push(id) });
    socket.on('data', (d: Buffer) => reader.push(d));
    await new Promise((r) => socket.once('secureConnect', r));
    const data = (id: number, text: string): Buffer => Buffer.concat([frameHeader(FrameType.Data, id, text.length), Buffer.from(text)]);
    socket.write(data(1, 'hello')); // opens stream 1, which the peer resets at once
    while (resets.length < 1) await tick();
    socket.write(Buffer.concat([data(1, 'still there?'), data(3, 'x'), data(2, 'lower than 3')]));
    for (const deadline = Date.now() + 5000; resets.length < 4 && Date.now() < deadline; ) await tick();
    assert.deepEqual(resets, [1, 1, 3, 2], 'the late frame on 1, then 3 (reset by the app) and 2 (below the newest id seen)');
    assert.equal(accepted!.lateFrames, 2);
    socket.destroy();
  });

  test('a paused reader holds the writer to one window; resuming delivers every byte in order and the writer drains', async () => {
    let peer: MuxStream | undefined;
    serve = (s) => {
      peer = s;
      s.pause();
    };
    const { session } = await dialSession(port);
    const s = session.open();
    const body = randomBytes(4 * STREAM_WINDOW_BYTES + 123);
    assert.equal(s.write(body), false, 'more than a window: write() says wait');
    let drained = false;
    s.on('drain', () => (drained = true));
    for (let i = 0; i < 20; i++) await tick();
    assert.ok(peer, 'the peer opened the stream');
    const received: Buffer[] = [];
    peer.on('data', (d: Buffer) => received.push(Buffer.from(d)));
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(received.length, 0, 'nothing is delivered while paused');
    assert.equal(drained, false);
    peer.resume();
    const deadline = Date.now() + 5000;
    while (Buffer.concat(received).length < body.length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    const all = Buffer.concat(received);
    assert.equal(createHash('sha256').update(all).digest('hex'), createHash('sha256').update(body).digest('hex'), 'every byte, in order');
    while (!drained && Date.now() < deadline) await tick();
    assert.equal(drained, true, 'the writer is told it may write again');
    session.close();
  });

  test('destroy() on either side resets the stream for the other; the connection carries on', async () => {
    const peers: MuxStream[] = [];
    serve = (s) => peers.push(s);
    const { session } = await dialSession(port);
    const a = session.open();
    a.write(Buffer.from('x'));
    while (peers.length < 1) await tick();
    const peerClosed = new Promise((r) => peers[0]!.once('close', r));
    a.destroy();
    await peerClosed;
    const b = session.open();
    const bClosed = collect(b);
    b.write(Buffer.from('y'));
    while (peers.length < 2) await tick();
    peers[1]!.destroy();
    const got = await bClosed;
    assert.equal(got.ended, false, 'a reset is not an end');
    assert.equal(session.closed, false);
    const c = session.open();
    const cGot = collect(c);
    serve = (s) => s.on('data', (d: Buffer) => s.end(d));
    c.end(Buffer.from('still works'));
    assert.equal((await cGot).bytes.toString(), 'still works');
    session.close();
  });

  test('a peer that breaks the framing or sends past its window loses the connection, and the log names why', async () => {
    for (const [bytes, why] of [
      [frameHeader(7 as FrameType, 1, 0), /unknown frame type 7/],
      [Buffer.concat([frameHeader(FrameType.Data, 5, STREAM_WINDOW_BYTES), Buffer.alloc(STREAM_WINDOW_BYTES), frameHeader(FrameType.Data, 5, 1), Buffer.alloc(1)]), /stream 5 sent 262145 bytes on a window of 262144/],
    ] as const) {
      serve = (s) => s.pause(); // nothing is taken, so nothing is credited back
      protocolErrors.length = 0;
      const socket = tlsConnect({ host: '127.0.0.1', port, secureContext: clientCtx, servername: 'api', ALPNProtocols: [MUX_ALPN], checkServerIdentity: () => undefined });
      socket.on('error', () => {});
      socket.on('data', () => {});
      await new Promise((r) => socket.once('secureConnect', r));
      socket.write(bytes);
      await new Promise((r) => socket.once('close', r));
      assert.equal(protocolErrors.length, 1);
      assert.match(protocolErrors[0]!, why);
    }
  });

  test(`an accepting side refuses streams beyond ${MUX_MAX_STREAMS} with a reset`, async () => {
    serve = () => {};
    const { session } = await dialSession(port);
    const streams = Array.from({ length: MUX_MAX_STREAMS + 1 }, () => session.open());
    const last = streams.at(-1)!;
    const closed = new Promise((r) => last.once('close', r));
    for (const s of streams) s.write(Buffer.from('hi'));
    await closed;
    assert.equal(streams.filter((s) => s.closed).length, 1, 'only the stream over the cap was reset');
    assert.equal(accepted!.size, MUX_MAX_STREAMS);
    assert.equal(session.canOpen, false, 'a full connection takes no new stream');
    assert.equal(streams[0]!.reusable, true, 'but its streams stay reusable: full is not retired');
    session.close();
  });
});

describe('the inbound port\'s ALPN choice', () => {
  test('mesh-mux/1 only for an HTTP/1.1 service; h2, http/1.1 and gossip as before; nothing offered that it speaks: refused', () => {
    assert.equal(chooseAlpn([MUX_ALPN, 'http/1.1'], true), MUX_ALPN);
    assert.equal(chooseAlpn([MUX_ALPN, 'http/1.1'], false), 'http/1.1', 'a tcp service: the caller falls back to a connection per request');
    assert.equal(chooseAlpn(['http/1.1', MUX_ALPN], true), MUX_ALPN, 'the port\'s preference, not the caller\'s order');
    assert.equal(chooseAlpn(['h2'], true), 'h2');
    assert.equal(chooseAlpn(['mesh-gossip/1'], false), 'mesh-gossip/1');
    assert.equal(chooseAlpn(['spdy/3'], true), undefined);
  });
});

describe('the mux dialer', () => {
  const target = (port: number) => ({ endpoint: { address: '127.0.0.1', port, weight: 1, labels: {} }, context: clientCtx, sni: 'api', expected: SpiffeId.workload(TD, 'default', 'api') });

  test('shares one connection among streams to one endpoint', async () => {
    let connections = 0;
    const { server, port } = await tlsServer([MUX_ALPN, 'http/1.1'], (socket) => {
      connections++;
      const s = new MuxSession(socket, { onStream: (st) => st.on('data', (d: Buffer) => st.end(d)) });
      socket.on('data', s.onBytes);
    });
    const dialer = new MuxDialer(new MtlsConnector(), silent);
    const streams = await Promise.all(Array.from({ length: 10 }, () => dialer.open(target(port), new DirectReads())));
    const echoes = streams.map((s) => new Promise<string>((r) => s.on('data', (d: Buffer) => r(d.toString()))));
    streams.forEach((s, i) => s.write(Buffer.from(`n${i}`)));
    assert.deepEqual(await Promise.all(echoes), streams.map((_, i) => `n${i}`));
    assert.equal(connections, 1);
    for (const s of streams) s.destroy();
    dialer.close();
    server.close();
  });

  test('takes no new stream on a connection past the remote certificate\'s expiry: a new connection carries it, the old one closes when idle', async () => {
    const sockets: TLSSocket[] = [];
    const { server, port } = await tlsServer(
      [MUX_ALPN],
      (socket) => {
        sockets.push(socket);
        const s = new MuxSession(socket, { onStream: (st) => st.on('data', (d: Buffer) => st.write(d)) });
        socket.on('data', s.onBytes);
      },
      shortLived,
    );
    let dials = 0;
    server.on('connection', () => dials++);
    const dialer = new MuxDialer(new MtlsConnector(), silent);
    const first = await dialer.open(target(port), new DirectReads());
    while (sockets.length === 0) await tick();
    const firstClosed = new Promise((r) => sockets[0]!.once('close', r));
    await new Promise((r) => setTimeout(r, 1600));
    assert.equal((first as MuxStream).reusable, true, 'a busy stream goes on until it is released');
    await dialer.open(target(port), new DirectReads()).catch(() => undefined); // the new handshake meets the expired certificate
    assert.equal(dials, 2, 'a new connection was dialed instead of a stream on the old one');
    assert.equal((first as MuxStream).reusable, false, 'the old connection\'s streams are not handed out again');
    first.destroy();
    await firstClosed; // retired and without streams: closed
    dialer.close();
    server.close();
  });

  test('falls back to one connection per request when the peer does not offer mesh-mux/1', async () => {
    let connections = 0;
    const { server, port } = await tlsServer(['http/1.1'], (socket) => {
      connections++;
      socket.on('data', (d: Buffer) => socket.write(d));
    });
    const dialer = new MuxDialer(new MtlsConnector(), silent);
    for (let i = 0; i < 3; i++) {
      const reads = new DirectReads();
      const s = await dialer.open(target(port), reads);
      const echoed = new Promise<string>((r) => (reads.deliver = (d) => r(d.toString())));
      s.write(Buffer.from(`plain ${i}`));
      assert.equal(await echoed, `plain ${i}`, 'bytes come back through the caller\'s own reads');
      s.destroy();
    }
    assert.equal(connections, 3, 'one plain connection each, the first one being the refused carrier itself');
    server.close();
  });
});
