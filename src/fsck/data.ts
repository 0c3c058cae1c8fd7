/*
 * fsck's data block accounting: every data block is owned exactly once.
 *
 * The walk (src/print/walk.ts) hands every leaf item of fs_root and of
 * every log tree to item(); we keep, per key, the version a mount would
 * read (PROTOCOL.md 5.2: the greatest seq wins, fs_root first and the log
 * trees in logs_root order keep the first seen on equal seqs, a winning
 * deletion hides the key) for the two item types that matter here:
 *
 *   4.ino.1          inode: size, online_blocks, offline_blocks, mode
 *   4.ino.7.last.len data extent: blkno, flags (FORMAT.md 8.6.5)
 *
 * check() then asserts, for blocks in [64, total_data_blocks):
 *   - every mapped extent (blkno != 0) lies inside the device;
 *   - no block is both mapped and free, mapped twice, or free twice (the
 *     free extents are data_alloc's and every log tree's data_avail and
 *     data_freed, which fsck.ts collects);
 *   - none is leaked: mapped + free covers all of them;
 * and per file:
 *   - extents do not overlap, flags are OFFLINE/UNWRITTEN only, an
 *     unmapped extent is OFFLINE;
 *   - online_blocks = mapped blocks neither UNWRITTEN nor OFFLINE and
 *     offline_blocks = OFFLINE blocks, as the inode says;
 *   - extents belong to an inode that exists.
 * This is what "no block leaked or owned twice, offline and online counts
 * consistent" means after a crash (issue 13).
 *
 * Memory: one entry per inode and extent item (the rest is not kept).
 * Items that decode badly are problems, never exceptions.
 */
import { DATA_DEV_START_BLKNO } from '../format/constants.js';
import { EXTENT_FLAG, FS_TYPE, ZONE, decodeInode } from '../format/items.js';
import { getU64, getU8 } from '../format/layout.js';
import type { Key } from '../format/key.js';
import type { Problem } from '../print/walk.js';

const DELETION = 1;

interface Version {
  key: Key;
  seq: bigint;
  flags: number;
  val: Uint8Array;
  tree: number;
}

export interface DataExtent {
  start: bigint;
  len: bigint;
  owner: string;
}

export interface DataReport {
  total: bigint;
  mapped: bigint;
  free: bigint;
  files: number;
}

export class DataAccounting {
  private readonly winners = new Map<string, Version>();
  private readonly trees = new Map<string, number>();

  /** A leaf item of `owner`'s btree (WalkVisitor.leafItem). */
  item(owner: string, key: Key, seq: bigint, flags: number, val: Uint8Array): void {
    if (key.zone !== ZONE.FS || (key.type !== FS_TYPE.INODE && key.type !== FS_TYPE.DATA_EXTENT)) return;
    const isFsRoot = owner === 'fs_root';
    if (!isFsRoot && !owner.endsWith(' item_root')) return;
    let tree = isFsRoot ? 0 : this.trees.get(owner);
    if (tree === undefined) this.trees.set(owner, (tree = this.trees.size + 1));
    const k = `${key.first}:${key.type}:${key.second}:${key.third}`;
    const cur = this.winners.get(k);
    if (cur === undefined || seq > cur.seq || (seq === cur.seq && tree < cur.tree)) {
      this.winners.set(k, { key, seq, flags, val: val.slice(), tree });
    }
  }

  /** Every file's extents as a mount reads them, sorted (tests and debugging). */
  fileExtents(): Map<bigint, { start: bigint; len: bigint; blkno: bigint; flags: number }[]> {
    const out = new Map<bigint, { start: bigint; len: bigint; blkno: bigint; flags: number }[]>();
    for (const v of this.winners.values()) {
      if ((v.flags & DELETION) !== 0 || v.key.type !== FS_TYPE.DATA_EXTENT || v.val.length !== 16) continue;
      let list = out.get(v.key.first);
      if (list === undefined) out.set(v.key.first, (list = []));
      list.push({ start: v.key.second - v.key.third + 1n, len: v.key.third, blkno: getU64(v.val, 0), flags: getU8(v.val, 8) });
    }
    for (const list of out.values()) list.sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
    return out;
  }

  check(totalDataBlocks: bigint, free: readonly DataExtent[], problems: Problem[]): DataReport {
    const p = (owner: string, detail: string, blkno: bigint | null = null): void => {
      problems.push({ blkno, owner, check: 'accounting', detail });
    };
    const inodes = new Map<bigint, { online: bigint; offline: bigint; reg: boolean }>();
    const files = new Map<bigint, { start: bigint; len: bigint; blkno: bigint; flags: number }[]>();
    for (const v of this.winners.values()) {
      if ((v.flags & DELETION) !== 0) continue;
      const ino = v.key.first;
      if (v.key.type === FS_TYPE.INODE) {
        if (v.val.length !== 160) {
          p(`inode ${ino}`, `inode item of ${v.val.length} bytes`);
          continue;
        }
        const i = decodeInode(v.val);
        inodes.set(ino, { online: i.online_blocks, offline: i.offline_blocks, reg: (i.mode & 0o170000) === 0o100000 });
        continue;
      }
      const last = v.key.second;
      const len = v.key.third;
      if (v.val.length !== 16 || len === 0n || len - 1n > last) {
        p(`inode ${ino} extents`, `bad extent item ending at block ${last} of length ${len} (${v.val.length}-byte value)`);
        continue;
      }
      const e = { start: last - len + 1n, len, blkno: getU64(v.val, 0), flags: getU8(v.val, 8) };
      let list = files.get(ino);
      if (list === undefined) files.set(ino, (list = []));
      list.push(e);
    }

    const mapped: DataExtent[] = [];
    for (const [ino, list] of files) {
      const owner = `inode ${ino} extents`;
      list.sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
      let online = 0n;
      let offline = 0n;
      let prevEnd = -1n;
      for (const e of list) {
        if (e.start < prevEnd) p(owner, `extent at block ${e.start} overlaps the one before it (ending at ${prevEnd - 1n})`);
        prevEnd = e.start + e.len;
        if ((e.flags & ~(EXTENT_FLAG.OFFLINE | EXTENT_FLAG.UNWRITTEN)) !== 0) p(owner, `extent at block ${e.start} has unknown flags 0x${e.flags.toString(16)}`);
        const isOff = (e.flags & EXTENT_FLAG.OFFLINE) !== 0;
        if (e.blkno === 0n && !isOff) p(owner, `unmapped extent at block ${e.start} is not offline`);
        if (isOff) offline += e.len;
        else if (e.blkno !== 0n && (e.flags & EXTENT_FLAG.UNWRITTEN) === 0) online += e.len;
        if (e.blkno !== 0n) mapped.push({ start: e.blkno, len: e.len, owner: `${owner} block ${e.start}` });
      }
      const i = inodes.get(ino);
      if (i === undefined) {
        p(owner, `${list.length} data extents of an inode that does not exist`);
        continue;
      }
      if (!i.reg) p(owner, 'data extents of an inode that is not a regular file');
      if (i.online !== online || i.offline !== offline) {
        p(owner, `inode counts online ${i.online} offline ${i.offline}, extents hold online ${online} offline ${offline}`);
      }
    }

    // Every data block: mapped or free, exactly once.
    const lo = DATA_DEV_START_BLKNO;
    const all = [...mapped.map((e) => ({ ...e, what: 'mapped' })), ...free.map((e) => ({ ...e, what: 'free' }))];
    all.sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
    let reach = lo;
    let reachWhat = 'free';
    const gaps: string[] = [];
    let gapBlocks = 0n;
    const gap = (s: bigint, e: bigint): void => {
      gapBlocks += e - s;
      if (gaps.length < 20) gaps.push(e - s > 1n ? `${s}..${e - 1n}` : `${s}`);
    };
    for (const e of all) {
      if (e.start < lo || e.start + e.len > totalDataBlocks) {
        p(e.owner, `${e.what} data blocks [${e.start}, +${e.len}) outside [${lo}, ${totalDataBlocks})`, e.start);
        continue;
      }
      // Two free extents overlapping are fsck.ts's report already.
      if (e.start < reach && (e.what === 'mapped' || reachWhat === 'mapped')) {
        p(e.owner, `${e.what} data blocks [${e.start}, +${e.len}) are owned twice (they overlap ${reachWhat} blocks ending at ${reach - 1n})`, e.start);
      } else if (e.start > reach) {
        gap(reach, e.start);
      }
      const end = e.start + e.len;
      if (end > reach) {
        reach = end;
        reachWhat = e.what;
      }
    }
    if (reach < totalDataBlocks) gap(reach, totalDataBlocks);
    if (gapBlocks > 0n) {
      p('data allocation', `${gapBlocks} data blocks are neither mapped by a file nor free (leaked): ${gaps.join(' ')}${gapBlocks > 0n && gaps.length === 20 ? ' ...' : ''}`);
    }
    let mappedBlocks = 0n;
    for (const e of mapped) mappedBlocks += e.len;
    let freeBlocks = 0n;
    for (const e of free) freeBlocks += e.len;
    return { total: totalDataBlocks > lo ? totalDataBlocks - lo : 0n, mapped: mappedBlocks, free: freeBlocks, files: files.size };
  }
}
