/*
 * Goal: the extent allocator (src/alloc/extent.ts) behaves exactly like an
 * interval-set model with the same allocation policy, keeps both keyings
 * in step and total_len exact through random alloc / allocAt / free /
 * commit sequences, merges with both neighbours, reports ENOSPC when full
 * (or when nothing reaches `min`) without modifying anything, and refuses
 * double frees and out-of-bounds frees with a CorruptionError that leaves
 * the tree untouched.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { MemBlockStore } from '../../../src/btree/memstore.js';
import { btreeInsert } from '../../../src/btree/btree.js';
import type { AllocRoot } from '../../../src/format/common.js';
import { CorruptionError, FsError } from '../../../src/format/errors.js';
import { extentOrder, freeExtentKeys } from '../../../src/format/items.js';
import {
  checkAllocRoot, emptyAllocRoot, EXTENT_SCAN_LIMIT, extentAlloc, extentAllocAt, extentCounters, extentFree, extentList,
  extentMove, extentMoveAll, resetExtentCounters, type BlknoBounds, type Extent,
} from '../../../src/alloc/extent.js';
import { cmpBig } from './util.js';

const BOUNDS: BlknoBounds = { first: 64n, last: 1_000_000n };
const OPTS = { bounds: BOUNDS };

/* ---- the model ------------------------------------------------------------ */

class ExtentModel {
  exts: Extent[] = [];

  get total(): bigint {
    return this.exts.reduce((s, e) => s + e.len, 0n);
  }

  clone(): ExtentModel {
    const m = new ExtentModel();
    m.exts = this.exts.map((e) => ({ ...e }));
    return m;
  }

  private sort(): void {
    this.exts.sort((a, b) => cmpBig(a.start, b.start));
  }

  free(start: bigint, len: bigint): 'ok' | 'overlap' | 'bounds' {
    const end = start + len - 1n;
    if (start < BOUNDS.first || end > BOUNDS.last) return 'bounds';
    for (const e of this.exts) if (e.start <= end && start <= e.start + e.len - 1n) return 'overlap';
    let s = start;
    let l = len;
    this.exts = this.exts.filter((e) => {
      if (e.start + e.len === s) {
        s = e.start;
        l += e.len;
        return false;
      }
      return true;
    });
    this.exts = this.exts.filter((e) => {
      if (e.start === s + l) {
        l += e.len;
        return false;
      }
      return true;
    });
    this.exts.push({ start: s, len: l });
    this.sort();
    return 'ok';
  }

  /** Same policy as extentAlloc (first of the order index, then the top-class scan). */
  alloc(count: bigint, min: bigint): Extent | 'ENOSPC' {
    if (this.exts.length === 0) return 'ENOSPC';
    const ord = this.exts.slice().sort((a, b) => {
      const oa = extentOrder(a.len);
      const ob = extentOrder(b.len);
      if (oa !== ob) return ob - oa;
      return cmpBig(a.start + a.len, b.start + b.len);
    });
    let best = ord[0]!;
    if (best.len < count) {
      const cls = extentOrder(best.len);
      let seen = 0;
      for (const e of ord) {
        if (extentOrder(e.len) !== cls) break;
        if (e.len > best.len) best = e;
        if (best.len >= count) break;
        seen++;
        if (!(seen < EXTENT_SCAN_LIMIT || best.len < min)) break;
      }
    }
    const len = best.len < count ? best.len : count;
    if (len < min) return 'ENOSPC';
    this.take(best.start, len);
    return { start: best.start, len };
  }

  take(start: bigint, len: bigint): boolean {
    const end = start + len - 1n;
    const i = this.exts.findIndex((e) => e.start <= start && e.start + e.len - 1n >= end);
    if (i < 0) return false;
    const e = this.exts[i]!;
    const out: Extent[] = [];
    if (e.start < start) out.push({ start: e.start, len: start - e.start });
    if (e.start + e.len - 1n > end) out.push({ start: end + 1n, len: e.start + e.len - 1n - end });
    this.exts.splice(i, 1, ...out);
    return true;
  }
}

async function assertMatches(store: MemBlockStore, ar: AllocRoot, m: ExtentModel, what: string): Promise<void> {
  const r = await checkAllocRoot(store, ar, OPTS);
  assert(r.ok, `${what}: ${r.problems.join('; ')}`);
  assert.deepEqual(r.extents, m.exts, `${what}: extents differ from the model`);
  assert.equal(ar.total_len, m.total, `${what}: total_len`);
}

async function expectFs(p: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(p, (e: unknown) => e instanceof FsError && e.code === code);
}

async function expectCorrupt(p: Promise<unknown>): Promise<void> {
  await assert.rejects(p, (e: unknown) => e instanceof CorruptionError);
}

/* ---- scripted ------------------------------------------------------------- */

test('empty allocator: ENOSPC, nothing written', async () => {
  const store = new MemBlockStore();
  const ar = emptyAllocRoot();
  await expectFs(extentAlloc(store, ar, 1n, OPTS), 'ENOSPC');
  assert.equal(store.counters.allocs, 0);
  assert.deepEqual(ar, emptyAllocRoot());
});

test('free merges with both neighbours and keeps both keyings', async () => {
  resetExtentCounters();
  const store = new MemBlockStore();
  const ar = emptyAllocRoot();
  await extentFree(store, ar, 100n, 10n, OPTS);
  await extentFree(store, ar, 120n, 10n, OPTS);
  assert.deepEqual(await extentList(store, ar), [{ start: 100n, len: 10n }, { start: 120n, len: 10n }]);
  await extentFree(store, ar, 110n, 10n, OPTS);
  assert.deepEqual(await extentList(store, ar), [{ start: 100n, len: 30n }]);
  assert.equal(extentCounters.mergeLeft, 1);
  assert.equal(extentCounters.mergeRight, 1);
  assert.equal(ar.total_len, 30n);
  const r = await checkAllocRoot(store, ar, OPTS);
  assert(r.ok, r.problems.join('; '));
  store.commit();
});

test('allocation takes the front of the first extent of the order index', async () => {
  const store = new MemBlockStore();
  const ar = emptyAllocRoot();
  await extentFree(store, ar, 1000n, 10n, OPTS); // order 1, end 1009
  await extentFree(store, ar, 200n, 64n, OPTS); // order 2
  await extentFree(store, ar, 100n, 8n, OPTS); // order 1, end 107
  // Largest order class first.
  assert.deepEqual(await extentAlloc(store, ar, 3n, OPTS), { start: 200n, len: 3n });
  // [203, 263] is 61 blocks, order 1 now: lowest end in class 1 is [100, 107].
  assert.deepEqual(await extentAlloc(store, ar, 2n, OPTS), { start: 100n, len: 2n });
  // [102, 107] is 6 (order 0); class 1 holds [203..263] (end 263) and [1000..1009] (end 1009).
  assert.deepEqual(await extentAlloc(store, ar, 5n, OPTS), { start: 203n, len: 5n });
  assert.equal(ar.total_len, 10n + 64n + 8n - 10n);
});

test('short extents: len below count down to min, else ENOSPC unchanged', async () => {
  resetExtentCounters();
  const store = new MemBlockStore();
  const ar = emptyAllocRoot();
  await extentFree(store, ar, 100n, 9n, OPTS); // order 1, end 108
  await extentFree(store, ar, 300n, 15n, OPTS); // order 1, end 314
  // The first of the class is too short; the scan finds the 15.
  assert.deepEqual(await extentAlloc(store, ar, 12n, OPTS), { start: 300n, len: 12n });
  assert.equal(extentCounters.classScans, 1);
  // Now 9 @100 and 3 @312: nothing reaches 10, the longest (9) is returned.
  assert.deepEqual(await extentAlloc(store, ar, 10n, OPTS), { start: 100n, len: 9n });
  assert.equal(extentCounters.shortAllocs, 1);
  const before = await extentList(store, ar);
  await expectFs(extentAlloc(store, ar, 10n, { ...OPTS, min: 4n }), 'ENOSPC');
  assert.deepEqual(await extentList(store, ar), before);
  assert.equal(ar.total_len, 3n);
});

test('allocAt takes an exact range from the middle, ENOENT when not free', async () => {
  const store = new MemBlockStore();
  const ar = emptyAllocRoot();
  await extentFree(store, ar, 100n, 100n, OPTS);
  await extentAllocAt(store, ar, 150n, 10n, OPTS);
  assert.deepEqual(await extentList(store, ar), [{ start: 100n, len: 50n }, { start: 160n, len: 40n }]);
  await expectFs(extentAllocAt(store, ar, 145n, 10n, OPTS), 'ENOENT');
  await expectFs(extentAllocAt(store, ar, 90n, 11n, OPTS), 'ENOENT');
  await extentAllocAt(store, ar, 100n, 50n, OPTS);
  await extentAllocAt(store, ar, 199n, 1n, OPTS);
  assert.deepEqual(await extentList(store, ar), [{ start: 160n, len: 39n }]);
  assert.equal(ar.total_len, 39n);
});

test('double free and out-of-bounds free: CorruptionError, tree untouched', async () => {
  const store = new MemBlockStore();
  const ar = emptyAllocRoot();
  await extentFree(store, ar, 100n, 10n, OPTS);
  await extentFree(store, ar, 200n, 10n, OPTS);
  store.commit();
  const before = { list: await extentList(store, ar), total: ar.total_len, root: structuredClone(ar.root) };
  for (const [s, l] of [[100n, 1n], [105n, 1n], [95n, 6n], [109n, 5n], [150n, 60n], [90n, 200n], [209n, 1n]] as const) {
    await expectCorrupt(extentFree(store, ar, s, l, OPTS));
  }
  await expectCorrupt(extentFree(store, ar, 10n, 5n, OPTS));
  await expectCorrupt(extentFree(store, ar, BOUNDS.last, 2n, OPTS));
  assert.deepEqual(await extentList(store, ar), before.list);
  assert.equal(ar.total_len, before.total);
  assert.deepEqual(ar.root, before.root, 'a refused free dirtied the tree');
  assert.equal(store.dirtyCount, 0);
});

test('keyings out of step and bad items are corruption, found before modifying', async () => {
  const store = new MemBlockStore();
  const ar = emptyAllocRoot();
  await extentFree(store, ar, 100n, 10n, OPTS);
  // A blkno item with no order item.
  const k = freeExtentKeys(500n, 10n);
  await btreeInsert(store, ar.root, k.blkno, new Uint8Array(0));
  ar.total_len += 10n;
  store.commit();
  const r = await checkAllocRoot(store, ar, OPTS);
  assert(!r.ok && r.problems.some((p) => p.includes('no order item')), r.problems.join('; '));
  const root = structuredClone(ar.root);
  await expectCorrupt(extentAllocAt(store, ar, 500n, 1n, OPTS));
  assert.deepEqual(ar.root, root);
  // A value on a free extent item.
  const ar2 = emptyAllocRoot();
  const k2 = freeExtentKeys(700n, 4n);
  await btreeInsert(store, ar2.root, k2.blkno, new Uint8Array(8));
  await btreeInsert(store, ar2.root, k2.order, new Uint8Array(0));
  ar2.total_len = 4n;
  await expectCorrupt(extentAlloc(store, ar2, 1n, OPTS));
  // total_len disagreeing with the items.
  const ar3 = emptyAllocRoot();
  await extentFree(store, ar3, 900n, 4n, OPTS);
  ar3.total_len = 2n;
  await expectCorrupt(extentAlloc(store, ar3, 4n, OPTS));
  ar3.total_len = 4n;
  // Out of bounds extents read from a tree.
  await expectCorrupt(extentAlloc(store, ar3, 1n, { bounds: { first: 64n, last: 901n } }));
});

test('full: ENOSPC, then everything freed back is one extent again', async () => {
  const store = new MemBlockStore();
  const ar = emptyAllocRoot();
  const m = new ExtentModel();
  // Many small extents: a multi-leaf tree.
  for (let i = 0n; i < 1200n; i++) {
    await extentFree(store, ar, 1000n + 2n * i, 1n, OPTS);
    m.free(1000n + 2n * i, 1n);
  }
  store.commit();
  await assertMatches(store, ar, m, 'setup');
  const r = await checkAllocRoot(store, ar, OPTS);
  assert(r.treeBlknos.size > 3, `tree of ${r.treeBlknos.size} blocks is not multi-level`);
  const got: Extent[] = [];
  for (;;) {
    try {
      got.push(await extentAlloc(store, ar, 7n, OPTS));
    } catch (e) {
      assert(e instanceof FsError && e.code === 'ENOSPC');
      break;
    }
  }
  assert.equal(got.length, 1200);
  assert.equal(ar.total_len, 0n);
  assert.equal(ar.root.height, 0);
  await expectFs(extentAlloc(store, ar, 1n, OPTS), 'ENOSPC');
  store.commit();
  // Free the gaps and the allocations in a scrambled order.
  for (let i = 0n; i < 1200n; i++) await extentFree(store, ar, 1001n + 2n * i, 1n, OPTS);
  for (let i = 0; i < got.length; i++) {
    const e = got[(i * 1237) % got.length]!;
    await extentFree(store, ar, e.start, e.len, OPTS);
  }
  assert.deepEqual(await extentList(store, ar), [{ start: 1000n, len: 2400n }]);
  store.commit();
  assert.deepEqual(store.verifyCommitted(), []);
});

test('move: data_freed into data_alloc, counted exactly', async () => {
  const store = new MemBlockStore();
  const alloc = emptyAllocRoot();
  const freed = emptyAllocRoot();
  await extentFree(store, alloc, 1000n, 100n, OPTS);
  await extentFree(store, freed, 1100n, 50n, OPTS);
  await extentFree(store, freed, 500n, 10n, OPTS);
  await extentFree(store, freed, 2000n, 1n, OPTS);
  assert.equal(await extentMove(store, alloc, freed, 5n, {}), 5n);
  assert.equal(freed.total_len, 56n);
  assert.equal(await extentMoveAll(store, alloc, freed), 56n);
  assert.equal(freed.total_len, 0n);
  assert.equal(freed.root.height, 0);
  assert.deepEqual(await extentList(store, alloc), [
    { start: 500n, len: 10n }, { start: 1000n, len: 150n }, { start: 2000n, len: 1n },
  ]);
  assert.equal(alloc.total_len, 161n);
  // Moving into an allocator that already holds the blocks is a double free.
  await extentFree(store, freed, 1000n, 1n, OPTS);
  await expectCorrupt(extentMoveAll(store, alloc, freed));
});

/* ---- property: random sequences against the model --------------------------- */

type Op =
  | { t: 'alloc'; count: number; minFrac: number }
  | { t: 'free'; pick: number; off: number; len: number }
  | { t: 'allocAt'; at: number; len: number }
  | { t: 'double'; at: number; len: number }
  | { t: 'commit' };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 5, arbitrary: fc.record({ t: fc.constant('alloc' as const), count: fc.integer({ min: 1, max: 300 }), minFrac: fc.double({ min: 0, max: 1, noNaN: true }) }) },
  { weight: 5, arbitrary: fc.record({ t: fc.constant('free' as const), pick: fc.nat(), off: fc.nat(), len: fc.integer({ min: 1, max: 200 }) }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('allocAt' as const), at: fc.integer({ min: 0, max: 6000 }), len: fc.integer({ min: 1, max: 40 }) }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant('double' as const), at: fc.integer({ min: 0, max: 6000 }), len: fc.integer({ min: 1, max: 40 }) }) },
  { weight: 1, arbitrary: fc.constant({ t: 'commit' as const }) },
);

test('property: extent allocator equals the interval-set model', async () => {
  const BASE = 10_000n;
  resetExtentCounters();
  let refused = 0;
  await fc.assert(
    fc.asyncProperty(fc.array(opArb, { minLength: 30, maxLength: 100, size: "max" }), fc.boolean(), async (ops, fragmented) => {
      const store = new MemBlockStore();
      const ar = emptyAllocRoot();
      const m = new ExtentModel();
      // Start with one big extent, or a fragmented range (many extents, several leaves).
      if (fragmented) {
        for (let i = 0n; i < 700n; i++) {
          const s = BASE + 4n * i;
          const l = 1n + (i % 3n);
          await extentFree(store, ar, s, l, OPTS);
          m.free(s, l);
        }
      } else {
        await extentFree(store, ar, BASE, 6000n, OPTS);
        m.free(BASE, 6000n);
      }
      store.commit();
      const held: Extent[] = [];
      for (const op of ops) {
        switch (op.t) {
          case 'alloc': {
            const count = BigInt(op.count);
            const min = 1n + BigInt(Math.floor(op.minFrac * (op.count - 1)));
            const want = m.alloc(count, min);
            if (want === 'ENOSPC') {
              await expectFs(extentAlloc(store, ar, count, { ...OPTS, min }), 'ENOSPC');
            } else {
              assert.deepEqual(await extentAlloc(store, ar, count, { ...OPTS, min }), want);
              held.push(want);
            }
            break;
          }
          case 'free': {
            if (held.length === 0) break;
            const i = op.pick % held.length;
            const h = held[i]!;
            const off = BigInt(op.off) % h.len;
            const len = BigInt(op.len) > h.len - off ? h.len - off : BigInt(op.len);
            held.splice(i, 1);
            if (off > 0n) held.push({ start: h.start, len: off });
            if (off + len < h.len) held.push({ start: h.start + off + len, len: h.len - off - len });
            assert.equal(m.free(h.start + off, len), 'ok');
            await extentFree(store, ar, h.start + off, len, OPTS);
            break;
          }
          case 'allocAt': {
            const s = BASE + BigInt(op.at);
            const l = BigInt(op.len);
            if (m.take(s, l)) {
              await extentAllocAt(store, ar, s, l, OPTS);
              held.push({ start: s, len: l });
            } else {
              await expectFs(extentAllocAt(store, ar, s, l, OPTS), 'ENOENT');
            }
            break;
          }
          case 'double': {
            // Free a range only if it overlaps free space: must be refused, nothing changed.
            const s = BASE + BigInt(op.at);
            const l = BigInt(op.len);
            if (m.clone().free(s, l) !== 'overlap') break;
            const root = structuredClone(ar.root);
            const dirty = store.dirtyCount;
            await expectCorrupt(extentFree(store, ar, s, l, OPTS));
            refused++;
            assert.deepEqual(ar.root, root);
            assert.equal(store.dirtyCount, dirty);
            break;
          }
          case 'commit':
            store.commit();
            break;
        }
      }
      await assertMatches(store, ar, m, 'end');
      // Everything held goes back: one extent (or the fragmented start) again.
      for (const h of held) {
        await extentFree(store, ar, h.start, h.len, OPTS);
        m.free(h.start, h.len);
      }
      await assertMatches(store, ar, m, 'after freeing everything');
      store.commit();
      assert.deepEqual(store.verifyCommitted(), []);
    }),
    { numRuns: 40, seed: process.env.SEED === undefined ? undefined : Number(process.env.SEED) },
  );
  // The runs went through every path.
  const c = extentCounters;
  assert(refused > 0 && c.classScans > 0 && c.shortAllocs > 0 && c.allocAts > 0 && c.mergeLeft > 0 && c.mergeRight > 0 && c.enospc > 0,
    `paths not exercised: ${JSON.stringify({ refused, ...c })}`);
});
