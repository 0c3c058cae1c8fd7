/*
 * Goal: FakeClock moves only when advanced and fires timers in (due, set
 * order), each seeing its own due time as now, including timers set by
 * timers; cancelled timers never fire.  RealClock is monotonic and its wall
 * time agrees with Date.now().
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FakeClock, RealClock, splitWallMs, FAKE_WALL_START_SEC } from '../../../src/runtime/clock.js';

test('fake clock: time moves only on advance', () => {
  const c = new FakeClock();
  assert.equal(c.nowMs(), 0);
  assert.deepEqual(c.wallTime(), { sec: FAKE_WALL_START_SEC, nsec: 0 });
  c.advance(1500.5);
  assert.equal(c.nowMs(), 1500.5);
  assert.deepEqual(c.wallTime(), { sec: FAKE_WALL_START_SEC + 1n, nsec: 500_500_000 });
});

test('fake clock: timers fire in due order, then set order, at their due time', () => {
  const c = new FakeClock();
  const log: string[] = [];
  c.setTimer(30, () => log.push(`c@${c.nowMs()}`));
  c.setTimer(10, () => log.push(`a@${c.nowMs()}`));
  c.setTimer(10, () => log.push(`b@${c.nowMs()}`));
  c.setTimer(100, () => log.push('late'));
  c.advance(50);
  assert.deepEqual(log, ['a@10', 'b@10', 'c@30']);
  assert.equal(c.nowMs(), 50);
  assert.equal(c.pendingTimers(), 1);
  assert.equal(c.nextDueMs(), 100);
});

test('fake clock: a timer set by a timer fires in the same advance if due', () => {
  const c = new FakeClock();
  const log: number[] = [];
  c.setTimer(5, () => {
    log.push(c.nowMs());
    c.setTimer(5, () => log.push(c.nowMs()));
    c.setTimer(100, () => log.push(-1));
  });
  c.advance(20);
  assert.deepEqual(log, [5, 10]);
  assert.equal(c.fired, 2);
});

test('fake clock: cancelled timers never fire; advance(0) fires due ones', () => {
  const c = new FakeClock({ startMs: 1000 });
  let n = 0;
  const t = c.setTimer(10, () => n++);
  c.setTimer(0, () => n += 10);
  t.cancel();
  c.advance(0);
  assert.equal(n, 10);
  c.advance(100);
  assert.equal(n, 10);
  t.cancel(); // harmless twice
  assert.equal(c.nextDueMs(), null);
  assert.equal(c.advanceToNext(), false);
});

test('fake clock: advanceToNext jumps to the next timer', () => {
  const c = new FakeClock();
  let at = -1;
  c.setTimer(250, () => { at = c.nowMs(); });
  assert.equal(c.advanceToNext(), true);
  assert.equal(at, 250);
  assert.equal(c.nowMs(), 250);
});

test('real clock: monotonic, wall time near Date.now, timers fire', async () => {
  const c = new RealClock();
  const a = c.nowMs();
  const b = c.nowMs();
  assert.ok(b >= a);
  const w = c.wallTime();
  const ms = Number(w.sec) * 1000 + w.nsec / 1e6;
  assert.ok(Math.abs(ms - Date.now()) < 1000, `wall ${ms} vs ${Date.now()}`);
  assert.ok(w.nsec >= 0 && w.nsec < 1e9);
  await new Promise<void>((resolve) => c.setTimer(1, resolve));
  const t = c.setTimer(5, () => assert.fail('cancelled timer fired'));
  t.cancel();
});

test('splitWallMs never produces a full second of nanoseconds', () => {
  assert.deepEqual(splitWallMs(1999.9999999), { sec: 1n, nsec: 999_999_999 });
  assert.deepEqual(splitWallMs(0), { sec: 0n, nsec: 0 });
});
