/*
 * harness/run.ts is the harness CLI (dist/harness/run.js):
 *
 *   node dist/harness/run.js --list
 *   node dist/harness/run.js SCENARIO [--nodes N] [--seed S] [--base DIR]
 *        [--timeout-ms MS] [--keep-images] [--netns] [--OPTION [VALUE]]...
 *
 * It owns only argument parsing and the exit code: 0 when the run passed, 1
 * when it failed (the run folder then holds replay.sh, which calls this CLI
 * again with the same scenario, seed and options), 2 for a usage error.
 * Options it does not know are handed to the scenario as ctx.options (a
 * bare flag is `true`), so replay.sh passes them back unchanged.  The CLI
 * installs the process hooks, so ^C or SIGTERM tears the run down.
 */
import { listScenarios, runScenario, type RunOptions } from './runner.js';
import './scenarios.js';

function usage(msg?: string): never {
  if (msg) process.stderr.write(`run: ${msg}\n`);
  process.stderr.write(
    'usage: node dist/harness/run.js SCENARIO [--nodes N] [--seed S] [--base DIR] [--timeout-ms MS] [--keep-images] [--netns]\n' +
      '       node dist/harness/run.js --list\n',
  );
  process.exit(2);
}

function intArg(name: string, v: string | undefined, max: number): number {
  if (v === undefined || !/^\d+$/.test(v) || Number(v) > max) usage(`${name} needs an integer in 0..${max}`);
  return Number(v);
}

async function main(argv: string[]): Promise<number> {
  if (argv.includes('--list')) {
    for (const s of listScenarios()) process.stdout.write(`${s.name.padEnd(16)} ${s.defaultNodes} node(s)  ${s.description}\n`);
    return 0;
  }
  if (argv.includes('--help') || argv.includes('-h')) usage();
  const opts: RunOptions = { installHooks: true, options: {} };
  let scenario: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const next = (): string | undefined => argv[++i];
    switch (a) {
      case '--nodes':
        opts.nodes = intArg(a, next(), 64);
        break;
      case '--seed':
        opts.seed = intArg(a, next(), 2 ** 32 - 1);
        break;
      case '--base': {
        const v = next();
        if (!v) usage('--base needs a directory');
        opts.baseDir = v;
        break;
      }
      case '--timeout-ms':
        opts.timeoutMs = intArg(a, next(), 24 * 3600 * 1000);
        break;
      case '--keep-images':
        opts.keepImages = true;
        break;
      default:
        if (a.startsWith('--')) {
          const v = argv[i + 1];
          if (v !== undefined && !v.startsWith('--')) {
            opts.options![a.slice(2)] = v;
            i++;
          } else {
            opts.options![a.slice(2)] = true;
          }
        } else if (scenario === undefined) {
          scenario = a;
        } else {
          usage(`unexpected argument ${a}`);
        }
    }
  }
  if (!scenario) usage('no scenario named');
  const r = await runScenario(scenario, opts);
  process.stdout.write(`${r.ok ? 'PASS' : 'FAIL'} ${r.scenario} seed=${r.seed} nodes=${r.nodes} ${r.runDir}\n`);
  if (!r.ok) process.stdout.write(`replay: ${r.replayPath}\n`);
  return r.ok ? 0 : 1;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`run: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
