/*
 * `scoutfs sync MNT`: commit the mount's open transaction through its
 * control channel.  sync(2) never reaches a FUSE daemon (PROTOCOL.md s0),
 * so this is how scripts make their changes stable.
 */
import { parse, UsageError, CommandError, type CliIo } from './cli.js';
import { ControlError, controlRequest, findMountOf, failureText } from '../src/mount/control.js';

const USAGE = 'usage: scoutfs sync MOUNT-PATH\n';

/** Run a control request, turning ControlError into the CLI failure line. */
export async function withControl<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    if (e instanceof ControlError) throw new CommandError(failureText(e.errno, e.message));
    throw e;
  }
}

export async function run(args: string[], _io: CliIo): Promise<number> {
  const { positionals } = parse(args, {}, USAGE);
  if (positionals.length !== 1) throw new UsageError('need the mount path', USAGE);
  await withControl(async () => controlRequest(findMountOf(positionals[0]!).mnt, { op: 'sync' }));
  return 0;
}
