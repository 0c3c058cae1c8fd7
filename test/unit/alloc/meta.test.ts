/*
 * Goal: the transaction metadata allocator (src/alloc/meta.ts) follows
 * PROTOCOL.md 7.1/7.3 exactly: first use copies the first avail and freed
 * blocks using the first two avail entries (first_nr >= 2 else ENOSPC,
 * avail sorted), a freed block with less than a quarter free gets a new
 * block linked in front, blocks allocated and freed in one transaction go
 * straight back to avail, committed blocks go to freed (two-phase), counts
 * are exact, and over many transactions of btree churn no block is handed
 * out twice or while the last durable state still references it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { emptyRoot } from '../../../src/btree/store.js';
import type { AllocListHead } from '../../../src/format/common.js';
import { CorruptionError, FsError } from '../../../src/format/errors.js';
import { emptyListHead, LIST_MAX, walkList } from '../../../src/alloc/list.js';
import { FREED_LINK_SPACE, MetaAllocator } from '../../../src/alloc/meta.js';
import { Accountant, accountState, assertTreeIds, churnTree, MemImages, readOnlyStore, Rng, seeds } from './util.js';

const BOUNDS = { first: 2n, last: 100_000n };

function headOf(images: MemImages, blkno: bigint, entries: bigint[]): AllocListHead {
  const ref = images.putListBlock(blkno, entries);
  return { ref, first_nr: entries.length, total_nr: BigInt(entries.length), flags: 0 };
}

const range = (start: bigint, n: number): bigint[] => Array.from({ length: n }, (_, i) => start + BigInt(i));
const isFs = (code: string) => (e: unknown): boolean => e instanceof FsError && e.code === code;

test('first use needs first_nr >= 2: ENOSPC for alloc and for freeing a committed block, nothing dirtied', async () => {
  const images = new MemImages(BOUNDS);
  const avail = headOf(images, 10n, [20n]);
  const freed = emptyListHead();
  const before = structuredClone({ avail, freed });
  const m = await MetaAllocator.open(images, avail, freed, { bounds: BOUNDS });
  assert.equal(m.allocsLeft(), 0);
  await assert.rejects(m.alloc('btree'), isFs('ENOSPC'));
  assert.throws(() => m.free({ blkno: 500n, seq: 1n }), isFs('ENOSPC'));
  assert.equal(images.dirtyMap.size, 0);
  assert.deepEqual({ avail, freed }, before);
  // With two entries both go to the pair and allocation then fails.
  const a2 = headOf(images, 11n, [21n, 22n]);
  const m2 = await MetaAllocator.open(images, a2, emptyListHead(), { bounds: BOUNDS });
  await assert.rejects(m2.alloc('btree'), isFs('ENOSPC'));
  assert.equal(m2.counters.pairDirtied, 1);
  assert.equal(a2.first_nr, 0);
});

test('first use copies avail and freed with avail entries 0 and 1, sorts avail, pushes the old blocks', async () => {
  const images = new MemImages(BOUNDS);
  const avail = headOf(images, 10n, [30n, 20n, 25n, 21n, 22n]);
  const oldFreed = headOf(images, 11n, [40n, 41n]);
  const freed = { ...oldFreed };
  const m = await MetaAllocator.open(images, avail, freed, { bounds: BOUNDS });
  assert.equal(m.dirtied, false);
  const a = await m.alloc('btree');
  assert.equal(a.ref.blkno, 21n, 'sorted avail: lowest first');
  assert.equal(avail.ref.blkno, 30n);
  assert.equal(freed.ref.blkno, 20n);
  assert.equal(avail.first_nr, 2);
  assert.equal(avail.total_nr, 2n);
  // Freed was copied (plenty of room): its entries plus the old avail and old freed blocks.
  assert.equal(freed.first_nr, 4);
  assert.equal(freed.total_nr, 4n);
  assert.equal(m.counters.freedLinks, 0);
  images.commit();
  m.close();
  const store = readOnlyStore(images);
  assert.deepEqual((await walkList(store, avail)).entries, [22n, 25n]);
  assert.deepEqual((await walkList(store, freed)).entries, [40n, 41n, 10n, 11n]);
  assert.throws(() => m.free(a.ref), /closed/);
});

test('a freed block with less than a quarter free gets a new block linked in front', async () => {
  const images = new MemImages(BOUNDS);
  const avail = headOf(images, 10n, range(50n, 10));
  const full = range(10_000n, LIST_MAX - FREED_LINK_SPACE + 1);
  const freed = headOf(images, 11n, full);
  const m = await MetaAllocator.open(images, avail, freed, { bounds: BOUNDS });
  m.free({ blkno: 900n, seq: 5n });
  assert.equal(m.counters.freedLinks, 1);
  assert.equal(freed.first_nr, 2, 'new block: the old avail block and the freed blkno');
  assert.equal(freed.total_nr, BigInt(full.length + 2));
  images.commit();
  const w = await walkList(readOnlyStore(images), freed);
  assert.deepEqual(w.blocks, [51n, 11n], 'the full block is linked, not copied');
  assert.deepEqual(w.entries, [10n, 900n, ...full]);
});

test('alloc+free in one transaction returns to avail; committed frees go to freed; double free refused', async () => {
  const images = new MemImages(BOUNDS);
  const avail = headOf(images, 10n, range(100n, 50));
  const freed = emptyListHead();
  const m = await MetaAllocator.open(images, avail, freed, { bounds: BOUNDS });
  const a = await m.alloc('btree');
  const b = await m.alloc('btree');
  assert.equal(m.allocsLeft(), 46);
  m.free(a.ref);
  assert.equal(m.allocsLeft(), 47);
  assert.equal(images.isDirty(a.ref.blkno), false, 'image forgotten');
  assert.equal(m.counters.freesDirty, 1);
  assert.equal(freed.total_nr, 1n, 'only the old avail block is on freed');
  m.free({ blkno: 5000n, seq: 9n });
  assert.equal(freed.total_nr, 2n);
  assert.throws(() => m.free({ blkno: 5000n, seq: 9n }), CorruptionError);
  assert.throws(() => m.free({ blkno: BOUNDS.last + 1n, seq: 9n }), CorruptionError);
  // The block given back is handed out again in this transaction (it was never durable).
  const seen = new Set<bigint>([b.ref.blkno]);
  let again = false;
  while (m.allocsLeft() > 0) {
    const c = await m.alloc('btree');
    assert(!seen.has(c.ref.blkno), `blkno ${c.ref.blkno} handed out twice`);
    seen.add(c.ref.blkno);
    if (c.ref.blkno === a.ref.blkno) again = true;
  }
  assert(again);
  await assert.rejects(m.alloc('btree'), isFs('ENOSPC'));
  assert.equal(avail.first_nr, 0);
  assert.equal(avail.total_nr, 0n);
  m.assertConsistent();
});

test('a freed block that fills mid-transaction gets a new one linked from avail', async () => {
  const images = new MemImages(BOUNDS);
  const avail = headOf(images, 10n, range(100n, 20));
  // Exactly FREED_LINK_SPACE free: copied, then the two pushes leave FREED_LINK_SPACE - 2.
  const freed = headOf(images, 11n, range(50_000n, LIST_MAX - FREED_LINK_SPACE));
  const m = await MetaAllocator.open(images, avail, freed, { bounds: BOUNDS });
  assert.equal(m.freesLeft(), FREED_LINK_SPACE - 2);
  let n = 70_000n;
  while (m.freesLeft() > 0) m.free({ blkno: n++, seq: 1n });
  assert.equal(m.counters.freedLinks, 0);
  assert(m.isLow(1));
  m.free({ blkno: n++, seq: 1n });
  assert.equal(m.counters.freedLinks, 1);
  assert.equal(freed.first_nr, 1);
  assert.equal(freed.total_nr, BigInt(LIST_MAX + 1));
  assert.equal(avail.first_nr, 20 - 2 - 1);
  images.commit();
  const w = await walkList(readOnlyStore(images), freed);
  assert.equal(w.blocks.length, 2);
  assert.equal(w.entries.length, LIST_MAX + 1);
});

test('corrupt avail entries are refused before use', async () => {
  const images = new MemImages(BOUNDS);
  const dup = await MetaAllocator.open(images, headOf(images, 10n, [30n, 30n, 31n]), emptyListHead(), { bounds: BOUNDS });
  await assert.rejects(dup.alloc('btree'), CorruptionError);
  assert.equal(images.dirtyMap.size, 0);
  const own = await MetaAllocator.open(images, headOf(images, 12n, [12n, 40n]), emptyListHead(), { bounds: BOUNDS });
  await assert.rejects(own.alloc('btree'), CorruptionError);
  const out = await MetaAllocator.open(images, headOf(images, 13n, [41n, BOUNDS.last + 5n, 42n]), emptyListHead(), { bounds: BOUNDS });
  await assert.rejects(out.alloc('btree'), CorruptionError);
  // A head that disagrees with its block.
  const h = headOf(images, 14n, [50n, 51n]);
  h.first_nr = 3;
  h.total_nr = 3n;
  await assert.rejects(MetaAllocator.open(images, h, emptyListHead(), { bounds: BOUNDS }), CorruptionError);
});

test('two-phase: many transactions of btree churn, every blkno accounted, nothing reused early', async () => {
  for (const seed of seeds(3)) {
    const rng = new Rng(seed);
    const images = new MemImages(BOUNDS, seed);
    const availEntries = range(3n, LIST_MAX);
    const avail = headOf(images, 2n, availEntries);
    const freed = emptyListHead();
    const root = emptyRoot();
    const ids = new Set<number>();
    const unusedFirst = 3n + BigInt(LIST_MAX);
    for (let txn = 0; txn < 25; txn++) {
      const m = await MetaAllocator.open(images, avail, freed, { bounds: BOUNDS, source: `seed ${seed} txn ${txn}` });
      await churnTree(m, root, ids, rng, 20 + rng.int(60));
      if (rng.chance(0.3)) {
        // Allocate and free in the same transaction: back on avail at once.
        const x = await m.alloc('btree');
        const left = m.allocsLeft();
        m.free(x.ref);
        assert.equal(m.allocsLeft(), left + 1);
      }
      m.assertConsistent();
      // Nothing handed out in this transaction is on the freed list (freed now or earlier).
      const freedNow = new Set((await walkList(m, freed)).entries);
      for (const b of m.allocated) assert(!freedNow.has(b), `seed ${seed}: freed blkno ${b} was handed out`);
      images.commit();
      m.close();
      await assertTreeIds(readOnlyStore(images), root, ids);
      const acct = new Accountant();
      acct.add(unusedFirst, BOUNDS.last - unusedFirst + 1n, 'never listed');
      const { structure } = await accountState(images, {
        lists: [['avail', avail], ['freed', freed]],
        trees: [['tree', root]],
      }, acct);
      const problems = acct.check(BOUNDS);
      assert.deepEqual(problems, [], `seed ${seed} txn ${txn}:\n  ${problems.join('\n  ')}`);
      // The next transaction must not overwrite anything this state references.
      images.protect = structure;
    }
    assert(freed.total_nr > 0n);
  }
});

test('a transaction that never allocates or frees consumes nothing', async () => {
  const images = new MemImages(BOUNDS);
  const avail = headOf(images, 10n, range(100n, 10));
  const freed = headOf(images, 11n, [500n]);
  const before = structuredClone({ avail, freed });
  const m = await MetaAllocator.open(images, avail, freed, { bounds: BOUNDS });
  m.close();
  assert.equal(m.counters.pairDirtied, 0);
  assert.equal(images.dirtyMap.size, 0);
  assert.deepEqual({ avail, freed }, before);
});
