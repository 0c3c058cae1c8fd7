/*
 * src/srch/file.ts: srch files, in particular the mount's unsorted srch
 * log file (PROTOCOL.md 8.1-8.2, FORMAT.md 11.1-11.4): entries (hash, ino,
 * id) appended in the transaction that creates or deletes a .srch. xattr,
 * committed with the lt as srch_file.
 *
 *   srch_file {first, last, ref, blocks, entries, height}
 *       |
 *       v  height 1: ref names the only leaf
 *   [srch parent: refs[0..4093]]            height >= 2: dense radix tree,
 *       |         |                          fan-out 4094; logical block b
 *       v         v                          is refs[digit_L(b)] at parent
 *   [srch block] [srch block] ...            level L, digit_L(b) =
 *    hdr | first | last | tail |             (b div 4094^(L-1)) mod 4094
 *    entry_nr | entry_bytes | entries...
 *
 * Appending (SrchLogWriter, one per transaction, over that transaction's
 * allocator; the srch_file is the working lt's, mutated in place):
 *  - The first append of a transaction starts a new leaf at logical block
 *    `blocks`, as the kernel does (its current-block pointer is reset at
 *    every transaction): a committed leaf is never appended to, so no leaf
 *    is ever copied, only the parents on the path to the new one.  Within
 *    the transaction a leaf is filled until entry_bytes > 65398, then the
 *    next entry starts another leaf.
 *  - Growing: when `blocks + 1` needs a taller tree a new parent becomes
 *    the root with refs[0] = the old root.  Every parent on the path is
 *    made writable (copied on write unless dirty already, the old blkno
 *    freed); missing children are allocated.
 *  - Each entry is delta-coded against the block's tail (the all-zero
 *    entry for a block's first entry) with encodeSrchEntry; the block's
 *    first/last and the file's first/last are running minima and maxima
 *    over every entry, entries and blocks are exact counts.  (The kernel
 *    leaves the file's first/last untouched by the first entry of every
 *    block after block 0, FORMAT.md 11.4; we include it: the range is then
 *    a true bound, which is what a reader skipping files by first/last
 *    needs.)
 *
 * Reading (readSrchLogEntries, decodeSrchBlock): used by search
 * (src/srch/search.ts), the tests, and compaction later.  Bytes from disk
 * are validated: height, blocks and the radix shape must agree, every leaf must decode to exactly
 * entry_nr entries within entry_bytes, end at its tail and lie inside its
 * first/last, and the counts must sum to the file's; any violation is a
 * CorruptionError naming the block.
 *
 * Threads: main thread, the transaction holder (appends happen under a
 * hold, from xattr operations) and then the commit worker, which closes
 * the writer before writing the blocks.
 */
import assert from 'node:assert/strict';
import type { BlockStore } from '../btree/store.js';
import { readRef, writeRef, type BlockRef } from '../format/block.js';
import { SRCH_BLOCK_SAFE_BYTES, SRCH_PARENT_REFS, LG_BLOCK_SIZE } from '../format/constants.js';
import { CorruptionError } from '../format/errors.js';
import { getU32, setU32 } from '../format/layout.js';
import {
  SRCH_BLOCK, SRCH_BLOCK_ENTRIES_OFF, SRCH_PARENT, ZERO_SRCH_ENTRY, compareSrchEntries, decodeSrchEntry,
  encodeSrchEntry, readSrchEntry, writeSrchEntry, type SrchEntry, type SrchFile,
} from '../format/srch.js';

const O_FIRST = SRCH_BLOCK.o('first');
const O_LAST = SRCH_BLOCK.o('last');
const O_TAIL = SRCH_BLOCK.o('tail');
const O_NR = SRCH_BLOCK.o('entry_nr');
const O_BYTES = SRCH_BLOCK.o('entry_bytes');
const O_REFS = SRCH_PARENT.o('refs');
const FANOUT = BigInt(SRCH_PARENT_REFS);
/** Greatest height we accept from disk: 4094^7 leaves is far beyond any device. */
const MAX_HEIGHT = 8;

export const srchCounters = {
  entries: 0,
  leaves: 0,
  parentsAllocated: 0,
  parentsCowed: 0,
  grown: 0,
};

export function resetSrchCounters(): void {
  for (const k of Object.keys(srchCounters) as (keyof typeof srchCounters)[]) srchCounters[k] = 0;
}

/** Height of a file with `blocks` leaves: 0 empty, 1 for one, +1 per factor 4094. */
export function srchHeightFor(blocks: bigint): number {
  if (blocks === 0n) return 0;
  let h = 1;
  for (let cap = 1n; blocks > cap; cap *= FANOUT) h++;
  return h;
}

/** The child index of logical block b in a parent at level L >= 1. */
export function srchDigit(b: bigint, level: number): number {
  assert(level >= 1);
  return Number((b / FANOUT ** BigInt(level - 1)) % FANOUT);
}

const parentRef = (b: Uint8Array, i: number): BlockRef => readRef(b, O_REFS + 16 * i);
const setParentRef = (b: Uint8Array, i: number, r: BlockRef): void => writeRef(b, O_REFS + 16 * i, r);

export function emptySrchFile(): SrchFile {
  return { first: { ...ZERO_SRCH_ENTRY }, last: { ...ZERO_SRCH_ENTRY }, ref: { blkno: 0n, seq: 0n }, blocks: 0n, entries: 0n, height: 0 };
}

export class SrchLogWriter {
  /** The leaf this transaction is appending to (dirty), or null before the first append. */
  private leaf: Uint8Array | null = null;
  private closed = false;
  private chain: Promise<void> = Promise.resolve();

  constructor(private readonly store: BlockStore, readonly sfl: SrchFile) {
    assert.equal(sfl.height, srchHeightFor(sfl.blocks), 'srch file height does not match its block count');
  }

  /**
   * Appends are serialized: two holders appending at once must not both
   * see "no current leaf" and allocate one for the same logical block (the
   * kernel holds a mutex here; the simulator sweep found the race).
   */
  append(e: SrchEntry): Promise<void> {
    const p = this.chain.then(() => this.appendLocked(e));
    this.chain = p.catch(() => undefined);
    return p;
  }

  private async appendLocked(e: SrchEntry): Promise<void> {
    assert(!this.closed, 'srch log appended to after its transaction closed');
    let b = this.leaf;
    if (b !== null && getU32(b, O_BYTES) > SRCH_BLOCK_SAFE_BYTES) b = null;
    if (b === null) {
      b = await this.newLeaf();
      this.leaf = b;
    }
    const nr = getU32(b, O_NR);
    const bytes = getU32(b, O_BYTES);
    const enc = encodeSrchEntry(readSrchEntry(b, O_TAIL), e);
    const at = SRCH_BLOCK_ENTRIES_OFF + bytes;
    assert(at + enc.length <= LG_BLOCK_SIZE, 'srch entry would run past the block');
    b.set(enc, at);
    if (nr === 0) {
      writeSrchEntry(b, O_FIRST, e);
      writeSrchEntry(b, O_LAST, e);
    } else {
      if (compareSrchEntries(e, readSrchEntry(b, O_FIRST)) < 0) writeSrchEntry(b, O_FIRST, e);
      if (compareSrchEntries(e, readSrchEntry(b, O_LAST)) > 0) writeSrchEntry(b, O_LAST, e);
    }
    writeSrchEntry(b, O_TAIL, e);
    setU32(b, O_NR, nr + 1);
    setU32(b, O_BYTES, bytes + enc.length);
    const f = this.sfl;
    if (f.entries === 0n) {
      f.first = { ...e };
      f.last = { ...e };
    } else {
      if (compareSrchEntries(e, f.first) < 0) f.first = { ...e };
      if (compareSrchEntries(e, f.last) > 0) f.last = { ...e };
    }
    f.entries++;
    srchCounters.entries++;
  }

  /** The transaction ends: its blocks are about to be written. */
  close(): void {
    this.closed = true;
    this.leaf = null;
  }

  /** Insert leaf number `blocks` (growing the tree as needed) and return its dirty image. */
  private async newLeaf(): Promise<Uint8Array> {
    const f = this.sfl;
    const blk = f.blocks;
    const height = srchHeightFor(blk + 1n);
    if (f.height === 0) {
      if (height === 1) {
        const n = await this.store.alloc('srchBlock');
        f.ref = n.ref;
        f.height = 1;
        f.blocks = 1n;
        srchCounters.leaves++;
        return n.b;
      }
    }
    while (f.height < height) {
      const p = await this.store.alloc('srchParent');
      if (f.height > 0) setParentRef(p.b, 0, f.ref);
      f.ref = p.ref;
      f.height++;
      srchCounters.grown++;
      srchCounters.parentsAllocated++;
    }
    // Walk down, making each parent on the path writable.
    let level = f.height - 1;
    let cur = await this.writableParent(f.ref);
    f.ref = cur.ref;
    for (;;) {
      const d = srchDigit(blk, level);
      const child = parentRef(cur.b, d);
      if (level === 1) {
        if (child.blkno !== 0n) {
          throw new CorruptionError('srch file', cur.ref.blkno, 'structure', `leaf ${blk} exists although the file has ${blk} blocks`);
        }
        const n = await this.store.alloc('srchBlock');
        setParentRef(cur.b, d, n.ref);
        f.blocks = blk + 1n;
        srchCounters.leaves++;
        return n.b;
      }
      let next: { ref: BlockRef; b: Uint8Array };
      if (child.blkno === 0n) {
        next = await this.store.alloc('srchParent');
        srchCounters.parentsAllocated++;
      } else {
        next = await this.writableParent(child);
      }
      setParentRef(cur.b, d, next.ref);
      cur = next;
      level--;
    }
  }

  private async writableParent(ref: BlockRef): Promise<{ ref: BlockRef; b: Uint8Array }> {
    const b = await this.store.read(ref, 'srchParent');
    if (this.store.isDirty(ref.blkno)) return { ref, b };
    const n = await this.store.alloc('srchParent');
    n.b.set(b.subarray(O_REFS), O_REFS);
    this.store.free({ ...ref });
    srchCounters.parentsCowed++;
    return n;
  }
}

/* ---- reading ------------------------------------------------------------------ */

export interface SrchBlockInfo {
  first: SrchEntry;
  last: SrchEntry;
  entries: SrchEntry[];
}

/** Decode and validate one srch leaf image (any violation is a CorruptionError). */
export function decodeSrchBlock(b: Uint8Array, blkno: bigint, source = 'srch block'): SrchBlockInfo {
  const bad = (detail: string): CorruptionError => new CorruptionError(source, blkno, 'structure', detail);
  const nr = getU32(b, O_NR);
  const bytes = getU32(b, O_BYTES);
  if (bytes > SRCH_BLOCK_SAFE_BYTES + 26 || SRCH_BLOCK_ENTRIES_OFF + bytes > b.length) throw bad(`entry_bytes ${bytes} too large`);
  if ((nr === 0) !== (bytes === 0)) throw bad(`entry_nr ${nr} with entry_bytes ${bytes}`);
  const first = readSrchEntry(b, O_FIRST);
  const last = readSrchEntry(b, O_LAST);
  const tail = readSrchEntry(b, O_TAIL);
  const end = SRCH_BLOCK_ENTRIES_OFF + bytes;
  const entries: SrchEntry[] = [];
  let prev: SrchEntry = ZERO_SRCH_ENTRY;
  let off = SRCH_BLOCK_ENTRIES_OFF;
  while (off < end) {
    const d = decodeSrchEntry(b, off, end, prev);
    if (d === null) throw bad(`undecodable entry at byte ${off}`);
    if (compareSrchEntries(d.entry, first) < 0 || compareSrchEntries(d.entry, last) > 0) throw bad(`entry at byte ${off} outside the block's first/last`);
    entries.push(d.entry);
    prev = d.entry;
    off += d.bytes;
    if (entries.length > nr) throw bad(`more than entry_nr ${nr} entries`);
  }
  if (entries.length !== nr) throw bad(`${entries.length} entries decoded, entry_nr ${nr}`);
  if (nr > 0 && compareSrchEntries(prev, tail) !== 0) throw bad('last entry is not the tail');
  return { first, last, entries };
}

/** Every entry of a srch file, in file order (logical block, then position). */
export async function readSrchLogEntries(store: Pick<BlockStore, 'read'>, sfl: SrchFile, source = 'srch file'): Promise<SrchEntry[]> {
  const bad = (blkno: bigint | null, detail: string): CorruptionError => new CorruptionError(source, blkno, 'structure', detail);
  if (sfl.height > MAX_HEIGHT || sfl.height !== srchHeightFor(sfl.blocks) || (sfl.height === 0) !== (sfl.ref.blkno === 0n)) {
    throw bad(sfl.ref.blkno, `height ${sfl.height} with ${sfl.blocks} blocks and ref ${sfl.ref.blkno}`);
  }
  const out: SrchEntry[] = [];
  let leaves = 0n;
  const visit = async (ref: BlockRef, level: number): Promise<void> => {
    if (level === 0) {
      const b = await store.read(ref, 'srchBlock');
      const info = decodeSrchBlock(b, ref.blkno, source);
      for (const e of info.entries) out.push(e);
      leaves++;
      return;
    }
    const b = await store.read(ref, 'srchParent');
    let i = 0;
    for (; i < SRCH_PARENT_REFS && leaves < sfl.blocks; i++) {
      const c = parentRef(b, i);
      if (c.blkno === 0n) break;
      await visit(c, level - 1);
    }
    for (; i < SRCH_PARENT_REFS; i++) {
      if (parentRef(b, i).blkno !== 0n) throw bad(ref.blkno, `ref ${i} set past the file's last block`);
    }
  };
  if (sfl.height > 0) await visit(sfl.ref, sfl.height - 1);
  if (leaves !== sfl.blocks) throw bad(sfl.ref.blkno, `${leaves} leaves reachable, blocks ${sfl.blocks}`);
  if (BigInt(out.length) !== sfl.entries) throw bad(sfl.ref.blkno, `${out.length} entries, the file says ${sfl.entries}`);
  // The file's first/last are not checked against the entries: kernel-written
  // log files may leave entries outside them (FORMAT.md 11.4 quirk).
  return out;
}
