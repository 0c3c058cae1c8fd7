/*
 * src/mount/control.ts is the per-mount control channel: the stand-in for
 * scoutfs's ioctls, which FUSE cannot carry (they pass user pointers inside
 * their structs, PROTOCOL.md s0).  The CLI (walk-inodes, stat, statfs, df,
 * sync) finds a mount's channel from the mount path alone.
 *
 * Where.  A unix stream socket at
 *     <runDir>/<sha1(realpath(MNT)) in hex>.sock      (runDir /run/scoutfs)
 * created by the daemon with mode 0600 in a 0700 directory, so only root
 * (the daemon's user) can connect.  The daemon removes a stale socket left
 * by a dead daemon before listening (it refuses to start at all if the
 * mount point is busy, so a stale socket can only be a dead one's) and
 * removes its own at exit.
 *
 * Protocol.  One JSON request per line, one JSON response per line, any
 * number per connection, answered in order:
 *     {"op":"sync"}                              -> {"ok":true,"result":{}}
 *     {"op":"walk-inodes","index":"meta_seq","first":{"major":"0","ino":"0"},
 *      "last":{...},"max":128}                   -> {"ok":true,"result":{"entries":[{"major":"5","ino":"1025"}]}}
 *     {"op":"stat","path":"a/b"}                 -> per-inode fields (stat_more)
 *     {"op":"statfs"}                            -> statfs_more fields
 *     {"op":"df"}                                -> meta/data totals and free
 *     {"op":"status"}                            -> the mount's status() object
 * u64 values travel as decimal strings (JSON has no bigint).  A failure is
 * {"ok":false,"errno":"ENOENT","message":"..."}: FsError codes cross by
 * name; anything else crosses as EIO with its message.  The daemon never
 * dies on a bad request: malformed JSON or an unknown op is EINVAL.
 *
 * Rejected: an HTTP server (more surface, no gain), and a socket path
 * derived from the devices (the CLI only knows the mount path).
 */
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, realpathSync, rmSync, chmodSync } from 'node:fs';
import * as net from 'node:net';
import { join } from 'node:path';
import { FsError, type ErrnoName, ERRNO } from '../format/errors.js';

export const DEFAULT_RUN_DIR = process.env.SCOUTFS_RUN_DIR ?? '/run/scoutfs';

/** The hashed name for a mount path (its realpath when it exists). */
export function mountKey(mnt: string): string {
  let p = mnt;
  try {
    p = realpathSync(mnt);
  } catch {
    // A path that does not exist yet keys by itself.
  }
  return createHash('sha1').update(p).digest('hex');
}

export function controlSocketPath(mnt: string, runDir = DEFAULT_RUN_DIR): string {
  return join(runDir, `${mountKey(mnt)}.sock`);
}

export type ControlRequest = { op: string; [k: string]: unknown };
export type ControlHandler = (req: ControlRequest) => Promise<unknown>;

/** Errors the CLI shows as `<strerror> (<n>)`. */
export class ControlError extends Error {
  constructor(readonly errno: ErrnoName | string, message: string) {
    super(message);
    this.name = 'ControlError';
  }
  get errnoNumber(): number {
    return (ERRNO as Record<string, number>)[this.errno] ?? ERRNO.EIO;
  }
}

export interface ControlServer {
  readonly path: string;
  close(): Promise<void>;
}

/** JSON with bigints as decimal strings. */
export function toJson(v: unknown): string {
  return JSON.stringify(v, (_k, x: unknown) => (typeof x === 'bigint' ? x.toString() : x));
}

export async function startControlServer(
  mnt: string,
  handler: ControlHandler,
  log: (line: string) => void,
  runDir = DEFAULT_RUN_DIR,
): Promise<ControlServer> {
  mkdirSync(runDir, { recursive: true, mode: 0o700 });
  // `mnt` must already be a realpath: the daemon calls this after its FUSE
  // mount is up, and a realpath() of the mount from the thread that serves
  // it would deadlock (the kernel waits for us to answer our own lstat).
  const path = join(runDir, `${createHash('sha1').update(mnt).digest('hex')}.sock`);
  rmSync(path, { force: true });
  const server = net.createServer((sock) => {
    let buf = '';
    let chain = Promise.resolve();
    sock.setEncoding('utf8');
    sock.on('error', () => {});
    sock.on('data', (d: string) => {
      buf += d;
      for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        chain = chain.then(async () => {
          const reply = await answer(line, handler, log);
          if (!sock.destroyed) sock.write(reply + '\n');
        });
      }
      if (buf.length > 1 << 20) sock.destroy();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => resolve());
  });
  chmodSync(path, 0o600);
  return {
    path,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        rmSync(path, { force: true });
      }),
  };
}

async function answer(line: string, handler: ControlHandler, log: (line: string) => void): Promise<string> {
  let req: ControlRequest;
  try {
    req = JSON.parse(line) as ControlRequest;
    if (typeof req !== 'object' || req === null || typeof req.op !== 'string') throw new Error('no op');
  } catch (e) {
    return toJson({ ok: false, errno: 'EINVAL', message: `bad request: ${(e as Error).message}` });
  }
  try {
    return toJson({ ok: true, result: (await handler(req)) ?? {} });
  } catch (e) {
    if (e instanceof FsError) return toJson({ ok: false, errno: e.code, message: e.message });
    const err = e instanceof Error ? e : new Error(String(e));
    log(`control: ${req.op}: unexpected ${err.name}: ${err.message}`);
    return toJson({ ok: false, errno: 'EIO', message: err.message });
  }
}

/** One request to the mount at `mnt`; throws ControlError on failure. */
export async function controlRequest(mnt: string, req: ControlRequest, runDir = DEFAULT_RUN_DIR): Promise<Record<string, unknown>> {
  const path = controlSocketPath(mnt, runDir);
  return new Promise((resolve, reject) => {
    const sock = net.createConnection(path);
    let buf = '';
    sock.setEncoding('utf8');
    sock.on('connect', () => sock.write(toJson(req) + '\n'));
    sock.on('data', (d: string) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      sock.end();
      try {
        const r = JSON.parse(buf.slice(0, nl)) as { ok: boolean; result?: Record<string, unknown>; errno?: string; message?: string };
        if (r.ok) resolve(r.result ?? {});
        else reject(new ControlError(r.errno ?? 'EIO', r.message ?? 'failed'));
      } catch (e) {
        reject(new ControlError('EIO', `bad reply from ${path}: ${(e as Error).message}`));
      }
    });
    sock.on('error', (e: NodeJS.ErrnoException) => {
      const code = e.code === 'ENOENT' || e.code === 'ECONNREFUSED' ? 'ENOENT' : (e.code ?? 'EIO');
      reject(new ControlError(code, `no scoutfs mount at ${mnt} (control socket ${path}: ${e.code ?? e.message})`));
    });
    sock.on('close', () => {
      if (buf.indexOf('\n') < 0) reject(new ControlError('EIO', `control socket ${path} closed without a reply`));
    });
  });
}

/* ---- CLI side ------------------------------------------------------------------ */

const STRERROR: Record<string, string> = {
  ENOENT: 'No such file or directory', EINVAL: 'Invalid argument', EIO: 'Input/output error',
  EACCES: 'Permission denied', EPERM: 'Operation not permitted', ENOTDIR: 'Not a directory',
  EBUSY: 'Device or resource busy', ENOSPC: 'No space left on device', ESTALE: 'Stale file handle',
};

/** `<strerror> (<n>): detail`, the body of the CLI's failure line. */
export function failureText(errno: string, detail: string): string {
  const n = (ERRNO as Record<string, number>)[errno] ?? ERRNO.EIO;
  return `${STRERROR[errno] ?? errno} (${n}): ${detail}`;
}

/** The scoutfs FUSE mount holding `path`, and `path` relative to it. */
export function findMountOf(path: string): { mnt: string; rel: string } {
  let real: string;
  try {
    real = realpathSync(path);
  } catch {
    throw new ControlError('ENOENT', `${path} does not exist`);
  }
  let best = '';
  for (const l of readFileSync('/proc/mounts', 'utf8').split('\n')) {
    const f = l.split(' ');
    if (f.length < 3 || f[2] !== 'fuse.scoutfs') continue;
    const t = f[1]!.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
    if ((real === t || real.startsWith(t === '/' ? t : t + '/')) && t.length > best.length) best = t;
  }
  if (!best) throw new ControlError('EINVAL', `${path} is not in a scoutfs mount`);
  return { mnt: best, rel: real.slice(best.length).replace(/^\/+/, '') };
}
