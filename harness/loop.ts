/*
 * harness/loop.ts owns device images and the loop devices over them.
 *
 * An image is a sparse file (ftruncate, no data written), so a 1 GiB device
 * costs nothing until a node writes to it.  As root the image is attached to
 * a loop device with `losetup -f --show IMG` and nodes are handed the
 * /dev/loopN path; without root (or without losetup) nodes are handed the
 * image path itself, which our BlockDevice opens like any file.  Callers use
 * `LoopDevice.path` and do not care which they got.
 *
 * Invariants:
 *   - Every attached device is in the module registry `attached` (device ->
 *     image) from the moment losetup prints it until `losetup -d` succeeded,
 *     and has a cleanup action in the run's CleanupRegistry that detaches it.
 *     `attachedLoops()` is what a leak check compares against `losetup -a`.
 *   - Detaching is idempotent: a device that is already gone is not an
 *     error, and a device number we no longer own is never detached.  If the device is still held (a mount on it), `losetup -d` only
 *     marks it autoclear and the kernel frees it when the holder goes; that
 *     is why cleanup unmounts first (LIFO order does it).
 *   - Images are removed by cleanup only when the run succeeded (when:
 *     'success'), unless the caller asks for removal always; a failed run
 *     keeps them next to its replay.sh.
 *
 * Left out: partitions, read-only attach and direct-io loop setup; nothing
 * needs them yet.
 */
import { open, rm, stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { CleanupRegistry } from './cleanup.js';
import { isRoot, sh, trySh, which } from './sys.js';

export interface Image {
  path: string;
  sizeBytes: number;
}

export interface LoopDevice {
  image: string;
  /** /dev/loopN, or null when we run on the image file alone. */
  device: string | null;
  /** What a node opens: the device when attached, else the image. */
  path: string;
}

const attached = new Map<string, string>();

/** Devices this process attached and has not yet detached (device -> image). */
export function attachedLoops(): ReadonlyMap<string, string> {
  return new Map(attached);
}

/** True when this process can attach loop devices (root and losetup present). */
export async function loopSupported(): Promise<boolean> {
  return isRoot() && (await which('losetup')) !== null;
}

/**
 * Create a sparse image of sizeBytes at `path` (replacing any old one) and
 * register its removal: on success only (default) or always.
 */
export async function createImage(
  registry: CleanupRegistry,
  path: string,
  sizeBytes: number,
  opts: { remove?: 'on-success' | 'always' } = {},
): Promise<Image> {
  if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0) throw new Error(`bad image size ${sizeBytes}`);
  const abs = resolve(path);
  const fh = await open(abs, 'w');
  try {
    await fh.truncate(sizeBytes);
  } finally {
    await fh.close();
  }
  await registry.add(`remove image ${abs}`, () => rm(abs, { force: true }), {
    when: opts.remove === 'always' ? 'always' : 'success',
  });
  const st = await stat(abs);
  if (st.size !== sizeBytes) throw new Error(`image ${abs} has size ${st.size}, wanted ${sizeBytes}`);
  return { path: abs, sizeBytes };
}

/** Loop devices currently backed by `image`, from `losetup -j`. */
export async function loopsFor(image: string): Promise<string[]> {
  if (!(await which('losetup'))) return [];
  const r = await trySh('losetup', ['-j', resolve(image)]);
  if (r.exitCode !== 0) return [];
  return r.stdout
    .split('\n')
    .map((l) => l.split(':')[0]!.trim())
    .filter((d) => d.startsWith('/dev/'));
}

/**
 * Attach `image` to a free loop device when we can (root), else hand back
 * the image itself.  The detach is registered before this returns.
 */
export async function attachLoop(registry: CleanupRegistry, image: string): Promise<LoopDevice> {
  const abs = resolve(image);
  if (!(await loopSupported())) return { image: abs, device: null, path: abs };
  const r = await sh('losetup', ['-f', '--show', abs], { timeoutMs: 30_000 });
  const device = r.stdout.trim();
  if (!/^\/dev\/loop\d+$/.test(device)) throw new Error(`losetup printed ${JSON.stringify(device)} for ${abs}`);
  attached.set(device, abs);
  await registry.add(`detach ${device} (${abs})`, () => detachLoop(device));
  return { image: abs, device, path: device };
}

/**
 * `losetup -d` a device this process attached.  Idempotent, and safe against
 * device-number reuse: a device that is not ours any more (already detached,
 * then perhaps attached by someone else to another image) is left alone.
 */
export async function detachLoop(device: string): Promise<void> {
  const image = attached.get(device);
  if (image === undefined) return;
  if (!(await loopsFor(image)).includes(device)) {
    attached.delete(device);
    return;
  }
  const r = await trySh('losetup', ['-d', device], { timeoutMs: 30_000 });
  if (r.exitCode !== 0 && (await loopsFor(image)).includes(device)) {
    throw new Error(`losetup -d ${device} failed: ${r.stderr}`);
  }
  attached.delete(device);
}
