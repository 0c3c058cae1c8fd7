/*
 * Types embedded in many structures (FORMAT.md 4): timespec, inet address,
 * btree root, avl root/node, alloc root and alloc list head.  Each is a
 * frozen Layout; decoders/encoders for the ones decoded at the edges (CLI,
 * super) are here too.
 */
import { layout, getU16, setU16, getU32, setU32, getU64, setU64, getU8 } from './layout.js';
import { BLOCK_REF, readRef, writeRef, type BlockRef } from './block.js';

export const TIMESPEC = layout('timespec', 16, [
  ['sec', 8],
  ['nsec', 4],
  ['pad', 4],
]);

/** IPv4 form of the 32-byte inet address union; bytes 8..31 unused. */
export const INET_ADDR = layout('inet_addr', 32, [
  ['family', 2],
  ['port', 2],
  ['addr', 4],
  ['unused', 24],
]);
export const INET_ADDR6 = layout('inet_addr6', 32, [
  ['family', 2],
  ['port', 2],
  ['addr', 16],
  ['flow_info', 4],
  ['scope_id', 4],
  ['pad', 4],
]);
export const INET_FAMILY_NONE = 0;
export const INET_FAMILY_IPV4 = 1;
export const INET_FAMILY_IPV6 = 2;

export const BTREE_ROOT = layout('btree_root', 24, [
  ['ref', BLOCK_REF],
  ['height', 1],
  ['pad', 7],
]);

export const AVL_ROOT = layout('avl_root', 2, [['node', 2]]);
export const AVL_NODE = layout('avl_node', 8, [
  ['parent', 2],
  ['left', 2],
  ['right', 2],
  ['height', 1],
  ['pad', 1],
]);

export const ALLOC_ROOT = layout('alloc_root', 40, [
  ['total_len', 8],
  ['flags', 4],
  ['pad', 4],
  ['root', BTREE_ROOT],
]);
export const ALLOC_FLAG_LOW = 1;

export const ALLOC_LIST_HEAD = layout('alloc_list_head', 32, [
  ['ref', BLOCK_REF],
  ['total_nr', 8],
  ['first_nr', 4],
  ['flags', 4],
]);

/* ---- decoded forms ------------------------------------------------------ */

export interface Timespec { sec: bigint; nsec: number }
export interface InetAddr { family: number; port: number; addr: number }
export interface BtreeRoot { ref: BlockRef; height: number }
export interface AllocRoot { total_len: bigint; flags: number; root: BtreeRoot }
export interface AllocListHead { ref: BlockRef; total_nr: bigint; first_nr: number; flags: number }

/** Seconds are signed (times before 1970 are negative), as the kernel reads them. */
export function readTimespec(b: Uint8Array, off: number): Timespec {
  return { sec: BigInt.asIntN(64, getU64(b, off)), nsec: getU32(b, off + 8) };
}
export function writeTimespec(b: Uint8Array, off: number, t: Timespec): void {
  setU64(b, off, BigInt.asUintN(64, t.sec));
  setU32(b, off + 8, t.nsec);
  setU32(b, off + 12, 0);
}

export function readInetAddr(b: Uint8Array, off: number): InetAddr {
  return { family: getU16(b, off), port: getU16(b, off + 2), addr: getU32(b, off + 4) };
}
/** Writes family/port/addr and zeroes the unused bytes 8..31. */
export function writeInetAddr(b: Uint8Array, off: number, a: InetAddr): void {
  b.fill(0, off, off + 32);
  setU16(b, off, a.family);
  setU16(b, off + 2, a.port);
  setU32(b, off + 4, a.addr);
}
export function formatIpv4(addr: number): string {
  return [addr >>> 24, (addr >>> 16) & 0xff, (addr >>> 8) & 0xff, addr & 0xff].join('.');
}
/** Parse dotted IPv4 into the host-order number stored on disk; null if bad. */
export function parseIpv4(s: string): number | null {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s);
  if (!m) return null;
  const parts = m.slice(1).map(Number);
  if (parts.some((p) => p > 255)) return null;
  return ((parts[0]! << 24) | (parts[1]! << 16) | (parts[2]! << 8) | parts[3]!) >>> 0;
}

export function readBtreeRoot(b: Uint8Array, off: number): BtreeRoot {
  return { ref: readRef(b, off), height: getU8(b, off + 16) };
}
export function writeBtreeRoot(b: Uint8Array, off: number, r: BtreeRoot): void {
  writeRef(b, off, r.ref);
  b[off + 16] = r.height;
  b.fill(0, off + 17, off + 24);
}

export function readAllocRoot(b: Uint8Array, off: number): AllocRoot {
  return { total_len: getU64(b, off), flags: getU32(b, off + 8), root: readBtreeRoot(b, off + 16) };
}
export function writeAllocRoot(b: Uint8Array, off: number, a: AllocRoot): void {
  setU64(b, off, a.total_len);
  setU32(b, off + 8, a.flags);
  setU32(b, off + 12, 0);
  writeBtreeRoot(b, off + 16, a.root);
}

export function readAllocListHead(b: Uint8Array, off: number): AllocListHead {
  return { ref: readRef(b, off), total_nr: getU64(b, off + 16), first_nr: getU32(b, off + 24), flags: getU32(b, off + 28) };
}
export function writeAllocListHead(b: Uint8Array, off: number, h: AllocListHead): void {
  writeRef(b, off, h.ref);
  setU64(b, off + 16, h.total_nr);
  setU32(b, off + 24, h.first_nr);
  setU32(b, off + 28, h.flags);
}

export const EMPTY_BTREE_ROOT: Readonly<BtreeRoot> = Object.freeze({ ref: { blkno: 0n, seq: 0n }, height: 0 });
