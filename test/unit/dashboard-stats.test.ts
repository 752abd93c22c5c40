// The dashboard's numbers, without processes: the agent's request aggregator, the stats message's checks, the server's
// sliding window (counts, rates, percentiles, expiry) and the one-time login codes.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { EventEmitter } from 'node:events';
import { StatsReporter } from '../../src/agent/stats-reporter';
import { isMeshError } from '../../src/errors';
import { parseAgentMessage, type AgentMessage, type StatsMessage } from '../../src/protocol';
import { DashboardLogins, LOGIN_CODE_TTL_MS, SESSION_COOKIE, SESSION_TTL_MS } from '../../src/server/dashboard-login';
import { quantileMs, TrafficWindow } from '../../src/server/traffic-window';
import { LATENCY_BUCKETS_MS, MAX_REQUEST_SERIES, RequestAggregator } from '../../src/telemetry';

const web = { name: 'web', namespace: 'default' };
const api = { name: 'api', namespace: 'default' };
const db = { name: 'db', namespace: 'data' };

function message(stats: RequestAggregator): StatsMessage {
  const { series, dropped } = stats.take();
  return { type: 'stats', version: '0.1.0', intervalMs: 2000, series, dropped, certificates: [] };
}

describe('RequestAggregator (agent)', () => {
  test('counts per source, destination and code, with histogram buckets that add up, and take() resets', () => {
    const stats = new RequestAggregator();
    const edge = stats.edge(web, api);
    for (let i = 0; i < 7; i++) edge.record(200, 3);
    edge.record(503, 40);
    stats.record(web, api, 200, 0.5);
    stats.record(api, db, 0, 4_000_000);
    const { series, dropped } = stats.take();
    assert.equal(dropped, 0);
    const ok = series.find((s) => s.destination.name === 'api' && s.code === 200)!;
    assert.equal(ok.count, 8);
    assert.equal(ok.buckets[0], 1, '0.5 ms is in the first bucket (<= 0.5 ms)');
    assert.equal(ok.buckets[LATENCY_BUCKETS_MS.indexOf(5)], 7, '3 ms is in the (1, 5] bucket');
    assert.equal(ok.sumMs, 21.5);
    const failed = series.find((s) => s.code === 503)!;
    assert.equal(failed.count, 1);
    const none = series.find((s) => s.code === 0)!;
    assert.deepEqual(none.source, api);
    assert.equal(none.buckets[LATENCY_BUCKETS_MS.length], 1, 'above the last bound goes to the extra bucket');
    for (const s of series) assert.equal(s.buckets.reduce((a, b) => a + b, 0), s.count);
    assert.deepEqual(stats.take(), { series: [], dropped: 0 }, 'a second take has nothing');
    edge.record(200, 1);
    assert.equal(stats.take().series.length, 1, 'an edge kept by the caller still records after a take');
  });

  test('holds at most MAX_REQUEST_SERIES series between takes and counts what it drops', () => {
    const stats = new RequestAggregator();
    const edge = stats.edge(web, api);
    for (let code = 100; code < 100 + MAX_REQUEST_SERIES + 5; code++) edge.record(code, 1);
    edge.record(100, 1); // an existing series still counts
    const { series, dropped } = stats.take();
    assert.equal(series.length, MAX_REQUEST_SERIES);
    assert.equal(dropped, 5);
    assert.equal(series.find((s) => s.code === 100)!.count, 2);
  });
});

describe('StatsReporter (agent)', () => {
  test('sends only to a server of protocol 3 or later, and keeps the counts until it can', () => {
    const sent: AgentMessage[] = [];
    const channel = Object.assign(new EventEmitter(), { connected: true, send: (m: AgentMessage) => sent.push(m) });
    const stats = new RequestAggregator();
    const reporter = new StatsReporter({ stats, channel, certificates: () => [{ spiffeId: 'spiffe://mesh.local/ns/default/sa/web', notAfter: '2030-01-01T00:00:00.000Z' }], now: () => 0, intervalMs: 3_600_000 });
    reporter.start();
    try {
      stats.record(web, api, 200, 1);
      channel.emit('welcome', { protocol: 2 });
      assert.deepEqual(sent, [], 'a protocol 2 server would answer an unknown message with an error');
      channel.emit('welcome', { protocol: 3 });
      assert.equal(sent.length, 1);
      const msg = sent[0] as StatsMessage;
      assert.equal(msg.series[0]!.count, 1, 'what was recorded before the server could take it is not lost');
      assert.equal(msg.certificates.length, 1);
      channel.emit('disconnected');
      stats.record(web, api, 200, 1);
      channel.emit('welcome', { protocol: 3 });
      assert.equal((sent[1] as StatsMessage).series[0]!.count, 1);
    } finally {
      reporter.close();
    }
  });
});

describe('stats message (protocol 3)', () => {
  test('what the aggregator takes goes through the parser unchanged', () => {
    const stats = new RequestAggregator();
    stats.record(web, api, 200, 4);
    const msg = { ...message(stats), certificates: [{ spiffeId: 'spiffe://mesh.local/ns/default/sa/web', notAfter: '2030-01-01T00:00:00.000Z' }] };
    assert.deepEqual(parseAgentMessage(JSON.stringify(msg)), msg);
  });

  test('bad fields are refused by name', () => {
    const stats = new RequestAggregator();
    stats.record(web, api, 200, 4);
    const good = message(stats);
    const s0 = good.series[0]!;
    const cases: [unknown, RegExp][] = [
      [{ ...good, series: 'x' }, /stats\.series must be a list/],
      [{ ...good, intervalMs: -1 }, /stats\.intervalMs/],
      [{ ...good, series: [{ ...s0, code: 1000 }] }, /series\[0\]\.code/],
      [{ ...good, series: [{ ...s0, count: 0 }] }, /series\[0\]\.count/],
      [{ ...good, series: [{ ...s0, buckets: [1] }] }, /series\[0\]\.buckets must be 20 counts/],
      [{ ...good, series: [{ ...s0, count: 2 }] }, /series\[0\]\.buckets must add up to count \(2\)/],
      [{ ...good, series: [{ ...s0, source: { name: 'Web!', namespace: 'default' } }] }, /series\[0\]\.source/],
      [{ ...good, dropped: 'many' }, /stats\.dropped/],
      [{ ...good, certificates: [{ spiffeId: 'x', notAfter: 'soon' }] }, /certificates\[0\]/],
      [{ ...good, series: new Array(MAX_REQUEST_SERIES + 1).fill(s0) }, /at most 500/],
    ];
    for (const [msg, why] of cases) {
      assert.throws(() => parseAgentMessage(JSON.stringify(msg)), (err: unknown) => isMeshError(err, 'MESH_ERR_BAD_REQUEST') && why.test(err.message), `expected ${why}`);
    }
  });
});

describe('TrafficWindow (server)', () => {
  test('adds up several agents exactly, per service and per edge, with 5xx and no-answer as errors', () => {
    let now = 1_000_000;
    const w = new TrafficWindow(() => now, 60_000);
    const a = new RequestAggregator();
    for (let i = 0; i < 90; i++) a.record(web, api, 200, 8);
    for (let i = 0; i < 6; i++) a.record(web, api, 503, 30);
    a.record(web, api, 404, 2);
    w.add(message(a));
    now += 2000;
    const b = new RequestAggregator();
    for (let i = 0; i < 3; i++) b.record(api, db, 0, 5000);
    b.record(api, db, 200, 1);
    w.add(message(b));
    const svc = w.services();
    assert.deepEqual({ ...svc.get('api')!, p50Ms: null, p99Ms: null }, { requests: 97, errors: 6, rps: 1.617, errorRatio: 0.0619, p50Ms: null, p99Ms: null, codes: { 200: 90, 404: 1, 503: 6 } });
    assert.equal(svc.get('db.data')!.requests, 4);
    assert.equal(svc.get('db.data')!.errors, 3);
    const edges = w.edges();
    assert.deepEqual(
      edges.map((e) => [e.source, e.destination, e.requests, e.errors]),
      [
        ['web', 'api', 97, 6],
        ['api', 'db.data', 4, 3],
      ],
    );
    now += 59_000;
    assert.deepEqual([...w.services().keys()], ['db.data'], 'the first message left the window 60 s after it came');
    now += 2000;
    assert.equal(w.edges().length, 0);
  });

  test('percentiles interpolate inside the bucket that holds them', () => {
    const n = LATENCY_BUCKETS_MS.length + 1;
    const buckets = new Array<number>(n).fill(0);
    buckets[LATENCY_BUCKETS_MS.indexOf(10)] = 100; // all in (5, 10]
    assert.equal(quantileMs(0.5, buckets), 7.5);
    assert.equal(quantileMs(0.99, buckets), 9.95);
    buckets[n - 1] = 100; // half above the last bound
    assert.equal(quantileMs(0.99, buckets), LATENCY_BUCKETS_MS[LATENCY_BUCKETS_MS.length - 1]);
    assert.equal(quantileMs(0.5, new Array<number>(n).fill(0)), null);
  });
});

describe('dashboard login codes', () => {
  test('a code works once and within its time; the session it gives is checked from the Cookie header', () => {
    let now = 0;
    const logins = new DashboardLogins(() => now);
    const { code } = logins.newCode();
    const session = logins.redeem(code);
    assert.ok(session);
    assert.equal(logins.redeem(code), undefined, 'a second use is refused');
    assert.equal(logins.hasSession(`other=1; ${SESSION_COOKIE}=${session}`), true);
    assert.equal(logins.hasSession(`${SESSION_COOKIE}=${session}x`), false);
    assert.equal(logins.hasSession(undefined), false);
    assert.match(DashboardLogins.cookie(session), /HttpOnly; SameSite=Strict/);
    const late = logins.newCode().code;
    now += LOGIN_CODE_TTL_MS + 1;
    assert.equal(logins.redeem(late), undefined, 'an expired code is refused');
    now += SESSION_TTL_MS;
    assert.equal(logins.hasSession(`${SESSION_COOKIE}=${session}`), false, 'the session expires');
  });
});
