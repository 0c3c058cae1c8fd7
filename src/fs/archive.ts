/*
 * The archive interface (PROTOCOL.md 9.3, 10.4), as scoutfs's ioctl.c and
 * data.c do it: an archive agent copies a file's bytes elsewhere, releases
 * its blocks (the range becomes OFFLINE extents, the size and namespace
 * stay), and stages the bytes back when someone needs them.  Readers,
 * writers and size changes that meet offline blocks wait for the stage, or
 * for the agent to give up through data-wait-err.
 *
 *   release(ino, off, len, data_version)  4 KiB aligned; mapped and
 *       unwritten blocks in the range are freed and become OFFLINE extents
 *       (holes stay holes, already offline blocks stay so); when no online
 *       block remains, every extent past EOF goes too.  data_version,
 *       data_seq and the times do not change (meta_seq does: the inode item
 *       is written).  Released in units of RELEASE_EXTENTS_PER_UNIT
 *       extents, each unit checking data_version again, so a huge
 *       fragmented file never makes one transaction too big.
 *   stage(ino, data_version, off, bytes)  writes archived bytes into the
 *       offline blocks (and holes, and unwritten blocks) of the range;
 *       online blocks are left as they are (the file's own data wins; with
 *       the data_version check they hold the same bytes).  off aligned, the
 *       end inside i_size and aligned unless it is i_size.  data_version,
 *       data_seq and the times do not change.  Waiters on the inode wake.
 *   setattrMore  restores: data_version, size (needs data_version),
 *       OFFLINE (needs size: one offline extent over [0, size)), ctime and
 *       crtime; size and data_version only on a regular file that was never
 *       written (data_version 0, size 0).
 *   moveBlocks  moves whole-block extents from one file to another (the
 *       blocks change owner, no data is copied); with `stage` the
 *       destination range must be offline and data_version must match, and
 *       the destination keeps its data_version, data_seq and times.
 *   data waiting: DataWaiters below; dataWaitErr fails matching waiters.
 *
 * Every operation runs inside the unit of work src/fs/fs.ts opens for it
 * (the fs lock and one transaction hold); a failure part way (ENOSPC in a
 * stage) writes the inode with what was done, so counts always match the
 * extents.  Blocks are freed into the transaction's data_freed and
 * allocated from its data_avail (data.ts), and a stage writes the data
 * device before the extent item points at it, as writes do.
 *
 * Waiting.  A read, write or size change that needs an offline block
 * registers a Waiter (ino, the first offline block it needs, its op) while
 * it still holds the fs lock, releases the lock, and awaits it; a stage
 * (or any change of the inode's offline extents) wakes every waiter of the
 * inode after its unit, and each re-checks its whole range from the start,
 * waiting again on the next offline block if there is one.  Registering
 * under the lock and waking after the stager's unit means no wake is ever
 * missed.  A waiter ends in one of four ways: woken (re-check), failed by
 * dataWaitErr with the errno the agent chose, aborted by its AbortSignal
 * (EINTR: the transport cancels it when the request is interrupted or its
 * process died), or failed with ESHUTDOWN when the fs goes away.  Waiters
 * live only in memory: a crash has no waiters to lose (their requests die
 * with the mount).
 *
 * Thread: main thread only; DataWaiters is owned by ScoutFs.
 *
 * Decisions where PROTOCOL.md is silent (also in the report): a size change
 * (truncate or extending write) waits while any block below the old EOF is
 * offline (the reference test waits a 1 MiB offline file's truncate to
 * 4 KiB on block 0); release leaves ctime and mtime alone; data-wait-err on
 * an inode that does not exist is ENOENT, on a non-regular file EINVAL;
 * move-blocks works in one unit (no per-extent batching); stage into a hole
 * allocates (the archive's zeros become blocks).
 *
 * Left out: waking a waiter on another node (no cluster yet), page cache
 * invalidation on release (fuse-native has none: an already open reader can
 * still read its cached pages, which hold the same bytes).
 */
import { ERRNO, FsError, type ErrnoName } from '../format/errors.js';
import { EXTENT_FLAG, type Inode } from '../format/items.js';
import { U64_MAX } from '../format/layout.js';
import { SM_BLOCK_SIZE } from '../format/constants.js';
import type { TransHold } from '../trans/trans.js';
import type { DataWaitErrArgs, DataWaitingEntry, MoveBlocksArgs, SetattrMoreArgs } from './api.js';
import { isDir, isReg, type FsCore } from './core.js';
import { allocData, freeData } from './data.js';
import { clip, extentsIn, firstOfflineBlock, isOffline, isOnline, nextExtent, setExtent, type Extent } from './extents.js';

const BLOCK = BigInt(SM_BLOCK_SIZE);
const U64_END = U64_MAX + 1n;

/** Operations a waiter blocks (PROTOCOL.md 9.3 DATA_WAITING ops bits). */
export const DATA_WAIT_OP = { READ: 1, WRITE: 2, CHANGE_SIZE: 4 } as const;
export const DATA_WAIT_OP_MASK = 7;
export const RELEASE_EXTENTS_PER_UNIT = 256;
/** Bytes one stage unit (one transaction hold) writes at most. */
export const STAGE_UNIT_BYTES = 8 << 20;
/** Largest file size (Linux MAX_LFS_FILESIZE). */
const SIZE_MAX = (1n << 63n) - 1n;

const ERRNO_NAME = new Map<number, ErrnoName>(Object.entries(ERRNO).map(([k, v]) => [v, k as ErrnoName]));

/**
 * A waiter failed by data-wait-err: any errno 1..4095 the agent chose
 * reaches the reader, named when we know the name (EIO otherwise).
 */
export class DataWaitError extends FsError {
  constructor(readonly errnoNumber: number, message: string) {
    super(ERRNO_NAME.get(errnoNumber) ?? 'EIO', message);
    this.name = 'DataWaitError';
  }
  override get errno(): number {
    return this.errnoNumber;
  }
}

export class Waiter {
  readonly promise: Promise<void>;
  private settle: (e: Error | null) => void = () => {};
  private unlisten: (() => void) | null = null;
  done = false;

  constructor(readonly ino: bigint, readonly iblock: bigint, readonly op: number, private readonly owner: DataWaiters) {
    this.promise = new Promise<void>((resolve, reject) => {
      this.settle = (e) => (e === null ? resolve() : reject(e));
    });
  }

  listen(signal: AbortSignal): void {
    const onAbort = (): void => this.end(new FsError('EINTR', `wait for offline block ${this.iblock} of inode ${this.ino} interrupted`), 'interrupts');
    signal.addEventListener('abort', onAbort, { once: true });
    this.unlisten = () => signal.removeEventListener('abort', onAbort);
  }

  /** Settle once: null wakes (re-check), an error fails the operation. */
  end(e: Error | null, why: 'wakes' | 'errors' | 'interrupts' | 'shutdowns'): void {
    if (this.done) return;
    this.done = true;
    this.unlisten?.();
    this.owner.remove(this, why);
    this.settle(e);
  }
}

/** Every task waiting for offline data on this mount. */
export class DataWaiters {
  readonly counters = { waits: 0, wakes: 0, errors: 0, interrupts: 0, shutdowns: 0 };
  private readonly byIno = new Map<bigint, Set<Waiter>>();
  private closed = false;

  get size(): number {
    let n = 0;
    for (const s of this.byIno.values()) n += s.size;
    return n;
  }

  /** Register a waiter (the caller still holds the fs lock, so no wake can be missed). */
  add(ino: bigint, iblock: bigint, op: number, signal?: AbortSignal): Waiter {
    const w = new Waiter(ino, iblock, op, this);
    this.counters.waits++;
    let set = this.byIno.get(ino);
    if (set === undefined) this.byIno.set(ino, (set = new Set()));
    set.add(w);
    if (this.closed) w.end(new FsError('ESHUTDOWN', 'filesystem is unmounting'), 'shutdowns');
    else if (signal?.aborted === true) w.end(new FsError('EINTR', 'interrupted before waiting'), 'interrupts');
    else if (signal !== undefined) w.listen(signal);
    return w;
  }

  remove(w: Waiter, why: 'wakes' | 'errors' | 'interrupts' | 'shutdowns'): void {
    const set = this.byIno.get(w.ino);
    if (set?.delete(w) === true) {
      this.counters[why]++;
      if (set.size === 0) this.byIno.delete(w.ino);
    }
  }

  /** The inode's offline extents changed: every waiter re-checks. */
  wake(ino: bigint): void {
    const set = this.byIno.get(ino);
    if (set === undefined) return;
    for (const w of [...set]) w.end(null, 'wakes');
  }

  /** Fail the waiters of ino on blocks [sblock, eblock] blocking one of `op`; the number failed. */
  fail(ino: bigint, sblock: bigint, eblock: bigint, op: number, errno: number): number {
    const set = this.byIno.get(ino);
    if (set === undefined) return 0;
    let n = 0;
    for (const w of [...set]) {
      if (w.iblock < sblock || w.iblock > eblock || (w.op & op) === 0) continue;
      w.end(new DataWaitError(errno, `data-wait-err on block ${w.iblock} of inode ${ino}`), 'errors');
      n++;
    }
    return n;
  }

  /** Waiting (ino, iblock) pairs after (afterIno, afterIblock), sorted, ops merged. */
  list(afterIno: bigint, afterIblock: bigint, max: number): DataWaitingEntry[] {
    const merged = new Map<string, DataWaitingEntry>();
    for (const [ino, set] of this.byIno) {
      if (ino < afterIno) continue;
      for (const w of set) {
        if (ino === afterIno && w.iblock <= afterIblock) continue;
        const k = `${ino}:${w.iblock}`;
        const e = merged.get(k);
        if (e === undefined) merged.set(k, { ino, iblock: w.iblock, ops: w.op });
        else e.ops |= w.op;
      }
    }
    const out = [...merged.values()].sort((a, b) => (a.ino !== b.ino ? (a.ino < b.ino ? -1 : 1) : a.iblock < b.iblock ? -1 : a.iblock > b.iblock ? 1 : 0));
    return out.slice(0, max);
  }

  /** Unmount: every waiter fails ESHUTDOWN, and so does every later one. */
  shutdown(): void {
    this.closed = true;
    for (const set of [...this.byIno.values()]) for (const w of [...set]) w.end(new FsError('ESHUTDOWN', 'filesystem is unmounting'), 'shutdowns');
  }
}

/* ---- checks ---------------------------------------------------------------------------------- */

async function getReg(c: FsCore, ino: bigint): Promise<Inode> {
  const i = await c.getInode(ino);
  if (isDir(i)) throw new FsError('EISDIR');
  if (!isReg(i)) throw new FsError('EINVAL', 'not a regular file');
  return i;
}

const blocksUpTo = (bytes: bigint): bigint => (bytes + BLOCK - 1n) / BLOCK;

/** The offline block a read of [off, off+len) must wait for, or null. */
export async function readBlocked(c: FsCore, ino: bigint, off: bigint, len: number): Promise<bigint | null> {
  const i = await c.getInode(ino);
  if (i.offline_blocks === 0n || !isReg(i) || off < 0n || len <= 0 || off >= i.size) return null;
  const end = off + BigInt(len) < i.size ? off + BigInt(len) : i.size;
  return firstOfflineBlock(c, ino, off / BLOCK, blocksUpTo(end));
}

/** What a write of [off, off+len) must wait for: an offline block it overwrites, or any below EOF when it extends the file. */
export async function writeBlocked(c: FsCore, ino: bigint, off: bigint, len: number): Promise<{ iblock: bigint; op: number } | null> {
  const i = await c.getInode(ino);
  if (i.offline_blocks === 0n || !isReg(i) || off < 0n || len <= 0) return null;
  const end = off + BigInt(len);
  if (end > U64_END) return null; // data.ts refuses it
  const w = await firstOfflineBlock(c, ino, off / BLOCK, blocksUpTo(end));
  if (w !== null) return { iblock: w, op: DATA_WAIT_OP.WRITE };
  if (end <= i.size) return null;
  const s = await firstOfflineBlock(c, ino, 0n, blocksUpTo(i.size));
  return s === null ? null : { iblock: s, op: DATA_WAIT_OP.CHANGE_SIZE };
}

/** The offline block a size change to newSize must wait for (any below the old EOF), or null. */
export async function sizeChangeBlocked(c: FsCore, ino: bigint, newSize: bigint): Promise<bigint | null> {
  const i = await c.getInode(ino);
  if (i.offline_blocks === 0n || !isReg(i) || newSize === i.size) return null;
  return firstOfflineBlock(c, ino, 0n, blocksUpTo(i.size));
}

/* ---- release ---------------------------------------------------------------------------------- */

/** Argument checks of RELEASE that need no inode (EINVAL). */
export function checkReleaseArgs(off: bigint, len: bigint): void {
  if (off < 0n || len < 0n || off > U64_MAX || len > U64_MAX) throw new FsError('EINVAL', 'offset and length are u64');
  if (off % BLOCK !== 0n || len % BLOCK !== 0n) throw new FsError('EINVAL', 'release offset and length must be multiples of 4096');
  if (len > 0n && off + len - 1n > U64_MAX) throw new FsError('EINVAL', 'release range wraps past the largest offset');
}

/**
 * One unit of a release of blocks [from, endBlk): at most
 * RELEASE_EXTENTS_PER_UNIT extents.  Returns the block to continue from,
 * or null when the range is done (and past-EOF extents are gone if no
 * online block is left).
 */
export async function releaseUnit(c: FsCore, h: TransHold, ino: bigint, dataVersion: bigint, from: bigint, endBlk: bigint): Promise<bigint | null> {
  const i = await getReg(c, ino);
  if (i.data_version !== dataVersion) throw new FsError('ESTALE', `data_version is ${i.data_version}, not ${dataVersion}`);
  let cur = from;
  let changed = false;
  try {
    for (let n = 0; cur < endBlk && n < RELEASE_EXTENTS_PER_UNIT; n++) {
      const e = await nextExtent(c, ino, cur);
      if (e === null || e.start >= endBlk) {
        cur = endBlk;
        break;
      }
      const p = clip(e, cur, endBlk);
      cur = p.start + p.len;
      if (isOffline(p) && p.blkno === 0n) continue;
      if (p.blkno !== 0n) await freeData(c, p.blkno, p.len);
      await setExtent(c, ino, i, p.start, p.len, { blkno: 0n, flags: EXTENT_FLAG.OFFLINE });
      changed = true;
    }
    if (cur >= endBlk && i.online_blocks === 0n && i.size > 0n) {
      // Nothing online is left: what lies past EOF (preallocation) goes.
      const eofBlk = blocksUpTo(i.size);
      for (let e = await nextExtent(c, ino, eofBlk); e !== null; e = await nextExtent(c, ino, eofBlk)) {
        const p = clip(e, e.start > eofBlk ? e.start : eofBlk, e.start + e.len);
        if (p.blkno !== 0n) await freeData(c, p.blkno, p.len);
        await setExtent(c, ino, i, p.start, p.len, null);
        changed = true;
      }
    }
  } finally {
    if (changed) await c.putInode(h, ino, i, false);
  }
  return cur >= endBlk ? null : cur;
}

/* ---- stage ------------------------------------------------------------------------------------ */

/** Argument checks of STAGE that need no inode (EINVAL). */
export function checkStageArgs(off: bigint, len: bigint): void {
  if (off < 0n || len < 0n || off > U64_MAX) throw new FsError('EINVAL', 'offset and length are u64');
  if (off % BLOCK !== 0n) throw new FsError('EINVAL', 'stage offset must be a multiple of 4096');
  if (len > 0n && off + len - 1n > U64_MAX) throw new FsError('EINVAL', 'stage range wraps past the largest offset');
}

/**
 * One unit of a stage: bytes at off (aligned), at most STAGE_UNIT_BYTES.
 * Offline blocks, holes and unwritten blocks of the range get the bytes;
 * online blocks are kept.
 */
export async function stageUnit(
  c: FsCore, h: TransHold, ino: bigint, dataVersion: bigint, off: bigint, data: Uint8Array, rangeEnd = off + BigInt(data.length),
): Promise<void> {
  checkStageArgs(off, BigInt(data.length));
  if (data.length === 0) return;
  const i = await getReg(c, ino);
  if (i.data_version !== dataVersion) throw new FsError('ESTALE', `data_version is ${i.data_version}, not ${dataVersion}`);
  // The whole stage's range is checked by each of its units.
  if (rangeEnd > i.size) throw new FsError('EINVAL', `stage ends at ${rangeEnd}, past the size ${i.size}`);
  if (rangeEnd % BLOCK !== 0n && rangeEnd !== i.size) throw new FsError('EINVAL', 'stage must end on a 4096 boundary or at the size');
  const end = off + BigInt(data.length);
  if (end % BLOCK !== 0n && end !== rangeEnd) throw new FsError('EINVAL', 'a stage unit must end on a 4096 boundary');
  const first = off / BLOCK;
  const last = blocksUpTo(end);
  // Bytes for blocks [s, s+n): a view when whole, else zero padded.
  const bytesOf = (s: bigint, n: bigint): Uint8Array => {
    const at = Number((s - first) * BLOCK);
    const want = Number(n * BLOCK);
    if (at + want <= data.length) return data.subarray(at, at + want);
    const b = new Uint8Array(want);
    b.set(data.subarray(at));
    return b;
  };
  // What to fill: every non-online piece of the range, holes included.
  const todo: Extent[] = [];
  let cur = first;
  for (const e of await extentsIn(c, ino, first, last)) {
    if (e.start > cur) todo.push({ start: cur, len: e.start - cur, blkno: 0n, flags: 0 });
    if (!isOnline(e)) todo.push(e);
    cur = e.start + e.len;
  }
  if (cur < last) todo.push({ start: cur, len: last - cur, blkno: 0n, flags: 0 });
  let changed = false;
  try {
    for (const t of todo) {
      if (t.blkno !== 0n && !isOffline(t)) {
        // Unwritten: the blocks are ours already.
        await c.d.dataDev.write(t.blkno * BLOCK, bytesOf(t.start, t.len));
        await setExtent(c, ino, i, t.start, t.len, { blkno: t.blkno, flags: 0 });
        changed = true;
        continue;
      }
      if (t.blkno !== 0n) {
        // Offline yet mapped (not ours to make, but legal bytes): drop the blocks first.
        await freeData(c, t.blkno, t.len);
        await setExtent(c, ino, i, t.start, t.len, { blkno: 0n, flags: EXTENT_FLAG.OFFLINE });
        changed = true;
      }
      for (let s = t.start; s < t.start + t.len;) {
        const a = await allocData(c, t.start + t.len - s);
        try {
          await c.d.dataDev.write(a.start * BLOCK, bytesOf(s, a.len));
        } catch (e) {
          await freeData(c, a.start, a.len);
          throw e;
        }
        await setExtent(c, ino, i, s, a.len, { blkno: a.start, flags: 0 });
        changed = true;
        s += a.len;
      }
    }
  } finally {
    if (changed) await c.putInode(h, ino, i, false);
  }
}

/* ---- setattr_more --------------------------------------------------------------------------- */

export async function setattrMore(c: FsCore, h: TransHold, ino: bigint, a: SetattrMoreArgs): Promise<Inode> {
  if (a.dataVersion < 0n || a.dataVersion > U64_MAX || a.size < 0n || a.size > U64_MAX) throw new FsError('EINVAL', 'data_version and size are u64');
  if (a.size > 0n && a.dataVersion === 0n) throw new FsError('EINVAL', 'a size needs a data_version');
  if (a.offline && a.size === 0n) throw new FsError('EINVAL', 'offline needs a size');
  if (a.size > SIZE_MAX) throw new FsError('EINVAL', `size ${a.size} is past the largest file size`);
  const i = await c.getInode(ino);
  const data = a.size !== 0n || a.dataVersion !== 0n;
  if (data) {
    if (isDir(i)) throw new FsError('EISDIR');
    if (!isReg(i)) throw new FsError('EINVAL', 'size and data_version only on regular files');
    if (i.data_version !== 0n || i.size !== 0n) throw new FsError('EINVAL', 'size and data_version only on a file never written (data_version 0, size 0)');
  }
  if (a.offline) {
    const blocks = blocksUpTo(a.size);
    if ((await extentsIn(c, ino, 0n, blocks)).length > 0) throw new FsError('EINVAL', 'the file has data extents');
    await setExtent(c, ino, i, 0n, blocks, { blkno: 0n, flags: EXTENT_FLAG.OFFLINE });
  }
  if (a.dataVersion !== 0n) i.data_version = a.dataVersion;
  if (a.size !== 0n) i.size = a.size;
  i.ctime = a.ctime ?? c.now();
  if (a.crtime !== undefined) i.crtime = a.crtime;
  await c.putInode(h, ino, i, data);
  return i;
}

/* ---- move-blocks ------------------------------------------------------------------------------ */

export async function moveBlocks(c: FsCore, h: TransHold, a: MoveBlocksArgs): Promise<void> {
  for (const v of [a.fromOff, a.len, a.toOff]) if (v < 0n || v > U64_MAX) throw new FsError('EINVAL', 'offsets and length are u64');
  if (a.len > 0n && (a.fromOff + a.len - 1n > U64_MAX || a.toOff + a.len - 1n > U64_MAX)) {
    throw new FsError('EOVERFLOW', 'the range wraps past the largest offset');
  }
  if (a.fromIno === a.toIno) throw new FsError('EINVAL', 'moving blocks within one file');
  const from = await getReg(c, a.fromIno);
  const to = await getReg(c, a.toIno);
  if (a.fromOff % BLOCK !== 0n || a.toOff % BLOCK !== 0n) throw new FsError('EINVAL', 'offsets must be multiples of 4096');
  if (a.len % BLOCK !== 0n && a.fromOff + a.len !== from.size) throw new FsError('EINVAL', 'the length must be a multiple of 4096 unless the range ends at the source size');
  if (a.len === 0n) return;
  if (a.stage && to.data_version !== a.dataVersion) throw new FsError('ESTALE', `data_version is ${to.data_version}, not ${a.dataVersion}`);
  const count = blocksUpTo(a.len);
  const fb = a.fromOff / BLOCK;
  const tb = a.toOff / BLOCK;
  const src = await extentsIn(c, a.fromIno, fb, fb + count);
  if (src.some(isOffline)) throw new FsError('ENODATA', 'the source range has offline blocks');
  const dst = await extentsIn(c, a.toIno, tb, tb + count);
  if (a.stage) {
    let offline = 0n;
    for (const e of dst) if (isOffline(e) && e.blkno === 0n) offline += e.len;
    if (offline !== count) throw new FsError('EINVAL', 'staging moves need an offline destination range');
    if (a.toOff + a.len > to.size) throw new FsError('EINVAL', 'staging moves must end inside the destination size');
    await setExtent(c, a.toIno, to, tb, count, null);
  } else {
    if (dst.some(isOffline)) throw new FsError('ENODATA', 'the destination range has offline blocks');
    if (dst.length > 0) throw new FsError('EINVAL', 'the destination range has data extents');
  }
  for (const e of src) {
    await setExtent(c, a.fromIno, from, e.start, e.len, null);
    await setExtent(c, a.toIno, to, tb + (e.start - fb), e.len, { blkno: e.blkno, flags: e.flags });
  }
  const now = c.now();
  from.data_version++;
  from.mtime = from.ctime = now;
  await c.putInode(h, a.fromIno, from, true);
  if (a.stage) {
    await c.putInode(h, a.toIno, to, false);
  } else {
    to.data_version++;
    to.mtime = to.ctime = now;
    if (a.toOff + a.len > to.size) to.size = a.toOff + a.len;
    await c.putInode(h, a.toIno, to, true);
  }
}

/* ---- data-wait-err ---------------------------------------------------------------------------- */

export async function dataWaitErr(c: FsCore, waiters: DataWaiters, a: DataWaitErrArgs): Promise<number> {
  if (a.offset < 0n || a.offset > U64_MAX || a.count <= 0n || a.count > U64_MAX || a.offset + a.count - 1n > U64_MAX) {
    throw new FsError('EINVAL', 'offset and count must give a non-empty range of u64 offsets');
  }
  if (a.op === 0 || (a.op & ~DATA_WAIT_OP_MASK) !== 0) throw new FsError('EINVAL', `op ${a.op} is not read, write or change_size`);
  if (!Number.isInteger(a.errno) || a.errno < 1 || a.errno > 4095) throw new FsError('EINVAL', `errno ${a.errno} is not 1..4095`);
  const i = await c.getInode(a.ino);
  if (!isReg(i)) throw new FsError('EINVAL', 'not a regular file');
  if (i.data_version !== a.dataVersion) throw new FsError('ESTALE', `data_version is ${i.data_version}, not ${a.dataVersion}`);
  return waiters.fail(a.ino, a.offset / BLOCK, (a.offset + a.count - 1n) / BLOCK, a.op, a.errno);
}
