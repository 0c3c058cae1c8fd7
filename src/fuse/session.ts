/*
 * src/fuse/session.ts: one FUSE connection, from INIT to the end of the
 * device.  It takes raw request messages (handle()), decodes the header,
 * answers INIT, FORGET, BATCH_FORGET, INTERRUPT and DESTROY itself, hands
 * everything else to ops.ts, and writes exactly one reply per request that
 * wants one (FORGET and BATCH_FORGET want none) through its Channel.
 *
 *   /dev/fuse --reader (dev.ts)--> handle(msg) --> Ops.dispatch --> reply
 *                                      |  FORGET/INTERRUPT/INIT here
 *   notify.ts ------------------------------------------------> notify write
 *
 * Threads.  Everything here runs on the main thread.  Requests are not
 * serialized: each dispatch is a promise and many are in flight at once
 * (the kernel sends readahead, writeback and parallel directory operations
 * together); the Fs orders what must be ordered.  Reply writes are
 * synchronous write(2)s to the device (they never block: the kernel copies
 * the reply and wakes the waiter).
 *
 * Lookup counts.  Every reply that gives the kernel a reference to an
 * inode adds one to its count once the reply was written; FORGET and
 * BATCH_FORGET subtract.  A reply the kernel refused (ENOENT: the request
 * was interrupted and abandoned) adds nothing.  The counts say which
 * inodes the kernel may have cached, so invalidations (notify.ts) go only
 * where they can matter, and the cluster lock layer can know what this
 * node holds.  An inode forgotten to zero is dropped from the table.
 *
 * INTERRUPT.  The Fs cannot abandon an operation half way (a transaction
 * hold is all or nothing), so an interrupted request still completes and
 * replies normally; the kernel accepts that.  The one exception is a wait
 * for offline data (src/fs/archive.ts): every request carries an
 * AbortSignal, INTERRUPT aborts it, and a waiting read, write or truncate
 * then answers EINTR.  Requests the kernel never interrupts (readahead of
 * a reader that was killed: it dies at once) are caught by a watcher that
 * checks, every WATCH_MS, the process of each request older than WATCH_MS
 * and aborts the request when the process is gone or dying
 * (src/fuse/requester.ts).  An INTERRUPT for a request
 * we have not seen yet is answered EAGAIN, which makes the kernel queue it
 * again (only possible when a reader delivers out of order).
 *
 * INIT.  We accept major 7 with a minor from 7.23 (proto.ts) and answer
 * with min(kernel minor, 7.38).  We ask for ASYNC_READ, BIG_WRITES,
 * MAX_PAGES (max_pages 256: 1 MiB reads and writes), DO_READDIRPLUS,
 * READDIRPLUS_AUTO, PARALLEL_DIROPS, HAS_IOCTL_DIR, CACHE_SYMLINKS,
 * ABORT_ERROR and, when the mount wants it, WRITEBACK_CACHE; never a flag
 * the kernel did not offer.  Not asked: POSIX and flock locks (the kernel
 * keeps them locally: right for one node), ATOMIC_O_TRUNC (the kernel
 * sends a SETATTR instead), DONT_MASK (the kernel applies the umask),
 * AUTO_INVAL_DATA (we invalidate explicitly), SETXATTR_EXT and the
 * security context (their structs would change size), splice.
 *
 * Failure.  Nothing a request does can stop the session: a message that
 * does not decode (short, lengths that disagree, a missing NUL) is logged
 * once and answered EIO when its unique is readable; an Fs error becomes an
 * errno (ops.ts); an exception in our own code becomes EIO and a log line.
 * A reply the device refuses with anything but ENOENT is logged.
 */
import { ERRNO, FsError } from '../format/errors.js';
import {
  BATCH_FORGET_IN, FORGET_IN, FORGET_ONE, INIT, INIT_IN, INIT_IN_COMPAT_SIZE, INIT_OUT, INTERRUPT_IN, INT_REQ_BIT, KERNEL_MAJOR,
  MIN_KERNEL_MINOR, OP, OP_NAME, OUR_MINOR, ProtoError, ROOT_NODEID, decodeHeader, need, outHeader, type InHeader,
} from './proto.js';
import type { Answer, Ops } from './ops.js';
import { WATCH_MS, requesterGone } from './requester.js';

interface InFlight {
  ac: AbortController;
  pid: number;
  since: number;
  seen: { start?: string };
}

/** Where replies and notifications go (dev.ts for the kernel; tests record them). */
export interface Channel {
  /** Write one message synchronously; returns false when the kernel no longer wants it (ENOENT). */
  reply(parts: readonly Uint8Array[]): boolean;
  /** Write a notification without blocking the main thread; resolves when the kernel took it. */
  notify(parts: readonly Uint8Array[]): Promise<void>;
}

export interface SessionOptions {
  log: (line: string) => void;
  /** Ask for the writeback cache (see the INIT paragraph above). */
  writebackCache: boolean;
  /** Largest WRITE payload; the device read buffer is this plus a page. */
  maxWriteBytes: number;
  /** Called once when INIT was answered successfully. */
  onInit?: (info: InitInfo) => void;
  /** Called when the kernel said DESTROY. */
  onDestroy?: () => void;
}

export interface InitInfo {
  kernelMinor: number;
  minor: number;
  flags: number;
  maxWrite: number;
}

export interface SessionCounters {
  requests: number;
  inFlight: number;
  malformed: number;
  interrupts: number;
  forgets: number;
  replyErrors: number;
  /** Requests aborted because their process was gone or dying. */
  abandoned: number;
}

export const MAX_PAGES = 256;

export class Session {
  readonly counters: SessionCounters = { requests: 0, inFlight: 0, malformed: 0, interrupts: 0, forgets: 0, replyErrors: 0, abandoned: 0 };
  /** ino -> the kernel's lookup count. */
  private readonly lookups = new Map<bigint, bigint>();
  /** Requests being handled, by unique; their signal is aborted once interrupted. */
  private readonly inFlight = new Map<bigint, InFlight>();
  private watcher: NodeJS.Timeout | null = null;
  private init: InitInfo | null = null;
  private destroyed = false;
  private readonly log: (line: string) => void;
  private malformedLogged = 0;

  constructor(private readonly ops: Ops, private readonly ch: Channel, private readonly o: SessionOptions) {
    this.log = o.log;
    this.lookups.set(ROOT_NODEID, 1n);
  }

  get initialized(): InitInfo | null {
    return this.init;
  }

  /** The kernel's lookup count of `ino` (0 when it holds no reference). */
  lookupCount(ino: bigint): bigint {
    return this.lookups.get(ino) ?? 0n;
  }

  /** Inodes the kernel holds references to. */
  knownInodes(): number {
    return this.lookups.size;
  }

  /** One raw message from the device.  Never throws. */
  handle(msg: Buffer): void {
    this.counters.requests++;
    const partial: { unique: bigint | null } = { unique: null };
    let h: InHeader;
    let args: Buffer;
    try {
      ({ h, args } = decodeHeader(msg, partial));
    } catch (e) {
      this.malformed(e, partial.unique, null);
      return;
    }
    try {
      this.route(h, args);
    } catch (e) {
      // Decoding errors of the messages handled here, or our own bug.
      this.malformed(e, h.unique, h.opcode);
    }
  }

  private malformed(e: unknown, unique: bigint | null, opcode: number | null): void {
    this.counters.malformed++;
    const what = opcode === null ? 'message' : (OP_NAME.get(opcode) ?? `opcode ${opcode}`);
    // One line per bad message, but a flood is cut to a count.
    if (this.malformedLogged++ < 100) {
      this.log(`fuse: bad ${what}${unique === null ? '' : ` (unique ${unique})`}: ${e instanceof Error ? e.message : String(e)} (EIO)`);
    }
    // FORGETs want no reply; anything else with a readable unique gets EIO.
    if (unique !== null && unique !== 0n && opcode !== OP.FORGET && opcode !== OP.BATCH_FORGET) this.send(unique, -ERRNO.EIO, []);
  }

  private route(h: InHeader, args: Buffer): void {
    switch (h.opcode) {
      case OP.INIT:
        this.doInit(h, args);
        return;
      case OP.FORGET:
        need(args, FORGET_IN);
        this.forget(h.nodeid, args.readBigUInt64LE(FORGET_IN.o('nlookup')));
        return;
      case OP.BATCH_FORGET: {
        need(args, BATCH_FORGET_IN);
        const count = args.readUInt32LE(BATCH_FORGET_IN.o('count'));
        if (args.length < BATCH_FORGET_IN.size + count * FORGET_ONE.size) throw new ProtoError(`BATCH_FORGET of ${count} carries ${args.length} bytes`);
        for (let i = 0; i < count; i++) {
          const at = BATCH_FORGET_IN.size + i * FORGET_ONE.size;
          this.forget(args.readBigUInt64LE(at + FORGET_ONE.o('nodeid')), args.readBigUInt64LE(at + FORGET_ONE.o('nlookup')));
        }
        return;
      }
      case OP.INTERRUPT: {
        need(args, INTERRUPT_IN);
        this.counters.interrupts++;
        const target = args.readBigUInt64LE(INTERRUPT_IN.o('unique'));
        const r = this.inFlight.get(target);
        if (r !== undefined) r.ac.abort();
        else this.send(h.unique, -ERRNO.EAGAIN, []);
        return;
      }
      case OP.DESTROY:
        this.destroyed = true;
        this.send(h.unique, 0, []);
        this.o.onDestroy?.();
        return;
      default:
        break;
    }
    if (this.init === null || this.destroyed) {
      this.send(h.unique, -ERRNO.EIO, []);
      return;
    }
    const fast = this.ops.trySync(h, args);
    if (fast !== null) {
      this.send(h.unique, fast, []);
      return;
    }
    this.counters.inFlight++;
    const r: InFlight = { ac: new AbortController(), pid: h.pid, since: Date.now(), seen: {} };
    this.inFlight.set(h.unique, r);
    if (this.watcher === null) {
      this.watcher = setInterval(() => this.watch(), WATCH_MS);
      this.watcher.unref();
    }
    let p: Promise<Answer>;
    try {
      p = this.ops.dispatch(h, args, r.ac.signal);
    } catch (e) {
      p = Promise.reject(e);
    }
    p.then(
      (a) => this.done(h, 0, a),
      (e: unknown) => this.done(h, e instanceof ProtoError ? this.protoErrno(e, h) : this.ops.errno(e, h), null),
    );
  }

  private protoErrno(e: ProtoError, h: InHeader): number {
    this.counters.malformed++;
    if (this.malformedLogged++ < 100) this.log(`fuse: bad ${OP_NAME.get(h.opcode) ?? h.opcode} (unique ${h.unique}): ${e.message} (EIO)`);
    return -ERRNO.EIO;
  }

  /** Abort the requests whose process is gone or dying (see the header). */
  private watch(): void {
    const now = Date.now();
    for (const r of this.inFlight.values()) {
      if (r.pid <= 0 || r.ac.signal.aborted || now - r.since < WATCH_MS) continue;
      if (requesterGone(r.pid, r.seen)) {
        this.counters.abandoned++;
        r.ac.abort();
      }
    }
  }

  private done(h: InHeader, error: number, a: Answer | null): void {
    this.counters.inFlight--;
    this.inFlight.delete(h.unique);
    if (this.inFlight.size === 0 && this.watcher !== null) {
      clearInterval(this.watcher);
      this.watcher = null;
    }
    let delivered: boolean;
    try {
      delivered = this.send(h.unique, error, a?.parts ?? []);
    } catch (e) {
      // A reply we could not even build: our bug; the request still gets EIO.
      this.log(`fuse: reply to ${OP_NAME.get(h.opcode) ?? h.opcode}: ${e instanceof Error ? e.message : String(e)} (EIO)`);
      delivered = this.send(h.unique, -ERRNO.EIO, []);
      return;
    }
    if (delivered && a?.lookups !== undefined) {
      for (const ino of a.lookups) this.lookups.set(ino, (this.lookups.get(ino) ?? 0n) + 1n);
    }
  }

  private send(unique: bigint, error: number, parts: readonly Uint8Array[]): boolean {
    let len = 0;
    if (error === 0) for (const p of parts) len += p.length;
    try {
      return this.ch.reply(error === 0 ? [outHeader(unique, 0, len), ...parts] : [outHeader(unique, error, 0)]);
    } catch (e) {
      this.counters.replyErrors++;
      this.log(`fuse: reply to unique ${unique} refused: ${e instanceof Error ? e.message : String(e)}`);
      return false;
    }
  }

  private forget(ino: bigint, n: bigint): void {
    this.counters.forgets++;
    const c = this.lookups.get(ino);
    if (c === undefined) return;
    if (ino === ROOT_NODEID) return; // the root is never forgotten while mounted
    if (c <= n) this.lookups.delete(ino);
    else this.lookups.set(ino, c - n);
  }

  private doInit(h: InHeader, args: Buffer): void {
    if (args.length < INIT_IN_COMPAT_SIZE) throw new ProtoError(`INIT of ${args.length} bytes`);
    const major = args.readUInt32LE(INIT_IN.o('major'));
    const minor = args.readUInt32LE(INIT_IN.o('minor'));
    const offered = args.readUInt32LE(INIT_IN.o('flags'));
    if (this.init !== null) throw new ProtoError('a second INIT');
    if (major !== KERNEL_MAJOR || minor < MIN_KERNEL_MINOR) {
      this.log(`fuse: the kernel speaks FUSE ${major}.${minor}; we need ${KERNEL_MAJOR}.${MIN_KERNEL_MINOR} or newer`);
      this.send(h.unique, -ERRNO.EPROTO, []);
      return;
    }
    const want = INIT.ASYNC_READ | INIT.BIG_WRITES | INIT.MAX_PAGES | INIT.DO_READDIRPLUS | INIT.READDIRPLUS_AUTO
      | INIT.PARALLEL_DIROPS | INIT.HAS_IOCTL_DIR | INIT.CACHE_SYMLINKS | INIT.ABORT_ERROR
      | (this.o.writebackCache ? INIT.WRITEBACK_CACHE : 0);
    const flags = (want & offered) >>> 0;
    const ourMinor = Math.min(minor, OUR_MINOR);
    const maxWrite = this.o.maxWriteBytes;
    const b = Buffer.alloc(INIT_OUT.size);
    b.writeUInt32LE(KERNEL_MAJOR, INIT_OUT.o('major'));
    b.writeUInt32LE(ourMinor, INIT_OUT.o('minor'));
    b.writeUInt32LE(Math.min(args.readUInt32LE(INIT_IN.o('max_readahead')), maxWrite), INIT_OUT.o('max_readahead'));
    b.writeUInt32LE(flags, INIT_OUT.o('flags'));
    // Background requests (readahead, async writeback) the kernel keeps in flight.
    b.writeUInt16LE(64, INIT_OUT.o('max_background'));
    b.writeUInt16LE(48, INIT_OUT.o('congestion_threshold'));
    b.writeUInt32LE(maxWrite, INIT_OUT.o('max_write'));
    b.writeUInt32LE(1, INIT_OUT.o('time_gran'));
    b.writeUInt16LE(MAX_PAGES, INIT_OUT.o('max_pages'));
    if (!this.send(h.unique, 0, [b])) return;
    this.init = { kernelMinor: minor, minor: ourMinor, flags, maxWrite };
    this.log(`fuse: INIT kernel ${major}.${minor}, speaking ${KERNEL_MAJOR}.${ourMinor}, flags ${flags.toString(16)} (offered ${offered.toString(16)}), max_write ${maxWrite}`);
    this.o.onInit?.(this.init);
  }

  /** For notify.ts: write a notification (never awaited inside a request). */
  notify(parts: readonly Uint8Array[]): Promise<void> {
    if (this.init === null || this.destroyed) return Promise.reject(new FsError('ENOTCONN', 'the FUSE session is not running'));
    return this.ch.notify(parts);
  }
}
