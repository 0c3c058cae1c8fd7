/*
 * Goal: the item cache (src/item/cache.ts) keeps PROTOCOL.md 5.4's rules:
 *   - the memory bound evicts clean pages only: under any pressure every
 *     dirty item stays cached and readable, and once committed (markClean)
 *     the same items become evictable;
 *   - operation semantics: create EEXIST, update/dirty/delete ENOENT,
 *     tombstones only for persistent items, next/prev bounded by the lock
 *     and skipping tombstones, deltas summed and dropped at (0, 0), seq =
 *     max(transaction seq, lock write seq), mode/range/hold checks EINVAL;
 *   - against a model (a Map) over random operations, random commits and a
 *     tiny memory bound, the cache always answers like the model.
 * The forest is replaced by a model reader over a sorted Map that answers
 * leaf-sized segments, so these tests need no device.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ItemCache, type ItemLock, type ItemReader } from '../../../src/item/cache.js';
import { lockRangeOf } from '../../../src/format/lock.js';
import type { ForestItem, ForestSegment } from '../../../src/forest/reader.js';
import { compareKeys, keyDec, keyInc, key, type Key } from '../../../src/format/key.js';
import { FsError } from '../../../src/format/errors.js';
import { ZONE } from '../../../src/format/items.js';
import { getU64, setU64 } from '../../../src/format/layout.js';
import { SeededRandom } from '../../../src/runtime/random.js';

const isFs = (code: string) => (e: unknown): boolean => e instanceof FsError && e.code === code;
const kk = (ino: bigint, n: number): Key => key(ZONE.FS, ino, 2, BigInt(n));
const val = (n: number, len = 40): Uint8Array => {
  const b = new Uint8Array(len);
  b.fill(n & 0xff);
  return b;
};
const hex = (k: Key): string => `${k.zone}.${k.first}.${k.type}.${k.second}.${k.third}.${k.fourth}`;

function lockFor(k: Key, mode: ItemLock['mode'] = 'WRITE', writeSeq = 0n): ItemLock {
  const r = lockRangeOf(k);
  return { ...r, mode, writeSeq };
}

/** The forest as a sorted Map; segments are at most `span` items wide, like leaves. */
class ModelReader implements ItemReader {
  readonly items = new Map<string, ForestItem>();
  reads = 0;
  constructor(private readonly span = 16) {}
  put(k: Key, v: Uint8Array, seq = 1n): void {
    this.items.set(hex(k), { key: k, val: v, seq });
  }
  del(k: Key): void {
    this.items.delete(hex(k));
  }
  async readSegment(k: Key, start: Key, end: Key): Promise<ForestSegment> {
    this.reads++;
    await Promise.resolve();
    const all = [...this.items.values()].filter((it) => compareKeys(it.key, start) >= 0 && compareKeys(it.key, end) <= 0)
      .sort((a, b) => compareKeys(a.key, b.key));
    // Cut "leaves" of `span` items: the one containing k.
    let i = all.findIndex((it) => compareKeys(it.key, k) >= 0);
    if (i < 0) i = all.length;
    const leaf = Math.floor(i / this.span);
    const lo = leaf * this.span;
    const hi = Math.min(all.length, lo + this.span);
    const s = lo === 0 ? start : keyInc(all[lo - 1]!.key);
    const e = hi >= all.length ? end : all[hi - 1]!.key;
    const segStart = compareKeys(s, k) <= 0 ? s : k;
    const segEnd = compareKeys(e, k) >= 0 ? e : end;
    return { start: segStart, end: segEnd, items: all.filter((it) => compareKeys(it.key, segStart) >= 0 && compareKeys(it.key, segEnd) <= 0).map((it) => ({ ...it, val: it.val.slice() })) };
  }
}

function makeCache(reader: ItemReader, maxBytes = 1 << 20, seq = 5n) {
  const t = { seq, held: true };
  const warns: string[] = [];
  const cache = new ItemCache({ reader, transSeq: () => t.seq, held: () => t.held, maxBytes, maxPageItems: 8, warn: (m) => warns.push(m) });
  return { cache, t, warns };
}

test('the memory bound evicts clean pages only; dirty items survive any pressure', async () => {
  const reader = new ModelReader(8);
  for (let g = 0; g < 60; g++) for (let n = 0; n < 40; n++) reader.put(kk(1024n * BigInt(g + 10), n), val(n, 200));
  const maxBytes = 48 * 1024;
  const { cache } = makeCache(reader, maxBytes);
  // Dirty items in a few groups, more bytes than the whole bound.
  const dirty = new Map<string, { k: Key; v: Uint8Array }>();
  for (let g = 0; g < 4; g++) {
    for (let n = 100; n < 160; n++) {
      const k = kk(1024n * BigInt(g + 100), n);
      const v = val(n + g, 600);
      await cache.create(k, v, lockFor(k));
      dirty.set(hex(k), { k, v });
    }
  }
  assert.ok(cache.dirtyBytes > maxBytes, 'more dirty bytes than the bound');
  // Read a lot of clean items everywhere.
  for (let round = 0; round < 3; round++) {
    for (let g = 0; g < 60; g++) {
      for (let n = 0; n < 40; n += 3) {
        const k = kk(1024n * BigInt(g + 10), n);
        assert.deepEqual(await cache.lookup(k, lockFor(k, 'READ')), val(n, 200));
        cache.checkInvariants();
        assert.ok(cache.bytes - cache.dirtyBytes <= maxBytes + 8 * 1024, `clean bytes ${cache.bytes - cache.dirtyBytes} way over the bound`);
      }
    }
  }
  assert.ok(cache.counters.evictedPages > 50, `evicted ${cache.counters.evictedPages} pages`);
  // Every dirty item is still cached: looking it up reads nothing.
  const readsBefore = reader.reads;
  for (const { k, v } of dirty.values()) assert.deepEqual(await cache.lookup(k, lockFor(k, 'READ')), v);
  assert.equal(reader.reads, readsBefore, 'dirty items were never evicted');
  assert.equal(cache.dirtyCount, dirty.size);
  // Committed, they become evictable.
  const snap = cache.dirtySnapshot();
  for (const it of snap) reader.put(it.key, it.val, it.seq);
  cache.markClean(snap);
  assert.equal(cache.dirtyCount, 0);
  for (let g = 0; g < 60; g++) {
    const k = kk(1024n * BigInt(g + 10), 1);
    await cache.lookup(k, lockFor(k, 'READ'));
  }
  cache.checkInvariants();
  assert.ok(cache.bytes <= maxBytes, `${cache.bytes} > ${maxBytes} once nothing is dirty`);
});

test('operation semantics: EEXIST/ENOENT, tombstones only for persistent items, seqs, next/prev, deltas', async () => {
  const reader = new ModelReader(4);
  const ino = 2048n;
  for (const n of [1, 3, 5, 7]) reader.put(kk(ino, n), val(n), 1n);
  const { cache, t, warns } = makeCache(reader);
  const L = lockFor(kk(ino, 0));
  await assert.rejects(cache.create(kk(ino, 3), val(9), L), isFs('EEXIST'));
  await assert.rejects(cache.update(kk(ino, 4), val(9), L), isFs('ENOENT'));
  await assert.rejects(cache.delete(kk(ino, 4), L), isFs('ENOENT'));
  await assert.rejects(cache.dirty(kk(ino, 4), L), isFs('ENOENT'));
  // A new item deleted in the same transaction leaves nothing; a persistent one a tombstone.
  await cache.create(kk(ino, 4), val(4), L);
  await cache.delete(kk(ino, 4), L);
  await cache.delete(kk(ino, 3), L);
  let snap = cache.dirtySnapshot();
  assert.deepEqual(snap.map((it) => [Number(it.key.second), it.deletion]), [[3, true]]);
  assert.equal(await cache.lookup(kk(ino, 3), L), null);
  await cache.create(kk(ino, 3), val(33), L); // over its own tombstone
  assert.deepEqual(await cache.lookup(kk(ino, 3), L), val(33));
  await cache.delete(kk(ino, 3), L);
  // seq = max(trans seq, lock write seq).
  await cache.update(kk(ino, 5), val(55), { ...L, writeSeq: 9n });
  await cache.dirty(kk(ino, 7), L);
  snap = cache.dirtySnapshot();
  assert.deepEqual(snap.map((it) => [Number(it.key.second), it.seq, it.deletion]), [[3, 5n, true], [5, 9n, false], [7, 5n, false]]);
  // next/prev skip tombstones and stop at the bounds.
  const R = lockFor(kk(ino, 0), 'READ');
  assert.deepEqual((await cache.next(kk(ino, 2), kk(ino, 100), R))?.key, kk(ino, 5));
  assert.equal(await cache.next(kk(ino, 2), kk(ino, 4), R), null);
  assert.deepEqual((await cache.prev(kk(ino, 4), kk(ino, 0), R))?.key, kk(ino, 1));
  assert.deepEqual((await cache.prev(kk(ino, 100), kk(ino, 0), R))?.key, kk(ino, 7));
  assert.equal(await cache.next(kk(ino, 8), { ...kk(ino, 8), first: ino + 5000n }, R), null, 'ENOENT at the lock edge');
  // Rules: range, mode, hold.
  await assert.rejects(cache.lookup(kk(ino + 1024n, 1), R), isFs('EINVAL'));
  await assert.rejects(cache.create(kk(ino, 11), val(1), R), isFs('EINVAL'), 'create needs WRITE');
  await assert.rejects(cache.lookup(kk(ino, 1), { ...R, mode: 'WRITE_ONLY' }), isFs('EINVAL'));
  await assert.rejects(cache.createForce(kk(ino, 11), val(1), L), isFs('EINVAL'), 'force needs WRITE_ONLY');
  t.held = false;
  await assert.rejects(cache.create(kk(ino, 11), val(1), L), isFs('EINVAL'));
  t.held = true;
  assert.equal(warns.length, cache.counters.einval);
  // markClean: tombstones go, the rest becomes clean.
  cache.markClean(cache.dirtySnapshot());
  assert.equal(cache.dirtyCount, 0);
  cache.checkInvariants();
  // Deltas under WRITE_ONLY, on an empty page: summed, dropped at (0, 0).
  const tk = key(ZONE.XATTR_TOTL, 7n, 0, 8n, 9n);
  const W = lockFor(tk, 'WRITE_ONLY');
  const d = (total: bigint, count: bigint): Uint8Array => {
    const b = new Uint8Array(16);
    setU64(b, 0, BigInt.asUintN(64, total));
    setU64(b, 8, BigInt.asUintN(64, count));
    return b;
  };
  const readsBefore = reader.reads;
  await cache.delta(tk, d(10n, 1n), W);
  await cache.delta(tk, d(5n, 1n), W);
  snap = cache.dirtySnapshot();
  assert.equal(snap.length, 1);
  assert.equal(getU64(snap[0]!.val, 0), 15n);
  assert.equal(getU64(snap[0]!.val, 8), 2n);
  await cache.delta(tk, d(-15n, -2n), W);
  assert.equal(cache.dirtyCount, 0, 'a (0, 0) delta is dropped');
  await cache.deleteForce(kk(ino, 900), lockFor(kk(ino, 900), 'WRITE_ONLY'));
  assert.equal(reader.reads, readsBefore, 'WRITE_ONLY never reads');
  cache.checkInvariants();
});

test('random operations with commits and a tiny memory bound answer like a model', async () => {
  for (const seed of [1n, 2n, 3n, 4n]) {
    const rnd = new SeededRandom(seed);
    const reader = new ModelReader(1 + rnd.int(12));
    const model = new Map<string, Uint8Array>();
    const inos = [1024n, 2048n, 3072n];
    for (const ino of inos) {
      for (let n = 0; n < 60; n += 2) {
        const v = val(n, 8 + rnd.int(100));
        reader.put(kk(ino, n), v);
        model.set(hex(kk(ino, n)), v);
      }
    }
    const { cache, t } = makeCache(reader, 6 * 1024);
    for (let step = 0; step < 1500; step++) {
      const ino = inos[rnd.int(inos.length)]!;
      const k = kk(ino, rnd.int(64));
      const L = lockFor(k);
      const m = model.get(hex(k));
      const op = rnd.int(7);
      try {
        if (op === 0) {
          const v = val(step, 1 + rnd.int(120));
          await cache.create(k, v, L);
          assert.equal(m, undefined, 'create succeeded on an existing key');
          model.set(hex(k), v);
        } else if (op === 1) {
          const v = val(step, 1 + rnd.int(120));
          await cache.update(k, v, L);
          assert.notEqual(m, undefined);
          model.set(hex(k), v);
        } else if (op === 2) {
          await cache.delete(k, L);
          assert.notEqual(m, undefined);
          model.delete(hex(k));
        } else if (op === 3) {
          assert.deepEqual(await cache.lookup(k, L), m ?? null);
        } else if (op === 4) {
          const last = kk(ino, rnd.int(64));
          const got = await cache.next(k, last, L);
          const want = [...model.entries()].map(([h, v]) => ({ h, v }))
            .map(({ h, v }) => ({ k: h.split('.'), v }))
            .filter(({ k: f }) => BigInt(f[1]!) === ino && Number(f[3]) >= Number(k.second) && Number(f[3]) <= Number(last.second))
            .sort((a, b) => Number(a.k[3]) - Number(b.k[3]))[0];
          assert.equal(got === null ? null : Number(got.key.second), want === undefined ? null : Number(want.k[3]), `next seed ${seed} step ${step}`);
          // nextN: the same as next() repeated.
          const max = 1 + rnd.int(8);
          const many = await cache.nextN(k, last, L, max);
          const one: number[] = [];
          for (let at = k; one.length < max;) {
            const it = await cache.next(at, last, L);
            if (it === null) break;
            one.push(Number(it.key.second));
            at = { ...it.key, second: it.key.second + 1n };
          }
          assert.deepEqual(many.map((it) => Number(it.key.second)), one, `nextN seed ${seed} step ${step}`);
        } else if (op === 5) {
          // Commit: the dirty items reach the forest, then become clean.
          const snap = cache.dirtySnapshot();
          for (const it of snap) {
            if (it.deletion) reader.del(it.key);
            else reader.put(it.key, it.val, it.seq);
          }
          cache.markClean(snap);
          t.seq++;
        } else {
          const ino2 = inos[rnd.int(inos.length)]!;
          const L2 = lockFor(kk(ino2, 0));
          if (!cache.hasDirty(L2.start, L2.end)) cache.invalidate(L2.start, L2.end);
        }
      } catch (e) {
        if (!(e instanceof FsError)) throw e;
        if (e.code === 'EEXIST') assert.notEqual(m, undefined, `EEXIST on an absent key, seed ${seed} step ${step}`);
        else if (e.code === 'ENOENT') assert.equal(m, undefined, `ENOENT on a present key, seed ${seed} step ${step}`);
        else throw e;
      }
      if (step % 50 === 0) cache.checkInvariants();
    }
    assert.ok(cache.counters.evictedPages > 0, `seed ${seed}: something was evicted`);
  }
});

void keyDec;
