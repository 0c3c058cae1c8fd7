/*
 * src/srch/search.ts answers "which inodes carry an xattr with this
 * .srch. name?" from committed metadata (PROTOCOL.md 8.4, FORMAT.md 11).
 *
 * Sources, all reached from one committed super's roots:
 *   - srch_root BLOCKS items: sorted files (written by compaction);
 *   - srch_root LOG items: log files the server rotated at commit;
 *   - logs_root: every lt's current srch_file (the entries a mount logged
 *     since its last rotation).
 * Each entry (hash, ino, id) toggles the presence of (ino, id): a creation
 * and a deletion of the same xattr cancel, whatever files they landed in
 * and in whatever order the files are read.  What is present at the end,
 * restricted to the hash and [firstIno, lastIno], is the answer: unique
 * inode numbers in ascending order.  Hash collisions can give false
 * positives, as in scoutfs.
 *
 * Invariants: read-only; every block goes through the verified store, so
 * a corrupt srch block is a CorruptionError, never a silently short
 * answer.  Files are read whole (readSrchLogEntries) rather than by binary
 * search in sorted files: correct for both kinds, and without compaction
 * every file is a log file anyway.  At most `limit` (ino, id) pairs are
 * tracked; past it the search is cut at the largest ino that still fits
 * and `complete` is false, so a caller can continue after the last ino.
 */
import { btreeIterate } from '../btree/btree.js';
import type { BlockStore } from '../btree/store.js';
import type { BtreeRoot } from '../format/common.js';
import { key } from '../format/key.js';
import { SRCH_TYPE, ZONE } from '../format/items.js';
import { U64_MAX } from '../format/layout.js';
import { decodeLogTreesItem } from '../format/logtrees.js';
import { readSrchFile, type SrchFile } from '../format/srch.js';
import { readSrchLogEntries } from './file.js';

export const SEARCH_LIMIT = 1_000_000;

export interface SrchRoots {
  srch_root: BtreeRoot;
  logs_root: BtreeRoot;
}

export interface SearchResult {
  inos: bigint[];
  /** The whole [firstIno, lastIno] range was covered. */
  complete: boolean;
  /** Files read, for tests and counters. */
  files: number;
}

/** Every srch file reachable from the roots: sorted, rotated, then current. */
export async function srchFiles(store: BlockStore, roots: SrchRoots): Promise<{ source: string; file: SrchFile }[]> {
  const out: { source: string; file: SrchFile }[] = [];
  await btreeIterate(store, roots.srch_root, key(ZONE.SRCH, 0n, SRCH_TYPE.LOG), key(ZONE.SRCH, 0n, SRCH_TYPE.BLOCKS, U64_MAX, U64_MAX), (it) => {
    const kind = it.key.type === SRCH_TYPE.LOG ? 'rotated log' : 'sorted';
    out.push({ source: `srch_root ${kind} file ${it.key.type === SRCH_TYPE.LOG ? it.key.second : it.key.third}`, file: readSrchFile(it.val, 0) });
  });
  await btreeIterate(store, roots.logs_root, key(ZONE.LOG_TREES, 0n, 0), key(ZONE.LOG_TREES, U64_MAX, 0xff, U64_MAX, U64_MAX, 0xff), (it) => {
    const lt = decodeLogTreesItem(it.key, it.val);
    if (lt.srch_file.ref.blkno !== 0n) out.push({ source: `srch file of rid ${lt.rid.toString(16)} nr ${lt.nr}`, file: lt.srch_file });
  });
  return out;
}

export async function searchXattrs(
  store: BlockStore, roots: SrchRoots, hash: bigint, firstIno = 0n, lastIno = U64_MAX, limit = SEARCH_LIMIT,
): Promise<SearchResult> {
  const files = await srchFiles(store, roots);
  // (ino, id) -> present; toggled by every sighting.
  const present = new Map<string, bigint>();
  let end = lastIno;
  let complete = true;
  for (const f of files) {
    for (const e of await readSrchLogEntries(store, f.file, f.source)) {
      if (e.hash !== hash || e.ino < firstIno || e.ino > end) continue;
      const k = `${e.ino}:${e.id}`;
      if (present.delete(k)) continue;
      present.set(k, e.ino);
      if (present.size > limit) {
        // Pull the end in below the largest tracked ino and drop what is past it.
        let max = 0n;
        for (const ino of present.values()) if (ino > max) max = ino;
        end = max - 1n;
        complete = false;
        for (const [pk, ino] of present) if (ino > end) present.delete(pk);
      }
    }
  }
  const inos = [...new Set(present.values())].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  return { inos, complete, files: files.length };
}
