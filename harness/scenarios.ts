/*
 * harness/scenarios.ts owns the built-in scenarios and the node daemons
 * they run: the scoutfs mount, and a heartbeat process for the harness's
 * own self-tests.
 *
 * scoutfsMountDaemon runs `bin/scoutfs mount` (the real daemon, a child
 * process) over a node's metadata and data devices; it is ready when its
 * FUSE mount is in /proc/mounts and its log says "mounted ".  Stopping it
 * (SIGTERM) commits, unmounts and exits 0.  A volume takes one mount today
 * (the server runs in the mount's process; quorum and shared volumes are
 * not built), so each node gets its own volume: the `mount` scenario runs
 * N independent single-node filesystems, not a cluster.  The quorum slot
 * written by mkfs names a random 127.x.y.z address from the seed; nothing
 * listens on it yet.
 *
 * The heartbeat process is NOT a scoutfs node: a `node -e` process that
 * opens its device read-write, logs "ready", then every heartbeatMs writes
 * a heartbeat counter to the first 8 bytes of the device (fsync'd) and logs
 * the same number; on SIGTERM it logs "stopping at heartbeat N" and exits
 * 0.  It exists to test the harness itself (processes, logs, loop devices,
 * namespaces, ordered teardown) cheaply and without FUSE.
 *
 * Scenarios:
 *   mount           N scoutfs mounts, each on its own two loop devices:
 *                   mkfs, mount (the daemon as the node), write a seeded
 *                   file through the kernel and read it back, stop the
 *                   nodes in a seeded order (exit 0), fsck each volume
 *                   clean.  Needs root and FUSE; --netns is refused (ip
 *                   netns exec gives each node its own mount namespace, so
 *                   its FUSE mount would be invisible here).
 *   heartbeat       harness self-test: N heartbeat processes on N loop
 *                   devices (optionally --netns), wait for readiness
 *                   through the logs, let them beat a seeded number of
 *                   times, stop them in a seeded order, check each device.
 *   selftest-fail   Sets up everything the harness can make (loop devices,
 *                   an ext4 loop mount, a tmpfs, the private network,
 *                   heartbeat nodes) and then throws: proves a failed run
 *                   leaves nothing.
 *   selftest-hang   The same setup, then waits forever: proves the run
 *                   timeout and the signal hooks leave nothing.
 * Root-only parts (loop, mounts, namespaces) of the self-tests are skipped
 * with a log line when not root; the image files are used directly then.
 */
import { existsSync } from 'node:fs';
import { mkdir, open, readFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isRoot, sh, which } from './sys.js';
import { logMatches, mountAppears, type NodeProc } from './proc.js';
import { registerScenario, type NodeDaemon, type RunContext } from './runner.js';

/** bin/scoutfs of this checkout (dist/harness/ is two levels below it). */
export const SCOUTFS_CLI = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'scoutfs');

const HEARTBEAT_SOURCE = String.raw`
const fs = require('fs');
const id = process.env.SCOUTFS_NODE_ID;
const dev = process.env.SCOUTFS_DEVICE;
const every = Number(process.env.HEARTBEAT_MS || 200);
const fd = dev ? fs.openSync(dev, 'r+') : null;
const buf = Buffer.alloc(8);
let n = 0;
console.log('node ' + id + ' pid=' + process.pid + ' device=' + (dev || '-') + ' addr=' + (process.env.SCOUTFS_NODE_ADDR || '-') + ' ready');
const beat = setInterval(() => {
  n++;
  if (fd !== null) { buf.writeBigUInt64LE(BigInt(n)); fs.writeSync(fd, buf, 0, 8, 0); fs.fsyncSync(fd); }
  console.log('node ' + id + ' heartbeat ' + n);
}, every);
process.on('SIGTERM', () => {
  clearInterval(beat);
  if (fd !== null) fs.closeSync(fd);
  console.log('node ' + id + ' stopping at heartbeat ' + n);
  process.exit(0);
});
`;

/** The heartbeat process of the harness self-tests (not a scoutfs node; see the header). */
export const heartbeatDaemon: NodeDaemon = {
  name: 'heartbeat process',
  command(_ctx, _node) {
    return {
      command: process.execPath,
      args: ['-e', HEARTBEAT_SOURCE],
      env: { HEARTBEAT_MS: '100' },
    };
  },
  ready(_ctx, node, proc) {
    return logMatches(proc.logPath, new RegExp(`^node ${node.index} pid=\\d+ .* ready$`, 'm'));
  },
  readyTimeoutMs: 15_000,
};

/** Highest heartbeat a heartbeat process has logged. */
export async function lastHeartbeat(proc: NodeProc): Promise<number> {
  let n = 0;
  for (const m of (await proc.log()).matchAll(/ heartbeat (\d+)$/gm)) n = Math.max(n, Number(m[1]));
  return n;
}

/** The heartbeat counter at offset 0 of an image. */
export async function deviceHeartbeat(imagePath: string): Promise<number> {
  const fh = await open(imagePath, 'r');
  try {
    const buf = Buffer.alloc(8);
    await fh.read(buf, 0, 8, 0);
    return Number(buf.readBigUInt64LE(0));
  } finally {
    await fh.close();
  }
}

function shuffled<T>(xs: T[], random: () => number): T[] {
  const a = [...xs];
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [a[i], a[j]] = [a[j]!, a[i]!];
  }
  return a;
}

interface Started {
  procs: NodeProc[];
  images: string[];
}

/** Images + loop devices + (optional) network + N ready nodes. */
async function startCluster(ctx: RunContext, useNetwork: boolean): Promise<Started> {
  const devices: { image: string; path: string }[] = [];
  for (let i = 0; i < ctx.nodes; i++) {
    const img = await ctx.createImage(`node${i}`, 64 * 1024 * 1024);
    const dev = await ctx.attachLoop(img);
    devices.push({ image: img.path, path: dev.path });
  }
  if (useNetwork) await ctx.network();
  const procs: NodeProc[] = new Array(ctx.nodes);
  for (const i of shuffled([...Array(ctx.nodes).keys()], ctx.random)) {
    procs[i] = await ctx.startNode(heartbeatDaemon, { index: i, device: devices[i]!.path, mountPoint: null });
  }
  return { procs, images: devices.map((d) => d.image) };
}

/** Everything the harness can create, for the self-tests. */
async function setupEverything(ctx: RunContext): Promise<Started> {
  const started = await startCluster(ctx, true);
  if (isRoot()) {
    const img = await ctx.createImage('ext4', 64 * 1024 * 1024);
    const dev = await ctx.attachLoop(img);
    const m = await ctx.mountExt4(dev.path, 'ext4');
    await writeFile(join(m, 'hello'), 'mounted by selftest\n');
    await ctx.mountTmpfs('tmpfs', 16 * 1024 * 1024);
  } else {
    ctx.log('not root: skipping the ext4 loop mount and the tmpfs');
  }
  return started;
}

/** A scoutfs mount of one node's volume (see the header); node.device is the data device. */
export function scoutfsMountDaemon(metaDevice: string): NodeDaemon {
  return {
    name: 'scoutfs mount',
    command(_ctx, node) {
      if (node.device === null || node.mountPoint === null) throw new Error(`${node.name}: a scoutfs mount needs a data device and a mount point`);
      return {
        command: process.execPath,
        args: [SCOUTFS_CLI, 'mount', '-o', `metadev_path=${metaDevice},quorum_slot_nr=0`, node.device, node.mountPoint],
      };
    },
    ready(_ctx, node, proc) {
      const up = mountAppears(node.mountPoint!);
      const said = logMatches(proc.logPath, /^mounted /m);
      return async () => (await up()) && (await said());
    },
    readyTimeoutMs: 60_000,
  };
}

/** Deterministic bytes of node i's file (seeded length, position-dependent content). */
function nodeFile(i: number, len: number): Buffer {
  const b = Buffer.alloc(len);
  for (let k = 0; k < len; k++) b[k] = (k * 31 + i * 7 + (k >> 12)) & 0xff;
  return b;
}

registerScenario({
  name: 'mount',
  description: 'N scoutfs mounts (own volume each, loop devices): mkfs, mount, write and read back, stop in seeded order, fsck',
  defaultNodes: 1,
  defaultTimeoutMs: 300_000,
  async run(ctx) {
    if (ctx.options.netns === true) throw new Error('mount: --netns is not supported (ip netns exec gives the node its own mount namespace; its FUSE mount would be invisible)');
    if (!isRoot() || !existsSync('/dev/fuse') || !(await which('fusermount'))) throw new Error('mount: needs root, /dev/fuse and fusermount');
    const vols: { meta: string; data: string; mnt: string; proc: NodeProc; file: Buffer }[] = [];
    for (let i = 0; i < ctx.nodes; i++) {
      const meta = (await ctx.attachLoop(await ctx.createImage(`node${i}-meta`, 2 * 1024 ** 3))).path;
      const data = (await ctx.attachLoop(await ctx.createImage(`node${i}-data`, 4 * 1024 ** 3))).path;
      const addr = `127.${1 + Math.floor(ctx.random() * 254)}.${Math.floor(ctx.random() * 256)}.${1 + Math.floor(ctx.random() * 254)}`;
      const mk = await sh(process.execPath, [SCOUTFS_CLI, 'mkfs', '-A', '-Q', `0,${addr},7000`, meta, data]);
      ctx.log(`node${i}: mkfs: ${mk.stdout.split('\n').find((l) => l.includes('fsid:'))?.trim() ?? '?'} quorum slot 0 ${addr}:7000`);
      const mnt = join(ctx.runDir, 'mnt', `node${i}`);
      await mkdir(mnt, { recursive: true });
      const proc = await ctx.startNode(scoutfsMountDaemon(meta), { index: i, device: data, mountPoint: mnt });
      vols.push({ meta, data, mnt, proc, file: nodeFile(i, 1 + Math.floor(ctx.random() * (4 << 20))) });
    }
    for (const v of vols) {
      await writeFile(join(v.mnt, 'f'), v.file);
      const back = await readFile(join(v.mnt, 'f'));
      if (Buffer.compare(back, v.file) !== 0) throw new Error(`${v.proc.name}: ${v.file.length} bytes written, different bytes read back`);
    }
    for (const i of shuffled([...vols.keys()], ctx.random)) {
      const v = vols[i]!;
      const exit = await v.proc.stop(60_000);
      if (exit.code !== 0) throw new Error(`${v.proc.name} exited with ${JSON.stringify(exit)}; log tail:\n${await v.proc.logTail(20)}`);
      const fsck = await sh(process.execPath, [SCOUTFS_CLI, 'fsck', v.meta, v.data]);
      ctx.log(`${v.proc.name} stopped cleanly; ${fsck.stdout.trim()}`);
    }
  },
});

registerScenario({
  name: 'heartbeat',
  description: 'harness self-test: N heartbeat processes (not scoutfs) on loop devices: start, wait ready via logs, beat, stop, check devices',
  defaultNodes: 3,
  defaultTimeoutMs: 60_000,
  async run(ctx) {
    const { procs, images } = await startCluster(ctx, ctx.options.netns === true);
    const beats = 2 + Math.floor(ctx.random() * 4);
    await ctx.waitFor(async () => {
      for (const p of procs) if ((await lastHeartbeat(p)) < beats) return false;
      return true;
    }, { timeoutMs: 20_000, what: `${beats} heartbeats from every node` });
    for (const i of shuffled([...procs.keys()], ctx.random)) {
      const p = procs[i]!;
      const exit = await p.stop();
      if (exit.code !== 0) throw new Error(`${p.name} exited with ${JSON.stringify(exit)}`);
      const logged = await lastHeartbeat(p);
      const onDevice = await deviceHeartbeat(images[i]!);
      if (onDevice !== logged) throw new Error(`${p.name}: device holds heartbeat ${onDevice}, log says ${logged}`);
      if (!(await p.log()).includes(`stopping at heartbeat ${logged}`)) throw new Error(`${p.name} did not log a clean stop`);
      ctx.log(`${p.name} stopped cleanly at heartbeat ${logged}`);
    }
  },
});

registerScenario({
  name: 'selftest-fail',
  description: 'harness self-test: set up loops, mounts, netns and heartbeat nodes, then fail on purpose',
  defaultNodes: 2,
  defaultTimeoutMs: 60_000,
  async run(ctx) {
    await setupEverything(ctx);
    throw new Error('selftest-fail: failing on purpose after setup');
  },
});

registerScenario({
  name: 'selftest-hang',
  description: 'harness self-test: set up loops, mounts, netns and heartbeat nodes, then hang until the timeout or a signal',
  defaultNodes: 2,
  defaultTimeoutMs: 10_000,
  async run(ctx) {
    await setupEverything(ctx);
    await writeFile(join(ctx.runDir, 'hanging'), `${process.pid}\n`);
    ctx.log('set up; hanging');
    await ctx.waitFor(() => false, { timeoutMs: 24 * 3600 * 1000, intervalMs: 200, what: 'nothing (hangs on purpose)' });
  },
});
