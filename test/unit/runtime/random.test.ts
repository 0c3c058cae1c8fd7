/*
 * Goal: SeededRandom is xoshiro128** (checked against its reference
 * outputs), the same seed replays the same stream, fork() streams are
 * stable and independent of draws on the parent, and int/float/bytes stay
 * in range and unbiased enough to notice a broken reduction.  CryptoRandom
 * satisfies the same interface.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CryptoRandom, SeededRandom, type Random } from '../../../src/runtime/random.js';

test('xoshiro128** matches its reference outputs from state {1,2,3,4}', () => {
  const r = SeededRandom.fromState([1, 2, 3, 4]);
  // u64 = two 32-bit outputs, high first.
  assert.equal(r.u64(), (11520n << 32n) | 0n);
  assert.equal(r.u64() >> 32n, 5927040n);
});

test('same seed, same stream; different seeds differ', () => {
  const draw = (r: Random): unknown[] => [r.u64(), r.int(1000), r.float(), [...r.bytes(7)], r.int(2 ** 40)];
  assert.deepEqual(draw(new SeededRandom(42n)), draw(new SeededRandom(42)));
  assert.notDeepEqual(draw(new SeededRandom(42n)), draw(new SeededRandom(43n)));
});

test('fork: stable per label, independent of parent draws and of each other', () => {
  const a = new SeededRandom(7n);
  const b = new SeededRandom(7n);
  b.u64();
  b.bytes(100);
  assert.equal(a.fork('disk').u64(), b.fork('disk').u64());
  assert.notEqual(a.fork('disk').u64(), a.fork('net').u64());
  assert.notEqual(a.fork('disk').u64(), new SeededRandom(8n).fork('disk').u64());
});

test('int, float and bytes stay in range', () => {
  for (const r of [new SeededRandom(1n), new CryptoRandom()] as Random[]) {
    for (let i = 0; i < 2000; i++) {
      const n = r.int(7);
      assert.ok(Number.isInteger(n) && n >= 0 && n < 7);
      const big = r.int(2 ** 53);
      assert.ok(Number.isSafeInteger(big) && big >= 0);
      const f = r.float();
      assert.ok(f >= 0 && f < 1);
    }
    assert.equal(r.int(1), 0);
    assert.equal(r.bytes(0).length, 0);
    assert.equal(r.bytes(13).length, 13);
    assert.ok(r.u64() <= 0xffff_ffff_ffff_ffffn);
    assert.throws(() => r.int(0), /bound/);
    assert.throws(() => r.int(1.5), /bound/);
  }
});

test('int is roughly uniform (a broken reduction would skew it)', () => {
  const r = new SeededRandom(99n);
  const counts = new Array<number>(10).fill(0);
  const n = 100_000;
  for (let i = 0; i < n; i++) counts[r.int(10)]!++;
  for (const c of counts) assert.ok(Math.abs(c - n / 10) < n / 10 * 0.05, `bucket ${c}`);
  // A bound just over 2^31: modulo bias would put ~2/3 of draws in the lower half.
  const bound = 2 ** 31 + 2 ** 30;
  let low = 0;
  for (let i = 0; i < 30_000; i++) if (r.int(bound) < bound / 2) low++;
  assert.ok(Math.abs(low / 30_000 - 0.5) < 0.02, `low half ${low}`);
});
