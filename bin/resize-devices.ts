/*
 * `scoutfs resize-devices -F META-DEVICE DATA-DEVICE [-m SIZE] [-d SIZE]`
 * (PROTOCOL.md 9.4): grow the space the volume uses on its devices to SIZE
 * bytes each (K/M/G/T/P suffixes), for devices that were grown below it.
 * A size that is not a multiple of the block size (64 KiB metadata, 4 KiB
 * data) is truncated with a message; 0 or the current size changes
 * nothing; shrinking is refused and changes nothing.  One server commit
 * (src/server/resize.ts): afterwards the new space is free, and
 * `scoutfs statfs` shows the new total_*_blocks after the next mount.
 *
 * Offline only (-F): the devices must not be mounted (a live mount
 * daemon's claim on them is refused with EBUSY).  The reference's online
 * form, `-p PATH` of a mounted volume, answers EOPNOTSUPP here: a running
 * mount checks blknos against bounds that cannot grow under it yet (see
 * src/server/resize.ts).
 */
import { mkdirSync, rmSync } from 'node:fs';
import { parse, parseU64, UsageError, CommandError, type CliIo } from './cli.js';
import { failureText, DEFAULT_RUN_DIR } from '../src/mount/control.js';
import { FsError, CorruptionError } from '../src/format/errors.js';
import { FileBlockDevice } from '../src/runtime/device.js';
import { CryptoRandom } from '../src/runtime/random.js';
import { LG_BLOCK_SIZE, SM_BLOCK_SIZE } from '../src/format/constants.js';
import { ServerVolume, readMetaSuper } from '../src/server/volume.js';
import { growDevices } from '../src/server/resize.js';
import { metaAllocSizing, readDataSuper } from '../src/mount/mount.js';
import { claimDevice } from '../src/mount/daemon.js';

const USAGE = 'usage: scoutfs resize-devices -F|--offline META-DEVICE DATA-DEVICE [-m|--meta-size SIZE] [-d|--data-size SIZE]\n';

function blocks(bytes: bigint, bs: number, what: string, io: CliIo): bigint {
  const b = BigInt(bs);
  if (bytes % b !== 0n) io.out(`${what} size ${bytes} is not a multiple of ${bs} bytes: truncated to ${(bytes / b) * b}\n`);
  return bytes / b;
}

export async function run(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(args, {
    offline: { type: 'boolean', short: 'F' }, path: { type: 'string', short: 'p' },
    'meta-size': { type: 'string', short: 'm' }, 'data-size': { type: 'string', short: 'd' },
  }, USAGE);
  const metaBytes = values['meta-size'] === undefined ? 0n : parseU64(values['meta-size'], '--meta-size', USAGE);
  const dataBytes = values['data-size'] === undefined ? 0n : parseU64(values['data-size'], '--data-size', USAGE);
  if (values.offline !== true) {
    if (positionals.length > 0) throw new UsageError('devices are given with -F', USAGE);
    throw new CommandError(failureText('EOPNOTSUPP', 'only the offline form is supported: unmount, then resize-devices -F META-DEVICE DATA-DEVICE'));
  }
  if (positionals.length !== 2) throw new UsageError('-F needs META-DEVICE and DATA-DEVICE', USAGE);
  const [metaPath, dataPath] = positionals as [string, string];
  const metaBlocks = blocks(metaBytes, LG_BLOCK_SIZE, 'meta', io);
  const dataBlocks = blocks(dataBytes, SM_BLOCK_SIZE, 'data', io);
  const claims: string[] = [];
  let metaDev: FileBlockDevice | null = null;
  let dataDev: FileBlockDevice | null = null;
  let vol: ServerVolume | null = null;
  try {
    mkdirSync(DEFAULT_RUN_DIR, { recursive: true, mode: 0o700 });
    for (const d of [metaPath, dataPath]) claims.push(await claimDevice(DEFAULT_RUN_DIR, d, '(offline)', () => {}, 0));
    metaDev = await FileBlockDevice.open(metaPath);
    dataDev = await FileBlockDevice.open(dataPath);
    const sb = await readMetaSuper(metaDev);
    await readDataSuper(dataDev, sb);
    const sizing = metaAllocSizing(sb.total_meta_blocks);
    vol = await ServerVolume.open(metaDev, { random: new CryptoRandom(), fillLo: sizing.fillLo, fillTarget: sizing.fillTarget, reserved: () => sizing.reserved });
    const r = await growDevices(vol, dataDev.sizeBytes, { metaBlocks, dataBlocks });
    for (const [what, g] of [['meta', r.meta], ['data', r.data]] as const) {
      io.out(g.to === g.from ? `${what}: ${g.from} blocks, unchanged\n` : `${what}: ${g.from} -> ${g.to} blocks\n`);
    }
    return 0;
  } catch (e) {
    if (e instanceof FsError) throw new CommandError(failureText(e.code, e.message));
    if (e instanceof CorruptionError) throw new CommandError(failureText('EIO', e.message));
    const code = (e as NodeJS.ErrnoException).code;
    if (typeof code === 'string') throw new CommandError(failureText(code, (e as Error).message));
    throw e;
  } finally {
    vol?.close();
    await metaDev?.close();
    await dataDev?.close();
    for (const c of claims) rmSync(c, { force: true });
  }
}
