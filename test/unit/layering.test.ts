/*
 * Goal: dependencies point one way (STYLE.md 1): format <- runtime <- block
 * <- btree <- alloc <- forest <- item <- trans <- fs <- fuse, net <-
 * client/server, and the utilities (mkfs, print, fsck) sit on top of the
 * engine.  This test reads every import in src/ and workers/ and fails on
 * an arrow that points the wrong way, naming the file and the import.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '../../..');

/** For each subsystem, the subsystems it may import (itself always). */
const ALLOWED: Record<string, string[]> = {
  format: [],
  runtime: ['format'],
  block: ['format', 'runtime'],
  btree: ['format', 'runtime', 'block'],
  alloc: ['format', 'runtime', 'block', 'btree'],
  srch: ['format', 'runtime', 'block', 'btree', 'alloc'],
  forest: ['format', 'runtime', 'block', 'btree', 'alloc', 'srch'],
  item: ['format', 'runtime', 'block', 'btree', 'alloc', 'srch', 'forest'],
  trans: ['format', 'runtime', 'block', 'btree', 'alloc', 'srch', 'forest', 'item', 'net'],
  lock: ['format', 'runtime', 'net'],
  net: ['format', 'runtime'],
  quorum: ['format', 'runtime', 'block', 'net'],
  client: ['format', 'runtime', 'block', 'btree', 'alloc', 'srch', 'forest', 'item', 'trans', 'lock', 'net'],
  server: ['format', 'runtime', 'block', 'btree', 'alloc', 'srch', 'forest', 'lock', 'net', 'quorum'],
  fs: ['format', 'runtime', 'block', 'btree', 'alloc', 'srch', 'forest', 'item', 'trans', 'lock', 'net', 'client'],
  fuse: ['format', 'runtime', 'fs'],
  // The composition root of a mount: the one place that wires server,
  // client, filesystem and FUSE together.
  mount: ['format', 'runtime', 'block', 'btree', 'alloc', 'srch', 'forest', 'item', 'trans', 'lock', 'net', 'quorum', 'client', 'server', 'fs', 'fuse', 'mkfs', 'print', 'fsck'],
  mkfs: ['format', 'runtime', 'block'],
  print: ['format', 'runtime', 'mkfs'],
  fsck: ['format', 'runtime', 'print'],
};

function files(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir)) {
    const p = join(dir, e);
    if (statSync(p).isDirectory()) out.push(...files(p));
    else if (p.endsWith('.ts')) out.push(p);
  }
  return out;
}

test('src/ imports follow the layering', () => {
  const bad: string[] = [];
  const srcDir = join(root, 'src');
  for (const sub of readdirSync(srcDir)) {
    if (!statSync(join(srcDir, sub)).isDirectory()) continue;
    const allowed = ALLOWED[sub];
    assert.ok(allowed, `src/${sub} is a subsystem this test does not know: add it to ALLOWED with its place in the layering`);
    for (const f of files(join(srcDir, sub))) {
      for (const m of readFileSync(f, 'utf8').matchAll(/from '\.\.\/([a-z]+)\//g)) {
        const target = m[1]!;
        if (target !== sub && !allowed.includes(target)) bad.push(`${f.slice(root.length + 1)} imports src/${target}/`);
      }
      for (const m of readFileSync(f, 'utf8').matchAll(/from '\.\.\/\.\.\/([a-z]+)\//g)) {
        bad.push(`${f.slice(root.length + 1)} imports ${m[1]}/ from outside src/`);
      }
    }
  }
  assert.deepEqual(bad, []);
});

test('workers/ are thin: they import only src/ and node', () => {
  for (const f of files(join(root, 'workers'))) {
    for (const m of readFileSync(f, 'utf8').matchAll(/from '([^']+)'/g)) {
      const spec = m[1]!;
      assert.ok(spec.startsWith('node:') || spec.startsWith('../src/') || spec.startsWith('./') || spec === 'piscina', `${f}: ${spec}`);
    }
  }
});
