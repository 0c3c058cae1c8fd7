/*
 * Goal: images are sparse and sized exactly; as root an image attaches to a
 * loop device that `losetup -j` sees and cleanup detaches it (twice is
 * fine); without root the image itself is the device; a failed run keeps
 * the image, a successful one removes it.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CleanupRegistry } from '../../harness/cleanup.js';
import { attachedLoops, attachLoop, createImage, detachLoop, loopsFor, loopSupported } from '../../harness/loop.js';

const base = await mkdtemp(join(tmpdir(), 'sfh-loop-'));
const regs: CleanupRegistry[] = [];
after(async () => {
  for (const r of regs) await r.runAll({ ok: false });
  await rm(base, { recursive: true, force: true });
});

function registry(name: string): CleanupRegistry {
  const r = new CleanupRegistry(name);
  regs.push(r);
  return r;
}

test('createImage makes a sparse file of the exact size; removal only on success', async () => {
  const reg = registry('img-fail');
  const img = await createImage(reg, join(base, 'a.img'), 256 * 1024 * 1024);
  const st = await stat(img.path);
  assert.equal(st.size, 256 * 1024 * 1024);
  assert.ok(st.blocks * 512 < 1024 * 1024, `image is sparse (${st.blocks} blocks)`);
  await reg.runAll({ ok: false });
  await stat(img.path); // kept: the run failed

  const reg2 = registry('img-ok');
  const img2 = await createImage(reg2, join(base, 'b.img'), 4096);
  await reg2.runAll({ ok: true });
  await assert.rejects(stat(img2.path), { code: 'ENOENT' });
});

test('without loop support the image is the device', { skip: (await loopSupported()) ? 'runs as root: loop devices are used' : false }, async () => {
  const reg = registry('noroot');
  const img = await createImage(reg, join(base, 'c.img'), 1 << 20);
  const dev = await attachLoop(reg, img.path);
  assert.equal(dev.device, null);
  assert.equal(dev.path, img.path);
});

test('attach shows in losetup -j and cleanup detaches it', { skip: (await loopSupported()) ? false : 'needs root and losetup' }, async () => {
  const reg = registry('attach');
  const img = await createImage(reg, join(base, 'd.img'), 16 << 20);
  try {
    const dev = await attachLoop(reg, img.path);
    assert.match(dev.device!, /^\/dev\/loop\d+$/);
    assert.equal(dev.path, dev.device);
    assert.deepEqual(await loopsFor(img.path), [dev.device]);
    assert.equal(attachedLoops().get(dev.device!), img.path);
    const rep = await reg.runAll({ ok: true });
    assert.deepEqual(rep.errors, []);
    assert.deepEqual(await loopsFor(img.path), []);
    assert.equal(attachedLoops().has(dev.device!), false);
    // Detaching again is not an error.
    await detachLoop(dev.device!);
  } finally {
    await reg.runAll({ ok: false });
  }
});
