/*
 * The server's in-process mutexes (PROTOCOL.md 4.6, 4.7, 4.11: "the logs
 * mutex", "the allocator mutex", the srch mutex).
 *
 * Why a single-threaded server needs them.  Handlers are async: a btree
 * operation awaits block reads, and while it waits another handler runs.
 * Two writers interleaving on one btree root (logs_root, srch_root, an
 * allocator's extent tree) would walk and copy-on-write the same path from
 * stale views.  So every structure with shared writers has one mutex, and a
 * writer holds it from its first read of the structure to its last change:
 *
 *   logs   logs_root and every log_trees item in it;
 *   srch   srch_root;
 *   alloc  the server allocators: meta_alloc[2], data_alloc, the server's
 *          list pairs (src/alloc/server.ts), and the lists and data roots
 *          of an lt while they are being spliced, filled or moved.
 *
 * Lock order, always: commit hold (commitq.ts), then logs, then srch, then
 * alloc.  A mutex is never held across apply commit: a handler releases
 * its mutexes, then waits for durability, so the commit (which needs every
 * hold released) can run.
 *
 * The mutexes are FIFO and not reentrant; taking one twice in a task
 * deadlocks, which an assertion cannot see (there are no task ids), so
 * functions that need one held end in "Locked" (STYLE.md 8).  The wait
 * queue is bounded by the number of handlers in flight, which the network
 * layer bounds.
 */
import assert from 'node:assert/strict';

export class AsyncMutex {
  private locked = false;
  private readonly queue: (() => void)[] = [];

  constructor(readonly name: string) {}

  get isLocked(): boolean {
    return this.locked;
  }

  /** Wait for the mutex; the returned function releases it (exactly once). */
  async lock(): Promise<() => void> {
    if (this.locked) await new Promise<void>((resolve) => this.queue.push(resolve));
    else this.locked = true;
    assert(this.locked, `mutex ${this.name} handed over unlocked`);
    let released = false;
    return () => {
      assert(!released, `mutex ${this.name} released twice`);
      released = true;
      const next = this.queue.shift();
      // Hand the mutex straight to the next waiter: it stays locked, so no
      // newcomer can slip in between.
      if (next !== undefined) next();
      else this.locked = false;
    };
  }

  /** Run fn with the mutex held. */
  async run<T>(fn: () => Promise<T>): Promise<T> {
    const unlock = await this.lock();
    try {
      return await fn();
    } finally {
      unlock();
    }
  }
}

/** The mutexes every server handler shares; one instance per server. */
export class ServerMutexes {
  readonly logs = new AsyncMutex('logs');
  readonly srch = new AsyncMutex('srch');
  readonly alloc = new AsyncMutex('alloc');
}
