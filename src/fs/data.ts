/*
 * File data (PROTOCOL.md 10.4), as scoutfs's data.c.  Logical 4 KiB blocks
 * map to data device blocks through one extent item per extent:
 *
 *   4.ino.7.last.len    value: blkno u64, flags u8 (OFFLINE 1, UNWRITTEN 2)
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
 * Offline extents (released by the archive interface, src/fs/archive.ts)
 * read as holes here and are never written: the fs (src/fs/fs.ts) makes
 * reads, writes and size changes wait until their range is online before
 * calling in, in the same unit of work.  Truncate drops offline extents
 * past the new size and counts them out of offline_blocks.
 *
 * Left out: UNWRITTEN preallocation.
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
const EXTENT_FLAG_OFFLINE = 1;

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
    const mapped = e.blkno !== 0n && (e.flags & (EXTENT_FLAG_UNWRITTEN | EXTENT_FLAG_OFFLINE)) === 0;
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
    if ((e.flags & EXTENT_FLAG_OFFLINE) !== 0) i.offline_blocks -= n;
    if (e.blkno !== 0n) {
      await freeData(c, e.blkno + (freeStart - e.start), n);
      if ((e.flags & (EXTENT_FLAG_UNWRITTEN | EXTENT_FLAG_OFFLINE)) === 0) i.online_blocks -= n;
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

export async function freeData(c: FsCore, blkno: bigint, len: bigint): Promise<void> {
  const fw = c.d.trans.forest;
  assert(fw !== null && !fw.isClosed, 'data free outside an open transaction');
  await extentFree(fw.alloc, fw.lt.data_freed, blkno, len, { bounds: c.dataBounds, source: 'data_freed' });
  c.counters.blocksFreed += Number(len);
}

export async function allocData(c: FsCore, count: bigint): Promise<{ start: bigint; len: bigint }> {
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

/** fallocate modes scoutfs takes (FALLOC_FL_KEEP_SIZE); any other bit is EOPNOTSUPP. */
export const FALLOC_KEEP_SIZE = 1;
/** Blocks zeroed per device write while preallocating. */
const ZERO_CHUNK_BLOCKS = 256n;

/**
 * fallocate(2) modes 0 and KEEP_SIZE: every unmapped block of [off,
 * off+len) gets data blocks, written with zeros, so later writes there
 * cannot fail for space; mode 0 also extends the size to off+len.  Blocks
 * already mapped (or offline) are left alone.  Preallocated blocks are
 * ordinary written extents (not UNWRITTEN): reads of them return the zeros
 * they hold, and the write path needs no unwritten conversion.  The cost
 * is writing the zeros.  Other modes (punch hole, collapse, zero range)
 * are EOPNOTSUPP, as in scoutfs.
 */
export async function fallocate(c: FsCore, h: TransHold, ino: bigint, off: bigint, len: bigint, mode: number): Promise<void> {
  if ((mode & ~FALLOC_KEEP_SIZE) !== 0) throw new FsError('EOPNOTSUPP', `fallocate mode ${mode}`);
  if (off < 0n || len <= 0n) throw new FsError('EINVAL', 'fallocate range');
  const i = await getReg(c, ino);
  const end = off + len;
  if (end > U64_MAX / 2n) throw new FsError('EFBIG');
  const first = off / BLOCK;
  const last = (end + BLOCK - 1n) / BLOCK;
  let cur = first;
  let added = 0n;
  while (cur < last) {
    const e = await nextExtent(c, ino, cur);
    const gapEnd = e === null || e.start >= last ? last : e.start;
    while (cur < gapEnd) {
      const want = gapEnd - cur < ZERO_CHUNK_BLOCKS ? gapEnd - cur : ZERO_CHUNK_BLOCKS;
      const got = await allocData(c, want);
      await c.d.dataDev.write(got.start * BLOCK, new Uint8Array(Number(got.len * BLOCK)));
      await insertExtent(c, ino, cur, got.len, got.start);
      i.online_blocks += got.len;
      added += got.len;
      cur += got.len;
    }
    if (e !== null && e.start < last) cur = e.start + e.len > cur ? e.start + e.len : cur;
  }
  const grow = (mode & FALLOC_KEEP_SIZE) === 0 && end > i.size;
  if (grow) i.size = end;
  if (added > 0n || grow) {
    i.ctime = c.now();
    if (grow) i.mtime = i.ctime;
    await c.putInode(h, ino, i, true);
  }
}

export const SEEK_DATA = 3;
export const SEEK_HOLE = 4;

/**
 * lseek(2) SEEK_DATA / SEEK_HOLE by the extent items: data is any block
 * with an extent (online or offline), a hole any block without; the end of
 * the file is a hole.  An offset at or past the size is ENXIO.
 */
export async function seek(c: FsCore, ino: bigint, off: bigint, whence: number): Promise<bigint> {
  if (whence !== SEEK_DATA && whence !== SEEK_HOLE) throw new FsError('EINVAL', `whence ${whence}`);
  const i = await getReg(c, ino);
  if (off < 0n || off >= i.size) throw new FsError('ENXIO');
  const endBlk = (i.size + BLOCK - 1n) / BLOCK;
  let cur = off / BLOCK;
  for (;;) {
    const e = cur < endBlk ? await nextExtent(c, ino, cur) : null;
    const covered = e !== null && e.start <= cur;
    if (whence === SEEK_DATA) {
      if (covered) return off > cur * BLOCK ? off : cur * BLOCK;
      if (e === null || e.start >= endBlk) throw new FsError('ENXIO');
      cur = e.start;
      continue;
    }
    if (!covered) {
      const at = cur * BLOCK > off ? cur * BLOCK : off;
      return at < i.size ? at : i.size;
    }
    cur = e.start + e.len;
  }
}
