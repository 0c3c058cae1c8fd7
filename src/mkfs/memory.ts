/*
 * src/mkfs/memory.ts: a filesystem made on in-memory devices, for tests,
 * benchmarks and the simulator.  The planMkfs blocks (one quorum slot,
 * 127.0.0.1:7000, fixed fsid and uuid, so runs are reproducible) written
 * straight to MemoryBlockDevices, whose chunks exist only once written:
 * a large device costs nothing until used.  No device checks: the devices
 * are new.
 */
import { MemoryBlockDevice } from '../runtime/memdevice.js';
import { planMkfs } from './mkfs.js';

export interface MemoryVolume {
  meta: MemoryBlockDevice;
  data: MemoryBlockDevice;
}

export function mkfsMemory(metaBytes: bigint, dataBytes: bigint, ids: { fsid?: bigint; uuidFill?: number } = {}): MemoryVolume {
  const meta = new MemoryBlockDevice(metaBytes, 'meta');
  const data = new MemoryBlockDevice(dataBytes, 'data');
  const plan = planMkfs({ metaPath: 'meta', dataPath: 'data', allowSmall: true, slots: [{ nr: 0, addr: 0x7f000001, port: 7000 }] },
    metaBytes, dataBytes, { fsid: ids.fsid ?? 0xf00dn, uuid: new Uint8Array(16).fill(ids.uuidFill ?? 7), now: { sec: 1n, nsec: 0 } });
  for (const w of plan.writes) (w.dev === 'meta' ? meta : data).writeSync(w.off, w.bytes);
  return { meta, data };
}
