/*
 * Goal: with fixed fsid, uuid and time our mkfs writes the fields of
 * FORMAT.md's worked examples (s7.8 fs_root leaf, s13 allocator extents
 * for 2 GiB meta / 8 GiB data, the summary of s13), checked field by field
 * so a failure names the field.  This pins our reading of the document;
 * what pins our mkfs to the real scoutfs mkfs, byte for byte, is
 * reference.test.ts (images made by the reference mkfs).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { planMkfs, type MkfsPlan } from '../../../src/mkfs/mkfs.js';
import { getU16, getU32, getU64 } from '../../../src/format/layout.js';
import { blockCrc } from '../../../src/format/crc.js';
import { decodeSuper } from '../../../src/format/super.js';
import { readItem, walkItems } from '../../../src/format/btree.js';
import { decodeInode } from '../../../src/format/items.js';
import { formatKey } from '../../../src/format/key.js';

const GIB = 1n << 30n;

const FIXED = {
  fsid: 0x1234abcd5678ef90n,
  uuid: Uint8Array.from(Buffer.from('8c1d2e3f40514a6b9c7d8e9fa0b1c2d3', 'hex')),
  now: { sec: 1700000000n, nsec: 123456000 },
};

function plan(): MkfsPlan {
  return planMkfs({
    metaPath: '/dev/meta', dataPath: '/dev/data', allowSmall: true,
    slots: [{ nr: 0, addr: 0x7f000001, port: 7000 }, { nr: 1, addr: 0x7f000001, port: 7001 }],
  }, 2n * GIB, 8n * GIB, FIXED);
}

function block(p: MkfsPlan, what: string): Uint8Array {
  const w = p.writes.find((x) => x.what === what);
  assert.ok(w, what);
  return w.bytes;
}

test('the fs_root leaf is FORMAT.md s7.8 worked example', () => {
  const b = block(plan(), 'fs_root leaf');
  assert.equal(b.length, 65536);
  assert.equal(getU32(b, 0), blockCrc(b), 'crc covers bytes 4..65535');
  assert.equal(getU32(b, 4), 0xe597f96d);
  assert.equal(getU64(b, 8), FIXED.fsid);
  assert.equal(getU64(b, 16), 1n, 'seq 1');
  assert.equal(getU64(b, 24), 2n, 'blkno 2');
  assert.equal(getU16(b, 32), 72, 'item_root');
  assert.equal(getU16(b, 34), 2, 'nr_items');
  assert.equal(getU16(b, 36), 272, 'total_item_bytes');
  assert.equal(getU16(b, 38), 62192, 'mid_free_len');
  assert.equal(b[40], 0, 'level');
  const i0 = readItem(b, 48);
  assert.deepEqual([i0.parent, i0.left, i0.right, i0.height], [72, 0, 0, 1]);
  assert.equal(formatKey(i0.key), '1.0.1.0.1.0');
  assert.deepEqual([i0.seq, i0.val_off, i0.val_len, i0.flags], [1n, 0, 0, 0]);
  const i1 = readItem(b, 104);
  assert.deepEqual([i1.parent, i1.left, i1.right, i1.height], [0, 16, 0, 0]);
  assert.equal(formatKey(i1.key), '4.1.1.0.0.0');
  assert.deepEqual([i1.seq, i1.val_off, i1.val_len], [1n, 62352, 160]);
  assert.equal(getU16(b, 62512 + 2 * 206), 48, 'hash bucket 206');
  assert.equal(getU16(b, 62512 + 2 * 873), 104, 'hash bucket 873');
  let used = 0;
  for (let i = 0; i < 1512; i++) if (getU16(b, 62512 + 2 * i)) used++;
  assert.equal(used, 2);
  const ino = decodeInode(b.subarray(62352, 62352 + 160));
  assert.equal(ino.mode, 0o040755);
  assert.equal(ino.nlink, 2);
  assert.equal(ino.next_readdir_pos, 2n);
  assert.deepEqual(ino.atime, FIXED.now);
  assert.deepEqual(ino.mtime, FIXED.now);
  assert.deepEqual(ino.ctime, FIXED.now);
  assert.deepEqual(ino.crtime, { sec: 0n, nsec: 0 });
  assert.deepEqual(walkItems(b), { ok: true, offs: [48, 104] });
});

test('allocators, alloc list and super match FORMAT.md s13 for 2 GiB / 8 GiB', () => {
  const p = plan();
  const sb = decodeSuper(block(p, 'meta device super'));
  const dsb = decodeSuper(block(p, 'data device super'));
  assert.equal(sb.total_meta_blocks, 32768n);
  assert.equal(sb.total_data_blocks, 2097152n);
  assert.deepEqual(sb.meta_alloc.map((a) => [a.total_len, a.root.ref.blkno, a.root.height]), [[15869n, 1029n, 1], [15868n, 1030n, 1]]);
  assert.deepEqual([sb.data_alloc.total_len, sb.data_alloc.root.ref.blkno], [2097088n, 1028n]);
  assert.deepEqual(sb.server_meta_avail[0], { ref: { blkno: 3n, seq: 1n }, total_nr: 1024n, first_nr: 1024, flags: 0 });
  assert.deepEqual(sb.fs_root, { ref: { blkno: 2n, seq: 1n }, height: 1 });
  assert.equal(sb.logs_root.height, 0);
  assert.deepEqual([sb.seq, sb.next_ino, sb.inode_count, sb.fmt_vers], [1n, 1024n, 1n, 0n]);
  assert.deepEqual([sb.flags, dsb.flags], [1n, 0n]);
  assert.deepEqual(sb.uuid, dsb.uuid);
  assert.deepEqual([sb.hdr.seq, sb.hdr.blkno, sb.hdr.fsid], [1n, 16n, FIXED.fsid]);
  assert.equal(sb.hdr.crc, blockCrc(block(p, 'meta device super')));
  assert.deepEqual(sb.qconf.slots.slice(0, 3), [
    { family: 1, port: 7000, addr: 0x7f000001 }, { family: 1, port: 7001, addr: 0x7f000001 }, { family: 0, port: 0, addr: 0 },
  ]);
  const sbb = block(p, 'meta device super');
  assert.deepEqual([...sbb.subarray(120, 128)], [1, 0, 0x58, 0x1b, 1, 0, 0, 127], 'slot 0 bytes: family 1, port 7000 LE, 127.0.0.1 as LE u32');
  assert.ok(sbb.subarray(1488).every((x) => x === 0), 'bytes after the struct are zero');

  const m0 = block(p, 'meta_alloc[0] leaf');
  assert.equal(formatKey(readItem(m0, 48).key), '9.16899.0.15869.0.0');
  assert.equal(formatKey(readItem(m0, 104).key), `10.${0xffffffffffffffffn - 4n}.0.16899.15869.0`);
  assert.deepEqual([getU16(m0, 36), getU16(m0, 38)], [112, 62352]);
  const m1 = block(p, 'meta_alloc[1] leaf');
  assert.equal(formatKey(readItem(m1, 48).key), '9.32767.0.15868.0.0');
  const d = block(p, 'data_alloc leaf');
  assert.equal(formatKey(readItem(d, 48).key), '9.2097151.0.2097088.0.0');
  assert.equal(formatKey(readItem(d, 104).key), `10.${0xffffffffffffffffn - 6n}.0.2097151.2097088.0`);

  const list = block(p, 'server alloc list');
  assert.deepEqual([getU32(list, 4), getU64(list, 24), getU64(list, 32), getU32(list, 48), getU32(list, 52)], [0x8a93ac83, 3n, 0n, 0, 1024]);
  for (let i = 0; i < 1024; i++) assert.equal(getU64(list, 56 + 8 * i), BigInt(4 + i));

  // mkfs writes exactly these blocks and nothing else.
  assert.deepEqual(p.writes.map((w) => `${w.dev}:${w.off}`), [
    'meta:131072', 'meta:196608', 'meta:67371008', 'meta:67436544', 'meta:67502080',
    ...Array.from({ length: 15 }, (_, i) => `meta:${(17 + i) * 4096}`), 'data:65536', 'meta:65536',
  ]);
  for (let i = 0; i < 15; i++) {
    const q = block(p, `quorum block ${i}`);
    assert.deepEqual([getU32(q, 4), getU64(q, 8), getU64(q, 16), getU64(q, 24)], [0xbc310868, FIXED.fsid, 1n, BigInt(17 + i)]);
    assert.ok(q.subarray(32).every((x) => x === 0));
  }
});

test('the summary and warnings print as FORMAT.md s13 describes for 2 GiB / 8 GiB', () => {
  assert.equal(plan().summary, [
    'Created scoutfs filesystem:',
    '  meta device path:     /dev/meta',
    '  data device path:     /dev/data',
    '  fsid:                 1234abcd5678ef90',
    '  uuid:                 8c1d2e3f-4051-4a6b-9c7d-8e9fa0b1c2d3',
    '  format version:       0',
    '  64KB metadata blocks: 32768 (2.00 GB)',
    '  4KB data blocks:      2097152 (8.00 GB)',
    '  quorum slots:         0: 127.0.0.1:7000',
    '                        1: 127.0.0.1:7001',
    '',
  ].join('\n'));
  assert.deepEqual(plan().warnings, [
    '2.00GB file too small for min 64.00GB meta device, allowing with -A',
    '8.00GB file too small for min 64.00GB data device, allowing with -A',
  ]);
});
