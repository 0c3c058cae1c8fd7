/*
 * Goal: `scoutfs fsck` passes a fresh mkfs volume and catches each kind of
 * metadata accounting error: a leaked block, a block both listed and free,
 * a corrupt block, swapped devices.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { scoutfs, TempDir, MIB, rw } from './util.js';
import { decodeSuper, encodeSuper } from '../../src/format/super.js';
import { sealBlock } from '../../src/format/block.js';
import { setU32, setU64 } from '../../src/format/layout.js';
import { freeExtentKeys } from '../../src/format/items.js';
import { buildMkfsLeaf } from '../../src/mkfs/leaf.js';

let tmp: TempDir;
let meta: string;
let data: string;

before(async () => {
  tmp = new TempDir();
  meta = tmp.image('meta', 96 * MIB);
  data = tmp.image('data', 8 * MIB);
  const r = await scoutfs('mkfs', '-A', '-Q', '0,127.0.0.1,7000', meta, data);
  assert.equal(r.code, 0, r.err);
});
after(() => tmp.cleanup());

function variant(name: string): string {
  const p = join(tmp.path, name);
  copyFileSync(meta, p);
  return p;
}

test('a fresh volume is clean and every block is accounted for', async () => {
  const r = await scoutfs('fsck', meta, data);
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /1536 total: 5 referenced, 1024 listed, 505 free; 0 problem\(s\)/);
});

test('a leaked metadata block is found', async () => {
  const p = variant('leak');
  const sb = decodeSuper(rw(p, 65536n, 4096));
  // Shrink meta_alloc[1]'s extent by one block at its end without listing it anywhere.
  const len = sb.meta_alloc[1].total_len - 1n;
  const start = 1535n - sb.meta_alloc[1].total_len + 1n;
  const k = freeExtentKeys(start, len);
  const leaf = buildMkfsLeaf(sb.hdr.fsid, 1030n, 1n, [{ key: k.blkno, seq: 1n, val: new Uint8Array() }, { key: k.order, seq: 1n, val: new Uint8Array() }]);
  rw(p, 1030n * 65536n, 65536, (b) => b.set(leaf));
  sb.meta_alloc[1].total_len = len;
  rw(p, 65536n, 4096, (b) => b.set(encodeSuper(sb)));
  const r = await scoutfs('fsck', p);
  assert.equal(r.code, 1);
  assert.match(r.err, /1 metadata blocks are neither referenced, free nor listed \(leaked\): 1535/);
});

test('a block both listed and free is found', async () => {
  const p = variant('double');
  rw(p, 3n * 65536n, 65536, (b) => { setU64(b, 56 + 8 * 1023, 1400n); sealBlock(b); });
  const r = await scoutfs('fsck', p);
  assert.equal(r.code, 1);
  assert.match(r.err, /blkno 1400 \(meta_alloc\[\d\]\): accounting: block is both listed and free/);
  assert.match(r.err, /1027 \(leaked\)|: 1027$/m);
});

test('list accounting: a head whose total_nr disagrees with its blocks', async () => {
  const p = variant('listnr');
  rw(p, 3n * 65536n, 65536, (b) => { setU32(b, 52, 1000); sealBlock(b); });
  const r = await scoutfs('fsck', p);
  assert.equal(r.code, 1);
  assert.match(r.err, /server_meta_avail\[0\]\): accounting: list head first_nr 1024 != first block nr 1000/);
});

test('swapped devices are reported', async () => {
  const r = await scoutfs('fsck', data, meta);
  assert.equal(r.code, 1);
  assert.match(r.err, /META_BDEV/);
});
