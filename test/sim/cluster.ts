/*
 * The simulated cluster: ONE server and any number of mounts in one
 * process, on the seeded simulated network (src/net/sim.ts) and its
 * FakeClock, all from one seed (STYLE.md 7).  Not a test file: the
 * scenarios (scenarios.test.ts), the random sweep (sweep.ts) and the test
 * of the test (broken.test.ts) build on it.
 *
 *                       medium: one MemoryBlockDevice (mkfs'd), the
 *                       durable bytes every node shares
 *          +----------------+----------------+-----------------+
 *   FaultDevice(server)  FaultDevice(c1)  FaultDevice(c2)  ...   one per node
 *   NodeDisk gate        NodeDisk gate    NodeDisk gate          incarnation
 *          |                |                |
 *   ServerVolume        BlockCache+CacheImages (own cache per mount)
 *   CommitQueue         ItemCache <- ForestWriter (via Trans)
 *   SeqCounter          Trans (src/trans) --TransServer-->
 *   LogTreesServer      NetTransServer (src/client) over NetClient
 *   TransHandlers  <---------------- simulated network ------------->
 *   NetServer
 *
 * Disks.  Each node incarnation writes through its own FaultDevice over the
 * shared medium: its unflushed writes are its own (a crash of the server
 * must not lose a mount's written-but-unflushed blocks, and vice versa),
 * and a crash runs FaultDevice.crash(), which loses, lands or tears each
 * unflushed write.  Every node's FaultDevice sits behind a NodeDisk gate
 * that throws LifecycleError once the node crashed: the crashed node's
 * objects are dropped, but their pending promise continuations still run,
 * and the gate makes sure none of them ever touches the medium again.
 * (Network sends of a crashed node already vanish: sim.crash abandons its
 * sockets, and its timers never fire.)  The gate also gives writes and
 * flushes a latency on the node's clock, so that simulated time passes
 * inside a commit and a crash can find unflushed writes; a fault site
 * crashes a node exactly as it issues a flush with writes pending (a
 * server mid-commit, the super maybe written and maybe not; a mount
 * between writing its blocks and sending COMMIT).
 *
 * Server.  startServer() opens a new incarnation from the medium (a new
 * term, a fresh ServerVolume, commit queue, seq counter, log trees server,
 * NetServer with the transaction handlers).  crashServer() kills it:
 * network gone, disk gated, unflushed writes crashed; a restart is
 * scheduled.  A volume that failed (commitq.fail, a failed commit) is
 * treated like a daemon that stopped: crash and restart.  The service the
 * handlers call is wrapped so that the harness can crash the server right
 * after a GET or COMMIT was applied and made durable but before its
 * response leaves: a one-shot trigger for scenarios (crashAfterNext) and a
 * rate for the sweep.  That is the window of PROTOCOL.md 4.14 (1), (2).
 *
 * Mounts.  mountClient() makes a new mount incarnation on a host: a new
 * rid, its own disk and block cache, an ItemCache, a Trans over a
 * NetTransServer over a NetClient, and a LockClient over the same
 * NetClient, Trans and ItemCache, with a model of the kernel's caches as
 * its kernel hook.  The private workload (set/del/srch) writes its own key
 * space with WRITE_ONLY lock semantics described by hand (createForce /
 * deleteForce: it never reads, and no other mount touches those keys); the
 * shared workload (increment/read/remove/incrementTwo/indexWrite) takes
 * real cluster locks from the lock server and reads through the item
 * cache, and is checked against sharedmodel.ts.  crashClient() kills a
 * mount: its uncommitted work is lost with it.
 *
 * Locks.  Every server incarnation runs a LockServer over its NetServer
 * (write seqs from its SeqCounter through lockSeqsOf).  mounted_clients is
 * modelled by a set that survives server crashes: a rid greeting with term
 * 0 joins it, a reclaimed rid leaves it.  A new server recovers the locks
 * of every rid in it (LOCK_RECOVER on first contact) and processes no lock
 * request until all have recovered or were fenced by the recovery timer;
 * its GET_LOG_TREES waits for that too (PROTOCOL.md 13.26).  Fencing
 * crashes the mount, then the lock server forgets the rid, then its lt is
 * reclaimed, then it leaves mounted_clients (reclaim_rid order).
 *
 * The kernel cache model.  A shared FS-zone key a mount has read or
 * written is kept in its kernel cache model and later reads of it are
 * served from there without any lock, as the kernel serves cached
 * attributes and names without asking the daemon; the lock client's
 * kernel hook drops the entries of the inodes an invalidated lock covers.
 * A missed invalidation shows up as a stale read.
 *
 * The lock oracle: every grant a mount receives is compared with what every
 * other live mount holds of that lock (sharedmodel.ts).
 *
 * Fencing and reclaim (PROTOCOL.md 1.6, 3.7, 3.10, 4.8), modelled here
 * because the fence/recovery machinery is not part of this issue: when a
 * greeted connection's reconnect-wait expires (NetServer hook), or when a
 * rid that had an open lt at server start has not greeted within the
 * recovery wait, the harness fences the rid: the mount is crashed (if it
 * was still alive: fencing guarantees it is dead before its resources are
 * taken) and the server reclaims its lt (reclaimRid).  A reclaim lost to a
 * server crash is redone by the next server's recovery timer.
 *
 * Models.  Every mount incarnation has its own key space (one 1024-inode
 * lock group, so no two incarnations ever write the same key) and records
 * each operation once it changed the cache, before releasing its hold (so
 * in release order, even with concurrent holders); a successful sync marks
 * the operations recorded before it started durable.  Because a commit
 * only ever snapshots the item cache with no holder inside (the WRITER
 * bit), the durable state of a mount is always its state after some prefix
 * of its operations: for a live mount after its final sync that is all of
 * them; for a crashed one, some prefix at least as long as its last
 * successful sync.
 *
 * Shared keys are checked as they are read (a stale read is an error at
 * once) and at the end: each one's durable value, read through a fresh
 * forest reader, must be its latest version or one a crash may have lost.
 *
 * The end-of-run checker (verify): fsck of the medium (every block
 * referenced, free or listed exactly once; every structure valid); the log
 * trees invariants (4.13 (1), (2)) from a fresh server over the medium;
 * every crashed mount's lt finalized with commit == get; every mount's
 * items, read back through a freshly opened ForestReader over the medium,
 * equal to its model after an allowed prefix, and its srch entries (found
 * in srch_root LOG files or in lt srch files) present exactly once for the
 * ops of that prefix and absent for later ones.
 *
 * Liveness: after the fault window the links go quiet, partitions heal,
 * fault rates drop to zero and every live mount's workload, final sync
 * included, must finish within a bounded simulated time.
 */
import assert from 'node:assert/strict';
import { btreeIterate } from '../../src/btree/btree.js';
import { BlockCache } from '../../src/block/cache.js';
import { CacheImages } from '../../src/block/images.js';
import { NetTransServer } from '../../src/client/transserver.js';
import { ForestReader } from '../../src/forest/reader.js';
import { indexLockRange, lockRangeOf } from '../../src/format/lock.js';
import { LockClient, type KernelInvalidation, type LockClientCounters, type LockEvent } from '../../src/lock/client.js';
import { LockServer, lockSeqsOf, type LockServerCounters } from '../../src/server/lock.js';
import { SharedModel, compatibleHolders, hexOf } from './sharedmodel.js';
import { readSrchLogEntries } from '../../src/srch/file.js';
import { CorruptionError, LifecycleError } from '../../src/format/errors.js';
import { FS_TYPE, INDEX_TYPE, SRCH_TYPE, ZONE, indexKey } from '../../src/format/items.js';
import { formatKey, key, type Key } from '../../src/format/key.js';
import { U64_MAX, getU64, setU64 } from '../../src/format/layout.js';
import { LOG_TREES_FLAG_FINALIZED, decodeLogTrees, type LogTrees } from '../../src/format/logtrees.js';
import { readSrchFile, type SrchEntry } from '../../src/format/srch.js';
import { fsck } from '../../src/fsck/fsck.js';
import { ItemCache, type ItemLock } from '../../src/item/cache.js';
import { planMkfs } from '../../src/mkfs/mkfs.js';
import { NetClient } from '../../src/net/client.js';
import { NetServer } from '../../src/net/server.js';
import { Simulator, type LinkFaults, type SimEndpoint } from '../../src/net/sim.js';
import type { Clock } from '../../src/runtime/clock.js';
import type { BlockDevice } from '../../src/runtime/device.js';
import { FaultDevice } from '../../src/runtime/faultdevice.js';
import { MemoryBlockDevice } from '../../src/runtime/memdevice.js';
import type { SeededRandom } from '../../src/runtime/random.js';
import { CommitQueue } from '../../src/server/commitq.js';
import { TransHandlers, type LogTreesService } from '../../src/server/handlers.js';
import { LogTreesServer, type LogTreesCounters } from '../../src/server/logtrees.js';
import { SeqCounter } from '../../src/server/seq.js';
import { ServerVolume, readMetaSuper } from '../../src/server/volume.js';
import { Trans } from '../../src/trans/trans.js';

export const MIB = 1n << 20n;
export const FSID = 0x5c0f5c0f00d0n;
export const SERVER_ADDR = 'server:7000';
const META_BYTES = 256n * MIB;
const DATA_BYTES = 16n * MIB;

/** The server's lists, small for a 4096-block metadata device. */
const VOL_OPTS = { fillLo: 64, fillTarget: 256, reserved: () => 64n, cacheSlots: 128 };
const CLIENT_CACHE_SLOTS = 64;
/** FS item type of the workload's items (any value is allowed for it). */
const ITEM_TYPE = 6;

export const sleep = (clock: Clock, ms: number): Promise<void> => new Promise((resolve) => clock.setTimer(ms, resolve));

/* ---- the medium ------------------------------------------------------------------- */

let mkfsWrites: { off: bigint; bytes: Uint8Array }[] | null = null;

/** A freshly mkfs'd metadata device (the plan is computed once per process). */
export function mkfsMedium(): MemoryBlockDevice {
  if (mkfsWrites === null) {
    const plan = planMkfs({ metaPath: 'meta', dataPath: 'data', allowSmall: true, slots: [{ nr: 0, addr: 0x7f000001, port: 7000 }] },
      META_BYTES, DATA_BYTES, { fsid: FSID, uuid: new Uint8Array(16).fill(7), now: { sec: 1n, nsec: 0 } });
    mkfsWrites = plan.writes.filter((w) => w.dev === 'meta').map((w) => ({ off: w.off, bytes: w.bytes }));
  }
  const dev = new MemoryBlockDevice(META_BYTES, 'meta');
  for (const w of mkfsWrites) dev.writeSync(w.off, w.bytes);
  return dev;
}

/**
 * A node's view of the medium (see the essay): dead once the node crashed,
 * and slow: a write is recorded by the FaultDevice at once but completes
 * ioMs later, and a flush happens ioMs after it was issued, each on the
 * node's own clock.  So simulated time passes between the writes of a
 * commit and its flushes, and a crash can fall between them and find
 * unflushed writes to lose, land or tear.  (With instant I/O every commit
 * would finish between two simulator events and no crash could ever
 * interrupt one.)  Timers of a crashed node never fire: its I/O in
 * flight never completes, as the node is gone.
 */
export class NodeDisk implements BlockDevice {
  private dead = false;
  constructor(
    readonly fault: FaultDevice,
    private readonly node: string,
    private readonly clock: Clock | null = null,
    private readonly random: SeededRandom | null = null,
    private readonly ioMs: readonly [number, number] = [0, 2],
    /** Fault site: called when a flush is issued, with writes pending; may crash the node. */
    private readonly beforeFlush: ((pending: number) => void) | null = null,
  ) {}
  get path(): string {
    return `${this.fault.path}@${this.node}`;
  }
  get sizeBytes(): bigint {
    return this.fault.sizeBytes;
  }
  kill(): void {
    this.dead = true;
  }
  private check(): void {
    if (this.dead) throw new LifecycleError('shutdown', `${this.node} crashed: its disk is gone`);
  }
  private delay(): Promise<void> | null {
    if (this.clock === null || this.random === null) return null;
    const [lo, hi] = this.ioMs;
    const ms = lo + this.random.int(hi - lo + 1);
    return new Promise((resolve) => this.clock!.setTimer(ms, resolve));
  }
  async read(off: bigint, len: number): Promise<Uint8Array> {
    this.check();
    return this.fault.read(off, len);
  }
  async write(off: bigint, data: Uint8Array): Promise<void> {
    this.check();
    await this.fault.write(off, data);
    await this.delay();
    this.check();
  }
  async flush(): Promise<void> {
    this.check();
    if (this.beforeFlush !== null && this.fault.pendingWrites > 0) this.beforeFlush(this.fault.pendingWrites);
    this.check();
    await this.delay();
    this.check();
    return this.fault.flush();
  }
  async close(): Promise<void> {
    // The medium is shared: never closed by a node.
  }
}

/* ---- options and counters -------------------------------------------------------------- */

export interface ClusterOptions {
  seed: bigint;
  link?: LinkFaults;
  trace?: boolean;
  /** The deliberately broken server of logtrees.ts (the sweep's test of the test). */
  broken?: boolean;
  srchRotateBlocks?: bigint;
  /** Server reconnect-wait before fencing a silent rid (default 3000 ms). */
  reconnectWaitMs?: number;
  /** Server-start wait for rids with open lts to greet (default 3000 ms). */
  recoveryWaitMs?: number;
  /** Every node's disk: chance each unflushed write lands / tears at a crash. */
  crashLandProbability?: number;
  tearProbability?: number;
  /** Mount commit timer (default 10 s as in the reference). */
  commitIntervalMs?: number;
  /** Every node's disk: chance a read returns one flipped byte (transient; the medium is intact). */
  readCorruptProbability?: number;
  /** Latency of every node's disk writes and flushes (default [0, 2] ms; see NodeDisk). */
  ioMs?: readonly [number, number];
  /** Also serialize a mount's concurrent srch appends in the harness (see ClientNode.srch; default false). */
  serializeSrch?: boolean;
  /** TEST OF THE TEST: every server incarnation's first n conflicting grants skip invalidation. */
  brokenLocks?: number;
}

/** Per-run fault rates the sweep turns on in its window and off to quiesce. */
export interface FaultRates {
  /** Simulator fault site in handlers.ts: GET fails ENOSPC. */
  getFail: number;
  /** Crash the server after a COMMIT / GET was applied and durable, before the reply. */
  crashAfterCommit: number;
  crashAfterGet: number;
  /** Crash a node as it issues a flush with unflushed writes (a commit in flight). */
  serverCrashInFlush: number;
  clientCrashInFlush: number;
}

export interface ClusterCounters {
  serverStarts: number;
  /** Server starts that failed on a (transiently) corrupt read and were retried. */
  serverStartRetries: number;
  serverCrashes: number;
  crashesAfterCommit: number;
  crashesAfterGet: number;
  /** Nodes crashed by the flush fault site, with writes unflushed. */
  crashesInFlush: number;
  volumeFailures: number;
  clientCrashes: number;
  fences: number;
  reclaims: number;
  /** First GETs answered with an error and retried. */
  mountRetries: number;
  /** GET_LAST_SEQ answers checked by the sweep's workload. */
  lastSeqChecks: number;
  /** Grants the lock oracle checked against every other live mount. */
  oracleChecks: number;
  /** Shared-key reads served from a mount's model kernel cache / through the item cache. */
  kernelCacheReads: number;
  itemReads: number;
  /** Kernel cache entries dropped by lock invalidations. */
  kernelCacheDropped: number;
  /** Rids whose lock recovery a server waited for / fenced for not recovering. */
  lockRecoveryFences: number;
  /** Shared-key operations that failed on a corrupt read (EIO to the user). */
  sharedReadErrors: number;
}

/* ---- models ------------------------------------------------------------------------------ */

export type ModelOp =
  | { kind: 'set'; key: Key; val: Uint8Array }
  | { kind: 'del'; key: Key }
  | { kind: 'srch'; entry: SrchEntry };

const keyName = (k: Key): string => `${k.zone}.${k.first}.${k.type}.${k.second}`;
const hex = (b: Uint8Array | null): string | null => (b === null ? null : Buffer.from(b).toString('hex'));

export class ClientModel {
  readonly ops: ModelOp[] = [];
  /** ops[0, synced) are durable (a sync that started after them succeeded). */
  synced = 0;
  readonly keys = new Map<string, Key>();

  record(op: ModelOp): void {
    if (op.kind !== 'srch') this.keys.set(keyName(op.key), op.key);
    this.ops.push(op);
  }

  /** Note a key the verifier must look up even if no op on it completed. */
  touch(k: Key): void {
    this.keys.set(keyName(k), k);
  }

  /** Key name -> value hex (null = absent) after the first p ops. */
  stateAt(p: number): Map<string, string | null> {
    const m = new Map<string, string | null>();
    for (const name of this.keys.keys()) m.set(name, null);
    for (const op of this.ops.slice(0, p)) {
      if (op.kind === 'set') m.set(keyName(op.key), hex(op.val));
      else if (op.kind === 'del') m.set(keyName(op.key), null);
    }
    return m;
  }
}

/* ---- nodes -------------------------------------------------------------------------------- */

export interface ServerNode {
  readonly term: bigint;
  readonly ep: SimEndpoint;
  readonly disk: NodeDisk;
  readonly vol: ServerVolume;
  readonly commitq: CommitQueue;
  readonly seq: SeqCounter;
  readonly lts: LogTreesServer;
  readonly handlers: TransHandlers;
  readonly net: NetServer;
  readonly locks: LockServer;
  /** Rids that greeted this incarnation (recovery, PROTOCOL.md 3.10). */
  readonly greeted: Set<bigint>;
  /** Every lt the service returned from GET, by rid (scenario checks). */
  readonly gotLts: Map<bigint, LogTrees[]>;
  dead: boolean;
}

/** A mount's model of the kernel's caches (attributes, names) of shared keys: key id -> (ino, value hex). */
export type KernelCacheModel = Map<string, { ino: bigint; val: string | null }>;

const SHARED_ITEM_TYPE = FS_TYPE.SYMLINK;

export class ClientNode {
  dead = false;
  mounted = false;
  /** The trans seq when this mount crashed (its later transactions may be lost). */
  crashSeq: bigint | null = null;
  /** Workload finished, final sync included. */
  done = false;
  readonly model = new ClientModel();
  /** Key space: the first inode of this incarnation's lock group. */
  readonly inoBase: bigint;
  private nextSrchId = 1n;
  private srchChain: Promise<void> = Promise.resolve();

  constructor(
    readonly cluster: Cluster,
    readonly name: string,
    readonly ep: SimEndpoint,
    readonly rid: bigint,
    readonly index: number,
    readonly disk: NodeDisk,
    readonly cache: BlockCache,
    readonly images: CacheImages,
    readonly items: ItemCache,
    readonly trans: Trans,
    readonly net: NetClient,
    readonly ts: NetTransServer,
    /** Trans and item cache log lines, and the Trans call trace. */
    readonly logs: string[],
    readonly trace: string[],
    readonly locks: LockClient,
    readonly kernel: KernelCacheModel,
  ) {
    this.inoBase = BigInt(index + 1) * 1024n;
  }

  /* ---- shared keys under cluster locks (sharedmodel.ts) --------------------------------- */

  /** A value that names its writer: counter u64, rid u64. */
  private value(counter: bigint): Uint8Array {
    const b = new Uint8Array(16);
    setU64(b, 0, counter);
    setU64(b, 8, this.rid);
    return b;
  }

  private counterOf(v: Uint8Array | null): bigint {
    return v === null || v.length < 8 ? 0n : getU64(v, 0);
  }

  private kernelSet(k: Key, v: Uint8Array | null): void {
    if (k.zone === ZONE.FS) this.kernel.set(formatKey(k), { ino: k.first, val: hexOf(v) });
  }

  private recordWrite(k: Key, v: Uint8Array | null, lock: ItemLock): void {
    const t = this.trans.transSeq;
    if (this.cluster.sim.traceEnabled) {
      this.cluster.note(`${this.name} rid ${this.rid.toString(16)} write ${formatKey(k)} = ${hexOf(v)?.slice(0, 16) ?? 'absent'} ` +
        `trans ${t} lock write seq ${lock.writeSeq}`);
    }
    this.cluster.shared.write(k, v, this, t);
  }

  private checkRead(k: Key, got: Uint8Array | null, how: string): void {
    this.cluster.checkSharedRead(k, got, this, `${this.name} rid ${this.rid.toString(16)} (${how})`);
  }

  /** Under a WRITE lock: read the counter at k (checked), write it + 1. */
  async increment(k: Key): Promise<void> {
    const h = await this.locks.lock('WRITE', lockRangeOf(k));
    try {
      await this.incrementLocked(k, h.item);
    } finally {
      this.locks.unlock(h);
    }
  }

  private async incrementLocked(k: Key, lock: ItemLock): Promise<void> {
    const cur = await this.items.lookup(k, lock);
    if (this.dead) return;
    this.checkRead(k, cur, 'write');
    this.cluster.counters.itemReads++;
    const next = this.value(this.counterOf(cur) + 1n);
    const th = await this.trans.hold();
    try {
      if (cur === null) await this.items.create(k, next, lock);
      else await this.items.update(k, next, lock);
      this.recordWrite(k, next, lock);
      this.kernelSet(k, next);
    } finally {
      this.trans.release(th);
    }
  }

  /** Under WRITE locks on both keys' groups, taken in key order: increment both (a rename-like operation). */
  async incrementTwo(a: Key, b: Key): Promise<void> {
    const hs = await this.locks.lockMany('WRITE', [lockRangeOf(a), lockRangeOf(b)]);
    try {
      const lockOf = (k: Key): ItemLock => hs.find((h) => formatKey(h.start) === formatKey(lockRangeOf(k).start))!.item;
      await this.incrementLocked(a, lockOf(a));
      if (formatKey(a) !== formatKey(b) && !this.dead) await this.incrementLocked(b, lockOf(b));
    } finally {
      for (const h of hs) this.locks.unlock(h);
    }
  }

  /** Under a WRITE lock: delete k if it exists (the read checked). */
  async remove(k: Key): Promise<void> {
    const h = await this.locks.lock('WRITE', lockRangeOf(k));
    try {
      const cur = await this.items.lookup(k, h.item);
      if (this.dead) return;
      this.checkRead(k, cur, 'delete');
      this.cluster.counters.itemReads++;
      if (cur === null) return;
      const th = await this.trans.hold();
      try {
        await this.items.delete(k, h.item);
        this.recordWrite(k, null, h.item);
        this.kernelSet(k, null);
      } finally {
        this.trans.release(th);
      }
    } finally {
      this.locks.unlock(h);
    }
  }

  /**
   * Read k: from the kernel cache model when it has the key (no lock, no
   * daemon: as the kernel serves cached attributes), else under a READ
   * lock through the item cache, filling the kernel cache.  Checked.
   */
  async read(k: Key): Promise<void> {
    const cached = k.zone === ZONE.FS ? this.kernel.get(formatKey(k)) : undefined;
    if (cached !== undefined) {
      this.cluster.counters.kernelCacheReads++;
      this.checkRead(k, cached.val === null ? null : Buffer.from(cached.val, 'hex'), 'kernel cache');
      return;
    }
    const h = await this.locks.lock('READ', lockRangeOf(k));
    try {
      const cur = await this.items.lookup(k, h.item);
      if (this.dead) return;
      this.cluster.counters.itemReads++;
      this.checkRead(k, cur, 'read');
      this.kernelSet(k, cur);
    } finally {
      this.locks.unlock(h);
    }
  }

  /** Under a WRITE_ONLY index lock: force-create (or force-delete) an index item only this mount writes. */
  async indexWrite(k: Key, del: boolean): Promise<void> {
    const h = await this.locks.lock('WRITE_ONLY', lockRangeOf(k));
    try {
      const th = await this.trans.hold();
      try {
        const v = del ? null : this.value(BigInt(this.cluster.shared.stats.writes));
        if (v === null) await this.items.deleteForce(k, h.item);
        else await this.items.createForce(k, v, h.item);
        this.recordWrite(k, v, h.item);
      } finally {
        this.trans.release(th);
      }
    } finally {
      this.locks.unlock(h);
    }
  }

  /** The shared index key this mount writes for n (unique to the mount). */
  indexKeyOf(major: bigint, n: number): Key {
    return indexKey(INDEX_TYPE.META_SEQ, major, (this.rid << 16n) | BigInt(n));
  }

  /** Drop idle locks (NULL requests). */
  purgeLocks(): number {
    return this.locks.purgeIdle();
  }

  get clock(): Clock {
    return this.ep.clock;
  }

  /** The workload's k-th key. */
  key(k: number): Key {
    return key(ZONE.FS, this.inoBase + BigInt(k % 1024), ITEM_TYPE, BigInt(k));
  }

  private lock(k: Key): ItemLock {
    const r = lockRangeOf(k);
    return { start: r.start, end: r.end, mode: 'WRITE_ONLY', writeSeq: 0n };
  }

  /** The first GET, retried every 500 ms on an error answer (a mount retrying). */
  async mount(): Promise<void> {
    for (;;) {
      if (this.dead) return;
      try {
        await this.trans.openFirst();
        this.mounted = true;
        return;
      } catch (e) {
        if (this.dead) return;
        this.cluster.counters.mountRetries++;
        this.logs.push(`mount: ${e instanceof Error ? e.message : String(e)}`);
        await sleep(this.clock, 500);
      }
    }
  }

  /*
   * Each operation is recorded in the model after it changed the cache and
   * before its hold is released, in the same tick: so the model's order is
   * the order of releases, and a commit (which snapshots only with no
   * holder inside) always covers a prefix of it.
   */

  async set(k: Key, val: Uint8Array): Promise<void> {
    const h = await this.trans.hold();
    try {
      await this.items.createForce(k, val, this.lock(k));
      this.model.record({ kind: 'set', key: k, val: val.slice() });
    } finally {
      this.trans.release(h);
    }
  }

  async del(k: Key): Promise<void> {
    const h = await this.trans.hold();
    try {
      await this.items.deleteForce(k, this.lock(k));
      this.model.record({ kind: 'del', key: k });
    } finally {
      this.trans.release(h);
    }
  }

  /**
   * Log a .srch. xattr entry (unique id per incarnation).
   *
   * SrchLogWriter.append (src/srch/file.ts) serializes concurrent appends
   * itself (the sweep once found two holders allocating a leaf for the same
   * logical block).  `serializeSrch` additionally orders them in the
   * harness; it is off by default so the sweep exercises the writer's own
   * serialization.
   */
  async srch(hash: bigint): Promise<SrchEntry> {
    const e: SrchEntry = { hash, ino: this.inoBase + (this.nextSrchId % 1024n), id: (BigInt(this.index + 1) << 32n) | this.nextSrchId++ };
    const add = async (): Promise<void> => {
      const h = await this.trans.hold();
      try {
        await this.trans.srchAdd(h, e);
        this.model.record({ kind: 'srch', entry: e });
      } finally {
        this.trans.release(h);
      }
    };
    if (!this.cluster.opts.serializeSrch) {
      await add();
      return e;
    }
    const prev = this.srchChain;
    let done!: () => void;
    this.srchChain = new Promise<void>((r) => { done = r; });
    try {
      await prev;
      await add();
    } finally {
      done();
    }
    return e;
  }

  /** sync(): on success everything recorded before the call is durable. */
  async sync(): Promise<void> {
    const n = this.model.ops.length;
    await this.trans.sync();
    if (n > this.model.synced) this.model.synced = n;
  }
}

/* ---- the cluster ------------------------------------------------------------------------------ */

export class Cluster {
  readonly sim: Simulator;
  readonly medium: MemoryBlockDevice;
  readonly rates: FaultRates = {
    getFail: 0, crashAfterCommit: 0, crashAfterGet: 0, serverCrashInFlush: 0, clientCrashInFlush: 0,
  };
  /** Called after a fault site crashed a mount (the sweep remounts the host). */
  onClientCrash: ((c: ClientNode) => void) | null = null;
  readonly counters: ClusterCounters = {
    serverStarts: 0, serverStartRetries: 0, serverCrashes: 0, crashesAfterCommit: 0, crashesAfterGet: 0, crashesInFlush: 0, volumeFailures: 0,
    clientCrashes: 0, fences: 0, reclaims: 0, mountRetries: 0, lastSeqChecks: 0, oracleChecks: 0, kernelCacheReads: 0,
    itemReads: 0, kernelCacheDropped: 0, lockRecoveryFences: 0, sharedReadErrors: 0,
  };
  /** The shared keys' versions (sharedmodel.ts). */
  readonly shared = new SharedModel();
  /**
   * mounted_clients, modelled: a rid is added when it greets with term 0
   * (before the greeting is answered, as the server commits the item
   * first) and removed when it is reclaimed.  It survives server crashes
   * like the item does; each new server recovers the locks of every rid in it.
   */
  readonly mountedClients = new Set<bigint>();
  /** Every server incarnation, in start order (counters: ltCounters(), handlerCounters()). */
  readonly servers: ServerNode[] = [];
  readonly clients: ClientNode[] = [];
  /** Problems found while running (bugs in harness callbacks, unexpected errors). */
  readonly errors: string[] = [];
  /** One-shot triggers: crash the server after the next applied COMMIT / GET (of this rid, if set). */
  readonly crashAfterNext: { commit: bigint | null; get: bigint | null } = { commit: null, get: null };
  server: ServerNode | null = null;
  /** Rids fenced and reclaimed. */
  readonly reclaimed = new Set<bigint>();
  /** What verify() saw: crashed mounts, and those whose durable prefix lost operations. */
  readonly verifyStats = { liveMounts: 0, crashedMounts: 0, crashedLostOps: 0, crashedKeptUnsynced: 0, keys: 0, srchEntries: 0, sharedKeys: 0 };

  private term = 0n;
  private nextRid = 0x100n;
  private restartPending = false;
  private readonly rnd: SeededRandom;
  private readonly faultRnd: SeededRandom;
  private readonly totalMetaBlocks: bigint;
  /** Default crash-to-restart delay of the server (ms). */
  restartDelayMs = 200;

  constructor(readonly opts: ClusterOptions) {
    this.opts = { serializeSrch: false, ...opts };
    this.sim = new Simulator(opts.seed, opts.link !== undefined ? { defaultLink: opts.link } : {});
    this.sim.traceEnabled = opts.trace ?? false;
    this.medium = mkfsMedium();
    this.rnd = this.sim.fork('cluster');
    this.faultRnd = this.sim.fork('fault-sites');
    this.totalMetaBlocks = META_BYTES / (64n * 1024n);
  }

  note(line: string): void {
    this.sim.note(line);
  }

  /* ---- server ------------------------------------------------------------------------------ */

  /**
   * Open a new server incarnation from the medium and start listening.
   * With transient read corruption turned on (opt-in), a start that read
   * a block corrupt twice in a row (the block layer re-reads once;
   * readMetaSuper not at all) fails with a CorruptionError; like a real
   * server it is then started again, as a new incarnation.
   */
  async startServer(): Promise<ServerNode> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.startServerOnce();
      } catch (e) {
        if (!(e instanceof CorruptionError) || (this.opts.readCorruptProbability ?? 0) === 0 || attempt >= 10) throw e;
        this.counters.serverStartRetries++;
        this.note(`server start failed: ${e.message}; starting again`);
        const s = this.server;
        if (s !== null && !s.dead) {
          s.dead = true;
          s.disk.kill();
          s.commitq.destroy();
        }
        if (this.sim.endpoint('server').up) this.sim.crash('server');
      }
    }
  }

  private async startServerOnce(): Promise<ServerNode> {
    assert(this.server === null || this.server.dead, 'a server is already running');
    const ep = this.sim.endpoint('server');
    if (!ep.up) this.sim.restart('server');
    this.restartPending = false;
    const term = ++this.term;
    const fault = new FaultDevice(this.medium, ep.random.fork('disk'), {
      crashLandProbability: this.opts.crashLandProbability ?? 0, tearProbability: this.opts.tearProbability ?? 0,
      readCorruptProbability: this.opts.readCorruptProbability ?? 0,
    });
    const disk = new NodeDisk(fault, `server term ${term}`, ep.clock, ep.random.fork('io'), this.opts.ioMs, () => {
      if (this.rates.serverCrashInFlush > 0 && this.faultRnd.float() < this.rates.serverCrashInFlush) {
        this.counters.crashesInFlush++;
        this.crashServer('while flushing a commit');
      }
    });
    const vol = await ServerVolume.open(disk, { ...VOL_OPTS, random: ep.random.fork('vol') });
    const commitq = new CommitQueue(vol);
    const seq = await SeqCounter.open(vol, commitq);
    const lts = new LogTreesServer(vol, commitq, seq, {
      metaFillLo: 32, metaFillTarget: 128, srchRotateBlocks: this.opts.srchRotateBlocks ?? 1n,
      brokenProcessResentCommit: this.opts.broken === true, invariants: true,
    });
    const greeted = new Set<bigint>();
    let node: ServerNode;
    const net = new NetServer({
      transport: ep.transport, clock: ep.clock, random: ep.random.fork('net'), fsid: FSID, term, listenAddr: SERVER_ADDR,
      reconnectWaitMs: this.opts.reconnectWaitMs ?? 3000, name: `server term ${term}`,
      log: this.sim.logger(`server${term}`), onBug: this.sim.onBug,
      hooks: {
        greeting: (g) => {
          greeted.add(g.rid);
          if (g.clientTerm === 0n && !this.reclaimed.has(g.rid)) this.mountedClients.add(g.rid);
        },
        clientUp: (rid) => {
          if (!node.dead) node.locks.clientUp(rid);
        },
        reconnectTimeout: (rid) => {
          if (!node.dead) void this.fence(rid, 'reconnect-wait expired');
        },
      },
    });
    const locks = new LockServer({
      net, seqs: lockSeqsOf(commitq, seq), log: this.sim.logger(`locks${term}`), brokenGrants: this.opts.brokenLocks ?? 0,
    }).register();
    locks.beginRecovery(this.mountedClients);
    const service = this.wrapService(() => node, lts);
    // The simulator fault site reads the cluster's current rate.
    const handlers = new TransHandlers(service, { simFaults: this.simFaultSite() });
    node = {
      term, ep, disk, vol, commitq, seq, lts, handlers, net, locks, greeted, gotLts: new Map(), dead: false,
    };
    handlers.register(net);
    this.server = node;
    this.servers.push(node);
    this.counters.serverStarts++;
    await net.listen();
    this.note(`server term ${term} up`);
    await this.armRecovery(node);
    return node;
  }

  /** The handlers' random GET fault site, live-bound to rates.getFail. */
  private simFaultSite(): { random: SeededRandom; getFailRate: number } {
    const rates = this.rates;
    const random = this.faultRnd;
    return {
      random,
      get getFailRate(): number {
        return rates.getFail;
      },
    };
  }

  /** Rids with an open lt at server start must greet within the recovery wait, or be fenced. */
  private async armRecovery(node: ServerNode): Promise<void> {
    const open: bigint[] = [];
    await btreeIterate(node.vol.store, node.vol.sb.logs_root, key(ZONE.LOG_TREES, 0n, 0), key(ZONE.LOG_TREES, U64_MAX, 0xff, U64_MAX, U64_MAX, 0xff), (it) => {
      const lt = decodeLogTrees(it.val);
      if ((lt.flags & LOG_TREES_FLAG_FINALIZED) === 0n) open.push(lt.rid);
    });
    if (open.length === 0 && !node.locks.recovering) return;
    node.ep.clock.setTimer(this.opts.recoveryWaitMs ?? 3000, () => {
      if (node.dead || this.server !== node) return;
      const late = new Set(open.filter((rid) => !node.greeted.has(rid)));
      for (const rid of node.locks.pendingRecovery()) {
        this.counters.lockRecoveryFences++;
        late.add(rid);
      }
      for (const rid of late) void this.fence(rid, 'did not recover');
    });
  }

  /** The service the handlers call: the real log trees server plus the crash-in-the-window sites. */
  private wrapService(nodeOf: () => ServerNode, lts: LogTreesServer): LogTreesService {
    const after = (kind: 'get' | 'commit', rid: bigint): void => {
      const node = nodeOf();
      if (node.dead) return;
      const trig = kind === 'get' ? this.crashAfterNext.get : this.crashAfterNext.commit;
      let fire = false;
      if (trig !== null && (trig === 0n || trig === rid)) {
        if (kind === 'get') this.crashAfterNext.get = null;
        else this.crashAfterNext.commit = null;
        fire = true;
      } else {
        const rate = kind === 'get' ? this.rates.crashAfterGet : this.rates.crashAfterCommit;
        fire = rate > 0 && this.faultRnd.float() < rate;
      }
      if (!fire) return;
      if (kind === 'get') this.counters.crashesAfterGet++;
      else this.counters.crashesAfterCommit++;
      this.crashServer(`after ${kind} of rid ${rid.toString(16)} was applied, before its reply`);
    };
    const failed = (e: unknown): never => {
      const node = nodeOf();
      if (!node.dead && node.vol.failure !== null) {
        this.counters.volumeFailures++;
        this.crashServer(`volume failed: ${node.vol.failure.message}`);
      }
      throw e;
    };
    return {
      getLogTrees: async (rid) => {
        let lt: LogTrees;
        try {
          // The seq counter must be past every recovered lock write seq
          // before a transaction seq is handed out (PROTOCOL.md 13.26).
          await nodeOf().locks.whenRecovered();
          lt = await lts.getLogTrees(rid);
        } catch (e) {
          return failed(e);
        }
        const node = nodeOf();
        const list = node.gotLts.get(rid) ?? [];
        list.push(lt);
        node.gotLts.set(rid, list);
        after('get', rid);
        return lt;
      },
      commitLogTrees: async (rid, lt) => {
        try {
          await lts.commitLogTrees(rid, lt);
        } catch (e) {
          return failed(e);
        }
        after('commit', rid);
      },
      getLastSeq: () => lts.getLastSeq().catch(failed),
    };
  }

  /** Kill the server: network gone, disk gated, unflushed writes crashed; restart later. */
  crashServer(why: string, restartAfterMs: number | null = this.restartDelayMs): void {
    const s = this.server;
    if (s === null || s.dead) return;
    this.note(`crash server term ${s.term}: ${why}`);
    s.dead = true;
    this.counters.serverCrashes++;
    s.locks.shutdown();
    this.sim.crash('server');
    s.disk.kill();
    s.commitq.destroy();
    void s.disk.fault.crash();
    if (restartAfterMs !== null) this.scheduleRestart(restartAfterMs);
  }

  scheduleRestart(ms: number): void {
    if (this.restartPending) return;
    this.restartPending = true;
    this.sim.schedule(ms, 'restart server', () => {
      this.startServer().catch((e: unknown) => this.errors.push(`server restart failed: ${errText(e)}`));
    });
  }

  /** Unflushed writes that node crashes lost, landed whole or tore, and reads corrupted, over every node incarnation. */
  diskCrashCounters(): { crashes: number; writesLost: number; writesLanded: number; writesTorn: number; readsCorrupted: number } {
    const out = { crashes: 0, writesLost: 0, writesLanded: 0, writesTorn: 0, readsCorrupted: 0 };
    for (const d of [...this.servers.map((x) => x.disk), ...this.clients.map((x) => x.disk)]) {
      for (const k of Object.keys(out) as (keyof typeof out)[]) out[k] += d.fault.counters[k];
    }
    return out;
  }

  /** Log trees counters summed over every server incarnation. */
  ltCounters(): LogTreesCounters {
    const sum = {} as Record<string, number>;
    for (const s of this.servers) {
      for (const [k, v] of Object.entries(s.lts.counters)) sum[k] = (sum[k] ?? 0) + v;
    }
    return sum as unknown as LogTreesCounters;
  }

  /** Lock server counters summed over every server incarnation. */
  lockServerCounters(): LockServerCounters {
    const sum = {} as Record<string, number>;
    for (const s of this.servers) {
      for (const [k, v] of Object.entries(s.locks.counters)) sum[k] = (sum[k] ?? 0) + v;
    }
    return sum as unknown as LockServerCounters;
  }

  /** Lock client counters summed over every mount incarnation. */
  lockClientCounters(): LockClientCounters {
    const sum = {} as Record<string, number>;
    for (const c of this.clients) {
      for (const [k, v] of Object.entries(c.locks.counters)) sum[k] = (sum[k] ?? 0) + v;
    }
    return sum as unknown as LockClientCounters;
  }

  /* ---- the lock oracle and shared reads (sharedmodel.ts) ------------------------------------- */

  /** At every grant: no other live mount holds an incompatible mode of that lock. */
  private oracle(c: ClientNode, ev: LockEvent): void {
    if (ev.type !== 'grant' || c.dead) return;
    this.counters.oracleChecks++;
    for (const d of this.clients) {
      if (d === c || d.dead) continue;
      const held = d.locks.modeOf(ev.key);
      if (!compatibleHolders(ev.mode, held)) {
        this.errors.push(`lock oracle: ${c.name} rid ${c.rid.toString(16)} was granted ${ev.mode} on ${formatKey(ev.key)} ` +
          `while ${d.name} rid ${d.rid.toString(16)} holds ${held}`);
      }
    }
  }

  /** A shared key read by a mount: the latest version, or one a crash may have lost. */
  checkSharedRead(k: Key, got: Uint8Array | null, reader: ClientNode, who: string): void {
    if (this.sim.traceEnabled) this.note(`${who} read ${formatKey(k)} = ${hexOf(got)?.slice(0, 16) ?? 'absent'}`);
    const err = this.shared.read(k, got, reader, who);
    if (err !== null) this.errors.push(`stale read: ${err}`);
  }

  /** Handler counters summed over every server incarnation. */
  handlerCounters(): TransHandlers['counters'] {
    const sum = {} as Record<string, number>;
    for (const s of this.servers) {
      for (const [k, v] of Object.entries(s.handlers.counters)) sum[k] = (sum[k] ?? 0) + v;
    }
    return sum as unknown as TransHandlers['counters'];
  }

  /* ---- fencing ------------------------------------------------------------------------------- */

  /** Fence a rid: its mount is dead before its lt is reclaimed (see the essay). */
  async fence(rid: bigint, why: string): Promise<void> {
    const node = this.server;
    if (node === null || node.dead) return;
    this.counters.fences++;
    this.note(`fence rid ${rid.toString(16)}: ${why}`);
    const c = this.clients.find((x) => x.rid === rid);
    if (c !== undefined && !c.dead) this.crashClient(c, `fenced: ${why}`);
    // reclaim_rid (PROTOCOL.md 1.4): the lock server forgets the rid first,
    // then its lt is reclaimed, and its mounted_clients item goes last.
    node.locks.forget(rid);
    try {
      await node.lts.reclaimRid(rid);
    } catch (e) {
      // The server died or failed meanwhile: the next one's recovery reclaims.
      if (!node.dead && node.vol.failure === null) this.errors.push(`reclaim of rid ${rid.toString(16)} failed: ${errText(e)}`);
      return;
    }
    if (node.dead) return;
    this.counters.reclaims++;
    this.reclaimed.add(rid);
    this.mountedClients.delete(rid);
  }

  /* ---- mounts ------------------------------------------------------------------------------- */

  /** A new mount incarnation on host `name` (restarted if it had crashed). */
  mountClient(name: string, opts: { start?: boolean } = {}): ClientNode {
    const ep = this.sim.endpoint(name);
    if (!ep.up) this.sim.restart(name);
    const rid = this.nextRid++;
    const index = this.clients.length;
    const fault = new FaultDevice(this.medium, ep.random.fork('disk'), {
      crashLandProbability: this.opts.crashLandProbability ?? 0, tearProbability: this.opts.tearProbability ?? 0,
      readCorruptProbability: this.opts.readCorruptProbability ?? 0,
    });
    const disk = new NodeDisk(fault, `${name} rid ${rid.toString(16)}`, ep.clock, ep.random.fork('io'), this.opts.ioMs, () => {
      if (this.rates.clientCrashInFlush > 0 && this.faultRnd.float() < this.rates.clientCrashInFlush) {
        const c = this.clients.find((x) => x.rid === rid);
        if (c !== undefined && !c.dead) {
          this.counters.crashesInFlush++;
          this.crashClient(c, 'while flushing its transaction');
          this.onClientCrash?.(c);
        }
      }
    });
    const cache = new BlockCache({ slots: CLIENT_CACHE_SLOTS });
    const images = new CacheImages(cache, disk, FSID, ep.random.fork('images'));
    const reader = new ForestReader(images, async () => {
      const sb = await readMetaSuper(disk);
      return { fs_root: sb.fs_root, logs_root: sb.logs_root };
    });
    const holder: { trans: Trans | null } = { trans: null };
    const logs: string[] = [];
    const items = new ItemCache({
      reader, maxBytes: 1 << 20,
      transSeq: () => holder.trans!.transSeq,
      held: () => holder.trans!.isHeld(),
      warn: (m) => logs.push(`items: ${m}`),
    });
    const net = new NetClient({
      transport: ep.transport, clock: ep.clock, random: ep.random.fork('net'), fsid: FSID, rid,
      findServer: () => SERVER_ADDR, name, log: this.sim.logger(name), onBug: this.sim.onBug,
    });
    const ts = new NetTransServer(net);
    const trace: string[] = [];
    const trans = new Trans({
      server: ts, clock: ep.clock, images, dev: disk, items, rid,
      bounds: { first: 2n, last: this.totalMetaBlocks - 1n },
      commitIntervalMs: this.opts.commitIntervalMs,
      log: (level, msg) => {
        logs.push(`${level}: ${msg}`);
        this.sim.note(`${name} trans ${level}: ${msg}`);
      },
      trace: (ev) => {
        if (trace.length < 2000) trace.push(`${this.sim.clock.nowMs()} ${ev}`);
      },
    });
    holder.trans = trans;
    const kernel: KernelCacheModel = new Map();
    const nodeRef: { c: ClientNode | null } = { c: null };
    const locks = new LockClient({
      net, trans, items,
      kernel: {
        invalidate: (inv: KernelInvalidation) => {
          if (inv.inodes === null) return;
          for (const [id, e] of kernel) {
            if (e.ino >= inv.inodes.first && e.ino <= inv.inodes.last) {
              kernel.delete(id);
              this.counters.kernelCacheDropped++;
            }
          }
        },
      },
      log: (l) => {
        logs.push(`locks: ${l}`);
        this.sim.note(`${name} ${l}`);
      },
      observe: (ev) => {
        if (this.sim.traceEnabled) {
          this.note(`${name} rid ${rid.toString(16)} lock ${ev.type} ${formatKey(ev.key)} ${ev.old} -> ${ev.mode}` +
            `${ev.type === 'grant' ? ` write seq ${ev.writeSeq}` : ''}`);
        }
        if (nodeRef.c !== null) this.oracle(nodeRef.c, ev);
      },
    }).register();
    const c = new ClientNode(this, name, ep, rid, index, disk, cache, images, items, trans, net, ts, logs, trace, locks, kernel);
    nodeRef.c = c;
    this.clients.push(c);
    if (opts.start ?? true) net.start();
    this.note(`mount ${name} rid ${rid.toString(16)}`);
    return c;
  }

  /** Kill a mount: its network, timers and disk are gone; uncommitted work is lost. */
  crashClient(c: ClientNode, why: string): void {
    if (c.dead) return;
    this.note(`crash ${c.name} rid ${c.rid.toString(16)}: ${why}`);
    c.dead = true;
    c.crashSeq = c.trans.transSeq;
    this.counters.clientCrashes++;
    if (this.sim.endpoint(c.name).up) this.sim.crash(c.name);
    c.disk.kill();
    void c.disk.fault.crash();
  }

  /* ---- running ------------------------------------------------------------------------------- */

  /** Quiet network: no faults, partitions healed, fault rates off. */
  quiesce(latencyMs: readonly [number, number] = [1, 5]): void {
    this.note('quiesce');
    this.sim.defaultLink = {
      latencyMs, dropRate: 0, dupRate: 0, delayRate: 0, delayMs: [0, 0], breakDetectMs: [1, 20],
    };
    this.sim.clearLinks();
    this.sim.healAll();
    this.rates.getFail = 0;
    this.rates.crashAfterCommit = 0;
    this.rates.crashAfterGet = 0;
    this.rates.serverCrashInFlush = 0;
    this.rates.clientCrashInFlush = 0;
    this.crashAfterNext.commit = null;
    this.crashAfterNext.get = null;
    if (this.server === null || this.server.dead) this.scheduleRestart(1);
  }

  /** Run the simulation until pred() or limitMs of simulated time. */
  runUntil(pred: () => boolean, limitMs: number): Promise<boolean> {
    return this.sim.runUntil(pred, limitMs);
  }

  /** Stop every live node (no more traffic); the medium keeps the durable state. */
  stop(): void {
    for (const c of this.clients) {
      if (!c.dead) c.net.shutdown();
    }
    const s = this.server;
    if (s !== null && !s.dead) {
      s.net.shutdown();
      s.commitq.destroy();
    }
  }

  /** Free every block cache (SharedArrayBuffers) of every incarnation. */
  destroy(): void {
    this.stop();
    for (const c of this.clients) c.cache.destroy();
    for (const s of this.servers) s.vol.close();
  }

  /* ---- the checker ------------------------------------------------------------------------- */

  /** End-of-run checks on the durable medium; returns every problem found. */
  async verify(opts: { requireDone?: boolean } = {}): Promise<string[]> {
    const problems: string[] = [];
    const r = await fsck(this.medium, null);
    for (const p of r.problems) {
      if (p.check !== 'warning') problems.push(`fsck: ${p.blkno} ${p.owner} ${p.check} ${p.detail}`);
    }
    if (problems.length > 0) return problems.slice(0, 30);

    const rnd = this.sim.fork('verify');
    const vol = await ServerVolume.open(this.medium, { ...VOL_OPTS, random: rnd.fork('vol') });
    const cache = new BlockCache({ slots: 128 });
    try {
      const commitq = new CommitQueue(vol);
      const seq = await SeqCounter.open(vol, commitq);
      const lts = new LogTreesServer(vol, commitq, seq, { metaFillLo: 32, metaFillTarget: 128 });
      for (const p of await lts.checkInvariants()) problems.push(`log trees invariant: ${p}`);

      // Every lt, and every srch entry in srch_root LOG files and lt srch files.
      const allLts: LogTrees[] = [];
      await btreeIterate(vol.store, vol.sb.logs_root, key(ZONE.LOG_TREES, 0n, 0), key(ZONE.LOG_TREES, U64_MAX, 0xff, U64_MAX, U64_MAX, 0xff), (it) => {
        allLts.push(decodeLogTrees(it.val));
      });
      const srchCount = new Map<bigint, number>();
      const count = (es: SrchEntry[]): void => {
        for (const e of es) srchCount.set(e.id, (srchCount.get(e.id) ?? 0) + 1);
      };
      const files: { f: ReturnType<typeof readSrchFile>; where: string }[] = [];
      await btreeIterate(vol.store, vol.sb.srch_root, key(ZONE.SRCH, 0n, SRCH_TYPE.LOG), key(ZONE.SRCH, 0n, SRCH_TYPE.LOG, U64_MAX, U64_MAX, 0xff), (it) => {
        files.push({ f: readSrchFile(it.val, 0), where: `srch_root log ${it.key.second}` });
      });
      for (const lt of allLts) if (lt.srch_file.ref.blkno !== 0n) files.push({ f: lt.srch_file, where: `lt ${lt.rid.toString(16)}.${lt.nr}` });
      for (const { f, where } of files) count(await readSrchLogEntries(vol.store, f, where));

      // Crashed mounts: reclaimed, their transaction closed.
      const newest = new Map<bigint, LogTrees>();
      for (const lt of allLts) if ((newest.get(lt.rid)?.nr ?? 0n) < lt.nr) newest.set(lt.rid, lt);
      for (const c of this.clients) {
        const lt = newest.get(c.rid);
        if (lt === undefined) continue;
        if (c.dead) {
          if ((lt.flags & LOG_TREES_FLAG_FINALIZED) === 0n || lt.get_trans_seq !== lt.commit_trans_seq) {
            problems.push(`${c.name} rid ${c.rid.toString(16)} crashed but its lt nr ${lt.nr} is not reclaimed (get ${lt.get_trans_seq} commit ${lt.commit_trans_seq} flags ${lt.flags})`);
          }
        }
      }

      // Items through a freshly opened forest reader over the medium.
      const images = new CacheImages(cache, this.medium, FSID, rnd.fork('images'));
      const sb = await readMetaSuper(this.medium);
      const reader = new ForestReader(images, async () => ({ fs_root: sb.fs_root, logs_root: sb.logs_root }));
      for (const c of this.clients) {
        const disk = new Map<string, string | null>();
        for (const [name, k] of c.model.keys) {
          const it = await reader.lookup(k);
          disk.set(name, it === null ? null : hex(it.val));
        }
        const lo = c.dead ? c.model.synced : c.model.ops.length;
        if (opts.requireDone === true && !c.dead && !c.done) problems.push(`${c.name} rid ${c.rid.toString(16)}: workload did not finish`);
        let match = -1;
        const why: string[] = [];
        for (let p = c.model.ops.length; p >= lo; p--) {
          const d = diffState(c.model.stateAt(p), disk);
          const s = diffSrch(c.model.ops, p, srchCount);
          if (d === null && s === null) {
            match = p;
            break;
          }
          if (why.length < 2) why.push(`prefix ${p}: ${d ?? s}`);
        }
        this.verifyStats.keys += disk.size;
        if (c.dead) {
          this.verifyStats.crashedMounts++;
          if (match >= 0 && match < c.model.ops.length) this.verifyStats.crashedLostOps++;
          if (match > c.model.synced) this.verifyStats.crashedKeptUnsynced++;
        } else {
          this.verifyStats.liveMounts++;
        }
        if (match < 0) {
          problems.push(`${c.name} rid ${c.rid.toString(16)} (${c.dead ? 'crashed' : 'live'}, ${c.model.ops.length} ops, synced ${c.model.synced}): ` +
            `durable state matches no allowed prefix [${lo}, ${c.model.ops.length}]: ${why.join('; ')}`);
        }
      }
      // Shared keys: the durable value is the latest version, or one a crash may have lost.
      for (const k of this.shared.keys()) {
        const it = await reader.lookup(k);
        const err = this.shared.read(k, it === null ? null : it.val, null, 'the durable state');
        if (err !== null) problems.push(`shared key lost or stale: ${err}`);
        this.verifyStats.sharedKeys++;
      }
      this.verifyStats.srchEntries += srchCount.size;
      // No srch entry of any mount appears twice (a second rotation of one file).
      for (const [id, n] of srchCount) if (n > 1) problems.push(`srch entry id ${id.toString(16)} found ${n} times`);
      commitq.destroy();
    } finally {
      cache.destroy();
      vol.close();
    }
    return problems;
  }

  /** One line per mount: where it stands (liveness reports). */
  describeClients(): string[] {
    return this.clients.map((c) => {
      const st = c.trans.status();
      return `${c.name} rid ${c.rid.toString(16)} ${c.dead ? 'dead' : c.done ? 'done' : c.mounted ? 'running' : 'mounting'} ` +
        `ops ${c.model.ops.length} synced ${c.model.synced} trans seq ${st.transSeq} step ${st.step} writer ${st.writer} ` +
        `failing ${st.failing} (${st.consecutiveFailures}: ${st.lastError ?? '-'}) net ${JSON.stringify(c.net.queued())} connected ${c.net.connected}`;
    });
  }
}

/** null if the model state equals the disk state, else the first difference. */
function diffState(want: Map<string, string | null>, got: Map<string, string | null>): string | null {
  for (const [k, v] of want) {
    const g = got.get(k) ?? null;
    if (g !== v) return `key ${k}: want ${v === null ? 'absent' : v.slice(0, 16)}, disk has ${g === null ? 'absent' : g.slice(0, 16)}`;
  }
  return null;
}

/** null if the srch entries of ops[0, p) are present exactly once and later ones absent. */
function diffSrch(ops: ModelOp[], p: number, count: Map<bigint, number>): string | null {
  for (let i = 0; i < ops.length; i++) {
    const op = ops[i]!;
    if (op.kind !== 'srch') continue;
    const n = count.get(op.entry.id) ?? 0;
    const want = i < p ? 1 : 0;
    if (n !== want) return `srch entry ${op.entry.id.toString(16)} (op ${i}) found ${n} times, want ${want}`;
  }
  return null;
}

export const errText = (e: unknown): string => (e instanceof Error ? e.message : String(e));
