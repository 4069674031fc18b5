import { readFileSync } from 'node:fs';
import { loadConfig, type Config } from '../../config/index.js';
import {
  compileRoutes,
  explain,
  formatExplain,
  formatFailure,
  formatTestFileProblem,
  parsePolicyTests,
  policyContext,
  runPolicyTests,
  summaryLine,
  type PolicyContext,
  type PolicyTestCase,
  type TestFileProblem,
} from '../../policy/index.js';
import { UsageError, flag, opt, parseArgs } from '../args.js';
import { configPath, type Io } from '../io.js';
import { configChecks } from '../../preflight.js';

const USAGE = 'usage: portcullis policy explain --method M --url URL [--host H] [--roles a,b] [--mfa] [--json] | policy test FILE... [--json]';

/** `portcullis policy explain` and `policy test`: the gateway's own decision function, on described requests. */
export async function run(sub: string | undefined, rest: string[], io: Io): Promise<number> {
  switch (sub) {
    case 'explain':
      return explainCommand(rest, io);
    case 'test':
      return testCommand(rest, io);
    default:
      throw new UsageError(USAGE);
  }
}

/** The decision context the gateway builds for this config (its own origin from `public_url`). */
function contextOf(config: Config): PolicyContext {
  return policyContext(compileRoutes(config.routes), config, new URL(config.publicUrl).origin);
}

function explainCommand(rest: string[], io: Io): number {
  const p = parseArgs(rest, { valued: ['config', 'method', 'url', 'roles', 'host'], boolean: ['mfa', 'json'] });
  if (p.positionals.length) throw new UsageError(`policy explain takes no arguments besides its options (got "${p.positionals[0]}")`);
  const url = opt(p, 'url');
  if (!url) throw new UsageError('policy explain needs --url');
  const config = loadConfig(configPath(p, io), io.env, configChecks);
  const roles = (opt(p, 'roles') ?? '')
    .split(',')
    .map((r) => r.trim())
    .filter(Boolean);
  const result = explain(contextOf(config), { method: (opt(p, 'method') ?? 'GET').toUpperCase(), url, host: opt(p, 'host'), roles, mfa: flag(p, 'mfa') });
  if (flag(p, 'json')) {
    const view = (v: typeof result.anonymous) => ({ route: result.route?.name ?? null, decision: v.outcome, status: v.status, code: v.code, reason: v.reason });
    io.out(`${JSON.stringify({ ...view(result.identity.verdict), anonymous: view(result.anonymous) })}\n`);
  } else {
    io.out(`${formatExplain(result)}\n`);
  }
  return 0;
}

/**
 * `portcullis policy test FILE...`: every file is read and validated first (a malformed one runs
 * nothing: exit 2, each problem as `file:line: [index].key: message`); then every case runs
 * against the config. Exit 0 when all pass, 1 when any fails.
 */
function testCommand(rest: string[], io: Io): number {
  const p = parseArgs(rest, { valued: ['config'], boolean: ['json'] });
  const files = p.positionals;
  if (files.length === 0) throw new UsageError('policy test needs at least one test file (usage: portcullis policy test FILE... [--json] [--config FILE])');
  const cases: PolicyTestCase[] = [];
  const problems: TestFileProblem[] = [];
  for (const file of files) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      problems.push({
        file,
        line: undefined,
        path: '',
        message: `cannot read the file (${err.code === 'ENOENT' ? 'no such file' : (err.code ?? err.message)})`,
      });
      continue;
    }
    const parsed = parsePolicyTests(text, file);
    cases.push(...parsed.cases);
    problems.push(...parsed.problems);
  }
  if (problems.length) {
    for (const pr of problems) io.err(`${formatTestFileProblem(pr)}\n`);
    const bad = new Set(problems.map((pr) => pr.file)).size;
    io.err(`portcullis: ${bad} invalid test file${bad === 1 ? '' : 's'} (${problems.length} problem${problems.length === 1 ? '' : 's'}); no case was run\n`);
    return 2;
  }
  const config = loadConfig(configPath(p, io), io.env, configChecks);
  const results = runPolicyTests(contextOf(config), cases);
  const failed = results.filter((r) => !r.passed);
  if (flag(p, 'json')) {
    io.out(
      `${JSON.stringify({
        passed: results.length - failed.length,
        failed: failed.length,
        files: files.length,
        cases: results.map((r) => ({
          file: r.case.file,
          line: r.case.line,
          name: r.case.name,
          passed: r.passed,
          expected: { decision: r.case.expect, ...(r.case.route === undefined ? {} : { route: r.case.route }) },
          actual: r.actual,
        })),
      })}\n`,
    );
  } else {
    for (const r of failed) io.out(`${formatFailure(r)}\n`);
    io.out(`${summaryLine(results, files.length)}\n`);
  }
  return failed.length === 0 ? 0 : 1;
}
