/*
 * Extent allocators: the free space of one alloc root (FORMAT.md 4.6, 8.10,
 * 9.1; PROTOCOL.md 7.1).
 *
 * What it owns.  Nothing but the rules: the AllocRoot {total_len, flags,
 * root} belongs to whoever holds it (the super's meta_alloc[2] and
 * data_alloc, a log_trees' data_avail / data_freed), and every function here
 * takes it with the BlockStore whose transaction may modify it.  The btree
 * root inside is mutated in place by the btree (src/btree/btree.ts), and
 * total_len is mutated in place here.  One writer per root at a time: the
 * holder of the transaction (server commit lock, client trans hold).
 *
 * The tree holds every free extent [start, end] twice, both items value-less
 * and with seq 0 and flags 0:
 *
 *   zone 9  (BLKNO):  first = end,                second = len,  third = 0
 *   zone 10 (ORDER):  first = 2^64-1 - order(len), second = end, third = len
 *
 * order(len) = floor(log8(len)), so the ORDER index lists the largest size
 * classes first, lowest end first within a class.  Invariants, checked by
 * checkAllocRoot() and by assertions on the paths that rely on them:
 *   - the two keyings hold exactly the same set of extents;
 *   - extents do not overlap and are never adjacent (free() merges with both
 *     neighbours, alloc() only shrinks or splits);
 *   - len >= 1, and every extent lies inside the device bounds when the
 *     caller gives them (meta: [2, total_meta_blocks-1] in 64 KiB units;
 *     data: [64, total_data_blocks-1] in 4 KiB units);
 *   - total_len = sum of len over the extents.
 *
 * Allocation (PROTOCOL.md 7.1): take from the front (lowest blocks) of the
 * first extent of the ORDER index.  When that extent is shorter than the
 * request, a longer one can only be in the same (top) order class, so we
 * look through that class for the first extent that is long enough, else the
 * longest; the look is bounded to EXTENT_SCAN_LIMIT items unless the best
 * found is still shorter than the caller's minimum (rare: then the whole top
 * class is read, which is exact, since no extent outside it can reach the
 * minimum).  The result may be shorter than asked, down to `min`; an empty
 * allocator, or one whose longest extent is below `min`, is
 * FsError('ENOSPC') with nothing modified.  allocAt() takes an exact range
 * (tests, fsck, mkfs-like setup).
 *
 * Freeing merges with the extent that ends at start-1 and the one that
 * starts at end+1.  A free that overlaps a free extent (a double free) or
 * lies outside the bounds means the caller's blknos disagree with the bytes
 * of this tree: the blknos come from disk or from a peer (lists, log_trees),
 * so it is validated into a CorruptionError, thrown BEFORE anything is
 * modified.  Items that decode badly, keyings out of step and a total_len
 * that disagrees with the items are CorruptionErrors too.
 *
 * Failure modes.  Each function reads what it needs and validates it
 * before its first modification: the extents it will remove are found
 * through one keying and looked up in the other (a read; a btree delete
 * would dirty its path even for a missing key), total_len is checked to
 * cover them, the freed range is checked against its neighbours.  So an
 * ENOSPC from an empty allocator or any of these CorruptionErrors leaves
 * the tree untouched, blocks included.  (One corruption is only found by
 * the insert that trips on it: a stray zone-10 item, with no zone-9 twin,
 * exactly where a merged extent's order item goes.)  A change is several
 * btree operations (delete two items, insert two), and the btree
 * guarantees only that each single operation is all or nothing; an error
 * from the store in the middle (ENOSPC from the metadata allocator, an I/O
 * error) can leave this dirty tree with an extent half removed.  The
 * transaction must then be discarded, as every transaction failure is: the
 * committed tree is untouched, the dirty copy is thrown away.  Rejected:
 * reserving worst-case blocks before every operation (it needs a "peek" on
 * the store that the BlockStore contract does not have, and the
 * transaction layer already refuses to start work it cannot finish, 4.3).
 *
 * Order of the btree operations.  A change inserts the items of the new
 * extents (a remainder, a merged extent) before it deletes those of the
 * extents it replaces.  Their keys never collide: a new extent either ends
 * where no extent ends, or ends where a replaced one does with a different
 * length, and both keyings carry the length.  Deleting first would empty
 * the root leaf of an allocator holding a single extent (the common case
 * for a mount's data_avail): the leaf is freed, and the insert that follows
 * allocates and zeroes a new 64 KiB block, on every data allocation.
 * total_len is adjusted by each primitive, so it ends the same either way.
 *
 * Left out: data allocation zones (PROTOCOL.md 7.4) belong to the server's
 * data refill, which can call allocAt() with the ranges it prefers.
 */
import assert from 'node:assert/strict';
import { btreeDelete, btreeInsert, btreeIterate, btreeLookup, btreeNext, btreePrev, type BtreeItem } from '../btree/btree.js';
import { checkBtree } from '../btree/check.js';
import type { BlockStore } from '../btree/store.js';
import type { AllocRoot } from '../format/common.js';
import { CorruptionError, FsError } from '../format/errors.js';
import { extentOrder, freeExtentKeys, ZONE } from '../format/items.js';
import { key, ONES_KEY, ZERO_KEY } from '../format/key.js';
import { U64_MAX } from '../format/layout.js';

const Z_BLKNO = ZONE.FREE_EXTENT_BLKNO;
const Z_ORDER = ZONE.FREE_EXTENT_ORDER;
const NO_VAL = new Uint8Array(0);

/** Items of the top order class looked at before settling for the longest seen. */
export const EXTENT_SCAN_LIMIT = 64;

export interface Extent {
  start: bigint;
  len: bigint;
}

/** Inclusive range of valid block numbers of the device an allocator describes. */
export interface BlknoBounds {
  first: bigint;
  last: bigint;
}

export interface ExtentOpts {
  /** Extents (read or freed) must lie inside these; else CorruptionError. */
  bounds?: BlknoBounds;
  /** Names the allocator in errors ("meta_alloc[0]", "data_alloc"...). */
  source?: string;
}

export interface ExtentAllocOpts extends ExtentOpts {
  /** Smallest acceptable length (default 1). */
  min?: bigint;
}

/** Counters that prove a path ran (STYLE.md 7); tests read and reset them. */
export const extentCounters = {
  allocs: 0,
  /** Allocations that returned less than asked. */
  shortAllocs: 0,
  /** Allocations that looked past the first extent of the order index. */
  classScans: 0,
  allocAts: 0,
  enospc: 0,
  frees: 0,
  mergeLeft: 0,
  mergeRight: 0,
  moved: 0,
};

export function resetExtentCounters(): void {
  for (const k of Object.keys(extentCounters) as (keyof typeof extentCounters)[]) extentCounters[k] = 0;
}

const end = (e: Extent): bigint => e.start + e.len - 1n;
const fmtExt = (e: Extent): string => `[${e.start}, ${end(e)}] (len ${e.len})`;

function corrupt(opts: ExtentOpts, detail: string): CorruptionError {
  return new CorruptionError(opts.source ?? 'alloc', null, 'structure', detail);
}

function checkBounds(e: Extent, opts: ExtentOpts, what: string): void {
  const b = opts.bounds;
  if (b !== undefined && (e.start < b.first || end(e) > b.last)) {
    throw corrupt(opts, `${what} ${fmtExt(e)} outside [${b.first}, ${b.last}]`);
  }
}

/* ---- item decoding -------------------------------------------------------- */

function checkItemCommon(it: BtreeItem, opts: ExtentOpts): void {
  const k = it.key;
  if (k.type !== 0 || k.fourth !== 0 || it.val.length !== 0 || it.flags !== 0) {
    throw corrupt(opts, `free extent item zone ${k.zone} has type ${k.type} fourth ${k.fourth} val_len ${it.val.length} flags ${it.flags}`);
  }
}

/** A zone-9 item as an extent, validated. */
export function decodeBlknoItem(it: BtreeItem, opts: ExtentOpts = {}): Extent {
  const k = it.key;
  assert.equal(k.zone, Z_BLKNO);
  checkItemCommon(it, opts);
  const len = k.second;
  if (len === 0n || k.third !== 0n || len - 1n > k.first) {
    throw corrupt(opts, `bad blkno item end ${k.first} len ${len} third ${k.third}`);
  }
  const e = { start: k.first - len + 1n, len };
  checkBounds(e, opts, 'free extent');
  return e;
}

/** A zone-10 item as an extent, validated. */
export function decodeOrderItem(it: BtreeItem, opts: ExtentOpts = {}): Extent {
  const k = it.key;
  assert.equal(k.zone, Z_ORDER);
  checkItemCommon(it, opts);
  const len = k.third;
  if (len === 0n || len - 1n > k.second || k.first !== U64_MAX - BigInt(extentOrder(len))) {
    throw corrupt(opts, `bad order item first ${k.first} end ${k.second} len ${len}`);
  }
  const e = { start: k.second - len + 1n, len };
  checkBounds(e, opts, 'free extent');
  return e;
}

/* ---- the two-item primitives --------------------------------------------- */

async function insertExtent(store: BlockStore, ar: AllocRoot, e: Extent, opts: ExtentOpts): Promise<void> {
  assert(e.len > 0n);
  const k = freeExtentKeys(e.start, e.len);
  for (const kk of [k.blkno, k.order]) {
    try {
      await btreeInsert(store, ar.root, kk, NO_VAL);
    } catch (err) {
      if (err instanceof FsError && err.code === 'EEXIST') throw corrupt(opts, `inserting ${fmtExt(e)}: zone ${kk.zone} item already present`);
      throw err;
    }
  }
  ar.total_len += e.len;
}

/**
 * Check that an extent found through the `found` keying also has its other
 * item.  A read only: a btree delete dirties its path even when the key is
 * missing, so every extent a change will remove is verified before the
 * change modifies anything.
 */
async function verifyExtent(store: BlockStore, ar: AllocRoot, e: Extent, found: 'blkno' | 'order', opts: ExtentOpts): Promise<void> {
  const k = freeExtentKeys(e.start, e.len);
  const other = found === 'blkno' ? k.order : k.blkno;
  const v = await btreeLookup(store, ar.root, other);
  if (v === null) throw corrupt(opts, `extent ${fmtExt(e)} has no zone ${other.zone} item`);
  if (v.val.length !== 0 || v.flags !== 0) throw corrupt(opts, `extent ${fmtExt(e)} zone ${other.zone} item has val_len ${v.val.length} flags ${v.flags}`);
}

/** Remove both items of a verified extent. */
async function removeExtent(store: BlockStore, ar: AllocRoot, e: Extent): Promise<void> {
  const k = freeExtentKeys(e.start, e.len);
  await btreeDelete(store, ar.root, k.blkno);
  await btreeDelete(store, ar.root, k.order);
  ar.total_len -= e.len;
}

function checkTotal(ar: AllocRoot, remove: bigint, opts: ExtentOpts): void {
  if (ar.total_len < remove) throw corrupt(opts, `total_len ${ar.total_len} below the ${remove} blocks of the extents being removed`);
}

/** The free extent with the smallest end >= blkno, or null. */
async function extentEndingAtOrAfter(store: BlockStore, ar: AllocRoot, blkno: bigint, opts: ExtentOpts): Promise<Extent | null> {
  const it = await btreeNext(store, ar.root, key(Z_BLKNO, blkno, 0));
  if (it === null || it.key.zone !== Z_BLKNO) return null;
  return decodeBlknoItem(it, opts);
}

/** The free extent with the greatest end <= blkno, or null. */
async function extentEndingAtOrBefore(store: BlockStore, ar: AllocRoot, blkno: bigint, opts: ExtentOpts): Promise<Extent | null> {
  const it = await btreePrev(store, ar.root, key(Z_BLKNO, blkno, 0xff, U64_MAX, U64_MAX, 0xff));
  if (it === null || it.key.zone !== Z_BLKNO) return null;
  return decodeBlknoItem(it, opts);
}

/* ---- allocation ----------------------------------------------------------- */

/**
 * Allocate up to `count` blocks from the front of the first extent of the
 * order index (see the essay for the short-extent rule).  Returns the
 * extent taken (len in [min, count]); FsError('ENOSPC') with nothing
 * modified when no extent of at least `min` blocks exists.
 */
export async function extentAlloc(store: BlockStore, ar: AllocRoot, count: bigint, opts: ExtentAllocOpts = {}): Promise<Extent> {
  const min = opts.min ?? 1n;
  assert(count >= 1n && min >= 1n && min <= count, `extentAlloc count ${count} min ${min}`);
  const first = await btreeNext(store, ar.root, key(Z_ORDER, 0n, 0));
  if (first === null || first.key.zone !== Z_ORDER) {
    if (ar.total_len !== 0n) throw corrupt(opts, `total_len ${ar.total_len} with no extents`);
    extentCounters.enospc++;
    throw new FsError('ENOSPC', `${opts.source ?? 'alloc'}: no free extents`);
  }
  let ext = decodeOrderItem(first, opts);
  if (ext.len < count) ext = await bestInClass(store, ar, first.key.first, ext, count, min, opts);
  const len = ext.len < count ? ext.len : count;
  if (len < min) {
    extentCounters.enospc++;
    throw new FsError('ENOSPC', `${opts.source ?? 'alloc'}: longest free extent ${ext.len} < ${min}`);
  }
  checkTotal(ar, ext.len, opts);
  await verifyExtent(store, ar, ext, 'order', opts);
  // The remainder goes in before the extent comes out (see "Order of the
  // btree operations" above).
  if (ext.len > len) await insertExtent(store, ar, { start: ext.start + len, len: ext.len - len }, opts);
  await removeExtent(store, ar, ext);
  extentCounters.allocs++;
  if (len < count) extentCounters.shortAllocs++;
  return { start: ext.start, len };
}

/** In the top order class: the first extent >= count, else the longest (first of equals). */
async function bestInClass(
  store: BlockStore, ar: AllocRoot, cls: bigint, first: Extent, count: bigint, min: bigint, opts: ExtentOpts,
): Promise<Extent> {
  extentCounters.classScans++;
  let best = first;
  let seen = 0;
  let err: unknown = null;
  await btreeIterate(store, ar.root, key(Z_ORDER, cls, 0), key(Z_ORDER, cls, 0, U64_MAX, U64_MAX, 0xff), (it) => {
    let e: Extent;
    try {
      e = decodeOrderItem(it, opts);
    } catch (x) {
      err = x;
      return false;
    }
    if (e.len > best.len) best = e;
    if (best.len >= count) return false;
    seen++;
    return seen < EXTENT_SCAN_LIMIT || best.len < min;
  });
  if (err !== null) throw err;
  return best;
}

/**
 * Allocate exactly [start, start+len-1], which must lie inside one free
 * extent; FsError('ENOENT') with nothing modified otherwise.
 */
export async function extentAllocAt(store: BlockStore, ar: AllocRoot, start: bigint, len: bigint, opts: ExtentOpts = {}): Promise<void> {
  assert(len >= 1n && start >= 0n, `extentAllocAt ${start} ${len}`);
  const want = { start, len };
  const e = await extentEndingAtOrAfter(store, ar, start, opts);
  if (e === null || e.start > start || end(e) < end(want)) {
    throw new FsError('ENOENT', `${fmtExt(want)} is not free`);
  }
  checkTotal(ar, e.len, opts);
  await verifyExtent(store, ar, e, 'blkno', opts);
  if (e.start < start) await insertExtent(store, ar, { start: e.start, len: start - e.start }, opts);
  if (end(e) > end(want)) await insertExtent(store, ar, { start: end(want) + 1n, len: end(e) - end(want) }, opts);
  await removeExtent(store, ar, e);
  extentCounters.allocAts++;
}

/* ---- freeing -------------------------------------------------------------- */

/**
 * Return [start, start+len-1] to the allocator, merging with the free
 * extents that touch it.  CorruptionError, with nothing modified, when the
 * range overlaps a free extent (double free) or leaves the bounds.
 */
export async function extentFree(store: BlockStore, ar: AllocRoot, start: bigint, len: bigint, opts: ExtentOpts = {}): Promise<void> {
  assert(len >= 1n && start >= 0n, `extentFree ${start} ${len}`);
  const e = { start, len };
  checkBounds(e, opts, 'freed range');
  const right = await extentEndingAtOrAfter(store, ar, start, opts);
  if (right !== null && right.start <= end(e)) {
    throw corrupt(opts, `freeing ${fmtExt(e)} overlaps free extent ${fmtExt(right)} (double free)`);
  }
  const left = start > 0n ? await extentEndingAtOrBefore(store, ar, start - 1n, opts) : null;
  assert(left === null || end(left) < start, 'extent order broken between keyings');
  const mergeLeft = left !== null && end(left) === start - 1n ? left : null;
  const mergeRight = right !== null && right.start === end(e) + 1n ? right : null;
  checkTotal(ar, (mergeLeft?.len ?? 0n) + (mergeRight?.len ?? 0n), opts);
  if (mergeLeft !== null) await verifyExtent(store, ar, mergeLeft, 'blkno', opts);
  if (mergeRight !== null) await verifyExtent(store, ar, mergeRight, 'blkno', opts);
  let merged = e;
  if (mergeLeft !== null) merged = { start: mergeLeft.start, len: merged.len + mergeLeft.len };
  if (mergeRight !== null) merged = { start: merged.start, len: merged.len + mergeRight.len };
  // The merged extent goes in before its neighbours come out (see "Order
  // of the btree operations" above).
  await insertExtent(store, ar, merged, opts);
  if (mergeLeft !== null) {
    await removeExtent(store, ar, mergeLeft);
    extentCounters.mergeLeft++;
  }
  if (mergeRight !== null) {
    await removeExtent(store, ar, mergeRight);
    extentCounters.mergeRight++;
  }
  extentCounters.frees++;
}

/* ---- moving and counting -------------------------------------------------- */

/**
 * Move up to `total` blocks from src to dst, largest extents first (each
 * taken with extentAlloc, so with src's allocation policy).  Returns the
 * number of blocks moved; stops early only when src is empty.
 */
export async function extentMove(
  store: BlockStore, dst: AllocRoot, src: AllocRoot, total: bigint, opts: { src?: ExtentOpts; dst?: ExtentOpts } = {},
): Promise<bigint> {
  assert(dst !== src, 'extentMove onto itself');
  let moved = 0n;
  while (moved < total) {
    let e: Extent;
    try {
      e = await extentAlloc(store, src, total - moved, opts.src);
    } catch (err) {
      if (err instanceof FsError && err.code === 'ENOSPC') break;
      throw err;
    }
    await extentFree(store, dst, e.start, e.len, opts.dst);
    moved += e.len;
    extentCounters.moved++;
  }
  return moved;
}

/** Move every extent of src into dst (data_freed -> data_alloc); returns blocks moved. */
export async function extentMoveAll(
  store: BlockStore, dst: AllocRoot, src: AllocRoot, opts: { src?: ExtentOpts; dst?: ExtentOpts } = {},
): Promise<bigint> {
  const want = src.total_len;
  const moved = await extentMove(store, dst, src, want, opts);
  if (moved !== want || src.total_len !== 0n) {
    throw corrupt(opts.src ?? {}, `moved ${moved} of total_len ${want}, ${src.total_len} left`);
  }
  return moved;
}

/** Every free extent in block order (zone 9). */
export async function extentList(store: BlockStore, ar: AllocRoot, opts: ExtentOpts = {}): Promise<Extent[]> {
  const out: Extent[] = [];
  for (const it of await itemsOfZone(store, ar, Z_BLKNO)) out.push(decodeBlknoItem(it, opts));
  return out;
}

async function itemsOfZone(store: BlockStore, ar: AllocRoot, zone: number): Promise<BtreeItem[]> {
  const out: BtreeItem[] = [];
  await btreeIterate(store, ar.root, key(zone, 0n, 0), key(zone, U64_MAX, 0xff, U64_MAX, U64_MAX, 0xff), (it) => {
    out.push(it);
  });
  return out;
}

export interface AllocRootCheck {
  ok: boolean;
  problems: string[];
  /** Extents in block order (from the zone 9 items that decoded). */
  extents: Extent[];
  /** Sum of their lengths. */
  blocks: bigint;
  /** Blocks of the btree itself. */
  treeBlknos: Set<bigint>;
}

/**
 * Check every invariant of the essay, without throwing on bad bytes:
 * btree structure, item shapes, both keyings equal, no overlap, no
 * adjacency, bounds, total_len.  For tests and fsck.
 */
export async function checkAllocRoot(
  store: BlockStore, ar: AllocRoot, opts: ExtentOpts & { avlHeights?: boolean } = {},
): Promise<AllocRootCheck> {
  const problems: string[] = [];
  // avlHeights: false for trees written by mkfs (btree/check.ts).
  const tree = await checkBtree(store, ar.root, { avlHeights: opts.avlHeights ?? true });
  problems.push(...tree.problems);
  const res: AllocRootCheck = { ok: false, problems, extents: [], blocks: 0n, treeBlknos: tree.blknos };
  if (!tree.ok) return res;
  const byBlkno: Extent[] = [];
  const byOrder = new Set<string>();
  await btreeIterate(store, ar.root, ZERO_KEY, ONES_KEY, (it) => {
    try {
      if (it.key.zone === Z_BLKNO) byBlkno.push(decodeBlknoItem(it, opts));
      else if (it.key.zone === Z_ORDER) byOrder.add(fmtExt(decodeOrderItem(it, opts)));
      else problems.push(`item in zone ${it.key.zone}`);
    } catch (e) {
      if (!(e instanceof CorruptionError)) throw e;
      problems.push(e.message);
    }
  });
  let prev: Extent | null = null;
  for (const e of byBlkno) {
    if (!byOrder.delete(fmtExt(e))) problems.push(`extent ${fmtExt(e)} has no order item`);
    if (prev !== null) {
      if (e.start <= end(prev)) problems.push(`extents ${fmtExt(prev)} and ${fmtExt(e)} overlap`);
      else if (e.start === end(prev) + 1n) problems.push(`extents ${fmtExt(prev)} and ${fmtExt(e)} are adjacent`);
    }
    res.blocks += e.len;
    prev = e;
  }
  for (const s of byOrder) problems.push(`order item ${s} has no blkno item`);
  if (res.blocks !== ar.total_len) problems.push(`total_len ${ar.total_len} != sum of extents ${res.blocks}`);
  res.extents = byBlkno;
  res.ok = problems.length === 0;
  return res;
}

/** An empty allocator (all zero is valid, FORMAT.md 4.6). */
export function emptyAllocRoot(): AllocRoot {
  return { total_len: 0n, flags: 0, root: { ref: { blkno: 0n, seq: 0n }, height: 0 } };
}
