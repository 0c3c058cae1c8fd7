/*
 * Goal: xattrs in 896-byte parts: set/get/list/remove, the create and
 * replace flags, ENODATA, a 64 KiB value across a remount, the name and
 * value limits, hidden scoutfs names, namespaces.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkfsPair, mountPair, fsckClean, rejectsCode, CTX, b, s } from './env.js';

test('xattrs', async () => {
  const p = mkfsPair();
  const m = await mountPair(p);
  const fs = m.fs;
  const f = await fs.create(1n, b('f'), 0o644, CTX);
  await rejectsCode(fs.getxattr(f.ino, b('user.a')), 'ENODATA');
  await fs.setxattr(f.ino, b('user.a'), b('one'), {});
  assert.deepEqual(await fs.getxattr(f.ino, b('user.a')), b('one'));
  await rejectsCode(fs.setxattr(f.ino, b('user.a'), b('x'), { create: true }), 'EEXIST');
  await rejectsCode(fs.setxattr(f.ino, b('user.b'), b('x'), { replace: true }), 'ENODATA');
  await fs.setxattr(f.ino, b('user.a'), b('two!'), { replace: true });
  assert.deepEqual(await fs.getxattr(f.ino, b('user.a')), b('two!'));
  await fs.setxattr(f.ino, b('user.empty'), new Uint8Array(0), { create: true });
  assert.deepEqual(await fs.getxattr(f.ino, b('user.empty')), new Uint8Array(0));
  await fs.setxattr(f.ino, b('trusted.t'), b('t'), {});
  await fs.setxattr(f.ino, b('scoutfs.hide.secret'), b('s'), {});
  await fs.setxattr(f.ino, b('scoutfs.srch.found'), b('s'), {});
  assert.deepEqual((await fs.listxattr(f.ino)).map(s).sort(), ['scoutfs.srch.found', 'trusted.t', 'user.a', 'user.empty']);
  assert.deepEqual(await fs.getxattr(f.ino, b('scoutfs.hide.secret')), b('s'));

  const big = new Uint8Array(65535);
  for (let i = 0; i < big.length; i++) big[i] = (i * 7) & 0xff;
  await fs.setxattr(f.ino, b('user.big'), big, {});
  assert.deepEqual(await fs.getxattr(f.ino, b('user.big')), big);
  await rejectsCode(fs.setxattr(f.ino, b('user.huge'), new Uint8Array(65536), {}), 'E2BIG');
  const longName = b('user.' + 'n'.repeat(250));
  await fs.setxattr(f.ino, longName, b('v'), {});
  assert.deepEqual(await fs.getxattr(f.ino, longName), b('v'));
  await rejectsCode(fs.setxattr(f.ino, b('user.' + 'n'.repeat(251)), b('v'), {}), 'ERANGE');
  await rejectsCode(fs.setxattr(f.ino, b('bogus.x'), b('v'), {}), 'EOPNOTSUPP');
  await rejectsCode(fs.setxattr(f.ino, b('scoutfs.x'), b('v'), {}), 'EINVAL');

  await fs.removexattr(f.ino, b('user.a'));
  await rejectsCode(fs.removexattr(f.ino, b('user.a')), 'ENODATA');
  await rejectsCode(fs.getxattr(f.ino, b('user.a')), 'ENODATA');
  // Shrinking the big one to a single part leaves no stale parts behind.
  await fs.setxattr(f.ino, b('user.big'), b('small'), {});
  assert.deepEqual(await fs.getxattr(f.ino, b('user.big')), b('small'));
  await fs.setxattr(f.ino, b('user.big'), big, {});
  // Xattrs on a directory too.
  await fs.setxattr(1n, b('user.dir'), b('d'), {});

  await fs.sync();
  await m.close();
  await fsckClean(p, 'xattrs');
  const m2 = await mountPair(p, 4n);
  assert.deepEqual(await m2.fs.getxattr(f.ino, b('user.big')), big);
  assert.deepEqual(await m2.fs.getxattr(1n, b('user.dir')), b('d'));
  assert.deepEqual((await m2.fs.listxattr(f.ino)).map(s).sort(),
    ['scoutfs.srch.found', 'trusted.t', 'user.big', 'user.empty', s(longName)].sort());
  // Deleting the inode drops its xattrs.
  await m2.fs.unlink(1n, b('f'));
  await m2.fs.sync();
  await m2.close();
  await fsckClean(p, 'xattrs deleted');
});
