/*
 * A single-node mount over in-memory metadata and data devices made by
 * mkfsMemory (src/mkfs/memory.ts), for the fs tests: mkfsPair() formats the two devices,
 * mountPair() runs openMount with thresholds scaled down to the small
 * devices, and fsckClean() checks the durable metadata.
 */
import assert from 'node:assert/strict';
import { mkfsMemory } from '../../../src/mkfs/memory.js';
import { MemoryBlockDevice } from '../../../src/runtime/memdevice.js';
import { SeededRandom } from '../../../src/runtime/random.js';
import { FakeClock } from '../../../src/runtime/clock.js';
import { fsck } from '../../../src/fsck/fsck.js';
import { openMount, type Mount } from '../../../src/mount/mount.js';
import type { Ctx } from '../../../src/fs/api.js';
import { VolumeWalker } from '../../../src/print/walk.js';
import { DataAccounting } from '../../../src/fsck/data.js';

export const MIB = 1n << 20n;
export const CTX: Ctx = { uid: 1000, gid: 100 };
export const b = (s: string): Uint8Array => new TextEncoder().encode(s);
export const s = (u: Uint8Array): string => new TextDecoder().decode(u);

export interface Pair {
  meta: MemoryBlockDevice;
  data: MemoryBlockDevice;
}

export function mkfsPair(metaBytes = 1024n * MIB, dataBytes = 64n * MIB, uuidFill = 7): Pair {
  return mkfsMemory(metaBytes, dataBytes, { uuidFill });
}

export async function mountPair(
  p: Pair, seed = 1n, logs: string[] = [], itemCacheBytes?: number, srchRotateBlocks?: bigint,
  logMerge?: { disabled?: boolean; maxChangesPerCommit?: number },
): Promise<Mount> {
  return openMount({
    metaDev: p.meta, dataDev: p.data, random: new SeededRandom(seed), clock: new FakeClock(),
    log: (l) => logs.push(l),
    tuning: {
      serverCacheSlots: 512, clientCacheSlots: 512,
      serverFillLo: 256, serverFillTarget: 1024,
      logTrees: { metaFillLo: 256, metaFillTarget: 1024, srchRotateBlocks },
      inodeBatch: 64n,
      itemCacheBytes,
      logMerge,
    },
  });
}

export async function fsckClean(p: Pair, what: string): Promise<void> {
  const r = await fsck(p.meta, p.data);
  const errs = r.problems.filter((x) => x.check !== 'warning').map((x) => `${x.blkno} ${x.owner} ${x.check} ${x.detail}`);
  assert.deepEqual(errs, [], `${what}: fsck problems`);
}

/** Expect an FsError with this errno name. */
export async function rejectsCode(p: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.equal((e as { code?: string }).code, code, `expected ${code}, got ${String(e)}`);
    return true;
  });
}

export interface FileExtent {
  start: bigint;
  len: bigint;
  blkno: bigint;
  flags: number;
}

/** Every file's extent items as a mount would read them from the durable metadata (close the mount first). */
export async function durableExtents(p: Pair): Promise<Map<bigint, FileExtent[]>> {
  const acct = new DataAccounting();
  const walker = new VolumeWalker(p.meta, { leafItem: (owner, k, seq, flags, val) => acct.item(owner, k, seq, flags, val) });
  await walker.walk();
  return acct.fileExtents();
}
