/*
 * Helpers for the block layer tests: sealed block images and a memory
 * device holding them.  (node --test loads this file too; it defines no
 * tests.)
 */
import { sealBlock, writeHeader } from '../../../src/format/block.js';
import { BLOCK_SIZE_OF, MAGIC, type BlockKind } from '../../../src/format/constants.js';
import { setU32, setU64 } from '../../../src/format/layout.js';
import { blockOffset } from '../../../src/block/cache.js';
import { MemoryBlockDevice } from '../../../src/runtime/memdevice.js';

export const FSID = 0x1234_5678_9abc_def0n;

export interface BlockSpec {
  kind?: BlockKind;
  blkno: bigint;
  seq: bigint | null;
  fsid?: bigint;
  /** Header overrides written after the real values, then sealed. */
  magic?: number;
  headerBlkno?: bigint;
}

/** A sealed block image whose payload depends on blkno and seq. */
export function makeBlock(s: BlockSpec): Uint8Array {
  const kind = s.kind ?? 'btree';
  const b = new Uint8Array(BLOCK_SIZE_OF[kind]);
  const tag = Number((s.blkno * 131n + (s.seq ?? 0n)) % 251n);
  for (let i = 32; i < b.length; i += 97) b[i] = (tag + i) & 0xff;
  writeHeader(b, { magic: MAGIC[kind], fsid: s.fsid ?? FSID, seq: s.seq ?? 1n, blkno: s.blkno });
  if (s.magic !== undefined) setU32(b, 4, s.magic);
  if (s.headerBlkno !== undefined) setU64(b, 24, s.headerBlkno);
  sealBlock(b);
  return b;
}

/** Write an image where its blkno and kind put it. */
export function putBlock(dev: MemoryBlockDevice, s: BlockSpec, image = makeBlock(s)): Uint8Array {
  dev.writeSync(blockOffset(s.blkno, s.kind ?? 'btree'), image);
  return image;
}

/** A sparse memory device of `lgBlocks` 64 KiB blocks. */
export function newDev(lgBlocks = 64, path = 'mem:meta'): MemoryBlockDevice {
  return new MemoryBlockDevice(BigInt(lgBlocks) * 65536n, path);
}

/** Every slot unpinned, except those listed. */
export function pinnedSlots(table: { slotCount: number; pins(k: number): number }): number[] {
  const out: number[] = [];
  for (let k = 0; k < table.slotCount; k++) if (table.pins(k) > 0) out.push(k);
  return out;
}
