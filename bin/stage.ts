/*
 * `scoutfs stage ARCHIVE FILE -V VERSION [-o OFFSET] [-l LENGTH]`
 * (PROTOCOL.md 9.3 STAGE, 9.4): copy LENGTH bytes from the start of
 * ARCHIVE into FILE's offline region at OFFSET, without changing FILE's
 * data_version, data_seq or times; tasks waiting for the region go on.
 * VERSION must be FILE's data_version (ESTALE otherwise).  OFFSET (default
 * 0) must be 4 KiB aligned; LENGTH defaults to ARCHIVE's size (a pipe is
 * read to its end), and the region must end on a 4 KiB boundary or at
 * FILE's size.
 *
 * A regular ARCHIVE is read by the mount itself, as /proc/<pid>/fd/<fd> of
 * the file this command opened (src/mount/stagefile.ts): no bytes cross
 * the control socket.  Otherwise (a pipe, a device),
 * the bytes travel to the mount over its control channel in pieces of
 * CHUNK bytes, each a stage request of its own (the reference calls the
 * STAGE ioctl once per buffer), with up to DEPTH pieces in flight so
 * reading the archive and staging overlap.  DEPTH + 1 buffers are reused
 * in turn: a buffer is filled again only after its request was answered
 * (so all of its bytes were sent and used).  A failed piece stops the stage: the
 * pieces before it stay staged, as with the reference.  An ARCHIVE shorter
 * than LENGTH is an error (EIO) after what it held was staged.
 */
import { open } from 'node:fs/promises';
import { parse, parseU64, UsageError, type CliIo } from './cli.js';
import { ControlError, ControlSession } from '../src/mount/control.js';
import { withControl } from './sync.js';
import { scoutfsFile } from './target.js';

const USAGE = 'usage: scoutfs stage ARCHIVE-FILE FILE -V|--data-version VERSION [-o|--offset OFFSET] [-l|--length LENGTH]\n';
/** Bytes per stage request: a multiple of 4 KiB. */
export const CHUNK = 8 << 20;
/** Stage requests in flight. */
export const DEPTH = 4;

export async function run(args: string[], _io: CliIo): Promise<number> {
  const { values, positionals } = parse(args, {
    'data-version': { type: 'string', short: 'V' }, version: { type: 'string' },
    offset: { type: 'string', short: 'o' }, length: { type: 'string', short: 'l' },
  }, USAGE);
  if (positionals.length !== 2) throw new UsageError('need ARCHIVE-FILE and FILE', USAGE);
  const [archive, file] = positionals as [string, string];
  const vs = values['data-version'] ?? values.version;
  const vers = vs === undefined ? 0n : parseU64(vs, 'VERSION', USAGE, false);
  if (vers === 0n) throw new UsageError('must provide file version with --data-version', USAGE);
  const offset = values.offset === undefined ? 0n : parseU64(values.offset, 'OFFSET', USAGE);
  const lenArg = values.length === undefined ? null : parseU64(values.length, 'LENGTH', USAGE);
  await withControl(async () => {
    const { mnt, rel } = scoutfsFile(file, { write: true });
    let fh;
    try {
      fh = await open(archive, 'r');
    } catch (e) {
      throw new ControlError((e as NodeJS.ErrnoException).code ?? 'EIO', `${archive}: ${(e as Error).message}`);
    }
    const session = await ControlSession.open(mnt);
    try {
      const st = await fh.stat({ bigint: true });
      if (st.isFile()) {
        // A regular file: the mount reads it itself (src/mount/stagefile.ts).
        await session.request({
          op: 'stage-file', path: rel, data_version: vers.toString(), offset: offset.toString(),
          ...(lenArg === null ? {} : { length: lenArg.toString() }), source: `/proc/${process.pid}/fd/${fh.fd}`,
        });
        return;
      }
      // null: read to the end (a pipe, or no -l on something without a size)
      const length = lenArg ?? (st.isFile() ? st.size : null);
      let sent = 0n;
      const bufs = Array.from({ length: DEPTH + 1 }, () => Buffer.allocUnsafe(CHUNK));
      const inFlight: Promise<unknown>[] = [];
      const drain = async (keep: number): Promise<void> => {
        while (inFlight.length > keep) await inFlight.shift();
      };
      for (let n = 0; ; n++) {
        const want = length === null ? CHUNK : Number(length - sent < BigInt(CHUNK) ? length - sent : BigInt(CHUNK));
        if (want === 0) break;
        // bufs[n % (DEPTH + 1)] was last sent DEPTH + 1 requests ago: answered below.
        await drain(DEPTH - 1);
        const buf = bufs[n % (DEPTH + 1)]!;
        let got = 0;
        while (got < want) {
          const { bytesRead } = await fh.read(buf, got, want - got, null);
          if (bytesRead === 0) break;
          got += bytesRead;
        }
        if (got > 0) {
          const p = session.request({ op: 'stage', path: rel, data_version: vers.toString(), offset: (offset + sent).toString() }, buf.subarray(0, got));
          p.catch(() => {}); // seen when drained
          inFlight.push(p);
          sent += BigInt(got);
        }
        if (got < want) {
          await drain(0);
          if (length !== null) throw new ControlError('EIO', `${archive} ended after ${sent} of ${length} bytes`);
          break;
        }
      }
      await drain(0);
    } finally {
      session.close();
      await fh.close();
    }
  });
  return 0;
}
