/*
 * Goal: the planner's option checks and messages.  -z must be at least a
 * mount's data allocation target (1048576 blocks, worded as the reference
 * mkfs words it), at least total data blocks / 1024 (at most 1024 zones)
 * and at most the total; a valid -z lands in the super's volume options.
 * -m/-d larger than the device are refused; smaller ones print the
 * reference's "Limiting use of" lines after the size warnings.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { planMkfs, MkfsError, type MkfsOptions } from '../../../src/mkfs/mkfs.js';

const GIB = 1n << 30n;
const TIB = 1n << 40n;
const inputs = { fsid: 1n, uuid: new Uint8Array(16), now: { sec: 1n, nsec: 0 } };
const base: MkfsOptions = { metaPath: 'm', dataPath: 'd', allowSmall: true, slots: [{ nr: 0, addr: 0x7f000001, port: 7000 }] };

function refused(o: Partial<MkfsOptions>, meta: bigint, data: bigint): string {
  try {
    planMkfs({ ...base, ...o }, meta, data, inputs);
  } catch (e) {
    assert.ok(e instanceof MkfsError, String(e));
    return e.message;
  }
  assert.fail('planMkfs accepted it');
}

test('-z bounds: the reference minimum, at most 1024 zones, at most the data device', () => {
  assert.equal(refused({ dataAllocZoneBlocks: 4096n }, 2n * GIB, 8n * GIB),
    "setting data_alloc_zone_blocks to '4096' failed, must be at least 1048576 mount data allocation target blocks");
  // 8 TiB of data is 2^31 blocks: zones of 2^20 blocks would be 2048 of them.
  assert.equal(refused({ dataAllocZoneBlocks: 1048576n }, 2n * GIB, 8n * TIB),
    "setting data_alloc_zone_blocks to '1048576' failed, must be at least 2097152 blocks to divide 2147483648 data blocks into at most 1024 zones");
  assert.equal(refused({ dataAllocZoneBlocks: 2097153n }, 2n * GIB, 8n * GIB),
    "setting data_alloc_zone_blocks to '2097153' failed, must be at most the 2097152 total data blocks");
  const p = planMkfs({ ...base, dataAllocZoneBlocks: 2097152n }, 2n * GIB, 8n * TIB, inputs);
  assert.deepEqual(p.superBlock.volopt, { set_bits: 1n, data_alloc_zone_blocks: 2097152n });
  assert.deepEqual(planMkfs(base, 2n * GIB, 8n * GIB, inputs).superBlock.volopt, { set_bits: 0n, data_alloc_zone_blocks: 0n });
});

test('-m and -d: larger than the device refused, smaller ones limit and say so after the size warnings', () => {
  assert.equal(refused({ maxMetaBytes: 3n * GIB }, 2n * GIB, 8n * GIB), 'meta size 3.00 GB larger than device size 2.00 GB');
  assert.equal(refused({ maxDataBytes: 9n * GIB }, 2n * GIB, 8n * GIB), 'data size 9.00 GB larger than device size 8.00 GB');
  const p = planMkfs({ ...base, maxMetaBytes: GIB + 100n, maxDataBytes: 4n * GIB }, 2n * GIB, 8n * GIB, inputs);
  assert.deepEqual(p.warnings, [
    '1.00GB file too small for min 64.00GB meta device, allowing with -A',
    '4.00GB file too small for min 64.00GB data device, allowing with -A',
    'Limiting use of 2.00GB meta device to 1.00GB',
    'Limiting use of 8.00GB data device to 4.00GB',
  ]);
  assert.deepEqual([p.superBlock.total_meta_blocks, p.superBlock.total_data_blocks], [16384n, 1048576n], '-m rounded down to 64 KiB');
  // Limits equal to the device sizes limit nothing and print nothing more.
  assert.equal(planMkfs({ ...base, maxMetaBytes: 2n * GIB, maxDataBytes: 8n * GIB }, 2n * GIB, 8n * GIB, inputs).warnings.length, 2);
});
