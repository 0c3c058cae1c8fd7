/*
 * BlockCache: a bounded cache of metadata blocks in one SharedArrayBuffer.
 *
 * What it owns.  The slot table (slots.ts: bytes, states, pins in one SAB),
 * and on the main thread: the map (device, size class, blkno) -> slot, the
 * free list, the LRU list of evictable slots, the per-device dirty lists and
 * one SlotOwner record per slot (what the slot holds, whether its crc was
 * checked, the promise of a read in flight).  The read path (reader.ts) and
 * the dirty path (dirty.ts) are built on the methods here; nothing else
 * changes slot state.
 *
 * Bounded.  The slot count is fixed at construction.  A slot is taken from
 * the free list, or else by evicting the least recently used slot that is
 * CLEAN and unpinned; pinned, dirty, writing and reading slots are never
 * evicted.  When there is none, allocSlot() throws FsError('ENOMEM') naming
 * the counts: the cache never grows, and the transaction layer must keep
 * its dirty blocks well under the slot count.
 *
 * The LRU list holds exactly the slots that are CLEAN, mapped and unpinned
 * (a Map used in insertion order: oldest first, O(1) touch and evict).  A
 * slot leaves it when pinned and re-enters, as most recent, when its last
 * pin is released; so "least recently used" means least recently released.
 * Rejected: CLOCK over the slot table (cheaper per hit, but approximate, and
 * its eviction order is harder to reason about in tests).
 *
 * Keys.  LG blocks are addressed in 64 KiB units and SM blocks (super,
 * quorum) in 4 KiB units, so the size class is part of the key; both share
 * slot size, an SM block using the first 4 KiB.  (SM 16..31 and LG 1 alias
 * the same bytes; LG 1 is never a valid metadata blkno, FORMAT.md 2.1.)
 * Devices get a small id on first use (a WeakMap), so the key is a string.
 *
 * Handles.  Readers get a BlockHandle: a pinned view of the slot's bytes
 * (no copy) that must be released exactly once; a second release asserts.
 * While any pin is held the slot cannot be reused, so the view stays valid
 * even if the block is dropped from the map meanwhile (state DROPPED).
 *
 * Threads.  Only the main thread calls anything here.  Workers receive
 * `sab` and read pinned slots (verify.ts).
 *
 * Invariants.  checkInvariants() walks every slot and cross-checks state,
 * pins, map, free list, LRU list and dirty lists; with `invariants: true` it
 * runs after every state change (tests and the simulator turn it on).
 * destroy() forgets everything, dirty blocks included, and later calls fail
 * with LifecycleError('shutdown'); it is safe to call at any time.
 */
import assert from 'node:assert/strict';
import { FsError, LifecycleError } from '../format/errors.js';
import { BLOCK_SIZE_OF, SM_BLOCK_SIZE, SM_BLOCK_SHIFT, LG_BLOCK_SHIFT, type BlockKind } from '../format/constants.js';
import type { BlockDevice } from '../runtime/device.js';
import type { WorkerPool } from '../runtime/workerpool.js';
import { SlotState, SlotTable, stateName } from './slots.js';

const ZERO_BLOCK = new Uint8Array(Math.max(...Object.values(BLOCK_SIZE_OF)));

export interface BlockCacheOptions {
  /** Number of 64 KiB slots. */
  slots: number;
  /** Where batches of fresh blocks are crc-checked (reader.ts readBlocks). */
  pool?: WorkerPool;
  /** Run checkInvariants() after every state change. */
  invariants?: boolean;
}

export interface CacheCounters {
  hits: number;
  misses: number;
  evictions: number;
  /** Failed verifications retried from disk (FORMAT.md 3.3). */
  retries: number;
  stale: number;
  corrupt: number;
  /** Blocks whose crc was checked by the pool. */
  poolVerified: number;
  dirtyWritten: number;
}

/** Main-thread knowledge about one slot. */
export interface SlotOwner {
  key: string | null;
  dev: BlockDevice | null;
  blkno: bigint;
  kind: BlockKind;
  /** The crc of these bytes was checked (or they are our own dirty image). */
  crcOk: boolean;
  /** Resolves when a READING slot's bytes arrived (or the read failed). */
  loading: Promise<void> | null;
  finishLoading: (() => void) | null;
  /** Bumped each time the slot is allocated, to catch stale handles. */
  gen: number;
  /** Header fields a dirty block must carry when written. */
  seq: bigint;
  fsid: bigint;
}

/** Byte offset of a block: LG blknos are 64 KiB units, SM 4 KiB. */
export function blockOffset(blkno: bigint, kind: BlockKind): bigint {
  return blkno << BigInt(BLOCK_SIZE_OF[kind] === SM_BLOCK_SIZE ? SM_BLOCK_SHIFT : LG_BLOCK_SHIFT);
}

export class BlockHandle {
  private released = false;
  constructor(
    private readonly cache: BlockCache,
    readonly slot: number,
    readonly gen: number,
    readonly blkno: bigint,
    readonly kind: BlockKind,
    /** The block's bytes in the cache slot; valid until release(). */
    readonly data: Uint8Array,
  ) {}

  release(): void {
    assert(!this.released, `block ${this.blkno} (slot ${this.slot}) released twice`);
    this.released = true;
    this.cache.release(this.slot);
  }
}

export class BlockCache {
  readonly table: SlotTable;
  readonly pool: WorkerPool | null;
  readonly invariants: boolean;
  readonly counters: CacheCounters = {
    hits: 0, misses: 0, evictions: 0, retries: 0, stale: 0, corrupt: 0, poolVerified: 0, dirtyWritten: 0,
  };
  private readonly owners: SlotOwner[] = [];
  private readonly map = new Map<string, number>();
  private free: number[] = [];
  private readonly lru = new Map<number, true>();
  private readonly dirty = new Map<BlockDevice, Set<number>>();
  private readonly devIds = new WeakMap<BlockDevice, number>();
  private nextDevId = 1;
  private destroyed = false;

  constructor(opts: BlockCacheOptions) {
    this.table = SlotTable.create(opts.slots);
    this.pool = opts.pool ?? null;
    this.invariants = opts.invariants ?? false;
    for (let k = opts.slots - 1; k >= 0; k--) {
      this.owners[k] = {
        key: null, dev: null, blkno: 0n, kind: 'btree', crcOk: false, loading: null,
        finishLoading: null, gen: 0, seq: 0n, fsid: 0n,
      };
      this.free.push(k);
    }
  }

  get sab(): SharedArrayBuffer {
    return this.table.sab;
  }

  get slotCount(): number {
    return this.table.slotCount;
  }

  get freeSlots(): number {
    return this.free.length;
  }

  get dirtyCount(): number {
    let n = 0;
    for (const s of this.dirty.values()) n += s.size;
    return n;
  }

  owner(k: number): SlotOwner {
    const o = this.owners[k];
    assert(o !== undefined, `slot ${k} out of range`);
    return o;
  }

  /** The bytes of the block held in slot k. */
  view(k: number): Uint8Array {
    return this.table.view(k, BLOCK_SIZE_OF[this.owner(k).kind]);
  }

  key(dev: BlockDevice, blkno: bigint, kind: BlockKind): string {
    let id = this.devIds.get(dev);
    if (id === undefined) {
      id = this.nextDevId++;
      this.devIds.set(dev, id);
    }
    return `${id}:${BLOCK_SIZE_OF[kind] === SM_BLOCK_SIZE ? 's' : 'l'}:${blkno}`;
  }

  /** The slot mapped for this block, or null. */
  lookup(dev: BlockDevice, blkno: bigint, kind: BlockKind): number | null {
    this.assertLive();
    return this.map.get(this.key(dev, blkno, kind)) ?? null;
  }

  /** A FREE slot, evicting the LRU clean unpinned slot if needed. */
  allocSlot(): number {
    this.assertLive();
    const f = this.free.pop();
    if (f !== undefined) {
      assert.equal(this.table.state(f), SlotState.FREE);
      return f;
    }
    const victim = this.lru.keys().next();
    if (victim.done === true) {
      throw new FsError('ENOMEM', `block cache: all ${this.slotCount} slots are pinned, dirty or in flight ` +
        `(${this.dirtyCount} dirty); none can be evicted`);
    }
    const k = victim.value;
    this.counters.evictions++;
    this.unmap(k); // CLEAN, unpinned: straight to FREE and onto the free list
    const again = this.free.pop();
    assert.equal(again, k, 'the evicted slot is the one freed');
    return k;
  }

  /** FREE -> READING, pinned by the caller, mapped, with a loading promise. */
  beginRead(k: number, dev: BlockDevice, blkno: bigint, kind: BlockKind): void {
    const key = this.key(dev, blkno, kind);
    assert(!this.map.has(key), `block ${blkno} already cached`);
    const o = this.owner(k);
    this.table.transition(k, SlotState.FREE, SlotState.READING);
    assert.equal(this.table.pin(k), 1);
    Object.assign(o, { key, dev, blkno, kind, crcOk: false, gen: o.gen + 1 });
    o.loading = new Promise<void>((resolve) => { o.finishLoading = resolve; });
    this.map.set(key, k);
    this.maybeCheck();
  }

  /** READING -> CLEAN (or DROPPED if unmapped meanwhile); wake waiters. */
  endRead(k: number): void {
    const o = this.owner(k);
    this.table.transition(k, SlotState.READING, o.key !== null ? SlotState.CLEAN : SlotState.DROPPED);
    this.settle(o);
    this.maybeCheck();
  }

  /** READING -> FREE after a failed device read; the loader's pin goes too. */
  failRead(k: number): void {
    const o = this.owner(k);
    if (o.key !== null) this.map.delete(o.key);
    o.key = null;
    assert.equal(this.table.unpin(k), 0, 'only the loader pins a READING slot');
    this.table.transition(k, SlotState.READING, SlotState.FREE);
    this.settle(o);
    o.dev = null;
    this.free.push(k);
    this.maybeCheck();
  }

  /** Pin a mapped slot for a reader (a hit). */
  pin(k: number): void {
    this.assertLive();
    const st = this.table.state(k);
    assert(st === SlotState.CLEAN || st === SlotState.DIRTY || st === SlotState.WRITING,
      `slot ${k}: cannot pin a ${stateName(st)} slot`);
    this.table.pin(k);
    this.lru.delete(k);
    this.maybeCheck();
  }

  /** Drop one pin; at zero a CLEAN slot becomes evictable, a DROPPED one free. */
  release(k: number): void {
    if (this.destroyed) return; // everything was forgotten already
    const left = this.table.unpin(k);
    if (left === 0) {
      const o = this.owner(k);
      const st = this.table.state(k);
      if (st === SlotState.CLEAN) {
        assert(o.key !== null, 'a CLEAN slot is mapped');
        this.lru.set(k, true);
      } else if (st === SlotState.DROPPED) {
        this.table.transition(k, SlotState.DROPPED, SlotState.FREE);
        o.dev = null;
        this.free.push(k);
      } else {
        assert.fail(`slot ${k}: last pin released in state ${stateName(st)}`);
      }
    }
    this.maybeCheck();
  }

  /**
   * Make slot k unfindable.  CLEAN unpinned -> FREE; CLEAN pinned -> DROPPED;
   * READING: endRead() will make it DROPPED.  Dirty slots are not unmapped
   * here (dirty.ts forgets them).
   */
  unmap(k: number): void {
    const o = this.owner(k);
    if (o.key === null) return;
    const st = this.table.state(k);
    assert(st === SlotState.CLEAN || st === SlotState.READING, `slot ${k}: cannot unmap a ${stateName(st)} slot`);
    this.map.delete(o.key);
    o.key = null;
    if (st === SlotState.READING) return;
    this.lru.delete(k);
    if (this.table.pins(k) === 0) {
      this.table.transition(k, SlotState.CLEAN, SlotState.FREE);
      o.dev = null;
      this.free.push(k);
    } else {
      this.table.transition(k, SlotState.CLEAN, SlotState.DROPPED);
    }
    this.maybeCheck();
  }

  /** Drop a cached clean copy of a block, e.g. a super rewritten elsewhere. */
  invalidate(dev: BlockDevice, blkno: bigint, kind: BlockKind): boolean {
    const k = this.lookup(dev, blkno, kind);
    if (k === null || this.table.state(k) !== SlotState.CLEAN) return false;
    this.unmap(k);
    return true;
  }

  /**
   * FREE -> DIRTY: mapped, pinned by the dirty list, zero-filled unless the
   * caller is about to overwrite every byte (`zero` false: a copy on write).
   */
  beginDirty(k: number, dev: BlockDevice, blkno: bigint, kind: BlockKind, seq: bigint, fsid: bigint, zero = true): void {
    const key = this.key(dev, blkno, kind);
    assert(!this.map.has(key), `block ${blkno} is still mapped`);
    const o = this.owner(k);
    this.table.transition(k, SlotState.FREE, SlotState.DIRTY);
    assert.equal(this.table.pin(k), 1);
    Object.assign(o, { key, dev, blkno, kind, crcOk: true, gen: o.gen + 1, seq, fsid });
    this.map.set(key, k);
    // set() from a zero buffer: fill() on a SharedArrayBuffer view takes
    // V8's slow element-wise path (about 20x slower for 64 KiB).
    if (zero) this.table.view(k, BLOCK_SIZE_OF[kind]).set(ZERO_BLOCK.subarray(0, BLOCK_SIZE_OF[kind]));
    let set = this.dirty.get(dev);
    if (set === undefined) {
      set = new Set();
      this.dirty.set(dev, set);
    }
    set.add(k);
    this.maybeCheck();
  }

  /** Dirty slots of a device, in the order they were dirtied. */
  dirtySlots(dev: BlockDevice): number[] {
    this.assertLive();
    return [...(this.dirty.get(dev) ?? [])];
  }

  /** WRITING -> CLEAN after a successful write; the dirty pin goes. */
  endWrite(k: number): void {
    const o = this.owner(k);
    this.table.transition(k, SlotState.WRITING, SlotState.CLEAN);
    this.removeDirty(o.dev!, k);
    this.counters.dirtyWritten++;
    this.release(k);
  }

  /** DIRTY -> FREE (or DROPPED if a reader holds a pin): freed in this transaction. */
  forget(k: number): void {
    const o = this.owner(k);
    this.table.transition(k, SlotState.DIRTY, SlotState.DROPPED);
    this.removeDirty(o.dev!, k);
    assert(o.key !== null);
    this.map.delete(o.key);
    o.key = null;
    this.release(k); // the dirty pin; frees the slot unless a reader holds it
  }

  /** A handle for a slot the caller pinned, labelled with the kind it was read as. */
  handle(k: number, kind: BlockKind = this.owner(k).kind): BlockHandle {
    const o = this.owner(k);
    assert(this.table.pins(k) > 0, 'a handle is made for a pinned slot');
    assert.equal(BLOCK_SIZE_OF[kind], BLOCK_SIZE_OF[o.kind], 'a slot holds one size class');
    return new BlockHandle(this, k, o.gen, o.blkno, kind, this.table.view(k, BLOCK_SIZE_OF[kind]));
  }

  /** Cross-check every slot against the lists; throws on the first mismatch. */
  checkInvariants(): void {
    const freeSet = new Set(this.free);
    assert.equal(freeSet.size, this.free.length, 'free list has duplicates');
    let mapped = 0;
    for (let k = 0; k < this.slotCount; k++) {
      const o = this.owner(k);
      const st = this.table.state(k);
      const pins = this.table.pins(k);
      const inDirty = o.dev !== null && (this.dirty.get(o.dev)?.has(k) ?? false);
      const what = `slot ${k} (${stateName(st)}, ${pins} pins)`;
      assert.equal(freeSet.has(k), st === SlotState.FREE, `${what}: on the free list iff FREE`);
      assert.equal(this.lru.has(k), st === SlotState.CLEAN && pins === 0, `${what}: on the LRU iff CLEAN and unpinned`);
      assert.equal(inDirty, st === SlotState.DIRTY || st === SlotState.WRITING, `${what}: on a dirty list iff DIRTY or WRITING`);
      assert.equal(o.loading !== null, st === SlotState.READING, `${what}: a read in flight iff READING`);
      if (st === SlotState.FREE) assert(pins === 0 && o.key === null, `${what}: FREE is unpinned and unmapped`);
      if (st !== SlotState.FREE && st !== SlotState.CLEAN) assert(pins > 0, `${what}: must be pinned`);
      if (st === SlotState.CLEAN || st === SlotState.DIRTY || st === SlotState.WRITING) assert(o.key !== null, `${what}: must be mapped`);
      if (st === SlotState.DROPPED) assert(o.key === null, `${what}: DROPPED is unmapped`);
      if (o.key !== null) {
        assert.equal(this.map.get(o.key), k, `${what}: map entry points elsewhere`);
        mapped++;
      }
    }
    assert.equal(this.map.size, mapped, 'map has entries for unowned slots');
  }

  /** Forget everything; safe to call at any time, twice included. */
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    for (const o of this.owners) this.settle(o);
    this.map.clear();
    this.lru.clear();
    this.dirty.clear();
    this.free = [];
  }

  assertLive(): void {
    if (this.destroyed) throw new LifecycleError('shutdown', 'block cache destroyed');
  }

  private settle(o: SlotOwner): void {
    const fin = o.finishLoading;
    o.loading = null;
    o.finishLoading = null;
    if (fin !== null) fin();
  }

  private removeDirty(dev: BlockDevice, k: number): void {
    const set = this.dirty.get(dev);
    assert(set?.delete(k) === true, `slot ${k} is not on the dirty list`);
    if (set.size === 0) this.dirty.delete(dev);
  }

  private maybeCheck(): void {
    if (this.invariants) this.checkInvariants();
  }
}
