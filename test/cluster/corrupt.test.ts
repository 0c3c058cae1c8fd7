/*
 * Goal: a corrupted metadata block is an error the mount reports and
 * survives, never a crash (issue #6, failure handling; STYLE.md s4: bad
 * bytes from disk are a CorruptionError, EIO to the user, one log line).
 *
 * A volume gets a directory of 800 files (so the mount's log tree has many
 * leaves), is unmounted, and `scoutfs print META` locates blocks by what
 * they hold.  With the filesystem unmounted, bytes in the middle of a
 * block are overwritten through the loop device (so the crc fails), then:
 *
 *   - a leaf holding the inode item of one file: the volume mounts; stat
 *     and read of that file fail with EIO, and each failed request adds
 *     exactly one daemon log line naming the device, the blkno and the crc
 *     check; stat and read of files in other leaves, readdir, and create,
 *     write, fsync and read of new files keep working; the daemon stays up
 *     and SIGTERM still unmounts it with exit 0; fsck names the block;
 *     with the bytes restored fsck is clean and the file reads back.
 *   - blocks read while mounting (the super block, the logs_root root, the
 *     fs_root root): the mount exits 1 without mounting, and its log says
 *     "scoutfs mount: corruption: DEV blkno N: crc check failed"; with the
 *     bytes restored it mounts again.
 *
 * Needs root, /dev/fuse, fusermount and losetup; skipped otherwise.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { open } from 'node:fs/promises';
import * as fsp from 'node:fs/promises';
import { CleanupRegistry } from '../../harness/cleanup.js';
import { clusterSkip, errCode, finish, GIB, logLines, pattern, scoutfs, stopMount, tempBase, Volume } from './util.js';

const SKIP = await clusterSkip();
const reg = new CleanupRegistry('cluster-corrupt', 60_000);
const FILES = 800;
let base = '';
let v: Volume;
const inos = new Map<string, bigint>();

const fileName = (i: number): string => `file-with-a-rather-long-name-to-fill-leaves-${i}`;
const content = (i: number): Buffer => pattern(`c${i}`, 100 + (i % 7) * 1000);

before(async () => {
  if (SKIP) return;
  base = await tempBase(reg, 'corrupt');
  v = await Volume.create(reg, base, 'vol', { metaBytes: GIB, dataBytes: GIB, port: 42230 });
  const proc = await v.mount();
  await fsp.mkdir(v.path('a'));
  await fsp.mkdir(v.path('b'));
  for (let i = 0; i < FILES; i += 16) {
    await Promise.all(Array.from({ length: Math.min(16, FILES - i) }, (_, k) => fsp.writeFile(v.path('a', fileName(i + k)), content(i + k))));
  }
  for (let i = 0; i < 5; i++) await fsp.writeFile(v.path('b', `f${i}`), content(i));
  for (const p of ['', 'a', 'b', ...Array.from({ length: FILES }, (_, i) => `a/${fileName(i)}`), 'b/f0']) {
    inos.set(p, BigInt((await fsp.stat(v.path(p), { bigint: true })).ino));
  }
  await stopMount(proc, v.mnt);
  await v.assertFsckClean();
});

after(async () => {
  await finish(reg, base);
});

interface Printed {
  text: string;
  /** Leaf blkno -> inos with fs items in it. */
  leafInos: Map<bigint, Set<bigint>>;
  /** ino -> the leaf holding its inode item. */
  inodeLeaf: Map<bigint, bigint>;
  logsRoot: bigint;
  fsRoot: bigint;
}

async function printVolume(): Promise<Printed> {
  const r = await scoutfs('print', v.meta);
  assert.equal(r.code, 0, r.err);
  const p: Printed = { text: r.out, leafInos: new Map(), inodeLeaf: new Map(), logsRoot: 0n, fsRoot: 0n };
  let cur: bigint | null = null;
  for (const line of r.out.split('\n')) {
    let m = /^ {2}logs_root: blkno (\d+) /.exec(line);
    if (m) p.logsRoot = BigInt(m[1]!);
    m = /^ {2}fs_root: blkno (\d+) /.exec(line);
    if (m) p.fsRoot = BigInt(m[1]!);
    m = /^\s+btree blkno (\d+) .* level (\d+) /.exec(line);
    if (m) {
      cur = m[2] === '0' ? BigInt(m[1]!) : null;
      continue;
    }
    m = /^\s+item 4\.(\d+)\.(\d+)\./.exec(line);
    if (m && cur !== null) {
      const ino = BigInt(m[1]!);
      if (!p.leafInos.has(cur)) p.leafInos.set(cur, new Set());
      p.leafInos.get(cur)!.add(ino);
      if (m[2] === '1') p.inodeLeaf.set(ino, cur);
    }
  }
  assert.ok(p.logsRoot > 0n && p.fsRoot > 0n, 'print shows the roots');
  return p;
}

/** Overwrite 64 bytes inside a block through the loop device; returns an undo. */
async function corrupt(blkno: bigint, blockBytes: number, at: number): Promise<() => Promise<void>> {
  const off = Number(blkno) * blockBytes + at;
  const fh = await open(v.meta, 'r+');
  try {
    const old = Buffer.alloc(64);
    await fh.read(old, 0, 64, off);
    const bad = Buffer.alloc(64, 0xa5);
    for (let i = 0; i < 64; i++) bad[i] = old[i]! ^ 0x5a;
    await fh.write(bad, 0, 64, off);
    await fh.sync();
    return async () => {
      const f = await open(v.meta, 'r+');
      try {
        await f.write(old, 0, 64, off);
        await f.sync();
      } finally {
        await f.close();
      }
    };
  } finally {
    await fh.close();
  }
}

test('a corrupt leaf: EIO and one log line per bad read, everything else keeps working', { skip: SKIP, timeout: 180_000 }, async () => {
  const pr = await printVolume();
  // Needed elsewhere: the root, both directories and b/f0.  Pick a file in
  // the middle of a/ whose inode leaf holds none of their items, and a
  // second file in another leaf that must keep working.
  const keep = new Set([1n, inos.get('a')!, inos.get('b')!, inos.get('b/f0')!]);
  let target = -1;
  let leaf = 0n;
  for (let i = FILES >> 1; i < FILES && target < 0; i++) {
    const l = pr.inodeLeaf.get(inos.get(`a/${fileName(i)}`)!);
    if (l !== undefined && ![...pr.leafInos.get(l)!].some((ino) => keep.has(ino))) {
      target = i;
      leaf = l;
    }
  }
  assert.ok(target >= 0, 'a leaf holding only file items of a/');
  const other = [...Array(FILES).keys()].find((i) => pr.inodeLeaf.get(inos.get(`a/${fileName(i)}`)!) !== leaf)!;
  const bad = v.path('a', fileName(target));
  const undo = await corrupt(leaf, 65536, 30_000);

  const fsck = await v.fsck();
  assert.equal(fsck.code, 1, 'fsck finds the corrupt leaf');
  assert.match(fsck.out + fsck.err, new RegExp(`blkno ${leaf}\\b`));

  const proc = await v.mount();
  // The mount's log merge reads every finalized log tree first: it meets
  // the corrupt leaf, says so once and leaves the trees alone.
  const mounted = logLines(await proc.log(), new RegExp(`blkno ${leaf}\\b`));
  assert.equal(mounted.length, 1, mounted.join('\n'));
  assert.match(mounted[0]!, /^log merge skipped, the finalized log trees stay in logs_root: .*crc/);
  const lines = async (): Promise<string[]> => logLines(await proc.log(), new RegExp(`^fuse: .*blkno ${leaf}\\b`));
  assert.equal(await errCode(fsp.stat(bad)), 'EIO');
  let got = await lines();
  assert.equal(got.length, 1, `one line for one failed stat:\n${got.join('\n')}`);
  assert.match(got[0]!, new RegExp(`corruption: ${v.meta} blkno ${leaf}: crc check failed`));
  assert.equal(await errCode(fsp.stat(bad)), 'EIO');
  assert.equal((await lines()).length, 2, 'a second bad read, a second line');
  assert.equal(await errCode(fsp.readFile(bad)), 'EIO');
  got = await lines();
  assert.equal(got.length, 3, `the failed open logged once:\n${got.join('\n')}`);
  const line = new RegExp(`^fuse: \\w+: corruption: ${v.meta} blkno ${leaf}: crc check failed: .* \\(EIO\\)$`);
  assert.deepEqual(got.filter((l) => !line.test(l)), [], 'every line names the device, the blkno and the failed check');
  assert.deepEqual(logLines(await proc.log(), /^\s+at /), [], 'no stack traces');

  // Everything that does not need the leaf works.
  assert.ok((await fsp.readFile(v.path('a', fileName(other)))).equals(content(other)));
  assert.ok((await fsp.readFile(v.path('b', 'f0'))).equals(content(0)));
  const names = await fsp.readdir(v.path('a'));
  assert.equal(names.length, FILES);
  assert.ok(names.includes(fileName(target)));
  assert.deepEqual((await fsp.readdir(v.mnt)).sort(), ['a', 'b']);
  await fsp.writeFile(v.path('b', 'new'), pattern('new', 300_000));
  const fh = await open(v.path('b', 'new'), 'r');
  await fh.sync();
  await fh.close();
  assert.ok((await fsp.readFile(v.path('b', 'new'))).equals(pattern('new', 300_000)));
  await fsp.rename(v.path('b', 'new'), v.path('b', 'renamed'));
  assert.equal(await errCode(fsp.stat(bad)), 'EIO', 'still EIO: nothing cached a bad copy or hid it');
  assert.equal(proc.running, true);
  await stopMount(proc, v.mnt);

  // The bytes back: clean, and the file reads again.
  await undo();
  await v.assertFsckClean();
  const again = await v.mount();
  assert.ok((await fsp.readFile(bad)).equals(content(target)));
  assert.ok((await fsp.readFile(v.path('b', 'renamed'))).equals(pattern('new', 300_000)));
  await stopMount(again, v.mnt);
});

test('a corrupt block read at mount time: the mount exits 1 naming the block', { skip: SKIP, timeout: 180_000 }, async () => {
  const pr = await printVolume();
  const cases: { what: string; blkno: bigint; blockBytes: number; at: number }[] = [
    { what: 'super block', blkno: 16n, blockBytes: 4096, at: 1000 },
    { what: 'logs_root root', blkno: pr.logsRoot, blockBytes: 65536, at: 40_000 },
    { what: 'fs_root root', blkno: pr.fsRoot, blockBytes: 65536, at: 40_000 },
  ];
  for (const c of cases) {
    const undo = await corrupt(c.blkno, c.blockBytes, c.at);
    const r = await v.mountRefused();
    assert.equal(r.code, 1, `${c.what}: exit ${r.code}\n${r.log}`);
    const said = logLines(r.log, /^scoutfs mount: /);
    assert.equal(said.length, 1, `${c.what}: one line says why:\n${r.log}`);
    assert.match(said[0]!, new RegExp(`^scoutfs mount: corruption: ${v.meta} blkno ${c.blkno}: crc check failed`), c.what);
    assert.deepEqual(logLines(r.log, /^\s+at |uncaught|unhandled/), [], `${c.what}: no crash`);
    await undo();
  }
  const proc = await v.mount();
  assert.equal((await fsp.readdir(v.path('a'))).length, FILES);
  await stopMount(proc, v.mnt);
  await v.assertFsckClean();
});
