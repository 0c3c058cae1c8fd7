/*
 * Goal: the wire layouts of src/format/net.ts equal PROTOCOL.md 3.2-3.3 and
 * the FORMAT.md s14 size table offset by offset; every payload codec round
 * trips; the command table matches 3.3; and the closed wire error table
 * maps every errno we know to a code and back, with the reference's codes
 * 0..5 unchanged, every errno outside the table sent as EIO, and every
 * code outside the table refused.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ERRNO, type ErrnoName } from '../../../src/format/errors.js';
import { key } from '../../../src/format/key.js';
import type { Layout } from '../../../src/format/layout.js';
import {
  NET_HEADER, NET_GREETING, NET_LOCK, NET_LOCK_RECOVER, NET_ROOTS, NET_STATFS, NET_INODE_ALLOC,
  NET_RESIZE_DEVICES, OPEN_INO_MAP_ARGS, OPEN_INO_MAP, NET_CMD, NET_CMD_INFO, NET_ERR_UNKNOWN, WIRE_ERRORS,
  NET_LOCK_RECOVER_MAX_NR, NET_MAX_DATA_LEN, NET_LOCAL_ERRNO,
  wireErrorOf, errnoOfWire, netLockRecoverSize, payloadSizeOk, netCmdName,
  readNetHeader, writeNetHeader, encodeNetGreeting, decodeNetGreeting, encodeNetLock, readNetLock,
  encodeNetLockRecover, decodeNetLockRecover, encodeNetRoots, decodeNetRoots, encodeNetStatfs, decodeNetStatfs,
  encodeNetInodeAlloc, decodeNetInodeAlloc, encodeNetResizeDevices, decodeNetResizeDevices,
  encodeOpenInoMap, decodeOpenInoMap, encodeOpenInoMapArgs, decodeOpenInoMapArgs, encodeNetU64, decodeNetU64,
  type NetLock,
} from '../../../src/format/net.js';

function pin(l: Layout, offs: Record<string, number>): void {
  for (const [f, off] of Object.entries(offs)) assert.equal(l.o(f), off, `${l.name}.${f}`);
}

test('sizes match PROTOCOL.md 3.3 and FORMAT.md s14', () => {
  const table: [Layout, number][] = [
    [NET_HEADER, 40], [NET_GREETING, 40], [NET_LOCK, 48], [NET_LOCK_RECOVER, 8], [NET_ROOTS, 72],
    [NET_STATFS, 56], [NET_INODE_ALLOC, 16], [NET_RESIZE_DEVICES, 16], [OPEN_INO_MAP_ARGS, 16],
    [OPEN_INO_MAP, 144],
  ];
  for (const [l, size] of table) assert.equal(l.size, size, l.name);
  assert.equal(netLockRecoverSize(0), 8);
  assert.equal(netLockRecoverSize(22), 8 + 48 * 22);
  assert.equal(NET_LOCK_RECOVER_MAX_NR, 22);
  assert.equal(NET_MAX_DATA_LEN, 1100);
});

test('offsets match PROTOCOL.md 3.2 and 3.3', () => {
  pin(NET_HEADER, { clock_sync_id: 0, seq: 8, recv_seq: 16, id: 24, data_len: 32, cmd: 34, flags: 35, error: 36, pad: 37 });
  pin(NET_GREETING, { fsid: 0, fmt_vers: 8, server_term: 16, rid: 24, flags: 32 });
  pin(NET_LOCK, { key: 0, write_seq: 32, old_mode: 40, new_mode: 41, pad: 42 });
  pin(NET_LOCK_RECOVER, { nr: 0, pad: 2 });
  pin(NET_ROOTS, { fs_root: 0, logs_root: 24, srch_root: 48, 'logs_root.height': 40 });
  pin(NET_STATFS, {
    uuid: 0, free_meta_blocks: 16, total_meta_blocks: 24, free_data_blocks: 32, total_data_blocks: 40, inode_count: 48,
  });
  pin(NET_INODE_ALLOC, { ino: 0, nr: 8 });
  pin(NET_RESIZE_DEVICES, { new_total_meta_blocks: 0, new_total_data_blocks: 8 });
  pin(OPEN_INO_MAP_ARGS, { group_nr: 0, req_id: 8 });
  pin(OPEN_INO_MAP, { args: 0, 'args.group_nr': 0, 'args.req_id': 8, bits: 16 });
  assert.equal(OPEN_INO_MAP.info('bits').count, 16);
});

test('command numbers and payload sizes (PROTOCOL.md 3.3)', () => {
  const names = [
    'GREETING', 'ALLOC_INODES', 'GET_LOG_TREES', 'COMMIT_LOG_TREES', 'SYNC_LOG_TREES', 'GET_ROOTS', 'GET_LAST_SEQ',
    'LOCK', 'LOCK_RECOVER', 'SRCH_GET_COMPACT', 'SRCH_COMMIT_COMPACT', 'GET_LOG_MERGE', 'COMMIT_LOG_MERGE',
    'OPEN_INO_MAP', 'GET_VOLOPT', 'SET_VOLOPT', 'CLEAR_VOLOPT', 'RESIZE_DEVICES', 'STATFS', 'FAREWELL',
  ];
  names.forEach((n, i) => {
    assert.equal(NET_CMD[n as keyof typeof NET_CMD], i, n);
    assert.equal(NET_CMD_INFO[i]!.name, n);
    assert.equal(netCmdName(i), n);
  });
  assert.equal(NET_CMD.UNKNOWN, 20);
  assert.equal(NET_CMD_INFO.length, 20);
  const sizes: Record<string, [number, number]> = {
    GREETING: [40, 40], ALLOC_INODES: [8, 16], GET_LOG_TREES: [0, 472], COMMIT_LOG_TREES: [472, 0],
    SYNC_LOG_TREES: [0, 0], GET_ROOTS: [0, 72], GET_LAST_SEQ: [0, 8], LOCK: [48, 48], SRCH_GET_COMPACT: [0, 584],
    SRCH_COMMIT_COMPACT: [584, 0], GET_LOG_MERGE: [0, 208], COMMIT_LOG_MERGE: [208, 0], OPEN_INO_MAP: [16, 144],
    GET_VOLOPT: [0, 520], SET_VOLOPT: [520, 0], CLEAR_VOLOPT: [520, 0], RESIZE_DEVICES: [16, 0], STATFS: [0, 56],
    FAREWELL: [0, 0],
  };
  for (const info of NET_CMD_INFO) {
    if (info.name === 'LOCK_RECOVER') {
      assert.equal(info.req, 32);
      assert(payloadSizeOk(info.resp, encodeNetLockRecover([])));
      assert(!payloadSizeOk(info.resp, new Uint8Array(8 + 47)));
      continue;
    }
    assert.deepEqual([info.req, info.resp], sizes[info.name], info.name);
  }
  assert.deepEqual(
    NET_CMD_INFO.filter((i) => i.dir === 's2c').map((i) => i.name), ['SYNC_LOG_TREES', 'LOCK_RECOVER']);
  assert.deepEqual(NET_CMD_INFO.filter((i) => i.dir === 'both').map((i) => i.name), ['LOCK', 'OPEN_INO_MAP']);
});

test('wire error table: reference codes, extension, unknown errno sent as EIO', () => {
  assert.deepEqual(WIRE_ERRORS.slice(0, 6), [null, 'ENOENT', 'ENOMEM', 'EIO', 'ENOSPC', 'EINVAL']);
  for (const name of ['EEXIST', 'ESTALE', 'ENOTEMPTY', 'EROFS', 'EAGAIN', 'EBUSY', 'ETIMEDOUT', 'ESHUTDOWN'] as const) {
    assert(WIRE_ERRORS.includes(name), `${name} crosses the wire`);
  }
  assert.equal(NET_ERR_UNKNOWN, WIRE_ERRORS.length);
  assert.equal(wireErrorOf(null), 0);
  assert.equal(errnoOfWire(0), null);
  let outside = 0;
  for (const name of Object.keys(ERRNO) as ErrnoName[]) {
    const code = wireErrorOf(name);
    assert(code > 0 && code < NET_ERR_UNKNOWN, `${name} -> ${code}`);
    const back = errnoOfWire(code);
    if (WIRE_ERRORS.includes(name)) {
      assert.equal(back, name, `${name} round trips`);
    } else {
      assert.equal(back, 'EIO', `${name} is sent as EIO`);
      outside++;
    }
  }
  assert(outside > 0);
  for (const bad of [NET_ERR_UNKNOWN, NET_ERR_UNKNOWN + 1, 255, -1, 1.5]) assert.equal(errnoOfWire(bad), undefined, `code ${bad}`);
  // Local-only errnos never get a wire code of their own.
  for (const n of Object.keys(NET_LOCAL_ERRNO)) assert(!(WIRE_ERRORS as readonly (string | null)[]).includes(n));
});

test('header and payload codecs round trip', () => {
  const h = {
    clock_sync_id: 0xfedcba9876543210n, seq: 7n, recv_seq: 6n, id: 0xffffffffffffffffn, data_len: 1100, cmd: 19, flags: 1,
    error: 13,
  };
  const hb = new Uint8Array(40).fill(0xee);
  writeNetHeader(hb, 0, h);
  assert.deepEqual(readNetHeader(hb, 0), h);
  assert.deepEqual([...hb.subarray(37, 40)], [0, 0, 0], 'pad written as zero');
  assert.deepEqual([...hb.subarray(32, 37)], [0x4c, 0x04, 19, 1, 13], 'little-endian data_len, then cmd, flags, error');

  const g = { fsid: 1n, fmt_vers: 0n, server_term: 9n, rid: 0xabcdn, flags: 3n };
  assert.deepEqual(decodeNetGreeting(encodeNetGreeting(g)), g);

  const lock: NetLock = { key: key(5, 12n, 3, 4n, 5n, 6), write_seq: 99n, old_mode: 1, new_mode: 2 };
  assert.deepEqual(readNetLock(encodeNetLock(lock), 0), lock);
  const locks = Array.from({ length: NET_LOCK_RECOVER_MAX_NR }, (_, i) => ({ ...lock, write_seq: BigInt(i) }));
  const rb = encodeNetLockRecover(locks);
  assert.equal(rb.length, 8 + 48 * 22);
  assert.deepEqual(decodeNetLockRecover(rb), locks);
  assert.equal(decodeNetLockRecover(rb.subarray(0, rb.length - 1)), null, 'short');
  const over = new Uint8Array(8 + 48 * 23);
  over[0] = 23;
  assert.equal(decodeNetLockRecover(over), null, 'more than 22');
  assert.equal(decodeNetLockRecover(new Uint8Array(4)), null, 'no header');

  const root = (b: bigint, h2: number) => ({ ref: { blkno: b, seq: b + 1n }, height: h2 });
  const roots = { fs_root: root(10n, 1), logs_root: root(20n, 2), srch_root: root(30n, 3) };
  assert.deepEqual(decodeNetRoots(encodeNetRoots(roots)), roots);

  const st = {
    uuid: Uint8Array.from({ length: 16 }, (_, i) => i), free_meta_blocks: 1n, total_meta_blocks: 2n, free_data_blocks: 3n,
    total_data_blocks: 4n, inode_count: 5n,
  };
  assert.deepEqual(decodeNetStatfs(encodeNetStatfs(st)), st);
  assert.deepEqual(decodeNetInodeAlloc(encodeNetInodeAlloc({ ino: 1024n, nr: 10240n })), { ino: 1024n, nr: 10240n });
  const rs = { new_total_meta_blocks: 1n << 40n, new_total_data_blocks: 3n };
  assert.deepEqual(decodeNetResizeDevices(encodeNetResizeDevices(rs)), rs);
  const args = { group_nr: 7n, req_id: 8n };
  assert.deepEqual(decodeOpenInoMapArgs(encodeOpenInoMapArgs(args)), args);
  const map = { args, bits: Array.from({ length: 16 }, (_, i) => (1n << BigInt(i * 4)) | 1n) };
  const mb = encodeOpenInoMap(map);
  assert.deepEqual(decodeOpenInoMap(mb), map);
  assert.equal(mb[16], 1, 'bit 0 of word 0 is inode group_nr * 1024 + 0, little-endian');
  assert.equal(decodeNetU64(encodeNetU64(0x0102030405060708n)), 0x0102030405060708n);
});
