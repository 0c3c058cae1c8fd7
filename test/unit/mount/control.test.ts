/*
 * Goal: the control channel's framing (src/mount/control.ts) over a real
 * unix socket: requests answered in order, payloads of raw bytes arriving
 * whole with their request even when sent ahead of the replies and split
 * across many socket reads, a bad payload length answered EINVAL and the
 * connection closed, errors crossing by errno name.  And the FUSE
 * adapter's test for a dead requester (requesterGone): a live process is
 * not gone, a zombie, a dead one and a reused pid are.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as net from 'node:net';
import * as fsp from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { ControlError, ControlSession, PAYLOAD_MAX, controlRequest, controlSocketPath, startControlServer } from '../../../src/mount/control.js';
import { FsError } from '../../../src/format/errors.js';
import { requesterGone } from '../../../src/fuse/adapter.js';

async function withServer(fn: (mnt: string, runDir: string, seen: { op: string; bytes: number; sum: string }[]) => Promise<void>): Promise<void> {
  const runDir = await fsp.mkdtemp(join(tmpdir(), 'sfs-ctl-'));
  const mnt = join(runDir, 'mnt');
  await fsp.mkdir(mnt);
  const seen: { op: string; bytes: number; sum: string }[] = [];
  const srv = await startControlServer(await fsp.realpath(mnt), async (req, payload) => {
    const sum = payload === null ? '' : createHash('sha1').update(payload).digest('hex');
    seen.push({ op: req.op, bytes: payload?.length ?? 0, sum });
    if (req.op === 'slow') await new Promise((r) => setTimeout(r, 50));
    if (req.op === 'fail') throw new FsError('ESTALE', 'stale');
    return { op: req.op, bytes: payload?.length ?? 0, sum };
  }, () => {}, runDir);
  try {
    await fn(mnt, runDir, seen);
  } finally {
    await srv.close();
    await fsp.rm(runDir, { recursive: true, force: true });
  }
}

test('requests and payloads arrive whole and in order, pipelined', async () => {
  await withServer(async (mnt, runDir, seen) => {
    const s = await ControlSession.open(mnt, runDir);
    const sizes = [1, 4096, 3 << 20, PAYLOAD_MAX, 77];
    const bufs = sizes.map((n, i) => Buffer.alloc(n, i + 1));
    const replies = await Promise.all([
      s.request({ op: 'slow' }),
      ...bufs.map((b, i) => s.request({ op: `p${i}` }, b)),
      s.request({ op: 'plain' }),
    ]);
    s.close();
    assert.deepEqual(replies.map((r) => r.op), ['slow', 'p0', 'p1', 'p2', 'p3', 'p4', 'plain']);
    for (let i = 0; i < bufs.length; i++) {
      assert.equal(replies[i + 1]!.bytes, sizes[i]);
      assert.equal(replies[i + 1]!.sum, createHash('sha1').update(bufs[i]!).digest('hex'));
    }
    assert.deepEqual(seen.map((x) => x.op), ['slow', 'p0', 'p1', 'p2', 'p3', 'p4', 'plain']);
    assert.equal((await controlRequest(mnt, { op: 'one' }, runDir)).op, 'one');
    await assert.rejects(controlRequest(mnt, { op: 'fail' }, runDir), (e: unknown) => e instanceof ControlError && e.errno === 'ESTALE');
  });
});

test('a bad payload length is refused and the connection closed', async () => {
  await withServer(async (mnt, runDir, seen) => {
    for (const bad of [0, -1, PAYLOAD_MAX + 1, 1.5, '7']) {
      const path = controlSocketPath(mnt, runDir);
      const reply = await new Promise<string>((resolve, reject) => {
        const sock = net.createConnection(path);
        let buf = '';
        sock.setEncoding('utf8');
        sock.on('connect', () => sock.write(JSON.stringify({ op: 'x', payload: bad }) + '\n' + 'garbage that must not be read as a request\n'));
        sock.on('data', (d: string) => { buf += d; });
        sock.on('close', () => resolve(buf));
        sock.on('error', reject);
      });
      const lines = reply.split('\n').filter((l) => l !== '');
      assert.equal(lines.length, 1, `one reply, then the connection closes (payload ${String(bad)})`);
      const r = JSON.parse(lines[0]!) as { ok: boolean; errno: string };
      assert.deepEqual([r.ok, r.errno], [false, 'EINVAL']);
    }
    assert.deepEqual(seen, [], 'nothing reached the handler');
  });
});

test('requesterGone: live, zombie, dead and reused pids', async () => {
  const child = spawn('sleep', ['30'], { stdio: 'ignore' });
  const seen: { start?: string } = {};
  assert.equal(requesterGone(child.pid!, seen), false);
  assert.equal(requesterGone(child.pid!, seen), false);
  assert.notEqual(seen.start, undefined);
  // A zombie: killed, not yet reaped by us (node reaps on 'exit'; stop that by looking right away).
  child.kill('SIGKILL');
  await new Promise((r) => child.on('exit', r));
  assert.equal(requesterGone(child.pid!, seen), true, 'gone once it died');
  // Another process under a remembered pid: a different start time.
  assert.equal(requesterGone(process.pid, { start: 'not-this' }), true);
  assert.equal(requesterGone(process.pid, {}), false);
  assert.equal(requesterGone(2 ** 22 + 12345, {}), true, 'no such pid');
});
