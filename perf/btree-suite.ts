/*
 * perf/btree-suite.ts connects the btree benchmark (perf/btree.ts, owned by
 * the btree work) to the perf command: it imports it lazily, runs it
 * without printing, and turns its rows into Metrics of group 'btree' with
 * stable ids (btree.<slug of the row name>), the Map reference ratio as the
 * note.  If perf/btree.js is missing, or its result does not have the shape
 * this adapter knows, the btree section is a Skip with the reason, never a
 * failed run.  Sizes: full runs use the benchmark's defaults (1M items),
 * --quick 100k items.
 */
import type { Metric, Skip } from './results.js';

export interface BtreeSuiteOptions {
  quick: boolean;
  items: number | null;
  progress: (line: string) => void;
}

interface Row {
  name: string;
  ops: number;
  opsPerSec: number;
  nsPerOp: number;
  mapOpsPerSec: number | null;
}

function slug(name: string): string {
  return name.toLowerCase().replace(/\(.*?\)/g, '').trim().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '');
}

export async function runBtreeSuite(o: BtreeSuiteOptions): Promise<{ metrics: Metric[]; skips: Skip[]; notes: string[] }> {
  const skip = (why: string): { metrics: Metric[]; skips: Skip[]; notes: string[] } => ({
    metrics: [],
    skips: [{ id: 'btree', group: 'btree', name: 'btree benchmark', skipped: why }],
    notes: [],
  });
  let mod: Record<string, unknown>;
  try {
    mod = (await import(new URL('./btree.js', import.meta.url).href)) as Record<string, unknown>;
  } catch (e) {
    return skip(`perf/btree.js: ${String(e).split('\n')[0]}`);
  }
  if (typeof mod.runBtreeBench !== 'function') return skip('perf/btree.js exports no runBtreeBench');
  const items = o.items ?? (o.quick ? 100_000 : 1_000_000);
  const opts = o.quick ? { items, ops: 50_000, mergeItems: 20_000, print: false } : { items, print: false };
  o.progress(`btree: ${items} items (perf/btree.ts)`);
  let r: { rows?: Row[]; height?: number; leaves?: number; avgLeafFill?: number };
  try {
    r = (await (mod.runBtreeBench as (x: object) => Promise<unknown>)(opts)) as typeof r;
  } catch (e) {
    return skip(`failed: ${String(e).split('\n')[0]}`);
  }
  if (!Array.isArray(r.rows)) return skip('result has no rows');
  const metrics: Metric[] = [];
  for (const row of r.rows) {
    if (typeof row.name !== 'string' || typeof row.opsPerSec !== 'number') return skip('result rows have an unknown shape');
    const ratio = row.mapOpsPerSec ? `Map does it ${(row.mapOpsPerSec / row.opsPerSec).toFixed(1)}x faster` : '';
    metrics.push({
      id: `btree.${slug(row.name)}`,
      group: 'btree',
      name: row.name,
      value: row.opsPerSec,
      unit: 'ops/s',
      higherIsBetter: true,
      nsPerOp: row.nsPerOp,
      ...(ratio ? { note: ratio } : {}),
    });
    o.progress(`btree: ${row.name}: ${row.opsPerSec} ops/s`);
  }
  return { metrics, skips: [], notes: [`btree: ${items} items, height ${r.height}, ${r.leaves} leaves, avg leaf fill ${r.avgLeafFill}`] };
}
