/*
 * Helpers for the server transaction tests: an in-memory mkfs'd volume, a
 * server (volume, commit queue, seq counter, log trees handlers) over it,
 * a simulated client that writes a log btree, srch files and data frees
 * with its own block cache and metadata allocator on the same device, and
 * the checks every test ends with (fsck, data block conservation).
 */
import assert from 'node:assert/strict';
import { mkfsMemory } from '../../../src/mkfs/memory.js';
import { MemoryBlockDevice } from '../../../src/runtime/memdevice.js';
import { SeededRandom } from '../../../src/runtime/random.js';
import type { BlockDevice } from '../../../src/runtime/device.js';
import { ServerVolume } from '../../../src/server/volume.js';
import { CommitQueue } from '../../../src/server/commitq.js';
import { SeqCounter } from '../../../src/server/seq.js';
import { LogTreesServer, type LogTreesServerOptions } from '../../../src/server/logtrees.js';
import { fsck } from '../../../src/fsck/fsck.js';
import { BlockCache } from '../../../src/block/cache.js';
import { CacheImages } from '../../../src/block/images.js';
import { MetaAllocator } from '../../../src/alloc/meta.js';
import { extentAlloc, extentFree } from '../../../src/alloc/extent.js';
import { btreeForce, btreeIterate } from '../../../src/btree/btree.js';
import { decodeLogTrees, encodeLogTrees, type LogTrees } from '../../../src/format/logtrees.js';
import { ORPHAN_TYPE, ZONE } from '../../../src/format/items.js';
import { key } from '../../../src/format/key.js';
import { getU64, setU32, U64_MAX } from '../../../src/format/layout.js';
import { readRef, writeRef, type BlockRef } from '../../../src/format/block.js';
import { compareSrchEntries, encodeSrchEntry, writeSrchEntry, ZERO_SRCH_ENTRY, type SrchEntry } from '../../../src/format/srch.js';
import { encodeSuper } from '../../../src/format/super.js';

export const MIB = 1n << 20n;
/** Server lists: small, for a 256 MiB (4096-block) device. */
export const VOL_OPTS = { fillLo: 64, fillTarget: 256, reserved: () => 64n, cacheSlots: 256 };
/** Client thresholds scaled down to the test device (16 MiB data = 4096 blocks). */
export const LT_OPTS: LogTreesServerOptions = {
  metaFillLo: 32, metaFillTarget: 128, dataFillLo: 256n, dataFillTarget: 1024n, srchRotateBlocks: 4n, invariants: true,
};

export function mkfsMem(metaBytes = 256n * MIB): MemoryBlockDevice {
  return mkfsMemory(metaBytes, 16n * MIB).meta;
}

export interface Server {
  vol: ServerVolume;
  commitq: CommitQueue;
  seq: SeqCounter;
  lts: LogTreesServer;
}

export async function openServer(
  dev: BlockDevice, rnd: SeededRandom, opts: LogTreesServerOptions = {}, volOpts: Partial<typeof VOL_OPTS> = {},
): Promise<Server> {
  const vol = await ServerVolume.open(dev, { ...VOL_OPTS, ...volOpts, random: rnd });
  const commitq = new CommitQueue(vol);
  const seq = await SeqCounter.open(vol, commitq);
  const lts = new LogTreesServer(vol, commitq, seq, { ...LT_OPTS, ...opts });
  return { vol, commitq, seq, lts };
}

/** Close a server after checking the log_trees invariants (4.13). */
export async function checkAndClose(s: Server): Promise<void> {
  if (s.vol.failure === null) assert.deepEqual(await s.lts.checkInvariants(), [], 'log_trees invariants');
  closeServer(s);
}

export function closeServer(s: Server): void {
  s.commitq.destroy();
  s.vol.close();
}

export async function assertFsckClean(dev: BlockDevice, what: string): Promise<void> {
  const r = await fsck(dev, null);
  const errs = r.problems.filter((p) => p.check !== 'warning').map((p) => `${p.blkno} ${p.owner} ${p.check} ${p.detail}`);
  assert.deepEqual(errs, [], `${what}: fsck problems`);
}

export async function fsckProblems(dev: BlockDevice): Promise<string[]> {
  const r = await fsck(dev, null);
  return r.problems.filter((p) => p.check !== 'warning').map((p) => `${p.blkno} ${p.owner} ${p.check} ${p.detail}`);
}

/** Every lt item in logs_root, as bytes, keyed "rid/nr". */
export async function logItems(s: Server): Promise<Map<string, string>> {
  const m = new Map<string, string>();
  await btreeIterate(s.vol.store, s.vol.sb.logs_root, key(ZONE.LOG_TREES, 0n, 0), key(ZONE.LOG_TREES, U64_MAX, 0xff, U64_MAX, U64_MAX, 0xff), (it) => {
    m.set(`${it.key.first}/${it.key.second}`, Buffer.from(it.val).toString('hex'));
  });
  return m;
}

export async function logItem(s: Server, rid: bigint, nr: bigint): Promise<LogTrees | null> {
  const m = await logItems(s);
  const v = m.get(`${rid}/${nr}`);
  return v === undefined ? null : decodeLogTrees(Buffer.from(v, 'hex'));
}

/** Data blocks in data_alloc plus every lt's data_avail and data_freed: conserved. */
export async function dataBlocks(s: Server): Promise<bigint> {
  let n = s.vol.sb.data_alloc.total_len;
  for (const v of (await logItems(s)).values()) {
    const lt = decodeLogTrees(Buffer.from(v, 'hex'));
    n += lt.data_avail.total_len + lt.data_freed.total_len;
  }
  return n;
}

/** The in-memory super as bytes (equal before and after => nothing changed). */
export const superBytes = (s: Server): string => Buffer.from(encodeSuper(s.vol.sb)).toString('hex');

export const ltBytes = (lt: LogTrees): string => Buffer.from(encodeLogTrees(lt)).toString('hex');

/**
 * A client: its own cache on the shared device, the lt of its open
 * transaction, a MetaAllocator over the lt's lists (mutating the lt's heads
 * in place, which is what COMMIT sends), and helpers that dirty items, a
 * srch file and data extents in the way the real client would.
 */
export class ClientSim {
  readonly cache = new BlockCache({ slots: 128 });
  readonly images: CacheImages;
  lt: LogTrees | null = null;
  alloc: MetaAllocator | null = null;
  private nextItem = 0;

  constructor(readonly dev: BlockDevice, readonly s: Server, readonly rid: bigint, rnd: SeededRandom) {
    this.images = new CacheImages(this.cache, dev, s.vol.fsid, rnd);
  }

  get bounds(): { first: bigint; last: bigint } {
    return { first: 2n, last: this.s.vol.sb.total_meta_blocks - 1n };
  }

  /** GET_LOG_TREES and start a transaction on the result. */
  async get(srv: LogTreesServer = this.s.lts): Promise<LogTrees> {
    const lt = await srv.getLogTrees(this.rid);
    await this.adopt(lt);
    return lt;
  }

  async adopt(lt: LogTrees): Promise<void> {
    this.alloc?.close();
    this.lt = lt;
    this.alloc = await MetaAllocator.open(this.images, lt.meta_avail, lt.meta_freed, { bounds: this.bounds, source: `client ${this.rid}` });
  }

  private need(): { lt: LogTrees; alloc: MetaAllocator } {
    assert(this.lt !== null && this.alloc !== null, 'client has no open transaction');
    return { lt: this.lt, alloc: this.alloc };
  }

  /** Write n orphan items (values big enough to need several leaves) at the transaction's seq. */
  async writeItems(n: number, valBytes = 800): Promise<void> {
    const { lt, alloc } = this.need();
    for (let i = 0; i < n; i++) {
      const ino = BigInt(1000 + ((this.nextItem++ * 7) % 997));
      const v = new Uint8Array(valBytes).fill(Number(lt.get_trans_seq & 0xffn));
      await btreeForce(alloc, lt.item_root, key(ZONE.ORPHAN, 0n, ORPHAN_TYPE, ino), v, { seq: lt.get_trans_seq });
    }
    if (lt.get_trans_seq > lt.max_item_seq) lt.max_item_seq = lt.get_trans_seq;
  }

  /**
   * Replace the transaction's srch log file with a fresh one of nBlocks
   * blocks (one entry each), freeing the old file's blocks.
   */
  async writeSrchFile(nBlocks: number): Promise<void> {
    const { lt, alloc } = this.need();
    assert(nBlocks >= 1 && nBlocks <= 4094);
    const old = lt.srch_file;
    if (old.height === 1) alloc.free(old.ref);
    else if (old.height === 2) {
      const p = await this.images.read(old.ref, 'srchParent');
      for (let i = 0; i < Number(old.blocks); i++) alloc.free(readRef(p, 32 + 16 * i));
      alloc.free(old.ref);
    } else assert.equal(old.height, 0);
    const leaves: BlockRef[] = [];
    let first: SrchEntry | null = null;
    let last: SrchEntry | null = null;
    for (let i = 0; i < nBlocks; i++) {
      const { ref, b } = alloc.allocSync('srchBlock');
      const e: SrchEntry = { hash: (this.rid << 20n) + BigInt(i) * 0x1000n + (lt.get_trans_seq & 0xfffn), ino: 1024n + BigInt(i), id: 1n };
      const enc = encodeSrchEntry(ZERO_SRCH_ENTRY, e);
      writeSrchEntry(b, 32, e);
      writeSrchEntry(b, 56, e);
      writeSrchEntry(b, 80, e);
      setU32(b, 104, 1);
      setU32(b, 108, enc.length);
      b.set(enc, 112);
      leaves.push(ref);
      if (first === null || compareSrchEntries(e, first) < 0) first = e;
      if (last === null || compareSrchEntries(e, last) > 0) last = e;
    }
    let root = leaves[0]!;
    let height = 1;
    if (nBlocks > 1) {
      const { ref, b } = alloc.allocSync('srchParent');
      leaves.forEach((r, i) => writeRef(b, 32 + 16 * i, r));
      root = ref;
      height = 2;
    }
    lt.srch_file = { first: first!, last: last!, ref: root, blocks: BigInt(nBlocks), entries: BigInt(nBlocks), height };
  }

  /** Allocate `len` data blocks and free them again: they land in data_freed. */
  async freeData(len: bigint): Promise<void> {
    const { lt, alloc } = this.need();
    const e = await extentAlloc(alloc, lt.data_avail, len, { min: len });
    await extentFree(alloc, lt.data_freed, e.start, e.len);
  }

  /** Write the dirty blocks (the client's commit steps 1-6), then COMMIT_LOG_TREES. */
  async commit(srv: LogTreesServer = this.s.lts): Promise<LogTrees> {
    const { lt, alloc } = this.need();
    alloc.assertConsistent();
    await this.images.writeDirty();
    await this.dev.flush();
    alloc.close();
    this.alloc = null;
    // Keep a copy: a resend sends the very same lt.
    const sent = decodeLogTrees(encodeLogTrees(lt));
    await srv.commitLogTrees(this.rid, lt);
    return sent;
  }

  destroy(): void {
    this.alloc?.close();
    this.images.discard();
    this.cache.destroy();
  }
}

export { getU64 };
