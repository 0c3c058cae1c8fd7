/*
 * `scoutfs release FILE -V VERSION [-o OFFSET] [-l LENGTH]` (PROTOCOL.md
 * 9.3 RELEASE, 9.4): the blocks of the 4 KiB aligned region become offline
 * extents; readers of the region will wait until it is staged.  VERSION
 * must be the file's data_version (`scoutfs stat -s data_version FILE`),
 * so a release never drops data newer than what was archived (ESTALE).
 * OFFSET defaults to 0, LENGTH to the file's size rounded up to 4 KiB;
 * both take K/M/G/T/P suffixes and 0x hex.  Releasing regions already
 * offline, sparse or past EOF succeeds and does nothing.
 */
import { statSync } from 'node:fs';
import { parse, parseU64, UsageError, type CliIo } from './cli.js';
import { controlRequest } from '../src/mount/control.js';
import { withControl } from './sync.js';
import { scoutfsFile } from './target.js';

const USAGE = 'usage: scoutfs release FILE -V|--data-version VERSION [-o|--offset OFFSET] [-l|--length LENGTH]\n';

export async function run(args: string[], _io: CliIo): Promise<number> {
  const { values, positionals } = parse(args, {
    'data-version': { type: 'string', short: 'V' }, version: { type: 'string' },
    offset: { type: 'string', short: 'o' }, length: { type: 'string', short: 'l' },
  }, USAGE);
  if (positionals.length !== 1) throw new UsageError('need one FILE', USAGE);
  const file = positionals[0]!;
  const vs = values['data-version'] ?? values.version;
  const vers = vs === undefined ? 0n : parseU64(vs, 'VERSION', USAGE, false);
  if (vers === 0n) throw new UsageError('must provide file version --data-version', USAGE);
  const offset = values.offset === undefined ? 0n : parseU64(values.offset, 'OFFSET', USAGE);
  await withControl(async () => {
    const { mnt, rel } = scoutfsFile(file, { write: true });
    const length = values.length !== undefined ? parseU64(values.length, 'LENGTH', USAGE) : ((statSync(file, { bigint: true }).size + 4095n) / 4096n) * 4096n;
    return controlRequest(mnt, { op: 'release', path: rel, data_version: vers.toString(), offset: offset.toString(), length: length.toString() });
  });
  return 0;
}
