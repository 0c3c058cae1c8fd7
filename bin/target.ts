/*
 * The file an archive command works on, found the way the reference's
 * ioctl on an open file would find it: a device node's ioctl reaches its
 * driver (ENOTTY, "Inappropriate ioctl for device"), so does a file on
 * another filesystem; commands that open for writing meet EISDIR on a
 * directory.  Returns the scoutfs mount and the path inside it, which the
 * control channel resolves (src/mount/control.ts).
 */
import { statSync } from 'node:fs';
import { ControlError, findMountOf } from '../src/mount/control.js';

export function scoutfsFile(path: string, o: { write: boolean }): { mnt: string; rel: string } {
  let st;
  try {
    st = statSync(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? 'EIO';
    throw new ControlError(code, `${path}: ${(e as Error).message}`);
  }
  if (st.isCharacterDevice() || st.isBlockDevice()) throw new ControlError('ENOTTY', `${path} is a device node: its ioctls reach the device's driver, not scoutfs`);
  if (o.write && st.isDirectory()) throw new ControlError('EISDIR', `${path} is a directory`);
  try {
    return findMountOf(path);
  } catch (e) {
    if (e instanceof ControlError && e.errno === 'EINVAL') throw new ControlError('ENOTTY', `${path} is not in a scoutfs mount`);
    throw e;
  }
}
