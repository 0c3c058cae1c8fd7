/*
 * Fixture for fenceagent.test.ts: a process that registers itself as the
 * daemon of a rid the way a scoutfs mount daemon must (registerRid, before
 * touching any device), says so on stdout, and then lives until killed.
 *
 *   node dist/test/unit/runtime/fence-child.js RUN_DIR RID_HEX MOUNT_POINT
 */
import { registerRid } from '../../../src/runtime/fenceagent.js';

const [runDir, ridHex, mnt] = process.argv.slice(2);
if (!runDir || !ridHex || !mnt) {
  console.error('usage: fence-child.js RUN_DIR RID_HEX MOUNT_POINT');
  process.exit(2);
}
const reg = registerRid({ runDir, rid: BigInt(`0x${ridHex}`), mnt });
process.on('SIGTERM', () => {
  reg.remove();
  process.exit(0);
});
console.log(`registered ${reg.path}`);
setInterval(() => {}, 1 << 30);
