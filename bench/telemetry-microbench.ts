// Micro-benchmark of per-request telemetry on the HTTP/1 path: ns per request for what a session pays with metrics
// on (begin + two byte counts + end: clock reads, a Map lookup, a counter and three histogram observations), and with
// an access log or a tap on (a record built per request), against the bare Hop.request.
// Run: npx tsc -p . && node dist/bench/telemetry-microbench.js [requestsPerRound]
// Each row is the median of 7 rounds after a warm-up.

import { parseHead } from '../src/proxy/http1/http1-head';
import { Http1Telemetry } from '../src/proxy/http1/http1-telemetry';
import { MeshTelemetry, MetricsRegistry, NO_FLAGS, type HopLabels } from '../src/telemetry';

const N = Number(process.argv[2] ?? 1_000_000);
const ROUNDS = 7;
const LABELS: HopLabels = {
  reporter: 'source',
  sourceWorkload: 'web',
  sourceNamespace: 'default',
  sourcePrincipal: 'spiffe://mesh.local/ns/default/sa/web',
  destinationWorkload: 'api',
  destinationService: 'api',
  destinationNamespace: 'default',
  destinationPrincipal: 'spiffe://mesh.local/ns/default/sa/api',
  protocol: 'http',
  mtls: true,
};
const head = parseHead(Buffer.from('GET /items/42?x=1 HTTP/1.1\r\nHost: api\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n', 'latin1'), 0, 'request')!;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1]!;
}

function measure(body: (i: number) => void): number {
  for (let i = 0; i < Math.min(N, 200_000); i++) body(i);
  const rounds: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < N; i++) body(i);
    rounds.push(Number(process.hrtime.bigint() - t0) / N);
  }
  return median(rounds);
}

const t = new MeshTelemetry(new MetricsRegistry());
const hop = t.hop(LABELS);
const session = new Http1Telemetry({ telemetry: t, hop }, '127.0.0.1');
const request = (i: number): void => {
  session.begin(head);
  session.requestBytes += 0;
  session.responseBytes += 1100;
  session.end(i % 100 === 0 ? 503 : 200, NO_FLAGS, undefined, 1);
};
const rows: [string, number][] = [];
rows.push(['Hop.request alone (metrics of one request)', measure((i) => hop.request(i % 100 === 0 ? 503 : 200, NO_FLAGS, -1, (i % 50) * 0.3, 80, 1100))]);
rows.push(['session telemetry, metrics only (the default)', measure(request)]);
const stop = t.tap({ to: 'nobody' }, () => {});
rows.push(['session telemetry with a record per request (a tap or access log on)', measure(request)]);
stop();
for (const [name, ns] of rows) console.log(`${name.padEnd(72)} ${ns.toFixed(0).padStart(6)} ns/request`);
