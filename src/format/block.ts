/*
 * The 32-byte block header at offset 0 of every super, quorum, btree, bloom,
 * srch and alloc-list block, and the 16-byte block reference (FORMAT.md 3).
 *
 *   0       4       8              16             24             32
 *   +-------+-------+--------------+--------------+--------------+
 *   | crc   | magic | fsid         | seq          | blkno        |
 *   +-------+-------+--------------+--------------+--------------+
 *
 * A ref {blkno, seq} is valid only if the block it names passes, in order:
 * crc, magic (from the ref's role), fsid (from the super), seq == ref.seq,
 * blkno == ref.blkno.  checkBlock() performs those checks and reports the
 * first failure; src/block decides whether that is ESTALE or corruption.
 */
import { layout, getU32, setU32, getU64, setU64 } from './layout.js';
import { blockCrc } from './crc.js';
import { MAGIC, type BlockKind, BLOCK_SIZE_OF } from './constants.js';
import type { CorruptCheck } from './errors.js';

export const BLOCK_HEADER = layout('block_header', 32, [
  ['crc', 4],
  ['magic', 4],
  ['fsid', 8],
  ['seq', 8],
  ['blkno', 8],
]);

export const BLOCK_REF = layout('block_ref', 16, [
  ['blkno', 8],
  ['seq', 8],
]);

export interface BlockRef {
  blkno: bigint;
  seq: bigint;
}

export interface BlockHeader {
  crc: number;
  magic: number;
  fsid: bigint;
  seq: bigint;
  blkno: bigint;
}

export const ZERO_REF: Readonly<BlockRef> = Object.freeze({ blkno: 0n, seq: 0n });

export function readRef(b: Uint8Array, off: number): BlockRef {
  return { blkno: getU64(b, off), seq: getU64(b, off + 8) };
}

export function writeRef(b: Uint8Array, off: number, r: BlockRef): void {
  setU64(b, off, r.blkno);
  setU64(b, off + 8, r.seq);
}

export function readHeader(b: Uint8Array): BlockHeader {
  return {
    crc: getU32(b, 0),
    magic: getU32(b, 4),
    fsid: getU64(b, 8),
    seq: getU64(b, 16),
    blkno: getU64(b, 24),
  };
}

/** Fill magic, fsid, seq and blkno (not the crc: see sealBlock). */
export function writeHeader(b: Uint8Array, h: Omit<BlockHeader, 'crc'>): void {
  setU32(b, 4, h.magic);
  setU64(b, 8, h.fsid);
  setU64(b, 16, h.seq);
  setU64(b, 24, h.blkno);
}

/** Compute and store the crc; done last, after every other byte is final. */
export function sealBlock(b: Uint8Array): number {
  const crc = blockCrc(b);
  setU32(b, 0, crc);
  return crc;
}

export interface BlockExpect {
  kind: BlockKind;
  fsid: bigint;
  /** For LG refs both are checked; for SM blocks seq may be null (unchecked). */
  blkno: bigint;
  seq: bigint | null;
}

export interface BlockCheckFailure {
  check: CorruptCheck;
  detail: string;
}

/**
 * Verify a block image against what its reference promises, in the kernel's
 * order.  Returns null when every check passes.
 */
export function checkBlock(b: Uint8Array, want: BlockExpect): BlockCheckFailure | null {
  const size = BLOCK_SIZE_OF[want.kind];
  if (b.length !== size) return { check: 'size', detail: `block is ${b.length} bytes, want ${size}` };
  const stored = getU32(b, 0);
  const calc = blockCrc(b);
  if (stored !== calc) return { check: 'crc', detail: `stored crc 0x${hex32(stored)} != computed 0x${hex32(calc)}` };
  return checkHeader(b, want);
}

/**
 * checkBlock() without the crc: for a cached copy whose crc was verified
 * when it was loaded, the header still has to match each ref that names it.
 */
export function checkHeader(b: Uint8Array, want: BlockExpect): BlockCheckFailure | null {
  const size = BLOCK_SIZE_OF[want.kind];
  if (b.length !== size) return { check: 'size', detail: `block is ${b.length} bytes, want ${size}` };
  const magic = getU32(b, 4);
  const wantMagic = MAGIC[want.kind];
  if (magic !== wantMagic) return { check: 'magic', detail: `magic 0x${hex32(magic)} != ${want.kind} 0x${hex32(wantMagic)}` };
  const fsid = getU64(b, 8);
  if (fsid !== want.fsid) return { check: 'fsid', detail: `fsid ${fsid.toString(16)} != ${want.fsid.toString(16)}` };
  const seq = getU64(b, 16);
  if (want.seq !== null && seq !== want.seq) return { check: 'seq', detail: `seq ${seq} != ref seq ${want.seq}` };
  const blkno = getU64(b, 24);
  if (blkno !== want.blkno) return { check: 'blkno', detail: `header blkno ${blkno} != ref blkno ${want.blkno}` };
  return null;
}

export function hex32(v: number): string {
  return (v >>> 0).toString(16).padStart(8, '0');
}
