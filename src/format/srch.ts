/*
 * srch layouts (FORMAT.md 11): the srch_file descriptor, parent and leaf
 * blocks, the compaction struct, and the delta + zig-zag entry codec.
 *
 * Entries (hash, ino, id) are delta-coded against the previous entry in the
 * same block (the first against zero): a u16 of three 4-bit byte counts,
 * then the low bytes of each zig-zagged difference, hash first.  2..26
 * bytes.  The decoder reports corrupt input (nibble > 8, running past the
 * end) as null rather than throwing.
 */
import assert from 'node:assert/strict';
import { layout, getU64, setU64, getU16, setU16, getU8 } from './layout.js';
import { BLOCK_HEADER, BLOCK_REF, readRef, writeRef, type BlockRef } from './block.js';
import { ALLOC_LIST_HEAD } from './common.js';
import { SRCH_PARENT_REFS } from './constants.js';

export const SRCH_ENTRY = layout('srch_entry', 24, [
  ['hash', 8],
  ['ino', 8],
  ['id', 8],
]);

export const SRCH_FILE = layout('srch_file', 88, [
  ['first', SRCH_ENTRY],
  ['last', SRCH_ENTRY],
  ['ref', BLOCK_REF],
  ['blocks', 8],
  ['entries', 8],
  ['height', 1],
  ['pad', 7],
]);

export const SRCH_PARENT = layout('srch_parent', 65536, [
  ['hdr', BLOCK_HEADER],
  ['refs', BLOCK_REF, SRCH_PARENT_REFS],
]);

export const SRCH_BLOCK = layout('srch_block', 112, [
  ['hdr', BLOCK_HEADER],
  ['first', SRCH_ENTRY],
  ['last', SRCH_ENTRY],
  ['tail', SRCH_ENTRY],
  ['entry_nr', 4],
  ['entry_bytes', 4],
]);
export const SRCH_BLOCK_ENTRIES_OFF = 112;

export const SRCH_COMPACT_INPUT = layout('srch_compact_input', 104, [
  ['sfl', SRCH_FILE],
  ['blk', 8],
  ['pos', 8],
]);

export const SRCH_COMPACT = layout('srch_compact', 584, [
  ['meta_avail', ALLOC_LIST_HEAD],
  ['meta_freed', ALLOC_LIST_HEAD],
  ['id', 8],
  ['nr', 1],
  ['flags', 1],
  ['pad', 6],
  ['out', SRCH_FILE],
  ['in', SRCH_COMPACT_INPUT, 4],
]);
export const SRCH_COMPACT_FLAG = { LOG: 1, SORTED: 2, DELETE: 4, DONE: 16, ERROR: 32 } as const;

export interface SrchEntry { hash: bigint; ino: bigint; id: bigint }
export interface SrchFile {
  first: SrchEntry;
  last: SrchEntry;
  ref: BlockRef;
  blocks: bigint;
  entries: bigint;
  height: number;
}

export const ZERO_SRCH_ENTRY: Readonly<SrchEntry> = Object.freeze({ hash: 0n, ino: 0n, id: 0n });

export function readSrchEntry(b: Uint8Array, off: number): SrchEntry {
  return { hash: getU64(b, off), ino: getU64(b, off + 8), id: getU64(b, off + 16) };
}
export function writeSrchEntry(b: Uint8Array, off: number, e: SrchEntry): void {
  setU64(b, off, e.hash);
  setU64(b, off + 8, e.ino);
  setU64(b, off + 16, e.id);
}
export function compareSrchEntries(a: SrchEntry, b: SrchEntry): number {
  if (a.hash !== b.hash) return a.hash < b.hash ? -1 : 1;
  if (a.ino !== b.ino) return a.ino < b.ino ? -1 : 1;
  if (a.id !== b.id) return a.id < b.id ? -1 : 1;
  return 0;
}

export function readSrchFile(b: Uint8Array, off: number): SrchFile {
  return {
    first: readSrchEntry(b, off),
    last: readSrchEntry(b, off + 24),
    ref: readRef(b, off + 48),
    blocks: getU64(b, off + 64),
    entries: getU64(b, off + 72),
    height: getU8(b, off + 80),
  };
}
export function writeSrchFile(b: Uint8Array, off: number, f: SrchFile): void {
  writeSrchEntry(b, off, f.first);
  writeSrchEntry(b, off + 24, f.last);
  writeRef(b, off + 48, f.ref);
  setU64(b, off + 64, f.blocks);
  setU64(b, off + 72, f.entries);
  b[off + 80] = f.height;
  b.fill(0, off + 81, off + 88);
}

const M64 = 0xffffffffffffffffn;

function zigzag(d: bigint): bigint {
  const s = BigInt.asIntN(64, d);
  return BigInt.asUintN(64, (s << 1n) ^ (s >> 63n));
}
function unzigzag(z: bigint): bigint {
  return BigInt.asUintN(64, (z >> 1n) ^ -(z & 1n));
}
function byteLen(z: bigint): number {
  let n = 0;
  while (z > 0n) { n++; z >>= 8n; }
  return n;
}

/** Encode `cur` against `prev` (FORMAT.md 11.4). */
export function encodeSrchEntry(prev: SrchEntry, cur: SrchEntry): Uint8Array {
  const zs = [
    zigzag((cur.hash - prev.hash) & M64),
    zigzag((cur.ino - prev.ino) & M64),
    zigzag((cur.id - prev.id) & M64),
  ];
  const ns = zs.map(byteLen);
  const out = new Uint8Array(2 + ns[0]! + ns[1]! + ns[2]!);
  setU16(out, 0, ns[0]! | (ns[1]! << 4) | (ns[2]! << 8));
  let p = 2;
  zs.forEach((z, i) => {
    for (let k = 0; k < ns[i]!; k++) out[p++] = Number((z >> BigInt(8 * k)) & 0xffn);
  });
  assert(p === out.length);
  return out;
}

/** Decode one entry at b[off..end); null if corrupt.  Returns bytes used. */
export function decodeSrchEntry(b: Uint8Array, off: number, end: number, prev: SrchEntry): { entry: SrchEntry; bytes: number } | null {
  if (off + 2 > end) return null;
  const lens = getU16(b, off);
  if (lens >> 12 !== 0) return null;
  const ns = [lens & 0xf, (lens >> 4) & 0xf, (lens >> 8) & 0xf];
  if (ns.some((n) => n > 8)) return null;
  let p = off + 2;
  const vals: bigint[] = [];
  for (const n of ns) {
    if (p + n > end) return null;
    let z = 0n;
    for (let k = 0; k < n; k++) z |= BigInt(b[p + k]!) << BigInt(8 * k);
    p += n;
    vals.push(unzigzag(z));
  }
  return {
    entry: {
      hash: (prev.hash + vals[0]!) & M64,
      ino: (prev.ino + vals[1]!) & M64,
      id: (prev.id + vals[2]!) & M64,
    },
    bytes: p - off,
  };
}
