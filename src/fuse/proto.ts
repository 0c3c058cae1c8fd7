/*
 * src/fuse/proto.ts: the FUSE kernel protocol as bytes, for the /dev/fuse
 * transport (session.ts).  Opcodes, INIT flags, and every request and reply
 * struct the filesystem uses, as frozen layout tables (src/format/layout.ts
 * asserts at load that the fields sum to the declared size), following
 * linux/fuse.h of protocol 7.38 (/usr/include/linux/fuse.h on this machine).
 *
 *   request:  fuse_in_header (40 bytes) | op struct | names / data
 *   reply:    fuse_out_header (16 bytes) | op struct | data
 *   notify:   fuse_out_header with unique 0 and error = notify code | struct
 *
 * Versions.  We speak 7.38 (OUR_MINOR) and accept a kernel from 7.23
 * (MIN_KERNEL_MINOR) up: from 7.23 on, every struct we use has its current
 * size, except two that depend on what INIT negotiated, not on the minor:
 * fuse_setxattr_in is 8 bytes unless FUSE_SETXATTR_EXT was granted (we
 * never ask for it), and fuse_in_header.total_extlen is nonzero only with
 * FUSE_SECURITY_CTX or supplementary groups (never asked either; a request
 * that carries extensions anyway has them cut off its end before parsing).
 * The INIT reply is the full 64 bytes from 7.23 on.  A kernel older than
 * 7.23 or with another major gets EPROTO for INIT (the mount then fails).
 * A newer kernel (this one offers 7.45) uses our minor for everything it
 * sends us, which is what makes a fixed table correct.
 *
 * Byte access uses Node Buffer's little-endian accessors at offsets taken
 * from the tables (no DataView here).  u64 node ids and offsets are bigint;
 * sizes and counts are numbers.  Times are s64 seconds + u32 nanoseconds on
 * the wire even where the struct says uint64_t (the kernel reads them
 * signed), so they are read and written with the BigInt64 accessors and
 * pre-epoch times survive.
 *
 * Decoding is defensive: the kernel is trusted, but a short or malformed
 * message must become an EIO reply and a log line (session.ts), never an
 * exception that escapes or a read past the message.  So every decoder
 * checks the length first and throws ProtoError, which the session turns
 * into EIO.
 */
import { layout, type Layout } from '../format/layout.js';

export const KERNEL_MAJOR = 7;
export const OUR_MINOR = 38;
export const MIN_KERNEL_MINOR = 23;
export const ROOT_NODEID = 1n;
/** The kernel refuses a read buffer smaller than this. */
export const MIN_READ_BUFFER = 8192;

export const OP = {
  LOOKUP: 1, FORGET: 2, GETATTR: 3, SETATTR: 4, READLINK: 5, SYMLINK: 6, MKNOD: 8, MKDIR: 9,
  UNLINK: 10, RMDIR: 11, RENAME: 12, LINK: 13, OPEN: 14, READ: 15, WRITE: 16, STATFS: 17,
  RELEASE: 18, FSYNC: 20, SETXATTR: 21, GETXATTR: 22, LISTXATTR: 23, REMOVEXATTR: 24, FLUSH: 25,
  INIT: 26, OPENDIR: 27, READDIR: 28, RELEASEDIR: 29, FSYNCDIR: 30, GETLK: 31, SETLK: 32, SETLKW: 33,
  ACCESS: 34, CREATE: 35, INTERRUPT: 36, BMAP: 37, DESTROY: 38, IOCTL: 39, POLL: 40,
  NOTIFY_REPLY: 41, BATCH_FORGET: 42, FALLOCATE: 43, READDIRPLUS: 44, RENAME2: 45, LSEEK: 46,
  COPY_FILE_RANGE: 47, SETUPMAPPING: 48, REMOVEMAPPING: 49, SYNCFS: 50, TMPFILE: 51, STATX: 52,
} as const;

/** Opcode -> name, for log lines. */
export const OP_NAME: ReadonlyMap<number, string> = new Map(Object.entries(OP).map(([k, v]) => [v, k]));

export const NOTIFY = { POLL: 1, INVAL_INODE: 2, INVAL_ENTRY: 3, STORE: 4, RETRIEVE: 5, DELETE: 6 } as const;

/** INIT flags (fuse_init_in.flags / fuse_init_out.flags; bits 32+ go in flags2). */
export const INIT = {
  ASYNC_READ: 1 << 0, POSIX_LOCKS: 1 << 1, ATOMIC_O_TRUNC: 1 << 3, EXPORT_SUPPORT: 1 << 4,
  BIG_WRITES: 1 << 5, DONT_MASK: 1 << 6, FLOCK_LOCKS: 1 << 10, HAS_IOCTL_DIR: 1 << 11,
  AUTO_INVAL_DATA: 1 << 12, DO_READDIRPLUS: 1 << 13, READDIRPLUS_AUTO: 1 << 14, ASYNC_DIO: 1 << 15,
  WRITEBACK_CACHE: 1 << 16, NO_OPEN_SUPPORT: 1 << 17, PARALLEL_DIROPS: 1 << 18, HANDLE_KILLPRIV: 1 << 19,
  POSIX_ACL: 1 << 20, ABORT_ERROR: 1 << 21, MAX_PAGES: 1 << 22, CACHE_SYMLINKS: 1 << 23,
  NO_OPENDIR_SUPPORT: 1 << 24, EXPLICIT_INVAL_DATA: 1 << 25, SETXATTR_EXT: 1 << 29, INIT_EXT: 1 << 30,
} as const;

export const FATTR = {
  MODE: 1 << 0, UID: 1 << 1, GID: 1 << 2, SIZE: 1 << 3, ATIME: 1 << 4, MTIME: 1 << 5, FH: 1 << 6,
  ATIME_NOW: 1 << 7, MTIME_NOW: 1 << 8, LOCKOWNER: 1 << 9, CTIME: 1 << 10, KILL_SUIDGID: 1 << 11,
} as const;

export const FOPEN = { DIRECT_IO: 1 << 0, KEEP_CACHE: 1 << 1, NONSEEKABLE: 1 << 2, CACHE_DIR: 1 << 3, NOFLUSH: 1 << 5 } as const;

export const IOCTL_FLAG = { COMPAT: 1 << 0, UNRESTRICTED: 1 << 1, RETRY: 1 << 2, DIR: 1 << 4 } as const;

/** renameat2 flags. */
export const RENAME = { NOREPLACE: 1, EXCHANGE: 2, WHITEOUT: 4 } as const;
/** fallocate modes. */
export const FALLOC = { KEEP_SIZE: 1, PUNCH_HOLE: 2 } as const;
export const SEEK = { DATA: 3, HOLE: 4 } as const;
/** Linux DT_ values for fuse_dirent.type. */
export const LINUX_DT = { UNKNOWN: 0, FIFO: 1, CHR: 2, DIR: 4, BLK: 6, REG: 8, LNK: 10, SOCK: 12 } as const;

/* ---- layouts ------------------------------------------------------------------------- */

export const IN_HEADER = layout('fuse_in_header', 40, [
  ['len', 4], ['opcode', 4], ['unique', 8], ['nodeid', 8], ['uid', 4], ['gid', 4], ['pid', 4],
  ['total_extlen', 2], ['padding', 2],
]);
export const OUT_HEADER = layout('fuse_out_header', 16, [['len', 4], ['error', 4], ['unique', 8]]);

export const ATTR = layout('fuse_attr', 88, [
  ['ino', 8], ['size', 8], ['blocks', 8], ['atime', 8], ['mtime', 8], ['ctime', 8],
  ['atimensec', 4], ['mtimensec', 4], ['ctimensec', 4], ['mode', 4], ['nlink', 4], ['uid', 4], ['gid', 4],
  ['rdev', 4], ['blksize', 4], ['flags', 4],
]);
export const ENTRY_OUT = layout('fuse_entry_out', 128, [
  ['nodeid', 8], ['generation', 8], ['entry_valid', 8], ['attr_valid', 8],
  ['entry_valid_nsec', 4], ['attr_valid_nsec', 4], ['attr', ATTR],
]);
export const ATTR_OUT = layout('fuse_attr_out', 104, [['attr_valid', 8], ['attr_valid_nsec', 4], ['dummy', 4], ['attr', ATTR]]);
export const INIT_IN = layout('fuse_init_in', 64, [
  ['major', 4], ['minor', 4], ['max_readahead', 4], ['flags', 4], ['flags2', 4], ['unused', 4, 11],
]);
/** fuse_init_in before 7.36 (no flags2). */
export const INIT_IN_COMPAT_SIZE = 16;
export const INIT_OUT = layout('fuse_init_out', 64, [
  ['major', 4], ['minor', 4], ['max_readahead', 4], ['flags', 4], ['max_background', 2],
  ['congestion_threshold', 2], ['max_write', 4], ['time_gran', 4], ['max_pages', 2],
  ['map_alignment', 2], ['flags2', 4], ['unused', 4, 7],
]);
export const FORGET_IN = layout('fuse_forget_in', 8, [['nlookup', 8]]);
export const FORGET_ONE = layout('fuse_forget_one', 16, [['nodeid', 8], ['nlookup', 8]]);
export const BATCH_FORGET_IN = layout('fuse_batch_forget_in', 8, [['count', 4], ['dummy', 4]]);
export const GETATTR_IN = layout('fuse_getattr_in', 16, [['getattr_flags', 4], ['dummy', 4], ['fh', 8]]);
export const SETATTR_IN = layout('fuse_setattr_in', 88, [
  ['valid', 4], ['padding', 4], ['fh', 8], ['size', 8], ['lock_owner', 8], ['atime', 8], ['mtime', 8],
  ['ctime', 8], ['atimensec', 4], ['mtimensec', 4], ['ctimensec', 4], ['mode', 4], ['unused4', 4],
  ['uid', 4], ['gid', 4], ['unused5', 4],
]);
export const MKNOD_IN = layout('fuse_mknod_in', 16, [['mode', 4], ['rdev', 4], ['umask', 4], ['padding', 4]]);
export const MKDIR_IN = layout('fuse_mkdir_in', 8, [['mode', 4], ['umask', 4]]);
export const RENAME_IN = layout('fuse_rename_in', 8, [['newdir', 8]]);
export const RENAME2_IN = layout('fuse_rename2_in', 16, [['newdir', 8], ['flags', 4], ['padding', 4]]);
export const LINK_IN = layout('fuse_link_in', 8, [['oldnodeid', 8]]);
export const OPEN_IN = layout('fuse_open_in', 8, [['flags', 4], ['open_flags', 4]]);
export const CREATE_IN = layout('fuse_create_in', 16, [['flags', 4], ['mode', 4], ['umask', 4], ['open_flags', 4]]);
export const OPEN_OUT = layout('fuse_open_out', 16, [['fh', 8], ['open_flags', 4], ['padding', 4]]);
export const RELEASE_IN = layout('fuse_release_in', 24, [['fh', 8], ['flags', 4], ['release_flags', 4], ['lock_owner', 8]]);
export const FLUSH_IN = layout('fuse_flush_in', 24, [['fh', 8], ['unused', 4], ['padding', 4], ['lock_owner', 8]]);
export const READ_IN = layout('fuse_read_in', 40, [
  ['fh', 8], ['offset', 8], ['size', 4], ['read_flags', 4], ['lock_owner', 8], ['flags', 4], ['padding', 4],
]);
export const WRITE_IN = layout('fuse_write_in', 40, [
  ['fh', 8], ['offset', 8], ['size', 4], ['write_flags', 4], ['lock_owner', 8], ['flags', 4], ['padding', 4],
]);
export const WRITE_OUT = layout('fuse_write_out', 8, [['size', 4], ['padding', 4]]);
export const KSTATFS = layout('fuse_kstatfs', 80, [
  ['blocks', 8], ['bfree', 8], ['bavail', 8], ['files', 8], ['ffree', 8], ['bsize', 4], ['namelen', 4],
  ['frsize', 4], ['padding', 4], ['spare', 4, 6],
]);
export const FSYNC_IN = layout('fuse_fsync_in', 16, [['fh', 8], ['fsync_flags', 4], ['padding', 4]]);
/** Without FUSE_SETXATTR_EXT (never negotiated): size and flags only. */
export const SETXATTR_IN = layout('fuse_setxattr_in(compat)', 8, [['size', 4], ['flags', 4]]);
export const GETXATTR_IN = layout('fuse_getxattr_in', 8, [['size', 4], ['padding', 4]]);
export const GETXATTR_OUT = layout('fuse_getxattr_out', 8, [['size', 4], ['padding', 4]]);
export const INTERRUPT_IN = layout('fuse_interrupt_in', 8, [['unique', 8]]);
export const IOCTL_IN = layout('fuse_ioctl_in', 32, [
  ['fh', 8], ['flags', 4], ['cmd', 4], ['arg', 8], ['in_size', 4], ['out_size', 4],
]);
export const IOCTL_OUT = layout('fuse_ioctl_out', 16, [['result', 4], ['flags', 4], ['in_iovs', 4], ['out_iovs', 4]]);
export const FALLOCATE_IN = layout('fuse_fallocate_in', 32, [['fh', 8], ['offset', 8], ['length', 8], ['mode', 4], ['padding', 4]]);
export const LSEEK_IN = layout('fuse_lseek_in', 24, [['fh', 8], ['offset', 8], ['whence', 4], ['padding', 4]]);
export const LSEEK_OUT = layout('fuse_lseek_out', 8, [['offset', 8]]);
export const DIRENT = layout('fuse_dirent', 24, [['ino', 8], ['off', 8], ['namelen', 4], ['type', 4]]);
export const NOTIFY_INVAL_INODE_OUT = layout('fuse_notify_inval_inode_out', 24, [['ino', 8], ['off', 8], ['len', 8]]);
export const NOTIFY_INVAL_ENTRY_OUT = layout('fuse_notify_inval_entry_out', 16, [['parent', 8], ['namelen', 4], ['flags', 4]]);
export const NOTIFY_DELETE_OUT = layout('fuse_notify_delete_out', 24, [['parent', 8], ['child', 8], ['namelen', 4], ['padding', 4]]);

/*
 * scoutfs ioctls whose argument is the struct itself, answered as FUSE
 * restricted ioctls (the kernel copies the _IOR-encoded size back to the
 * caller).  Magic 's' (PROTOCOL.md 9.3).  FORMAT.md does not lay these
 * structs out; our decision, recorded here: u64 fields in the order
 * PROTOCOL.md 9.3 lists them, valid_bytes first (set to the bytes we
 * filled), crtime as u64 seconds + u32 nanoseconds + 4 bytes of padding.
 */
export const STAT_MORE = layout('scoutfs_ioctl_stat_more', 64, [
  ['valid_bytes', 8], ['meta_seq', 8], ['data_seq', 8], ['data_version', 8], ['online_blocks', 8],
  ['offline_blocks', 8], ['crtime_sec', 8], ['crtime_nsec', 4], ['_pad', 4],
]);
export const STATFS_MORE = layout('scoutfs_ioctl_statfs_more', 56, [
  ['valid_bytes', 8], ['fsid', 8], ['rid', 8], ['committed_seq', 8], ['total_meta_blocks', 8],
  ['total_data_blocks', 8], ['reserved_meta_blocks', 8],
]);
/** _IOR(type, nr, size): direction read (2) in bits 30-31, size in 16-29. */
export const ior = (type: string, nr: number, size: number): number => ((2 << 30) | (size << 16) | (type.charCodeAt(0) << 8) | nr) >>> 0;
export const IOC_STAT_MORE = ior('s', 5, STAT_MORE.size);
export const IOC_STATFS_MORE = ior('s', 10, STATFS_MORE.size);

/** FUSE_INT_REQ_BIT: set in the unique of an INTERRUPT request. */
export const INT_REQ_BIT = 1n;

const align8 = (n: number): number => (n + 7) & ~7;
export const direntSize = (nameLen: number): number => align8(DIRENT.size + nameLen);
export const direntplusSize = (nameLen: number): number => align8(ENTRY_OUT.size + DIRENT.size + nameLen);

/* ---- decoding ------------------------------------------------------------------------- */

/** A request the kernel should never send: too short, inconsistent lengths, missing NUL. */
export class ProtoError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ProtoError';
  }
}

export interface InHeader {
  len: number;
  opcode: number;
  unique: bigint;
  nodeid: bigint;
  uid: number;
  gid: number;
  pid: number;
}

const H_LEN = IN_HEADER.o('len');
const H_OP = IN_HEADER.o('opcode');
const H_UNIQUE = IN_HEADER.o('unique');
const H_NODEID = IN_HEADER.o('nodeid');
const H_UID = IN_HEADER.o('uid');
const H_GID = IN_HEADER.o('gid');
const H_PID = IN_HEADER.o('pid');
const H_EXTLEN = IN_HEADER.o('total_extlen');

/**
 * The header of one request, and its argument bytes (extensions cut off).
 * Throws ProtoError when the message cannot be a request; `unique` is
 * returned through `partial` when at least that much was readable, so the
 * caller can still answer it.
 */
export function decodeHeader(b: Buffer, partial: { unique: bigint | null }): { h: InHeader; args: Buffer } {
  partial.unique = b.length >= H_UNIQUE + 8 ? b.readBigUInt64LE(H_UNIQUE) : null;
  if (b.length < IN_HEADER.size) throw new ProtoError(`request of ${b.length} bytes is shorter than its header`);
  const len = b.readUInt32LE(H_LEN);
  if (len !== b.length) throw new ProtoError(`request header says ${len} bytes, read ${b.length}`);
  const ext = b.readUInt16LE(H_EXTLEN) * 8;
  if (IN_HEADER.size + ext > len) throw new ProtoError(`request extensions of ${ext} bytes exceed its ${len} bytes`);
  const h: InHeader = {
    len,
    opcode: b.readUInt32LE(H_OP),
    unique: partial.unique!,
    nodeid: b.readBigUInt64LE(H_NODEID),
    uid: b.readUInt32LE(H_UID),
    gid: b.readUInt32LE(H_GID),
    pid: b.readUInt32LE(H_PID),
  };
  return { h, args: b.subarray(IN_HEADER.size, len - ext) };
}

/** The fixed struct at the start of a request's arguments; ProtoError if short. */
export function need(args: Buffer, l: Layout): Buffer {
  if (args.length < l.size) throw new ProtoError(`${l.name} needs ${l.size} bytes, got ${args.length}`);
  return args;
}

/** A NUL-terminated name at `off`; returns the name bytes and the offset after the NUL. */
export function cstring(args: Buffer, off: number, what: string): { name: Buffer; next: number } {
  const end = args.indexOf(0, off);
  if (end < 0) throw new ProtoError(`${what} is not NUL-terminated`);
  return { name: args.subarray(off, end), next: end + 1 };
}

/* ---- encoding ------------------------------------------------------------------------- */

export function outHeader(unique: bigint, error: number, payloadLen: number): Buffer {
  const b = Buffer.allocUnsafe(OUT_HEADER.size);
  b.writeUInt32LE(OUT_HEADER.size + payloadLen, 0);
  b.writeInt32LE(error, 4);
  b.writeBigUInt64LE(unique, 8);
  return b;
}

export interface WireAttr {
  ino: bigint;
  size: bigint;
  blocks: bigint;
  atimeSec: bigint;
  atimeNsec: number;
  mtimeSec: bigint;
  mtimeNsec: number;
  ctimeSec: bigint;
  ctimeNsec: number;
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  rdev: number;
  blksize: number;
}

const A = {
  ino: ATTR.o('ino'), size: ATTR.o('size'), blocks: ATTR.o('blocks'), atime: ATTR.o('atime'), mtime: ATTR.o('mtime'),
  ctime: ATTR.o('ctime'), atimensec: ATTR.o('atimensec'), mtimensec: ATTR.o('mtimensec'), ctimensec: ATTR.o('ctimensec'),
  mode: ATTR.o('mode'), nlink: ATTR.o('nlink'), uid: ATTR.o('uid'), gid: ATTR.o('gid'), rdev: ATTR.o('rdev'),
  blksize: ATTR.o('blksize'), flags: ATTR.o('flags'),
};

const U64_MASK = (1n << 64n) - 1n;

export function writeAttr(b: Buffer, off: number, a: WireAttr): void {
  b.writeBigUInt64LE(a.ino & U64_MASK, off + A.ino);
  b.writeBigUInt64LE(a.size & U64_MASK, off + A.size);
  b.writeBigUInt64LE(a.blocks & U64_MASK, off + A.blocks);
  b.writeBigInt64LE(BigInt.asIntN(64, a.atimeSec), off + A.atime);
  b.writeBigInt64LE(BigInt.asIntN(64, a.mtimeSec), off + A.mtime);
  b.writeBigInt64LE(BigInt.asIntN(64, a.ctimeSec), off + A.ctime);
  b.writeUInt32LE(a.atimeNsec >>> 0, off + A.atimensec);
  b.writeUInt32LE(a.mtimeNsec >>> 0, off + A.mtimensec);
  b.writeUInt32LE(a.ctimeNsec >>> 0, off + A.ctimensec);
  b.writeUInt32LE(a.mode >>> 0, off + A.mode);
  b.writeUInt32LE(a.nlink >>> 0, off + A.nlink);
  b.writeUInt32LE(a.uid >>> 0, off + A.uid);
  b.writeUInt32LE(a.gid >>> 0, off + A.gid);
  b.writeUInt32LE(a.rdev >>> 0, off + A.rdev);
  b.writeUInt32LE(a.blksize >>> 0, off + A.blksize);
  b.writeUInt32LE(0, off + A.flags);
}

const E = {
  nodeid: ENTRY_OUT.o('nodeid'), generation: ENTRY_OUT.o('generation'), entry_valid: ENTRY_OUT.o('entry_valid'),
  attr_valid: ENTRY_OUT.o('attr_valid'), entry_valid_nsec: ENTRY_OUT.o('entry_valid_nsec'),
  attr_valid_nsec: ENTRY_OUT.o('attr_valid_nsec'), attr: ENTRY_OUT.o('attr'),
};

/** fuse_entry_out at `off`; a null attr is a negative entry (nodeid 0) cached for entryValidS. */
export function writeEntry(b: Buffer, off: number, a: WireAttr | null, entryValidS: number, attrValidS: number): void {
  b.fill(0, off, off + ENTRY_OUT.size);
  b.writeBigUInt64LE(BigInt(entryValidS), off + E.entry_valid);
  if (a === null) return;
  b.writeBigUInt64LE(a.ino, off + E.nodeid);
  b.writeBigUInt64LE(BigInt(attrValidS), off + E.attr_valid);
  writeAttr(b, off + E.attr, a);
}

export function writeAttrOut(b: Buffer, off: number, a: WireAttr, attrValidS: number): void {
  b.writeBigUInt64LE(BigInt(attrValidS), off + ATTR_OUT.o('attr_valid'));
  b.writeUInt32LE(0, off + ATTR_OUT.o('attr_valid_nsec'));
  b.writeUInt32LE(0, off + ATTR_OUT.o('dummy'));
  writeAttr(b, off + ATTR_OUT.o('attr'), a);
}

export function writeOpenOut(b: Buffer, off: number, fh: bigint, openFlags: number): void {
  b.writeBigUInt64LE(fh, off + OPEN_OUT.o('fh'));
  b.writeUInt32LE(openFlags >>> 0, off + OPEN_OUT.o('open_flags'));
  b.writeUInt32LE(0, off + OPEN_OUT.o('padding'));
}

/** One fuse_dirent (name included, padded) at `off`; returns its size. */
export function writeDirent(b: Buffer, off: number, ino: bigint, next: bigint, type: number, name: Uint8Array): number {
  const size = direntSize(name.length);
  b.writeBigUInt64LE(ino, off + DIRENT.o('ino'));
  b.writeBigUInt64LE(next, off + DIRENT.o('off'));
  b.writeUInt32LE(name.length, off + DIRENT.o('namelen'));
  b.writeUInt32LE(type, off + DIRENT.o('type'));
  b.set(name, off + DIRENT.size);
  b.fill(0, off + DIRENT.size + name.length, off + size);
  return size;
}
