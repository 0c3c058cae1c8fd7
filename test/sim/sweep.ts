/*
 * One run of the random sweep (sweep.test.ts, broken.test.ts, replay.ts):
 * a small random item workload on one to three mounts against one server,
 * under message faults and crashes, all drawn from one seed.  Not a test
 * file.
 *
 * What a run draws from its seed (sim.fork('plan'), so the plan does not
 * shift when a subsystem draws more or less from its own stream):
 *   - link faults for the fault window: latency jitter, drops that break a
 *     stream, duplicates, delays that reorder across sockets;
 *   - scripted faults inside the window: socket breaks, partitions (a few
 *     longer than the reconnect wait, so a live mount gets fenced), server
 *     crashes with a restart, mount crashes followed by a new mount on the
 *     same host; and rates for the fault sites: the server crashing right
 *     after a COMMIT or GET was made durable but before its reply, a server
 *     or mount crashing as it issues a flush with writes pending (mid
 *     commit), GET failing ENOSPC (handlers.ts simulator fault site);
 *   - the disks' crash behaviour (unflushed writes lost, landed or torn)
 *     and, in a third of the seeds, transient read corruption (a flipped
 *     byte; the block layer re-reads once);
 *   - the mounts' commit timer, 1 to 3 s (the reference's 10 s would
 *     hardly ever fire inside a run);
 *   - per mount: one or two concurrent workers, each a sequence of
 *     operations with gaps: set (createForce of a random value), delete
 *     (deleteForce), srch (a .srch. entry, rotated into srch_root by the
 *     COMMIT that carries it), GET_LAST_SEQ (checked), sync.  Keys come
 *     from a small set per worker, so values are overwritten and deleted;
 *   - per mount: one or two lock workers on keys every mount shares (two
 *     inode groups, two index groups: see lockWorker), under real cluster
 *     locks, every read checked against the shared model and every grant
 *     against the lock oracle (sharedmodel.ts).
 *
 * Then the window closes: the network goes quiet, partitions heal, rates
 * go to zero, a downed server restarts.  Liveness: every live mount must
 * finish its workload and a final sync within LIVENESS_MS of simulated
 * time.  The run then waits out the reconnect and recovery waits so every
 * crashed mount is fenced and reclaimed, stops every node and runs the
 * checker (cluster.ts verify: fsck clean, log trees invariants, crashed
 * mounts reclaimed, every mount's items and srch entries equal to its
 * model after an allowed prefix, every shared key's durable value allowed
 * by the shared model).
 *
 * Runs are small on purpose (up to three mounts, tens of operations, a 5 s
 * window) so that 300 seeds take about a minute on two cores; breadth
 * comes from the number of seeds.
 */
import { BTREE_MAX_VAL_LEN } from '../../src/format/constants.js';
import type { LinkFaults } from '../../src/net/sim.js';
import { SeededRandom } from '../../src/runtime/random.js';
import { Cluster, errText, sleep, type ClientNode, type ClusterCounters } from './cluster.js';
import type { LogTreesCounters } from '../../src/server/logtrees.js';
import type { LockServerCounters } from '../../src/server/lock.js';
import type { LockClientCounters } from '../../src/lock/client.js';
import { FS_TYPE, ZONE } from '../../src/format/items.js';
import { key, type Key } from '../../src/format/key.js';
import type { SharedModel } from './sharedmodel.js';
import { CorruptionError } from '../../src/format/errors.js';
import type { TransCounters } from '../../src/trans/trans.js';

export const WINDOW_MS = 5000;
export const LIVENESS_MS = 60_000;
const RECONNECT_WAIT_MS = 3000;
const RECOVERY_WAIT_MS = 3000;

export interface SweepOptions {
  broken?: boolean;
  /** TEST OF THE TEST: each server's first n conflicting lock grants skip invalidation. */
  brokenLocks?: number;
  /** Run the shared-key lock workers (default true). */
  locks?: boolean;
  /** Multiplies every mount's operation count (default 1; experiments and soak runs). */
  scale?: number;
  /** Many keys and values up to the maximum item size, to grow the log btrees (experiments). */
  bigItems?: boolean;
  /** Transient read corruption on every node's disk (default: 0.02 in a third of the seeds). */
  readCorruptProbability?: number;
  trace?: boolean;
}

export interface SweepResult {
  seed: bigint;
  errors: string[];
  cluster: ClusterCounters;
  lt: LogTreesCounters;
  lockServer: LockServerCounters;
  lockClient: LockClientCounters;
  shared: SharedModel['stats'];
  trans: Pick<TransCounters, 'commitRpcs' | 'commitResends' | 'commitFailures' | 'getFailures' | 'holdsBlocked' | 'commitsOk' | 'recoveries'>;
  verify: Cluster['verifyStats'];
  disk: ReturnType<Cluster['diskCrashCounters']>;
  ops: number;
  mounts: number;
  simMs: number;
  events: number;
  trace: string[];
}

function drawLink(r: SeededRandom): LinkFaults {
  return {
    latencyMs: [1, 1 + r.int(8)],
    dropRate: r.float() * 0.02,
    dupRate: r.float() * 0.03,
    delayRate: r.float() * 0.05,
    delayMs: [10, 10 + r.int(300)],
    breakDetectMs: [1, 1 + r.int(300)],
  };
}

/**
 * The workload of one mount: `workers` concurrent streams of ops with
 * gaps (worker j owns the keys k with k % workers == j, so the order of
 * operations on any one key is its worker's), then a final sync.
 */
async function workload(
  c: ClientNode, r: SeededRandom, workers: number, opsPerWorker: number, nKeys: number, maxVal = 48,
  lockWorkers = 0, lockOps = 0,
): Promise<void> {
  await c.mount();
  const worker = async (j: number, wr: SeededRandom): Promise<void> => {
    const lastSeen = { seq: 0n };
    for (let i = 0; i < opsPerWorker; i++) {
      if (c.dead) return;
      const gap = wr.int(4) === 0 ? 0 : wr.int(150);
      if (gap > 0) await sleep(c.clock, gap);
      if (c.dead) return;
      const x = wr.int(100);
      const k = c.key(j + workers * wr.int(nKeys));
      if (x < 50) {
        await c.set(k, wr.bytes(1 + wr.int(maxVal)));
      } else if (x < 65) {
        c.model.touch(k);
        await c.del(k);
      } else if (x < 82) {
        await c.srch(wr.u64());
      } else if (x < 87) {
        await lastSeq(c, lastSeen);
      } else {
        await c.sync();
      }
    }
  };
  await Promise.all([
    ...Array.from({ length: workers }, (_, j) => worker(j, r.fork(`worker ${j}`))),
    ...Array.from({ length: lockWorkers }, (_, j) => lockWorker(c, j, r.fork(`lock worker ${j}`), lockOps)),
  ]);
  if (c.dead) return;
  await c.sync();
  c.done = true;
}

/** The inode groups every mount shares (two cluster locks), far from the private key spaces. */
export const SHARED_INO = [1n << 24n, (1n << 24n) + 1024n] as const;
/** The index majors every mount writes WRITE_ONLY (two index locks). */
const SHARED_MAJORS = [5n, 1024n + 5n] as const;
const SHARED_INODES = 4;

/**
 * A mount's lock worker j on the shared keys (sharedmodel.ts): increments
 * under WRITE (read checked, then written), deletes, reads through the
 * model kernel cache or a READ lock, increments of two keys in two groups
 * under two WRITE locks taken in key order, WRITE_ONLY index writes and
 * deletes of its own index keys, READ lock reads of other mounts' index
 * keys, NULL requests for idle locks, syncs.  Worker j only touches slot j
 * of the shared inodes, so two workers of one mount never race on a key
 * (they still share the locks); every mount's worker j shares slot j.
 */
async function lockWorker(c: ClientNode, j: number, r: SeededRandom, nOps: number): Promise<void> {
  const inodeKey = (): Key => key(ZONE.FS, SHARED_INO[r.int(2)]! + BigInt(r.int(SHARED_INODES)), FS_TYPE.SYMLINK, BigInt(j));
  const mine: Key[] = [];
  let n = 0;
  for (let i = 0; i < nOps; i++) {
    if (c.dead) return;
    const gap = r.int(3) === 0 ? 0 : r.int(120);
    if (gap > 0) await sleep(c.clock, gap);
    if (c.dead) return;
    try {
      await lockOp(c, j, r, inodeKey, mine, () => n++);
    } catch (e) {
      // A crashed mount's operations die with it (its disk throws).  A read
      // that met a corrupt block twice (transient read corruption, a third
      // of the seeds) is the user's EIO: what the operation did before is
      // recorded, and the workload goes on.
      if (c.dead) return;
      if (!(e instanceof CorruptionError)) throw e;
      c.cluster.counters.sharedReadErrors++;
    }
  }
}

async function lockOp(c: ClientNode, j: number, r: SeededRandom, inodeKey: () => Key, mine: Key[], nextN: () => number): Promise<void> {
  {
    const x = r.int(100);
    if (x < 30) {
      await c.increment(inodeKey());
    } else if (x < 55) {
      await c.read(inodeKey());
    } else if (x < 60) {
      await c.remove(inodeKey());
    } else if (x < 70) {
      const a = key(ZONE.FS, SHARED_INO[0] + BigInt(r.int(SHARED_INODES)), FS_TYPE.SYMLINK, BigInt(j));
      const b = key(ZONE.FS, SHARED_INO[1] + BigInt(r.int(SHARED_INODES)), FS_TYPE.SYMLINK, BigInt(j));
      await (r.int(2) === 0 ? c.incrementTwo(a, b) : c.incrementTwo(b, a));
    } else if (x < 80) {
      if (mine.length > 0 && r.int(4) === 0) {
        await c.indexWrite(mine[r.int(mine.length)]!, true);
      } else {
        const k = c.indexKeyOf(SHARED_MAJORS[r.int(2)]!, nextN() * 4 + j);
        mine.push(k);
        await c.indexWrite(k, false);
      }
    } else if (x < 90) {
      const others = c.cluster.shared.keys().filter((k) => k.zone === ZONE.INODE_INDEX && k.third >> 16n !== c.rid);
      if (others.length > 0) await c.read(others[r.int(others.length)]!);
    } else if (x < 95) {
      c.purgeLocks();
    } else {
      await c.sync();
    }
  }
}

/**
 * GET_LAST_SEQ from a mount, checked against PROTOCOL.md 4.9 / 4.13 (9):
 * never below an earlier answer seen by this worker (a new server starts
 * from durable state at least as new as anything revealed), and below the
 * mount's own open transaction when that stayed open throughout the call
 * (no commit ran: same seq, same write count, WRITER clear at the end).
 */
async function lastSeq(c: ClientNode, seen: { seq: bigint }): Promise<void> {
  const seq0 = c.trans.transSeq;
  const writes0 = c.trans.status().writeCount;
  const writer0 = c.trans.status().writer;
  const last = await c.ts.getLastSeq();
  if (c.dead) return;
  const st = c.trans.status();
  if (last < seen.seq) c.cluster.errors.push(`${c.name} rid ${c.rid.toString(16)}: GET_LAST_SEQ went back from ${seen.seq} to ${last}`);
  seen.seq = last;
  if (!writer0 && !st.writer && st.transSeq === seq0 && st.writeCount === writes0 && seq0 > 0n && last >= seq0) {
    c.cluster.errors.push(`${c.name} rid ${c.rid.toString(16)}: GET_LAST_SEQ ${last} is not below the open transaction ${seq0}`);
  }
  c.cluster.counters.lastSeqChecks++;
}

export async function runSweepSeed(seed: bigint, opts: SweepOptions = {}): Promise<SweepResult> {
  // The same stream as cluster.sim.fork('plan'), drawn before the cluster exists.
  const plan = new SeededRandom(seed).fork('test:plan');
  const link = drawLink(plan);
  const cluster = new Cluster({
    seed, link, trace: opts.trace ?? false, broken: opts.broken, brokenLocks: opts.brokenLocks,
    srchRotateBlocks: 1n,
    reconnectWaitMs: RECONNECT_WAIT_MS, recoveryWaitMs: RECOVERY_WAIT_MS,
    crashLandProbability: plan.float(), tearProbability: plan.int(2) === 0 ? 0 : 0.5,
    commitIntervalMs: 1000 + plan.int(2000),
    readCorruptProbability: opts.readCorruptProbability ?? (plan.int(3) === 0 ? 0.02 : 0),
  });
  const sim = cluster.sim;
  const errors = cluster.errors;
  // A bug that escapes as an unhandled rejection (e.g. an assertion in a
  // commit worker started with `void`) belongs to this seed: record it.
  const onUnhandled = (e: unknown): void => {
    errors.push(`unhandled rejection: ${errText(e)}${e instanceof Error && e.stack ? `\n${e.stack}` : ''}`);
  };
  process.on('unhandledRejection', onUnhandled);
  const run = (label: string, fn: () => Promise<void>): void => {
    fn().catch((e: unknown) => errors.push(`${label}: ${errText(e)}${e instanceof Error && e.stack ? `\n${e.stack}` : ''}`));
  };
  try {
    cluster.rates.crashAfterCommit = plan.int(3) === 0 ? 0 : 0.2;
    cluster.rates.crashAfterGet = plan.int(3) === 0 ? 0.1 : 0;
    cluster.rates.getFail = plan.int(3) === 0 ? 0.1 : 0;
    cluster.rates.serverCrashInFlush = plan.int(3) === 0 ? 0.05 : 0;
    cluster.rates.clientCrashInFlush = plan.int(5) === 0 ? 0.03 : 0;
    await cluster.startServer();

    const nClients = 1 + plan.int(3);
    const scale = opts.scale ?? 1;
    const start = (name: string, nOps: number): void => {
      nOps = Math.max(1, Math.round(nOps * scale));
      const c = cluster.mountClient(name);
      const r = plan.fork(`workload ${c.rid}`);
      const big = opts.bigItems === true;
      const lockWorkers = opts.locks === false ? 0 : 1 + r.int(2);
      const lockOps = Math.max(1, Math.round((8 + r.int(20)) * scale));
      run(`workload ${name} rid ${c.rid.toString(16)}`,
        () => workload(c, r, 1 + r.int(2), nOps, big ? 50 + r.int(150) : 2 + r.int(5), big ? BTREE_MAX_VAL_LEN : 48, lockWorkers, lockOps));
    };
    for (let i = 0; i < nClients; i++) start(`c${i + 1}`, 10 + plan.int(30));

    // Scripted faults inside the window.
    const hosts = Array.from({ length: nClients }, (_, i) => `c${i + 1}`);
    for (let i = 0, n = plan.int(4); i < n; i++) {
      const h = hosts[plan.int(nClients)]!;
      sim.schedule(plan.int(WINDOW_MS), `fault: break ${h}`, () => sim.breakLink(h, 'server'));
    }
    for (let i = 0, n = plan.int(3); i < n; i++) {
      const h = hosts[plan.int(nClients)]!;
      const at = plan.int(WINDOW_MS);
      const len = plan.int(6) === 0 ? RECONNECT_WAIT_MS + 500 + plan.int(1000) : 50 + plan.int(1200);
      sim.schedule(at, `fault: partition ${h}`, () => sim.partition(h, 'server'));
      sim.schedule(at + len, `fault: heal ${h}`, () => sim.heal(h, 'server'));
    }
    for (let i = 0, n = plan.int(3); i < n; i++) {
      const down = 20 + plan.int(1000);
      sim.schedule(plan.int(WINDOW_MS), 'fault: crash server', () => {
        cluster.restartDelayMs = down;
        cluster.crashServer('scripted');
      });
    }
    // A crashed mount's host mounts again a little later (a new rid, a new key space).
    let remounts = 0;
    const remountLater = (h: string): void => {
      const again = 100 + plan.int(800);
      const nOps = 5 + plan.int(15);
      remounts++;
      sim.schedule(again, `remount ${h}`, () => {
        remounts--;
        if (cluster.clients.some((x) => x.name === h && !x.dead)) return;
        start(h, nOps);
      });
    };
    cluster.onClientCrash = (c) => remountLater(c.name);
    for (let i = 0, n = plan.int(3) === 0 ? 1 : 0; i < n; i++) {
      const h = hosts[plan.int(nClients)]!;
      sim.schedule(plan.int(WINDOW_MS), `fault: crash ${h}`, () => {
        const c = cluster.clients.filter((x) => x.name === h && !x.dead).pop();
        if (c === undefined) return;
        cluster.crashClient(c, 'scripted');
        remountLater(h);
      });
    }

    await sim.runFor(WINDOW_MS);
    cluster.restartDelayMs = 100;
    cluster.onClientCrash = null;
    cluster.quiesce();
    const finished = (): boolean => remounts === 0 && cluster.clients.every((c) => c.dead || c.done) && errors.length === 0;
    if (!(await cluster.runUntil(finished, LIVENESS_MS)) && errors.length === 0) {
      errors.push(`liveness: the workload did not complete within ${LIVENESS_MS} ms after the faults stopped:\n  ` +
        cluster.describeClients().join('\n  '));
    }
    // Let reconnect-wait and recovery expire: every crashed mount is fenced and reclaimed.
    if (errors.length === 0) await sim.runFor(RECONNECT_WAIT_MS + RECOVERY_WAIT_MS + 1000);
    cluster.stop();
    if (errors.length === 0) errors.push(...(await cluster.verify({ requireDone: true })));
  } catch (e) {
    errors.push(`run: ${errText(e)}${e instanceof Error && e.stack ? `\n${e.stack}` : ''}`);
  } finally {
    cluster.destroy();
    // Let late rejections of this run land here, not in the next seed.
    await new Promise<void>((r) => setImmediate(r));
    process.off('unhandledRejection', onUnhandled);
  }
  const sumTrans = { commitRpcs: 0, commitResends: 0, commitFailures: 0, getFailures: 0, holdsBlocked: 0, commitsOk: 0, recoveries: 0 };
  for (const c of cluster.clients) for (const k of Object.keys(sumTrans) as (keyof typeof sumTrans)[]) sumTrans[k] += c.trans.counters[k];
  return {
    seed, errors, cluster: { ...cluster.counters }, lt: cluster.ltCounters(), trans: sumTrans, verify: { ...cluster.verifyStats },
    lockServer: cluster.lockServerCounters(), lockClient: cluster.lockClientCounters(), shared: { ...cluster.shared.stats },
    disk: cluster.diskCrashCounters(),
    ops: cluster.clients.reduce((n, c) => n + c.model.ops.length, 0), mounts: cluster.clients.length,
    simMs: sim.clock.nowMs(), events: sim.events, trace: sim.trace,
  };
}

