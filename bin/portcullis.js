#!/usr/bin/env node
// Entry point of the `portcullis` command: the compiled JavaScript in dist/ (built by
// `npm run build`, which `npm ci` runs through the `prepare` script). No TypeScript at run time.
try {
  await import('../dist/cli/bin.js');
} catch (e) {
  if (e?.code === 'ERR_MODULE_NOT_FOUND' && String(e.message).includes('dist/cli/bin.js')) {
    process.stderr.write('portcullis: dist/ is missing: run `npm run build` (npm ci does it for you)\n');
    process.exit(1);
  }
  throw e;
}
