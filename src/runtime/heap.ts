/*
 * A binary min-heap of cancellable entries, shared by the fake clock's
 * timers and the network simulator's event queue.
 *
 * Entries carry a `live` flag: cancelling is marking an entry dead, and
 * dead entries are dropped lazily when they reach the top (peek/pop never
 * return one).  Ties must be broken by the caller's `less` (both users
 * order by (time, insertion seq)), which is what makes replays from one
 * seed deterministic.  Owned by one thread; not shared.
 */
import assert from 'node:assert/strict';

export class LazyHeap<T extends { live: boolean }> {
  private readonly h: T[] = [];

  constructor(private readonly less: (a: T, b: T) => boolean) {}

  /** Entries in the heap, dead ones not yet dropped included. */
  get size(): number {
    return this.h.length;
  }

  /** Live entries (a linear count, for assertions and status). */
  liveCount(): number {
    return this.h.filter((e) => e.live).length;
  }

  /** The least live entry, or undefined. */
  peek(): T | undefined {
    while (this.h.length > 0 && !this.h[0]!.live) this.removeTop();
    return this.h[0];
  }

  push(e: T): void {
    const h = this.h;
    h.push(e);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.less(h[i]!, h[p]!)) break;
      [h[i], h[p]] = [h[p]!, h[i]!];
      i = p;
    }
  }

  /** Remove and return the least live entry. */
  pop(): T {
    const top = this.peek();
    assert(top !== undefined, 'pop from an empty heap');
    this.removeTop();
    return top;
  }

  private removeTop(): void {
    const h = this.h;
    const last = h.pop()!;
    if (h.length === 0) return;
    h[0] = last;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < h.length && this.less(h[l]!, h[m]!)) m = l;
      if (r < h.length && this.less(h[r]!, h[m]!)) m = r;
      if (m === i) break;
      [h[i], h[m]] = [h[m]!, h[i]!];
      i = m;
    }
  }
}
