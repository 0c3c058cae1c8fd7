/*
 * What the btree needs from the block layer, and the btree root.
 *
 * The copy-on-write btree (btree.ts) never touches a device or a cache
 * directly: it reads, allocates and frees 64 KiB blocks through a
 * BlockStore.  Two implementations exist: MemBlockStore (memstore.ts) for
 * tests and benchmarks, and the SharedArrayBuffer block cache of src/block/
 * (wired later).  The contract:
 *
 *  - read(ref, kind) returns the image the ref names, verified the way the
 *    kernel verifies a ref (FORMAT.md 3.3: crc, magic, fsid, seq, blkno).
 *    A seq/blkno mismatch means the block was freed and reused since the
 *    ref was written: FsError('ESTALE'); bad crc/magic/fsid is a
 *    CorruptionError.  The image of a committed block must not be modified.
 *  - isDirty(blkno): the block was allocated in the current transaction, so
 *    its image (as returned by read or alloc) may be modified in place.
 *  - alloc(kind) returns a fresh dirty block with a new blkno, a fresh
 *    random seq and the header written (crc is sealed at write-out).  It
 *    throws FsError('ENOSPC') when no block is available; the btree calls
 *    alloc before it modifies anything, so an ENOSPC leaves the tree as it
 *    was (see btree.ts).
 *  - free(ref): a dirty block is released at once; a committed block goes
 *    through the allocator's two-phase path (it stays readable until the
 *    transaction commits, then becomes allocatable).
 *  - readCached(ref, kind), optional: read() without the promise when the
 *    block is already cached and verified; undefined otherwise.  This is an
 *    addition to the interface in the issue, measured to take a third off a
 *    cached lookup; a store may leave it out.
 *
 * The root (FORMAT.md 4.4) is a plain object the caller owns: the btree
 * mutates ref and height in place as the top block is copied, split or
 * collapsed.  height 0 <=> empty tree with a zero ref; height h >= 1 means
 * the top block has level h-1.
 */
import { readBtreeRoot as readRootFields, writeBtreeRoot as writeRootFields } from '../format/common.js';
import type { BlockRef } from '../format/block.js';
import type { BlockKind } from '../format/constants.js';
import { BTREE_MAX_HEIGHT } from '../format/constants.js';
import { CorruptionError } from '../format/errors.js';

export type { BlockRef } from '../format/block.js';
export type { BlockKind } from '../format/constants.js';

export interface BlockStore {
  readonly fsid: bigint;
  /** Verified read-only image of the block a ref names (throws CorruptionError / FsError('ESTALE')). */
  read(ref: BlockRef, kind: BlockKind): Promise<Uint8Array>;
  /** Is this blkno already dirty in the current transaction (then it may be modified in place)? */
  isDirty(blkno: bigint): boolean;
  /** A new dirty block: allocates a blkno, fresh random seq, header written; throws FsError('ENOSPC') when none. */
  alloc(kind: BlockKind): Promise<{ ref: BlockRef; b: Uint8Array }>;
  /** Free a block: a dirty one is released at once, a committed one is freed through the allocator's two-phase path. */
  free(ref: BlockRef): void;
  /**
   * Optional fast path: the verified image if it is already in memory
   * (same checks and errors as read), else undefined and the btree awaits
   * read().  Walks over a cached tree then cost no promise per level.
   */
  readCached?(ref: BlockRef, kind: BlockKind): Uint8Array | undefined;
}

export interface BtreeRoot {
  ref: BlockRef;
  /** 0 = empty; the top block has level height - 1. */
  height: number;
}

export function emptyRoot(): BtreeRoot {
  return { ref: { blkno: 0n, seq: 0n }, height: 0 };
}

export function cloneRoot(r: BtreeRoot): BtreeRoot {
  return { ref: { blkno: r.ref.blkno, seq: r.ref.seq }, height: r.height };
}

export function sameRoot(a: BtreeRoot, b: BtreeRoot): boolean {
  return a.height === b.height && a.ref.blkno === b.ref.blkno && a.ref.seq === b.ref.seq;
}

/** Decode a 24-byte btree root (FORMAT.md 4.4) at b[off], validating it. */
export function readBtreeRoot(b: Uint8Array, off: number, source = 'btree root'): BtreeRoot {
  const { ref, height } = readRootFields(b, off);
  if (height > BTREE_MAX_HEIGHT) throw new CorruptionError(source, null, 'structure', `height ${height} > ${BTREE_MAX_HEIGHT}`);
  if ((height === 0) !== (ref.blkno === 0n)) {
    throw new CorruptionError(source, null, 'structure', `height ${height} with ref blkno ${ref.blkno}`);
  }
  return { ref, height };
}

/** Encode a 24-byte btree root (src/format/common.ts owns the layout). */
export const writeBtreeRoot: (b: Uint8Array, off: number, r: BtreeRoot) => void = writeRootFields;
