/*
 * Fencing agents: what isolates a mount the server must no longer trust
 * (PROTOCOL.md 1.6, 1.7, 3.11).  The server's fence requests
 * (src/server/fence.ts) call one FenceAgent per request; the agent answers
 * fenced (ok) or error, with its output for the log.  Two agents:
 *
 * CommandFenceAgent: a configured command, run once per request with
 *     SCOUTFS_FENCE_RID     the rid, 16 lower-case hex digits
 *     SCOUTFS_FENCE_ADDR    the mount's IPv4 address, dotted quad
 *     SCOUTFS_FENCE_REASON  client_recovery | client_reconnect | quorum_block_leader
 *   in its environment (added to ours).  Exit status 0 means the mount is
 *   fenced: it will never write to the devices again.  Anything else
 *   (a non-zero status, a signal, a command that cannot run) is an error.
 *   stdout and stderr (the first 8 KiB) are the output.  When the request
 *   times out the command's process group is killed (SIGKILL).
 *
 * LocalFenceAgent: the default, correct when every node runs on this host.
 *   A daemon registers its rid under the run dir (default /run/scoutfs, or
 *   SCOUTFS_RUN_DIR) by calling registerRid(); the agent finds the daemon
 *   from the rid, kills it and removes what is left of its FUSE mount:
 *     1. read <runDir>/rid-<rid hex>.pid (below).  No file: no daemon of
 *        that rid runs on this host (it never started, it exited cleanly,
 *        or the host rebooted: /run is tmpfs): fenced.
 *     2. if the registered pid is alive and is the same process (its start
 *        time in /proc/<pid>/stat equals the registered one, so a reused
 *        pid is never killed): note the FUSE connections its mount
 *        namespace has at the registered mount point (/proc/<pid>/mountinfo),
 *        SIGKILL it, and wait until it is gone (no /proc entry, a zombie,
 *        or another process on the pid).  A process that has exited has
 *        closed its device file descriptors: it cannot write any more.
 *     3. abort those FUSE connections (/sys/fs/fuse/connections/<minor>/
 *        abort, when fusectl is mounted; without it the kernel has aborted
 *        the connection already, when the dead daemon's /dev/fuse
 *        descriptor closed), then lazily unmount (umount -l) the mount
 *        point if a FUSE file system is still mounted there in our mount
 *        namespace; the mount point must be free afterwards, else error.
 *     4. remove the registration.
 *   Writes the killed daemon had handed to the kernel before it died sit
 *   in this host's page cache of the device, which every node on this host
 *   reads through: they are not lost and not reordered after the fence.
 *   Across hosts this agent is wrong (it cannot see the other host's
 *   processes and would report a remote mount fenced): configure a command
 *   that really isolates the node (power, storage fabric).
 *
 * How a daemon registers (the contract the default agent relies on):
 *   - registerRid({runDir, rid, mnt}) right after the rid is chosen and
 *     before the mount touches the devices (quorum BEGIN, the first
 *     greeting, any block write); mnt is the absolute FUSE mount point.
 *   - The file <runDir>/rid-<16 hex>.pid holds lines `pid=N`, `start=T`
 *     (field 22 of /proc/N/stat), `mnt=PATH`, `rid=HEX`; it is written to a
 *     temporary name and renamed, so a reader never sees half of it.
 *   - registration.remove() only after the daemon has stopped all device
 *     I/O (devices closed), on a clean exit.  A crashed daemon leaves its
 *     file; the agent treats a dead or reused pid as already gone.
 *
 * Owner: the server's main thread; the agent awaits real time (polling
 * /proc every pollMs), which is fine: its caller bounds it with a timeout
 * on the injected clock and aborts it through the signal.
 */
import { spawn } from 'node:child_process';
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export type FenceReason = 'client_recovery' | 'client_reconnect' | 'quorum_block_leader';
export const FENCE_REASONS: readonly FenceReason[] = ['client_recovery', 'client_reconnect', 'quorum_block_leader'];

export interface FenceTarget {
  rid: bigint;
  /** IPv4 dotted quad. */
  addr: string;
  reason: FenceReason;
}

export interface FenceOutcome {
  ok: boolean;
  output: string;
}

export interface FenceAgent {
  /** For log lines. */
  readonly name: string;
  /** Never rejects for the agent's own failure: that is {ok: false}. */
  fence(t: FenceTarget, signal: AbortSignal): Promise<FenceOutcome>;
}

export const DEFAULT_FENCE_RUN_DIR = process.env.SCOUTFS_RUN_DIR ?? '/run/scoutfs';

export function ridHex(rid: bigint): string {
  return rid.toString(16).padStart(16, '0');
}

/**
 * The agent a server uses: the configured command (run by /bin/sh -c, so
 * it may be a script path with arguments) or, when none is configured,
 * the local agent over runDir.
 */
export function makeFenceAgent(o: { command?: string | null; runDir?: string } = {}): FenceAgent {
  if (o.command !== undefined && o.command !== null && o.command.trim() !== '') {
    return new CommandFenceAgent(['/bin/sh', '-c', o.command]);
  }
  return new LocalFenceAgent({ runDir: o.runDir });
}

/* ---- a configured command ----------------------------------------------------- */

const OUTPUT_LIMIT = 8192;

export class CommandFenceAgent implements FenceAgent {
  readonly name: string;

  constructor(private readonly argv: readonly string[], private readonly env: Record<string, string> = {}) {
    if (argv.length === 0 || argv[0] === '') throw new Error('a fence agent command needs at least a program');
    this.name = `command ${argv.join(' ')}`;
  }

  fence(t: FenceTarget, signal: AbortSignal): Promise<FenceOutcome> {
    return new Promise((resolve) => {
      let out = '';
      const add = (b: Buffer): void => {
        if (out.length < OUTPUT_LIMIT) out += b.toString('utf8').slice(0, OUTPUT_LIMIT - out.length);
      };
      const child = spawn(this.argv[0]!, this.argv.slice(1), {
        env: {
          ...process.env, ...this.env,
          SCOUTFS_FENCE_RID: ridHex(t.rid), SCOUTFS_FENCE_ADDR: t.addr, SCOUTFS_FENCE_REASON: t.reason,
        },
        stdio: ['ignore', 'pipe', 'pipe'],
        detached: true,
      });
      const onAbort = (): void => {
        if (child.pid !== undefined) {
          try {
            process.kill(-child.pid, 'SIGKILL');
          } catch {
            // Already gone.
          }
        }
      };
      if (signal.aborted) onAbort();
      else signal.addEventListener('abort', onAbort, { once: true });
      child.stdout.on('data', add);
      child.stderr.on('data', add);
      child.on('error', (e) => {
        signal.removeEventListener('abort', onAbort);
        resolve({ ok: false, output: `cannot run ${this.argv[0]}: ${e.message}` });
      });
      child.on('close', (code, sig) => {
        signal.removeEventListener('abort', onAbort);
        const status = sig !== null ? `killed by ${sig}` : `exit status ${code}`;
        resolve({ ok: code === 0 && sig === null, output: code === 0 ? out.trim() : `${out.trim()}${out.trim() ? '\n' : ''}(${status})` });
      });
    });
  }
}

/* ---- registration of a daemon's rid ----------------------------------------------- */

export interface RidRecord {
  pid: number;
  start: string;
  mnt: string;
  rid: string;
}

export interface RidRegistration {
  readonly path: string;
  /** Remove the file if it is still ours; harmless twice. */
  remove(): void;
}

export function ridFilePath(runDir: string, rid: bigint): string {
  return join(runDir, `rid-${ridHex(rid)}.pid`);
}

/** Field 22 (starttime, clock ticks since boot) of /proc/pid/stat, and the state; null if no such process. */
export function procStat(pid: number): { start: string; state: string } | null {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  // The command name (field 2) is in parentheses and may contain anything:
  // fields after it are split from the last ')'.
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // rest[0] is field 3 (state); field 22 is rest[19].
  const start = rest[19];
  const state = rest[0];
  if (start === undefined || state === undefined) return null;
  return { start, state };
}

/** Register this process (or pid) as the daemon of rid: see the top comment. */
export function registerRid(o: { runDir: string; rid: bigint; mnt: string; pid?: number }): RidRegistration {
  const pid = o.pid ?? process.pid;
  const st = procStat(pid);
  if (st === null) throw new Error(`cannot register rid ${ridHex(o.rid)}: process ${pid} does not exist`);
  mkdirSync(o.runDir, { recursive: true, mode: 0o700 });
  const path = ridFilePath(o.runDir, o.rid);
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, `pid=${pid}\nstart=${st.start}\nmnt=${o.mnt}\nrid=${ridHex(o.rid)}\n`, { mode: 0o600 });
  renameSync(tmp, path);
  return {
    path,
    remove(): void {
      try {
        const r = readRidFile(path);
        if (r !== null && r.pid === pid && r.start === st.start) rmSync(path, { force: true });
      } catch {
        // A malformed file is not ours to remove.
      }
    },
  };
}

/** The registration at path; null when there is none; throws on a malformed file. */
export function readRidFile(path: string): RidRecord | null {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
  const kv = new Map<string, string>();
  for (const line of text.split('\n')) {
    const i = line.indexOf('=');
    if (i > 0) kv.set(line.slice(0, i), line.slice(i + 1));
  }
  const pid = Number(kv.get('pid'));
  const start = kv.get('start');
  const mnt = kv.get('mnt');
  const rid = kv.get('rid');
  if (!Number.isSafeInteger(pid) || pid <= 0 || start === undefined || mnt === undefined || rid === undefined) {
    throw new Error(`${path}: not a rid registration (want pid=, start=, mnt=, rid= lines)`);
  }
  return { pid, start, mnt, rid };
}

/* ---- the default agent: one host ---------------------------------------------------- */

interface MountInfo {
  minor: number;
  mountPoint: string;
  fstype: string;
}

function unescapeMountPath(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** Mounts listed in a mountinfo file (/proc/<pid>/mountinfo); [] if unreadable. */
export function readMountInfo(path: string): MountInfo[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return [];
  }
  const out: MountInfo[] = [];
  for (const line of text.split('\n')) {
    const f = line.split(' ');
    const dash = f.indexOf('-');
    if (f.length < 7 || dash < 6) continue;
    const dev = f[2]!.split(':');
    out.push({ minor: Number(dev[1]), mountPoint: unescapeMountPath(f[4]!), fstype: f[dash + 1] ?? '' });
  }
  return out;
}

const isFuse = (m: MountInfo): boolean => m.fstype === 'fuse' || m.fstype.startsWith('fuse.') || m.fstype === 'fuseblk';

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(done, ms);
    function done(): void {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}

function umountLazy(mnt: string): Promise<string> {
  return new Promise((resolve) => {
    execFile('umount', ['-l', mnt], (err, stdout, stderr) => {
      resolve(err ? `umount -l ${mnt}: ${(stderr || err.message).trim()}` : `unmounted ${mnt} (lazy)`);
    });
  });
}

export class LocalFenceAgent implements FenceAgent {
  readonly name: string;
  private readonly runDir: string;
  private readonly pollMs: number;

  constructor(o: { runDir?: string; pollMs?: number } = {}) {
    this.runDir = o.runDir ?? DEFAULT_FENCE_RUN_DIR;
    this.pollMs = o.pollMs ?? 20;
    this.name = `local (${this.runDir})`;
  }

  async fence(t: FenceTarget, signal: AbortSignal): Promise<FenceOutcome> {
    const lines: string[] = [];
    try {
      const ok = await this.fenceLocal(t, signal, lines);
      return { ok, output: lines.join('\n') };
    } catch (e) {
      lines.push(`failed: ${e instanceof Error ? e.message : String(e)}`);
      return { ok: false, output: lines.join('\n') };
    }
  }

  private async fenceLocal(t: FenceTarget, signal: AbortSignal, lines: string[]): Promise<boolean> {
    const path = ridFilePath(this.runDir, t.rid);
    const reg = readRidFile(path);
    if (reg === null) {
      lines.push(`no daemon registered for rid ${ridHex(t.rid)} in ${this.runDir}: none runs on this host`);
      return true;
    }
    const conns = new Set<number>();
    const st = procStat(reg.pid);
    if (st !== null && st.start === reg.start && st.state !== 'Z') {
      for (const m of readMountInfo(`/proc/${reg.pid}/mountinfo`)) {
        if (m.mountPoint === reg.mnt && isFuse(m)) conns.add(m.minor);
      }
      try {
        process.kill(reg.pid, 'SIGKILL');
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ESRCH') throw e;
      }
      lines.push(`killed pid ${reg.pid} (SIGKILL)`);
      for (;;) {
        const now = procStat(reg.pid);
        if (now === null || now.start !== reg.start || now.state === 'Z' || now.state === 'X') break;
        if (signal.aborted) {
          lines.push(`pid ${reg.pid} still exists (state ${now.state}) when the fence timed out`);
          return false;
        }
        await sleep(this.pollMs, signal);
      }
      lines.push(`pid ${reg.pid} is gone`);
    } else {
      lines.push(`pid ${reg.pid} of rid ${ridHex(t.rid)} is not running (stale registration)`);
    }
    for (const m of readMountInfo('/proc/self/mountinfo')) {
      if (m.mountPoint === reg.mnt && isFuse(m)) conns.add(m.minor);
    }
    for (const c of conns) {
      const abort = `/sys/fs/fuse/connections/${c}/abort`;
      if (existsSync(abort)) {
        try {
          writeFileSync(abort, '1');
          lines.push(`aborted FUSE connection ${c}`);
        } catch (e) {
          lines.push(`could not abort FUSE connection ${c}: ${(e as Error).message}`);
        }
      } else {
        lines.push(`FUSE connection ${c}: no ${abort} (fusectl not mounted); the kernel aborted it when the daemon's /dev/fuse closed`);
      }
    }
    for (let i = 0; i < 8; i++) {
      if (!readMountInfo('/proc/self/mountinfo').some((m) => m.mountPoint === reg.mnt && isFuse(m))) break;
      lines.push(await umountLazy(reg.mnt));
    }
    if (readMountInfo('/proc/self/mountinfo').some((m) => m.mountPoint === reg.mnt && isFuse(m))) {
      lines.push(`a FUSE file system is still mounted at ${reg.mnt}`);
      return false;
    }
    rmSync(path, { force: true });
    lines.push(`fenced rid ${ridHex(t.rid)}`);
    return true;
  }
}
