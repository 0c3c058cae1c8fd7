/*
 * The commit point: writing a super block durably.
 *
 * Every durable change in scoutfs ends the same way (FORMAT.md 15): the
 * blocks it references are written and flushed first, then the super block
 * is written in place at SM 16 and flushed.  mkfs and the server's commit
 * both end through writeSuperDurably(), so the ordering rule lives in one
 * place: the caller must have flushed the referenced blocks already (the
 * `blocksFlushed` argument makes the caller say so).
 *
 * The super is one 4 KiB sector: a power cut lands all of it or none of
 * it on the devices we target, so the previous or the new super survives.
 */
import assert from 'node:assert/strict';
import { getU32, getU64 } from '../format/layout.js';
import { blockCrc } from '../format/crc.js';
import { MAGIC, SM_BLOCK_SIZE, SUPER_BLKNO } from '../format/constants.js';
import type { BlockDevice } from '../runtime/device.js';

export const SUPER_OFFSET = SUPER_BLKNO * BigInt(SM_BLOCK_SIZE);

export async function writeSuperDurably(dev: BlockDevice, superBlock: Uint8Array, blocksFlushed: true): Promise<void> {
  assert(blocksFlushed);
  assert.equal(superBlock.length, SM_BLOCK_SIZE, 'a super block image is 4 KiB');
  assert.equal(getU32(superBlock, 4), MAGIC.super, 'super image without the super magic');
  assert.equal(getU64(superBlock, 24), SUPER_BLKNO, 'super image with the wrong blkno');
  assert.equal(getU32(superBlock, 0), blockCrc(superBlock), 'super image not sealed');
  await dev.write(SUPER_OFFSET, superBlock);
  await dev.flush();
}
