/*
 * Goal: `.totl.` xattr totals (FORMAT.md 8.5) are exact.  A seeded
 * workload sets, replaces and removes `scoutfs.totl.<tag>.A.B.C` xattrs on
 * a pool of inodes and deletes whole inodes, across transactions and a
 * remount; Mount.readXattrTotals must equal a model (sum of values, number
 * of xattrs per (A, B, C); a name whose count drops to 0 disappears).
 * Also: the strtoull-like number parser, and EINVAL for names that do not
 * end in three numbers and for values that are not numbers.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SeededRandom } from '../../../src/runtime/random.js';
import { parseTotlNumber, totlNameKey } from '../../../src/fs/fs.js';
import { CTX, b, fsckClean, mkfsPair, mountPair, rejectsCode } from './env.js';

test('totl numbers parse like strtoull with base 0, within u64 and 23 characters', () => {
  const ok: [string, bigint][] = [['0', 0n], ['42', 42n], ['0x1F', 31n], ['0X1f', 31n], ['017', 15n], ['18446744073709551615', 2n ** 64n - 1n]];
  for (const [s, v] of ok) assert.equal(parseTotlNumber(s), v, s);
  for (const s of ['', '+1', '-1', ' 1', '1\n', '0x', '08', '1a', '18446744073709551616', '0'.repeat(24), '1.5']) {
    assert.equal(parseTotlNumber(s), null, JSON.stringify(s));
  }
  assert.deepEqual(totlNameKey(b('scoutfs.totl.tag.1.0x2.03')), { a: 1n, b: 2n, c: 3n });
  assert.equal(totlNameKey(b('scoutfs.totl.1.2')), null);
  assert.equal(totlNameKey(b('scoutfs.totl.tag.1.2.x')), null);
});

test('bad .totl. names and values are EINVAL and change nothing', async () => {
  const pair = mkfsPair();
  const m = await mountPair(pair, 9n);
  const f = await m.fs.create(m.fs.rootIno, b('f'), 0o100644, CTX);
  await rejectsCode(m.fs.setxattr(f.ino, b('scoutfs.totl.tag.1.2'), b('5'), {}), 'EINVAL');
  await rejectsCode(m.fs.setxattr(f.ino, b('scoutfs.totl.tag.1.2.c'), b('5'), {}), 'EINVAL');
  await rejectsCode(m.fs.setxattr(f.ino, b('scoutfs.totl.tag.1.2.3'), b('five'), {}), 'EINVAL');
  await rejectsCode(m.fs.setxattr(f.ino, b('scoutfs.totl.tag.1.2.3'), b('5\n'), {}), 'EINVAL');
  assert.deepEqual(await m.fs.listxattr(f.ino), []);
  assert.deepEqual(await m.readXattrTotals(), []);
  await m.close();
  await fsckClean(pair, 'after refused totl xattrs');
});

test('totals equal the model through sets, replaces, removes, inode deletion and a remount', async () => {
  const pair = mkfsPair();
  let m = await mountPair(pair, 11n);
  const rnd = new SeededRandom(77n);
  const names = ['scoutfs.totl.a.1.2.3', 'scoutfs.totl.b.1.2.3', 'scoutfs.hide.totl.c.7.0.0x10', 'scoutfs.totl.srch.d.0.0.1'];
  const keyOf = (n: string): string => {
    const k = totlNameKey(b(n))!;
    return `${k.a}.${k.b}.${k.c}`;
  };
  const inos: bigint[] = [];
  for (let i = 0; i < 16; i++) inos.push((await m.fs.create(m.fs.rootIno, b(`f${i}`), 0o100644, CTX)).ino);
  // (ino, name) -> value
  const set = new Map<string, bigint>();
  const check = async (what: string): Promise<void> => {
    const want = new Map<string, { total: bigint; count: bigint }>();
    for (const [k, v] of set) {
      const t = keyOf(k.slice(k.indexOf(' ') + 1));
      const w = want.get(t) ?? { total: 0n, count: 0n };
      want.set(t, { total: w.total + v, count: w.count + 1n });
    }
    const got = await m.readXattrTotals();
    const gotMap = new Map(got.map((g) => [g.name.join('.'), { total: g.total, count: g.count }]));
    assert.deepEqual(gotMap, want, what);
  };
  for (let step = 0; step < 240; step++) {
    const k = rnd.int(inos.length);
    const ino = inos[k]!;
    const name = names[rnd.int(names.length)]!;
    const id = `${ino} ${name}`;
    const op = rnd.int(10);
    if (op < 5) {
      const v = BigInt(rnd.int(1000));
      const text = rnd.int(3) === 0 ? `0x${v.toString(16)}` : String(v);
      await m.fs.setxattr(ino, b(name), b(text), {});
      set.set(id, v);
    } else if (op < 8) {
      if (set.has(id)) {
        await m.fs.removexattr(ino, b(name));
        set.delete(id);
      }
    } else if (op < 9) {
      await m.fs.unlink(m.fs.rootIno, b(`f${k}`));
      for (const key of [...set.keys()]) if (key.startsWith(`${ino} `)) set.delete(key);
      inos[k] = (await m.fs.create(m.fs.rootIno, b(`f${k}`), 0o100644, CTX)).ino;
    } else {
      await m.fs.sync();
    }
    if (step % 20 === 19) await check(`step ${step}`);
    if (step === 120) {
      await m.close();
      m = await mountPair(pair, 12n);
      await check('after a remount');
    }
  }
  await check('at the end');
  await m.close();
  await fsckClean(pair, 'after the totl workload');
});
