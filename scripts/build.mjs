#!/usr/bin/env node
// Compiles src/ to dist/ (tsc -p tsconfig.build.json, incremental).
//
//   node scripts/build.mjs             build (npm run build, npm ci's `prepare`, the test run)
//   node scripts/build.mjs --if-stale  build only when a source is newer than the last build
//
// Without TypeScript (an install with --omit=dev) there is nothing to build with: it then
// checks that dist/ exists and says what to do if not, instead of failing the install.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, rmSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const entry = join(root, 'dist/cli/bin.js');
const buildInfo = join(root, 'dist/.tsbuildinfo');

let tsc;
try {
  tsc = createRequire(join(root, 'package.json')).resolve('typescript/bin/tsc');
} catch {
  if (existsSync(entry)) process.exit(0);
  process.stderr.write('portcullis: dist/ is missing and TypeScript is not installed: run `npm ci` (with dev dependencies) to build it\n');
  process.exit(1);
}

/** The newest modification time under a folder (ms). */
function newest(dir) {
  let t = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    t = Math.max(t, e.isDirectory() ? newest(p) : statSync(p).mtimeMs);
  }
  return t;
}

if (process.argv.includes('--if-stale') && existsSync(entry) && existsSync(buildInfo)) {
  const built = statSync(buildInfo).mtimeMs;
  const inputs = ['tsconfig.json', 'tsconfig.build.json', 'package.json'].map((f) => statSync(join(root, f)).mtimeMs);
  if (Math.max(newest(join(root, 'src')), ...inputs) <= built) process.exit(0);
}
// An incremental build trusts its build-info file: with outputs gone, start afresh.
if (!existsSync(entry)) rmSync(buildInfo, { force: true });
const r = spawnSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.build.json')], { cwd: root, stdio: 'inherit' });
process.exit(r.status ?? 1);
