import { readFileSync } from 'node:fs';
import { UsageError } from './args.js';
import { defaultIo, type Io } from './io.js';

export type { Io } from './io.js';

// Only this file, args.ts and io.ts load for `--help` and `--version`: every command's module
// (and with it the gateway's dependencies) is imported when that command runs (SPEC §1: the
// command starts fast).

const USAGE = `usage: portcullis <command> [options]

  serve [--config FILE]                          run the gateway
  config check [--config FILE]                   validate the config (exit 2 if invalid)
  config schema                                  print the JSON Schema of the config file
  migrate [--config FILE]                        apply database migrations
  user add NAME [--email E] [--role R]... --password-stdin
  user list [--json] | user show NAME
  user set-roles NAME R...|--none | user disable NAME | user enable NAME | user delete NAME
  user passwd NAME --password-stdin | user unlock NAME | user reset-2fa NAME
  policy explain --method M --url URL [--host H] [--roles a,b] [--mfa] [--json]
  policy test FILE... [--json]                   run YAML policy cases (exit 0 all pass, 1 any fails)
  routes [--json]                                the compiled route table, in match order
  keys generate                                  print a new signing key set ({"keys":[…]}, a signing_keys_file)

  --version                                      print the version
  <command> --help                               that command's usage

The config comes from --config, else PORTCULLIS_CONFIG, else config/gateway.yaml.
Add --debug to any command for stack traces.`;

const FOOTER = `The config comes from --config, else PORTCULLIS_CONFIG, else config/gateway.yaml.
Add --debug for stack traces.`;

/** `portcullis <command> --help`: each command group's own usage (printed on stdout, exit 0). */
const COMMAND_HELP: Readonly<Record<string, string>> = {
  serve: `usage: portcullis serve [--config FILE]

Runs the gateway (and applies pending migrations first). SIGTERM drains and stops, SIGHUP reloads
the config.`,
  config: `usage: portcullis config check [--config FILE]
       portcullis config schema

config check validates the config: every problem as file:line: key.path: message, exit 2 if
any; warnings for policies that are legal but likely wrong, exit 0.
config schema prints the JSON Schema of the config file.`,
  migrate: `usage: portcullis migrate [--config FILE]

Applies pending database migrations (forward-only, each in a transaction).`,
  user: `usage: portcullis user <sub-command> [--config FILE]

  user add NAME [--email E] [--role R]... --password-stdin   create a user (password policy enforced)
  user list [--json] | user show NAME                        inspect
  user set-roles NAME R... | --none                          replace the roles (sessions revoked); --none removes all
  user disable NAME | user enable NAME | user delete NAME    manage (disable and delete revoke sessions)
  user passwd NAME --password-stdin                          set the password (other sessions revoked)
  user unlock NAME                                           clear a lockout
  user reset-2fa NAME                                        turn 2FA off (the secret is cleared)`,
  policy: `usage: portcullis policy explain --method M --url URL [--host H] [--roles a,b] [--mfa] [--json] [--config FILE]
       portcullis policy test FILE... [--json] [--config FILE]

policy explain: which route matches, which rule decides, and why, for an anonymous caller and
for a user with --roles (and a second factor with --mfa). Without --host (or a host in the URL)
the request goes to the host of public_url. --json prints
{"route","decision","status","code","reason","anonymous":{...}}.

policy test: runs YAML cases (- name, request: {method, url, host?}, as: {roles, mfa} |
anonymous, expect: allow | unauthenticated | forbidden | mfa_required | deny | no_route |
bad_request | auth_api, route?) against the config. Prints each failure with its file:line and a
summary line. Exit 0 when all pass, 1 when any fails, 2 for a malformed file.

Both decide by the very function the gateway uses.`,
  routes: `usage: portcullis routes [--json] [--config FILE]

The compiled route table in match order: order, name, host, path, methods, access, mfa,
upstream, rate limit. --json prints an array of objects.`,
  keys: `usage: portcullis keys generate

Prints a new signing key set ({"keys":[…]}, one private Ed25519 key): a signing_keys_file as is.`,
};

/** The package version (package.json sits two folders up from src/cli/ and from dist/cli/ alike). */
function packageVersion(): string {
  return (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
}

/**
 * Runs one `portcullis` command and returns its exit code: 0 success, 1 runtime failure,
 * 2 bad usage or invalid input. Errors are one line on stderr (stack only with --debug).
 */
export async function main(argv: string[], io: Io = defaultIo()): Promise<number> {
  const debug = argv.includes('--debug');
  try {
    return await dispatch(argv, io);
  } catch (e) {
    return report(e, io, debug);
  }
}

/** Prints a failed command's error once, as one line (a config error: one line a problem), and picks the exit code. */
async function report(e: unknown, io: Io, debug: boolean): Promise<number> {
  if (e instanceof UsageError) {
    io.err(`portcullis: ${e.message}\n`);
    return 2;
  }
  // Loaded only on failure: the error classes of the config loader and the registry.
  const { ConfigError, formatProblem } = await import('../config/index.js');
  const { Errors, GatewayError, is } = await import('../errors/index.js');
  if (e instanceof ConfigError) {
    for (const p of e.problems) io.err(`${formatProblem(p)}\n`);
    io.err(`portcullis: the config is invalid (${e.problems.length} problem${e.problems.length === 1 ? '' : 's'})\n`);
    return 2;
  }
  if (e instanceof GatewayError) {
    // Details the message does not already say (a weak password's reasons are often in it).
    const reasons = (
      (e.extra?.reasons as string[] | undefined) ??
      (e.extra?.errors as { field: string; message: string }[] | undefined)?.map((x) => `${x.field}: ${x.message}`) ??
      []
    ).filter((r) => !e.message.includes(r));
    // What lay under it (the unreachable database, say): a command's user needs it to act.
    const cause = e.cause instanceof Error && !e.message.includes(e.cause.message) ? `: ${e.cause.message.split('\n')[0]}` : '';
    io.err(`portcullis: ${e.message}${cause}${reasons.length ? ` (${reasons.join('; ')})` : ''}\n`);
    if (debug) io.err(`${e.stack}\n${e.cause instanceof Error ? `caused by: ${e.cause.stack}\n` : ''}`);
    // Bad input exits 2: any client-class error (a 4xx status, e.g. a weak password), and an
    // unusable configuration (invalid, production gaps, or missing keys).
    return (e.status >= 400 && e.status < 500) || is(e, Errors.invalid_config) || is(e, Errors.missing_keys) ? 2 : 1;
  }
  io.err(`portcullis: ${(e as Error).message ?? String(e)}\n`);
  if (debug) io.err(`${(e as Error).stack}\n`);
  return 1;
}

async function dispatch(argv: string[], io: Io): Promise<number> {
  const [cmd, sub, ...rest] = argv;
  if (cmd === '--version' || cmd === '-V' || cmd === 'version') {
    io.out(`portcullis ${packageVersion()}\n`);
    return 0;
  }
  // `<command> --help` anywhere on the line: that command's usage, and nothing is run.
  if (cmd !== undefined && Object.hasOwn(COMMAND_HELP, cmd) && (argv.includes('--help') || argv.includes('-h'))) {
    io.out(`${COMMAND_HELP[cmd]}\n\n${FOOTER}\n`);
    return 0;
  }
  switch (cmd) {
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      io.out(`${USAGE}\n`);
      return cmd === undefined ? 2 : 0;
    case 'serve':
      return (await import('./commands/serve.js')).run(argv.slice(1), io);
    case 'migrate':
      return (await import('./commands/migrate.js')).run(argv.slice(1), io);
    case 'config':
      return (await import('./commands/config.js')).run(sub, rest, io);
    case 'user':
      return (await import('./commands/user.js')).run(sub, rest, io);
    case 'policy':
      return (await import('./commands/policy.js')).run(sub, rest, io);
    case 'routes':
      return (await import('./commands/routes.js')).run(argv.slice(1), io);
    case 'keys':
      return (await import('./commands/keys.js')).run(sub, rest, io);
    default:
      throw new UsageError(`unknown command "${cmd}" (see portcullis help)`);
  }
}
