/*
 * Goal: for each block type one flipped byte makes `scoutfs print` report
 * that block's blkno and the failed check, and printing goes on with the
 * rest of the volume.  The image gets a logs_root item whose bloom block and
 * two-level srch file (parent + leaf) exist, so every block type is present.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { scoutfs, TempDir, MIB, rw } from './util.js';
import { decodeSuper, encodeSuper } from '../../src/format/super.js';
import { writeHeader, sealBlock } from '../../src/format/block.js';
import { setU32, setU64 } from '../../src/format/layout.js';
import { MAGIC } from '../../src/format/constants.js';
import { encodeLogTrees } from '../../src/format/logtrees.js';
import { logTreesKey } from '../../src/format/items.js';
import { encodeSrchEntry, writeSrchEntry, ZERO_SRCH_ENTRY } from '../../src/format/srch.js';
import { bloomIndexes } from '../../src/format/hash.js';
import { key } from '../../src/format/key.js';
import { buildMkfsLeaf } from '../../src/mkfs/leaf.js';

let tmp: TempDir;
let pristine: string;
let fsid: bigint;
const LOGS_LEAF = 1500n, BLOOM = 1501n, SRCH_PARENT = 1502n, SRCH_LEAF = 1503n;

const lg = (blkno: bigint) => blkno * 65536n;

before(async () => {
  tmp = new TempDir();
  pristine = tmp.image('meta', 96 * MIB);
  const data = tmp.image('data', 8 * MIB);
  const r = await scoutfs('mkfs', '-A', '-Q', '0,127.0.0.1,7000', pristine, data);
  assert.equal(r.code, 0, r.err);
  const sb = decodeSuper(rw(pristine, 65536n, 4096));
  fsid = sb.hdr.fsid;

  // A bloom block with the bits of inode lock 0 set.
  const bloom = new Uint8Array(65536);
  writeHeader(bloom, { magic: MAGIC.bloom, fsid, seq: 7n, blkno: BLOOM });
  const bits = bloomIndexes(key(4, 0n, 0));
  for (const n of bits) bloom[40 + (n >>> 3)] = bloom[40 + (n >>> 3)]! | (1 << (n & 7));
  setU64(bloom, 32, 3n);
  sealBlock(bloom);
  rw(pristine, lg(BLOOM), 65536, (b) => b.set(bloom));

  // A srch leaf with two entries under a parent (height 2).
  const e1 = { hash: 0x1234n, ino: 1025n, id: 0n };
  const e2 = { hash: 0x1234n, ino: 1024n, id: 3n };
  const leaf = new Uint8Array(65536);
  writeHeader(leaf, { magic: MAGIC.srchBlock, fsid, seq: 9n, blkno: SRCH_LEAF });
  const c1 = encodeSrchEntry(ZERO_SRCH_ENTRY, e1);
  const c2 = encodeSrchEntry(e1, e2);
  leaf.set(c1, 112);
  leaf.set(c2, 112 + c1.length);
  writeSrchEntry(leaf, 32, e2);
  writeSrchEntry(leaf, 56, e1);
  writeSrchEntry(leaf, 80, e2);
  setU32(leaf, 104, 2);
  setU32(leaf, 108, c1.length + c2.length);
  sealBlock(leaf);
  rw(pristine, lg(SRCH_LEAF), 65536, (b) => b.set(leaf));
  const parent = new Uint8Array(65536);
  writeHeader(parent, { magic: MAGIC.srchParent, fsid, seq: 8n, blkno: SRCH_PARENT });
  setU64(parent, 32, SRCH_LEAF);
  setU64(parent, 40, 9n);
  sealBlock(parent);
  rw(pristine, lg(SRCH_PARENT), 65536, (b) => b.set(parent));

  const zeroList = { ref: { blkno: 0n, seq: 0n }, total_nr: 0n, first_nr: 0, flags: 0 };
  const zeroAlloc = { total_len: 0n, flags: 0, root: { ref: { blkno: 0n, seq: 0n }, height: 0 } };
  const lt = encodeLogTrees({
    meta_avail: zeroList, meta_freed: zeroList, item_root: { ref: { blkno: 0n, seq: 0n }, height: 0 },
    bloom_ref: { blkno: BLOOM, seq: 7n }, data_avail: zeroAlloc, data_freed: zeroAlloc,
    srch_file: { first: e2, last: e1, ref: { blkno: SRCH_PARENT, seq: 8n }, blocks: 1n, entries: 2n, height: 2 },
    data_alloc_zone_blocks: 0n, data_alloc_zones: new Uint8Array(128), inode_count_delta: 0n,
    get_trans_seq: 2n, commit_trans_seq: 2n, max_item_seq: 2n, finalize_seq: 0n, rid: 0xabcn, nr: 1n, flags: 0n,
  });
  const logs = buildMkfsLeaf(fsid, LOGS_LEAF, 5n, [{ key: logTreesKey(0xabcn, 1n), seq: 0n, val: lt }]);
  rw(pristine, lg(LOGS_LEAF), 65536, (b) => b.set(logs));
  sb.logs_root = { ref: { blkno: LOGS_LEAF, seq: 5n }, height: 1 };
  rw(pristine, 65536n, 4096, (b) => b.set(encodeSuper(sb)));
});
after(() => tmp.cleanup());

function variant(name: string): string {
  const p = join(tmp.path, name);
  copyFileSync(pristine, p);
  return p;
}

test('the fixture prints clean, with bloom and srch blocks decoded', async () => {
  const r = await scoutfs('print', pristine);
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /bloom blkno 1501 .* total_set 3/);
  assert.match(r.out, /srch parent blkno 1502/);
  assert.match(r.out, /srch block blkno 1503 .* entry_nr 2/);
  assert.match(r.out, /entry 1234\.1025\.0\n +entry 1234\.1024\.3/);
  assert.match(r.out, /log_trees rid abc nr 1/);
});

const flips: [string, bigint, number, number][] = [
  // name, byte offset of the block, block size, offset inside the block to flip
  ['super', 65536n, 4096, 100],
  ['quorum block (slot 3)', 20n * 4096n, 4096, 200],
  ['btree leaf (fs_root)', lg(2n), 65536, 62400],
  ['alloc list block', lg(3n), 65536, 1000],
  ['btree leaf (logs_root)', lg(LOGS_LEAF), 65536, 62000],
  ['bloom block', lg(BLOOM), 65536, 5000],
  ['srch parent block', lg(SRCH_PARENT), 65536, 40000],
  ['srch leaf block', lg(SRCH_LEAF), 65536, 113],
  ['btree leaf (meta_alloc[1])', lg(1030n), 65536, 60],
];

for (const [name, off, size, at] of flips) {
  test(`one flipped byte in the ${name} is reported with its blkno and the crc check`, async () => {
    const p = variant(`flip-${off}`);
    rw(p, off, size, (b) => { b[at] = b[at]! ^ 0x40; });
    const blkno = size === 4096 ? off / 4096n : off / 65536n;
    const r = await scoutfs('print', p);
    assert.equal(r.code, 1, 'a problem makes print exit 1');
    assert.match(r.err, new RegExp(`error: blkno ${blkno} \\(.*\\): crc: .*stored crc 0x[0-9a-f]+ != computed`));
    assert.match(r.out, /fs_root btree root/, 'printing goes on to the last structure');
  });
}

const headerChecks: [string, (b: Uint8Array) => void, RegExp][] = [
  ['magic', (b) => setU32(b, 4, MAGIC.bloom), /magic: btree block: magic 0x31995604 != btree/],
  ['fsid', (b) => setU64(b, 8, 42n), /fsid: btree block: fsid 2a != /],
  ['seq', (b) => setU64(b, 16, 99n), /seq: btree block: seq 99 != ref seq 1/],
  ['blkno', (b) => setU64(b, 24, 77n), /blkno: btree block: header blkno 77 != ref blkno 2/],
];
for (const [check, mutate, re] of headerChecks) {
  test(`a resealed fs_root leaf with a wrong ${check} fails the ${check} check`, async () => {
    const p = variant(`hdr-${check}`);
    rw(p, lg(2n), 65536, (b) => { mutate(b); sealBlock(b); });
    const r = await scoutfs('print', p);
    assert.equal(r.code, 1);
    assert.match(r.err, new RegExp(`error: blkno 2 \\(fs_root\\): ${re.source}`));
  });
}

test('a ref past the end of the device is reported and print goes on', async () => {
  const p = variant('past-end');
  const sb = decodeSuper(rw(p, 65536n, 4096));
  sb.mounted_clients = { ref: { blkno: 1n << 40n, seq: 1n }, height: 1 };
  rw(p, 65536n, 4096, (b) => b.set(encodeSuper(sb)));
  const r = await scoutfs('print', p);
  assert.equal(r.code, 1);
  assert.match(r.err, /blkno 1099511627776 \(mounted_clients\): reference: block lies past the end/);
  assert.match(r.out, /item 4\.1\.1\.0\.0\.0/);
});

test('a broken AVL link in a leaf is reported, not followed forever', async () => {
  const p = variant('avl');
  rw(p, lg(2n), 65536, (b) => { b[48 + 2] = 72; b[48 + 3] = 0; sealBlock(b); }); // item 0's left -> itself
  const r = await scoutfs('print', p);
  assert.equal(r.code, 1);
  assert.match(r.err, /blkno 2 \(fs_root\): structure: btree items: avl cycle/);
});

test('a non-scoutfs device is refused with a clear message', async () => {
  const p = tmp.image('zeros', 4 * MIB);
  const r = await scoutfs('print', p);
  assert.equal(r.code, 1);
  assert.match(r.err, /not a scoutfs device/);
});
