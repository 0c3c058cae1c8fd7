/*
 * Block verification that can run on any thread.
 *
 * verifyBatch() is the 'verify' worker job (workers/jobs.ts): given the
 * cache's SharedArrayBuffer and a list of {slot, kind, blkno, seq, fsid}, it
 * runs checkBlock() from src/format/block.ts over each slot's bytes in
 * place and returns one result per item, null for a good block or the first
 * failed check with its detail.  Pure: it reads slot bytes and meta words
 * and writes nothing, so its result is exactly what the main thread would
 * compute (the unit test compares the two, corrupted blocks included).
 *
 * The worker asserts the main thread kept its side of the bargain: every
 * slot it is asked about is pinned and holds bytes (not FREE), so it cannot
 * be evicted and reused under the worker.  A failed assertion comes back to
 * the caller as an error from the pool (our bug, not corruption).
 *
 * checkHeader() is checkBlock() without the crc: the per-reference checks
 * (magic, fsid, seq, blkno, in the kernel's order) that a reader runs on a
 * cached block whose crc was already verified when it was loaded.  This is
 * what the kernel does too (the crc is checked once per read from disk, the
 * header on every ref).  It produces the same check names and details as
 * checkBlock(); the unit test pins that.
 */
import assert from 'node:assert/strict';
import { checkBlock, hex32, type BlockCheckFailure, type BlockExpect } from '../format/block.js';
import { MAGIC, BLOCK_SIZE_OF, type BlockKind } from '../format/constants.js';
import { getU32, getU64 } from '../format/layout.js';
import { SlotState, SlotTable, stateName } from './slots.js';

export interface VerifyItem {
  slot: number;
  kind: BlockKind;
  blkno: bigint;
  /** null: do not check seq (SM blocks only). */
  seq: bigint | null;
  fsid: bigint;
}

export interface VerifyPayload {
  sab: SharedArrayBuffer;
  items: VerifyItem[];
}

export type VerifyResult = BlockCheckFailure | null;

export function verifyBatch(p: VerifyPayload): VerifyResult[] {
  const table = new SlotTable(p.sab);
  return p.items.map((it) => {
    const st = table.state(it.slot);
    assert(st !== SlotState.FREE && table.pins(it.slot) > 0,
      `verify: slot ${it.slot} is ${stateName(st)} with ${table.pins(it.slot)} pins; the caller must pin it`);
    const view = table.view(it.slot, BLOCK_SIZE_OF[it.kind]);
    return checkBlock(view, { kind: it.kind, fsid: it.fsid, blkno: it.blkno, seq: it.seq });
  });
}

/** checkBlock() minus the crc; see the top comment. */
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
