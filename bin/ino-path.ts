/*
 * `scoutfs ino-path INODE-NUM [-p PATH]` (PROTOCOL.md 9.3 INO_PATH, 9.4):
 * every path of the inode, one per line, absolute within the filesystem
 * ("/dir/name"; the root is "/"), from the links' backrefs.  Concurrent
 * renames can make the paths of one call disagree with each other.
 */
import { parse, parseU64, UsageError, type CliIo } from './cli.js';
import { controlRequest, findMountOf } from '../src/mount/control.js';
import { withControl } from './sync.js';

const USAGE = 'usage: scoutfs ino-path INODE-NUM [-p|--path PATH]\n';

export async function run(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(args, { path: { type: 'string', short: 'p' } }, USAGE);
  if (positionals.length !== 1) throw new UsageError('need one INODE-NUM', USAGE);
  const ino = parseU64(positionals[0], 'INODE-NUM', USAGE, false);
  const r = await withControl(async () => controlRequest(findMountOf(values.path ?? process.cwd()).mnt, { op: 'ino-path', ino: ino.toString() }));
  io.out((r.paths as string[]).map((p) => Buffer.from(p, 'base64').toString('utf8') + '\n').join(''));
  return 0;
}
