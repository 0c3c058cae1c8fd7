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

export interface Fs {
  readonly rootIno: bigint;
  lookup(dir: bigint, name: Uint8Array): Promise<Attr>;
  getattr(ino: bigint): Promise<Attr>;
  setattr(ino: bigint, set: SetAttr): Promise<Attr>;
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
  read(ino: bigint, off: bigint, len: number): Promise<Uint8Array>;
  write(ino: bigint, off: bigint, data: Uint8Array): Promise<number>;
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
}
