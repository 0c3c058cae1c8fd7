/*
 * perf/benchmark.ts is the one perf command (dist/perf/benchmark.js):
 *
 *   node dist/perf/benchmark.js [--quick] [--micro-only | --e2e-only]
 *        [--json FILE] [--baseline FILE] [--rewrite-baseline] [--noise PCT]
 *        [--fail-on-regression] [--no-fio] [--no-btree] [--btree-items N]
 *        [--targets ext4,fuse-passthrough,scoutfs,scoutfs-native] [--workloads meta,meta2,stream,bytes,fio] [--rounds N]
 *        [--profile DIR]
 *        [--base DIR] [--files N] [--stream-mib N] [--fio-seconds N]
 *
 * It owns the order of a run and its outputs: micro benchmarks (micro.ts),
 * the btree benchmark (btree.ts through btree-suite.ts; part of the micro
 * side, so --micro-only runs it and --e2e-only does not), then end-to-end
 * workloads on every target (e2e.ts); then the readable
 * table on stdout, the JSON report (default perf/results/latest.json), and
 * the comparison with the stored baseline (default perf/baseline.json),
 * which --rewrite-baseline replaces with this run.  Progress goes to stderr.
 *
 * Sizes.  Full: 10k files per client, 1 GiB stream, fio 10 s per pattern
 * on a 256 MiB file, benchmark.js 3 s per micro benchmark, 1M-item btree;
 * about 5 minutes on the 2-core machine with the three e2e targets.
 * --quick: 2k files, 256 MiB, 3 s, 0.5 s, 100k items; about a minute.
 * Explicit flags override either.  After the e2e targets the scoutfs
 * ratios to the other targets are added as metrics (results.ts e2eRatios).
 *
 * Exit code: 0, or 1 when a target failed (errors section), or with
 * --fail-on-regression when the baseline comparison flagged a regression;
 * 2 for a usage error.  The harness process hooks are installed, so ^C
 * unmounts and detaches everything a target set up.
 */
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { installProcessHooks } from '../harness/cleanup.js';
import { runBtreeSuite } from './btree-suite.js';
import { runE2E, WORKLOADS, type Workload } from './e2e.js';
import { runMicro } from './micro.js';
import {
  compare,
  e2eRatios,
  hostInfo,
  readBaseline,
  renderComparison,
  renderReport,
  toBaseline,
  writeJson,
  type RunReport,
} from './results.js';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

interface Args {
  quick: boolean;
  microOnly: boolean;
  e2eOnly: boolean;
  json: string;
  baseline: string;
  rewriteBaseline: boolean;
  noisePct: number;
  failOnRegression: boolean;
  noFio: boolean;
  noBtree: boolean;
  btreeItems: number | null;
  targets: string[] | null;
  workloads: Workload[] | null;
  profileDir: string | null;
  base: string;
  files: number | null;
  streamMiB: number | null;
  fioSeconds: number | null;
  rounds: number | null;
}

function usage(msg?: string): never {
  if (msg) process.stderr.write(`benchmark: ${msg}\n`);
  process.stderr.write(
    'usage: node dist/perf/benchmark.js [--quick] [--micro-only|--e2e-only] [--json FILE] [--baseline FILE]\n' +
      '       [--rewrite-baseline] [--noise PCT] [--fail-on-regression] [--no-fio] [--no-btree] [--btree-items N]\n' +
      '       [--targets ext4,fuse-passthrough,scoutfs,scoutfs-native] [--workloads meta,meta2,stream,bytes,fio] [--rounds N] [--profile DIR]\n' +
      '       [--base DIR] [--files N] [--stream-mib N] [--fio-seconds N]\n',
  );
  process.exit(2);
}

function parse(argv: string[]): Args {
  const a: Args = {
    quick: false, microOnly: false, e2eOnly: false,
    json: join(REPO, 'perf', 'results', 'latest.json'),
    baseline: join(REPO, 'perf', 'baseline.json'),
    rewriteBaseline: false, noisePct: 15, failOnRegression: false, noFio: false, noBtree: false, btreeItems: null, targets: null, workloads: null, profileDir: null,
    base: join(REPO, 'run'), files: null, streamMiB: null, fioSeconds: null, rounds: null,
  };
  const num = (flag: string, v: string | undefined): number => {
    if (v === undefined || !/^\d+(\.\d+)?$/.test(v)) usage(`${flag} needs a number`);
    return Number(v);
  };
  for (let i = 0; i < argv.length; i++) {
    const f = argv[i]!;
    const v = (): string => {
      const x = argv[++i];
      if (x === undefined) usage(`${f} needs a value`);
      return x;
    };
    switch (f) {
      case '--quick': a.quick = true; break;
      case '--micro-only': a.microOnly = true; break;
      case '--e2e-only': a.e2eOnly = true; break;
      case '--json': a.json = resolve(v()); break;
      case '--baseline': a.baseline = resolve(v()); break;
      case '--rewrite-baseline': a.rewriteBaseline = true; break;
      case '--noise': a.noisePct = num(f, argv[++i]); break;
      case '--fail-on-regression': a.failOnRegression = true; break;
      case '--no-fio': a.noFio = true; break;
      case '--no-btree': a.noBtree = true; break;
      case '--btree-items': a.btreeItems = num(f, argv[++i]); break;
      case '--targets': a.targets = v().split(',').filter(Boolean); break;
      case '--workloads': a.workloads = v().split(',').filter(Boolean) as Workload[]; break;
      case '--profile': a.profileDir = resolve(v()); break;
      case '--base': a.base = resolve(v()); break;
      case '--files': a.files = num(f, argv[++i]); break;
      case '--stream-mib': a.streamMiB = num(f, argv[++i]); break;
      case '--fio-seconds': a.fioSeconds = num(f, argv[++i]); break;
      case '--rounds': a.rounds = num(f, argv[++i]); break;
      case '-h': case '--help': usage();
      // falls through (usage exits)
      default: usage(`unknown flag ${f}`);
    }
  }
  if (a.microOnly && a.e2eOnly) usage('--micro-only and --e2e-only exclude each other');
  for (const t of a.targets ?? []) if (!['ext4', 'fuse-passthrough', 'scoutfs', 'scoutfs-native', 'scoutfs-wb'].includes(t)) usage(`unknown target ${t}`);
  for (const w of a.workloads ?? []) if (!(WORKLOADS as readonly string[]).includes(w)) usage(`unknown workload ${w} (known: ${WORKLOADS.join(',')})`);
  return a;
}

async function main(): Promise<number> {
  const args = parse(process.argv.slice(2));
  installProcessHooks();
  const t0 = Date.now();
  const progress = (l: string): void => {
    process.stderr.write(`[perf ${((Date.now() - t0) / 1000).toFixed(0).padStart(4)}s] ${l}\n`);
  };
  const p = {
    microMaxTimeS: args.quick ? 0.5 : 3,
    files: args.files ?? (args.quick ? 2000 : 10_000),
    streamMiB: args.streamMiB ?? (args.quick ? 256 : 1024),
    fioSizeMiB: args.quick ? 64 : 256,
    fioSeconds: args.fioSeconds ?? (args.quick ? 3 : 10),
  };
  const report: RunReport = {
    createdAt: new Date().toISOString(),
    mode: args.quick ? 'quick' : 'full',
    host: hostInfo(),
    params: {
      ...p, microOnly: args.microOnly, e2eOnly: args.e2eOnly, noFio: args.noFio,
      targets: (args.targets ?? ['all']).join(','), workloads: (args.workloads ?? ['all']).join(','),
    },
    metrics: [],
    skips: [],
    notes: [],
    errors: [],
    durationMs: 0,
  };

  if (!args.e2eOnly) {
    progress(`micro benchmarks (benchmark.js, maxTime ${p.microMaxTimeS} s each)`);
    const m = await runMicro({ maxTimeS: p.microMaxTimeS, progress });
    report.metrics.push(...m.metrics);
    report.skips.push(...m.skips);
    report.notes.push(...m.notes);
    if (!args.noBtree) {
      const b = await runBtreeSuite({ quick: args.quick, items: args.btreeItems, progress });
      report.metrics.push(...b.metrics);
      report.skips.push(...b.skips);
      report.notes.push(...b.notes);
      progress('items: item cache and commit (perf/items.ts)');
      const { runItemsBench } = await import('./items.js');
      for (const row of await runItemsBench({ max: args.quick ? 10_000 : 100_000 })) {
        report.metrics.push({
          id: `items.${row.name.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '')}`,
          group: 'btree', name: row.name, value: row.opsPerSec, unit: 'ops/s', higherIsBetter: true,
          nsPerOp: Math.round((row.ms * 1e6) / row.ops),
          ...(row.mapOpsPerSec ? { note: `Map does it ${(row.mapOpsPerSec / row.opsPerSec).toFixed(1)}x faster` } : { note: `${row.ms} ms` }),
        });
      }
      progress('locks: cluster lock hand-overs and lock traffic per operation (perf/locks.ts)');
      const { runLocksBench } = await import('./locks.js');
      for (const row of await runLocksBench({ rounds: args.quick ? 500 : 2000 })) {
        report.metrics.push({
          id: 'locks.handover', group: 'micro', name: row.name, value: row.opsPerSec, unit: 'ops/s', higherIsBetter: true,
          nsPerOp: Math.round((row.ms * 1e6) / row.ops),
          note: `per op: ${row.requestsPerOp.toFixed(2)} LOCK requests, ${row.grantsPerOp.toFixed(2)} grants, ` +
            `${row.invalidationsPerOp.toFixed(2)} invalidations (lock protocol and message layer only; see perf/locks.ts)`,
        });
        report.metrics.push({
          id: 'locks.frames-per-op', group: 'micro', name: 'lock messages per hand-over (frames, both ways)',
          value: row.framesPerOp, unit: 'frames/op', higherIsBetter: false,
        });
      }
    }
  }
  if (!args.microOnly) {
    progress(`end-to-end workloads (run folders under ${args.base})`);
    const e = await runE2E({
      baseDir: args.base,
      files: p.files,
      streamMiB: p.streamMiB,
      fioSizeMiB: p.fioSizeMiB,
      fioSeconds: p.fioSeconds,
      noFio: args.noFio,
      targets: args.targets,
      workloads: args.workloads,
      profileDir: args.profileDir,
      rounds: args.rounds ?? (args.quick ? 1 : 3),
      progress,
      replayArgv: ['node', join(REPO, 'dist', 'perf', 'benchmark.js'), '--e2e-only', ...(args.quick ? ['--quick'] : []),
        ...(args.targets ? ['--targets', args.targets.join(',')] : []),
        ...(args.workloads ? ['--workloads', args.workloads.join(',')] : [])],
    });
    report.metrics.push(...e.metrics);
    report.skips.push(...e.skips);
    report.notes.push(...e.notes);
    report.errors.push(...e.errors);
    report.metrics.push(...e2eRatios(report.metrics));
  }
  report.durationMs = Date.now() - t0;

  process.stdout.write('\n' + renderReport(report));
  process.stdout.write(`Run took ${(report.durationMs / 1000).toFixed(0)} s (${report.mode}); host ${report.host.cpus} cpus, ${report.host.memGiB} GiB, node ${report.host.node}, kernel ${report.host.kernel}\n`);
  await writeJson(args.json, report);
  process.stdout.write(`JSON: ${args.json}\n\n`);

  let regressions = false;
  if (args.rewriteBaseline) {
    await writeJson(args.baseline, toBaseline(report));
    process.stdout.write(`Baseline rewritten: ${args.baseline}\n`);
  } else if (existsSync(args.baseline)) {
    const b = await readBaseline(args.baseline);
    if (b) {
      const c = compare(report, b, args.noisePct);
      process.stdout.write(renderComparison(c, b, args.baseline, args.noisePct) + '\n');
      regressions = c.rows.some((x) => x.verdict === 'REGRESSION');
    }
  } else {
    process.stdout.write(`No baseline at ${args.baseline} (make one with --rewrite-baseline)\n`);
  }
  if (report.errors.length) return 1;
  if (regressions && args.failOnRegression) return 1;
  return 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`benchmark: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
