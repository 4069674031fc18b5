import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/**
 * vitest globalSetup: compiles src/ to dist/ (scripts/build.mjs, incremental; nothing to do when
 * no source changed) before any test runs, because the tests that start the real `portcullis`
 * command run the compiled JavaScript, as users do. Without it, a test after a source edit
 * would exercise the previous build. A type error does not stop the tests (tsc still emits, and
 * `npm test` type-checks first); a build that cannot run does.
 */
export default function buildDist(): void {
  const r = spawnSync(process.execPath, [fileURLToPath(new URL('../../scripts/build.mjs', import.meta.url)), '--if-stale'], { stdio: 'inherit' });
  if (r.status !== 0 && r.status !== 2) throw new Error(`scripts/build.mjs failed (exit ${r.status ?? r.signal})`);
}
