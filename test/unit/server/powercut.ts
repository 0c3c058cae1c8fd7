/*
 * A power cut for crash tests (test/unit/server/*): from the n-th write or
 * the n-th flush on, every write and flush fails, so nothing more reaches
 * the disk; what was written but not flushed lands or not at crash()
 * (FaultDevice).  A cut can fall between a super write and its flush.
 */
import { FsError } from '../../../src/format/errors.js';
import type { BlockDevice } from '../../../src/runtime/device.js';
import { FaultDevice } from '../../../src/runtime/faultdevice.js';
import type { SeededRandom } from '../../../src/runtime/random.js';

export class PowerCutDevice extends FaultDevice {
  private writes = 0;
  private flushes = 0;
  cut = false;
  constructor(inner: BlockDevice, rnd: SeededRandom, private readonly at: { writes?: number; flushes?: number }) {
    super(inner, rnd);
  }
  override async write(off: bigint, data: Uint8Array): Promise<void> {
    if (this.cut || (this.at.writes !== undefined && ++this.writes >= this.at.writes)) {
      this.cut = true;
      throw new FsError('EIO', 'power cut');
    }
    return super.write(off, data);
  }
  override async flush(): Promise<void> {
    if (this.cut || (this.at.flushes !== undefined && ++this.flushes >= this.at.flushes)) {
      this.cut = true;
      throw new FsError('EIO', 'power cut');
    }
    return super.flush();
  }
}
