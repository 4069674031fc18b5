import { formatProblem } from '../../config/index.js';
import { UsageError, parseArgs } from '../args.js';
import { configPath, type Io } from '../io.js';

const USAGE = 'usage: portcullis config check [--config FILE] | portcullis config schema';

/**
 * `portcullis config check`: every check serve runs at start, in one pass (exit 2 listing every
 * problem), and warnings for legal but likely wrong policies (exit 0).
 * `portcullis config schema`: the JSON Schema of the config file, generated from the loader's schema.
 */
export async function run(sub: string | undefined, rest: string[], io: Io): Promise<number> {
  if (sub === 'schema') {
    // --config is accepted (every command takes it) and changes nothing: the schema is the same for every file.
    const p = parseArgs(rest, { valued: ['config'] });
    if (p.positionals.length) throw new UsageError(`config schema takes no arguments (got "${p.positionals[0]}")`);
    const { configJsonSchema } = await import('../../config/json-schema.js');
    io.out(`${JSON.stringify(configJsonSchema(), null, 2)}\n`);
    return 0;
  }
  if (sub !== 'check') throw new UsageError(USAGE);
  const p = parseArgs(rest, { valued: ['config'] });
  if (p.positionals.length) throw new UsageError(`config check takes no arguments (got "${p.positionals[0]}")`);
  const file = configPath(p, io);
  // The very function serve calls before it opens anything.
  const { checkConfigFile } = await import('../../preflight.js');
  const { config, warnings } = await checkConfigFile(file, io.env);
  // Warnings: legal, likely wrong, never fatal (exit 0).
  for (const w of warnings) io.err(`${formatProblem({ ...w, message: `warning: ${w.message}` })}\n`);
  const n = warnings.length;
  io.out(`${file}: ok (${config.routes.length} routes, ${Object.keys(config.upstreams).length} upstreams${n ? `; ${n} warning${n === 1 ? '' : 's'}` : ''})\n`);
  return 0;
}
