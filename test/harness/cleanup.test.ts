/*
 * Goal: the cleanup registry undoes in reverse order, runs each action at
 * most once whoever asks, keeps going past a failing action, keeps images
 * (when: 'success') of a failed run, undoes at once what is added after it
 * closed; and unmount() removes a real mount and is idempotent (root only).
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CleanupRegistry,
  RegistryClosedError,
  isMounted,
  mountsUnder,
  unmount,
  unmountAllUnder,
} from '../../harness/cleanup.js';
import { isRoot, sh } from '../../harness/sys.js';

const ROOT_SKIP = isRoot() ? false : 'needs root to mount tmpfs';

const base = await mkdtemp(join(tmpdir(), 'sfh-cleanup-'));
after(async () => {
  await unmountAllUnder(base).catch(() => {});
  await rm(base, { recursive: true, force: true });
});

test('runs actions newest first, each once, and collects errors', async () => {
  const reg = new CleanupRegistry('t1');
  const order: string[] = [];
  await reg.add('a', () => void order.push('a'));
  await reg.add('b', () => {
    order.push('b');
    throw new Error('b broke');
  });
  const c = await reg.add('c', () => void order.push('c'));
  await c.run();
  await c.run();
  const rep = await reg.runAll({ ok: true });
  assert.deepEqual(order, ['c', 'b', 'a']);
  assert.deepEqual(rep.ran, ['c', 'a']);
  assert.equal(rep.errors.length, 1);
  assert.equal(rep.errors[0]!.name, 'b');
  // Idempotent: the second call is the same report and runs nothing.
  assert.equal(await reg.runAll({ ok: true }), rep);
  assert.deepEqual(order, ['c', 'b', 'a']);
});

test('success-only actions are skipped when the run failed; released ones never run', async () => {
  const reg = new CleanupRegistry('t2');
  const ran: string[] = [];
  await reg.add('remove image', () => void ran.push('image'), { when: 'success' });
  const h = await reg.add('released', () => void ran.push('released'));
  h.release();
  await reg.add('detach', () => void ran.push('detach'));
  const rep = await reg.runAll({ ok: false });
  assert.deepEqual(ran, ['detach']);
  assert.deepEqual(rep.skipped, ['remove image']);
});

test('adding to a closed registry undoes the resource at once and throws', async () => {
  const reg = new CleanupRegistry('t3');
  await reg.runAll({ ok: false });
  let undone = false;
  await assert.rejects(
    reg.add('late', () => {
      undone = true;
    }),
    RegistryClosedError,
  );
  assert.equal(undone, true);
});

test('a hung action is bounded by the step timeout', async () => {
  const reg = new CleanupRegistry('t4', 100);
  const after: string[] = [];
  await reg.add('first registered', () => void after.push('ran'));
  await reg.add('hangs', () => new Promise<void>(() => {}));
  const rep = await reg.runAll({ ok: false });
  assert.equal(rep.errors.length, 1);
  assert.match(rep.errors[0]!.error.message, /timed out/);
  assert.deepEqual(after, ['ran']);
});

test('unmount removes a tmpfs, is idempotent, and the sweep finds nested mounts', { skip: ROOT_SKIP }, async () => {
  const reg = new CleanupRegistry('t5');
  try {
    const outer = join(base, 'outer');
    const inner = join(outer, 'inner dir');
    await mkdir(outer, { recursive: true });
    await sh('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'sfh-test', outer]);
    await reg.add('unmount outer', () => unmount(outer));
    await mkdir(inner);
    await sh('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'sfh-test', inner]);
    await reg.add('unmount inner', () => unmount(inner));
    assert.equal(await isMounted(inner), true, 'a path with a space is found through /proc/mounts escapes');
    const under = await mountsUnder(base);
    assert.deepEqual(under.map((m) => m.target), [inner, outer], 'deepest first');
    assert.deepEqual(await unmountAllUnder(base), [inner, outer]);
    assert.equal(await isMounted(outer), false);
    await unmount(outer);
  } finally {
    const rep = await reg.runAll({ ok: false });
    assert.deepEqual(rep.errors, []);
  }
});
