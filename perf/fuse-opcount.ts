/*
 * perf/fuse-opcount.ts owns a diagnostic of the perf suite: how many FUSE
 * requests each metadata syscall costs, and how long our handlers take for
 * each, on the scoutfs Fs under several mount option sets and on the
 * fuse-native passthrough (perf/fuse-passthrough.ts).
 *
 *   node dist/perf/fuse-opcount.js [--files N] [--base DIR] [--variants a,b]
 *
 * Why.  A FUSE request is a round trip through the kernel, libfuse's loop
 * thread and the Node main thread (uv_async, then a semaphore back); on
 * the 2-core machine that costs more than most of our handlers.  The
 * end-to-end rates (e2e.ts) cannot say whether a slow create is our code
 * or the number of requests the kernel sends for it: this does.
 *
 * Variants (each one harness run with its own loop devices, daemon and
 * cleanup, like the e2e targets):
 *   passthrough      perf/fuse-passthrough.ts's ops and mount options
 *                    (the scoutfs mount's: attr_timeout=0, entry_timeout=1,
 *                    negative_timeout=0, default_permissions), tmpfs backing
 *   scoutfs          ScoutFs (src/mount/mount.ts openMount) through the
 *                    adapter (src/fuse/adapter.ts makeAdapter) with the
 *                    options the mount uses (fuseOptions: attr_timeout=0,
 *                    entry_timeout=1, negative_timeout=0,
 *                    default_permissions)
 *   scoutfs-noperm   the same without default_permissions
 *   scoutfs-cached   the same with attr_timeout=1 as well
 *                    (libfuse's defaults; not coherent across mounts)
 *
 * The daemon is this file run as `daemon ...` in a child process (never
 * the workload's process: a synchronous syscall on a mount served by the
 * same process deadlocks).  It wraps every op to count calls and the time
 * from the call to the answer, and on SIGUSR2 prints one JSON line
 * {"opcount":{op:[calls, total us]}} to its log and resets.  The
 * orchestrator runs the metadata workload of workloads.ts (create, stat,
 * readdir, unlink of N files, one client) and signals between phases.
 *
 * It mounts with the fuse-native package directly (not the patched
 * binding the daemon may load): request counts do not depend on it.  The
 * scoutfs variants open image files through loop devices, so it needs
 * root, /dev/fuse and fusermount, like the e2e targets.
 */
import { createRequire } from 'node:module';
import { mkdir, readFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { installProcessHooks, unmount } from '../harness/cleanup.js';
import { logMatches, mountAppears, startProc, type NodeProc } from '../harness/proc.js';
import { runScenario, type RunContext, type Scenario } from '../harness/runner.js';
import { sh, sleep } from '../harness/sys.js';
import { table } from './results.js';
import { metaWorkload } from './workloads.js';

const SELF = fileURLToPath(import.meta.url);
const REPO = join(dirname(SELF), '..', '..');
const CLI = join(REPO, 'bin', 'scoutfs');
const GiB = 2 ** 30;
const QUORUM_PORT = 42310;
/** workload-worker.ts lists the directory this many times in its readdir phase. */
const READDIR_PASSES = 5;

type Cb = (...r: unknown[]) => void;
type Ops = Record<string, unknown>;

export const VARIANTS = ['passthrough', 'scoutfs', 'scoutfs-noperm', 'scoutfs-cached'] as const;
type Variant = (typeof VARIANTS)[number];

/* ---- the daemon ------------------------------------------------------------------------ */

function counted(ops: Ops): { ops: Ops; take: () => Record<string, [number, number]> } {
  let stats: Record<string, [number, number]> = {};
  const out: Ops = {};
  for (const [name, fn] of Object.entries(ops)) {
    if (typeof fn !== 'function') continue;
    out[name] = (...args: unknown[]) => {
      const cb = args[args.length - 1] as Cb;
      const t0 = process.hrtime.bigint();
      args[args.length - 1] = (...r: unknown[]) => {
        const s = (stats[name] ??= [0, 0]);
        s[0]++;
        s[1] += Number(process.hrtime.bigint() - t0) / 1e3;
        cb(...r);
      };
      return (fn as (...a: unknown[]) => unknown)(...args);
    };
  }
  return { ops: out, take: () => { const s = stats; stats = {}; return s; } };
}

async function daemon(argv: string[]): Promise<void> {
  const [kind, ...rest] = argv;
  const require = createRequire(import.meta.url);
  const Fuse = require('fuse-native') as new (mnt: string, ops: Ops, o: Ops) => {
    mount(cb: (e: Error | null) => void): void;
    unmount(cb: (e: Error | null) => void): void;
  };
  let ops: Ops;
  let mnt: string;
  let fsname: string;
  let close = async (): Promise<void> => {};
  if (kind === 'passthrough') {
    const [backing, m] = rest;
    mnt = m!;
    const { passthroughOps, passthroughOptions } = await import('./fuse-passthrough.js');
    ops = passthroughOps(backing!);
    fsname = passthroughOptions('opcount-passthrough');
  } else {
    const [meta, data, m, variant] = rest;
    mnt = m!;
    const { FileBlockDevice } = await import('../src/runtime/device.js');
    const { CryptoRandom } = await import('../src/runtime/random.js');
    const { RealClock } = await import('../src/runtime/clock.js');
    const { openMount } = await import('../src/mount/mount.js');
    const { makeAdapter, fuseOptions } = await import('../src/fuse/adapter.js');
    const metaDev = await FileBlockDevice.open(meta!);
    const dataDev = await FileBlockDevice.open(data!);
    const log = (l: string): void => void process.stdout.write(`${l}\n`);
    const mo = await openMount({ metaDev, dataDev, random: new CryptoRandom(), clock: new RealClock(), log });
    ops = makeAdapter(mo.fs, { log }).ops;
    fsname = fuseOptions('opcount');
    if (variant === 'scoutfs-noperm') fsname = fsname.replace(',default_permissions', '');
    if (variant === 'scoutfs-cached') fsname = fsname.replace('attr_timeout=0', 'attr_timeout=1');
    close = async () => {
      await mo.close();
      await metaDev.close();
      await dataDev.close();
    };
  }
  const c = counted(ops);
  process.on('SIGUSR2', () => process.stdout.write(JSON.stringify({ opcount: c.take() }) + '\n'));
  const fuse = new Fuse(mnt, c.ops, { fsname, maxRead: 131072, timeout: 600_000 });
  await new Promise<void>((res, rej) => fuse.mount((e) => (e ? rej(e) : res())));
  process.stdout.write(`mounted ${mnt} (${fsname})\n`);
  const stop = (): void => {
    fuse.unmount(() => {
      close().then(() => process.exit(0), (e: unknown) => {
        process.stderr.write(`close: ${String(e)}\n`);
        process.exit(1);
      });
    });
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

/* ---- the orchestrator ---------------------------------------------------------------- */

interface PhaseResult {
  variant: Variant;
  phase: string;
  rate: number;
  ops: Record<string, [number, number]>;
}

/** Signal the daemon and wait for the op count line it prints. */
async function takeCounts(proc: NodeProc): Promise<Record<string, [number, number]>> {
  const lines = async (): Promise<string[]> => (await proc.log()).split('\n').filter((l) => l.startsWith('{"opcount"'));
  const before = (await lines()).length;
  process.kill(proc.pid, 'SIGUSR2');
  for (let i = 0; i < 200; i++) {
    const l = await lines();
    if (l.length > before) return (JSON.parse(l[l.length - 1]!) as { opcount: Record<string, [number, number]> }).opcount;
    await sleep(25);
  }
  throw new Error(`${proc.name}: no op counts within 5 s`);
}

function variantScenario(v: Variant, files: number, out: PhaseResult[], say: (s: string) => void): Scenario {
  return {
    name: `opcount-${v}`,
    description: `FUSE requests per syscall: ${v}`,
    defaultNodes: 1,
    async run(ctx: RunContext) {
      const mnt = join(ctx.runDir, 'mnt', 'fuse');
      await mkdir(mnt, { recursive: true });
      let args: string[];
      if (v === 'passthrough') {
        args = ['passthrough', await ctx.mountTmpfs('backing', GiB), mnt];
      } else {
        const meta = await ctx.attachLoop(await ctx.createImage('meta', 4 * GiB));
        const data = await ctx.attachLoop(await ctx.createImage('data', 4 * GiB));
        await sh(process.execPath, [CLI, 'mkfs', '-A', '-f', '-Q', `0,127.0.0.1,${QUORUM_PORT}`, meta.path, data.path], { timeoutMs: 120_000 });
        args = ['scoutfs', meta.path, data.path, mnt, v];
      }
      const proc = await startProc(ctx.registry, {
        name: 'opcount-daemon', command: process.execPath, args: [SELF, 'daemon', ...args],
        logPath: join(ctx.runDir, 'daemon.log'), stopTimeoutMs: 60_000,
      });
      await ctx.registry.add(`unmount ${mnt}`, () => unmount(mnt));
      const up = mountAppears(mnt);
      const said = logMatches(proc.logPath, /^mounted /m);
      await proc.waitReady(async () => (await up()) && (await said()), { timeoutMs: 60_000, what: 'FUSE mount' });
      const phases = ['create', 'stat', 'readdir', 'unlink'];
      let n = 0;
      const m = await metaWorkload(ctx.registry, mnt, 1, files, 600_000, async (phase) => {
        const ops = await takeCounts(proc);
        if (phase === null) return;
        say(`${v}: ${phase}: ${Object.entries(ops).map(([k, [c]]) => `${k} ${c}`).join(', ')}`);
        out.push({ variant: v, phase: phases[n++]!, rate: 0, ops });
      });
      for (const r of out.filter((x) => x.variant === v)) r.rate = m[r.phase as keyof typeof m];
    },
  };
}

function render(rows: PhaseResult[], files: number): string {
  const cells = rows.map((r) => {
    // The readdir phase lists the directory READDIR_PASSES times: per listing.
    const per = r.phase === 'readdir' ? READDIR_PASSES : files;
    const shown = Object.entries(r.ops).filter(([, [c]]) => c >= per / 10).sort((a, b) => b[1][0] - a[1][0]);
    return [
      r.variant, r.phase, r.rate.toFixed(0),
      shown.map(([k, [c, us]]) => `${k} ${(c / per).toFixed(1)} (${(us / c).toFixed(0)} us)`).join(', '),
    ];
  });
  return table(['variant', 'phase', 'files/s', 'FUSE requests per file (mean time from call to answer)'], cells) +
    `\n(readdir: entries/s, and requests per listing of the whole directory of ${files} files)`;
}

async function run(argv: string[]): Promise<number> {
  let files = 2000;
  let base = join(REPO, 'run');
  let variants: Variant[] = [...VARIANTS];
  for (let i = 0; i < argv.length; i++) {
    const f = argv[i]!;
    const v = argv[++i];
    if (v === undefined) throw new Error(`${f} needs a value`);
    if (f === '--files') files = Number(v);
    else if (f === '--base') base = resolve(v);
    else if (f === '--variants') variants = v.split(',') as Variant[];
    else throw new Error(`unknown flag ${f}`);
  }
  for (const v of variants) if (!(VARIANTS as readonly string[]).includes(v)) throw new Error(`unknown variant ${v}`);
  installProcessHooks();
  const say = (s: string): void => void process.stderr.write(`[opcount] ${s}\n`);
  const rows: PhaseResult[] = [];
  let failed = 0;
  for (const v of variants) {
    const r = await runScenario(variantScenario(v, files, rows, say), { baseDir: base, timeoutMs: 20 * 60_000, log: say });
    if (!r.ok) {
      failed++;
      say(`${v} FAILED: ${r.error} (run folder ${r.runDir}); daemon log tail:\n` +
        (await readFile(join(r.runDir, 'daemon.log'), 'utf8').catch(() => '')).split('\n').slice(-10).join('\n'));
    }
  }
  process.stdout.write(render(rows, files) + '\n');
  return failed ? 1 : 0;
}

const [mode, ...rest] = process.argv.slice(2);
if (mode === 'daemon') {
  daemon(rest).catch((e: unknown) => {
    process.stderr.write(`fuse-opcount daemon: ${e instanceof Error ? e.stack ?? e.message : String(e)}\n`);
    process.exit(1);
  });
} else {
  run(mode === undefined ? [] : [mode, ...rest]).then((c) => process.exit(c), (e: unknown) => {
    process.stderr.write(`fuse-opcount: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exit(2);
  });
}
