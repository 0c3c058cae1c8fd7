/*
 * The log_trees struct (FORMAT.md 10.1): 472 bytes, the value of a zone-6
 * item in logs_root, one per mount transaction tree.  It carries the two
 * transaction seqs at the heart of the commit protocol: get_trans_seq (set
 * when the server opens the mount's transaction) and commit_trans_seq (set
 * equal to it at commit); get > commit <=> a transaction is open.
 */
import { layout, getU64, setU64 } from './layout.js';
import { BLOCK_REF, readRef, writeRef, type BlockRef } from './block.js';
import {
  ALLOC_LIST_HEAD, BTREE_ROOT, ALLOC_ROOT,
  readAllocListHead, writeAllocListHead, readBtreeRoot, writeBtreeRoot, readAllocRoot, writeAllocRoot,
  type AllocListHead, type BtreeRoot, type AllocRoot,
} from './common.js';
import { SRCH_FILE, readSrchFile, writeSrchFile, type SrchFile } from './srch.js';
import { DATA_ALLOC_ZONE_BYTES } from './constants.js';
import { CorruptionError } from './errors.js';

export const LOG_TREES = layout('log_trees', 472, [
  ['meta_avail', ALLOC_LIST_HEAD],
  ['meta_freed', ALLOC_LIST_HEAD],
  ['item_root', BTREE_ROOT],
  ['bloom_ref', BLOCK_REF],
  ['data_avail', ALLOC_ROOT],
  ['data_freed', ALLOC_ROOT],
  ['srch_file', SRCH_FILE],
  ['data_alloc_zone_blocks', 8],
  ['data_alloc_zones', DATA_ALLOC_ZONE_BYTES],
  ['inode_count_delta', 8],
  ['get_trans_seq', 8],
  ['commit_trans_seq', 8],
  ['max_item_seq', 8],
  ['finalize_seq', 8],
  ['rid', 8],
  ['nr', 8],
  ['flags', 8],
]);
export const LOG_TREES_FLAG_FINALIZED = 1n;

export interface LogTrees {
  meta_avail: AllocListHead;
  meta_freed: AllocListHead;
  item_root: BtreeRoot;
  bloom_ref: BlockRef;
  data_avail: AllocRoot;
  data_freed: AllocRoot;
  srch_file: SrchFile;
  data_alloc_zone_blocks: bigint;
  data_alloc_zones: Uint8Array;
  inode_count_delta: bigint;
  get_trans_seq: bigint;
  commit_trans_seq: bigint;
  max_item_seq: bigint;
  finalize_seq: bigint;
  rid: bigint;
  nr: bigint;
  flags: bigint;
}

const L = LOG_TREES;
const U64S = ['data_alloc_zone_blocks', 'get_trans_seq', 'commit_trans_seq', 'max_item_seq', 'finalize_seq', 'rid', 'nr', 'flags'] as const;

export function decodeLogTrees(b: Uint8Array, off = 0): LogTrees {
  const lt = {
    meta_avail: readAllocListHead(b, off + L.o('meta_avail')),
    meta_freed: readAllocListHead(b, off + L.o('meta_freed')),
    item_root: readBtreeRoot(b, off + L.o('item_root')),
    bloom_ref: readRef(b, off + L.o('bloom_ref')),
    data_avail: readAllocRoot(b, off + L.o('data_avail')),
    data_freed: readAllocRoot(b, off + L.o('data_freed')),
    srch_file: readSrchFile(b, off + L.o('srch_file')),
    data_alloc_zones: b.slice(off + L.o('data_alloc_zones'), off + L.o('data_alloc_zones') + DATA_ALLOC_ZONE_BYTES),
    inode_count_delta: BigInt.asIntN(64, getU64(b, off + L.o('inode_count_delta'))),
  } as Partial<LogTrees>;
  for (const f of U64S) lt[f] = getU64(b, off + L.o(f));
  return lt as LogTrees;
}

/**
 * A logs_root item (key zone LOG_TREES, first rid, second nr) as read from
 * disk: the value must be a whole log_trees struct naming the same rid
 * and nr as its key, else CorruptionError (every reader of logs_root).
 */
export function decodeLogTreesItem(k: { first: bigint; second: bigint }, val: Uint8Array): LogTrees {
  if (val.length !== L.size) {
    throw new CorruptionError('logs_root', null, 'size', `log_trees item (${k.first}, ${k.second}) of ${val.length} bytes, want ${L.size}`);
  }
  const lt = decodeLogTrees(val);
  if (lt.rid !== k.first || lt.nr !== k.second) {
    throw new CorruptionError('logs_root', null, 'structure', `log_trees item key (${k.first}, ${k.second}) holds rid ${lt.rid} nr ${lt.nr}`);
  }
  return lt;
}

export function encodeLogTrees(lt: LogTrees): Uint8Array {
  const b = new Uint8Array(L.size);
  writeAllocListHead(b, L.o('meta_avail'), lt.meta_avail);
  writeAllocListHead(b, L.o('meta_freed'), lt.meta_freed);
  writeBtreeRoot(b, L.o('item_root'), lt.item_root);
  writeRef(b, L.o('bloom_ref'), lt.bloom_ref);
  writeAllocRoot(b, L.o('data_avail'), lt.data_avail);
  writeAllocRoot(b, L.o('data_freed'), lt.data_freed);
  writeSrchFile(b, L.o('srch_file'), lt.srch_file);
  b.set(lt.data_alloc_zones, L.o('data_alloc_zones'));
  setU64(b, L.o('inode_count_delta'), BigInt.asUintN(64, lt.inode_count_delta));
  for (const f of U64S) setU64(b, L.o(f), lt[f]);
  return b;
}
