/*
 * perf/results.ts owns the shape of perf results and everything done with
 * them after measuring: the readable tables, the JSON file, and the
 * comparison with a stored baseline (perf/baseline.json).
 *
 * A Metric is one number with a direction: ops/sec, MB/s and IOPS are
 * better higher.  Groups: micro (benchmark.js), btree (perf/btree.ts, timed
 * loops), e2e (filesystem workloads) and ratio: for every e2e workload
 * measured on scoutfs and on another target in the same run, scoutfs's
 * value over the other's ("ratio.meta.create.scoutfs/fuse-passthrough").
 * Ratios are what the targets of issue #6 are stated in (creates and stats
 * at least 0.80 of the passthrough's, sequential write at least 0.60), and
 * they move less than absolute rates when the machine is loaded, since
 * both sides of a ratio ran minutes apart on the same host.  They are
 * stored in the baseline and compared like any metric.  Its id is stable across runs ("micro.crc.64k",
 * "e2e.meta.create.ext4") and is what the baseline is keyed by.  A metric
 * that could not be measured is a Skip with the reason, printed in the
 * tables and carried in the JSON, never a made-up number.
 *
 * Baseline comparison.  For each metric in both runs, change = now/base - 1
 * signed so that positive is better.  Outside the noise band (default 15%)
 * a worse number is a REGRESSION and a better one "improved"; inside it is
 * "ok".  When the baseline was made in another mode (--quick versus full
 * runs, whose workload sizes differ), changes are printed but not flagged.
 * A baseline metric of a group or target this run did not measure at all
 * is counted as "not run" instead of listed as missing (scopeOf).
 * Nothing here decides the exit code; benchmark.ts does
 * (--fail-on-regression).
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import os from 'node:os';

export type MetricGroup = 'micro' | 'btree' | 'e2e' | 'ratio';

export interface Metric {
  id: string;
  group: MetricGroup;
  /** Row label, e.g. "crc32c 64 KiB" or "create". */
  name: string;
  /** e2e only: ext4, fuse-passthrough, scoutfs; ratio: "scoutfs/fuse-passthrough". */
  target?: string;
  value: number;
  unit: string;
  higherIsBetter: boolean;
  /** micro: ns per operation and relative margin of error (percent). */
  nsPerOp?: number;
  rmePct?: number;
  samples?: number;
  note?: string;
}

export interface Skip {
  id: string;
  group: MetricGroup;
  name: string;
  target?: string;
  skipped: string;
}

export interface RunReport {
  createdAt: string;
  mode: 'full' | 'quick';
  host: { cpus: number; memGiB: number; node: string; kernel: string; root: boolean };
  params: Record<string, number | string | boolean>;
  metrics: Metric[];
  skips: Skip[];
  notes: string[];
  errors: string[];
  durationMs: number;
}

export interface Baseline {
  createdAt: string;
  mode: 'full' | 'quick';
  host: RunReport['host'];
  metrics: Record<string, { value: number; unit: string; higherIsBetter: boolean }>;
}

export function hostInfo(): RunReport['host'] {
  return {
    cpus: os.cpus().length,
    memGiB: Math.round(os.totalmem() / 2 ** 30),
    node: process.version,
    kernel: os.release(),
    root: typeof process.getuid === 'function' && process.getuid() === 0,
  };
}

/* ---- formatting ---------------------------------------------------------- */

export function fmtNum(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  const a = Math.abs(v);
  if (a >= 1e9) return `${(v / 1e9).toFixed(2)}G`;
  if (a >= 1e6) return `${(v / 1e6).toFixed(2)}M`;
  if (a >= 1e4) return `${(v / 1e3).toFixed(1)}k`;
  if (a >= 100) return v.toFixed(0);
  if (a >= 10) return v.toFixed(1);
  return v.toFixed(2);
}

export function table(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string =>
    cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ').trimEnd();
  return [line(headers), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

function ratio(a: number | undefined, b: number | undefined): string {
  if (a === undefined || b === undefined || b === 0) return 'n/a';
  return `${(a / b).toFixed(2)}x`;
}

export const E2E_TARGETS = ['ext4', 'fuse-passthrough', 'scoutfs', 'scoutfs-native', 'scoutfs-wb'] as const;

/**
 * Floors of issue #10 for scoutfs (the kernel transport) over the
 * fuse-native passthrough of the same run, by e2e workload key.
 */
export const RATIO_AIMS: Record<string, number> = {
  'e2e.meta.create': 0.8,
  'e2e.meta.stat': 1.0,
  'e2e.meta.readdir': 1.0,
  'e2e.meta.unlink': 0.8,
  'e2e.stream.write': 1.0,
  'e2e.stream.warmread': 1.0,
};
/** ...and over ext4 on a loop device: the cold read (host caches dropped). */
export const EXT4_AIMS: Record<string, number> = { 'e2e.stream.read': 0.8 };
/** ...and absolute: single-byte writes per second through the page cache. */
export const ABS_AIMS: Record<string, number> = { 'e2e.bytes.write': 100_000 };

/** scoutfs (both transports) over each other target, for every e2e workload measured on both. */
export function e2eRatios(metrics: readonly Metric[]): Metric[] {
  const out: Metric[] = [];
  const e2e = metrics.filter((m) => m.group === 'e2e');
  for (const m of e2e) {
    if (m.target !== 'scoutfs' && m.target !== 'scoutfs-native' && m.target !== 'scoutfs-wb') continue;
    const key = m.id.slice(0, m.id.lastIndexOf('.'));
    for (const other of ['fuse-passthrough', 'ext4']) {
      const o = e2e.find((x) => x.id === `${key}.${other}`);
      if (!o || o.value === 0) continue;
      const aim = m.target !== 'scoutfs' ? undefined : other === 'fuse-passthrough' ? RATIO_AIMS[key] : EXT4_AIMS[key];
      out.push({
        id: `ratio.${key.slice('e2e.'.length)}.${m.target}/${other}`,
        group: 'ratio', name: m.name, target: `${m.target}/${other}`, value: m.value / o.value, unit: 'x', higherIsBetter: true,
        ...(aim !== undefined ? { note: `floor >= ${aim.toFixed(2)}: ${m.value / o.value >= aim ? 'met' : 'NOT met'}` } : {}),
      });
    }
  }
  return out;
}

export function renderReport(r: RunReport): string {
  const out: string[] = [];
  const micro = r.metrics.filter((m) => m.group === 'micro');
  const microSkips = r.skips.filter((s) => s.group === 'micro');
  if (micro.length || microSkips.length) {
    out.push('Micro benchmarks (benchmark.js)');
    const rows = micro.map((m) => [
      m.name,
      fmtNum(m.value),
      m.nsPerOp !== undefined ? m.nsPerOp.toFixed(1) : '',
      m.rmePct !== undefined ? `±${m.rmePct.toFixed(2)}%` : '',
      m.note ?? '',
    ]);
    for (const s of microSkips) rows.push([s.name, '-', '-', '-', `not available: ${s.skipped}`]);
    out.push(table(['benchmark', 'ops/sec', 'ns/op', 'rme', 'note'], rows));
    const get = (id: string): Metric | undefined => micro.find((m) => m.id === id);
    for (const [size, label] of [['4k', '4 KiB'], ['64k', '64 KiB']] as const) {
      const crc = get(`micro.crc.${size}`);
      const copy = get(`micro.copy.${size}`);
      if (crc?.nsPerOp !== undefined && copy?.nsPerOp !== undefined) {
        const x = crc.nsPerOp / copy.nsPerOp;
        const target = size === '64k' ? ` (target <= 3x: ${x <= 3 ? 'met' : 'NOT met'})` : '';
        out.push(`crc32c ${label} costs ${x.toFixed(2)}x a Buffer.copy of the same bytes${target}`);
      }
    }
    out.push('');
  }

  const btree = r.metrics.filter((m) => m.group === 'btree');
  const btreeSkips = r.skips.filter((s) => s.group === 'btree');
  if (btree.length || btreeSkips.length) {
    out.push('Btree (perf/btree.ts: plain timed loops over an in-memory block store)');
    const rows = btree.map((m) => [m.name, fmtNum(m.value), m.nsPerOp !== undefined ? m.nsPerOp.toFixed(0) : '', m.note ?? '']);
    for (const s of btreeSkips) rows.push([s.name, '-', '-', `not available: ${s.skipped}`]);
    out.push(table(['operation', 'ops/sec', 'ns/op', 'note'], rows));
    out.push('');
  }

  const e2e = r.metrics.filter((m) => m.group === 'e2e');
  const e2eSkips = r.skips.filter((s) => s.group === 'e2e');
  if (e2e.length || e2eSkips.length) {
    out.push('End-to-end workloads');
    const names: { key: string; name: string; unit: string }[] = [];
    for (const m of e2e) {
      const key = m.id.slice(0, m.id.lastIndexOf('.'));
      if (!names.some((n) => n.key === key)) names.push({ key, name: m.name, unit: m.unit });
    }
    const rows = names.map(({ key, name, unit }) => {
      const v = (t: string): number | undefined => e2e.find((m) => m.id === `${key}.${t}`)?.value;
      const cell = (t: string): string => {
        const x = v(t);
        if (x !== undefined) return fmtNum(x);
        return e2eSkips.some((s) => s.target === t && (s.id === `${key}.${t}` || s.id === `e2e.*.${t}`)) ? 'skip' : '-';
      };
      return [name, unit, cell('ext4'), cell('fuse-passthrough'), cell('scoutfs'), cell('scoutfs-native'), cell('scoutfs-wb'),
        ratio(v('scoutfs'), v('fuse-passthrough')), ratio(v('scoutfs-native'), v('fuse-passthrough')), ratio(v('scoutfs-wb'), v('fuse-passthrough')),
        ratio(v('scoutfs'), v('ext4')), ratio(v('fuse-passthrough'), v('ext4'))];
    });
    out.push(table(['workload', 'unit', 'ext4', 'fuse-pt', 'scoutfs', 'sfs-native', 'sfs-wb', 'scoutfs/fuse', 'native/fuse', 'wb/fuse', 'scoutfs/ext4', 'fuse/ext4'], rows));
    out.push('(higher is better everywhere; a ratio is the first column over the second)');
    for (const s of e2eSkips) out.push(`  ${s.target ?? ''}${s.id.includes('*') ? '' : ` ${s.name}`}: ${s.skipped}`);
    const notes = e2e.filter((m) => m.note).map((m) => `  ${m.target} ${m.name}: ${m.note}`);
    if (notes.length) out.push(...notes);
    out.push('');
  }
  const ratios = r.metrics.filter((m) => m.group === 'ratio' && m.note !== undefined);
  const abs = r.metrics.filter((m) => m.group === 'e2e' && (m.target === 'scoutfs' || m.target === 'scoutfs-wb') && ABS_AIMS[m.id.slice(0, m.id.lastIndexOf('.'))] !== undefined);
  if (ratios.length || abs.length) {
    out.push('scoutfs (kernel transport) against the issue #10 floors (same run)');
    const rows = ratios.map((m) => [m.name, m.target ?? '', `${m.value.toFixed(2)}x`, m.note ?? '']);
    for (const m of abs) {
      const aim = ABS_AIMS[m.id.slice(0, m.id.lastIndexOf('.'))]!;
      rows.push([m.name, m.target ?? '', `${fmtNum(m.value)} ${m.unit}`, `floor >= ${fmtNum(aim)}: ${m.value >= aim ? 'met' : 'NOT met'}`]);
    }
    out.push(table(['workload', 'against', 'value', 'floor'], rows));
    out.push('');
  }
  if (r.notes.length) out.push('Notes', ...r.notes.map((n) => `  ${n}`), '');
  if (r.errors.length) out.push('ERRORS', ...r.errors.map((e) => `  ${e}`), '');
  return out.join('\n');
}

/* ---- baseline ------------------------------------------------------------ */

export type Verdict = 'ok' | 'REGRESSION' | 'improved' | 'new' | 'missing';

export interface Comparison {
  id: string;
  base: number | null;
  now: number | null;
  unit: string;
  /** Signed so that positive is better; null when one side is missing. */
  changePct: number | null;
  verdict: Verdict;
}

export function toBaseline(r: RunReport): Baseline {
  const metrics: Baseline['metrics'] = {};
  for (const m of r.metrics) metrics[m.id] = { value: m.value, unit: m.unit, higherIsBetter: m.higherIsBetter };
  return { createdAt: r.createdAt, mode: r.mode, host: r.host, metrics };
}

/**
 * What part of a run a metric id belongs to: its group (the id's first
 * segment) and, for e2e and ratio metrics, its target (the last segment).
 * A baseline metric whose scope this run did not measure at all (another
 * target, --micro-only, --e2e-only, --workloads) is "not run", not missing.
 */
export function scopeOf(id: string): string {
  const dot = id.indexOf('.');
  if (dot < 0) return '';
  const group = id.slice(0, dot);
  return group === 'e2e' || group === 'ratio' ? `${group}@${id.slice(id.lastIndexOf('.') + 1)}` : group;
}

export function compare(r: RunReport, b: Baseline, noisePct: number): { rows: Comparison[]; flagged: boolean; notRun: number } {
  const flagged = b.mode === r.mode;
  const rows: Comparison[] = [];
  const seen = new Set<string>();
  const scopes = new Set(r.metrics.map((m) => scopeOf(m.id)));
  let notRun = 0;
  for (const m of r.metrics) {
    seen.add(m.id);
    const base = b.metrics[m.id];
    if (!base) {
      rows.push({ id: m.id, base: null, now: m.value, unit: m.unit, changePct: null, verdict: 'new' });
      continue;
    }
    const raw = base.value === 0 ? 0 : (m.value / base.value - 1) * 100;
    const changePct = m.higherIsBetter ? raw : -raw;
    let verdict: Verdict = 'ok';
    if (flagged && changePct < -noisePct) verdict = 'REGRESSION';
    else if (flagged && changePct > noisePct) verdict = 'improved';
    rows.push({ id: m.id, base: base.value, now: m.value, unit: m.unit, changePct, verdict });
  }
  for (const [id, base] of Object.entries(b.metrics)) {
    if (seen.has(id)) continue;
    if (!scopes.has(scopeOf(id))) {
      notRun++;
      continue;
    }
    rows.push({ id, base: base.value, now: null, unit: base.unit, changePct: null, verdict: 'missing' });
  }
  return { rows, flagged, notRun };
}

export function renderComparison(
  c: { rows: Comparison[]; flagged: boolean; notRun?: number }, b: Baseline, path: string, noisePct: number,
): string {
  const out = [`Compared with ${path} (${b.mode} run of ${b.createdAt}; noise band ±${noisePct}%)`];
  if (!c.flagged) out.push('  the baseline was made in another mode (--quick vs full): changes shown, not flagged');
  out.push(
    table(
      ['metric', 'baseline', 'now', 'unit', 'change', 'verdict'],
      c.rows.map((x) => [
        x.id,
        x.base === null ? '-' : fmtNum(x.base),
        x.now === null ? '-' : fmtNum(x.now),
        x.unit,
        x.changePct === null ? '' : `${x.changePct >= 0 ? '+' : ''}${x.changePct.toFixed(1)}%`,
        x.verdict,
      ]),
    ),
  );
  if (c.notRun) out.push(`(${c.notRun} baseline metrics belong to groups or targets this run did not measure)`);
  const reg = c.rows.filter((x) => x.verdict === 'REGRESSION');
  out.push(reg.length ? `${reg.length} regression(s) beyond ${noisePct}%: ${reg.map((x) => x.id).join(', ')}` : 'no regressions beyond the noise band');
  return out.join('\n');
}

export async function writeJson(path: string, data: unknown): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, JSON.stringify(data, null, 2) + '\n');
}

export async function readBaseline(path: string): Promise<Baseline | null> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch {
    return null;
  }
  const b = JSON.parse(text) as Baseline;
  if (typeof b !== 'object' || b === null || typeof b.metrics !== 'object') throw new Error(`${path} is not a perf baseline`);
  return b;
}
