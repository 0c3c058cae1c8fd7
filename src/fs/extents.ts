/*
 * A file's data extent items as a map of block ranges (FORMAT.md 8.6.5),
 * for the archive operations (src/fs/archive.ts): release, stage,
 * setattr_more and move-blocks all say "make blocks [start, end) hold this
 * mapping" and leave the item bookkeeping here.
 *
 *   4.ino.7.last.len  ->  blkno u64 (0 = unmapped), flags u8 (OFFLINE 1, UNWRITTEN 2)
 *
 * Invariants kept by setExtent, which every change here goes through:
 *   - extents of one file never overlap;
 *   - an extent with blkno 0 is OFFLINE (a hole is no item at all);
 *   - adjacent extents with equal flags and contiguous blocks (or both
 *     unmapped) are merged, on both sides of what was set;
 *   - the inode's counts follow the items: online_blocks counts mapped
 *     blocks that are neither UNWRITTEN nor OFFLINE, offline_blocks counts
 *     OFFLINE blocks (FORMAT.md 8.6.5).
 * setExtent never frees or allocates data blocks: the caller frees what it
 * replaces (or moves it elsewhere) and allocates what it maps, inside the
 * same unit of work (src/fs/core.ts), so a crash keeps both or neither.
 *
 * Bad bytes: an extent value that is not 16 bytes, a length of 0 or past
 * block 0, unknown flag bits, or blocks outside the data device are
 * CorruptionErrors (EIO to users), and so is a count that would fall below
 * zero.  data.ts reads extents with its own nextExtent for the write path;
 * the two agree on the layout and this one checks more.
 */
import assert from 'node:assert/strict';
import { CorruptionError } from '../format/errors.js';
import { EXTENT_FLAG, extentKey, type Inode } from '../format/items.js';
import { getU64, getU8, setU64, U64_MAX } from '../format/layout.js';
import type { FsCore } from './core.js';

export interface Extent {
  /** First logical block. */
  start: bigint;
  len: bigint;
  /** First data device block, 0 = unmapped. */
  blkno: bigint;
  flags: number;
}

/** What a range is set to: a mapping at blkno (0 = unmapped, then OFFLINE) with flags. */
export interface Mapping {
  blkno: bigint;
  flags: number;
}

const KNOWN_FLAGS = EXTENT_FLAG.OFFLINE | EXTENT_FLAG.UNWRITTEN;

export const isOffline = (e: { flags: number }): boolean => (e.flags & EXTENT_FLAG.OFFLINE) !== 0;
export const isUnwritten = (e: { flags: number }): boolean => (e.flags & EXTENT_FLAG.UNWRITTEN) !== 0;
/** Mapped, written, not offline: readable data. */
export const isOnline = (e: Extent): boolean => e.blkno !== 0n && (e.flags & KNOWN_FLAGS) === 0;

export function onlineOf(e: Extent): bigint {
  return isOnline(e) ? e.len : 0n;
}

export function offlineOf(e: Extent): bigint {
  return isOffline(e) ? e.len : 0n;
}

/** The first extent that ends at or after lblk (it contains lblk or lies after it). */
export async function nextExtent(c: FsCore, ino: bigint, lblk: bigint): Promise<Extent | null> {
  const it = await c.nextItem(extentKey(ino, lblk, 0n), extentKey(ino, U64_MAX, U64_MAX));
  if (it === null) return null;
  const last = it.key.second;
  const len = it.key.third;
  const bad = (why: string): CorruptionError => new CorruptionError('fs items', null, 'structure', `data extent of inode ${ino} ending at block ${last}: ${why}`);
  if (it.val.length !== 16) throw bad(`value of ${it.val.length} bytes`);
  if (len === 0n || len - 1n > last) throw bad(`length ${len}`);
  const flags = getU8(it.val, 8);
  if ((flags & ~KNOWN_FLAGS) !== 0) throw bad(`unknown flags 0x${flags.toString(16)}`);
  const blkno = getU64(it.val, 0);
  if (blkno !== 0n && (blkno < c.dataBounds.first || blkno + len - 1n > c.dataBounds.last)) {
    throw bad(`blocks ${blkno}..${blkno + len - 1n} outside the data device`);
  }
  return { start: last - len + 1n, len, blkno, flags };
}

/** e cut to [s, end). */
export function clip(e: Extent, s: bigint, end: bigint): Extent {
  const cs = e.start > s ? e.start : s;
  const ce = e.start + e.len < end ? e.start + e.len : end;
  assert(ce > cs, 'clip outside the extent');
  return { start: cs, len: ce - cs, blkno: e.blkno === 0n ? 0n : e.blkno + (cs - e.start), flags: e.flags };
}

/** The extents overlapping blocks [start, end), cut to that range, in order. */
export async function extentsIn(c: FsCore, ino: bigint, start: bigint, end: bigint): Promise<Extent[]> {
  const out: Extent[] = [];
  let cur = start;
  while (cur < end) {
    const e = await nextExtent(c, ino, cur);
    if (e === null || e.start >= end) break;
    out.push(clip(e, cur, end));
    cur = e.start + e.len;
  }
  return out;
}

/** The first offline block in [start, end), or null. */
export async function firstOfflineBlock(c: FsCore, ino: bigint, start: bigint, end: bigint): Promise<bigint | null> {
  let cur = start;
  while (cur < end) {
    const e = await nextExtent(c, ino, cur);
    if (e === null || e.start >= end) return null;
    if (isOffline(e)) return e.start > cur ? e.start : cur;
    cur = e.start + e.len;
  }
  return null;
}

function extentVal(m: Mapping): Uint8Array {
  const v = new Uint8Array(16);
  setU64(v, 0, m.blkno);
  v[8] = m.flags;
  return v;
}

const putItem = (c: FsCore, ino: bigint, e: Extent): Promise<void> => c.createItem(extentKey(ino, e.start + e.len - 1n, e.len), extentVal(e));
const delItem = (c: FsCore, ino: bigint, e: Extent): Promise<void> => c.deleteItem(extentKey(ino, e.start + e.len - 1n, e.len));

function adjustCounts(ino: bigint, i: Inode, e: Extent, sign: 1n | -1n): void {
  i.online_blocks += sign * onlineOf(e);
  i.offline_blocks += sign * offlineOf(e);
  if (i.online_blocks < 0n || i.offline_blocks < 0n) {
    throw new CorruptionError('fs items', null, 'structure', `inode ${ino} block counts disagree with its extents (online ${i.online_blocks}, offline ${i.offline_blocks})`);
  }
}

/** May a and b (a before b, adjacent) be one extent? */
function mergeable(a: Extent, b: Extent): boolean {
  if (a.start + a.len !== b.start || a.flags !== b.flags) return false;
  return a.blkno === 0n ? b.blkno === 0n : b.blkno !== 0n && a.blkno + a.len === b.blkno;
}

/**
 * Make blocks [start, start+len) hold `m` (null: a hole, no item),
 * dropping what was there (its blocks are the caller's: freed or moved
 * before), merging with the neighbours, and keeping i's counts.  The
 * caller writes the inode.
 */
export async function setExtent(c: FsCore, ino: bigint, i: Inode, start: bigint, len: bigint, m: Mapping | null): Promise<void> {
  assert(len > 0n && start >= 0n && start + len - 1n <= U64_MAX, `setExtent ${start}+${len}`);
  assert(m === null || (m.flags & ~KNOWN_FLAGS) === 0, 'setExtent flags');
  assert(m === null || m.blkno !== 0n || isOffline(m), 'an unmapped extent must be offline');
  const end = start + len;
  for (let cur = start; cur < end;) {
    const e = await nextExtent(c, ino, cur);
    if (e === null || e.start >= end) break;
    const eEnd = e.start + e.len;
    await delItem(c, ino, e);
    if (e.start < start) await putItem(c, ino, clip(e, e.start, start));
    if (eEnd > end) await putItem(c, ino, clip(e, end, eEnd));
    adjustCounts(ino, i, clip(e, start, end), -1n);
    cur = eEnd;
  }
  if (m === null) return;
  const set: Extent = { start, len, blkno: m.blkno, flags: m.flags };
  let merged = set;
  if (start > 0n) {
    const p = await nextExtent(c, ino, start - 1n);
    if (p !== null && mergeable(p, set)) {
      await delItem(c, ino, p);
      merged = { start: p.start, len: p.len + merged.len, blkno: p.blkno, flags: p.flags };
    }
  }
  if (end <= U64_MAX) {
    const n = await nextExtent(c, ino, end);
    if (n !== null && mergeable(set, n)) {
      await delItem(c, ino, n);
      merged = { ...merged, len: merged.len + n.len };
    }
  }
  await putItem(c, ino, merged);
  adjustCounts(ino, i, set, 1n);
}
