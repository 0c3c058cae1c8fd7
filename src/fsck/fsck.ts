/*
 * fsck: a read-only check of a whole volume (issue 3 s5).
 *
 * It runs the volume walker (src/print/walk.ts: every reachable block read
 * and verified as the kernel reads it, btree structure, leaf hashes, list
 * and allocator accounting), then accounts every metadata block:
 *
 *   every LG block in [2, total_meta_blocks) is exactly one of
 *     referenced  (reached from the super through some ref),
 *     free        (inside a free extent of meta_alloc[0] or meta_alloc[1]),
 *     listed      (an entry of an alloc list: server avail/freed, a mount's
 *                  meta_avail/meta_freed, a srch compaction's or a log
 *                  merge's lists).
 *   None leaked (in no class), none owned twice (in two classes, or twice
 *   in one), none outside the device.
 *
 * Data blocks: every free data extent (data_alloc and each mount's
 * data_avail/data_freed) lies inside [64, total_data_blocks) and no two
 * overlap; then src/fsck/data.ts merges the inode and extent items of
 * fs_root and the log trees as a mount reads them and accounts every data
 * block as mapped by a file or free, exactly once, and every file's
 * online/offline counts against its extents.
 *
 * The data device's super must match the metadata device's (uuid, fsid,
 * fmt_vers, META flag clear) when a data device is given.
 *
 * Progress: `onProgress` is called with the number of blocks verified so
 * far, at most every 1024 blocks, for large devices.
 */
import { VolumeWalker, type Problem, type ReadDevice } from '../print/walk.js';
import { decodeSuper } from '../format/super.js';
import { ZONE } from '../format/items.js';
import { LG_BLOCK_SIZE, SM_BLOCK_SIZE, SUPER_BLKNO, MAGIC, DATA_DEV_START_BLKNO, SUPER_FLAG_META_BDEV } from '../format/constants.js';
import { getU32 } from '../format/layout.js';
import { blockCrc } from '../format/crc.js';
import { DataAccounting, type DataReport } from './data.js';

export interface FsckReport {
  problems: Problem[];
  blocks: number;
  metaBlocks: { total: bigint; referenced: number; free: bigint; listed: number };
  /** Data blocks in [64, total_data_blocks): mapped by files and free (null when the walk found no super). */
  dataBlocks: DataReport | null;
}

interface Extent { start: bigint; len: bigint; owner: string }

export async function fsck(meta: ReadDevice, data: ReadDevice | null, onProgress?: (blocks: number) => void): Promise<FsckReport> {
  const referenced = new Map<bigint, string>();
  const listed = new Map<bigint, string>();
  const metaFree: Extent[] = [];
  const dataFree: Extent[] = [];
  const extra: Problem[] = [];
  let verified = 0;
  const dataAcct = new DataAccounting();
  const walker = new VolumeWalker(meta, {
    block(_kind, blkno, owner) {
      referenced.set(blkno, owner);
      if (++verified % 1024 === 0) onProgress?.(verified);
    },
    listEntries(owner, blknos) {
      for (const b of blknos) {
        const prev = listed.get(b);
        if (prev !== undefined) extra.push({ blkno: b, owner, check: 'accounting', detail: `blkno listed twice: also in ${prev}` });
        else listed.set(b, owner);
      }
    },
    leafItem(owner, k, seq, flags, val) {
      dataAcct.item(owner, k, seq, flags, val);
      if (k.zone !== ZONE.FREE_EXTENT_BLKNO) return;
      const ext = { start: k.first - k.second + 1n, len: k.second, owner };
      if (owner === 'meta_alloc[0]' || owner === 'meta_alloc[1]') metaFree.push(ext);
      else if (owner === 'data_alloc' || owner.endsWith(' data_avail') || owner.endsWith(' data_freed')) dataFree.push(ext);
    },
  });
  const res = await walker.walk();
  const problems = [...res.problems, ...extra];
  const sb = res.super;
  const report: FsckReport = { problems, blocks: res.blocks, metaBlocks: { total: 0n, referenced: referenced.size, free: 0n, listed: listed.size }, dataBlocks: null };
  if (!sb) return report;
  const totalMeta = sb.total_meta_blocks;
  report.metaBlocks.total = totalMeta;

  // Free extents: inside the device, no overlaps.
  const checkExtents = (exts: Extent[], lo: bigint, hi: bigint, what: string) => {
    exts.sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
    let prev: Extent | null = null;
    for (const e of exts) {
      if (e.start < lo || e.start + e.len > hi) {
        problems.push({ blkno: e.start, owner: e.owner, check: 'accounting', detail: `free ${what} extent [${e.start}, +${e.len}) outside [${lo}, ${hi})` });
      }
      if (prev && prev.start + prev.len > e.start) {
        problems.push({ blkno: e.start, owner: e.owner, check: 'accounting', detail: `free ${what} extent [${e.start}, +${e.len}) overlaps [${prev.start}, +${prev.len}) of ${prev.owner}` });
      }
      prev = e;
    }
  };
  checkExtents(metaFree, 2n, totalMeta, 'metadata');
  checkExtents(dataFree, DATA_DEV_START_BLKNO, sb.total_data_blocks, 'data');
  report.dataBlocks = dataAcct.check(sb.total_data_blocks, dataFree, problems);

  // Every metadata block in exactly one class.
  const n = Number(totalMeta);
  const owner = new Uint8Array(n); // 0 none, 1 referenced, 2 listed, 3 free
  const names = ['', 'referenced', 'listed', 'free'];
  const claim = (blkno: bigint, cls: number, who: string) => {
    if (blkno < 2n || blkno >= totalMeta) {
      problems.push({ blkno, owner: who, check: 'accounting', detail: `${names[cls]} blkno outside the metadata device's [2, ${totalMeta})` });
      return;
    }
    const i = Number(blkno);
    if (owner[i] !== 0) {
      problems.push({ blkno, owner: who, check: 'accounting', detail: `block is both ${names[owner[i]!]} and ${names[cls]}` });
      return;
    }
    owner[i] = cls;
  };
  for (const [b, who] of referenced) claim(b, 1, who);
  for (const [b, who] of listed) claim(b, 2, who);
  for (const e of metaFree) {
    report.metaBlocks.free += e.len;
    const end = e.start + e.len > totalMeta ? totalMeta : e.start + e.len;
    for (let b = e.start < 2n ? 2n : e.start; b < end; b++) {
      const i = Number(b);
      if (owner[i] !== 0) problems.push({ blkno: b, owner: e.owner, check: 'accounting', detail: `block is both ${names[owner[i]!]} and free` });
      else owner[i] = 3;
    }
  }
  let runStart = -1;
  const leaked: string[] = [];
  let leakedCount = 0;
  for (let i = 2; i <= n; i++) {
    const isLeak = i < n && owner[i] === 0;
    if (isLeak && runStart < 0) runStart = i;
    if (!isLeak && runStart >= 0) {
      leakedCount += i - runStart;
      leaked.push(i - 1 > runStart ? `${runStart}..${i - 1}` : `${runStart}`);
      runStart = -1;
    }
  }
  if (leakedCount > 0) {
    problems.push({
      blkno: null, owner: 'metadata allocation', check: 'accounting',
      detail: `${leakedCount} metadata blocks are neither referenced, free nor listed (leaked): ${leaked.slice(0, 20).join(' ')}${leaked.length > 20 ? ' ...' : ''}`,
    });
  }

  if (data) await checkDataSuper(data, sb.hdr.fsid, sb.uuid, sb.fmt_vers, problems);
  return report;
}

async function checkDataSuper(data: ReadDevice, fsid: bigint, uuid: Uint8Array, fmtVers: bigint, problems: Problem[]): Promise<void> {
  const owner = `data device ${data.path} super`;
  let b: Uint8Array;
  try {
    b = await data.read(SUPER_BLKNO * BigInt(SM_BLOCK_SIZE), SM_BLOCK_SIZE);
  } catch (e) {
    problems.push({ blkno: SUPER_BLKNO, owner, check: 'io', detail: (e as Error).message });
    return;
  }
  if (getU32(b, 4) !== MAGIC.super) {
    problems.push({ blkno: SUPER_BLKNO, owner, check: 'magic', detail: 'no scoutfs super block on the data device' });
    return;
  }
  if (getU32(b, 0) !== blockCrc(b)) problems.push({ blkno: SUPER_BLKNO, owner, check: 'crc', detail: 'data device super crc mismatch' });
  const d = decodeSuper(b);
  if (d.hdr.fsid !== fsid) problems.push({ blkno: SUPER_BLKNO, owner, check: 'fsid', detail: `data super fsid ${d.hdr.fsid.toString(16)} != meta ${fsid.toString(16)}` });
  if (Buffer.compare(Buffer.from(d.uuid), Buffer.from(uuid)) !== 0) problems.push({ blkno: SUPER_BLKNO, owner, check: 'structure', detail: 'data super uuid differs from the metadata super' });
  if (d.fmt_vers !== fmtVers) problems.push({ blkno: SUPER_BLKNO, owner, check: 'structure', detail: `data super fmt_vers ${d.fmt_vers} != ${fmtVers}` });
  if ((d.flags & SUPER_FLAG_META_BDEV) !== 0n) problems.push({ blkno: SUPER_BLKNO, owner, check: 'structure', detail: 'data device super has the META_BDEV flag: devices swapped?' });
  if (d.total_data_blocks * BigInt(SM_BLOCK_SIZE) > data.sizeBytes) problems.push({ blkno: SUPER_BLKNO, owner, check: 'structure', detail: `total_data_blocks ${d.total_data_blocks} exceed the data device size` });
  void LG_BLOCK_SIZE;
}
