/*
 * The block cache's SharedArrayBuffer: slot bytes, slot states, pin counts.
 *
 * One SharedArrayBuffer holds the whole cache, so a worker receives it once
 * and can read any slot without a copy:
 *
 *   0          65536      131072            n*65536          +8n
 *   +----------+----------+-----  ...  -----+----------------+
 *   | slot 0   | slot 1   |                 | meta: n x      |
 *   | 64 KiB   | 64 KiB   |                 | [state, pins]  |
 *   +----------+----------+-----  ...  -----+----------------+
 *
 * Slot k's bytes are `new Uint8Array(sab, k * 65536, size)`: size is 65536
 * for LG blocks and 4096 for SM (super, quorum) blocks, which use the first
 * 4 KiB of a whole slot.  The meta region is an Int32Array of two words per
 * slot, state and pins, and the slot count is recovered from the buffer's
 * length alone (n = byteLength / 65544), so a worker needs nothing else.
 *
 * Slot state machine.  Every change is one Atomics.compareExchange from an
 * expected state, asserted, so a transition from the wrong state is caught
 * at the moment it happens.  The main paths:
 *
 *              alloc for read          bytes arrived
 *     FREE ---------------------> READING -----------------> CLEAN
 *      ^ |                                                   |  ^
 *      | |                              evicted (LRU, pins 0)|  |
 *      | +<--------------------------------------------------+  |
 *      | |                                                      |
 *      | | alloc dirty          sealed               written    |
 *      | +------------> DIRTY ----------> WRITING --------------+
 *      |                  ^                  |
 *      |                  +-- write failed --+
 *      |
 *      +----- last pin released ----- DROPPED
 *
 * and every transition, with who makes it:
 *
 *   FREE    -> READING  a reader allocated the slot for a device read
 *   READING -> CLEAN    the bytes arrived
 *   READING -> DROPPED  they arrived, but the mapping was removed meanwhile
 *   READING -> FREE     the device read failed
 *   CLEAN   -> FREE     evicted, or unmapped while unpinned
 *   CLEAN   -> DROPPED  unmapped (stale, replaced) while someone holds a pin
 *   DROPPED -> FREE     the last pin was released
 *   FREE    -> DIRTY    a new block image was allocated for a transaction
 *   DIRTY   -> WRITING  sealed (crc computed last) and handed to the device
 *   WRITING -> CLEAN    the write completed
 *   WRITING -> DIRTY    the write failed; the block is still to be written
 *   DIRTY   -> DROPPED  forgotten (freed in the same transaction); the
 *                       dirty pin is then released, which frees the slot
 *                       unless a reader still holds a pin
 *
 *   FREE     no contents, on the free list, pins 0.
 *   READING  bytes are arriving from the device (and, for a batch, being
 *            crc-checked by a worker); only the loader and the worker it
 *            dispatched touch them; pinned by the loader.
 *   CLEAN    bytes as read from or written to the device; findable by
 *            (device, blkno); evictable when pins reach 0.  Whether the
 *            crc was checked is remembered on the main thread (cache.ts).
 *   DIRTY    a new block image being built by the transaction; pinned by
 *            the dirty list until written or forgotten; never evicted.
 *   WRITING  sealed (crc set) and being written; must not change.
 *   DROPPED  no longer findable (stale, replaced or forgotten), but someone
 *            still holds a pin and reads it; freed at the last unpin.
 *
 * Ownership: only the main thread changes state, pins and evicts (STYLE.md
 * 6).  Workers read slot bytes of slots the main thread pinned for them,
 * and may read state and pins to assert that (verify.ts does).  Atomics make
 * those cross-thread reads well defined; the main thread's own transitions
 * go through the same compareExchange so one path checks them all.
 */
import assert from 'node:assert/strict';

export const SLOT_BYTES = 65536;
export const SLOT_SHIFT = 16;
const META_INTS = 2; // [state, pins]
const META_BYTES = META_INTS * 4;

export const SlotState = {
  FREE: 0,
  READING: 1,
  CLEAN: 2,
  DIRTY: 3,
  WRITING: 4,
  DROPPED: 5,
} as const;
export type SlotState = (typeof SlotState)[keyof typeof SlotState];

const STATE_NAMES = ['FREE', 'READING', 'CLEAN', 'DIRTY', 'WRITING', 'DROPPED'];
export const stateName = (s: number): string => STATE_NAMES[s] ?? `state ${s}`;

/** Bytes of a cache SAB with slotCount slots. */
export function cacheBytes(slotCount: number): number {
  return slotCount * (SLOT_BYTES + META_BYTES);
}

export class SlotTable {
  readonly sab: SharedArrayBuffer;
  readonly slotCount: number;
  private readonly meta: Int32Array;

  constructor(sab: SharedArrayBuffer) {
    const n = sab.byteLength / (SLOT_BYTES + META_BYTES);
    assert(Number.isInteger(n) && n >= 1, `not a block cache buffer: ${sab.byteLength} bytes`);
    this.sab = sab;
    this.slotCount = n;
    this.meta = new Int32Array(sab, n * SLOT_BYTES, n * META_INTS);
  }

  static create(slotCount: number): SlotTable {
    assert(Number.isSafeInteger(slotCount) && slotCount >= 1, `slot count must be >= 1: ${slotCount}`);
    return new SlotTable(new SharedArrayBuffer(cacheBytes(slotCount)));
  }

  /** The bytes of slot k, first size bytes, without copying. */
  view(k: number, size: number): Uint8Array {
    this.check(k);
    assert(size > 0 && size <= SLOT_BYTES, `slot view size out of range: ${size}`);
    return new Uint8Array(this.sab, k * SLOT_BYTES, size);
  }

  state(k: number): SlotState {
    this.check(k);
    return Atomics.load(this.meta, k * META_INTS) as SlotState;
  }

  pins(k: number): number {
    this.check(k);
    return Atomics.load(this.meta, k * META_INTS + 1);
  }

  /** from -> to, atomically; anything else is a bug. */
  transition(k: number, from: SlotState, to: SlotState): void {
    this.check(k);
    const was = Atomics.compareExchange(this.meta, k * META_INTS, from, to);
    assert(was === from, `slot ${k}: ${stateName(from)} -> ${stateName(to)} found ${stateName(was)}`);
  }

  /** Add a pin; returns the new count. */
  pin(k: number): number {
    this.check(k);
    return Atomics.add(this.meta, k * META_INTS + 1, 1) + 1;
  }

  /** Drop a pin; returns the new count, never below zero. */
  unpin(k: number): number {
    this.check(k);
    const was = Atomics.sub(this.meta, k * META_INTS + 1, 1);
    assert(was > 0, `slot ${k}: unpinned with no pins`);
    return was - 1;
  }

  private check(k: number): void {
    assert(Number.isInteger(k) && k >= 0 && k < this.slotCount, `slot ${k} out of range 0..${this.slotCount - 1}`);
  }
}
