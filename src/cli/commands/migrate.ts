import { parseArgs } from '../args.js';
import type { Io } from '../io.js';
import { withServices } from './services.js';

/** `portcullis migrate`: applies pending migrations (opening the services does; this says which). */
export async function run(argv: string[], io: Io): Promise<number> {
  const p = parseArgs(argv, { valued: ['config'] });
  return withServices(p, io, async (svc) => {
    io.out(svc.migrated.length ? `applied: ${svc.migrated.join(', ')}\n` : 'the database is up to date\n');
    return 0;
  });
}
