/*
 * Test helpers for the quorum: a volume made by mkfs on in-memory devices
 * with the quorum slots a test wants (the real mkfs plan, so the super and
 * the 15 quorum blocks are exactly what `scoutfs mkfs -Q ...` writes).
 */
import { planMkfs } from '../../../src/mkfs/mkfs.js';
import { MemoryBlockDevice } from '../../../src/runtime/memdevice.js';
import { parseIpv4 } from '../../../src/format/common.js';
import { readMetaSuper } from '../../../src/block/super.js';
import type { Super } from '../../../src/format/super.js';

const MIB = 1024n * 1024n;

export interface SlotSpec {
  nr: number;
  /** "a.b.c.d:port" */
  addr: string;
}

export interface QuorumVolume {
  meta: MemoryBlockDevice;
  sb: Super;
}

export function slotSpecs(n: number, base = '127.0.0.', port = 7000): SlotSpec[] {
  return Array.from({ length: n }, (_, i) => ({ nr: i, addr: `${base}${i + 1}:${port}` }));
}

export async function quorumVolume(slots: SlotSpec[], fsid = 0xfeedn): Promise<QuorumVolume> {
  const meta = new MemoryBlockDevice(256n * MIB, 'meta');
  const plan = planMkfs({
    metaPath: 'meta', dataPath: 'data', allowSmall: true,
    slots: slots.map((s) => {
      const [host, port] = s.addr.split(':');
      return { nr: s.nr, addr: parseIpv4(host!)!, port: Number(port) };
    }),
  }, 256n * MIB, 64n * MIB, { fsid, uuid: new Uint8Array(16).fill(3), now: { sec: 1n, nsec: 0 } });
  for (const w of plan.writes) if (w.dev === 'meta') meta.writeSync(w.off, w.bytes);
  return { meta, sb: await readMetaSuper(meta) };
}
