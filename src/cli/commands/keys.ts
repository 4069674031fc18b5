import { generateSigningJwk } from '../../tokens/index.js';
import { UsageError, parseArgs } from '../args.js';
import type { Io } from '../io.js';

/** `portcullis keys generate`: a key set, so the output is a `signing_keys_file` as is (SPEC §1). */
export async function run(sub: string | undefined, rest: string[], io: Io): Promise<number> {
  if (sub !== 'generate') throw new UsageError('usage: portcullis keys generate');
  parseArgs(rest, { valued: ['config'] }); // every command takes --config (SPEC §1); this one reads nothing
  io.out(`${JSON.stringify({ keys: [await generateSigningJwk()] }, null, 2)}\n`);
  return 0;
}
