/*
 * MemBlockStore: an in-memory BlockStore for tests and benchmarks.
 *
 * It models one writer's transaction over a set of committed blocks:
 *
 *   committed: blkno -> sealed image (crc valid), never modified
 *   dirty:     blkno -> image allocated in this transaction, modifiable
 *   pendingFree: committed blocks freed in this transaction; still
 *              readable (two-phase free) until commit() releases them
 *   freeList:  blknos available to alloc (dirty frees return here at once)
 *
 * commit() seals every dirty block (crc over bytes 4..65535, FORMAT.md 3.2)
 * and moves it to committed, then releases pendingFree.  abort() models a
 * transaction that failed (ENOSPC mid-operation): dirty blocks are dropped
 * and pending frees forgotten, leaving exactly the committed state.
 *
 * Checks that make it a test oracle, all assertion failures (our bugs):
 * freeing a block twice, freeing a ref whose seq does not match the block,
 * alloc handing out a blkno that is committed or dirty.  verifyCommitted()
 * recomputes every committed crc, which catches a committed image modified
 * in place.  Reads follow the kernel's ref checks (FORMAT.md 3.3): a
 * seq/blkno mismatch or a blkno not in use is FsError('ESTALE'); bad
 * crc/magic/fsid is CorruptionError.  Committed crcs are verified on the
 * first read only ('once', like a block cache) or on every read ('always').
 *
 * Faults: failAllocAfter = N makes the (N+1)th following alloc throw
 * FsError('ENOSPC') (and every alloc after it until cleared); capacity
 * bounds the number of blocks in use.  corruptByte() flips a committed byte.
 *
 * Released images go to a pool that alloc reuses (zeroed), as a block
 * cache reuses its slots: an image kept past its block's free may change.
 *
 * Seqs come from a seeded xorshift generator, so a test run is reproducible
 * from its seed (STYLE.md 7; the runtime Random interface is not wired here
 * because this store is test-only).
 */
import assert from 'node:assert/strict';
import { BLOCK_HEADER, writeHeader, sealBlock, checkBlock, type BlockRef } from '../format/block.js';
import { MAGIC, LG_BLOCK_SIZE, META_DEV_START_BLKNO, type BlockKind } from '../format/constants.js';
import { CorruptionError, FsError } from '../format/errors.js';
import { getU32, getU64 } from '../format/layout.js';
import type { BlockStore } from './store.js';

export interface MemBlockStoreOptions {
  fsid?: bigint;
  seed?: number;
  /** First blkno handed out (default META_DEV_START_BLKNO = 2). */
  firstBlkno?: bigint;
  /** Maximum blocks in use (committed + dirty); alloc beyond it is ENOSPC. */
  capacity?: number;
  /** Number of allocs that succeed before ENOSPC; null = no fault. */
  failAllocAfter?: number | null;
  verifyReads?: 'once' | 'always';
  /** Answer readCached() (default true); false makes every read take the async path, like a cold cache. */
  syncReads?: boolean;
}

const CHUNK_BLOCKS = 64;
const HDR_MAGIC = BLOCK_HEADER.o('magic');
const HDR_SEQ = BLOCK_HEADER.o('seq');
const HDR_BLKNO = BLOCK_HEADER.o('blkno');

interface Slot {
  b: Uint8Array;
  seq: bigint;
}

export interface MemStoreCounters {
  reads: number;
  staleReads: number;
  crcChecks: number;
  allocs: number;
  enospc: number;
  freesDirty: number;
  freesCommitted: number;
  commits: number;
  aborts: number;
}

export class MemBlockStore implements BlockStore {
  readonly fsid: bigint;
  readonly counters: MemStoreCounters = {
    reads: 0, staleReads: 0, crcChecks: 0, allocs: 0, enospc: 0, freesDirty: 0, freesCommitted: 0, commits: 0, aborts: 0,
  };
  failAllocAfter: number | null;
  capacity: number;
  verifyReads: 'once' | 'always';
  syncReads: boolean;

  /** Images with their header seq decoded once (reads compare refs against it). */
  private readonly committed = new Map<number, Slot>();
  private readonly verified = new Set<number>();
  private readonly dirty = new Map<number, Slot>();
  private readonly pendingFree = new Set<number>();
  private readonly freeList: number[] = [];
  /** Images of released blocks, reused by alloc (a cache reuses its slots too). */
  private readonly pool: Uint8Array[] = [];
  private chunk = new Uint8Array(0);
  private chunkUsed = CHUNK_BLOCKS;
  private next: number;
  private rs0: number;
  private rs1: number;

  constructor(opts: MemBlockStoreOptions = {}) {
    this.fsid = opts.fsid ?? 0x5c0f75eedn;
    this.next = Number(opts.firstBlkno ?? META_DEV_START_BLKNO);
    this.capacity = opts.capacity ?? Number.MAX_SAFE_INTEGER;
    this.failAllocAfter = opts.failAllocAfter ?? null;
    this.verifyReads = opts.verifyReads ?? 'once';
    this.syncReads = opts.syncReads ?? true;
    const seed = opts.seed ?? 1;
    this.rs0 = (seed ^ 0x9e3779b9) >>> 0 || 1;
    this.rs1 = (Math.imul(seed, 0x85ebca6b) ^ 0xc2b2ae35) >>> 0 || 2;
  }

  /** xorshift64 on two 32-bit halves; never returns 0. */
  private randomSeq(): bigint {
    for (;;) {
      let s1 = this.rs0;
      const s0 = this.rs1;
      this.rs0 = s0;
      s1 ^= s1 << 23;
      s1 ^= s1 >>> 17;
      s1 ^= s0;
      s1 ^= s0 >>> 26;
      this.rs1 = s1 >>> 0;
      const hi = (this.rs0 + this.rs1) >>> 0;
      const lo = Math.imul(this.rs1 ^ this.rs0, 0x9e3779b1) >>> 0;
      const v = (BigInt(hi) << 32n) | BigInt(lo);
      if (v !== 0n) return v;
    }
  }

  async read(ref: BlockRef, kind: BlockKind): Promise<Uint8Array> {
    return this.readSync(ref, kind);
  }

  /** Everything is in memory: the synchronous fast path answers unless syncReads is off. */
  readCached(ref: BlockRef, kind: BlockKind): Uint8Array | undefined {
    return this.syncReads ? this.readSync(ref, kind) : undefined;
  }

  /** Synchronous body of read() (tests and the checker may call it directly). */
  readSync(ref: BlockRef, kind: BlockKind): Uint8Array {
    this.counters.reads++;
    const n = Number(ref.blkno);
    const d = this.dirty.get(n);
    if (d !== undefined) {
      if (getU32(d.b, HDR_MAGIC) !== MAGIC[kind]) throw new CorruptionError('memstore', ref.blkno, 'magic', `dirty block is not ${kind}`);
      if (d.seq !== ref.seq) return this.stale(ref, 'dirty block seq differs');
      return d.b;
    }
    const c = this.committed.get(n);
    if (c === undefined) return this.stale(ref, 'blkno not in use');
    if (this.verifyReads === 'always' || !this.verified.has(n)) {
      this.counters.crcChecks++;
      const f = checkBlock(c.b, { kind, fsid: this.fsid, blkno: ref.blkno, seq: ref.seq });
      if (f !== null) {
        if (f.check === 'seq' || f.check === 'blkno') return this.stale(ref, f.detail);
        throw new CorruptionError('memstore', ref.blkno, f.check, f.detail);
      }
      this.verified.add(n);
    } else {
      if (getU32(c.b, HDR_MAGIC) !== MAGIC[kind]) throw new CorruptionError('memstore', ref.blkno, 'magic', `block is not ${kind}`);
      if (c.seq !== ref.seq) return this.stale(ref, 'seq differs');
    }
    return c.b;
  }

  private stale(ref: BlockRef, why: string): never {
    this.counters.staleReads++;
    throw new FsError('ESTALE', `blkno ${ref.blkno} seq ${ref.seq}: ${why}`);
  }

  isDirty(blkno: bigint): boolean {
    return this.dirty.has(Number(blkno));
  }

  async alloc(kind: BlockKind): Promise<{ ref: BlockRef; b: Uint8Array }> {
    return this.allocSync(kind);
  }

  allocSync(kind: BlockKind): { ref: BlockRef; b: Uint8Array } {
    if (this.failAllocAfter !== null) {
      if (this.failAllocAfter <= 0) {
        this.counters.enospc++;
        throw new FsError('ENOSPC', 'memstore: injected alloc failure');
      }
      this.failAllocAfter--;
    }
    if (this.committed.size + this.dirty.size >= this.capacity) {
      this.counters.enospc++;
      throw new FsError('ENOSPC', `memstore: ${this.capacity} blocks in use`);
    }
    const n = this.freeList.length > 0 ? this.freeList.pop()! : this.next++;
    assert(!this.committed.has(n) && !this.dirty.has(n), `memstore: alloc of in-use blkno ${n}`);
    const pooled = this.pool.pop();
    const b = pooled === undefined ? this.newImage() : pooled.fill(0);
    const ref = { blkno: BigInt(n), seq: this.randomSeq() };
    writeHeader(b, { magic: MAGIC[kind], fsid: this.fsid, seq: ref.seq, blkno: ref.blkno });
    this.dirty.set(n, { b, seq: ref.seq });
    this.counters.allocs++;
    return { ref, b };
  }

  free(ref: BlockRef): void {
    const n = Number(ref.blkno);
    const d = this.dirty.get(n);
    if (d !== undefined) {
      assert.equal(d.seq, ref.seq, `memstore: free of dirty ${n} with a stale seq`);
      this.dirty.delete(n);
      this.freeList.push(n);
      this.release(d.b);
      this.counters.freesDirty++;
      return;
    }
    const c = this.committed.get(n);
    assert(c !== undefined, `memstore: free of blkno ${n} that is not in use`);
    assert.equal(c.seq, ref.seq, `memstore: free of committed ${n} with a stale seq`);
    assert(!this.pendingFree.has(n), `memstore: committed blkno ${n} freed twice`);
    this.pendingFree.add(n);
    this.counters.freesCommitted++;
  }

  /** Seal and commit every dirty block; release committed blocks freed in this transaction. */
  commit(): { written: number; freed: number } {
    const written = this.dirty.size;
    for (const [n, d] of this.dirty) {
      sealBlock(d.b);
      assert.equal(getU64(d.b, HDR_SEQ), d.seq, `memstore: header seq of dirty ${n} was changed`);
      this.committed.set(n, d);
      this.verified.add(n);
    }
    this.dirty.clear();
    const freed = this.pendingFree.size;
    for (const n of this.pendingFree) {
      this.release(this.committed.get(n)!.b);
      this.committed.delete(n);
      this.verified.delete(n);
      this.freeList.push(n);
    }
    this.pendingFree.clear();
    this.counters.commits++;
    return { written, freed };
  }

  /** Drop the transaction: dirty blocks are released and pending frees forgotten. */
  abort(): void {
    for (const [n, d] of this.dirty) {
      this.freeList.push(n);
      this.release(d.b);
    }
    this.dirty.clear();
    this.pendingFree.clear();
    this.counters.aborts++;
  }

  /**
   * Fresh images are carved from 4 MiB chunks: allocating 64 KiB typed
   * arrays one at a time costs more than the copy on write that needs them.
   */
  private newImage(): Uint8Array {
    if (this.chunkUsed === CHUNK_BLOCKS) {
      this.chunk = new Uint8Array(CHUNK_BLOCKS * LG_BLOCK_SIZE);
      this.chunkUsed = 0;
    }
    const i = this.chunkUsed++;
    return this.chunk.subarray(i * LG_BLOCK_SIZE, (i + 1) * LG_BLOCK_SIZE);
  }

  private release(b: Uint8Array): void {
    if (this.pool.length < 4096) this.pool.push(b);
  }

  /** Install a sealed image as a committed block (an mkfs-written block, say). */
  putCommitted(img: Uint8Array): BlockRef {
    assert.equal(img.length, LG_BLOCK_SIZE);
    const b = this.newImage();
    b.set(img);
    const ref = { blkno: getU64(img, HDR_BLKNO), seq: getU64(img, HDR_SEQ) };
    const n = Number(ref.blkno);
    assert(!this.committed.has(n) && !this.dirty.has(n), `memstore: blkno ${n} in use`);
    const i = this.freeList.indexOf(n);
    if (i >= 0) this.freeList.splice(i, 1);
    while (this.next <= n) {
      if (this.next !== n) this.freeList.push(this.next);
      this.next++;
    }
    this.committed.set(n, { b, seq: ref.seq });
    this.verified.delete(n);
    return ref;
  }

  /** Test fault: flip bits of one committed byte (its crc will no longer match). */
  corruptByte(blkno: bigint, off: number, xor = 0xff): void {
    const c = this.committed.get(Number(blkno));
    assert(c !== undefined, `memstore: no committed blkno ${blkno}`);
    c.b[off]! ^= xor;
    this.verified.delete(Number(blkno));
  }

  /** Recompute the crc of every committed block; returns blknos that no longer match. */
  verifyCommitted(): bigint[] {
    const bad: bigint[] = [];
    for (const [n, c] of this.committed) {
      const f = checkBlock(c.b, { kind: 'btree', fsid: this.fsid, blkno: BigInt(n), seq: c.seq });
      if (f !== null && f.check !== 'magic') bad.push(BigInt(n));
    }
    return bad;
  }

  committedBlknos(): Set<bigint> {
    return new Set([...this.committed.keys()].map((n) => BigInt(n)));
  }

  dirtyBlknos(): Set<bigint> {
    return new Set([...this.dirty.keys()].map((n) => BigInt(n)));
  }

  /** Committed blocks freed in the current transaction (two-phase, still readable). */
  get freedCommitted(): ReadonlySet<bigint> {
    return new Set([...this.pendingFree].map((n) => BigInt(n)));
  }

  get dirtyCount(): number {
    return this.dirty.size;
  }

  get committedCount(): number {
    return this.committed.size;
  }
}
