/*
 * `scoutfs change-format-version [-V VERS] -F META-DEVICE DATA-DEVICE`
 * (PROTOCOL.md 9.4): set the format version in the super blocks of both
 * devices, offline.  VERS defaults to the newest supported; this
 * implementation supports format version 0 only (FORMAT_VERSION_MIN ..
 * FORMAT_VERSION_MAX), so the one change it can make is none: it checks
 * the devices as the reference does (both supers, the same volume, not in
 * use: no live mount's claim, and no mount that never said farewell, whose
 * log trees are still open) and prints that the version is already VERS.
 * A version outside the range is EINVAL.  The online form (without -F)
 * answers EOPNOTSUPP.
 */
import { mkdirSync, rmSync } from 'node:fs';
import { parse, parseU64, UsageError, CommandError, type CliIo } from './cli.js';
import { failureText, DEFAULT_RUN_DIR } from '../src/mount/control.js';
import { FsError, CorruptionError } from '../src/format/errors.js';
import { FileBlockDevice } from '../src/runtime/device.js';
import { FORMAT_VERSION_MAX, FORMAT_VERSION_MIN } from '../src/format/constants.js';
import { readMetaSuper } from '../src/server/volume.js';
import { readDataSuper } from '../src/mount/mount.js';
import { claimDevice } from '../src/mount/daemon.js';
import { VolumeWalker } from '../src/print/walk.js';
import { ZONE } from '../src/format/items.js';
import { LOG_TREES_FLAG_FINALIZED, decodeLogTrees, LOG_TREES } from '../src/format/logtrees.js';

const USAGE = `usage: scoutfs change-format-version [-V|--format-version VERS] -F|--offline META-DEVICE DATA-DEVICE
  supported format versions: ${FORMAT_VERSION_MIN} to ${FORMAT_VERSION_MAX}
`;

export async function run(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(args, {
    'format-version': { type: 'string', short: 'V' }, offline: { type: 'boolean', short: 'F' },
  }, USAGE);
  const vers = values['format-version'] === undefined ? FORMAT_VERSION_MAX : parseU64(values['format-version'], 'VERS', USAGE, false);
  if (vers < FORMAT_VERSION_MIN || vers > FORMAT_VERSION_MAX) {
    throw new CommandError(failureText('EINVAL', `format version ${vers} is not supported (${FORMAT_VERSION_MIN} to ${FORMAT_VERSION_MAX})`));
  }
  if (values.offline !== true) {
    if (positionals.length > 0) throw new UsageError('devices are given with -F', USAGE);
    throw new CommandError(failureText('EOPNOTSUPP', 'only the offline form is supported: unmount, then change-format-version -F META-DEVICE DATA-DEVICE'));
  }
  if (positionals.length !== 2) throw new UsageError('-F needs META-DEVICE and DATA-DEVICE', USAGE);
  const [metaPath, dataPath] = positionals as [string, string];
  const claims: string[] = [];
  let metaDev: FileBlockDevice | null = null;
  let dataDev: FileBlockDevice | null = null;
  try {
    mkdirSync(DEFAULT_RUN_DIR, { recursive: true, mode: 0o700 });
    for (const d of [metaPath, dataPath]) claims.push(await claimDevice(DEFAULT_RUN_DIR, d, '(offline)', () => {}, 0));
    metaDev = await FileBlockDevice.open(metaPath);
    dataDev = await FileBlockDevice.open(dataPath);
    const sb = await readMetaSuper(metaDev);
    await readDataSuper(dataDev, sb);
    // A mount that never said farewell left an open log tree: refuse, as
    // the reference refuses clients that were not reclaimed.
    const open: string[] = [];
    const walker = new VolumeWalker(metaDev, {
      leafItem(owner, k, _seq, _flags, val) {
        if (owner !== 'logs_root' || k.zone !== ZONE.LOG_TREES || val.length !== LOG_TREES.size) return;
        const lt = decodeLogTrees(val);
        if ((lt.flags & LOG_TREES_FLAG_FINALIZED) === 0n) open.push(lt.rid.toString(16).padStart(16, '0'));
      },
    });
    await walker.walk();
    if (open.length > 0) throw new FsError('EBUSY', `mounts that did not unmount cleanly (rid ${open.join(', ')}): mount and unmount the volume first`);
    if (sb.fmt_vers === vers) {
      io.out(`format version is already ${vers}\n`);
      return 0;
    }
    // Unreachable while MIN === MAX; a second version would write both supers here.
    throw new FsError('EOPNOTSUPP', `changing format version ${sb.fmt_vers} to ${vers}`);
  } catch (e) {
    if (e instanceof FsError) throw new CommandError(failureText(e.code, e.message));
    if (e instanceof CorruptionError) throw new CommandError(failureText('EIO', e.message));
    const code = (e as NodeJS.ErrnoException).code;
    if (typeof code === 'string') throw new CommandError(failureText(code, (e as Error).message));
    throw e;
  } finally {
    await metaDev?.close();
    await dataDev?.close();
    for (const c of claims) rmSync(c, { force: true });
  }
}
