/*
 * Goal: the FUSE adapter (src/fuse/adapter.ts) maps the kernel's path-based
 * requests onto the inode-based Fs interface correctly, over a REAL kernel
 * FUSE mount of the in-memory test double (memfs.ts): file and directory
 * operations, xattrs, symlinks, hard links, unlinked-but-open files,
 * fsync -> Fs.sync, errno mapping (ENOENT, EEXIST, ENOTEMPTY, ENOTDIR,
 * ENODATA), unexpected exceptions -> EIO with the daemon still serving, and
 * the path cache dropping renamed and removed names.
 *
 * The mount runs in this process, so every FUSE handler runs on this main
 * thread: the test must only use node:fs/promises (libuv threadpool), never
 * a synchronous fs call on the mount, or it deadlocks itself.
 * Needs root, /dev/fuse and fusermount; skipped with the reason otherwise.
 * Every mount is removed in after(), also on failure.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import * as fsp from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CleanupRegistry, isMounted, unmountAllUnder } from '../../../harness/cleanup.js';
import { isRoot, which } from '../../../harness/sys.js';
import { mountFuse, errnoOf, fuseOptions, loadFuse, type FuseMount } from '../../../src/fuse/adapter.js';
import { FsError, CorruptionError } from '../../../src/format/errors.js';
import { MemFs } from './memfs.js';

const SKIP = isRoot() && existsSync('/dev/fuse') && (await which('fusermount')) ? false : 'needs root, /dev/fuse and fusermount';

test('errnoOf maps FsError by name and everything else to EIO with one log line', () => {
  const lines: string[] = [];
  const log = (l: string): void => void lines.push(l);
  assert.equal(errnoOf(new FsError('ENOENT'), 'x', log), -2);
  assert.equal(errnoOf(new FsError('ENOTEMPTY'), 'x', log), -39);
  assert.equal(errnoOf(new FsError('ESTALE'), 'x', log), -116);
  assert.equal(lines.length, 0);
  assert.equal(errnoOf(new CorruptionError('meta', 5n, 'crc', 'bad'), 'read', log), -5);
  assert.equal(errnoOf(new TypeError('boom'), 'read', log), -5);
  assert.equal(errnoOf('a string', 'read', log), -5);
  assert.equal(lines.length, 3);
  assert.equal(lines[0], 'fuse: read: corruption: meta blkno 5: crc check failed: bad (EIO)');
  assert.match(lines[1]!, /read: unexpected TypeError: boom/);
});

test('the option string carries the cache timeouts, use_ino and big writes, and no hard_remove', () => {
  const o = fuseOptions('/dev/loop0');
  assert.ok(!o.split(',').includes('hard_remove'), o);
  for (const want of ['use_ino', 'attr_timeout=0', 'entry_timeout=1', 'negative_timeout=0', 'big_writes', 'max_write=131072']) {
    assert.ok(o.split(',').includes(want), `${want} in ${o}`);
  }
  assert.equal(fuseOptions('a,b c').split(',')[0], 'a_b_c');
});

let base = '';
let mnt = '';
let memfs: MemFs;
let fm: FuseMount | null = null;
const logLines: string[] = [];
const reg = new CleanupRegistry('fuse-adapter');

before(async () => {
  if (SKIP) return;
  base = await fsp.mkdtemp(join(tmpdir(), 'sfs-fuse-adapter-'));
  mnt = join(base, 'mnt');
  await fsp.mkdir(mnt);
  await reg.add(`rm ${base}`, () => fsp.rm(base, { recursive: true, force: true }));
  memfs = new MemFs();
  await reg.add(`unmount ${mnt}`, async () => void (await unmountAllUnder(base)));
  fm = await mountFuse(mnt, memfs, { log: (l) => void logLines.push(l), fsname: 'memfs-test' });
  await reg.add(`fuse unmount ${mnt}`, async () => {
    await fm?.unmount().catch(() => {});
  });
});

after(async () => {
  const rep = await reg.runAll({ ok: true });
  assert.deepEqual(rep.errors.map((e) => e.error.message), []);
  if (mnt) assert.equal(await isMounted(mnt), false);
});

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code ?? String(e);
  }
  return 'ok';
}

test('files: create, write, read back, truncate, stat with the scoutfs ino', { skip: SKIP }, async () => {
  const f = join(mnt, 'a.txt');
  const data = Buffer.alloc(300_000);
  for (let i = 0; i < data.length; i++) data[i] = (i * 7) & 0xff;
  await fsp.writeFile(f, data, { mode: 0o640 });
  assert.deepEqual(await fsp.readFile(f), data);
  const st = await fsp.stat(f);
  assert.equal(st.size, data.length);
  assert.equal(st.mode & 0o777, 0o640);
  const attr = await memfs.lookup(1n, new TextEncoder().encode('a.txt'));
  assert.equal(BigInt(st.ino), attr.ino, 'st_ino is the scoutfs ino');
  await fsp.truncate(f, 1000);
  assert.equal((await fsp.stat(f)).size, 1000);
  const fh = await fsp.open(f, 'r+');
  await fh.write(Buffer.from('xyz'), 0, 3, 5000);
  await fh.close();
  assert.equal((await fsp.stat(f)).size, 5003);
  await fsp.chmod(f, 0o600);
  assert.equal((await fsp.stat(f)).mode & 0o777, 0o600);
  await fsp.utimes(f, 1_000_000, 1_000_000);
  assert.equal((await fsp.stat(f)).mtimeMs, 1_000_000_000);
  await fsp.unlink(f);
});

test('writes arrive in big requests (big_writes, max_write)', { skip: SKIP }, async () => {
  const f = join(mnt, 'big');
  const sizes: number[] = [];
  const orig = memfs.write.bind(memfs);
  memfs.write = async (ino, off, d) => {
    sizes.push(d.length);
    return orig(ino, off, d);
  };
  try {
    await fsp.writeFile(f, Buffer.alloc(1 << 20, 1));
  } finally {
    memfs.write = orig;
  }
  assert.ok(Math.max(...sizes) > 4096, `largest write ${Math.max(...sizes)}`);
  await fsp.unlink(f);
});

test('directories, rename, readdir, links and symlinks', { skip: SKIP }, async () => {
  await fsp.mkdir(join(mnt, 'd'));
  await fsp.mkdir(join(mnt, 'd', 'sub'));
  await fsp.writeFile(join(mnt, 'd', 'sub', 'f'), 'hello');
  assert.deepEqual((await fsp.readdir(join(mnt, 'd'))).sort(), ['sub']);
  // Renaming a directory must drop cached paths below it.
  await fsp.rename(join(mnt, 'd', 'sub'), join(mnt, 'd', 'moved'));
  assert.equal(await code(fsp.stat(join(mnt, 'd', 'sub', 'f'))), 'ENOENT');
  assert.equal(await fsp.readFile(join(mnt, 'd', 'moved', 'f'), 'utf8'), 'hello');
  // Rename over an existing file replaces it.
  await fsp.writeFile(join(mnt, 'd', 'other'), 'other');
  await fsp.rename(join(mnt, 'd', 'moved', 'f'), join(mnt, 'd', 'other'));
  assert.equal(await fsp.readFile(join(mnt, 'd', 'other'), 'utf8'), 'hello');
  await fsp.link(join(mnt, 'd', 'other'), join(mnt, 'd', 'hard'));
  assert.equal((await fsp.stat(join(mnt, 'd', 'hard'))).nlink, 2);
  await fsp.symlink('other', join(mnt, 'd', 'sym'));
  assert.equal(await fsp.readlink(join(mnt, 'd', 'sym')), 'other');
  assert.equal(await fsp.readFile(join(mnt, 'd', 'sym'), 'utf8'), 'hello');
  assert.ok((await fsp.lstat(join(mnt, 'd', 'sym'))).isSymbolicLink());
  assert.deepEqual((await fsp.readdir(join(mnt, 'd'))).sort(), ['hard', 'moved', 'other', 'sym']);
  const many = join(mnt, 'many');
  await fsp.mkdir(many);
  for (let i = 0; i < 600; i++) await fsp.writeFile(join(many, `n${i}`), '');
  assert.equal((await fsp.readdir(many)).length, 600, 'readdir pages through Fs.readdir');
  await fsp.rm(join(mnt, 'd'), { recursive: true });
  await fsp.rm(many, { recursive: true });
  assert.deepEqual(await fsp.readdir(mnt), []);
});

test('errno mapping: ENOENT, EEXIST, ENOTEMPTY, ENOTDIR, EISDIR, ENODATA', { skip: SKIP || !(await which('python3')) ? 'needs root, /dev/fuse, fusermount and python3' : false }, async () => {
  const { execFile } = await import('node:child_process');
  const { promisify } = await import('node:util');
  const run = promisify(execFile);
  assert.equal(await code(fsp.stat(join(mnt, 'nope'))), 'ENOENT');
  assert.equal(await code(fsp.readFile(join(mnt, 'nope'))), 'ENOENT');
  await fsp.mkdir(join(mnt, 'e'));
  assert.equal(await code(fsp.mkdir(join(mnt, 'e'))), 'EEXIST');
  await fsp.writeFile(join(mnt, 'e', 'f'), 'x');
  assert.equal(await code(fsp.writeFile(join(mnt, 'e', 'f'), 'y', { flag: 'wx' })), 'EEXIST');
  assert.equal(await code(fsp.rmdir(join(mnt, 'e'))), 'ENOTEMPTY');
  assert.equal(await code(fsp.mkdir(join(mnt, 'e', 'f', 'x'))), 'ENOTDIR');
  assert.equal(await code(fsp.rename(join(mnt, 'e', 'f'), join(mnt, 'e', 'nodir', 'g'))), 'ENOENT');
  assert.equal(await code(fsp.unlink(join(mnt, 'e'))), 'EISDIR');
  // xattrs: node has no xattr API; python3's os.*xattr report the errno by
  // name.  MemFs answers ENODATA (missing name, XATTR_REPLACE of a missing
  // name) and EEXIST (XATTR_CREATE of a present one); the adapter must
  // carry them to the kernel unchanged.
  const xattrErr = async (stmt: string): Promise<string> => {
    const py = `import errno, os\ntry:\n    ${stmt}\n    print('ok')\nexcept OSError as e:\n    print(errno.errorcode[e.errno])`;
    return (await run('python3', ['-c', py, join(mnt, 'e', 'f')])).stdout.trim();
  };
  assert.equal(await xattrErr("os.getxattr(__import__('sys').argv[1], 'user.none')"), 'ENODATA');
  assert.equal(await xattrErr("os.removexattr(__import__('sys').argv[1], 'user.none')"), 'ENODATA');
  assert.equal(await xattrErr("os.setxattr(__import__('sys').argv[1], 'user.none', b'v', os.XATTR_REPLACE)"), 'ENODATA');
  assert.equal(await xattrErr("os.setxattr(__import__('sys').argv[1], 'user.once', b'v', os.XATTR_CREATE)"), 'ok');
  assert.equal(await xattrErr("os.setxattr(__import__('sys').argv[1], 'user.once', b'w', os.XATTR_CREATE)"), 'EEXIST');
  assert.equal(await xattrErr("os.setxattr(__import__('sys').argv[1], 'user.once', b'w', os.XATTR_REPLACE)"), 'ok');
  await fsp.rm(join(mnt, 'e'), { recursive: true });
});

test('an unexpected exception answers EIO, logs one line and the mount keeps serving', { skip: SKIP }, async () => {
  await fsp.writeFile(join(mnt, 'b'), 'b');
  const before = logLines.length;
  memfs.bomb = new RangeError('simulated bug');
  assert.equal(await code(fsp.readFile(join(mnt, 'b'))), 'EIO');
  assert.equal(logLines.length, before + 1);
  assert.match(logLines[before]!, /unexpected RangeError: simulated bug/);
  assert.equal(await fsp.readFile(join(mnt, 'b'), 'utf8'), 'b');
  await fsp.unlink(join(mnt, 'b'));
});

test('fsync and fsync of a directory commit through Fs.sync', { skip: SKIP }, async () => {
  const n = memfs.syncs;
  const fh = await fsp.open(join(mnt, 's'), 'w');
  await fh.write('x');
  await fh.sync();
  await fh.datasync();
  await fh.close();
  const dh = await fsp.open(mnt, 'r');
  await dh.sync();
  await dh.close();
  assert.equal(memfs.syncs, n + 3);
  await fsp.unlink(join(mnt, 's'));
});

async function until(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    assert.ok(Date.now() < end, 'timed out waiting');
    await new Promise((r) => setTimeout(r, 10));
  }
}

// libfuse hides an unlinked open file by renaming it to .fuse_hidden*; the
// adapter turns that into an Fs unlink and keeps the name in memory only.
test('an unlinked open file stays readable and writable, and no .fuse_hidden name is stored', { skip: SKIP }, async () => {
  const f = join(mnt, 'open-unlinked');
  await fsp.writeFile(f, 'still here');
  const fh = await fsp.open(f, 'r+');
  const ino = (await fh.stat()).ino;
  await fsp.unlink(f);
  assert.deepEqual(await fsp.readdir(mnt), []);
  assert.deepEqual(memfs.names(memfs.rootIno), [], 'nothing stored under a hidden name');
  const buf = Buffer.alloc(32);
  const { bytesRead } = await fh.read(buf, 0, 32, 0);
  assert.equal(buf.subarray(0, bytesRead).toString(), 'still here');
  await fh.write(Buffer.from('!'), 0, 1, 10);
  assert.equal((await fh.stat()).size, 11);
  assert.equal((await fh.stat()).ino, ino);
  assert.equal(fm!.adapter.hiddenFiles(), 1);
  await fh.close();
  // The kernel sends RELEASE after close() returned.
  await until(() => fm!.adapter.openHandles() === 0 && fm!.adapter.hiddenFiles() === 0);
  assert.equal(memfs.has(BigInt(ino)), false, 'the inode is gone after the last close');

  // Renaming over an open file: the replaced file stays readable until closed.
  await fsp.writeFile(join(mnt, 'old'), 'old contents');
  await fsp.writeFile(join(mnt, 'new'), 'new contents');
  const oh = await fsp.open(join(mnt, 'old'), 'r');
  await fsp.rename(join(mnt, 'new'), join(mnt, 'old'));
  assert.deepEqual(await fsp.readdir(mnt), ['old']);
  assert.equal(await fsp.readFile(join(mnt, 'old'), 'utf8'), 'new contents');
  const b2 = Buffer.alloc(32);
  const r2 = await oh.read(b2, 0, 32, 0);
  assert.equal(b2.subarray(0, r2.bytesRead).toString(), 'old contents');
  await oh.close();
  await until(() => fm!.adapter.hiddenFiles() === 0);
  await fsp.unlink(join(mnt, 'old'));
});

const PATCHED = loadFuse().patched ? false : 'native/fuse is not built';

test('patched binding: new inodes belong to the calling user', { skip: SKIP || PATCHED || !(await which('setpriv')) }, async () => {
  const { execFile } = await import('node:child_process');
  const { promisify } = await import('node:util');
  const run = promisify(execFile);
  await fsp.chmod(base, 0o755); // mkdtemp made it 0700: others could not reach the mount
  const d = join(mnt, 'shared');
  await fsp.mkdir(d, { mode: 0o777 });
  await fsp.chmod(d, 0o777);
  const as = (uid: number, gid: number, ...cmd: string[]): Promise<unknown> =>
    run('setpriv', [`--reuid=${uid}`, `--regid=${gid}`, '--clear-groups', ...cmd]);
  await as(1234, 5678, 'touch', join(d, 'file'));
  await as(1234, 5678, 'mkdir', join(d, 'dir'));
  await as(1234, 5678, 'ln', '-s', 'file', join(d, 'link'));
  for (const n of ['file', 'dir', 'link']) {
    const st = await fsp.lstat(join(d, n));
    assert.deepEqual([st.uid, st.gid], [1234, 5678], n);
  }
  // The owner can write its new 0644 file; another user cannot.
  await as(1234, 5678, 'sh', '-c', `echo mine > ${join(d, 'file')}`);
  await assert.rejects(as(4321, 4321, 'sh', '-c', `echo theirs > ${join(d, 'file')}`), /Permission denied/);
  await fsp.rm(d, { recursive: true });
});

test('patched binding: utimens sets atime and mtime apart, and st_ino is 64 bits', { skip: SKIP || PATCHED }, async () => {
  const { execFile } = await import('node:child_process');
  const { promisify } = await import('node:util');
  const run = promisify(execFile);
  const f = join(mnt, 'times');
  await fsp.writeFile(f, '');
  await fsp.utimes(f, new Date(1_000_000_000_000), new Date(1_500_000_000_000));
  let st = await fsp.stat(f);
  assert.deepEqual([st.atimeMs, st.mtimeMs], [1_000_000_000_000, 1_500_000_000_000]);
  // touch -m leaves the atime (UTIME_OMIT); touch -a leaves the mtime.
  await run('touch', ['-m', '-d', '@1600000000', f]);
  st = await fsp.stat(f);
  assert.deepEqual([st.atimeMs, st.mtimeMs], [1_000_000_000_000, 1_600_000_000_000]);
  await run('touch', ['-a', '-d', '@1700000000', f]);
  st = await fsp.stat(f);
  assert.deepEqual([st.atimeMs, st.mtimeMs], [1_700_000_000_000, 1_600_000_000_000]);
  // UTIME_NOW.
  const before = Date.now() - 2000;
  await run('touch', ['-m', f]);
  st = await fsp.stat(f);
  assert.ok(st.mtimeMs >= before && st.atimeMs === 1_700_000_000_000, `${st.mtimeMs} ${st.atimeMs}`);
  await fsp.unlink(f);

  const big = (1n << 33n) + 5n;
  memfs.setNextIno(big);
  await fsp.writeFile(join(mnt, 'bigino'), '');
  const bst = await fsp.stat(join(mnt, 'bigino'), { bigint: true });
  assert.equal(bst.ino, big);
  await fsp.unlink(join(mnt, 'bigino'));
});

test('without native/fuse the fuse-native package serves the mount and the log says what is lost', { skip: SKIP }, async () => {
  const second = join(base, 'upstream');
  await fsp.mkdir(second);
  const lines: string[] = [];
  const saved = process.env.SCOUTFS_FUSE_BINDING;
  process.env.SCOUTFS_FUSE_BINDING = 'upstream';
  let up: FuseMount;
  try {
    assert.equal(loadFuse().patched, false);
    up = await mountFuse(second, new MemFs(), { log: (l) => void lines.push(l), fsname: 'memfs-upstream' });
  } finally {
    if (saved === undefined) delete process.env.SCOUTFS_FUSE_BINDING;
    else process.env.SCOUTFS_FUSE_BINDING = saved;
  }
  try {
    assert.ok(lines.some((l) => /native\/fuse is not built; using the fuse-native package/.test(l)), lines.join('\n'));
    await fsp.writeFile(join(second, 'f'), 'served');
    assert.equal(await fsp.readFile(join(second, 'f'), 'utf8'), 'served');
    // Upstream passes the atime twice: both times are set to it.
    await fsp.utimes(join(second, 'f'), new Date(1_000_000_000_000), new Date(1_500_000_000_000));
    const st = await fsp.stat(join(second, 'f'));
    assert.deepEqual([st.atimeMs, st.mtimeMs], [1_000_000_000_000, 1_000_000_000_000]);
  } finally {
    await up.unmount();
  }
  assert.equal(await isMounted(second), false);
});

test('xattrs through setfattr/getfattr', { skip: SKIP || !(await which('setfattr')) ? 'needs root and setfattr' : false }, async () => {
  const { execFile } = await import('node:child_process');
  const { promisify } = await import('node:util');
  const run = promisify(execFile);
  const f = join(mnt, 'x');
  await fsp.writeFile(f, '');
  await run('setfattr', ['-n', 'user.a', '-v', 'hello', f]);
  const got = await run('getfattr', ['--only-values', '-n', 'user.a', f]);
  assert.equal(got.stdout, 'hello');
  const list = await run('getfattr', ['-d', f]);
  assert.match(list.stdout, /user\.a="hello"/);
  await run('setfattr', ['-x', 'user.a', f]);
  await assert.rejects(run('getfattr', ['-n', 'user.a', f]), /No such attribute/);
  await fsp.unlink(f);
});
