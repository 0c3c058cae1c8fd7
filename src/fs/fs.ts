/*
 * The filesystem of one mount (src/fs/api.ts) over the item cache and the
 * client transaction: inodes, directories, symlinks, xattrs, file data,
 * orphans and the meta_seq/data_seq indexes, stored exactly as FORMAT.md
 * section 8 lays them out.
 *
 *   inode        4.ino.1                       160-byte inode value
 *   index        1.0.{1,2}.seq.ino             no value (META_SEQ, DATA_SEQ)
 *   orphan       2.0.1.ino                     no value (nlink 0, still open)
 *   xattr part   4.ino.2.crc32c(name).id.part  896-byte parts of hdr+name+value
 *   dirent       4.dir.3.namehash.pos          32-byte dirent + name
 *   readdir      4.dir.4.pos                   same value
 *   backref      4.ino.5.dir.pos               same value
 *   symlink      4.ino.6.nr                    896-byte chunks of target + NUL
 *   data extent  4.ino.7.last.len              blkno, flags
 *
 * Every changing operation runs as one unit: it takes the fs lock
 * exclusively, then a transaction hold, makes all its item changes, and
 * releases.  Reads (lookup, getattr, readdir, read, xattr reads) take it
 * shared, so nobody sees an operation half done (the item cache
 * interleaves at every await) while reads run alongside each other.  One
 * lock is simple and is enough for a single FUSE mount; finer locking (per
 * inode, like the kernel's i_rwsem) can replace it without changing the
 * item layout.  sync() waits outside the lock.
 *
 * Items go through the item cache with the lock range each key would have
 * under a cluster lock (src/forest/lockkeys.ts), in WRITE mode: there are no
 * cluster locks yet (single node, see src/mount/mount.ts), but the bloom
 * keys the log btree gets are the ones a cluster reader computes.
 *
 * Seqs (PROTOCOL.md 9.1).  Whenever an inode item is written its meta_seq
 * becomes the transaction's seq; data changes (writes, size changes,
 * creation) set data_seq too.  When either value changes, the old index
 * item is deleted and the new one created in the same hold, so the index
 * always holds exactly one META_SEQ item per inode (and one DATA_SEQ item
 * per regular file) matching the inode.  walkInodes first commits the open
 * transaction if it changed that index (what the kernel's READ index lock
 * does to WRITE_ONLY holders), then reads the index clamped to the stable
 * seq (GET_LAST_SEQ), one 1024-seq lock group at a time.
 *
 * Data (PROTOCOL.md 10.4).  Logical 4 KiB blocks map to data device blocks
 * through one extent item per extent.  A write overwrites mapped blocks in
 * place and allocates unmapped ones from the open transaction's data_avail
 * (src/alloc/extent.ts over the forest writer's block store), writing the
 * bytes to the data device immediately; partial blocks are read, merged and
 * written whole, and newly allocated blocks are zero padded.  The mount's
 * commit flushes the data device before COMMIT_LOG_TREES, so extents never
 * point at unwritten blocks after a crash (an in-place overwrite may land
 * before its transaction commits, as in the kernel).  A new extent is merged
 * with the one logically and physically before it.  Truncate frees whole
 * blocks past the new size into data_freed (the server returns them to
 * data_alloc at the next GET) and zeroes the tail of a partial last block,
 * so a later extension reads zeros.  Holes read as zeros.  ENOSPC part way
 * through a write is a short write of the blocks already written.  No UNWRITTEN
 * preallocation and no OFFLINE handling (staging is not implemented).
 *
 * Orphans (PROTOCOL.md 10.3).  When the last link goes away and the inode
 * is open here, an orphan item is created and the inode lives on until the
 * last release, which deletes its extents, xattrs, symlink items, index
 * items, inode item and orphan item.  Inodes with no opens are deleted at
 * once.  At mount, orphan items left by a crashed mount are finished.
 *
 * Inode numbers come from super.next_ino through the in-process server in
 * batches (one pool, not the kernel's two).  ENOSPC from the meta LOW flag
 * surfaces from the hold of allocating operations.
 *
 * Xattr tags (PROTOCOL.md 8.1): `.hide.` names are left out of listxattr;
 * creating or deleting a `.srch.` xattr (also with its inode) appends a
 * srch entry (FNV-1a-64 of the name, ino, xattr id) to the transaction's
 * srch log file, which src/srch/search.ts reads.
 *
 * A `.totl.<...>.A.B.C` xattr (name and value numbers, FORMAT.md 8.5)
 * adds (value change, count change) to the total item (3, A, B, C) as an
 * item-cache delta; totals are read from committed trees, never through
 * the item cache (src/mount/mount.ts readXattrTotals).
 *
 * Left out: data staging/offline extents,
 * fallocate, the rename lock (single node), atime updates on read.
 */
import assert from 'node:assert/strict';
import type { Attr, Ctx, DirEntry, Fs, IndexEntry, SeqIndex, SetAttr, StatFs } from './api.js';
import type { Timespec } from '../format/common.js';
import { CorruptionError, FsError } from '../format/errors.js';
import {
  DT, FS_TYPE, INDEX_TYPE, ZONE, backrefKey, decodeDirent, decodeInode, direntKey, encodeDirent, encodeInode, extentKey,
  indexKey, inodeKey, orphanKey, readdirKey, symlinkKey, xattrKey, type Dirent, type Inode,
} from '../format/items.js';
import { direntNameHash, srchHash, xattrNameHash } from '../format/hash.js';
import { key, type Key } from '../format/key.js';
import { getU16, getU64, getU8, setU64, U64_MAX } from '../format/layout.js';
import { SM_BLOCK_SIZE, DATA_DEV_START_BLKNO } from '../format/constants.js';
import { lockRangeOf } from '../forest/lockkeys.js';
import type { ItemCache, ItemLock } from '../item/cache.js';
import type { Trans, TransHold } from '../trans/trans.js';
import { extentAlloc, extentFree, type BlknoBounds } from '../alloc/extent.js';
import type { BlockDevice } from '../runtime/device.js';
import type { Clock } from '../runtime/clock.js';

export const ROOT_INO = 1n;
export const NAME_MAX = 255;
export const SYMLINK_MAX = 4096; // including the NUL
export const PART_BYTES = 896;
export const XATTR_NAME_MAX = 255;
export const XATTR_VALUE_MAX = 65535;
const BLOCK = BigInt(SM_BLOCK_SIZE);
const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_ISGID = 0o2000;
const XATTR_PREFIXES = ['user.', 'trusted.', 'system.', 'security.', 'scoutfs.'];

/**
 * The tags of a `scoutfs.` xattr name (PROTOCOL.md 8.1): hide., srch. and
 * totl. in any order, each at most once, right after the prefix; `rest` is
 * the length of the name proper after the last tag.  Other names have none.
 */
export function xattrTags(name: Uint8Array): { hide: boolean; srch: boolean; totl: boolean; rest: number } {
  const t = { hide: false, srch: false, totl: false, rest: 0 };
  const s = Buffer.from(name.buffer, name.byteOffset, name.byteLength).toString('latin1');
  if (!s.startsWith('scoutfs.')) return t;
  let at = 'scoutfs.'.length;
  for (;;) {
    const tag = (['hide', 'srch', 'totl'] as const).find((x) => !t[x] && s.startsWith(x + '.', at));
    if (tag === undefined) break;
    t[tag] = true;
    at += tag.length + 1;
  }
  t.rest = s.length - at;
  return t;
}

/**
 * A `.totl.` number (FORMAT.md 8.5): 1..23 characters, base detected like
 * C's strtoull (0x/0X hex, a leading 0 octal, else decimal), no sign, no
 * whitespace, within u64.  null when it does not parse.
 */
export function parseTotlNumber(s: string): bigint | null {
  if (s.length < 1 || s.length > 23) return null;
  let digits = s;
  let re = /^[0-9]+$/;
  let prefix = '';
  if (/^0[xX]/.test(s)) {
    digits = s.slice(2);
    re = /^[0-9a-fA-F]+$/;
    prefix = '0x';
  } else if (s.length > 1 && s[0] === '0') {
    digits = s.slice(1);
    re = /^[0-7]+$/;
    prefix = '0o';
  }
  if (!re.test(digits)) return null;
  const v = BigInt(prefix + digits);
  return v > U64_MAX ? null : v;
}

/** The (A, B, C) of a `scoutfs.totl.<...>.A.B.C` name, or null. */
export function totlNameKey(name: Uint8Array): { a: bigint; b: bigint; c: bigint } | null {
  const parts = Buffer.from(name.buffer, name.byteOffset, name.byteLength).toString('latin1').split('.');
  if (parts.length < 5) return null;
  const [a, b, c] = parts.slice(-3).map(parseTotlNumber);
  return a === null || b === null || c === null || a === undefined || b === undefined || c === undefined ? null : { a, b, c };
}
const EXTENT_FLAG_UNWRITTEN = 2;

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
  serverSpace: () => ServerSpace;
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

const lockFor = (k: Key): ItemLock => {
  const r = lockRangeOf(k);
  return { start: r.start, end: r.end, mode: 'WRITE', writeSeq: 0n };
};

function dtOfMode(mode: number): number {
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

const isDir = (i: Inode): boolean => (i.mode & S_IFMT) === S_IFDIR;
const isReg = (i: Inode): boolean => (i.mode & S_IFMT) === S_IFREG;
const isLnk = (i: Inode): boolean => (i.mode & S_IFMT) === S_IFLNK;
const bytesEq = (a: Uint8Array, b: Uint8Array): boolean => a.length === b.length && Buffer.compare(a, b) === 0;
const startsWith = (name: Uint8Array, p: string): boolean => Buffer.from(name).subarray(0, p.length).toString('latin1') === p;

function checkName(name: Uint8Array): void {
  if (name.length > NAME_MAX) throw new FsError('ENAMETOOLONG', `name of ${name.length} bytes`);
  if (name.length === 0) throw new FsError('ENOENT', 'empty name');
  if (name.includes(0x2f) || name.includes(0)) throw new FsError('EINVAL', 'name with / or NUL');
}

interface FoundDirent {
  d: Dirent;
}

interface Segment {
  lblk: bigint;
  len: bigint;
  /** 0 = hole. */
  pblk: bigint;
}

interface FoundXattr {
  id: bigint;
  hash: number;
  parts: number;
  valLen: number;
  nameLen: number;
}

/**
 * A FIFO readers-writer lock: run() is exclusive, shared() runs alongside
 * other shared holders.  Requests are granted in arrival order, so a
 * waiting exclusive request holds back the shared ones behind it (no
 * writer starvation).  Invariant: exclusive > 0 implies shared === 0, and
 * exclusive <= 1.
 */
class RwLock {
  private sharedHolders = 0;
  private exclusive = 0;
  private readonly waiting: { excl: boolean; go: () => void }[] = [];

  run<T>(fn: () => Promise<T>): Promise<T> {
    return this.hold(true, fn);
  }

  shared<T>(fn: () => Promise<T>): Promise<T> {
    return this.hold(false, fn);
  }

  private async hold<T>(excl: boolean, fn: () => Promise<T>): Promise<T> {
    await new Promise<void>((go) => {
      this.waiting.push({ excl, go });
      this.pump();
    });
    try {
      return await fn();
    } finally {
      if (excl) this.exclusive--;
      else this.sharedHolders--;
      this.pump();
    }
  }

  private pump(): void {
    while (this.waiting.length > 0 && this.exclusive === 0) {
      const w = this.waiting[0]!;
      if (w.excl && this.sharedHolders > 0) return;
      this.waiting.shift();
      if (w.excl) this.exclusive++;
      else this.sharedHolders++;
      assert(this.exclusive <= 1 && (this.exclusive === 0 || this.sharedHolders === 0), 'rw lock state');
      w.go();
      if (w.excl) return;
    }
  }
}

export class ScoutFs implements Fs {
  readonly rootIno = ROOT_INO;
  readonly counters: FsCounters = {
    inodesCreated: 0, inodesDeleted: 0, orphansCreated: 0, orphansRecovered: 0, srchEntries: 0, totlDeltas: 0, blocksAllocated: 0, blocksFreed: 0, inoBatches: 0,
  };
  private readonly mutex = new RwLock();
  private readonly opens = new Map<bigint, number>();
  private inoPool = { next: 0n, end: 0n };
  private readonly dataBounds: BlknoBounds;
  private destroyed = false;

  private constructor(private readonly d: FsDeps) {
    this.dataBounds = { first: DATA_DEV_START_BLKNO, last: d.totalDataBlocks - 1n };
  }

  /** Set up, then finish any orphans a previous mount left (10.3). */
  static async open(d: FsDeps): Promise<ScoutFs> {
    const fs = new ScoutFs(d);
    await fs.getattr(ROOT_INO);
    await fs.recoverOrphans();
    return fs;
  }

  async destroy(): Promise<void> {
    // Let the operation in flight finish; later calls fail.
    await this.mutex.run(async () => {
      this.destroyed = true;
    });
  }

  status(): object {
    return { counters: { ...this.counters }, openInodes: this.opens.size };
  }

  /* ---- plumbing ------------------------------------------------------------------------------- */

  private reading<T>(fn: () => Promise<T>): Promise<T> {
    return this.mutex.shared(async () => {
      this.assertLive();
      return fn();
    });
  }

  private modify<T>(fn: (h: TransHold) => Promise<T>, allocating = true): Promise<T> {
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

  private assertLive(): void {
    if (this.destroyed) throw new FsError('ESHUTDOWN', 'filesystem is unmounted');
  }

  private now(): Timespec {
    return this.d.clock.wallTime();
  }

  private get items(): ItemCache {
    return this.d.items;
  }

  private async lookupItem(k: Key): Promise<Uint8Array | null> {
    return this.items.lookup(k, lockFor(k));
  }

  private async nextItem(k: Key, last: Key): Promise<{ key: Key; val: Uint8Array } | null> {
    return this.items.next(k, last, lockFor(k));
  }

  private async createItem(k: Key, v: Uint8Array): Promise<void> {
    await this.items.create(k, v, lockFor(k));
  }

  private async deleteItem(k: Key): Promise<void> {
    await this.items.delete(k, lockFor(k));
  }

  /* ---- inodes ------------------------------------------------------------------------------- */

  private async getInode(ino: bigint): Promise<Inode> {
    const v = await this.lookupItem(inodeKey(ino));
    if (v === null) throw new FsError('ENOENT', `inode ${ino}`);
    if (v.length !== 160) throw new CorruptionError('fs items', null, 'size', `inode ${ino} item of ${v.length} bytes`);
    return decodeInode(v);
  }

  /** Write the inode item with meta_seq (and data_seq) := the trans seq, keeping the index in step. */
  private async putInode(h: TransHold, ino: bigint, i: Inode, data = false): Promise<void> {
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

  private async newInode(h: TransHold, mode: number, rdev: number, ctx: Ctx): Promise<{ ino: bigint; i: Inode }> {
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

  private toAttr(ino: bigint, i: Inode): Attr {
    return {
      ino, mode: i.mode, nlink: i.nlink, uid: i.uid, gid: i.gid, rdev: i.rdev, size: i.size,
      blocks: (i.online_blocks + i.offline_blocks) * 8n,
      atime: i.atime, mtime: i.mtime, ctime: i.ctime, crtime: i.crtime,
      meta_seq: i.meta_seq, data_seq: i.data_seq, data_version: i.data_version,
      online_blocks: i.online_blocks, offline_blocks: i.offline_blocks,
    };
  }

  /** Delete everything of an unlinked inode (10.3). */
  private async deleteInode(h: TransHold, ino: bigint, i: Inode): Promise<void> {
    assert(i.nlink === 0, `deleting inode ${ino} with nlink ${i.nlink}`);
    if (isReg(i)) await this.truncateBlocks(ino, i, 0n);
    // xattrs and symlink chunks: every remaining item of this inode except the inode itself
    for (const type of [FS_TYPE.XATTR, FS_TYPE.SYMLINK, FS_TYPE.DATA_EXTENT]) {
      const last = key(ZONE.FS, ino, type, U64_MAX, U64_MAX, 0xff);
      for (let it = await this.nextItem(key(ZONE.FS, ino, type), last); it !== null; it = await this.nextItem(key(ZONE.FS, ino, type), last)) {
        // The first part of a .srch. xattr carries its name: log its deletion.
        if (type === FS_TYPE.XATTR && it.key.fourth === 0 && it.val.length >= 8) {
          const nameLen = getU8(it.val, 2);
          const xname = it.val.subarray(8, 8 + nameLen);
          await this.logSrch(h, ino, xname, it.key.third);
          // A .totl. value (<= 23 bytes) always fits in the first part.
          if (xattrTags(xname).totl) await this.logTotl(ino, xname, it.val.subarray(8 + nameLen, 8 + nameLen + getU16(it.val, 0)), null);
        }
        await this.deleteItem(it.key);
      }
    }
    await this.deleteItem(indexKey(INDEX_TYPE.META_SEQ, i.meta_seq, ino)).catch((e) => this.ignoreEnoent(e));
    if (isReg(i)) await this.deleteItem(indexKey(INDEX_TYPE.DATA_SEQ, i.data_seq, ino)).catch((e) => this.ignoreEnoent(e));
    await this.deleteItem(inodeKey(ino));
    if ((await this.lookupItem(orphanKey(ino))) !== null) await this.deleteItem(orphanKey(ino));
    this.d.trans.addInodeCount(h, -1n);
    this.counters.inodesDeleted++;
  }

  /** A .srch. xattr was created or deleted: one srch entry (PROTOCOL.md 8.1). */
  private async logSrch(h: TransHold, ino: bigint, name: Uint8Array, id: bigint): Promise<void> {
    if (!xattrTags(name).srch) return;
    await this.d.trans.srchAdd(h, { hash: srchHash(name), ino, id });
    this.counters.srchEntries++;
  }

  /**
   * A .totl. xattr changed from `before` to `after` (null: absent): add
   * (after - before, +1/0/-1) to its total item as a delta (FORMAT.md 8.5).
   * Values were checked when they were set; a stored one that does not
   * parse is corruption.
   */
  private async logTotl(ino: bigint, name: Uint8Array, before: Uint8Array | null, after: Uint8Array | null): Promise<void> {
    if (!xattrTags(name).totl) return;
    const k = totlNameKey(name);
    const num = (v: Uint8Array): bigint => {
      const n = parseTotlNumber(Buffer.from(v).toString('latin1'));
      if (n === null) throw new CorruptionError('fs items', null, 'structure', `.totl. xattr of inode ${ino} holds a value that is not a number`);
      return n;
    };
    if (k === null) throw new CorruptionError('fs items', null, 'structure', `.totl. xattr of inode ${ino} with a bad name`);
    const total = (after === null ? 0n : num(after)) - (before === null ? 0n : num(before));
    const count = (after === null ? 0n : 1n) - (before === null ? 0n : 1n);
    const v = new Uint8Array(16);
    setU64(v, 0, BigInt.asUintN(64, total));
    setU64(v, 8, BigInt.asUintN(64, count));
    const tk = key(ZONE.XATTR_TOTL, k.a, 0, k.b, k.c);
    // Deltas are WRITE_ONLY operations (PROTOCOL.md 5.4): concurrent
    // writers of one total never need to read it.
    await this.items.delta(tk, v, { ...lockFor(tk), mode: 'WRITE_ONLY' });
    this.counters.totlDeltas++;
  }

  private ignoreEnoent(e: unknown): void {
    if (!(e instanceof FsError && e.code === 'ENOENT')) throw e;
  }

  /** nlink reached 0: delete now, or orphan it while it is open. */
  private async dropInode(h: TransHold, ino: bigint, i: Inode): Promise<void> {
    if ((this.opens.get(ino) ?? 0) > 0) {
      await this.putInode(h, ino, i);
      if ((await this.lookupItem(orphanKey(ino))) === null) await this.createItem(orphanKey(ino), new Uint8Array(0));
      this.counters.orphansCreated++;
    } else {
      await this.deleteInode(h, ino, i);
    }
  }

  private async recoverOrphans(): Promise<void> {
    const first = orphanKey(0n);
    const last = orphanKey(U64_MAX);
    const inos: bigint[] = [];
    for (let it = await this.nextItem(first, last); it !== null; it = it.key.second === U64_MAX ? null : await this.nextItem(orphanKey(it.key.second + 1n), last)) {
      inos.push(it.key.second);
    }
    for (const ino of inos) {
      await this.modify(async (h) => {
        const v = await this.lookupItem(inodeKey(ino));
        if (v === null || decodeInode(v).nlink !== 0) {
          await this.deleteItem(orphanKey(ino));
          return;
        }
        await this.deleteInode(h, ino, decodeInode(v));
        this.counters.orphansRecovered++;
      }, false);
    }
    if (this.counters.orphansRecovered > 0) {
      this.d.log(`finished the deletion of ${this.counters.orphansRecovered} unlinked inode(s) a previous mount left open`);
    }
  }

  /* ---- directories ------------------------------------------------------------------------- */

  private async getDir(ino: bigint): Promise<Inode> {
    const i = await this.getInode(ino);
    if (!isDir(i)) throw new FsError('ENOTDIR', `inode ${ino}`);
    return i;
  }

  private async findDirent(dir: bigint, name: Uint8Array): Promise<FoundDirent | null> {
    const hash = direntNameHash(name);
    const last = direntKey(dir, hash, U64_MAX);
    let k = direntKey(dir, hash, 0n);
    for (;;) {
      const it = await this.nextItem(k, last);
      if (it === null) return null;
      const d = decodeDirent(it.val);
      if (d === null) throw new CorruptionError('fs items', null, 'structure', `dirent in dir ${dir} of ${it.val.length} bytes`);
      if (bytesEq(d.name, name)) return { d };
      if (it.key.third === U64_MAX) return null;
      k = direntKey(dir, hash, it.key.third + 1n);
    }
  }

  private async addEntry(dirIno: bigint, dir: Inode, name: Uint8Array, ino: bigint, type: number): Promise<void> {
    const pos = dir.next_readdir_pos++;
    const hash = direntNameHash(name);
    const val = encodeDirent({ ino, hash, pos, type, name });
    await this.createItem(direntKey(dirIno, hash, pos), val);
    await this.createItem(readdirKey(dirIno, pos), val);
    await this.createItem(backrefKey(ino, dirIno, pos), val);
    dir.size += BigInt(name.length);
  }

  private async removeEntry(dirIno: bigint, dir: Inode, d: Dirent): Promise<void> {
    await this.deleteItem(direntKey(dirIno, d.hash, d.pos));
    await this.deleteItem(readdirKey(dirIno, d.pos));
    await this.deleteItem(backrefKey(d.ino, dirIno, d.pos));
    dir.size -= BigInt(d.name.length);
  }

  private async dirIsEmpty(ino: bigint): Promise<boolean> {
    return (await this.nextItem(readdirKey(ino, 0n), readdirKey(ino, U64_MAX))) === null;
  }

  /** The parent of a directory (its one backref), null for the root. */
  private async parentOf(dir: bigint): Promise<bigint | null> {
    if (dir === ROOT_INO) return null;
    const it = await this.nextItem(backrefKey(dir, 0n, 0n), backrefKey(dir, U64_MAX, U64_MAX));
    return it === null ? null : it.key.second;
  }

  lookup(dir: bigint, name: Uint8Array): Promise<Attr> {
    return this.reading(async () => {
      if (name.length > NAME_MAX) throw new FsError('ENAMETOOLONG');
      await this.getDir(dir);
      const f = await this.findDirent(dir, name);
      if (f === null) throw new FsError('ENOENT');
      return this.toAttr(f.d.ino, await this.getInode(f.d.ino));
    });
  }

  getattr(ino: bigint): Promise<Attr> {
    return this.reading(async () => this.toAttr(ino, await this.getInode(ino)));
  }

  private makeNode(dir: bigint, name: Uint8Array, mode: number, rdev: number, ctx: Ctx, fill?: (h: TransHold, ino: bigint, i: Inode) => Promise<void>): Promise<Attr> {
    return this.modify(async (h) => {
      checkName(name);
      const type = dtOfMode(mode);
      const di = await this.getDir(dir);
      if ((await this.findDirent(dir, name)) !== null) throw new FsError('EEXIST');
      // A set-group-ID directory gives new inodes its group, and new
      // directories its S_ISGID bit (what the kernel's inode_init_owner does).
      if ((di.mode & S_ISGID) !== 0) {
        ctx = { uid: ctx.uid, gid: di.gid };
        if (type === DT.DIR) mode |= S_ISGID;
      }
      const { ino, i } = await this.newInode(h, mode, rdev, ctx);
      if (fill !== undefined) await fill(h, ino, i);
      await this.addEntry(dir, di, name, ino, type);
      if (type === DT.DIR) di.nlink++;
      di.mtime = di.ctime = i.ctime;
      await this.putInode(h, dir, di);
      if (fill !== undefined) await this.putInode(h, ino, i, true);
      return this.toAttr(ino, i);
    });
  }

  create(dir: bigint, name: Uint8Array, mode: number, ctx: Ctx): Promise<Attr> {
    return this.makeNode(dir, name, (mode & ~S_IFMT) | S_IFREG, 0, ctx);
  }

  mknod(dir: bigint, name: Uint8Array, mode: number, rdev: number, ctx: Ctx): Promise<Attr> {
    if ((mode & S_IFMT) === S_IFDIR || (mode & S_IFMT) === S_IFLNK) return Promise.reject(new FsError('EINVAL', 'mknod of a dir or symlink'));
    return this.makeNode(dir, name, (mode & S_IFMT) === 0 ? mode | S_IFREG : mode, rdev, ctx);
  }

  mkdir(dir: bigint, name: Uint8Array, mode: number, ctx: Ctx): Promise<Attr> {
    return this.makeNode(dir, name, (mode & ~S_IFMT) | S_IFDIR, 0, ctx);
  }

  symlink(dir: bigint, name: Uint8Array, target: Uint8Array, ctx: Ctx): Promise<Attr> {
    if (target.length === 0) return Promise.reject(new FsError('ENOENT', 'empty symlink target'));
    if (target.length + 1 > SYMLINK_MAX) return Promise.reject(new FsError('ENAMETOOLONG', `symlink target of ${target.length} bytes`));
    return this.makeNode(dir, name, S_IFLNK | 0o777, 0, ctx, async (_h, ino, i) => {
      const full = new Uint8Array(target.length + 1);
      full.set(target);
      for (let nr = 0; nr * PART_BYTES < full.length; nr++) {
        await this.createItem(symlinkKey(ino, nr), full.slice(nr * PART_BYTES, (nr + 1) * PART_BYTES));
      }
      i.size = BigInt(full.length);
    });
  }

  readlink(ino: bigint): Promise<Uint8Array> {
    return this.reading(async () => {
      const i = await this.getInode(ino);
      if (!isLnk(i)) throw new FsError('EINVAL', 'not a symlink');
      const chunks: Uint8Array[] = [];
      let got = 0;
      for (let nr = 0; got < Number(i.size); nr++) {
        const v = await this.lookupItem(symlinkKey(ino, nr));
        if (v === null || v.length === 0) throw new CorruptionError('fs items', null, 'structure', `symlink ${ino} item ${nr} missing`);
        chunks.push(v);
        got += v.length;
      }
      const all = Buffer.concat(chunks);
      if (all.length !== Number(i.size) || all[all.length - 1] !== 0) {
        throw new CorruptionError('fs items', null, 'structure', `symlink ${ino} target is not ${i.size} bytes ending in NUL`);
      }
      return new Uint8Array(all.subarray(0, all.length - 1));
    });
  }

  link(ino: bigint, dir: bigint, name: Uint8Array): Promise<Attr> {
    return this.modify(async (h) => {
      checkName(name);
      const di = await this.getDir(dir);
      const i = await this.getInode(ino);
      if (isDir(i)) throw new FsError('EPERM', 'hard link to a directory');
      if ((await this.findDirent(dir, name)) !== null) throw new FsError('EEXIST');
      await this.addEntry(dir, di, name, ino, dtOfMode(i.mode));
      if (i.nlink === 0 && (await this.lookupItem(orphanKey(ino))) !== null) await this.deleteItem(orphanKey(ino));
      i.nlink++;
      const now = this.now();
      i.ctime = now;
      di.mtime = di.ctime = now;
      await this.putInode(h, dir, di);
      await this.putInode(h, ino, i);
      return this.toAttr(ino, i);
    });
  }

  /** Drop one link of `ino` (the entry is already removed). */
  private async unlinkInode(h: TransHold, ino: bigint, now: Timespec): Promise<void> {
    const i = await this.getInode(ino);
    i.ctime = now;
    i.nlink = isDir(i) ? 0 : i.nlink - 1;
    if (i.nlink === 0) await this.dropInode(h, ino, i);
    else await this.putInode(h, ino, i);
  }

  unlink(dir: bigint, name: Uint8Array): Promise<void> {
    return this.modify(async (h) => {
      if (name.length > NAME_MAX) throw new FsError('ENAMETOOLONG');
      const di = await this.getDir(dir);
      const f = await this.findDirent(dir, name);
      if (f === null) throw new FsError('ENOENT');
      if (f.d.type === DT.DIR) throw new FsError('EISDIR');
      await this.removeEntry(dir, di, f.d);
      const now = this.now();
      di.mtime = di.ctime = now;
      await this.putInode(h, dir, di);
      await this.unlinkInode(h, f.d.ino, now);
    }, false);
  }

  rmdir(dir: bigint, name: Uint8Array): Promise<void> {
    return this.modify(async (h) => {
      if (name.length > NAME_MAX) throw new FsError('ENAMETOOLONG');
      const di = await this.getDir(dir);
      const f = await this.findDirent(dir, name);
      if (f === null) throw new FsError('ENOENT');
      if (f.d.type !== DT.DIR) throw new FsError('ENOTDIR');
      if (!(await this.dirIsEmpty(f.d.ino))) throw new FsError('ENOTEMPTY');
      await this.removeEntry(dir, di, f.d);
      const now = this.now();
      di.nlink--;
      di.mtime = di.ctime = now;
      await this.putInode(h, dir, di);
      await this.unlinkInode(h, f.d.ino, now);
    }, false);
  }

  rename(fromDir: bigint, fromName: Uint8Array, toDir: bigint, toName: Uint8Array): Promise<void> {
    return this.modify(async (h) => {
      if (fromName.length > NAME_MAX) throw new FsError('ENAMETOOLONG');
      checkName(toName);
      const fd = await this.getDir(fromDir);
      const td = toDir === fromDir ? fd : await this.getDir(toDir);
      const src = await this.findDirent(fromDir, fromName);
      if (src === null) throw new FsError('ENOENT');
      const srcIsDir = src.d.type === DT.DIR;
      // Never move a directory under itself.
      if (srcIsDir && toDir !== fromDir) {
        for (let p: bigint | null = toDir; p !== null; p = await this.parentOf(p)) {
          if (p === src.d.ino) throw new FsError('EINVAL', 'rename of a directory under itself');
        }
      }
      const dst = await this.findDirent(toDir, toName);
      if (dst !== null && dst.d.ino === src.d.ino) return; // the same inode: nothing to do (POSIX)
      if (dst !== null) {
        const dstIsDir = dst.d.type === DT.DIR;
        if (srcIsDir && !dstIsDir) throw new FsError('ENOTDIR');
        if (!srcIsDir && dstIsDir) throw new FsError('EISDIR');
        if (dstIsDir && !(await this.dirIsEmpty(dst.d.ino))) throw new FsError('ENOTEMPTY');
      }
      const now = this.now();
      if (dst !== null) {
        await this.removeEntry(toDir, td, dst.d);
        if (dst.d.type === DT.DIR) td.nlink--;
        await this.unlinkInode(h, dst.d.ino, now);
      }
      await this.removeEntry(fromDir, fd, src.d);
      await this.addEntry(toDir, td, toName, src.d.ino, src.d.type);
      if (srcIsDir && toDir !== fromDir) {
        fd.nlink--;
        td.nlink++;
      }
      fd.mtime = fd.ctime = now;
      td.mtime = td.ctime = now;
      await this.putInode(h, fromDir, fd);
      if (toDir !== fromDir) await this.putInode(h, toDir, td);
      const si = await this.getInode(src.d.ino);
      si.ctime = now;
      await this.putInode(h, src.d.ino, si);
    });
  }

  readdir(dir: bigint, pos: bigint, max: number): Promise<DirEntry[]> {
    return this.reading(async () => {
      await this.getDir(dir);
      const out: DirEntry[] = [];
      const last = readdirKey(dir, U64_MAX - 1n);
      const k = readdirKey(dir, pos);
      for (const it of await this.items.nextN(k, last, lockFor(k), max)) {
        const d = decodeDirent(it.val);
        if (d === null) throw new CorruptionError('fs items', null, 'structure', `readdir item in dir ${dir} of ${it.val.length} bytes`);
        out.push({ name: d.name, ino: d.ino, type: d.type, pos: it.key.second });
      }
      return out;
    });
  }

  /* ---- attributes ------------------------------------------------------------------------- */

  setattr(ino: bigint, set: SetAttr): Promise<Attr> {
    return this.modify(async (h) => {
      const i = await this.getInode(ino);
      const now = this.now();
      let data = false;
      if (set.size !== undefined) {
        if (isDir(i)) throw new FsError('EISDIR');
        if (!isReg(i)) throw new FsError('EINVAL', 'size of a non-regular file');
        if (set.size < 0n || set.size > U64_MAX / 2n) throw new FsError('EINVAL');
        if (set.size < i.size) await this.truncateBlocks(ino, i, set.size);
        if (set.size !== i.size) {
          i.size = set.size;
          i.data_version++;
          i.mtime = now;
        }
        data = true;
      }
      if (set.mode !== undefined) i.mode = (i.mode & S_IFMT) | (set.mode & ~S_IFMT);
      if (set.uid !== undefined) i.uid = set.uid;
      if (set.gid !== undefined) i.gid = set.gid;
      if (set.atime !== undefined) i.atime = set.atime;
      if (set.mtime !== undefined) i.mtime = set.mtime;
      i.ctime = now;
      await this.putInode(h, ino, i, data);
      return this.toAttr(ino, i);
    });
  }

  /* ---- open files ---------------------------------------------------------------------------- */

  open(ino: bigint): Promise<void> {
    return this.reading(async () => {
      await this.getInode(ino);
      this.opens.set(ino, (this.opens.get(ino) ?? 0) + 1);
    });
  }

  release(ino: bigint): Promise<void> {
    return this.mutex.run(async () => {
      const n = this.opens.get(ino) ?? 0;
      if (n === 0) throw new FsError('EBADF', `release of inode ${ino} that is not open`);
      if (n > 1) {
        this.opens.set(ino, n - 1);
        return;
      }
      this.opens.delete(ino);
      if (this.destroyed) return;
      const v = await this.lookupItem(inodeKey(ino));
      if (v === null || decodeInode(v).nlink !== 0) return;
      const h = await this.d.trans.hold();
      try {
        await this.deleteInode(h, ino, decodeInode(v));
      } finally {
        this.d.trans.release(h);
      }
    });
  }

  /* ---- data ------------------------------------------------------------------------------------ */

  private async getReg(ino: bigint): Promise<Inode> {
    const i = await this.getInode(ino);
    if (isDir(i)) throw new FsError('EISDIR');
    if (!isReg(i)) throw new FsError('EINVAL', 'not a regular file');
    return i;
  }

  private async nextExtent(ino: bigint, lblk: bigint): Promise<{ start: bigint; len: bigint; blkno: bigint; flags: number } | null> {
    const it = await this.nextItem(extentKey(ino, lblk, 0n), extentKey(ino, U64_MAX, U64_MAX));
    if (it === null) return null;
    if (it.val.length !== 16 || it.key.third === 0n || it.key.third - 1n > it.key.second) {
      throw new CorruptionError('fs items', null, 'structure', `data extent of inode ${ino} at ${it.key.second}`);
    }
    return { start: it.key.second - it.key.third + 1n, len: it.key.third, blkno: getU64(it.val, 0), flags: getU8(it.val, 8) };
  }

  /** Mapped and unmapped runs covering [lblk, lblk+count). */
  private async mapRange(ino: bigint, lblk: bigint, count: bigint): Promise<Segment[]> {
    const out: Segment[] = [];
    const end = lblk + count;
    let cur = lblk;
    while (cur < end) {
      const e = await this.nextExtent(ino, cur);
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

  private extentVal(blkno: bigint, flags = 0): Uint8Array {
    const v = new Uint8Array(16);
    setU64(v, 0, blkno);
    v[8] = flags;
    return v;
  }

  /** Insert a mapped extent, merging with the one that ends just before it. */
  private async insertExtent(ino: bigint, lblk: bigint, len: bigint, blkno: bigint): Promise<void> {
    if (lblk > 0n) {
      const prev = await this.nextExtent(ino, lblk - 1n);
      if (prev !== null && prev.start + prev.len === lblk && prev.flags === 0 && prev.blkno !== 0n && prev.blkno + prev.len === blkno) {
        await this.deleteItem(extentKey(ino, lblk - 1n, prev.len));
        lblk = prev.start;
        len += prev.len;
        blkno = prev.blkno;
      }
    }
    await this.createItem(extentKey(ino, lblk + len - 1n, len), this.extentVal(blkno));
  }

  /** Free every block at or past the byte offset `size`; zero the tail of a partial last block. */
  private async truncateBlocks(ino: bigint, i: Inode, size: bigint): Promise<void> {
    const keep = (size + BLOCK - 1n) / BLOCK; // blocks [0, keep) stay
    for (;;) {
      const e = await this.nextExtent(ino, keep);
      if (e === null) break;
      await this.deleteItem(extentKey(ino, e.start + e.len - 1n, e.len));
      let freeStart = e.start;
      if (e.start < keep) {
        const headLen = keep - e.start;
        await this.createItem(extentKey(ino, keep - 1n, headLen), this.extentVal(e.blkno, e.flags));
        freeStart = keep;
      }
      const n = e.start + e.len - freeStart;
      if (e.blkno !== 0n) {
        await this.freeData(e.blkno + (freeStart - e.start), n);
        if ((e.flags & EXTENT_FLAG_UNWRITTEN) === 0) i.online_blocks -= n;
      }
    }
    if (size % BLOCK !== 0n) {
      const [seg] = await this.mapRange(ino, size / BLOCK, 1n);
      if (seg !== undefined && seg.pblk !== 0n) {
        const b = await this.d.dataDev.read(seg.pblk * BLOCK, SM_BLOCK_SIZE);
        b.fill(0, Number(size % BLOCK));
        await this.d.dataDev.write(seg.pblk * BLOCK, b);
      }
    }
  }

  private async freeData(blkno: bigint, len: bigint): Promise<void> {
    const fw = this.d.trans.forest;
    assert(fw !== null && !fw.isClosed, 'data free outside an open transaction');
    await extentFree(fw.alloc, fw.lt.data_freed, blkno, len, { bounds: this.dataBounds, source: 'data_freed' });
    this.counters.blocksFreed += Number(len);
  }

  private async allocData(count: bigint): Promise<{ start: bigint; len: bigint }> {
    const fw = this.d.trans.forest;
    assert(fw !== null && !fw.isClosed, 'data allocation outside an open transaction');
    const e = await extentAlloc(fw.alloc, fw.lt.data_avail, count, { min: 1n, bounds: this.dataBounds, source: 'data_avail' });
    this.counters.blocksAllocated += Number(e.len);
    return e;
  }

  /**
   * Reads share the fs lock with other reads (the kernel sends readahead
   * requests in parallel) and hold it across the device reads: a truncate
   * or unlink, which could free the mapped blocks for reuse, waits.
   */
  read(ino: bigint, off: bigint, len: number): Promise<Uint8Array> {
    return this.reading(async () => {
      const i = await this.getReg(ino);
      if (off < 0n || len < 0) throw new FsError('EINVAL');
      if (off >= i.size || len === 0) return new Uint8Array(0);
      const end = off + BigInt(len) < i.size ? off + BigInt(len) : i.size;
      const first = off / BLOCK;
      const last = (end + BLOCK - 1n) / BLOCK;
      const at = Number(off - first * BLOCK);
      const segs = await this.mapRange(ino, first, last - first);
      const one = segs.length === 1 ? segs[0]! : null;
      if (one !== null && one.pblk !== 0n) {
        // One mapped extent (the sequential case): the device's buffer as is.
        return (await this.d.dataDev.read(one.pblk * BLOCK, Number(one.len * BLOCK))).subarray(at, at + Number(end - off));
      }
      const buf = new Uint8Array(Number((last - first) * BLOCK));
      for (const s of segs) {
        if (s.pblk === 0n) continue;
        const b = await this.d.dataDev.read(s.pblk * BLOCK, Number(s.len * BLOCK));
        buf.set(b, Number((s.lblk - first) * BLOCK));
      }
      return buf.subarray(at, at + Number(end - off));
    });
  }

  write(ino: bigint, off: bigint, data: Uint8Array): Promise<number> {
    return this.modify(async (h) => {
      const i = await this.getReg(ino);
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
      const segs = await this.mapRange(ino, first, last - first);
      // Partial edge blocks that are mapped: read what the write keeps.
      const edges = new Set<bigint>();
      if (off % BLOCK !== 0n) edges.add(first);
      if (end % BLOCK !== 0n) edges.add(last - 1n);
      for (const b of edges) {
        const s = segs.find((x) => x.lblk <= b && b < x.lblk + x.len)!;
        if (s.pblk === 0n) continue;
        buf.set(await this.d.dataDev.read((s.pblk + (b - s.lblk)) * BLOCK, SM_BLOCK_SIZE), Number((b - first) * BLOCK));
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
            await this.d.dataDev.write(s.pblk * BLOCK, slice(s.lblk, s.len));
            done = s.lblk + s.len;
            continue;
          }
          let cur = s.lblk;
          while (cur < s.lblk + s.len) {
            const e = await this.allocData(s.lblk + s.len - cur);
            await this.d.dataDev.write(e.start * BLOCK, slice(cur, e.len));
            await this.insertExtent(ino, cur, e.len, e.start);
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
        i.mtime = i.ctime = this.now();
      }
      await this.putInode(h, ino, i, written > 0n);
      if (failure !== null && !(failure instanceof FsError && failure.code === 'ENOSPC' && written > 0n)) throw failure;
      return Number(written);
    });
  }

  /* ---- xattrs ------------------------------------------------------------------------------ */

  private checkXattrName(name: Uint8Array): void {
    if (name.length === 0 || name.length > XATTR_NAME_MAX) throw new FsError('ERANGE', `xattr name of ${name.length} bytes`);
    const p = XATTR_PREFIXES.find((x) => startsWith(name, x));
    if (p === undefined) throw new FsError('EOPNOTSUPP', 'unknown xattr namespace');
    if (p === 'scoutfs.') {
      const t = xattrTags(name);
      if (!(t.hide || t.srch || t.totl) || t.rest === 0) throw new FsError('EINVAL', 'scoutfs. xattr without a tag');
      if (t.totl && totlNameKey(name) === null) throw new FsError('EINVAL', '.totl. xattr name does not end in three numbers');
    }
  }

  private async findXattr(ino: bigint, name: Uint8Array): Promise<FoundXattr | null> {
    const hash = xattrNameHash(name);
    const last = xattrKey(ino, hash, U64_MAX, 0xff);
    let k = xattrKey(ino, hash, 0n, 0);
    for (;;) {
      const it = await this.nextItem(k, last);
      if (it === null) return null;
      const id = it.key.third;
      if (it.key.fourth === 0) {
        const v = it.val;
        if (v.length < 8) throw new CorruptionError('fs items', null, 'structure', `xattr part of inode ${ino} of ${v.length} bytes`);
        const valLen = getU16(v, 0);
        const nameLen = getU8(v, 2);
        if (bytesEq(v.subarray(8, 8 + nameLen), name)) {
          return { id, hash, valLen, nameLen, parts: Math.ceil((8 + nameLen + valLen) / PART_BYTES) };
        }
      }
      if (id === U64_MAX) return null;
      k = xattrKey(ino, hash, id + 1n, 0);
    }
  }

  private async readXattr(ino: bigint, x: FoundXattr): Promise<Uint8Array> {
    const chunks: Uint8Array[] = [];
    for (let p = 0; p < x.parts; p++) {
      const v = await this.lookupItem(xattrKey(ino, x.hash, x.id, p));
      if (v === null) throw new CorruptionError('fs items', null, 'structure', `xattr ${x.id} of inode ${ino} misses part ${p}`);
      chunks.push(v);
    }
    const all = Buffer.concat(chunks);
    if (all.length !== 8 + x.nameLen + x.valLen) throw new CorruptionError('fs items', null, 'structure', `xattr ${x.id} of inode ${ino} has ${all.length} bytes`);
    return new Uint8Array(all.subarray(8 + x.nameLen));
  }

  private async deleteXattrParts(ino: bigint, x: FoundXattr): Promise<void> {
    for (let p = 0; p < x.parts; p++) await this.deleteItem(xattrKey(ino, x.hash, x.id, p));
  }

  getxattr(ino: bigint, name: Uint8Array): Promise<Uint8Array> {
    return this.reading(async () => {
      this.checkXattrName(name);
      await this.getInode(ino);
      const x = await this.findXattr(ino, name);
      if (x === null) throw new FsError('ENODATA');
      return this.readXattr(ino, x);
    });
  }

  setxattr(ino: bigint, name: Uint8Array, value: Uint8Array, flags: { create?: boolean; replace?: boolean }): Promise<void> {
    return this.modify(async (h) => {
      this.checkXattrName(name);
      if (value.length > XATTR_VALUE_MAX) throw new FsError('E2BIG', `xattr value of ${value.length} bytes`);
      const i = await this.getInode(ino);
      const x = await this.findXattr(ino, name);
      if (x !== null && flags.create === true) throw new FsError('EEXIST');
      if (x === null && flags.replace === true) throw new FsError('ENODATA');
      const totl = xattrTags(name).totl;
      if (totl && parseTotlNumber(Buffer.from(value).toString('latin1')) === null) {
        throw new FsError('EINVAL', '.totl. xattr value is not a number');
      }
      if (totl) await this.logTotl(ino, name, x === null ? null : await this.readXattr(ino, x), value);
      let id: bigint;
      if (x !== null) {
        // Replacing a value logs nothing to srch (8.1).
        await this.deleteXattrParts(ino, x);
        id = x.id;
      } else {
        id = i.next_xattr_id++;
        await this.logSrch(h, ino, name, id);
      }
      const all = new Uint8Array(8 + name.length + value.length);
      all[0] = value.length & 0xff;
      all[1] = value.length >> 8;
      all[2] = name.length;
      all.set(name, 8);
      all.set(value, 8 + name.length);
      const hash = xattrNameHash(name);
      for (let p = 0; p * PART_BYTES < all.length; p++) {
        await this.createItem(xattrKey(ino, hash, id, p), all.slice(p * PART_BYTES, (p + 1) * PART_BYTES));
      }
      i.ctime = this.now();
      await this.putInode(h, ino, i);
    });
  }

  listxattr(ino: bigint): Promise<Uint8Array[]> {
    return this.reading(async () => {
      await this.getInode(ino);
      const out: Uint8Array[] = [];
      const last = key(ZONE.FS, ino, FS_TYPE.XATTR, U64_MAX, U64_MAX, 0xff);
      let k = key(ZONE.FS, ino, FS_TYPE.XATTR);
      for (;;) {
        const it = await this.nextItem(k, last);
        if (it === null) break;
        if (it.key.fourth === 0 && it.val.length >= 8) {
          const name = it.val.slice(8, 8 + getU8(it.val, 2));
          if (!xattrTags(name).hide) out.push(name);
        }
        // skip the other parts of this xattr
        if (it.key.third === U64_MAX) {
          if (it.key.second >= 0xffffffffn) break;
          k = key(ZONE.FS, ino, FS_TYPE.XATTR, it.key.second + 1n);
        } else {
          k = key(ZONE.FS, ino, FS_TYPE.XATTR, it.key.second, it.key.third + 1n);
        }
      }
      return out;
    });
  }

  removexattr(ino: bigint, name: Uint8Array): Promise<void> {
    return this.modify(async (h) => {
      this.checkXattrName(name);
      const i = await this.getInode(ino);
      const x = await this.findXattr(ino, name);
      if (x === null) throw new FsError('ENODATA');
      if (xattrTags(name).totl) await this.logTotl(ino, name, await this.readXattr(ino, x), null);
      await this.deleteXattrParts(ino, x);
      await this.logSrch(h, ino, name, x.id);
      i.ctime = this.now();
      await this.putInode(h, ino, i);
    }, false);
  }

  /* ---- whole filesystem ------------------------------------------------------------------------ */

  statfs(): Promise<StatFs> {
    return this.reading(async () => {
      const sp = this.d.serverSpace();
      const lt = this.d.trans.forest?.lt ?? null;
      const dataFree = sp.dataFree + (lt?.data_avail.total_len ?? 0n);
      const metaFree = sp.metaFree;
      const totalDataBlocks = sp.totalData - DATA_DEV_START_BLKNO;
      const freeInodes = U64_MAX - sp.inodeCount;
      return {
        blockSize: SM_BLOCK_SIZE,
        totalBlocks: totalDataBlocks,
        freeBlocks: dataFree,
        totalInodes: U64_MAX,
        freeInodes,
        nameMax: NAME_MAX,
        totalMetaBlocks: sp.totalMeta,
        freeMetaBlocks: metaFree,
        totalDataBlocks,
        freeDataBlocks: dataFree,
      };
    });
  }

  async sync(): Promise<void> {
    this.assertLive();
    await this.d.trans.sync();
  }

  async committedSeq(): Promise<bigint> {
    return this.d.lastSeq();
  }

  async walkInodes(index: SeqIndex, first: IndexEntry, last: IndexEntry, max: number): Promise<IndexEntry[]> {
    const type = index === 'meta_seq' ? INDEX_TYPE.META_SEQ : index === 'data_seq' ? INDEX_TYPE.DATA_SEQ : -1;
    if (type < 0) throw new FsError('EINVAL', `index ${String(index)}`);
    // A READ index lock invalidates WRITE_ONLY index locks, which commits the
    // transaction that changed the index (9.2 step 2): without it an inode
    // touched in the open transaction would vanish from the walk (its old
    // item deleted in the cache, its new one above the stable seq).
    if (this.d.items.hasDirty(indexKey(type, 0n, 0n), indexKey(type, U64_MAX, U64_MAX))) await this.d.trans.sync();
    const stable = await this.d.lastSeq();
    let lastKey = indexKey(type, last.major, last.ino);
    if (last.major > stable) lastKey = indexKey(type, stable, U64_MAX);
    return this.reading(async () => {
      const out: IndexEntry[] = [];
      let k = indexKey(type, first.major, first.ino);
      while (out.length < max && (k.second < lastKey.second || (k.second === lastKey.second && k.third <= lastKey.third))) {
        const it = await this.nextItem(k, lastKey);
        if (it !== null) {
          out.push({ major: it.key.second, ino: it.key.third });
          if (it.key.third === U64_MAX) {
            if (it.key.second === U64_MAX) break;
            k = indexKey(type, it.key.second + 1n, 0n);
          } else {
            k = indexKey(type, it.key.second, it.key.third + 1n);
          }
          continue;
        }
        // This lock group is exhausted: on to the next one.
        const end = lockRangeOf(k).end;
        if (end.second >= lastKey.second || end.second === U64_MAX) break;
        k = indexKey(type, end.second + 1n, 0n);
      }
      return out;
    });
  }
}
