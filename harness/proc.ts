/*
 * harness/proc.ts owns child processes: one per node daemon (the scoutfs
 * mount, or a self-test's heartbeat process), each with its own log file.
 *
 * A node is started from a ProcSpec (command, args, env, cwd, log path).  Its
 * stdout and stderr are the log file itself (an fd handed to the child), so
 * the log keeps everything the node printed even when the harness dies, and
 * no pipe can fill up and stall a node nobody reads.  Each child leads its
 * own process group (detached), so stop/kill/pause reach anything the daemon
 * forks, and a terminal's ^C reaches only the harness, which then tears
 * nodes down in order instead of having them all die at once.
 *
 * Lifecycle, per NodeProc:
 *
 *     start ──> running ──(pause)──> stopped ──(resume)──> running
 *                  │                    │
 *                  └──(stop | kill | crash)──> exited   (terminal)
 *
 *   - stop: SIGTERM to the group, plus SIGCONT so a paused node can act on
 *     it, then SIGKILL if it is still alive after timeoutMs.
 *   - kill: SIGKILL at once (a crash, as fault injection uses it).
 *   - pause/resume: SIGSTOP/SIGCONT (a node that stops answering).
 *
 * Invariants:
 *   - `exited` settles exactly once, when the child is reaped; it never
 *     rejects.  `exitInfo` is null until then.
 *   - A cleanup action is registered before startProc returns; it stops the
 *     node.  Every started pid is also in `livePids` until it is reaped, and a
 *     synchronous process 'exit' hook SIGKILLs whatever is left there, so a
 *     harness that exits without running its async cleanup still leaves no
 *     node running.  (A harness killed with SIGKILL can leak nodes: nothing
 *     runs then.)
 *   - waitReady fails as soon as the node exits, with the log tail in the
 *     error, instead of waiting for the whole timeout.
 */
import { execa } from 'execa';
import { closeSync, openSync, writeSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { mkdirSync } from 'node:fs';
import type { CleanupRegistry } from './cleanup.js';
import { isMounted } from './cleanup.js';
import { waitFor, type WaitOptions } from './sys.js';

export { waitFor, HarnessTimeoutError } from './sys.js';

export interface ProcSpec {
  /** Node name used in logs and errors, e.g. "node0". */
  name: string;
  command: string;
  args: readonly string[];
  /** Added to this process's environment. */
  env?: Record<string, string>;
  cwd?: string;
  /** The node's log file; stdout and stderr are appended to it. */
  logPath: string;
  /** SIGTERM -> SIGKILL grace used by cleanup (default 5000 ms). */
  stopTimeoutMs?: number;
}

export interface ExitInfo {
  code: number | null;
  signal: string | null;
  /** Set when the command could not be started at all. */
  spawnError?: string;
}

const livePids = new Set<number>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const pid of livePids) signalGroup(pid, 'SIGKILL');
  });
}

/** Send `sig` to the process group led by pid; false if it is gone. */
function signalGroup(pid: number, sig: NodeJS.Signals): boolean {
  try {
    process.kill(-pid, sig);
    return true;
  } catch {
    try {
      // Not a group leader after all (exec'd wrapper): signal the process.
      process.kill(pid, sig);
      return true;
    } catch {
      return false;
    }
  }
}

/** Pids this process started that have not been reaped yet. */
export function livePidList(): number[] {
  return [...livePids];
}

/**
 * True when pid names a process that has not exited (zombies count as
 * exited).  Reads /proc so that it works for any pid, ours or not.
 */
export async function pidAlive(pid: number): Promise<boolean> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

export class NodeProc {
  exitInfo: ExitInfo | null = null;
  readonly exited: Promise<ExitInfo>;
  private paused = false;

  constructor(
    readonly spec: ProcSpec,
    readonly pid: number,
    exited: Promise<ExitInfo>,
  ) {
    this.exited = exited.then((info) => {
      this.exitInfo = info;
      return info;
    });
  }

  get name(): string {
    return this.spec.name;
  }

  get logPath(): string {
    return this.spec.logPath;
  }

  get running(): boolean {
    return this.exitInfo === null;
  }

  get isPaused(): boolean {
    return this.paused && this.running;
  }

  /** SIGTERM (and SIGCONT), then SIGKILL after timeoutMs. */
  async stop(timeoutMs = this.spec.stopTimeoutMs ?? 5_000): Promise<ExitInfo> {
    if (!this.running) return this.exitInfo!;
    signalGroup(this.pid, 'SIGTERM');
    if (this.paused) this.resume();
    const timer = new Promise<null>((r) => setTimeout(() => r(null), timeoutMs).unref());
    const info = await Promise.race([this.exited, timer]);
    if (info) return info;
    return this.kill();
  }

  /** SIGKILL the group and wait for the reap. */
  async kill(): Promise<ExitInfo> {
    if (!this.running) return this.exitInfo!;
    signalGroup(this.pid, 'SIGKILL');
    const timer = new Promise<null>((r) => setTimeout(() => r(null), 10_000).unref());
    const info = await Promise.race([this.exited, timer]);
    if (!info) throw new Error(`${this.name} (pid ${this.pid}) survived SIGKILL for 10 s`);
    return info;
  }

  pause(): void {
    if (!this.running) throw new Error(`${this.name} is not running`);
    signalGroup(this.pid, 'SIGSTOP');
    this.paused = true;
  }

  resume(): void {
    if (!this.running) throw new Error(`${this.name} is not running`);
    signalGroup(this.pid, 'SIGCONT');
    this.paused = false;
  }

  async log(): Promise<string> {
    try {
      return await readFile(this.spec.logPath, 'utf8');
    } catch {
      return '';
    }
  }

  async logTail(lines = 20): Promise<string> {
    return (await this.log()).split('\n').slice(-lines - 1).join('\n');
  }

  /**
   * Poll `pred` until it holds; fail early (with the log tail) if the node
   * exits first.
   */
  async waitReady<T>(pred: () => T | Promise<T>, opts: WaitOptions): Promise<NonNullable<T>> {
    return waitFor(async () => {
      if (this.exitInfo) {
        const why = this.exitInfo.spawnError ?? `code ${this.exitInfo.code} signal ${this.exitInfo.signal}`;
        throw new Error(`${this.name} exited (${why}) before ${opts.what}; log tail:\n${await this.logTail()}`);
      }
      return pred();
    }, { ...opts, what: `${this.name}: ${opts.what}` });
  }
}

/** Readiness predicate: a line of the log matches `re`. */
export function logMatches(logPath: string, re: RegExp): () => Promise<boolean> {
  return async () => {
    try {
      return re.test(await readFile(logPath, 'utf8'));
    } catch {
      return false;
    }
  };
}

/** Readiness predicate: `path` is a mount point in /proc/mounts. */
export function mountAppears(path: string): () => Promise<boolean> {
  return () => isMounted(path);
}

/** Start a node process; its stop is registered before this returns. */
export async function startProc(registry: CleanupRegistry, spec: ProcSpec): Promise<NodeProc> {
  installExitHook();
  mkdirSync(dirname(spec.logPath), { recursive: true });
  const fd = openSync(spec.logPath, 'a');
  const spawn = () =>
    execa(spec.command, [...spec.args], {
      stdin: 'ignore',
      // execa accepts any open fd at run time; its types only admit literal
      // descriptor numbers, hence the cast.
      stdout: fd as 1,
      stderr: fd as 2,
      env: spec.env ?? {},
      extendEnv: true,
      cwd: spec.cwd ?? process.cwd(),
      detached: true,
      cleanup: false,
      reject: false,
      buffer: false,
    });
  let sub: ReturnType<typeof spawn>;
  try {
    writeSync(fd, `=== harness: start ${spec.name}: ${[spec.command, ...spec.args].join(' ')} at ${new Date().toISOString()}\n`);
    sub = spawn();
  } finally {
    // The child holds its own copy of the fd.
    closeSync(fd);
  }
  const pid = sub.pid;
  const exited: Promise<ExitInfo> = sub.then(
    (r) => {
      if (pid !== undefined) livePids.delete(pid);
      if (pid === undefined) return { code: null, signal: null, spawnError: r.message };
      return { code: r.exitCode ?? null, signal: r.signal ?? null };
    },
    (err: unknown) => {
      if (pid !== undefined) livePids.delete(pid);
      return { code: null, signal: null, spawnError: String(err) };
    },
  );
  if (pid === undefined) {
    const info = await exited;
    throw new Error(`cannot start ${spec.name} (${spec.command}): ${info.spawnError}`);
  }
  livePids.add(pid);
  const proc = new NodeProc(spec, pid, exited);
  await registry.add(`stop ${spec.name} (pid ${pid})`, async () => {
    await proc.stop();
  });
  return proc;
}
