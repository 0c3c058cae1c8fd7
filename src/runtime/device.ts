/*
 * BlockDevice: positional reads and writes of a metadata or data device.
 *
 * Everything above src/runtime/ reads and writes devices through this
 * interface, so tests use MemoryBlockDevice (memdevice.ts) and the simulator
 * wraps either in a FaultDevice (faultdevice.ts) that loses unflushed writes.
 *
 * FileBlockDevice opens a regular file or a block device (a loop device in
 * tests and the harness) and does positional I/O on its fd: no seek state,
 * so concurrent reads and writes at different offsets are fine.  flush() is
 * fdatasync: a write is durable only after a flush returned, and the commit
 * order above (blocks, flush, super, flush) depends on exactly that.
 *
 * The size of a regular file is in fstat.  The size of a block device is
 * not (st_size is 0), and Node has no ioctl(BLKGETSIZE64); we read
 * /sys/dev/block/MAJ:MIN/size (512-byte sectors) using the major and minor
 * of st_rdev.  Rejected: lseek(SEEK_END), which Node does not expose;
 * reading until EOF, slow and racy.  Other file types are refused (ENODEV).
 *
 * Bounds are checked before any I/O: a read or write that does not lie
 * wholly inside the device is FsError('EIO') naming the device, the offset
 * and the size, never a short or zero-filled buffer.  A short read inside
 * the bounds (the file shrank under us) is EIO too.  The block layer turns a
 * ref that points past the end into a CorruptionError naming the blkno,
 * since there the bad number came from disk.  Writing to a device opened
 * read-only is EROFS.  Use after close() is our bug and asserts.
 */
import assert from 'node:assert/strict';
import { read as fdRead, write as fdWrite } from 'node:fs';
import { open, readFile, type FileHandle } from 'node:fs/promises';
import { FsError } from '../format/errors.js';

export interface BlockDevice {
  readonly path: string;
  readonly sizeBytes: bigint;
  read(off: bigint, len: number): Promise<Uint8Array>;
  write(off: bigint, data: Uint8Array): Promise<void>;
  flush(): Promise<void>;
  close(): Promise<void>;
}

/** Throw EIO unless [off, off+len) lies inside a device of sizeBytes. */
export function checkRange(path: string, sizeBytes: bigint, op: 'read' | 'write', off: bigint, len: number): void {
  assert(Number.isSafeInteger(len) && len >= 0, `${op} length must be a non-negative integer: ${len}`);
  if (off < 0n || off + BigInt(len) > sizeBytes) {
    throw new FsError('EIO', `${path}: ${op} of ${len} bytes at offset ${off} is past the end of the device (${sizeBytes} bytes)`);
  }
}

/** Linux new_decode_dev(): major and minor of a 64-bit dev_t. */
export function decodeDev(rdev: bigint): { major: bigint; minor: bigint } {
  const major = ((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn);
  const minor = (rdev & 0xffn) | ((rdev >> 12n) & ~0xffn);
  return { major, minor };
}

/** Size in bytes of the block device with this st_rdev, from sysfs. */
export async function blockDeviceSize(path: string, rdev: bigint): Promise<bigint> {
  const { major, minor } = decodeDev(rdev);
  const sysPath = `/sys/dev/block/${major}:${minor}/size`;
  let text: string;
  try {
    text = await readFile(sysPath, 'utf8');
  } catch (e) {
    throw new FsError('ENODEV', `${path}: cannot read block device size from ${sysPath}: ${(e as Error).message}`);
  }
  const t = text.trim();
  if (!/^\d+$/.test(t)) throw new FsError('ENODEV', `${path}: ${sysPath} holds "${t}", not a sector count`);
  return BigInt(t) * 512n;
}

/*
 * pread/pwrite through the callback API on the handle's fd: FileHandle's
 * promise methods cost about twice as much per call (measured on 128 KiB
 * writes to a loop device), and every FUSE write makes at least one.  The
 * FileHandle still owns the fd (closed through it).
 */
function pread(fd: number, buf: Uint8Array, at: number, len: number, pos: number): Promise<number> {
  return new Promise((resolve, reject) => fdRead(fd, buf, at, len, pos, (e, n) => (e ? reject(e) : resolve(n))));
}

function pwrite(fd: number, buf: Uint8Array, at: number, len: number, pos: number): Promise<number> {
  return new Promise((resolve, reject) => fdWrite(fd, buf, at, len, pos, (e, n) => (e ? reject(e) : resolve(n))));
}

export class FileBlockDevice implements BlockDevice {
  readonly path: string;
  readonly sizeBytes: bigint;
  readonly readOnly: boolean;
  readonly isBlockDevice: boolean;
  private fh: FileHandle | null;

  private constructor(path: string, fh: FileHandle, sizeBytes: bigint, readOnly: boolean, isBlockDevice: boolean) {
    this.path = path;
    this.fh = fh;
    this.sizeBytes = sizeBytes;
    this.readOnly = readOnly;
    this.isBlockDevice = isBlockDevice;
  }

  static async open(path: string, opts: { readOnly?: boolean } = {}): Promise<FileBlockDevice> {
    const readOnly = opts.readOnly ?? false;
    const fh = await open(path, readOnly ? 'r' : 'r+');
    try {
      const st = await fh.stat({ bigint: true });
      let size: bigint;
      if (st.isFile()) {
        size = st.size;
      } else if (st.isBlockDevice()) {
        size = await blockDeviceSize(path, st.rdev);
      } else {
        throw new FsError('ENODEV', `${path}: not a regular file or block device`);
      }
      return new FileBlockDevice(path, fh, size, readOnly, st.isBlockDevice());
    } catch (e) {
      await fh.close();
      throw e;
    }
  }

  async read(off: bigint, len: number): Promise<Uint8Array> {
    const fh = this.handle();
    checkRange(this.path, this.sizeBytes, 'read', off, len);
    assert(off + BigInt(len) <= BigInt(Number.MAX_SAFE_INTEGER), 'read offset exceeds 2^53');
    const buf = new Uint8Array(len);
    let done = 0;
    while (done < len) {
      const bytesRead = await pread(fh.fd, buf, done, len - done, Number(off) + done);
      if (bytesRead === 0) {
        throw new FsError('EIO', `${this.path}: short read at offset ${off + BigInt(done)}: ${done} of ${len} bytes (device shrank?)`);
      }
      done += bytesRead;
    }
    return buf;
  }

  async write(off: bigint, data: Uint8Array): Promise<void> {
    const fh = this.handle();
    if (this.readOnly) throw new FsError('EROFS', `${this.path}: opened read-only`);
    checkRange(this.path, this.sizeBytes, 'write', off, data.length);
    assert(off + BigInt(data.length) <= BigInt(Number.MAX_SAFE_INTEGER), 'write offset exceeds 2^53');
    let done = 0;
    while (done < data.length) {
      const bytesWritten = await pwrite(fh.fd, data, done, data.length - done, Number(off) + done);
      if (bytesWritten === 0) throw new FsError('EIO', `${this.path}: write made no progress at offset ${off + BigInt(done)}`);
      done += bytesWritten;
    }
  }

  async flush(): Promise<void> {
    const fh = this.handle();
    if (this.readOnly) return;
    await fh.datasync();
  }

  async close(): Promise<void> {
    const fh = this.fh;
    this.fh = null;
    if (fh !== null) await fh.close();
  }

  private handle(): FileHandle {
    assert(this.fh !== null, `${this.path}: device used after close`);
    return this.fh;
  }
}
