/*
 * Growing a volume's devices (PROTOCOL.md 9.3 RESIZE_DEVICES, 9.4
 * `scoutfs resize-devices`), as the server does it: in one server commit,
 * the new range of each grown device becomes free space (data blocks into
 * data_alloc, metadata blocks into the larger of the two meta_alloc trees)
 * and the super's total_data_blocks / total_meta_blocks move, so a crash
 * leaves the old size or the new one, never half.
 *
 * Rules (the reference's man page): a size of 0 or the current size
 * changes nothing; a smaller one is EINVAL (shrinking is not supported) and
 * nothing changes for either device; a size past the device is EINVAL.
 *
 * Where: `scoutfs resize-devices -F META DATA` runs this on an unmounted
 * volume (bin/resize-devices.ts).  The online form needs every bound a
 * running mount checks blknos against (its server allocator, its
 * transaction's lists and its data allocator) to grow with the super; only
 * the server allocator's can today (ServerAlloc.growBounds), so the online
 * form is left out until the mount shares its bounds.  The data device's
 * own super copy keeps its totals, as with the reference's online resize.
 */
import { FsError } from '../format/errors.js';
import { DATA_DEV_START_BLKNO, LG_BLOCK_SIZE, SM_BLOCK_SIZE } from '../format/constants.js';
import { extentFree } from '../alloc/extent.js';
import type { ServerVolume } from './volume.js';

export interface Grown {
  from: bigint;
  to: bigint;
}

export interface ResizeResult {
  meta: Grown;
  data: Grown;
}

/** Grow to metaBlocks (64 KiB) and dataBlocks (4 KiB); 0 = unchanged.  Commits. */
export async function growDevices(vol: ServerVolume, dataDevBytes: bigint, want: { metaBlocks: bigint; dataBlocks: bigint }): Promise<ResizeResult> {
  const sb = vol.sb;
  const meta: Grown = { from: sb.total_meta_blocks, to: want.metaBlocks === 0n ? sb.total_meta_blocks : want.metaBlocks };
  const data: Grown = { from: sb.total_data_blocks, to: want.dataBlocks === 0n ? sb.total_data_blocks : want.dataBlocks };
  if (meta.to < meta.from) throw new FsError('EINVAL', `shrinking the metadata device (${meta.from} to ${meta.to} blocks) is not supported`);
  if (data.to < data.from) throw new FsError('EINVAL', `shrinking the data device (${data.from} to ${data.to} blocks) is not supported`);
  const metaCap = vol.dev.sizeBytes / BigInt(LG_BLOCK_SIZE);
  const dataCap = dataDevBytes / BigInt(SM_BLOCK_SIZE);
  if (meta.to > metaCap) throw new FsError('EINVAL', `${meta.to} metadata blocks do not fit the device (${metaCap})`);
  if (data.to > dataCap) throw new FsError('EINVAL', `${data.to} data blocks do not fit the device (${dataCap})`);
  if (meta.to === meta.from && data.to === data.from) return { meta, data };
  if (data.to > data.from) {
    await extentFree(vol.store, sb.data_alloc, data.from, data.to - data.from, {
      bounds: { first: DATA_DEV_START_BLKNO, last: data.to - 1n }, source: 'resize data_alloc',
    });
    sb.total_data_blocks = data.to;
  }
  if (meta.to > meta.from) {
    vol.alloc.growBounds(meta.to - 1n);
    const i = sb.meta_alloc[0].total_len >= sb.meta_alloc[1].total_len ? 0 : 1;
    await extentFree(vol.store, sb.meta_alloc[i]!, meta.from, meta.to - meta.from, {
      bounds: { first: 2n, last: meta.to - 1n }, source: `resize meta_alloc[${i}]`,
    });
    sb.total_meta_blocks = meta.to;
  }
  await vol.commit();
  return { meta, data };
}
