/*
 * Goal: the quorum works over real UDP and real time, as a cluster runs
 * it: three Quorum services in this process, each bound to its slot
 * address (random 127.x.y.z addresses and a random port, so parallel runs
 * cannot collide), sharing one metadata device, elect exactly one leader
 * that the others follow and the quorum blocks advertise; when the leader
 * is killed (abandoned: no resignation, no more writes), the others wait
 * out the heartbeat timeout and elect another, which fences the old leader
 * through the quorum blocks (a real agent command, here one that records
 * its environment) before its server is ready.  Clean shutdown of all
 * writes END.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomInt } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RealClock } from '../../../src/runtime/clock.js';
import { CryptoRandom } from '../../../src/runtime/random.js';
import { CommandFenceAgent } from '../../../src/runtime/fenceagent.js';
import { UdpTransport } from '../../../src/net/udp.js';
import { Quorum } from '../../../src/quorum/quorum.js';
import { findServerAddress, readQuorumBlock, hexRid } from '../../../src/quorum/blocks.js';
import { QUORUM_EVENT } from '../../../src/format/quorum.js';
import { ServerFencing } from '../../../src/server/fence.js';
import { quorumVolume } from './util.js';

async function waitFor(pred: () => boolean | Promise<boolean>, what: string, ms = 30_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await pred())) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('three members over real UDP elect a leader; killing it elects another that fences it first', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'scoutfs-qudp-'));
  const a = randomInt(1, 255);
  const b = randomInt(0, 256);
  const c = randomInt(1, 250);
  const port = randomInt(20000, 60000);
  const slots = [0, 1, 2].map((i) => ({ nr: i, addr: `127.${a}.${b}.${c + i}:${port}` }));
  const { meta, sb } = await quorumVolume(slots, 0x5eedn);
  const clock = new RealClock();
  const random = new CryptoRandom();
  const logs: string[] = [];
  const members: Quorum[] = [];
  const ready = new Map<Quorum, { term: bigint; fencing: ServerFencing }>();
  const agentLog = join(dir, 'fenced');
  try {
    for (const s of slots) {
      let rid = 0n;
      while (rid === 0n) rid = random.u64();
      let self: Quorum | null = null;
      const fencings = new Map<bigint, ServerFencing>();
      const q = await Quorum.start({
        metaDev: meta, sb, slot: s.nr, rid, clock, random, transport: new UdpTransport(), log: (l) => logs.push(l),
        hooks: {
          startServer: async ({ term, signal }) => {
            const fencing = new ServerFencing({
              metaDev: meta, fsid: sb.hdr.fsid, config: self!.config, rid, term, clock,
              agent: new CommandFenceAgent(['/bin/sh', '-c', `echo "$SCOUTFS_FENCE_RID $SCOUTFS_FENCE_ADDR $SCOUTFS_FENCE_REASON" >> ${agentLog}`]),
              writeFence: (t) => self!.writeFenceEvent(t), log: (l) => logs.push(l),
            });
            fencings.set(term, fencing);
            await fencing.fenceOldLeaders(signal);
            ready.set(self!, { term, fencing });
            for (let r = fencing.nextCompleted(); r !== null && r.state === 'fenced'; r = fencing.nextCompleted()) await fencing.reclaimed(r.rid);
          },
          stopServer: async (term) => {
            ready.delete(self!);
            fencings.get(term)?.destroy();
          },
        },
      });
      self = q;
      members.push(q);
    }
    const leaderOf = (qs: Quorum[]): Quorum | null => {
      const leaders = qs.filter((q) => q.role === 'LEADER' && q.serverReady && ready.has(q));
      if (leaders.length !== 1) return null;
      const l = leaders[0]!;
      return qs.every((q) => q === l || (q.role === 'FOLLOWER' && q.term === l.term && q.leaderSlot === l.slot)) ? l : null;
    };
    await waitFor(() => leaderOf(members) !== null, 'a leader followed by both others');
    const old = leaderOf(members)!;
    assert.deepEqual(await findServerAddress(meta), { slot: old.slot, term: old.term, addr: slots[old.slot]!.addr });
    for (const q of members) assert.ok(q.counters.received > 0, `slot ${q.slot} received datagrams`);

    old.abandon();
    const rest = members.filter((q) => q !== old);
    const t0 = Date.now();
    await waitFor(() => leaderOf(rest) !== null, 'a new leader among the other two');
    const l = leaderOf(rest)!;
    assert.ok(l.term > old.term);
    assert.ok(Date.now() - t0 >= 4000, 'the followers waited out the heartbeat timeout');
    // The old leader was fenced through the quorum blocks before the new server was ready.
    const fenced = readFileSync(agentLog, 'utf8');
    assert.ok(fenced.includes(`${hexRid(old.rid)} 127.${a}.${b}.${c + old.slot} quorum_block_leader`), fenced);
    assert.deepEqual(ready.get(l)!.fencing.oldLeaders.map((x) => x.rid), [old.rid]);
    await waitFor(async () => (await findServerAddress(meta))?.slot === l.slot, 'the blocks to advertise the new leader');
    assert.equal((await readQuorumBlock(meta, sb.hdr.fsid, l.slot)).events[QUORUM_EVENT.FENCE]!.term, l.term);

    for (const q of rest) await q.shutdown();
    for (const q of rest) {
      const blk = await readQuorumBlock(meta, sb.hdr.fsid, q.slot);
      assert.equal(blk.events[QUORUM_EVENT.END]!.rid, q.rid);
    }
    assert.ok(existsSync(agentLog));
  } finally {
    for (const q of members) {
      q.abandon();
    }
    rmSync(dir, { recursive: true, force: true });
  }
});
