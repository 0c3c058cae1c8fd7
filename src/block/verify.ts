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
import { checkBlock, checkHeader, type BlockCheckFailure } from '../format/block.js';
import { BLOCK_SIZE_OF, type BlockKind } from '../format/constants.js';
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

/** checkBlock() minus the crc lives in src/format/block.ts; re-exported for the block layer. */
export { checkHeader };
