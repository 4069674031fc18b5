/**
 * CLI start-up time (SPEC §1: `portcullis --help` within a few times `node -e ''`). Runs each
 * command `RUNS` times in turn (interleaved, so machine noise hits all alike) and prints the
 * median wall time of each and its ratio to the bare Node start-up measured in the same run.
 *
 *   npm run build && npx tsx bench/cli-startup.ts [--runs 5]
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const arg = process.argv.indexOf('--runs');
const RUNS = arg === -1 ? 5 : Number(process.argv[arg + 1]);
const BIN = join(ROOT, 'bin/portcullis.js');

const commands: Record<string, string[]> = {
  "node -e ''": ['-e', ''],
  'portcullis --help': [BIN, '--help'],
  'portcullis --version': [BIN, '--version'],
  'portcullis keys --help': [BIN, 'keys', '--help'],
  'portcullis policy explain (loads config + policy)': [BIN, 'policy', 'explain', '--url', '/', '--config', join(ROOT, 'config/gateway.yaml')],
};

const times = new Map<string, number[]>(Object.keys(commands).map((k) => [k, []]));
for (let i = 0; i < RUNS; i++) {
  for (const [name, args] of Object.entries(commands)) {
    const t0 = process.hrtime.bigint();
    const r = spawnSync(process.execPath, args, { cwd: ROOT, stdio: 'ignore', env: { PATH: process.env.PATH } });
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    if (r.status !== 0) throw new Error(`${name} exited ${r.status}`);
    times.get(name)!.push(ms);
  }
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const base = median(times.get("node -e ''")!);
console.log(`median of ${RUNS} runs, node ${process.version}`);
for (const [name, xs] of times) console.log(`${name.padEnd(52)} ${median(xs).toFixed(1).padStart(7)} ms   ${(median(xs) / base).toFixed(2)}× node -e ''`);
