/*
 * Goal: every CRC-32C backend computes the scoutfs raw checksum (seed
 * 0xFFFFFFFF, no final inversion, FORMAT.md 3.2 and 12.3) bit for bit like
 * the pure-JS reference, for any length, offset and chaining; and the fast
 * native addon is the one actually in use on a machine where it was built.
 *
 * Each backend is loaded as its own instance of src/format/crc.js (a query
 * string in the import URL gives a fresh module), with SCOUTFS_CRC_BACKEND
 * forcing it, so one process tests them all.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';

import * as crc from '../../../src/format/crc.js';
import { blockCrc, crc32cRaw, crc32cRawJs, crcBackend, NATIVE_ADDON_PATH } from '../../../src/format/crc.js';

type CrcModule = typeof crc;
type Backend = CrcModule['crcBackend'];

const CRC_URL = new URL('../../../src/format/crc.js', import.meta.url);
// dist/test/unit/format/ is four levels below the package root.
const ROOT_URL = new URL('../../../../', import.meta.url);
const ADDON_FILE = fileURLToPath(new URL(NATIVE_ADDON_PATH, ROOT_URL));

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);

let instance = 0;
/** A fresh instance of crc.js with SCOUTFS_CRC_BACKEND set to `backend`. */
async function loadWith(backend: string): Promise<CrcModule> {
  const saved = process.env.SCOUTFS_CRC_BACKEND;
  process.env.SCOUTFS_CRC_BACKEND = backend;
  try {
    return (await import(`${CRC_URL.href}?backend=${backend}&i=${instance++}`)) as CrcModule;
  } finally {
    if (saved === undefined) delete process.env.SCOUTFS_CRC_BACKEND;
    else process.env.SCOUTFS_CRC_BACKEND = saved;
  }
}

/** Every backend that loads (and passes its self-test) here. */
async function availableBackends(): Promise<CrcModule[]> {
  const mods: CrcModule[] = [];
  for (const b of ['native', 'node-rs', 'js'] as Backend[]) {
    try {
      const m = await loadWith(b);
      assert.equal(m.crcBackend, b);
      mods.push(m);
    } catch (e) {
      if (b === 'js') throw e;
    }
  }
  return mods;
}

/** Deterministic bytes (xorshift32), so a failure reproduces. */
function randomBytes(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

const VECTORS: [string, number][] = [
  ['123456789', 0x1cf96d7c],
  ['user.foo', 0xa47a061b],
  ['trusted.bar', 0x6c67a0b7],
  ['scoutfs.srch.tag', 0x9d99d63b],
];

test('vectors: raw crc32c, seed all ones, no final inversion', async () => {
  for (const m of await availableBackends()) {
    for (const [s, want] of VECTORS) {
      assert.equal(m.crc32cRaw(enc(s)), want, `${m.crcBackend} ${s}`);
      assert.equal(m.crc32cRaw(Buffer.from(s)), want, `${m.crcBackend} Buffer ${s}`);
    }
    // The textbook CRC-32C is the bitwise NOT.
    assert.equal((~m.crc32cRaw(enc('123456789'))) >>> 0, 0xe3069283);
  }
  for (const [s, want] of VECTORS) assert.equal(crc32cRawJs(enc(s)), want);
});

test('empty buffer returns the register unchanged', async () => {
  for (const m of await availableBackends()) {
    assert.equal(m.crc32cRaw(new Uint8Array(0)), 0xffffffff, m.crcBackend);
    assert.equal(m.crc32cRaw(new Uint8Array(0), 0x12345678), 0x12345678, m.crcBackend);
    assert.equal(m.crc32cRaw(new Uint8Array(10).subarray(10), 0), 0, m.crcBackend);
  }
});

test('chaining: crc(a+b) == crc(b, crc(a))', async () => {
  const data = randomBytes(70000, 7);
  for (const m of await availableBackends()) {
    const whole = m.crc32cRaw(data);
    for (const cut of [0, 1, 3, 8, 255, 4092, 24576, 30001, 65532, 69999, 70000]) {
      const chained = m.crc32cRaw(data.subarray(cut), m.crc32cRaw(data.subarray(0, cut)));
      assert.equal(chained, whole, `${m.crcBackend} cut ${cut}`);
    }
    // A register that reads as a negative int32 (from ~x in JS) works too.
    const reg = ~0x1234;
    assert.equal(m.crc32cRaw(data.subarray(0, 100), reg), crc32cRawJs(data.subarray(0, 100), reg >>> 0));
  }
});

/** The addon's raw crc32c when it is built and usable, bypassing the
 * self-test in crc.js, so a wrong result fails here with its length. */
function directAddon(): ((buf: Uint8Array, reg?: number) => number) | null {
  if (!existsSync(ADDON_FILE)) return null;
  const addon = createRequire(import.meta.url)(ADDON_FILE) as {
    hardware: boolean;
    crc32c(buf: Uint8Array, reg?: number): number;
  };
  return addon.hardware ? addon.crc32c : null;
}

test('every backend matches the JS reference on random lengths and offsets', async () => {
  const mods: { crcBackend: string; crc32cRaw(buf: Uint8Array, reg?: number): number }[] =
    await availableBackends();
  const direct = directAddon();
  if (direct) mods.push({ crcBackend: 'addon (direct)', crc32cRaw: direct });
  const lengths: number[] = [];
  for (let n = 0; n <= 300; n++) lengths.push(n);
  // Every lane tier of the native code (8192, 1024, 256 x3) and its edges.
  lengths.push(767, 768, 769, 3071, 3072, 3073, 4092, 4096, 24575, 24576, 24577);
  lengths.push(28429, 65532, 65536, 65536 + 13, 3 * 65536 + 5);
  const mem = randomBytes(3 * 65536 + 64, 0x5eed);
  for (const len of lengths) {
    for (const off of [0, 1, 3, 4, 7, 13]) {
      const view = mem.subarray(off, off + len);
      const reg = (len * 2654435761 + off) >>> 0;
      const wantSeeded = crc32cRawJs(view);
      const wantReg = crc32cRawJs(view, reg);
      for (const m of mods) {
        assert.equal(m.crc32cRaw(view), wantSeeded, `${m.crcBackend} len ${len} off ${off}`);
        assert.equal(m.crc32cRaw(view, reg), wantReg, `${m.crcBackend} len ${len} off ${off} reg`);
      }
    }
  }
});

test('views over a SharedArrayBuffer and non-Buffer Uint8Arrays work', async () => {
  const sab = new SharedArrayBuffer(65536 + 16);
  const shared = new Uint8Array(sab);
  shared.set(randomBytes(shared.length, 99));
  const view = shared.subarray(5, 5 + 65536);
  const want = crc32cRawJs(view);
  for (const m of await availableBackends()) {
    assert.equal(m.crc32cRaw(view), want, m.crcBackend);
    assert.equal(m.blockCrc(view), crc32cRawJs(view.subarray(4)), m.crcBackend);
  }
});

test('blockCrc covers bytes 4..end and blockCrcBatch agrees with it', async () => {
  for (const m of await availableBackends()) {
    for (const [size, count] of [[4096, 3], [65536, 2]] as const) {
      const blocks = randomBytes(size * count, size + count);
      const out = m.blockCrcBatch(blocks, size);
      assert.equal(out.length, count);
      for (let i = 0; i < count; i++) {
        const block = blocks.subarray(i * size, (i + 1) * size);
        assert.equal(out[i], m.blockCrc(block), `${m.crcBackend} ${size} #${i}`);
        assert.equal(out[i], crc32cRawJs(block.subarray(4)), `${m.crcBackend} ${size} #${i} js`);
        // The crc field itself is not covered.
        block[0] ^= 0xff;
        assert.equal(m.blockCrc(block), out[i]);
      }
      const big = new Uint32Array(count + 2).fill(7);
      assert.equal(m.blockCrcBatch(blocks, size, big), big);
      assert.deepEqual([...big.subarray(0, count)], [...out]);
      assert.equal(big[count], 7, 'slots past the last block are untouched');
    }
    assert.equal(m.blockCrc(new Uint8Array(4)), 0xffffffff, `${m.crcBackend} header only`);
    assert.throws(() => m.blockCrc(new Uint8Array(3)), `${m.crcBackend} shorter than the crc field`);
    assert.throws(() => m.blockCrcBatch(new Uint8Array(4097), 4096));
    assert.throws(() => m.blockCrcBatch(new Uint8Array(8192), 4096, new Uint32Array(1)));
  }
});

test('the module default backend is among the available ones', async () => {
  const names = (await availableBackends()).map((m) => m.crcBackend);
  assert.ok(names.includes(crcBackend));
  assert.equal(crc32cRaw(enc('123456789')), 0x1cf96d7c);
  assert.equal(blockCrc(enc('xxxx123456789')), 0x1cf96d7c);
});

test('an unknown or unavailable forced backend throws at load', async () => {
  await assert.rejects(loadWith('bogus'), /SCOUTFS_CRC_BACKEND=bogus/);
});

test('the native addon is in use when it was built', async (t) => {
  if (!existsSync(ADDON_FILE)) {
    t.skip(`${NATIVE_ADDON_PATH} not built (node-gyp step of scripts/setup.sh failed or was skipped)`);
    return;
  }
  const addon = createRequire(import.meta.url)(ADDON_FILE) as { hardware: boolean };
  if (!addon.hardware) {
    t.skip('the addon is built but this CPU lacks the SSE4.2 crc32 instruction');
    return;
  }
  const forced = process.env.SCOUTFS_CRC_BACKEND;
  if (forced && forced !== 'native') {
    t.skip(`SCOUTFS_CRC_BACKEND=${forced} forces another backend`);
    return;
  }
  assert.equal(crcBackend, 'native');
});

test('the native addon rejects bad arguments', async (t) => {
  if (!existsSync(ADDON_FILE)) {
    t.skip(`${NATIVE_ADDON_PATH} not built`);
    return;
  }
  const addon = createRequire(import.meta.url)(ADDON_FILE) as {
    hardware: boolean;
    crc32c(buf: unknown, reg?: unknown): number;
    blockCrc(buf: unknown): number;
    blockCrcBatch(buf: unknown, bs: unknown, out: unknown): void;
  };
  if (!addon.hardware) {
    assert.throws(() => addon.crc32c(new Uint8Array(1)), /SSE4\.2/);
    return;
  }
  assert.throws(() => addon.crc32c('123456789'), TypeError);
  assert.throws(() => addon.crc32c(new Uint16Array(4)), TypeError);
  assert.throws(() => addon.crc32c(new Uint8Array(4), 'x'), TypeError);
  assert.throws(() => addon.blockCrcBatch(new Uint8Array(8192), 4096, new Uint8Array(8)), TypeError);
  assert.throws(() => addon.blockCrc(new Uint8Array(3)), RangeError);
  assert.throws(() => addon.blockCrc([1, 2, 3, 4, 5]), TypeError);
  assert.throws(() => addon.blockCrcBatch(new Uint8Array(8192), 4, new Uint32Array(8)), RangeError);
  assert.equal(addon.crc32c(new Uint8ClampedArray(enc('123456789'))), 0x1cf96d7c);
});

test('a worker thread loads the same backend and gets the same crc', async () => {
  const data = randomBytes(65536, 3);
  const code = `
    const { parentPort, workerData } = require('node:worker_threads');
    import(workerData.url).then((m) => {
      parentPort.postMessage({ backend: m.crcBackend, crc: m.blockCrc(workerData.data) });
    });
  `;
  const w = new Worker(code, { eval: true, workerData: { url: CRC_URL.href, data } });
  const msg = await new Promise<{ backend: string; crc: number }>((resolve, reject) => {
    w.once('message', resolve);
    w.once('error', reject);
  });
  await w.terminate();
  assert.equal(msg.backend, crcBackend);
  assert.equal(msg.crc, crc32cRawJs(data.subarray(4)));
});
