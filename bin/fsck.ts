/*
 * `scoutfs fsck META-DEVICE [DATA-DEVICE]`: read-only check of a volume
 * (src/fsck/fsck.ts).  Prints a summary; every problem on stderr with its
 * blkno, owner and check; exit 1 on any problem.  -v shows progress.
 */
import { parse, UsageError, CommandError, type CliIo } from './cli.js';
import { fsck } from '../src/fsck/fsck.js';
import { FileBlockDevice } from '../src/runtime/device.js';

export const USAGE = 'usage: scoutfs fsck [-v] META-DEVICE [DATA-DEVICE]\n';

export async function run(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(args, {
    help: { type: 'boolean', short: 'h' },
    verbose: { type: 'boolean', short: 'v' },
  }, USAGE);
  if (values.help) {
    io.out(USAGE);
    return 0;
  }
  if (positionals.length < 1 || positionals.length > 2) throw new UsageError('must specify META-DEVICE and optionally DATA-DEVICE', USAGE);
  const devs: FileBlockDevice[] = [];
  try {
    for (const p of positionals) {
      try {
        devs.push(await FileBlockDevice.open(p, { readOnly: true }));
      } catch (e) {
        throw new CommandError(`opening '${p}': ${(e as Error).message}`);
      }
    }
    const r = await fsck(devs[0]!, devs[1] ?? null, values.verbose ? (n) => io.err(`fsck: ${n} blocks verified\n`) : undefined);
    const errors = r.problems.filter((p) => p.check !== 'warning');
    for (const p of r.problems) {
      io.err(`${p.check === 'warning' ? 'warning' : 'error'}:${p.blkno === null ? '' : ` blkno ${p.blkno}`} (${p.owner}): ${p.check}: ${p.detail}\n`);
    }
    const m = r.metaBlocks;
    io.out(`fsck: ${positionals[0]}: ${r.blocks} metadata blocks verified; ${m.total} total: ${m.referenced} referenced, ${m.listed} listed, ${m.free} free; ${errors.length} problem(s)\n`);
    return errors.length > 0 ? 1 : 0;
  } finally {
    for (const d of devs) await d.close();
  }
}
