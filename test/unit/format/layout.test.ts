/*
 * Goal: every layout's size and field offsets equal the numbers written in
 * FORMAT.md (the size table of s14 and the per-struct tables).  A
 * transcription error in src/format/ or in this file fails here.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BLOCK_HEADER, BLOCK_REF } from '../../../src/format/block.js';
import { KEY } from '../../../src/format/key.js';
import {
  TIMESPEC, INET_ADDR, INET_ADDR6, BTREE_ROOT, AVL_ROOT, AVL_NODE, ALLOC_ROOT, ALLOC_LIST_HEAD,
} from '../../../src/format/common.js';
import { SUPER_BLOCK, VOLUME_OPTIONS, QUORUM_CONFIG } from '../../../src/format/super.js';
import { QUORUM_BLOCK, QUORUM_BLOCK_EVENT, QUORUM_MESSAGE } from '../../../src/format/quorum.js';
import { BTREE_BLOCK, BTREE_ITEM, LEAF_HASH_OFF, LEAF_EMPTY_FREE, PARENT_EMPTY_FREE } from '../../../src/format/btree.js';
import { INODE, DIRENT, XATTR_HEADER, XATTR_TOTL_VAL, DATA_EXTENT_VAL, MOUNTED_CLIENT_VAL } from '../../../src/format/items.js';
import { ALLOC_LIST_BLOCK } from '../../../src/format/alloc.js';
import { LOG_TREES } from '../../../src/format/logtrees.js';
import { SRCH_ENTRY, SRCH_FILE, SRCH_PARENT, SRCH_BLOCK, SRCH_COMPACT, SRCH_COMPACT_INPUT } from '../../../src/format/srch.js';
import { BLOOM_BLOCK } from '../../../src/format/bloom.js';
import {
  LOG_MERGE_STATUS, LOG_MERGE_RANGE, LOG_MERGE_REQUEST, LOG_MERGE_COMPLETE, LOG_MERGE_FREEING,
} from '../../../src/format/logmerge.js';
import type { Layout } from '../../../src/format/layout.js';

function pin(l: Layout, offs: Record<string, number>): void {
  for (const [f, off] of Object.entries(offs)) assert.equal(l.o(f), off, `${l.name}.${f}`);
}

test('sizes match the FORMAT.md s14 size table', () => {
  const table: [Layout, number][] = [
    [TIMESPEC, 16], [INET_ADDR, 32], [INET_ADDR6, 32], [BLOCK_HEADER, 32], [BLOCK_REF, 16], [KEY, 32],
    [AVL_ROOT, 2], [AVL_NODE, 8], [BTREE_ROOT, 24], [BTREE_ITEM, 56], [BTREE_BLOCK, 48],
    [ALLOC_LIST_HEAD, 32], [ALLOC_LIST_BLOCK, 65536], [ALLOC_ROOT, 40], [MOUNTED_CLIENT_VAL, 40],
    [SRCH_ENTRY, 24], [SRCH_FILE, 88], [SRCH_PARENT, 65536], [SRCH_BLOCK, 112], [SRCH_COMPACT, 584],
    [SRCH_COMPACT_INPUT, 104], [LOG_TREES, 472], [BLOOM_BLOCK, 65536], [LOG_MERGE_STATUS, 56],
    [LOG_MERGE_REQUEST, 208], [LOG_MERGE_COMPLETE, 208], [LOG_MERGE_RANGE, 64], [LOG_MERGE_FREEING, 64],
    [DATA_EXTENT_VAL, 16], [XATTR_HEADER, 8], [XATTR_TOTL_VAL, 16], [QUORUM_MESSAGE, 32],
    [QUORUM_CONFIG, 488], [QUORUM_BLOCK_EVENT, 40], [QUORUM_BLOCK, 280], [VOLUME_OPTIONS, 520],
    [SUPER_BLOCK, 1488], [INODE, 160], [DIRENT, 32],
  ];
  for (const [l, size] of table) assert.equal(l.size, size, l.name);
  assert.equal(SRCH_PARENT.o('refs'), 32);
  assert.equal(ALLOC_LIST_BLOCK.o('blknos'), 56);
  assert.equal(BLOOM_BLOCK.o('bits'), 40);
});

test('block header, ref, key, timespec, inet address (s3, s4)', () => {
  pin(BLOCK_HEADER, { crc: 0, magic: 4, fsid: 8, seq: 16, blkno: 24 });
  pin(BLOCK_REF, { blkno: 0, seq: 8 });
  pin(KEY, { first: 0, second: 8, third: 16, fourth: 24, zone: 25, type: 26, pad: 27 });
  pin(TIMESPEC, { sec: 0, nsec: 8, pad: 12 });
  pin(INET_ADDR, { family: 0, port: 2, addr: 4 });
  pin(INET_ADDR6, { family: 0, port: 2, addr: 4, flow_info: 20, scope_id: 24, pad: 28 });
  pin(BTREE_ROOT, { 'ref.blkno': 0, 'ref.seq': 8, height: 16, pad: 17 });
  pin(AVL_NODE, { parent: 0, left: 2, right: 4, height: 6, pad: 7 });
  pin(ALLOC_ROOT, { total_len: 0, flags: 8, pad: 12, root: 16 });
  pin(ALLOC_LIST_HEAD, { ref: 0, total_nr: 16, first_nr: 24, flags: 28 });
});

test('super block (s5.1, flattened offsets)', () => {
  pin(SUPER_BLOCK, {
    hdr: 0, id: 32, fmt_vers: 40, flags: 48, uuid: 56, seq: 72, next_ino: 80, inode_count: 88,
    total_meta_blocks: 96, total_data_blocks: 104, qconf: 112, 'meta_alloc[0]': 600, 'meta_alloc[1]': 640,
    data_alloc: 680, 'server_meta_avail[0]': 720, 'server_meta_avail[1]': 752,
    'server_meta_freed[0]': 784, 'server_meta_freed[1]': 816, fs_root: 848, logs_root: 872,
    log_merge: 896, mounted_clients: 920, srch_root: 944, volopt: 968,
    'meta_alloc[0].total_len': 600, 'meta_alloc[0].flags': 608, 'meta_alloc[0].root.ref.blkno': 616,
    'meta_alloc[0].root.ref.seq': 624, 'meta_alloc[0].root.height': 632,
    'meta_alloc[1].total_len': 640, 'meta_alloc[1].flags': 648, 'meta_alloc[1].root.ref.blkno': 656,
    'meta_alloc[1].root.ref.seq': 664, 'meta_alloc[1].root.height': 672,
    'data_alloc.total_len': 680, 'data_alloc.flags': 688, 'data_alloc.root.ref.blkno': 696,
    'data_alloc.root.ref.seq': 704, 'data_alloc.root.height': 712,
    'server_meta_avail[0].ref.blkno': 720, 'server_meta_avail[0].ref.seq': 728,
    'server_meta_avail[0].total_nr': 736, 'server_meta_avail[0].first_nr': 744,
    'server_meta_avail[0].flags': 748,
    'fs_root.ref.blkno': 848, 'fs_root.ref.seq': 856, 'fs_root.height': 864,
    'volopt.set_bits': 968, 'volopt.data_alloc_zone_blocks': 976, 'volopt.reserved': 984,
  });
  for (let i = 0; i < 15; i++) {
    pin(SUPER_BLOCK, {
      [`qconf.slots[${i}].family`]: 120 + 32 * i,
      [`qconf.slots[${i}].port`]: 122 + 32 * i,
      [`qconf.slots[${i}].addr`]: 124 + 32 * i,
    });
  }
});

test('quorum block and message (s6)', () => {
  pin(QUORUM_BLOCK, { hdr: 0, write_nr: 32 });
  for (let e = 0; e < 6; e++) pin(QUORUM_BLOCK, { [`events[${e}]`]: 40 + 40 * e });
  pin(QUORUM_BLOCK_EVENT, { write_nr: 0, rid: 8, term: 16, ts: 24 });
  pin(QUORUM_MESSAGE, { fsid: 0, version: 8, term: 16, type: 24, from: 25, pad: 26, crc: 28 });
});

test('btree block and item (s7)', () => {
  pin(BTREE_BLOCK, { hdr: 0, item_root: 32, nr_items: 34, total_item_bytes: 36, mid_free_len: 38, level: 40, pad: 41 });
  pin(BTREE_ITEM, {
    'node.parent': 0, 'node.left': 2, 'node.right': 4, 'node.height': 6, key: 8, seq: 40, val_off: 48,
    val_len: 50, flags: 52, pad: 53,
  });
  assert.equal(LEAF_HASH_OFF, 62512);
  assert.equal(LEAF_EMPTY_FREE, 62464);
  assert.equal(PARENT_EMPTY_FREE, 65488);
});

test('fs items (s8)', () => {
  pin(INODE, {
    size: 0, meta_seq: 8, data_seq: 16, data_version: 24, online_blocks: 32, offline_blocks: 40,
    next_readdir_pos: 48, next_xattr_id: 56, version: 64, nlink: 72, uid: 76, gid: 80, mode: 84,
    rdev: 88, flags: 92, atime: 96, ctime: 112, mtime: 128, crtime: 144,
  });
  pin(DIRENT, { ino: 0, hash: 8, pos: 16, type: 24, pad: 25 });
  pin(XATTR_HEADER, { val_len: 0, name_len: 2, pad: 3 });
  pin(DATA_EXTENT_VAL, { blkno: 0, flags: 8, pad: 9 });
  pin(MOUNTED_CLIENT_VAL, { addr: 0, flags: 32, pad: 33 });
  pin(XATTR_TOTL_VAL, { total: 0, count: 8 });
});

test('alloc list block (s9.2), bloom (s10.3), log_trees (s10.1)', () => {
  pin(ALLOC_LIST_BLOCK, { hdr: 0, next: 32, start: 48, nr: 52, blknos: 56 });
  pin(BLOOM_BLOCK, { hdr: 0, total_set: 32, bits: 40 });
  pin(LOG_TREES, {
    meta_avail: 0, meta_freed: 32, item_root: 64, bloom_ref: 88, data_avail: 104, data_freed: 144,
    srch_file: 184, data_alloc_zone_blocks: 272, data_alloc_zones: 280, inode_count_delta: 408,
    get_trans_seq: 416, commit_trans_seq: 424, max_item_seq: 432, finalize_seq: 440, rid: 448, nr: 456,
    flags: 464, 'item_root.ref.blkno': 64, 'item_root.ref.seq': 72, 'item_root.height': 80,
    'srch_file.first': 184, 'srch_file.last': 208, 'srch_file.ref': 232, 'srch_file.blocks': 248,
    'srch_file.entries': 256, 'srch_file.height': 264,
  });
});

test('srch (s11)', () => {
  pin(SRCH_ENTRY, { hash: 0, ino: 8, id: 16 });
  pin(SRCH_FILE, { first: 0, last: 24, ref: 48, blocks: 64, entries: 72, height: 80, pad: 81 });
  pin(SRCH_BLOCK, { hdr: 0, first: 32, last: 56, tail: 80, entry_nr: 104, entry_bytes: 108 });
  pin(SRCH_COMPACT, { meta_avail: 0, meta_freed: 32, id: 64, nr: 72, flags: 73, pad: 74, out: 80 });
  for (let i = 0; i < 4; i++) pin(SRCH_COMPACT, { [`in[${i}]`]: 168 + 104 * i, [`in[${i}].blk`]: 168 + 104 * i + 88, [`in[${i}].pos`]: 168 + 104 * i + 96 });
});

test('log merge items (s8.12)', () => {
  pin(LOG_MERGE_STATUS, { next_range_key: 0, nr_requests: 32, nr_complete: 40, seq: 48 });
  pin(LOG_MERGE_RANGE, { start: 0, end: 32 });
  pin(LOG_MERGE_REQUEST, {
    meta_avail: 0, meta_freed: 32, logs_root: 64, root: 88, start: 112, end: 144, input_seq: 176,
    rid: 184, seq: 192, flags: 200,
  });
  pin(LOG_MERGE_COMPLETE, {
    meta_avail: 0, meta_freed: 32, root: 64, start: 88, end: 120, remain: 152, rid: 184, seq: 192, flags: 200,
  });
  pin(LOG_MERGE_FREEING, { root: 0, key: 24, seq: 56 });
});
