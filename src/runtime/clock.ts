/*
 * Clock: the one source of time for everything above src/runtime/.
 *
 * Code that needs "now" or a timeout takes a Clock; it never calls
 * Date.now(), performance.now() or setTimeout itself.  That is what lets
 * the simulator run a whole cluster on a FakeClock from one seed: time
 * moves only when the simulator calls advance(), and timers fire in a
 * deterministic order (due time, then the order they were set).
 *
 * Two kinds of time:
 *   - nowMs(): monotonic milliseconds (fractional allowed), for timeouts,
 *     lease expiry and durations.  Never goes backwards.
 *   - wallTime(): seconds and nanoseconds since the Unix epoch, for what is
 *     stored (inode times, the mkfs time).  May jump on a real machine.
 *
 * Timers live on the Clock too (setTimer/cancel), because a timeout that
 * uses the real event loop while "now" comes from a FakeClock would fire
 * at the wrong time in the simulator.
 *
 * RealClock wraps performance.now() and setTimeout.  Its wall time is
 * performance.timeOrigin + performance.now(): microsecond resolution, kept
 * in step with the monotonic clock within one process (rejected: Date.now()
 * alone, millisecond resolution only; process.hrtime, not a wall clock).
 *
 * FakeClock is advanced by hand.  advance(ms) walks time forward to each
 * due timer in turn, so a timer sees nowMs() equal to its own due time, and
 * a timer set by a firing timer fires in the same advance() if it falls
 * due before the target.  Timers are kept in a binary heap (heap.ts) ordered by
 * (due, seq).  Timer callbacks that throw propagate out of advance(): in
 * the simulator that is a test failure, not something to swallow.
 */
import assert from 'node:assert/strict';
import { LazyHeap } from './heap.js';

export interface Timer {
  /** Stop the timer; harmless after it fired or was cancelled. */
  cancel(): void;
}

export interface Clock {
  /** Monotonic milliseconds. */
  nowMs(): number;
  /** Wall-clock time since the Unix epoch. */
  wallTime(): { sec: bigint; nsec: number };
  /** Call fn once, ms milliseconds from now. */
  setTimer(ms: number, fn: () => void): Timer;
}

/* ---- real time ------------------------------------------------------------ */

export class RealClock implements Clock {
  nowMs(): number {
    return performance.now();
  }

  wallTime(): { sec: bigint; nsec: number } {
    return splitWallMs(performance.timeOrigin + performance.now());
  }

  setTimer(ms: number, fn: () => void): Timer {
    assert(Number.isFinite(ms) && ms >= 0, `timer delay must be >= 0: ${ms}`);
    const t = setTimeout(fn, ms);
    return { cancel: () => clearTimeout(t) };
  }
}

/** Split fractional epoch milliseconds into whole seconds and nanoseconds. */
export function splitWallMs(ms: number): { sec: bigint; nsec: number } {
  assert(Number.isFinite(ms) && ms >= 0, `wall time must be a non-negative number: ${ms}`);
  const secNum = Math.floor(ms / 1000);
  let nsec = Math.round((ms - secNum * 1000) * 1e6);
  if (nsec > 999_999_999) nsec = 999_999_999; // rounding at the top of a second
  return { sec: BigInt(secNum), nsec };
}

/* ---- fake time ------------------------------------------------------------ */

interface FakeTimer {
  due: number;
  seq: number;
  fn: () => void;
  live: boolean;
}

/** 2020-09-13T12:26:40Z: an arbitrary fixed wall time for reproducible runs. */
export const FAKE_WALL_START_SEC = 1_600_000_000n;

export class FakeClock implements Clock {
  private now: number;
  private readonly wallStartSec: bigint;
  private readonly heap = new LazyHeap<FakeTimer>((a, b) => a.due < b.due || (a.due === b.due && a.seq < b.seq));
  private nextSeq = 0;
  /** Timers that have fired, for scenario assertions. */
  fired = 0;

  constructor(opts: { startMs?: number; wallStartSec?: bigint } = {}) {
    this.now = opts.startMs ?? 0;
    this.wallStartSec = opts.wallStartSec ?? FAKE_WALL_START_SEC;
    assert(this.now >= 0 && this.wallStartSec >= 0n);
  }

  nowMs(): number {
    return this.now;
  }

  wallTime(): { sec: bigint; nsec: number } {
    const w = splitWallMs(this.now);
    return { sec: this.wallStartSec + w.sec, nsec: w.nsec };
  }

  setTimer(ms: number, fn: () => void): Timer {
    assert(Number.isFinite(ms) && ms >= 0, `timer delay must be >= 0: ${ms}`);
    const t: FakeTimer = { due: this.now + ms, seq: this.nextSeq++, fn, live: true };
    this.heap.push(t);
    return { cancel: () => { t.live = false; } };
  }

  /** Live timers not yet fired. */
  pendingTimers(): number {
    return this.heap.liveCount();
  }

  /** Due time of the next live timer, or null. */
  nextDueMs(): number | null {
    return this.heap.peek()?.due ?? null;
  }

  /** Move time forward by ms, firing every timer that falls due on the way. */
  advance(ms: number): void {
    assert(Number.isFinite(ms) && ms >= 0, `advance must be >= 0: ${ms}`);
    const target = this.now + ms;
    for (;;) {
      const t = this.heap.peek();
      if (t === undefined || t.due > target) break;
      this.heap.pop();
      this.now = t.due;
      t.live = false;
      this.fired++;
      t.fn();
    }
    this.now = target;
  }

  /** Jump to the next timer and fire it (and any due at the same time). */
  advanceToNext(): boolean {
    const due = this.nextDueMs();
    if (due === null) return false;
    this.advance(due - this.now);
    return true;
  }
}
