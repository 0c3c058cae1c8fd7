/*
 * `scoutfs mount -o metadev_path=META[,quorum_slot_nr=N] DATA-DEVICE MNT
 *  [-d|--detach] [--pid-file F] [--log-file F]`
 *
 * Foreground by default: the daemon (src/mount/daemon.ts) runs in this
 * process, logs to stderr and exits when the mount is stopped (SIGTERM,
 * SIGINT, `umount MNT`).  With -d the same command is re-run without -d as
 * a detached child whose output goes to the log file; the parent waits for
 * its "mounted " line (exit 0, pid file written) or for it to exit (exit 1
 * with the log's last lines).  Options are parsed strictly: an unknown or
 * malformed option is a usage error and nothing is mounted.
 */
import { spawn } from 'node:child_process';
import { openSync, closeSync, readFileSync, writeFileSync, mkdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { parse, UsageError, CommandError, type CliIo } from './cli.js';
import { parseMountOptions, MountOptionError, runDaemon } from '../src/mount/daemon.js';
import { DEFAULT_RUN_DIR, mountKey } from '../src/mount/control.js';

export const USAGE = `usage: scoutfs mount -o metadev_path=META[,quorum_slot_nr=N][,transport=T] DATA-DEVICE MOUNT-POINT
  -o OPTIONS          metadev_path=PATH (required), quorum_slot_nr=N (0-14),
                      transport=kernel (default: our FUSE protocol over /dev/fuse, kernel caches
                      kept coherent by invalidation) or transport=fuse-native (libfuse2's path API:
                      no invalidation, ioctl, fallocate, SEEK_DATA/HOLE, O_TMPFILE or
                      RENAME_NOREPLACE; one node only), writeback_cache (kernel transport:
                      write(2) acknowledged from the page cache; a full device is then
                      reported at fsync/close only)
  -d, --detach        run in the background; wait until mounted
      --pid-file F    with -d: where to write the daemon pid (default ${DEFAULT_RUN_DIR}/<mount>.pid)
      --log-file F    with -d: where the daemon logs (default ${DEFAULT_RUN_DIR}/<mount>.log)
`;

export async function run(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(args, {
    options: { type: 'string', short: 'o' },
    detach: { type: 'boolean', short: 'd' },
    'pid-file': { type: 'string' },
    'log-file': { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  }, USAGE);
  if (values.help) {
    io.out(USAGE);
    return 0;
  }
  if (positionals.length !== 2) throw new UsageError('need DATA-DEVICE and MOUNT-POINT', USAGE);
  if (values.options === undefined) throw new UsageError('-o metadev_path=PATH is required', USAGE);
  let opts;
  try {
    opts = parseMountOptions(values.options);
  } catch (e) {
    if (e instanceof MountOptionError) throw new UsageError(e.message, USAGE);
    throw e;
  }
  const [dataPath, mnt] = positionals as [string, string];
  if (!values.detach) {
    if (values['pid-file'] || values['log-file']) throw new UsageError('--pid-file and --log-file need -d', USAGE);
    const pidFile = process.env.SCOUTFS_DAEMON_PID_FILE;
    if (pidFile) writeFileSync(pidFile, `${process.pid}\n`);
    const code = await runDaemon({ dataPath, mnt, opts, log: (l) => io.err(l + '\n') });
    if (pidFile) rmSync(pidFile, { force: true });
    // The FUSE thread keeps the event loop alive: exit explicitly.
    process.exit(code);
  }
  const key = mountKey(mnt);
  const pidFile = values['pid-file'] ?? join(DEFAULT_RUN_DIR, `${key}.pid`);
  const logFile = values['log-file'] ?? join(DEFAULT_RUN_DIR, `${key}.log`);
  mkdirSync(dirname(pidFile), { recursive: true });
  mkdirSync(dirname(logFile), { recursive: true });
  rmSync(pidFile, { force: true });
  const fd = openSync(logFile, 'a');
  const startAt = readFileSync(logFile).length;
  const childArgs = [process.argv[1]!, 'mount', '-o', values.options, dataPath, mnt];
  const child = spawn(process.execPath, childArgs, {
    detached: true, stdio: ['ignore', fd, fd], env: { ...process.env, SCOUTFS_DAEMON_PID_FILE: pidFile },
  });
  closeSync(fd);
  let exited: number | null = null;
  child.on('exit', (c) => { exited = c ?? 1; });
  for (;;) {
    const text = readFileSync(logFile, 'utf8').slice(startAt);
    if (/^mounted \S+ at /m.test(text)) {
      child.unref();
      io.out(`scoutfs mount: daemon pid ${child.pid} mounted ${mnt} (log ${logFile}, pid file ${pidFile})\n`);
      return 0;
    }
    if (exited !== null) throw new CommandError(`daemon exited ${exited}: ${text.trim().split('\n').slice(-3).join(' / ')}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
