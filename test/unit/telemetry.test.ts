// Request telemetry without processes: Istio hops and their histograms, trace context on the wire, the OTLP exporter's
// bounded queue, access log modes, tap filters and the server's tap hub, local-answer facts and the config blocks.

import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { loadAgentConfig } from '../../src/agent/agent-config';
import { isMeshError } from '../../src/errors';
import { MAX_TAP_RECORDS, parseAgentMessage, parseServerMessage } from '../../src/protocol';
import { MAX_TAPS, mayCarry, TapHub, type TapTarget } from '../../src/server/tap-hub';
import { localAnswerFacts } from '../../src/proxy/http1/http1-telemetry';
import { simpleResponse } from '../../src/proxy/http1/http1-head';
import {
  AccessLog,
  DURATION_BUCKETS_MS,
  incomingContext,
  MeshTelemetry,
  MetricsRegistry,
  NO_FLAGS,
  OtlpExporter,
  outgoingHeaders,
  startSpan,
  tapMatches,
  type FinishedSpan,
  type HopLabels,
  type RequestRecord,
} from '../../src/telemetry';
import { tempDir } from '../helpers/processes';

const LABELS: HopLabels = {
  reporter: 'source',
  sourceWorkload: 'web',
  sourceNamespace: 'default',
  sourcePrincipal: 'spiffe://td/ns/default/sa/web',
  destinationWorkload: 'api',
  destinationService: 'api',
  destinationNamespace: 'default',
  destinationPrincipal: 'spiffe://td/ns/default/sa/api',
  protocol: 'http',
  mtls: true,
};

const headers = (h: Record<string, string>) => (n: string) => h[n];

describe('Istio metrics', () => {
  test('one hop per label set; requests counted per code and flags with cumulative, consistent histograms', () => {
    const r = new MetricsRegistry();
    const t = new MeshTelemetry(r);
    const hop = t.hop(LABELS);
    assert.equal(t.hop({ ...LABELS }), hop, 'the same labels give the same hop');
    for (const ms of [0.2, 3, 3, 70, 4000]) hop.request(200, NO_FLAGS, -1, ms, 120, 2000);
    hop.request(503, 'UH', -1, 0.1, 100, 80);
    const text = r.render();
    const base = 'reporter="source",source_workload="web",source_workload_namespace="default",source_principal="spiffe://td/ns/default/sa/web",destination_workload="api",destination_service_name="api",destination_service_namespace="default",destination_principal="spiffe://td/ns/default/sa/api",request_protocol="http"';
    assert.ok(text.includes(`istio_requests_total{${base},response_code="200",grpc_response_status="",response_flags="-",connection_security_policy="mutual_tls"} 5\n`), text);
    assert.ok(text.includes(`istio_requests_total{${base},response_code="503",grpc_response_status="",response_flags="UH",connection_security_policy="mutual_tls"} 1\n`));
    const le = (bound: string): number => {
      const line = text.split('\n').find((l) => l.startsWith(`istio_request_duration_milliseconds_bucket{${base},response_code="200",`) && l.includes(`,le="${bound}"}`))!;
      return Number(line.slice(line.lastIndexOf(' ') + 1));
    };
    assert.deepEqual([le('0.5'), le('1'), le('5'), le('100'), le('2500'), le('5000'), le('+Inf')], [1, 1, 3, 4, 4, 5, 5]);
    assert.match(text, /istio_request_bytes_sum\{[^}]*response_code="200"[^}]*\} 600\n/);
    const snap = t.snapshot();
    const ok = snap.find((s) => s.responseCode === 200)!;
    assert.equal(ok.requests, 5);
    assert.equal(ok.destination.service, 'api');
    assert.equal(ok.durationMs.counts.reduce((a, b) => a + b, 0), 5);
    assert.equal(ok.durationMs.bounds, DURATION_BUCKETS_MS);
    assert.equal(snap.find((s) => s.responseCode === 503)!.responseFlags, 'UH');
  });

  test('gRPC statuses and TCP connections get their own series', () => {
    const r = new MetricsRegistry();
    const t = new MeshTelemetry(r);
    const grpc = t.hop({ ...LABELS, protocol: 'grpc' });
    grpc.request(200, NO_FLAGS, 0, 1, 10, 10);
    grpc.request(200, NO_FLAGS, 14, 1, 10, 10);
    const tcp = t.hop({ ...LABELS, protocol: 'tcp', reporter: 'destination', mtls: false });
    tcp.tcpOpened();
    tcp.tcpClosed(30, 12);
    const text = r.render();
    assert.match(text, /istio_requests_total\{[^}]*request_protocol="grpc",response_code="200",grpc_response_status="14"[^}]*\} 1\n/);
    assert.match(text, /istio_requests_total\{[^}]*grpc_response_status="0"[^}]*\} 1\n/);
    assert.match(text, /istio_tcp_sent_bytes_total\{reporter="destination",[^}]*request_protocol="tcp",response_flags="-",connection_security_policy="none"\} 30\n/);
    assert.match(text, /istio_tcp_received_bytes_total\{[^}]*\} 12\n/);
    assert.match(text, /istio_tcp_connections_closed_total\{[^}]*\} 1\n/);
    assert.doesNotMatch(text, /istio_tcp_sent_bytes_total\{[^}]*response_code/);
  });

  test("a local answer's status and flags are read off its bytes", () => {
    assert.deepEqual(localAnswerFacts(simpleResponse(503, 'Service Unavailable', 'x\n', [['x-mesh-response-flags', 'UO'], ['x-mesh-overflow', 'max-requests']])), { status: 503, flags: 'UO' });
    assert.deepEqual(localAnswerFacts(simpleResponse(301, 'Moved Permanently', '', [['location', '/b']])), { status: 301, flags: NO_FLAGS });
  });
});

describe('trace context', () => {
  test('W3C traceparent first, then single b3, then multi-header B3; malformed or all-zero ids are ignored', () => {
    assert.deepEqual(incomingContext(headers({ traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01', 'x-b3-traceid': 'a'.repeat(32), 'x-b3-spanid': 'b'.repeat(16) })), {
      traceId: '0af7651916cd43dd8448eb211c80319c',
      parentSpanId: 'b7ad6b7169203331',
      sampled: true,
    });
    assert.deepEqual(incomingContext(headers({ b3: '80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-0' })), { traceId: '80f198ee56343ba864fe8b2a57d3eff7', parentSpanId: 'e457b5a2e4d86bd1', sampled: false });
    assert.deepEqual(incomingContext(headers({ 'x-b3-traceid': '463ac35c9f6413ad', 'x-b3-spanid': '0020000000000001', 'x-b3-sampled': '1' })), { traceId: '0000000000000000463ac35c9f6413ad', parentSpanId: '0020000000000001', sampled: true });
    assert.equal(incomingContext(headers({ traceparent: '00-00000000000000000000000000000000-b7ad6b7169203331-01' })), undefined);
    assert.equal(incomingContext(headers({ traceparent: 'garbage', 'x-b3-traceid': 'xyz', 'x-b3-spanid': '1' })), undefined);
  });

  test('a span keeps the trace and the sampling decision of its parent, or starts a root trace sampled by rate', () => {
    const child = startSpan(headers({ traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00' }), 1);
    assert.equal(child.traceId, '0af7651916cd43dd8448eb211c80319c');
    assert.equal(child.parentSpanId, 'b7ad6b7169203331');
    assert.equal(child.sampled, false, 'the parent said not sampled');
    assert.match(child.spanId, /^[0-9a-f]{16}$/);
    const root = startSpan(headers({}), 0);
    assert.equal(root.parentSpanId, '');
    assert.equal(root.sampled, false);
    assert.notEqual(startSpan(headers({}), 1).traceId, startSpan(headers({}), 1).traceId);
    assert.deepEqual(new Map(outgoingHeaders(child)), new Map([
      ['traceparent', `00-0af7651916cd43dd8448eb211c80319c-${child.spanId}-00`],
      ['x-b3-traceid', '0af7651916cd43dd8448eb211c80319c'],
      ['x-b3-spanid', child.spanId],
      ['x-b3-sampled', '0'],
      ['x-b3-parentspanid', 'b7ad6b7169203331'],
    ]));
  });
});

const span = (i: number): FinishedSpan => ({
  context: { traceId: 'a'.repeat(32), spanId: i.toString(16).padStart(16, '0'), parentSpanId: '', sampled: true },
  service: 'web',
  name: 'GET /x',
  kind: 'client',
  startMs: 1_700_000_000_000.5,
  endMs: 1_700_000_000_002,
  attributes: { 'http.status_code': 200, 'http.method': 'GET' },
  error: false,
});

describe('OTLP exporter', () => {
  test('batches spans as OTLP/HTTP JSON; a full queue drops and counts instead of waiting', async () => {
    const bodies: { resourceSpans: { resource: unknown; scopeSpans: { spans: Record<string, unknown>[] }[] }[] }[] = [];
    const collector = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        assert.equal(req.headers['content-type'], 'application/json');
        bodies.push(JSON.parse(Buffer.concat(chunks).toString()));
        res.end('{}');
      });
    });
    await new Promise<void>((r) => collector.listen(0, '127.0.0.1', r));
    try {
      const port = (collector.address() as { port: number }).port;
      const ex = new OtlpExporter({ endpoint: `http://127.0.0.1:${port}/v1/traces`, batchSize: 3, maxQueue: 4, flushIntervalMs: 60_000 });
      // The first 3 make a batch that goes at once; while it is in flight the queue takes 4 more and drops 3.
      for (let i = 1; i <= 10; i++) ex.add(span(i));
      assert.equal(ex.stats.dropped, 3);
      for (const deadline = Date.now() + 5000; ex.stats.exported < 7 && Date.now() < deadline; ) await new Promise((r) => setTimeout(r, 10));
      ex.close();
      for (const deadline = Date.now() + 5000; ex.stats.exported < 7 && Date.now() < deadline; ) await new Promise((r) => setTimeout(r, 10));
      assert.equal(ex.stats.exported, 7);
      const all = bodies.flatMap((b) => b.resourceSpans.flatMap((rs) => rs.scopeSpans.flatMap((s) => s.spans)));
      assert.equal(all.length, 7);
      assert.deepEqual(bodies[0]!.resourceSpans[0]!.resource, { attributes: [{ key: 'service.name', value: { stringValue: 'web' } }] });
      const first = all[0]!;
      assert.equal(first.spanId, '0000000000000001');
      assert.equal(first.kind, 3);
      assert.equal(first.startTimeUnixNano, '1700000000000500000');
      assert.equal(first.parentSpanId, undefined);
      assert.deepEqual(first.attributes, [
        { key: 'http.status_code', value: { intValue: '200' } },
        { key: 'http.method', value: { stringValue: 'GET' } },
      ]);
    } finally {
      collector.close();
    }
  });

  test('an unreachable collector costs the batch (counted) and nothing else', async () => {
    const problems: string[] = [];
    const ex = new OtlpExporter({ endpoint: 'http://127.0.0.1:1/v1/traces', batchSize: 2, maxQueue: 10, flushIntervalMs: 60_000 }, (why) => problems.push(why));
    ex.add(span(1));
    ex.add(span(2));
    for (const deadline = Date.now() + 5000; ex.stats.failedBatches === 0 && Date.now() < deadline; ) await new Promise((r) => setTimeout(r, 10));
    assert.equal(ex.stats.failedBatches, 1);
    assert.equal(ex.stats.dropped, 2);
    assert.equal(problems.length, 1);
  });
});

const record = (over: Partial<RequestRecord> = {}): RequestRecord => ({
  start_time: new Date(0).toISOString(),
  duration_ms: 1.5,
  reporter: 'source',
  protocol: 'http',
  source_principal: 'spiffe://td/ns/shop/sa/web',
  source_workload: 'web',
  source_namespace: 'shop',
  source_address: '127.0.0.1',
  destination_principal: 'spiffe://td/ns/shop/sa/api',
  destination_service: 'api',
  destination_namespace: 'shop',
  method: 'GET',
  path: '/v1/items?x=1',
  response_code: 200,
  response_flags: '-',
  bytes_received: 10,
  bytes_sent: 20,
  upstream_host: '10.0.0.2:15443',
  ...over,
});

describe('access log and taps', () => {
  test('on writes every record as a JSON line; sampled at 0 writes none; records reach only taps whose filter matches', async () => {
    const t = tempDir();
    try {
      const path = join(t.dir, 'access.log');
      const on = new AccessLog({ mode: 'on', sampleRate: 0, path });
      on.write(record());
      on.write(record({ response_code: 503, response_flags: 'UH' }));
      await on.close();
      const lines = readFileSync(path, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as RequestRecord);
      assert.deepEqual(lines.map((l) => [l.response_code, l.response_flags]), [[200, '-'], [503, 'UH']]);
      const none = new AccessLog({ mode: 'sampled', sampleRate: 0, path });
      for (let i = 0; i < 50; i++) none.write(record());
      await none.close();
      assert.equal(readFileSync(path, 'utf8').trim().split('\n').length, 2);
    } finally {
      t.cleanup();
    }
    assert.ok(tapMatches({ to: 'api', from: 'web.shop', pathPrefix: '/v1/' }, record()));
    assert.ok(tapMatches({ to: 'api.shop' }, record()));
    assert.ok(!tapMatches({ to: 'api.default' }, record()));
    assert.ok(!tapMatches({ from: 'billing' }, record()));
    assert.ok(!tapMatches({ pathPrefix: '/v2' }, record()));
  });

  test('records are built only while an access log is on or a tap runs', () => {
    const t = new MeshTelemetry(new MetricsRegistry());
    assert.equal(t.detailed, false);
    const seen: RequestRecord[] = [];
    const stop = t.tap({ to: 'api' }, (r) => seen.push(r));
    assert.equal(t.detailed, true);
    t.record(record());
    t.record(record({ destination_service: 'other' }));
    stop();
    assert.equal(t.detailed, false);
    assert.equal(seen.length, 1);
    const dir = tempDir();
    try {
      t.configure({ accessLog: { mode: 'on', sampleRate: 0, path: join(dir.dir, 'a.log') }, tracing: undefined });
      assert.equal(t.detailed, true, 'an access log wants records');
      t.configure({ accessLog: { mode: 'off', sampleRate: 0, path: undefined }, tracing: { endpoint: 'http://127.0.0.1:1/v1/traces', sampleRate: 1, batchSize: 10, maxQueue: 10, flushIntervalMs: 1000 } });
      assert.equal(t.detailed, false);
      assert.equal(t.tracing?.sampleRate, 1, 'tracing on: spans are made, records are not');
    } finally {
      void t.close();
      dir.cleanup();
    }
  });
});

describe('telemetry config', () => {
  const load = (yaml: string): ReturnType<typeof loadAgentConfig> => {
    const t = tempDir();
    try {
      const file = join(t.dir, 'agent.yaml');
      writeFileSync(file, yaml);
      return loadAgentConfig({ file, env: {} });
    } finally {
      t.cleanup();
    }
  };

  test('defaults: access log off, no tracing; the blocks read with their defaults', () => {
    const plain = load('nodeName: n1\n');
    assert.deepEqual(plain.accessLog, { mode: 'off', sampleRate: 0.01, path: undefined });
    assert.equal(plain.tracing, undefined);
    const c = load('accessLog: { mode: sampled, sampleRate: 0.25 }\ntracing: { otlpEndpoint: "http://127.0.0.1:4318/v1/traces", sampleRate: 0.5 }\n');
    assert.deepEqual(c.accessLog, { mode: 'sampled', sampleRate: 0.25, path: undefined });
    assert.deepEqual(c.tracing, { endpoint: 'http://127.0.0.1:4318/v1/traces', sampleRate: 0.5, batchSize: 100, maxQueue: 2048, flushIntervalMs: 1000 });
  });

  test('bad values are named with their field path', () => {
    assert.throws(
      () => load('accessLog: { mode: loud, sampleRate: 2 }\ntracing: { sampleRate: 0.5, extra: 1 }\n'),
      (e: unknown) =>
        isMeshError(e, 'MESH_ERR_CONFIG') &&
        /accessLog\.mode/.test(e.message) &&
        /accessLog\.sampleRate.*from 0 to 1/.test(e.message) &&
        /tracing\.otlpEndpoint.*required/.test(e.message) &&
        /tracing\.extra.*unknown field/.test(e.message),
    );
  });
});

describe('live tap plumbing', () => {
  const target = (agentId: string, services: string[], upstreams: string[], sent: string[], protocol = 3): TapTarget => ({
    agentId,
    protocol,
    services: services.map((name) => ({ name, namespace: 'default' })),
    upstreams: upstreams.map((name) => ({ name, namespace: 'default' })),
    send: (text) => sent.push(text),
  });

  test('a tap is asked only of agents that run or call the service; late agents are asked; records of a stopped tap are dropped', () => {
    const sentA: string[] = [];
    const sentB: string[] = [];
    const sentC: string[] = [];
    const targets = [target('a', ['web'], ['api'], sentA), target('b', ['api'], [], sentB), target('c', ['billing'], [], sentC), target('old', ['api'], [], [], 2)];
    const hub = new TapHub(() => targets);
    const got: unknown[] = [];
    const ready: string[] = [];
    const tap = hub.start({ to: 'api.default' }, { ready: (id) => ready.push(id), records: (id, r) => got.push([id, r.length]) });
    assert.equal(tap.asked, 2, 'a (calls api) and b (runs api); not c, not an agent of protocol 2');
    const start = parseServerMessage(sentA[0]!);
    assert.equal(start.type, 'tap-start');
    const id = (start as { id: string }).id;
    assert.deepEqual((start as { filter: unknown }).filter, { to: 'api.default' });
    hub.records('a', id, [], 0);
    hub.records('b', id, [{ path: '/x' }], 0);
    hub.records('c', id, [{ path: '/y' }], 0);
    assert.deepEqual(ready, ['a']);
    assert.deepEqual(got, [['b', 1]], 'c was never asked');
    const late = target('d', [], ['api'], []);
    targets.push(late);
    hub.agentJoined(late);
    tap.stop();
    assert.equal(parseServerMessage(sentB.at(-1)!).type, 'tap-stop');
    hub.records('b', id, [{ path: '/z' }], 0);
    assert.equal(got.length, 1);
    assert.equal(sentC.length, 0);
    assert.ok(mayCarry(target('x', ['web'], [], []), { from: 'web' }));
    assert.ok(!mayCarry(target('x', ['api'], [], []), { from: 'web' }));
  });

  test('taps are limited, and channel messages are checked', () => {
    const hub = new TapHub(() => []);
    for (let i = 0; i < MAX_TAPS; i++) hub.start({}, { ready() {}, records() {} });
    assert.throws(() => hub.start({}, { ready() {}, records() {} }), (e: unknown) => isMeshError(e, 'MESH_ERR_TAP_LIMIT'));
    const many = Array.from({ length: MAX_TAP_RECORDS + 1 }, () => ({}));
    assert.throws(() => parseAgentMessage(JSON.stringify({ type: 'tap-records', id: 'x', records: many })), (e: unknown) => isMeshError(e, 'MESH_ERR_BAD_REQUEST') && /at most 100/.test(e.message));
    assert.deepEqual(parseAgentMessage(JSON.stringify({ type: 'tap-records', id: 'x', records: [{ a: 1 }], dropped: 3 })), { type: 'tap-records', id: 'x', records: [{ a: 1 }], dropped: 3 });
    assert.throws(() => parseServerMessage(JSON.stringify({ type: 'tap-start', id: 'x', filter: { to: 5 } })), (e: unknown) => isMeshError(e, 'MESH_ERR_BAD_REQUEST') && /tap filter\.to/.test(e.message));
  });
});
