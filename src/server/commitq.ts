/*
 * The server's commit queue: "hold commit" and "apply commit"
 * (PROTOCOL.md 4.11) over a ServerVolume (volume.ts).
 *
 * What it owns.  The rule that decides when the server's in-memory changes
 * become durable and who waits for that.  Handlers change the in-memory
 * super and dirty btree blocks through vol.store; the volume's commit()
 * writes them atomically.  This module brackets those changes:
 *
 *   h = await hold()       shared: many handlers hold at once; waits while
 *                          a commit runs or is waiting to run
 *   ... changes ...        ride in the current server transaction
 *   await apply(h)         release, then wait until a commit that contains
 *                          the changes is durable (the handler may now send
 *                          the response that reveals them)
 *   release(h)             release without waiting: the handler failed
 *                          before changing anything
 *
 *   run(fn) = hold; fn; apply (or release and rethrow when fn throws).
 *
 * A commit runs when there are waiters and no holders, exclusively: new
 * holds wait while any waiter is queued (writer preference, so a stream of
 * handlers cannot starve the commit).  One commit serves every waiter
 * queued before it started (a waiter queues after releasing its hold, and
 * no hold is granted while a commit runs, so no change can slip in
 * between the snapshot of the batch and the write).  Every durable state change is
 * committed before the response that reveals it is sent: a handler that
 * only read (a resent GET, a duplicate COMMIT, GET_LAST_SEQ) still waits
 * when the volume has any uncommitted change, since what it read may be
 * one; when the volume is clean it returns at once and no commit is made.
 *
 * "Clean" is: no dirty block images, and the in-memory super encodes to
 * the bytes of the last commit.  Every server change dirties a block or
 * the super (allocator heads, btree roots and the seq counter all live in
 * the super), so this is exact.  The snapshot is taken at construction, so
 * the queue must be made right after ServerVolume.open(), before any
 * change.
 *
 * Allocator budget.  The server's own metadata allocator (the active list
 * pair, src/alloc/server.ts) is refilled only at commit.  hold() commits
 * first when it has fewer than `holdLowMargin` allocations or frees left
 * and there are uncommitted changes, so one handler never starts on an
 * allocator the previous ones nearly drained.  (The kernel's hold checks
 * the same.)  If it is still low after that commit the hold proceeds and
 * a handler may fail with ENOSPC, which then fails the volume (below).
 *
 * Failure modes.
 *   - A commit error (I/O, ENOSPC in the commit's own allocator work)
 *     fails every waiter of that commit with it; the volume marks itself
 *     failed, and every later hold and apply throws FsError('EIO'): the
 *     owner must reopen the volume, which is the last durable state.
 *   - fail(e): a handler hit an error after its first change.  Its
 *     half-done changes must never be committed (the reference lets them
 *     ride along with the next commit, PROTOCOL.md 13.10; we do not), so
 *     the volume is marked failed the same way and every queued waiter
 *     and hold fails.  Handlers validate everything they can before their
 *     first change so that ordinary errors (EINVAL, ENOENT, ENOSPC...)
 *     never get here.
 *   - destroy(): holds waiting and later ones fail with a LifecycleError;
 *     a commit in flight completes.
 *
 * One owner: the server on the main thread.
 */
import assert from 'node:assert/strict';
import { encodeSuper } from '../format/super.js';
import { FsError, LifecycleError } from '../format/errors.js';
import type { ServerVolume } from './volume.js';

export interface CommitQueueOptions {
  /**
   * hold() commits first when the server allocator has fewer allocations
   * or frees left than this and the volume is not clean (default 64).
   */
  holdLowMargin?: number;
}

export interface CommitQueueCounters {
  holds: number;
  applies: number;
  /** apply() that found the volume clean: returned without a commit. */
  appliesClean: number;
  /** release() without waiting (the handler failed before changing anything). */
  releases: number;
  commits: number;
  failedCommits: number;
  /** Waiters completed by a successful commit; > commits proves batching. */
  waitersServed: number;
  maxBatch: number;
  /** Commits hold() forced because the server allocator was low. */
  lowCommits: number;
  /** Handler failures after a change (fail()). */
  handlerFailures: number;
}

/** A token for one shared hold; released exactly once, by apply() or release(). */
export class CommitHold {
  released = false;
  constructor(readonly id: number) {}
}

interface Waiter {
  resolve: () => void;
  reject: (e: Error) => void;
}

type Hook = () => void;

export class CommitQueue {
  readonly counters: CommitQueueCounters = {
    holds: 0, applies: 0, appliesClean: 0, releases: 0, commits: 0, failedCommits: 0, waitersServed: 0, maxBatch: 0,
    lowCommits: 0, handlerFailures: 0,
  };
  private readonly holdLowMargin: number;
  private holders = 0;
  private nextHoldId = 1;
  private committing = false;
  /** Waiters for the next commit. */
  private waiters: Waiter[] = [];
  /** Holds blocked behind a queued or running commit. */
  private holdWaiters: Waiter[] = [];
  private readonly hooks: Hook[] = [];
  private committedSuper: Uint8Array;
  private destroyed = false;

  constructor(readonly vol: ServerVolume, opts: CommitQueueOptions = {}) {
    this.holdLowMargin = opts.holdLowMargin ?? 64;
    assert(this.holdLowMargin >= 0);
    assert.equal(vol.images.dirtyCount, 0, 'commit queue made over a volume with uncommitted changes');
    this.committedSuper = encodeSuper(vol.sb);
  }

  /** Called before every commit writes the super (seq.ts stores the counter). */
  addCommitHook(fn: Hook): void {
    this.hooks.push(fn);
  }

  /** Is any handler holding? (seq.ts asserts it around nextSeq.) */
  get holding(): boolean {
    return this.holders > 0;
  }

  /** True when nothing has changed since the last commit. */
  isClean(): boolean {
    if (this.vol.images.dirtyCount !== 0) return false;
    return Buffer.compare(encodeSuper(this.vol.sb), this.committedSuper) === 0;
  }

  /** Take a shared hold; waits while a commit is queued or running. */
  async hold(): Promise<CommitHold> {
    for (;;) {
      this.checkUsable();
      if (this.committing || this.waiters.length > 0) {
        await new Promise<void>((resolve, reject) => this.holdWaiters.push({ resolve, reject }));
        continue;
      }
      if (this.holders === 0 && this.vol.alloc.alloc.isLow(this.holdLowMargin) && !this.isClean()) {
        this.counters.lowCommits++;
        const p = this.enqueue();
        this.kick();
        await p;
        continue;
      }
      this.holders++;
      this.counters.holds++;
      return new CommitHold(this.nextHoldId++);
    }
  }

  /** Release a hold without waiting (a handler that failed before any change). */
  release(h: CommitHold): void {
    this.drop(h);
    this.counters.releases++;
    this.kick();
  }

  /**
   * Release a hold and wait until everything changed so far is durable.
   * Throws the commit's error if the commit fails.
   */
  async apply(h: CommitHold): Promise<void> {
    this.drop(h);
    this.counters.applies++;
    // No commit can run while we held, and none starts before kick() below.
    assert(!this.committing, 'a commit ran during a hold');
    this.checkUsable();
    if (this.isClean()) {
      this.counters.appliesClean++;
      this.kick();
      return;
    }
    const p = this.enqueue();
    this.kick();
    await p;
  }

  /** hold, fn, apply; if fn throws, release without waiting and rethrow. */
  async run<T>(fn: () => Promise<T>): Promise<T> {
    const h = await this.hold();
    let r: T;
    try {
      r = await fn();
    } catch (e) {
      this.release(h);
      throw e;
    }
    await this.apply(h);
    return r;
  }

  /** Commit whatever is pending now (tests, shutdown); no-op when clean. */
  async commitNow(): Promise<void> {
    await this.apply(await this.hold());
  }

  /**
   * A handler failed after its first change: never commit the half-done
   * state.  The volume is failed; every waiter and blocked hold fails.
   */
  fail(e: unknown): void {
    const err = e instanceof Error ? e : new Error(String(e));
    this.counters.handlerFailures++;
    this.vol.fail(err);
    const failure = new FsError('EIO', `server volume failed and must be reopened: ${err.message}`);
    this.rejectAll(failure);
  }

  /** Stop: blocked and later holds fail with LifecycleError('shutdown'). */
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    const hw = this.holdWaiters;
    this.holdWaiters = [];
    for (const w of hw) w.reject(new LifecycleError('shutdown', 'server commit queue destroyed'));
  }

  /* ---- internals ------------------------------------------------------------ */

  private checkUsable(): void {
    if (this.destroyed) throw new LifecycleError('shutdown', 'server commit queue destroyed');
    const f = this.vol.failure;
    if (f !== null) throw new FsError('EIO', `server volume failed and must be reopened: ${f.message}`);
  }

  private drop(h: CommitHold): void {
    assert(!h.released, `commit hold ${h.id} released twice`);
    assert(this.holders > 0, 'release without a hold');
    h.released = true;
    this.holders--;
  }

  private enqueue(): Promise<void> {
    return new Promise<void>((resolve, reject) => this.waiters.push({ resolve, reject }));
  }

  /** Start a commit if one is wanted and allowed; else wake blocked holds. */
  private kick(): void {
    if (this.committing || this.holders > 0) return;
    if (this.waiters.length > 0) {
      void this.commitBatch();
      return;
    }
    this.wakeHolds();
  }

  private wakeHolds(): void {
    const hw = this.holdWaiters;
    this.holdWaiters = [];
    for (const w of hw) w.resolve();
  }

  private rejectAll(e: Error): void {
    const ws = [...this.waiters, ...this.holdWaiters];
    this.waiters = [];
    this.holdWaiters = [];
    for (const w of ws) w.reject(e);
  }

  private async commitBatch(): Promise<void> {
    assert(!this.committing && this.holders === 0);
    this.committing = true;
    const batch = this.waiters;
    this.waiters = [];
    let err: Error | null = null;
    try {
      if (this.vol.failure !== null) throw new FsError('EIO', `server volume failed and must be reopened: ${this.vol.failure.message}`);
      for (const h of this.hooks) h();
      await this.vol.commit();
      this.committedSuper = encodeSuper(this.vol.sb);
    } catch (e) {
      err = e instanceof Error ? e : new Error(String(e));
    }
    this.committing = false;
    assert.equal(this.holders, 0, 'a hold was granted during a commit');
    if (err === null) {
      this.counters.commits++;
      this.counters.waitersServed += batch.length;
      this.counters.maxBatch = Math.max(this.counters.maxBatch, batch.length);
      for (const w of batch) w.resolve();
      this.kick();
      return;
    }
    this.counters.failedCommits++;
    // The volume marked itself failed (or already was); everyone fails.
    if (this.vol.failure === null) this.vol.fail(err);
    for (const w of batch) w.reject(err);
    this.rejectAll(new FsError('EIO', `server commit failed, the volume must be reopened: ${err.message}`));
  }
}
