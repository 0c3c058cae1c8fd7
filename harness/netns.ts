/*
 * harness/netns.ts owns the optional private network of a run: one network
 * namespace per node, joined by veth pairs to a bridge that lives in a hub
 * namespace of its own.
 *
 *     ns sfh-<tag>-n0              ns sfh-<tag>-hub             ns sfh-<tag>-n1
 *   +----------------+        +-------------------------+    +----------------+
 *   | lo             |        |          br0            |    | lo             |
 *   | eth0 10.213.0.10/24 ----- h0 ------+------ h1 ------ eth0 10.213.0.11/24|
 *   +----------------+        +-------------------------+    +----------------+
 *
 * Invariants:
 *   - Nothing is created in the harness's own (root) namespace: both ends of
 *     each veth are created directly inside their namespaces (ip link add
 *     ... netns A type veth peer ... netns B), and the bridge has no address.
 *     So the /24 exists only inside namespaces this run made; a node can
 *     reach the other nodes of its run and nothing else, and no traffic can
 *     leave this machine.
 *   - The subnet must be inside 10.0.0.0/8 (checked), node i gets .(10+i).
 *   - Every namespace has a cleanup action registered right after `ip netns
 *     add` succeeds; deleting a namespace destroys the veth ends in it, so
 *     there is no separate per-link teardown.  Deleting is idempotent.
 *   - Names carry the run's tag, so concurrent runs never collide and a leak
 *     check can look for exactly one run's namespaces.
 *
 * Processes join a node's namespace by being started through
 * `ip netns exec NS cmd ...` (see wrapInNetns); ip execs the command, so the
 * pid the harness tracks is the node's own.
 *
 * Not root: namespaces need CAP_SYS_ADMIN; netnsSupported() says false and
 * the runner runs nodes on the host loopback instead.
 */
import type { CleanupRegistry } from './cleanup.js';
import { isRoot, sh, trySh, which } from './sys.js';

export interface NodeNet {
  index: number;
  ns: string;
  ifname: string;
  address: string;
}

export interface PrivateNetwork {
  tag: string;
  hub: string;
  subnet: string;
  nodes: NodeNet[];
}

export async function netnsSupported(): Promise<boolean> {
  return isRoot() && (await which('ip')) !== null;
}

/** Names from `ip netns list`. */
export async function listNetns(): Promise<string[]> {
  const r = await trySh('ip', ['netns', 'list']);
  if (r.exitCode !== 0) return [];
  return r.stdout
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0] ?? '')
    .filter((n) => n.length > 0);
}

/** `ip netns del NAME`; a namespace that is already gone is fine. */
export async function deleteNetns(name: string): Promise<void> {
  const r = await trySh('ip', ['netns', 'del', name], { timeoutMs: 30_000 });
  if (r.exitCode !== 0 && (await listNetns()).includes(name)) {
    throw new Error(`ip netns del ${name} failed: ${r.stderr}`);
  }
}

async function addNetns(registry: CleanupRegistry, name: string): Promise<void> {
  if (!/^[A-Za-z0-9_.-]{1,64}$/.test(name)) throw new Error(`bad namespace name ${name}`);
  await sh('ip', ['netns', 'add', name]);
  await registry.add(`delete netns ${name}`, () => deleteNetns(name));
  await sh('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
}

/**
 * Build the private network for `nodes` nodes.  subnetBase is the first
 * three octets, e.g. "10.213.0".
 */
export async function createNetwork(
  registry: CleanupRegistry,
  opts: { tag: string; nodes: number; subnetBase?: string },
): Promise<PrivateNetwork> {
  const base = opts.subnetBase ?? '10.213.0';
  const m = /^10\.(\d{1,3})\.(\d{1,3})$/.exec(base);
  if (!m || Number(m[1]) > 255 || Number(m[2]) > 255) throw new Error(`subnet base ${base} is not inside 10.0.0.0/8`);
  if (!Number.isInteger(opts.nodes) || opts.nodes < 1 || opts.nodes > 200) throw new Error(`bad node count ${opts.nodes}`);
  if (!/^[a-z0-9]{1,16}$/.test(opts.tag)) throw new Error(`bad network tag ${opts.tag}`);

  const hub = `sfh-${opts.tag}-hub`;
  await addNetns(registry, hub);
  await sh('ip', ['-n', hub, 'link', 'add', 'br0', 'type', 'bridge']);
  await sh('ip', ['-n', hub, 'link', 'set', 'br0', 'up']);

  const nodes: NodeNet[] = [];
  for (let i = 0; i < opts.nodes; i++) {
    const ns = `sfh-${opts.tag}-n${i}`;
    await addNetns(registry, ns);
    const peer = `h${i}`;
    await sh('ip', ['link', 'add', 'name', 'eth0', 'netns', ns, 'type', 'veth', 'peer', 'name', peer, 'netns', hub]);
    await sh('ip', ['-n', hub, 'link', 'set', peer, 'master', 'br0']);
    await sh('ip', ['-n', hub, 'link', 'set', peer, 'up']);
    const address = `${base}.${10 + i}`;
    await sh('ip', ['-n', ns, 'addr', 'add', `${address}/24`, 'dev', 'eth0']);
    await sh('ip', ['-n', ns, 'link', 'set', 'eth0', 'up']);
    nodes.push({ index: i, ns, ifname: 'eth0', address });
  }
  return { tag: opts.tag, hub, subnet: `${base}.0/24`, nodes };
}

/** The command line that runs `command args` inside namespace `ns`. */
export function wrapInNetns(ns: string, command: string, args: readonly string[]): { command: string; args: string[] } {
  return { command: 'ip', args: ['netns', 'exec', ns, command, ...args] };
}
