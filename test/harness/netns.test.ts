/*
 * Goal: the private network gives each node namespace its address on eth0,
 * nodes reach each other over TCP through the hub bridge, the subnet exists
 * nowhere but in the node namespaces (not in the root namespace, not on the
 * hub), and cleanup deletes every namespace.  Traffic in this test goes only
 * between the namespaces it creates; nothing is sent from the root
 * namespace to the private addresses (that would leave through the default
 * route).  Root only.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CleanupRegistry } from '../../harness/cleanup.js';
import { createNetwork, listNetns, netnsSupported, wrapInNetns } from '../../harness/netns.js';
import { logMatches, startProc } from '../../harness/proc.js';
import { sh } from '../../harness/sys.js';

const SKIP = (await netnsSupported()) ? false : 'needs root and iproute2 for network namespaces';
const base = await mkdtemp(join(tmpdir(), 'sfh-netns-'));
const reg = new CleanupRegistry('netns-tests');
after(async () => {
  await reg.runAll({ ok: false });
  await rm(base, { recursive: true, force: true });
});

test('rejects a subnet outside 10.0.0.0/8', { skip: SKIP }, async () => {
  const r = new CleanupRegistry('netns-bad');
  try {
    await assert.rejects(createNetwork(r, { tag: 'bad', nodes: 1, subnetBase: '192.168.1' }), /not inside 10\.0\.0\.0\/8/);
  } finally {
    await r.runAll({ ok: false });
  }
});

test('two nodes talk over TCP inside their namespaces; cleanup removes them', { skip: SKIP }, async () => {
  const tag = `t${process.pid.toString(36)}`;
  const net = await createNetwork(reg, { tag, nodes: 2, subnetBase: '10.213.77' });
  const names = [net.hub, ...net.nodes.map((n) => n.ns)];
  const listed = await listNetns();
  for (const n of names) assert.ok(listed.includes(n), `${n} exists`);

  const n0 = net.nodes[0]!;
  const n1 = net.nodes[1]!;
  assert.equal(n0.address, '10.213.77.10');
  assert.equal(n1.address, '10.213.77.11');
  assert.match((await sh('ip', ['-n', n1.ns, '-4', 'addr', 'show', 'eth0'])).stdout, /inet 10\.213\.77\.11\/24/);
  assert.doesNotMatch((await sh('ip', ['-4', 'addr'])).stdout, /10\.213\.77\./, 'root namespace has no private address');
  assert.doesNotMatch((await sh('ip', ['-n', net.hub, '-4', 'addr'])).stdout, /inet 10\./, 'hub has no address');

  const server = `
    const net = require('net');
    const srv = net.createServer((c) => c.end('hello from ' + process.env.ADDR + '\\n'));
    srv.listen(47001, process.env.ADDR, () => console.log('listening'));
    setTimeout(() => process.exit(3), 30000);
  `;
  const w = wrapInNetns(n1.ns, process.execPath, ['-e', server]);
  const p = await startProc(reg, { name: 'server', command: w.command, args: w.args, env: { ADDR: n1.address }, logPath: join(base, 'server.log') });
  await p.waitReady(logMatches(p.logPath, /^listening$/m), { timeoutMs: 10_000, what: 'server listening' });

  const client = `
    const c = require('net').connect(47001, process.env.TO);
    let got = '';
    c.on('data', (d) => (got += d));
    c.on('end', () => { process.stdout.write(got); process.exit(0); });
    c.on('error', (e) => { console.error(e.message); process.exit(1); });
    setTimeout(() => process.exit(2), 5000);
  `;
  const r = await sh('ip', ['netns', 'exec', n0.ns, process.execPath, '-e', client], { env: { TO: n1.address }, timeoutMs: 15_000 });
  assert.equal(r.stdout.trim(), `hello from ${n1.address}`);
  await p.stop();

  const rep = await reg.runAll({ ok: true });
  assert.deepEqual(rep.errors, []);
  const left = await listNetns();
  for (const n of names) assert.ok(!left.includes(n), `${n} deleted`);
});
