import { loadConfig } from '../../config/index.js';
import { compileRoutes, explain, formatExplain, policyContext, routePatternCheck } from '../../policy/index.js';
import { UsageError, flag, opt, parseArgs } from '../args.js';
import { configPath, type Io } from '../io.js';

/** `portcullis policy explain`: the gateway's own decision function, on a described request. */
export async function run(sub: string | undefined, rest: string[], io: Io): Promise<number> {
  if (sub !== 'explain') throw new UsageError('usage: portcullis policy explain --method M --url URL [--host H] [--roles a,b] [--mfa] [--json]');
  const p = parseArgs(rest, { valued: ['config', 'method', 'url', 'roles', 'host'], boolean: ['mfa', 'json'] });
  const url = opt(p, 'url');
  if (!url) throw new UsageError('policy explain needs --url');
  const config = loadConfig(configPath(p, io), io.env, [routePatternCheck]);
  const roles = (opt(p, 'roles') ?? '')
    .split(',')
    .map((r) => r.trim())
    .filter(Boolean);
  // The same context the gateway builds, so explain and the gateway decide alike.
  const ctx = policyContext(compileRoutes(config.routes), config, new URL(config.publicUrl).origin);
  const result = explain(ctx, { method: (opt(p, 'method') ?? 'GET').toUpperCase(), url, host: opt(p, 'host'), roles, mfa: flag(p, 'mfa') });
  if (flag(p, 'json')) {
    const view = (v: typeof result.anonymous) => ({ route: result.route?.name ?? null, decision: v.outcome, status: v.status, code: v.code, reason: v.reason });
    io.out(`${JSON.stringify({ ...view(result.identity.verdict), anonymous: view(result.anonymous) })}\n`);
  } else {
    io.out(`${formatExplain(result)}\n`);
  }
  return 0;
}
