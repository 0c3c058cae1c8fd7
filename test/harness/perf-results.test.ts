/*
 * Goal: the perf report logic is right without running a benchmark: the
 * baseline comparison flags a change beyond the noise band in the worse
 * direction only (for both higher- and lower-is-better metrics), does not
 * flag across modes, lists new and missing metrics; the table shows skips
 * and the crc/copy ratio.  (Timing itself belongs in perf/, never here.)
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { compare, renderReport, toBaseline, type Metric, type RunReport } from '../../perf/results.js';

function report(mode: 'full' | 'quick', metrics: Metric[]): RunReport {
  return {
    createdAt: '2026-01-01T00:00:00.000Z',
    mode,
    host: { cpus: 2, memGiB: 24, node: 'v20', kernel: 'k', root: true },
    params: {},
    metrics,
    skips: [{ id: 'e2e.*.scoutfs', group: 'e2e', name: 'all workloads', target: 'scoutfs', skipped: 'scoutfs: not mountable yet, skipped' }],
    notes: [],
    errors: [],
    durationMs: 1,
  };
}

const m = (id: string, value: number, higherIsBetter = true, extra: Partial<Metric> = {}): Metric => ({
  id, group: id.startsWith('micro') ? 'micro' : 'e2e', name: id, value, unit: 'x', higherIsBetter, ...extra,
});

test('regressions are flagged only beyond the band and only when worse', () => {
  const base = toBaseline(report('full', [m('a', 100), m('b', 100), m('c', 100), m('lat', 100, false), m('gone', 1)]));
  const now = report('full', [m('a', 90), m('b', 80), m('c', 130), m('lat', 120, false), m('fresh', 5)]);
  const c = compare(now, base, 15);
  const v = Object.fromEntries(c.rows.map((r) => [r.id, r.verdict]));
  assert.deepEqual(v, { a: 'ok', b: 'REGRESSION', c: 'improved', lat: 'REGRESSION', fresh: 'new', gone: 'missing' });
  const lat = c.rows.find((r) => r.id === 'lat')!;
  assert.ok(Math.abs(lat.changePct! - -20) < 1e-9, 'lower-is-better: +20% value is -20% change');
});

test('a baseline from another mode is compared but not flagged', () => {
  const base = toBaseline(report('quick', [m('a', 100)]));
  const c = compare(report('full', [m('a', 10)]), base, 15);
  assert.equal(c.flagged, false);
  assert.equal(c.rows[0]!.verdict, 'ok');
});

test('the table shows the crc/copy ratio, e2e ratios and skips', () => {
  const r = report('full', [
    m('micro.crc.64k', 250_000, true, { name: 'crc32c 64 KiB', nsPerOp: 4000, rmePct: 1 }),
    m('micro.copy.64k', 500_000, true, { name: 'Buffer.copy 64 KiB', nsPerOp: 2000, rmePct: 1 }),
    m('e2e.meta.create.ext4', 20_000, true, { name: 'create (1 proc)', target: 'ext4', unit: 'files/s' }),
    m('e2e.meta.create.fuse-passthrough', 2_000, true, { name: 'create (1 proc)', target: 'fuse-passthrough', unit: 'files/s' }),
  ]);
  const text = renderReport(r);
  assert.match(text, /crc32c 64 KiB costs 2\.00x a Buffer\.copy of the same bytes \(target <= 3x: met\)/);
  // Columns: ext4, fuse-pt, scoutfs, sfs-native, sfs-wb, then the ratios.
  assert.match(text, /create \(1 proc\)\s+files\/s\s+20\.0k\s+2000\s+skip\s+-\s+-\s+n\/a\s+n\/a\s+n\/a\s+n\/a\s+0\.10x/);
  assert.match(text, /scoutfs: not mountable yet, skipped/);
});
