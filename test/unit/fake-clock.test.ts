// Unit tests for the FakeClock test helper: the other time-driven tests are only as good as it is.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FakeClock } from '../helpers/fake-clock';

test('advance fires due timers earliest first, ties in the order set, and stops at the target time', () => {
  const clock = new FakeClock(1000);
  const fired: string[] = [];
  clock.setTimeout(() => fired.push(`b@${clock.now()}`), 20);
  clock.setTimeout(() => fired.push(`a@${clock.now()}`), 10);
  clock.setTimeout(() => fired.push(`c@${clock.now()}`), 20);
  clock.setTimeout(() => fired.push(`late@${clock.now()}`), 31);
  clock.advance(30);
  assert.deepEqual(fired, ['a@1010', 'b@1020', 'c@1020']);
  assert.equal(clock.now(), 1030);
  assert.equal(clock.pendingCount, 1);
  clock.advance(1);
  assert.deepEqual(fired.at(-1), 'late@1031');
});

test('a timer set by a firing timer fires in the same advance when it falls due', () => {
  const clock = new FakeClock(0);
  const fired: number[] = [];
  clock.setTimeout(() => {
    fired.push(clock.now());
    clock.setTimeout(() => fired.push(clock.now()), 5);
  }, 5);
  clock.advance(10);
  assert.deepEqual(fired, [5, 10]);
});

test('clearTimeout cancels; advance(0) fires zero-delay timers; fireNext jumps to the next one', async () => {
  const clock = new FakeClock(0);
  let n = 0;
  const h = clock.setTimeout(() => n++, 5);
  clock.clearTimeout(h);
  clock.advance(10);
  assert.equal(n, 0);
  clock.setTimeout(() => n++, 0);
  clock.advance(0);
  assert.equal(n, 1);
  const set = clock.nextTimerSet();
  clock.setTimeout(() => n++, 250);
  assert.equal(await set, 250);
  assert.equal(clock.fireNext(), 250);
  assert.equal(n, 2);
  assert.equal(clock.now(), 260);
  assert.throws(() => clock.fireNext(), /no timer/);
});
