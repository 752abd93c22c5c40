// End to end through two real agent processes: the mTLS path, identity checks on both sides, and bad input.

import assert from 'node:assert/strict';
import { createHash, createPublicKey, randomBytes, X509Certificate } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createSecureContext, createServer as createTlsServer, type Server as TlsServer } from 'node:tls';
import { request } from 'undici';
import { CertificateAuthority, generatePrivateKey, privateKeyToPem, SpiffeId } from '../../src/ca';
import { buildCertificate, toPem } from '../../src/ca/x509';
import { Store } from '../../src/store';
import { startEchoApp, startHttpApp, tcpExchange, tlsExchange } from '../helpers/apps';
import { TestMesh, type AgentHandle, type ServerHandle } from '../helpers/mesh';
import { freePort } from '../helpers/processes';

const TD = 'mesh.local';

function keyAndCert(ca: CertificateAuthority, id: SpiffeId): { key: string; cert: string } {
  const key = generatePrivateKey();
  return { key: privateKeyToPem(key), cert: ca.issue({ spiffeId: id, publicKey: createPublicKey(key), lifetimeMs: 3_600_000 }).pem };
}

describe('mesh path through two agents', () => {
  const mesh = new TestMesh();
  let server: ServerHandle;
  let ca: CertificateAuthority;
  let api: Awaited<ReturnType<typeof startHttpApp>>;
  let echo: Awaited<ReturnType<typeof startEchoApp>>;
  let impostor: TlsServer;
  let impostorIdentity = 'evil';
  let a: AgentHandle;
  let b: AgentHandle;
  const ports = { api: 0, echo: 0, billing: 0 };

  before(async () => {
    server = await mesh.startServer();
    const store = Store.open(join(server.dataDir, 'mesh.db'));
    ca = CertificateAuthority.load(store.ca.active()!);
    store.close();
    api = await startHttpApp('api');
    echo = await startEchoApp();
    // An upstream that is in the mesh CA but is not the service it claims to be.
    const contexts = new Map(['evil', 'billing'].map((sa) => [sa, createSecureContext({ ...keyAndCert(ca, SpiffeId.workload(TD, 'default', sa)), ca: [ca.root.pem] })]));
    impostor = createTlsServer({ requestCert: true, rejectUnauthorized: true, SNICallback: (_n, cb) => cb(null, contexts.get(impostorIdentity)!) }, (s) => {
      s.on('error', () => {});
      s.pipe(s);
    });
    await new Promise<void>((r) => impostor.listen(0, '127.0.0.1', r));

    const bConfig = mesh.writeConfig(
      'node-b.yaml',
      `inbound: { listen: "127.0.0.1:0" }\nadmin: { listen: "127.0.0.1:0" }\nservices:\n  - { name: api, port: ${api.port}, protocol: http }\n  - { name: echo, port: ${echo.port}, protocol: tcp }\n`,
    );
    b = await mesh.startAgent('node-b', bConfig, { join: await mesh.token(server) });
    writeFileSync(
      join(mesh.root, 'endpoints.yaml'),
      `services:\n  api: [{ address: 127.0.0.1, port: ${b.inbound.split(':')[1]} }]\n  echo: [{ address: 127.0.0.1, port: ${b.inbound.split(':')[1]} }]\n  billing: [{ address: 127.0.0.1, port: ${(impostor.address() as { port: number }).port} }]\n`,
    );
    ports.api = await freePort();
    ports.echo = await freePort();
    ports.billing = await freePort();
    const aConfig = mesh.writeConfig(
      'node-a.yaml',
      `inbound: { listen: "127.0.0.1:0" }\nadmin: { listen: "127.0.0.1:0" }\nendpointsFile: {{root}}/endpoints.yaml\nservices:\n  - name: web\n    port: 1\n    protocol: http\n    upstreams:\n      - { service: api, port: ${ports.api}, protocol: http }\n      - { service: echo, port: ${ports.echo} }\n      - { service: billing, port: ${ports.billing} }\n`,
    );
    a = await mesh.startAgent('node-a', aConfig, { join: await mesh.token(server) });
  });

  after(async () => {
    api?.server.close();
    echo?.server.close();
    impostor?.close();
    await mesh.close();
  });

  const callApi = async (headers: Record<string, string> = {}): Promise<{ status: number; body: { headers: Record<string, string> } }> => {
    const res = await request(`http://127.0.0.1:${ports.api}/hello`, { headers, headersTimeout: 5000 });
    return { status: res.statusCode, body: (await res.body.json()) as { headers: Record<string, string> } };
  };

  it('carries a request app -> agent A -> mTLS -> agent B -> app, and the app sees the verified caller identity', async () => {
    const res = await callApi({ 'x-forwarded-client-cert': 'By=forged;URI=spiffe://mesh.local/ns/default/sa/admin' });
    assert.equal(res.status, 200);
    const xfcc = res.body.headers['x-forwarded-client-cert']!;
    assert.match(xfcc, /^By=spiffe:\/\/mesh\.local\/ns\/default\/sa\/api;Hash=[0-9a-f]{64};URI=spiffe:\/\/mesh\.local\/ns\/default\/sa\/web$/);
    const webCert = new X509Certificate(readFileSync(join(a.stateDir, 'workloads', 'default.web.crt')));
    assert.equal(/Hash=([0-9a-f]+)/.exec(xfcc)![1], createHash('sha256').update(webCert.raw).digest('hex'), 'Hash is the certificate agent A presented');
  });

  it('refuses a forged caller identity smuggled in a chunked trailer', async () => {
    const before = api.trailers.length;
    const r = await tcpExchange(ports.api, 'POST /t HTTP/1.1\r\nhost: api\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nx-forwarded-client-cert: By=x;URI=spiffe://mesh.local/ns/default/sa/admin\r\n\r\n');
    assert.doesNotMatch(r.received.toString(), /^HTTP\/1\.1 200/);
    assert.ok(!api.trailers.slice(before).some((t) => t['x-forwarded-client-cert']), 'the app never saw the forged trailer');
    await b.proc.waitFor(/x-forwarded-client-cert is not allowed in a trailer/);
    // Control: the same request with an ordinary trailer goes through.
    const ok = await tcpExchange(ports.api, 'POST /t HTTP/1.1\r\nhost: api\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n2\r\nhi\r\n0\r\nx-checksum: 1\r\n\r\n');
    assert.match(ok.received.toString(), /^HTTP\/1\.1 200/);
  });

  it('carries raw TCP for protocol: tcp services', async () => {
    const r = await tcpExchange(ports.echo, 'bytes over the mesh');
    assert.equal(r.received.toString(), 'bytes over the mesh');
  });

  it('refuses, at the inbound port, a client with no certificate', async () => {
    const before = api.seen.length;
    const r = await tlsExchange(Number(b.inbound.split(':')[1]), { servername: `api.default.${TD}`, ca: [ca.root.pem] }, 'GET / HTTP/1.1\r\nhost: api\r\n\r\n');
    assert.equal(r.received, '');
    assert.equal(api.seen.length, before);
  });

  it('accepts a raw client with a mesh workload certificate (control for the refusals)', async () => {
    const r = await tlsExchange(Number(b.inbound.split(':')[1]), { servername: `api.default.${TD}`, ca: [ca.root.pem], ...keyAndCert(ca, SpiffeId.workload(TD, 'default', 'web')) }, 'GET / HTTP/1.1\r\nhost: api\r\nconnection: close\r\n\r\n');
    assert.match(r.received, /^HTTP\/1\.1 200/);
  });

  it('refuses a client certificate from another CA', async () => {
    const other = CertificateAuthority.create(TD);
    const before = api.seen.length;
    const r = await tlsExchange(Number(b.inbound.split(':')[1]), { servername: `api.default.${TD}`, ca: [ca.root.pem], ...keyAndCert(other, SpiffeId.workload(TD, 'default', 'web')) }, 'GET / HTTP/1.1\r\nhost: api\r\n\r\n');
    assert.equal(r.received, '');
    assert.equal(api.seen.length, before);
  });

  it('refuses a certificate of the mesh CA that names another trust domain', async () => {
    const key = generatePrivateKey();
    const now = Date.now();
    const { der } = buildCertificate(
      { commonName: 'web', publicKey: createPublicKey(key), notBefore: new Date(now - 1000), notAfter: new Date(now + 3_600_000), isCA: false, uris: ['spiffe://other.local/ns/default/sa/web'] },
      { certDer: ca.root.x509.raw, key: createPrivateKeyFromCa(ca) },
    );
    const before = api.seen.length;
    const r = await tlsExchange(Number(b.inbound.split(':')[1]), { servername: `api.default.${TD}`, ca: [ca.root.pem], key: privateKeyToPem(key), cert: toPem(der, 'CERTIFICATE') }, 'GET / HTTP/1.1\r\nhost: api\r\n\r\n');
    assert.equal(r.received, '');
    assert.equal(api.seen.length, before);
    await b.proc.waitFor(/refused: peer identity is not a workload of this trust domain.*identity=spiffe:\/\/other\.local/);
  });

  it('refuses a node (agent) certificate as a workload caller', async () => {
    const r = await tlsExchange(Number(b.inbound.split(':')[1]), { servername: `api.default.${TD}`, ca: [ca.root.pem], ...keyAndCert(ca, SpiffeId.agent(TD, 'someagent')) }, 'GET / HTTP/1.1\r\nhost: api\r\n\r\n');
    assert.equal(r.received, '');
  });

  it('refuses, on the outbound side, an upstream that presents the wrong SPIFFE ID', async () => {
    impostorIdentity = 'evil';
    const bad = await tcpExchange(ports.billing, 'secret data', { endAfterWrite: false, timeoutMs: 5000 });
    assert.equal(bad.received.length, 0);
    assert.equal(bad.closed, true);
    // Agent A reached the impostor and refused it for its identity, not for any other reason.
    await a.proc.waitFor(/presented URI:spiffe:\/\/mesh\.local\/ns\/default\/sa\/evil, expected spiffe:\/\/mesh\.local\/ns\/default\/sa\/billing/);
    // Control: the same endpoint proving the expected identity carries the bytes.
    impostorIdentity = 'billing';
    const good = await tcpExchange(ports.billing, 'hello billing');
    assert.equal(good.received.toString(), 'hello billing');
  });

  it('closes connections that send garbage or plain HTTP to the inbound port, and keeps serving', async () => {
    const port = Number(b.inbound.split(':')[1]);
    const garbage = await tcpExchange(port, randomBytes(1024));
    assert.equal(garbage.closed, true);
    const plain = await tcpExchange(port, 'GET / HTTP/1.1\r\nhost: api\r\n\r\n');
    assert.equal(plain.closed, true);
    assert.doesNotMatch(plain.received.toString('latin1'), /HTTP\/1\.1 200/);
    assert.ok(b.proc.running);
    assert.equal((await callApi()).status, 200);
  });

  it('answers malformed HTTP inside the mTLS tunnel with 400, and keeps serving', async () => {
    const before = api.seen.length;
    const r = await tcpExchange(ports.api, 'THIS IS NOT HTTP\r\n\r\n');
    assert.match(r.received.toString(), /^HTTP\/1\.1 400 /);
    assert.equal(api.seen.length, before);
    assert.equal((await callApi()).status, 200);
  });
});

function createPrivateKeyFromCa(ca: CertificateAuthority): import('node:crypto').KeyObject {
  return require('node:crypto').createPrivateKey(ca.material.keyPem) as import('node:crypto').KeyObject;
}
