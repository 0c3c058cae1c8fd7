/*
 * Goal: a run leaves nothing behind however it ends.
 *   - heartbeat: N heartbeat processes on loop devices pass, their logs
 *     are in the run folder and the images are removed.
 *   - mount (root and FUSE): N real `scoutfs mount` nodes, each on its own
 *     volume, write and read back, stop cleanly and fsck clean, and the
 *     run leaves nothing mounted or attached.
 *   - selftest-fail: throws after attaching loop devices, mounting ext4 on a
 *     loop device and a tmpfs, creating the private network and starting
 *     nodes; afterwards no loop device, mount, namespace or process of the
 *     run is left, the images are kept and replay.sh names scenario + seed.
 *   - selftest-hang with a short run timeout: same checks, timedOut set.
 *   - the CLI interrupted by SIGINT while hanging: its hooks tear the run
 *     down and leave replay.sh.
 * Root-only parts (loop, mounts, namespaces) are skipped by the scenarios
 * themselves when not root, so these tests still check processes then.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { access, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { unmountAllUnder } from '../../harness/cleanup.js';
import { RUN_CLI, runScenario, type Created } from '../../harness/runner.js';
import '../../harness/scenarios.js';
import { isRoot, waitFor, which } from '../../harness/sys.js';
import { assertNothingLeft } from './leaks.js';

const base = await mkdtemp(join(tmpdir(), 'sfh-runner-'));
after(async () => {
  // Belt and braces: if a test failed half way, nothing mounted may stay.
  await unmountAllUnder(base).catch(() => {});
  await rm(base, { recursive: true, force: true });
});

const quiet = (): void => {};

async function exists(p: string): Promise<boolean> {
  try {
    await access(p);
    return true;
  } catch {
    return false;
  }
}

test('heartbeat scenario passes, keeps logs, removes images', async () => {
  const r = await runScenario('heartbeat', { nodes: 3, seed: 7, baseDir: base, log: quiet });
  assert.equal(r.ok, true, r.error ?? '');
  assert.equal(r.replayPath, null);
  const files = await readdir(r.runDir);
  for (const f of ['node0.log', 'node1.log', 'node2.log', 'run.json', 'result.json']) assert.ok(files.includes(f), f);
  assert.match(await readFile(join(r.runDir, 'node1.log'), 'utf8'), /node 1 stopping at heartbeat \d+/);
  assert.deepEqual(await readdir(join(r.runDir, 'images')), []);
  assert.equal(r.created.pids.length, 3);
  if (isRoot()) assert.equal(r.created.loopDevices.length, 3);
  await assertNothingLeft(r.created, r.runDir);
});

const NO_MOUNT = isRoot() && existsSync('/dev/fuse') && (await which('fusermount')) ? false : 'needs root, /dev/fuse and fusermount';

test('mount scenario: real scoutfs mounts as the nodes write, read back, stop cleanly, fsck clean', { skip: NO_MOUNT, timeout: 300_000 }, async () => {
  const r = await runScenario('mount', { nodes: 2, seed: 11, baseDir: base, log: quiet });
  try {
    assert.equal(r.ok, true, r.error ?? '');
    assert.equal(r.created.pids.length, 2);
    assert.equal(r.created.loopDevices.length, 4, 'a meta and a data device per node');
    for (const n of ['node0', 'node1']) {
      const log = await readFile(join(r.runDir, `${n}.log`), 'utf8');
      assert.match(log, /^mounted /m, `${n} is a scoutfs mount`);
      assert.match(log, /closed$/m, `${n} committed and closed on SIGTERM`);
    }
    const runLog = await readFile(join(r.runDir, 'result.json'), 'utf8');
    assert.equal((JSON.parse(runLog) as { ok: boolean }).ok, true);
  } finally {
    await assertNothingLeft(r.created, r.runDir);
  }
});

test('mount scenario refuses --netns before it makes anything', { skip: NO_MOUNT }, async () => {
  const r = await runScenario('mount', { nodes: 1, seed: 1, baseDir: base, log: quiet, options: { netns: true } });
  assert.equal(r.ok, false);
  assert.match(r.error ?? '', /--netns is not supported/);
  assert.deepEqual([r.created.loopDevices, r.created.pids], [[], []]);
  await assertNothingLeft(r.created, r.runDir);
});

test('a scenario failing in the middle leaves nothing behind and keeps its images', async () => {
  const r = await runScenario('selftest-fail', { nodes: 2, seed: 1234, baseDir: base, log: quiet, options: { note: 'x y' } });
  try {
    assert.equal(r.ok, false);
    assert.equal(r.timedOut, false);
    assert.match(r.error ?? '', /failing on purpose/);
    assert.equal(r.created.pids.length, 2);
    if (isRoot()) {
      assert.equal(r.created.loopDevices.length, 3, 'two node devices and the ext4 device');
      assert.equal(r.created.mounts.length, 2, 'ext4 and tmpfs');
      assert.equal(r.created.namespaces.length, 3, 'hub and two nodes');
    }
    await assertNothingLeft(r.created, r.runDir);
    for (const img of r.created.images) assert.ok(await exists(img), `kept ${img}`);
    const replay = await readFile(r.replayPath!, 'utf8');
    assert.match(replay, /run\.js selftest-fail --seed 1234 --nodes 2 /);
    assert.match(replay, /--note 'x y'/);
    assert.deepEqual(r.cleanup.errors, []);
  } finally {
    await assertNothingLeft(r.created, r.runDir).catch(() => {});
  }
});

test('a scenario that hangs is stopped by the run timeout and cleaned up', async () => {
  const t0 = Date.now();
  const r = await runScenario('selftest-hang', { nodes: 2, seed: 99, baseDir: base, log: quiet, timeoutMs: 4_000 });
  assert.equal(r.ok, false);
  assert.equal(r.timedOut, true);
  assert.match(r.error ?? '', /timed out after 4000 ms/);
  assert.ok(Date.now() - t0 < 30_000);
  assert.ok(await exists(join(r.runDir, 'hanging')), 'the scenario reached its hang before the timeout');
  await assertNothingLeft(r.created, r.runDir);
  assert.match(await readFile(r.replayPath!, 'utf8'), /selftest-hang --seed 99 --nodes 2 --timeout-ms 4000/);
});

test('SIGINT to the harness CLI tears the run down', async () => {
  const cliBase = join(base, 'cli');
  const child = execa(process.execPath, [RUN_CLI, 'selftest-hang', '--nodes', '2', '--seed', '5', '--base', cliBase, '--timeout-ms', '60000'], {
    reject: false,
    all: true,
    // Our SIGINT must not be followed by execa's own SIGKILL: the CLI needs
    // the time to clean up.
    forceKillAfterDelay: false,
  });
  let runDir = '';
  let created: Created | null = null;
  try {
    runDir = await waitFor(async () => {
      const dirs = await readdir(cliBase).catch(() => [] as string[]);
      for (const d of dirs) if (await exists(join(cliBase, d, 'hanging'))) return join(cliBase, d);
      return '';
    }, { timeoutMs: 30_000, what: 'the CLI run to reach its hang' });
    const run = JSON.parse(await readFile(join(runDir, 'run.json'), 'utf8')) as { tag: string };
    // What the run made, read from the system before the signal.
    const logs = (await readdir(runDir)).filter((f) => /^node\d+\.log$/.test(f));
    const pids: number[] = [];
    for (const l of logs) {
      const m = /pid=(\d+)/.exec(await readFile(join(runDir, l), 'utf8'));
      if (m) pids.push(Number(m[1]));
    }
    assert.equal(pids.length, 2);
    const images = (await readdir(join(runDir, 'images'))).map((f) => join(runDir, 'images', f));
    created = { images, loopDevices: [], mounts: [], namespaces: [], pids };
    child.kill('SIGINT');
    const res = await child;
    assert.equal(res.exitCode, 130, res.all);
    await assertNothingLeft(created, runDir, run.tag);
    assert.ok(await exists(join(runDir, 'replay.sh')));
  } finally {
    // If an assertion failed before the signal, let the CLI clean up anyway.
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
      await child;
      clearTimeout(timer);
    }
  }
});
