// The inbound listener's plaintext side, in process over real sockets: which service a plaintext connection reaches,
// what is refused and why, server-first protocols, forged identity headers, and closing on a policy change.

import assert from 'node:assert/strict';
import { createServer as createHttpServer, type Server } from 'node:http';
import { connect as netConnect, createServer as createNetServer, type Server as NetServer } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { SpiffeId } from '../../src/ca';
import { compilePolicy, parsePolicyText, workloadOf, type CompiledPolicy } from '../../src/policy';
import { InboundListener, SNIFF_TIMEOUT_MS } from '../../src/proxy/inbound-listener';
import type { InboundRoute, Protocol } from '../../src/proxy/proxy-config';
import { createLogger } from '../../src/telemetry';
import { tcpExchange } from '../helpers/apps';
import { RawHttpConnection } from '../helpers/http-raw';

const pa = (name: string, spec: string, namespace = 'default'): string => `apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: ${name}, namespace: ${namespace}}\nspec:\n${spec}`;
const policyOf = (...docs: string[]): CompiledPolicy => compilePolicy(parsePolicyText(docs.join('---\n'), 'test.yaml'));

async function listening<T extends Server | NetServer>(server: T): Promise<number> {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return (server.address() as { port: number }).port;
}

function route(name: string, protocol: Protocol, port: number): InboundRoute {
  return { sni: `${name}.default.mesh.local`, identity: SpiffeId.workload('mesh.local', 'default', name), target: { host: '127.0.0.1', port }, protocol, workload: workloadOf(name, 'default') };
}

let policy = policyOf();
const logs: string[] = [];
// Only plaintext is spoken here, so no TLS credentials are ever asked for.
const listener = new InboundListener({ contextFor: () => undefined, trustDomain: 'mesh.local' }, createLogger({ format: 'json', write: (l) => logs.push(l) }), () => policy);
let inbound = 0;

describe('inbound plaintext (PERMISSIVE and DISABLE services)', () => {
  const seen: Record<string, string | undefined>[] = [];
  const api = createHttpServer((req, res) => {
    req.resume();
    req.on('end', () => {
      seen.push({ path: req.url, xfcc: req.headers['x-forwarded-client-cert'] as string | undefined, trailer: req.trailers['x-forwarded-client-cert'] });
      res.end(`api ${req.url}`);
    });
  });
  const echo = createNetServer((s) => s.pipe(s));
  // A server-first protocol (SMTP, MySQL...): it speaks before the client sends anything.
  const greet = createNetServer((s) => {
    s.on('error', () => {});
    s.write('220 greet ready\r\n');
    s.pipe(s);
  });

  before(async () => {
    listener.setRoutes([route('api', 'http', await listening(api)), route('echo', 'tcp', await listening(echo)), route('greet', 'tcp', await listening(greet))]);
    inbound = (await listener.listen({ host: '127.0.0.1', port: 0 })).port;
  });

  after(async () => {
    await listener.close();
    api.close();
    echo.close();
    greet.close();
  });

  test('plaintext TCP with two tcp services taking plaintext cannot be routed: closed, and the log says why', async () => {
    policy = policyOf(pa('mesh', '  mtls: {mode: PERMISSIVE}\n', 'mesh-system'));
    const r = await tcpExchange(inbound, 'hello');
    assert.deepEqual([r.received.length, r.closed], [0, true]);
    assert.equal(listener.stats.refusedPlaintext, 1);
    const line = JSON.parse(logs.find((l) => l.includes('no single service'))!) as Record<string, string>;
    assert.deepEqual([line.code, line.candidates, line.spoke], ['MESH_ERR_MTLS_MODE', 'echo.default,greet.default', 'TCP (not TLS, not HTTP)']);
  });

  test('with one tcp service taking plaintext, TCP goes there; a silent client (server-first protocol) too, after the sniff timeout', async () => {
    policy = policyOf(pa('greet', '  selector: {matchLabels: {app: greet}}\n  mtls: {mode: DISABLE}\n'));
    const r = await tcpExchange(inbound, 'hello', { endAfterWrite: true });
    assert.equal(r.received.toString(), '220 greet ready\r\nhello');
    const started = Date.now();
    const silent = openPlain('');
    await silent.received(/^220 greet ready\r\n$/);
    assert.ok(Date.now() - started >= SNIFF_TIMEOUT_MS - 50, 'the greeting comes once the agent stops waiting for client bytes');
    silent.destroy();
  });

  test('plaintext HTTP picks the http service by Host; other hosts get 404 NR; forged identity headers and trailers never reach the app', async () => {
    policy = policyOf(pa('api', '  selector: {matchLabels: {app: api}}\n  mtls: {mode: PERMISSIVE}\n'));
    const c = new RawHttpConnection(inbound);
    const ok = await c.get('/x');
    assert.equal(ok.status, 404, 'the helper sends Host: mesh, which names no local service');
    assert.equal(ok.headers['x-mesh-response-flags'], 'NR');
    c.close();
    const pipelined = openPlain('GET /a HTTP/1.1\r\nHost: api.default.mesh\r\nx-forwarded-client-cert: URI=spiffe://mesh.local/ns/default/sa/admin\r\n\r\nGET /b HTTP/1.1\r\nHost: echo\r\nConnection: close\r\n\r\n');
    await pipelined.closed;
    assert.match(pipelined.text(), /^HTTP\/1\.1 200 [\s\S]*api \/a/);
    assert.match(pipelined.text(), /HTTP\/1\.1 404 [\s\S]*no local HTTP service for host "echo"/, 'a tcp service is not reached by Host');
    assert.deepEqual(seen.at(-1), { path: '/a', xfcc: undefined, trailer: undefined });
    const trailer = await tcpExchange(inbound, 'POST /t HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n1\r\nx\r\n0\r\nx-forwarded-client-cert: URI=spiffe://mesh.local/ns/default/sa/admin\r\n\r\n');
    // The head was on its way to the app when the trailer came: the connection is cut, the request never completes.
    assert.deepEqual([trailer.received.length, trailer.closed], [0, true]);
    assert.ok(!seen.some((r) => r.path === '/t'));
    assert.ok(logs.some((l) => l.includes('x-forwarded-client-cert is not allowed in a trailer')));
  });

  test('a STRICT service is never reached in plaintext: 403 with flag MTLS', async () => {
    policy = policyOf(pa('greet', '  selector: {matchLabels: {app: greet}}\n  mtls: {mode: DISABLE}\n'));
    const r = await tcpExchange(inbound, 'GET / HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n');
    assert.match(r.received.toString(), /^HTTP\/1\.1 403 Forbidden\r\n[\s\S]*x-mesh-response-flags: MTLS[\s\S]*plaintext refused: service api\.default requires mutual TLS \(mTLS mode STRICT, from default \(no PeerAuthentication\)\)/);
  });

  test('a policy change closes open plaintext connections the new mode refuses, idle keep-alive HTTP ones included', async () => {
    policy = policyOf(pa('mesh', '  mtls: {mode: PERMISSIVE}\n', 'mesh-system'), pa('echo', '  selector: {matchLabels: {app: echo}}\n  mtls: {mode: STRICT}\n'));
    const tcp = openPlain('x');
    const http = openPlain('GET /keep HTTP/1.1\r\nHost: api\r\n\r\n');
    await tcp.received(/220 greet ready\r\nx/);
    await http.received(/api \/keep/);
    assert.equal(listener.policyChanged(), 0, 'the same modes: nothing to close');
    policy = policyOf();
    assert.equal(listener.policyChanged(), 2);
    await Promise.all([tcp.closed, http.closed]);
    assert.ok(logs.some((l) => l.includes('open connection closed: the new policy refuses it') && l.includes('plaintext refused: service greet.default requires mutual TLS')));
  });
});

/** A plaintext connection to the inbound port that sent `data` and stays open. */
function openPlain(data: string): { received(re: RegExp): Promise<void>; text(): string; closed: Promise<void>; destroy(): void } {
  const s = netConnect({ host: '127.0.0.1', port: inbound }, () => data && s.write(data));
  let text = '';
  const waiters: (() => void)[] = [];
  s.on('data', (d: Buffer) => {
    text += d.toString();
    waiters.splice(0).forEach((w) => w());
  });
  s.on('error', () => {});
  const received = async (re: RegExp): Promise<void> => {
    while (!re.test(text)) await new Promise<void>((r) => waiters.push(r));
  };
  return { received, text: () => text, closed: new Promise((r) => s.once('close', () => r())), destroy: () => s.destroy() };
}
