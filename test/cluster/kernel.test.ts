/*
 * Goal: what only the kernel transport (our FUSE protocol over /dev/fuse,
 * src/fuse/) can do, checked through a real mount the way users reach it
 * (Python, getfattr, coreutils, util-linux), on top of the POSIX suite
 * (posix.test.ts runs that through this transport too):
 *
 *   readdir     d_ino equals st_ino and d_type is right for every file
 *               type (read with getdents64 itself)
 *   names       every byte 0x80-0xff, 255-byte names: create, list, open,
 *               rename, symlink targets, all exact, also after a remount
 *   times       nanoseconds and pre-epoch times (also after a remount);
 *               UTIME_NOW and UTIME_OMIT
 *   xattrs      a 300-byte binary value read by Python's os.getxattr (which
 *               tries a short buffer first); listxattr over hundreds of names
 *               near the 64 KiB limit with Python and `getfattr -d`, and E2BIG
 *               past it, as the kernel module answers
 *   data        fallocate KEEP_SIZE and mode 0 (other modes EOPNOTSUPP),
 *               SEEK_DATA/SEEK_HOLE over a sparse file, O_TMPFILE
 *   rename      RENAME_NOREPLACE refuses an existing target
 *   ioctls      STAT_MORE on a file and STATFS_MORE on the mount root as
 *               restricted ioctls agree with `scoutfs stat` and `scoutfs
 *               statfs`; other commands are ENOTTY
 *   caches      with hour-long timeouts, a change made behind the kernel's
 *               back (the daemon's test hook) stays invisible until it is
 *               invalidated, then stat, lookup, readdir and read see it at
 *               once: an inode's mode and pages, a new and a removed name
 *   liveness    the daemon answers at the end, stops cleanly, fsck is clean
 *
 * Needs root, /dev/fuse, losetup, python3 and getfattr; skipped otherwise.
 * Every resource is in one CleanupRegistry that after() runs.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fsp from 'node:fs/promises';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { join } from 'node:path';
import { CleanupRegistry } from '../../harness/cleanup.js';
import type { NodeProc } from '../../harness/proc.js';
import { which } from '../../harness/sys.js';
import { controlRequest } from '../../src/mount/control.js';
import { IOC_STATFS_MORE, IOC_STAT_MORE } from '../../src/fuse/proto.js';
import { GIB, Volume, clusterSkip, finish, scoutfs, stopMount, tempBase } from './util.js';

const run = promisify(execFile);
const SKIP = (await clusterSkip()) || (!(await which('python3')) || !(await which('getfattr')) ? 'needs python3 and getfattr' : false);

const reg = new CleanupRegistry('cluster-kernel', 60_000);
let base = '';
let vol: Volume;
let mnt = '';
let proc: NodeProc | null = null;

/** Run a Python program with argv; its stdout, parsed as JSON. */
async function py(code: string, ...args: string[]): Promise<unknown> {
  const r = await run('python3', ['-c', code, ...args], { maxBuffer: 16 << 20 });
  return JSON.parse(r.stdout) as unknown;
}

async function remount(): Promise<void> {
  await stopMount(proc!, mnt);
  proc = await vol.mount();
}

before(async () => {
  if (SKIP) return;
  base = await tempBase(reg, 'kernel');
  vol = await Volume.create(reg, base, 'kernel', { metaBytes: 2 * GIB, dataBytes: 4 * GIB, port: 42262 });
  vol.env = { SCOUTFS_TEST_HOOKS: '1' };
  mnt = vol.mnt;
  proc = await vol.mount();
  assert.match(await proc.log(), /transport kernel/);
});

after(async () => {
  await finish(reg, base);
});

const GETDENTS = `
import ctypes, os, sys, json
libc = ctypes.CDLL(None, use_errno=True)
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
buf = ctypes.create_string_buffer(65536)
out = []
while True:
    n = libc.syscall(217, fd, buf, len(buf))
    if n < 0: raise OSError(ctypes.get_errno(), 'getdents64')
    if n == 0: break
    b = buf.raw[:n]; i = 0
    while i < n:
        ino = int.from_bytes(b[i:i+8], 'little'); reclen = int.from_bytes(b[i+16:i+18], 'little'); typ = b[i+18]
        name = b[i+19:i+reclen].split(b'\\0', 1)[0]
        st = os.lstat(os.path.join(sys.argv[1].encode(), name))
        out.append([name.hex(), ino, typ, st.st_ino, st.st_mode >> 12])
        i += reclen
print(json.dumps(out))
`;

test('readdir: d_ino is st_ino and d_type is right for every file type', { skip: SKIP }, async () => {
  const d = join(mnt, 'types');
  await fsp.mkdir(d);
  await fsp.writeFile(join(d, 'reg'), 'x');
  await fsp.mkdir(join(d, 'dir'));
  await fsp.symlink('reg', join(d, 'lnk'));
  await run('mkfifo', [join(d, 'fifo')]);
  await run('mknod', [join(d, 'chr'), 'c', '1', '3']);
  await run('mknod', [join(d, 'blk'), 'b', '7', '0']);
  await run('python3', ['-c', 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1])', join(d, 'sock')]);
  const ents = (await py(GETDENTS, d)) as [string, number, number, number, number][];
  // DT_* equals the S_IFMT type nibble (st_mode >> 12) for every type.
  const want: Record<string, number> = { '.': 4, '..': 4, reg: 8, dir: 4, lnk: 10, fifo: 1, chr: 2, blk: 6, sock: 12 };
  const seen = new Map(ents.map(([h, ino, typ, stIno, stType]) => [Buffer.from(h, 'hex').toString(), { ino, typ, stIno, stType }]));
  assert.deepEqual([...seen.keys()].sort(), Object.keys(want).sort());
  for (const [name, t] of Object.entries(want)) {
    const e = seen.get(name)!;
    assert.equal(e.typ, t, `d_type of ${name}`);
    assert.equal(e.typ, e.stType, `d_type of ${name} matches st_mode`);
    assert.equal(e.ino, e.stIno, `d_ino of ${name} is its st_ino`);
  }
  assert.equal(seen.get('..')!.ino, (await fsp.stat(mnt)).ino, "'..' is the parent");
});

const NAMES = `
import os, sys, json
d = sys.argv[1].encode()
high = bytes(range(0x80, 0x100))
names = [b'bad\\xffname', high[:128], bytes([0x80 + (i % 128) for i in range(255)]), b'\\xc3\\x28' * 100, b'x' * 255]
if sys.argv[2] == 'create':
    for i, n in enumerate(names):
        with open(os.path.join(d, n), 'wb') as f: f.write(n)
    os.symlink(high, os.path.join(d, b'link'))
    os.rename(os.path.join(d, names[0]), os.path.join(d, b'renamed\\xfe'))
    names[0] = b'renamed\\xfe'
    # 256 bytes is still too long.
    try:
        open(os.path.join(d, b'\\x80' * 256), 'wb'); print(json.dumps('256 accepted')); sys.exit(0)
    except OSError as e:
        assert e.strerror == 'File name too long', e
else:
    names[0] = b'renamed\\xfe'
listed = set(os.listdir(d))
ok = all(n in listed for n in names) and len(listed) == len(names) + 1
ok = ok and all(open(os.path.join(d, n), 'rb').read() == (b'bad\\xffname' if n == b'renamed\\xfe' else n) for n in names)
ok = ok and os.readlink(os.path.join(d, b'link')) == high
print(json.dumps(ok))
`;

test('names: bytes 0x80-0xff and 255-byte names round trip exactly, also after a remount', { skip: SKIP }, async () => {
  const d = join(mnt, 'names');
  await fsp.mkdir(d);
  assert.equal(await py(NAMES, d, 'create'), true);
  await remount();
  assert.equal(await py(NAMES, d, 'check'), true);
});

const TIMES = `
import os, sys, json
p = sys.argv[1]
if sys.argv[2] == 'set':
    open(p, 'w').close()
    os.utime(p, ns=(-6999999999, 1234567891123456789))
st = os.stat(p)
print(json.dumps([st.st_atime_ns, st.st_mtime_ns]))
`;

test('times: nanoseconds and pre-epoch times, UTIME_NOW and UTIME_OMIT', { skip: SKIP }, async () => {
  const f = join(mnt, 'times');
  assert.deepEqual(await py(TIMES, f, 'set'), [-6999999999, 1234567891123456789]);
  await remount();
  assert.deepEqual(await py(TIMES, f, 'get'), [-6999999999, 1234567891123456789]);
  // touch -a: atime := now (UTIME_NOW), mtime UTIME_OMIT (unchanged).
  const before = Date.now() - 2000;
  await run('touch', ['-a', f]);
  const [a, m] = (await py(TIMES, f, 'get')) as [number, number];
  assert.equal(m, 1234567891123456789, 'UTIME_OMIT left the mtime');
  assert.ok(a / 1e6 >= before, `UTIME_NOW set the atime to now (${a})`);
});

const XATTR300 = `
import os, sys, json
p = sys.argv[1]
v = bytes((i * 37 + 11) % 256 for i in range(300))
os.setxattr(p, 'user.bin', v)
print(json.dumps(os.getxattr(p, 'user.bin') == v))
`;

const MANY = `
import os, sys, json, errno
p = sys.argv[1]; n = int(sys.argv[2])
names = ['user.' + ('%04d' % i) * 61 + 'x' for i in range(n)]
for nm in names: os.setxattr(p, nm, b'v')
total = sum(len(nm) + 1 for nm in names)
try:
    got = os.listxattr(p)
    print(json.dumps({'ok': sorted(got) == sorted(names), 'total': total}))
except OSError as e:
    print(json.dumps({'errno': errno.errorcode[e.errno], 'total': total}))
`;

test('xattrs: a 300-byte binary value through Python; listxattr near 64 KiB with Python and getfattr -d; E2BIG past it', { skip: SKIP }, async () => {
  const f = join(mnt, 'xattrs');
  await fsp.writeFile(f, '');
  assert.equal(await py(XATTR300, f), true);
  const g = join(mnt, 'many');
  await fsp.writeFile(g, '');
  // 260 names of 250 bytes: 65260 bytes of list, just under 64 KiB.
  const r = (await py(MANY, g, '260')) as { ok: boolean; total: number };
  assert.equal(r.ok, true);
  assert.ok(r.total > 65000 && r.total <= 65536, `${r.total} bytes of names`);
  const dump = await run('getfattr', ['-d', g], { maxBuffer: 16 << 20 });
  assert.equal(dump.stdout.split('\n').filter((l) => l.startsWith('user.')).length, 260);
  // One more name pushes the list past XATTR_LIST_MAX: E2BIG, as ext4 and scoutfs answer.
  const h = join(mnt, 'toomany');
  await fsp.writeFile(h, '');
  assert.deepEqual(((await py(MANY, h, '262')) as { errno?: string }).errno, 'E2BIG');
});

const DATA = `
import os, sys, json, ctypes, errno
libc = ctypes.CDLL(None, use_errno=True)
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
d = sys.argv[1]; out = {}
fd = os.open(os.path.join(d, 'keep'), os.O_CREAT | os.O_RDWR)
out['keep'] = libc.fallocate(fd, 1, 0, 1 << 20)
st = os.fstat(fd); out['keep_size'] = st.st_size; out['keep_blocks'] = st.st_blocks
out['grow'] = libc.fallocate(fd, 0, 0, 8192); out['grow_size'] = os.fstat(fd).st_size
out['punch'] = libc.fallocate(fd, 3, 0, 4096); out['punch_errno'] = 'EOPNOTSUPP' if ctypes.get_errno() == errno.EOPNOTSUPP else ctypes.get_errno()
out['zeros'] = os.pread(fd, 8192, 0) == bytes(8192)
os.close(fd)
fd = os.open(os.path.join(d, 'sparse'), os.O_CREAT | os.O_RDWR)
os.pwrite(fd, b'a' * 4096, 1 << 20); os.pwrite(fd, b'b' * 4096, 3 << 20); os.fsync(fd)
out['seek'] = [os.lseek(fd, 0, os.SEEK_DATA), os.lseek(fd, 0, os.SEEK_HOLE), os.lseek(fd, (1 << 20) + 10, os.SEEK_HOLE),
               os.lseek(fd, (1 << 20) + 4096, os.SEEK_DATA)]
try:
    os.lseek(fd, (3 << 20) + 4096, os.SEEK_DATA); out['enxio'] = False
except OSError as e:
    out['enxio'] = e.errno == errno.ENXIO
os.close(fd)
fd = os.open(d, os.O_TMPFILE | os.O_RDWR, 0o600)
os.write(fd, b'nameless'); out['tmp'] = [os.fstat(fd).st_nlink, os.pread(fd, 8, 0).decode()]
os.close(fd)
open(os.path.join(d, 'a'), 'w').close(); open(os.path.join(d, 'b'), 'w').close()
AT = -100
out['noreplace'] = [libc.renameat2(AT, os.path.join(d, 'a').encode(), AT, os.path.join(d, 'b').encode(), 1), errno.errorcode.get(ctypes.get_errno())]
out['noreplace_ok'] = libc.renameat2(AT, os.path.join(d, 'a').encode(), AT, os.path.join(d, 'c').encode(), 1)
out['exchange'] = [libc.renameat2(AT, os.path.join(d, 'b').encode(), AT, os.path.join(d, 'c').encode(), 2), errno.errorcode.get(ctypes.get_errno())]
out['listing'] = sorted(os.listdir(d))
print(json.dumps(out))
`;

test('data: fallocate KEEP_SIZE and 0, SEEK_DATA/SEEK_HOLE, O_TMPFILE, RENAME_NOREPLACE', { skip: SKIP }, async () => {
  const d = join(mnt, 'data');
  await fsp.mkdir(d);
  const o = (await py(DATA, d)) as Record<string, unknown>;
  assert.equal(o.keep, 0);
  assert.equal(o.keep_size, 0, 'KEEP_SIZE keeps the size');
  assert.equal(o.keep_blocks, 2048, 'and allocates 1 MiB');
  assert.equal(o.grow, 0);
  assert.equal(o.grow_size, 8192);
  assert.deepEqual([o.punch, o.punch_errno], [-1, 'EOPNOTSUPP']);
  assert.equal(o.zeros, true);
  const M = 1 << 20;
  assert.deepEqual(o.seek, [M, 0, M + 4096, 3 * M]);
  assert.equal(o.enxio, true);
  assert.deepEqual(o.tmp, [0, 'nameless']);
  assert.deepEqual(o.noreplace, [-1, 'EEXIST']);
  assert.equal(o.noreplace_ok, 0);
  assert.deepEqual(o.exchange, [-1, 'EINVAL']);
  assert.deepEqual(o.listing, ['b', 'c', 'keep', 'sparse'], 'no name for the tmpfile');
});

const IOCTLS = `
import fcntl, os, sys, json, struct, errno
f, root, stat_more, statfs_more = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
fd = os.open(f, os.O_RDONLY)
sm = struct.unpack('<7QI4x', fcntl.ioctl(fd, stat_more, bytes(64)))
try:
    fcntl.ioctl(fd, 0x5401, bytes(64)); tty = 'answered'
except OSError as e:
    tty = errno.errorcode[e.errno]
os.close(fd)
fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
sf = struct.unpack('<7Q', fcntl.ioctl(fd, statfs_more, bytes(56)))
os.close(fd)
print(json.dumps({'stat': [str(x) for x in sm], 'statfs': [str(x) for x in sf], 'tty': tty}))
`;

test('ioctls: STAT_MORE and STATFS_MORE as restricted ioctls match scoutfs stat and statfs; others ENOTTY', { skip: SKIP }, async () => {
  const f = join(mnt, 'ioctl');
  await fsp.writeFile(f, 'x'.repeat(10000));
  const o = (await py(IOCTLS, f, mnt, String(IOC_STAT_MORE), String(IOC_STATFS_MORE))) as { stat: string[]; statfs: string[]; tty: string };
  assert.equal(o.tty, 'ENOTTY');
  const st = await scoutfs('stat', f);
  assert.equal(st.code, 0, st.err);
  const field = (text: string, name: string): string => text.split('\n').find((l) => l.startsWith(name + ' '))!.split(/\s+/)[1]!;
  const [valid, metaSeq, dataSeq, dataVersion, online, offline, crSec, crNsec] = o.stat;
  assert.equal(valid, '64');
  assert.deepEqual([metaSeq, dataSeq, dataVersion, online, offline], ['meta_seq', 'data_seq', 'data_version', 'online_blocks', 'offline_blocks'].map((n) => field(st.out, n)));
  assert.equal(`${crSec}.${crNsec!.padStart(9, '0')}`, field(st.out, 'crtime'));
  const sf = await scoutfs('statfs', mnt);
  assert.equal(sf.code, 0, sf.err);
  const [svalid, fsid, rid, , totalMeta, totalData] = o.statfs;
  assert.equal(svalid, '56');
  assert.equal(BigInt(fsid!).toString(16).padStart(16, '0'), field(sf.out, 'fsid'));
  assert.equal(BigInt(rid!).toString(16).padStart(16, '0'), field(sf.out, 'rid'));
  assert.equal(totalMeta, field(sf.out, 'total_meta_blocks'));
  assert.equal(totalData, field(sf.out, 'total_data_blocks'));
});

test('caches: changes behind the kernel\'s back appear exactly when invalidated (hour-long timeouts)', { skip: SKIP }, async () => {
  const d = join(mnt, 'inval');
  await fsp.mkdir(d);
  const f = join(d, 'f');
  await fsp.writeFile(f, 'hello world');
  await fsp.writeFile(join(d, 'gone'), '');
  await fsp.chmod(f, 0o644);
  const hook = (req: Record<string, unknown>): Promise<Record<string, unknown>> => controlRequest(mnt, { op: 'test-hook', ...req });
  const newName = Buffer.from('new').toString('hex');
  // Prime the caches: pages, a listing, a name, a missing name, and the
  // attributes last (a read invalidates the cached atime, so the stat
  // after it fetches and caches them all).
  assert.equal(await fsp.readFile(f, 'utf8'), 'hello world');
  assert.deepEqual((await fsp.readdir(d)).sort(), ['f', 'gone']);
  await assert.rejects(fsp.stat(join(d, 'new')), { code: 'ENOENT' });
  await fsp.stat(join(d, 'gone'));
  assert.equal((await fsp.stat(f)).mode & 0o777, 0o644);

  // Without invalidation the kernel keeps answering from its caches.
  await hook({ action: 'chmod', path: 'inval/f', mode: 0o600, invalidate: false });
  await hook({ action: 'write', path: 'inval/f', data: Buffer.from('HELLO').toString('hex'), invalidate: false });
  await hook({ action: 'create', path: 'inval', name: newName, invalidate: false });
  assert.equal((await fsp.stat(f)).mode & 0o777, 0o644, 'attributes stay cached');
  assert.equal(await fsp.readFile(f, 'utf8'), 'hello world', 'pages stay cached');
  await assert.rejects(fsp.stat(join(d, 'new')), { code: 'ENOENT' }, 'the negative name stays cached');

  // Invalidated: seen at once.
  await hook({ action: 'chmod', path: 'inval/f', mode: 0o640, invalidate: true });
  assert.equal((await fsp.stat(f)).mode & 0o777, 0o640, 'stat sees the new mode');
  await hook({ action: 'write', path: 'inval/f', data: Buffer.from('HOWDY').toString('hex'), invalidate: true });
  assert.equal(await fsp.readFile(f, 'utf8'), 'HOWDY world', 'read sees the new bytes');
  await hook({ action: 'create', path: 'inval', name: Buffer.from('newer').toString('hex'), invalidate: true });
  await fsp.stat(join(d, 'newer'));
  await hook({ action: 'unlink', path: 'inval', name: Buffer.from('gone').toString('hex'), invalidate: true });
  await assert.rejects(fsp.stat(join(d, 'gone')), { code: 'ENOENT' }, 'lookup sees the removed name');
  assert.deepEqual((await fsp.readdir(d)).sort(), ['f', 'new', 'newer'], 'readdir sees both changes');
  const st = (await controlRequest(mnt, { op: 'status' })) as { fuse: { notify: { sent: number } } };
  assert.ok(st.fuse.notify.sent >= 5, `notifications sent: ${JSON.stringify(st.fuse.notify)}`);
});

test('the daemon is alive at the end, stops cleanly and fsck is clean', { skip: SKIP }, async () => {
  const st = (await controlRequest(mnt, { op: 'status' })) as { fuse: { errors: Record<string, number>; session: { malformed: number } } };
  assert.equal(st.fuse.session.malformed, 0);
  assert.deepEqual(Object.keys(st.fuse.errors).filter((k) => k.startsWith('EIO')), []);
  assert.equal(proc!.exitInfo, null, 'the daemon still runs');
  await stopMount(proc!, mnt);
  proc = null;
  await vol.assertFsckClean();
});
