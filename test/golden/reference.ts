/*
 * The devices the real scoutfs mkfs made (../shared/golden/reference-mkfs,
 * or $SCOUTFS_REFERENCE_MKFS), and what the tests need to hold our mkfs to
 * them.
 *
 * Each case is a folder with images.tar.xz (sparse meta.img and data.img;
 * GNU tar restores the holes) and mkfs.out (what the reference printed).
 * The commands come from the folder's README.md table, parsed here, so the
 * tests run exactly the command that made the images.
 *
 * What differs from run to run of the reference mkfs is taken from the
 * images, never guessed: the fsid and uuid from the super block, the time
 * from the root inode (referenceInputs).  One more thing varies that the
 * reference README does not list: the reference leaves the 24 unused bytes
 * after each configured quorum slot's IPv4 address (inet_addr bytes 8..31)
 * holding uninitialized stack memory (pointers, different each run); our
 * mkfs writes zeros there.  adoptSlotPadding copies exactly those bytes of
 * the reference into our two super blocks (after checking ours are zero)
 * and recomputes the crc, so everything else, crc included, must match.
 *
 * compareImage checks a whole device without reading gigabytes of holes:
 * the reference file's data segments (SEEK_DATA/SEEK_HOLE, through python3
 * because Node has no lseek) and our mkfs's writes together cover every
 * byte that is not zero in either image; each such range is compared, and
 * the first differing byte is named with the structure and field it lies in.
 * Everything outside those ranges is a hole (zero) in both.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readFileSync, readSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Layout } from '../../src/format/layout.js';
import { getU16 } from '../../src/format/layout.js';
import { sealBlock } from '../../src/format/block.js';
import { SUPER_BLOCK, decodeSuper } from '../../src/format/super.js';
import { INET_ADDR } from '../../src/format/common.js';
import { QUORUM_BLOCK } from '../../src/format/quorum.js';
import { ALLOC_LIST_BLOCK } from '../../src/format/alloc.js';
import { BTREE_BLOCK, BTREE_ITEM, BTREE_ITEMS_OFF, BTREE_ITEM_SIZE, LEAF_HASH_OFF, readItem, walkItems } from '../../src/format/btree.js';
import { INODE, decodeInode, inodeKey } from '../../src/format/items.js';
import { compareKeys, formatKey } from '../../src/format/key.js';
import { LG_BLOCK_SIZE, QUORUM_MAX_SLOTS, ROOT_INO, SM_BLOCK_SIZE, SUPER_BLKNO } from '../../src/format/constants.js';
import { parseSize } from '../../src/mkfs/size.js';
import type { MkfsInputs, MkfsPlan } from '../../src/mkfs/mkfs.js';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const REFERENCE_DIR = process.env.SCOUTFS_REFERENCE_MKFS ?? join(ROOT, '..', 'shared', 'golden', 'reference-mkfs');

export interface ReferenceCase {
  /** Folder name: a, b. */
  name: string;
  /** The shell command of the README table. */
  command: string;
  metaBytes: bigint;
  dataBytes: bigint;
  /** The mkfs arguments before the two device paths. */
  mkfsArgs: string[];
  /** What the reference printed (stdout and stderr, in order). */
  out: string;
}

/** The cases of the reference README's table, in order. */
export function referenceCases(): ReferenceCase[] {
  const readme = join(REFERENCE_DIR, 'README.md');
  const text = readFileSync(readme, 'utf8');
  const out: ReferenceCase[] = [];
  for (const m of text.matchAll(/^\| *(\w+) *\| *`([^`]+)` *\|$/gm)) {
    const [, name, command] = m as unknown as [string, string, string];
    const parts = command.split(/ *; */);
    const why = `${readme}: case ${name}: expected "truncate -s M meta.img; truncate -s D data.img; scoutfs mkfs ARGS meta.img data.img", got "${command}"`;
    assert.equal(parts.length, 3, why);
    const tm = /^truncate -s (\S+) meta\.img$/.exec(parts[0]!);
    const td = /^truncate -s (\S+) data\.img$/.exec(parts[1]!);
    const mk = /^scoutfs mkfs (.+) meta\.img data\.img$/.exec(parts[2]!);
    assert.ok(tm && td && mk, why);
    const metaBytes = parseSize(tm[1]!);
    const dataBytes = parseSize(td[1]!);
    assert.ok(metaBytes && dataBytes, why);
    out.push({
      name, command, metaBytes, dataBytes,
      mkfsArgs: mk[1]!.split(/ +/),
      out: readFileSync(join(REFERENCE_DIR, name, 'mkfs.out'), 'utf8'),
    });
  }
  assert.ok(out.length >= 2, `${readme} lists ${out.length} reference cases`);
  return out;
}

export interface Extracted {
  dir: string;
  meta: string;
  data: string;
}

/** Extract a case's images into dir (created); the caller removes dir. */
export function extractReference(c: ReferenceCase, dir: string): Extracted {
  mkdirSync(dir, { recursive: true });
  execFileSync('tar', ['-xJf', join(REFERENCE_DIR, c.name, 'images.tar.xz'), '-C', dir], { stdio: ['ignore', 'ignore', 'pipe'] });
  const x = { dir, meta: join(dir, 'meta.img'), data: join(dir, 'data.img') };
  assert.equal(BigInt(statSync(x.meta).size), c.metaBytes, `${c.name}/meta.img size`);
  assert.equal(BigInt(statSync(x.data).size), c.dataBytes, `${c.name}/data.img size`);
  return x;
}

const SEGMENTS_PY = `
import errno, json, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
end = os.fstat(fd).st_size
off, segs = 0, []
while off < end:
    try:
        s = os.lseek(fd, off, os.SEEK_DATA)
    except OSError as e:
        if e.errno == errno.ENXIO:
            break
        raise
    h = os.lseek(fd, s, os.SEEK_HOLE)
    segs.append([s, h])
    off = h
print(json.dumps(segs))
`;

/** [start, end) byte ranges of a file that are not holes. */
export function dataSegments(path: string): [bigint, bigint][] {
  const out = execFileSync('python3', ['-c', SEGMENTS_PY, path], { encoding: 'utf8' });
  return (JSON.parse(out) as [number, number][]).map(([s, e]) => [BigInt(s), BigInt(e)]);
}

export function readAt(path: string, off: bigint, len: number): Uint8Array {
  const fd = openSync(path, 'r');
  try {
    const b = new Uint8Array(len);
    const n = readSync(fd, b, 0, len, off);
    assert.equal(n, len, `short read of ${path} at ${off}`);
    return b;
  } finally {
    closeSync(fd);
  }
}

const SUPER_OFF = SUPER_BLKNO * BigInt(SM_BLOCK_SIZE);

/** The fsid and uuid of the reference super, the time of its root inode. */
export function referenceInputs(metaPath: string): MkfsInputs {
  const sb = decodeSuper(readAt(metaPath, SUPER_OFF, SM_BLOCK_SIZE));
  const leaf = readAt(metaPath, sb.fs_root.ref.blkno * BigInt(LG_BLOCK_SIZE), LG_BLOCK_SIZE);
  const walk = walkItems(leaf);
  assert.ok(walk.ok, `reference fs_root leaf: ${walk.ok ? '' : walk.problem}`);
  const item = walk.offs.map((o) => readItem(leaf, o)).find((it) => compareKeys(it.key, inodeKey(ROOT_INO)) === 0);
  assert.ok(item, 'reference fs_root leaf has no root inode item');
  const ino = decodeInode(leaf.subarray(item.val_off, item.val_off + item.val_len));
  // Our planner takes one time for all three, as FORMAT.md 13 says mkfs stamps them.
  assert.deepEqual([ino.ctime, ino.mtime], [ino.atime, ino.atime], 'reference root inode atime, ctime and mtime differ');
  return { fsid: sb.hdr.fsid, uuid: sb.uuid, now: ino.atime };
}

/** The byte range of each configured quorum slot's unused inet_addr bytes. */
export function slotPaddingRanges(superBlock: Uint8Array): [number, number][] {
  const sb = decodeSuper(superBlock);
  const out: [number, number][] = [];
  const unused = INET_ADDR.info('unused');
  for (let i = 0; i < QUORUM_MAX_SLOTS; i++) {
    if (sb.qconf.slots[i]!.family === 0) continue;
    const start = SUPER_BLOCK.o(`qconf.slots[${i}]`) + unused.off;
    out.push([start, start + unused.size]);
  }
  return out;
}

/**
 * Copy the reference's slot padding into our two supers and reseal them
 * (see the essay).  Asserts our padding was zero.  Returns the byte count.
 */
export function adoptSlotPadding(plan: MkfsPlan, x: Extracted): number {
  let n = 0;
  for (const w of plan.writes.filter((w) => w.what.endsWith('device super'))) {
    const ref = readAt(w.dev === 'meta' ? x.meta : x.data, w.off, w.bytes.length);
    for (const [s, e] of slotPaddingRanges(w.bytes)) {
      assert.ok(w.bytes.subarray(s, e).every((b) => b === 0), `our ${w.what} has non-zero slot padding at ${s}`);
      w.bytes.set(ref.subarray(s, e), s);
      n += e - s;
    }
    sealBlock(w.bytes);
  }
  return n;
}

export interface Difference {
  dev: 'meta' | 'data';
  off: bigint;
  reference: number;
  ours: number;
  where: string;
}

export function formatDifference(d: Difference): string {
  return `${d.dev} device byte ${d.off} (SM block ${d.off / BigInt(SM_BLOCK_SIZE)}, LG block ${d.off / BigInt(LG_BLOCK_SIZE)}): ` +
    `reference 0x${d.reference.toString(16).padStart(2, '0')}, ours 0x${d.ours.toString(16).padStart(2, '0')}, in ${d.where}`;
}

/**
 * The first byte where the image file differs from the device our plan
 * describes (the plan's writes on zeros), or null when every block and
 * every hole match.
 */
export function compareImage(plan: MkfsPlan, dev: 'meta' | 'data', path: string): Difference | null {
  const writes = plan.writes.filter((w) => w.dev === dev).sort((a, b) => (a.off < b.off ? -1 : 1));
  for (let i = 1; i < writes.length; i++) {
    const p = writes[i - 1]!;
    assert.ok(p.off + BigInt(p.bytes.length) <= writes[i]!.off, `our ${p.what} and ${writes[i]!.what} overlap`);
  }
  const ranges: [bigint, bigint][] = [
    ...dataSegments(path),
    ...writes.map((w): [bigint, bigint] => [w.off, w.off + BigInt(w.bytes.length)]),
  ].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  const CHUNK = 1n << 20n;
  for (const [start, end] of ranges) {
    for (let s = start; s < end; s += CHUNK) {
      const e = s + CHUNK < end ? s + CHUNK : end;
      const ref = readAt(path, s, Number(e - s));
      const ours = new Uint8Array(ref.length);
      for (const w of writes) {
        const ws = w.off;
        const we = w.off + BigInt(w.bytes.length);
        if (we <= s || ws >= e) continue;
        const from = ws > s ? ws : s;
        const to = we < e ? we : e;
        ours.set(w.bytes.subarray(Number(from - ws), Number(to - ws)), Number(from - s));
      }
      const i = ref.findIndex((b, k) => b !== ours[k]);
      if (i >= 0) {
        // Ranges are sorted by start and a difference in an earlier range
        // returned already, so this is the first differing byte.
        const off = s + BigInt(i);
        return { dev, off, reference: ref[i]!, ours: ours[i]!, where: describe(writes, off) + crcCause(writes, path, off) };
      }
    }
  }
  return null;
}

/**
 * A block crc differs because something it covers does: name the first
 * covered byte that differs too, or say that only the crc does.
 */
function crcCause(writes: MkfsPlan['writes'], path: string, off: bigint): string {
  const w = writes.find((x) => off >= x.off && off < x.off + 4n);
  if (!w) return '';
  const ref = readAt(path, w.off, w.bytes.length);
  for (let i = 4; i < ref.length; i++) {
    if (ref[i] !== w.bytes[i]) {
      return `; the crc covers byte ${w.off + BigInt(i)}: reference 0x${ref[i]!.toString(16).padStart(2, '0')}, ` +
        `ours 0x${w.bytes[i]!.toString(16).padStart(2, '0')}, in ${describe(writes, w.off + BigInt(i))}`;
    }
  }
  return '; every byte the crc covers matches, only the crc differs';
}

/** The most specific field of a layout holding byte rel, with array indexes. */
export function fieldAt(l: Layout, rel: number): string {
  let best: { name: string; size: number; off: number; elem: number; count: number } | null = null;
  for (const [name, f] of l.fields) {
    if (rel < f.off || rel >= f.off + f.size) continue;
    if (!best || f.size < best.size || (f.size === best.size && name.length > best.name.length)) best = { name, ...f };
  }
  if (!best) return `beyond the ${l.name} fields`;
  if (best.count > 1) return `${best.name}[${Math.floor((rel - best.off) / best.elem)}]`;
  return best.name;
}

function describeLeaf(b: Uint8Array, rel: number): string {
  if (rel < BTREE_ITEMS_OFF) return `btree_block.${fieldAt(BTREE_BLOCK, rel)}`;
  if (rel >= LEAF_HASH_OFF) return `leaf hash bucket ${(rel - LEAF_HASH_OFF) >> 1}`;
  const nr = getU16(b, 34);
  const k = Math.floor((rel - BTREE_ITEMS_OFF) / BTREE_ITEM_SIZE);
  if (k < nr) {
    const it = readItem(b, BTREE_ITEMS_OFF + k * BTREE_ITEM_SIZE);
    return `item ${k} (key ${formatKey(it.key)}) btree_item.${fieldAt(BTREE_ITEM, rel - it.off)}`;
  }
  for (let j = 0; j < nr; j++) {
    const it = readItem(b, BTREE_ITEMS_OFF + j * BTREE_ITEM_SIZE);
    if (rel >= it.val_off && rel < it.val_off + it.val_len) {
      const inode = it.val_len === INODE.size ? ` inode.${fieldAt(INODE, rel - it.val_off)}` : '';
      return `value of item ${j} (key ${formatKey(it.key)}) +${rel - it.val_off}${inode}`;
    }
  }
  return 'free space between the items and their values';
}

function describe(writes: MkfsPlan['writes'], off: bigint): string {
  const w = writes.find((x) => off >= x.off && off < x.off + BigInt(x.bytes.length));
  if (!w) {
    const next = writes.find((x) => x.off > off);
    return `a hole of our mkfs (it writes nothing there${next ? `; next block of ours: ${next.what} at byte ${next.off}` : ''})`;
  }
  const rel = Number(off - w.off);
  let field: string;
  if (w.what.endsWith('super')) field = rel < SUPER_BLOCK.size ? `super_block.${fieldAt(SUPER_BLOCK, rel)}` : 'the zero tail after the super_block struct';
  else if (w.what.endsWith('leaf')) field = describeLeaf(w.bytes, rel);
  else if (w.what.endsWith('alloc list')) field = `alloc_list_block.${fieldAt(ALLOC_LIST_BLOCK, rel)}`;
  else if (w.what.startsWith('quorum block')) field = rel < QUORUM_BLOCK.size ? `quorum_block.${fieldAt(QUORUM_BLOCK, rel)}` : 'the zero tail after the quorum_block struct';
  else field = 'an unnamed structure';
  return `our ${w.what} (byte ${rel} of it: ${field})`;
}

export interface Summary {
  fsid: string;
  uuid: string;
  metaBlocks: bigint;
  dataBlocks: bigint;
  /** "NR: ADDR:PORT" per quorum slot. */
  slots: string[];
}

/** The values of a `Created scoutfs filesystem:` summary. */
export function parseSummary(text: string): Summary {
  const one = (re: RegExp, what: string): string => {
    const m = re.exec(text);
    assert.ok(m, `no ${what} line in:\n${text}`);
    return m[1]!;
  };
  const slotsAt = text.indexOf('quorum slots:');
  assert.ok(slotsAt >= 0, `no quorum slots in:\n${text}`);
  return {
    fsid: one(/^ {2}fsid: +([0-9a-f]+)$/m, 'fsid'),
    uuid: one(/^ {2}uuid: +([0-9a-f-]{36})$/m, 'uuid'),
    metaBlocks: BigInt(one(/^ {2}64KB metadata blocks: +(\d+) /m, 'metadata blocks')),
    dataBlocks: BigInt(one(/^ {2}4KB data blocks: +(\d+) /m, 'data blocks')),
    slots: [...text.slice(slotsAt).matchAll(/(\d+: [\d.]+:\d+)$/gm)].map((m) => m[1]!),
  };
}

export interface Refusal {
  /** The -z value refused. */
  zone: string;
  message: string;
  status: number;
}

/** The -z refusal the reference README describes. */
export function referenceRefusal(): Refusal {
  const text = readFileSync(join(REFERENCE_DIR, 'README.md'), 'utf8').replace(/\s*\n\s*/g, ' ');
  const m = /refuses `-z (\d+)` on these sizes with "([^"]+)" and exit status (\d+)/.exec(text);
  assert.ok(m, `${REFERENCE_DIR}/README.md no longer describes the -z refusal`);
  return { zone: m[1]!, message: m[2]!, status: Number(m[3]) };
}
