/*
 * File data (PROTOCOL.md 10.4), as scoutfs's data.c.  Logical 4 KiB blocks
 * map to data device blocks through one extent item per extent:
 *
 *   4.ino.7.last.len    value: blkno u64, flags u8 (UNWRITTEN 2, OFFLINE 4)
 *
 * A write overwrites mapped blocks in place and allocates unmapped ones
 * from the open transaction's data_avail (src/alloc/extent.ts over the
 * forest writer's block store), writing the bytes to the data device
 * immediately; partial blocks are read, merged and written whole, and newly
 * allocated blocks are zero padded.  The mount's commit flushes the data
 * device before COMMIT_LOG_TREES, so extents never point at unwritten
 * blocks after a crash (an in-place overwrite may land before its
 * transaction commits, as in the kernel).  A new extent is merged with the
 * one logically and physically before it.  Truncate frees whole blocks past
 * the new size into data_freed (the server returns them to data_alloc at
 * the next GET) and zeroes the tail of a partial last block, so a later
 * extension reads zeros.  Holes read as zeros.  ENOSPC part way through a
 * write is a short write of the blocks already written.
 *
 * Every function here runs inside a unit of work the caller (src/fs/fs.ts)
 * opened.  Reads share the fs lock with other reads (the kernel sends
 * readahead requests in parallel) and hold it across the device reads: a
 * truncate or unlink, which could free the mapped blocks for reuse, waits.
 *
 * Left out: UNWRITTEN preallocation and OFFLINE handling (staging).
 */
import assert from 'node:assert/strict';
import { CorruptionError, FsError } from '../format/errors.js';
import { extentKey, type Inode } from '../format/items.js';
import { getU64, getU8, setU64, U64_MAX } from '../format/layout.js';
import { SM_BLOCK_SIZE } from '../format/constants.js';
import { extentAlloc, extentFree } from '../alloc/extent.js';
import type { TransHold } from '../trans/trans.js';
import { isDir, isReg, type FsCore } from './core.js';

const BLOCK = BigInt(SM_BLOCK_SIZE);
const EXTENT_FLAG_UNWRITTEN = 2;

interface Segment {
  lblk: bigint;
  len: bigint;
  /** 0 = hole. */
  pblk: bigint;
}

async function getReg(c: FsCore, ino: bigint): Promise<Inode> {
  const i = await c.getInode(ino);
  if (isDir(i)) throw new FsError('EISDIR');
  if (!isReg(i)) throw new FsError('EINVAL', 'not a regular file');
  return i;
}

async function nextExtent(c: FsCore, ino: bigint, lblk: bigint): Promise<{ start: bigint; len: bigint; blkno: bigint; flags: number } | null> {
  const it = await c.nextItem(extentKey(ino, lblk, 0n), extentKey(ino, U64_MAX, U64_MAX));
  if (it === null) return null;
  if (it.val.length !== 16 || it.key.third === 0n || it.key.third - 1n > it.key.second) {
    throw new CorruptionError('fs items', null, 'structure', `data extent of inode ${ino} at ${it.key.second}`);
  }
  return { start: it.key.second - it.key.third + 1n, len: it.key.third, blkno: getU64(it.val, 0), flags: getU8(it.val, 8) };
}

/** Mapped and unmapped runs covering [lblk, lblk+count). */
async function mapRange(c: FsCore, ino: bigint, lblk: bigint, count: bigint): Promise<Segment[]> {
  const out: Segment[] = [];
  const end = lblk + count;
  let cur = lblk;
  while (cur < end) {
    const e = await nextExtent(c, ino, cur);
    if (e === null || e.start >= end) {
      out.push({ lblk: cur, len: end - cur, pblk: 0n });
      break;
    }
    if (e.start > cur) {
      out.push({ lblk: cur, len: e.start - cur, pblk: 0n });
      cur = e.start;
    }
    const segEnd = e.start + e.len < end ? e.start + e.len : end;
    const mapped = e.blkno !== 0n && (e.flags & EXTENT_FLAG_UNWRITTEN) === 0;
    out.push({ lblk: cur, len: segEnd - cur, pblk: mapped ? e.blkno + (cur - e.start) : 0n });
    cur = segEnd;
  }
  return out;
}

function extentVal(blkno: bigint, flags = 0): Uint8Array {
  const v = new Uint8Array(16);
  setU64(v, 0, blkno);
  v[8] = flags;
  return v;
}

/** Insert a mapped extent, merging with the one that ends just before it. */
async function insertExtent(c: FsCore, ino: bigint, lblk: bigint, len: bigint, blkno: bigint): Promise<void> {
  if (lblk > 0n) {
    const prev = await nextExtent(c, ino, lblk - 1n);
    if (prev !== null && prev.start + prev.len === lblk && prev.flags === 0 && prev.blkno !== 0n && prev.blkno + prev.len === blkno) {
      await c.deleteItem(extentKey(ino, lblk - 1n, prev.len));
      lblk = prev.start;
      len += prev.len;
      blkno = prev.blkno;
    }
  }
  await c.createItem(extentKey(ino, lblk + len - 1n, len), extentVal(blkno));
}

/** Free every block at or past the byte offset `size`; zero the tail of a partial last block. */
export async function truncateBlocks(c: FsCore, ino: bigint, i: Inode, size: bigint): Promise<void> {
  const keep = (size + BLOCK - 1n) / BLOCK; // blocks [0, keep) stay
  for (;;) {
    const e = await nextExtent(c, ino, keep);
    if (e === null) break;
    await c.deleteItem(extentKey(ino, e.start + e.len - 1n, e.len));
    let freeStart = e.start;
    if (e.start < keep) {
      const headLen = keep - e.start;
      await c.createItem(extentKey(ino, keep - 1n, headLen), extentVal(e.blkno, e.flags));
      freeStart = keep;
    }
    const n = e.start + e.len - freeStart;
    if (e.blkno !== 0n) {
      await freeData(c, e.blkno + (freeStart - e.start), n);
      if ((e.flags & EXTENT_FLAG_UNWRITTEN) === 0) i.online_blocks -= n;
    }
  }
  if (size % BLOCK !== 0n) {
    const [seg] = await mapRange(c, ino, size / BLOCK, 1n);
    if (seg !== undefined && seg.pblk !== 0n) {
      const b = await c.d.dataDev.read(seg.pblk * BLOCK, SM_BLOCK_SIZE);
      b.fill(0, Number(size % BLOCK));
      await c.d.dataDev.write(seg.pblk * BLOCK, b);
    }
  }
}

async function freeData(c: FsCore, blkno: bigint, len: bigint): Promise<void> {
  const fw = c.d.trans.forest;
  assert(fw !== null && !fw.isClosed, 'data free outside an open transaction');
  await extentFree(fw.alloc, fw.lt.data_freed, blkno, len, { bounds: c.dataBounds, source: 'data_freed' });
  c.counters.blocksFreed += Number(len);
}

async function allocData(c: FsCore, count: bigint): Promise<{ start: bigint; len: bigint }> {
  const fw = c.d.trans.forest;
  assert(fw !== null && !fw.isClosed, 'data allocation outside an open transaction');
  const e = await extentAlloc(fw.alloc, fw.lt.data_avail, count, { min: 1n, bounds: c.dataBounds, source: 'data_avail' });
  c.counters.blocksAllocated += Number(e.len);
  return e;
}

export async function read(c: FsCore, ino: bigint, off: bigint, len: number): Promise<Uint8Array> {
  const i = await getReg(c, ino);
  if (off < 0n || len < 0) throw new FsError('EINVAL');
  if (off >= i.size || len === 0) return new Uint8Array(0);
  const end = off + BigInt(len) < i.size ? off + BigInt(len) : i.size;
  const first = off / BLOCK;
  const last = (end + BLOCK - 1n) / BLOCK;
  const at = Number(off - first * BLOCK);
  const segs = await mapRange(c, ino, first, last - first);
  const one = segs.length === 1 ? segs[0]! : null;
  if (one !== null && one.pblk !== 0n) {
    // One mapped extent (the sequential case): the device's buffer as is.
    return (await c.d.dataDev.read(one.pblk * BLOCK, Number(one.len * BLOCK))).subarray(at, at + Number(end - off));
  }
  const buf = new Uint8Array(Number((last - first) * BLOCK));
  for (const s of segs) {
    if (s.pblk === 0n) continue;
    const b = await c.d.dataDev.read(s.pblk * BLOCK, Number(s.len * BLOCK));
    buf.set(b, Number((s.lblk - first) * BLOCK));
  }
  return buf.subarray(at, at + Number(end - off));
}

export async function write(c: FsCore, h: TransHold, ino: bigint, off: bigint, data: Uint8Array): Promise<number> {
  const i = await getReg(c, ino);
  if (off < 0n) throw new FsError('EINVAL');
  if (data.length === 0) return 0;
  const end = off + BigInt(data.length);
  if (end > U64_MAX / 2n) throw new FsError('EFBIG');
  const first = off / BLOCK;
  const last = (end + BLOCK - 1n) / BLOCK;
  // Block-aligned writes (every big sequential one) go out as they
  // came; others are assembled in a zero-padded buffer of whole blocks.
  const aligned = off % BLOCK === 0n && end % BLOCK === 0n;
  const buf = aligned ? data : new Uint8Array(Number((last - first) * BLOCK));
  const segs = await mapRange(c, ino, first, last - first);
  // Partial edge blocks that are mapped: read what the write keeps.
  const edges = new Set<bigint>();
  if (off % BLOCK !== 0n) edges.add(first);
  if (end % BLOCK !== 0n) edges.add(last - 1n);
  for (const b of edges) {
    const s = segs.find((x) => x.lblk <= b && b < x.lblk + x.len)!;
    if (s.pblk === 0n) continue;
    buf.set(await c.d.dataDev.read((s.pblk + (b - s.lblk)) * BLOCK, SM_BLOCK_SIZE), Number((b - first) * BLOCK));
  }
  if (!aligned) buf.set(data, Number(off - first * BLOCK));
  const slice = (lblk: bigint, n: bigint): Uint8Array => buf.subarray(Number((lblk - first) * BLOCK), Number((lblk - first + n) * BLOCK));
  // Blocks are written in logical order; `done` is the first block not
  // yet written, so an ENOSPC part way is a short write (POSIX) of the
  // bytes before it, and the size covers exactly those.
  let done = first;
  let failure: unknown = null;
  try {
    for (const s of segs) {
      if (s.pblk !== 0n) {
        await c.d.dataDev.write(s.pblk * BLOCK, slice(s.lblk, s.len));
        done = s.lblk + s.len;
        continue;
      }
      let cur = s.lblk;
      while (cur < s.lblk + s.len) {
        const e = await allocData(c, s.lblk + s.len - cur);
        await c.d.dataDev.write(e.start * BLOCK, slice(cur, e.len));
        await insertExtent(c, ino, cur, e.len, e.start);
        i.online_blocks += e.len;
        cur += e.len;
        done = cur;
      }
    }
  } catch (e) {
    failure = e;
  }
  const doneEnd = done * BLOCK < end ? done * BLOCK : end;
  const written = doneEnd > off ? doneEnd - off : 0n;
  if (written > 0n) {
    if (doneEnd > i.size) i.size = doneEnd;
    i.data_version++;
    i.mtime = i.ctime = c.now();
  }
  await c.putInode(h, ino, i, written > 0n);
  if (failure !== null && !(failure instanceof FsError && failure.code === 'ENOSPC' && written > 0n)) throw failure;
  return Number(written);
}
