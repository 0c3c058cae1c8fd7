/*
 * FaultDevice: a BlockDevice wrapper that misbehaves like a real disk,
 * deterministically from a seeded Random.
 *
 * The wrapped device is the durable medium.  A write does not reach it: it
 * is kept in a pending list (a copy of the bytes, in write order) until
 * flush(), which applies the pending writes in order and flushes the inner
 * device.  Reads see the medium with the pending writes laid over it, as a
 * real disk's cache would return them.
 *
 *   write ---> [pending w1, w2, w3 ...] --flush()--> inner device (durable)
 *                         |
 *                      crash(): each pending write is lost, lands whole,
 *                               or lands torn (some 4 KiB sectors only)
 *
 * crash() models power loss followed by a reboot: unflushed writes are
 * lost, all of them by default, or each lands anyway with probability
 * crashLandProbability.  A landing write covering more than one 4 KiB
 * sector tears with probability tearProbability: a random non-empty proper
 * subset of its sectors (aligned on absolute 4 KiB device boundaries, as a
 * disk's atomic unit) reaches the medium.  The device stays usable after
 * crash(), like a remounted disk.
 *
 * Other faults:
 *   - read corruption: with readCorruptProbability per read, or once on the
 *     next read (covering `offset`, if given) after corruptNextRead(), one
 *     byte of the returned buffer is XORed with a non-zero value.  The
 *     medium is untouched, so a re-read returns good bytes: the transient
 *     corruption that the block layer's re-read-once path exists for.
 *   - failing writes: the at-th write (1-based, counting every write call)
 *     fails with FsError(code) and is not recorded; with sticky, so does
 *     every later write (a full or dead disk).
 *
 * Determinism: every random draw happens in call order on the one Random
 * given at construction, and only when the corresponding probability is
 * non-zero; so the same seed and the same sequence of calls give the same
 * faults, the same bytes on the medium and the same counters.  Counters of
 * what was done let a scenario prove its fault fired.
 *
 * Bounds are checked at write time against the inner device's size, so a
 * bad write fails at once, not at flush.
 */
import assert from 'node:assert/strict';
import { FsError } from '../format/errors.js';
import { checkRange, type BlockDevice } from './device.js';
import type { Random } from './random.js';

export const SECTOR_BYTES = 4096;

export interface FaultOptions {
  /** On crash, the chance that each unflushed write lands anyway. Default 0. */
  crashLandProbability?: number;
  /** Chance that a landing multi-sector write lands torn. Default 0. */
  tearProbability?: number;
  /** Chance that any read returns one flipped byte. Default 0. */
  readCorruptProbability?: number;
  /** The at-th write fails with code; with sticky, every later one too. */
  failWrite?: { at: number; code: 'ENOSPC' | 'EIO'; sticky?: boolean };
}

export interface FaultCounters {
  reads: number;
  writes: number;
  flushes: number;
  crashes: number;
  writesLost: number;
  writesLanded: number;
  writesTorn: number;
  readsCorrupted: number;
  writesFailed: number;
}

export interface CrashReport {
  lost: number;
  landed: number;
  torn: number;
}

interface PendingWrite {
  off: bigint;
  data: Uint8Array;
}

export class FaultDevice implements BlockDevice {
  readonly inner: BlockDevice;
  private readonly random: Random;
  private readonly opts: FaultOptions;
  private pending: PendingWrite[] = [];
  private corruptNext: { offset: bigint | null } | null = null;
  readonly counters: FaultCounters = {
    reads: 0, writes: 0, flushes: 0, crashes: 0, writesLost: 0, writesLanded: 0,
    writesTorn: 0, readsCorrupted: 0, writesFailed: 0,
  };

  constructor(inner: BlockDevice, random: Random, opts: FaultOptions = {}) {
    for (const p of [opts.crashLandProbability, opts.tearProbability, opts.readCorruptProbability]) {
      assert(p === undefined || (p >= 0 && p <= 1), `probability out of range: ${p}`);
    }
    this.inner = inner;
    this.random = random;
    this.opts = { ...opts };
  }

  get path(): string {
    return this.inner.path;
  }

  get sizeBytes(): bigint {
    return this.inner.sizeBytes;
  }

  /** Writes not yet flushed. */
  get pendingWrites(): number {
    return this.pending.length;
  }

  /** One-shot trigger: corrupt the next read (covering offset, if given). */
  corruptNextRead(offset?: bigint): void {
    this.corruptNext = { offset: offset ?? null };
  }

  /** Trigger: the at-th write from the start (1-based) fails with code. */
  failWriteAt(at: number, code: 'ENOSPC' | 'EIO', sticky = false): void {
    assert(Number.isSafeInteger(at) && at >= 1, `failWriteAt needs a 1-based count: ${at}`);
    this.opts.failWrite = { at, code, sticky };
  }

  async read(off: bigint, len: number): Promise<Uint8Array> {
    checkRange(this.path, this.sizeBytes, 'read', off, len);
    this.counters.reads++;
    const buf = await this.inner.read(off, len);
    const end = off + BigInt(len);
    for (const w of this.pending) overlay(buf, off, end, w);
    this.maybeCorrupt(buf, off);
    return buf;
  }

  async write(off: bigint, data: Uint8Array): Promise<void> {
    checkRange(this.path, this.sizeBytes, 'write', off, data.length);
    const n = ++this.counters.writes;
    const f = this.opts.failWrite;
    if (f && (n === f.at || (f.sticky === true && n > f.at))) {
      this.counters.writesFailed++;
      throw new FsError(f.code, `${this.path}: injected write failure (write #${n} at offset ${off})`);
    }
    this.pending.push({ off, data: data.slice() });
  }

  async flush(): Promise<void> {
    this.counters.flushes++;
    const ws = this.pending;
    this.pending = [];
    for (const w of ws) await this.inner.write(w.off, w.data);
    await this.inner.flush();
  }

  async close(): Promise<void> {
    await this.inner.close();
  }

  /** Power loss and reboot: see the top comment. */
  async crash(override: Pick<FaultOptions, 'crashLandProbability' | 'tearProbability'> = {}): Promise<CrashReport> {
    const landP = override.crashLandProbability ?? this.opts.crashLandProbability ?? 0;
    const tearP = override.tearProbability ?? this.opts.tearProbability ?? 0;
    const ws = this.pending;
    this.pending = [];
    this.corruptNext = null;
    this.counters.crashes++;
    const report: CrashReport = { lost: 0, landed: 0, torn: 0 };
    for (const w of ws) {
      if (!(landP > 0 && this.random.float() < landP)) {
        report.lost++;
        continue;
      }
      const sectors = sectorSpans(w.off, w.data.length);
      if (sectors.length > 1 && tearP > 0 && this.random.float() < tearP) {
        for (const s of this.tornSubset(sectors)) {
          await this.inner.write(w.off + BigInt(s.at), w.data.subarray(s.at, s.at + s.len));
        }
        report.torn++;
      } else {
        await this.inner.write(w.off, w.data);
        report.landed++;
      }
    }
    this.counters.writesLost += report.lost;
    this.counters.writesLanded += report.landed;
    this.counters.writesTorn += report.torn;
    return report;
  }

  /** A random non-empty proper subset of the sectors, in order. */
  private tornSubset(sectors: SectorSpan[]): SectorSpan[] {
    for (;;) {
      const keep = sectors.filter(() => this.random.int(2) === 1);
      if (keep.length > 0 && keep.length < sectors.length) return keep;
    }
  }

  private maybeCorrupt(buf: Uint8Array, off: bigint): void {
    if (buf.length === 0) return;
    let at: number | null = null;
    const c = this.corruptNext;
    if (c !== null) {
      if (c.offset === null) {
        at = this.random.int(buf.length);
      } else if (c.offset >= off && c.offset < off + BigInt(buf.length)) {
        at = Number(c.offset - off);
      }
      if (at !== null) this.corruptNext = null;
    }
    const p = this.opts.readCorruptProbability ?? 0;
    if (at === null && p > 0 && this.random.float() < p) at = this.random.int(buf.length);
    if (at === null) return;
    buf[at] = buf[at]! ^ (1 + this.random.int(255));
    this.counters.readsCorrupted++;
  }
}

/** Copy the part of pending write w that falls inside [off, end) into buf. */
function overlay(buf: Uint8Array, off: bigint, end: bigint, w: PendingWrite): void {
  const wEnd = w.off + BigInt(w.data.length);
  const lo = w.off > off ? w.off : off;
  const hi = wEnd < end ? wEnd : end;
  if (lo >= hi) return;
  buf.set(w.data.subarray(Number(lo - w.off), Number(hi - w.off)), Number(lo - off));
}

interface SectorSpan {
  /** Offset within the write. */
  at: number;
  len: number;
}

/** Split a write into pieces on absolute 4 KiB device boundaries. */
export function sectorSpans(off: bigint, len: number): SectorSpan[] {
  const out: SectorSpan[] = [];
  let at = 0;
  while (at < len) {
    const inSector = Number((off + BigInt(at)) % BigInt(SECTOR_BYTES));
    const n = Math.min(SECTOR_BYTES - inSector, len - at);
    out.push({ at, len: n });
    at += n;
  }
  return out;
}
