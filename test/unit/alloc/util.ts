/*
 * Shared helpers for the allocator tests.
 *
 *  - Rng: seeded xorshift32, so a failing run replays from its seed.
 *  - MemImages: an in-memory BlockImages (the block layer as meta.ts sees
 *    it) that is also a test oracle: dirtying a blkno that is already dirty
 *    asserts (a block handed out twice), and dirtying a blkno in `protect`
 *    asserts (a block still referenced by the last durable state was handed
 *    out again: the two-phase rule broken).  commit() seals and keeps every
 *    dirty image, like writing them to the device.
 *  - Accountant: every blkno of a device must be owned exactly once, by a
 *    free extent, a list entry, a list block or a btree block.  It works on
 *    spans, so big free extents cost nothing.
 *  - accountState(): walks the given allocators, lists and trees, feeds the
 *    accountant, and returns the structure blocks (btree and list blocks)
 *    that the next transaction must not overwrite.
 */
import assert from 'node:assert/strict';
import { btreeDelete, btreeForce, btreeIterate } from '../../../src/btree/btree.js';
import { checkBtree } from '../../../src/btree/check.js';
import type { BlockStore, BtreeRoot } from '../../../src/btree/store.js';
import { checkBlock, sealBlock, writeHeader, type BlockRef } from '../../../src/format/block.js';
import type { AllocListHead, AllocRoot } from '../../../src/format/common.js';
import { LG_BLOCK_SIZE, MAGIC, type BlockKind } from '../../../src/format/constants.js';
import { CorruptionError, FsError } from '../../../src/format/errors.js';
import { getU32, getU64 } from '../../../src/format/layout.js';
import { key, ONES_KEY, ZERO_KEY, type Key } from '../../../src/format/key.js';
import { checkAllocRoot, type BlknoBounds } from '../../../src/alloc/extent.js';
import { listBlockAdd, listBlockInit, setListBlockNext, walkList } from '../../../src/alloc/list.js';
import { allocInvariants, type BlockImages } from '../../../src/alloc/meta.js';

// Every allocator test runs with the allocator's invariant checks on.  (The
// btree's own, which re-verify whole blocks on every write, are left to the
// btree tests: here the trees are checked whole at every commit.)
allocInvariants.enabled = true;

/** The btree tests' xorshift32 (deterministic from the seed). */
import { Rng } from '../btree/util.js';
export { Rng };

/** Seeds for the randomized tests: SEED=n replays one. */
export function seeds(n: number): number[] {
  const env = process.env.SEED;
  if (env !== undefined) return [Number(env)];
  return Array.from({ length: n }, (_, i) => 1000 + i * 7919);
}

export const cmpBig = (a: bigint, b: bigint): number => (a < b ? -1 : a > b ? 1 : 0);

export class MemImages implements BlockImages {
  readonly fsid = 0x5c0f75eedn;
  readonly committed = new Map<bigint, Uint8Array>();
  readonly dirtyMap = new Map<bigint, Uint8Array>();
  /** Structure blocks of the last durable state: dirtying one breaks the two-phase rule. */
  protect: ReadonlySet<bigint> = new Set();
  readonly counters = { dirtied: 0, forgotten: 0, commits: 0, written: 0 };
  private rs: number;

  constructor(readonly bounds: BlknoBounds, seed = 1) {
    this.rs = (seed ^ 0x51ed270b) >>> 0 || 1;
  }

  private seq(): bigint {
    const next = (): number => {
      let x = this.rs;
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      this.rs = x >>> 0;
      return this.rs;
    };
    return (BigInt(next()) << 32n) | BigInt((next() | 1) >>> 0);
  }

  async read(ref: BlockRef, kind: BlockKind): Promise<Uint8Array> {
    return this.readSync(ref, kind);
  }

  readSync(ref: BlockRef, kind: BlockKind): Uint8Array {
    const d = this.dirtyMap.get(ref.blkno);
    if (d !== undefined) {
      if (getU32(d, 4) !== MAGIC[kind]) throw new CorruptionError('memimages', ref.blkno, 'magic', `dirty block is not ${kind}`);
      if (getU64(d, 16) !== ref.seq) throw new FsError('ESTALE', `dirty ${ref.blkno} seq differs`);
      return d;
    }
    const c = this.committed.get(ref.blkno);
    if (c === undefined) throw new FsError('ESTALE', `blkno ${ref.blkno} never written`);
    const f = checkBlock(c, { kind, fsid: this.fsid, blkno: ref.blkno, seq: ref.seq });
    if (f !== null) {
      if (f.check === 'seq') throw new FsError('ESTALE', `${ref.blkno}: ${f.detail}`);
      throw new CorruptionError('memimages', ref.blkno, f.check, f.detail);
    }
    return c;
  }

  isDirty(blkno: bigint): boolean {
    return this.dirtyMap.has(blkno);
  }

  dirty(blkno: bigint, kind: BlockKind): { ref: BlockRef; b: Uint8Array } {
    assert(blkno >= this.bounds.first && blkno <= this.bounds.last, `dirty blkno ${blkno} out of bounds`);
    assert(!this.dirtyMap.has(blkno), `blkno ${blkno} handed out twice (already dirty)`);
    assert(!this.protect.has(blkno), `blkno ${blkno} is referenced by the last durable state (two-phase rule broken)`);
    const b = new Uint8Array(LG_BLOCK_SIZE);
    const ref = { blkno, seq: this.seq() };
    writeHeader(b, { magic: MAGIC[kind], fsid: this.fsid, seq: ref.seq, blkno });
    this.dirtyMap.set(blkno, b);
    this.counters.dirtied++;
    return { ref, b };
  }

  forget(blkno: bigint): void {
    assert(this.dirtyMap.delete(blkno), `forget of ${blkno} that is not dirty`);
    this.counters.forgotten++;
  }

  /** "Write" every dirty block: seal it and keep it as the on-disk image. */
  commit(): number {
    const n = this.dirtyMap.size;
    for (const [blkno, b] of this.dirtyMap) {
      sealBlock(b);
      this.committed.set(blkno, b);
    }
    this.dirtyMap.clear();
    this.counters.commits++;
    this.counters.written += n;
    return n;
  }

  /** Install a committed list block with the given entries (test setup, like mkfs). */
  putListBlock(blkno: bigint, entries: bigint[], next: BlockRef = { blkno: 0n, seq: 0n }): BlockRef {
    const b = new Uint8Array(LG_BLOCK_SIZE);
    const ref = { blkno, seq: this.seq() };
    writeHeader(b, { magic: MAGIC.allocList, fsid: this.fsid, seq: ref.seq, blkno });
    listBlockInit(b);
    setListBlockNext(b, next);
    for (const e of entries) listBlockAdd(b, e);
    sealBlock(b);
    this.committed.set(blkno, b);
    return ref;
  }
}

/** A BlockStore that can only read (checkers walking committed state). */
export function readOnlyStore(images: MemImages): BlockStore {
  return {
    fsid: images.fsid,
    read: (ref, kind) => images.read(ref, kind),
    isDirty: (blkno) => images.isDirty(blkno),
    alloc: () => assert.fail('read-only store: alloc'),
    free: () => assert.fail('read-only store: free'),
  };
}

interface Span {
  start: bigint;
  len: bigint;
  what: string;
}

export class Accountant {
  private readonly spans: Span[] = [];

  add(start: bigint, len: bigint, what: string): void {
    assert(len > 0n);
    this.spans.push({ start, len, what });
  }

  addBlocks(blknos: Iterable<bigint>, what: string): void {
    for (const b of blknos) this.add(b, 1n, what);
  }

  /** Problems: blknos owned twice, and blknos in bounds owned by nothing (leaks). */
  check(bounds: BlknoBounds): string[] {
    const problems: string[] = [];
    const s = this.spans.slice().sort((a, b) => cmpBig(a.start, b.start));
    let next = bounds.first;
    let prev: Span | null = null;
    for (const sp of s) {
      const end = sp.start + sp.len - 1n;
      if (sp.start < bounds.first || end > bounds.last) problems.push(`${sp.what} [${sp.start}, ${end}] outside the device`);
      if (sp.start < next) {
        problems.push(`blkno ${sp.start} owned twice: ${prev?.what} and ${sp.what}`);
      } else if (sp.start > next) {
        problems.push(`blknos [${next}, ${sp.start - 1n}] leaked (owned by nothing)`);
      }
      if (end + 1n > next) next = end + 1n;
      prev = sp;
      if (problems.length > 20) return problems;
    }
    if (next <= bounds.last) problems.push(`blknos [${next}, ${bounds.last}] leaked (owned by nothing)`);
    return problems;
  }
}

export interface StateParts {
  allocs?: [string, AllocRoot][];
  lists?: [string, AllocListHead][];
  trees?: [string, BtreeRoot][];
}

/**
 * Account every allocator, list and tree, asserting each is internally
 * consistent; returns the accountant and the structure blocks (trees and
 * list blocks) of this state.
 */
export async function accountState(images: MemImages, parts: StateParts, acct = new Accountant()): Promise<{ acct: Accountant; structure: Set<bigint> }> {
  const store = readOnlyStore(images);
  const structure = new Set<bigint>();
  for (const [name, ar] of parts.allocs ?? []) {
    const r = await checkAllocRoot(store, ar, { bounds: images.bounds, source: name });
    assert(r.ok, `${name}: ${r.problems.join('; ')}`);
    for (const e of r.extents) acct.add(e.start, e.len, `${name} free extent`);
    acct.addBlocks(r.treeBlknos, `${name} tree block`);
    for (const b of r.treeBlknos) structure.add(b);
  }
  for (const [name, h] of parts.lists ?? []) {
    const w = await walkList(store, h, { bounds: images.bounds, source: name });
    acct.addBlocks(w.entries, `${name} entry`);
    acct.addBlocks(w.blocks, `${name} list block`);
    for (const b of w.blocks) structure.add(b);
  }
  for (const [name, root] of parts.trees ?? []) {
    const r = await checkBtree(store, root);
    assert(r.ok, `${name}: ${r.problems.join('; ')}`);
    acct.addBlocks(r.blknos, `${name} block`);
    for (const b of r.blknos) structure.add(b);
  }
  return { acct, structure };
}

export async function assertAccounted(images: MemImages, parts: StateParts): Promise<Set<bigint>> {
  const { acct, structure } = await accountState(images, parts);
  const problems = acct.check(images.bounds);
  assert.deepEqual(problems, [], `accounting:\n  ${problems.join('\n  ')}`);
  return structure;
}

/* ---- a payload tree that makes copy-on-write churn ------------------------- */

const payloadKey = (id: number): Key => key(4, BigInt(id), 1);

/** Insert or delete a few random items of a tree through store; returns ops done. */
export async function churnTree(store: BlockStore, root: BtreeRoot, ids: Set<number>, rng: Rng, ops: number, idSpace = 4000): Promise<void> {
  for (let i = 0; i < ops; i++) {
    const id = rng.int(idSpace);
    if (ids.has(id) && rng.chance(0.45)) {
      await btreeDelete(store, root, payloadKey(id));
      ids.delete(id);
    } else {
      const v = new Uint8Array(200 + rng.int(600));
      v.fill(id & 0xff);
      await btreeForce(store, root, payloadKey(id), v);
      ids.add(id);
    }
  }
}

/** The tree holds exactly ids. */
export async function assertTreeIds(store: BlockStore, root: BtreeRoot, ids: Set<number>): Promise<void> {
  const got: number[] = [];
  await btreeIterate(store, root, ZERO_KEY, ONES_KEY, (it) => {
    got.push(Number(it.key.first));
  });
  assert.deepEqual(got, [...ids].sort((a, b) => a - b));
}
