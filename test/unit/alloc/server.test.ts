/*
 * Goal: the server's allocator cycle (src/alloc/server.ts, PROTOCOL.md
 * 4.11, 7.2) over many commits, with simulated clients whose transactions
 * use lists the server fills and whose freed lists the server reclaims:
 * after every commit every metadata blkno is owned exactly once (a free
 * extent of meta_alloc[0/1], an entry or block of a list, a block of a
 * tree), no transaction ever overwrites a block the last durable state
 * references (MemImages.protect), nothing is handed out twice, roles and
 * pairs swap as specified, and a restarted server picks its pair and roles
 * by the start-up rules and carries on.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { btreeDelete, btreeIterate } from '../../../src/btree/btree.js';
import { emptyRoot, type BtreeRoot } from '../../../src/btree/store.js';
import type { AllocListHead } from '../../../src/format/common.js';
import { ONES_KEY, ZERO_KEY, type Key } from '../../../src/format/key.js';
import { emptyAllocRoot, extentFree, type BlknoBounds } from '../../../src/alloc/extent.js';
import { emptyListHead, LIST_MAX, listIsLow, walkList } from '../../../src/alloc/list.js';
import { MetaAllocator } from '../../../src/alloc/meta.js';
import { reservedMetaBlocks, ServerAlloc, type ServerAllocFields, type ServerAllocOpts } from '../../../src/alloc/server.js';
import { accountState, assertAccounted, churnTree, MemImages, readOnlyStore, Rng, seeds, type StateParts } from './util.js';

const range = (start: bigint, n: number): bigint[] => Array.from({ length: n }, (_, i) => start + BigInt(i));

/**
 * What mkfs leaves (FORMAT.md 13, scaled): blkno 2 a list of `listNr`
 * blknos for server pair 0, the rest split over meta_alloc[0] and [1]
 * (their tree blocks allocated from that list by a bootstrap transaction).
 */
async function mkfs(images: MemImages, listNr: number): Promise<ServerAllocFields> {
  const b = images.bounds;
  const avail: AllocListHead = { ref: images.putListBlock(2n, range(3n, listNr)), first_nr: listNr, total_nr: BigInt(listNr), flags: 0 };
  const freed = emptyListHead();
  const m = await MetaAllocator.open(images, avail, freed, { bounds: b });
  const start = 3n + BigInt(listNr);
  const half = (b.last - start + 1n) / 2n;
  const r0 = emptyAllocRoot();
  const r1 = emptyAllocRoot();
  await extentFree(m, r0, start, half, { bounds: b });
  await extentFree(m, r1, start + half, b.last - start - half + 1n, { bounds: b });
  images.commit();
  m.close();
  return { meta_alloc: [r0, r1], server_meta_avail: [avail, emptyListHead()], server_meta_freed: [freed, emptyListHead()] };
}

interface Client {
  avail: AllocListHead;
  freed: AllocListHead;
  root: BtreeRoot;
  ids: Set<number>;
}

function stateParts(sup: ServerAllocFields, payload: BtreeRoot, clients: Client[]): StateParts {
  return {
    allocs: [['meta_alloc[0]', sup.meta_alloc[0]], ['meta_alloc[1]', sup.meta_alloc[1]]],
    lists: [
      ['server_meta_avail[0]', sup.server_meta_avail[0]], ['server_meta_avail[1]', sup.server_meta_avail[1]],
      ['server_meta_freed[0]', sup.server_meta_freed[0]], ['server_meta_freed[1]', sup.server_meta_freed[1]],
      ...clients.flatMap((c, i): [string, AllocListHead][] => [[`client ${i} avail`, c.avail], [`client ${i} freed`, c.freed]]),
    ],
    trees: [['payload', payload], ...clients.map((c, i): [string, BtreeRoot] => [`client ${i} tree`, c.root])],
  };
}

async function deleteAll(store: MetaAllocator, root: BtreeRoot): Promise<void> {
  const keys: Key[] = [];
  await btreeIterate(store, root, ZERO_KEY, ONES_KEY, (it) => {
    keys.push(it.key);
  });
  for (const k of keys) await btreeDelete(store, root, k);
}

interface SimConfig {
  blocks: bigint;
  mkfsList: number;
  clients: number;
  rounds: number;
  opts: Omit<ServerAllocOpts, 'bounds'>;
  clientFill: [number, number];
  serverOps: number;
  clientOps: number;
}

interface SimResult {
  server: ServerAlloc;
  totals: { roleSwaps: number; restarts: number; departures: number; clientTxns: number; commits: number };
}

async function simulate(seed: number, cfg: SimConfig): Promise<SimResult> {
  const rng = new Rng(seed);
  const bounds: BlknoBounds = { first: 2n, last: cfg.blocks - 1n };
  const images = new MemImages(bounds, seed);
  const sup = await mkfs(images, cfg.mkfsList);
  const payload = emptyRoot();
  const payloadIds = new Set<number>();
  const clients: Client[] = Array.from({ length: cfg.clients }, () => ({
    avail: emptyListHead(), freed: emptyListHead(), root: emptyRoot(), ids: new Set<number>(),
  }));
  const opts: ServerAllocOpts = { bounds, ...cfg.opts };
  let server = await ServerAlloc.open(images, sup, opts);
  images.protect = await assertAccounted(images, stateParts(sup, payload, clients));
  const totals = { roleSwaps: 0, restarts: 0, departures: 0, clientTxns: 0, commits: 0 };
  for (let round = 0; round < cfg.rounds; round++) {
    const what = `seed ${seed} round ${round}`;
    // Client transactions, each written before the server's next commit.
    for (const c of clients) {
      if (c.avail.first_nr < 2 || rng.chance(0.2)) continue;
      const m = await MetaAllocator.open(images, c.avail, c.freed, { bounds, source: `${what} client` });
      const ops = rng.int(cfg.clientOps);
      for (let i = 0; i < ops && !m.isLow(24); i++) await churnTree(m, c.root, c.ids, rng, 1, 3000);
      m.assertConsistent();
      images.commit();
      m.close();
      totals.clientTxns++;
      const { structure } = await accountState(images, {
        lists: [['c avail', c.avail], ['c freed', c.freed]], trees: [['c tree', c.root]],
      });
      images.protect = new Set([...images.protect, ...structure]);
    }
    // The server transaction: handlers, then the commit.
    const s = server.alloc;
    for (const c of clients) {
      if (rng.chance(0.05) || (round === 7 && c === clients[0])) {
        // The client departs: its lists are reclaimed and its tree freed (merged away).
        await server.reclaimList(c.avail);
        await server.reclaimList(c.freed);
        await deleteAll(s, c.root);
        c.ids.clear();
        totals.departures++;
        continue;
      }
      // GET: the committed transaction's frees are reclaimed, avail refilled.
      await server.reclaimList(c.freed);
      await server.fillList(c.avail, cfg.clientFill[0], cfg.clientFill[1]);
      assert.equal(listIsLow(c.avail), server.metaAvail.total_len <= (cfg.opts.reserved?.() ?? reservedMetaBlocks(1)));
    }
    const ops = rng.int(cfg.serverOps);
    for (let i = 0; i < ops && !s.isLow(48); i++) await churnTree(s, payload, payloadIds, rng, 1, 2000);
    await server.prepareCommit();
    images.commit();
    const { rolesSwapped } = await server.afterCommit();
    totals.commits++;
    if (rolesSwapped) totals.roleSwaps++;
    images.protect = await assertAccounted(images, stateParts(sup, payload, clients));
    if (rng.chance(0.06) || round === 11) {
      // Server restart: a new server starts from the super alone.
      server = await ServerAlloc.open(images, sup, opts);
      const want = sup.server_meta_avail[0].total_nr >= sup.server_meta_avail[1].total_nr ? 0 : 1;
      assert.equal(server.activePair, want, what);
      totals.restarts++;
    }
  }
  await assertAccounted(images, stateParts(sup, payload, clients));
  const store = readOnlyStore(images);
  for (const c of clients) {
    let n = 0;
    await btreeIterate(store, c.root, ZERO_KEY, ONES_KEY, () => {
      n++;
    });
    assert.equal(n, c.ids.size);
  }
  return { server, totals };
}

test('server commit cycle with clients: every blkno accounted after every commit, small lists', async () => {
  for (const seed of seeds(3)) {
    const { totals } = await simulate(seed, {
      blocks: 3000n,
      mkfsList: 120,
      clients: 3,
      rounds: 45,
      opts: { fillLo: 60, fillTarget: 120, reserved: () => 600n, lowMargin: 24 },
      clientFill: [50, 100],
      serverOps: 40,
      clientOps: 40,
    });
    // The scenario proves its paths ran.
    assert(totals.roleSwaps > 0, `seed ${seed}: no meta_alloc role swap happened`);
    assert(totals.restarts > 0 && totals.departures > 0 && totals.clientTxns > 50, `seed ${seed}: ${JSON.stringify(totals)}`);
  }
});

test('server commit cycle at the real fill sizes (4092 / 8185)', async () => {
  const { server, totals } = await simulate(seeds(1)[0]!, {
    blocks: 60_000n,
    mkfsList: 1024,
    clients: 1,
    rounds: 6,
    opts: { reserved: () => reservedMetaBlocks(1) },
    clientFill: [4092, 8185],
    serverOps: 30,
    clientOps: 30,
  });
  // After the first commit the idle pair was filled to the target from meta_avail.
  assert.equal(totals.commits, 6);
  for (const h of server.sup.server_meta_avail) assert(h.first_nr >= 4092 - 200 && h.first_nr <= LIST_MAX, `first_nr ${h.first_nr}`);
});

test('start-up rules: larger total_len is meta_avail, larger avail total_nr is active; ties pick 0', async () => {
  const bounds = { first: 2n, last: 5000n };
  const images = new MemImages(bounds);
  const sup = await mkfs(images, 100);
  // mkfs: pair 0 holds the list; the extents split with the odd block in [1].
  let s = await ServerAlloc.open(images, sup, { bounds });
  assert.equal(s.activePair, 0);
  assert.equal(s.metaAvailIndex, sup.meta_alloc[0].total_len >= sup.meta_alloc[1].total_len ? 0 : 1);
  const tie = structuredClone(sup);
  tie.meta_alloc[1].total_len = tie.meta_alloc[0].total_len;
  tie.server_meta_avail[1] = structuredClone(tie.server_meta_avail[0]);
  tie.server_meta_freed[1] = emptyListHead();
  s = await ServerAlloc.open(images, tie, { bounds });
  assert.equal(s.activePair, 0);
  assert.equal(s.metaAvailIndex, 0);
  const one = structuredClone(sup);
  one.meta_alloc[1].total_len = one.meta_alloc[0].total_len + 1n;
  one.server_meta_avail = [emptyListHead(), one.server_meta_avail[0]];
  one.server_meta_freed = [emptyListHead(), one.server_meta_freed[0]];
  s = await ServerAlloc.open(images, one, { bounds });
  assert.equal(s.activePair, 1);
  assert.equal(s.metaAvailIndex, 1);
});

test('prepareCommit stops early when the active allocator is low, and finishes later', async () => {
  const bounds = { first: 2n, last: 4000n };
  const images = new MemImages(bounds);
  const sup = await mkfs(images, 300);
  const payload = emptyRoot();
  const ids = new Set<number>();
  const rng = new Rng(5);
  // A huge margin: no refill or emptying at all.
  let server = await ServerAlloc.open(images, sup, { bounds, fillLo: 100, fillTarget: 200, lowMargin: 10_000, reserved: () => 100n });
  await churnTree(server.alloc, payload, ids, rng, 30);
  const r = await server.prepareCommit();
  assert.equal(r.filled, 0);
  images.commit();
  await server.afterCommit();
  assert(server.counters.stoppedEarly >= 1);
  images.protect = await assertAccounted(images, stateParts(sup, payload, []));
  // The new active pair (1) is empty: the allocator cannot dirty its lists.
  assert.equal(server.alloc.allocsLeft(), 0);
  // A restarted server with a sane margin picks pair 0 again and catches up.
  server = await ServerAlloc.open(images, sup, { bounds, fillLo: 100, fillTarget: 200, lowMargin: 16, reserved: () => 100n });
  assert.equal(server.activePair, 0);
  for (let i = 0; i < 4; i++) {
    await churnTree(server.alloc, payload, ids, rng, 10);
    await server.prepareCommit();
    images.commit();
    await server.afterCommit();
    images.protect = await assertAccounted(images, stateParts(sup, payload, []));
  }
  assert(server.counters.idleEmptied >= 1);
  for (const h of sup.server_meta_avail) assert(h.first_nr >= 100, `first_nr ${h.first_nr}`);
  const w = await walkList(readOnlyStore(images), server.idleFreed);
  assert.equal(BigInt(w.entries.length), server.idleFreed.total_nr);
});
