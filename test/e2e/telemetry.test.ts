// Data-plane telemetry through two real agents: Istio metrics after known traffic, JSON access logs, and trace spans
// (OTLP/HTTP JSON to an in-test collector) linked parent to child from the caller through both agents to the app.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { request } from 'undici';
import { startEchoApp, startHttpApp, tcpExchange } from '../helpers/apps';
import { agentMetrics, metricSample, TestMesh, type AgentHandle, type ServerHandle } from '../helpers/mesh';
import { freePort, meshAgent } from '../helpers/processes';

interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: number;
  attributes: { key: string; value: { stringValue?: string; intValue?: string } }[];
}

async function until<T>(what: string, f: () => Promise<T | undefined> | T | undefined, timeoutMs = 15_000): Promise<T> {
  for (const deadline = Date.now() + timeoutMs; ; await new Promise((r) => setTimeout(r, 50))) {
    const v = await f();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
  }
}

const metrics = agentMetrics;
const sample = metricSample;

describe('data-plane telemetry', () => {
  const mesh = new TestMesh();
  const spans: OtlpSpan[] = [];
  let collector: Server;
  let api: Awaited<ReturnType<typeof startHttpApp>>;
  let echo: Awaited<ReturnType<typeof startEchoApp>>;
  let a: AgentHandle;
  let b: AgentHandle;
  let server: ServerHandle;
  const ports = { api: 0, echo: 0, nowhere: 0 };
  const logFile = (): string => join(mesh.root, 'a-access.log');

  before(async () => {
    collector = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const body = JSON.parse(Buffer.concat(chunks).toString()) as { resourceSpans: { scopeSpans: { spans: OtlpSpan[] }[] }[] };
        for (const rs of body.resourceSpans) for (const ss of rs.scopeSpans) spans.push(...ss.spans);
        res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      });
    });
    await new Promise<void>((r) => collector.listen(0, '127.0.0.1', r));
    const otlp = `http://127.0.0.1:${(collector.address() as { port: number }).port}/v1/traces`;
    const tracing = `tracing: { otlpEndpoint: "${otlp}", flushInterval: 50ms }\n`;
    server = await mesh.startServer();
    api = await startHttpApp('api');
    echo = await startEchoApp();
    b = await mesh.startAgent(
      'node-b',
      mesh.writeConfig('b.yaml', `inbound: { listen: "127.0.0.1:0" }\nadmin: { listen: "127.0.0.1:0" }\n${tracing}services:\n  - { name: api, port: ${api.port}, protocol: http }\n  - { name: echo, port: ${echo.port}, protocol: tcp }\n`),
      { join: await mesh.token(server) },
    );
    const inbound = b.inbound.split(':')[1];
    mesh.writeConfig('endpoints.yaml', `services:\n  api: [{ address: 127.0.0.1, port: ${inbound} }]\n  echo: [{ address: 127.0.0.1, port: ${inbound} }]\n  nowhere: []\n`);
    ports.api = await freePort();
    ports.echo = await freePort();
    ports.nowhere = await freePort();
    a = await mesh.startAgent(
      'node-a',
      mesh.writeConfig(
        'a.yaml',
        `inbound: { listen: "127.0.0.1:0" }\nadmin: { listen: "127.0.0.1:0" }\nendpointsFile: {{root}}/endpoints.yaml\naccessLog: { mode: on, path: a-access.log }\n${tracing}` +
          `services:\n  - name: web\n    port: 1\n    protocol: http\n    upstreams:\n      - { service: api, port: ${ports.api}, protocol: http }\n      - { service: echo, port: ${ports.echo} }\n      - { service: nowhere, port: ${ports.nowhere}, protocol: http }\n`,
      ),
      { join: await mesh.token(server) },
    );
    // Known traffic: three requests to api (one with a parent trace), one with no healthy upstream, one TCP exchange.
    for (let i = 0; i < 2; i++) assert.equal((await request(`http://127.0.0.1:${ports.api}/hello?i=${i}`)).statusCode, 200);
    const traced = await request(`http://127.0.0.1:${ports.api}/traced`, { headers: { traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01', tracestate: 'vendor=x' } });
    assert.equal(traced.statusCode, 200);
    await traced.body.dump();
    const none = await request(`http://127.0.0.1:${ports.nowhere}/x`);
    assert.equal(none.statusCode, 503);
    await none.body.dump();
    const tcp = await tcpExchange(ports.echo, 'twelve bytes', { endAfterWrite: true });
    assert.equal(tcp.received.toString(), 'twelve bytes');
  });

  after(async () => {
    api?.server.close();
    echo?.server.close();
    collector?.close();
    await mesh.close();
  });

  it('counts requests with Istio names and labels on both sides, exactly, with consistent histograms', async () => {
    const source = { reporter: 'source', source_workload: 'web', source_workload_namespace: 'default', source_principal: 'spiffe://mesh.local/ns/default/sa/web' };
    const toApi = { destination_workload: 'api', destination_service_name: 'api', destination_service_namespace: 'default', destination_principal: 'spiffe://mesh.local/ns/default/sa/api' };
    const ok = { request_protocol: 'http', response_code: '200', grpc_response_status: '', response_flags: '-', connection_security_policy: 'mutual_tls' };
    const textA = await metrics(a);
    assert.equal(sample(textA, 'istio_requests_total', { ...source, ...toApi, ...ok }), 3, textA);
    assert.equal(sample(textA, 'istio_requests_total', { ...source, destination_service_name: 'nowhere', response_code: '503', response_flags: 'UH' }), 1);
    // The histogram: cumulative buckets never decrease, +Inf equals _count equals the request count.
    const bucketLines = textA.split('\n').filter((l) => l.startsWith('istio_request_duration_milliseconds_bucket{') && l.includes('destination_service_name="api"') && l.includes('reporter="source"'));
    const counts = bucketLines.map((l) => Number(l.slice(l.lastIndexOf(' ') + 1)));
    assert.equal(counts.length, 20, '19 bounds and +Inf');
    for (let i = 1; i < counts.length; i++) assert.ok(counts[i]! >= counts[i - 1]!, `bucket ${i} is cumulative`);
    assert.equal(counts.at(-1), 3);
    assert.equal(sample(textA, 'istio_request_duration_milliseconds_count', { ...source, ...toApi, ...ok }), 3);
    assert.ok(sample(textA, 'istio_response_bytes_sum', { ...source, ...toApi, ...ok })! > 3 * 100, 'response bytes counted');
    // TCP on the caller's side: one connection, its bytes each way.
    const tcp = { ...source, destination_service_name: 'echo', request_protocol: 'tcp' };
    await until('the TCP connection closed on A', async () => (sample(await metrics(a), 'istio_tcp_connections_closed_total', tcp) === 1 ? true : undefined));
    const textA2 = await metrics(a);
    assert.equal(sample(textA2, 'istio_tcp_connections_opened_total', tcp), 1);
    assert.equal(sample(textA2, 'istio_tcp_sent_bytes_total', tcp), 12);
    assert.equal(sample(textA2, 'istio_tcp_received_bytes_total', tcp), 12);
    // The callee's side sees the verified caller identity over mTLS.
    const textB = await metrics(b);
    assert.equal(sample(textB, 'istio_requests_total', { reporter: 'destination', source_workload: 'web', source_principal: 'spiffe://mesh.local/ns/default/sa/web', ...toApi, ...ok }), 3, textB);
    assert.equal(sample(textB, 'istio_tcp_connections_opened_total', { reporter: 'destination', destination_service_name: 'echo', connection_security_policy: 'mutual_tls' }), 1);
  });

  it("reports the agent's own health: certificate expiry, policy version, retries and overflows, event-loop lag, RSS", async () => {
    const text = await metrics(a);
    const webExpiry = sample(text, 'mesh_certificate_expiry_seconds', { identity: 'spiffe://mesh.local/ns/default/sa/web', kind: 'workload' });
    assert.ok(webExpiry !== undefined && webExpiry > 60, `the web certificate expires in the future (${webExpiry})`);
    assert.equal(Number(/^mesh_policy_version (\d+)$/m.exec(text)?.[1]), 0, 'no mesh policy pushed yet');
    assert.equal(Number(/^mesh_policy_nacks_total (\d+)$/m.exec(text)?.[1]), 0);
    assert.match(text, /^mesh_retries_total\{upstream="[^"]*api[^"]*"\} 0$/m);
    assert.match(text, /^mesh_circuit_breaker_overflows_total\{upstream="[^"]*api[^"]*",kind="requests"\} 0$/m);
    assert.match(text, /^mesh_event_loop_lag_seconds\{quantile="0.99"\} [\d.e-]+$/m);
    assert.ok(Number(/^process_resident_memory_bytes (\d+)$/m.exec(text)?.[1]) > 10_000_000);
  });

  it('writes one JSON access log line per request and connection, with Envoy fields and flags', async () => {
    const lines = await until('five access log lines', () => {
      const l = readFileSync(logFile(), 'utf8').split('\n').filter(Boolean);
      return l.length >= 5 ? l.map((x) => JSON.parse(x) as Record<string, unknown>) : undefined;
    });
    assert.equal(lines.length, 5);
    const hello = lines.find((l) => l.path === '/hello?i=0')!;
    assert.equal(hello.method, 'GET');
    assert.equal(hello.response_code, 200);
    assert.equal(hello.response_flags, '-');
    assert.equal(hello.reporter, 'source');
    assert.equal(hello.source_principal, 'spiffe://mesh.local/ns/default/sa/web');
    assert.equal(hello.destination_service, 'api');
    assert.equal(hello.upstream_host, `127.0.0.1:${b.inbound.split(':')[1]}`);
    assert.equal(hello.attempts, 1);
    assert.equal(hello.authority, `127.0.0.1:${ports.api}`);
    assert.ok(typeof hello.duration_ms === 'number' && typeof hello.bytes_sent === 'number' && (hello.bytes_sent as number) > 100);
    assert.ok(!Number.isNaN(Date.parse(hello.start_time as string)));
    const uh = lines.find((l) => l.destination_service === 'nowhere')!;
    assert.equal(uh.response_code, 503);
    assert.equal(uh.response_flags, 'UH');
    assert.equal(uh.upstream_host, '');
    const tcp = lines.find((l) => l.protocol === 'tcp')!;
    assert.equal(tcp.bytes_received, 12);
    assert.equal(tcp.method, undefined);
  });

  it('exports client and server spans linked parent to child from the caller through both agents to the app', async () => {
    const trace = '0af7651916cd43dd8448eb211c80319c';
    const [client, server] = await until('both spans of the traced request', () => {
      const mine = spans.filter((s) => s.traceId === trace);
      const c = mine.find((s) => s.kind === 3);
      const sv = mine.find((s) => s.kind === 2);
      return c && sv ? [c, sv] : undefined;
    });
    assert.equal(client.parentSpanId, 'b7ad6b7169203331', "A's client span is a child of the caller's span");
    assert.equal(server.parentSpanId, client.spanId, "B's server span is a child of A's client span");
    assert.match(client.name, /\/traced$/);
    const appSaw = api.seen.find((h) => h.traceparent?.includes(trace))!;
    assert.equal(appSaw.traceparent, `00-${trace}-${server.spanId}-01`, 'the app sees B\'s span as its parent');
    assert.equal(appSaw.tracestate, 'vendor=x');
    assert.equal(appSaw['x-b3-traceid'], trace);
    assert.equal(appSaw['x-b3-parentspanid'], client.spanId);
    // Requests without a parent start their own traces, each with a client and a server span.
    const roots = spans.filter((s) => s.kind === 3 && s.traceId !== trace && s.name.includes('/hello'));
    assert.equal(roots.length, 2);
    for (const r of roots) {
      assert.equal(r.parentSpanId, undefined);
      assert.ok(spans.some((s) => s.kind === 2 && s.parentSpanId === r.spanId));
    }
  });

  it('taps live requests through the server from the agents that carry them, and stops when the tap ends', async () => {
    // Request summaries are admin data: no token, no tap.
    const anonymous = await request(`http://${server.adminAddr}/v1/tap?to=api`);
    assert.equal(anonymous.statusCode, 401, 'GET /v1/tap without the admin token');
    await anonymous.body.text();
    const tap = mesh.track(meshAgent('tap', ['tap', '--to', 'api', '--path', '/tapped', '--count', '1', '-o', 'json', '--admin', server.adminAddr, '--data-dir', server.dataDir]));
    await tap.waitFor(/tapping 2 agent\(s\) \(2 started\)/);
    assert.equal((await request(`http://127.0.0.1:${ports.api}/untapped`)).statusCode, 200, 'a request the filter does not select');
    const res = await request(`http://127.0.0.1:${ports.api}/tapped/1`);
    assert.equal(res.statusCode, 200);
    await res.body.dump();
    assert.equal(await tap.exited, 0, tap.stderr);
    const lines = tap.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.equal(lines.length, 1);
    assert.equal(lines[0]!.path, '/tapped/1');
    assert.equal(lines[0]!.destination_service, 'api');
    assert.equal(lines[0]!.source_workload, 'web');
    assert.equal(lines[0]!.response_code, 200);
    // The CLI left: the server stops the tap on both agents, which stop building records.
    for (const agent of [a, b]) await until('the tap stopped on the agent', async () => (/^mesh_taps_active 0$/m.test(await metrics(agent)) ? true : undefined));
  });
});
