/*
 * The super block (FORMAT.md 5): 1488 bytes in a 4 KiB block at SM 16 of
 * both devices.  The metadata device copy has flags bit 0 (IS_META_BDEV)
 * set, the data device copy has it clear; uuid, fsid and fmt_vers match.
 *
 * decodeSuper/encodeSuper convert between the block image and a plain
 * object; encodeSuper writes the header (magic, fsid, seq, blkno 16) and the
 * crc over the full 4096 bytes, leaving bytes 1488..4095 zero.
 */
import { layout, getU64, setU64 } from './layout.js';
import { BLOCK_HEADER, writeHeader, sealBlock, readHeader, type BlockHeader } from './block.js';
import {
  INET_ADDR, ALLOC_ROOT, ALLOC_LIST_HEAD, BTREE_ROOT,
  readInetAddr, writeInetAddr, readAllocRoot, writeAllocRoot, readAllocListHead,
  writeAllocListHead, readBtreeRoot, writeBtreeRoot,
  type InetAddr, type AllocRoot, type AllocListHead, type BtreeRoot,
} from './common.js';
import { MAGIC, QUORUM_MAX_SLOTS, SM_BLOCK_SIZE, SUPER_BLKNO, UUID_BYTES } from './constants.js';

export const VOLUME_OPTIONS = layout('volume_options', 520, [
  ['set_bits', 8],
  ['data_alloc_zone_blocks', 8],
  ['reserved', 8, 63],
]);
export const VOLOPT_DATA_ALLOC_ZONE_BLOCKS_BIT = 1n;

export const QUORUM_CONFIG = layout('quorum_config', 488, [
  ['version', 8],
  ['slots', INET_ADDR, QUORUM_MAX_SLOTS],
]);

export const SUPER_BLOCK = layout('super_block', 1488, [
  ['hdr', BLOCK_HEADER],
  ['id', 8],
  ['fmt_vers', 8],
  ['flags', 8],
  ['uuid', UUID_BYTES],
  ['seq', 8],
  ['next_ino', 8],
  ['inode_count', 8],
  ['total_meta_blocks', 8],
  ['total_data_blocks', 8],
  ['qconf', QUORUM_CONFIG],
  ['meta_alloc', ALLOC_ROOT, 2],
  ['data_alloc', ALLOC_ROOT],
  ['server_meta_avail', ALLOC_LIST_HEAD, 2],
  ['server_meta_freed', ALLOC_LIST_HEAD, 2],
  ['fs_root', BTREE_ROOT],
  ['logs_root', BTREE_ROOT],
  ['log_merge', BTREE_ROOT],
  ['mounted_clients', BTREE_ROOT],
  ['srch_root', BTREE_ROOT],
  ['volopt', VOLUME_OPTIONS],
]);

export interface VolumeOptions {
  set_bits: bigint;
  data_alloc_zone_blocks: bigint;
}

export interface Super {
  hdr: BlockHeader;
  id: bigint;
  fmt_vers: bigint;
  flags: bigint;
  uuid: Uint8Array;
  seq: bigint;
  next_ino: bigint;
  inode_count: bigint;
  total_meta_blocks: bigint;
  total_data_blocks: bigint;
  qconf: { version: bigint; slots: InetAddr[] };
  meta_alloc: [AllocRoot, AllocRoot];
  data_alloc: AllocRoot;
  server_meta_avail: [AllocListHead, AllocListHead];
  server_meta_freed: [AllocListHead, AllocListHead];
  fs_root: BtreeRoot;
  logs_root: BtreeRoot;
  log_merge: BtreeRoot;
  mounted_clients: BtreeRoot;
  srch_root: BtreeRoot;
  volopt: VolumeOptions;
}

const S = SUPER_BLOCK;

export function decodeSuper(b: Uint8Array): Super {
  const slots: InetAddr[] = [];
  for (let i = 0; i < QUORUM_MAX_SLOTS; i++) slots.push(readInetAddr(b, S.o(`qconf.slots[${i}]`)));
  return {
    hdr: readHeader(b),
    id: getU64(b, S.o('id')),
    fmt_vers: getU64(b, S.o('fmt_vers')),
    flags: getU64(b, S.o('flags')),
    uuid: b.slice(S.o('uuid'), S.o('uuid') + UUID_BYTES),
    seq: getU64(b, S.o('seq')),
    next_ino: getU64(b, S.o('next_ino')),
    inode_count: getU64(b, S.o('inode_count')),
    total_meta_blocks: getU64(b, S.o('total_meta_blocks')),
    total_data_blocks: getU64(b, S.o('total_data_blocks')),
    qconf: { version: getU64(b, S.o('qconf.version')), slots },
    meta_alloc: [readAllocRoot(b, S.o('meta_alloc[0]')), readAllocRoot(b, S.o('meta_alloc[1]'))],
    data_alloc: readAllocRoot(b, S.o('data_alloc')),
    server_meta_avail: [readAllocListHead(b, S.o('server_meta_avail[0]')), readAllocListHead(b, S.o('server_meta_avail[1]'))],
    server_meta_freed: [readAllocListHead(b, S.o('server_meta_freed[0]')), readAllocListHead(b, S.o('server_meta_freed[1]'))],
    fs_root: readBtreeRoot(b, S.o('fs_root')),
    logs_root: readBtreeRoot(b, S.o('logs_root')),
    log_merge: readBtreeRoot(b, S.o('log_merge')),
    mounted_clients: readBtreeRoot(b, S.o('mounted_clients')),
    srch_root: readBtreeRoot(b, S.o('srch_root')),
    volopt: {
      set_bits: getU64(b, S.o('volopt.set_bits')),
      data_alloc_zone_blocks: getU64(b, S.o('volopt.data_alloc_zone_blocks')),
    },
  };
}

/** Encode a complete 4 KiB super block image, crc included. */
export function encodeSuper(s: Super): Uint8Array {
  const b = new Uint8Array(SM_BLOCK_SIZE);
  writeHeader(b, { magic: MAGIC.super, fsid: s.hdr.fsid, seq: s.hdr.seq, blkno: SUPER_BLKNO });
  setU64(b, S.o('id'), s.id);
  setU64(b, S.o('fmt_vers'), s.fmt_vers);
  setU64(b, S.o('flags'), s.flags);
  b.set(s.uuid, S.o('uuid'));
  setU64(b, S.o('seq'), s.seq);
  setU64(b, S.o('next_ino'), s.next_ino);
  setU64(b, S.o('inode_count'), s.inode_count);
  setU64(b, S.o('total_meta_blocks'), s.total_meta_blocks);
  setU64(b, S.o('total_data_blocks'), s.total_data_blocks);
  setU64(b, S.o('qconf.version'), s.qconf.version);
  s.qconf.slots.forEach((a, i) => {
    if (a.family !== 0) writeInetAddr(b, S.o(`qconf.slots[${i}]`), a);
  });
  writeAllocRoot(b, S.o('meta_alloc[0]'), s.meta_alloc[0]);
  writeAllocRoot(b, S.o('meta_alloc[1]'), s.meta_alloc[1]);
  writeAllocRoot(b, S.o('data_alloc'), s.data_alloc);
  writeAllocListHead(b, S.o('server_meta_avail[0]'), s.server_meta_avail[0]);
  writeAllocListHead(b, S.o('server_meta_avail[1]'), s.server_meta_avail[1]);
  writeAllocListHead(b, S.o('server_meta_freed[0]'), s.server_meta_freed[0]);
  writeAllocListHead(b, S.o('server_meta_freed[1]'), s.server_meta_freed[1]);
  writeBtreeRoot(b, S.o('fs_root'), s.fs_root);
  writeBtreeRoot(b, S.o('logs_root'), s.logs_root);
  writeBtreeRoot(b, S.o('log_merge'), s.log_merge);
  writeBtreeRoot(b, S.o('mounted_clients'), s.mounted_clients);
  writeBtreeRoot(b, S.o('srch_root'), s.srch_root);
  setU64(b, S.o('volopt.set_bits'), s.volopt.set_bits);
  setU64(b, S.o('volopt.data_alloc_zone_blocks'), s.volopt.data_alloc_zone_blocks);
  sealBlock(b);
  return b;
}

/** A present quorum slot has family IPv4 (FORMAT.md 5.3). */
export function presentSlots(s: Super): number[] {
  const out: number[] = [];
  s.qconf.slots.forEach((a, i) => { if (a.family === 1) out.push(i); });
  return out;
}
