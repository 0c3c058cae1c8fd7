/*
 * Goal: FaultDevice loses exactly the unflushed writes on crash (all of
 * them, or a seeded subset), tears multi-sector writes only on 4 KiB
 * boundaries, corrupts reads without touching the medium, fails the chosen
 * write, and does all of it identically for the same seed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FsError } from '../../../src/format/errors.js';
import { FaultDevice, sectorSpans } from '../../../src/runtime/faultdevice.js';
import { MemoryBlockDevice } from '../../../src/runtime/memdevice.js';
import { SeededRandom } from '../../../src/runtime/random.js';

const SIZE = 16n << 20n;

const fill = (n: number, v: number): Uint8Array => new Uint8Array(n).fill(v);

function setup(seed: bigint, opts = {}): { mem: MemoryBlockDevice; dev: FaultDevice } {
  const mem = new MemoryBlockDevice(SIZE, 'mem:fault');
  return { mem, dev: new FaultDevice(mem, new SeededRandom(seed), opts) };
}

test('crash loses exactly the unflushed writes', async () => {
  const { mem, dev } = setup(1n);
  await dev.write(0n, fill(65536, 1));
  await dev.write(65536n, fill(65536, 2));
  await dev.flush();
  await dev.write(65536n, fill(65536, 3)); // overwrite of a flushed block
  await dev.write(131072n, fill(4096, 4));
  // Reads see pending writes; the medium does not have them yet.
  assert.deepEqual(await dev.read(65536n, 65536), fill(65536, 3));
  assert.deepEqual(mem.readSync(65536n, 65536), fill(65536, 2));
  assert.equal(dev.pendingWrites, 2);
  const report = await dev.crash();
  assert.deepEqual(report, { lost: 2, landed: 0, torn: 0 });
  assert.deepEqual(await dev.read(0n, 65536), fill(65536, 1));
  assert.deepEqual(await dev.read(65536n, 65536), fill(65536, 2));
  assert.deepEqual(await dev.read(131072n, 4096), fill(4096, 0));
  assert.equal(dev.pendingWrites, 0);
  assert.equal(dev.counters.writesLost, 2);
  // Still usable after the "reboot".
  await dev.write(0n, fill(10, 9));
  await dev.flush();
  assert.deepEqual(mem.readSync(0n, 10), fill(10, 9));
});

test('reads overlay pending writes in order, partially overlapping', async () => {
  const { dev } = setup(2n);
  await dev.write(100n, fill(100, 1));
  await dev.write(150n, fill(10, 2));
  const r = await dev.read(90n, 120);
  assert.deepEqual(r.subarray(0, 10), fill(10, 0));
  assert.deepEqual(r.subarray(10, 60), fill(50, 1));
  assert.deepEqual(r.subarray(60, 70), fill(10, 2));
  assert.deepEqual(r.subarray(70, 110), fill(40, 1));
  assert.deepEqual(r.subarray(110), fill(10, 0));
});

/** A run of writes and a crash with random landing and tearing. */
async function randomRun(seed: bigint): Promise<{ bytes: Uint8Array; counters: object }> {
  const { mem, dev } = setup(seed, { crashLandProbability: 0.5, tearProbability: 0.5 });
  for (let i = 0; i < 40; i++) await dev.write(BigInt(i) * 65536n, fill(65536, i + 1));
  await dev.crash();
  return { bytes: mem.readSync(0n, 40 * 65536), counters: { ...dev.counters } };
}

test('the same seed gives the same crash; another seed does not', async () => {
  const a = await randomRun(1234n);
  const b = await randomRun(1234n);
  assert.deepEqual(a, b);
  const c = await randomRun(1235n);
  assert.notDeepEqual(a.bytes, c.bytes);
  const k = a.counters as { writesLost: number; writesLanded: number; writesTorn: number };
  assert.equal(k.writesLost + k.writesLanded + k.writesTorn, 40);
  assert.ok(k.writesLost > 0 && k.writesLanded > 0 && k.writesTorn > 0, JSON.stringify(k));
});

test('a torn write lands a proper subset of whole 4 KiB sectors', async () => {
  for (let seed = 1n; seed <= 20n; seed++) {
    const { mem, dev } = setup(seed, { crashLandProbability: 1, tearProbability: 1 });
    await dev.write(65536n, fill(65536, 7));
    assert.deepEqual(await dev.crash(), { lost: 0, landed: 0, torn: 1 });
    const got = mem.readSync(65536n, 65536);
    let landed = 0;
    for (let s = 0; s < 16; s++) {
      const sector = got.subarray(s * 4096, (s + 1) * 4096);
      const v = sector[0]!;
      assert.ok(v === 0 || v === 7);
      assert.ok(sector.every((x) => x === v), `sector ${s} is all old or all new`);
      if (v === 7) landed++;
    }
    assert.ok(landed > 0 && landed < 16, `seed ${seed}: ${landed} sectors landed`);
  }
  // Single-sector writes never tear.
  const { dev } = setup(3n, { crashLandProbability: 1, tearProbability: 1 });
  await dev.write(0n, fill(4096, 1));
  assert.deepEqual(await dev.crash(), { lost: 0, landed: 1, torn: 0 });
});

test('sectorSpans splits on absolute 4 KiB boundaries', () => {
  assert.deepEqual(sectorSpans(4000n, 5000), [{ at: 0, len: 96 }, { at: 96, len: 4096 }, { at: 4192, len: 808 }]);
  assert.deepEqual(sectorSpans(8192n, 4096), [{ at: 0, len: 4096 }]);
});

test('read corruption: one-shot at an offset, transient, counted', async () => {
  const { dev } = setup(5n);
  await dev.write(0n, fill(8192, 0x55));
  await dev.flush();
  dev.corruptNextRead(5000n);
  const miss = await dev.read(0n, 4096); // does not cover 5000: untouched
  assert.deepEqual(miss, fill(4096, 0x55));
  const bad = await dev.read(4096n, 4096);
  assert.notEqual(bad[5000 - 4096], 0x55);
  assert.equal(bad.filter((x) => x !== 0x55).length, 1, 'exactly one byte flipped');
  assert.deepEqual(await dev.read(4096n, 4096), fill(4096, 0x55), 're-read is good');
  assert.equal(dev.counters.readsCorrupted, 1);
});

test('read corruption by probability', async () => {
  const { dev } = setup(6n, { readCorruptProbability: 1 });
  const r = await dev.read(0n, 100);
  assert.equal(r.filter((x) => x !== 0).length, 1);
  assert.equal(dev.counters.readsCorrupted, 1);
});

test('injected write failures: the chosen write, then sticky', async () => {
  const { dev } = setup(7n, { failWrite: { at: 2, code: 'ENOSPC' } });
  await dev.write(0n, fill(1, 1));
  await assert.rejects(dev.write(1n, fill(1, 2)), (e: unknown) => e instanceof FsError && e.code === 'ENOSPC');
  await dev.write(2n, fill(1, 3));
  assert.equal(dev.pendingWrites, 2, 'the failed write was not recorded');
  dev.failWriteAt(4, 'EIO', true);
  await assert.rejects(dev.write(3n, fill(1, 4)), (e: unknown) => e instanceof FsError && e.code === 'EIO');
  await assert.rejects(dev.write(4n, fill(1, 5)), /EIO/);
  assert.equal(dev.counters.writesFailed, 3);
  await assert.rejects(dev.write(SIZE, fill(1, 1)), /past the end/);
});
