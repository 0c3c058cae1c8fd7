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
 * The bytes travel to the mount over its control channel in pieces of
 * CHUNK bytes, each a stage request of its own (the reference calls the
 * STAGE ioctl once per buffer), with up to two pieces in flight so reading
 * the archive and staging overlap.  A failed piece stops the stage: the
 * pieces before it stay staged, as with the reference.  An ARCHIVE shorter
 * than LENGTH is an error (EIO) after what it held was staged.
 */
import { open, stat } from 'node:fs/promises';
import { parse, parseU64, UsageError, type CliIo } from './cli.js';
import { ControlError, ControlSession } from '../src/mount/control.js';
import { withControl } from './sync.js';
import { scoutfsFile } from './target.js';

const USAGE = 'usage: scoutfs stage ARCHIVE-FILE FILE -V|--data-version VERSION [-o|--offset OFFSET] [-l|--length LENGTH]\n';
/** Bytes per stage request: a multiple of 4 KiB. */
export const CHUNK = 8 << 20;

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
      const st = await stat(archive, { bigint: true });
      // null: read to the end (a pipe, or no -l on something without a size)
      const length = lenArg ?? (st.isFile() ? st.size : null);
      let sent = 0n;
      let inFlight: Promise<unknown> | null = null;
      const send = async (buf: Buffer): Promise<void> => {
        const p = session.request({ op: 'stage', path: rel, data_version: vers.toString(), offset: (offset + sent).toString() }, buf);
        sent += BigInt(buf.length);
        const prev = inFlight;
        inFlight = p;
        p.catch(() => {}); // seen when awaited
        if (prev !== null) await prev;
      };
      for (;;) {
        const want = length === null ? CHUNK : Number(length - sent < BigInt(CHUNK) ? length - sent : BigInt(CHUNK));
        if (want === 0) break;
        const buf = Buffer.allocUnsafe(want);
        let got = 0;
        while (got < want) {
          const { bytesRead } = await fh.read(buf, got, want - got, null);
          if (bytesRead === 0) break;
          got += bytesRead;
        }
        if (got > 0) await send(got === want ? buf : buf.subarray(0, got));
        if (got < want) {
          if (inFlight !== null) await inFlight;
          if (length !== null) throw new ControlError('EIO', `${archive} ended after ${sent} of ${length} bytes`);
          break;
        }
      }
      if (inFlight !== null) await inFlight;
    } finally {
      session.close();
      await fh.close();
    }
  });
  return 0;
}
