/*
 * harness/scenarios.ts owns the built-in scenarios and the placeholder node
 * daemon they run until the scoutfs node daemon exists.
 *
 * The placeholder is a real long-running process (`node -e`), not a mock: it
 * opens its device (loop device or image) read-write, logs "ready", then
 * every heartbeatMs writes a heartbeat counter to the first 8 bytes of the
 * device (fsync'd) and logs the same number.  On SIGTERM it logs "stopping
 * at heartbeat N" and exits 0.  So a scenario can check, after stopping it,
 * that the device holds exactly the last number the node logged: the path
 * from node to device to image ran, and shutdown was clean.  When the
 * scoutfs daemon arrives it replaces `placeholderDaemon` (a NodeDaemon); the
 * scenarios keep their shape.
 *
 * Scenarios:
 *   placeholder     N nodes on N loop devices (optionally --netns), wait for
 *                   readiness through the logs, let them beat a seeded number
 *                   of times, stop them in a seeded order, check each device.
 *   selftest-fail   Sets up everything the harness can make (loop devices,
 *                   an ext4 loop mount, a tmpfs, the private network, nodes)
 *                   and then throws: proves a failed run leaves nothing.
 *   selftest-hang   The same setup, then waits forever: proves the run
 *                   timeout and the signal hooks leave nothing.
 * Root-only parts (loop, mounts, namespaces) are skipped with a log line
 * when not root; the image files are used directly then.
 */
import { open, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { isRoot } from './sys.js';
import { logMatches, type NodeProc } from './proc.js';
import { registerScenario, type NodeDaemon, type RunContext } from './runner.js';

const PLACEHOLDER_SOURCE = String.raw`
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

export const placeholderDaemon: NodeDaemon = {
  name: 'placeholder node',
  command(_ctx, node) {
    return {
      command: process.execPath,
      args: ['-e', PLACEHOLDER_SOURCE],
      env: { HEARTBEAT_MS: '100' },
    };
  },
  ready(_ctx, node, proc) {
    return logMatches(proc.logPath, new RegExp(`^node ${node.index} pid=\\d+ .* ready$`, 'm'));
  },
  readyTimeoutMs: 15_000,
};

/** Highest heartbeat a placeholder node has logged. */
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
    procs[i] = await ctx.startNode(placeholderDaemon, { index: i, device: devices[i]!.path, mountPoint: null });
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

registerScenario({
  name: 'placeholder',
  description: 'N placeholder nodes on loop devices: start, wait ready via logs, heartbeat, stop, check devices',
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
  description: 'harness self-test: set up loops, mounts, netns and nodes, then fail on purpose',
  defaultNodes: 2,
  defaultTimeoutMs: 60_000,
  async run(ctx) {
    await setupEverything(ctx);
    throw new Error('selftest-fail: failing on purpose after setup');
  },
});

registerScenario({
  name: 'selftest-hang',
  description: 'harness self-test: set up loops, mounts, netns and nodes, then hang until the timeout or a signal',
  defaultNodes: 2,
  defaultTimeoutMs: 10_000,
  async run(ctx) {
    await setupEverything(ctx);
    await writeFile(join(ctx.runDir, 'hanging'), `${process.pid}\n`);
    ctx.log('set up; hanging');
    await ctx.waitFor(() => false, { timeoutMs: 24 * 3600 * 1000, intervalMs: 200, what: 'nothing (hangs on purpose)' });
  },
});
