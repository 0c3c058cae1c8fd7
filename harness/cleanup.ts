/*
 * harness/cleanup.ts owns teardown: the LIFO cleanup registry every harness
 * resource is recorded in, the process hooks that run it when the harness
 * process is interrupted or crashes, and unmounting (the one teardown step
 * that is not tied to a single module, since a node daemon may mount things
 * the harness never asked for).
 *
 * The registry.  Every module that creates something outside this process
 * (an image file, a loop device, a mount, a namespace, a child process)
 * records how to undo it with `await registry.add(name, fn)` right after the
 * thing exists.  `runAll` undoes everything in reverse order of creation, so
 * a mount made on a loop device is unmounted before the device is detached,
 * and a FUSE mount made by a daemon is unmounted while the daemon still runs
 * and only then is the daemon killed.  Invariants:
 *
 *   - Each action runs at most once, whoever triggers it (runAll, the
 *     handle's run(), a signal hook).  runAll is idempotent: a second call
 *     returns the first call's report.
 *   - One failing action never stops the others: errors are collected into
 *     the report, and each action is bounded by stepTimeoutMs.
 *   - After runAll starts the registry is closed: `add` on a closed registry
 *     undoes the new resource at once and throws RegistryClosedError.  That
 *     covers a scenario that keeps running after its run timed out: whatever
 *     it creates late is torn down instead of leaking.
 *   - Actions registered with when: 'success' (removing device images) run
 *     only when runAll is told the run succeeded, so a failed run keeps its
 *     images for replay.
 *
 * Process hooks.  `installProcessHooks()` makes SIGINT, SIGTERM, SIGHUP,
 * uncaughtException and unhandledRejection run every live registry (as a
 * failure) and then exit with 128+signal or 1.  A second SIGINT during that
 * cleanup exits at once (the user insisted); proc.ts additionally SIGKILLs
 * every child it still tracks from a synchronous 'exit' hook, the last line
 * of defence that still works when async cleanup cannot.
 *
 * Rejected: one global registry for everything.  Tests run several harness
 * runs in one process, and each must clean only its own resources, so each
 * run owns a registry; the hooks walk the set of live ones.
 */
import { readFile } from 'node:fs/promises';
import { resolve, sep } from 'node:path';
import { trySh, which, withTimeout, sleep } from './sys.js';

export type CleanupWhen = 'always' | 'success';

export interface CleanupHandle {
  readonly name: string;
  /** Undo now (at most once overall) and drop it from the registry. */
  run(): Promise<void>;
  /** Forget it without running: the resource was torn down another way. */
  release(): void;
}

export interface CleanupReport {
  ran: string[];
  skipped: string[];
  errors: { name: string; error: Error }[];
}

export class RegistryClosedError extends Error {
  constructor(label: string, name: string) {
    super(`cleanup registry ${label} is closed; undid ${name} at once`);
    this.name = 'RegistryClosedError';
  }
}

interface Entry {
  name: string;
  fn: () => Promise<void> | void;
  when: CleanupWhen;
  done: Promise<void> | null;
  released: boolean;
}

const liveRegistries = new Set<CleanupRegistry>();

export class CleanupRegistry {
  private readonly entries: Entry[] = [];
  private closing: Promise<CleanupReport> | null = null;

  constructor(
    readonly label: string,
    readonly stepTimeoutMs = 30_000,
    private readonly log: (msg: string) => void = () => {},
  ) {
    liveRegistries.add(this);
  }

  get closed(): boolean {
    return this.closing !== null;
  }

  /** Number of actions still pending. */
  get pending(): number {
    return this.entries.filter((e) => !e.done && !e.released).length;
  }

  async add(name: string, fn: () => Promise<void> | void, opts: { when?: CleanupWhen } = {}): Promise<CleanupHandle> {
    const e: Entry = { name, fn, when: opts.when ?? 'always', done: null, released: false };
    if (this.closing) {
      if (e.when === 'always') await this.runEntry(e).catch(() => {});
      throw new RegistryClosedError(this.label, name);
    }
    this.entries.push(e);
    return {
      name,
      run: () => this.runEntry(e),
      release: () => {
        e.released = true;
      },
    };
  }

  private runEntry(e: Entry): Promise<void> {
    if (e.released) return Promise.resolve();
    if (!e.done) {
      this.log(`cleanup: ${e.name}`);
      e.done = withTimeout(Promise.resolve().then(e.fn), this.stepTimeoutMs, `cleanup step "${e.name}"`);
    }
    return e.done;
  }

  /** Undo everything, newest first.  Idempotent; closes the registry. */
  runAll(outcome: { ok: boolean }): Promise<CleanupReport> {
    if (!this.closing) this.closing = this.drain(outcome.ok);
    return this.closing;
  }

  private async drain(ok: boolean): Promise<CleanupReport> {
    const report: CleanupReport = { ran: [], skipped: [], errors: [] };
    for (let i = this.entries.length - 1; i >= 0; i--) {
      const e = this.entries[i]!;
      if (e.released) continue;
      if (e.when === 'success' && !ok) {
        report.skipped.push(e.name);
        continue;
      }
      try {
        await this.runEntry(e);
        report.ran.push(e.name);
      } catch (err) {
        report.errors.push({ name: e.name, error: err instanceof Error ? err : new Error(String(err)) });
      }
    }
    liveRegistries.delete(this);
    return report;
  }
}

/* ---- process hooks ------------------------------------------------------- */

let hooksInstalled = false;
let exiting = false;

async function cleanupAllAndExit(code: number, why: string): Promise<void> {
  if (exiting) {
    // A second signal while cleaning: the user insists.
    process.stderr.write(`harness: ${why} again during cleanup; exiting now\n`);
    process.exit(code);
  }
  exiting = true;
  process.stderr.write(`harness: ${why}; cleaning up ${liveRegistries.size} run(s)\n`);
  const all = [...liveRegistries].reverse();
  for (const r of all) {
    const rep = await r.runAll({ ok: false });
    for (const { name, error } of rep.errors) process.stderr.write(`harness: cleanup ${name} failed: ${error.message}\n`);
  }
  process.exit(code);
}

/** Make signals and crashes of this process run every live registry. */
export function installProcessHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  const signals: [NodeJS.Signals, number][] = [
    ['SIGINT', 2],
    ['SIGTERM', 15],
    ['SIGHUP', 1],
  ];
  for (const [sig, no] of signals) process.on(sig, () => void cleanupAllAndExit(128 + no, `received ${sig}`));
  process.on('uncaughtException', (err) => {
    process.stderr.write(`harness: uncaught exception: ${err.stack ?? err}\n`);
    void cleanupAllAndExit(1, 'uncaught exception');
  });
  process.on('unhandledRejection', (err) => {
    process.stderr.write(`harness: unhandled rejection: ${err instanceof Error ? err.stack : String(err)}\n`);
    void cleanupAllAndExit(1, 'unhandled rejection');
  });
}

/* ---- mounts -------------------------------------------------------------- */

export interface MountEntry {
  source: string;
  target: string;
  fstype: string;
  options: string;
}

/** /proc/mounts escapes space, tab, newline and backslash as octal. */
function unescapeMountField(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

export async function listMounts(): Promise<MountEntry[]> {
  const text = await readFile('/proc/mounts', 'utf8');
  const out: MountEntry[] = [];
  for (const line of text.split('\n')) {
    const f = line.split(' ');
    if (f.length < 4) continue;
    out.push({ source: unescapeMountField(f[0]!), target: unescapeMountField(f[1]!), fstype: f[2]!, options: f[3]! });
  }
  return out;
}

export async function findMount(target: string): Promise<MountEntry | null> {
  const abs = resolve(target);
  const all = await listMounts();
  // The last entry is the top of a stack of mounts on one path.
  for (let i = all.length - 1; i >= 0; i--) if (all[i]!.target === abs) return all[i]!;
  return null;
}

export async function isMounted(target: string): Promise<boolean> {
  return (await findMount(target)) !== null;
}

/** Mount points at or below `dir`, deepest first (the order to unmount). */
export async function mountsUnder(dir: string): Promise<MountEntry[]> {
  const abs = resolve(dir);
  const all = await listMounts();
  return all
    .filter((m) => m.target === abs || m.target.startsWith(abs + sep))
    .reverse()
    .sort((a, b) => b.target.length - a.target.length);
}

/**
 * Unmount `target` until nothing is mounted there.  FUSE mounts go through
 * fusermount -u (then -uz, lazy); others through umount, then umount -l when
 * the mount is busy.  A path that is not mounted is fine: unmount is
 * idempotent.
 */
export async function unmount(target: string): Promise<void> {
  const abs = resolve(target);
  for (let attempt = 0; attempt < 8; attempt++) {
    const m = await findMount(abs);
    if (!m) return;
    const isFuse = m.fstype === 'fuse' || m.fstype.startsWith('fuse.') || m.fstype === 'fuseblk';
    const tries: [string, string[]][] = [];
    if (isFuse && (await which('fusermount'))) tries.push(['fusermount', ['-u', abs]], ['fusermount', ['-uz', abs]]);
    tries.push(['umount', [abs]], ['umount', ['-l', abs]]);
    let lastErr = '';
    let progressed = false;
    for (const [cmd, args] of tries) {
      const r = await trySh(cmd, args, { timeoutMs: 20_000 });
      if (r.exitCode === 0) {
        progressed = true;
        break;
      }
      lastErr = `${cmd} ${args.join(' ')}: ${r.stderr}`;
    }
    if (!progressed) throw new Error(`cannot unmount ${abs}: ${lastErr}`);
    // A lazy unmount detaches at once; give /proc/mounts a moment anyway.
    if (await isMounted(abs)) await sleep(20);
  }
  if (await isMounted(abs)) throw new Error(`${abs} is still mounted after 8 unmounts`);
}

/** Unmount every mount at or below `dir` (the sweep that ends a run). */
export async function unmountAllUnder(dir: string): Promise<string[]> {
  const done: string[] = [];
  for (const m of await mountsUnder(dir)) {
    if (!(await isMounted(m.target))) continue;
    await unmount(m.target);
    done.push(m.target);
  }
  return done;
}
