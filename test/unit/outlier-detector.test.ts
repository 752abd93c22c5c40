// Unit tests for OutlierDetector on a fake clock: when endpoints are ejected, for how long, how many at once, and the counters.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isMeshError } from '../../src/errors';
import { OUTLIER_DETECTION_DEFAULTS, OutlierDetector, type OutlierDetectionConfig, type Outcome } from '../../src/proxy/outlier-detector';
import type { Endpoint } from '../../src/registry';
import { FakeClock } from '../helpers/fake-clock';

const ep = (n: number): Endpoint => ({ address: `10.0.0.${n}`, port: 15443, weight: 1, labels: {} });
const A = ep(1);
const B = ep(2);
const BASE = 30_000;
const INTERVAL = 10_000;

function detector(config: OutlierDetectionConfig, endpoints: readonly Endpoint[] = [A, B]): { d: OutlierDetector; clock: FakeClock } {
  const clock = new FakeClock();
  const d = new OutlierDetector({ baseEjectionTimeMs: BASE, intervalMs: INTERVAL, maxEjectionPercent: 100, ...config }, clock);
  d.update(endpoints);
  return { d, clock };
}

/** Records each outcome in turn; returns what the last record() said. */
function send(d: OutlierDetector, e: Endpoint, ...outcomes: Outcome[]): boolean {
  let ejected = false;
  for (const o of outcomes) ejected = d.record(e, o);
  return ejected;
}

test('the documented defaults are the ones in effect (Istio: 5, off, 10s, 30s, 10 %; Envoy: 300s cap, alwaysEjectOneHost off)', () => {
  assert.deepEqual({ ...OUTLIER_DETECTION_DEFAULTS }, {
    consecutive5xxErrors: 5,
    consecutiveGatewayErrors: 0,
    intervalMs: 10_000,
    baseEjectionTimeMs: 30_000,
    maxEjectionTimeMs: 300_000,
    maxEjectionPercent: 10,
    alwaysEjectOneHost: false,
  });
  assert.deepEqual({ ...new OutlierDetector({}, new FakeClock()).config }, { ...OUTLIER_DETECTION_DEFAULTS });
  assert.equal(new OutlierDetector({ baseEjectionTimeMs: 600_000 }, new FakeClock()).config.maxEjectionTimeMs, 600_000, 'the cap is never below the base');
});

test('ejects after N consecutive 5xx, and only that endpoint', () => {
  const { d } = detector({ consecutive5xxErrors: 3 });
  assert.equal(send(d, A, 500, 503), false);
  assert.equal(d.isEjected(A), false);
  assert.equal(send(d, A, 500), true, 'the third 5xx ejects');
  assert.equal(d.isEjected(A), true);
  assert.equal(d.isEjected(B), false);
  assert.deepEqual([d.ejectionsTotal, d.ejectionsActive], [1, 1]);
});

test('a success resets the consecutive count; 4xx and 3xx count as success', () => {
  const { d } = detector({ consecutive5xxErrors: 3 });
  assert.equal(send(d, A, 500, 500, 200, 500, 500, 404, 500, 500, 302, 500, 500, 'success', 500, 500), false);
  assert.equal(d.isEjected(A), false);
  assert.equal(send(d, A, 500), true);
});

test('an ejected endpoint comes back when its base ejection time is up, and starts counting afresh', () => {
  const { d, clock } = detector({ consecutive5xxErrors: 2 });
  send(d, A, 500, 500);
  clock.advance(BASE - 1);
  assert.equal(d.isEjected(A), true);
  clock.advance(1);
  assert.equal(d.isEjected(A), false);
  assert.equal(d.ejectionsActive, 0);
  assert.equal(send(d, A, 500), false, 'one error after coming back does not re-eject');
});

test('refresh() returns true only when something came back, and bumps the version', () => {
  const { d, clock } = detector({ consecutive5xxErrors: 1 });
  const v0 = d.version;
  send(d, A, 500);
  assert.equal(d.version, v0 + 1);
  assert.equal(d.refresh(), false);
  clock.advance(BASE);
  assert.equal(d.refresh(), true);
  assert.equal(d.version, v0 + 2);
  assert.equal(d.refresh(), false);
});

test('a second ejection lasts 2 × base, a third 3 × base', () => {
  const { d, clock } = detector({ consecutive5xxErrors: 1 });
  send(d, A, 500);
  clock.advance(BASE);
  assert.equal(d.isEjected(A), false);
  send(d, A, 500);
  clock.advance(2 * BASE - 1);
  assert.equal(d.isEjected(A), true, 'still out just before 2 × base');
  clock.advance(1);
  assert.equal(d.isEjected(A), false);
  send(d, A, 502);
  clock.advance(3 * BASE - 1);
  assert.equal(d.isEjected(A), true);
  clock.advance(1);
  assert.equal(d.isEjected(A), false);
});

test('the multiplier decays by one per interval spent healthy', () => {
  const { d, clock } = detector({ consecutive5xxErrors: 1 });
  send(d, A, 500); // k = 1
  clock.advance(BASE);
  send(d, A, 500); // k = 2
  clock.advance(2 * BASE);
  clock.advance(INTERVAL); // one interval back: k = 1
  send(d, A, 500); // k = 2 again: 2 × base
  clock.advance(2 * BASE - 1);
  assert.equal(d.isEjected(A), true);
  clock.advance(1);
  assert.equal(d.isEjected(A), false);
  clock.advance(3 * INTERVAL); // k decays to 0
  send(d, A, 500); // k = 1
  clock.advance(BASE);
  assert.equal(d.isEjected(A), false, 'after a long healthy spell the next ejection is base time again');
});

test('an ejection never lasts longer than maxEjectionTimeMs', () => {
  // A long interval keeps the multiplier from decaying between ejections.
  const { d, clock } = detector({ consecutive5xxErrors: 1, maxEjectionTimeMs: 2 * BASE, intervalMs: 1e9 });
  const lengths: number[] = [];
  for (let i = 0; i < 4; i++) {
    send(d, A, 500);
    let t = 0;
    for (; d.isEjected(A); t += 1000) clock.advance(1000);
    lengths.push(t);
  }
  assert.deepEqual(lengths, [BASE, 2 * BASE, 2 * BASE, 2 * BASE]);
});

test('maxEjectionPercent: with 10 endpoints and 20 %, the third ejection is refused and counted as overflow', () => {
  const set = Array.from({ length: 10 }, (_, i) => ep(i + 1));
  const { d, clock } = detector({ consecutive5xxErrors: 1, maxEjectionPercent: 20 }, set);
  assert.equal(send(d, set[0], 500), true);
  assert.equal(send(d, set[1], 500), true);
  assert.equal(send(d, set[2], 500), false);
  assert.equal(d.isEjected(set[2]), false);
  assert.deepEqual([d.ejectionsActive, d.ejectionsTotal, d.ejectionsOverflow], [2, 2, 1]);
  clock.advance(BASE);
  assert.equal(send(d, set[2], 500), true, 'room again once the first two are back');
});

test('maxEjectionPercent as Envoy: 10 % of 5 endpoints ejects none, unless alwaysEjectOneHost', () => {
  const set = Array.from({ length: 5 }, (_, i) => ep(i + 1));
  const strict = detector({ consecutive5xxErrors: 1, maxEjectionPercent: 10 }, set).d;
  assert.equal(send(strict, set[0], 500), false);
  assert.equal(strict.ejectionsOverflow, 1);
  const oneAllowed = detector({ consecutive5xxErrors: 1, maxEjectionPercent: 10, alwaysEjectOneHost: true }, set).d;
  assert.equal(send(oneAllowed, set[0], 500), true);
  assert.equal(send(oneAllowed, set[1], 500), false, 'only one');
});

test('100 % lets every endpoint go', () => {
  const { d } = detector({ consecutive5xxErrors: 1 });
  assert.equal(send(d, A, 500), true);
  assert.equal(send(d, B, 500), true);
  assert.equal(d.ejectionsActive, 2);
});

test('gateway errors: 502/503/504 and local failures count; another 5xx resets that count; cancelled counts for nothing', () => {
  const { d } = detector({ consecutive5xxErrors: 0, consecutiveGatewayErrors: 2 });
  assert.equal(send(d, A, 502, 500, 503, 500, 504), false, 'a 500 in between resets the gateway count');
  assert.equal(send(d, A, 'cancelled', 'connect-failed'), true, '504 then a connect failure, a cancel in between changes nothing');
  assert.equal(send(d, B, 'reset', 'timeout'), true);
});

test('the 5xx count includes gateway errors and local failures', () => {
  const { d } = detector({ consecutive5xxErrors: 3 });
  assert.equal(send(d, A, 502, 500, 'connect-failed'), true);
});

test('0 turns a detector off', () => {
  const { d } = detector({ consecutive5xxErrors: 0, consecutiveGatewayErrors: 0 });
  for (let i = 0; i < 100; i++) d.record(A, 503);
  assert.equal(d.isEjected(A), false);
});

test('outcomes for unknown or already ejected endpoints are ignored', () => {
  const { d } = detector({ consecutive5xxErrors: 2 });
  assert.equal(send(d, ep(99), 500, 500, 500), false);
  send(d, A, 500, 500);
  assert.equal(send(d, A, 500, 500, 500, 500), false);
  assert.equal(d.ejectionsTotal, 1);
});

test('update() keeps state per address:port (even for a new object) and forgets removed endpoints', () => {
  const { d, clock } = detector({ consecutive5xxErrors: 2 });
  send(d, A, 500, 500);
  send(d, B, 500);
  const A2 = { ...A, weight: 5 };
  const B2 = { ...B };
  d.update([A2, B2]);
  assert.equal(d.isEjected(A2), true, 'still ejected under its new object');
  assert.equal(d.isEjected(A), false, 'the old object is no longer known');
  assert.equal(send(d, B2, 500), true, 'the count of B carried over');
  d.update([ep(3)]);
  assert.equal(d.ejectionsActive, 0, 'removed endpoints are no longer ejected');
  clock.advance(BASE);
  assert.equal(d.refresh(), false);
});

test('snapshot() brings back what is due and shows counters and what is ejected', () => {
  const set = [A, B, ep(3), ep(4)];
  const { d, clock } = detector({ consecutive5xxErrors: 1, maxEjectionPercent: 50 }, set);
  send(d, A, 500);
  clock.advance(1000);
  send(d, B, 500);
  send(d, set[2], 500);
  assert.deepEqual(d.snapshot(), {
    ejectionsTotal: 2,
    ejectionsActive: 2,
    ejectionsOverflow: 1,
    ejected: [
      { endpoint: '10.0.0.1:15443', ejections: 1, remainingMs: BASE - 1000 },
      { endpoint: '10.0.0.2:15443', ejections: 1, remainingMs: BASE },
    ],
  });
  clock.advance(BASE - 1000);
  assert.deepEqual(d.snapshot().ejected.map((e) => e.endpoint), ['10.0.0.2:15443']);
});

test('an invalid config is refused with every problem listed', () => {
  assert.throws(
    () => new OutlierDetector({ consecutive5xxErrors: -1, intervalMs: 0, maxEjectionPercent: 101, baseEjectionTimeMs: 1.5 }, new FakeClock()),
    (err: unknown) =>
      isMeshError(err, 'MESH_ERR_CONFIG') &&
      /consecutive5xxErrors: -1/.test(err.message) &&
      /intervalMs: 0/.test(err.message) &&
      /maxEjectionPercent: 101 is not a whole number from 0 to 100/.test(err.message) &&
      /baseEjectionTimeMs: 1.5/.test(err.message),
  );
  assert.throws(() => new OutlierDetector({ baseEjectionTimeMs: 10_000, maxEjectionTimeMs: 5_000 }, new FakeClock()), /maxEjectionTimeMs: 5000 is less than baseEjectionTimeMs/);
});
