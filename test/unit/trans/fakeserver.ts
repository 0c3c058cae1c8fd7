/*
 * A small in-process stand-in for the server's log trees handlers
 * (PROTOCOL.md 4.6, 4.7), for the client transaction and forest tests
 * until src/server/logtrees.ts lands.
 *
 * It runs on a real ServerVolume over the same in-memory metadata device
 * the client writes to: GET splices the lt's meta_freed onto the server's
 * idle freed list and refills meta_avail from the server's meta_avail
 * extents (ServerAlloc), draws get_trans_seq from a counter kept in
 * super.seq, stores the lt as an item in logs_root, and commits the volume
 * before it answers; COMMIT checks the lt the way 4.7 does, in its order
 * (rid, found, same get_trans_seq else EIO, already committed -> ack with
 * no change), sets commit := get, stores and commits.  getRoots() returns
 * the committed fs_root and logs_root, as GET_ROOTS does.
 *
 * Handlers run one at a time, as under the real server's commit lock.
 *
 * Left out: finalization and merges (5.6), data zones and data extents
 * (data_avail is left empty and flagged LOW, which is what a server with
 * no free data says), srch rotation (4.7 step 3).
 *
 * A handler that fails half way (ENOSPC, corruption) leaves in-memory state
 * that must not be committed (src/alloc/server.ts): the server "restarts"
 * then, reopening the volume from its last durable super and reloading the
 * lts from logs_root, and the error goes to the client, which retries.
 *
 * Faults: queue per call kind.  'fail' throws before anything is done (an
 * error response); 'lost' does all the work and commits, then throws (the
 * response never arrived).  `commitAlwaysFails` makes every COMMIT fail.
 * Every call is appended to `trace` with its outcome.
 */
import { btreeForce, btreeRange } from '../../../src/btree/btree.js';
import { emptyRoot, cloneRoot } from '../../../src/btree/store.js';
import { emptyAllocRoot } from '../../../src/alloc/extent.js';
import { emptyListHead } from '../../../src/alloc/list.js';
import { ZERO_REF } from '../../../src/format/block.js';
import { ALLOC_FLAG_LOW } from '../../../src/format/common.js';
import { DATA_ALLOC_ZONE_BYTES } from '../../../src/format/constants.js';
import { FsError } from '../../../src/format/errors.js';
import { logTreesKey } from '../../../src/format/items.js';
import { decodeLogTrees, encodeLogTrees, type LogTrees } from '../../../src/format/logtrees.js';
import { U64_MAX } from '../../../src/format/layout.js';
import type { BlockDevice } from '../../../src/runtime/device.js';
import type { SeededRandom } from '../../../src/runtime/random.js';
import { ServerVolume } from '../../../src/server/volume.js';
import { emptySrchFile } from '../../../src/srch/file.js';
import type { ForestRoots } from '../../../src/forest/reader.js';
import type { TransServer } from '../../../src/trans/trans.js';

export type Fault = 'fail' | 'lost';

export const SERVER_OPTS = { fillLo: 1024, fillTarget: 2048, reserved: () => 64n, cacheSlots: 512 };
/** Client meta_avail lists are refilled to this (small, so tests reach commit_before_hold). */
export const CLIENT_FILL = { lo: 128, target: 256 };

export function zeroLogTrees(rid: bigint, nr: bigint): LogTrees {
  return {
    meta_avail: emptyListHead(), meta_freed: emptyListHead(), item_root: emptyRoot(), bloom_ref: { ...ZERO_REF },
    data_avail: emptyAllocRoot(), data_freed: emptyAllocRoot(), srch_file: emptySrchFile(),
    data_alloc_zone_blocks: 0n, data_alloc_zones: new Uint8Array(DATA_ALLOC_ZONE_BYTES), inode_count_delta: 0n,
    get_trans_seq: 0n, commit_trans_seq: 0n, max_item_seq: 0n, finalize_seq: 0n, rid, nr, flags: 0n,
  };
}

export class FakeLogTreesServer {
  readonly trace: string[] = [];
  readonly lts = new Map<bigint, LogTrees>();
  readonly faults: { get: Fault[]; commit: Fault[] } = { get: [], commit: [] };
  commitAlwaysFails = false;
  readonly counters = { gets: 0, getsAlreadyOpen: 0, commits: 0, commitsAlreadyCommitted: 0, commitsRejected: 0, faults: 0 };
  private committedRoots: ForestRoots;

  restarts = 0;
  private queue: Promise<void> = Promise.resolve();
  private readonly clean = new WeakSet<Error>();

  private constructor(private volume: ServerVolume, private readonly dev: BlockDevice, private readonly random: SeededRandom) {
    this.committedRoots = this.snapshotRoots();
  }

  static async open(dev: BlockDevice, random: SeededRandom): Promise<FakeLogTreesServer> {
    return new FakeLogTreesServer(await ServerVolume.open(dev, { ...SERVER_OPTS, random: random.fork('vol0') }), dev, random);
  }

  get vol(): ServerVolume {
    return this.volume;
  }

  /** Drop everything not durable: reopen the volume, reload the lts. */
  private async restart(): Promise<void> {
    this.restarts++;
    this.volume.close();
    this.volume = await ServerVolume.open(this.dev, { ...SERVER_OPTS, random: this.random.fork(`vol${this.restarts}`) });
    this.lts.clear();
    const first = logTreesKey(0n, 0n);
    const last = logTreesKey(U64_MAX, U64_MAX);
    for await (const it of btreeRange(this.volume.store, this.volume.sb.logs_root, first, last)) {
      const lt = decodeLogTrees(it.val);
      const cur = this.lts.get(lt.rid);
      if (cur === undefined || cur.nr < lt.nr) this.lts.set(lt.rid, lt);
    }
    this.committedRoots = this.snapshotRoots();
    this.trace.push('server restart');
  }

  /**
   * Run a handler, one at a time (the real server's commit lock); a
   * failure in the middle restarts the server.
   */
  private guarded<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(() => this.guardedLocked(fn));
    this.queue = run.then(() => undefined, () => undefined);
    return run;
  }

  private async guardedLocked<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      // Rejections and injected faults leave no half-done state.
      if (e instanceof Error && this.clean.has(e)) throw e;
      this.trace.push(`server error: ${e instanceof Error ? e.message : String(e)}`);
      await this.restart();
      throw e;
    }
  }

  get seq(): bigint {
    return this.vol.sb.seq;
  }

  /** The TransServer a mount with this rid talks to. */
  client(rid: bigint): TransServer {
    return {
      getLogTrees: () => this.getLogTrees(rid),
      commitLogTrees: (lt) => this.commitLogTrees(rid, lt),
    };
  }

  /** GET_ROOTS: the committed fs_root and logs_root. */
  async getRoots(): Promise<ForestRoots> {
    return { fs_root: cloneRoot(this.committedRoots.fs_root), logs_root: cloneRoot(this.committedRoots.logs_root) };
  }

  /** Commit whatever the test changed on the volume directly (fs_root items). */
  async commitVolume(): Promise<void> {
    await this.vol.commit();
    this.committedRoots = this.snapshotRoots();
  }

  getLogTrees(rid: bigint): Promise<LogTrees> {
    return this.guarded(() => this.getLogTreesLocked(rid));
  }

  commitLogTrees(rid: bigint, sent: LogTrees): Promise<void> {
    return this.guarded(() => this.commitLogTreesLocked(rid, sent));
  }

  private async getLogTreesLocked(rid: bigint): Promise<LogTrees> {
    this.counters.gets++;
    const fault = this.faults.get.shift();
    if (fault === 'fail') return this.fail('GET', 'ENOSPC');
    let lt = this.lts.get(rid);
    if (lt === undefined) lt = zeroLogTrees(rid, 1n);
    if (lt.get_trans_seq < lt.commit_trans_seq) {
      this.trace.push(`GET rid ${rid}: EINVAL`);
      throw this.cleanError(new FsError('EINVAL', 'get < commit'));
    }
    if (lt.get_trans_seq > lt.commit_trans_seq) {
      this.counters.getsAlreadyOpen++;
      this.trace.push(`GET -> ${lt.get_trans_seq} (already open)`);
      if (fault === 'lost') return this.fail('GET', 'EIO', 'response lost');
      return structuredClone(lt);
    }
    lt = structuredClone(lt);
    const alloc = this.vol.alloc;
    if (lt.meta_freed.ref.blkno !== 0n) await alloc.reclaimList(lt.meta_freed);
    await alloc.fillList(lt.meta_avail, CLIENT_FILL.lo, CLIENT_FILL.target);
    lt.data_avail.flags |= ALLOC_FLAG_LOW;
    this.vol.sb.seq += 1n;
    lt.get_trans_seq = this.vol.sb.seq;
    await this.store(lt);
    this.trace.push(`GET -> ${lt.get_trans_seq}`);
    if (fault === 'lost') return this.fail('GET', 'EIO', 'response lost');
    return structuredClone(lt);
  }

  private async commitLogTreesLocked(rid: bigint, sent: LogTrees): Promise<void> {
    this.counters.commits++;
    const fault = this.faults.commit.shift();
    if (fault === 'fail' || this.commitAlwaysFails) return this.fail(`COMMIT ${sent.get_trans_seq}`, 'EIO');
    const lt = structuredClone(sent);
    const reject = (code: 'EIO' | 'ENOENT', why: string): never => {
      this.counters.commitsRejected++;
      this.trace.push(`COMMIT ${lt.get_trans_seq}: ${code} ${why}`);
      throw this.cleanError(new FsError(code, why));
    };
    if (lt.rid !== rid) reject('EIO', `rid ${lt.rid} on the connection of ${rid}`);
    const existing = this.lts.get(rid);
    if (existing === undefined || existing.nr !== lt.nr) reject('ENOENT', 'no such lt');
    if (existing!.get_trans_seq !== lt.get_trans_seq) reject('EIO', `open transaction is ${existing!.get_trans_seq}`);
    if (existing!.commit_trans_seq === lt.get_trans_seq) {
      this.counters.commitsAlreadyCommitted++;
      this.trace.push(`COMMIT ${lt.get_trans_seq} (already committed)`);
      if (fault === 'lost') return this.fail('COMMIT', 'EIO', 'response lost');
      return;
    }
    lt.commit_trans_seq = lt.get_trans_seq;
    await this.store(lt);
    this.trace.push(`COMMIT ${lt.get_trans_seq}`);
    if (fault === 'lost') return this.fail('COMMIT', 'EIO', 'response lost');
  }

  private async store(lt: LogTrees): Promise<void> {
    await btreeForce(this.vol.store, this.vol.sb.logs_root, logTreesKey(lt.rid, lt.nr), encodeLogTrees(lt));
    await this.commitVolume();
    this.lts.set(lt.rid, lt);
  }

  private fail(what: string, code: 'EIO' | 'ENOSPC', why = 'injected'): never {
    this.counters.faults++;
    this.trace.push(`${what}: ${code} (${why})`);
    throw this.cleanError(new FsError(code, `${what}: ${why}`));
  }

  private cleanError(e: Error): Error {
    this.clean.add(e);
    return e;
  }

  private snapshotRoots(): ForestRoots {
    return { fs_root: cloneRoot(this.vol.sb.fs_root), logs_root: cloneRoot(this.vol.sb.logs_root) };
  }
}
