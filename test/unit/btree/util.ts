/*
 * Shared helpers for the btree tests: a seeded PRNG, a monotonic mapping
 * from integer ids to keys that exercises every key field in sort order,
 * deterministic values, and a sorted Map model with next/prev/range.
 */
import assert from 'node:assert/strict';
import { key, compareKeys, type Key } from '../../../src/format/key.js';
import { btreeIterate, type BtreeItem } from '../../../src/btree/btree.js';
import { assertBtreeOk, type CheckResult } from '../../../src/btree/check.js';
import type { MemBlockStore } from '../../../src/btree/memstore.js';
import type { BtreeRoot } from '../../../src/btree/store.js';
import { ONES_KEY, ZERO_KEY } from '../../../src/format/key.js';

/** xorshift32; deterministic from the seed. */
export class Rng {
  private s: number;
  constructor(readonly seed: number) {
    this.s = (seed ^ 0x2545f491) >>> 0 || 1;
  }
  u32(): number {
    let x = this.s;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.s = x >>> 0;
    return this.s;
  }
  int(n: number): number {
    return this.u32() % n;
  }
  chance(p: number): boolean {
    return this.u32() / 0x100000000 < p;
  }
}

/*
 * id bits, most significant first, go to the key fields in sort order:
 *   zone = 1 + (id >> 16), first = bits 4..15 (spread into the high word),
 *   type = bits 2..3, second = bit 1 (as the top bit), fourth = bit 0;
 * third is a constant.  So id order is key order.
 */
export function keyOf(id: number): Key {
  assert(id >= 0 && id < 1 << 22);
  return key(
    1 + (id >>> 16),
    BigInt((id >>> 4) & 0xfff) * 0x100000001n,
    (id >>> 2) & 3,
    BigInt((id >>> 1) & 1) << 63n,
    0xfedcba9876543210n,
    id & 1,
  );
}

export function idOf(k: Key): number {
  return ((k.zone - 1) << 16) | (Number(k.first / 0x100000001n) << 4) | (k.type << 2) | (Number(k.second >> 63n) << 1) | k.fourth;
}

/** A value of len bytes derived from (id, ver). */
export function valOf(id: number, ver: number, len: number): Uint8Array {
  const v = new Uint8Array(len);
  let x = (id * 2654435761 + ver * 40503 + 1) >>> 0;
  for (let i = 0; i < len; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    v[i] = x >>> 24;
  }
  return v;
}

export interface ModelVal {
  val: Uint8Array;
  seq: bigint;
  flags: number;
}

/** Map model with a sorted id array for ordered queries. */
export class Model {
  readonly map = new Map<number, ModelVal>();
  private sorted: number[] = [];

  clone(): Model {
    const m = new Model();
    for (const [k, v] of this.map) m.map.set(k, v);
    m.sorted = this.sorted.slice();
    return m;
  }

  get size(): number {
    return this.map.size;
  }

  private lowerIndex(id: number): number {
    let lo = 0;
    let hi = this.sorted.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.sorted[mid]! < id) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  set(id: number, v: ModelVal): void {
    if (!this.map.has(id)) this.sorted.splice(this.lowerIndex(id), 0, id);
    this.map.set(id, v);
  }

  delete(id: number): boolean {
    if (!this.map.delete(id)) return false;
    this.sorted.splice(this.lowerIndex(id), 1);
    return true;
  }

  get(id: number): ModelVal | undefined {
    return this.map.get(id);
  }

  /** First id >= id, or null. */
  next(id: number): number | null {
    const i = this.lowerIndex(id);
    return i < this.sorted.length ? this.sorted[i]! : null;
  }

  /** Last id <= id, or null. */
  prev(id: number): number | null {
    const i = this.lowerIndex(id + 1);
    return i > 0 ? this.sorted[i - 1]! : null;
  }

  range(a: number, b: number): number[] {
    return this.sorted.slice(this.lowerIndex(a), this.lowerIndex(b + 1));
  }

  ids(): readonly number[] {
    return this.sorted;
  }
}

/** Byte equality without assert.deepEqual's generic walk (hot in the model tests). */
export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

export function assertValueIs(got: ModelVal | null, want: ModelVal | undefined, what: string): void {
  if (want === undefined) {
    assert.equal(got, null, `${what}: expected nothing`);
    return;
  }
  assert(got !== null, `${what}: missing`);
  assert(bytesEqual(got.val, want.val), `${what}: value differs`);
  assert.equal(got.seq, want.seq, `${what}: seq`);
  assert.equal(got.flags, want.flags, `${what}: flags`);
}

export function assertItemIs(got: BtreeItem | null, model: Model, id: number | null, what: string): void {
  if (id === null) {
    assert.equal(got, null, `${what}: expected nothing`);
    return;
  }
  assert(got !== null, `${what}: expected id ${id}`);
  assert.equal(idOf(got.key), id, what);
  assert.equal(compareKeys(keyOf(id), got.key), 0, what);
  assertValueIs(got, model.get(id), `${what} id ${id}`);
}

/** Full iteration equals the model. */
export async function assertTreeEqualsModel(store: MemBlockStore, root: BtreeRoot, model: Model): Promise<void> {
  const ids = model.ids();
  let i = 0;
  let prevKey: Key | null = null;
  await btreeIterate(store, root, ZERO_KEY, ONES_KEY, (it) => {
    if (prevKey !== null) assert(compareKeys(prevKey, it.key) < 0, 'iteration out of order');
    prevKey = it.key;
    assert(i < ids.length, `tree has more items than the model (${ids.length})`);
    assertItemIs(it, model, ids[i]!, `item ${i}`);
    i++;
  });
  assert.equal(i, ids.length, 'tree has fewer items than the model');
}

/**
 * Check the tree, commit, and verify the store: every committed block is
 * referenced by the tree (no leaks), no committed crc changed.
 */
export async function checkAndCommit(store: MemBlockStore, root: BtreeRoot): Promise<CheckResult> {
  const r = await assertBtreeOk(store, root);
  store.commit();
  assert.deepEqual(store.verifyCommitted(), [], 'a committed block was modified');
  assert.deepEqual(sortedBig(store.committedBlknos()), sortedBig(r.blknos), 'committed blocks != blocks the tree references');
  return r;
}

export function sortedBig(s: Iterable<bigint>): bigint[] {
  return [...s].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}
