/*
 * Goal: `scoutfs mount` works end to end on real devices.  mkfs on two
 * image files attached to loop devices; `scoutfs mount` runs as a child
 * process (foreground, as a harness node would run it); files are created
 * and written through the kernel; `scoutfs walk-inodes` lists a touched
 * file's new meta_seq after the CLI's implicit sync; stat, statfs, df and
 * sync answer; SIGTERM commits and unmounts with exit 0; a second mount
 * reads the data back; `umount MNT` stops the daemon too; `scoutfs fsck`
 * is clean afterwards.  Also: malformed options and a busy mount point are
 * refused with a non-zero exit and leave nothing mounted.
 *
 * Needs root, /dev/fuse, fusermount and losetup; skipped otherwise.  Every
 * resource goes into one CleanupRegistry (daemon, mount, loop devices,
 * images, temp dir) which after() runs also on failure and timeout.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import * as fsp from 'node:fs/promises';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CleanupRegistry, isMounted, unmount } from '../../harness/cleanup.js';
import { attachLoop, createImage } from '../../harness/loop.js';
import { logMatches, mountAppears, startProc, type NodeProc } from '../../harness/proc.js';
import { isRoot, which } from '../../harness/sys.js';

const run = promisify(execFile);
const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const CLI = join(ROOT, 'bin', 'scoutfs');
const HAVE_MOUNT = existsSync(join(ROOT, 'dist', 'src', 'mount', 'mount.js'));
const SKIP = !HAVE_MOUNT ? 'src/mount/mount.ts is not built yet'
  : isRoot() && existsSync('/dev/fuse') && (await which('fusermount')) && (await which('losetup')) ? false
  : 'needs root, /dev/fuse, fusermount and losetup';

const reg = new CleanupRegistry('cluster-mount', 60_000);
let base = '';
let meta = '';
let data = '';
let mnt = '';

async function scoutfs(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  try {
    const r = await run(process.execPath, [CLI, ...args], { timeout: 120_000 });
    return { code: 0, out: r.stdout, err: r.stderr };
  } catch (e) {
    const x = e as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof x.code === 'number' ? x.code : -1, out: x.stdout ?? '', err: x.stderr ?? '' };
  }
}

let nth = 0;
async function mountIt(): Promise<NodeProc> {
  const name = `mount${nth++}`;
  const proc = await startProc(reg, {
    name, command: process.execPath, args: [CLI, 'mount', '-o', `metadev_path=${meta},quorum_slot_nr=0`, data, mnt],
    logPath: join(base, `${name}.log`),
  });
  await reg.add(`unmount ${mnt} (${name})`, () => unmount(mnt));
  const up = mountAppears(mnt);
  const said = logMatches(proc.logPath, /^mounted /m);
  await proc.waitReady(async () => (await up()) && (await said()), { timeoutMs: 60_000, what: 'scoutfs mount' });
  return proc;
}

before(async () => {
  if (SKIP) return;
  base = await fsp.mkdtemp(join(tmpdir(), 'sfs-cluster-mount-'));
  await reg.add(`rm ${base}`, () => fsp.rm(base, { recursive: true, force: true }));
  mnt = join(base, 'mnt');
  await fsp.mkdir(mnt);
  const mi = await createImage(reg, join(base, 'meta.img'), 2 * 1024 ** 3, { remove: 'always' });
  const di = await createImage(reg, join(base, 'data.img'), 8 * 1024 ** 3, { remove: 'always' });
  meta = (await attachLoop(reg, mi.path)).path;
  data = (await attachLoop(reg, di.path)).path;
  const r = await scoutfs('mkfs', '-A', '-f', '-Q', '0,127.0.0.1,42000', meta, data);
  assert.equal(r.code, 0, r.err);
});

after(async () => {
  const rep = await reg.runAll({ ok: true });
  assert.deepEqual(rep.errors.map((e) => `${e.name}: ${e.error.message}`), []);
  if (mnt) assert.equal(await isMounted(mnt), false);
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

  const sf = await scoutfs('statfs', mnt);
  assert.equal(sf.code, 0, sf.err);
  assert.match(sf.out, /^fsid\s+[0-9a-f]{16}$/m);
  assert.match(sf.out, /^rid\s+[0-9a-f]{16}$/m);
  assert.match(sf.out, /^committed_seq\s+\d+$/m);
  const df = await scoutfs('df', mnt);
  assert.equal(df.code, 0, df.err);
  assert.match(df.out, /^MetaData\s+64KB/m);
  assert.match(df.out, /^Data\s+4KB/m);

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
