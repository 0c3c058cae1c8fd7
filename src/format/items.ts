/*
 * Item keys and values of the fs item zones (FORMAT.md 8): zones, types,
 * the inode value, dirent value, xattr part header, data extent value, free
 * extent keys in both keyings, mounted client value, xattr totl value, and
 * the key constructors for each item kind.  Only src/format/ knows these
 * byte offsets; higher layers use the encoders here.
 */
import assert from 'node:assert/strict';
import { layout, getU64, setU64, getU32, setU32, getU8, getU16 } from './layout.js';
import { TIMESPEC, INET_ADDR, readTimespec, writeTimespec, readInetAddr, type Timespec, type InetAddr } from './common.js';
import { key, type Key } from './key.js';
import { U64_MAX } from './layout.js';

export const ZONE = {
  INODE_INDEX: 1,
  ORPHAN: 2,
  XATTR_TOTL: 3,
  FS: 4,
  LOCK: 5,
  LOG_TREES: 6,
  MOUNTED_CLIENT: 7,
  SRCH: 8,
  FREE_EXTENT_BLKNO: 9,
  FREE_EXTENT_ORDER: 10,
  LOG_MERGE_STATUS: 11,
  LOG_MERGE_RANGE: 12,
  LOG_MERGE_REQUEST: 13,
  LOG_MERGE_COMPLETE: 14,
  LOG_MERGE_FREEING: 15,
} as const;

export const INDEX_TYPE = { META_SEQ: 1, DATA_SEQ: 2 } as const;
export const ORPHAN_TYPE = 1;
export const FS_TYPE = {
  INODE: 1, XATTR: 2, DIRENT: 3, READDIR: 4, LINK_BACKREF: 5, SYMLINK: 6, DATA_EXTENT: 7,
} as const;
export const LOCK_TYPE_RENAME = 1;
export const SRCH_TYPE = { LOG: 1, BLOCKS: 2, PENDING: 3, BUSY: 4 } as const;

export const ZONE_NAMES: Record<number, string> = Object.fromEntries(
  Object.entries(ZONE).map(([k, v]) => [v, k]),
);

/* ---- inode (160 bytes) ---------------------------------------------------- */

export const INODE = layout('inode', 160, [
  ['size', 8],
  ['meta_seq', 8],
  ['data_seq', 8],
  ['data_version', 8],
  ['online_blocks', 8],
  ['offline_blocks', 8],
  ['next_readdir_pos', 8],
  ['next_xattr_id', 8],
  ['version', 8],
  ['nlink', 4],
  ['uid', 4],
  ['gid', 4],
  ['mode', 4],
  ['rdev', 4],
  ['flags', 4],
  ['atime', TIMESPEC],
  ['ctime', TIMESPEC],
  ['mtime', TIMESPEC],
  ['crtime', TIMESPEC],
]);
export const INODE_FLAG_TRUNCATE = 1;

export interface Inode {
  size: bigint;
  meta_seq: bigint;
  data_seq: bigint;
  data_version: bigint;
  online_blocks: bigint;
  offline_blocks: bigint;
  next_readdir_pos: bigint;
  next_xattr_id: bigint;
  version: bigint;
  nlink: number;
  uid: number;
  gid: number;
  mode: number;
  rdev: number;
  flags: number;
  atime: Timespec;
  ctime: Timespec;
  mtime: Timespec;
  crtime: Timespec;
}

const U64_INODE_FIELDS = [
  'size', 'meta_seq', 'data_seq', 'data_version', 'online_blocks', 'offline_blocks',
  'next_readdir_pos', 'next_xattr_id', 'version',
] as const;
const U32_INODE_FIELDS = ['nlink', 'uid', 'gid', 'mode', 'rdev', 'flags'] as const;
const TS_INODE_FIELDS = ['atime', 'ctime', 'mtime', 'crtime'] as const;

// Field offsets resolved once: inodes are decoded on nearly every fs op.
const U64_INODE_OFFS = U64_INODE_FIELDS.map((f) => [f, INODE.o(f)] as const);
const U32_INODE_OFFS = U32_INODE_FIELDS.map((f) => [f, INODE.o(f)] as const);
const TS_INODE_OFFS = TS_INODE_FIELDS.map((f) => [f, INODE.o(f)] as const);

export function decodeInode(b: Uint8Array, off = 0): Inode {
  const o: Partial<Inode> = {};
  for (const [f, at] of U64_INODE_OFFS) o[f] = getU64(b, off + at);
  for (const [f, at] of U32_INODE_OFFS) o[f] = getU32(b, off + at);
  for (const [f, at] of TS_INODE_OFFS) o[f] = readTimespec(b, off + at);
  return o as Inode;
}

export function encodeInode(i: Inode): Uint8Array {
  const b = new Uint8Array(INODE.size);
  for (const [f, at] of U64_INODE_OFFS) setU64(b, at, i[f]);
  for (const [f, at] of U32_INODE_OFFS) setU32(b, at, i[f]);
  for (const [f, at] of TS_INODE_OFFS) writeTimespec(b, at, i[f]);
  return b;
}

/* ---- dirent (32-byte header + name) --------------------------------------- */

export const DIRENT = layout('dirent', 32, [
  ['ino', 8],
  ['hash', 8],
  ['pos', 8],
  ['type', 1],
  ['pad', 7],
]);
/** scoutfs dirent types (not Linux DT_ numbers). */
export const DT = { FIFO: 0, CHR: 1, DIR: 2, BLK: 3, REG: 4, LNK: 5, SOCK: 6, WHT: 7 } as const;
export const DT_NAMES = ['fifo', 'chr', 'dir', 'blk', 'reg', 'lnk', 'sock', 'wht'];

export interface Dirent { ino: bigint; hash: bigint; pos: bigint; type: number; name: Uint8Array }

export function encodeDirent(d: Dirent): Uint8Array {
  assert(d.name.length >= 1 && d.name.length <= 255);
  const b = new Uint8Array(32 + d.name.length);
  setU64(b, 0, d.ino);
  setU64(b, 8, d.hash);
  setU64(b, 16, d.pos);
  b[24] = d.type;
  b.set(d.name, 32);
  return b;
}

export function decodeDirent(v: Uint8Array): Dirent | null {
  if (v.length < 33 || v.length > 32 + 255) return null;
  return { ino: getU64(v, 0), hash: getU64(v, 8), pos: getU64(v, 16), type: getU8(v, 24), name: v.slice(32) };
}

/* ---- xattr part header ---------------------------------------------------- */

export const XATTR_HEADER = layout('xattr', 8, [
  ['val_len', 2],
  ['name_len', 1],
  ['pad', 5],
]);
export const XATTR_TOTL_VAL = layout('xattr_totl_val', 16, [
  ['total', 8],
  ['count', 8],
]);

export function decodeXattrHeader(v: Uint8Array): { val_len: number; name_len: number } | null {
  if (v.length < 8) return null;
  return { val_len: getU16(v, 0), name_len: getU8(v, 2) };
}

/* ---- data extents --------------------------------------------------------- */

export const DATA_EXTENT_VAL = layout('data_extent_val', 16, [
  ['blkno', 8],
  ['flags', 1],
  ['pad', 7],
]);
export const EXTENT_FLAG = { OFFLINE: 1, UNWRITTEN: 2 } as const;

/* ---- mounted clients ------------------------------------------------------ */

export const MOUNTED_CLIENT_VAL = layout('mounted_client_btree_val', 40, [
  ['addr', INET_ADDR],
  ['flags', 1],
  ['pad', 7],
]);
export const MOUNTED_CLIENT_FLAG_QUORUM = 1;

export function decodeMountedClient(v: Uint8Array): { addr: InetAddr; flags: number } | null {
  if (v.length !== 40) return null;
  return { addr: readInetAddr(v, 0), flags: getU8(v, 32) };
}

/* ---- key constructors ----------------------------------------------------- */

export const inodeKey = (ino: bigint): Key => key(ZONE.FS, ino, FS_TYPE.INODE);
export const indexKey = (type: number, major: bigint, ino: bigint): Key => key(ZONE.INODE_INDEX, 0n, type, major, ino);
export const orphanKey = (ino: bigint): Key => key(ZONE.ORPHAN, 0n, ORPHAN_TYPE, ino);
export const direntKey = (dir: bigint, hash: bigint, pos: bigint): Key => key(ZONE.FS, dir, FS_TYPE.DIRENT, hash, pos);
export const readdirKey = (dir: bigint, pos: bigint): Key => key(ZONE.FS, dir, FS_TYPE.READDIR, pos);
export const backrefKey = (ino: bigint, dir: bigint, pos: bigint): Key => key(ZONE.FS, ino, FS_TYPE.LINK_BACKREF, dir, pos);
export const symlinkKey = (ino: bigint, nr: number): Key => key(ZONE.FS, ino, FS_TYPE.SYMLINK, BigInt(nr));
export const xattrKey = (ino: bigint, hash: number, id: bigint, part: number): Key =>
  key(ZONE.FS, ino, FS_TYPE.XATTR, BigInt(hash), id, part);
export const extentKey = (ino: bigint, last: bigint, len: bigint): Key => key(ZONE.FS, ino, FS_TYPE.DATA_EXTENT, last, len);
export const logTreesKey = (rid: bigint, nr: bigint): Key => key(ZONE.LOG_TREES, rid, 0, nr);
export const mountedClientKey = (rid: bigint): Key => key(ZONE.MOUNTED_CLIENT, rid, 0);

/** order(len) = floor(log8(len)) (FORMAT.md 8.10). */
export function extentOrder(len: bigint): number {
  assert(len > 0n);
  const bits = (len | 1n).toString(2).length;
  return Math.floor((bits - 1) / 3);
}

/** The two items of a free extent [start, start+len-1]. */
export function freeExtentKeys(start: bigint, len: bigint): { blkno: Key; order: Key } {
  assert(len > 0n);
  const end = start + len - 1n;
  return {
    blkno: key(ZONE.FREE_EXTENT_BLKNO, end, 0, len),
    order: key(ZONE.FREE_EXTENT_ORDER, U64_MAX - BigInt(extentOrder(len)), 0, end, len),
  };
}

export function decodeDataExtent(v: Uint8Array): { blkno: bigint; flags: number } | null {
  if (v.length !== 16) return null;
  return { blkno: getU64(v, 0), flags: getU8(v, 8) };
}
