/*
 * The four kinds of error, never mixed (STYLE.md s4).
 *
 * 1. FsError(errno): an outcome a caller handles differently (ENOENT,
 *    EEXIST, ENOSPC, ESTALE ...).  Hot paths return null for expected misses
 *    instead of throwing.
 * 2. CorruptionError: bad bytes from a disk or a peer.  It names its source
 *    (device path or peer), the block number and the check that failed, so
 *    one log line is enough to find it.  Users see EIO.
 * 3. Assertion failures (node:assert): our own bugs.  They never map to an
 *    errno; the daemon stops.
 * 4. LifecycleError: shutdown or fencing stops work in flight.
 *
 * errno numbers are produced only by the FUSE adapter and the closed wire
 * error table; here an FsError carries the symbolic name.  Errors cross to
 * worker threads through serializeError/deserializeError because structured
 * clone drops classes and custom fields.
 *
 * This module lives in src/format/ because it is the bottom of the import
 * graph: every layer may raise these, and the wire error table (a layout)
 * maps them.
 */

/** Linux errno names we use, with their x86_64 numbers. */
export const ERRNO = {
  EPERM: 1, ENOENT: 2, EINTR: 4, EIO: 5, ENXIO: 6, E2BIG: 7, EBADF: 9, EAGAIN: 11,
  ENOMEM: 12, EACCES: 13, EFAULT: 14, EBUSY: 16, EEXIST: 17, EXDEV: 18,
  ENODEV: 19, ENOTDIR: 20, EISDIR: 21, EINVAL: 22, EFBIG: 27, ENOSPC: 28,
  ENOTTY: 25, EROFS: 30, EMLINK: 31, ERANGE: 34, ENAMETOOLONG: 36, ENOSYS: 38,
  ENOTEMPTY: 39, ELOOP: 40, ENODATA: 61, EPROTO: 71, EOVERFLOW: 75, EOPNOTSUPP: 95,
  ENOTCONN: 107, ESHUTDOWN: 108, ETIMEDOUT: 110, ECONNREFUSED: 111, ESTALE: 116,
  EDQUOT: 122, ECANCELED: 125,
} as const;
export type ErrnoName = keyof typeof ERRNO;

/**
 * Answers rather than failures: a negative lookup (ENOENT) precedes every
 * create, an exclusive create meets EEXIST, a getxattr misses (ENODATA).
 * These are made without a stack trace, which V8 otherwise captures at
 * construction (about 2.5% of an in-process create measured).
 */
const QUIET: ReadonlySet<ErrnoName> = new Set<ErrnoName>(['ENOENT', 'EEXIST', 'ENODATA']);

export class FsError extends Error {
  readonly code: ErrnoName;
  constructor(code: ErrnoName, message?: string) {
    const limit = Error.stackTraceLimit;
    if (QUIET.has(code)) Error.stackTraceLimit = 0;
    try {
      super(message ? `${code}: ${message}` : code);
    } finally {
      Error.stackTraceLimit = limit;
    }
    this.name = 'FsError';
    this.code = code;
  }
  get errno(): number {
    return ERRNO[this.code];
  }
}

/** Which check of a block read failed, in the kernel's order (FORMAT.md 3.3). */
export type CorruptCheck =
  | 'crc' | 'magic' | 'fsid' | 'seq' | 'blkno' | 'level' | 'structure' | 'io' | 'size';

export class CorruptionError extends Error {
  readonly source: string;
  readonly blkno: bigint | null;
  readonly check: CorruptCheck;
  constructor(source: string, blkno: bigint | null, check: CorruptCheck, detail: string) {
    const where = blkno === null ? source : `${source} blkno ${blkno}`;
    super(`corruption: ${where}: ${check} check failed: ${detail}`);
    this.name = 'CorruptionError';
    this.source = source;
    this.blkno = blkno;
    this.check = check;
  }
}

export class LifecycleError extends Error {
  readonly reason: 'shutdown' | 'fenced';
  constructor(reason: 'shutdown' | 'fenced', message: string) {
    super(message);
    this.name = 'LifecycleError';
    this.reason = reason;
  }
}

/** A plain object that survives structured clone between threads. */
export type SerializedError =
  | { kind: 'fs'; code: ErrnoName; message: string }
  | { kind: 'corruption'; source: string; blkno: string | null; check: CorruptCheck; message: string }
  | { kind: 'lifecycle'; reason: 'shutdown' | 'fenced'; message: string }
  | { kind: 'other'; name: string; message: string; stack?: string };

export function serializeError(e: unknown): SerializedError {
  if (e instanceof FsError) return { kind: 'fs', code: e.code, message: e.message };
  if (e instanceof CorruptionError) {
    return {
      kind: 'corruption', source: e.source, check: e.check, message: e.message,
      blkno: e.blkno === null ? null : e.blkno.toString(),
    };
  }
  if (e instanceof LifecycleError) return { kind: 'lifecycle', reason: e.reason, message: e.message };
  const err = e instanceof Error ? e : new Error(String(e));
  return { kind: 'other', name: err.name, message: err.message, stack: err.stack };
}

export function deserializeError(s: SerializedError): Error {
  switch (s.kind) {
    case 'fs': {
      const e = new FsError(s.code);
      e.message = s.message;
      return e;
    }
    case 'corruption': {
      const e = new CorruptionError(s.source, s.blkno === null ? null : BigInt(s.blkno), s.check, '');
      e.message = s.message;
      return e;
    }
    case 'lifecycle':
      return new LifecycleError(s.reason, s.message);
    case 'other': {
      const e = new Error(s.message);
      e.name = s.name;
      if (s.stack !== undefined) e.stack = s.stack;
      return e;
    }
  }
}
