/*
 * The lock server (PROTOCOL.md 6.3-6.6, 3.10; kmod lock_server.c): the
 * server's side of the cluster locks.  Mounts ask for a mode on a lock
 * (named by the start key of its range, src/format/lock.ts); the server
 * grants it once no other mount holds an incompatible mode, first asking
 * those holders to give theirs up.
 *
 *   per lock (start key):
 *     granted      rid -> mode        what each mount holds
 *     invalidated  rid -> old, next   holders asked to go to `next`, no answer yet
 *     requested    FIFO of (rid, mode, deferred reply)
 *
 *   LOCK request from rid ---> requested.push --> process(lock)
 *   process: nothing while any invalidation of this lock is outstanding, or
 *            while any rid still has LOCKS recovery pending; otherwise the
 *            head request: every incompatible holder gets an invalidation
 *            (S->C LOCK, old = its mode, new = READ if it holds WRITE and
 *            READ is wanted, else NULL) and moves to `invalidated`; when
 *            there are none, the request is granted: old = the rid's
 *            previous mode, new = the requested mode, write_seq = a fresh
 *            seq for WRITE and WRITE_ONLY, sent as the response to the
 *            request; then the next request.
 *   invalidation response: the entry goes back to `granted` with the new
 *            mode (or away, for NULL); process(lock).
 *
 * Compatibility (6.3): two holders may coexist when both hold READ or both
 * hold WRITE_ONLY; a rid's own READ does not stand in the way of its own
 * WRITE request (upgrade: it keeps its cache).  Every other pair conflicts,
 * the requester's own grant included (its WRITE when it asks WRITE_ONLY,
 * its READ when it asks WRITE_ONLY), so a mount may be asked to give up its
 * own lock before its grant.  We differ from the reference for NULL
 * requests (13.6): a NULL request (a mount dropping an idle lock) conflicts
 * only with the requester's own grant; other holders keep theirs.
 *
 * Wire order.  A grant is sent (DeferredReply, src/net/connection.ts) in
 * the same synchronous step that records it, and invalidations are
 * submitted when they are decided, on the rid's one connection: so the
 * client always receives a grant before any invalidation that follows it,
 * which its inline, in-order processing relies on (3.5).  Only the seq for
 * a write grant is fetched asynchronously (it needs a commit hold); the
 * lock is marked busy meanwhile and the grant is decided again afterwards.
 *
 * Write seqs are drawn from the server's counter (seq.ts) and not committed
 * before they are revealed: a new server learns them back through lock
 * recovery, which raises its counter past every recovered write_seq before
 * any request is processed (and the composition makes GET_LOG_TREES wait
 * for whenRecovered(), 13.26).
 *
 * Recovery (6.5, 3.10).  No state is persisted (6.4).  A new server calls
 * beginRecovery() with every rid of mounted_clients; until each has
 * finished, no request of any lock is processed.  When such a rid first
 * greets us (clientUp), we send LOCK_RECOVER(zeros); it answers with up to
 * 22 of its locks from that key on, in key order, each (start key,
 * write_seq, mode); we record them as granted, raise the seq counter and
 * ask again from the key after the last; an empty answer finishes the rid.
 * Deviations, on purpose: NULL-mode entries are skipped (they hold
 * nothing, 13.7), and an entry identical to one already recorded is
 * accepted (a batch asked again after a bad answer) while a different one
 * is the reference's EEXIST (shut down).  A rid that never recovers is
 * fenced by the owner's recovery timer, and its forget() finishes it.
 *
 * Farewell and reclaim (6.6): forget(rid) removes the rid from every list
 * of every lock and from pending recovery, then processes every lock.
 * Idempotent.  The owner calls it only once the rid is gone for good (a
 * farewell, or after fencing): before that, a holder that does not answer
 * keeps its lock, and conflicting requests wait (safety over liveness).
 *
 * Peer errors (3.3).  A LOCK request with a mode byte that is not a mode,
 * or a key that starts no lock, shuts the connection down without an
 * answer (the handler is sizeFatal too).  An invalidation or recovery
 * response that is an error, of the wrong size (the connection checks it),
 * for the wrong key or modes, or that names no outstanding entry, shuts the
 * connection down; the invalidation or recovery request is then sent again
 * (it is idempotent on the client), so the lock does not stall.  A rid the
 * server already forgot is ignored.
 *
 * Owner: the server's main thread.  Nothing blocks; every change happens
 * synchronously in a handler, a response callback or after the one await
 * of a write seq.
 *
 * Test of the test (STYLE.md 7): breakNextGrants(n) / opts.brokenGrants
 * make the next n grants that would need invalidations skip them and grant
 * at once, leaving incompatible holders in place.  The simulator's lock
 * oracle must catch it.  Never set in production.
 *
 * Left out: lock shrinking on the server (mounts drop idle locks with NULL
 * requests), and the per-lock statistics sysfs shows.
 */
import assert from 'node:assert/strict';
import { FsError, LifecycleError } from '../format/errors.js';
import { ZERO_KEY, compareKeys, encodeKey, formatKey, keyInc, type Key } from '../format/key.js';
import {
  LOCK_MODE, lockModeName, lockRangeOfStart, type LockModeName,
} from '../format/lock.js';
import {
  NET_CMD, NET_LOCK, decodeNetLockRecover, encodeNetLock, readNetLock, type NetCmd,
} from '../format/net.js';
import {
  DEFERRED, type DeferredReply, type HandlerOptions, type IdempotentHandler, type IncomingRequest, type NetResult,
  type ResponseCallback,
} from '../net/connection.js';
import { NetCorruptionError } from '../net/frame.js';
import type { CommitQueue } from './commitq.js';
import type { SeqCounter } from './seq.js';

/** What the lock server needs of the NetServer. */
export interface LockServerNet {
  register(cmd: NetCmd, fn: IdempotentHandler, opts?: HandlerOptions): void;
  submitRequestToRid(rid: bigint, cmd: NetCmd, data: Uint8Array, cb: ResponseCallback): boolean;
  disconnectRid(rid: bigint): boolean;
}

/** The seq counter, as the lock server uses it (lockSeqsOf adapts seq.ts). */
export interface LockSeqs {
  /** A fresh seq for a write grant; not committed before it is revealed. */
  nextWriteSeq(): Promise<bigint>;
  /** Raise the counter to at least seq (recovered write seqs). */
  raise(seq: bigint): Promise<void>;
}

/** LockSeqs over the server's commit queue and seq counter: a hold around each change. */
export function lockSeqsOf(commitq: CommitQueue, seq: SeqCounter): LockSeqs {
  return {
    async nextWriteSeq() {
      const h = await commitq.hold();
      try {
        return seq.nextSeq();
      } finally {
        // Not applied: the seq rides along with the next commit (6.3).
        commitq.release(h);
      }
    },
    async raise(s) {
      if (s <= seq.current) return;
      const h = await commitq.hold();
      try {
        seq.raise(s);
      } finally {
        commitq.release(h);
      }
    },
  };
}

export interface LockServerOptions {
  net: LockServerNet;
  seqs: LockSeqs;
  log?: (line: string) => void;
  /** TEST OF THE TEST ONLY: the first n grants that need invalidations skip them. */
  brokenGrants?: number;
}

export interface LockServerCounters {
  requests: number;
  /** A queued request of the same rid and lock replaced by a newer one. */
  requestsReplaced: number;
  /** Requests dropped because their connection was gone. */
  requestsStale: number;
  grants: number;
  writeGrants: number;
  nullGrants: number;
  invalidationsSent: number;
  /** Invalidations that found no connection for the rid (it will be forgotten). */
  invalidationsUnsent: number;
  invalidationResponses: number;
  /** Requests from peers the protocol forbids (bad modes or keys). */
  badRequests: number;
  /** Invalidation / recovery responses that were errors or invalid. */
  badResponses: number;
  recoveryRequests: number;
  recoveredLocks: number;
  recoveriesFinished: number;
  forgets: number;
  seqFailures: number;
  /** Grants that skipped invalidations (test of the test only). */
  brokenGrants: number;
}

interface Waiting {
  readonly rid: bigint;
  readonly mode: LockModeName;
  readonly reply: DeferredReply;
  /** The write seq fetched for this request, once it has one. */
  writeSeq: bigint | null;
  /** Test of the test: this request is granted without invalidations. */
  broken: boolean;
}

interface Invalidation {
  readonly old: LockModeName;
  readonly next: LockModeName;
}

class ServerLock {
  readonly granted = new Map<bigint, LockModeName>();
  readonly invalidated = new Map<bigint, Invalidation>();
  requested: Waiting[] = [];
  /** A write seq is being fetched for the head request. */
  busy = false;
  constructor(readonly key: Key, readonly id: string) {}

  get idle(): boolean {
    return this.granted.size === 0 && this.invalidated.size === 0 && this.requested.length === 0 && !this.busy;
  }
}

const isWriteMode = (m: LockModeName): boolean => m === 'WRITE' || m === 'WRITE_ONLY';

/** May a holder of `held` (rid holder) stay while `req` is granted? */
function compatible(holder: bigint, held: LockModeName, req: Waiting): boolean {
  if (req.mode === 'NULL') return holder !== req.rid;
  if (held === req.mode && (held === 'READ' || held === 'WRITE_ONLY')) return true;
  return holder === req.rid && held === 'READ' && req.mode === 'WRITE';
}

/** May two different mounts hold these modes at once? */
export function holdersCompatible(a: LockModeName, b: LockModeName): boolean {
  return a === 'NULL' || b === 'NULL' || (a === b && (a === 'READ' || a === 'WRITE_ONLY'));
}

const ridHex = (rid: bigint): string => rid.toString(16).padStart(16, '0');

export class LockServer {
  readonly counters: LockServerCounters = {
    requests: 0, requestsReplaced: 0, requestsStale: 0, grants: 0, writeGrants: 0, nullGrants: 0, invalidationsSent: 0,
    invalidationsUnsent: 0, invalidationResponses: 0, badRequests: 0, badResponses: 0, recoveryRequests: 0, recoveredLocks: 0,
    recoveriesFinished: 0, forgets: 0, seqFailures: 0, brokenGrants: 0,
  };
  private readonly locks = new Map<string, ServerLock>();
  /** Rids with LOCKS recovery pending (3.10). */
  private readonly pending = new Set<bigint>();
  private readonly forgotten = new Set<bigint>();
  private recoveredWaiters: (() => void)[] = [];
  private broken: number;
  private stopped = false;
  private readonly logFn: (line: string) => void;

  constructor(private readonly opts: LockServerOptions) {
    this.broken = opts.brokenGrants ?? 0;
    this.logFn = opts.log ?? ((l) => console.error(l));
  }

  /** Register the LOCK handler (sizeFatal: a wrong-sized request shuts the connection, 3.3). */
  register(): this {
    this.opts.net.register(NET_CMD.LOCK, (req) => this.onRequest(req), { sizeFatal: true });
    return this;
  }

  /* ---- recovery -------------------------------------------------------------------- */

  /** Server start: these rids (mounted_clients) must recover their locks first. */
  beginRecovery(rids: Iterable<bigint>): void {
    for (const rid of rids) {
      assert(rid !== 0n);
      if (!this.forgotten.has(rid)) this.pending.add(rid);
    }
  }

  /** Any rid still has LOCKS recovery pending: no request is processed. */
  get recovering(): boolean {
    return this.pending.size > 0;
  }

  pendingRecovery(): bigint[] {
    return [...this.pending];
  }

  /** Resolves once no rid has recovery pending (GET_LOG_TREES waits for it, 13.26). */
  whenRecovered(): Promise<void> {
    if (!this.recovering) return Promise.resolve();
    return new Promise((resolve) => this.recoveredWaiters.push(resolve));
  }

  /** First contact of rid with this server (NetServer clientUp): start its lock recovery. */
  clientUp(rid: bigint): void {
    if (this.stopped || !this.pending.has(rid)) return;
    this.sendRecover(rid, { ...ZERO_KEY });
  }

  /* ---- farewell / reclaim ------------------------------------------------------------ */

  /** Forget everything of rid (farewell, or reclaim after fencing) and go on (6.6). */
  forget(rid: bigint): void {
    this.counters.forgets++;
    this.forgotten.add(rid);
    const touched: ServerLock[] = [];
    for (const lock of this.locks.values()) {
      const before = lock.requested.length;
      lock.requested = lock.requested.filter((w) => w.rid !== rid);
      if (lock.granted.delete(rid) || lock.invalidated.delete(rid) || lock.requested.length !== before) touched.push(lock);
    }
    if (this.pending.delete(rid)) this.recoveryMaybeDone();
    for (const lock of touched) this.process(lock);
  }

  /** Stop processing (the server is going away); nothing more is sent. */
  shutdown(): void {
    this.stopped = true;
  }

  /* ---- test of the test ----------------------------------------------------------------- */

  /** Named one-shot trigger: the next n grants that need invalidations skip them (BROKEN). */
  breakNextGrants(n: number): void {
    assert(Number.isSafeInteger(n) && n >= 0);
    this.broken = n;
  }

  /* ---- status ------------------------------------------------------------------------- */

  /** Problems with the state: two incompatible holders of one lock (test and simulator checks). */
  checkInvariants(): string[] {
    const out: string[] = [];
    for (const lock of this.locks.values()) {
      const holders: [bigint, LockModeName][] = [...lock.granted];
      for (const [rid, inv] of lock.invalidated) holders.push([rid, inv.old]);
      for (let i = 0; i < holders.length; i++) {
        for (let j = i + 1; j < holders.length; j++) {
          const [a, am] = holders[i]!;
          const [b, bm] = holders[j]!;
          if (!holdersCompatible(am, bm)) out.push(`lock ${lock.id}: rid ${ridHex(a)} holds ${am} and rid ${ridHex(b)} holds ${bm}`);
        }
      }
      if (lock.granted.has(0n)) out.push(`lock ${lock.id}: rid 0 holds it`);
    }
    return out;
  }

  /** What rid holds of the lock named by key, per this server ('NULL' when nothing). */
  heldBy(rid: bigint, k: Key): LockModeName {
    const lock = this.locks.get(formatKey(k));
    return lock?.granted.get(rid) ?? lock?.invalidated.get(rid)?.old ?? 'NULL';
  }

  status(): { locks: number; recovering: number; waiting: number; invalidating: number } {
    let waiting = 0;
    let invalidating = 0;
    for (const l of this.locks.values()) {
      waiting += l.requested.length;
      invalidating += l.invalidated.size;
    }
    return { locks: this.locks.size, recovering: this.pending.size, waiting, invalidating };
  }

  /* ---- requests ------------------------------------------------------------------------ */

  private lockOf(k: Key): ServerLock {
    const id = formatKey(k);
    let lock = this.locks.get(id);
    if (lock === undefined) {
      lock = new ServerLock({ ...k }, id);
      this.locks.set(id, lock);
    }
    return lock;
  }

  private onRequest(req: IncomingRequest): typeof DEFERRED {
    assert(req.rid !== 0n, 'a LOCK request reached the lock server before its greeting');
    const nl = readNetLock(req.data, 0);
    const mode = lockModeName(nl.new_mode);
    if (mode === null || lockModeName(nl.old_mode) === null || lockRangeOfStart(nl.key) === null) {
      this.counters.badRequests++;
      throw new NetCorruptionError(req.peer, 'bad-payload',
        `LOCK request of rid ${ridHex(req.rid)} for ${formatKey(nl.key)} modes ${nl.old_mode} -> ${nl.new_mode}`);
    }
    this.counters.requests++;
    const lock = this.lockOf(nl.key);
    const w: Waiting = { rid: req.rid, mode, reply: req.defer(), writeSeq: null, broken: false };
    // A mount has at most one request per lock outstanding (6.3): another
    // one queued for this rid was resent on a connection that is gone.
    const i = lock.requested.findIndex((x) => x.rid === req.rid);
    if (i >= 0) {
      this.counters.requestsReplaced++;
      if (i === 0 && lock.busy) lock.requested[0] = w; // the seq being fetched will serve it
      else {
        lock.requested.splice(i, 1);
        lock.requested.push(w);
      }
    } else {
      lock.requested.push(w);
    }
    this.process(lock);
    return DEFERRED;
  }

  /** Grant what can be granted, send the invalidations the head request needs. */
  private process(lock: ServerLock): void {
    if (this.stopped || this.recovering || lock.busy || lock.invalidated.size > 0) return;
    while (lock.requested.length > 0) {
      const w = lock.requested[0]!;
      if (w.reply.stale) {
        this.counters.requestsStale++;
        lock.requested.shift();
        continue;
      }
      const conflicts = [...lock.granted].filter(([rid, held]) => !compatible(rid, held, w));
      if (conflicts.length > 0 && !w.broken) {
        if (this.broken > 0) {
          this.broken--;
          w.broken = true;
          this.counters.brokenGrants++;
          this.logFn(`lock server: BROKEN grant of ${w.mode} on ${lock.id} to rid ${ridHex(w.rid)} skips ${conflicts.length} invalidations`);
        } else {
          for (const [rid, held] of conflicts) this.invalidate(lock, rid, held, held === 'WRITE' && w.mode === 'READ' ? 'READ' : 'NULL');
          return;
        }
      }
      if (isWriteMode(w.mode) && w.writeSeq === null) {
        this.fetchWriteSeq(lock, w);
        return;
      }
      lock.requested.shift();
      this.grant(lock, w);
    }
    if (lock.idle) this.locks.delete(lock.id);
  }

  private fetchWriteSeq(lock: ServerLock, w: Waiting): void {
    lock.busy = true;
    this.opts.seqs.nextWriteSeq().then(
      (seq) => {
        lock.busy = false;
        // The head may have been replaced by a resend of the same request
        // or dropped (forget); the seq then serves whichever is at the head.
        const head = lock.requested[0];
        if (head !== undefined && isWriteMode(head.mode) && head.writeSeq === null) head.writeSeq = seq;
        this.process(lock);
      },
      (e: unknown) => {
        lock.busy = false;
        if (!(e instanceof FsError || e instanceof LifecycleError)) throw e;
        // The volume failed or the server is stopping: this server is done.
        this.counters.seqFailures++;
        this.logFn(`lock server: no write seq for ${lock.id}: ${e.message}; the lock waits for the next server`);
      },
    );
  }

  private grant(lock: ServerLock, w: Waiting): void {
    assert.equal(lock.invalidated.size, 0, 'granting with invalidations outstanding');
    const old = lock.granted.get(w.rid) ?? 'NULL';
    if (w.mode === 'NULL') lock.granted.delete(w.rid);
    else lock.granted.set(w.rid, w.mode);
    const writeSeq = isWriteMode(w.mode) ? w.writeSeq! : 0n;
    assert(!isWriteMode(w.mode) || writeSeq > 0n, 'a write grant without a write seq');
    this.counters.grants++;
    if (isWriteMode(w.mode)) this.counters.writeGrants++;
    if (w.mode === 'NULL') this.counters.nullGrants++;
    w.reply.send(encodeNetLock({ key: lock.key, write_seq: writeSeq, old_mode: LOCK_MODE[old], new_mode: LOCK_MODE[w.mode] }));
  }

  /* ---- invalidations ------------------------------------------------------------------------ */

  private invalidate(lock: ServerLock, rid: bigint, held: LockModeName, next: LockModeName): void {
    assert(!lock.invalidated.has(rid));
    lock.granted.delete(rid);
    const inv: Invalidation = { old: held, next };
    lock.invalidated.set(rid, inv);
    this.sendInvalidation(lock, rid, inv);
  }

  private sendInvalidation(lock: ServerLock, rid: bigint, inv: Invalidation): void {
    const data = encodeNetLock({ key: lock.key, write_seq: 0n, old_mode: LOCK_MODE[inv.old], new_mode: LOCK_MODE[inv.next] });
    const sent = this.opts.net.submitRequestToRid(rid, NET_CMD.LOCK, data, (r) => this.onInvalidated(lock, rid, inv, r));
    if (sent) this.counters.invalidationsSent++;
    else this.counters.invalidationsUnsent++;
  }

  private onInvalidated(lock: ServerLock, rid: bigint, inv: Invalidation, r: NetResult): void {
    if (this.stopped || this.forgotten.has(rid)) return;
    if (!r.ok) {
      // Connection destroyed: the rid will be fenced and forgotten.
      if (r.error instanceof LifecycleError) return;
      this.badResponse(rid, `invalidation of ${lock.id} answered: ${r.error.message}`);
      if (lock.invalidated.get(rid) === inv) this.sendInvalidation(lock, rid, inv);
      return;
    }
    const cur = lock.invalidated.get(rid);
    const nl = r.data.length === NET_LOCK.size ? readNetLock(r.data, 0) : null;
    if (cur !== inv || nl === null || compareKeys(nl.key, lock.key) !== 0 || nl.old_mode !== LOCK_MODE[inv.old] ||
        nl.new_mode !== LOCK_MODE[inv.next]) {
      this.badResponse(rid, `invalidation response for ${lock.id} ${nl === null ? '' : `${formatKey(nl.key)} ${nl.old_mode} -> ${nl.new_mode}`}` +
        `${cur === inv ? '' : ' with none outstanding'}`);
      if (cur === inv) this.sendInvalidation(lock, rid, inv);
      return;
    }
    this.counters.invalidationResponses++;
    lock.invalidated.delete(rid);
    if (inv.next !== 'NULL') lock.granted.set(rid, inv.next);
    this.process(lock);
  }

  private badResponse(rid: bigint, why: string): void {
    this.counters.badResponses++;
    this.logFn(`lock server: rid ${ridHex(rid)}: ${why}; shutting its connection down`);
    this.opts.net.disconnectRid(rid);
  }

  /* ---- recovery exchange ----------------------------------------------------------------------- */

  private sendRecover(rid: bigint, start: Key): void {
    this.counters.recoveryRequests++;
    const sent = this.opts.net.submitRequestToRid(rid, NET_CMD.LOCK_RECOVER, encodeKey(start), (r) => this.onRecover(rid, start, r));
    // No connection: the rid will greet again (and recover) or be fenced.
    if (!sent) this.counters.recoveryRequests--;
  }

  private onRecover(rid: bigint, start: Key, r: NetResult): void {
    if (this.stopped || this.forgotten.has(rid)) return;
    if (!this.pending.has(rid)) {
      this.badResponse(rid, 'LOCK_RECOVER response from a rid not recovering');
      return;
    }
    if (!r.ok) {
      if (r.error instanceof LifecycleError) return;
      this.badResponse(rid, `LOCK_RECOVER answered: ${r.error.message}`);
      this.sendRecover(rid, start);
      return;
    }
    const entries = decodeNetLockRecover(r.data);
    const bad = entries === null ? 'a malformed batch' : this.checkRecovered(rid, start, entries);
    if (bad !== null) {
      this.badResponse(rid, `LOCK_RECOVER from ${formatKey(start)}: ${bad}`);
      this.sendRecover(rid, start);
      return;
    }
    if (entries!.length === 0) {
      this.counters.recoveriesFinished++;
      this.pending.delete(rid);
      this.recoveryMaybeDone();
      return;
    }
    let maxSeq = 0n;
    for (const e of entries!) {
      if (e.write_seq > maxSeq) maxSeq = e.write_seq;
      const mode = lockModeName(e.new_mode)!;
      if (mode === 'NULL') continue;
      this.counters.recoveredLocks++;
      this.lockOf(e.key).granted.set(rid, mode);
    }
    const next = keyInc(entries![entries!.length - 1]!.key);
    this.opts.seqs.raise(maxSeq).then(
      () => {
        if (!this.stopped && this.pending.has(rid)) this.sendRecover(rid, next);
      },
      (e: unknown) => {
        if (!(e instanceof FsError || e instanceof LifecycleError)) throw e;
        this.counters.seqFailures++;
        this.logFn(`lock server: raising the seq for rid ${ridHex(rid)}'s recovered locks failed: ${e.message}`);
      },
    );
  }

  /** null when a recovery batch is acceptable, else why not. */
  private checkRecovered(rid: bigint, start: Key, entries: { key: Key; old_mode: number; new_mode: number }[]): string | null {
    let prev: Key | null = null;
    for (const e of entries) {
      const mode = lockModeName(e.new_mode);
      if (mode === null || e.old_mode !== e.new_mode) return `modes ${e.old_mode} -> ${e.new_mode}`;
      if (lockRangeOfStart(e.key) === null) return `${formatKey(e.key)} starts no lock`;
      if (compareKeys(e.key, start) < 0 || (prev !== null && compareKeys(e.key, prev) <= 0)) return `${formatKey(e.key)} out of order`;
      prev = e.key;
      const lock = this.locks.get(formatKey(e.key));
      const had = lock?.granted.get(rid) ?? lock?.invalidated.get(rid)?.old;
      if (had !== undefined && had !== mode) return `${formatKey(e.key)} recovered as ${mode}, already held as ${had} (EEXIST)`;
    }
    return null;
  }

  private recoveryMaybeDone(): void {
    if (this.recovering) return;
    for (const w of this.recoveredWaiters.splice(0)) w();
    for (const lock of [...this.locks.values()]) this.process(lock);
  }
}
