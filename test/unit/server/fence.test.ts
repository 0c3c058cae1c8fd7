/*
 * Goal: fence requests and the server's start fencing behave as
 * PROTOCOL.md 1.6, 2.6 step 1 and 3.11 say, with a real command as the
 * agent (CommandFenceAgent runs /bin/sh scripts here):
 *   - the agent gets the rid (16 hex), the IPv4 address and the reason in
 *     SCOUTFS_FENCE_RID/ADDR/REASON; exit 0 = fenced, anything else =
 *     error, logged in one line with rid, reason, address and output;
 *   - a request not answered within 30 s (injected clock) is an error and
 *     the agent's process is killed; one request per rid; destroy drops all;
 *   - fenceOldLeaders: nothing to fence writes FENCE at once; an old leader
 *     found in the quorum blocks is fenced (reason quorum_block_leader,
 *     address of its slot) and FENCE is written after its reclaim; a
 *     failing fence, 15 s without an answer, a newer leader, or an abort
 *     fail the start with the reason.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FakeClock } from '../../../src/runtime/clock.js';
import { CommandFenceAgent, LocalFenceAgent, makeFenceAgent, procStat } from '../../../src/runtime/fenceagent.js';
import { LifecycleError } from '../../../src/format/errors.js';
import { QUORUM_EVENT } from '../../../src/format/quorum.js';
import { FenceError, FenceRequests, ServerFencing } from '../../../src/server/fence.js';
import { QuorumSlotWriter, readQuorumBlock } from '../../../src/quorum/blocks.js';
import { quorumConfig } from '../../../src/quorum/config.js';
import { quorumVolume, slotSpecs } from '../quorum/util.js';

const dir = mkdtempSync(join(tmpdir(), 'scoutfs-fence-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));

function sh(script: string): CommandFenceAgent {
  return new CommandFenceAgent(['/bin/sh', '-c', script]);
}

async function until(pred: () => boolean, what: string, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

test('the agent command gets rid, address and reason; exit 0 fences', async () => {
  const out = join(dir, 'env1');
  const lines: string[] = [];
  const reqs = new FenceRequests({
    clock: new FakeClock(), log: (l) => lines.push(l),
    agent: sh(`echo "$SCOUTFS_FENCE_RID $SCOUTFS_FENCE_ADDR $SCOUTFS_FENCE_REASON" > ${out}; echo isolated`),
  });
  const r = reqs.start(0xabcdefn, '10.1.2.3', 'client_reconnect');
  assert.equal(r.state, 'pending');
  assert.equal(reqs.start(0xabcdefn, '10.9.9.9', 'client_recovery'), r, 'one request per rid');
  await r.settled;
  assert.equal(r.state, 'fenced');
  assert.equal(r.output, 'isolated');
  assert.equal(readFileSync(out, 'utf8'), '0000000000abcdef 10.1.2.3 client_reconnect\n');
  assert.deepEqual(reqs.status(), [{ rid: '0000000000abcdef', reason: 'client_reconnect', addr: '10.1.2.3', state: 'fenced', elapsedSecs: 0 }]);
  assert.equal(reqs.nextCompleted(), r);
  reqs.free(0xabcdefn);
  assert.equal(reqs.nextCompleted(), null);
  assert.deepEqual(reqs.counters, { started: 1, fenced: 1, errors: 0, timeouts: 0 });
  assert.ok(lines.some((l) => l.includes('fence: rid 0000000000abcdef fenced (reason client_reconnect)')));
});

test('makeFenceAgent: a configured command runs through the shell, else the local agent', async () => {
  const out = join(dir, 'env0');
  const a = makeFenceAgent({ command: `echo "$SCOUTFS_FENCE_REASON" > ${out}` });
  assert.deepEqual(await a.fence({ rid: 1n, addr: '1.2.3.4', reason: 'client_recovery' }, new AbortController().signal), { ok: true, output: '' });
  assert.equal(readFileSync(out, 'utf8'), 'client_recovery\n');
  assert.ok(makeFenceAgent({ runDir: dir }) instanceof LocalFenceAgent);
  assert.ok(makeFenceAgent({ command: '  ' }) instanceof LocalFenceAgent);
});

test('a failing agent is an error logged with rid, reason, address and its output', async () => {
  const lines: string[] = [];
  const reqs = new FenceRequests({ clock: new FakeClock(), log: (l) => lines.push(l), agent: sh('echo "switch port 7 did not answer" >&2; exit 3') });
  const r = reqs.start(0x42n, '192.168.0.9', 'client_recovery');
  await r.settled;
  assert.equal(r.state, 'error');
  const line = lines.find((l) => l.includes('FAILED'));
  assert.equal(line, 'fence: FAILED to fence rid 0000000000000042 (reason client_recovery, addr 192.168.0.9) with ' +
    'command /bin/sh -c echo "switch port 7 did not answer" >&2; exit 3: switch port 7 did not answer | (exit status 3)');
  const missing = new FenceRequests({ clock: new FakeClock(), agent: new CommandFenceAgent(['/nonexistent/agent']) });
  const m = missing.start(1n, '1.2.3.4', 'client_recovery');
  await m.settled;
  assert.equal(m.state, 'error');
  assert.match(m.output, /cannot run \/nonexistent\/agent/);
});

test('no answer within 30 s is an error and the agent is killed', async () => {
  const clock = new FakeClock();
  const pidFile = join(dir, 'agent.pid');
  const reqs = new FenceRequests({ clock, agent: sh(`echo $$ > ${pidFile}; exec sleep 600`) });
  const r = reqs.start(7n, '10.0.0.7', 'client_reconnect');
  await until(() => existsSync(pidFile) && readFileSync(pidFile, 'utf8').trim() !== '', 'the agent to start');
  const pid = Number(readFileSync(pidFile, 'utf8'));
  clock.advance(29_999);
  assert.equal(r.state, 'pending');
  clock.advance(1);
  assert.equal(r.state, 'error');
  assert.match(r.output, /no answer from the fence agent .* within 30 s/);
  assert.equal(reqs.counters.timeouts, 1);
  await until(() => { const st = procStat(pid); return st === null || st.state === 'Z'; }, 'the agent process to die');
});

test('destroy drops every request and kills running agents', async () => {
  const pidFile = join(dir, 'agent2.pid');
  const reqs = new FenceRequests({ clock: new FakeClock(), agent: sh(`echo $$ > ${pidFile}; exec sleep 600`) });
  const r = reqs.start(8n, '10.0.0.8', 'client_recovery');
  await until(() => existsSync(pidFile) && readFileSync(pidFile, 'utf8').trim() !== '', 'the agent to start');
  const pid = Number(readFileSync(pidFile, 'utf8'));
  reqs.destroy();
  assert.equal(r.state, 'error');
  assert.equal(reqs.list().length, 0);
  await r.settled;
  await until(() => { const st = procStat(pid); return st === null || st.state === 'Z'; }, 'the agent process to die');
  assert.throws(() => reqs.start(9n, '1.1.1.1', 'client_recovery'), /after the server stopped/);
});

async function leaderVolume(): Promise<{ meta: Awaited<ReturnType<typeof quorumVolume>>['meta']; sb: Awaited<ReturnType<typeof quorumVolume>>['sb']; clock: FakeClock }> {
  const { meta, sb } = await quorumVolume(slotSpecs(3));
  const clock = new FakeClock();
  // Slot 0 (rid 0xa0) led term 3 and never stopped; slot 2 (rid 0xa2) now leads term 5.
  const s0 = new QuorumSlotWriter(meta, sb.hdr.fsid, 0, 0xa0n, clock);
  await s0.writeEvent('BEGIN', 0n);
  await s0.writeEvent('ELECT', 3n);
  const s2 = new QuorumSlotWriter(meta, sb.hdr.fsid, 2, 0xa2n, clock);
  await s2.writeEvent('BEGIN', 3n);
  await s2.writeEvent('ELECT', 5n);
  return { meta, sb, clock };
}

function fencing(v: { meta: Awaited<ReturnType<typeof quorumVolume>>['meta']; sb: Awaited<ReturnType<typeof quorumVolume>>['sb']; clock: FakeClock },
  agent: CommandFenceAgent, term = 5n, lines: string[] = []): ServerFencing {
  const w = new QuorumSlotWriter(v.meta, v.sb.hdr.fsid, 2, 0xa2n, v.clock);
  return new ServerFencing({
    metaDev: v.meta, fsid: v.sb.hdr.fsid, config: quorumConfig(v.sb), rid: 0xa2n, term, clock: v.clock, agent,
    writeFence: async (t) => { await w.writeEvent('FENCE', t); }, log: (l) => lines.push(l),
  });
}

test('nothing to fence: FENCE is written at once', async () => {
  const { meta, sb } = await quorumVolume(slotSpecs(3));
  const clock = new FakeClock();
  const w = new QuorumSlotWriter(meta, sb.hdr.fsid, 1, 0xb1n, clock);
  await w.writeEvent('BEGIN', 0n);
  await w.writeEvent('ELECT', 1n);
  const f = new ServerFencing({
    metaDev: meta, fsid: sb.hdr.fsid, config: quorumConfig(sb), rid: 0xb1n, term: 1n, clock, agent: sh('exit 1'),
    writeFence: async (t) => { await w.writeEvent('FENCE', t); },
  });
  await f.fenceOldLeaders();
  assert.equal(f.requests.counters.started, 0);
  assert.equal((await readQuorumBlock(meta, sb.hdr.fsid, 1)).events[QUORUM_EVENT.FENCE]!.term, 1n);
});

test('an old leader in the quorum blocks is fenced before the start goes on; FENCE after its reclaim', async () => {
  const v = await leaderVolume();
  const out = join(dir, 'env2');
  const f = fencing(v, sh(`echo "$SCOUTFS_FENCE_RID $SCOUTFS_FENCE_ADDR $SCOUTFS_FENCE_REASON" > ${out}`));
  await f.fenceOldLeaders();
  assert.equal(readFileSync(out, 'utf8'), '00000000000000a0 127.0.0.1 quorum_block_leader\n');
  assert.deepEqual(f.oldLeaders.map((l) => [l.slot, l.rid, l.term]), [[0, 0xa0n, 3n]]);
  const fenceTerm = async (): Promise<bigint> => (await readQuorumBlock(v.meta, v.sb.hdr.fsid, 2)).events[QUORUM_EVENT.FENCE]!.term;
  assert.equal(await fenceTerm(), 0n, 'FENCE waits for the reclaim');
  const done = f.nextCompleted();
  assert.ok(done && done.state === 'fenced' && done.rid === 0xa0n);
  await f.reclaimed(0xa0n);
  assert.equal(await fenceTerm(), 5n);
  assert.equal(f.nextCompleted(), null);
});

test('a failing fence fails the start with the agent\'s output', async () => {
  const v = await leaderVolume();
  const lines: string[] = [];
  const f = fencing(v, sh('echo "no route to the PDU"; exit 1'), 5n, lines);
  await assert.rejects(f.fenceOldLeaders(), (e: unknown) => e instanceof FenceError &&
    e.message.startsWith('fence: FAILED to fence rid 00000000000000a0 (reason quorum_block_leader, addr 127.0.0.1)') &&
    e.message.includes('no route to the PDU'));
  assert.ok(lines.some((l) => l.includes('FAILED to fence rid 00000000000000a0')));
  assert.equal((await readQuorumBlock(v.meta, v.sb.hdr.fsid, 2)).events[QUORUM_EVENT.FENCE]!.term, 0n, 'no FENCE event');
});

test('15 s without an answer fails the start', async () => {
  const v = await leaderVolume();
  const pidFile = join(dir, 'agent3.pid');
  const f = fencing(v, sh(`echo $$ > ${pidFile}; exec sleep 600`));
  const p = f.fenceOldLeaders();
  let err: unknown = null;
  p.catch((e) => { err = e; });
  await until(() => existsSync(pidFile) && readFileSync(pidFile, 'utf8').trim() !== '', 'the agent to start');
  v.clock.advance(14_999);
  await new Promise((r) => setImmediate(r));
  assert.equal(err, null);
  v.clock.advance(1);
  await assert.rejects(p, /old leaders not fenced within 15 s \(rid 00000000000000a0, reason quorum_block_leader\)/);
  f.destroy();
});

test('a newer leader in the blocks, or an abort, fails the start', async () => {
  const v = await leaderVolume();
  // We are slot 2 believing we lead term 4, but slot 2's blocks say... use slot 0's view: rid 0xa0 term 3 sees 0xa2 at 5.
  const w = new QuorumSlotWriter(v.meta, v.sb.hdr.fsid, 0, 0xa0n, v.clock);
  const f0 = new ServerFencing({
    metaDev: v.meta, fsid: v.sb.hdr.fsid, config: quorumConfig(v.sb), rid: 0xa0n, term: 3n, clock: v.clock, agent: sh('exit 0'),
    writeFence: async (t) => { await w.writeEvent('FENCE', t); },
  });
  await assert.rejects(f0.fenceOldLeaders(), /slot 2 \(rid 00000000000000a2\) leads term 5, newer than our term 3/);
  assert.equal(f0.requests.counters.started, 0, 'nobody fenced');

  const f = fencing(v, sh('exec sleep 600'));
  const ac = new AbortController();
  const p = f.fenceOldLeaders(ac.signal);
  await new Promise((r) => setTimeout(r, 20));
  ac.abort();
  await assert.rejects(p, (e: unknown) => e instanceof LifecycleError);
  f.destroy();
});
