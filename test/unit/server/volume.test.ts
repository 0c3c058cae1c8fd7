/*
 * Goal: the server's commit is atomic and its allocators never lose or
 * double-own a block.
 *   - a long random btree workload on fs_root with many commits: after
 *     every commit fsck is clean, and after reopening every committed item
 *     reads back; print shows no complaint at the end;
 *   - crash tests over many seeds: power is lost at a random write (later
 *     writes never reach the disk, unflushed ones land or not, multi-sector
 *     ones may tear); the reopened volume is the state of the last commit
 *     or of the one in flight, fsck is clean;
 *   - allocating past the end of the metadata device gives ENOSPC, the
 *     transaction is dropped, and the committed state is intact.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkfsMemory } from '../../../src/mkfs/memory.js';
import { MemoryBlockDevice } from '../../../src/runtime/memdevice.js';
import { FaultDevice } from '../../../src/runtime/faultdevice.js';
import { SeededRandom } from '../../../src/runtime/random.js';
import { ServerVolume } from '../../../src/server/volume.js';
import { btreeForce, btreeDelete, btreeLookup, btreeIterate } from '../../../src/btree/btree.js';
import { key, compareKeys, type Key } from '../../../src/format/key.js';
import { fsck } from '../../../src/fsck/fsck.js';
import { VolumeWalker } from '../../../src/print/walk.js';
import { FsError } from '../../../src/format/errors.js';
import { PowerCutDevice } from './powercut.js';
import type { BlockDevice } from '../../../src/runtime/device.js';

const MIB = 1n << 20n;

function mkfsMem(metaBytes = 80n * MIB): MemoryBlockDevice {
  return mkfsMemory(metaBytes, 16n * MIB).meta;
}

const OPTS = { fillLo: 64, fillTarget: 256, reserved: () => 64n, cacheSlots: 256 };

// Test keys live in the FS zone of inodes >= 1024 so they never collide with the root inode's items.
const k = (n: number): Key => key(4, 1024n + BigInt(n >> 4), 2, BigInt(n & 15));
const val = (n: number, v: number): Uint8Array => {
  const b = new Uint8Array(8 + ((n * 7 + v) % 200));
  new DataView(b.buffer).setUint32(0, n, true);
  new DataView(b.buffer).setUint32(4, v, true);
  return b;
};

async function assertClean(dev: BlockDevice, what: string): Promise<void> {
  const r = await fsck(dev, null);
  const errs = r.problems.filter((p) => p.check !== 'warning');
  assert.deepEqual(errs, [], `${what}: fsck problems`);
}

async function contents(vol: ServerVolume): Promise<Map<string, string>> {
  const m = new Map<string, string>();
  await btreeIterate(vol.store, vol.sb.fs_root, key(4, 1024n, 0), key(4, 1n << 40n, 0), (it) => {
    m.set(JSON.stringify([String(it.key.first), String(it.key.second)]), Buffer.from(it.val).toString('hex'));
    return true;
  });
  return m;
}

/** One random set or delete on fs_root, mirrored in the model. */
async function randomOp(vol: ServerVolume, rnd: SeededRandom, model: Map<string, string>, keys: number, pDelete: number): Promise<void> {
  const n = rnd.int(keys);
  if (rnd.float() < pDelete && model.has(modelKey(n))) {
    await btreeDelete(vol.store, vol.sb.fs_root, k(n));
    model.delete(modelKey(n));
  } else {
    const v = val(n, rnd.int(1000));
    await btreeForce(vol.store, vol.sb.fs_root, k(n), v);
    model.set(modelKey(n), Buffer.from(v).toString('hex'));
  }
}

const modelKey = (n: number) => JSON.stringify([String(1024n + BigInt(n >> 4)), String(BigInt(n & 15))]);

test('a long random workload with many commits stays clean and reads back', async () => {
  const meta = mkfsMem();
  const rnd = new SeededRandom(1234n);
  let vol = await ServerVolume.open(meta, { ...OPTS, random: rnd.fork('vol') });
  const model = new Map<string, string>();
  for (let c = 0; c < 40; c++) {
    for (let i = 0; i < 300; i++) await randomOp(vol, rnd, model, 4000, 0.25);
    await vol.commit();
    if (c % 8 === 7) {
      await assertClean(meta, `commit ${c}`);
      vol.close();
      vol = await ServerVolume.open(meta, { ...OPTS, random: rnd.fork(`vol${c}`) });
      assert.deepEqual(await contents(vol), model, `contents after reopen at commit ${c}`);
    }
  }
  await btreeForce(vol.store, vol.sb.fs_root, k(1), val(1, 2));
  await vol.commit();
  assert.equal(vol.counters.commits, 1);
  vol.close();
  await assertClean(meta, 'end');
  const problems: string[] = [];
  const w = await new VolumeWalker(meta, {}, () => undefined).walk();
  for (const p of w.problems) if (p.check !== 'warning') problems.push(`${p.blkno} ${p.owner} ${p.check} ${p.detail}`);
  assert.deepEqual(problems, [], 'print complains');
  assert.ok(w.blocks > 20, `walked ${w.blocks} blocks`);
});

test('crash at a random write: the old or the new state, fsck clean', async () => {
  const seeds = Number(process.env.SCOUTFS_CRASH_SEEDS ?? 40);
  let sawNew = 0;
  let sawOld = 0;
  let cuts = 0;
  for (let seed = 1; seed <= seeds; seed++) {
    const medium = mkfsMem();
    const rnd = new SeededRandom(BigInt(seed));
    const cutAt = rnd.float() < 0.5 ? { flushes: 1 + rnd.int(24) } : { writes: 1 + rnd.int(200) };
    const fdev = new PowerCutDevice(medium, rnd.fork('fault'), cutAt);
    let vol = await ServerVolume.open(fdev, { ...OPTS, random: rnd.fork('vol') });
    const committed = new Map<string, string>();
    const model = new Map<string, string>();
    let inFlight: Map<string, string> | null = null;
    try {
      for (let c = 0; c < 12; c++) {
        for (let i = 0; i < 150; i++) await randomOp(vol, rnd, model, 3000, 0.2);
        inFlight = new Map(model);
        await vol.commit();
        for (const [a, b] of [[committed, model]] as const) { a.clear(); for (const [x, y] of b) a.set(x, y); }
        inFlight = null;
      }
    } catch (e) {
      assert.ok(e instanceof FsError && e.code === 'EIO', `seed ${seed}: unexpected ${(e as Error).stack}`);
    }
    vol.close();
    if (fdev.cut) cuts++;
    await fdev.crash({ crashLandProbability: 0.5, tearProbability: 0.5 });
    await assertClean(medium, `seed ${seed}`);
    vol = await ServerVolume.open(medium, { ...OPTS, random: rnd.fork('reopen') });
    const got = await contents(vol);
    const same = (m: Map<string, string>) => m.size === got.size && [...m].every(([x, y]) => got.get(x) === y);
    if (same(committed)) sawOld++;
    else if (inFlight && same(inFlight)) sawNew++;
    else assert.fail(`seed ${seed}: contents are neither the last committed state nor the one in flight`);
    // The reopened volume keeps working.
    await btreeForce(vol.store, vol.sb.fs_root, k(1), val(1, 1));
    await vol.commit();
    vol.close();
    await assertClean(medium, `seed ${seed} after recovery`);
  }
  assert.ok(cuts >= seeds * 0.7, `the power was cut in ${cuts} of ${seeds} runs`);
  assert.ok(sawOld > 0, 'some crashes kept the old state');
  assert.ok(sawNew > 0 || seeds < 10, 'some crashes kept the new state');
});

test('allocating past the end of the metadata device gives ENOSPC and loses nothing committed', async () => {
  const meta = mkfsMem(67n * MIB); // 1072 blocks: a few dozen free after mkfs
  const rnd = new SeededRandom(99n);
  let vol = await ServerVolume.open(meta, { ...OPTS, random: rnd.fork('vol') });
  const model = new Map<string, string>();
  let enospc = 0;
  let n = 0;
  outer: for (let c = 0; c < 200; c++) {
    const pending = new Map(model);
    try {
      for (let i = 0; i < 200; i++, n++) {
        const v = val(n, 5).subarray(0, 800);
        await btreeForce(vol.store, vol.sb.fs_root, k(n), v);
        pending.set(modelKey(n), Buffer.from(v).toString('hex'));
      }
      await vol.commit();
      for (const [x, y] of pending) model.set(x, y);
    } catch (e) {
      assert.ok(e instanceof FsError && e.code === 'ENOSPC', `unexpected ${(e as Error).stack}`);
      enospc++;
      break outer;
    }
  }
  assert.equal(enospc, 1, 'the device filled up');
  vol.close();
  await assertClean(meta, 'after ENOSPC');
  vol = await ServerVolume.open(meta, { ...OPTS, random: rnd.fork('again') });
  assert.deepEqual(await contents(vol), model);
  // Deleting frees space for later transactions.
  for (const x of [...model.keys()].slice(0, 20)) {
    const [first, second] = JSON.parse(x) as [string, string];
    await btreeDelete(vol.store, vol.sb.fs_root, key(4, BigInt(first), 2, BigInt(second)));
  }
  await vol.commit();
  vol.close();
  await assertClean(meta, 'after deletes');
  void compareKeys;
  void btreeLookup;
});

test('a transient bad read of the super is retried once; a bad super on disk is refused', async () => {
  const meta = mkfsMem();
  const fdev = new FaultDevice(meta, new SeededRandom(3n));
  fdev.corruptNextRead(65536n);
  const vol = await ServerVolume.open(fdev, { ...OPTS, random: new SeededRandom(4n) });
  vol.close();
  assert.equal(fdev.counters.readsCorrupted, 1, 'the first read of the super was corrupted');
  const b = await meta.read(65536n, 4096);
  b[200] = b[200]! ^ 1;
  await meta.write(65536n, b);
  await assert.rejects(ServerVolume.open(meta, { ...OPTS, random: new SeededRandom(5n) }), /blkno 16: crc check failed/);
});
