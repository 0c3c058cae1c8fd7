/*
 * The composition root of a single-node mount (PROTOCOL.md 1.3): what
 * `scoutfs mount` and the tests call to turn two block devices into an Fs.
 *
 *   openMount(meta, data)
 *     1. read both supers: magic, crc, blkno, format version, META flag set
 *        on the metadata device and clear on the data device, uuids and
 *        format versions equal, device sizes cover total_meta_blocks /
 *        total_data_blocks.  A swapped or foreign device is refused with a
 *        CorruptionError naming the device and the reason.
 *     2. pick a random rid (not 0, not all ones; 100 tries, else EIO);
 *     3. server, in process: ServerVolume, CommitQueue, SeqCounter,
 *        LogTreesServer (the handlers are called directly, no network),
 *        with metadata list and reserve sizes scaled to the volume
 *        (metaAllocSizing: a small volume fills up into ENOSPC, not into
 *        a GET the server cannot refill);
 *     4. client: block cache + images over the metadata device, forest
 *        reader whose roots are the committed (on-disk) super's fs_root and
 *        logs_root, item cache, Trans whose server is the in-process
 *        LogTreesServer for our rid;
 *     5. the first transaction (openFirst = the first GET_LOG_TREES);
 *     6. the Fs (src/fs/fs.ts), which finishes the deletion of orphans a
 *        previous mount left behind.
 *
 * Every step registers its teardown on a stack; close() (and a failure
 * part way through open) runs the stack in reverse: the Fs drains, the
 * transaction shuts down with a final commit (skipped if it never opened),
 * the item cache and the client block cache are destroyed, the commit queue
 * is destroyed and the server volume closed.  The devices belong to the
 * caller and stay open.
 *
 * Ordering of data and metadata.  The Fs writes file data to the data
 * device as it is written (not a page cache); the transaction's device
 * flush is a composite that flushes the data device and then the metadata
 * device after the metadata blocks were written and before
 * COMMIT_LOG_TREES, so every data block an extent item points to is durable
 * before the item is (PROTOCOL.md 4.5 steps 1, 6).
 *
 * No cluster locks yet: this is a single node and nothing else may mount
 * the volume at the same time.  The Fs passes the item cache the lock
 * range each key would have (src/format/lock.ts) in WRITE mode, so the
 * bloom keys written are the ones a cluster mount would compute, and a lock
 * client can later be slotted in between.  Nothing fences a second mount:
 * running two is undefined.
 *
 * Farewell: close() reclaims our lt after the final commit (finalized,
 * lists and data extents back to the server), and open reclaims any open
 * lt left by a mount that did not close: on a single node it is gone.
 * Then open merges every finalized lt into fs_root and frees it
 * (src/server/logmerge.ts), before the first transaction.
 *
 * Left out: quorum election and the network server/client, the
 * distributed log merge (PROTOCOL.md 5.7; the merge at open covers a
 * single node), srch compaction,
 * the orphan scan timer (orphans are handled at release and at mount).
 */
import assert from 'node:assert/strict';
import { checkBlock } from '../format/block.js';
import { FORMAT_VERSION_MAX, LG_BLOCK_SIZE, MAGIC, SM_BLOCK_SIZE, SUPER_BLKNO, SUPER_FLAG_META_BDEV } from '../format/constants.js';
import { CorruptionError, FsError } from '../format/errors.js';
import { getU32, getU64, U64_MAX } from '../format/layout.js';
import { decodeSuper, type Super } from '../format/super.js';
import type { BlockDevice } from '../runtime/device.js';
import type { Random } from '../runtime/random.js';
import type { Clock } from '../runtime/clock.js';
import { BlockCache } from '../block/cache.js';
import { CacheImages } from '../block/images.js';
import { CommittedStore, ForestReader } from '../forest/reader.js';
import { ItemCache } from '../item/cache.js';
import { HOLD_DATA_MIN_BLOCKS, Trans } from '../trans/trans.js';
import { ServerVolume, readMetaSuper } from '../server/volume.js';
import { CommitQueue } from '../server/commitq.js';
import { SeqCounter } from '../server/seq.js';
import { DATA_FILL_LO, LogTreesServer, type LogTreesServerOptions } from '../server/logtrees.js';
import { mergeFinalizedLogTrees } from '../server/logmerge.js';
import type { Fs } from '../fs/api.js';
import { ScoutFs } from '../fs/fs.js';
import { allocInodes } from './inodes.js';
import { reservedMetaBlocks } from '../alloc/server.js';
import { LIST_FILL_LO, LIST_FILL_TARGET } from '../alloc/list.js';
import { btreeIterate } from '../btree/btree.js';
import { compareKeys, key, keyInc, type Key } from '../format/key.js';
import { ZONE } from '../format/items.js';
import { decodeLogTrees, LOG_TREES_FLAG_FINALIZED } from '../format/logtrees.js';
import { srchHash } from '../format/hash.js';
import { searchXattrs, type SearchResult } from '../srch/search.js';

export interface XattrTotal {
  name: [bigint, bigint, bigint];
  total: bigint;
  count: bigint;
}

export interface MountOptions {
  metaDev: BlockDevice;
  dataDev: BlockDevice;
  random: Random;
  clock: Clock;
  log?: (line: string) => void;
  /** Small test devices lower these (defaults: the production values). */
  tuning?: {
    serverCacheSlots?: number;
    clientCacheSlots?: number;
    itemCacheBytes?: number;
    serverFillLo?: number;
    serverFillTarget?: number;
    logTrees?: LogTreesServerOptions;
    commitIntervalMs?: number;
    inodeBatch?: bigint;
    /** Tests: no log merge at open (finalized lts accumulate), or small merge commits. */
    logMerge?: { disabled?: boolean; maxChangesPerCommit?: number };
  };
}

export interface Mount {
  fs: Fs;
  /**
   * Inodes with a `.srch.` xattr of this name (PROTOCOL.md 8.4): commits
   * the open transaction, then searches the committed srch files.
   */
  searchXattrs(name: Uint8Array, firstIno?: bigint, lastIno?: bigint): Promise<SearchResult>;
  /**
   * Committed `.totl.` totals (PROTOCOL.md 9.3 READ_XATTR_TOTALS): commits
   * the open transaction, then reads zone 3 through the forest reader,
   * which sums fs_root's totals and every log tree's deltas.
   */
  readXattrTotals(): Promise<XattrTotal[]>;
  close(): Promise<void>;
  status(): object;
}

const SUPER_OFF = SUPER_BLKNO * BigInt(SM_BLOCK_SIZE);

/** Read and check the data device's super against the metadata super (1.3 step 3). */
export async function readDataSuper(dev: BlockDevice, meta: Super): Promise<Super> {
  if (dev.sizeBytes < SUPER_OFF + BigInt(SM_BLOCK_SIZE)) {
    throw new CorruptionError(dev.path, SUPER_BLKNO, 'size', 'data device too small to hold a super block');
  }
  const b = await dev.read(SUPER_OFF, SM_BLOCK_SIZE);
  if (getU32(b, 4) !== MAGIC.super) {
    throw new CorruptionError(dev.path, SUPER_BLKNO, 'magic', 'no scoutfs super block: not a scoutfs data device');
  }
  const fail = checkBlock(b, { kind: 'super', fsid: getU64(b, 8), blkno: SUPER_BLKNO, seq: null });
  if (fail) throw new CorruptionError(dev.path, SUPER_BLKNO, fail.check, `data device super block: ${fail.detail}`);
  const sb = decodeSuper(b);
  if ((sb.flags & SUPER_FLAG_META_BDEV) !== 0n) {
    throw new CorruptionError(dev.path, SUPER_BLKNO, 'structure', 'this is a metadata device (META_BDEV flag set) given as the data device: devices swapped?');
  }
  if (sb.fmt_vers > FORMAT_VERSION_MAX || sb.fmt_vers !== meta.fmt_vers) {
    throw new CorruptionError(dev.path, SUPER_BLKNO, 'structure', `data device format version ${sb.fmt_vers}, metadata device ${meta.fmt_vers}`);
  }
  if (Buffer.compare(Buffer.from(sb.uuid), Buffer.from(meta.uuid)) !== 0) {
    throw new CorruptionError(dev.path, SUPER_BLKNO, 'structure', 'data device uuid differs from the metadata device: a foreign data device');
  }
  if (meta.total_data_blocks * BigInt(SM_BLOCK_SIZE) > dev.sizeBytes) {
    throw new CorruptionError(dev.path, SUPER_BLKNO, 'size', `total_data_blocks ${meta.total_data_blocks} exceed the data device (${dev.sizeBytes} bytes)`);
  }
  return sb;
}

/**
 * Metadata allocation sizes for a volume of totalMeta 64 KiB blocks.  The
 * reference sizes (lists refilled toward 8185 blocks when they hold fewer
 * than 4092; about 2.6 GiB reserved) assume a device of 64 GiB or more.  On
 * a small volume (mkfs -A) they hand a mount most of the device in one
 * list (a 1 GiB volume could not even mount: its first GET could not be
 * filled, and a 1.2 GiB one mounted with meta_avail flagged LOW, so every
 * create was ENOSPC), and the reserve that lets a GET always refill the
 * lists was gone, so a volume filling up stalled commits on a GET the
 * server could not fill instead of answering ENOSPC.
 *
 * So they scale with the device: the list fill target is a sixty-fourth
 * of it, at least 256 (the server's low margin of 64 allocations must stay
 * well below the refill threshold, or its idle freed list is never emptied
 * and freed blocks never come back), and the reserve is an eighth of the
 * device but at least four full lists (the server's two and a mount's
 * two: what is consumed between the LOW flag and the frees coming back).
 * From 32 GiB of metadata up the reference sizes apply.
 */
export function metaAllocSizing(totalMeta: bigint): { fillLo: number; fillTarget: number; reserved: bigint } {
  const fillTarget = Math.min(LIST_FILL_TARGET, Math.max(256, Number(totalMeta / 64n)));
  const fillLo = Math.min(LIST_FILL_LO, Math.floor(fillTarget / 2));
  const full = reservedMetaBlocks(1);
  const eighth = totalMeta / 8n;
  const floor = 4n * BigInt(fillTarget);
  const cap = eighth > floor ? eighth : floor;
  return { fillLo, fillTarget, reserved: full < cap ? full : cap };
}

function pickRid(random: Random): bigint {
  for (let i = 0; i < 100; i++) {
    const rid = random.u64();
    if (rid !== 0n && rid !== U64_MAX) return rid;
  }
  throw new FsError('EIO', 'could not pick a rid');
}

export async function openMount(opts: MountOptions): Promise<Mount> {
  const log = opts.log ?? (() => {});
  const t = opts.tuning ?? {};
  const teardown: { name: string; fn: () => Promise<void> | void }[] = [];
  const destroy = async (): Promise<void> => {
    let first: unknown = null;
    while (teardown.length > 0) {
      const step = teardown.pop()!;
      try {
        await step.fn();
      } catch (e) {
        log(`unmount: ${step.name} failed: ${e instanceof Error ? e.message : String(e)}`);
        if (first === null) first = e;
      }
    }
    if (first !== null) throw first;
  };
  try {
    const metaSb = await readMetaSuper(opts.metaDev);
    await readDataSuper(opts.dataDev, metaSb);
    assert(metaSb.total_meta_blocks * BigInt(LG_BLOCK_SIZE) <= opts.metaDev.sizeBytes);
    const rid = pickRid(opts.random);

    const sizing = metaAllocSizing(metaSb.total_meta_blocks);
    const vol = await ServerVolume.open(opts.metaDev, {
      random: opts.random, cacheSlots: t.serverCacheSlots,
      fillLo: t.serverFillLo ?? sizing.fillLo, fillTarget: t.serverFillTarget ?? sizing.fillTarget,
      reserved: () => sizing.reserved,
    });
    teardown.push({ name: 'server volume', fn: () => vol.close() });
    const commitq = new CommitQueue(vol);
    teardown.push({ name: 'commit queue', fn: () => commitq.destroy() });
    const seq = await SeqCounter.open(vol, commitq);
    // A data_avail below the client's commit_before_hold minimum must come
    // flagged LOW, or every hold commits first, forever (trans.ts).
    assert((t.logTrees?.dataFillLo ?? DATA_FILL_LO) >= HOLD_DATA_MIN_BLOCKS, 'dataFillLo below the hold minimum');
    const lts = new LogTreesServer(vol, commitq, seq, { metaFillLo: sizing.fillLo, metaFillTarget: sizing.fillTarget, ...t.logTrees });
    // Single node: every open lt in logs_root belongs to a mount that is
    // gone (crashed, or never said farewell).  Reclaim them, as the server
    // does for a fenced mount, so their lists and data extents come back.
    const stale: bigint[] = [];
    await btreeIterate(vol.store, vol.sb.logs_root, key(ZONE.LOG_TREES, 0n, 0), key(ZONE.LOG_TREES, U64_MAX, 0xff, U64_MAX, U64_MAX, 0xff), (it) => {
      const lt = decodeLogTrees(it.val);
      if ((lt.flags & LOG_TREES_FLAG_FINALIZED) === 0n && !stale.includes(lt.rid)) stale.push(lt.rid);
    });
    for (const r of stale) {
      log(`reclaiming the log trees of departed rid ${r.toString(16).padStart(16, '0')}`);
      await lts.reclaimRid(r);
    }
    // Every lt is now finalized: fold them into fs_root (src/server/logmerge.ts).
    // A corrupt block in an input tree is met by the merge's dry run,
    // before anything changed (vol.failure still null): the trees stay,
    // the mount goes on, and reads that need the block get EIO as they
    // would have without the merge.  Corruption met after the first change
    // failed the volume: the mount stops, naming the block.
    const mergeCounters = { trees: 0, items: 0, blocksFreed: 0, skipped: 0 };
    if (t.logMerge?.disabled !== true) {
      try {
        const lm = await mergeFinalizedLogTrees(vol, commitq, lts.mutexes, { reserveBlocks: sizing.reserved, maxChangesPerCommit: t.logMerge?.maxChangesPerCommit });
        if (lm.trees > 0) log(`merged ${lm.trees} log trees into fs_root (${lm.items} items, ${lm.blocksFreed} blocks freed)`);
        if (lm.skipped !== null) log(`log merge left finalized log trees in logs_root: ${lm.skipped}`);
        mergeCounters.trees += Number(lm.trees);
        mergeCounters.items += Number(lm.items);
        mergeCounters.blocksFreed += Number(lm.blocksFreed);
        if (lm.skipped !== null) mergeCounters.skipped++;
      } catch (e) {
        if (!(e instanceof CorruptionError) || vol.failure !== null) throw e;
        log(`log merge skipped, the finalized log trees stay in logs_root: ${e.message}`);
      }
    }

    const cache = new BlockCache({ slots: t.clientCacheSlots ?? 1024 });
    teardown.push({ name: 'client block cache', fn: () => cache.destroy() });
    const images = new CacheImages(cache, opts.metaDev, vol.fsid, opts.random);
    const reader = new ForestReader(images, async () => {
      // The committed roots: what the last durable server commit wrote.
      const sb = await readMetaSuper(opts.metaDev);
      return { fs_root: sb.fs_root, logs_root: sb.logs_root };
    });
    const committed = new CommittedStore(images, reader.counters);
    const holder: { trans: Trans | null } = { trans: null };
    // A failed in-process server volume never commits again (it must be
    // reopened), so the final commit at unmount is abandoned, not retried
    // forever.
    let closing = false;
    const serverCall = async <T>(fn: () => Promise<T>): Promise<T> => {
      try {
        return await fn();
      } catch (e) {
        if (closing && vol.failure !== null) holder.trans?.forceUnmount();
        throw e;
      }
    };
    const items = new ItemCache({
      reader, maxBytes: t.itemCacheBytes ?? 64 << 20,
      transSeq: () => holder.trans?.transSeq ?? 0n,
      held: () => holder.trans?.isHeld() ?? false,
      warn: (m) => log(`items: ${m}`),
    });
    teardown.push({ name: 'item cache', fn: () => items.destroy() });
    // Farewell (after the final commit, which runs first in reverse order):
    // our lt is finalized and its unused lists and data_avail go back to
    // the server, so the next mount's rid starts from a full allocator.
    teardown.push({ name: 'farewell', fn: () => lts.reclaimRid(rid) });
    const trans = new Trans({
      server: { getLogTrees: () => serverCall(() => lts.getLogTrees(rid)), commitLogTrees: (lt) => serverCall(() => lts.commitLogTrees(rid, lt)) },
      clock: opts.clock, images, items, rid,
      dev: {
        flush: async () => {
          await opts.dataDev.flush();
          await opts.metaDev.flush();
        },
      },
      bounds: { first: 2n, last: metaSb.total_meta_blocks - 1n },
      commitIntervalMs: t.commitIntervalMs,
      log: (level, msg) => log(`trans ${level}: ${msg}`),
    });
    holder.trans = trans;
    teardown.push({
      name: 'transactions',
      fn: () => {
        closing = true;
        if (vol.failure !== null) trans.forceUnmount();
        return trans.shutdown();
      },
    });
    await trans.openFirst();

    const fs = await ScoutFs.open({
      items, trans, dataDev: opts.dataDev, clock: opts.clock, log,
      totalDataBlocks: metaSb.total_data_blocks,
      allocInodes: (count) => allocInodes(commitq, count),
      lastSeq: () => lts.getLastSeq(),
      serverSpace: () => lts.statfs(rid),
      inodeBatch: t.inodeBatch,
    });
    teardown.push({ name: 'fs', fn: () => fs.destroy() });
    log(`mounted rid ${rid.toString(16).padStart(16, '0')} trans_seq ${trans.transSeq}`);
    let closed = false;
    return {
      fs,
      async searchXattrs(name, firstIno = 0n, lastIno = U64_MAX) {
        await fs.sync();
        // Blocks of the committed roots are never dirty right after a
        // commit; should one be (ESTALE), read the newer roots once more.
        for (let tries = 0; ; tries++) {
          const sb = await readMetaSuper(opts.metaDev);
          try {
            return await searchXattrs(committed, sb, srchHash(name), firstIno, lastIno);
          } catch (e) {
            if (!(e instanceof FsError && e.code === 'ESTALE') || tries > 0) throw e;
          }
        }
      },
      async readXattrTotals() {
        await fs.sync();
        const first = key(ZONE.XATTR_TOTL, 0n, 0);
        const last = key(ZONE.XATTR_TOTL, U64_MAX, 0xff, U64_MAX, U64_MAX, 0xff);
        const out: XattrTotal[] = [];
        for (let k: Key | null = first; k !== null;) {
          const seg = await reader.readSegment(k, first, last);
          for (const it of seg.items) {
            if (it.val.length !== 16) throw new CorruptionError('fs items', null, 'structure', `xattr totl value of ${it.val.length} bytes`);
            out.push({ name: [it.key.first, it.key.second, it.key.third], total: getU64(it.val, 0), count: getU64(it.val, 8) });
          }
          k = compareKeys(seg.end, last) >= 0 ? null : keyInc(seg.end);
        }
        return out;
      },
      async close() {
        if (closed) return;
        closed = true;
        await destroy();
      },
      status() {
        return {
          rid: rid.toString(16).padStart(16, '0'),
          trans: trans.status(),
          items: { bytes: items.bytes, dirty: items.dirtyCount, pages: items.pageCount },
          fs: fs.status(),
          server: { seq: seq.current, commits: vol.counters.commits, logTrees: lts.counters },
          transCounters: trans.counters,
          logMerge: mergeCounters,
        };
      },
    };
  } catch (e) {
    await destroy().catch(() => {});
    throw e;
  }
}
