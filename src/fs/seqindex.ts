/*
 * The meta_seq / data_seq inode indexes (PROTOCOL.md 9.1-9.2):
 *
 *   1.0.{1,2}.seq.ino    no value (META_SEQ, DATA_SEQ)
 *
 * FsCore.putInode keeps exactly one item per inode (per regular file for
 * DATA_SEQ) matching the inode's seqs.  walkInodes first commits the open
 * transaction if it changed that index (what the kernel's READ index lock
 * does to WRITE_ONLY holders), then reads the index clamped to the stable
 * seq (GET_LAST_SEQ), one 1024-seq lock group at a time.
 */
import { FsError } from '../format/errors.js';
import { INDEX_TYPE, indexKey } from '../format/items.js';
import { U64_MAX } from '../format/layout.js';
import { lockRangeOf } from '../format/lock.js';
import type { IndexEntry, SeqIndex } from './api.js';
import type { FsCore } from './core.js';

export async function walkInodes(c: FsCore, index: SeqIndex, first: IndexEntry, last: IndexEntry, max: number): Promise<IndexEntry[]> {
  const type = index === 'meta_seq' ? INDEX_TYPE.META_SEQ : index === 'data_seq' ? INDEX_TYPE.DATA_SEQ : -1;
  if (type < 0) throw new FsError('EINVAL', `index ${String(index)}`);
  // A READ index lock invalidates WRITE_ONLY index locks, which commits the
  // transaction that changed the index (9.2 step 2): without it an inode
  // touched in the open transaction would vanish from the walk (its old
  // item deleted in the cache, its new one above the stable seq).
  if (c.items.hasDirty(indexKey(type, 0n, 0n), indexKey(type, U64_MAX, U64_MAX))) await c.d.trans.sync();
  const stable = await c.d.lastSeq();
  let lastKey = indexKey(type, last.major, last.ino);
  if (last.major > stable) lastKey = indexKey(type, stable, U64_MAX);
  return c.reading(async () => {
    const out: IndexEntry[] = [];
    let k = indexKey(type, first.major, first.ino);
    while (out.length < max && (k.second < lastKey.second || (k.second === lastKey.second && k.third <= lastKey.third))) {
      const it = await c.nextItem(k, lastKey);
      if (it !== null) {
        out.push({ major: it.key.second, ino: it.key.third });
        if (it.key.third === U64_MAX) {
          if (it.key.second === U64_MAX) break;
          k = indexKey(type, it.key.second + 1n, 0n);
        } else {
          k = indexKey(type, it.key.second, it.key.third + 1n);
        }
        continue;
      }
      // This lock group is exhausted: on to the next one.
      const end = lockRangeOf(k).end;
      if (end.second >= lastKey.second || end.second === U64_MAX) break;
      k = indexKey(type, end.second + 1n, 0n);
    }
    return out;
  });
}
