// Unit tests for CircuitBreaker: each limit refuses at its threshold, counts overflows, and gives slots back.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isMeshError } from '../../src/errors';
import {
  CIRCUIT_BREAKER_DEFAULTS,
  CircuitBreaker,
  OVERFLOW_HEADER,
  OVERFLOW_RESPONSE_FLAG,
  OVERFLOW_STATUS,
  type CircuitBreakerThresholds,
  type ResourceLimit,
} from '../../src/proxy/circuit-breaker';

test('the documented defaults are Istio\'s: every limit 2^32 - 1', () => {
  const max = 4_294_967_295;
  assert.deepEqual({ ...CIRCUIT_BREAKER_DEFAULTS }, { maxConnections: max, maxPendingRequests: max, maxRequests: max, maxRetries: max });
  const b = new CircuitBreaker();
  assert.deepEqual([b.connections.max, b.pendingRequests.max, b.requests.max, b.retries.max], [max, max, max, max]);
});

test('the fast answer to an overflow: 503, x-mesh-overflow, flag UO', () => {
  assert.equal(OVERFLOW_HEADER, 'x-mesh-overflow');
  assert.equal(OVERFLOW_RESPONSE_FLAG, 'UO');
  assert.equal(OVERFLOW_STATUS, 503);
});

const limits: readonly [keyof CircuitBreakerThresholds, (b: CircuitBreaker) => ResourceLimit, string][] = [
  ['maxConnections', (b) => b.connections, 'max-connections'],
  ['maxPendingRequests', (b) => b.pendingRequests, 'max-pending-requests'],
  ['maxRequests', (b) => b.requests, 'max-requests'],
  ['maxRetries', (b) => b.retries, 'max-retries'],
];

for (const [field, resource, kind] of limits) {
  test(`${field}: refuses at the threshold, counts the overflow, and takes again after a release`, () => {
    const b = new CircuitBreaker({ [field]: 2 });
    const r = resource(b);
    assert.equal(r.overflow, kind);
    assert.equal(r.tryAcquire(), true);
    assert.equal(r.open, false);
    assert.equal(r.tryAcquire(), true);
    assert.equal(r.open, true);
    assert.equal(r.tryAcquire(), false);
    assert.equal(r.tryAcquire(), false);
    assert.deepEqual(r.snapshot(), { max: 2, active: 2, overflows: 2 });
    r.release();
    assert.equal(r.tryAcquire(), true);
    assert.deepEqual(r.snapshot(), { max: 2, active: 2, overflows: 2 });
    for (const [, other] of limits) if (other(b) !== r) assert.deepEqual({ ...other(b).snapshot(), max: 0 }, { max: 0, active: 0, overflows: 0 }, 'other limits untouched');
  });
}

test('0 refuses everything', () => {
  const b = new CircuitBreaker({ maxRetries: 0 });
  assert.equal(b.retries.tryAcquire(), false);
  assert.equal(b.retries.overflows, 1);
});

test('an extra release does not make room beyond the limit', () => {
  const b = new CircuitBreaker({ maxRequests: 1 });
  b.requests.release();
  assert.equal(b.requests.active, 0);
  assert.equal(b.requests.tryAcquire(), true);
  assert.equal(b.requests.tryAcquire(), false);
});

test('setThresholds() changes ceilings in place: slots in use stay counted', () => {
  const b = new CircuitBreaker({ maxRequests: 5 });
  for (let i = 0; i < 4; i++) b.requests.tryAcquire();
  b.setThresholds({ maxRequests: 3 });
  assert.equal(b.requests.tryAcquire(), false, '4 in use, limit 3');
  b.requests.release();
  b.requests.release();
  assert.equal(b.requests.tryAcquire(), true);
  b.setThresholds({});
  assert.equal(b.requests.max, CIRCUIT_BREAKER_DEFAULTS.maxRequests, 'unset goes back to the default');
});

test('snapshot() lists every limit', () => {
  const b = new CircuitBreaker({ maxConnections: 1 });
  b.connections.tryAcquire();
  b.connections.tryAcquire();
  assert.deepEqual(b.snapshot().connections, { max: 1, active: 1, overflows: 1 });
  assert.deepEqual(Object.keys(b.snapshot()), ['connections', 'pendingRequests', 'requests', 'retries']);
});

test('invalid thresholds are refused with every problem listed', () => {
  assert.throws(
    () => new CircuitBreaker({ maxConnections: -1, maxRequests: 1.5, maxRetries: 2 ** 32 }),
    (err: unknown) =>
      isMeshError(err, 'MESH_ERR_CONFIG') && /maxConnections: -1/.test(err.message) && /maxRequests: 1.5/.test(err.message) && /maxRetries: 4294967296/.test(err.message),
  );
});
