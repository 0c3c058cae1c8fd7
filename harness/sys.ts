/*
 * harness/sys.ts owns the small system helpers every other harness module
 * shares: running a command with execa and turning its failure into one
 * readable error, asking whether we are root and whether a tool exists,
 * sleeping, and polling a predicate until it holds or a deadline passes.
 *
 * Invariants:
 *   - Every external command goes through `sh` (or `trySh`), so every command
 *     the harness runs has a bounded time (timeoutMs, default 60 s) and its
 *     stderr appears in the error when it fails.  Nothing here leaves a
 *     process behind: execa kills a command that outlives its timeout.
 *   - `waitFor` never busy-waits and always ends: it either returns the first
 *     truthy value of the predicate or throws HarnessTimeoutError naming what
 *     it waited for.  A predicate that throws ends the wait with that error,
 *     so a broken readiness check fails fast instead of timing out.
 *
 * This file has no state.  It is the only harness file that imports execa
 * directly, except proc.ts, which needs a long-running child.
 */
import { execa } from 'execa';
import { access, constants } from 'node:fs/promises';
import { delimiter, join } from 'node:path';

export class HarnessTimeoutError extends Error {
  constructor(what: string, timeoutMs: number) {
    super(`timed out after ${timeoutMs} ms waiting for ${what}`);
    this.name = 'HarnessTimeoutError';
  }
}

export class CommandError extends Error {
  constructor(
    readonly command: string,
    readonly exitCode: number | undefined,
    readonly stderr: string,
  ) {
    super(`command failed (exit ${exitCode ?? 'none'}): ${command}${stderr ? `\n  ${stderr.trim()}` : ''}`);
    this.name = 'CommandError';
  }
}

export interface ShOptions {
  timeoutMs?: number;
  input?: string;
  env?: Record<string, string>;
}

export interface ShResult {
  stdout: string;
  stderr: string;
  exitCode: number;
}

/** Run a command to completion; throw CommandError unless it exits 0. */
export async function sh(cmd: string, args: readonly string[], opts: ShOptions = {}): Promise<ShResult> {
  const r = await trySh(cmd, args, opts);
  if (r.exitCode !== 0) throw new CommandError([cmd, ...args].join(' '), r.exitCode, r.stderr);
  return r;
}

/** Run a command to completion and report its exit code instead of throwing. */
export async function trySh(cmd: string, args: readonly string[], opts: ShOptions = {}): Promise<ShResult> {
  const timeoutMs = opts.timeoutMs ?? 60_000;
  const r = await execa(cmd, [...args], {
    reject: false,
    timeout: timeoutMs,
    forceKillAfterDelay: 2_000,
    stdin: opts.input === undefined ? 'ignore' : 'pipe',
    ...(opts.input === undefined ? {} : { input: opts.input }),
    ...(opts.env ? { env: opts.env } : {}),
    stripFinalNewline: true,
  });
  if (r.timedOut) throw new HarnessTimeoutError(`command ${[cmd, ...args].join(' ')}`, timeoutMs);
  // execa reports a spawn failure (ENOENT) as failed with no exit code.
  const exitCode = r.exitCode ?? (r.failed ? 127 : 0);
  return { stdout: String(r.stdout ?? ''), stderr: String(r.stderr ?? r.message ?? ''), exitCode };
}

export function isRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

const whichCache = new Map<string, string | null>();

/** The absolute path of an executable on PATH (plus the sbin dirs), or null. */
export async function which(cmd: string): Promise<string | null> {
  const cached = whichCache.get(cmd);
  if (cached !== undefined) return cached;
  const dirs = (process.env.PATH ?? '').split(delimiter).concat(['/usr/sbin', '/sbin', '/usr/bin', '/bin']);
  let found: string | null = null;
  for (const d of dirs) {
    if (!d) continue;
    try {
      await access(join(d, cmd), constants.X_OK);
      found = join(d, cmd);
      break;
    } catch {
      // Not in this directory; keep looking.
    }
  }
  whichCache.set(cmd, found);
  return found;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export interface WaitOptions {
  timeoutMs: number;
  intervalMs?: number;
  /** Says what is awaited, for the timeout message. */
  what: string;
  /** Ends the wait early (the run was aborted). */
  signal?: AbortSignal;
}

/**
 * Poll `pred` until it returns a truthy value and return that value.  Throws
 * HarnessTimeoutError after timeoutMs, or the abort reason if `signal` fires.
 */
export async function waitFor<T>(pred: () => T | Promise<T>, opts: WaitOptions): Promise<NonNullable<T>> {
  const intervalMs = opts.intervalMs ?? 50;
  const deadline = Date.now() + opts.timeoutMs;
  for (;;) {
    opts.signal?.throwIfAborted();
    const v = await pred();
    if (v) return v as NonNullable<T>;
    if (Date.now() >= deadline) throw new HarnessTimeoutError(opts.what, opts.timeoutMs);
    await sleep(Math.min(intervalMs, Math.max(1, deadline - Date.now())));
  }
}

/** Run `p` but give up with HarnessTimeoutError after timeoutMs. */
export async function withTimeout<T>(p: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new HarnessTimeoutError(what, timeoutMs)), timeoutMs);
  });
  try {
    return await Promise.race([p, t]);
  } finally {
    clearTimeout(timer);
  }
}
