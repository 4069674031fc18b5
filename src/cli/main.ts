import cluster from 'node:cluster';
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { loadConfig, locateInFile, ConfigError, formatProblem, type Config } from '../config/index.js';
import { Errors, GatewayError, is } from '../errors/index.js';
import { compileRoutes, explain, formatExplain, methodFallthroughWarnings, policyContext, routePatternCheck } from '../policy/index.js';
import { generateSigningJwk } from '../tokens/index.js';
import { passwordTools, validateUsername } from '../auth/index.js';
import { openDatabase } from '../store/sql/index.js';
import type { Database, UserRecord } from '../store/ports.js';
import { createApp } from '../app.js';
import { UsageError, flag, opt, parseArgs, type Parsed } from './args.js';

/** Where the CLI writes; tests pass their own. */
export interface Io {
  out: (s: string) => void;
  err: (s: string) => void;
  stdin: () => Promise<string>;
  env: NodeJS.ProcessEnv;
}

const defaultIo = (): Io => ({
  out: (s) => process.stdout.write(s),
  err: (s) => process.stderr.write(s),
  stdin: readStdin,
  env: process.env,
});

async function readStdin(): Promise<string> {
  if (process.stdin.isTTY) throw new UsageError('--password-stdin reads the password from standard input; pipe it in');
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

const USAGE = `usage: portcullis <command> [options]

  serve [--config FILE]                          run the gateway
  config check [--config FILE]                   validate the config (exit 2 if invalid)
  migrate [--config FILE]                        apply database migrations
  user add NAME [--email E] [--role R]... --password-stdin
  user list [--json] | user show NAME
  user set-roles NAME R... | user disable NAME | user enable NAME | user delete NAME
  user passwd NAME --password-stdin | user unlock NAME | user reset-2fa NAME
  policy explain --method M --url URL [--host H] [--roles a,b] [--mfa] [--json]
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

Validates the config: every problem as file:line: key.path: message, exit 2 if any; warnings
for policies that are legal but likely wrong, exit 0.`,
  migrate: `usage: portcullis migrate [--config FILE]

Applies pending database migrations (forward-only, each in a transaction).`,
  user: `usage: portcullis user <sub-command> [--config FILE]

  user add NAME [--email E] [--role R]... --password-stdin   create a user (password policy enforced)
  user list [--json] | user show NAME                        inspect
  user set-roles NAME R...                                   replace the roles (sessions revoked)
  user disable NAME | user enable NAME | user delete NAME    manage (disable and delete revoke sessions)
  user passwd NAME --password-stdin                          set the password (other sessions revoked)
  user unlock NAME                                           clear a lockout
  user reset-2fa NAME                                        turn 2FA off (the secret is cleared)`,
  policy: `usage: portcullis policy explain --method M --url URL [--host H] [--roles a,b] [--mfa] [--json] [--config FILE]

Which route matches, which rule decides, and why: by the very function the gateway uses.`,
  keys: `usage: portcullis keys generate

Prints a new signing key set ({"keys":[…]}, one private Ed25519 key): a signing_keys_file as is.`,
};

/** The package version (package.json sits two folders up from src/cli/ and from dist/cli/ alike). */
function packageVersion(): string {
  return (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
}

const configPath = (p: Parsed, io: Io) => opt(p, 'config') ?? io.env.PORTCULLIS_CONFIG ?? 'config/gateway.yaml';

/**
 * Runs one `portcullis` command and returns its exit code: 0 success, 1 runtime failure,
 * 2 bad usage or invalid input. Errors are one line on stderr (stack only with --debug).
 */
export async function main(argv: string[], io: Io = defaultIo()): Promise<number> {
  const debug = argv.includes('--debug');
  try {
    return await dispatch(argv, io);
  } catch (e) {
    if (e instanceof ConfigError) {
      for (const p of e.problems) io.err(`${formatProblem(p)}\n`);
      io.err(`portcullis: the config is invalid (${e.problems.length} problem${e.problems.length === 1 ? '' : 's'})\n`);
      return 2;
    }
    if (e instanceof UsageError) {
      io.err(`portcullis: ${e.message}\n`);
      return 2;
    }
    if (e instanceof GatewayError) {
      const reasons =
        (e.extra?.reasons as string[] | undefined) ??
        (e.extra?.errors as { field: string; message: string }[] | undefined)?.map((x) => `${x.field}: ${x.message}`);
      io.err(`portcullis: ${e.message}${reasons?.length ? ` (${reasons.join('; ')})` : ''}\n`);
      if (debug) io.err(`${e.stack}\n`);
      // Bad input exits 2: any client-class error (a 4xx status, e.g. a weak password), and an
      // unusable configuration (invalid, or missing keys).
      return (e.status >= 400 && e.status < 500) || is(e, Errors.invalid_config) || is(e, Errors.missing_keys) ? 2 : 1;
    }
    io.err(`portcullis: ${(e as Error).message ?? String(e)}\n`);
    if (debug) io.err(`${(e as Error).stack}\n`);
    return 1;
  }
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
      return serve(parseArgs(argv.slice(1), { valued: ['config'] }), io);
    case 'config': {
      if (sub !== 'check') throw new UsageError('usage: portcullis config check [--config FILE]');
      const p = parseArgs(rest, { valued: ['config'] });
      const file = configPath(p, io);
      const c = loadConfig(file, io.env, [routePatternCheck]);
      // Warnings: legal, likely wrong, never fatal (exit 0).
      for (const w of locateInFile(file, methodFallthroughWarnings(compileRoutes(c.routes))))
        io.err(`${formatProblem({ ...w, message: `warning: ${w.message}` })}\n`);
      io.out(`${file}: ok (${c.routes.length} routes, ${Object.keys(c.upstreams).length} upstreams)\n`);
      return 0;
    }
    case 'migrate': {
      const p = parseArgs(argv.slice(1), { valued: ['config'] });
      const config = loadConfig(configPath(p, io), io.env, [routePatternCheck]);
      const db = await openDatabase(config.storage.database_url, {
        log: (msg, extra) => void (msg !== 'migration applied' && io.err(`portcullis: ${msg} ${JSON.stringify(extra ?? {})}\n`)),
      });
      try {
        const applied = await db.migrate();
        io.out(applied.length ? `applied: ${applied.join(', ')}\n` : 'the database is up to date\n');
      } finally {
        await db.close();
      }
      return 0;
    }
    case 'user':
      return user(sub, rest, io);
    case 'policy': {
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
        const view = (v: typeof result.anonymous) => ({
          route: result.route?.name ?? null,
          decision: v.outcome,
          status: v.status,
          code: v.code,
          reason: v.reason,
        });
        io.out(`${JSON.stringify({ ...view(result.identity.verdict), anonymous: view(result.anonymous) })}\n`);
      } else {
        io.out(`${formatExplain(result)}\n`);
      }
      return 0;
    }
    case 'keys': {
      if (sub !== 'generate') throw new UsageError('usage: portcullis keys generate');
      parseArgs(rest, {});
      // A key set, so the output is a `signing_keys_file` as is (SPEC §1).
      io.out(`${JSON.stringify({ keys: [await generateSigningJwk()] }, null, 2)}\n`);
      return 0;
    }
    default:
      throw new UsageError(`unknown command "${cmd}" (see portcullis help)`);
  }
}

async function serve(p: Parsed, io: Io): Promise<number> {
  if (p.positionals.length) throw new UsageError(`serve takes no arguments (got "${p.positionals[0]}")`);
  const file = configPath(p, io);
  const config = loadConfig(file, io.env, [routePatternCheck]);
  const workers = config.workers === 'auto' ? availableParallelism() : config.workers;
  if (workers > 1 && cluster.isPrimary) {
    if (!config.storage.redis_url) {
      throw new UsageError(
        `workers: ${config.workers} needs storage.redis_url: in-process state (rate limits, lockouts, revocations, TOTP steps) is not shared between processes`,
      );
    }
    return supervise(workers, io);
  }
  const app = await createApp({ config, env: io.env, announce: (l) => io.err(`${l}\n`) });
  await app.start();
  await new Promise<void>((resolve) => {
    let stopping = false;
    const stop = (signal: string) => {
      if (stopping) return;
      stopping = true;
      app.log.info({ event: 'shutdown', signal }, 'draining in-flight requests');
      app.stop().then(resolve, (e) => {
        app.log.error({ err: (e as Error).message }, 'shutdown failed');
        resolve();
      });
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
    process.on('SIGHUP', () => app.reload(file));
  });
  app.log.flush?.();
  return 0;
}

/**
 * The node:cluster primary: forks the workers (they share the listening sockets), replaces a
 * worker that dies unexpectedly, forwards SIGHUP, and on SIGTERM/SIGINT lets every worker
 * drain before exiting 0.
 */
function supervise(count: number, io: Io): Promise<number> {
  return new Promise((resolve) => {
    let stopping = false;
    const fork = () => cluster.fork();
    for (let i = 0; i < count; i++) fork();
    cluster.on('exit', (worker, code, signal) => {
      if (stopping) {
        if (Object.keys(cluster.workers ?? {}).length === 0) resolve(0);
        return;
      }
      io.err(`portcullis: worker ${worker.process.pid} exited (${signal ?? code}); starting another\n`);
      setTimeout(fork, 500);
    });
    const stop = (signal: NodeJS.Signals) => {
      if (stopping) return;
      stopping = true;
      for (const w of Object.values(cluster.workers ?? {})) w?.process.kill(signal);
      if (Object.keys(cluster.workers ?? {}).length === 0) resolve(0);
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
    process.on('SIGHUP', () => {
      for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGHUP');
    });
    io.err(`portcullis: started ${count} workers\n`);
  });
}

async function withDb<T>(p: Parsed, io: Io, fn: (db: Database, config: Config) => Promise<T>): Promise<T> {
  const config = loadConfig(configPath(p, io), io.env, [routePatternCheck]);
  // Only failures are worth a line here; they surface as the command's error anyway.
  const db = await openDatabase(config.storage.database_url, { log: () => undefined });
  try {
    await db.migrate();
    return await fn(db, config);
  } finally {
    await db.close();
  }
}

async function findUser(db: Database, name: string): Promise<UserRecord> {
  const u = await db.users.findByUsername(validateUsername(name));
  if (!u) throw new UsageError(`no user "${name.toLowerCase()}"`);
  return u;
}

function describe(u: UserRecord): Record<string, unknown> {
  return {
    id: u.id,
    username: u.username,
    email: u.email,
    roles: u.roles,
    disabled: u.disabled,
    mfa_enabled: u.mfaEnabled,
    created_at: u.createdAt.toISOString(),
    updated_at: u.updatedAt.toISOString(),
  };
}

async function readPassword(p: Parsed, io: Io): Promise<string> {
  if (!flag(p, 'password-stdin')) throw new UsageError('give the password on standard input with --password-stdin');
  const text = await io.stdin();
  return text.replace(/\r?\n$/, '');
}

async function user(sub: string | undefined, rest: string[], io: Io): Promise<number> {
  const one = (p: Parsed, usage: string) => {
    if (p.positionals.length !== 1) throw new UsageError(`usage: portcullis user ${usage}`);
    return p.positionals[0];
  };
  switch (sub) {
    case 'add': {
      const p = parseArgs(rest, { valued: ['config', 'email', 'role'], boolean: ['password-stdin'] });
      const name = validateUsername(one(p, 'add NAME [--email E] [--role R]... --password-stdin'));
      const password = await readPassword(p, io);
      return withDb(p, io, async (db, config) => {
        const email = opt(p, 'email') ?? null;
        if (email !== null && !/^[^\s@]+@[^\s@]+$/.test(email)) throw new UsageError(`not an email address: "${email}"`);
        const { hasher, policy } = passwordTools(config.auth);
        policy.assert(password, { username: name, email });
        const roles = [...new Set(p.options.get('role') ?? [])];
        const u = await db.users.create({ username: name, email, roles, passwordHash: await hasher.hash(password) });
        io.out(`created user ${u.username} (${u.id})${roles.length ? ` with roles ${roles.join(', ')}` : ''}\n`);
        return 0;
      });
    }
    case 'list': {
      const p = parseArgs(rest, { valued: ['config'], boolean: ['json'] });
      return withDb(p, io, async (db) => {
        const users = await db.users.list();
        if (flag(p, 'json')) io.out(`${JSON.stringify(users.map(describe), null, 2)}\n`);
        else {
          const rows = users.map((u) => [u.username, u.roles.join(',') || '-', u.disabled ? 'disabled' : 'active', u.mfaEnabled ? '2fa' : '-', u.email ?? '-']);
          const head = ['USERNAME', 'ROLES', 'STATUS', 'MFA', 'EMAIL'];
          const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
          for (const r of [head, ...rows])
            io.out(
              `${r
                .map((c, i) => c.padEnd(widths[i]))
                .join('  ')
                .trimEnd()}\n`,
            );
        }
        return 0;
      });
    }
    case 'show': {
      const p = parseArgs(rest, { valued: ['config'], boolean: ['json'] });
      const name = one(p, 'show NAME');
      return withDb(p, io, async (db) => {
        const u = await findUser(db, name);
        const sessions = await db.sessions.listActive(u.id, new Date());
        io.out(`${JSON.stringify({ ...describe(u), active_sessions: sessions.length }, null, 2)}\n`);
        return 0;
      });
    }
    case 'set-roles': {
      const p = parseArgs(rest, { valued: ['config'] });
      const [name, ...roles] = p.positionals;
      if (!name) throw new UsageError('usage: portcullis user set-roles NAME R...');
      for (const r of roles) if (!/^[A-Za-z0-9_.:-]{1,64}$/.test(r)) throw new UsageError(`not a role name: "${r}"`);
      return withDb(p, io, async (db, config) => {
        const u = await findUser(db, name);
        await db.users.update(u.id, { roles: [...new Set(roles)] });
        // Tokens carry roles: end the user's sessions so the change applies on the next request.
        const revoked = await db.sessions.revokeAllForUser(u.id, 'roles_changed', new Date());
        await broadcastRevocations(config, revoked, io);
        io.out(`roles of ${u.username}: ${roles.join(', ') || '(none)'}; ${revoked.length} session(s) revoked\n`);
        return 0;
      });
    }
    case 'disable':
    case 'enable': {
      const p = parseArgs(rest, { valued: ['config'] });
      const name = one(p, `${sub} NAME`);
      return withDb(p, io, async (db, config) => {
        const u = await findUser(db, name);
        await db.users.update(u.id, { disabled: sub === 'disable' });
        const revoked = sub === 'disable' ? await db.sessions.revokeAllForUser(u.id, 'user_disabled', new Date()) : [];
        await broadcastRevocations(config, revoked, io);
        io.out(`${u.username} ${sub}d${sub === 'disable' ? `; ${revoked.length} session(s) revoked` : ''}\n`);
        return 0;
      });
    }
    case 'delete': {
      const p = parseArgs(rest, { valued: ['config'] });
      const name = one(p, 'delete NAME');
      return withDb(p, io, async (db, config) => {
        const u = await findUser(db, name);
        await broadcastRevocations(config, await db.sessions.revokeAllForUser(u.id, 'user_deleted', new Date()), io);
        await db.users.delete(u.id);
        io.out(`deleted ${u.username}\n`);
        return 0;
      });
    }
    case 'passwd': {
      const p = parseArgs(rest, { valued: ['config'], boolean: ['password-stdin'] });
      const name = one(p, 'passwd NAME --password-stdin');
      const password = await readPassword(p, io);
      return withDb(p, io, async (db, config) => {
        const u = await findUser(db, name);
        const { hasher, policy } = passwordTools(config.auth);
        policy.assert(password, { username: u.username, email: u.email });
        await db.users.update(u.id, { passwordHash: await hasher.hash(password) });
        const revoked = await db.sessions.revokeAllForUser(u.id, 'password_changed', new Date());
        await broadcastRevocations(config, revoked, io);
        io.out(`password of ${u.username} changed; ${revoked.length} session(s) revoked\n`);
        return 0;
      });
    }
    case 'reset-2fa': {
      const p = parseArgs(rest, { valued: ['config'] });
      const name = one(p, 'reset-2fa NAME');
      return withDb(p, io, async (db) => {
        const u = await findUser(db, name);
        await db.users.update(u.id, { mfaEnabled: false, totpSecret: null });
        const codes = await db.recoveryCodes.deleteForUser(u.id);
        io.out(`two-factor authentication of ${u.username} reset (${codes} recovery codes removed)\n`);
        return 0;
      });
    }
    case 'unlock': {
      const p = parseArgs(rest, { valued: ['config'] });
      const name = one(p, 'unlock NAME');
      return withDb(p, io, async (db, config) => {
        // Lockouts apply to unknown usernames too, so the name need not exist.
        const username = validateUsername(name);
        const known = await db.users.findByUsername(username);
        const wasLocked = config.storage.redis_url ? await unlockInRedis(config, username) : await unlockViaAdmin(config, username);
        io.out(`${username}: ${wasLocked ? 'unlocked' : 'was not locked'}${known ? '' : ' (no such user)'}\n`);
        return 0;
      });
    }
    default:
      throw new UsageError('usage: portcullis user add|list|show|set-roles|disable|enable|delete|passwd|unlock|reset-2fa …');
  }
}

/**
 * Clears a lockout held in a running gateway's in-process state, through its admin listener
 * (authenticated with the token the gateway wrote into the data directory).
 */
async function unlockViaAdmin(config: Config, username: string): Promise<boolean> {
  let found: { url: string; token: string };
  try {
    found = JSON.parse(readFileSync(join(config.data_dir, 'admin.token'), 'utf8'));
  } catch {
    throw new Error(`no running gateway found (no ${join(config.data_dir, 'admin.token')}); in-process lockouts end with the gateway process`);
  }
  const { url, token } = found;
  let res: Response;
  try {
    res = await fetch(`${url.replace('0.0.0.0', '127.0.0.1')}/unlock`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ username }),
      signal: AbortSignal.timeout(5000),
    });
  } catch {
    throw new Error(`no gateway answers on the admin listener ${url}; in-process lockouts end with the gateway process`);
  }
  if (res.status !== 200) throw new Error(`the gateway refused the unlock (HTTP ${res.status})`);
  return ((await res.json()) as { was_locked: boolean }).was_locked;
}

/** With Redis-shared state the lock lives in Redis: clear it there (every replica sees it). */
async function unlockInRedis(config: Config, username: string): Promise<boolean> {
  // ioredis is loaded only where Redis is used (it costs ~8 MB of RSS).
  const { createRedisClient, redisReady } = await import('../store/state/redis.js');
  const { RedisLockoutStore } = await import('../store/state/redis-stores.js');
  const client = createRedisClient(config.storage.redis_url, { lazyConnect: true });
  try {
    await redisReady(client, 3000);
    // The adapter owns the key names: the same ones every gateway on this prefix uses.
    return await new RedisLockoutStore(client, config.storage.redis_prefix).unlock(username);
  } catch (e) {
    throw new Error(`cannot reach Redis at storage.redis_url: ${(e as Error).message}`);
  } finally {
    client.disconnect();
  }
}

/**
 * With Redis, tells every running replica about revocations at once (pub/sub); without it,
 * or if Redis is unreachable, they still learn within a second from the database poll.
 */
async function broadcastRevocations(config: Config, sessionIds: readonly string[], io: Io): Promise<void> {
  if (!config.storage.redis_url || sessionIds.length === 0) return;
  const { createRedisClient, redisReady } = await import('../store/state/redis.js');
  const client = createRedisClient(config.storage.redis_url, { lazyConnect: true });
  try {
    await redisReady(client, 2000);
    const expiresAt = Date.now() + config.auth.session_max_age;
    for (const sessionId of sessionIds) await client.publish(`${config.storage.redis_prefix}revocations`, JSON.stringify({ sessionId, expiresAt }));
  } catch (e) {
    io.err(`portcullis: could not broadcast the revocation through Redis (${(e as Error).message}); gateways pick it up from the database within a second\n`);
  } finally {
    client.disconnect();
  }
}
