/*
 * A FIFO readers-writer lock for one mount's filesystem (src/fs/core.ts):
 * run() is exclusive, shared() runs alongside other shared holders.
 * Requests are granted in arrival order, so a waiting exclusive request
 * holds back the shared ones behind it (no writer starvation).
 *
 * Invariant: exclusive > 0 implies shared === 0, and exclusive <= 1.
 * Owned by the main thread; nothing here blocks it (waiters are promises).
 */
import assert from 'node:assert/strict';

export class RwLock {
  private sharedHolders = 0;
  private exclusive = 0;
  private readonly waiting: { excl: boolean; go: () => void }[] = [];

  run<T>(fn: () => Promise<T>): Promise<T> {
    return this.hold(true, fn);
  }

  shared<T>(fn: () => Promise<T>): Promise<T> {
    return this.hold(false, fn);
  }

  private async hold<T>(excl: boolean, fn: () => Promise<T>): Promise<T> {
    await new Promise<void>((go) => {
      this.waiting.push({ excl, go });
      this.pump();
    });
    try {
      return await fn();
    } finally {
      if (excl) this.exclusive--;
      else this.sharedHolders--;
      this.pump();
    }
  }

  private pump(): void {
    while (this.waiting.length > 0 && this.exclusive === 0) {
      const w = this.waiting[0]!;
      if (w.excl && this.sharedHolders > 0) return;
      this.waiting.shift();
      if (w.excl) this.exclusive++;
      else this.sharedHolders++;
      assert(this.exclusive <= 1 && (this.exclusive === 0 || this.sharedHolders === 0), 'rw lock state');
      w.go();
      if (w.excl) return;
    }
  }
}
