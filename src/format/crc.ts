/*
 * The scoutfs checksum: CRC-32C (Castagnoli, reflected 0x82F63B78) with the
 * register seeded to 0xFFFFFFFF and NO final inversion (FORMAT.md 3.2).  It
 * is the bitwise NOT of textbook CRC-32C: "123456789" gives 0x1CF96D7C.
 *
 * Backends, tried in order at module load:
 *   1. @node-rs/crc32's crc32c (hardware SSE4.2 / ARMv8 CRC instructions),
 *      which computes the textbook value; we invert it.
 *   2. A pure-JS slicing-by-8 table implementation.
 * `crcBackend` names the one in use; tests cross-check both backends.
 *
 * Block checksums cover bytes 4..end of the whole block (the crc field itself
 * excluded, all trailing zero fill included).
 */
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

/* ---- pure JS: slicing-by-8 ---------------------------------------------- */

const TABLES: Uint32Array[] = (() => {
  const t: Uint32Array[] = [];
  const t0 = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t0[i] = c >>> 0;
  }
  t.push(t0);
  for (let s = 1; s < 8; s++) {
    const prev = t[s - 1]!;
    const cur = new Uint32Array(256);
    for (let i = 0; i < 256; i++) cur[i] = (prev[i]! >>> 8) ^ t0[prev[i]! & 0xff]!;
    t.push(cur);
  }
  return t;
})();

/** Raw CRC-32C update: register in, register out (no inversions). */
export function crc32cRawJs(buf: Uint8Array, reg = 0xffffffff): number {
  const [t0, t1, t2, t3, t4, t5, t6, t7] = TABLES as [
    Uint32Array, Uint32Array, Uint32Array, Uint32Array,
    Uint32Array, Uint32Array, Uint32Array, Uint32Array,
  ];
  let c = reg >>> 0;
  let i = 0;
  const n = buf.length;
  while (n - i >= 8) {
    const a = (buf[i]! | (buf[i + 1]! << 8) | (buf[i + 2]! << 16) | (buf[i + 3]! << 24)) ^ c;
    c =
      t7[a & 0xff]! ^ t6[(a >>> 8) & 0xff]! ^ t5[(a >>> 16) & 0xff]! ^ t4[a >>> 24]! ^
      t3[buf[i + 4]!]! ^ t2[buf[i + 5]!]! ^ t1[buf[i + 6]!]! ^ t0[buf[i + 7]!]!;
    i += 8;
  }
  while (i < n) c = t0[(c ^ buf[i++]!) & 0xff]! ^ (c >>> 8);
  return c >>> 0;
}

/* ---- hardware backend ---------------------------------------------------- */

type Crc32cFn = (input: Uint8Array, initialState?: number) => number;

function loadNodeRs(): Crc32cFn | null {
  try {
    const mod = require('@node-rs/crc32') as { crc32c: Crc32cFn };
    // Self-test before trusting it.
    const probe = new TextEncoder().encode('123456789');
    if (mod.crc32c(Buffer.from(probe)) !== 0xe3069283) return null;
    return mod.crc32c;
  } catch {
    return null;
  }
}

const nodeRs = process.env.SCOUTFS_CRC_BACKEND === 'js' ? null : loadNodeRs();

export const crcBackend: 'node-rs' | 'js' = nodeRs ? 'node-rs' : 'js';

function asBuffer(b: Uint8Array): Buffer {
  return Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.byteLength);
}

/**
 * Raw CRC-32C: register seeded with `reg` (default all ones), no final
 * inversion.  Chaining works: crc32cRaw(b, crc32cRaw(a)) == crc32cRaw(a+b).
 */
export const crc32cRaw: (buf: Uint8Array, reg?: number) => number = nodeRs
  ? (buf, reg = 0xffffffff) => {
      // Textbook crc32c(init) inverts init on entry and the result on exit.
      const std = nodeRs(asBuffer(buf), (~reg) >>> 0);
      return (~std) >>> 0;
    }
  : crc32cRawJs;

/** The checksum stored at offset 0 of every block: bytes 4..end. */
export function blockCrc(block: Uint8Array): number {
  return crc32cRaw(block.subarray(4));
}
