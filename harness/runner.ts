/*
 * harness/runner.ts owns a run: a named scenario played once with N nodes
 * and a seed, inside its own run folder, under one cleanup registry.
 *
 *   <base>/<scenario>-<timestamp>/
 *       run.json        scenario, seed, nodes, options, start time
 *       node0.log ...   everything each node printed (proc.ts)
 *       images/         device images (kept when the run fails)
 *       mnt/            mount points the run made
 *       result.json     outcome, error, what was created and torn down
 *       replay.sh       only on failure: the command that replays the run
 *
 * A scenario is a function of a RunContext.  The context hands out every
 * resource (images, loop devices, mounts, the private network, nodes) and
 * records each in `created`, so a test can check afterwards that each one is
 * gone.  The node daemon is a plug-in (NodeDaemon, harness/scenarios.ts):
 * the scoutfs mount, or the heartbeat process of the harness self-tests,
 * started through the same startNode call with the same log, readiness
 * and teardown.
 *
 * Invariants:
 *   - Cleanup runs exactly once per run, whatever ended it: the scenario
 *     returned, threw, or ran past timeoutMs (then ctx.signal is aborted and
 *     the registry is closed, so a late resource is undone at once), or the
 *     harness process got a signal (installProcessHooks).
 *   - The first action registered is a sweep that unmounts anything still
 *     mounted under the run folder, so it runs last, after every process is
 *     gone: it catches mounts a daemon made that nobody registered.
 *   - A run whose cleanup reported an error is a failed run, even if the
 *     scenario passed: a leak is a bug.
 *   - The same scenario, seed and node count make the same choices
 *     (ctx.random is the only randomness a scenario may use), which is what
 *     replay.sh relies on.
 */
import { mkdir, writeFile, chmod, access } from 'node:fs/promises';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CleanupRegistry, installProcessHooks, unmountAllUnder, type CleanupReport } from './cleanup.js';
import { attachLoop, createImage, type Image, type LoopDevice } from './loop.js';
import { mountExt4, mountTmpfs, mkfsExt4 } from './mount.js';
import { createNetwork, netnsSupported, wrapInNetns, type PrivateNetwork } from './netns.js';
import { startProc, type NodeProc } from './proc.js';
import { HarnessTimeoutError, waitFor, type WaitOptions } from './sys.js';

/** What a scenario knows about one node when starting it. */
export interface NodeInfo {
  index: number;
  name: string;
  /** Block device (or image) path the node should use, if any. */
  device: string | null;
  /** Address in the private network, or null on the host loopback. */
  address: string | null;
  /** Where the node should mount, if it mounts. */
  mountPoint: string | null;
}

/** The plug-in that says how to run one node. */
export interface NodeDaemon {
  name: string;
  command(ctx: RunContext, node: NodeInfo): { command: string; args: string[]; env?: Record<string, string>; cwd?: string };
  /** A predicate that holds once the node is ready. */
  ready(ctx: RunContext, node: NodeInfo, proc: NodeProc): () => Promise<boolean>;
  readyTimeoutMs: number;
}

export interface Created {
  images: string[];
  loopDevices: string[];
  mounts: string[];
  namespaces: string[];
  pids: number[];
}

export interface RunContext {
  readonly scenario: string;
  readonly seed: number;
  readonly nodes: number;
  readonly runDir: string;
  /** Short unique id of this run (namespace names carry it). */
  readonly tag: string;
  readonly registry: CleanupRegistry;
  readonly signal: AbortSignal;
  readonly created: Created;
  readonly options: Readonly<Record<string, string | boolean>>;
  /** Uniform in [0, 1), from the seed. */
  random(): number;
  log(msg: string): void;
  createImage(name: string, sizeBytes: number): Promise<Image>;
  attachLoop(image: Image): Promise<LoopDevice>;
  mountTmpfs(name: string, sizeBytes: number): Promise<string>;
  /** mkfs.ext4 the device and mount it under mnt/<name>. */
  mountExt4(device: string, name: string): Promise<string>;
  /** The private network (created on first call), or null if unsupported. */
  network(): Promise<PrivateNetwork | null>;
  startNode(daemon: NodeDaemon, node: Omit<NodeInfo, 'name' | 'address'>): Promise<NodeProc>;
  waitFor<T>(pred: () => T | Promise<T>, opts: Omit<WaitOptions, 'signal'>): Promise<NonNullable<T>>;
}

export interface Scenario {
  name: string;
  description: string;
  defaultNodes: number;
  defaultTimeoutMs?: number;
  run(ctx: RunContext): Promise<void>;
}

export interface RunOptions {
  nodes?: number;
  seed?: number;
  /** Parent of run folders; default ./run. */
  baseDir?: string;
  timeoutMs?: number;
  /** Keep the device images even when the run succeeds. */
  keepImages?: boolean;
  /** Scenario options (e.g. netns: true), passed through to replay.sh. */
  options?: Record<string, string | boolean>;
  /**
   * The command replay.sh runs, for runs started by another CLI (perf);
   * default: dist/harness/run.js with this scenario, seed and options.
   */
  replayArgv?: string[];
  /** Install SIGINT/SIGTERM/crash hooks (the CLI does; tests do not). */
  installHooks?: boolean;
  log?: (line: string) => void;
}

export interface RunResult {
  ok: boolean;
  scenario: string;
  seed: number;
  nodes: number;
  runDir: string;
  timedOut: boolean;
  error: string | null;
  replayPath: string | null;
  cleanup: { ran: string[]; skipped: string[]; errors: { name: string; error: string }[] };
  created: Created;
}

/* ---- scenario registry --------------------------------------------------- */

const scenarios = new Map<string, Scenario>();

export function registerScenario(s: Scenario): void {
  if (!/^[a-z0-9][a-z0-9-]*$/.test(s.name)) throw new Error(`bad scenario name ${s.name}`);
  if (scenarios.has(s.name)) throw new Error(`scenario ${s.name} registered twice`);
  scenarios.set(s.name, s);
}

export function getScenario(name: string): Scenario {
  const s = scenarios.get(name);
  if (!s) throw new Error(`unknown scenario ${name}; known: ${[...scenarios.keys()].join(', ')}`);
  return s;
}

export function listScenarios(): Scenario[] {
  return [...scenarios.values()];
}

/* ---- helpers ------------------------------------------------------------- */

/** mulberry32: small, fast, good enough to pick orders and delays. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

let tagCounter = 0;

function makeTag(): string {
  tagCounter++;
  return `${process.pid.toString(36)}${tagCounter.toString(36)}${Math.floor(Math.random() * 36 ** 2).toString(36)}`.slice(0, 12);
}

function stamp(d: Date): string {
  const p = (n: number, w = 2): string => String(n).padStart(w, '0');
  return `${d.getFullYear()}${p(d.getMonth() + 1)}${p(d.getDate())}-${p(d.getHours())}${p(d.getMinutes())}${p(d.getSeconds())}-${p(d.getMilliseconds(), 3)}`;
}

async function exists(p: string): Promise<boolean> {
  try {
    await access(p);
    return true;
  } catch {
    return false;
  }
}

/** The CLI that replays a run (dist/harness/run.js next to this file). */
export const RUN_CLI = join(dirname(fileURLToPath(import.meta.url)), 'run.js');

function shellQuote(s: string): string {
  return /^[A-Za-z0-9_./:=@%+-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

export function replayCommand(r: { scenario: string; seed: number; nodes: number }, opts: RunOptions): string[] {
  const argv = ['node', RUN_CLI, r.scenario, '--seed', String(r.seed), '--nodes', String(r.nodes)];
  if (opts.timeoutMs !== undefined) argv.push('--timeout-ms', String(opts.timeoutMs));
  if (opts.baseDir !== undefined) argv.push('--base', resolve(opts.baseDir));
  for (const [k, v] of Object.entries(opts.options ?? {})) {
    if (v === true) argv.push(`--${k}`);
    else if (v !== false) argv.push(`--${k}`, v);
  }
  return argv;
}

/* ---- running ------------------------------------------------------------- */

export async function runScenario(nameOrScenario: string | Scenario, opts: RunOptions = {}): Promise<RunResult> {
  const scenario = typeof nameOrScenario === 'string' ? getScenario(nameOrScenario) : nameOrScenario;
  const nodes = opts.nodes ?? scenario.defaultNodes;
  if (!Number.isInteger(nodes) || nodes < 1 || nodes > 64) throw new Error(`bad node count ${nodes}`);
  const seed = (opts.seed ?? Math.floor(Math.random() * 2 ** 32)) >>> 0;
  const timeoutMs = opts.timeoutMs ?? scenario.defaultTimeoutMs ?? 120_000;
  const say = opts.log ?? ((l: string) => process.stderr.write(l + '\n'));
  if (opts.installHooks) installProcessHooks();

  const tag = makeTag();
  const base = resolve(opts.baseDir ?? 'run');
  let runDir = join(base, `${scenario.name}-${stamp(new Date())}`);
  if (await exists(runDir)) runDir = `${runDir}-${tag}`;
  await mkdir(join(runDir, 'images'), { recursive: true });
  await mkdir(join(runDir, 'mnt'), { recursive: true });

  const prefix = `[${scenario.name} seed=${seed}]`;
  const log = (m: string): void => say(`${prefix} ${m}`);
  const registry = new CleanupRegistry(`${scenario.name}/${tag}`, 30_000, log);
  const created: Created = { images: [], loopDevices: [], mounts: [], namespaces: [], pids: [] };
  const abort = new AbortController();
  const random = seededRandom(seed);
  const options = { ...(opts.options ?? {}) };

  await writeFile(
    join(runDir, 'run.json'),
    JSON.stringify({ scenario: scenario.name, seed, nodes, timeoutMs, options, tag, startedAt: new Date().toISOString() }, null, 2) + '\n',
  );
  const replayPath = join(runDir, 'replay.sh');
  const writeReplay = async (why: string): Promise<void> => {
    const argv = opts.replayArgv ?? replayCommand({ scenario: scenario.name, seed, nodes }, { ...opts, timeoutMs });
    await writeFile(
      replayPath,
      [
        '#!/bin/sh',
        `# Replays run ${runDir}`,
        `# failed: ${why.split('\n')[0]}`,
        `cd ${shellQuote(process.cwd())} || exit 1`,
        `exec ${argv.map(shellQuote).join(' ')} "$@"`,
        '',
      ].join('\n'),
    );
    await chmod(replayPath, 0o755);
  };
  // Registered first, so it runs last.  When the harness is interrupted
  // (signal hook) the normal ending below may never run, so unless the
  // scenario is known to have passed the replay is written here too (the
  // normal ending rewrites it with the real error when it gets there).
  let scenarioPassed = false;
  await registry.add('write replay.sh unless the scenario passed', async () => {
    if (!scenarioPassed) await writeReplay('run interrupted or failed before cleanup');
  });
  // Anything still mounted in the run folder, after every process is gone.
  await registry.add(`unmount everything under ${runDir}`, async () => {
    const swept = await unmountAllUnder(runDir);
    if (swept.length) log(`cleanup: swept stray mounts ${swept.join(', ')}`);
  });

  let net: PrivateNetwork | null | undefined;
  const ctx: RunContext = {
    scenario: scenario.name,
    seed,
    nodes,
    runDir,
    tag,
    registry,
    signal: abort.signal,
    created,
    options,
    random,
    log,
    async createImage(name, sizeBytes) {
      abort.signal.throwIfAborted();
      const img = await createImage(registry, join(runDir, 'images', `${name}.img`), sizeBytes);
      created.images.push(img.path);
      return img;
    },
    async attachLoop(image) {
      abort.signal.throwIfAborted();
      const dev = await attachLoop(registry, image.path);
      if (dev.device) created.loopDevices.push(dev.device);
      return dev;
    },
    async mountTmpfs(name, sizeBytes) {
      abort.signal.throwIfAborted();
      const target = join(runDir, 'mnt', name);
      const m = await mountTmpfs(registry, target, sizeBytes);
      created.mounts.push(m);
      return m;
    },
    async mountExt4(device, name) {
      abort.signal.throwIfAborted();
      await mkfsExt4(device, name.slice(0, 16));
      const m = await mountExt4(registry, device, join(runDir, 'mnt', name));
      created.mounts.push(m);
      return m;
    },
    async network() {
      abort.signal.throwIfAborted();
      if (net !== undefined) return net;
      if (!(await netnsSupported())) {
        log('private network not supported (needs root and iproute2); nodes use the host loopback');
        net = null;
        return net;
      }
      net = await createNetwork(registry, { tag, nodes });
      created.namespaces.push(net.hub, ...net.nodes.map((n) => n.ns));
      return net;
    },
    async startNode(daemon, partial) {
      abort.signal.throwIfAborted();
      const nodeNet = net?.nodes[partial.index] ?? null;
      const info: NodeInfo = { ...partial, name: `node${partial.index}`, address: nodeNet?.address ?? null };
      const c = daemon.command(ctx, info);
      const wrapped = nodeNet ? wrapInNetns(nodeNet.ns, c.command, c.args) : { command: c.command, args: c.args };
      const proc = await startProc(registry, {
        name: info.name,
        command: wrapped.command,
        args: wrapped.args,
        env: {
          SCOUTFS_NODE_ID: String(info.index),
          SCOUTFS_NODE_NAME: info.name,
          ...(info.device ? { SCOUTFS_DEVICE: info.device } : {}),
          ...(info.address ? { SCOUTFS_NODE_ADDR: info.address } : {}),
          ...(info.mountPoint ? { SCOUTFS_MOUNT: info.mountPoint } : {}),
          ...(c.env ?? {}),
        },
        ...(c.cwd ? { cwd: c.cwd } : {}),
        logPath: join(runDir, `${info.name}.log`),
      });
      created.pids.push(proc.pid);
      await proc.waitReady(daemon.ready(ctx, info, proc), {
        timeoutMs: daemon.readyTimeoutMs,
        what: `${daemon.name} ready`,
        signal: abort.signal,
      });
      log(`${info.name} ready (pid ${proc.pid}${info.address ? `, ${info.address}` : ''})`);
      return proc;
    },
    waitFor(pred, o) {
      return waitFor(pred, { ...o, signal: abort.signal });
    },
  };

  log(`start: ${nodes} node(s), run folder ${runDir}`);
  let error: Error | null = null;
  let timedOut = false;
  const work = Promise.resolve().then(() => scenario.run(ctx));
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<'timeout'>((r) => {
    timer = setTimeout(() => r('timeout'), timeoutMs);
  });
  try {
    const r = await Promise.race([work.then(() => 'done' as const), deadline]);
    if (r === 'timeout') {
      timedOut = true;
      error = new HarnessTimeoutError(`scenario ${scenario.name}`, timeoutMs);
      abort.abort(error);
      // The scenario may still be running; whatever it does now fails or is
      // undone at once by the closed registry.  Never leave its rejection
      // unhandled.
      work.catch(() => {});
    }
  } catch (err) {
    error = err instanceof Error ? err : new Error(String(err));
    abort.abort(error);
  } finally {
    clearTimeout(timer);
  }

  // On success images go; --keep-images keeps them like a failure does.
  scenarioPassed = error === null;
  const rep: CleanupReport = await registry.runAll({ ok: error === null && !opts.keepImages });
  for (const e of rep.errors) log(`cleanup error: ${e.name}: ${e.error.message}`);
  if (!error && rep.errors.length) error = new Error(`cleanup failed: ${rep.errors.map((e) => e.name).join('; ')}`);

  const ok = error === null;
  if (!ok) await writeReplay(error?.message ?? 'unknown');
  const result: RunResult = {
    ok,
    scenario: scenario.name,
    seed,
    nodes,
    runDir,
    timedOut,
    error: error ? (error.stack ?? error.message) : null,
    replayPath: ok ? null : replayPath,
    cleanup: {
      ran: rep.ran,
      skipped: rep.skipped,
      errors: rep.errors.map((e) => ({ name: e.name, error: e.error.message })),
    },
    created,
  };
  await writeFile(join(runDir, 'result.json'), JSON.stringify(result, null, 2) + '\n');
  log(ok ? 'passed' : `FAILED: ${error?.message}\n  replay: ${replayPath}`);
  return result;
}
