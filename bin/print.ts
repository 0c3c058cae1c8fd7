/*
 * `scoutfs print META-DEVICE`: prints the super block, the quorum blocks and
 * every block reachable from the super (src/print/walk.ts), verifying each
 * one.  Every mismatch is reported with its blkno and printing goes on; the
 * exit status is 1 when any problem was found.
 */
import { parse, UsageError, CommandError, type CliIo } from './cli.js';
import { VolumeWalker } from '../src/print/walk.js';
import { FileBlockDevice } from '../src/runtime/device.js';

export const USAGE = 'usage: scoutfs print META-DEVICE\n';

export async function run(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(args, { help: { type: 'boolean', short: 'h' } }, USAGE);
  if (values.help) {
    io.out(USAGE);
    return 0;
  }
  if (positionals.length !== 1) throw new UsageError('must specify one META-DEVICE', USAGE);
  const path = positionals[0]!;
  let dev: FileBlockDevice;
  try {
    dev = await FileBlockDevice.open(path, { readOnly: true });
  } catch (e) {
    throw new CommandError(`opening '${path}': ${(e as Error).message}`);
  }
  try {
    const lines: string[] = [];
    const flush = () => { if (lines.length) { io.out(lines.join('\n') + '\n'); lines.length = 0; } };
    const walker = new VolumeWalker(dev, {}, (l) => { lines.push(l); if (lines.length >= 256) flush(); });
    const res = await walker.walk();
    flush();
    const errors = res.problems.filter((p) => p.check !== 'warning');
    for (const p of res.problems) {
      io.err(`${p.check === 'warning' ? 'warning' : 'error'}:${p.blkno === null ? '' : ` blkno ${p.blkno}`} (${p.owner}): ${p.check}: ${p.detail}\n`);
    }
    if (errors.length > 0) {
      io.err(`scoutfs print: ${errors.length} problem(s) found in ${path}\n`);
      return 1;
    }
    return 0;
  } finally {
    await dev.close();
  }
}
