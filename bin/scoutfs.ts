/*
 * The `scoutfs` command: dispatches to one module per subcommand in bin/.
 * Each subcommand exports `run(args: string[], io: CliIo): Promise<number>`
 * and returns the exit status; output goes through `io` so tests can capture
 * it.  A usage error exits 2 with a message and the subcommand's usage; a
 * failure prints `scoutfs: <cmd> failed: <reason>` and exits 1 (a bare
 * CommandError prints only the reason: mkfs's refusals, worded as the
 * reference scoutfs mkfs words them).
 */
import { realIo, type CliIo, UsageError, CommandError } from './cli.js';

type Runner = (args: string[], io: CliIo) => Promise<number>;

const COMMANDS: Record<string, { summary: string; load: () => Promise<Runner> }> = {
  mkfs: { summary: 'make a new scoutfs filesystem on a meta and a data device', load: async () => (await import('./mkfs.js')).run },
  fsck: { summary: 'check a volume read-only: every block verified and accounted for', load: async () => (await import('./fsck.js')).run },
  print: { summary: 'print every metadata block reachable from the super block', load: async () => (await import('./print.js')).run },
  mount: { summary: 'mount a filesystem through FUSE (foreground, or -d to detach)', load: async () => (await import('./mount.js')).run },
  'walk-inodes': { summary: 'list inodes by meta_seq or data_seq index', load: async () => (await import('./walk-inodes.js')).run },
  stat: { summary: 'print scoutfs per-inode fields of a file', load: async () => (await import('./stat.js')).run },
  'read-xattr-totals': { summary: 'print the totals of .totl. xattrs', load: async () => (await import('./read-xattr-totals.js')).run },
  'search-xattrs': { summary: 'list inodes with a .srch. xattr of a name', load: async () => (await import('./search-xattrs.js')).run },
  statfs: { summary: 'print scoutfs volume fields of a mount', load: async () => (await import('./statfs.js')).run },
  df: { summary: 'print metadata and data block usage of a mount', load: async () => (await import('./df.js')).run },
  sync: { summary: 'commit the open transaction of a mount', load: async () => (await import('./sync.js')).run },
  counters: { summary: 'print every counter of a mount (transactions, items, locks...)', load: async () => (await import('./counters.js')).run },
  release: { summary: 'release a file region: its blocks go offline (archive)', load: async () => (await import('./release.js')).run },
  stage: { summary: 'stage archived bytes back into an offline file region', load: async () => (await import('./stage.js')).run },
  'data-waiting': { summary: 'list the offline blocks tasks are waiting for', load: async () => (await import('./data-waiting.js')).run },
  'data-wait-err': { summary: 'fail the tasks waiting for offline blocks with an errno', load: async () => (await import('./data-wait-err.js')).run },
  setattr: { summary: 'restore data_version, size, offline state and times of a new file', load: async () => (await import('./setattr.js')).run },
  'move-blocks': { summary: 'move whole-block extents from one file to another', load: async () => (await import('./move-blocks.js')).run },
  'ino-path': { summary: 'print the paths of an inode number', load: async () => (await import('./ino-path.js')).run },
  'list-hidden-xattrs': { summary: 'print the scoutfs.hide. xattr names of a file', load: async () => (await import('./list-hidden-xattrs.js')).run },
  'change-format-version': { summary: 'set the format version of unmounted devices', load: async () => (await import('./change-format-version.js')).run },
  'resize-devices': { summary: 'grow the space a volume uses on grown, unmounted devices', load: async () => (await import('./resize-devices.js')).run },
};

function usage(): string {
  const lines = ['usage: scoutfs <command> [options] [args]', '', 'commands:'];
  for (const [name, c] of Object.entries(COMMANDS)) lines.push(`  ${name.padEnd(19)}${c.summary}`);
  return lines.join('\n') + '\n';
}

export async function main(argv: string[], io: CliIo = realIo()): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd === undefined || cmd === '-h' || cmd === '--help' || cmd === 'help') {
    io.out(usage());
    return cmd === undefined ? 2 : 0;
  }
  const c = COMMANDS[cmd];
  if (!c) {
    io.err(`scoutfs: unknown command '${cmd}'\n${usage()}`);
    return 2;
  }
  try {
    return await (await c.load())(rest, io);
  } catch (e) {
    if (e instanceof UsageError) {
      io.err(`scoutfs ${cmd}: ${e.message}\n${e.usage}`);
      return 2;
    }
    if (e instanceof CommandError) {
      io.err(e.bare ? `${e.message}\n` : `scoutfs: ${cmd} failed: ${e.message}\n`);
      return 1;
    }
    throw e;
  }
}
