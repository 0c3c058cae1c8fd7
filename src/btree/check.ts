/*
 * The btree checker: walks a whole tree through a BlockStore and reports
 * every violation of FORMAT.md 7 it finds, without throwing on bad bytes.
 * Tests run it after every commit; fsck will run it over every tree of a
 * volume and use the returned blkno set to cross-check the allocators
 * ("every block is allocated, free or referenced exactly once").
 *
 * Per block: the store's read checks (crc, magic, fsid, seq, blkno; a
 * failure is a problem, and the subtree below is skipped), level equal to
 * the depth's level, at least one item, and every in-block invariant of
 * inblock.verifyBlockItems (AVL links, key order, pads, flags, value
 * placement, total_item_bytes, mid_free_len, leaf hash exactness, and AVL
 * heights and balance when opts.avlHeights: off for blocks written by mkfs,
 * whose heights do not follow the kernel convention).
 *
 * Across blocks: every key of a child subtree lies in (previous parent key,
 * its own parent key]; the last item of every parent on the right spine is
 * the all-ones key; no block is referenced twice.  The root must be height
 * 0 with a zero ref, or 1..20 with a non-zero ref.
 *
 * Problems are strings naming the block and what is wrong; the walk
 * continues past them so one run reports as much as it can.  Failure to
 * read is reported, not thrown; assertion failures (our bugs) still throw.
 */
import assert from 'node:assert/strict';
import type { BlockRef } from '../format/block.js';
import { BTREE_MAX_HEIGHT } from '../format/constants.js';
import { CorruptionError, FsError } from '../format/errors.js';
import { compareKeyBytes, formatKey, readKey } from '../format/key.js';
import { ONES_KEY_BYTES, parentItemRef } from './btree.js';
import { verifyBlockItems, blockLevel, nrItems, totalItemBytes, I_KEY } from './inblock.js';
import type { BlockStore, BtreeRoot } from './store.js';

export interface CheckOptions {
  /** Check AVL heights and balance (default true). */
  avlHeights?: boolean;
  /** Stop collecting after this many problems (default 100). */
  maxProblems?: number;
}

export interface CheckResult {
  ok: boolean;
  problems: string[];
  /** Every blkno the tree references (its blocks). */
  blknos: Set<bigint>;
  blocks: number;
  leaves: number;
  items: number;
  /** Sum of total_item_bytes over leaves (fill statistics). */
  leafItemBytes: number;
  height: number;
}

const fmt = (kb: Uint8Array, off: number): string => formatKey(readKey(kb, off));

export async function checkBtree(store: BlockStore, root: BtreeRoot, opts: CheckOptions = {}): Promise<CheckResult> {
  const avlHeights = opts.avlHeights ?? true;
  const maxProblems = opts.maxProblems ?? 100;
  const res: CheckResult = { ok: true, problems: [], blknos: new Set(), blocks: 0, leaves: 0, items: 0, leafItemBytes: 0, height: root.height };
  const problem = (s: string): void => {
    if (res.problems.length < maxProblems) res.problems.push(s);
  };

  if (root.height < 0 || root.height > BTREE_MAX_HEIGHT) problem(`root height ${root.height}`);
  else if ((root.height === 0) !== (root.ref.blkno === 0n)) problem(`root height ${root.height} with blkno ${root.ref.blkno}`);
  else if (root.height > 0) await visit(root.ref, root.height - 1, null, null);
  res.ok = res.problems.length === 0;
  return res;

  async function visit(ref: BlockRef, level: number, lo: Uint8Array | null, hi: Uint8Array | null): Promise<void> {
    const where = `blkno ${ref.blkno} (level ${level})`;
    if (res.blknos.has(ref.blkno)) {
      problem(`${where}: referenced twice`);
      return;
    }
    res.blknos.add(ref.blkno);
    let b: Uint8Array;
    try {
      b = await store.read(ref, 'btree');
    } catch (e) {
      if (e instanceof CorruptionError || e instanceof FsError) {
        problem(`${where}: read failed: ${e.message}`);
        return;
      }
      throw e;
    }
    res.blocks++;
    if (blockLevel(b) !== level) {
      problem(`${where}: block level ${blockLevel(b)}`);
      return;
    }
    const { problems, offs } = verifyBlockItems(b, { avlHeights });
    for (const p of problems) problem(`${where}: ${p}`);
    const nr = nrItems(b);
    if (nr === 0) problem(`${where}: no items`);
    if (offs.length !== nr) return; // AVL walk failed: already reported
    if (nr === 0) return;
    const first = offs[0]!;
    const last = offs[nr - 1]!;
    if (lo !== null && compareKeyBytes(b, first + I_KEY, lo, 0) <= 0) {
      problem(`${where}: first key ${fmt(b, first + I_KEY)} not above the lower bound ${fmt(lo, 0)}`);
    }
    if (hi !== null && compareKeyBytes(b, last + I_KEY, hi, 0) > 0) {
      problem(`${where}: last key ${fmt(b, last + I_KEY)} above the parent key ${fmt(hi, 0)}`);
    }
    if (level === 0) {
      res.leaves++;
      res.items += nr;
      res.leafItemBytes += totalItemBytes(b);
      return;
    }
    const rightSpine = hi === null || compareKeyBytes(hi, 0, ONES_KEY_BYTES, 0) === 0;
    if (rightSpine && compareKeyBytes(b, last + I_KEY, ONES_KEY_BYTES, 0) !== 0) {
      problem(`${where}: right spine parent ends in ${fmt(b, last + I_KEY)}, not the ones key`);
    }
    // Keys are copied: the store may hand out views that later change.
    let childLo = lo;
    for (const off of offs) {
      const childHi = b.slice(off + I_KEY, off + I_KEY + 32);
      let childRef: BlockRef;
      try {
        childRef = parentItemRef(b, off);
      } catch (e) {
        if (!(e instanceof CorruptionError)) throw e;
        problem(`${where}: ${e.message}`);
        childLo = childHi;
        continue;
      }
      if (childRef.blkno === 0n) problem(`${where}: parent item at ${off} has a zero ref`);
      else await visit(childRef, level - 1, childLo, childHi);
      childLo = childHi;
    }
  }
}

/** For tests: throw with every problem listed unless the tree checks clean. */
export async function assertBtreeOk(store: BlockStore, root: BtreeRoot, opts: CheckOptions = {}): Promise<CheckResult> {
  const r = await checkBtree(store, root, opts);
  assert(r.ok, `btree check failed:\n  ${r.problems.join('\n  ')}`);
  return r;
}
