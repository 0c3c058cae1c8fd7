/*
 * The server's global seq counter (PROTOCOL.md 4.1, 4.9, 4.11, 4.13(3);
 * FORMAT.md 10.2).
 *
 * What it owns.  One u64, the most recently issued seq.  It is drawn for
 * every transaction a mount opens (get_trans_seq), for every finalized log
 * tree (finalize_seq) and, later, for lock write seqs and merge status.
 * nextSeq() increments first and returns the new value, so the counter
 * always holds the greatest seq anyone may have been told.
 *
 * Persistence.  The counter lives in the in-memory super's `seq` field:
 * nextSeq() stores it there at once, so the super differs from the last
 * committed one and the commit queue (commitq.ts) knows a commit is needed
 * before a handler may reveal the seq; a commit hook re-checks it and
 * stores it again before every commit ("super.seq = current seq counter").
 * A seq is therefore durable in the same commit as the state that carries
 * it (the lt item with its get_trans_seq), and that commit completes
 * before the response.
 *
 * Start (open()): the counter is raised to max(super.seq, every lt's
 * max_item_seq).  max_item_seq is written by clients (their item seqs may
 * be lock write seqs), so it can exceed super.seq legitimately; every
 * seq the server itself stored in an lt (get_trans_seq, commit_trans_seq,
 * finalize_seq) was committed together with a super.seq at least as
 * large, so one that is larger means the log_trees item and the super
 * disagree: a CorruptionError.  raise() lets lock recovery raise it
 * further (PROTOCOL.md 13.26) before any GET is served.
 *
 * Invariants (asserted): nextSeq() runs inside a commit hold (so the
 * handler's apply commits it before the response); the counter never goes
 * down; it never wraps past 2^64 - 1.
 */
import assert from 'node:assert/strict';
import { btreeIterate } from '../btree/btree.js';
import { CorruptionError } from '../format/errors.js';
import { ZONE } from '../format/items.js';
import { key } from '../format/key.js';
import { U64_MAX } from '../format/layout.js';
import { decodeLogTrees, LOG_TREES } from '../format/logtrees.js';
import type { Super } from '../format/super.js';
import type { CommitQueue } from './commitq.js';
import type { ServerVolume } from './volume.js';

export interface SeqCounters {
  issued: number;
  /** open() found an lt max_item_seq above super.seq. */
  raisedAtStart: number;
  raises: number;
}

export class SeqCounter {
  readonly counters: SeqCounters = { issued: 0, raisedAtStart: 0, raises: 0 };

  private constructor(
    private readonly sb: Super,
    private value: bigint,
    private readonly commitq: CommitQueue,
  ) {}

  /** Server start: read the committed state and register the commit hook. */
  static async open(vol: ServerVolume, commitq: CommitQueue): Promise<SeqCounter> {
    assert(commitq.vol === vol, 'seq counter and commit queue over different volumes');
    const sb = vol.sb;
    let max = sb.seq;
    const errs: CorruptionError[] = [];
    await btreeIterate(vol.store, sb.logs_root, key(ZONE.LOG_TREES, 0n, 0), key(ZONE.LOG_TREES, U64_MAX, 0xff, U64_MAX, U64_MAX, 0xff), (it) => {
      if (it.val.length !== LOG_TREES.size) {
        errs.push(new CorruptionError('logs_root', null, 'size', `log_trees item rid ${it.key.first} nr ${it.key.second} has ${it.val.length} bytes`));
        return false;
      }
      const lt = decodeLogTrees(it.val);
      for (const f of ['get_trans_seq', 'commit_trans_seq', 'finalize_seq'] as const) {
        if (lt[f] > sb.seq) {
          errs.push(new CorruptionError('logs_root', null, 'structure', `log_trees rid ${lt.rid} nr ${lt.nr} ${f} ${lt[f]} > super seq ${sb.seq}`));
          return false;
        }
      }
      if (lt.max_item_seq > max) max = lt.max_item_seq;
      return true;
    });
    if (errs.length > 0) throw errs[0]!;
    const s = new SeqCounter(sb, max, commitq);
    if (max > sb.seq) {
      s.counters.raisedAtStart++;
      sb.seq = max;
    }
    commitq.addCommitHook(() => {
      assert.equal(sb.seq, s.value, 'super.seq changed behind the seq counter');
      sb.seq = s.value;
    });
    return s;
  }

  /** The most recently issued seq. */
  get current(): bigint {
    return this.value;
  }

  /** Issue the next seq; only inside a commit hold. */
  nextSeq(): bigint {
    assert(this.commitq.holding, 'nextSeq outside a commit hold');
    assert(this.value < U64_MAX, 'seq counter wrapped');
    this.value++;
    this.sb.seq = this.value;
    this.counters.issued++;
    return this.value;
  }

  /** Raise the counter to at least seq (lock recovery); inside a hold. */
  raise(seq: bigint): void {
    assert(seq >= 0n && seq <= U64_MAX);
    if (seq <= this.value) return;
    assert(this.commitq.holding, 'seq raise outside a commit hold');
    this.value = seq;
    this.sb.seq = seq;
    this.counters.raises++;
  }
}
