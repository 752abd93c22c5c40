// Bad input on an agent's ports: broken HTTP/1.1 (the corpus and seeded mutations of it) to an upstream port and
// over mTLS to the inbound port, random and mutated bytes before and after the handshake, random HTTP/2 frames after
// the h2c preface. Every case must end in an answer or a closed connection, never a hang; afterwards both agents
// still answer /ready, still carry a real request, and their memory stayed within a bound.

import assert from 'node:assert/strict';
import { createPublicKey } from 'node:crypto';
import { connect as netConnect, createServer as createNetServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';
import { connect as h2Connect } from 'node:http2';
import { CertificateAuthority, generatePrivateKey, privateKeyToPem, SpiffeId } from '../../src/ca';
import { Store } from '../../src/store';
import { startHttpApp } from '../helpers/apps';
import { TestMesh, type AgentHandle } from '../helpers/mesh';
import { freePort } from '../helpers/processes';
import { MUX_ALPN } from '../../src/proxy/mux/mux-frames';
import { eachLimited, rawExchange, rssKib, RSS_GROWTH_LIMIT_KIB, statusesOf, until, type RawOutcome } from './fuzz-client';
import { loadCorpus, Mutator, type CorpusEntry } from './fuzz-input';

const CASES = { outbound: 1200, inboundTls: 200, preHandshake: 300, h2: 300 };
/** Small limits, so the limit cases are cheap; a short HTTP/2 idle close (see closeWhenIdle). */
const LIMITS = 'limits: { maxHeadBytes: 16384, maxConnections: 64, h2IdleTimeout: 2s }\n';
const H2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

/** The first bytes a TLS 1.3 client sends (a real ClientHello), to mutate. */
async function clientHello(): Promise<Buffer> {
  return new Promise((resolve) => {
    const server = createNetServer((s) => {
      s.once('data', (c: Buffer) => {
        resolve(c);
        s.destroy();
        server.close();
      });
    });
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as { port: number }).port;
      void rawExchange(port, [], { tls: { servername: 'api.default.mesh.local', rejectUnauthorized: false }, end: false, timeoutMs: 2000 });
    });
  });
}

/** An HTTP/2 frame: 24-bit length, type, flags, 31-bit stream id, payload (the length field sometimes lies). */
function h2Frame(m: Mutator): Buffer {
  const payload = m.bytes(m.pick([0, 1, 4, 5, 6, 8, 9, 30, 200]));
  const head = Buffer.alloc(9);
  head.writeUIntBE(m.int(8) === 0 ? m.int(1 << 24) : payload.length, 0, 3);
  head[3] = m.int(12); // DATA .. CONTINUATION, and a few unknown types
  head[4] = m.pick([0, 1, 4, 5, 8, 0x20, 0x25, 0xff]);
  head.writeUInt32BE(m.pick([0, 1, 3, 5, 2, 0x7fffffff, m.int(2 ** 31)]) >>> 0, 5);
  return Buffer.concat([head, payload]);
}

/** mesh-mux/1 frames: DATA carrying corpus requests or random bytes, FIN, RESET, WINDOW, unknown types, odd lengths and ids. */
function muxFrames(m: Mutator, corpus: readonly { bytes: Buffer }[]): Buffer {
  return Buffer.concat(
    Array.from({ length: 1 + m.int(5) }, () => {
      const type = m.pick([0, 0, 0, 1, 2, 3, m.int(256)]);
      const payload = type === 0 ? (m.int(2) === 0 ? m.pick(corpus).bytes : m.bytes(m.int(300))) : type === 3 ? m.bytes(m.pick([4, 4, 0, 8])) : m.bytes(m.pick([0, 0, 0, 3]));
      const head = Buffer.alloc(9);
      head[0] = type;
      head.writeUInt32BE(m.pick([1, 1, 3, 0, 0xffffffff, m.int(2 ** 31)]) >>> 0, 1);
      head.writeUInt32BE(m.int(10) === 0 ? m.int(2 ** 32) >>> 0 : payload.length, 5);
      return Buffer.concat([head, payload]);
    }),
  );
}

/** What an HTTP/1.1 case may come to: answers that are whole HTTP/1.1 responses, or a closed connection. */
function checkHttpOutcome(o: RawOutcome, what: string): void {
  assert.ok(!o.timedOut, `${what}: no answer and no close within the time`);
  if (o.received.length === 0) return;
  assert.match(o.received.toString('latin1', 0, 12), /^HTTP\/1\.1 [1-5]\d\d/, `${what}: not an HTTP/1.1 answer: ${JSON.stringify(o.received.toString('latin1', 0, 80))}`);
}

/** A corpus entry's expectation: `200`, `400`, `400c` (400 or closed before an answer), `any`. */
function checkExpected(e: CorpusEntry, o: RawOutcome): void {
  checkHttpOutcome(o, e.name);
  if (e.expect === 'any') return;
  const first = statusesOf(o.received)[0];
  if (e.expect.endsWith('c') && first === undefined) return;
  assert.equal(first, Number.parseInt(e.expect, 10), `${e.name}: ${JSON.stringify(o.received.toString('latin1', 0, 200))}`);
}

describe('fuzz: bad bytes on the agent ports', () => {
  const mesh = new TestMesh();
  let a: AgentHandle;
  let b: AgentHandle;
  let app: Awaited<ReturnType<typeof startHttpApp>>;
  const ports = { http: 0, h2: 0, inbound: 0 };
  let tls: { key: string; cert: string; ca: string[] };
  const rssBefore: Record<string, number> = {};
  const corpus = loadCorpus('http1');

  before(async () => {
    const server = await mesh.startServer();
    app = await startHttpApp('api');
    b = await mesh.startAgent('node-b', mesh.writeConfig('b.yaml', `inbound: { listen: "127.0.0.1:0" }\nadmin: { listen: "127.0.0.1:0" }\n${LIMITS}services: [{ name: api, port: ${app.port}, protocol: http }]\n`), { join: await mesh.token(server) });
    ports.inbound = Number(b.inbound.split(':')[1]);
    mesh.writeConfig('endpoints.yaml', `services:\n  api: [{ address: 127.0.0.1, port: ${ports.inbound} }]\n`);
    [ports.http, ports.h2] = [await freePort(), await freePort()];
    a = await mesh.startAgent(
      'node-a',
      mesh.writeConfig(
        'a.yaml',
        `inbound: { listen: "127.0.0.1:0" }\nadmin: { listen: "127.0.0.1:0" }\n${LIMITS}endpointsFile: {{root}}/endpoints.yaml\nservices:\n  - name: web\n    port: 1\n    upstreams:\n      - { service: api, port: ${ports.http}, protocol: http }\n      - { service: api, port: ${ports.h2}, protocol: http2 }\n`,
      ),
      { join: await mesh.token(server) },
    );
    // A workload certificate of the mesh CA, as a caller agent holds one.
    const store = Store.open(join(server.dataDir, 'mesh.db'));
    const ca = CertificateAuthority.load(store.ca.active()!);
    store.close();
    const key = generatePrivateKey();
    tls = { key: privateKeyToPem(key), cert: ca.issue({ spiffeId: SpiffeId.workload('mesh.local', 'default', 'web'), publicKey: createPublicKey(key), lifetimeMs: 3_600_000 }).pem, ca: [ca.root.pem] };
    for (const x of [a, b]) rssBefore[x.proc.name] = rssKib(x.proc.child.pid!);
  });

  after(async () => {
    await mesh.close();
    app.server.close();
  });

  it('answers every corpus request to an upstream port as its file name says', async () => {
    const outcomes = await eachLimited(corpus, 8, (e) => rawExchange(ports.http, [e.bytes]));
    corpus.forEach((e, i) => checkExpected(e, outcomes[i]!));
  });

  it('enforces the head limits with 431 and the connection limit with 503', async () => {
    const get = (extra: string, target = '/'): Buffer => Buffer.from(`GET ${target} HTTP/1.1\r\nhost: api\r\n${extra}\r\n`, 'latin1');
    const cases: [string, Buffer, number][] = [
      ['100 header fields (the limit)', get('x-h: 1\r\n'.repeat(99)), 200],
      ['101 header fields', get('x-h: 1\r\n'.repeat(100)), 431],
      ['a 20 KB header', get(`x-big: ${'a'.repeat(20_000)}\r\n`), 431],
      ['a 70 KB request line', get('', `/${'a'.repeat(70_000)}`), 431],
      ['a head that never ends', Buffer.from(`GET / HTTP/1.1\r\nx-a: ${'b'.repeat(80_000)}`), 431],
    ];
    for (const [what, bytes, status] of cases) {
      const o = await rawExchange(ports.http, [bytes]);
      assert.equal(statusesOf(o.received)[0], status, `${what}: ${o.received.toString('latin1', 0, 200)}`);
    }
    // 64 connections held open; the 65th is told 503 and closed; once one closes, a new one is served.
    const held = await Promise.all(Array.from({ length: 64 }, () => new Promise<Socket>((r) => { const s = netConnect(ports.http, '127.0.0.1', () => r(s)); })));
    let over = '';
    await until(async () => statusesOf(Buffer.from((over = (await rawExchange(ports.http, [get('')])).received.toString('latin1')), 'latin1'))[0] === 503);
    assert.match(over, /limits\.maxConnections 64/);
    held.pop()!.destroy();
    await until(async () => statusesOf((await rawExchange(ports.http, [get('')])).received)[0] === 200);
    for (const s of held) s.destroy();
    // HTTP/2: a header list over maxHeadBytes is answered 431; more fields than maxHeaders reset the stream.
    const session = h2Connect(`http://127.0.0.1:${ports.h2}`);
    session.on('error', () => {});
    const h2 = (headers: Record<string, string>): Promise<number | string> =>
      new Promise((resolve) => {
        const req = session.request({ ':path': '/', ...headers });
        req.on('response', (h) => resolve(Number(h[':status'])));
        req.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'));
        req.resume();
        req.end();
      });
    assert.equal(await h2({ 'x-big': 'a'.repeat(20_000) }), 431);
    assert.equal(await h2(Object.fromEntries(Array.from({ length: 101 }, (_, i) => [`x-h${i}`, '1']))), 'ERR_HTTP2_STREAM_ERROR');
    session.destroy();
  });

  it('answers mutated requests on an upstream port with HTTP/1.1 or a close', async (t) => {
    const m = new Mutator(7);
    const cases = Array.from({ length: CASES.outbound }, () => m.split(m.mutate(m.pick(corpus).bytes)));
    const outcomes = await eachLimited(cases, 32, (pieces) => rawExchange(ports.http, pieces, { timeoutMs: 4000 }));
    outcomes.forEach((o, i) => checkHttpOutcome(o, `case ${i} ${JSON.stringify(Buffer.concat(cases[i]!).toString('latin1').slice(0, 120))}`));
    tally(t, 'upstream port', outcomes);
  });

  it('closes connections that send random or mutated bytes before the TLS handshake on the inbound port', async (t) => {
    const m = new Mutator(11);
    const hello = await clientHello();
    const cases = Array.from({ length: CASES.preHandshake }, (_, i) => (i % 3 === 0 ? m.bytes(1 + m.int(600)) : m.mutate(hello)));
    const outcomes = await eachLimited(cases, 32, (bytes) => rawExchange(ports.inbound, m.split(bytes), { timeoutMs: 4000 }));
    outcomes.forEach((o, i) => assert.ok(o.closed, `case ${i}: the inbound port kept a connection that sent ${cases[i]!.toString("hex").slice(0, 200)}`));
    tally(t, 'inbound before the handshake', outcomes);
  });

  it('answers broken HTTP/1.1 after a valid mTLS handshake on the inbound port', async (t) => {
    const m = new Mutator(13);
    const opts = { ...tls, servername: 'api.default.mesh.local', rejectUnauthorized: false };
    const cases = Array.from({ length: CASES.inboundTls }, (_, i) => (i < corpus.length ? corpus[i]!.bytes : i % 5 === 0 ? m.bytes(1 + m.int(300)) : m.mutate(m.pick(corpus).bytes)));
    const outcomes = await eachLimited(cases, 16, (bytes) => rawExchange(ports.inbound, m.split(bytes), { tls: opts, timeoutMs: 4000 }));
    outcomes.forEach((o, i) => {
      assert.ok(o.handshake, `case ${i}: the handshake itself failed`);
      if (i < corpus.length) checkExpected(corpus[i]!, o);
      else checkHttpOutcome(o, `case ${i} ${JSON.stringify(cases[i]!.toString("latin1").slice(0, 200))}`);
    });
    // Random frames on a connection that chose h2 by ALPN.
    const h2 = await eachLimited(Array.from({ length: 50 }, () => Buffer.concat([H2_PREFACE, ...Array.from({ length: 1 + m.int(6) }, () => h2Frame(m))])), 16, (bytes) =>
      rawExchange(ports.inbound, [bytes], { tls: { ...opts, ALPNProtocols: ['h2'] }, timeoutMs: 4000 }),
    );
    h2.forEach((o, i) => assert.ok(!o.timedOut, `h2 case ${i}: no close within the time`));
    // Frames on a connection that chose mesh-mux/1 (docs/mux.md): corpus requests on streams, random and mutated frames.
    const mux = await eachLimited(Array.from({ length: 60 }, (_, i) => (i % 4 === 3 ? m.mutate(muxFrames(m, corpus)) : muxFrames(m, corpus))), 16, (bytes) =>
      rawExchange(ports.inbound, m.split(bytes), { tls: { ...opts, ALPNProtocols: [MUX_ALPN] }, timeoutMs: 4000 }),
    );
    mux.forEach((o, i) => assert.ok(!o.timedOut, `mesh-mux/1 case ${i}: no close within the time`));
    tally(t, 'inbound after the handshake', [...outcomes, ...h2, ...mux]);
  });

  it('closes h2c connections that send random frames after the preface to an http2 upstream port', async (t) => {
    const m = new Mutator(17);
    const cases = Array.from({ length: CASES.h2 }, (_, i) => {
      const frames = Array.from({ length: 1 + m.int(6) }, () => h2Frame(m));
      const bytes = Buffer.concat([H2_PREFACE, ...frames]);
      return i % 4 === 0 ? m.mutate(bytes) : bytes;
    });
    const outcomes = await eachLimited(cases, 32, (bytes) => rawExchange(ports.h2, m.split(bytes), { timeoutMs: 4000 }));
    outcomes.forEach((o, i) => assert.ok(!o.timedOut, `case ${i}: no close within the time: ${cases[i]!.toString("hex")}`));
    tally(t, 'h2c upstream port', outcomes);
  });

  it('leaves both agents running, ready, carrying requests, and within the memory bound', async (t) => {
    for (const x of [a, b]) {
      assert.ok(x.proc.running, `${x.proc.name} is still running`);
      const ready = await fetch(`http://${x.admin}/ready`);
      assert.equal(ready.status, 200, `${x.proc.name} /ready`);
      const grew = rssKib(x.proc.child.pid!) - rssBefore[x.proc.name]!;
      t.diagnostic(`${x.proc.name}: RSS grew by ${grew} KiB (bound ${RSS_GROWTH_LIMIT_KIB} KiB)`);
      assert.ok(grew < RSS_GROWTH_LIMIT_KIB, `${x.proc.name} RSS grew by ${grew} KiB`);
    }
    const res = await fetch(`http://127.0.0.1:${ports.http}/after-fuzz`);
    assert.equal(res.status, 200);
    assert.equal(((await res.json()) as { path: string }).path, '/after-fuzz');
  });
});

function tally(t: TestContext, where: string, outcomes: readonly RawOutcome[]): void {
  const counts = new Map<string, number>();
  for (const o of outcomes) {
    const k = statusesOf(o.received)[0]?.toString() ?? (o.received.length > 0 ? 'bytes' : 'closed');
    counts.set(k, (counts.get(k) ?? 0) + 1);
  }
  t.diagnostic(`${where}: ${outcomes.length} cases: ${[...counts].sort().map(([k, n]) => `${k} ${n}`).join(', ')}`);
}
