/*
 * Walking every metadata block reachable from the super block.
 *
 * `scoutfs print` and `scoutfs fsck` share this walker.  It reads the super
 * block, the 15 quorum blocks, then every structure the super references, in
 * the order of FORMAT.md 16: mounted_clients, log_merge, the server alloc
 * lists, the meta and data allocator btrees, srch_root, logs_root, the srch
 * files of srch_root items, and for every log_trees item its lists,
 * allocator trees, bloom block, srch file and item tree; finally fs_root.
 *
 * Unlike the reference print, every block is verified as the kernel reads
 * it (crc, magic, fsid, seq, blkno: src/format/block.ts checkBlock) and
 * btree blocks are checked further: level, AVL links, key order within the
 * block and against the parent's key bounds, and the leaf hash table.  A
 * failure becomes a Problem naming the blkno, the structure it belongs to
 * and the check; the walker never throws on bad bytes and goes on with the
 * next structure.  A block referenced twice is a problem too (no cycles,
 * no shared ownership), which also bounds the walk.
 *
 * Output goes to an optional line sink (print) and to visitor callbacks
 * (fsck uses them to account block ownership).
 */
import { getU16, getU32, getU64 } from '../format/layout.js';
import { checkBlock, readHeader, hex32, type BlockRef } from '../format/block.js';
import { blockCrc } from '../format/crc.js';
import { decodeSuper, type Super } from '../format/super.js';
import { decodeQuorumBlock, quorumBlkno, QUORUM_EVENT_NAMES } from '../format/quorum.js';
import {
  walkItems, readItem, itemValue, blkLevel, blkNrItems, blkTotalItemBytes, blkMidFreeLen,
  blkItemRoot, LEAF_HASH_OFF, BTREE_ITEM_FLAG_DELETION,
} from '../format/btree.js';
import { compareKeys, formatKey, ONES_KEY, type Key } from '../format/key.js';
import { leafHashBucket } from '../format/hash.js';
import { allocListEntries, readAllocListBlock } from '../format/alloc.js';
import { bloomCountBits, bloomTotalSet } from '../format/bloom.js';
import { readSrchEntry, decodeSrchEntry, ZERO_SRCH_ENTRY, SRCH_BLOCK_ENTRIES_OFF, readSrchFile, type SrchFile } from '../format/srch.js';
import { decodeLogTrees, LOG_TREES } from '../format/logtrees.js';
import { ZONE, SRCH_TYPE } from '../format/items.js';
import {
  formatIpv4, readAllocListHead, readBtreeRoot, type AllocListHead, type BtreeRoot,
} from '../format/common.js';
import { SRCH_COMPACT } from '../format/srch.js';
import { LOG_MERGE_REQUEST, LOG_MERGE_COMPLETE, LOG_MERGE_FREEING } from '../format/logmerge.js';
import {
  MAGIC, SM_BLOCK_SIZE, LG_BLOCK_SIZE, SUPER_BLKNO, QUORUM_BLOCKS, LEAF_ITEM_HASH_NR,
  BTREE_MAX_HEIGHT, SRCH_PARENT_REFS, SRCH_BLOCK_SAFE_BYTES, type BlockKind, SUPER_FLAG_META_BDEV,
} from '../format/constants.js';
import type { CorruptCheck } from '../format/errors.js';
import { decodeItem, decodeParentRef, fmtAlloc, fmtList, fmtRoot, fmtSrchFile } from './decode.js';
import { formatUuid } from '../mkfs/mkfs.js';

export interface ReadDevice {
  readonly path: string;
  readonly sizeBytes: bigint;
  read(off: bigint, len: number): Promise<Uint8Array>;
}

export interface Problem {
  blkno: bigint | null;
  /** The structure the block belongs to, e.g. "fs_root" or "logs_root item rid 12 nr 1 meta_avail". */
  owner: string;
  check: CorruptCheck | 'reference' | 'accounting' | 'warning';
  detail: string;
}

export interface WalkVisitor {
  /** A verified LG metadata block reached from `owner`. */
  block?(kind: BlockKind, blkno: bigint, owner: string, b: Uint8Array): void;
  /** A btree leaf item. */
  leafItem?(owner: string, key: Key, seq: bigint, flags: number, val: Uint8Array): void;
  /** The blknos listed in an alloc list block (free-but-listed blocks). */
  listEntries?(owner: string, blknos: bigint[]): void;
}

export interface WalkResult {
  super: Super | null;
  problems: Problem[];
  blocks: number;
}

export class VolumeWalker {
  private readonly problems: Problem[] = [];
  private readonly seen = new Map<bigint, string>();
  private fsid = 0n;
  private blocks = 0;

  constructor(
    private readonly dev: ReadDevice,
    private readonly visitor: WalkVisitor = {},
    private readonly out: ((line: string) => void) | null = null,
  ) {}

  private emit(line: string): void {
    if (this.out) this.out(line);
  }

  private problem(p: Problem): void {
    this.problems.push(p);
    const where = p.blkno === null ? '' : ` blkno ${p.blkno}`;
    this.emit(`*** ERROR:${where} (${p.owner}): ${p.check}: ${p.detail}`);
  }

  private async readRaw(off: bigint, len: number, owner: string, blkno: bigint): Promise<Uint8Array | null> {
    if (off + BigInt(len) > this.dev.sizeBytes) {
      this.problem({ blkno, owner, check: 'reference', detail: `block lies past the end of ${this.dev.path} (${this.dev.sizeBytes} bytes)` });
      return null;
    }
    try {
      return await this.dev.read(off, len);
    } catch (e) {
      this.problem({ blkno, owner, check: 'io', detail: `read failed: ${(e as Error).message}` });
      return null;
    }
  }

  /** Read and verify an LG block named by a ref; null (with a problem) if bad. */
  private async readLg(ref: BlockRef, kind: BlockKind, owner: string): Promise<Uint8Array | null> {
    const prev = this.seen.get(ref.blkno);
    if (prev !== undefined) {
      this.problem({ blkno: ref.blkno, owner, check: 'reference', detail: `block already referenced by ${prev}` });
      return null;
    }
    this.seen.set(ref.blkno, owner);
    if (ref.blkno < 2n) {
      this.problem({ blkno: ref.blkno, owner, check: 'reference', detail: 'ref points into the reserved blocks 0..1' });
      return null;
    }
    const b = await this.readRaw(ref.blkno * BigInt(LG_BLOCK_SIZE), LG_BLOCK_SIZE, owner, ref.blkno);
    if (!b) return null;
    const fail = checkBlock(b, { kind, fsid: this.fsid, blkno: ref.blkno, seq: ref.seq });
    if (fail) {
      this.problem({ blkno: ref.blkno, owner, check: fail.check, detail: `${kind} block: ${fail.detail}` });
      return null;
    }
    this.blocks++;
    this.visitor.block?.(kind, ref.blkno, owner, b);
    return b;
  }

  async walk(): Promise<WalkResult> {
    const sbBytes = await this.readRaw(SUPER_BLKNO * BigInt(SM_BLOCK_SIZE), SM_BLOCK_SIZE, 'super', SUPER_BLKNO);
    if (!sbBytes) return { super: null, problems: this.problems, blocks: 0 };
    const hdr = readHeader(sbBytes);
    const calc = blockCrc(sbBytes);
    if (hdr.magic !== MAGIC.super) {
      this.problem({ blkno: SUPER_BLKNO, owner: 'super', check: 'magic', detail: `magic 0x${hex32(hdr.magic)} is not the super block magic 0x${hex32(MAGIC.super)}: not a scoutfs device` });
      return { super: null, problems: this.problems, blocks: 0 };
    }
    const sb = decodeSuper(sbBytes);
    this.fsid = sb.hdr.fsid;
    this.printSuper(sb, calc);
    if (hdr.crc !== calc) this.problem({ blkno: SUPER_BLKNO, owner: 'super', check: 'crc', detail: `stored crc 0x${hex32(hdr.crc)} != computed 0x${hex32(calc)}` });
    if (hdr.blkno !== SUPER_BLKNO) this.problem({ blkno: SUPER_BLKNO, owner: 'super', check: 'blkno', detail: `header blkno ${hdr.blkno} != ${SUPER_BLKNO}` });
    if ((sb.flags & SUPER_FLAG_META_BDEV) === 0n) {
      this.problem({ blkno: SUPER_BLKNO, owner: 'super', check: 'warning', detail: 'Printing metadata from a data device! (super flags has no META_BDEV bit)' });
    }
    if (sb.fmt_vers !== 0n) this.problem({ blkno: SUPER_BLKNO, owner: 'super', check: 'structure', detail: `format version ${sb.fmt_vers} is not supported (only 0)` });
    if (sb.total_meta_blocks * BigInt(LG_BLOCK_SIZE) > this.dev.sizeBytes) {
      this.problem({ blkno: SUPER_BLKNO, owner: 'super', check: 'structure', detail: `total_meta_blocks ${sb.total_meta_blocks} exceeds the device size ${this.dev.sizeBytes}` });
    }

    await this.walkQuorum();

    await this.walkBtree(sb.mounted_clients, 'mounted_clients');
    // Log merge items own list blocks and (complete, freeing) whole trees.
    // A request's root is a subtree of fs_root and is walked there.
    const merges: [string, BtreeRoot | null, Uint8Array | null][] = [];
    await this.walkBtree(sb.log_merge, 'log_merge', (k, v) => {
      const id = `log_merge ${k.zone}.${k.first}.${k.second}`;
      if (k.zone === ZONE.LOG_MERGE_REQUEST && v.length === LOG_MERGE_REQUEST.size) merges.push([id, null, v]);
      if (k.zone === ZONE.LOG_MERGE_COMPLETE && v.length === LOG_MERGE_COMPLETE.size) merges.push([id, readBtreeRoot(v, 64), v]);
      if (k.zone === ZONE.LOG_MERGE_FREEING && v.length === LOG_MERGE_FREEING.size) merges.push([id, readBtreeRoot(v, 0), null]);
    });
    for (const [owner, root, lists] of merges) {
      if (lists) {
        await this.walkList(readAllocListHead(lists, 0), `${owner} meta_avail`);
        await this.walkList(readAllocListHead(lists, 32), `${owner} meta_freed`);
      }
      if (root) await this.walkBtree(root, `${owner} root`);
    }
    for (const i of [0, 1]) await this.walkList(sb.server_meta_avail[i]!, `server_meta_avail[${i}]`);
    for (const i of [0, 1]) await this.walkList(sb.server_meta_freed[i]!, `server_meta_freed[${i}]`);
    for (const i of [0, 1]) await this.walkAllocRoot(sb.meta_alloc[i]!.root, `meta_alloc[${i}]`, sb.meta_alloc[i]!.total_len);
    await this.walkAllocRoot(sb.data_alloc.root, 'data_alloc', sb.data_alloc.total_len);

    const srchFiles: [string, SrchFile][] = [];
    const compactLists: [string, Uint8Array][] = [];
    await this.walkBtree(sb.srch_root, 'srch_root', (k, v) => {
      if (k.zone === ZONE.SRCH && (k.type === SRCH_TYPE.LOG || k.type === SRCH_TYPE.BLOCKS) && v.length === 88) {
        srchFiles.push([`srch_root ${k.type === SRCH_TYPE.LOG ? 'log' : 'blocks'} file ${k.second}`, readSrchFile(v, 0)]);
      }
      if (k.zone === ZONE.SRCH && (k.type === SRCH_TYPE.PENDING || k.type === SRCH_TYPE.BUSY) && v.length === SRCH_COMPACT.size) {
        compactLists.push([`srch_root compact ${k.type === SRCH_TYPE.PENDING ? 'pending' : 'busy'} ${k.second}.${k.third}`, v]);
      }
    });
    for (const [owner, v] of compactLists) {
      await this.walkList(readAllocListHead(v, 0), `${owner} meta_avail`);
      await this.walkList(readAllocListHead(v, 32), `${owner} meta_freed`);
    }
    const logTrees: [string, Uint8Array][] = [];
    await this.walkBtree(sb.logs_root, 'logs_root', (k, v) => {
      if (k.zone === ZONE.LOG_TREES && v.length === LOG_TREES.size) logTrees.push([`logs_root rid ${k.first.toString(16)} nr ${k.second}`, v]);
    });
    for (const [owner, f] of srchFiles) await this.walkSrchFile(f, owner);
    for (const [owner, v] of logTrees) {
      const lt = decodeLogTrees(v);
      this.emit(`${owner}:`);
      await this.walkList(lt.meta_avail, `${owner} meta_avail`);
      await this.walkList(lt.meta_freed, `${owner} meta_freed`);
      await this.walkAllocRoot(lt.data_avail.root, `${owner} data_avail`, lt.data_avail.total_len);
      await this.walkAllocRoot(lt.data_freed.root, `${owner} data_freed`, lt.data_freed.total_len);
      if (lt.bloom_ref.blkno !== 0n) await this.walkBloom(lt.bloom_ref, `${owner} bloom`);
      await this.walkSrchFile(lt.srch_file, `${owner} srch_file`);
      await this.walkBtree(lt.item_root, `${owner} item_root`);
    }
    await this.walkBtree(sb.fs_root, 'fs_root');
    return { super: sb, problems: this.problems, blocks: this.blocks };
  }

  private printSuper(sb: Super, calc: number): void {
    const h = sb.hdr;
    const crcNote = h.crc === calc ? '' : ` (!= 0x${hex32(calc)})`;
    this.emit(`super blkno ${h.blkno}:`);
    this.emit(`  crc 0x${hex32(h.crc)}${crcNote} magic 0x${hex32(h.magic)} fsid ${h.fsid.toString(16)} seq ${h.seq} blkno ${h.blkno}`);
    this.emit(`  id ${sb.id} fmt_vers ${sb.fmt_vers} flags 0x${sb.flags.toString(16)} uuid ${formatUuid(sb.uuid)}`);
    this.emit(`  seq ${sb.seq} next_ino ${sb.next_ino} inode_count ${sb.inode_count}`);
    this.emit(`  total_meta_blocks ${sb.total_meta_blocks} total_data_blocks ${sb.total_data_blocks}`);
    this.emit(`  quorum config version ${sb.qconf.version}`);
    sb.qconf.slots.forEach((a, i) => {
      if (a.family === 1) this.emit(`    slot ${i}: addr ${formatIpv4(a.addr)}:${a.port}`);
      else if (a.family !== 0) this.emit(`    slot ${i}: unsupported family ${a.family}`);
    });
    this.emit(`  volopt set_bits 0x${sb.volopt.set_bits.toString(16)} data_alloc_zone_blocks ${sb.volopt.data_alloc_zone_blocks}`);
    sb.meta_alloc.forEach((a, i) => this.emit(`  meta_alloc[${i}]: ${fmtAlloc(a)}`));
    this.emit(`  data_alloc: ${fmtAlloc(sb.data_alloc)}`);
    sb.server_meta_avail.forEach((l, i) => this.emit(`  server_meta_avail[${i}]: ${fmtList(l)}`));
    sb.server_meta_freed.forEach((l, i) => this.emit(`  server_meta_freed[${i}]: ${fmtList(l)}`));
    for (const n of ['fs_root', 'logs_root', 'log_merge', 'mounted_clients', 'srch_root'] as const) {
      this.emit(`  ${n}: ${fmtRoot(sb[n])}`);
    }
  }

  private async walkQuorum(): Promise<void> {
    for (let i = 0; i < QUORUM_BLOCKS; i++) {
      const blkno = quorumBlkno(i);
      const owner = `quorum slot ${i}`;
      const b = await this.readRaw(blkno * BigInt(SM_BLOCK_SIZE), SM_BLOCK_SIZE, owner, blkno);
      if (!b) continue;
      const q = decodeQuorumBlock(b);
      const calc = blockCrc(b);
      this.emit(`quorum blkno ${blkno} (slot ${i}):`);
      this.emit(`  crc 0x${hex32(q.hdr.crc)}${q.hdr.crc === calc ? '' : ` (!= 0x${hex32(calc)})`} magic 0x${hex32(q.hdr.magic)} fsid ${q.hdr.fsid.toString(16)} seq ${q.hdr.seq} blkno ${q.hdr.blkno} write_nr ${q.write_nr}`);
      q.events.forEach((e, n) => {
        if (e.rid !== 0n || e.write_nr !== 0n) {
          this.emit(`  ${QUORUM_EVENT_NAMES[n]}: write_nr ${e.write_nr} rid ${e.rid.toString(16)} term ${e.term} ts ${e.ts.sec}.${String(e.ts.nsec).padStart(9, '0')}`);
        }
      });
      const fail = checkBlock(b, { kind: 'quorum', fsid: this.fsid, blkno, seq: null });
      if (fail) this.problem({ blkno, owner, check: fail.check, detail: `quorum block: ${fail.detail}` });
    }
  }

  private async walkList(head: AllocListHead, owner: string): Promise<void> {
    this.emit(`${owner} alloc list: ${fmtList(head)}`);
    let ref = head.ref;
    let total = 0n;
    let first = true;
    let hops = 0;
    while (ref.blkno !== 0n) {
      const b = await this.readLg(ref, 'allocList', owner);
      if (!b) return;
      const lb = readAllocListBlock(b);
      const entries = allocListEntries(b);
      this.emit(`  alloc list block blkno ${ref.blkno} seq ${ref.seq.toString(16)} crc 0x${hex32(getU32(b, 0))} next ${lb.next.blkno} start ${lb.start} nr ${lb.nr}`);
      if (!entries) {
        this.problem({ blkno: ref.blkno, owner, check: 'structure', detail: `start ${lb.start} + nr ${lb.nr} overflows the list array` });
        return;
      }
      if (entries.length > 0) this.emit(`    blknos ${summarizeBlknos(entries)}`);
      this.visitor.listEntries?.(owner, entries);
      if (first && lb.nr !== head.first_nr) {
        this.problem({ blkno: ref.blkno, owner, check: 'accounting', detail: `list head first_nr ${head.first_nr} != first block nr ${lb.nr}` });
      }
      first = false;
      total += BigInt(lb.nr);
      ref = lb.next;
      if (++hops > 1_000_000) break;
    }
    if (total !== head.total_nr) {
      this.problem({ blkno: head.ref.blkno, owner, check: 'accounting', detail: `list head total_nr ${head.total_nr} != sum of block nr ${total}` });
    }
  }

  private async walkAllocRoot(root: BtreeRoot, owner: string, totalLen: bigint): Promise<void> {
    let sum = 0n;
    const blknoExt = new Map<string, bigint>();
    const orderExt = new Map<string, bigint>();
    await this.walkBtree(root, owner, (k) => {
      if (k.zone === ZONE.FREE_EXTENT_BLKNO) { sum += k.second; blknoExt.set(`${k.first}/${k.second}`, k.second); }
      else if (k.zone === ZONE.FREE_EXTENT_ORDER) orderExt.set(`${k.second}/${k.third}`, k.third);
    });
    if (sum !== totalLen) {
      this.problem({ blkno: root.ref.blkno, owner, check: 'accounting', detail: `total_len ${totalLen} != sum of free extents ${sum}` });
    }
    const missing = [...blknoExt.keys()].filter((e) => !orderExt.has(e)).length + [...orderExt.keys()].filter((e) => !blknoExt.has(e)).length;
    if (missing > 0) {
      this.problem({ blkno: root.ref.blkno, owner, check: 'accounting', detail: `${missing} free extents are not stored in both keyings` });
    }
  }

  /** Walk a btree depth-first; `onLeaf` sees every leaf item in key order. */
  async walkBtree(root: BtreeRoot, owner: string, onLeaf?: (k: Key, v: Uint8Array, seq: bigint, flags: number) => void): Promise<void> {
    this.emit(`${owner} btree root: ${fmtRoot(root)}`);
    if (root.height === 0) {
      if (root.ref.blkno !== 0n) this.problem({ blkno: root.ref.blkno, owner, check: 'structure', detail: 'height 0 root with a non-zero ref' });
      return;
    }
    if (root.height > BTREE_MAX_HEIGHT) {
      this.problem({ blkno: root.ref.blkno, owner, check: 'structure', detail: `height ${root.height} exceeds ${BTREE_MAX_HEIGHT}` });
      return;
    }
    await this.walkBtreeBlock(root.ref, root.height - 1, null, ONES_KEY, owner, onLeaf);
  }

  private async walkBtreeBlock(
    ref: BlockRef, level: number, lowExcl: Key | null, highIncl: Key, owner: string,
    onLeaf?: (k: Key, v: Uint8Array, seq: bigint, flags: number) => void,
  ): Promise<void> {
    const b = await this.readLg(ref, 'btree', owner);
    if (!b) return;
    const lvl = blkLevel(b);
    this.emit(`  btree blkno ${ref.blkno} seq ${ref.seq.toString(16)} crc 0x${hex32(getU32(b, 0))} level ${lvl} nr_items ${blkNrItems(b)} total_item_bytes ${blkTotalItemBytes(b)} mid_free_len ${blkMidFreeLen(b)} item_root ${blkItemRoot(b)}`);
    if (lvl !== level) {
      this.problem({ blkno: ref.blkno, owner, check: 'level', detail: `block level ${lvl} != expected ${level}` });
      return;
    }
    const w = walkItems(b);
    if (!w.ok) {
      this.problem({ blkno: ref.blkno, owner, check: 'structure', detail: `btree items: ${w.problem}` });
      return;
    }
    if (w.offs.length === 0) {
      this.problem({ blkno: ref.blkno, owner, check: 'structure', detail: 'btree block with no items' });
      return;
    }
    let prev = lowExcl;
    let liveBytes = 0;
    const children: [BlockRef, Key | null, Key][] = [];
    for (const off of w.offs) {
      const it = readItem(b, off);
      liveBytes += 56 + ((it.val_len + 7) & ~7);
      if (prev && compareKeys(prev, it.key) >= 0) {
        this.problem({ blkno: ref.blkno, owner, check: 'structure', detail: `item key ${formatKey(it.key)} not greater than ${formatKey(prev)}` });
        return;
      }
      if (compareKeys(it.key, highIncl) > 0) {
        this.problem({ blkno: ref.blkno, owner, check: 'structure', detail: `item key ${formatKey(it.key)} above the parent bound ${formatKey(highIncl)}` });
        return;
      }
      const val = itemValue(b, it);
      if (lvl > 0) {
        const child = decodeParentRef(val);
        if (!child) {
          this.problem({ blkno: ref.blkno, owner, check: 'structure', detail: `parent item ${formatKey(it.key)} value is ${it.val_len} bytes, want 16` });
          return;
        }
        this.emit(`    parent ${formatKey(it.key)} -> blkno ${child.blkno} seq ${child.seq.toString(16)}`);
        children.push([child, prev, it.key]);
      } else {
        const del = (it.flags & BTREE_ITEM_FLAG_DELETION) !== 0;
        if (del) {
          this.emit(`    item ${formatKey(it.key)} seq ${it.seq} deletion`);
        } else {
          const d = decodeItem(it.key, val);
          if (d.problem !== undefined) {
            this.emit(`    item ${formatKey(it.key)} seq ${it.seq} val_len ${it.val_len}`);
            this.problem({ blkno: ref.blkno, owner, check: 'structure', detail: `item ${formatKey(it.key)}: ${d.problem}` });
          } else {
            this.emit(`    item ${formatKey(it.key)} seq ${it.seq}: ${d.text}`);
          }
        }
        this.visitor.leafItem?.(owner, it.key, it.seq, it.flags, val);
        if (!del) onLeaf?.(it.key, val, it.seq, it.flags);
      }
      prev = it.key;
    }
    if (liveBytes !== blkTotalItemBytes(b)) {
      this.problem({ blkno: ref.blkno, owner, check: 'accounting', detail: `total_item_bytes ${blkTotalItemBytes(b)} != live item bytes ${liveBytes}` });
    }
    if (lvl === 0) this.checkLeafHash(b, ref.blkno, owner, w.offs);
    for (const [child, lo, hi] of children) await this.walkBtreeBlock(child, lvl - 1, lo, hi, owner, onLeaf);
  }

  private checkLeafHash(b: Uint8Array, blkno: bigint, owner: string, offs: number[]): void {
    let used = 0;
    const buckets: string[] = [];
    for (let i = 0; i < LEAF_ITEM_HASH_NR; i++) {
      const v = getU16(b, LEAF_HASH_OFF + 2 * i);
      if (v !== 0) { used++; buckets.push(`${i},${v}`); }
    }
    this.emit(`    hash buckets (${used} of ${LEAF_ITEM_HASH_NR}): ${buckets.slice(0, 16).join(' ')}${buckets.length > 16 ? ' ...' : ''}`);
    if (used !== offs.length) {
      this.problem({ blkno, owner, check: 'structure', detail: `leaf hash has ${used} buckets for ${offs.length} items` });
      return;
    }
    for (const off of offs) {
      let bucket = leafHashBucket(b, off + 8);
      let found = false;
      for (let probes = 0; probes < LEAF_ITEM_HASH_NR; probes++) {
        const v = getU16(b, LEAF_HASH_OFF + 2 * bucket);
        if (v === off) { found = true; break; }
        if (v === 0) break;
        bucket = (bucket + 1) % LEAF_ITEM_HASH_NR;
      }
      if (!found) {
        this.problem({ blkno, owner, check: 'structure', detail: `leaf hash lookup misses the item at offset ${off}` });
        return;
      }
    }
  }

  private async walkBloom(ref: BlockRef, owner: string): Promise<void> {
    const b = await this.readLg(ref, 'bloom', owner);
    if (!b) return;
    const total = bloomTotalSet(b);
    const counted = bloomCountBits(b);
    this.emit(`  bloom blkno ${ref.blkno} seq ${ref.seq.toString(16)} crc 0x${hex32(getU32(b, 0))} total_set ${total}`);
    if (BigInt(counted) !== total) {
      this.problem({ blkno: ref.blkno, owner, check: 'accounting', detail: `bloom total_set ${total} != ${counted} bits set` });
    }
  }

  private async walkSrchFile(f: SrchFile, owner: string): Promise<void> {
    this.emit(`${owner} srch file: ${fmtSrchFile(f)}`);
    if (f.height === 0) return;
    const counted = { entries: 0n, blocks: 0n };
    await this.walkSrchBlock(f.ref, f.height - 1, owner, counted);
    if (counted.entries !== f.entries) {
      this.problem({ blkno: f.ref.blkno, owner, check: 'accounting', detail: `srch file entries ${f.entries} != ${counted.entries} decoded` });
    }
    if (counted.blocks !== f.blocks) {
      this.problem({ blkno: f.ref.blkno, owner, check: 'accounting', detail: `srch file blocks ${f.blocks} != ${counted.blocks} found` });
    }
  }

  private async walkSrchBlock(ref: BlockRef, level: number, owner: string, counted: { entries: bigint; blocks: bigint }): Promise<void> {
    if (level > 0) {
      const b = await this.readLg(ref, 'srchParent', owner);
      if (!b) return;
      this.emit(`  srch parent blkno ${ref.blkno} seq ${ref.seq.toString(16)} crc 0x${hex32(getU32(b, 0))} level ${level}`);
      for (let i = 0; i < SRCH_PARENT_REFS; i++) {
        const child = { blkno: getU64(b, 32 + 16 * i), seq: getU64(b, 40 + 16 * i) };
        if (child.blkno !== 0n) await this.walkSrchBlock(child, level - 1, owner, counted);
      }
      return;
    }
    const b = await this.readLg(ref, 'srchBlock', owner);
    if (!b) return;
    counted.blocks++;
    const nr = getU32(b, 104);
    const bytes = getU32(b, 108);
    const first = readSrchEntry(b, 32);
    const last = readSrchEntry(b, 56);
    this.emit(`  srch block blkno ${ref.blkno} seq ${ref.seq.toString(16)} crc 0x${hex32(getU32(b, 0))} entry_nr ${nr} entry_bytes ${bytes} first ${first.hash.toString(16)}.${first.ino}.${first.id} last ${last.hash.toString(16)}.${last.ino}.${last.id}`);
    const end = SRCH_BLOCK_ENTRIES_OFF + bytes;
    if (bytes > SRCH_BLOCK_SAFE_BYTES + 26 || end > LG_BLOCK_SIZE) {
      this.problem({ blkno: ref.blkno, owner, check: 'structure', detail: `entry_bytes ${bytes} overflows the block` });
      return;
    }
    let pos = SRCH_BLOCK_ENTRIES_OFF;
    let prev = ZERO_SRCH_ENTRY;
    for (let i = 0; i < nr; i++) {
      if (pos - SRCH_BLOCK_ENTRIES_OFF > SRCH_BLOCK_SAFE_BYTES) {
        this.problem({ blkno: ref.blkno, owner, check: 'structure', detail: `entry ${i} starts at ${pos - SRCH_BLOCK_ENTRIES_OFF}, beyond ${SRCH_BLOCK_SAFE_BYTES}` });
        return;
      }
      const d = decodeSrchEntry(b, pos, end, prev);
      if (!d) {
        this.problem({ blkno: ref.blkno, owner, check: 'structure', detail: `entry ${i} at byte ${pos} does not decode` });
        return;
      }
      this.emit(`    entry ${d.entry.hash.toString(16)}.${d.entry.ino}.${d.entry.id}`);
      prev = d.entry;
      pos += d.bytes;
    }
    counted.entries += BigInt(nr);
    if (pos !== end) {
      this.problem({ blkno: ref.blkno, owner, check: 'structure', detail: `entries decode to ${pos - SRCH_BLOCK_ENTRIES_OFF} bytes, entry_bytes says ${bytes}` });
    }
  }
}

/** "4..1027" style run-length summary of a blkno list. */
export function summarizeBlknos(list: bigint[]): string {
  const parts: string[] = [];
  let i = 0;
  while (i < list.length) {
    let j = i;
    while (j + 1 < list.length && list[j + 1] === list[j]! + 1n) j++;
    parts.push(j > i ? `${list[i]}..${list[j]}` : `${list[i]}`);
    i = j + 1;
    if (parts.length >= 32 && i < list.length) { parts.push(`... (${list.length - i} more)`); break; }
  }
  return parts.join(' ');
}
