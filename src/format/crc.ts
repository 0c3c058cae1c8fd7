/*
 * The scoutfs checksum: CRC-32C (Castagnoli, reflected 0x82F63B78) with the
 * register seeded to 0xFFFFFFFF and NO final inversion (FORMAT.md 3.2).  It
 * is the bitwise NOT of textbook CRC-32C: "123456789" gives 0x1CF96D7C.  The
 * same primitive is the xattr name hash (FORMAT.md 12.3) and the quorum
 * message crc (6.2).
 *
 * Backends, tried in order at module load:
 *   1. 'native': our N-API addon in native/crc32c/ (built by
 *      scripts/setup.sh with node-gyp).  SSE4.2 crc32 over three interleaved
 *      lanes, combined with precomputed shift tables: about 2x a memcpy of
 *      the same 64 KiB.  Computes the raw register directly.  Absent when the
 *      build failed or was skipped; loads but reports `hardware: false` on a
 *      CPU without SSE4.2 (and on non-x86), and is then skipped.
 *   2. 'node-rs': @node-rs/crc32's crc32c (hardware, but a single dependent
 *      chain of crc32 instructions: about 5x slower than 'native' on 64 KiB).
 *      It computes the textbook value, so we invert the register on the way
 *      in and the result on the way out.
 *   3. 'js': a pure-JS slicing-by-8 table loop (about 35x slower than
 *      'native'), always available and the reference the others are tested
 *      against.
 * Each hardware backend must pass a self-test against the JS loop before it
 * is trusted: "123456789", plus a probe long enough to run every lane size
 * of the native code, at an odd offset.  A backend that fails is skipped
 * silently, like one that is missing.
 *
 * `crcBackend` names the one in use.  SCOUTFS_CRC_BACKEND=native|node-rs|js
 * forces one (tests use it); forcing a backend that is unavailable or fails
 * its self-test throws at module load rather than quietly testing another.
 *
 * Block checksums cover bytes 4..end of the whole block (the crc field itself
 * excluded, all trailing zero fill included).  The addon has its own
 * blockCrc, which saves the subarray (about 60 ns, a fifth of the cost of a
 * 4 KiB checksum), and blockCrcBatch checksums a run of whole blocks back to
 * back (one multi-block read) in one native call.
 *
 * The native addon is addressed from the package root.  This file compiles to
 * dist/src/format/crc.js, three levels below the root, and the addon sits at
 * native/crc32c/build/Release/crc32c.node.  Rejected: a `bindings`-style
 * search of several directories (a dependency and a slow probe for one fixed
 * path), and loading the addon lazily (the backend must be known, and
 * logged by callers, before the first block is read).  N-API addons are
 * context aware, so piscina workers load it too.
 */
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

export type CrcBackend = 'native' | 'node-rs' | 'js';

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

/* ---- hardware backends ---------------------------------------------------- */

type RawFn = (buf: Uint8Array, reg: number) => number;

interface NativeAddon {
  hardware: boolean;
  crc32c(buf: Uint8Array, reg?: number): number;
  blockCrc(block: Uint8Array): number;
  blockCrcBatch(buf: Uint8Array, blockSize: number, out: Uint32Array): void;
}

/** Path of the addon, relative to the package root. */
export const NATIVE_ADDON_PATH = 'native/crc32c/build/Release/crc32c.node';

/* Trust a backend only if it agrees with the JS loop.  The probe is 3 lanes
 * of 8192 + 3 of 1024 + 3 of 256 + 13 bytes at offset 3, so every tier and
 * both unaligned edges of the native code run. */
function selfTest(fn: RawFn): boolean {
  const check = new TextEncoder().encode('123456789');
  if (fn(check, 0xffffffff) !== 0x1cf96d7c) return false;
  const len = 3 * 8192 + 3 * 1024 + 3 * 256 + 13;
  const mem = new Uint8Array(len + 3);
  let x = 0x9e3779b9;
  for (let i = 0; i < mem.length; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    mem[i] = x >>> 24;
  }
  const probe = mem.subarray(3);
  return fn(probe, 0x12345678) === crc32cRawJs(probe, 0x12345678);
}

function loadNative(): NativeAddon | null {
  try {
    const rootRequire = createRequire(new URL('../../../package.json', import.meta.url));
    const mod = rootRequire(`./${NATIVE_ADDON_PATH}`) as NativeAddon;
    if (!mod.hardware) return null;
    return selfTest((b, r) => mod.crc32c(b, r)) ? mod : null;
  } catch {
    return null;
  }
}

type NodeRsCrc32c = (input: Buffer, initialState?: number) => number;

function asBuffer(b: Uint8Array): Buffer {
  return Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.byteLength);
}

function loadNodeRs(): RawFn | null {
  try {
    const mod = require('@node-rs/crc32') as { crc32c: NodeRsCrc32c };
    // Textbook crc32c(init) inverts init on entry and the result on exit.
    const raw: RawFn = (buf, reg) => (~mod.crc32c(asBuffer(buf), (~reg) >>> 0)) >>> 0;
    return selfTest(raw) ? raw : null;
  } catch {
    return null;
  }
}

function pickBackend(): { name: CrcBackend; raw: RawFn; addon: NativeAddon | null } {
  const forced = process.env.SCOUTFS_CRC_BACKEND;
  if (forced !== undefined && forced !== '' && forced !== 'native' && forced !== 'node-rs' && forced !== 'js') {
    throw new Error(`SCOUTFS_CRC_BACKEND=${forced}: expected native, node-rs or js`);
  }
  if (!forced || forced === 'native') {
    const addon = loadNative();
    if (addon) {
      // The N-API function ignores `this`; call it unbound.
      return { name: 'native', raw: addon.crc32c, addon };
    }
    if (forced) throw new Error(`SCOUTFS_CRC_BACKEND=native: ${NATIVE_ADDON_PATH} is missing, lacks hardware support or failed its self-test`);
  }
  if (!forced || forced === 'node-rs') {
    const raw = loadNodeRs();
    if (raw) return { name: 'node-rs', raw, addon: null };
    if (forced) throw new Error('SCOUTFS_CRC_BACKEND=node-rs: @node-rs/crc32 is missing or failed its self-test');
  }
  return { name: 'js', raw: crc32cRawJs, addon: null };
}

const picked = pickBackend();

/** The backend in use, fixed at module load. */
export const crcBackend: CrcBackend = picked.name;

const rawImpl = picked.raw;
const addon = picked.addon;

/**
 * Raw CRC-32C: register seeded with `reg` (default all ones), no final
 * inversion.  Chaining works: crc32cRaw(b, crc32cRaw(a)) == crc32cRaw(a+b).
 */
export function crc32cRaw(buf: Uint8Array, reg = 0xffffffff): number {
  return rawImpl(buf, reg >>> 0);
}

/** The checksum stored at offset 0 of every block: bytes 4..end. */
export const blockCrc: (block: Uint8Array) => number = addon
  ? addon.blockCrc // skips the 4 bytes itself: no subarray to allocate
  : (block) => {
      assert(block.length >= 4, 'a block holds at least its crc field');
      return rawImpl(block.subarray(4), 0xffffffff);
    };

/**
 * blockCrc of each of the whole blocks laid back to back in `blocks`
 * (`blockSizeBytes` each), into `out` (allocated when omitted).
 */
export function blockCrcBatch(blocks: Uint8Array, blockSizeBytes: number, out?: Uint32Array): Uint32Array {
  assert(Number.isInteger(blockSizeBytes) && blockSizeBytes > 4, 'block size must exceed the crc field');
  assert(blocks.length % blockSizeBytes === 0, 'blocks must hold whole blocks');
  const n = blocks.length / blockSizeBytes;
  const res = out ?? new Uint32Array(n);
  assert(res.length >= n, 'out must have one slot per block');
  if (addon) {
    addon.blockCrcBatch(blocks, blockSizeBytes, res);
  } else {
    for (let i = 0; i < n; i++) {
      res[i] = rawImpl(blocks.subarray(i * blockSizeBytes + 4, (i + 1) * blockSizeBytes), 0xffffffff);
    }
  }
  return res;
}
