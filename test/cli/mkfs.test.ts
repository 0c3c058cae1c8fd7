/*
 * Goal: `scoutfs mkfs` makes a filesystem that `scoutfs print` walks with no
 * complaint, and refuses every bad input of issue 2 with a clear error, a
 * non-zero exit and both images byte-for-byte unchanged.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { scoutfs, TempDir, sha, isRoot, MIB } from './util.js';

let tmp: TempDir;
before(() => { tmp = new TempDir(); });
after(() => tmp.cleanup());

const Q = ['-Q', '0,127.0.0.1,7000', '-Q', '1,127.0.0.1,7001'];

test('mkfs then print round trip on image files', async () => {
  const meta = tmp.image('rt-meta', 96 * MIB);
  const data = tmp.image('rt-data', 16 * MIB);
  const r = await scoutfs('mkfs', '-A', ...Q, meta, data);
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /^Created scoutfs filesystem:\n/);
  assert.match(r.out, /64KB metadata blocks: 1536 \(96\.00 MB\)/);
  assert.match(r.out, /4KB data blocks: +4096 \(16\.00 MB\)/);
  assert.match(r.out, /quorum slots: +0: 127\.0\.0\.1:7000\n +1: 127\.0\.0\.1:7001\n/);
  assert.match(r.err, /96\.00MB file too small for min 64\.00GB meta device, allowing with -A/);
  const p = await scoutfs('print', meta);
  assert.equal(p.code, 0, p.err);
  assert.doesNotMatch(p.err, /error/);
  assert.match(p.out, /^super blkno 16:/);
  assert.match(p.out, /slot 0: addr 127\.0\.0\.1:7000/);
  assert.match(p.out, /item 4\.1\.1\.0\.0\.0 seq 1: inode ino 1 size 0/);
  assert.match(p.out, /nlink 2 uid 0 gid 0 mode 040755/);
  assert.match(p.out, /item 1\.0\.1\.0\.1\.0 seq 1: meta_seq major 0 ino 1/);
  assert.match(p.out, /free extent blkno \[64, 4095\] len 4032/);
  assert.match(p.out, /alloc list block blkno 3 .* nr 1024\n +blknos 4\.\.1027/);
  assert.equal((p.out.match(/^quorum blkno/gm) ?? []).length, 15);
  // The data device's copy is a super too, with the META flag clear.
  const pd = await scoutfs('print', data);
  assert.match(pd.err, /Printing metadata from a data device!/);
});

test('mkfs and print on loop devices', { skip: !isRoot && 'needs root for losetup' }, async () => {
  const meta = tmp.loop(tmp.image('loop-meta', 80 * MIB));
  const data = tmp.loop(tmp.image('loop-data', 8 * MIB));
  const r = await scoutfs('mkfs', '-A', ...Q, meta, data);
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, new RegExp(`meta device path: +${meta}`));
  const p = await scoutfs('print', meta);
  assert.equal(p.code, 0, p.err);
});

test('-m and -d limit the sizes used', async () => {
  const meta = tmp.image('lim-meta', 200 * MIB);
  const data = tmp.image('lim-data', 64 * MIB);
  const r = await scoutfs('mkfs', '-A', '-m', '100M', '-d', '10M', ...Q, meta, data);
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /64KB metadata blocks: 1600 \(100\.00 MB\)/);
  assert.match(r.out, /4KB data blocks: +2560 \(10\.00 MB\)/);
  assert.equal(r.err, [
    '100.00MB file too small for min 64.00GB meta device, allowing with -A',
    '10.00MB file too small for min 64.00GB data device, allowing with -A',
    'Limiting use of 200.00MB meta device to 100.00MB',
    'Limiting use of 64.00MB data device to 10.00MB',
    '',
  ].join('\n'));
});

test('bad input is refused with the images untouched', async (t) => {
  const meta = tmp.image('bad-meta', 80 * MIB);
  const data = tmp.image('bad-data', 8 * MIB);
  writeFileSync(join(tmp.path, 'not-a-device-dir-marker'), '');
  const link = join(tmp.path, 'meta-link');
  symlinkSync(meta, link);
  const before = [sha(meta), sha(data)];
  const cases: [string, string[], RegExp, number][] = [
    ['no -Q', ['-A', meta, data], /at least one quorum slot/, 2],
    ['duplicate slot', ['-A', '-Q', '0,127.0.0.1,7000', '-Q', '0,127.0.0.1,7001', meta, data], /slot nr 0 specified more than once/, 1],
    ['slot out of range', ['-A', '-Q', '15,127.0.0.1,7000', meta, data], /out of range, must be 0 to 14/, 1],
    ['bad address', ['-A', '-Q', '0,300.1.2.3,7000', meta, data], /not an IPv4 address/, 2],
    ['any address', ['-A', '-Q', '0,0.0.0.0,7000', meta, data], /invalid address/, 1],
    ['bad port', ['-A', '-Q', '0,127.0.0.1,0', meta, data], /port 0 out of range/, 1],
    ['port too big', ['-A', '-Q', '0,127.0.0.1,70000', meta, data], /port 70000 out of range/, 1],
    ['duplicate addr:port', ['-A', '-Q', '0,127.0.0.1,7000', '-Q', '1,127.0.0.1,7000', meta, data], /duplicate/, 1],
    ['malformed slot', ['-A', '-Q', '0,127.0.0.1', meta, data], /must be NR,ADDR,PORT/, 2],
    ['too small without -A', [...Q, meta, data], /80\.00MB file too small for min 64\.00GB meta device/, 1],
    ['same device twice', ['-A', ...Q, meta, meta], /are the same device/, 1],
    ['same device via a symlink', ['-A', ...Q, link, meta], /are the same device/, 1],
    ['unreadable device', ['-A', ...Q, join(tmp.path, 'missing'), data], /cannot access device/, 1],
    ['a directory', ['-A', ...Q, tmp.path, data], /not a regular file or block device/, 1],
    ['format version out of range', ['-A', '-V', '1', ...Q, meta, data], /format version 1 out of range/, 1],
    ['format version not a number', ['-A', '-V', 'x', ...Q, meta, data], /invalid format version/, 2],
    ['unknown option', ['-A', '--bogus', ...Q, meta, data], /Unknown option/, 2],
    ['one device', ['-A', ...Q, meta], /META-DEVICE and a DATA-DEVICE/, 2],
    ['bad size', ['-A', '-m', 'lots', ...Q, meta, data], /invalid max meta size/, 2],
    ['-m larger than the device', ['-A', '-m', '1G', ...Q, meta, data], /larger than device size/, 1],
    ['zone too small', ['-A', '-z', '5', ...Q, meta, data], /must be at least 1048576/, 1],
  ];
  for (const [name, args, re, code] of cases) {
    await t.test(name, async () => {
      const r = await scoutfs('mkfs', ...args);
      // 2: a usage error (message and usage); 1: mkfs refused the arguments or devices.
      assert.equal(r.code, code, `${name}: exit code; stderr: ${r.err}`);
      assert.match(r.err, re);
      if (code === 2) assert.match(r.err, /^usage: scoutfs mkfs /m, `${name}: usage printed`);
      assert.equal(r.out, '');
      assert.deepEqual([sha(meta), sha(data)], before, `${name}: images changed`);
    });
  }
});

test('an existing filesystem is refused without -f and replaced with -f', async () => {
  const meta = tmp.image('ex-meta', 80 * MIB);
  const data = tmp.image('ex-data', 8 * MIB);
  assert.equal((await scoutfs('mkfs', '-A', ...Q, meta, data)).code, 0);
  const before = [sha(meta), sha(data)];
  const r = await scoutfs('mkfs', '-A', ...Q, meta, data);
  assert.equal(r.code, 1);
  assert.match(r.err, /contains an existing scoutfs super block; use -f\|--force/);
  assert.deepEqual([sha(meta), sha(data)], before);
  const f = await scoutfs('mkfs', '-A', '-f', ...Q, meta, data);
  assert.equal(f.code, 0, f.err);
  assert.notDeepEqual([sha(meta), sha(data)], before, 'a new fsid and uuid were written');
});
