/*
 * Btree micro benchmarks (issue 3): the copy-on-write btree over an
 * in-memory MemBlockStore with every block cached, so what is measured is
 * the btree's own CPU cost (block walks, AVL searches, leaf hash lookups,
 * copy on write, splits, merges), not I/O.
 *
 * Workloads, on a tree of `items` keys (default 1M) shaped like fs_root
 * inode items (zone 4, first = id, type 1) with 32-byte values:
 *   bulk load        btreeMerge of the sorted keys into an empty tree
 *   commit           seal every dirty block (crc32c of 64 KiB each)
 *   lookup hit       random btreeLookup of present keys (committed tree)
 *   lookup miss      random btreeLookup of absent keys
 *   insert           random btreeForce of new keys (copy on write, splits)
 *   iterate          btreeIterate over the whole tree (callback form)
 *   merge            btreeMerge of a sorted batch of new random keys
 *   delete           random btreeDelete of present keys (joins)
 * Each has a Map<number, Uint8Array> reference doing the same logical work
 * keyed by the id: a ceiling, not a competitor (it has no ordering, no
 * persistence and no key encoding).
 *
 * Timing uses performance.now() around plain loops: benchmark.js's
 * statistical re-runs would rebuild a 1M-item tree per sample.  Numbers are
 * for comparing commits on the same machine, never pass/fail conditions.
 *
 * perf/benchmark.ts calls runBtreeBench(opts); `node dist/perf/btree.js
 * [--items N] [--json]` runs it alone.
 */
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import { key, ONES_KEY, ZERO_KEY, type Key } from '../src/format/key.js';
import { crcBackend } from '../src/format/crc.js';
import {
  btreeLookup, btreeForce, btreeDelete, btreeIterate, btreeCounters, resetBtreeCounters,
} from '../src/btree/btree.js';
import { btreeMerge, type MergeItem } from '../src/btree/merge.js';
import { checkBtree } from '../src/btree/check.js';
import { MemBlockStore } from '../src/btree/memstore.js';
import { emptyRoot } from '../src/btree/store.js';
import { btreeBuild } from '../src/btree/build.js';
import { PiscinaPool } from '../src/runtime/workerpool.js';
import { SeededRandom } from '../src/runtime/random.js';
import { ServerVolume } from '../src/server/volume.js';
import { mkfsMemory } from '../src/mkfs/memory.js';

export interface BtreeBenchOptions {
  /** Items in the base tree (default 1,000,000). */
  items?: number;
  /** Operations per random workload (default 200,000). */
  ops?: number;
  /** Items in the bulk merge batch (default 100,000). */
  mergeItems?: number;
  seed?: number;
  /** Print the table (default true) and the JSON line (default true). */
  print?: boolean;
}

export interface BtreeBenchRow {
  name: string;
  ops: number;
  ms: number;
  opsPerSec: number;
  nsPerOp: number;
  /** The Map reference doing the same logical work, when there is one. */
  mapOpsPerSec: number | null;
}

export interface BtreeBenchResult {
  bench: 'btree';
  items: number;
  height: number;
  leaves: number;
  avgLeafFill: number;
  crcBackend: string;
  node: string;
  rows: BtreeBenchRow[];
  counters: Record<string, number>;
}

const VAL_LEN = 32;
const inodeKey = (id: number): Key => key(4, BigInt(id), 1);

/** A deterministic permutation-ish stream of ids: x -> (a*x + c) mod m over a power of two. */
function* randomIds(seed: number, n: number, space: number): Generator<number> {
  let x = seed >>> 0;
  for (let i = 0; i < n; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    yield x % space;
  }
}

function val(id: number): Uint8Array {
  const v = new Uint8Array(VAL_LEN);
  v[0] = id & 0xff;
  v[1] = (id >>> 8) & 0xff;
  v[2] = (id >>> 16) & 0xff;
  return v;
}

function row(name: string, ops: number, ms: number, mapMs: number | null): BtreeBenchRow {
  return {
    name,
    ops,
    ms: Math.round(ms * 10) / 10,
    opsPerSec: Math.round((ops * 1000) / ms),
    nsPerOp: Math.round((ms * 1e6) / ops),
    mapOpsPerSec: mapMs === null ? null : Math.round((ops * 1000) / Math.max(mapMs, 0.001)),
  };
}

export async function runBtreeBench(opts: BtreeBenchOptions = {}): Promise<BtreeBenchResult> {
  const items = opts.items ?? 1_000_000;
  const ops = opts.ops ?? 200_000;
  const mergeItems = opts.mergeItems ?? 100_000;
  const seed = opts.seed ?? 1;
  const print = opts.print ?? true;
  const rows: BtreeBenchRow[] = [];
  const store = new MemBlockStore({ seed });
  const root = emptyRoot();
  const map = new Map<number, Uint8Array>();
  resetBtreeCounters();

  // Base tree: even ids 0, 2, 4, ... so odd ids are guaranteed misses / new keys.
  const load: MergeItem[] = [];
  for (let i = 0; i < items; i++) load.push({ key: inodeKey(i * 2), val: val(i * 2), seq: 1n });
  let t = performance.now();
  await btreeMerge(store, root, load);
  const loadMs = performance.now() - t;
  t = performance.now();
  for (let i = 0; i < items; i++) map.set(i * 2, load[i]!.val);
  rows.push(row('bulk load (merge, sorted)', items, loadMs, performance.now() - t));
  load.length = 0;

  t = performance.now();
  const { written } = store.commit();
  rows.push(row('commit (seal blocks)', written, performance.now() - t, null));

  // Warm the store's verified-once crc cache so lookups measure the btree.
  await btreeIterate(store, root, ZERO_KEY, ONES_KEY, () => true);

  const hits = [...randomIds(seed + 1, ops, items)].map((i) => i * 2);
  const hitKeys = hits.map(inodeKey);
  t = performance.now();
  for (const k of hitKeys) if ((await btreeLookup(store, root, k)) === null) throw new Error('lookup missed');
  const lookMs = performance.now() - t;
  t = performance.now();
  for (const id of hits) if (map.get(id) === undefined) throw new Error('map missed');
  rows.push(row('lookup hit (random)', ops, lookMs, performance.now() - t));

  const misses = [...randomIds(seed + 2, ops, items)].map((i) => i * 2 + 1);
  const missKeys = misses.map(inodeKey);
  t = performance.now();
  for (const k of missKeys) if ((await btreeLookup(store, root, k)) !== null) throw new Error('lookup hit');
  const missMs = performance.now() - t;
  t = performance.now();
  for (const id of misses) if (map.get(id) !== undefined) throw new Error('map hit');
  rows.push(row('lookup miss (random)', ops, missMs, performance.now() - t));

  // Inserts of new (odd) keys in one transaction: copies on first touch, then in place.
  const ins = [...new Set(randomIds(seed + 3, ops, items))].map((i) => i * 2 + 1);
  const insKeys = ins.map(inodeKey);
  const insVals = ins.map(val);
  t = performance.now();
  for (let i = 0; i < ins.length; i++) await btreeForce(store, root, insKeys[i]!, insVals[i]!);
  const insMs = performance.now() - t;
  t = performance.now();
  for (let i = 0; i < ins.length; i++) map.set(ins[i]!, insVals[i]!);
  rows.push(row('insert (random, new keys)', ins.length, insMs, performance.now() - t));
  t = performance.now();
  const c2 = store.commit();
  rows.push(row('commit after inserts', c2.written, performance.now() - t, null));

  let n = 0;
  t = performance.now();
  await btreeIterate(store, root, ZERO_KEY, ONES_KEY, () => void n++);
  const itMs = performance.now() - t;
  let m = 0;
  t = performance.now();
  for (const v of map.values()) if (v !== undefined) m++;
  rows.push(row('iterate (full scan)', n, itMs, performance.now() - t));
  if (m !== n) throw new Error(`iterate saw ${n} items, map has ${m}`);

  // Bulk merge of a sorted batch of new odd keys not inserted above, spread over the whole tree.
  const mergeIds = [...new Set(randomIds(seed + 4, mergeItems, items))].map((i) => i * 2 + 1).filter((id) => !map.has(id));
  mergeIds.sort((a, b) => a - b);
  const batch: MergeItem[] = mergeIds.map((id) => ({ key: inodeKey(id), val: val(id), seq: 2n }));
  t = performance.now();
  await btreeMerge(store, root, batch);
  const mergeMs = performance.now() - t;
  t = performance.now();
  for (const it of batch) map.set(Number(it.key.first), it.val);
  rows.push(row('merge (sorted batch, random keys)', batch.length, mergeMs, performance.now() - t));
  store.commit();

  const dels = [...new Set(randomIds(seed + 5, ops, items))].map((i) => i * 2);
  const delKeys = dels.map(inodeKey);
  t = performance.now();
  for (const k of delKeys) await btreeDelete(store, root, k);
  const delMs = performance.now() - t;
  t = performance.now();
  for (const id of dels) map.delete(id);
  rows.push(row('delete (random)', dels.length, delMs, performance.now() - t));
  store.commit();

  rows.push(...(await buildRows(Math.min(items, 200_000))));

  const chk = await checkBtree(store, root);
  if (!chk.ok) throw new Error(`btree check failed after the benchmark: ${chk.problems.slice(0, 3).join('; ')}`);
  if (chk.items !== map.size) throw new Error(`tree has ${chk.items} items, map ${map.size}`);

  const result: BtreeBenchResult = {
    bench: 'btree',
    items,
    height: root.height,
    leaves: chk.leaves,
    avgLeafFill: Math.round((chk.leafItemBytes / chk.leaves / 62464) * 1000) / 1000,
    crcBackend,
    node: process.version,
    rows,
    counters: { ...btreeCounters },
  };
  if (print) {
    printTable(result);
    console.log(JSON.stringify(result));
  }
  return result;
}

/**
 * Bulk build of a fresh tree from a sorted stream (src/btree/build.ts) into
 * real block cache slots of a volume on a memory device: leaves filled on
 * this thread, then by two piscina workers, side by side.
 */
async function buildRows(n: number): Promise<BtreeBenchRow[]> {
  const GIB = 1n << 30n;
  const meta = mkfsMemory(2n * GIB, 1n * GIB, { fsid: 1n, uuidFill: 1 }).meta;
  const its = Array.from({ length: n }, (_, i) => ({ key: inodeKey(i), seq: 1n, val: val(i) }));
  const pool = new PiscinaPool({ maxThreads: 2 });
  const out: BtreeBenchRow[] = [];
  try {
    // Warm the pool: thread start-up is not part of a build.
    await Promise.all([pool.run('buildLeaves', { blocks: new SharedArrayBuffer(65536), items: new SharedArrayBuffer(8), offs: new Int32Array(0), leaves: [] }),
      pool.run('buildLeaves', { blocks: new SharedArrayBuffer(65536), items: new SharedArrayBuffer(8), offs: new Int32Array(0), leaves: [] })]);
    for (const [name, usePool] of [['bulk build inline (cache slots)', false], ['bulk build 2 workers (cache slots)', true]] as const) {
      const vol = await ServerVolume.open(meta, { random: new SeededRandom(7n), cacheSlots: 2048 });
      try {
        const t = performance.now();
        await btreeBuild(vol.store, its, { pool: usePool ? pool : null });
        out.push(row(name, n, performance.now() - t, null));
      } finally {
        vol.close();
      }
    }
  } finally {
    await pool.destroy();
  }
  return out;
}

function printTable(r: BtreeBenchResult): void {
  const head = ['benchmark', 'ops', 'ms', 'ops/s', 'ns/op', 'Map ops/s', 'Map/btree'];
  const lines = r.rows.map((x) => [
    x.name,
    String(x.ops),
    x.ms.toFixed(1),
    x.opsPerSec.toLocaleString('en-US'),
    String(x.nsPerOp),
    x.mapOpsPerSec === null ? '-' : x.mapOpsPerSec.toLocaleString('en-US'),
    x.mapOpsPerSec === null ? '-' : `${(x.mapOpsPerSec / x.opsPerSec).toFixed(1)}x`,
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i]!.length)));
  const fmt = (cols: string[]): string => cols.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  console.log(`btree bench: ${r.items} items, height ${r.height}, ${r.leaves} leaves, avg leaf fill ${r.avgLeafFill}, crc ${r.crcBackend}, node ${r.node}`);
  console.log(fmt(head));
  console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const l of lines) console.log(fmt(l));
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const args = process.argv.slice(2);
  const num = (flag: string): number | undefined => {
    const i = args.indexOf(flag);
    return i >= 0 ? Number(args[i + 1]) : undefined;
  };
  await runBtreeBench({ items: num('--items'), ops: num('--ops'), mergeItems: num('--merge'), seed: num('--seed') });
}
