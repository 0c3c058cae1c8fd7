/*
 * Goal: ForestWriter.writeItems, the batch the commit worker writes a
 * transaction's dirty items with (src/forest/writer.ts), leaves exactly
 * what ForestWriter.writeItem on each item, in order, leaves: the same log
 * btree items (key, value, seq, flags; deletions stored as DELETION items
 * with empty values; xattr totl deltas summed with the item already in the
 * log tree), the same max_item_seq and the same bloom bits.  And that a
 * batch written again whole (what the commit worker does after a batch
 * failed part way) changes nothing: a delta never counts twice.
 *
 * Two mounts of one in-memory volume (test/unit/trans/env.ts) give two
 * independent log trees; the same random batches go into one through
 * writeItem and into the other through writeItems, across two
 * transactions so that deltas meet items committed earlier.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { btreeIterate } from '../../../src/btree/btree.js';
import { bloomTotalSet } from '../../../src/format/bloom.js';
import { ZONE } from '../../../src/format/items.js';
import { key, compareKeys, ONES_KEY, ZERO_KEY, type Key } from '../../../src/format/key.js';
import { setU64 } from '../../../src/format/layout.js';
import type { ForestWriteItem, ForestWriter } from '../../../src/forest/writer.js';
import { makeEnv, type Mount } from '../trans/env.js';

/** A small deterministic generator (xorshift32). */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 0x100000000;
  };
}

function delta(total: bigint, count: bigint): Uint8Array {
  const v = new Uint8Array(16);
  setU64(v, 0, BigInt.asUintN(64, total));
  setU64(v, 8, BigInt.asUintN(64, count));
  return v;
}

/** A sorted batch: fs items over several inode groups (values, deletions) and totl deltas. */
function batch(r: () => number, seq: bigint, n: number): ForestWriteItem[] {
  const byKey = new Map<string, ForestWriteItem>();
  for (let i = 0; i < n; i++) {
    let k: Key;
    let it: ForestWriteItem;
    if (r() < 0.2) {
      k = key(ZONE.XATTR_TOTL, BigInt(Math.floor(r() * 4)), 0, BigInt(Math.floor(r() * 4)), 0n);
      it = { key: k, val: delta(BigInt(Math.floor(r() * 1000)) - 300n, 1n), seq, deletion: false, delta: true };
    } else {
      const ino = 1024n + BigInt(Math.floor(r() * 5000));
      k = key(ZONE.FS, ino, 6, BigInt(Math.floor(r() * 8)));
      const deletion = r() < 0.25;
      const val = deletion ? new Uint8Array(0) : new Uint8Array(1 + Math.floor(r() * 300)).fill(Math.floor(r() * 256));
      it = { key: k, val, seq: seq + BigInt(Math.floor(r() * 3)), deletion, delta: false };
    }
    byKey.set(JSON.stringify(k, (_, v: unknown) => (typeof v === 'bigint' ? v.toString() : v)), it);
  }
  return [...byKey.values()].sort((a, b) => compareKeys(a.key, b.key));
}

interface Dump {
  items: string[];
  maxSeq: bigint;
  bloomTotal: bigint | null;
}

async function dump(m: Mount, fw: ForestWriter): Promise<Dump> {
  const items: string[] = [];
  await btreeIterate(fw.alloc, fw.lt.item_root, ZERO_KEY, ONES_KEY, (it) => {
    items.push(`${it.key.zone}.${it.key.first}.${it.key.type}.${it.key.second}.${it.key.third}.${it.key.fourth} ` +
      `seq ${it.seq} flags ${it.flags} ${Buffer.from(it.val).toString('hex')}`);
  });
  const ref = fw.lt.bloom_ref;
  const bloomTotal = ref.blkno === 0n ? null : bloomTotalSet(await m.images.read(ref, 'bloom'));
  return { items, maxSeq: fw.lt.max_item_seq, bloomTotal };
}

test('writeItems leaves what writeItem per item leaves, and writing a batch twice changes nothing', async () => {
  const env = await makeEnv(21n);
  try {
    const one = env.mount(1n);
    const all = env.mount(2n);
    await one.trans.openFirst();
    await all.trans.openFirst();
    const r = rng(7);
    for (let round = 0; round < 2; round++) {
      const a = one.trans.forest!;
      const b = all.trans.forest!;
      const items = batch(r, a.transSeq > b.transSeq ? a.transSeq : b.transSeq, 600);
      assert.ok(items.some((it) => it.delta) && items.some((it) => it.deletion));
      for (const it of items) await a.writeItem(it);
      await b.writeItems(items);
      const da = await dump(one, a);
      assert.deepEqual(await dump(all, b), da, `round ${round}: batch equals item by item`);
      // The commit worker's retry after a failure part way: the whole batch again.
      await b.writeItems(items);
      assert.deepEqual(await dump(all, b), da, `round ${round}: a batch written twice`);
      assert.equal(b.counters.deltasCombined, a.counters.deltasCombined);
      // Commit both (nothing dirty in the item caches: only the log trees changed).
      await one.trans.sync();
      await all.trans.sync();
    }
    assert.ok(one.trans.forest!.counters.deltasCombined === 0, 'a new transaction starts its own counters');
  } finally {
    env.close();
  }
});

test('writeItems refuses unsorted batches', async () => {
  const env = await makeEnv(22n);
  try {
    const m = env.mount(1n);
    await m.trans.openFirst();
    const fw = m.trans.forest!;
    const seq = fw.transSeq;
    const it = (n: bigint): ForestWriteItem => ({ key: key(ZONE.FS, 1024n, 6, n), val: new Uint8Array([1]), seq, deletion: false, delta: false });
    await assert.rejects(fw.writeItems([it(2n), it(1n)]), /strictly increasing/);
    await assert.rejects(fw.writeItems([it(1n), it(1n)]), /strictly increasing/);
  } finally {
    env.close();
  }
});
