/*
 * Goal: the `scoutfs` CLI (bin/scoutfs as a child process) behaves as the
 * real scoutfs mkfs did when it made the reference devices
 * (../shared/golden/reference-mkfs, test/golden/reference.ts):
 *   - run with each reference command on fresh sparse images of the same
 *     sizes, in a directory where the devices are `meta.img` and
 *     `data.img`, mkfs prints (stdout and stderr into one file, as
 *     `> mkfs.out 2>&1` would) exactly the reference mkfs.out apart from
 *     the random fsid and uuid, which must be the ones it wrote; and the
 *     images hold exactly the planner's blocks and holes for the fsid, uuid
 *     and time it chose (reference.test.ts pins the planner to the
 *     reference images, so this closes the chain from CLI to reference);
 *   - `-z 4096` on those sizes is refused with the reference's message
 *     alone on stderr, nothing on stdout, exit status 1, nothing written
 *     (both images still entirely holes);
 *   - `print` and `fsck` read the reference images themselves cleanly:
 *     exit 0, nothing on stderr, the values of the reference's mkfs.out
 *     decoded, and every metadata block accounted for.
 * Every temp dir is removed by after(), also when a test fails.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { planMkfs } from '../../src/mkfs/mkfs.js';
import { parseMkfsArgs } from '../../bin/mkfs.js';
import { CLI, TempDir, scoutfs, scoutfsIn } from './util.js';
import {
  compareImage, dataSegments, extractReference, formatDifference, parseSummary, referenceCases, referenceInputs,
  referenceRefusal, type Extracted, type ReferenceCase,
} from '../golden/reference.js';

const cases = referenceCases();
let tmp: TempDir;
const extracted = new Map<string, Extracted>();

before(() => {
  tmp = new TempDir();
  for (const c of cases) extracted.set(c.name, extractReference(c, join(tmp.path, `reference-${c.name}`)));
});
after(() => tmp.cleanup());

/** Fresh sparse images of a case's sizes in their own directory. */
function freshImages(c: ReferenceCase, label: string): { dir: string; meta: string; data: string } {
  const dir = join(tmp.path, `${label}-${c.name}`);
  mkdirSync(dir);
  return { dir, meta: tmp.image(`${label}-${c.name}/meta.img`, c.metaBytes), data: tmp.image(`${label}-${c.name}/data.img`, c.dataBytes) };
}

/** Run bin/scoutfs with stdout and stderr into one file, as `> out 2>&1`. */
function runCombined(cwd: string, outPath: string, args: string[]): Promise<{ code: number | null; out: string }> {
  const fd = openSync(outPath, 'w');
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { cwd, stdio: ['ignore', fd, fd] });
    child.on('error', reject);
    child.on('exit', (code) => {
      closeSync(fd);
      resolve({ code, out: readFileSync(outPath, 'utf8') });
    });
  });
}

for (const c of cases) {
  test(`reference ${c.name}: scoutfs mkfs prints the reference mkfs.out apart from fsid and uuid, and writes the planner's blocks and holes (${c.command})`, async () => {
    const img = freshImages(c, 'cli');
    const r = await runCombined(img.dir, join(tmp.path, `cli-${c.name}.out`), ['mkfs', ...c.mkfsArgs, 'meta.img', 'data.img']);
    assert.equal(r.code, 0, r.out);
    const ours = parseSummary(r.out);
    const ref = parseSummary(c.out);
    const inputs = referenceInputs(img.meta);
    assert.equal(ours.fsid, inputs.fsid.toString(16), 'the printed fsid is the one written');
    assert.equal(ours.uuid.replace(/-/g, ''), Buffer.from(inputs.uuid).toString('hex'), 'the printed uuid is the one written');
    assert.match(ours.uuid, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/, 'a v4 uuid');
    const expected = c.out
      .replace(new RegExp(`(fsid: +)${ref.fsid}$`, 'm'), `$1${ours.fsid}`)
      .replace(new RegExp(`(uuid: +)${ref.uuid}$`, 'm'), `$1${ours.uuid}`);
    assert.equal(r.out, expected);

    const opts = parseMkfsArgs([...c.mkfsArgs, 'meta.img', 'data.img']);
    assert.ok(opts);
    const plan = planMkfs(opts, c.metaBytes, c.dataBytes, inputs);
    for (const dev of ['meta', 'data'] as const) {
      const d = compareImage(plan, dev, dev === 'meta' ? img.meta : img.data);
      assert.equal(d && formatDifference(d), null);
    }
    rmSync(img.dir, { recursive: true, force: true });
  });
}

test('-z 4096 is refused as the reference mkfs refuses it: its message, exit 1, nothing written', async () => {
  const want = referenceRefusal();
  for (const c of cases) {
    const args = [...c.mkfsArgs];
    const z = args.indexOf('-z');
    if (z >= 0) args[z + 1] = want.zone;
    else args.unshift('-z', want.zone);
    const img = freshImages(c, 'zone');
    const r = await scoutfsIn({ cwd: img.dir }, 'mkfs', ...args, 'meta.img', 'data.img');
    assert.deepEqual(r, { code: want.status, out: '', err: `${want.message}\n` }, `case ${c.name}: mkfs ${args.join(' ')}`);
    for (const p of [img.meta, img.data]) {
      assert.deepEqual(dataSegments(p), [], `${p}: nothing written`);
    }
    assert.deepEqual([BigInt(statSync(img.meta).size), BigInt(statSync(img.data).size)], [c.metaBytes, c.dataBytes]);
    rmSync(img.dir, { recursive: true, force: true });
  }
});

for (const c of cases) {
  test(`reference ${c.name}: print decodes every block of the reference image with no complaint`, async () => {
    const x = extracted.get(c.name)!;
    const s = parseSummary(c.out);
    const times = referenceInputs(x.meta).now;
    const r = await scoutfs('print', x.meta);
    assert.equal(r.err, '');
    assert.equal(r.code, 0);
    const lines = r.out.split('\n').map((l) => l.trim());
    const has = (l: string) => assert.ok(lines.includes(l), `print output lacks "${l}":\n${r.out}`);
    assert.match(r.out, new RegExp(`^ +crc 0x[0-9a-f]{8} magic 0x103c428b fsid ${s.fsid} seq 1 blkno 16$`, 'm'));
    has(`id 0 fmt_vers 0 flags 0x1 uuid ${s.uuid}`);
    has(`total_meta_blocks ${s.metaBlocks} total_data_blocks ${s.dataBlocks}`);
    for (const slot of s.slots) {
      const [nr, addr] = slot.split(': ');
      has(`slot ${nr}: addr ${addr}`);
    }
    assert.equal(lines.filter((l) => l.startsWith('slot ')).length, s.slots.length, 'only the configured slots');
    const z = c.mkfsArgs.indexOf('-z');
    has(z >= 0 ? `volopt set_bits 0x1 data_alloc_zone_blocks ${c.mkfsArgs[z + 1]}` : 'volopt set_bits 0x0 data_alloc_zone_blocks 0');
    assert.equal(lines.filter((l) => /^quorum blkno \d+ \(slot \d+\):$/.test(l)).length, 15);
    has('blknos 4..1027');
    // FORMAT.md 13: meta extents split [1031, last] in two halves, data [64, last].
    const last = s.metaBlocks - 1n;
    const half = (last - 1031n + 2n) / 2n;
    has(`item 9.${1031n + half - 1n}.0.${half}.0.0 seq 1: free extent blkno [1031, ${1031n + half - 1n}] len ${half}`);
    has(`item 9.${last}.0.${last - 1031n - half + 1n}.0.0 seq 1: free extent blkno [${1031n + half}, ${last}] len ${last - 1031n - half + 1n}`);
    has(`item 9.${s.dataBlocks - 1n}.0.${s.dataBlocks - 64n}.0.0 seq 1: free extent blkno [64, ${s.dataBlocks - 1n}] len ${s.dataBlocks - 64n}`);
    has('item 1.0.1.0.1.0 seq 1: meta_seq major 0 ino 1');
    has('nlink 2 uid 0 gid 0 mode 040755 rdev 0x0 flags 0x0');
    const t = `${times.sec}.${String(times.nsec).padStart(9, '0')}`;
    has(`atime ${t} ctime ${t} mtime ${t} crtime 0.000000000`);
  });

  test(`reference ${c.name}: fsck finds the reference image clean with every metadata block accounted for`, async () => {
    const x = extracted.get(c.name)!;
    const s = parseSummary(c.out);
    const r = await scoutfs('fsck', x.meta, x.data);
    assert.equal(r.err, '');
    assert.equal(r.code, 0);
    // Blocks 2..total-1: the 5 mkfs blocks referenced, 1024 in the server list, the rest free.
    assert.match(r.out, new RegExp(`: 5 metadata blocks verified; ${s.metaBlocks} total: 5 referenced, 1024 listed, ${s.metaBlocks - 2n - 5n - 1024n} free; 0 problem\\(s\\)\\n$`));
  });
}
