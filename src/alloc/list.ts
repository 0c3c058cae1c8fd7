/*
 * Alloc lists: chains of 64 KiB list blocks of metadata blknos (FORMAT.md
 * 4.7, 9.2, 9.3; PROTOCOL.md 7.1-7.3).
 *
 *   head {ref, total_nr, first_nr, flags}
 *     |
 *     v
 *   [hdr | next ------+ | start | nr | blknos[0 .. 8184]]    first block
 *                     v
 *                   [hdr | next = 0 | start | nr | blknos...]
 *
 * Valid entries of a block are blknos[start .. start+nr-1].  Entries are
 * appended at start+nr; once that reaches the end of the array they are
 * prepended at start-1.  Removal takes from the front (start += n); a block
 * emptied this way resets start to 0.  Order carries no meaning on disk; we
 * sort a block's entries when we dirty it to allocate or to empty it, so
 * neighbouring blknos come out (and go back into extents) together.
 *
 * What it owns.  The block-level operations on list images and the
 * head-level operations that walk or rewrite whole lists through a
 * BlockStore: filling a list from an extent allocator, emptying a list into
 * one, splicing one list onto the head of another, and walking a list to
 * count it.  The heads belong to their holders (super, log_trees, srch and
 * log-merge requests) and are mutated in place; one writer per head at a
 * time (the holder of the transaction whose store is passed in).  The
 * per-transaction pop/push of a metadata allocator is meta.ts: it works on
 * one dirty avail block and one dirty freed block, synchronously.
 *
 * Invariants (checked on every read; a violation in bytes read is a
 * CorruptionError, in our own state an assertion):
 *   - start + nr <= 8185 in every block;
 *   - head.first_nr = nr of the first block, head.total_nr = sum of nr over
 *     the chain, and a zero ref has first_nr = total_nr = 0;
 *   - the chain is acyclic, and its blknos (blocks and entries) lie inside
 *     the device bounds when they are given.
 *
 * Copy on write.  List blocks are COW'd like btree blocks
 * (dirtyListBlock): a block already dirty in this transaction is modified in
 * place; a committed one is copied into a block from store.alloc() with a
 * fresh seq and the old blkno goes to store.free() (two-phase, so the old
 * copy stays intact until the transaction that replaced it is durable).
 * Splicing must rewrite the tail's next ref, so it copies every block of
 * the source chain, as the kernel does.
 *
 * Failure modes.  fillList() throws FsError('ENOSPC') when the extent
 * allocator runs dry before the target; what it added so far stays in the
 * head and block (consistent; the server's GET reports the error and the
 * partial fill rides along with its next commit, PROTOCOL.md 13.10).
 * emptyList() and fillList() take a `stop` callback polled before each step
 * so the server can stop when its own allocator runs low (7.2).  An error
 * from the store in the middle of a step leaves dirty state that the
 * transaction must discard.
 */
import assert from 'node:assert/strict';
import type { BlockStore } from '../btree/store.js';
import { ALLOC_LIST_BLOCK } from '../format/alloc.js';
import { readRef, writeRef, ZERO_REF, type BlockRef } from '../format/block.js';
import type { AllocListHead, AllocRoot } from '../format/common.js';
import { ALLOC_FLAG_LOW } from '../format/common.js';
import { ALLOC_LIST_MAX_BLOCKS } from '../format/constants.js';
import { CorruptionError } from '../format/errors.js';
import { getU32, getU64, setU32, setU64 } from '../format/layout.js';
import { extentAlloc, extentFree, type BlknoBounds } from './extent.js';

/** Entries per list block. */
export const LIST_MAX = ALLOC_LIST_MAX_BLOCKS;
/** Refill a list whose first block holds fewer than this (PROTOCOL.md 12)... */
export const LIST_FILL_LO = 4092;
/** ...up to this many entries. */
export const LIST_FILL_TARGET = 8185;

const O_NEXT = ALLOC_LIST_BLOCK.o('next');
/** Where a list block's payload (everything after the header) starts. */
export const LIST_PAYLOAD_OFF = O_NEXT;
const O_START = ALLOC_LIST_BLOCK.o('start');
const O_NR = ALLOC_LIST_BLOCK.o('nr');
const O_BLKNOS = ALLOC_LIST_BLOCK.o('blknos');

/** What reading a list needs from a store. */
export type BlockReader = Pick<BlockStore, 'read'>;

export interface ListOpts {
  /** Blknos in lists (blocks and entries) must lie inside these. */
  bounds?: BlknoBounds;
  /** Names the list in errors. */
  source?: string;
}

export interface ListStepOpts extends ListOpts {
  /** Polled before each step; true stops early (the caller's allocator is low). */
  stop?: () => boolean;
}

export const listCounters = {
  cows: 0,
  created: 0,
  fills: 0,
  filled: 0,
  empties: 0,
  emptiedBlocks: 0,
  emptiedEntries: 0,
  stoppedEarly: 0,
  splices: 0,
  splicedBlocks: 0,
};

export function resetListCounters(): void {
  for (const k of Object.keys(listCounters) as (keyof typeof listCounters)[]) listCounters[k] = 0;
}

function corrupt(opts: ListOpts, blkno: bigint | null, detail: string): CorruptionError {
  return new CorruptionError(opts.source ?? 'alloc list', blkno, 'structure', detail);
}

function inBounds(blkno: bigint, opts: ListOpts): boolean {
  const b = opts.bounds;
  return b === undefined || (blkno >= b.first && blkno <= b.last);
}

/* ---- block level ---------------------------------------------------------- */

export const listBlockNr = (b: Uint8Array): number => getU32(b, O_NR);
export const listBlockStart = (b: Uint8Array): number => getU32(b, O_START);
export const listBlockNext = (b: Uint8Array): BlockRef => readRef(b, O_NEXT);
export const listBlockSpace = (nr: number): number => LIST_MAX - nr;

export function setListBlockNext(b: Uint8Array, ref: BlockRef): void {
  writeRef(b, O_NEXT, ref);
}

/** An empty block: no next, start 0, nr 0 (the header is the store's). */
export function listBlockInit(b: Uint8Array): void {
  writeRef(b, O_NEXT, ZERO_REF);
  setU32(b, O_START, 0);
  setU32(b, O_NR, 0);
}

/** Entry i of the valid range (0 = the front). */
export function listBlockEntry(b: Uint8Array, i: number): bigint {
  assert(i >= 0 && i < listBlockNr(b));
  return getU64(b, O_BLKNOS + 8 * (listBlockStart(b) + i));
}

export function listBlockEntries(b: Uint8Array): bigint[] {
  const start = listBlockStart(b);
  const nr = listBlockNr(b);
  const out = new Array<bigint>(nr);
  for (let i = 0; i < nr; i++) out[i] = getU64(b, O_BLKNOS + 8 * (start + i));
  return out;
}

/** Append at start+nr, or prepend at start-1 once the array end is reached. */
export function listBlockAdd(b: Uint8Array, blkno: bigint): void {
  let start = listBlockStart(b);
  const nr = listBlockNr(b);
  assert(nr < LIST_MAX, 'list block full');
  assert(blkno > 0n, 'adding blkno 0 to a list');
  if (start + nr < LIST_MAX) {
    setU64(b, O_BLKNOS + 8 * (start + nr), blkno);
  } else {
    assert(start > 0);
    start--;
    setU64(b, O_BLKNOS + 8 * start, blkno);
    setU32(b, O_START, start);
  }
  setU32(b, O_NR, nr + 1);
}

/** Drop `count` entries from the front. */
export function listBlockDrop(b: Uint8Array, count: number): void {
  const nr = listBlockNr(b);
  assert(count >= 0 && count <= nr, `dropping ${count} of ${nr} list entries`);
  setU32(b, O_START, count === nr ? 0 : listBlockStart(b) + count);
  setU32(b, O_NR, nr - count);
}

/** Remove and return `count` entries from the front. */
export function listBlockRemove(b: Uint8Array, count: number): bigint[] {
  const start = listBlockStart(b);
  assert(count <= listBlockNr(b));
  const out = new Array<bigint>(count);
  for (let i = 0; i < count; i++) out[i] = getU64(b, O_BLKNOS + 8 * (start + i));
  listBlockDrop(b, count);
  return out;
}

/** Sort the valid range ascending, in place. */
export function listBlockSort(b: Uint8Array): void {
  const start = listBlockStart(b);
  const e = listBlockEntries(b);
  e.sort((x, y) => (x < y ? -1 : x > y ? 1 : 0));
  for (let i = 0; i < e.length; i++) setU64(b, O_BLKNOS + 8 * (start + i), e[i]!);
}

/** Validate a list block image read from disk. */
export function validateListBlock(b: Uint8Array, blkno: bigint, opts: ListOpts = {}): void {
  const start = listBlockStart(b);
  const nr = listBlockNr(b);
  if (start > LIST_MAX || nr > LIST_MAX || start + nr > LIST_MAX) {
    throw corrupt(opts, blkno, `start ${start} + nr ${nr} > ${LIST_MAX}`);
  }
  const next = listBlockNext(b);
  if (next.blkno !== 0n && !inBounds(next.blkno, opts)) throw corrupt(opts, blkno, `next blkno ${next.blkno} out of bounds`);
}

/* ---- head level ----------------------------------------------------------- */

export function emptyListHead(): AllocListHead {
  return { ref: { blkno: 0n, seq: 0n }, total_nr: 0n, first_nr: 0, flags: 0 };
}

export function setListLow(head: AllocListHead, low: boolean): void {
  head.flags = low ? head.flags | ALLOC_FLAG_LOW : head.flags & ~ALLOC_FLAG_LOW;
}

export function listIsLow(head: AllocListHead): boolean {
  return (head.flags & ALLOC_FLAG_LOW) !== 0;
}

/** Read and validate a list block. */
export async function readListBlock(store: BlockReader, ref: BlockRef, opts: ListOpts = {}): Promise<Uint8Array> {
  assert(ref.blkno !== 0n);
  if (!inBounds(ref.blkno, opts)) throw corrupt(opts, ref.blkno, 'list block out of bounds');
  const b = await store.read(ref, 'allocList');
  validateListBlock(b, ref.blkno, opts);
  return b;
}

/** The head's first block (null for an empty head), checked against first_nr. */
export async function readFirstListBlock(store: BlockReader, head: AllocListHead, opts: ListOpts = {}): Promise<Uint8Array | null> {
  if (head.ref.blkno === 0n) {
    if (head.first_nr !== 0 || head.total_nr !== 0n) {
      throw corrupt(opts, null, `empty list head with first_nr ${head.first_nr} total_nr ${head.total_nr}`);
    }
    return null;
  }
  const b = await readListBlock(store, head.ref, opts);
  if (listBlockNr(b) !== head.first_nr || head.total_nr < BigInt(head.first_nr)) {
    throw corrupt(opts, head.ref.blkno, `block nr ${listBlockNr(b)}, head first_nr ${head.first_nr} total_nr ${head.total_nr}`);
  }
  return b;
}

/**
 * Make the block a ref names writable (see the essay); a zero ref gets a
 * new empty block.  The caller stores the returned ref where the old was.
 */
export async function dirtyListBlock(
  store: BlockStore, ref: BlockRef, opts: ListOpts = {},
): Promise<{ ref: BlockRef; b: Uint8Array; copied: boolean }> {
  if (ref.blkno === 0n) {
    const n = await store.alloc('allocList');
    listBlockInit(n.b);
    listCounters.created++;
    return { ref: n.ref, b: n.b, copied: false };
  }
  const src = await readListBlock(store, ref, opts);
  if (store.isDirty(ref.blkno)) return { ref, b: src, copied: false };
  const n = await store.alloc('allocList');
  n.b.set(src.subarray(O_NEXT), O_NEXT);
  store.free(ref);
  listCounters.cows++;
  return { ref: n.ref, b: n.b, copied: true };
}

/** Dirty the first block of a head (creating one for an empty head). */
async function dirtyFirst(store: BlockStore, head: AllocListHead, opts: ListOpts): Promise<Uint8Array> {
  await readFirstListBlock(store, head, opts);
  const d = await dirtyListBlock(store, head.ref, opts);
  head.ref = d.ref;
  assert.equal(listBlockNr(d.b), head.first_nr);
  return d.b;
}

/**
 * Refill (PROTOCOL.md 4.6, 7.2): if the first block holds fewer than `lo`
 * entries, add extents from `ar` (largest first) until it holds `target`.
 * Returns the number of entries added.  FsError('ENOSPC') when `ar` runs
 * dry first (what was added stays, consistently accounted).
 */
export async function fillList(
  store: BlockStore, head: AllocListHead, ar: AllocRoot, lo: number, target: number, opts: ListStepOpts = {},
): Promise<number> {
  assert(lo >= 0 && lo <= target && target <= LIST_MAX, `fill lo ${lo} target ${target}`);
  if (head.first_nr >= lo) return 0;
  if (opts.stop?.()) {
    listCounters.stoppedEarly++;
    return 0;
  }
  listCounters.fills++;
  const b = await dirtyFirst(store, head, opts);
  let added = 0;
  while (listBlockNr(b) < target) {
    if (opts.stop?.()) {
      listCounters.stoppedEarly++;
      break;
    }
    const e = await extentAlloc(store, ar, BigInt(target - listBlockNr(b)), { bounds: opts.bounds, source: opts.source });
    for (let i = 0n; i < e.len; i++) listBlockAdd(b, e.start + i);
    const n = Number(e.len);
    head.first_nr += n;
    head.total_nr += e.len;
    added += n;
  }
  listCounters.filled += added;
  assert.equal(listBlockNr(b), head.first_nr);
  return added;
}

/**
 * Empty a list into an extent allocator: each block is dirtied, sorted,
 * its runs of consecutive blknos freed as extents (one run per step, so
 * `stop` can end it between runs), and the then empty block itself freed
 * (to the store: the copy was allocated by this transaction, so it goes
 * straight back to the allocator's avail list).  A block that holds no
 * entries is freed without being copied.  Returns true when the list is
 * empty, false when `stop` ended it early.
 */
export async function emptyList(
  store: BlockStore, head: AllocListHead, ar: AllocRoot, opts: ListStepOpts = {},
): Promise<boolean> {
  listCounters.empties++;
  const seen = new Set<bigint>();
  while (head.ref.blkno !== 0n) {
    if (opts.stop?.()) {
      listCounters.stoppedEarly++;
      return false;
    }
    const orig = head.ref.blkno;
    if (seen.has(orig)) throw corrupt(opts, orig, 'list chain loops');
    seen.add(orig);
    const first = await readFirstListBlock(store, head, opts);
    assert(first !== null);
    if (listBlockNr(first) === 0) {
      // Nothing to free from it: no need to copy it first.
      await dropEmptyFirst(store, head, first, opts);
      continue;
    }
    const b = await dirtyFirst(store, head, opts);
    listBlockSort(b);
    const e = listBlockEntries(b);
    for (let i = 1; i < e.length; i++) {
      if (e[i] === e[i - 1]) throw corrupt(opts, head.ref.blkno, `blkno ${e[i]} listed twice`);
    }
    let i = 0;
    while (i < e.length) {
      if (opts.stop?.()) {
        listCounters.stoppedEarly++;
        return false;
      }
      let j = i + 1;
      while (j < e.length && e[j] === e[j - 1]! + 1n) j++;
      await extentFree(store, ar, e[i]!, BigInt(j - i), { bounds: opts.bounds, source: opts.source });
      listBlockDrop(b, j - i);
      head.first_nr -= j - i;
      head.total_nr -= BigInt(j - i);
      listCounters.emptiedEntries += j - i;
      i = j;
    }
    await dropEmptyFirst(store, head, b, opts);
  }
  assert(head.first_nr === 0 && head.total_nr === 0n);
  return true;
}

/** Unlink and free the head's first block, which holds no entries (b is its image). */
async function dropEmptyFirst(store: BlockStore, head: AllocListHead, b: Uint8Array, opts: ListOpts): Promise<void> {
  assert.equal(listBlockNr(b), 0);
  const next = listBlockNext(b);
  const nextNr = next.blkno === 0n ? 0 : listBlockNr(await readListBlock(store, next, opts));
  if (next.blkno === 0n && head.total_nr !== 0n) throw corrupt(opts, head.ref.blkno, `list ended with total_nr ${head.total_nr} left`);
  const old = head.ref;
  head.ref = next;
  head.first_nr = nextNr;
  store.free(old);
  listCounters.emptiedBlocks++;
}

/**
 * Splice all of src onto the front of dst (PROTOCOL.md 7.2: reclaimed
 * lists onto the idle freed list): every src block is dirtied, the tail's
 * next set to dst's first block, dst takes src's first block and counts,
 * and src is zeroed.
 */
export async function spliceList(store: BlockStore, dst: AllocListHead, src: AllocListHead, opts: ListOpts = {}): Promise<void> {
  assert(dst !== src, 'splicing a list onto itself');
  await readFirstListBlock(store, src, opts);
  if (src.ref.blkno !== 0n) {
    listCounters.splices++;
    const seen = new Set<bigint>([src.ref.blkno]);
    let d = await dirtyListBlock(store, src.ref, opts);
    src.ref = d.ref;
    let sum = BigInt(listBlockNr(d.b));
    let blocks = 1;
    for (;;) {
      const next = listBlockNext(d.b);
      if (next.blkno === 0n) break;
      if (seen.has(next.blkno)) throw corrupt(opts, next.blkno, 'list chain loops');
      seen.add(next.blkno);
      const nd = await dirtyListBlock(store, next, opts);
      setListBlockNext(d.b, nd.ref);
      d = nd;
      sum += BigInt(listBlockNr(d.b));
      blocks++;
    }
    if (sum !== src.total_nr) throw corrupt(opts, src.ref.blkno, `chain holds ${sum} entries, head total_nr ${src.total_nr}`);
    setListBlockNext(d.b, dst.ref);
    dst.ref = src.ref;
    dst.total_nr += src.total_nr;
    dst.first_nr = src.first_nr;
    listCounters.splicedBlocks += blocks;
  }
  src.ref = { blkno: 0n, seq: 0n };
  src.total_nr = 0n;
  src.first_nr = 0;
  src.flags = 0;
}

export interface ListWalk {
  /** Every entry of every block, in chain order. */
  entries: bigint[];
  /** The list's own blocks, first to last. */
  blocks: bigint[];
}

/**
 * Read a whole list, checking first_nr, total_nr, bounds and acyclicity
 * (CorruptionError on the first violation).  For accounting, statfs, fsck.
 */
export async function walkList(store: BlockReader, head: AllocListHead, opts: ListOpts = {}): Promise<ListWalk> {
  const out: ListWalk = { entries: [], blocks: [] };
  const first = await readFirstListBlock(store, head, opts);
  if (first === null) return out;
  const seen = new Set<bigint>();
  let ref = head.ref;
  let b: Uint8Array = first;
  for (;;) {
    if (seen.has(ref.blkno)) throw corrupt(opts, ref.blkno, 'list chain loops');
    seen.add(ref.blkno);
    out.blocks.push(ref.blkno);
    for (const e of listBlockEntries(b)) {
      if (!inBounds(e, opts) || e === 0n) throw corrupt(opts, ref.blkno, `entry ${e} out of bounds`);
      out.entries.push(e);
    }
    ref = listBlockNext(b);
    if (ref.blkno === 0n) break;
    b = await readListBlock(store, ref, opts);
  }
  if (BigInt(out.entries.length) !== head.total_nr) {
    throw corrupt(opts, head.ref.blkno, `chain holds ${out.entries.length} entries, head total_nr ${head.total_nr}`);
  }
  return out;
}
