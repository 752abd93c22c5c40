// A resumed TLS session skips certificate checks: the inbound listener and the upstream connector must still refuse
// a peer whose certificate expired after the handshake the session came from. Real TLS over loopback.

import assert from 'node:assert/strict';
import { createPublicKey } from 'node:crypto';
import { createServer as createNetServer } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { connect as tlsConnect, createSecureContext, createServer as createTlsServer, type SecureContext, type TLSSocket } from 'node:tls';
import { CertificateAuthority, generatePrivateKey, privateKeyToPem, SpiffeId } from '../../src/ca';
import { compilePolicy, parsePolicyText, workloadOf } from '../../src/policy';
import { GOSSIP_ALPN } from '../../src/protocol';
import { InboundListener } from '../../src/proxy/inbound-listener';
import { MtlsConnector } from '../../src/proxy/mtls-connector';
import { createLogger } from '../../src/telemetry';

const TD = 'mesh.local';
const ca = CertificateAuthority.create(TD);
const context = (name: string, lifetimeMs: number): { ctx: SecureContext; notAfter: number } => {
  const key = generatePrivateKey();
  const cert = ca.issue({ spiffeId: SpiffeId.workload(TD, 'default', name), publicKey: createPublicKey(key), lifetimeMs });
  return { ctx: createSecureContext({ key: privateKeyToPem(key), cert: cert.pem, ca: [ca.root.pem], minVersion: 'TLSv1.3' }), notAfter: cert.notAfter.getTime() };
};
const until = (t: number): Promise<void> => new Promise((r) => setTimeout(r, Math.max(0, t - Date.now())));

/** One client connection: whether TLS resumed, what came back for "ping", and the session to resume with. */
function exchange(port: number, ctx: SecureContext, session?: Buffer, alpn?: string): Promise<{ reused: boolean; reply: string; session?: Buffer }> {
  return new Promise((resolve) => {
    const s: TLSSocket = tlsConnect({
      host: '127.0.0.1', port, servername: `api.default.${TD}`, secureContext: ctx, minVersion: 'TLSv1.3', checkServerIdentity: () => undefined,
      ...(session ? { session } : {}),
      ...(alpn ? { ALPNProtocols: [alpn] } : {}),
    });
    let reply = '';
    let next: Buffer | undefined;
    let reused = false;
    s.on('session', (b: Buffer) => (next = b));
    s.on('secureConnect', () => {
      reused = s.isSessionReused();
      s.write('ping');
    });
    s.on('data', (d: Buffer) => {
      reply += d.toString();
      // Wait a moment for the session ticket, which TLS 1.3 sends after the handshake.
      setTimeout(() => s.end(), 50);
    });
    s.on('error', () => {});
    s.on('close', () => resolve({ reused, reply, ...(next ? { session: next } : {}) }));
  });
}

describe('TLS session resumption after the peer certificate expired', () => {
  const echo = createNetServer((s) => {
    s.on('error', () => {});
    s.pipe(s);
  });
  const server = context('api', 3_600_000);
  // Gossip connections (ALPN mesh-gossip/1) are answered "gossip" here, to tell them from traffic.
  const listener = new InboundListener({ contextFor: () => server.ctx, trustDomain: TD }, createLogger({ format: 'json', write: () => {} }), () => compilePolicy(parsePolicyText('', 'empty.yaml')), undefined, undefined, (socket) => {
    socket.on('error', () => {});
    socket.end('gossip');
  });
  let port = 0;

  before(async () => {
    await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
    const echoPort = (echo.address() as { port: number }).port;
    listener.setRoutes([{ sni: `api.default.${TD}`, identity: SpiffeId.workload(TD, 'default', 'api'), target: { host: '127.0.0.1', port: echoPort }, protocol: 'tcp', workload: workloadOf('api', 'default') }]);
    port = (await listener.listen({ host: '127.0.0.1', port: 0 })).port;
  });

  after(async () => {
    await listener.close();
    echo.close();
  });

  test('the inbound listener refuses a session resumed with an expired client certificate, and accepts it while valid', async () => {
    const client = context('web', 2000);
    const first = await exchange(port, client.ctx);
    assert.deepEqual([first.reused, first.reply], [false, 'ping']);
    assert.ok(first.session, 'the server issued a session ticket');
    const valid = await exchange(port, client.ctx, first.session);
    assert.deepEqual([valid.reused, valid.reply], [true, 'ping'], 'resumption works while the certificate is valid');
    const refusedBefore = listener.stats.refusedIdentity;
    await until(client.notAfter + 1100);
    const late = await exchange(port, client.ctx, valid.session ?? first.session);
    assert.equal(late.reused, true, 'the TLS layer itself resumed the session');
    assert.equal(late.reply, '', 'but the listener closed the connection before any byte reached the app');
    assert.equal(listener.stats.refusedIdentity, refusedBefore + 1);
  });

  test('a gossip connection resumed with an expired certificate is refused too', async () => {
    const client = context('web', 2000);
    const first = await exchange(port, client.ctx, undefined, GOSSIP_ALPN);
    assert.deepEqual([first.reused, first.reply], [false, 'gossip']);
    await until(client.notAfter + 1100);
    const late = await exchange(port, client.ctx, first.session, GOSSIP_ALPN);
    assert.deepEqual([late.reused, late.reply], [true, ''], 'resumed by TLS, closed by the listener before the gossip handler');
  });

  test('the upstream connector does not resume a session past the server certificate it verified', async () => {
    const shortServer = context('api', 2000);
    const tls = createTlsServer({ SNICallback: (_n, cb) => cb(null, shortServer.ctx), requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.3' }, (s) => {
      s.on('error', () => {});
      s.pipe(s);
    });
    await new Promise<void>((r) => tls.listen(0, '127.0.0.1', r));
    const tlsPort = (tls.address() as { port: number }).port;
    const client = context('web', 3_600_000);
    const connector = new MtlsConnector();
    const opts = { endpoint: { address: '127.0.0.1', port: tlsPort, weight: 1, labels: {} }, context: client.ctx, sni: `api.default.${TD}`, expected: SpiffeId.workload(TD, 'default', 'api') };
    try {
      const a = await connector.connect(opts);
      await new Promise((r) => setTimeout(r, 100)); // the ticket arrives after the handshake
      a.destroy();
      const b = await connector.connect(opts);
      assert.equal(b.isSessionReused(), true, 'a session is resumed while the server certificate is valid');
      b.destroy();
      await until(shortServer.notAfter + 1100);
      const late = await connector.connect(opts).then(
        (s) => (s.destroy(), `connected, resumed: ${s.isSessionReused()}`),
        (err: unknown) => String(err),
      );
      assert.match(late, /CERT_HAS_EXPIRED/, 'past its expiry: no resumption, and the full handshake fails on the expired certificate');
    } finally {
      tls.close();
    }
  });
});
