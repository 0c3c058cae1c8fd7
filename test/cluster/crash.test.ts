/*
 * Goal: a mount killed with SIGKILL in the middle of a write-heavy
 * workload loses nothing that was made durable, half-applies nothing, and
 * leaves a consistent volume (issue #6, failure handling).
 *
 * Each round: mount; a separate node process (crashload.ts) creates,
 * appends, renames across directories, unlinks (also open files) and
 * fsyncs under its own top directory, journaling every operation before
 * it starts and every fsync after it returned; at a random moment (seeded;
 * in half the rounds as soon as an fsync is in flight, to land inside a
 * commit) the daemon's process group gets SIGKILL, then the workload.  The
 * dead FUSE mount is removed with fusermount -uz.  Then:
 *   - `scoutfs fsck META DATA` is clean on the crashed volume as it is,
 *     and again after the remount;
 *   - the remounted tree is exactly the state after some prefix of the
 *     journal that includes every operation up to the last fsync (the
 *     last one maybe partly, when it is an append): so every fsync'd byte
 *     reads back byte-exact, every file exists under exactly one of its
 *     names with its content, and nothing appears that was never made
 *     (files unlinked while open stay gone);
 *   - the top directories of earlier rounds are exactly as verified after
 *     their own crash.
 * The remount ends with SIGTERM (exit 0) and fsck.
 *
 * A second test feeds the checker states that break each rule (lost
 * fsync'd bytes, a half-applied rename, a file under neither name, wrong
 * content) and expects it to refuse them: the test of the test.
 *
 * Seeded: SCOUTFS_CRASH_SEED=S replays the operations (the kill moment is
 * drawn from the seed too, but the workload's speed is not deterministic).
 * The seed is printed.  SCOUTFS_CRASH_ROUNDS=N (default 3) runs more.
 *
 * Needs root, /dev/fuse, fusermount and losetup; skipped otherwise.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as fsp from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CleanupRegistry, isMounted } from '../../harness/cleanup.js';
import { startProc } from '../../harness/proc.js';
import { sleep, waitFor } from '../../harness/sys.js';
import { SeededRandom } from '../../src/runtime/random.js';
import { clusterSkip, finish, forceUnmount, GIB, logLines, patternAt, stopMount, tempBase, Volume } from './util.js';
import { matchPrefix, readJournal, scan, type Found, mismatch, type FsModel, type Op } from './crashload.js';

const SKIP = await clusterSkip();
const reg = new CleanupRegistry('cluster-crash', 60_000);
const LOAD = join(fileURLToPath(import.meta.url), '..', 'crashload.js');
const SEED = process.env.SCOUTFS_CRASH_SEED !== undefined ? BigInt(process.env.SCOUTFS_CRASH_SEED) : BigInt(Math.floor(Math.random() * 2 ** 32));
const ROUNDS = Number(process.env.SCOUTFS_CRASH_ROUNDS ?? 3);
let base = '';

function journalText(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return '';
    throw e;
  }
}

before(async () => {
  if (!SKIP) base = await tempBase(reg, 'crash');
});

after(async () => {
  await finish(reg, base);
});

test(`SIGKILL during a write-heavy workload loses nothing durable (seed ${SEED}, ${ROUNDS} rounds)`, { skip: SKIP, timeout: 120_000 + ROUNDS * 60_000 }, async (t) => {
  t.diagnostic(`crash seed ${SEED} (replay: SCOUTFS_CRASH_SEED=${SEED})`);
  const rng = new SeededRandom(SEED);
  const v = await Volume.create(reg, base, 'vol', { metaBytes: GIB, dataBytes: 4 * GIB, port: 42220 });
  const verified = new Map<string, FsModel>();
  const checkEarlier = (): void => {
    for (const [top, m] of verified) {
      const why = mismatch(scan(v.path(top)), m, undefined);
      assert.equal(why, null, `${top} changed after its crash was verified: ${why}`);
    }
  };

  for (let round = 0; round < ROUNDS; round++) {
    const top = `r${round}`;
    const proc = await v.mount();
    checkEarlier();
    const journal = join(base, `journal-${round}.jsonl`);
    const load = await startProc(reg, {
      name: `crashload-${round}`, command: process.execPath,
      args: [LOAD, v.mnt, top, String(SEED + BigInt(round)), journal], logPath: join(base, `crashload-${round}.log`),
    });
    // Let it get going (some ops and at least one fsync), then a seeded extra delay.
    const minOps = 20 + rng.int(200);
    await waitFor(async () => {
      if (!load.running) throw new Error(`workload exited early: ${await load.log()}\n${journalText(journal).split('\n').slice(-3).join('\n')}`);
      const j = readJournal(journalText(journal));
      return j.ops.length >= minOps && j.durable >= 0;
    }, { timeoutMs: 60_000, intervalMs: 20, what: `${minOps} workload ops` });
    // Half the rounds kill at a random moment; the others as soon as an
    // fsync is seen in flight, to land inside a commit more often.
    const duringFsync = rng.int(2) === 0;
    await sleep(rng.int(1500));
    if (duringFsync) {
      const until = Date.now() + 3_000;
      while (Date.now() < until) {
        const j = readJournal(journalText(journal));
        const lastOp = j.ops[j.ops.length - 1];
        if (lastOp?.op === 'fsync' && j.durable < j.ops.length - 1) break;
        await sleep(1);
      }
    }
    assert.equal(load.running, true, `the workload stopped before the kill: ${await load.log()}`);
    await proc.kill();
    await load.kill();
    const j = readJournal(journalText(journal));
    await forceUnmount(v.mnt);
    assert.equal(await isMounted(v.mnt), false);
    // Errors the workload saw after the daemon died are expected (ENOTCONN); none before.
    const early = j.errors.filter((e) => !/ENOTCONN|ECONNABORTED|Transport endpoint/.test(e));
    assert.deepEqual(early, [], 'workload errors before the kill');
    const inFsync = j.ops[j.ops.length - 1]?.op === 'fsync' && j.durable < j.ops.length - 1;
    t.diagnostic(`round ${round}: killed ${duringFsync ? 'while looking for an fsync' : 'at a random moment'} after ${j.ops.length} ops${inFsync ? ' (an fsync in flight)' : ''}, last durable op ${j.durable}`);

    const crashed = await v.fsck();
    assert.equal(crashed.code, 0, `fsck of the crashed volume:\n${crashed.out}${crashed.err}`);

    const again = await v.mount();
    let found: Found;
    try {
      found = scan(v.path(top));
    } catch (e) {
      throw new Error(`reading ${top} after the crash: ${(e as Error).message}; log:\n${await again.logTail(20)}`);
    }
    const r = matchPrefix(found, j);
    if ('reasons' in r) {
      assert.fail(`round ${round} (seed ${SEED}): the remounted tree is no prefix of the journal from op ${j.durable + 1} on:\n${r.reasons.slice(0, 6).join('\n')}`);
    }
    t.diagnostic(`round ${round}: the volume holds the first ${r.q} of ${j.ops.length} ops (${r.model.files.size} files, ${r.model.dirs.size} dirs)`);
    // Fix the verified state with the sizes found (a partial append is legal).
    const model = r.model.clone();
    for (const [p, f] of model.files) f.size = found.files.get(p)!.length;
    verified.set(top, model);
    checkEarlier();
    // The recovered mount takes writes, and a remount still sees it all.
    await fsp.writeFile(v.path(top, 'after-crash'), 'still writable\n');
    await fsp.unlink(v.path(top, 'after-crash'));
    assert.deepEqual(logLines(await again.log(), /corruption|critical transaction commit failure|unexpected/), []);
    await stopMount(again, v.mnt);
    await v.assertFsckClean();
  }
  const last = await v.mount();
  checkEarlier();
  await stopMount(last, v.mnt);
  await v.assertFsckClean();
});

test('the crash checker accepts only journal prefixes that keep every fsync', () => {
  const ops: Op[] = [
    { op: 'mkdir', path: 'd0' },
    { op: 'create', path: 'd0/f1', tag: 't1' },
    { op: 'append', path: 'd0/f1', len: 10 },
    { op: 'fsync', path: 'd0/f1' },
    { op: 'rename', from: 'd0/f1', to: 'f2' },
    { op: 'append', path: 'f2', len: 5 },
  ];
  const j = { ops, durable: 3, errors: [] };
  const state = (files: [string, number, string?][]): Found => ({
    dirs: new Set(['', 'd0']),
    files: new Map(files.map(([p, n, tag]) => [p, patternAt(tag ?? 't1', 0, n)])),
  });
  const q = (f: Found): number | string => {
    const r = matchPrefix(f, j);
    return 'q' in r ? r.q : r.reasons.join('; ');
  };
  assert.equal(q(state([['d0/f1', 10]])), 4);
  assert.equal(q(state([['f2', 10]])), 5);
  assert.equal(q(state([['f2', 12]])), 5, 'part of the last append');
  assert.equal(q(state([['f2', 15]])), 6);
  assert.match(String(q(state([['d0/f1', 9]]))), /size 9/, 'fsync\'d bytes lost');
  assert.match(String(q(state([['d0/f1', 10], ['f2', 10]]))), /extra|missing/, 'a rename half applied');
  assert.match(String(q(state([]))), /missing/, 'a file under neither name');
  assert.match(String(q(state([['f2', 10, 'other']]))), /content differs at byte 0/);
  assert.match(String(q({ dirs: new Set(['']), files: new Map([['f2', patternAt('t1', 0, 10)]]) })), /dirs/);
});
