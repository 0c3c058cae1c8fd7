/*
 * Text decoding of item values by zone and type, shared by `scoutfs print`
 * and fsck reports.  Field names are FORMAT.md's.  A value whose length is
 * wrong for its type is returned as a problem string instead of being
 * decoded, so a corrupt item never throws out of a printer.
 */
import { getU64, getU16, getU8 } from '../format/layout.js';
import { formatKey, readKey, type Key } from '../format/key.js';
import { readRef } from '../format/block.js';
import {
  ZONE, FS_TYPE, INDEX_TYPE, SRCH_TYPE, DT_NAMES, decodeInode, decodeDirent, decodeDataExtent,
  decodeMountedClient, INODE,
} from '../format/items.js';
import { decodeLogTrees, LOG_TREES } from '../format/logtrees.js';
import { readSrchFile, SRCH_FILE, SRCH_COMPACT } from '../format/srch.js';
import { formatIpv4, readBtreeRoot, readAllocListHead, type AllocListHead, type BtreeRoot, type AllocRoot } from '../format/common.js';
import { LOG_MERGE_STATUS, LOG_MERGE_RANGE, LOG_MERGE_REQUEST, LOG_MERGE_COMPLETE, LOG_MERGE_FREEING } from '../format/logmerge.js';
import type { SrchFile } from '../format/srch.js';
import type { Timespec } from '../format/common.js';

export type Decoded = { text: string; problem?: undefined } | { text?: undefined; problem: string };

const ts = (t: Timespec) => `${t.sec}.${String(t.nsec).padStart(9, '0')}`;
export const fmtRoot = (r: BtreeRoot) => `blkno ${r.ref.blkno} seq ${r.ref.seq.toString(16)} height ${r.height}`;
export const fmtList = (h: AllocListHead) =>
  `blkno ${h.ref.blkno} seq ${h.ref.seq.toString(16)} total_nr ${h.total_nr} first_nr ${h.first_nr} flags 0x${h.flags.toString(16)}`;
export const fmtAlloc = (a: AllocRoot) => `total_len ${a.total_len} flags 0x${a.flags.toString(16)} root ${fmtRoot(a.root)}`;
export const fmtSrchFile = (f: SrchFile) =>
  `blkno ${f.ref.blkno} seq ${f.ref.seq.toString(16)} blocks ${f.blocks} entries ${f.entries} height ${f.height} ` +
  `first ${f.first.hash.toString(16)}.${f.first.ino}.${f.first.id} last ${f.last.hash.toString(16)}.${f.last.ino}.${f.last.id}`;

function need(v: Uint8Array, len: number, what: string): string | null {
  return v.length === len ? null : `${what} value is ${v.length} bytes, want ${len}`;
}

const latin = (b: Uint8Array) => Buffer.from(b).toString('utf8');

/** Decode a leaf item value for printing. */
export function decodeItem(k: Key, v: Uint8Array): Decoded {
  switch (k.zone) {
    case ZONE.INODE_INDEX: {
      const t = k.type === INDEX_TYPE.META_SEQ ? 'meta_seq' : k.type === INDEX_TYPE.DATA_SEQ ? 'data_seq' : null;
      if (!t) return { problem: `unknown inode index type ${k.type}` };
      return { text: `${t} major ${k.second} ino ${k.third}` };
    }
    case ZONE.ORPHAN:
      return { text: `orphan ino ${k.second}` };
    case ZONE.XATTR_TOTL: {
      const p = need(v, 16, 'xattr totl');
      if (p) return { problem: p };
      return { text: `xattr_totl ${k.first}.${k.second}.${k.third} total ${BigInt.asIntN(64, getU64(v, 0))} count ${BigInt.asIntN(64, getU64(v, 8))}` };
    }
    case ZONE.FS:
      return decodeFsItem(k, v);
    case ZONE.LOG_TREES: {
      const p = need(v, LOG_TREES.size, 'log_trees');
      if (p) return { problem: p };
      const lt = decodeLogTrees(v);
      return {
        text: `log_trees rid ${lt.rid.toString(16)} nr ${lt.nr} flags 0x${lt.flags.toString(16)}\n` +
          `      meta_avail ${fmtList(lt.meta_avail)}\n      meta_freed ${fmtList(lt.meta_freed)}\n` +
          `      item_root ${fmtRoot(lt.item_root)}\n      bloom_ref blkno ${lt.bloom_ref.blkno} seq ${lt.bloom_ref.seq.toString(16)}\n` +
          `      data_avail ${fmtAlloc(lt.data_avail)}\n      data_freed ${fmtAlloc(lt.data_freed)}\n` +
          `      srch_file ${fmtSrchFile(lt.srch_file)}\n` +
          `      data_alloc_zone_blocks ${lt.data_alloc_zone_blocks} inode_count_delta ${lt.inode_count_delta}\n` +
          `      get_trans_seq ${lt.get_trans_seq} commit_trans_seq ${lt.commit_trans_seq} max_item_seq ${lt.max_item_seq} finalize_seq ${lt.finalize_seq}`,
      };
    }
    case ZONE.MOUNTED_CLIENT: {
      const mc = decodeMountedClient(v);
      if (!mc) return { problem: `mounted client value is ${v.length} bytes, want 40` };
      return { text: `mounted_client rid ${k.first.toString(16)} addr ${formatIpv4(mc.addr.addr)}:${mc.addr.port} flags 0x${mc.flags.toString(16)}` };
    }
    case ZONE.SRCH: {
      if (k.type === SRCH_TYPE.LOG || k.type === SRCH_TYPE.BLOCKS) {
        const p = need(v, SRCH_FILE.size, 'srch file');
        if (p) return { problem: p };
        return { text: `srch ${k.type === SRCH_TYPE.LOG ? 'log' : 'blocks'} file ${fmtSrchFile(readSrchFile(v, 0))}` };
      }
      if (k.type === SRCH_TYPE.PENDING || k.type === SRCH_TYPE.BUSY) {
        const p = need(v, SRCH_COMPACT.size, 'srch compact');
        if (p) return { problem: p };
        return { text: `srch ${k.type === SRCH_TYPE.PENDING ? 'pending' : 'busy'} compact id ${getU64(v, 64)} nr ${getU8(v, 72)} flags 0x${getU8(v, 73).toString(16)}` };
      }
      return { problem: `unknown srch type ${k.type}` };
    }
    case ZONE.FREE_EXTENT_BLKNO:
      if (k.second === 0n || k.second - 1n > k.first) return { problem: `free extent end ${k.first} len ${k.second} invalid` };
      return { text: `free extent blkno [${k.first - k.second + 1n}, ${k.first}] len ${k.second}` };
    case ZONE.FREE_EXTENT_ORDER:
      if (k.third === 0n || k.third - 1n > k.second) return { problem: `free extent end ${k.second} len ${k.third} invalid` };
      return { text: `free extent order ${0xffffffffffffffffn - k.first} [${k.second - k.third + 1n}, ${k.second}] len ${k.third}` };
    case ZONE.LOG_MERGE_STATUS: {
      const p = need(v, LOG_MERGE_STATUS.size, 'log merge status');
      if (p) return { problem: p };
      return { text: `log_merge status next_range_key ${formatKey(readKey(v, 0))} nr_requests ${getU64(v, 32)} nr_complete ${getU64(v, 40)} seq ${getU64(v, 48)}` };
    }
    case ZONE.LOG_MERGE_RANGE: {
      const p = need(v, LOG_MERGE_RANGE.size, 'log merge range');
      if (p) return { problem: p };
      return { text: `log_merge range start ${formatKey(readKey(v, 0))} end ${formatKey(readKey(v, 32))}` };
    }
    case ZONE.LOG_MERGE_REQUEST: {
      const p = need(v, LOG_MERGE_REQUEST.size, 'log merge request');
      if (p) return { problem: p };
      return { text: `log_merge request rid ${getU64(v, 184).toString(16)} seq ${getU64(v, 192)} input_seq ${getU64(v, 176)} root ${fmtRoot(readBtreeRoot(v, 88))} meta_avail ${fmtList(readAllocListHead(v, 0))}` };
    }
    case ZONE.LOG_MERGE_COMPLETE: {
      const p = need(v, LOG_MERGE_COMPLETE.size, 'log merge complete');
      if (p) return { problem: p };
      return { text: `log_merge complete rid ${getU64(v, 184).toString(16)} seq ${getU64(v, 192)} flags 0x${getU64(v, 200).toString(16)} root ${fmtRoot(readBtreeRoot(v, 64))}` };
    }
    case ZONE.LOG_MERGE_FREEING: {
      const p = need(v, LOG_MERGE_FREEING.size, 'log merge freeing');
      if (p) return { problem: p };
      return { text: `log_merge freeing seq ${getU64(v, 56)} root ${fmtRoot(readBtreeRoot(v, 0))} key ${formatKey(readKey(v, 24))}` };
    }
    default:
      return { problem: `unknown zone ${k.zone} type ${k.type}` };
  }
}

function decodeFsItem(k: Key, v: Uint8Array): Decoded {
  switch (k.type) {
    case FS_TYPE.INODE: {
      const p = need(v, INODE.size, 'inode');
      if (p) return { problem: p };
      const i = decodeInode(v);
      return {
        text: `inode ino ${k.first} size ${i.size} meta_seq ${i.meta_seq} data_seq ${i.data_seq} data_version ${i.data_version}\n` +
          `      online_blocks ${i.online_blocks} offline_blocks ${i.offline_blocks} next_readdir_pos ${i.next_readdir_pos} next_xattr_id ${i.next_xattr_id} version ${i.version}\n` +
          `      nlink ${i.nlink} uid ${i.uid} gid ${i.gid} mode 0${i.mode.toString(8)} rdev 0x${i.rdev.toString(16)} flags 0x${i.flags.toString(16)}\n` +
          `      atime ${ts(i.atime)} ctime ${ts(i.ctime)} mtime ${ts(i.mtime)} crtime ${ts(i.crtime)}`,
      };
    }
    case FS_TYPE.XATTR: {
      if (k.fourth === 0) {
        if (v.length < 8) return { problem: `xattr part 0 is ${v.length} bytes, shorter than its header` };
        const valLen = getU16(v, 0);
        const nameLen = getU8(v, 2);
        const name = latin(v.subarray(8, Math.min(v.length, 8 + nameLen)));
        return { text: `xattr ino ${k.first} hash 0x${k.second.toString(16)} id ${k.third} part 0 name_len ${nameLen} val_len ${valLen} name ${name}` };
      }
      return { text: `xattr ino ${k.first} hash 0x${k.second.toString(16)} id ${k.third} part ${k.fourth} bytes ${v.length}` };
    }
    case FS_TYPE.DIRENT:
    case FS_TYPE.READDIR:
    case FS_TYPE.LINK_BACKREF: {
      const d = decodeDirent(v);
      if (!d) return { problem: `dirent value is ${v.length} bytes, want 33..287` };
      const t = k.type === FS_TYPE.DIRENT ? 'dirent' : k.type === FS_TYPE.READDIR ? 'readdir' : 'link_backref';
      return { text: `${t} ino ${d.ino} hash 0x${d.hash.toString(16)} pos ${d.pos} type ${DT_NAMES[d.type] ?? d.type} name ${latin(d.name)}` };
    }
    case FS_TYPE.SYMLINK:
      return { text: `symlink ino ${k.first} nr ${k.second} target ${latin(v.subarray(0, v.indexOf(0) >= 0 ? v.indexOf(0) : v.length))}` };
    case FS_TYPE.DATA_EXTENT: {
      const e = decodeDataExtent(v);
      if (!e) return { problem: `data extent value is ${v.length} bytes, want 16` };
      return { text: `extent ino ${k.first} iblock ${k.second - k.third + 1n} len ${k.third} blkno ${e.blkno} flags 0x${e.flags.toString(16)}` };
    }
    default:
      return { problem: `unknown zone ${k.zone} type ${k.type}` };
  }
}

/** Parent item value: one block ref. */
export function decodeParentRef(v: Uint8Array): { blkno: bigint; seq: bigint } | null {
  return v.length === 16 ? readRef(v, 0) : null;
}
