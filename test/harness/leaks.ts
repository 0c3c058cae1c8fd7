/*
 * test/harness/leaks.ts owns the leak checks the harness tests share: given
 * what a run created (RunResult.created), assert that no loop device is
 * still attached to any of its images (`losetup -j IMG` and `losetup -a`),
 * that nothing is mounted under its run folder (/proc/mounts), that none of
 * its namespaces is left (`ip netns list`), and that none of its processes
 * is alive (/proc/PID/stat, zombies count as dead).
 *
 * It checks by asking the system, never by trusting the harness's own
 * bookkeeping: the point is to catch the harness lying to itself.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { resolve, sep } from 'node:path';
import { loopsFor } from '../../harness/loop.js';
import { listNetns } from '../../harness/netns.js';
import { pidAlive } from '../../harness/proc.js';
import type { Created } from '../../harness/runner.js';
import { trySh } from '../../harness/sys.js';

export async function mountsUnderDir(dir: string): Promise<string[]> {
  const abs = resolve(dir);
  const text = await readFile('/proc/mounts', 'utf8');
  return text
    .split('\n')
    .map((l) => (l.split(' ')[1] ?? '').replace(/\\040/g, ' '))
    .filter((t) => t === abs || t.startsWith(abs + sep));
}

export async function assertNothingLeft(created: Created, runDir: string, tag?: string): Promise<void> {
  for (const img of created.images) {
    assert.deepEqual(await loopsFor(img), [], `loop device still attached to ${img}`);
  }
  const all = await trySh('losetup', ['-a']);
  for (const dev of created.loopDevices) {
    const line = all.stdout.split('\n').find((l) => l.startsWith(dev + ':'));
    // The device number may be reused by a concurrent test for another image.
    if (line) assert.ok(!created.images.some((img) => line.includes(img)), `losetup -a still shows ${line}`);
  }
  assert.deepEqual(await mountsUnderDir(runDir), [], `mounts left under ${runDir}`);
  const ns = await listNetns();
  for (const n of created.namespaces) assert.ok(!ns.includes(n), `namespace ${n} left behind`);
  if (tag) assert.deepEqual(ns.filter((n) => n.includes(`-${tag}-`)), [], `namespaces of run ${tag} left behind`);
  for (const pid of created.pids) assert.equal(await pidAlive(pid), false, `process ${pid} still alive`);
}
