/*
 * `scoutfs setattr FILE [-V VERSION] [-s SIZE] [-o] [-t CTIME] [-r CRTIME]`
 * (PROTOCOL.md 9.3 SETATTR_MORE, 9.4): restore a file's scoutfs
 * attributes on a newly created, never written file: data_version, size
 * (needs a data_version), offline (needs a size: the whole file becomes
 * one offline extent, to be staged later), ctime and crtime as
 * <seconds>.<nanoseconds>.  A VERSION or SIZE of 0 means "not given".
 * Root only, like the reference's CAP_SYS_ADMIN (the control channel is
 * root's).
 */
import { parse, parseTimespec, parseU64, UsageError, type CliIo } from './cli.js';
import { controlRequest } from '../src/mount/control.js';
import { withControl } from './sync.js';
import { scoutfsFile } from './target.js';

const USAGE = 'usage: scoutfs setattr FILE [-V|--data-version VERSION] [-s|--size SIZE] [-o|--offline] [-t|--ctime SEC.NSEC] [-r|--crtime SEC.NSEC]\n';

export async function run(args: string[], _io: CliIo): Promise<number> {
  const { values, positionals } = parse(args, {
    'data-version': { type: 'string', short: 'V' }, size: { type: 'string', short: 's' }, offline: { type: 'boolean', short: 'o' },
    ctime: { type: 'string', short: 't' }, crtime: { type: 'string', short: 'r' },
  }, USAGE);
  if (positionals.length !== 1) throw new UsageError('need one FILE', USAGE);
  const vers = values['data-version'] === undefined ? null : parseU64(values['data-version'], 'VERSION', USAGE, false);
  if (vers === 0n) throw new UsageError('data version must not be 0', USAGE);
  const size = values.size === undefined ? 0n : parseU64(values.size, 'SIZE', USAGE);
  if (values.offline === true && size === 0n) throw new UsageError('must provide size if using --offline option', USAGE);
  if (size !== 0n && vers === null) throw new UsageError('must provide data version if using --size option', USAGE);
  const ctime = values.ctime === undefined ? undefined : parseTimespec(values.ctime, 'ctime', USAGE);
  const crtime = values.crtime === undefined ? undefined : parseTimespec(values.crtime, 'crtime', USAGE);
  await withControl(async () => {
    const { mnt, rel } = scoutfsFile(positionals[0]!, { write: true });
    return controlRequest(mnt, {
      op: 'setattr-more', path: rel, data_version: (vers ?? 0n).toString(), size: size.toString(), offline: values.offline === true, ctime, crtime,
    });
  });
  return 0;
}
