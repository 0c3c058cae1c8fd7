/*
 * The client transaction (PROTOCOL.md 4.1-4.5, 4.13 (7), (8), (11); kmod
 * trans.c): holders that modify the mount's items, and the commit worker
 * that turns each transaction into one COMMIT_LOG_TREES and opens the next
 * with one GET_LOG_TREES.
 *
 *            openFirst(): GET ------------------------------+
 *                                                            v
 *   hold() ... item ops, srch adds ... release()      trans_seq = G1
 *        (blocked while WRITER)                              |
 *   commit worker: WRITER, drain holders,                    |
 *     loop { items -> log btree, bloom;  write blocks, flush;|
 *            COMMIT(lt, G1);  mark items clean;  GET -> G2 } |
 *     (any error: warn once, 2 s, retry: same COMMIT G1)     v
 *   record result, clear WRITER, re-arm the 10 s timer  trans_seq = G2
 *
 * State (all on the main thread, owned by this object):
 *  - seq: trans_seq, 0 until the first GET succeeded (openFirst), then the
 *    get_trans_seq of the open transaction; it changes only when a GET
 *    succeeded and its lt is installed.
 *  - holders and the WRITER bit.  hold() fails EINVAL while seq is 0;
 *    nested holds (an `outer` hold of the same caller) always succeed;
 *    otherwise a hold waits while WRITER is set, fails ENOSPC when it
 *    allocates and the server flagged meta_avail LOW, and first kicks a
 *    commit and waits for it when the transaction's allocator is too low
 *    for the dirty items (commit_before_hold, 4.3 step 5).  The commit
 *    worker sets WRITER, waits for the holders to drain, and clears it only
 *    after the next GET succeeded: no holder can ever touch a transaction
 *    whose COMMIT has been sent and whose successor is not open (4.13 (7)).
 *  - the lt the GET returned and the ForestWriter over a working copy of it
 *    (allocator, log btree, bloom, srch file: src/forest/writer.ts).
 *  - writeCount / the result of each commit, for sync waiters; the 10 s
 *    timer on the injected Clock, re-armed after every commit (an idle
 *    mount commits every 10 s, PROTOCOL.md 13.13).
 *  - the failure status: counters, a warning logged once per failure
 *    streak, the last error and the step it failed in, and "retried
 *    transaction commit succeeded" when the streak ends.  A persistent
 *    failure is never silent: status().failing, consecutiveFailures and
 *    counters.commitFailures say so while writers wait.
 *
 * The commit worker's attempt.  One Attempt per transaction, kept across
 * retries, records what is done: the dirty item snapshot, the items
 * already written into the log btree, the lt to send (fixed when the
 * writer closes), whether the blocks are written and whether COMMIT was
 * acknowledged and the items marked clean.  A retry resumes at the first
 * unfinished step; the COMMIT is re-sent on every retry, byte for byte the
 * same, with the same get_trans_seq (the server acknowledges a COMMIT it
 * has already applied, 4.7).  The items go into the log btree as one batch
 * (ForestWriter.writeItems); a batch that failed part way is written again
 * whole, which the writer makes a replace of the same bytes (a delta's sum
 * is computed once, so it never counts twice), and the allocator is never
 * used after the blocks were written.  If a re-sent COMMIT that the server
 * had already acknowledged now fails, we go on to the GET anyway: the
 * acknowledgement was durable (4.11), and the server may have opened the
 * next transaction meanwhile (a GET that failed after its change rode
 * along with a later server commit, 13.10), after which it rejects any
 * COMMIT for the old seq with EIO forever.
 *
 * trans_seq == 0 commits succeed at once with no traffic (4.5 step 2), so
 * sync during a mount blocked before its first GET completes (4.14 (4)).
 * A forced unmount ends the loop with EIO and drops the dirty blocks.
 *
 * Data (4.5 steps 1, 3, 6).  There is no page cache to write back: the
 * filesystem (src/fs) writes file data to the data device as it arrives,
 * allocating blocks from the open transaction's data_avail and freeing
 * them into its data_freed through the ForestWriter, so the lt COMMIT
 * carries both as they stand (and data_avail's total feeds the
 * commit_before_hold rule).  Steps 1 and 6 are the `dev.flush` before the
 * COMMIT, which the mount makes flush the data device, then the metadata
 * device; there is no cached data extent to return (step 3).
 *
 * Left out: lock-driven syncs are the syncForLock() entry point the lock
 * client will call.
 */
import assert from 'node:assert/strict';
import type { BlknoBounds } from '../alloc/extent.js';
import { listIsLow } from '../alloc/list.js';
import type { BlockImages } from '../alloc/meta.js';
import { ALLOC_FLAG_LOW } from '../format/common.js';
import { CorruptionError, FsError, LifecycleError } from '../format/errors.js';
import { LOG_TREES_FLAG_FINALIZED, type LogTrees } from '../format/logtrees.js';
import type { SrchEntry } from '../format/srch.js';
import type { Clock, Timer } from '../runtime/clock.js';
import { ForestWriter, cloneLogTrees } from '../forest/writer.js';
import type { CachedItem } from '../item/cache.js';

/** What the transaction needs from the server (in-process server, network client, test doubles). */
export interface TransServer {
  getLogTrees(): Promise<LogTrees>;
  /** Maybe delivered when it fails: the server applies a resent COMMIT at most once. */
  commitLogTrees(lt: LogTrees): Promise<void>;
}

/** The mount's metadata block images (CacheImages has this shape). */
export interface TransImages extends BlockImages {
  writeDirty(): Promise<number>;
  discard(): void;
  readonly dirtyCount: number;
}

/** What the transaction needs from the item cache. */
export interface TransItems {
  dirtySnapshot(): CachedItem[];
  markClean(items: readonly CachedItem[]): void;
  readonly dirtyBytes: number;
  dirtyPages(): number;
}

export type LogLevel = 'warn' | 'info';

export interface TransOptions {
  server: TransServer;
  clock: Clock;
  images: TransImages;
  /** The devices: flushed after the dirty blocks are written, before the COMMIT (the mount flushes data, then metadata). */
  dev: { flush(): Promise<void> };
  items: TransItems;
  /** Valid metadata blknos [2, total_meta_blocks - 1]. */
  bounds?: BlknoBounds;
  /** Our rid: every lt a GET returns must carry it. */
  rid?: bigint;
  log?: (level: LogLevel, msg: string) => void;
  /** Call-by-call trace for tests and the simulator. */
  trace?: (event: string) => void;
  commitIntervalMs?: number;
  retryDelayMs?: number;
  /** Commit when the dirty items pass this many bytes (default 8 MiB). */
  dirtyLimitBytes?: number;
  /** Commit when this many metadata blocks are dirty (default 1024). */
  dirtyBlockLimit?: number;
}

export const COMMIT_INTERVAL_MS = 10_000;
export const COMMIT_RETRY_MS = 2_000;
/** commit_before_hold: the allocator must have this many allocations and frees left (4.3). */
export const HOLD_ALLOC_MIN = 16;
/** commit_before_hold: data_avail below 256 MiB of 4 KiB blocks and not LOW. */
export const HOLD_DATA_MIN_BLOCKS = 65_536n;

export type CommitStep = 'drain' | 'items' | 'blocks' | 'commit' | 'clean' | 'get' | 'retry-wait' | 'idle';
export type KickReason = 'timer' | 'sync' | 'beforeHold' | 'limit' | 'server' | 'lock' | 'shutdown';

export interface TransCounters {
  holds: number;
  holdsBlocked: number;
  holdEinval: number;
  holdEnospc: number;
  commitBeforeHold: number;
  kicks: Record<KickReason, number>;
  /** Commit worker runs (each records one result). */
  commits: number;
  /** Runs that finished at once because no transaction was ever opened (no traffic). */
  commitsWithoutTrans: number;
  commitsOk: number;
  commitsEio: number;
  /** Failed attempts (each followed by a 2 s wait and a retry). */
  commitFailures: number;
  commitRpcs: number;
  commitResends: number;
  /** A resend of an acknowledged COMMIT failed; the GET went ahead (see the design note). */
  commitResendErrors: number;
  getRpcs: number;
  getFailures: number;
  warnings: number;
  recoveries: number;
  itemsWritten: number;
  blocksWritten: number;
}

export interface TransStatus {
  transSeq: bigint;
  holders: number;
  writer: boolean;
  step: CommitStep;
  writeCount: number;
  lastResult: 'ok' | string | null;
  failing: boolean;
  consecutiveFailures: number;
  failingSinceMs: number | null;
  lastError: string | null;
  lastFailedStep: CommitStep | null;
  forced: boolean;
}

export class TransHold {
  /** Nesting depth; 0 once released. */
  depth = 1;
  constructor(readonly trans: Trans, readonly seq: bigint) {}
}

interface Attempt {
  items: CachedItem[] | null;
  written: Set<CachedItem>;
  payload: LogTrees | null;
  blocksWritten: boolean;
  acked: boolean;
  cleaned: boolean;
  commitsSent: number;
}

interface WriteWaiter {
  after: number;
  resolve: (err: Error | null) => void;
}

function isProgrammerError(e: unknown): boolean {
  return e instanceof assert.AssertionError || e instanceof TypeError || e instanceof ReferenceError || e instanceof RangeError;
}

const errText = (e: unknown): string => (e instanceof Error ? e.message : String(e));

export class Trans {
  readonly counters: TransCounters = {
    holds: 0, holdsBlocked: 0, holdEinval: 0, holdEnospc: 0, commitBeforeHold: 0,
    kicks: { timer: 0, sync: 0, beforeHold: 0, limit: 0, server: 0, lock: 0, shutdown: 0 },
    commits: 0, commitsWithoutTrans: 0, commitsOk: 0, commitsEio: 0, commitFailures: 0, commitRpcs: 0, commitResends: 0,
    commitResendErrors: 0, getRpcs: 0, getFailures: 0, warnings: 0, recoveries: 0, itemsWritten: 0, blocksWritten: 0,
  };

  private seq = 0n;
  private holders = 0;
  private writer = false;
  private got: LogTrees | null = null;
  private fw: ForestWriter | null = null;
  private attempt: Attempt | null = null;

  private writeCount = 0;
  private lastResult: Error | null | undefined = undefined;
  private readonly writeWaiters: WriteWaiter[] = [];
  private writerClearWaiters: (() => void)[] = [];
  private drainWaiter: (() => void) | null = null;

  private requested = false;
  private running = false;
  private timer: Timer | null = null;
  private sleeping: { timer: Timer; wake: () => void } | null = null;
  private step: CommitStep = 'idle';

  private failing = false;
  private consecutiveFailures = 0;
  private failingSinceMs: number | null = null;
  private lastError: string | null = null;
  private lastFailedStep: CommitStep | null = null;

  private opening = false;
  private forced = false;
  private shut = false;
  /** shutdown() waiting for the commit worker to stop. */
  private readonly idleWaiters: (() => void)[] = [];
  private fatal: Error | null = null;

  private readonly intervalMs: number;
  private readonly retryMs: number;
  private readonly dirtyLimitBytes: number;
  private readonly dirtyBlockLimit: number;

  constructor(private readonly opts: TransOptions) {
    this.intervalMs = opts.commitIntervalMs ?? COMMIT_INTERVAL_MS;
    this.retryMs = opts.retryDelayMs ?? COMMIT_RETRY_MS;
    this.dirtyLimitBytes = opts.dirtyLimitBytes ?? 8 << 20;
    this.dirtyBlockLimit = opts.dirtyBlockLimit ?? 1024;
    assert(this.intervalMs > 0 && this.retryMs > 0 && this.dirtyLimitBytes > 0 && this.dirtyBlockLimit > 0);
  }

  /* ---- state for the item cache and the fs ------------------------------------- */

  /** trans_seq: 0 until the first GET, then the open transaction's get_trans_seq. */
  get transSeq(): bigint {
    return this.seq;
  }

  /** Some caller holds the transaction (item writes are allowed). */
  isHeld(): boolean {
    return this.holders > 0;
  }

  /** The open transaction's lt as the GET returned it (null before the first). */
  get openLt(): LogTrees | null {
    return this.got === null ? null : cloneLogTrees(this.got);
  }

  /** The open transaction's forest writer (tests, checkers). */
  get forest(): ForestWriter | null {
    return this.fw;
  }

  status(): TransStatus {
    return {
      transSeq: this.seq,
      holders: this.holders,
      writer: this.writer,
      step: this.step,
      writeCount: this.writeCount,
      lastResult: this.lastResult === undefined ? null : this.lastResult === null ? 'ok' : this.lastResult.message,
      failing: this.failing,
      consecutiveFailures: this.consecutiveFailures,
      failingSinceMs: this.failingSinceMs,
      lastError: this.lastError,
      lastFailedStep: this.lastFailedStep,
      forced: this.forced,
    };
  }

  /* ---- mount ----------------------------------------------------------------------- */

  /**
   * The mount's first GET_LOG_TREES.  Errors go to the caller (the mount
   * fails or retries); it never blocks the commit worker, which keeps
   * completing syncs with no traffic until this has installed an lt.
   */
  async openFirst(): Promise<void> {
    this.assertLive();
    assert(this.seq === 0n && !this.opening, 'openFirst twice');
    this.opening = true;
    try {
      const lt = await this.sendGet();
      this.validateGot(lt, 0n);
      const fw = await ForestWriter.open(this.opts.images, lt, { bounds: this.opts.bounds });
      this.assertLive();
      assert(this.seq === 0n, 'the first transaction was opened twice');
      this.install(lt, fw);
      this.armTimer();
    } finally {
      this.opening = false;
    }
  }

  /* ---- holders ----------------------------------------------------------------------- */

  async hold(opts: { allocating?: boolean; outer?: TransHold } = {}): Promise<TransHold> {
    this.assertLive();
    if (this.seq === 0n) {
      this.counters.holdEinval++;
      this.log('warn', 'transaction hold before the first transaction was opened');
      throw new FsError('EINVAL', 'no transaction is open yet');
    }
    if (opts.outer !== undefined) {
      assert(opts.outer.trans === this && opts.outer.depth > 0, 'nesting inside a hold that is not active');
      opts.outer.depth++;
      return opts.outer;
    }
    for (;;) {
      this.assertLive();
      if (this.writer) {
        this.counters.holdsBlocked++;
        await new Promise<void>((r) => this.writerClearWaiters.push(r));
        continue;
      }
      const fw = this.fw;
      assert(fw !== null && !fw.isClosed, 'an open transaction has a writer');
      if (opts.allocating === true && listIsLow(fw.lt.meta_avail)) {
        this.counters.holdEnospc++;
        throw new FsError('ENOSPC', 'the server flagged metadata allocation LOW');
      }
      if (this.commitBeforeHold(fw)) {
        this.counters.commitBeforeHold++;
        const after = this.writeCount;
        this.kick('beforeHold');
        await this.waitWrite(after);
        continue;
      }
      this.holders++;
      this.counters.holds++;
      return new TransHold(this, this.seq);
    }
  }

  release(h: TransHold): void {
    assert(h.trans === this && h.depth > 0 && this.holders > 0, 'release of a hold that is not held');
    h.depth--;
    if (h.depth > 0) return;
    this.holders--;
    if (this.holders === 0 && this.drainWaiter !== null) {
      const w = this.drainWaiter;
      this.drainWaiter = null;
      w();
    }
    if (!this.writer && !this.shut && this.overLimits()) this.kick('limit');
  }

  /** Log a .srch. xattr entry in the held transaction. */
  async srchAdd(h: TransHold, e: SrchEntry): Promise<void> {
    assert(h.trans === this && h.depth > 0 && h.seq === this.seq, 'srch add without the transaction held');
    await this.fw!.srchAdd(e);
  }

  addInodeCount(h: TransHold, delta: bigint): void {
    assert(h.trans === this && h.depth > 0 && h.seq === this.seq, 'inode count change without the transaction held');
    this.fw!.addInodeCount(delta);
  }

  /* ---- commit triggers ----------------------------------------------------------------- */

  /** sync/syncfs/fsync: commit everything released so far; wait resolves with that commit's result. */
  async sync(wait = true): Promise<void> {
    this.assertLive();
    const after = this.writeCount;
    this.kick('sync');
    if (!wait) return;
    const err = await this.waitWrite(after);
    if (err !== null) throw err;
  }

  /** The server's SYNC_LOG_TREES: commit soon, nobody waits. */
  serverSyncRequest(): void {
    if (!this.shut) this.kick('server');
  }

  /** Lock invalidation: sync if the lock dirtied the current transaction. */
  async syncForLock(lockDirtyTransSeq: bigint): Promise<void> {
    if (this.seq === 0n || lockDirtyTransSeq !== this.seq) return;
    const after = this.writeCount;
    this.kick('lock');
    const err = await this.waitWrite(after);
    if (err !== null) throw err;
  }

  /** Clean unmount: commit what is dirty, then refuse further holds. */
  async shutdown(): Promise<void> {
    if (this.shut) return;
    if (!this.forced) {
      const after = this.writeCount;
      this.kick('shutdown');
      const err = await this.waitWrite(after);
      if (err !== null) this.log('warn', `final transaction commit failed: ${err.message}`);
    }
    this.shut = true;
    this.timer?.cancel();
    this.timer = null;
    for (const w of this.writerClearWaiters.splice(0)) w();
    // The kick above may have been folded into a commit that was already
    // running: the worker then runs one more commit, which must be over
    // before the caller tears the server down (found by the perf suite: a
    // GET reached a closed volume after shutdown returned).  Nothing kicks
    // the worker once `shut` is set (holds, sync and the timer check it).
    if (this.running) await new Promise<void>((r) => this.idleWaiters.push(r));
  }

  /** Forced unmount: the commit worker gives up with EIO, dirty blocks are dropped. */
  forceUnmount(): void {
    this.forced = true;
    this.timer?.cancel();
    this.timer = null;
    // A commit in progress notices at its next step (or now, if it waits
    // to retry) and ends with EIO; with none running there is nothing to end.
    if (this.sleeping !== null) this.sleeping.wake();
    for (const w of this.writerClearWaiters.splice(0)) w();
  }

  /* ---- the commit worker --------------------------------------------------------------- */

  private kick(reason: KickReason): void {
    this.counters.kicks[reason]++;
    this.requested = true;
    if (this.running) return;
    this.running = true;
    void this.workerLoop();
  }

  private async workerLoop(): Promise<void> {
    try {
      while (this.requested) {
        this.requested = false;
        await this.commitOnce();
      }
    } catch (e) {
      // Our own bug: record it, fail everyone waiting, and stop (STYLE.md 4).
      this.fatal = e instanceof Error ? e : new Error(String(e));
      for (const w of this.writeWaiters.splice(0)) w.resolve(this.fatal);
      throw e;
    } finally {
      this.running = false;
      for (const w of this.idleWaiters.splice(0)) w();
    }
  }

  private async commitOnce(): Promise<void> {
    this.timer?.cancel();
    this.timer = null;
    this.writer = true;
    this.step = 'drain';
    if (this.holders > 0) await new Promise<void>((r) => { this.drainWaiter = r; });
    assert.equal(this.holders, 0, 'holders drained');
    this.counters.commits++;
    let err: Error | null = null;
    if (this.seq === 0n) {
      // 4.5 step 2: no transaction was ever opened; succeed without a word to the server.
      this.counters.commitsWithoutTrans++;
      this.trace('commit without an open transaction: nothing sent');
    } else if (this.forced) {
      err = this.abandon();
    } else {
      err = await this.commitLoop();
    }
    this.step = 'idle';
    this.writeCount++;
    this.lastResult = err;
    if (err === null) this.counters.commitsOk++;
    else this.counters.commitsEio++;
    for (let i = 0; i < this.writeWaiters.length;) {
      const w = this.writeWaiters[i]!;
      if (this.writeCount > w.after) {
        this.writeWaiters.splice(i, 1);
        w.resolve(err);
      } else {
        i++;
      }
    }
    this.writer = false;
    for (const w of this.writerClearWaiters.splice(0)) w();
    this.armTimer();
  }

  private async commitLoop(): Promise<Error | null> {
    this.attempt ??= { items: null, written: new Set(), payload: null, blocksWritten: false, acked: false, cleaned: false, commitsSent: 0 };
    const a = this.attempt;
    for (;;) {
      if (this.forced) return this.abandon();
      try {
        await this.commitSteps(a);
        this.attempt = null;
        if (this.failing) {
          this.log('info', `retried transaction commit succeeded after ${this.consecutiveFailures} failed attempts`);
          this.counters.recoveries++;
        }
        this.failing = false;
        this.consecutiveFailures = 0;
        this.failingSinceMs = null;
        return null;
      } catch (e) {
        if (isProgrammerError(e)) throw e;
        this.counters.commitFailures++;
        this.consecutiveFailures++;
        this.lastError = errText(e);
        this.lastFailedStep = this.step;
        this.trace(`${this.step} failed: ${this.lastError}`);
        if (!this.failing) {
          this.failing = true;
          this.failingSinceMs = this.opts.clock.nowMs();
          this.counters.warnings++;
          this.log('warn', `critical transaction commit failure in step ${this.step} (trans seq ${this.seq}): ${this.lastError}, retrying`);
        }
        if (this.forced) return this.abandon();
        this.step = 'retry-wait';
        await this.sleep(this.retryMs);
      }
    }
  }

  private async commitSteps(a: Attempt): Promise<void> {
    const fw = this.fw;
    assert(fw !== null);
    if (a.payload === null) {
      // Step 2: the dirty items, sorted, into the log btree as one batch
      // (merged leaf by leaf).  A batch that failed part way is written
      // again whole: the writer makes that a replace of the same bytes.
      this.step = 'items';
      a.items ??= this.opts.items.dirtySnapshot();
      const todo = a.items.filter((it) => !a.written.has(it));
      for (const it of todo) assert(it.seq >= this.seq, 'a dirty item carries an older transaction seq');
      await fw.writeItems(todo);
      for (const it of todo) a.written.add(it);
      this.counters.itemsWritten += todo.length;
      // Step 4: the allocator and the forest are done; this is the lt COMMIT carries.
      a.payload = fw.close();
      assert.equal(a.payload.get_trans_seq, this.seq, 'the COMMIT carries the GET seq');
    }
    if (!a.blocksWritten) {
      // Step 5: every dirty metadata block, then a flush before the COMMIT reveals them.
      this.step = 'blocks';
      this.counters.blocksWritten += await this.opts.images.writeDirty();
      await this.opts.dev.flush();
      a.blocksWritten = true;
    }
    // Step 7: COMMIT, re-sent on every retry with the same get_trans_seq.
    this.step = 'commit';
    assert(this.writer && this.holders === 0, 'a COMMIT is sent with holders locked out (4.13 (7))');
    this.counters.commitRpcs++;
    if (a.commitsSent > 0) this.counters.commitResends++;
    a.commitsSent++;
    this.trace(`COMMIT ${a.payload.get_trans_seq}`);
    try {
      await this.opts.server.commitLogTrees(cloneLogTrees(a.payload));
      a.acked = true;
    } catch (e) {
      if (!a.acked || isProgrammerError(e)) throw e;
      this.counters.commitResendErrors++;
      this.trace(`COMMIT ${a.payload.get_trans_seq} resend failed after an earlier ack: ${errText(e)}`);
    }
    if (!a.cleaned) {
      // Step 8.
      this.step = 'clean';
      this.opts.items.markClean(a.items!);
      a.cleaned = true;
    }
    // Step 9: open the next transaction.
    this.step = 'get';
    const lt = await this.sendGet();
    this.validateGot(lt, this.seq);
    const next = await ForestWriter.open(this.opts.images, lt, { bounds: this.opts.bounds });
    this.install(lt, next);
  }

  /** A forced unmount: drop the transaction's blocks and report EIO. */
  private abandon(): Error {
    if (this.fw !== null && !this.fw.isClosed) this.fw.close();
    this.opts.images.discard();
    this.attempt = null;
    return new FsError('EIO', 'forced unmount: the transaction was not committed');
  }

  private install(lt: LogTrees, fw: ForestWriter): void {
    this.got = lt;
    this.fw = fw;
    this.seq = lt.get_trans_seq;
    this.trace(`open ${this.seq}`);
  }

  /** A GET response is bytes from the network: check what the protocol promises. */
  /** One GET_LOG_TREES, counted and traced; a failure is counted and rethrown. */
  private async sendGet(): Promise<LogTrees> {
    this.counters.getRpcs++;
    this.trace('GET');
    try {
      return await this.opts.server.getLogTrees();
    } catch (e) {
      this.counters.getFailures++;
      throw e;
    }
  }

  private validateGot(lt: LogTrees, prevSeq: bigint): void {
    const bad = (detail: string): CorruptionError => new CorruptionError('GET_LOG_TREES response', null, 'structure', detail);
    if (this.opts.rid !== undefined && lt.rid !== this.opts.rid) throw bad(`lt of rid ${lt.rid}, we are ${this.opts.rid}`);
    if (lt.get_trans_seq <= lt.commit_trans_seq) throw bad(`no open transaction: get ${lt.get_trans_seq} commit ${lt.commit_trans_seq}`);
    if (lt.get_trans_seq <= prevSeq) throw bad(`get_trans_seq ${lt.get_trans_seq} does not follow ${prevSeq}`);
    if ((lt.flags & LOG_TREES_FLAG_FINALIZED) !== 0n) throw bad('a finalized lt');
  }

  /* ---- limits ---------------------------------------------------------------------------- */

  /** 4.3 step 5: commit before more dirtying when the allocators are too low. */
  private commitBeforeHold(fw: ForestWriter): boolean {
    const need = 2 * this.opts.items.dirtyPages();
    const al = fw.alloc;
    if (al.allocsLeft() < need || al.freesLeft() < need) return true;
    if (al.isLow(HOLD_ALLOC_MIN)) return true;
    const data = fw.lt.data_avail;
    return data.total_len < HOLD_DATA_MIN_BLOCKS && (data.flags & ALLOC_FLAG_LOW) === 0;
  }

  private overLimits(): boolean {
    const fw = this.fw;
    if (this.seq === 0n || fw === null || fw.isClosed) return false;
    return this.opts.items.dirtyBytes >= this.dirtyLimitBytes
      || this.opts.images.dirtyCount >= this.dirtyBlockLimit
      || fw.alloc.isLow(HOLD_ALLOC_MIN);
  }

  /* ---- waiting ------------------------------------------------------------------------------ */

  /** Resolves with the result of the first commit that completes after writeCount `after`. */
  private waitWrite(after: number): Promise<Error | null> {
    if (this.fatal !== null) return Promise.resolve(this.fatal);
    if (this.writeCount > after) return Promise.resolve(this.lastResult ?? null);
    return new Promise((resolve) => this.writeWaiters.push({ after, resolve }));
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const wake = (): void => {
        if (this.sleeping?.wake === wake) {
          this.sleeping.timer.cancel();
          this.sleeping = null;
        }
        resolve();
      };
      this.sleeping = { timer: this.opts.clock.setTimer(ms, wake), wake };
    });
  }

  private armTimer(): void {
    this.timer?.cancel();
    this.timer = null;
    if (this.seq === 0n || this.shut || this.forced) return;
    this.timer = this.opts.clock.setTimer(this.intervalMs, () => {
      this.timer = null;
      this.kick('timer');
    });
  }

  private assertLive(): void {
    if (this.fatal !== null) throw this.fatal;
    if (this.shut) throw new LifecycleError('shutdown', 'the transaction layer is shut down');
    if (this.forced) throw new LifecycleError('shutdown', 'forced unmount');
  }

  private log(level: LogLevel, msg: string): void {
    (this.opts.log ?? ((_l: LogLevel, m: string) => console.warn(`scoutfs trans: ${m}`)))(level, msg);
  }

  private trace(ev: string): void {
    this.opts.trace?.(ev);
  }
}
