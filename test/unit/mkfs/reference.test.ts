/*
 * Goal: our mkfs planner writes what the real scoutfs mkfs writes, byte for
 * byte, blocks and holes alike.  For each device pair the reference mkfs
 * made (../shared/golden/reference-mkfs, see test/golden/reference.ts): the
 * images are extracted into a temp dir (removed by after(), pass or fail);
 * the fsid and uuid are read from the reference super and the time from
 * its root inode; our planner runs with those values, the same device sizes
 * and the same arguments (parsed by our CLI's parser from the reference
 * README's command); then every byte of both devices is compared.  A
 * failure names the first differing byte, its block and field.  The
 * summary and warnings our planner prints must equal the reference's
 * mkfs.out exactly, fsid and uuid included (they are the reference's).
 *
 * The only bytes not compared as written are the reference's uninitialized
 * quorum slot padding, which we write as zeros (reference.ts says how the
 * comparison adopts them, crc included).
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { planMkfs } from '../../../src/mkfs/mkfs.js';
import { parseMkfsArgs } from '../../../bin/mkfs.js';
import {
  adoptSlotPadding, compareImage, extractReference, formatDifference, referenceCases, referenceInputs,
} from '../../golden/reference.js';

const tmp = mkdtempSync(join(tmpdir(), 'scoutfs-reference-mkfs-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

for (const c of referenceCases()) {
  test(`reference ${c.name}: our mkfs planner writes every block and hole byte for byte (${c.command})`, () => {
    const x = extractReference(c, join(tmp, c.name));
    try {
      const opts = parseMkfsArgs([...c.mkfsArgs, 'meta.img', 'data.img']);
      assert.ok(opts);
      const plan = planMkfs(opts, c.metaBytes, c.dataBytes, referenceInputs(x.meta));
      const slots = opts.slots.length;
      assert.equal(adoptSlotPadding(plan, x), 2 * 24 * slots, 'the unused bytes of each slot in both supers');
      for (const dev of ['meta', 'data'] as const) {
        const d = compareImage(plan, dev, dev === 'meta' ? x.meta : x.data);
        assert.equal(d && formatDifference(d), null);
      }
      assert.equal(plan.warnings.map((w) => `${w}\n`).join('') + plan.summary, c.out, 'warnings and summary as mkfs.out');
    } finally {
      rmSync(x.dir, { recursive: true, force: true });
    }
  });
}
