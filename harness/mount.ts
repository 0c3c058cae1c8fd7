/*
 * harness/mount.ts owns the mounts the harness itself makes: tmpfs
 * directories, ext4 on a loop device (the perf baseline and the harness's
 * own leak tests), and making a filesystem on a device.  Mounts that a node
 * daemon makes (FUSE) are not made here, but are torn down by the same
 * `unmount` in cleanup.ts.
 *
 * Invariants:
 *   - A mount's unmount is registered immediately after mount(8) succeeds,
 *     so LIFO cleanup unmounts it before the loop device under it is
 *     detached and before the directory is removed.
 *   - Every function here needs root and says so in its error; callers that
 *     can run without root check mountSupported() first and skip.
 */
import { mkdir } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { CleanupRegistry } from './cleanup.js';
import { unmount } from './cleanup.js';
import { isRoot, sh, which } from './sys.js';

export async function mountSupported(): Promise<boolean> {
  return isRoot() && (await which('mount')) !== null;
}

function needRoot(what: string): void {
  if (!isRoot()) throw new Error(`${what} needs root`);
}

/** Mount a tmpfs of at most sizeBytes on `target` (created if missing). */
export async function mountTmpfs(registry: CleanupRegistry, target: string, sizeBytes: number): Promise<string> {
  needRoot('mounting tmpfs');
  const abs = resolve(target);
  await mkdir(abs, { recursive: true });
  await sh('mount', ['-t', 'tmpfs', '-o', `size=${sizeBytes},mode=0755`, 'harness-tmpfs', abs]);
  await registry.add(`unmount ${abs}`, () => unmount(abs));
  return abs;
}

/** mkfs.ext4 on a device or image (quiet, no lazy init so timings are fair). */
export async function mkfsExt4(device: string, label = 'harness'): Promise<void> {
  if (!(await which('mkfs.ext4'))) throw new Error('mkfs.ext4 not found (Debian package e2fsprogs)');
  await sh('mkfs.ext4', ['-q', '-F', '-L', label, '-E', 'lazy_itable_init=0,lazy_journal_init=0', device], {
    timeoutMs: 120_000,
  });
}

/** Mount an ext4 device on `target` (created if missing). */
export async function mountExt4(
  registry: CleanupRegistry,
  device: string,
  target: string,
  options = 'noatime',
): Promise<string> {
  needRoot('mounting ext4');
  const abs = resolve(target);
  await mkdir(abs, { recursive: true });
  await sh('mount', ['-t', 'ext4', '-o', options, device, abs]);
  await registry.add(`unmount ${abs}`, () => unmount(abs));
  return abs;
}
