/*
 * The super block: the commit point (writing it durably) and the one
 * verified read of the metadata device's super that mounts, the server
 * and quorum lookups share (readMetaSuper).
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
import { checkBlock } from '../format/block.js';
import { CorruptionError } from '../format/errors.js';
import { decodeSuper, type Super } from '../format/super.js';
import { FORMAT_VERSION_MAX, LG_BLOCK_SIZE, MAGIC, SM_BLOCK_SIZE, SUPER_BLKNO, SUPER_FLAG_META_BDEV } from '../format/constants.js';
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

/** Read and check the metadata device's super as a mount does. */
export async function readMetaSuper(dev: BlockDevice): Promise<Super> {
  if (dev.sizeBytes < SUPER_OFFSET + BigInt(SM_BLOCK_SIZE)) {
    throw new CorruptionError(dev.path, SUPER_BLKNO, 'size', 'device too small to hold a super block');
  }
  // Like every block read, a failed check is retried once from the device
  // before it is reported: a transient bad read must not fail a mount.
  let b = await dev.read(SUPER_OFFSET, SM_BLOCK_SIZE);
  let fail = checkBlock(b, { kind: 'super', fsid: getU64(b, 8), blkno: SUPER_BLKNO, seq: null });
  if (fail) {
    b = await dev.read(SUPER_OFFSET, SM_BLOCK_SIZE);
    fail = checkBlock(b, { kind: 'super', fsid: getU64(b, 8), blkno: SUPER_BLKNO, seq: null });
  }
  if (getU32(b, 4) !== MAGIC.super) {
    throw new CorruptionError(dev.path, SUPER_BLKNO, 'magic', 'no scoutfs super block: not a scoutfs metadata device');
  }
  if (fail) throw new CorruptionError(dev.path, SUPER_BLKNO, fail.check, `super block: ${fail.detail}`);
  const sb = decodeSuper(b);
  if (sb.fmt_vers > FORMAT_VERSION_MAX) {
    throw new CorruptionError(dev.path, SUPER_BLKNO, 'structure', `format version ${sb.fmt_vers} is not supported`);
  }
  if ((sb.flags & SUPER_FLAG_META_BDEV) === 0n) {
    throw new CorruptionError(dev.path, SUPER_BLKNO, 'structure', 'this is a data device (META_BDEV flag clear): devices swapped?');
  }
  if (sb.total_meta_blocks * BigInt(LG_BLOCK_SIZE) > dev.sizeBytes) {
    throw new CorruptionError(dev.path, SUPER_BLKNO, 'structure', `total_meta_blocks ${sb.total_meta_blocks} exceed the device`);
  }
  return sb;
}
