/*
 * Goal: `scoutfs mount` works end to end on real devices.  mkfs on two
 * image files attached to loop devices; `scoutfs mount` runs as a child
 * process (foreground, as a harness node would run it); files are created
 * and written through the kernel; `scoutfs walk-inodes` lists a touched
 * file's new meta_seq after the CLI's implicit sync; stat, statfs, counters, df and
 * sync answer (statfs with the volume's fsid and totals, counters with the
 * mount's numeric status fields, df with rows that add up and count the
 * data written); SIGTERM commits and unmounts with exit 0; a second mount
 * reads the data back; `umount MNT` stops the daemon too; `scoutfs fsck`
 * is clean afterwards.  Also: malformed options and a busy mount point are
 * refused with a non-zero exit and leave nothing mounted.  Names longer
 * than 255 bytes (NAME_MAX counts bytes, not characters) are refused with
 * ENAMETOOLONG by every call that takes a name, 255 bytes work.
 *
 * Needs root, /dev/fuse, fusermount and losetup; skipped otherwise.  Every
 * resource goes into one CleanupRegistry (daemon, mount, loop devices,
 * images, temp dir) which after() runs also on failure and timeout.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fsp from 'node:fs/promises';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { join } from 'node:path';
import { CleanupRegistry, isMounted } from '../../harness/cleanup.js';
import type { NodeProc } from '../../harness/proc.js';
import { GIB, Volume, clusterSkip, errCode, finish, logLines, scoutfs, tempBase } from './util.js';
import { decodeSuper } from '../../src/format/super.js';

const run = promisify(execFile);
const SKIP = await clusterSkip();

const reg = new CleanupRegistry('cluster-mount', 60_000);
let base = '';
let vol: Volume;
let meta = '';
let data = '';
let mnt = '';

const mountIt = (): Promise<NodeProc> => vol.mount();

before(async () => {
  if (SKIP) return;
  base = await tempBase(reg, 'cluster-mount');
  vol = await Volume.create(reg, base, 'vol', { metaBytes: 2 * GIB, dataBytes: 8 * GIB, port: 42290 });
  ({ meta, data, mnt } = vol);
});

after(async () => {
  await finish(reg, base);
});

test('bad options are refused before anything is mounted', { skip: SKIP }, async () => {
  for (const o of [`metadev_path=${meta},bogus=1`, `metadev_path=${meta},quorum_slot_nr=x`, 'quorum_slot_nr=0',
    `metadev_path=${meta},quorum_slot_nr=0,quorum_slot_nr=0`, `metadev_path=${meta},quorum_slot_nr=15`]) {
    const r = await scoutfs('mount', '-o', o, data, mnt);
    assert.notEqual(r.code, 0, o);
    assert.match(r.err, /mount: /, o);
  }
  // Slot 3 is not configured by mkfs above.
  const r = await scoutfs('mount', '-o', `metadev_path=${meta},quorum_slot_nr=3`, data, mnt);
  assert.equal(r.code, 1);
  assert.match(r.err, /not a configured slot/);
  assert.equal(await isMounted(mnt), false);
});

test('mount, write, walk-inodes, stat, statfs, df, SIGTERM, remount, read back, fsck', { skip: SKIP, timeout: 300_000 }, async () => {
  let proc = await mountIt();
  // A second mount of the same devices, or on the busy mount point, is refused.
  const other = join(base, 'other');
  await fsp.mkdir(other);
  const again = await scoutfs('mount', '-o', `metadev_path=${meta}`, data, other);
  assert.equal(again.code, 1, again.err);
  assert.match(again.err, /already mounted/);
  const busy = await scoutfs('mount', '-o', `metadev_path=${meta}`, data, mnt);
  assert.equal(busy.code, 1);
  assert.equal(await isMounted(other), false);

  const payload = Buffer.alloc(200_000);
  for (let i = 0; i < payload.length; i++) payload[i] = (i * 13) & 0xff;
  await fsp.mkdir(join(mnt, 'dir'));
  await fsp.writeFile(join(mnt, 'dir', 'f'), payload);
  await fsp.writeFile(join(mnt, 'small'), 'hello\n');
  assert.equal((await fsp.readFile(join(mnt, 'small'), 'utf8')), 'hello\n');

  const w1 = await scoutfs('walk-inodes', 'meta_seq', '0', '-1', mnt);
  assert.equal(w1.code, 0, w1.err);
  const lines = w1.out.split('\n').filter((l) => l.length > 0);
  assert.deepEqual(lines[0]!.split(/\s+/).filter(Boolean), ['#', 'major', 'minor', 'ino']);
  assert.equal(lines[0]!.indexOf('major'), 21);
  assert.equal(lines[0]!.indexOf('minor'), 42);
  assert.equal(lines[0]!.lastIndexOf('ino'), 53);
  const st = await scoutfs('stat', join(mnt, 'small'));
  assert.equal(st.code, 0, st.err);
  const field = (text: string, name: string): string => text.split('\n').find((l) => l.startsWith(name + ' '))!.split(/\s+/)[1]!;
  const smallIno = BigInt((await fsp.stat(join(mnt, 'small'))).ino);
  const seq1 = BigInt(field(st.out, 'meta_seq'));
  // Both CLI forms print the same.
  const w1b = await scoutfs('walk-inodes', '-p', mnt, '--', 'meta_seq', '0', '-1');
  assert.equal(w1b.out, w1.out);
  assert.ok(w1.out.includes(` ${smallIno} `) || w1.out.includes(` ${smallIno}`), w1.out);

  // touch + sync: the file moves to a newer meta_seq.
  await new Promise((r) => setTimeout(r, 20));
  const now = new Date();
  await fsp.utimes(join(mnt, 'small'), now, now);
  assert.equal((await scoutfs('sync', mnt)).code, 0);
  const w2 = await scoutfs('walk-inodes', '-p', mnt, '--', 'meta_seq', '0', '-1');
  const rows = w2.out.split('\n').filter((l) => /^\d/.test(l)).map((l) => l.split(/\s+/));
  const mine = rows.filter((r) => r[3] === String(smallIno));
  assert.equal(mine.length, 1, w2.out);
  assert.ok(BigInt(mine[0]![1]!) > seq1, `meta_seq moved past ${seq1}: ${w2.out}`);

  // statfs: the volume's own fsid (from its super block) and totals.
  const superBytes = Buffer.alloc(4096);
  const mfh = await fsp.open(meta, 'r');
  await mfh.read(superBytes, 0, 4096, 65536);
  await mfh.close();
  const sb = decodeSuper(new Uint8Array(superBytes));
  const sf = await scoutfs('statfs', mnt);
  assert.equal(sf.code, 0, sf.err);
  assert.match(sf.out, new RegExp(`^fsid\\s+${sb.hdr.fsid.toString(16).padStart(16, '0')}$`, 'm'));
  assert.match(sf.out, /^rid\s+[0-9a-f]{16}$/m);
  assert.match(sf.out, /^committed_seq\s+\d+$/m);
  assert.match(sf.out, new RegExp(`^total_meta_blocks\\s+${sb.total_meta_blocks}$`, 'm'));
  assert.match(sf.out, new RegExp(`^total_data_blocks\\s+${sb.total_data_blocks}$`, 'm'));
  const ct = await scoutfs('counters', mnt);
  assert.equal(ct.code, 0, ct.err);
  assert.match(ct.out, /^trans\.transSeq\s+\d+$/m);
  assert.match(ct.out, /^server\.logTrees\.getsOpened\s+[1-9]\d*$/m);
  assert.ok(!/^trans\.step\s/m.test(ct.out), 'text fields are not counters');
  // df: one row per device; used + free = total, Use% follows; the data
  // row counts the blocks written above (200000 + 6 bytes: at least 50).
  const df = await scoutfs('df', mnt);
  assert.equal(df.code, 0, df.err);
  const dfRow = (type: string): bigint[] => {
    const m = new RegExp(`^${type}\\s+\\S+\\s+(\\d+)\\s+(\\d+)\\s+(\\d+)\\s+(\\d+)%$`, 'm').exec(df.out);
    assert.ok(m, `${type} row in:\n${df.out}`);
    return m.slice(1).map(BigInt);
  };
  const [mt, mu, mf, mp] = dfRow('MetaData');
  assert.deepEqual([mt, mu! + mf!, mp], [sb.total_meta_blocks, mt, (mu! * 100n) / mt!]);
  const [dt, du, dfree] = dfRow('Data');
  assert.deepEqual([dt, du! + dfree!], [sb.total_data_blocks - 64n, dt], 'data blocks from 64 on');
  assert.ok(du! >= 50n, `data used ${du}`);

  // SIGTERM commits, unmounts and exits 0.
  const ex = await proc.stop(30_000);
  assert.equal(ex.code, 0, await proc.log());
  assert.equal(await isMounted(mnt), false);

  // Remount: the data reads back.
  proc = await mountIt();
  assert.deepEqual(await fsp.readFile(join(mnt, 'dir', 'f')), payload);
  assert.equal(await fsp.readFile(join(mnt, 'small'), 'utf8'), 'hello\n');
  // `umount MNT` from outside stops the daemon cleanly too.
  await run('umount', [mnt]);
  const ex2 = await proc.exited;
  assert.equal(ex2.code, 0, await proc.log());

  const fsck = await scoutfs('fsck', meta, data);
  assert.equal(fsck.code, 0, fsck.out + fsck.err);
});

test('names over 255 bytes are refused with ENAMETOOLONG', { skip: SKIP, timeout: 120_000 }, async () => {
  const proc = await mountIt();
  const p = (...x: string[]): string => join(mnt, ...x);
  await fsp.mkdir(p('names'));
  // 255 bytes work everywhere, also in two-byte UTF-8 (127 x 2 + 1).
  const ok = ['n'.repeat(255), '\u00e9'.repeat(127) + 'n'];
  for (const name of ok) {
    assert.equal(Buffer.byteLength(name), 255);
    await fsp.writeFile(p('names', name), name);
    assert.equal(await fsp.readFile(p('names', name), 'utf8'), name);
    await fsp.rename(p('names', name), p('names', name.slice(0, -1) + 'm'));
    await fsp.mkdir(p('names', name));
    await fsp.symlink('target', p('names', name + '/' + name));
    assert.equal(await fsp.readlink(p('names', name, name)), 'target');
  }
  const listed = await fsp.readdir(p('names'));
  for (const name of ok) assert.ok(listed.includes(name) && listed.includes(name.slice(0, -1) + 'm'));
  // 256 bytes and more: refused, whoever checks (the daemon up to 1024, the kernel above).
  await fsp.writeFile(p('names', 'short'), 'x');
  const before = (await proc.log()).length;
  for (const name of ['n'.repeat(256), '\u00e9'.repeat(128), 'n'.repeat(1100)]) {
    const long = p('names', name);
    const what = `${Buffer.byteLength(name)} bytes`;
    assert.equal(await errCode(fsp.writeFile(long, 'x')), 'ENAMETOOLONG', `create ${what}`);
    assert.equal(await errCode(fsp.mkdir(long)), 'ENAMETOOLONG', `mkdir ${what}`);
    assert.equal(await errCode(fsp.stat(long)), 'ENAMETOOLONG', `stat ${what}`);
    assert.equal(await errCode(fsp.unlink(long)), 'ENAMETOOLONG', `unlink ${what}`);
    assert.equal(await errCode(fsp.rmdir(long)), 'ENAMETOOLONG', `rmdir ${what}`);
    assert.equal(await errCode(fsp.rename(p('names', 'short'), long)), 'ENAMETOOLONG', `rename to ${what}`);
    assert.equal(await errCode(fsp.link(p('names', 'short'), long)), 'ENAMETOOLONG', `link ${what}`);
    assert.equal(await errCode(fsp.symlink('target', long)), 'ENAMETOOLONG', `symlink ${what}`);
    const fifo = await run('mkfifo', [long]).then(() => 'made', (e: { stderr?: string }) => e.stderr ?? '');
    assert.match(fifo, /File name too long/, `mknod ${what}`);
  }
  assert.deepEqual((await fsp.readdir(p('names'))).filter((n) => Buffer.byteLength(n) > 255), []);
  assert.equal(await fsp.readFile(p('names', 'short'), 'utf8'), 'x');
  assert.deepEqual(logLines((await proc.log()).slice(before), /unexpected|corruption/), []);
  const ex = await proc.stop(30_000);
  assert.equal(ex.code, 0, await proc.log());
  const fsck = await scoutfs('fsck', meta, data);
  assert.equal(fsck.code, 0, fsck.out + fsck.err);
});
