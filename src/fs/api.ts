/*
 * The filesystem interface: inode-based operations, like a kernel VFS, that
 * the FUSE adapter (src/fuse/) and the control channel call.  Everything
 * below names inodes by number (the scoutfs ino; st_ino for users) and
 * names by raw bytes (no encoding assumed).  Errors are FsError with errno
 * names (ENOENT, EEXIST, ENOTEMPTY, ENOTDIR, EISDIR, ENAMETOOLONG, EINVAL,
 * ELOOP, ERANGE, E2BIG, ENODATA, ENOSPC, EIO...); the FUSE adapter is the
 * one place that turns them into numbers for the kernel.
 *
 * Caller context (uid/gid of the requesting process) comes with creating
 * calls; permission checks are the kernel's (default_permissions).
 *
 * Waiting for offline data (PROTOCOL.md 10.4): read, write and a size
 * change through setattr wait while their range holds offline blocks,
 * until an archive agent stages them (stageData) or fails the wait
 * (dataWaitErr).  The wait holds no lock, so everything else goes on.
 * `signal` cancels the wait with EINTR: the FUSE transport aborts it when
 * the kernel interrupts the request or the requesting process died.
 */
import type { Timespec } from '../format/common.js';

export interface Attr {
  ino: bigint;
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  rdev: number;
  size: bigint;
  /** 512-byte sectors: (online + offline blocks) x 8. */
  blocks: bigint;
  atime: Timespec;
  mtime: Timespec;
  ctime: Timespec;
  crtime: Timespec;
  meta_seq: bigint;
  data_seq: bigint;
  data_version: bigint;
  online_blocks: bigint;
  offline_blocks: bigint;
}

export interface DirEntry {
  name: Uint8Array;
  ino: bigint;
  /** scoutfs dirent type (DT in src/format/items.ts), not Linux DT_. */
  type: number;
  /** readdir position; the next call continues after it. */
  pos: bigint;
}

export interface Ctx {
  uid: number;
  gid: number;
}

export interface SetAttr {
  mode?: number;
  uid?: number;
  gid?: number;
  size?: bigint;
  atime?: Timespec;
  mtime?: Timespec;
}

export interface StatFs {
  blockSize: number;
  totalBlocks: bigint;
  freeBlocks: bigint;
  totalInodes: bigint;
  freeInodes: bigint;
  nameMax: number;
  /** Metadata (64 KiB) blocks, for `scoutfs df`. */
  totalMetaBlocks: bigint;
  freeMetaBlocks: bigint;
  totalDataBlocks: bigint;
  freeDataBlocks: bigint;
}

export type SeqIndex = 'meta_seq' | 'data_seq';

export interface IndexEntry {
  major: bigint;
  ino: bigint;
}

/** Cancels a wait for offline data (EINTR). */
export interface WaitOpts {
  signal?: AbortSignal;
  /**
   * Fail with this instead of waiting, should the range be offline (the
   * FUSE transport: the kernel's retry of a read that data-wait-err just
   * failed must see that error, not wait again).
   */
  failInstead?: Error;
}

/** One block some task waits for (DATA_WAITING). ops: READ 1, WRITE 2, CHANGE_SIZE 4. */
export interface DataWaitingEntry {
  ino: bigint;
  iblock: bigint;
  ops: number;
}

/** SETATTR_MORE: restore a file's scoutfs attributes.  0 / false / undefined = leave. */
export interface SetattrMoreArgs {
  dataVersion: bigint;
  size: bigint;
  offline: boolean;
  ctime?: Timespec;
  crtime?: Timespec;
}

/** MOVE_BLOCKS: whole-block extents of `fromIno` become `toIno`'s. */
export interface MoveBlocksArgs {
  fromIno: bigint;
  fromOff: bigint;
  len: bigint;
  toIno: bigint;
  toOff: bigint;
  /** Into an offline range of toIno, keeping its data_version (which must equal dataVersion). */
  stage: boolean;
  dataVersion: bigint;
}

/** DATA_WAIT_ERR: fail the waiters of ino on [offset, offset+count) blocking `op` with errno. */
export interface DataWaitErrArgs {
  ino: bigint;
  dataVersion: bigint;
  offset: bigint;
  count: bigint;
  op: number;
  /** Positive errno, 1..4095. */
  errno: number;
}

export interface Fs {
  readonly rootIno: bigint;
  lookup(dir: bigint, name: Uint8Array): Promise<Attr>;
  getattr(ino: bigint): Promise<Attr>;
  /** A size change waits while blocks below the old size are offline. */
  setattr(ino: bigint, set: SetAttr, opts?: WaitOpts): Promise<Attr>;
  create(dir: bigint, name: Uint8Array, mode: number, ctx: Ctx): Promise<Attr>;
  mknod(dir: bigint, name: Uint8Array, mode: number, rdev: number, ctx: Ctx): Promise<Attr>;
  mkdir(dir: bigint, name: Uint8Array, mode: number, ctx: Ctx): Promise<Attr>;
  unlink(dir: bigint, name: Uint8Array): Promise<void>;
  rmdir(dir: bigint, name: Uint8Array): Promise<void>;
  rename(fromDir: bigint, fromName: Uint8Array, toDir: bigint, toName: Uint8Array): Promise<void>;
  link(ino: bigint, dir: bigint, name: Uint8Array): Promise<Attr>;
  symlink(dir: bigint, name: Uint8Array, target: Uint8Array, ctx: Ctx): Promise<Attr>;
  readlink(ino: bigint): Promise<Uint8Array>;
  /** Count an open file handle (an unlinked open file lives until the last release). */
  open(ino: bigint): Promise<void>;
  release(ino: bigint): Promise<void>;
  read(ino: bigint, off: bigint, len: number, opts?: WaitOpts): Promise<Uint8Array>;
  write(ino: bigint, off: bigint, data: Uint8Array, opts?: WaitOpts): Promise<number>;
  /** Entries with pos >= `pos`, at most `max`, in position order. */
  readdir(dir: bigint, pos: bigint, max: number): Promise<DirEntry[]>;
  getxattr(ino: bigint, name: Uint8Array): Promise<Uint8Array>;
  setxattr(ino: bigint, name: Uint8Array, value: Uint8Array, flags: { create?: boolean; replace?: boolean }): Promise<void>;
  listxattr(ino: bigint): Promise<Uint8Array[]>;
  removexattr(ino: bigint, name: Uint8Array): Promise<void>;
  statfs(): Promise<StatFs>;
  /** Commit the whole filesystem (scoutfs fsync and sync are filesystem-wide). */
  sync(): Promise<void>;
  /** Index entries in [first, last] with major <= the stable seq (PROTOCOL.md 9.2). */
  walkInodes(index: SeqIndex, first: IndexEntry, last: IndexEntry, max: number): Promise<IndexEntry[]>;
  /** The stable (committed) seq: GET_LAST_SEQ. */
  committedSeq(): Promise<bigint>;
  /** rename(2) with RENAME_NOREPLACE: an existing target is EEXIST. */
  renameNoreplace(fromDir: bigint, fromName: Uint8Array, toDir: bigint, toName: Uint8Array): Promise<void>;
  /** O_TMPFILE: an open regular file with no name, kept by an orphan item until its last release. */
  tmpfile(dir: bigint, mode: number, ctx: Ctx): Promise<Attr>;
  /** The parent directory of `dir` (null for the root). */
  parentOf(dir: bigint): Promise<bigint | null>;
  /** fallocate(2): modes 0 and KEEP_SIZE (1); others EOPNOTSUPP. */
  fallocate(ino: bigint, off: bigint, len: bigint, mode: number): Promise<void>;
  /** lseek(2) SEEK_DATA (3) / SEEK_HOLE (4); ENXIO at or past the size. */
  seek(ino: bigint, off: bigint, whence: number): Promise<bigint>;

  /* ---- the archive interface (PROTOCOL.md 9.3; src/fs/archive.ts) ---- */

  /** RELEASE: blocks of [off, off+len) (4 KiB aligned) become offline; ESTALE unless dataVersion matches. */
  releaseData(ino: bigint, off: bigint, len: bigint, dataVersion: bigint): Promise<void>;
  /** STAGE: archived bytes into the offline blocks at off; ESTALE unless dataVersion matches.  Wakes waiters. */
  stageData(ino: bigint, dataVersion: bigint, off: bigint, data: Uint8Array): Promise<void>;
  setattrMore(ino: bigint, args: SetattrMoreArgs): Promise<Attr>;
  moveBlocks(args: MoveBlocksArgs): Promise<void>;
  /** DATA_WAITING: blocks tasks wait for after (afterIno, afterIblock), sorted. */
  dataWaiting(afterIno: bigint, afterIblock: bigint, max: number): Promise<DataWaitingEntry[]>;
  /** DATA_WAIT_ERR: the number of waiters failed. */
  dataWaitErr(args: DataWaitErrArgs): Promise<number>;
  /** INO_PATH: every path of the inode, "/"-separated from the root. */
  inoPaths(ino: bigint): Promise<Uint8Array[]>;
  /** LISTXATTR_HIDDEN: the `scoutfs.hide.` names listxattr leaves out. */
  listHiddenXattrs(ino: bigint): Promise<Uint8Array[]>;
  /** Unmounting: every data wait fails ESHUTDOWN now and later. */
  shutdownDataWaits(): void;
}
