import { formatDuration, loadConfig, type Access } from '../../config/index.js';
import { compileRoutes, type CompiledRoute } from '../../policy/index.js';
import { configChecks } from '../../preflight.js';
import { UsageError, flag, parseArgs } from '../args.js';
import { configPath, type Io } from '../io.js';

/** One row of `portcullis routes --json`. */
export interface RouteRow {
  /** Position (0-based, as `policy explain` numbers them): the first matching route decides. */
  order: number;
  name: string;
  /** The host rule, or null for any host. */
  host: string | null;
  /** The path pattern as configured. */
  path: string;
  /** The pattern actually matched: escapes decoded, case-folded unless `case_sensitive`. */
  pattern: string;
  case_sensitive: boolean;
  /** The methods accepted (a list with GET accepts HEAD too), or null for every method. */
  methods: string[] | null;
  access: Access;
  mfa: boolean;
  upstream: string | null;
  rate_limit: { requests: number; per: string } | null;
  allow_semicolons: boolean;
}

/** A compiled route as a {@link RouteRow}. */
function row(r: CompiledRoute): RouteRow {
  const c = r.config;
  const methods = c.match.methods === undefined ? null : [...new Set(c.match.methods.flatMap((m) => (m === 'GET' ? ['GET', 'HEAD'] : [m])))];
  return {
    order: r.index,
    name: r.name,
    host: c.match.host ?? null,
    path: c.match.path ?? '/**',
    pattern: r.pathPattern,
    case_sensitive: c.match.case_sensitive === true,
    methods,
    access: c.access,
    mfa: c.mfa === true,
    upstream: c.upstream ?? null,
    rate_limit: c.rate_limit ? { requests: c.rate_limit.requests, per: formatDuration(c.rate_limit.per) } : null,
    allow_semicolons: c.allow_semicolons === true,
  };
}

const accessText = (a: Access): string => (typeof a === 'string' ? a : `roles [${a.roles.join(', ')}]`);

/** Left-aligned columns, two spaces apart. */
function table(head: string[], rows: string[][]): string {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  return [head, ...rows]
    .map((r) =>
      r
        .map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i])))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

/** `portcullis routes [--json]`: the compiled route table, in the order the gateway tries it. */
export async function run(argv: string[], io: Io): Promise<number> {
  const p = parseArgs(argv, { valued: ['config'], boolean: ['json'] });
  if (p.positionals.length) throw new UsageError('usage: portcullis routes [--json] [--config FILE]');
  const config = loadConfig(configPath(p, io), io.env, configChecks);
  const rows = compileRoutes(config.routes).routes.map(row);
  if (flag(p, 'json')) {
    io.out(`${JSON.stringify(rows, null, 2)}\n`);
    return 0;
  }
  const cells = rows.map((r) => [
    String(r.order),
    r.name,
    r.host ?? '*',
    // The pattern matched; the one written in the config beside it when they differ.
    `${r.pattern}${r.pattern === r.path ? '' : ` (${r.path})`}`,
    r.methods?.join(',') ?? '*',
    accessText(r.access),
    r.mfa ? 'yes' : 'no',
    r.upstream ?? '-',
    r.rate_limit ? `${r.rate_limit.requests}/${r.rate_limit.per}` : '-',
    [r.case_sensitive ? 'case_sensitive' : '', r.allow_semicolons ? 'allow_semicolons' : ''].filter(Boolean).join(', '),
  ]);
  if (rows.length) io.out(`${table(['#', 'NAME', 'HOST', 'PATH', 'METHODS', 'ACCESS', 'MFA', 'UPSTREAM', 'RATE LIMIT', 'OPTIONS'], cells)}\n`);
  else io.out('(no routes: every request but the auth API is 404)\n');
  io.out(`\nFirst match decides; no match is 404. ${config.auth.prefix}/** and /.well-known/jwks.json are the gateway's own (auth API), before any route.\n`);
  return 0;
}
