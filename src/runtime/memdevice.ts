/*
 * MemoryBlockDevice: a sparse in-memory BlockDevice for unit tests and the
 * simulator.
 *
 * The device is a map from 64 KiB chunk index to chunk bytes; chunks are
 * created on first write, and reading a chunk never written returns zeros,
 * like a sparse file.  So a "1 TiB" device costs only what was written.
 * Bounds and errors follow FileBlockDevice exactly (checkRange from
 * device.ts), so code tested here behaves the same on a real file.
 *
 * Every write is immediately "durable": there is no cache to lose.  Wrap it
 * in a FaultDevice to model a disk that loses unflushed writes.  Counters
 * (reads, writes, flushes) let tests prove a path did or did not touch the
 * device.  Reads return a fresh copy; callers may keep or modify it.
 */
import assert from 'node:assert/strict';
import { checkRange, type BlockDevice } from './device.js';

const CHUNK_SHIFT = 16n;
const CHUNK_BYTES = 1 << 16;

export class MemoryBlockDevice implements BlockDevice {
  readonly path: string;
  readonly sizeBytes: bigint;
  private readonly chunks = new Map<bigint, Uint8Array>();
  private closed = false;
  reads = 0;
  writes = 0;
  flushes = 0;

  constructor(sizeBytes: bigint, path = 'mem') {
    assert(sizeBytes >= 0n, 'device size must be >= 0');
    this.sizeBytes = sizeBytes;
    this.path = path;
  }

  /** Bytes of backing memory in use (chunks written). */
  get storedBytes(): number {
    return this.chunks.size * CHUNK_BYTES;
  }

  async read(off: bigint, len: number): Promise<Uint8Array> {
    this.assertOpen();
    checkRange(this.path, this.sizeBytes, 'read', off, len);
    this.reads++;
    return this.readSync(off, len);
  }

  async write(off: bigint, data: Uint8Array): Promise<void> {
    this.assertOpen();
    checkRange(this.path, this.sizeBytes, 'write', off, data.length);
    this.writes++;
    this.writeSync(off, data);
  }

  async flush(): Promise<void> {
    this.assertOpen();
    this.flushes++;
  }

  async close(): Promise<void> {
    this.closed = true;
  }

  /** Synchronous read for test setup and checkers; same bounds as read(). */
  readSync(off: bigint, len: number): Uint8Array {
    checkRange(this.path, this.sizeBytes, 'read', off, len);
    const out = new Uint8Array(len);
    this.span(off, len, (chunk, cOff, at, n) => {
      if (chunk) out.set(chunk.subarray(cOff, cOff + n), at);
    });
    return out;
  }

  /** Synchronous write for test setup (e.g. corrupting a byte on "disk"). */
  writeSync(off: bigint, data: Uint8Array): void {
    checkRange(this.path, this.sizeBytes, 'write', off, data.length);
    this.span(off, data.length, (_chunk, cOff, at, n, idx) => {
      let c = this.chunks.get(idx);
      if (!c) {
        c = new Uint8Array(CHUNK_BYTES);
        this.chunks.set(idx, c);
      }
      c.set(data.subarray(at, at + n), cOff);
    });
  }

  /** Walk [off, off+len) chunk by chunk. */
  private span(
    off: bigint,
    len: number,
    fn: (chunk: Uint8Array | undefined, chunkOff: number, at: number, n: number, idx: bigint) => void,
  ): void {
    let at = 0;
    while (at < len) {
      const pos = off + BigInt(at);
      const idx = pos >> CHUNK_SHIFT;
      const cOff = Number(pos & BigInt(CHUNK_BYTES - 1));
      const n = Math.min(CHUNK_BYTES - cOff, len - at);
      fn(this.chunks.get(idx), cOff, at, n, idx);
      at += n;
    }
  }

  private assertOpen(): void {
    assert(!this.closed, `${this.path}: device used after close`);
  }
}
