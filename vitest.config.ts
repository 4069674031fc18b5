import { relative } from 'node:path';
import { defineConfig } from 'vitest/config';
import { BaseSequencer, type TestSpecification } from 'vitest/node';

/**
 * The longest files (real `portcullis` processes, PostgreSQL and Redis, argon2-heavy timing
 * and lockout runs), longest first. Started before everything else, so that no long file
 * starts last and runs alone at the end; the short files fill in around them. Without this a
 * fresh clone (no results cache) starts the biggest files first, and replicas.e2e (middling
 * in size, long in time) late. A file missing here just runs in vitest's usual order.
 */
const LONGEST_FIRST = [
  'test/abuse.e2e.test.ts',
  'test/replicas.e2e.test.ts',
  'test/mfa.e2e.test.ts',
  'test/failure.e2e.test.ts',
  'test/login.e2e.test.ts',
  'test/cli.e2e.test.ts',
  'test/redirect-lockout.e2e.test.ts',
  'test/proxy.e2e.test.ts',
  'test/framing.e2e.test.ts',
  'test/browser.e2e.test.ts',
];

class LongestFirst extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const usual = await super.sort(files);
    const rank = (f: TestSpecification) => {
      const i = LONGEST_FIRST.indexOf(relative(this.ctx.config.root, f.moduleId).split('\\').join('/'));
      return i === -1 ? LONGEST_FIRST.length : i;
    };
    return usual
      .map((f, i) => ({ f, i }))
      .sort((a, b) => rank(a.f) - rank(b.f) || a.i - b.i)
      .map(({ f }) => f);
  }
}

export default defineConfig({
  test: {
    include: ['src/**/*.test.ts', 'test/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // The box has two cores; e2e files start servers and hash passwords.
    maxWorkers: 2,
    // Workers keep their module cache between files: the gateway's module graph (express,
    // undici, kysely, zod…) is loaded once per worker instead of once per file, about a third
    // of the suite's CPU time. Test files share no mutable module state (everything is built
    // by createApp per test), and each file closes what it opened.
    isolate: false,
    sequence: { sequencer: LongestFirst },
    // The real `portcullis` command runs dist/: compile it first (incremental, ~2–4 s).
    globalSetup: ['test/support/build-dist.ts'],
  },
});
