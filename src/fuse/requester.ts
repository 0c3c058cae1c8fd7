/*
 * The process behind a FUSE request, for waits on offline data
 * (src/fs/archive.ts) that the kernel cannot cancel for us: a reader
 * killed while its readahead request waits dies at once in the kernel
 * (readahead is answered in the background), and fuse-native never sees
 * FUSE_INTERRUPT at all.  Both transports (adapter.ts, session.ts) check
 * the requester of every request that has waited longer than WATCH_MS and
 * abort its wait (EINTR) when it is gone or dying.
 *
 * Gone: no /proc/<pid> entry, a zombie, or a start time other than the one
 * first seen (the pid was reused).  Dying: SIGKILL pending for the task or
 * its process, which the kernel queues for every default-fatal signal.
 * Non-fatal signals are left alone (readahead waits are killable only).
 * The pid is the requesting task's (a thread id for a threaded reader),
 * which /proc serves too.  Reads of /proc are synchronous and cheap (a few
 * microseconds), and only requests that have waited WATCH_MS are checked.
 */
import { readFileSync } from 'node:fs';

/** How old a request is before its process is checked, and how often. */
export const WATCH_MS = 250;

export function requesterGone(pid: number, seen: { start?: string }): boolean {
  let stat: string;
  let status: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    status = readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return true;
  }
  // Fields after the ")" closing comm: state is the first, starttime the 20th.
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const state = f[0] ?? '';
  const start = f[19] ?? '';
  if (seen.start === undefined) seen.start = start;
  else if (seen.start !== start) return true;
  if (state === 'Z' || state === 'X' || state === 'x') return true;
  const SIGKILL_BIT = 1n << 8n;
  for (const field of ['SigPnd', 'ShdPnd']) {
    const m = new RegExp(`^${field}:\\s*([0-9a-f]+)`, 'm').exec(status);
    if (m !== null && (BigInt('0x' + m[1]!) & SIGKILL_BIT) !== 0n) return true;
  }
  return false;
}

/**
 * data-wait-err errors by (process, inode), for the kernel's retry of a
 * failed read: when data-wait-err fails a page cache reader's readahead,
 * the kernel asks again for the one page read() needs, which would wait
 * again; a read from that process of that inode that would wait within
 * RETRY_WINDOW_MS fails with the same error instead, so read() returns the
 * errno data-wait-err set, as with the reference.
 */
export const RETRY_WINDOW_MS = 2000;

export class RecentFailures {
  private readonly m = new Map<string, { e: Error; until: number }>();

  get(pid: number, ino: bigint): Error | undefined {
    if (pid <= 0) return undefined;
    const k = `${pid}:${ino}`;
    const f = this.m.get(k);
    if (f === undefined) return undefined;
    if (f.until < Date.now()) {
      this.m.delete(k);
      return undefined;
    }
    return f.e;
  }

  note(pid: number, ino: bigint, e: Error): void {
    if (pid <= 0) return;
    const now = Date.now();
    for (const [k, f] of this.m) if (f.until < now) this.m.delete(k);
    this.m.set(`${pid}:${ino}`, { e, until: now + RETRY_WINDOW_MS });
  }
}
