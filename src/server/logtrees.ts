/*
 * The server side of mount transactions: GET_LOG_TREES, COMMIT_LOG_TREES,
 * reclaiming a departed mount's open log tree, and the stable seq
 * (PROTOCOL.md 4.1, 4.6-4.9, 4.13; 7.3; 8.2; FORMAT.md 8.8, 8.11, 10.1).
 *
 * What it owns.  The log_trees ("lt") items in logs_root, one per (rid,
 * nr), and the state machine of their two trans seqs:
 *
 *     get == commit      no transaction open      GET may open one
 *     get >  commit      transaction `get` open   COMMIT(get) may close it
 *     get <  commit      invalid                  GET fails EINVAL
 *
 *     GET:     (get == commit)  --nextSeq-->  (get' > commit)   lists refilled
 *              (get > commit)   -- none -->   unchanged          a resend
 *     COMMIT G (get == G > commit) -------->  (commit := G)      srch rotated
 *              (get == G == commit) -------->  acknowledged, no change
 *              (get != G) -------------------> EIO
 *     reclaim  newest non-finalized lt -----> commit := get, FINALIZED,
 *                                              every list and data root
 *                                              returned to the server
 *
 * The handlers are idempotent, because every request may be "maybe
 * delivered" and resent (STYLE.md 4, PROTOCOL.md 3.8): a resent GET gets
 * the open transaction back unchanged; a resent COMMIT of a transaction
 * already closed is acknowledged without doing anything, so a srch file is
 * rotated, and an lt's lists and data extents are spliced and moved, at
 * most once (4.13(5), (6)); a repeated reclaim finds the lt finalized.
 *
 * Durability.  Every handler runs inside a commit hold (commitq.ts) and
 * ends with apply commit: its response is sent only after the commit that
 * contains its changes, and any change it may have read, is durable.  A
 * handler that changed nothing and finds the volume clean returns without
 * a commit (resent GET, duplicate COMMIT: "no side effects" includes the
 * super).  get_trans_seq is drawn from the seq counter (seq.ts) inside the
 * hold, so it is durable before the client learns it (4.13(3)).
 *
 * Validate, then change.  Each handler first does everything that can fail
 * for an ordinary reason (lookups, the seq checks, whether the server's
 * meta_avail can fill the list, whether the srch item already exists) and
 * only then changes anything.  An error after the first change is not
 * ordinary (the server's own allocator ran dry, an I/O error, corrupt
 * lists sent by a client): the handler calls commitq.fail(), the volume is
 * failed, and the server restarts from the last durable state, which the
 * client's resend then meets.  The reference instead commits the partial
 * changes with the next commit (PROTOCOL.md 13.10); for a GET that had
 * spliced meta_freed but not yet stored the lt, that would leave the
 * spliced list both on the server's freed list and in the stored lt.
 *
 * Locks: commit hold, then the logs mutex, then srch, then alloc
 * (mutex.ts).  Functions named *Locked run with the logs mutex held.
 *
 * Left out, on purpose, for now:
 *   - finalization and log merge start inside GET (5.6, step 4 of 4.6):
 *     an lt is finalized only by reclaimRid; nr advances only there;
 *   - data allocation zones (7.4, steps 5 and 7): data_avail is refilled
 *     from anywhere in data_alloc and the lt's zone fields are zeroed,
 *     which is what the reference records when the option is unset;
 *   - the early stop of the meta_avail refill when the server's own
 *     allocator runs low: the commit queue commits before a hold instead.
 *
 * DELIBERATELY BROKEN MODE.  `brokenProcessResentCommit: true` makes
 * COMMIT skip the "already committed" check and process a resent COMMIT
 * fully, as the server did before the seed commit 80ee2c6d (PROTOCOL.md
 * 4.12): srch rotation is attempted again with the client's stale copy of
 * its srch file (EEXIST while the first rotation's item exists, a second
 * rotation of the same blocks once it was compacted away), and the lt item
 * is overwritten with the client's copy, re-adopting lists the server may
 * already have taken back.  It exists ONLY so the simulator sweep can
 * prove it detects that bug; nothing else may set it.  counters
 * .brokenResentCommitsProcessed counts the resends it mishandled.
 */
import assert from 'node:assert/strict';
import { btreeForce, btreeInsert, btreeIterate, btreeLookup, btreePrev, btreeUpdate } from '../btree/btree.js';
import { emptyAllocRoot, extentMove, type BlknoBounds } from '../alloc/extent.js';
import { emptyListHead } from '../alloc/list.js';
import { ALLOC_FLAG_LOW, type AllocRoot } from '../format/common.js';
import { DATA_ALLOC_ZONE_BYTES, DATA_DEV_START_BLKNO } from '../format/constants.js';
import { CorruptionError, FsError } from '../format/errors.js';
import { logTreesKey, SRCH_TYPE, ZONE } from '../format/items.js';
import { key, type Key } from '../format/key.js';
import { U64_MAX } from '../format/layout.js';
import { decodeLogTrees, encodeLogTrees, LOG_TREES, LOG_TREES_FLAG_FINALIZED, type LogTrees } from '../format/logtrees.js';
import { SRCH_FILE, writeSrchFile, ZERO_SRCH_ENTRY, type SrchFile } from '../format/srch.js';
import type { CommitQueue } from './commitq.js';
import { ServerMutexes } from './mutex.js';
import type { SeqCounter } from './seq.js';
import type { ServerVolume } from './volume.js';

/** data_avail is refilled when below 1 GiB of 4 KiB blocks (PROTOCOL.md 4.6)... */
export const DATA_FILL_LO = 262144n;
/** ...toward 4 GiB. */
export const DATA_FILL_TARGET = 1048576n;
/** A log srch file is rotated into srch_root at COMMIT once it has this many blocks (1 MiB, 8.2). */
export const SRCH_ROTATE_BLOCKS = 16n;

export interface LogTreesServerOptions {
  /** Shared with the server's other handlers (default: private ones, for tests). */
  mutexes?: ServerMutexes;
  /** Refill a mount's meta_avail when its first block holds fewer (default: the server allocator's fillLo, 4092)... */
  metaFillLo?: number;
  /** ...up to this many (default: the server allocator's fillTarget, 8185). */
  metaFillTarget?: number;
  /** Refill data_avail below this many blocks (default DATA_FILL_LO)... */
  dataFillLo?: bigint;
  /** ...toward this many (default DATA_FILL_TARGET). */
  dataFillTarget?: bigint;
  /** Rotate a committed srch file with at least this many blocks (default SRCH_ROTATE_BLOCKS). */
  srchRotateBlocks?: bigint;
  /**
   * DELIBERATELY BROKEN (see the essay): process a resent COMMIT fully.
   * Only for the simulator's proof that it catches the bug.
   */
  brokenProcessResentCommit?: boolean;
  /** Expensive checks (STYLE.md 5): after every change, assert 4.13(1), (2) for the rid. */
  invariants?: boolean;
}

/** Counters that prove a path ran (STYLE.md 7). */
export interface LogTreesCounters {
  /** GETs that opened a transaction (drew get_trans_seq). */
  getsOpened: number;
  /** ...of which on a new lt item (nr 1, or after a finalized one). */
  getsNewLt: number;
  /** Resent GETs: the open transaction returned unchanged. */
  getsResent: number;
  /** GET of an lt with get < commit (EINVAL). */
  getsInvalid: number;
  /** GET that the server's meta_avail could not fill (ENOSPC). */
  getsEnospc: number;
  /** COMMITs that closed a transaction. */
  commitsApplied: number;
  /** Resent COMMITs of a closed transaction, acknowledged with no change. */
  commitsDuplicate: number;
  /** COMMIT G != stored get_trans_seq (EIO). */
  commitsMismatch: number;
  commitsNotFound: number;
  /** COMMIT with lt.rid != the connection's rid (EIO). */
  commitsWrongRid: number;
  /** Broken mode only: resent COMMITs processed as new. */
  brokenResentCommitsProcessed: number;
  /** srch files inserted into srch_root (COMMIT and reclaim). */
  srchRotations: number;
  /** Rotations refused because the LOG item existed. */
  srchCollisions: number;
  /** Non-empty lists spliced onto the server's idle freed list. */
  listsSpliced: number;
  listEntriesSpliced: number;
  /** Non-empty data roots emptied into data_alloc (data_freed at GET, both at reclaim). */
  dataRootsMoved: number;
  dataBlocksMoved: number;
  /** meta_avail refills that added entries, and the entries. */
  metaFills: number;
  metaEntriesFilled: number;
  /** data_avail refills that moved blocks, and the blocks. */
  dataFills: number;
  dataBlocksFilled: number;
  /** reclaimRid that finalized an lt / found nothing to do. */
  reclaims: number;
  reclaimsNothing: number;
  lastSeqs: number;
  /** Errors after a change: the volume was failed (commitq.fail). */
  failures: number;
}

function zeroSrchFile(): SrchFile {
  return { first: { ...ZERO_SRCH_ENTRY }, last: { ...ZERO_SRCH_ENTRY }, ref: { blkno: 0n, seq: 0n }, blocks: 0n, entries: 0n, height: 0 };
}

function encodeSrchFile(f: SrchFile): Uint8Array {
  const b = new Uint8Array(SRCH_FILE.size);
  writeSrchFile(b, 0, f);
  return b;
}

/** The LOG item key of a rotated srch file (FORMAT.md 8.11). */
export function srchLogKey(blkno: bigint): Key {
  return key(ZONE.SRCH, 0n, SRCH_TYPE.LOG, blkno, 0n);
}

/** A new, empty lt (4.6 step 1). */
function zeroLt(rid: bigint, nr: bigint): LogTrees {
  return {
    meta_avail: emptyListHead(),
    meta_freed: emptyListHead(),
    item_root: { ref: { blkno: 0n, seq: 0n }, height: 0 },
    bloom_ref: { blkno: 0n, seq: 0n },
    data_avail: emptyAllocRoot(),
    data_freed: emptyAllocRoot(),
    srch_file: zeroSrchFile(),
    data_alloc_zone_blocks: 0n,
    data_alloc_zones: new Uint8Array(DATA_ALLOC_ZONE_BYTES),
    inode_count_delta: 0n,
    get_trans_seq: 0n,
    commit_trans_seq: 0n,
    max_item_seq: 0n,
    finalize_seq: 0n,
    rid,
    nr,
    flags: 0n,
  };
}

/** A deep copy: nothing the server keeps aliases a caller's object, and vice versa. */
/** What STATFS answers (PROTOCOL.md 3.3 net_statfs, 7.4), in blocks of each device. */
export interface ServerStatfs {
  metaFree: bigint;
  dataFree: bigint;
  totalMeta: bigint;
  totalData: bigint;
  inodeCount: bigint;
}

export function copyLogTrees(lt: LogTrees): LogTrees {
  assert.equal(lt.data_alloc_zones.length, DATA_ALLOC_ZONE_BYTES, 'log_trees data_alloc_zones size');
  return decodeLogTrees(encodeLogTrees(lt));
}

/** GET_LOG_TREES request payload: must be empty (PROTOCOL.md 4.6). */
export function checkGetLogTreesPayload(payload: Uint8Array): void {
  if (payload.length !== 0) throw new FsError('EINVAL', `GET_LOG_TREES payload of ${payload.length} bytes`);
}

/** COMMIT_LOG_TREES request payload: exactly one lt (PROTOCOL.md 4.7). */
export function decodeCommitLogTreesPayload(payload: Uint8Array): LogTrees {
  if (payload.length !== LOG_TREES.size) throw new FsError('EINVAL', `COMMIT_LOG_TREES payload of ${payload.length} bytes, want ${LOG_TREES.size}`);
  return decodeLogTrees(payload);
}

function setAllocLow(ar: AllocRoot, low: boolean): void {
  ar.flags = low ? ar.flags | ALLOC_FLAG_LOW : ar.flags & ~ALLOC_FLAG_LOW;
}

const isFinalized = (lt: LogTrees): boolean => (lt.flags & LOG_TREES_FLAG_FINALIZED) !== 0n;

export class LogTreesServer {
  readonly counters: LogTreesCounters = {
    getsOpened: 0, getsNewLt: 0, getsResent: 0, getsInvalid: 0, getsEnospc: 0,
    commitsApplied: 0, commitsDuplicate: 0, commitsMismatch: 0, commitsNotFound: 0, commitsWrongRid: 0,
    brokenResentCommitsProcessed: 0, srchRotations: 0, srchCollisions: 0,
    listsSpliced: 0, listEntriesSpliced: 0, dataRootsMoved: 0, dataBlocksMoved: 0,
    metaFills: 0, metaEntriesFilled: 0, dataFills: 0, dataBlocksFilled: 0,
    reclaims: 0, reclaimsNothing: 0, lastSeqs: 0, failures: 0,
  };
  readonly mutexes: ServerMutexes;
  private readonly metaFillLo: number;
  private readonly metaFillTarget: number;
  private readonly dataFillLo: bigint;
  private readonly dataFillTarget: bigint;
  private readonly srchRotateBlocks: bigint;
  private readonly broken: boolean;
  private readonly invariants: boolean;
  private readonly dataBounds: BlknoBounds;

  constructor(
    readonly vol: ServerVolume,
    readonly commitq: CommitQueue,
    readonly seq: SeqCounter,
    opts: LogTreesServerOptions = {},
  ) {
    assert(commitq.vol === vol, 'log trees server and commit queue over different volumes');
    this.mutexes = opts.mutexes ?? new ServerMutexes();
    this.metaFillLo = opts.metaFillLo ?? vol.alloc.fillLo;
    this.metaFillTarget = opts.metaFillTarget ?? vol.alloc.fillTarget;
    this.dataFillLo = opts.dataFillLo ?? DATA_FILL_LO;
    this.dataFillTarget = opts.dataFillTarget ?? DATA_FILL_TARGET;
    this.srchRotateBlocks = opts.srchRotateBlocks ?? SRCH_ROTATE_BLOCKS;
    this.broken = opts.brokenProcessResentCommit === true;
    this.invariants = opts.invariants === true;
    assert(this.metaFillLo >= 0 && this.metaFillLo <= this.metaFillTarget, 'meta fill thresholds');
    assert(this.dataFillLo >= 0n && this.dataFillLo <= this.dataFillTarget, 'data fill thresholds');
    assert(this.srchRotateBlocks >= 1n, 'srch rotation threshold');
    assert(vol.sb.total_data_blocks > DATA_DEV_START_BLKNO, 'data device holds no data blocks');
    this.dataBounds = { first: DATA_DEV_START_BLKNO, last: vol.sb.total_data_blocks - 1n };
  }

  /** Is the deliberately broken resent-COMMIT handling on? (simulator reports say so) */
  get isBroken(): boolean {
    return this.broken;
  }

  /* ---- GET_LOG_TREES (4.6) --------------------------------------------------- */

  /**
   * Open a transaction for rid (or return the open one, unchanged, to a
   * resend).  Resolves once the lt is durable.  FsError EINVAL (get <
   * commit), ENOSPC (the server cannot fill meta_avail); CorruptionError
   * for a bad item.
   */
  async getLogTrees(rid: bigint): Promise<LogTrees> {
    assertRid(rid);
    return this.commitq.run(() => this.mutexes.logs.run(() => this.getLocked(rid)));
  }

  private async getLocked(rid: bigint): Promise<LogTrees> {
    const sb = this.vol.sb;
    const old = await this.newestLocked(rid);
    const fresh = old === null || isFinalized(old);
    const lt = fresh ? zeroLt(rid, old === null ? 1n : old.nr + 1n) : old;
    if (lt.get_trans_seq < lt.commit_trans_seq) {
      this.counters.getsInvalid++;
      throw new FsError('EINVAL', `log_trees rid ${hex(rid)} nr ${lt.nr} get_trans_seq ${lt.get_trans_seq} < commit_trans_seq ${lt.commit_trans_seq}`);
    }
    if (lt.get_trans_seq > lt.commit_trans_seq) {
      // Already open: a resend after a lost response or a failover.
      this.counters.getsResent++;
      return lt;
    }
    assert(!fresh || lt.get_trans_seq === 0n);

    await this.mutexes.alloc.run(async () => {
      // Validate: can the server's meta_avail fill the list?  (Nothing changed yet.)
      const need = lt.meta_avail.first_nr < this.metaFillLo ? this.metaFillTarget - lt.meta_avail.first_nr : 0;
      const have = this.vol.alloc.metaAvail.total_len;
      if (BigInt(need) > have) {
        this.counters.getsEnospc++;
        throw new FsError('ENOSPC', `server meta_avail holds ${have} blocks, refilling rid ${hex(rid)} meta_avail needs ${need}`);
      }
      await this.changing(async () => {
        await this.spliceLocked(lt, 'meta_freed');
        await this.moveDataLocked(lt, 'data_freed');
        const added = await this.vol.alloc.fillList(lt.meta_avail, this.metaFillLo, this.metaFillTarget);
        assert(added === need, `filled ${added} of ${need}`);
        if (added > 0) {
          this.counters.metaFills++;
          this.counters.metaEntriesFilled += added;
        }
        await this.refillDataLocked(lt);
      });
    });

    await this.changing(async () => {
      lt.data_alloc_zone_blocks = 0n;
      lt.data_alloc_zones.fill(0);
      assert.equal(lt.get_trans_seq, lt.commit_trans_seq);
      lt.get_trans_seq = this.seq.nextSeq();
      assert(lt.get_trans_seq > lt.commit_trans_seq);
      await btreeForce(this.vol.store, sb.logs_root, logTreesKey(rid, lt.nr), encodeLogTrees(lt));
    });
    if (this.invariants) await this.assertRidLocked(rid);
    this.counters.getsOpened++;
    if (fresh) this.counters.getsNewLt++;
    return copyLogTrees(lt);
  }

  /* ---- COMMIT_LOG_TREES (4.7) ------------------------------------------------ */

  /**
   * Close the transaction lt.get_trans_seq of rid with the client's lt.
   * Resolves once durable; a resend of a closed transaction resolves with
   * no change.  FsError EIO (wrong rid, unknown get_trans_seq), ENOENT (no
   * such lt), EEXIST (the srch file was already rotated).
   */
  async commitLogTrees(rid: bigint, lt: LogTrees): Promise<void> {
    assertRid(rid);
    if (lt.rid !== rid) {
      this.counters.commitsWrongRid++;
      throw new FsError('EIO', `COMMIT_LOG_TREES from rid ${hex(rid)} carries rid ${hex(lt.rid)}`);
    }
    const mine = copyLogTrees(lt);
    await this.commitq.run(() => this.mutexes.logs.run(() => this.commitLocked(rid, mine)));
  }

  private async commitLocked(rid: bigint, lt: LogTrees): Promise<void> {
    const sb = this.vol.sb;
    const k = logTreesKey(rid, lt.nr);
    const item = await btreeLookup(this.vol.store, sb.logs_root, k);
    if (item === null) {
      this.counters.commitsNotFound++;
      throw new FsError('ENOENT', `COMMIT_LOG_TREES: no log_trees rid ${hex(rid)} nr ${lt.nr}`);
    }
    const existing = this.decodeItem(k, item.val);
    // Already committed: a resend.  Acknowledge, change nothing.  This is
    // checked before the open-transaction match (PROTOCOL.md 4.7 orders
    // them the other way): a client whose GET for the next transaction was
    // processed but whose response it never saw resends COMMIT(G) while the
    // server already opened G' > G; G == commit_trans_seq still proves the
    // resend is a duplicate, and answering EIO would loop it forever.
    if (existing.commit_trans_seq === lt.get_trans_seq && lt.get_trans_seq !== 0n && !this.broken) {
      this.counters.commitsDuplicate++;
      return;
    }
    if (existing.get_trans_seq !== lt.get_trans_seq) {
      this.counters.commitsMismatch++;
      throw new FsError('EIO', `COMMIT_LOG_TREES rid ${hex(rid)} nr ${lt.nr} for trans seq ${lt.get_trans_seq}, the server opened ${existing.get_trans_seq}`);
    }
    if (existing.commit_trans_seq === lt.get_trans_seq) this.counters.brokenResentCommitsProcessed++;

    const f = lt.srch_file;
    const rotate = f.ref.blkno !== 0n && f.blocks >= this.srchRotateBlocks;
    await this.mutexes.srch.run(async () => {
      if (rotate) await this.checkSrchFreeLocked(rid, f);
      await this.changing(async () => {
        if (rotate) await this.rotateSrchLocked(lt);
        lt.commit_trans_seq = lt.get_trans_seq;
        // The server trusts the client's roots, allocator heads, srch file and deltas.
        await btreeUpdate(this.vol.store, sb.logs_root, k, encodeLogTrees(lt));
      });
    });
    if (this.invariants && !this.broken) await this.assertRidLocked(rid);
    this.counters.commitsApplied++;
  }

  /* ---- reclaim (4.8) --------------------------------------------------------- */

  /**
   * A departed (farewelled or fenced) mount: close its open transaction,
   * give its lists and data extents back, rotate its srch file, finalize
   * its lt.  Its committed items stay readable in item_root until merged;
   * its uncommitted changes are lost (their blocks were never referenced).
   * Idempotent: a finalized (or missing) lt is left alone.
   */
  async reclaimRid(rid: bigint): Promise<void> {
    assertRid(rid);
    await this.commitq.run(() => this.mutexes.logs.run(() => this.reclaimLocked(rid)));
  }

  private async reclaimLocked(rid: bigint): Promise<void> {
    const lt = await this.newestLocked(rid);
    if (lt === null || isFinalized(lt)) {
      this.counters.reclaimsNothing++;
      return;
    }
    if (lt.get_trans_seq < lt.commit_trans_seq) {
      throw new CorruptionError('logs_root', null, 'structure', `log_trees rid ${hex(rid)} nr ${lt.nr} get_trans_seq ${lt.get_trans_seq} < commit_trans_seq ${lt.commit_trans_seq}`);
    }
    const rotate = lt.srch_file.ref.blkno !== 0n;
    await this.mutexes.srch.run(async () => {
      if (rotate) await this.checkSrchFreeLocked(rid, lt.srch_file);
      await this.mutexes.alloc.run(() => this.changing(async () => {
        if (rotate) await this.rotateSrchLocked(lt);
        await this.spliceLocked(lt, 'meta_freed');
        await this.spliceLocked(lt, 'meta_avail');
        await this.moveDataLocked(lt, 'data_avail');
        await this.moveDataLocked(lt, 'data_freed');
        lt.commit_trans_seq = lt.get_trans_seq;
        lt.data_alloc_zone_blocks = 0n;
        lt.data_alloc_zones.fill(0);
        lt.flags |= LOG_TREES_FLAG_FINALIZED;
        lt.finalize_seq = this.seq.nextSeq();
        await btreeUpdate(this.vol.store, this.vol.sb.logs_root, logTreesKey(rid, lt.nr), encodeLogTrees(lt));
      }));
    });
    if (this.invariants) await this.assertRidLocked(rid);
    this.counters.reclaims++;
  }

  /* ---- GET_LAST_SEQ (4.9) ---------------------------------------------------- */

  /**
   * The stable seq: one less than the smallest open transaction's seq, or
   * than the last issued seq when none is open.  Every item with a seq at
   * or below it belongs to a committed transaction.
   */
  async getLastSeq(): Promise<bigint> {
    return this.commitq.run(() => this.mutexes.logs.run(() => this.lastSeqLocked()));
  }

  private async lastSeqLocked(): Promise<bigint> {
    const cur = this.seq.current;
    let last = cur > 0n ? cur - 1n : 0n;
    const lts: LogTrees[] = [];
    await btreeIterate(this.vol.store, this.vol.sb.logs_root, ltKeyMin(0n), ltKeyMax(U64_MAX), (it) => {
      lts.push(this.decodeItem(it.key, it.val));
    });
    for (const lt of lts) {
      if (lt.get_trans_seq > lt.commit_trans_seq && lt.get_trans_seq <= last) last = lt.get_trans_seq - 1n;
    }
    this.counters.lastSeqs++;
    return last;
  }

  /**
   * STATFS (PROTOCOL.md 7.4): free blocks summed over every allocator the
   * (dirty, in-memory) super references, avail and freed alike: both
   * meta_alloc roots, data_alloc, the server list pairs and every lt's
   * lists and data roots; inodes = super.inode_count + the lts'
   * inode_count_delta.  The data roots of `ownRid`'s open lt are left
   * out: that mount adds its own live ones, so its df moves with its
   * writes before they commit.
   */
  async statfs(ownRid: bigint | null = null): Promise<ServerStatfs> {
    return this.commitq.run(() => this.mutexes.logs.run(async () => {
      const sb = this.vol.sb;
      let metaFree = sb.meta_alloc[0].total_len + sb.meta_alloc[1].total_len;
      for (const l of [...sb.server_meta_avail, ...sb.server_meta_freed]) metaFree += l.total_nr;
      let dataFree = sb.data_alloc.total_len;
      let inodeCount = sb.inode_count;
      await btreeIterate(this.vol.store, sb.logs_root, ltKeyMin(0n), ltKeyMax(U64_MAX), (it) => {
        const lt = this.decodeItem(it.key, it.val);
        metaFree += lt.meta_avail.total_nr + lt.meta_freed.total_nr;
        if (lt.rid !== ownRid || isFinalized(lt)) dataFree += lt.data_avail.total_len + lt.data_freed.total_len;
        inodeCount += lt.inode_count_delta;
      });
      return {
        metaFree, dataFree, totalMeta: sb.total_meta_blocks, totalData: sb.total_data_blocks, inodeCount: BigInt.asUintN(64, inodeCount),
      };
    }));
  }

  /* ---- invariants (4.13) ------------------------------------------------------ */

  /**
   * Check every lt against 4.13(1) and (2): commit <= get; a rid has at
   * most one non-finalized lt, its newest; a finalized lt has no open
   * transaction and a finalize_seq.  Returns the violations (tests and the
   * simulator's end-of-run checker call it).
   */
  async checkInvariants(): Promise<string[]> {
    return this.mutexes.logs.run(async () => this.invariantProblemsLocked(null));
  }

  private async invariantProblemsLocked(only: bigint | null): Promise<string[]> {
    const problems: string[] = [];
    const lts: LogTrees[] = [];
    const lo = only === null ? ltKeyMin(0n) : ltKeyMin(only);
    const hi = only === null ? ltKeyMax(U64_MAX) : ltKeyMax(only);
    await btreeIterate(this.vol.store, this.vol.sb.logs_root, lo, hi, (it) => {
      lts.push(this.decodeItem(it.key, it.val));
    });
    const newest = new Map<bigint, bigint>();
    for (const lt of lts) newest.set(lt.rid, lt.nr > (newest.get(lt.rid) ?? 0n) ? lt.nr : newest.get(lt.rid)!);
    for (const lt of lts) {
      const w = `rid ${hex(lt.rid)} nr ${lt.nr}`;
      if (lt.commit_trans_seq > lt.get_trans_seq) problems.push(`${w}: commit_trans_seq ${lt.commit_trans_seq} > get_trans_seq ${lt.get_trans_seq}`);
      if (lt.get_trans_seq > this.seq.current) problems.push(`${w}: get_trans_seq ${lt.get_trans_seq} above the seq counter ${this.seq.current}`);
      if (isFinalized(lt)) {
        if (lt.get_trans_seq !== lt.commit_trans_seq) problems.push(`${w}: finalized with an open transaction`);
        if (lt.finalize_seq === 0n) problems.push(`${w}: finalized without finalize_seq`);
      } else if (lt.nr !== newest.get(lt.rid)) {
        problems.push(`${w}: not finalized but not the newest (nr ${newest.get(lt.rid)})`);
      }
    }
    return problems;
  }

  private async assertRidLocked(rid: bigint): Promise<void> {
    const p = await this.invariantProblemsLocked(rid);
    assert.deepEqual(p, [], `log_trees invariants of rid ${hex(rid)}`);
  }

  /* ---- helpers ----------------------------------------------------------------- */

  /** The rid's lt with the greatest nr, or null. */
  private async newestLocked(rid: bigint): Promise<LogTrees | null> {
    const it = await btreePrev(this.vol.store, this.vol.sb.logs_root, ltKeyMax(rid));
    if (it === null || it.key.zone !== ZONE.LOG_TREES || it.key.first !== rid) return null;
    return this.decodeItem(it.key, it.val);
  }

  /** A logs_root item as an lt, its bytes checked against its key. */
  private decodeItem(k: Key, v: Uint8Array): LogTrees {
    const where = `log_trees item rid ${hex(k.first)} nr ${k.second}`;
    if (k.zone !== ZONE.LOG_TREES || k.type !== 0 || k.third !== 0n || k.fourth !== 0) {
      throw new CorruptionError('logs_root', null, 'structure', `${where}: bad key zone ${k.zone} type ${k.type}`);
    }
    if (v.length !== LOG_TREES.size) throw new CorruptionError('logs_root', null, 'size', `${where}: ${v.length} bytes, want ${LOG_TREES.size}`);
    const lt = decodeLogTrees(v);
    if (lt.rid !== k.first || lt.nr !== k.second || lt.nr === 0n) {
      throw new CorruptionError('logs_root', null, 'structure', `${where}: holds rid ${hex(lt.rid)} nr ${lt.nr}`);
    }
    return lt;
  }

  /**
   * Run the changing part of a handler: any error here leaves half-done
   * state that must never be committed, so it fails the volume.
   */
  private async changing(fn: () => Promise<void>): Promise<void> {
    try {
      await fn();
    } catch (e) {
      this.counters.failures++;
      this.commitq.fail(e);
      throw e;
    }
  }

  /** Fails (EEXIST) before any change if the srch file's LOG item exists. */
  private async checkSrchFreeLocked(rid: bigint, f: SrchFile): Promise<void> {
    if (await btreeLookup(this.vol.store, this.vol.sb.srch_root, srchLogKey(f.ref.blkno)) !== null) {
      this.counters.srchCollisions++;
      throw new FsError('EEXIST', `srch log file ${f.ref.blkno} of rid ${hex(rid)} is already in srch_root`);
    }
  }

  /** Insert lt's srch file as a LOG item and zero it (8.2); srch mutex held, existence checked. */
  private async rotateSrchLocked(lt: LogTrees): Promise<void> {
    const f = lt.srch_file;
    assert(f.ref.blkno !== 0n);
    await btreeInsert(this.vol.store, this.vol.sb.srch_root, srchLogKey(f.ref.blkno), encodeSrchFile(f));
    lt.srch_file = zeroSrchFile();
    this.counters.srchRotations++;
  }

  /** Splice one of lt's lists onto the server's idle freed list; alloc mutex held. */
  private async spliceLocked(lt: LogTrees, which: 'meta_freed' | 'meta_avail'): Promise<void> {
    const head = lt[which];
    if (head.ref.blkno === 0n) {
      if (head.total_nr !== 0n || head.first_nr !== 0) {
        throw new CorruptionError('logs_root', null, 'structure', `log_trees rid ${hex(lt.rid)} ${which} has no block but counts ${head.total_nr}`);
      }
      head.flags = 0;
      return;
    }
    const n = head.total_nr;
    await this.vol.alloc.reclaimList(head);
    assert(head.ref.blkno === 0n && head.total_nr === 0n);
    this.counters.listsSpliced++;
    this.counters.listEntriesSpliced += Number(n);
  }

  /** Move every extent of one of lt's data roots into data_alloc; alloc mutex held. */
  private async moveDataLocked(lt: LogTrees, which: 'data_freed' | 'data_avail'): Promise<void> {
    const ar = lt[which];
    if (ar.total_len === 0n && ar.root.height === 0) {
      ar.flags = 0;
      return;
    }
    const moved = await this.vol.alloc.moveAllExtents(this.vol.sb.data_alloc, ar, this.dataBounds);
    ar.flags = 0;
    this.counters.dataRootsMoved++;
    this.counters.dataBlocksMoved += Number(moved);
  }

  /** data_avail toward dataFillTarget when below dataFillLo, then its LOW flag; alloc mutex held. */
  private async refillDataLocked(lt: LogTrees): Promise<void> {
    const ar = lt.data_avail;
    if (ar.total_len < this.dataFillLo) {
      const moved = await extentMove(this.vol.store, ar, this.vol.sb.data_alloc, this.dataFillTarget - ar.total_len, {
        src: { bounds: this.dataBounds, source: 'data_alloc' },
        dst: { bounds: this.dataBounds, source: `rid ${hex(lt.rid)} data_avail` },
      });
      if (moved > 0n) {
        this.counters.dataFills++;
        this.counters.dataBlocksFilled += Number(moved);
      }
    }
    setAllocLow(ar, ar.total_len < this.dataFillLo);
  }
}

function ltKeyMin(rid: bigint): Key {
  return key(ZONE.LOG_TREES, rid, 0, 0n, 0n, 0);
}

function ltKeyMax(rid: bigint): Key {
  return key(ZONE.LOG_TREES, rid, 0xff, U64_MAX, U64_MAX, 0xff);
}

function assertRid(rid: bigint): void {
  assert(typeof rid === 'bigint' && rid > 0n && rid <= U64_MAX, `bad rid ${String(rid)}`);
}

const hex = (n: bigint): string => n.toString(16);
