/*
 * `scoutfs move-blocks FROM -f|--from-offset O -l|--length L TO
 * -t|--to-offset O [-s|--stage -V|--data-version VERSION]` (PROTOCOL.md
 * 9.3 MOVE_BLOCKS, 9.4): the whole-block extents of FROM's region become
 * TO's (no data is copied); FROM keeps its size with a hole there.
 * Offsets must be 4 KiB aligned, the length too unless the region ends at
 * FROM's size.  Both files get a new data_version, data_seq and times;
 * with --stage the region of TO must be offline, VERSION must be TO's
 * data_version, and TO keeps its data_version, data_seq and times.  Both
 * files must be in one scoutfs mount (EXDEV otherwise).
 */
import { parse, parseU64, UsageError, type CliIo } from './cli.js';
import { ControlError, controlRequest } from '../src/mount/control.js';
import { withControl } from './sync.js';
import { scoutfsFile } from './target.js';

const USAGE = 'usage: scoutfs move-blocks FROM -f|--from-offset OFFSET -l|--length LENGTH TO -t|--to-offset OFFSET [-s|--stage -V|--data-version VERSION]\n';

export async function run(args: string[], _io: CliIo): Promise<number> {
  const { values, positionals } = parse(args, {
    'from-offset': { type: 'string', short: 'f' }, length: { type: 'string', short: 'l' }, 'to-offset': { type: 'string', short: 't' },
    stage: { type: 'boolean', short: 's' }, 'data-version': { type: 'string', short: 'V' },
  }, USAGE);
  if (positionals.length !== 2) throw new UsageError('need FROM and TO', USAGE);
  const fromOff = parseU64(values['from-offset'], '--from-offset', USAGE);
  const len = parseU64(values.length, '--length', USAGE);
  const toOff = parseU64(values['to-offset'], '--to-offset', USAGE);
  const stage = values.stage === true;
  const vers = values['data-version'] === undefined ? 0n : parseU64(values['data-version'], 'VERSION', USAGE, false);
  if (stage && vers === 0n) throw new UsageError('--stage needs --data-version', USAGE);
  await withControl(async () => {
    const to = scoutfsFile(positionals[1]!, { write: true });
    let from;
    try {
      from = scoutfsFile(positionals[0]!, { write: true });
    } catch (e) {
      if (e instanceof ControlError && e.errno === 'ENOTTY') throw new ControlError('EXDEV', `${positionals[0]!} is not in the scoutfs mount ${to.mnt}`);
      throw e;
    }
    if (from.mnt !== to.mnt) throw new ControlError('EXDEV', `${positionals[0]!} and ${positionals[1]!} are in different mounts`);
    return controlRequest(to.mnt, {
      op: 'move-blocks', from: from.rel, from_offset: fromOff.toString(), length: len.toString(), to: to.rel, to_offset: toOff.toString(),
      stage, data_version: vers.toString(),
    });
  });
  return 0;
}
