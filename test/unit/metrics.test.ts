// The metrics registry: counters, gauges, histograms with labels, and Prometheus text format 0.0.4 (escaping, order, histogram buckets).

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { isMeshError } from '../../src/errors';
import { escapeHelp, escapeLabelValue, formatValue, MetricsRegistry, PROMETHEUS_CONTENT_TYPE } from '../../src/telemetry';

describe('metrics registry', () => {
  test('counters and gauges with and without labels render as HELP, TYPE and one line per child', () => {
    const r = new MetricsRegistry();
    const failures = r.counter('mesh_consul_registration_failures_total', 'Failed registrations.');
    const stale = r.gauge('mesh_consul_stale', 'Endpoints may be out of date.', ['service']);
    failures.labels().inc();
    failures.labels().inc(2);
    stale.labels('api.default').set(1);
    stale.labels('web.default').set(0);
    assert.equal(
      r.render(),
      [
        '# HELP mesh_consul_registration_failures_total Failed registrations.',
        '# TYPE mesh_consul_registration_failures_total counter',
        'mesh_consul_registration_failures_total 3',
        '# HELP mesh_consul_stale Endpoints may be out of date.',
        '# TYPE mesh_consul_stale gauge',
        'mesh_consul_stale{service="api.default"} 1',
        'mesh_consul_stale{service="web.default"} 0',
        '',
      ].join('\n'),
    );
    assert.equal(PROMETHEUS_CONTENT_TYPE, 'text/plain; version=0.0.4; charset=utf-8');
  });

  test('a label set resolves once to the same child; increments touch only its number', () => {
    const r = new MetricsRegistry();
    const c = r.counter('requests_total', 'Requests.', ['code', 'method']);
    const child = c.labels('200', 'GET');
    assert.equal(c.labels('200', 'GET'), child, 'the same object for the same values');
    assert.equal(child.prefix, 'requests_total{code="200",method="GET"}', 'the sample prefix is built when the child is made');
    for (let i = 0; i < 1000; i++) child.inc();
    assert.match(r.render(), /^requests_total\{code="200",method="GET"\} 1000$/m);
    assert.throws(() => child.inc(-1), (e: unknown) => isMeshError(e, 'MESH_ERR_INTERNAL'), 'a counter never goes down');
  });

  test('label values escape backslash, double quote and line feed; HELP escapes backslash and line feed', () => {
    assert.equal(escapeLabelValue('a\\b"c\nd'), 'a\\\\b\\"c\\nd');
    assert.equal(escapeHelp('one\\two\nthree "quoted"'), 'one\\\\two\\nthree "quoted"');
    const r = new MetricsRegistry();
    r.gauge('g', 'line one\nline two \\ end', ['path']).labels('C:\\dir "x"\n').set(1);
    const text = r.render();
    assert.match(text, /^# HELP g line one\\nline two \\\\ end$/m);
    assert.ok(text.includes('g{path="C:\\\\dir \\"x\\"\\n"} 1\n'), text);
  });

  test('special values use Go float syntax', () => {
    assert.equal(formatValue(NaN), 'NaN');
    assert.equal(formatValue(Infinity), '+Inf');
    assert.equal(formatValue(-Infinity), '-Inf');
    assert.equal(formatValue(0.25), '0.25');
    assert.equal(formatValue(-3), '-3');
  });

  test('histograms render cumulative buckets with le, then +Inf, _sum and _count', () => {
    const r = new MetricsRegistry();
    const h = r.histogram('duration_ms', 'Request duration.', ['service'], [1, 5, 10]);
    const api = h.labels('api');
    for (const v of [0.5, 1, 3, 7, 20, 100]) api.observe(v);
    assert.equal(
      r.render(),
      [
        '# HELP duration_ms Request duration.',
        '# TYPE duration_ms histogram',
        'duration_ms_bucket{service="api",le="1"} 2',
        'duration_ms_bucket{service="api",le="5"} 3',
        'duration_ms_bucket{service="api",le="10"} 4',
        'duration_ms_bucket{service="api",le="+Inf"} 6',
        'duration_ms_sum{service="api"} 131.5',
        'duration_ms_count{service="api"} 6',
        '',
      ].join('\n'),
    );
    const plain = r.histogram('plain_seconds', 'No labels.', [], [0.1]);
    plain.labels().observe(0.05);
    assert.match(r.render(), /^plain_seconds_bucket\{le="0.1"\} 1\nplain_seconds_bucket\{le="\+Inf"\} 1\nplain_seconds_sum 0.05\nplain_seconds_count 1$/m);
  });

  test('collectors run before each render; remove and clear forget children', () => {
    const r = new MetricsRegistry();
    const g = r.gauge('mesh_endpoints', 'Healthy endpoints.', ['service']);
    let n = 0;
    r.collect(() => g.labels('api').set(++n));
    assert.match(r.render(), /mesh_endpoints\{service="api"\} 1/);
    assert.match(r.render(), /mesh_endpoints\{service="api"\} 2/);
    g.labels('gone').set(1);
    g.remove('gone');
    assert.doesNotMatch(r.render(), /gone/);
    r.collect(() => g.clear());
    assert.doesNotMatch(r.render(), /service=/, 'a collector that clears leaves only HELP and TYPE');
  });

  test('invalid names, label counts, reserved labels and buckets are refused', () => {
    const r = new MetricsRegistry();
    const refused = (fn: () => unknown, why: string): void => assert.throws(fn, (e: unknown) => isMeshError(e, 'MESH_ERR_INTERNAL'), why);
    refused(() => r.counter('1bad', 'x'), 'a name may not start with a digit');
    refused(() => r.counter('bad-name', 'x'), 'no dashes in names');
    refused(() => r.gauge('g1', 'x', ['__reserved']), 'labels starting with __ are reserved');
    refused(() => r.gauge('g2', 'x', ['a', 'a']), 'a label twice');
    refused(() => r.histogram('h1', 'x', ['le']), 'le is the bucket label');
    refused(() => r.histogram('h2', 'x', [], [5, 1]), 'buckets must increase');
    refused(() => r.histogram('h3', 'x', [], []), 'at least one bucket');
    const c = r.counter('ok_total', 'x', ['service']);
    refused(() => c.labels(), 'one label value is needed');
    refused(() => r.counter('ok_total', 'again'), 'a name is registered once');
  });
});
