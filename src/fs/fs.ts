/*
 * The filesystem of one mount (src/fs/api.ts) over the item cache and the
 * client transaction, stored exactly as FORMAT.md section 8 lays it out.
 * This file is the policy: which unit of work each operation runs in.  The
 * work itself lives with its concern, as scoutfs splits inode.c, dir.c,
 * xattr.c and data.c:
 *
 *   core.ts      items, inodes, seqs, the inode number pool, units of work
 *   inode.ts     getattr, setattr
 *   dir.ts       names: lookup, create/mknod/mkdir/symlink, link, unlink,
 *                rmdir, rename, readdir, readlink
 *   xattr.ts     xattr parts, .hide./.srch./.totl. tags
 *   data.ts      extents, read, write, truncate
 *   orphan.ts    open counts, orphans, final deletion, recovery at mount
 *   seqindex.ts  meta_seq / data_seq index walks
 *   archive.ts   release, stage, setattr_more, move-blocks, data waiters
 *   extents.ts   setting a file's extent items (split, merge, counts)
 *   inopath.ts   inode number to paths (link backrefs)
 *
 * Every changing operation runs as one unit: FsCore.modify takes the fs
 * lock exclusively, then a transaction hold, makes all its item changes,
 * and releases.  Reads (lookup, getattr, readdir, read, xattr reads) take
 * it shared.  sync() waits outside the lock.  Inode numbers come from
 * super.next_ino through the server in batches (one pool, not the kernel's
 * two).  ENOSPC from the meta LOW flag surfaces from the hold of allocating
 * operations (unlink, rmdir and removexattr hold non-allocating, so a full
 * volume can always be emptied).
 *
 * Offline data (archive.ts): read, write and size changes check their
 * range inside their unit; when it holds offline blocks they register a
 * Waiter before the unit ends and wait for it after, holding nothing, then
 * run again from the start (untilOnline).  release runs in units of a few
 * hundred extents, stage in units of STAGE_UNIT_BYTES; every stage unit
 * wakes the inode's waiters.  release holds non-allocating like unlink:
 * it frees space, so it must work on a full volume.
 *
 * Left out: fallocate, the rename lock (single node), atime updates on
 * read.
 */
import type {
  Attr, Ctx, DataWaitErrArgs, DataWaitingEntry, DirEntry, Fs, IndexEntry, MoveBlocksArgs, SeqIndex, SetAttr, SetattrMoreArgs, StatFs, WaitOpts,
} from './api.js';
import { FsError } from '../format/errors.js';
import { U64_MAX } from '../format/layout.js';
import { SM_BLOCK_SIZE, DATA_DEV_START_BLKNO } from '../format/constants.js';
import { FsCore, NAME_MAX, ROOT_INO, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG, type FsCounters, type FsDeps } from './core.js';
import * as dir from './dir.js';
import * as inode from './inode.js';
import * as xattr from './xattr.js';
import * as data from './data.js';
import * as orphan from './orphan.js';
import { walkInodes } from './seqindex.js';
import * as archive from './archive.js';
import { DATA_WAIT_OP, DataWaiters, STAGE_UNIT_BYTES, Waiter } from './archive.js';
import { inoPaths } from './inopath.js';

export { ROOT_INO, NAME_MAX, type FsDeps, type FsCounters, type ServerSpace } from './core.js';
export { SYMLINK_MAX } from './dir.js';
export { PART_BYTES, XATTR_NAME_MAX, XATTR_VALUE_MAX, parseTotlNumber, totlNameKey, xattrTags } from './xattr.js';

export class ScoutFs implements Fs {
  readonly rootIno = ROOT_INO;
  private readonly c: FsCore;
  private readonly waiters = new DataWaiters();

  private constructor(d: FsDeps) {
    this.c = new FsCore(d);
  }

  /** Set up, then finish any orphans a previous mount left (10.3). */
  static async open(d: FsDeps): Promise<ScoutFs> {
    const fs = new ScoutFs(d);
    await fs.getattr(ROOT_INO);
    await orphan.recoverOrphans(fs.c);
    return fs;
  }

  get counters(): FsCounters {
    return this.c.counters;
  }

  async destroy(): Promise<void> {
    this.waiters.shutdown();
    // Let the operation in flight finish; later calls fail.
    await this.c.mutex.run(async () => {
      this.c.destroyed = true;
    });
  }

  status(): object {
    return { counters: { ...this.c.counters }, openInodes: this.c.opens.size, dataWaits: { ...this.waiters.counters, waiting: this.waiters.size } };
  }

  /* ---- names -------------------------------------------------------------------------------- */

  lookup(d: bigint, name: Uint8Array): Promise<Attr> {
    return this.c.reading(() => dir.lookup(this.c, d, name));
  }

  create(d: bigint, name: Uint8Array, mode: number, ctx: Ctx): Promise<Attr> {
    return this.c.modify((h) => dir.makeNode(this.c, h, d, name, (mode & ~S_IFMT) | S_IFREG, 0, ctx));
  }

  mknod(d: bigint, name: Uint8Array, mode: number, rdev: number, ctx: Ctx): Promise<Attr> {
    if ((mode & S_IFMT) === S_IFDIR || (mode & S_IFMT) === S_IFLNK) return Promise.reject(new FsError('EINVAL', 'mknod of a dir or symlink'));
    return this.c.modify((h) => dir.makeNode(this.c, h, d, name, (mode & S_IFMT) === 0 ? mode | S_IFREG : mode, rdev, ctx));
  }

  mkdir(d: bigint, name: Uint8Array, mode: number, ctx: Ctx): Promise<Attr> {
    return this.c.modify((h) => dir.makeNode(this.c, h, d, name, (mode & ~S_IFMT) | S_IFDIR, 0, ctx));
  }

  symlink(d: bigint, name: Uint8Array, target: Uint8Array, ctx: Ctx): Promise<Attr> {
    try {
      dir.checkSymlinkTarget(target);
    } catch (e) {
      return Promise.reject(e);
    }
    return this.c.modify((h) => dir.symlink(this.c, h, d, name, target, ctx));
  }

  readlink(ino: bigint): Promise<Uint8Array> {
    return this.c.reading(() => dir.readlink(this.c, ino));
  }

  link(ino: bigint, d: bigint, name: Uint8Array): Promise<Attr> {
    return this.c.modify((h) => dir.link(this.c, h, ino, d, name));
  }

  unlink(d: bigint, name: Uint8Array): Promise<void> {
    return this.c.modify((h) => dir.unlink(this.c, h, d, name), false);
  }

  rmdir(d: bigint, name: Uint8Array): Promise<void> {
    return this.c.modify((h) => dir.rmdir(this.c, h, d, name), false);
  }

  rename(fromDir: bigint, fromName: Uint8Array, toDir: bigint, toName: Uint8Array): Promise<void> {
    return this.c.modify((h) => dir.rename(this.c, h, fromDir, fromName, toDir, toName));
  }

  renameNoreplace(fromDir: bigint, fromName: Uint8Array, toDir: bigint, toName: Uint8Array): Promise<void> {
    return this.c.modify((h) => dir.rename(this.c, h, fromDir, fromName, toDir, toName, true));
  }

  tmpfile(d: bigint, mode: number, ctx: Ctx): Promise<Attr> {
    return this.c.modify((h) => dir.tmpfile(this.c, h, d, mode, ctx));
  }

  parentOf(d: bigint): Promise<bigint | null> {
    return this.c.reading(() => dir.parentOf(this.c, d));
  }

  readdir(d: bigint, pos: bigint, max: number): Promise<DirEntry[]> {
    return this.c.reading(() => dir.readdir(this.c, d, pos, max));
  }

  /* ---- attributes --------------------------------------------------------------------------- */

  getattr(ino: bigint): Promise<Attr> {
    return this.c.reading(() => inode.getattr(this.c, ino));
  }

  setattr(ino: bigint, set: SetAttr, opts?: WaitOpts): Promise<Attr> {
    const size = set.size;
    if (size === undefined) return this.c.modify((h) => inode.setattr(this.c, h, ino, set));
    return this.untilOnline(() => this.c.modify(async (h) => {
      const blk = await archive.sizeChangeBlocked(this.c, ino, size);
      if (blk !== null) return this.waiters.add(ino, blk, DATA_WAIT_OP.CHANGE_SIZE, opts?.signal);
      return inode.setattr(this.c, h, ino, set);
    }));
  }

  /** Run `attempt` until it does not answer with a Waiter, waiting for each outside the unit. */
  private async untilOnline<T>(attempt: () => Promise<T | Waiter>): Promise<T> {
    for (;;) {
      const r = await attempt();
      if (!(r instanceof Waiter)) return r;
      await r.promise;
    }
  }

  /* ---- open files --------------------------------------------------------------------------- */

  open(ino: bigint): Promise<void> {
    return this.c.reading(() => orphan.openInode(this.c, ino));
  }

  release(ino: bigint): Promise<void> {
    return this.c.mutex.run(() => orphan.releaseInode(this.c, ino));
  }

  /* ---- data --------------------------------------------------------------------------------- */

  read(ino: bigint, off: bigint, len: number, opts?: WaitOpts): Promise<Uint8Array> {
    return this.untilOnline(() => this.c.reading(async () => {
      const blk = await archive.readBlocked(this.c, ino, off, len);
      if (blk !== null && opts?.failInstead !== undefined) throw opts.failInstead;
      if (blk !== null) return this.waiters.add(ino, blk, DATA_WAIT_OP.READ, opts?.signal);
      return data.read(this.c, ino, off, len);
    }));
  }

  write(ino: bigint, off: bigint, buf: Uint8Array, opts?: WaitOpts): Promise<number> {
    return this.untilOnline(() => this.c.modify(async (h) => {
      const w = await archive.writeBlocked(this.c, ino, off, buf.length);
      if (w !== null) return this.waiters.add(ino, w.iblock, w.op, opts?.signal);
      return data.write(this.c, h, ino, off, buf);
    }));
  }

  /* ---- the archive interface (archive.ts) ---------------------------------------------------- */

  async releaseData(ino: bigint, off: bigint, len: bigint, dataVersion: bigint): Promise<void> {
    archive.checkReleaseArgs(off, len);
    if (len === 0n) return;
    const endBlk = (off + len) / BigInt(SM_BLOCK_SIZE);
    for (let from: bigint | null = off / BigInt(SM_BLOCK_SIZE); from !== null;) {
      const at: bigint = from;
      from = await this.c.modify((h) => archive.releaseUnit(this.c, h, ino, dataVersion, at, endBlk), false);
    }
  }

  async stageData(ino: bigint, dataVersion: bigint, off: bigint, buf: Uint8Array): Promise<void> {
    archive.checkStageArgs(off, BigInt(buf.length));
    const end = off + BigInt(buf.length);
    for (let at = 0; at < buf.length; at += STAGE_UNIT_BYTES) {
      const part = buf.subarray(at, at + STAGE_UNIT_BYTES);
      try {
        await this.c.modify((h) => archive.stageUnit(this.c, h, ino, dataVersion, off + BigInt(at), part, end));
      } finally {
        this.waiters.wake(ino);
      }
    }
  }

  async setattrMore(ino: bigint, args: SetattrMoreArgs): Promise<Attr> {
    try {
      const i = await this.c.modify((h) => archive.setattrMore(this.c, h, ino, args));
      return this.c.toAttr(ino, i);
    } finally {
      this.waiters.wake(ino);
    }
  }

  async moveBlocks(args: MoveBlocksArgs): Promise<void> {
    try {
      await this.c.modify((h) => archive.moveBlocks(this.c, h, args));
    } finally {
      this.waiters.wake(args.toIno);
    }
  }

  dataWaiting(afterIno: bigint, afterIblock: bigint, max: number): Promise<DataWaitingEntry[]> {
    try {
      this.c.assertLive();
      return Promise.resolve(this.waiters.list(afterIno, afterIblock, max));
    } catch (e) {
      return Promise.reject(e);
    }
  }

  dataWaitErr(args: DataWaitErrArgs): Promise<number> {
    return this.c.reading(() => archive.dataWaitErr(this.c, this.waiters, args));
  }

  inoPaths(ino: bigint): Promise<Uint8Array[]> {
    return this.c.reading(() => inoPaths(this.c, ino));
  }

  listHiddenXattrs(ino: bigint): Promise<Uint8Array[]> {
    return this.c.reading(() => xattr.listxattr(this.c, ino, true));
  }

  shutdownDataWaits(): void {
    this.waiters.shutdown();
  }

  fallocate(ino: bigint, off: bigint, len: bigint, mode: number): Promise<void> {
    return this.c.modify((h) => data.fallocate(this.c, h, ino, off, len, mode));
  }

  seek(ino: bigint, off: bigint, whence: number): Promise<bigint> {
    return this.c.reading(() => data.seek(this.c, ino, off, whence));
  }

  /* ---- xattrs ------------------------------------------------------------------------------- */

  getxattr(ino: bigint, name: Uint8Array): Promise<Uint8Array> {
    return this.c.reading(() => xattr.getxattr(this.c, ino, name));
  }

  setxattr(ino: bigint, name: Uint8Array, value: Uint8Array, flags: { create?: boolean; replace?: boolean }): Promise<void> {
    return this.c.modify((h) => xattr.setxattr(this.c, h, ino, name, value, flags));
  }

  listxattr(ino: bigint): Promise<Uint8Array[]> {
    return this.c.reading(() => xattr.listxattr(this.c, ino));
  }

  removexattr(ino: bigint, name: Uint8Array): Promise<void> {
    return this.c.modify((h) => xattr.removexattr(this.c, h, ino, name), false);
  }

  /* ---- whole filesystem --------------------------------------------------------------------- */

  statfs(): Promise<StatFs> {
    return this.c.reading(async () => {
      // The server leaves out our open lt's data roots; ours are live.
      const sp = await this.c.d.serverSpace();
      const lt = this.c.d.trans.forest?.lt ?? null;
      const dataFree = sp.dataFree + (lt === null ? 0n : lt.data_avail.total_len + lt.data_freed.total_len);
      const totalDataBlocks = sp.totalData - DATA_DEV_START_BLKNO;
      return {
        blockSize: SM_BLOCK_SIZE,
        totalBlocks: totalDataBlocks,
        freeBlocks: dataFree,
        totalInodes: U64_MAX,
        freeInodes: U64_MAX - sp.inodeCount,
        nameMax: NAME_MAX,
        totalMetaBlocks: sp.totalMeta,
        freeMetaBlocks: sp.metaFree,
        totalDataBlocks,
        freeDataBlocks: dataFree,
      };
    });
  }

  async sync(): Promise<void> {
    this.c.assertLive();
    await this.c.d.trans.sync();
  }

  async committedSeq(): Promise<bigint> {
    return this.c.d.lastSeq();
  }

  walkInodes(index: SeqIndex, first: IndexEntry, last: IndexEntry, max: number): Promise<IndexEntry[]> {
    return walkInodes(this.c, index, first, last, max);
  }
}
