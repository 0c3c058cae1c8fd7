/*
 * Staging from a regular archive file the daemon reads itself (the control
 * channel's `stage-file`): `scoutfs stage` hands over the file it opened as
 * /proc/<its pid>/fd/<fd> instead of sending the bytes through the control
 * socket, which saves the CLI process's reads, two socket copies and the
 * reassembly of every 8 MiB piece (issue 13: staging at least 0.8x the
 * write rate).  Semantics are those of staging the same bytes in pieces:
 * the archive is read from its start, each STAGE_UNIT_BYTES piece is one
 * Fs.stageData (data_version checked each time), a failure leaves the
 * pieces before it staged, and an archive shorter than `length` is EIO
 * after what it held was staged.
 *
 * Only regular files: a read of a pipe could block one of libuv's four
 * threadpool threads for as long as its writer likes, and the data path of
 * the whole mount runs on those threads; pipes go through the socket
 * (bin/stage.ts).  The next piece is read while the current one is
 * staged.  Root only, like the control channel itself.
 */
import { open } from 'node:fs/promises';
import { FsError } from '../format/errors.js';
import type { Fs } from '../fs/api.js';
import { STAGE_UNIT_BYTES } from '../fs/archive.js';

export async function stageFromFile(
  fs: Fs, ino: bigint, dataVersion: bigint, offset: bigint, length: bigint | null, source: string,
): Promise<bigint> {
  if (!/^\/proc\/\d+\/fd\/\d+$/.test(source)) throw new FsError('EINVAL', `stage source ${source} is not /proc/PID/fd/FD`);
  let fh;
  try {
    fh = await open(source, 'r');
  } catch (e) {
    throw new FsError('EBADF', `cannot open the archive ${source}: ${(e as Error).message}`);
  }
  try {
    const st = await fh.stat({ bigint: true });
    if (!st.isFile()) throw new FsError('EINVAL', `the archive ${source} is not a regular file`);
    const total = length ?? st.size;
    const bufs = [Buffer.allocUnsafe(STAGE_UNIT_BYTES), Buffer.allocUnsafe(STAGE_UNIT_BYTES)];
    const readAt = async (buf: Buffer, pos: bigint): Promise<Buffer> => {
      const want = Number(total - pos < BigInt(STAGE_UNIT_BYTES) ? total - pos : BigInt(STAGE_UNIT_BYTES));
      let got = 0;
      while (got < want) {
        const { bytesRead } = await fh.read(buf, got, want - got, Number(pos) + got);
        if (bytesRead === 0) break;
        got += bytesRead;
      }
      return buf.subarray(0, got);
    };
    let done = 0n;
    let cur = await readAt(bufs[0]!, 0n);
    for (let n = 1; cur.length > 0; n++) {
      const at = done + BigInt(cur.length);
      const next = at < total ? readAt(bufs[n % 2]!, at) : Promise.resolve(Buffer.alloc(0));
      next.catch(() => {}); // awaited below
      await fs.stageData(ino, dataVersion, offset + done, cur);
      done = at;
      cur = await next;
    }
    if (done < total) throw new FsError('EIO', `the archive ended after ${done} of ${total} bytes`);
    return done;
  } finally {
    await fh.close();
  }
}
