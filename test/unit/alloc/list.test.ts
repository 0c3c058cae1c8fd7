/*
 * Goal: alloc list blocks and heads (src/alloc/list.ts) keep first_nr and
 * total_nr exact through fill, empty, splice; entries append then wrap to
 * the front as FORMAT.md 9.2 says; every blkno moved between a list and an
 * extent allocator is accounted exactly once; list blocks are copied on
 * write; and bad bytes (start+nr overflow, head/block disagreement, loops,
 * duplicate entries) are CorruptionErrors.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MemBlockStore } from '../../../src/btree/memstore.js';
import { sealBlock, writeHeader } from '../../../src/format/block.js';
import { ALLOC_LIST_BLOCK } from '../../../src/format/alloc.js';
import type { AllocListHead, AllocRoot } from '../../../src/format/common.js';
import { LG_BLOCK_SIZE, MAGIC } from '../../../src/format/constants.js';
import { CorruptionError, FsError } from '../../../src/format/errors.js';
import { setU32 } from '../../../src/format/layout.js';
import { emptyAllocRoot, extentFree, extentList, type BlknoBounds } from '../../../src/alloc/extent.js';
import {
  dirtyListBlock, emptyList, emptyListHead, fillList, LIST_MAX, listBlockAdd, listBlockDrop, listBlockEntries, listBlockInit,
  listBlockNr, listBlockRemove, listBlockSort, listBlockStart, listCounters, readListBlock, resetListCounters, setListBlockNext,
  spliceList, walkList,
} from '../../../src/alloc/list.js';
import { cmpBig, Rng } from './util.js';

const BOUNDS: BlknoBounds = { first: 2n, last: 10_000_000n };
const OPTS = { bounds: BOUNDS };

function newBlock(): Uint8Array {
  const b = new Uint8Array(LG_BLOCK_SIZE);
  listBlockInit(b);
  return b;
}

/** Blknos of an allocator plus lists, sorted, must be exactly `want`. */
async function assertPartition(store: MemBlockStore, ar: AllocRoot, heads: AllocListHead[], want: bigint[]): Promise<void> {
  const got: bigint[] = [];
  for (const e of await extentList(store, ar, OPTS)) for (let i = 0n; i < e.len; i++) got.push(e.start + i);
  for (const h of heads) got.push(...(await walkList(store, h, OPTS)).entries);
  got.sort(cmpBig);
  assert.equal(got.length, want.length, 'blknos gained or lost');
  assert.deepEqual(got, want);
}

const range = (start: bigint, n: number): bigint[] => Array.from({ length: n }, (_, i) => start + BigInt(i));

test('block: append until the end, then prepend at start-1; removal from the front', () => {
  const b = newBlock();
  for (let i = 0; i < LIST_MAX; i++) listBlockAdd(b, BigInt(1000 + i));
  assert.equal(listBlockNr(b), LIST_MAX);
  assert.throws(() => listBlockAdd(b, 1n));
  assert.deepEqual(listBlockRemove(b, 3), [1000n, 1001n, 1002n]);
  assert.equal(listBlockStart(b), 3);
  listBlockAdd(b, 7n);
  assert.equal(listBlockStart(b), 2, 'array end reached: prepended');
  assert.equal(listBlockEntries(b)[0], 7n);
  listBlockSort(b);
  assert.deepEqual(listBlockEntries(b).slice(0, 2), [7n, 1003n]);
  assert.equal(listBlockNr(b), LIST_MAX - 2);
  listBlockDrop(b, LIST_MAX - 2);
  assert.equal(listBlockStart(b), 0, 'an emptied block resets start');
  assert.equal(listBlockNr(b), 0);
});

test('bad list bytes are CorruptionErrors', async () => {
  const store = new MemBlockStore();
  const put = (blkno: bigint, fill: (b: Uint8Array) => void): { blkno: bigint; seq: bigint } => {
    const b = new Uint8Array(LG_BLOCK_SIZE);
    writeHeader(b, { magic: MAGIC.allocList, fsid: store.fsid, seq: 77n + blkno, blkno });
    listBlockInit(b);
    fill(b);
    sealBlock(b);
    return store.putCommitted(b);
  };
  const over = put(10n, (b) => {
    setU32(b, ALLOC_LIST_BLOCK.o('start'), 8000);
    setU32(b, ALLOC_LIST_BLOCK.o('nr'), 200);
  });
  await assert.rejects(readListBlock(store, over, OPTS), CorruptionError);
  const two = put(11n, (b) => {
    listBlockAdd(b, 5n);
    listBlockAdd(b, 6n);
  });
  const head = (ref: { blkno: bigint; seq: bigint }, first_nr: number, total: bigint): AllocListHead => ({ ref, first_nr, total_nr: total, flags: 0 });
  await assert.rejects(walkList(store, head(two, 3, 3n), OPTS), CorruptionError, 'first_nr mismatch');
  await assert.rejects(walkList(store, head(two, 2, 5n), OPTS), CorruptionError, 'total_nr mismatch');
  await assert.rejects(walkList(store, { ref: { blkno: 0n, seq: 0n }, first_nr: 1, total_nr: 1n, flags: 0 }, OPTS), CorruptionError);
  await assert.rejects(walkList(store, head(two, 2, 2n), { bounds: { first: 6n, last: 100n } }), CorruptionError, 'entry out of bounds');
  const loop = put(12n, (b) => setListBlockNext(b, { blkno: 12n, seq: 77n + 12n }));
  await assert.rejects(walkList(store, head(loop, 0, 0n), OPTS), CorruptionError, 'loop');
  const dup = put(13n, (b) => {
    listBlockAdd(b, 500n);
    listBlockAdd(b, 500n);
  });
  const ar = emptyAllocRoot();
  await assert.rejects(emptyList(store, head(dup, 2, 2n), ar, OPTS), CorruptionError, 'duplicate');
  assert.equal(ar.total_len, 0n);
});

test('fill: toward target when below lo, largest extents first; exact counts; ENOSPC keeps what was added', async () => {
  resetListCounters();
  const store = new MemBlockStore();
  const ar = emptyAllocRoot();
  await extentFree(store, ar, 100_000n, 100n, OPTS);
  await extentFree(store, ar, 200_000n, 20_000n, OPTS);
  const all = [...range(100_000n, 100), ...range(200_000n, 20_000)];
  const h = emptyListHead();
  assert.equal(await fillList(store, h, ar, 4092, 8185, OPTS), 8185);
  assert.equal(h.first_nr, 8185);
  assert.equal(h.total_nr, 8185n);
  assert.deepEqual((await walkList(store, h, OPTS)).entries, range(200_000n, 8185));
  assert.equal(await fillList(store, h, ar, 4092, 8185, OPTS), 0, 'not below lo: untouched');
  store.commit();
  // Consume 4100 entries from the first block, as a transaction would.
  const d = await dirtyListBlock(store, h.ref, OPTS);
  h.ref = d.ref;
  listBlockDrop(d.b, 4100);
  h.first_nr -= 4100;
  h.total_nr -= 4100n;
  assert.equal(await fillList(store, h, ar, 4092, 8185, OPTS), 4100);
  assert.equal(h.first_nr, 8185);
  store.commit();
  await assertPartition(store, ar, [h], all.filter((b) => b < 200_000n || b >= 200_000n + 4100n));
  // A small allocator runs dry: ENOSPC, with what was added accounted.
  const small = emptyAllocRoot();
  await extentFree(store, small, 500_000n, 30n, OPTS);
  const h2 = emptyListHead();
  await assert.rejects(fillList(store, h2, small, 64, 128, OPTS), (e: unknown) => e instanceof FsError && e.code === 'ENOSPC');
  assert.equal(h2.first_nr, 30);
  assert.equal(h2.total_nr, 30n);
  assert.equal(small.total_len, 0n);
  assert.deepEqual((await walkList(store, h2, OPTS)).entries, range(500_000n, 30));
});

test('splice: every source block is copied, counts and order exact, source zeroed', async () => {
  resetListCounters();
  const store = new MemBlockStore();
  const ar = emptyAllocRoot();
  await extentFree(store, ar, 1_000_000n, 50_000n, OPTS);
  // dst: one block of 10.  src: a chain of three blocks (20, 30, 40) built by splicing.
  const dst = emptyListHead();
  await fillList(store, dst, ar, 10, 10, OPTS);
  const src = emptyListHead();
  for (const n of [40, 30, 20]) {
    const t = emptyListHead();
    await fillList(store, t, ar, n, n, OPTS);
    await spliceList(store, src, t, OPTS);
    assert.deepEqual(t, emptyListHead());
  }
  store.commit();
  const srcWalk = await walkList(store, src, OPTS);
  const dstWalk = await walkList(store, dst, OPTS);
  assert.equal(src.first_nr, 20);
  assert.equal(src.total_nr, 90n);
  assert.equal(srcWalk.blocks.length, 3);
  await spliceList(store, dst, src, OPTS);
  store.commit();
  assert.deepEqual(src, emptyListHead());
  assert.equal(dst.first_nr, 20);
  assert.equal(dst.total_nr, 100n);
  const w = await walkList(store, dst, OPTS);
  assert.deepEqual(w.entries, [...srcWalk.entries, ...dstWalk.entries]);
  assert.equal(w.blocks.length, 4);
  for (const b of srcWalk.blocks) assert(!w.blocks.includes(b), `source block ${b} was not copied`);
  assert.equal(w.blocks[3], dstWalk.blocks[0], 'the destination chain is linked, not copied');
  // An empty source is a no-op.
  const before = structuredClone(dst);
  await spliceList(store, dst, emptyListHead(), OPTS);
  assert.deepEqual(dst, before);
});

test('empty: a scrambled multi-block list goes back to extents exactly; stop resumes', async () => {
  const rng = new Rng(7);
  const store = new MemBlockStore();
  const pool = emptyAllocRoot();
  await extentFree(store, pool, 3_000_000n, 3000n, OPTS);
  // Build a chain of 4 blocks from scattered single blknos.
  const scattered = range(3_000_000n, 3000).filter(() => rng.chance(0.5));
  const chain = emptyListHead();
  let at = 0;
  for (const n of [700, 600, 500]) {
    const b = await store.alloc('allocList');
    listBlockInit(b.b);
    const part = scattered.slice(at, Math.min(at + n, scattered.length));
    at += part.length;
    for (let i = part.length - 1; i > 0; i--) {
      const j = rng.int(i + 1);
      [part[i], part[j]] = [part[j]!, part[i]!];
    }
    for (const e of part) listBlockAdd(b.b, e);
    const h = { ref: b.ref, first_nr: part.length, total_nr: BigInt(part.length), flags: 0 };
    await spliceList(store, chain, h, OPTS);
  }
  // The blknos not listed stay in a separate allocator; the target starts empty.
  const rest = range(3_000_000n, 3000).filter((b) => !scattered.slice(0, at).includes(b));
  const target = emptyAllocRoot();
  store.commit();
  let steps = 0;
  const done = await emptyList(store, chain, target, { ...OPTS, stop: () => ++steps > 40 });
  assert.equal(done, false);
  assert(chain.total_nr > 0n && chain.total_nr < BigInt(at));
  const mid = await walkList(store, chain, OPTS);
  assert.equal(BigInt(mid.entries.length), chain.total_nr);
  store.commit();
  assert.equal(await emptyList(store, chain, target, OPTS), true);
  assert.deepEqual(chain, emptyListHead());
  const got: bigint[] = [];
  for (const e of await extentList(store, target, OPTS)) for (let i = 0n; i < e.len; i++) got.push(e.start + i);
  assert.deepEqual(got, scattered.slice(0, at).sort(cmpBig));
  assert(rest.length > 0);
  assert(listCounters.emptiedBlocks >= 3);
  store.commit();
  assert.deepEqual(store.verifyCommitted(), []);
});
