/*
 * The lock client (PROTOCOL.md 6.1-6.5, 4.4, 5.4-5.5; kmod lock.c): every
 * mount's side of the cluster locks.  The filesystem takes a lock on a key
 * range (src/format/lock.ts names them) in READ, WRITE or WRITE_ONLY mode
 * before it holds a transaction and touches items, and releases it after;
 * the server decides which mount may hold what.
 *
 *   fs:   h = await locks.lock('WRITE', inodeLockRange(ino))
 *         th = await trans.hold(); items.update(k, v, h.item); trans.release(th)
 *         locks.unlock(h)
 *
 *   ClientLock (one per lock name, cached after unlock):
 *     mode        what the server granted us (what we tell a new server in recovery)
 *     writeSeq    the seq of our write grant: item seq = max(trans_seq, writeSeq) (5.1)
 *     users       count of holders per mode
 *     waiters     lock() calls not yet satisfied, FIFO
 *     request     our one outstanding LOCK request (6.3), or none
 *     invq        invalidation requests from the server, in receive order
 *     dirtyTransSeq  trans_seq when a WRITE / WRITE_ONLY holder last unlocked
 *
 * Using a lock.  A lock() is satisfied at once when the granted mode
 * satisfies the wanted one (equal, or WRITE for READ) and no queued
 * invalidation's target mode stands against it; else it waits, and if no
 * request is outstanding one is sent for its mode (old = our mode).  A
 * NONBLOCK caller gets EAGAIN instead.  The holder gets a LockHandle whose
 * `item` is the ItemLock the item cache checks (its range, the mode the
 * holder asked for, the lock's write seq).
 *
 * Grants and invalidations, inline and in order (3.5).  The LOCK response
 * callback and the LOCK request handler (registered ordered) run
 * synchronously in receive order on the connection's pump.  A grant sets
 * the mode and write seq and turns every waiter it satisfies into a user
 * in the same step, so an invalidation that arrives right behind it cannot
 * starve them.  An invalidation is only queued inline (the handler defers
 * its answer), which blocks new users whose mode its target does not
 * satisfy; a per-lock worker then processes the queue in order:
 *   1. wait until no user holds a mode the target does not satisfy;
 *   2. if our mode could write and the lock dirtied the current
 *      transaction (dirtyTransSeq == trans_seq), commit it now (4.4);
 *   3. unless WRITE -> READ (our cache stays true), drop the item cache of
 *      the range and ask the kernel hook to drop what it caches of the
 *      range (attributes, pages and names of the inodes it covers);
 *   4. set the mode to the target and answer with the request's key and
 *      modes.
 * Only then may the server grant the lock to another mount, whose cache
 * miss reads the committed roots: a write on one mount is seen by the next
 * holder on another (5.5).  An invalidation for a lock we do not hold (or
 * hold only in a mode the target allows) is answered at once; duplicates
 * are harmless.  One queued for a server we have since left (its answer
 * would be dropped) is skipped: the new server rebuilt its view from our
 * recovery answer.
 *
 * Recovery (6.5): LOCK_RECOVER(key) is answered at once with up to 22 of
 * our locks from that key on, in key order, each (start, write_seq, mode,
 * mode).  We report the mode the server granted, not a downgrade still in
 * progress: the new server must not think we hold less than we might use.
 * Locks in NULL mode are not reported (13.7).  A request that never got an
 * answer is resent to the new server by the NetClient, and processed once
 * recovery is over.
 *
 * Dropping locks.  Unused locks stay cached in their mode until the server
 * asks for them.  purgeIdle() (and, past maxLocks, the oldest idle ones)
 * sends NULL requests: the server first invalidates our own grant (so the
 * commit and cache drop above run) and then grants NULL, which frees the
 * ClientLock.
 *
 * Errors (3.3).  A grant that is an error response, has the wrong size, or
 * names another key or an unknown mode shuts the connection down and the
 * request is sent again once reconnected.  An invalidation request with a
 * mode byte that is not NULL or READ as target is fatal for the connection
 * (the handler throws NetCorruptionError; the handlers are sizeFatal).  A
 * commit that fails during an invalidation (forced unmount) is logged, the
 * dirty range is left cached, and the invalidation is still answered: the
 * mount is going away, and uncommitted items never reach anyone.  A kernel
 * hook that throws is logged and counted; the answer still goes out.
 * shutdown() fails waiters and refuses new lock() calls with a
 * LifecycleError but keeps answering invalidations (1.4).
 *
 * Deviations, recorded: the reference's lock() may be interrupted by a
 * signal; ours cannot (no cancellation in the fs yet).  We do not refuse
 * locking while a transaction is held (EDEADLK): with async operations the
 * hold count says nothing about the caller; the fs must order lock before
 * hold itself, and take several locks in key order (lockMany does).
 *
 * Owner: the mount's main thread; everything here runs between awaits.
 */
import assert from 'node:assert/strict';
import { FsError, LifecycleError } from '../format/errors.js';
import { compareKeys, formatKey, readKey, type Key } from '../format/key.js';
import {
  LOCK_MODE, lockInodeSpan, lockModeCanRead, lockModeCanWrite, lockModeName, lockModeSatisfies, lockRangeOfStart,
  type HeldLockMode, type KeyRange, type LockKind, type LockModeName,
} from '../format/lock.js';
import {
  NET_CMD, NET_LOCK, NET_LOCK_RECOVER_MAX_NR, encodeNetLock, encodeNetLockRecover, readNetLock, type NetCmd, type NetLock,
} from '../format/net.js';
import {
  DEFERRED, type DeferredReply, type HandlerOptions, type IdempotentHandler, type IncomingRequest, type NetResult,
  type ResponseCallback,
} from '../net/connection.js';
import { NetCorruptionError } from '../net/frame.js';

/* ---- what the lock client is given --------------------------------------------------- */

/** The mount's NetClient, as the lock client uses it. */
export interface LockNet {
  register(cmd: NetCmd, fn: IdempotentHandler, opts?: HandlerOptions): void;
  submitRequest(cmd: NetCmd, data: Uint8Array, cb: ResponseCallback): void;
  /** Shut the current socket down (a protocol violation); the client reconnects. */
  disconnect(): void;
}

/** The mount's transaction (src/trans Trans has this shape). */
export interface LockTrans {
  /** The open transaction's seq (0 before the first). */
  readonly transSeq: bigint;
  /** Commit now if the lock dirtied the current transaction; resolves when durable. */
  syncForLock(dirtyTransSeq: bigint): Promise<void>;
}

/** The mount's item cache (src/item ItemCache has this shape). */
export interface LockItems {
  /** Drop every cached item in [start, end]; none may be dirty. */
  invalidate(start: Key, end: Key): number;
  hasDirty(start: Key, end: Key): boolean;
}

/**
 * What the kernel must forget when a lock is given up or downgraded so far
 * that our cached view may go stale (not for WRITE -> READ).  For an inode
 * group lock `inodes` is the span of 1024 inode numbers it covers: the FUSE
 * transport invalidates the attributes and page cache of every inode it
 * has cached in that span (NOTIFY_INVAL_INODE) and the cached names of
 * every directory in that span (NOTIFY_INVAL_ENTRY for the entries it
 * knows, or the whole directory's pages), because dirents are items of
 * their directory's inode.  The other kinds cover no kernel-cached state
 * (index, orphan, totl items, and the rename lock) and carry inodes null;
 * the hook may ignore them.
 */
export interface KernelInvalidation {
  readonly kind: LockKind;
  readonly start: Key;
  readonly end: Key;
  readonly inodes: { first: bigint; last: bigint } | null;
  readonly oldMode: LockModeName;
  readonly newMode: LockModeName;
}

/** The kernel cache invalidation hook (the FUSE transport provides it). */
export interface KernelCacheInvalidator {
  /** Awaited before the invalidation is answered; a throw is logged, never fatal. */
  invalidate(inv: KernelInvalidation): void | Promise<void>;
}

/** Mode changes, for the simulator's lock oracle and traces. */
export type LockEvent =
  | { type: 'grant'; key: Key; old: LockModeName; mode: LockModeName; writeSeq: bigint }
  | { type: 'downgrade'; key: Key; old: LockModeName; mode: LockModeName };

export interface LockClientOptions {
  net: LockNet;
  trans: LockTrans;
  items: LockItems;
  kernel?: KernelCacheInvalidator;
  /** Idle locks beyond this many are dropped, oldest first (default 16384). */
  maxLocks?: number;
  log?: (line: string) => void;
  observe?: (ev: LockEvent) => void;
}

export interface LockClientCounters {
  lockCalls: number;
  /** lock() calls that had to wait. */
  lockWaits: number;
  nonblockEagain: number;
  requests: number;
  grants: number;
  /** Grants or invalidations the protocol forbids (connection shut down). */
  badMessages: number;
  invalidations: number;
  /** Invalidations answered without changing anything (not held, duplicates). */
  invalidationsNoop: number;
  /** Invalidations from a server we have left, skipped. */
  invalidationsStale: number;
  downgrades: number;
  /** Commits run because a lock being invalidated dirtied the transaction (4.4). */
  invalidationSyncs: number;
  invalidationSyncFailures: number;
  itemPagesInvalidated: number;
  kernelInvalidations: number;
  kernelInvalidationErrors: number;
  recoverRequests: number;
  recoveredLocks: number;
  /** NULL requests sent to drop idle locks. */
  purges: number;
  freed: number;
  /** Grants that found dirty items in a range we could not write (5.4: a protocol bug). */
  grantConsistencyErrors: number;
}

/* ---- locks and handles ------------------------------------------------------------- */

interface Waiter {
  readonly mode: HeldLockMode;
  resolve(h: LockHandle): void;
  reject(e: Error): void;
}

interface QueuedInvalidation {
  readonly msg: NetLock;
  readonly next: LockModeName;
  readonly reply: DeferredReply;
}

class ClientLock {
  mode: LockModeName = 'NULL';
  writeSeq = 0n;
  readonly users: Record<HeldLockMode, number> = { READ: 0, WRITE: 0, WRITE_ONLY: 0 };
  waiters: Waiter[] = [];
  request: LockModeName | null = null;
  readonly invq: QueuedInvalidation[] = [];
  working = false;
  dirtyTransSeq = 0n;
  refreshGen = 0;
  lastUsed = 0;
  /** Resolved when no user holds a mode `target` does not satisfy. */
  drain: { target: LockModeName; resolve: () => void } | null = null;

  constructor(readonly id: string, readonly kind: LockKind, readonly range: KeyRange) {}

  get userCount(): number {
    return this.users.READ + this.users.WRITE + this.users.WRITE_ONLY;
  }

  usersAgainst(target: LockModeName): number {
    let n = 0;
    for (const m of ['READ', 'WRITE', 'WRITE_ONLY'] as const) if (!lockModeSatisfies(target, m)) n += this.users[m];
    return n;
  }

  /** May a new user of mode m start now? */
  usable(m: HeldLockMode): boolean {
    if (!lockModeSatisfies(this.mode, m)) return false;
    for (const inv of this.invq) if (!lockModeSatisfies(inv.next, m)) return false;
    return true;
  }

  get idle(): boolean {
    return this.userCount === 0 && this.waiters.length === 0 && this.request === null && this.invq.length === 0 && !this.working;
  }
}

/** A held lock: pass `item` to the item cache, give it back with unlock(). */
export class LockHandle {
  released = false;
  /** @internal */
  constructor(readonly lock: ClientLock, readonly mode: HeldLockMode) {}

  get start(): Key {
    return this.lock.range.start;
  }
  get end(): Key {
    return this.lock.range.end;
  }
  get kind(): LockKind {
    return this.lock.kind;
  }
  /** The lock's write seq (0 unless granted WRITE or WRITE_ONLY). */
  get writeSeq(): bigint {
    return this.lock.writeSeq;
  }
  /**
   * Bumped each time the lock goes from a mode that cannot read to one that
   * can (6.3): an inode whose cached fields are older must refresh them.
   */
  get refreshGen(): number {
    return this.lock.refreshGen;
  }
  /** The ItemLock the item cache checks operations against. */
  get item(): { start: Key; end: Key; mode: HeldLockMode; writeSeq: bigint } {
    return { start: this.lock.range.start, end: this.lock.range.end, mode: this.mode, writeSeq: this.lock.writeSeq };
  }
}

const DEFAULT_MAX_LOCKS = 16384;

export class LockClient {
  readonly counters: LockClientCounters = {
    lockCalls: 0, lockWaits: 0, nonblockEagain: 0, requests: 0, grants: 0, badMessages: 0, invalidations: 0,
    invalidationsNoop: 0, invalidationsStale: 0, downgrades: 0, invalidationSyncs: 0, invalidationSyncFailures: 0,
    itemPagesInvalidated: 0, kernelInvalidations: 0, kernelInvalidationErrors: 0, recoverRequests: 0, recoveredLocks: 0,
    purges: 0, freed: 0, grantConsistencyErrors: 0,
  };
  private readonly locks = new Map<string, ClientLock>();
  private sorted: ClientLock[] | null = null;
  private shut = false;
  private tick = 0;
  private readonly maxLocks: number;
  private readonly logFn: (line: string) => void;

  constructor(private readonly opts: LockClientOptions) {
    this.maxLocks = opts.maxLocks ?? DEFAULT_MAX_LOCKS;
    assert(this.maxLocks >= 1);
    this.logFn = opts.log ?? ((l) => console.error(l));
  }

  /** Register the LOCK and LOCK_RECOVER handlers; do it before the NetClient starts. */
  register(): this {
    this.opts.net.register(NET_CMD.LOCK, (req) => this.onInvalidation(req), { ordered: true, sizeFatal: true });
    this.opts.net.register(NET_CMD.LOCK_RECOVER, (req) => this.onRecover(req), { ordered: true, sizeFatal: true });
    return this;
  }

  /* ---- the API the filesystem calls ------------------------------------------------------ */

  /**
   * Take a lock on `range` (a range from src/format/lock.ts) in `mode`.
   * Waits until the server grants a mode that satisfies it; with nonblock,
   * fails EAGAIN instead of waiting.  Take locks before holding a
   * transaction, several in key order (lockMany).
   */
  async lock(mode: HeldLockMode, range: KeyRange, opts: { nonblock?: boolean } = {}): Promise<LockHandle> {
    assert(mode === 'READ' || mode === 'WRITE' || mode === 'WRITE_ONLY', `lock mode ${String(mode)}`);
    if (this.shut) throw new LifecycleError('shutdown', 'the lock client is shut down');
    this.counters.lockCalls++;
    const lock = this.lockOf(range);
    lock.lastUsed = ++this.tick;
    if (lock.usable(mode)) return this.addUser(lock, mode);
    if (opts.nonblock === true) {
      this.counters.nonblockEagain++;
      this.maybeFree(lock);
      throw new FsError('EAGAIN', `${mode} lock on ${lock.id} not available`);
    }
    this.counters.lockWaits++;
    const p = new Promise<LockHandle>((resolve, reject) => lock.waiters.push({ mode, resolve, reject }));
    this.maybeRequest(lock);
    return p;
  }

  /** Lock several ranges in key order (duplicates once); returns handles in that order. */
  async lockMany(mode: HeldLockMode, ranges: readonly KeyRange[]): Promise<LockHandle[]> {
    const uniq = [...new Map(ranges.map((r) => [formatKey(r.start), r])).values()]
      .sort((a, b) => compareKeys(a.start, b.start));
    const out: LockHandle[] = [];
    try {
      for (const r of uniq) out.push(await this.lock(mode, r));
    } catch (e) {
      for (const h of out) this.unlock(h);
      throw e;
    }
    return out;
  }

  /** Give a handle back.  A WRITE / WRITE_ONLY holder marks the current transaction dirty for the lock. */
  unlock(h: LockHandle): void {
    assert(!h.released, 'lock handle released twice');
    h.released = true;
    const lock = h.lock;
    assert(lock.users[h.mode] > 0, 'unlock without a user');
    lock.users[h.mode]--;
    if (lockModeCanWrite(h.mode)) {
      const seq = this.opts.trans.transSeq;
      if (seq > lock.dirtyTransSeq) lock.dirtyTransSeq = seq;
    }
    lock.lastUsed = ++this.tick;
    if (lock.drain !== null && lock.usersAgainst(lock.drain.target) === 0) {
      const d = lock.drain;
      lock.drain = null;
      d.resolve();
    }
    this.maybeFree(lock);
    if (this.locks.size > this.maxLocks) this.shrink();
  }

  /** Drop every idle lock (NULL requests): the statfs_lock_purge trigger of the reference. */
  purgeIdle(): number {
    let n = 0;
    for (const lock of this.locks.values()) if (this.purge(lock)) n++;
    return n;
  }

  /** Refuse new lock() calls and fail waiters; invalidations are still answered. */
  shutdown(): void {
    if (this.shut) return;
    this.shut = true;
    for (const lock of this.locks.values()) {
      const ws = lock.waiters;
      lock.waiters = [];
      for (const w of ws) w.reject(new LifecycleError('shutdown', 'the lock client is shut down'));
    }
  }

  /* ---- status ------------------------------------------------------------------------ */

  /** The mode we hold of the lock named by start key, as the server granted it. */
  modeOf(start: Key): LockModeName {
    return this.locks.get(formatKey(start))?.mode ?? 'NULL';
  }

  /** Every lock with a mode, in key order (checkers and status). */
  held(): { start: Key; mode: LockModeName; writeSeq: bigint; users: number }[] {
    return this.sortedLocks().filter((l) => l.mode !== 'NULL')
      .map((l) => ({ start: l.range.start, mode: l.mode, writeSeq: l.writeSeq, users: l.userCount }));
  }

  status(): { locks: number; held: number; waiting: number; invalidating: number; requests: number } {
    let held = 0;
    let waiting = 0;
    let invalidating = 0;
    let requests = 0;
    for (const l of this.locks.values()) {
      if (l.mode !== 'NULL') held++;
      waiting += l.waiters.length;
      invalidating += l.invq.length;
      if (l.request !== null) requests++;
    }
    return { locks: this.locks.size, held, waiting, invalidating, requests };
  }

  /* ---- lock objects ----------------------------------------------------------------------- */

  private lockOf(range: KeyRange): ClientLock {
    const id = formatKey(range.start);
    let lock = this.locks.get(id);
    if (lock === undefined) {
      const named = lockRangeOfStart(range.start);
      assert(named !== null && compareKeys(named.range.end, range.end) === 0, `${id} .. ${formatKey(range.end)} is not a lock range`);
      lock = new ClientLock(id, named.kind, { start: { ...named.range.start }, end: { ...named.range.end } });
      this.locks.set(id, lock);
      this.sorted = null;
    }
    return lock;
  }

  private maybeFree(lock: ClientLock): void {
    if (lock.mode !== 'NULL' || !lock.idle) return;
    if (this.locks.get(lock.id) !== lock) return;
    this.locks.delete(lock.id);
    this.sorted = null;
    this.counters.freed++;
  }

  private sortedLocks(): ClientLock[] {
    if (this.sorted === null) this.sorted = [...this.locks.values()].sort((a, b) => compareKeys(a.range.start, b.range.start));
    return this.sorted;
  }

  private addUser(lock: ClientLock, mode: HeldLockMode): LockHandle {
    lock.users[mode]++;
    return new LockHandle(lock, mode);
  }

  /** Send a request for the first waiter the granted mode does not satisfy, if none is out. */
  private maybeRequest(lock: ClientLock): void {
    if (lock.request !== null) return;
    const w = lock.waiters.find((x) => !lockModeSatisfies(lock.mode, x.mode));
    if (w === undefined) return;
    this.sendRequest(lock, w.mode);
  }

  private sendRequest(lock: ClientLock, mode: LockModeName): void {
    lock.request = mode;
    this.counters.requests++;
    const data = encodeNetLock({ key: lock.range.start, write_seq: 0n, old_mode: LOCK_MODE[lock.mode], new_mode: LOCK_MODE[mode] });
    this.opts.net.submitRequest(NET_CMD.LOCK, data, (r) => this.onGrant(lock, mode, r));
  }

  /** Waiters the lock now satisfies become users; the rest may need a request. */
  private wake(lock: ClientLock): void {
    if (lock.waiters.length > 0) {
      const rest: Waiter[] = [];
      const ready: [Waiter, LockHandle][] = [];
      for (const w of lock.waiters) {
        if (lock.usable(w.mode)) ready.push([w, this.addUser(lock, w.mode)]);
        else rest.push(w);
      }
      lock.waiters = rest;
      for (const [w, h] of ready) w.resolve(h);
    }
    this.maybeRequest(lock);
    this.maybeFree(lock);
  }

  private purge(lock: ClientLock): boolean {
    if (this.shut || lock.mode === 'NULL' || !lock.idle) return false;
    this.counters.purges++;
    this.sendRequest(lock, 'NULL');
    return true;
  }

  /** Past maxLocks: drop the least recently used idle locks down to 90 %. */
  private shrink(): void {
    const idle = [...this.locks.values()].filter((l) => l.idle && l.mode !== 'NULL').sort((a, b) => a.lastUsed - b.lastUsed);
    let over = this.locks.size - Math.floor(this.maxLocks * 0.9);
    for (const l of idle) {
      if (over <= 0) break;
      if (this.purge(l)) over--;
    }
  }

  /* ---- grants -------------------------------------------------------------------------- */

  private onGrant(lock: ClientLock, asked: LockModeName, r: NetResult): void {
    assert.equal(lock.request, asked, 'a grant for a request that is not outstanding');
    lock.request = null;
    if (!r.ok) {
      if (r.error instanceof LifecycleError) {
        const ws = lock.waiters;
        lock.waiters = [];
        for (const w of ws) w.reject(r.error);
        this.maybeFree(lock);
        return;
      }
      this.bad(`LOCK ${asked} on ${lock.id} answered: ${r.error.message}`);
      this.resend(lock, asked);
      return;
    }
    const nl = r.data.length === NET_LOCK.size ? readNetLock(r.data, 0) : null;
    const mode = nl === null ? null : lockModeName(nl.new_mode);
    if (nl === null || mode === null || compareKeys(nl.key, lock.range.start) !== 0 || mode !== asked) {
      this.bad(`grant for ${lock.id} ${nl === null ? `of ${r.data.length} bytes` : `${formatKey(nl.key)} -> ${nl.new_mode}`}, asked ${asked}`);
      this.resend(lock, asked);
      return;
    }
    const old = lock.mode;
    // 5.4: a range we could not write holds no dirty items when it is granted.
    if (!lockModeCanWrite(old) && this.opts.items.hasDirty(lock.range.start, lock.range.end)) {
      this.counters.grantConsistencyErrors++;
      this.logFn(`lock client: grant of ${mode} on ${lock.id} from ${old} finds dirty items in its range`);
    }
    if (!lockModeCanRead(old) && lockModeCanRead(mode)) lock.refreshGen++;
    lock.mode = mode;
    lock.writeSeq = lockModeCanWrite(mode) ? nl.write_seq : 0n;
    this.counters.grants++;
    this.opts.observe?.({ type: 'grant', key: lock.range.start, old, mode, writeSeq: lock.writeSeq });
    this.wake(lock);
  }

  private resend(lock: ClientLock, asked: LockModeName): void {
    this.opts.net.disconnect();
    if (this.shut && asked !== 'NULL') {
      this.wake(lock);
      return;
    }
    this.sendRequest(lock, asked);
  }

  private bad(why: string): void {
    this.counters.badMessages++;
    this.logFn(`lock client: ${why}; shutting the connection down`);
  }

  /* ---- invalidations ------------------------------------------------------------------ */

  private onInvalidation(req: IncomingRequest): typeof DEFERRED {
    const nl = readNetLock(req.data, 0);
    const next = lockModeName(nl.new_mode);
    if (next === null || (next !== 'NULL' && next !== 'READ') || lockModeName(nl.old_mode) === null) {
      this.counters.badMessages++;
      throw new NetCorruptionError(req.peer, 'bad-payload', `invalidation of ${formatKey(nl.key)} ${nl.old_mode} -> ${nl.new_mode}`);
    }
    this.counters.invalidations++;
    const reply = req.defer();
    const lock = this.locks.get(formatKey(nl.key));
    if (lock === undefined || (lock.invq.length === 0 && !this.needsChange(lock.mode, next))) {
      // Not held, or held only in a mode the target allows: nothing to do.
      this.counters.invalidationsNoop++;
      reply.send(encodeNetLock({ ...nl, write_seq: 0n }));
      return DEFERRED;
    }
    lock.invq.push({ msg: nl, next, reply });
    void this.work(lock);
    return DEFERRED;
  }

  private needsChange(mode: LockModeName, next: LockModeName): boolean {
    return mode !== 'NULL' && mode !== next;
  }

  /** The per-lock invalidation worker: one at a time, in receive order. */
  private async work(lock: ClientLock): Promise<void> {
    if (lock.working) return;
    lock.working = true;
    try {
      while (lock.invq.length > 0) {
        const inv = lock.invq[0]!;
        if (inv.reply.stale) {
          this.counters.invalidationsStale++;
          lock.invq.shift();
          this.wake(lock);
          continue;
        }
        if (this.needsChange(lock.mode, inv.next)) await this.downgrade(lock, inv.next);
        else this.counters.invalidationsNoop++;
        lock.invq.shift();
        inv.reply.send(encodeNetLock({ ...inv.msg, write_seq: 0n }));
        this.wake(lock);
      }
    } finally {
      lock.working = false;
      this.maybeFree(lock);
    }
  }

  private async downgrade(lock: ClientLock, next: LockModeName): Promise<void> {
    if (lock.usersAgainst(next) > 0) {
      await new Promise<void>((resolve) => {
        lock.drain = { target: next, resolve };
      });
    }
    const old = lock.mode;
    const { start, end } = lock.range;
    if (lockModeCanWrite(old) && lock.dirtyTransSeq !== 0n && lock.dirtyTransSeq === this.opts.trans.transSeq) {
      this.counters.invalidationSyncs++;
      try {
        await this.opts.trans.syncForLock(lock.dirtyTransSeq);
      } catch (e) {
        if (!(e instanceof Error)) throw e;
        this.counters.invalidationSyncFailures++;
        this.logFn(`lock client: commit before giving up ${old} on ${lock.id} failed: ${e.message}`);
      }
    }
    if (!(old === 'WRITE' && next === 'READ')) {
      if (this.opts.items.hasDirty(start, end)) {
        this.logFn(`lock client: ${lock.id} keeps dirty items after a failed commit; not dropping its cache`);
      } else {
        this.counters.itemPagesInvalidated += this.opts.items.invalidate(start, end);
      }
      const k = this.opts.kernel;
      if (k !== undefined) {
        this.counters.kernelInvalidations++;
        try {
          await k.invalidate({ kind: lock.kind, start, end, inodes: lockInodeSpan(lock.range), oldMode: old, newMode: next });
        } catch (e) {
          if (!(e instanceof Error)) throw e;
          this.counters.kernelInvalidationErrors++;
          this.logFn(`lock client: kernel cache invalidation of ${lock.id} failed: ${e.message}`);
        }
      }
    }
    lock.mode = next;
    if (!lockModeCanWrite(next)) lock.writeSeq = 0n;
    this.counters.downgrades++;
    this.opts.observe?.({ type: 'downgrade', key: start, old, mode: next });
  }

  /* ---- recovery -------------------------------------------------------------------------- */

  private onRecover(req: IncomingRequest): Uint8Array {
    const from = readKey(req.data, 0);
    this.counters.recoverRequests++;
    const out: NetLock[] = [];
    for (const l of this.sortedLocks()) {
      if (out.length >= NET_LOCK_RECOVER_MAX_NR) break;
      if (l.mode === 'NULL' || compareKeys(l.range.start, from) < 0) continue;
      const m = LOCK_MODE[l.mode];
      out.push({ key: l.range.start, write_seq: l.writeSeq, old_mode: m, new_mode: m });
    }
    this.counters.recoveredLocks += out.length;
    return encodeNetLockRecover(out);
  }
}
