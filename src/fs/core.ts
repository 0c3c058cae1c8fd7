/*
 * The shared core of one mount's filesystem: what every concern of src/fs
 * (inode.ts, dir.ts, xattr.ts, data.ts, orphan.ts, seqindex.ts) needs and
 * nothing more.  ScoutFs (src/fs/fs.ts) owns one FsCore and passes it to
 * the functions of those files, the way scoutfs's inode.c, dir.c, xattr.c
 * and data.c share one super block info.
 *
 *   items    lookup/next/create/delete/update through the item cache, each
 *            with the lock range its key would have under a cluster lock
 *            (src/format/lock.ts) in WRITE mode: there are no cluster
 *            locks yet (single node, src/mount/mount.ts), but the bloom keys
 *            the log btree gets are the ones a cluster reader computes;
 *   inodes   getInode / putInode (meta_seq and data_seq move to the held
 *            transaction's seq, the index items move with them, so the
 *            index always holds exactly one META_SEQ item per inode and one
 *            DATA_SEQ item per regular file), newInode, toAttr, the inode
 *            number pool (batches from super.next_ino through the server);
 *   units    reading() and modify(): every changing operation runs as one
 *            unit under the fs lock (exclusive) and one transaction hold;
 *            reads share the lock, so nobody sees an operation half done
 *            (the item cache interleaves at every await) while reads run
 *            alongside each other.  One lock is simple and enough for a
 *            single FUSE mount; the cluster replaces it with per-inode
 *            cluster locks without changing the item layout;
 *   state    counters, open counts per inode (orphans), destroyed flag.
 *
 * Invariants: an inode item is written only inside modify() with the hold's
 * seq equal to the transaction's seq; opens only holds inodes opened and
 * not yet released; after destroy() every call fails ESHUTDOWN.
 */
import assert from 'node:assert/strict';
import type { Attr, Ctx } from './api.js';
import type { Timespec } from '../format/common.js';
import { CorruptionError, FsError } from '../format/errors.js';
import { DT, INDEX_TYPE, decodeInode, encodeInode, indexKey, inodeKey, type Inode } from '../format/items.js';
import type { Key } from '../format/key.js';
import { DATA_DEV_START_BLKNO } from '../format/constants.js';
import { lockRangeOf } from '../format/lock.js';
import type { ItemCache, ItemLock } from '../item/cache.js';
import type { Trans, TransHold } from '../trans/trans.js';
import type { BlknoBounds } from '../alloc/extent.js';
import type { BlockDevice } from '../runtime/device.js';
import type { Clock } from '../runtime/clock.js';
import { RwLock } from './rwlock.js';

export const ROOT_INO = 1n;
export const NAME_MAX = 255;
export const S_IFMT = 0o170000;
export const S_IFDIR = 0o040000;
export const S_IFREG = 0o100000;
export const S_IFLNK = 0o120000;
export const S_ISGID = 0o2000;

export interface ServerSpace {
  metaFree: bigint;
  dataFree: bigint;
  totalMeta: bigint;
  totalData: bigint;
  inodeCount: bigint;
}

export interface FsDeps {
  items: ItemCache;
  trans: Trans;
  dataDev: BlockDevice;
  clock: Clock;
  log: (line: string) => void;
  totalDataBlocks: bigint;
  allocInodes: (count: bigint) => Promise<{ ino: bigint; nr: bigint }>;
  lastSeq: () => Promise<bigint>;
  /** The server's STATFS answer (PROTOCOL.md 7.4) without our open lt's data roots. */
  serverSpace: () => Promise<ServerSpace>;
  inodeBatch?: bigint;
}

export interface FsCounters {
  inodesCreated: number;
  inodesDeleted: number;
  orphansCreated: number;
  orphansRecovered: number;
  srchEntries: number;
  totlDeltas: number;
  blocksAllocated: number;
  blocksFreed: number;
  inoBatches: number;
}

export const lockFor = (k: Key): ItemLock => {
  const r = lockRangeOf(k);
  return { start: r.start, end: r.end, mode: 'WRITE', writeSeq: 0n };
};

export function dtOfMode(mode: number): number {
  switch (mode & S_IFMT) {
    case 0o010000: return DT.FIFO;
    case 0o020000: return DT.CHR;
    case S_IFDIR: return DT.DIR;
    case 0o060000: return DT.BLK;
    case S_IFREG: return DT.REG;
    case S_IFLNK: return DT.LNK;
    case 0o140000: return DT.SOCK;
    default: throw new FsError('EINVAL', `mode ${mode.toString(8)} has no file type`);
  }
}

export const isDir = (i: Inode): boolean => (i.mode & S_IFMT) === S_IFDIR;
export const isReg = (i: Inode): boolean => (i.mode & S_IFMT) === S_IFREG;
export const isLnk = (i: Inode): boolean => (i.mode & S_IFMT) === S_IFLNK;
export const bytesEq = (a: Uint8Array, b: Uint8Array): boolean => a.length === b.length && Buffer.compare(a, b) === 0;

export function ignoreEnoent(e: unknown): void {
  if (!(e instanceof FsError && e.code === 'ENOENT')) throw e;
}

export class FsCore {
  readonly counters: FsCounters = {
    inodesCreated: 0, inodesDeleted: 0, orphansCreated: 0, orphansRecovered: 0, srchEntries: 0, totlDeltas: 0, blocksAllocated: 0, blocksFreed: 0, inoBatches: 0,
  };
  readonly mutex = new RwLock();
  /** Open handles per inode (an unlinked open file lives until the last release). */
  readonly opens = new Map<bigint, number>();
  readonly dataBounds: BlknoBounds;
  destroyed = false;
  private inoPool = { next: 0n, end: 0n };

  constructor(readonly d: FsDeps) {
    this.dataBounds = { first: DATA_DEV_START_BLKNO, last: d.totalDataBlocks - 1n };
  }

  /* ---- units of work ------------------------------------------------------------------------ */

  reading<T>(fn: () => Promise<T>): Promise<T> {
    return this.mutex.shared(async () => {
      this.assertLive();
      return fn();
    });
  }

  modify<T>(fn: (h: TransHold) => Promise<T>, allocating = true): Promise<T> {
    return this.mutex.run(async () => {
      this.assertLive();
      const h = await this.d.trans.hold({ allocating });
      try {
        return await fn(h);
      } finally {
        this.d.trans.release(h);
      }
    });
  }

  assertLive(): void {
    if (this.destroyed) throw new FsError('ESHUTDOWN', 'filesystem is unmounted');
  }

  now(): Timespec {
    return this.d.clock.wallTime();
  }

  /* ---- items ---------------------------------------------------------------------------------- */

  get items(): ItemCache {
    return this.d.items;
  }

  lookupItem(k: Key): Promise<Uint8Array | null> {
    return this.items.lookup(k, lockFor(k));
  }

  nextItem(k: Key, last: Key): Promise<{ key: Key; val: Uint8Array } | null> {
    return this.items.next(k, last, lockFor(k));
  }

  async createItem(k: Key, v: Uint8Array): Promise<void> {
    await this.items.create(k, v, lockFor(k));
  }

  async deleteItem(k: Key): Promise<void> {
    await this.items.delete(k, lockFor(k));
  }

  /* ---- inodes --------------------------------------------------------------------------------- */

  async getInode(ino: bigint): Promise<Inode> {
    const v = await this.lookupItem(inodeKey(ino));
    if (v === null) throw new FsError('ENOENT', `inode ${ino}`);
    if (v.length !== 160) throw new CorruptionError('fs items', null, 'size', `inode ${ino} item of ${v.length} bytes`);
    return decodeInode(v);
  }

  /** Write the inode item with meta_seq (and data_seq) := the trans seq, keeping the index in step. */
  async putInode(h: TransHold, ino: bigint, i: Inode, data = false): Promise<void> {
    const seq = h.seq;
    assert(seq > 0n && seq === this.d.trans.transSeq, 'inode write outside the held transaction');
    if (i.meta_seq !== seq) {
      await this.moveIndex(INDEX_TYPE.META_SEQ, i.meta_seq, seq, ino);
      i.meta_seq = seq;
    }
    if (data && i.data_seq !== seq) {
      if (isReg(i)) await this.moveIndex(INDEX_TYPE.DATA_SEQ, i.data_seq, seq, ino);
      i.data_seq = seq;
    }
    i.version += 1n;
    await this.items.update(inodeKey(ino), encodeInode(i), lockFor(inodeKey(ino)));
  }

  private async moveIndex(type: number, from: bigint, to: bigint, ino: bigint): Promise<void> {
    const old = indexKey(type, from, ino);
    try {
      await this.deleteItem(old);
    } catch (e) {
      if (!(e instanceof FsError && e.code === 'ENOENT')) throw e;
      this.d.log(`fs: inode ${ino} had no index item type ${type} major ${from}`);
    }
    await this.createItem(indexKey(type, to, ino), new Uint8Array(0));
  }

  private async allocIno(): Promise<bigint> {
    if (this.inoPool.next >= this.inoPool.end) {
      const got = await this.d.allocInodes(this.d.inodeBatch ?? 10240n);
      this.counters.inoBatches++;
      this.inoPool = { next: got.ino, end: got.ino + got.nr };
    }
    return this.inoPool.next++;
  }

  async newInode(h: TransHold, mode: number, rdev: number, ctx: Ctx): Promise<{ ino: bigint; i: Inode }> {
    const ino = await this.allocIno();
    const now = this.now();
    const seq = h.seq;
    const i: Inode = {
      size: 0n, meta_seq: seq, data_seq: seq, data_version: 0n, online_blocks: 0n, offline_blocks: 0n,
      next_readdir_pos: 2n, next_xattr_id: 0n, version: 1n,
      nlink: (mode & S_IFMT) === S_IFDIR ? 2 : 1, uid: ctx.uid, gid: ctx.gid, mode, rdev, flags: 0,
      atime: now, ctime: now, mtime: now, crtime: now,
    };
    await this.createItem(inodeKey(ino), encodeInode(i));
    await this.createItem(indexKey(INDEX_TYPE.META_SEQ, seq, ino), new Uint8Array(0));
    if (isReg(i)) await this.createItem(indexKey(INDEX_TYPE.DATA_SEQ, seq, ino), new Uint8Array(0));
    this.d.trans.addInodeCount(h, 1n);
    this.counters.inodesCreated++;
    return { ino, i };
  }

  toAttr(ino: bigint, i: Inode): Attr {
    return {
      ino, mode: i.mode, nlink: i.nlink, uid: i.uid, gid: i.gid, rdev: i.rdev, size: i.size,
      blocks: (i.online_blocks + i.offline_blocks) * 8n,
      atime: i.atime, mtime: i.mtime, ctime: i.ctime, crtime: i.crtime,
      meta_seq: i.meta_seq, data_seq: i.data_seq, data_version: i.data_version,
      online_blocks: i.online_blocks, offline_blocks: i.offline_blocks,
    };
  }
}
