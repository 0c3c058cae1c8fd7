/*
 * Item cache and commit benchmark (issue 5): a real single-node stack on a
 * memory device (ServerVolume + CommitQueue + SeqCounter + LogTreesServer in
 * process, client BlockCache + ForestReader + ItemCache + Trans), measuring
 *   - item inserts (create) and lookups through the item cache, inside
 *     transaction holds, beside a Map doing the same work;
 *   - commit time (sync: items written into the log btree, blocks written,
 *     COMMIT_LOG_TREES, GET_LOG_TREES) against the number of dirty items,
 *     1k, 10k and 100k.
 * Run alone: node dist/perf/items.js [--max 100000]; the perf command calls
 * runItemsBench().
 */
import { mkfsMemory } from '../src/mkfs/memory.js';
import { SeededRandom } from '../src/runtime/random.js';
import { FakeClock } from '../src/runtime/clock.js';
import { ServerVolume } from '../src/server/volume.js';
import { CommitQueue } from '../src/server/commitq.js';
import { SeqCounter } from '../src/server/seq.js';
import { LogTreesServer } from '../src/server/logtrees.js';
import { BlockCache } from '../src/block/cache.js';
import { CacheImages } from '../src/block/images.js';
import { ForestReader } from '../src/forest/reader.js';
import { lockRangeOf } from '../src/format/lock.js';
import { ItemCache, type ItemLock } from '../src/item/cache.js';
import { Trans } from '../src/trans/trans.js';
import { readMetaSuper } from '../src/server/volume.js';
import { key, type Key } from '../src/format/key.js';

export interface ItemsRow { name: string; ops: number; ms: number; opsPerSec: number; mapOpsPerSec: number | null }

const GIB = 1n << 30n;
const k = (i: number): Key => key(4, 1024n + BigInt(i >> 6), 2, BigInt(i & 63));
function lockOf(kk: Key): ItemLock {
  const r = lockRangeOf(kk);
  return { start: r.start, end: r.end, mode: 'WRITE', writeSeq: 0n };
}

async function stack() {
  const meta = mkfsMemory(8n * GIB, 8n * GIB, { fsid: 1n, uuidFill: 1 }).meta;
  const random = new SeededRandom(3n);
  const vol = await ServerVolume.open(meta, { random, reserved: () => 1024n });
  const commitq = new CommitQueue(vol);
  const seq = await SeqCounter.open(vol, commitq);
  const lts = new LogTreesServer(vol, commitq, seq, {});
  const cache = new BlockCache({ slots: 4096 });
  const images = new CacheImages(cache, meta, vol.fsid, random);
  const reader = new ForestReader(images, async () => {
    const sb = await readMetaSuper(meta);
    return { fs_root: sb.fs_root, logs_root: sb.logs_root };
  });
  const holder: { trans: Trans | null } = { trans: null };
  const items = new ItemCache({
    reader, maxBytes: 1 << 30, transSeq: () => holder.trans?.transSeq ?? 0n, held: () => holder.trans?.isHeld() ?? false,
    warn: () => undefined,
  });
  const rid = 0x1234n;
  const trans = new Trans({
    server: { getLogTrees: () => lts.getLogTrees(rid), commitLogTrees: (lt) => lts.commitLogTrees(rid, lt) },
    clock: new FakeClock(), images, items, rid, dev: { flush: () => meta.flush() },
    bounds: { first: 2n, last: vol.sb.total_meta_blocks - 1n }, dirtyLimitBytes: 1 << 30, dirtyBlockLimit: 1 << 20,
    log: () => undefined,
  });
  holder.trans = trans;
  await trans.openFirst();
  const close = async () => {
    await trans.shutdown();
    items.destroy();
    cache.destroy();
    commitq.destroy();
    vol.close();
  };
  return { items, trans, close };
}

const row = (name: string, ops: number, ms: number, mapMs: number | null): ItemsRow => ({
  name, ops, ms: Math.round(ms * 10) / 10, opsPerSec: Math.round((ops * 1000) / ms),
  mapOpsPerSec: mapMs === null ? null : Math.round((ops * 1000) / Math.max(mapMs, 0.001)),
});

export async function runItemsBench(opts: { max?: number } = {}): Promise<ItemsRow[]> {
  const max = opts.max ?? 100_000;
  const rows: ItemsRow[] = [];
  const val = new Uint8Array(64).fill(7);
  let base = 0;
  const s = await stack();
  try {
    for (const n of [1_000, 10_000, 100_000].filter((x) => x <= max)) {
      let t = performance.now();
      const h = await s.trans.hold();
      for (let i = base; i < base + n; i++) await s.items.create(k(i), val, lockOf(k(i)));
      s.trans.release(h);
      const insMs = performance.now() - t;
      t = performance.now();
      const m = new Map<number, Uint8Array>();
      for (let i = base; i < base + n; i++) m.set(i, val);
      rows.push(row(`item create x${n} (cache, in a hold)`, n, insMs, performance.now() - t));
      t = performance.now();
      await s.trans.sync();
      rows.push(row(`commit of ${n} dirty items`, n, performance.now() - t, null));
      t = performance.now();
      const h2 = await s.trans.hold();
      for (let i = base; i < base + n; i++) await s.items.lookup(k(i), lockOf(k(i)));
      s.trans.release(h2);
      const lookMs = performance.now() - t;
      t = performance.now();
      for (let i = base; i < base + n; i++) m.get(i);
      rows.push(row(`item lookup x${n} (cache hit)`, n, lookMs, performance.now() - t));
      base += n;
    }
  } finally {
    await s.close();
  }
  return rows;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const i = process.argv.indexOf('--max');
  const rows = await runItemsBench({ max: i > 0 ? Number(process.argv[i + 1]) : undefined });
  for (const r of rows) {
    console.log(`${r.name.padEnd(40)} ${String(r.ops).padStart(7)} ${r.ms.toFixed(1).padStart(9)} ms ${r.opsPerSec.toLocaleString('en-US').padStart(12)} ops/s${r.mapOpsPerSec === null ? '' : `  Map ${r.mapOpsPerSec.toLocaleString('en-US')} ops/s`}`);
  }
  console.log(JSON.stringify({ bench: 'items', rows }));
}
