/*
 * Goal: the metadata allocation sizes a mount derives from the volume size
 * (src/mount/mount.ts metaAllocSizing) keep the properties a full volume
 * depends on: the reserve covers four full lists (so a GET can always
 * refill once the LOW flag stops allocating holds), the refill threshold
 * stays well above the server's low margin of 64 (or freed blocks never
 * come back), and from 32 GiB of metadata up the reference sizes apply.
 * test/cluster/enospc.test.ts shows the behaviour on a real mount.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { metaAllocSizing } from '../../../src/mount/mount.js';
import { LIST_FILL_LO, LIST_FILL_TARGET } from '../../../src/alloc/list.js';
import { reservedMetaBlocks } from '../../../src/alloc/server.js';

const GIB_BLOCKS = 16384n; // 64 KiB blocks

test('small volumes: lists scale down, the reserve covers four lists', () => {
  for (const total of [1100n, 4096n, GIB_BLOCKS, 2n * GIB_BLOCKS, 8n * GIB_BLOCKS]) {
    const s = metaAllocSizing(total);
    assert.ok(s.fillTarget >= 256 && s.fillTarget <= LIST_FILL_TARGET, `${total}: target ${s.fillTarget}`);
    assert.ok(s.fillLo >= 128 && s.fillLo < s.fillTarget, `${total}: lo ${s.fillLo}`);
    assert.ok(s.fillLo >= 2 * 64, `${total}: lo ${s.fillLo} leaves room above the low margin`);
    assert.ok(s.reserved >= 4n * BigInt(s.fillTarget), `${total}: reserve ${s.reserved}`);
    assert.ok(s.reserved <= reservedMetaBlocks(1));
  }
  assert.deepEqual(metaAllocSizing(4096n), { fillLo: 128, fillTarget: 256, reserved: 1024n });
  assert.deepEqual(metaAllocSizing(GIB_BLOCKS), { fillLo: 128, fillTarget: 256, reserved: 2048n });
});

test('from 32 GiB of metadata the reference sizes apply', () => {
  for (const total of [32n * GIB_BLOCKS, 64n * GIB_BLOCKS, 1024n * GIB_BLOCKS]) {
    assert.deepEqual(metaAllocSizing(total), { fillLo: LIST_FILL_LO, fillTarget: LIST_FILL_TARGET, reserved: reservedMetaBlocks(1) });
  }
});
