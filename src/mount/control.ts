/*
 * src/mount/control.ts is the per-mount control channel: the stand-in for
 * scoutfs's ioctls, which FUSE cannot carry (they pass user pointers inside
 * their structs, PROTOCOL.md s0).  The CLI (walk-inodes, stat, statfs, df,
 * sync and the archive commands) finds a mount's channel from the mount
 * path alone.
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
 * Payloads.  A request whose JSON carries "payload": N (0 < N <=
 * PAYLOAD_MAX) is followed on the socket by exactly N raw bytes, which the
 * handler receives with the request (stage sends the archived bytes this
 * way, in pieces of at most PAYLOAD_MAX, each its own request, as the
 * reference CLI calls the STAGE ioctl once per buffer).  A client may send
 * requests ahead of their replies (ControlSession); the server stops
 * reading the socket while more than QUEUE_MAX bytes wait for their
 * handlers, so a fast sender cannot fill the daemon's memory.  A bad
 * payload length cannot be skipped: the reply is EINVAL and the connection
 * is closed.
 *
 * The archive ops (src/mount/daemon.ts): release, stage, setattr-more,
 * move-blocks, data-waiting, data-wait-err, ino-path, list-hidden-xattrs,
 * counters; names of files travel base64 (raw bytes).
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
/** payload: the raw bytes that followed the request ("payload": N), or null. */
export type ControlHandler = (req: ControlRequest, payload: Buffer | null) => Promise<unknown>;

/** Largest payload of one request. */
export const PAYLOAD_MAX = 16 << 20;
/** The server reads no more while this many bytes wait for their handlers. */
export const QUEUE_MAX = 64 << 20;

/** Bytes received and not yet consumed, kept as the chunks they came in. */
class ByteQueue {
  private chunks: Buffer[] = [];
  length = 0;
  push(b: Buffer): void {
    this.chunks.push(b);
    this.length += b.length;
  }
  /** Index of the first newline, or -1. */
  indexOfNewline(): number {
    let base = 0;
    for (const c of this.chunks) {
      const i = c.indexOf(0x0a);
      if (i >= 0) return base + i;
      base += c.length;
    }
    return -1;
  }
  take(n: number): Buffer {
    if (n === 0) return Buffer.alloc(0);
    const first = this.chunks[0]!;
    let out: Buffer;
    if (first.length >= n) {
      out = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
    } else {
      out = Buffer.allocUnsafe(n);
      let at = 0;
      while (at < n) {
        const c = this.chunks[0]!;
        const k = Math.min(c.length, n - at);
        c.copy(out, at, 0, k);
        at += k;
        if (k === c.length) this.chunks.shift();
        else this.chunks[0] = c.subarray(k);
      }
    }
    this.length -= n;
    return out;
  }
}

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
    const q = new ByteQueue();
    let chain = Promise.resolve();
    let payloadOf: { req: ControlRequest; n: number } | null = null;
    let queued = 0; // payload bytes handed to the chain and not yet handled
    let closing = false;
    sock.on('error', () => {});
    const enqueue = (req: ControlRequest | Error, payload: Buffer | null): void => {
      const n = payload?.length ?? 0;
      queued += n;
      chain = chain.then(async () => {
        const reply = req instanceof Error
          ? toJson({ ok: false, errno: 'EINVAL', message: `bad request: ${req.message}` })
          : await answer(req, payload, handler, log);
        queued -= n;
        if (!sock.destroyed) sock.write(reply + '\n');
        if (sock.isPaused() && !closing && q.length + queued < QUEUE_MAX) sock.resume();
      });
    };
    const feed = (): void => {
      while (!closing) {
        if (payloadOf !== null) {
          if (q.length < payloadOf.n) break;
          enqueue(payloadOf.req, q.take(payloadOf.n));
          payloadOf = null;
          continue;
        }
        const nl = q.indexOfNewline();
        if (nl < 0) {
          if (q.length > 1 << 20) sock.destroy();
          break;
        }
        const line = q.take(nl + 1).subarray(0, nl).toString('utf8');
        let req: ControlRequest;
        try {
          req = parseRequest(line);
        } catch (e) {
          enqueue(e as Error, null);
          continue;
        }
        const n = req.payload;
        if (n === undefined) {
          enqueue(req, null);
        } else if (typeof n === 'number' && Number.isInteger(n) && n > 0 && n <= PAYLOAD_MAX) {
          payloadOf = { req, n };
        } else {
          // The bytes that follow cannot be found: answer and hang up.
          closing = true;
          enqueue(new Error(`payload must be 1..${PAYLOAD_MAX} bytes, not ${String(n)}`), null);
          chain = chain.then(() => { sock.end(); });
        }
      }
      if (q.length + queued >= QUEUE_MAX) sock.pause();
    };
    sock.on('data', (d: Buffer) => {
      q.push(d);
      feed();
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

function parseRequest(line: string): ControlRequest {
  const req = JSON.parse(line) as ControlRequest;
  if (typeof req !== 'object' || req === null || typeof req.op !== 'string') throw new Error('no op');
  return req;
}

async function answer(req: ControlRequest, payload: Buffer | null, handler: ControlHandler, log: (line: string) => void): Promise<string> {
  try {
    return toJson({ ok: true, result: (await handler(req, payload)) ?? {} });
  } catch (e) {
    if (e instanceof FsError) return toJson({ ok: false, errno: e.code, message: e.message });
    const err = e instanceof Error ? e : new Error(String(e));
    log(`control: ${req.op}: unexpected ${err.name}: ${err.message}`);
    return toJson({ ok: false, errno: 'EIO', message: err.message });
  }
}

/** One request to the mount at `mnt`; throws ControlError on failure. */
export async function controlRequest(mnt: string, req: ControlRequest, runDir = DEFAULT_RUN_DIR): Promise<Record<string, unknown>> {
  const s = await ControlSession.open(mnt, runDir);
  try {
    return await s.request(req);
  } finally {
    s.close();
  }
}

/**
 * One connection carrying any number of requests, sent ahead of their
 * replies (which come back in order).  request() resolves with the reply
 * of its own request; a payload is written after the request line, and
 * request() waits for the socket to drain so the caller's memory is
 * bounded by what is in flight.
 */
export class ControlSession {
  private buf = '';
  private readonly waiting: { resolve: (r: Record<string, unknown>) => void; reject: (e: Error) => void }[] = [];
  private dead: ControlError | null = null;

  private constructor(private readonly sock: net.Socket, private readonly path: string) {
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => {
      this.buf += d;
      for (let nl = this.buf.indexOf('\n'); nl >= 0; nl = this.buf.indexOf('\n')) {
        const line = this.buf.slice(0, nl);
        this.buf = this.buf.slice(nl + 1);
        const w = this.waiting.shift();
        if (w === undefined) continue;
        try {
          const r = JSON.parse(line) as { ok: boolean; result?: Record<string, unknown>; errno?: string; message?: string };
          if (r.ok) w.resolve(r.result ?? {});
          else w.reject(new ControlError(r.errno ?? 'EIO', r.message ?? 'failed'));
        } catch (e) {
          w.reject(new ControlError('EIO', `bad reply from ${path}: ${(e as Error).message}`));
        }
      }
    });
    const fail = (why: ControlError): void => {
      this.dead ??= why;
      for (const w of this.waiting.splice(0)) w.reject(this.dead);
    };
    sock.on('error', (e: NodeJS.ErrnoException) => fail(new ControlError(e.code ?? 'EIO', `control socket ${path}: ${e.message}`)));
    sock.on('close', () => fail(new ControlError('EIO', `control socket ${path} closed without a reply`)));
  }

  static open(mnt: string, runDir = DEFAULT_RUN_DIR): Promise<ControlSession> {
    const path = controlSocketPath(mnt, runDir);
    return new Promise((resolve, reject) => {
      const sock = net.createConnection(path);
      const onError = (e: NodeJS.ErrnoException): void => {
        const code = e.code === 'ENOENT' || e.code === 'ECONNREFUSED' ? 'ENOENT' : (e.code ?? 'EIO');
        reject(new ControlError(code, `no scoutfs mount at ${mnt} (control socket ${path}: ${e.code ?? e.message})`));
      };
      sock.once('error', onError);
      sock.once('connect', () => {
        sock.off('error', onError);
        resolve(new ControlSession(sock, path));
      });
    });
  }

  /** Send a request (and its payload); resolves with its reply. */
  request(req: ControlRequest, payload?: Uint8Array): Promise<Record<string, unknown>> {
    if (this.dead !== null) return Promise.reject(this.dead);
    const reply = new Promise<Record<string, unknown>>((resolve, reject) => this.waiting.push({ resolve, reject }));
    const line = toJson(payload === undefined ? req : { ...req, payload: payload.length }) + '\n';
    let ok = this.sock.write(line);
    if (payload !== undefined && payload.length > 0) ok = this.sock.write(payload);
    if (ok) return reply;
    // Wait for the socket to drain before handing the reply promise back,
    // but never hide a failure that comes first.
    return new Promise((resolve, reject) => {
      const drained = (): void => resolve(reply);
      this.sock.once('drain', drained);
      reply.catch((e: unknown) => {
        this.sock.off('drain', drained);
        reject(e);
      });
    });
  }

  close(): void {
    this.sock.end();
  }
}

/* ---- CLI side ------------------------------------------------------------------ */

/** glibc's strerror() text, for the CLI's failure line. */
export const STRERROR: Record<string, string> = {
  EPERM: 'Operation not permitted', ENOENT: 'No such file or directory', EINTR: 'Interrupted system call',
  EIO: 'Input/output error', ENXIO: 'No such device or address', E2BIG: 'Argument list too long',
  EBADF: 'Bad file descriptor', EAGAIN: 'Resource temporarily unavailable', ENOMEM: 'Cannot allocate memory',
  EACCES: 'Permission denied', EFAULT: 'Bad address', EBUSY: 'Device or resource busy', EEXIST: 'File exists',
  EXDEV: 'Invalid cross-device link', ENODEV: 'No such device', ENOTDIR: 'Not a directory', EISDIR: 'Is a directory',
  EINVAL: 'Invalid argument', ENOTTY: 'Inappropriate ioctl for device', EFBIG: 'File too large',
  ENOSPC: 'No space left on device', EROFS: 'Read-only file system', EMLINK: 'Too many links',
  ERANGE: 'Numerical result out of range', ENAMETOOLONG: 'File name too long', ENOSYS: 'Function not implemented',
  ENOTEMPTY: 'Directory not empty', ELOOP: 'Too many levels of symbolic links', ENODATA: 'No data available',
  EOVERFLOW: 'Value too large for defined data type', EOPNOTSUPP: 'Operation not supported',
  ESHUTDOWN: 'Cannot send after transport endpoint shutdown', ETIMEDOUT: 'Connection timed out',
  ECONNREFUSED: 'Connection refused', ESTALE: 'Stale file handle', EDQUOT: 'Disk quota exceeded',
  ECANCELED: 'Operation canceled', EPIPE: 'Broken pipe',
};

/** `<strerror> (<n>): detail`, the body of the CLI's failure line. */
export function failureText(errno: string, detail: string): string {
  const n = (ERRNO as Record<string, number>)[errno] ?? ERRNO.EIO;
  // An FsError's message starts with its code: the line names it already.
  const d = detail.startsWith(`${errno}: `) ? detail.slice(errno.length + 2) : detail;
  return `${STRERROR[errno] ?? errno} (${n}): ${d}`;
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
