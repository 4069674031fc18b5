import { loadConfig, locateInFile, formatProblem } from '../../config/index.js';
import { preflight } from '../../preflight.js';
import { compileRoutes, methodFallthroughWarnings, routePatternCheck } from '../../policy/index.js';
import { UsageError, parseArgs } from '../args.js';
import { configPath, type Io } from '../io.js';

/** `portcullis config check`: the checks serve runs at start; warnings for legal but likely wrong policies. */
export async function run(sub: string | undefined, rest: string[], io: Io): Promise<number> {
  if (sub !== 'check') throw new UsageError('usage: portcullis config check [--config FILE]');
  const p = parseArgs(rest, { valued: ['config'] });
  const file = configPath(p, io);
  const c = loadConfig(file, io.env, [routePatternCheck]);
  // What serve checks before it opens anything: production's requirements, the keys parsed,
  // the workers rule.
  await preflight(c, io.env);
  // Warnings: legal, likely wrong, never fatal (exit 0).
  for (const w of locateInFile(file, methodFallthroughWarnings(compileRoutes(c.routes))))
    io.err(`${formatProblem({ ...w, message: `warning: ${w.message}` })}\n`);
  io.out(`${file}: ok (${c.routes.length} routes, ${Object.keys(c.upstreams).length} upstreams)\n`);
  return 0;
}
