/**
 * End-to-end: several replicas acting as one gateway (docs/operations.md, "Running several
 * replicas"), and backup/restore ("Backup and restore").
 *
 * Three real `portcullis serve` processes share one PostgreSQL database (created for this file),
 * one Redis (keys under a prefix unique to this run), one signing key file and one
 * PORTCULLIS_ENCRYPTION_KEY. They run with NODE_ENV=production, so a replica that fell back to
 * embedded keys would refuse to start. One echo upstream runs in the test process.
 *
 * Shown: a lockout reached with failures spread over all three; one shared login rate limit
 * (its own three replicas, limit 5/min); a logout on one refused on the others within 1 s; a
 * TOTP code used on one refused (as a replay) on another; a spent refresh token detected on
 * another and the session revoked everywhere; one replica SIGKILLed under load (autocannon, one
 * instance per replica) while every request to the survivors succeeds; and a pg_dump restored
 * into a fresh database that a gateway with the same keys signs users in against.
 *
 * CI rule (as in postgres.e2e): with CI=true an unreachable PostgreSQL or Redis FAILS the file.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { Redis } from 'ioredis';
import autocannon from 'autocannon';
import { decodeJwt } from 'jose';
import { startEchoServer, type EchoServer } from '../src/demo/echo.js';
import { GOOD_PASSWORD, runCliInProcess, sample, totpAt } from './support/helpers.js';
import { postgresReachable, redisReachable } from './support/services.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const BIN = join(ROOT, 'bin/portcullis.js');
const PG_URL = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const RUN_ID = `${process.pid}_${Date.now().toString(36)}`;
const DB_NAME = `pc_repl_${RUN_ID}`;
const RESTORED_DB = `pc_repl_restored_${RUN_ID}`;
/** The three replicas of the main group. */
const PREFIX = `pc-repl:${RUN_ID}:`;
/** The rate-limit group (its own counters, login limit 5/min). */
const RATE_PREFIX = `pc-repl-rate:${RUN_ID}:`;
/** The gateway on the restored database: a separate deployment. */
const RESTORED_PREFIX = `pc-repl-restored:${RUN_ID}:`;
const WRONG_PASSWORD = 'definitely not the password 11';
const STEP_MS = 30_000;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The PostgreSQL URL of database `name` on the same server as PG_URL. */
function dbUrl(name: string): string {
  const u = new URL(PG_URL);
  u.pathname = `/${name}`;
  u.searchParams.delete('schema');
  return u.toString();
}

const pgReachable = (): Promise<boolean> => postgresReachable(PG_URL);

const pgUp = await pgReachable();
const redisUp = await redisReachable(REDIS_URL);
const up = pgUp && redisUp;
if (!up && process.env.CI === 'true') {
  throw new Error(
    `replicas.e2e needs PostgreSQL (${PG_URL}: ${pgUp ? 'up' : 'unreachable'}) and Redis (${REDIS_URL}: ${redisUp ? 'up' : 'unreachable'}), and CI=true requires them`,
  );
}
if (!up) console.warn(`[replicas.e2e] skipped: PostgreSQL ${pgUp ? 'up' : 'unreachable'}, Redis ${redisUp ? 'up' : 'unreachable'}`);

/** Runs a PostgreSQL client program; rejects with its stderr on a non-zero exit. */
function pgTool(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { env: { ...process.env, PGCONNECT_TIMEOUT: '5' }, timeout: 60_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${cmd} ${args.join(' ')} failed: ${err.message}\n${stderr}`));
      else resolve(stdout);
    });
  });
}

/** -h/-p/-U of PG_URL, for createdb. */
function connArgs(): string[] {
  const u = new URL(PG_URL);
  return ['-h', u.hostname || '127.0.0.1', '-p', u.port || '5432', '-U', decodeURIComponent(u.username || 'postgres')];
}

async function adminQuery(text: string, params: unknown[] = []): Promise<pg.QueryResult> {
  const c = new pg.Client({ connectionString: PG_URL, connectionTimeoutMillis: 5000 });
  await c.connect();
  try {
    return await c.query(text, params);
  } finally {
    await c.end();
  }
}

async function dbQuery(db: string, text: string, params: unknown[] = []): Promise<pg.QueryResult> {
  const c = new pg.Client({ connectionString: dbUrl(db), connectionTimeoutMillis: 5000 });
  await c.connect();
  try {
    return await c.query(text, params);
  } finally {
    await c.end();
  }
}

// ---------------------------------------------------------------------------------------------
// Replica processes

let work: string;
let keysFile: string;
let echo: EchoServer;
const ENCRYPTION_KEY = randomBytes(32).toString('base64');
const childEnv = (): NodeJS.ProcessEnv => ({ PATH: process.env.PATH, NODE_ENV: 'production', PORTCULLIS_ENCRYPTION_KEY: ENCRYPTION_KEY });

interface Replica {
  name: string;
  url: string;
  adminUrl: string;
  child: ChildProcess;
  out: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

const running = new Set<Replica>();
/** Every replica behind one load balancer has the same public_url (production refuses to start without one). */
const PUBLIC_URL = 'http://gw.replicas.test';

/** Writes a replica's config file (its own data_dir) and returns its path. */
function writeConfig(name: string, o: { database: string; prefix: string; loginLimit: number }): string {
  const dir = join(work, name);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const file = join(dir, 'gateway.yaml');
  writeFileSync(
    file,
    `name: Portcullis
listen: 127.0.0.1:0
admin: { listen: 127.0.0.1:0 }
public_url: ${PUBLIC_URL}
data_dir: ${dir}
log_level: info
shutdown_grace: 2s
storage:
  database_url: "${dbUrl(o.database)}"
  redis_url: "${REDIS_URL}"
  redis_prefix: "${o.prefix}"
keys:
  signing_keys_file: ${keysFile}
auth:
  login_rate_limit: { requests: ${o.loginLimit}, per: 1m }
  api_rate_limit: { requests: 100000, per: 1m }
  lockout: { max_failures: 5, window: 15m, duration: 15m }
upstreams:
  echo: { url: "${echo.url}", timeout: 10s }
routes:
  - name: app
    match: { path: /app/** }
    upstream: echo
    access: authenticated
  - name: public
    match: { path: /public/** }
    upstream: echo
    access: public
`,
    { mode: 0o600 },
  );
  return file;
}

/** Starts `portcullis serve --config FILE` and waits for its "listening" log line. */
async function startReplica(name: string, config: string): Promise<Replica> {
  const child = spawn(process.execPath, [BIN, 'serve', '--config', config], { cwd: ROOT, env: childEnv() });
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('close', (code, signal) => resolve({ code, signal })),
  );
  const deadline = Date.now() + 45_000;
  while (Date.now() < deadline) {
    const line = out.split('\n').find((l) => l.includes('"event":"listening"'));
    if (line) {
      const j = JSON.parse(line) as { url: string; admin: string };
      const r: Replica = { name, url: j.url, adminUrl: j.admin, child, out: () => out, exited };
      running.add(r);
      return r;
    }
    if (child.exitCode !== null || child.signalCode !== null) break;
    await sleep(50);
  }
  child.kill('SIGKILL');
  throw new Error(`replica ${name} did not start:\n${out}`);
}

/** SIGTERM, then SIGKILL when it has not exited within `ms`. */
async function stopReplica(r: Replica, ms = 10_000): Promise<void> {
  running.delete(r);
  if (r.child.exitCode !== null || r.child.signalCode !== null) return;
  r.child.kill('SIGTERM');
  const t = setTimeout(() => r.child.kill('SIGKILL'), ms);
  await r.exited;
  clearTimeout(t);
}

// ---------------------------------------------------------------------------------------------
// HTTP helpers

interface Reply {
  status: number;
  headers: Headers;
  json: any;
}

async function call(base: string, path: string, init: { method?: string; body?: unknown; token?: string } = {}): Promise<Reply> {
  const headers: Record<string, string> = {};
  if (init.body !== undefined) headers['content-type'] = 'application/json';
  if (init.token) headers.authorization = `Bearer ${init.token}`;
  const res = await fetch(`${base}${path}`, {
    method: init.method ?? (init.body !== undefined ? 'POST' : 'GET'),
    headers,
    body: init.body === undefined ? undefined : JSON.stringify(init.body),
    signal: AbortSignal.timeout(20_000),
  });
  const text = await res.text();
  let json: any = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = { raw: text };
  }
  return { status: res.status, headers: res.headers, json };
}

const login = (r: Replica, username: string, password = GOOD_PASSWORD) => call(r.url, '/api/auth/login', { body: { username, password } });

interface Tokens {
  access_token: string;
  refresh_token: string;
}

async function signIn(r: Replica, username: string): Promise<Tokens> {
  const res = await login(r, username);
  if (res.status !== 200 || !res.json?.access_token) throw new Error(`sign-in of ${username} on ${r.name} failed: ${res.status} ${JSON.stringify(res.json)}`);
  return res.json as Tokens;
}

/** A proxied request to the authenticated route. */
const appGet = (r: Replica, token: string, path = '/app/whoami') => call(r.url, path, { token });

/** Polls `r` with `token` until it answers 401; returns ms from `since` (performance.now()), or throws. */
async function until401(r: Replica, token: string, since: number, deadlineMs = 5000): Promise<number> {
  const stop = since + deadlineMs;
  for (;;) {
    const res = await appGet(r, token);
    const at = performance.now();
    if (res.status === 401) return at - since;
    if (res.status !== 200) throw new Error(`${r.name} answered ${res.status} while the token was being revoked: ${JSON.stringify(res.json)}`);
    if (at > stop) throw new Error(`${r.name} still accepts the token ${Math.round(at - since)} ms later`);
    await sleep(5);
  }
}

async function metric(r: Replica, name: string, labels: Record<string, string> = {}): Promise<number> {
  const text = await (await fetch(`${r.adminUrl}/metrics`, { signal: AbortSignal.timeout(10_000) })).text();
  return sample(text, name, labels);
}

/**
 * Creates a user with the CLI (`main()` in this process: the replicas are the separate
 * processes here) against the shared database.
 */
async function addUser(config: string, name: string): Promise<void> {
  const r = await runCliInProcess(['user', 'add', name, '--email', `${name}@example.com`, '--password-stdin', '--config', config], {
    stdin: `${GOOD_PASSWORD}\n`,
    env: { PORTCULLIS_ENCRYPTION_KEY: ENCRYPTION_KEY },
  });
  if (r.code !== 0) throw new Error(`user add ${name} failed (${r.code}): ${r.stderr}`);
}

/**
 * Enrolls TOTP over HTTP on `r` (setup, then enable with the code of the current step, or of
 * the previous one with `previousStep`: still inside the ±1 window, and it leaves the current
 * and the next step unused); returns the secret and the step used.
 */
async function enrollTotp(r: Replica, username: string, opts: { previousStep?: boolean } = {}): Promise<{ secret: string; step: number }> {
  const t = await signIn(r, username);
  const setup = await call(r.url, '/api/auth/2fa/setup', { method: 'POST', token: t.access_token });
  expect(setup.status).toBe(200);
  const secret = setup.json.secret as string;
  expect(secret).toMatch(/^[A-Z2-7]+=*$/);
  // The previous step is in the window only until the next boundary: keep 3 s clear of it.
  while (opts.previousStep && Date.now() % STEP_MS > STEP_MS - 3000) await sleep(100);
  const now = Date.now() - (opts.previousStep ? STEP_MS : 0);
  const enable = await call(r.url, '/api/auth/2fa/enable', { body: { code: await totpAt(secret, now) }, token: t.access_token });
  expect(enable.status, JSON.stringify(enable.json)).toBe(200);
  expect(enable.json.recovery_codes).toHaveLength(10);
  return { secret, step: Math.floor(now / STEP_MS) };
}

// ---------------------------------------------------------------------------------------------

const USERS = ['lou', 'rita', 'otto', 'tess', 'rex', 'kim', 'bea', 'bo'];

describe.runIf(up)('three replicas on one PostgreSQL and one Redis', () => {
  let A: Replica;
  let B: Replica;
  let C: Replica;
  let main: Replica[];
  let configA: string;

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'portcullis-replicas-'));
    echo = await startEchoServer({ host: '127.0.0.1', port: 0 });
    // One shared signing key, made by the real CLI.
    const gen = await runCliInProcess(['keys', 'generate']);
    expect(gen.code).toBe(0);
    keysFile = join(work, 'signing-keys.json');
    writeFileSync(keysFile, gen.stdout, { mode: 0o600 });
    await pgTool('createdb', [...connArgs(), DB_NAME]);

    configA = writeConfig('a', { database: DB_NAME, prefix: PREFIX, loginLimit: 100_000 });
    const configB = writeConfig('b', { database: DB_NAME, prefix: PREFIX, loginLimit: 100_000 });
    const configC = writeConfig('c', { database: DB_NAME, prefix: PREFIX, loginLimit: 100_000 });
    // The first CLI run migrates the new database; the rest can then run side by side.
    await addUser(configA, USERS[0]);
    await Promise.all(USERS.slice(1).map((u) => addUser(configA, u)));
    [A, B, C] = await Promise.all([startReplica('A', configA), startReplica('B', configB), startReplica('C', configC)]);
    main = [A, B, C];
  }, 180_000);

  afterAll(async () => {
    await Promise.all([...running].map((r) => stopReplica(r)));
    await echo?.close();
    try {
      for (const db of [DB_NAME, RESTORED_DB]) await adminQuery(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
    } finally {
      const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 1 });
      try {
        let deleted = 0;
        for (const prefix of [PREFIX, RATE_PREFIX, RESTORED_PREFIX]) {
          let cursor = '0';
          do {
            const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 500);
            cursor = next;
            if (keys.length) deleted += await redis.del(...keys);
          } while (cursor !== '0');
          let left = 0;
          cursor = '0';
          do {
            const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 500);
            cursor = next;
            left += keys.length;
          } while (cursor !== '0');
          if (left) console.warn(`[replicas.e2e] ${left} Redis keys left under ${prefix}`);
        }
        console.log(`[replicas.e2e] cleanup: dropped ${DB_NAME} and ${RESTORED_DB}, deleted ${deleted} Redis keys`);
      } finally {
        redis.disconnect();
        if (work) rmSync(work, { recursive: true, force: true });
      }
    }
  }, 120_000);

  it('all three share one database, one key set and one encryption key', async () => {
    // Same JWKS everywhere, so a token minted by one verifies on the others.
    const jwks = await Promise.all(main.map(async (r) => (await call(r.url, '/.well-known/jwks.json')).json));
    expect(jwks[0].keys).toHaveLength(1);
    expect(jwks[1]).toEqual(jwks[0]);
    expect(jwks[2]).toEqual(jwks[0]);
    for (const r of main) {
      const ready = await fetch(`${r.adminUrl}/readyz`);
      expect(ready.status, `${r.name} /readyz`).toBe(200);
      // Users existed before start: no bootstrap admin, no embedded keys.
      expect(r.out()).not.toContain('"event":"bootstrap_admin"');
      expect(r.out()).not.toContain('"event":"keys_generated"');
    }
    const t = await signIn(A, 'kim');
    for (const r of main) {
      const res = await appGet(r, t.access_token);
      expect(res.status, r.name).toBe(200);
      expect(res.json.identity.user).toBe('kim');
    }
  });

  it('(1) a lockout is reached with failures spread over all three replicas', async () => {
    const order = [A, B, C, A, B];
    for (const [i, r] of order.entries()) {
      const res = await login(r, 'lou', WRONG_PASSWORD);
      expect(res.status, `failure ${i + 1} on ${r.name}: ${JSON.stringify(res.json)}`).toBe(401);
      expect(res.json.code).toBe('invalid_credentials');
    }
    // The next attempt, even with the right password, is refused on every replica.
    for (const r of [C, A, B]) {
      const res = await login(r, 'lou');
      expect(res.status, `${r.name}: ${JSON.stringify(res.json)}`).toBe(423);
      expect(res.json.code).toBe('account_locked');
      expect(Number(res.headers.get('retry-after'))).toBeGreaterThan(800);
    }
    // Exactly one replica saw the shared count reach the limit.
    const lockouts = await Promise.all(main.map((r) => metric(r, 'portcullis_lockouts_total')));
    expect(lockouts.reduce((a, b) => a + b, 0)).toBe(1);
    expect(lockouts[1]).toBe(1); // the 5th failure went to B
    const locked = await Promise.all(main.map((r) => metric(r, 'portcullis_login_attempts_total', { result: 'locked' })));
    expect(locked).toEqual([1, 1, 1]);

    // The lock lives in Redis: one `portcullis user unlock` clears it for every replica.
    const unlock = await runCliInProcess(['user', 'unlock', 'lou', '--config', configA], { env: { PORTCULLIS_ENCRYPTION_KEY: ENCRYPTION_KEY } });
    expect(unlock.stderr).toBe('');
    expect(unlock.stdout).toBe('lou: unlocked\n');
    for (const r of [B, C]) expect((await login(r, 'lou')).status, r.name).toBe(200);
  });

  it('(2) one shared login rate limit: 5 logins spread over three replicas pass, the 6th on any is 429', async () => {
    const configs = ['r1', 'r2', 'r3'].map((n) => writeConfig(n, { database: DB_NAME, prefix: RATE_PREFIX, loginLimit: 5 }));
    const group = await Promise.all(configs.map((f, i) => startReplica(`R${i + 1}`, f)));
    try {
      const [R1, R2, R3] = group;
      for (const [i, r] of [R1, R2, R3, R1, R2].entries()) {
        const res = await login(r, 'rita');
        expect(res.status, `login ${i + 1} on ${r.name}: ${JSON.stringify(res.json)}`).toBe(200);
        expect(res.json.access_token).toBeTypeOf('string');
      }
      for (const r of [R3, R1, R2]) {
        const res = await login(r, 'rita');
        expect(res.status, `6th+ login on ${r.name}`).toBe(429);
        expect(res.json.code).toBe('rate_limited');
        expect(Number(res.headers.get('retry-after'))).toBeGreaterThan(0);
        expect(res.headers.get('ratelimit-policy')).toMatch(/q=5\b/);
      }
      const limited = await Promise.all(group.map((r) => metric(r, 'portcullis_rate_limited_total', { limiter: 'login' })));
      expect(limited).toEqual([1, 1, 1]);
      const ok = await Promise.all(group.map((r) => metric(r, 'portcullis_login_attempts_total', { result: 'success' })));
      expect(ok).toEqual([2, 2, 1]);
    } finally {
      await Promise.all(group.map((r) => stopReplica(r)));
    }
  }, 120_000);

  it('(3) a logout on A is refused on B and C within one second', async () => {
    const t = await signIn(A, 'otto');
    for (const r of main) expect((await appGet(r, t.access_token)).status, r.name).toBe(200);
    const sent = performance.now();
    const out = await call(A.url, '/api/auth/logout', { method: 'POST', token: t.access_token });
    const done = performance.now();
    expect(out.status).toBe(204);
    const [onB, onC] = await Promise.all([B, C].map((r) => until401(r, t.access_token, done, 5000)));
    expect((await appGet(A, t.access_token)).status).toBe(401);
    console.log(
      `[replicas.e2e] logout propagation: logout on A took ${(done - sent).toFixed(1)} ms; the token was refused on B ${onB.toFixed(1)} ms and on C ${onC.toFixed(1)} ms after the logout answered`,
    );
    expect(onB).toBeLessThan(1000);
    expect(onC).toBeLessThan(1000);
    // The refusal is the revocation, not some other failure.
    const refused = await appGet(C, t.access_token);
    expect(refused.headers.get('www-authenticate')).toContain('invalid_token');
  });

  it('(3b) a revocation made outside the replicas (CLI user disable) reaches all three within a second (pub/sub from the CLI, database poll as backstop)', async () => {
    const t = await signIn(C, 'otto');
    for (const r of main) expect((await appGet(r, t.access_token)).status, r.name).toBe(200);
    const cli = await runCliInProcess(['user', 'disable', 'otto', '--config', configA], { env: { PORTCULLIS_ENCRYPTION_KEY: ENCRYPTION_KEY } });
    const done = performance.now();
    expect(cli.code, cli.stderr).toBe(0);
    expect(cli.stdout).toBe('otto disabled; 1 session(s) revoked\n');
    const ms = await Promise.all(main.map((r) => until401(r, t.access_token, done, 10_000)));
    console.log(`[replicas.e2e] CLI revocation: refused on A ${ms[0].toFixed(0)} ms, B ${ms[1].toFixed(0)} ms, C ${ms[2].toFixed(0)} ms after the CLI exited`);
    for (const x of ms) expect(x).toBeLessThan(1000);
    expect((await login(A, 'otto')).status).toBe(401);
  });

  it('(4) a TOTP code accepted on A is refused as a replay on B', async () => {
    // Enrolled with the previous step's code, so the current step and the next are both unused
    // and inside the ±1 window: no waiting for the clock.
    const { secret, step } = await enrollTotp(A, 'tess', { previousStep: true });
    // The enrollment used step `step`; sign in with the next step's code (within the ±1 step window).
    const code = await totpAt(secret, (step + 1) * STEP_MS);
    const first = await login(A, 'tess');
    expect(first.status).toBe(200);
    expect(first.json).toMatchObject({ mfa_required: true });
    const ok = await call(A.url, '/api/auth/2fa/verify', { body: { mfa_token: first.json.mfa_token, code } });
    expect(ok.status, JSON.stringify(ok.json)).toBe(200);
    expect(decodeJwt(ok.json.access_token).amr).toEqual(['pwd', 'otp']);
    const viaB = await appGet(B, ok.json.access_token);
    expect(viaB.status).toBe(200);
    expect(viaB.json.identity.user).toBe('tess');

    // Same code, new MFA token, another replica: refused.
    const second = await login(B, 'tess');
    expect(second.json).toMatchObject({ mfa_required: true });
    expect(second.json.mfa_token).not.toBe(first.json.mfa_token);
    const replay = await call(B.url, '/api/auth/2fa/verify', { body: { mfa_token: second.json.mfa_token, code } });
    expect(replay.status).toBe(401);
    expect(replay.json.code).toBe('invalid_mfa_code');
    expect(replay.json.access_token).toBeUndefined();
    // B refused it because A had claimed that time step (shared in Redis), not as a wrong code.
    expect(await metric(B, 'portcullis_mfa_attempts_total', { result: 'replay' })).toBe(1);
    expect(await metric(B, 'portcullis_mfa_attempts_total', { result: 'invalid' })).toBe(0);
    expect(await metric(A, 'portcullis_mfa_attempts_total', { result: 'success' })).toBe(1);

    // Control: the same MFA token on B completes with a code of a later step. (Accepted steps are
    // monotonic per user: a step at or before the last one used is a replay. Step + 2 is the
    // step after the current one at enrollment, inside the ±1 window for the next 30 s or more.)
    expect(Math.floor(Date.now() / STEP_MS)).toBeGreaterThanOrEqual(step + 1);
    const good = await call(B.url, '/api/auth/2fa/verify', { body: { mfa_token: second.json.mfa_token, code: await totpAt(secret, (step + 2) * STEP_MS) } });
    expect(good.status, JSON.stringify(good.json)).toBe(200);
    expect(good.json.access_token).toBeTypeOf('string');
  }, 90_000);

  it('(5) a spent refresh token presented on B is detected and the session is revoked everywhere', async () => {
    const t1 = await signIn(A, 'rex');
    const sid = decodeJwt(t1.access_token).sid as string;
    const r1 = await call(A.url, '/api/auth/refresh', { body: { refresh_token: t1.refresh_token } });
    expect(r1.status).toBe(200);
    const t2 = r1.json as Tokens;
    expect(t2.refresh_token).not.toBe(t1.refresh_token);
    expect(decodeJwt(t2.access_token).sid).toBe(sid);
    expect((await appGet(C, t2.access_token)).status).toBe(200);

    const reuse = await call(B.url, '/api/auth/refresh', { body: { refresh_token: t1.refresh_token } });
    const detected = performance.now();
    expect(reuse.status).toBe(401);
    expect(reuse.json.code).toBe('invalid_refresh_token');
    expect(await metric(B, 'portcullis_token_refresh_total', { result: 'reuse_detected' })).toBe(1);

    // The new access token dies on C (and A), the new refresh token too.
    const onC = await until401(C, t2.access_token, detected, 5000);
    const onA = await until401(A, t2.access_token, detected, 5000);
    console.log(`[replicas.e2e] refresh reuse on B: the rotated access token was refused on C ${onC.toFixed(1)} ms and on A ${onA.toFixed(1)} ms later`);
    expect(onC).toBeLessThan(1000);
    expect(onA).toBeLessThan(1000);
    const again = await call(C.url, '/api/auth/refresh', { body: { refresh_token: t2.refresh_token } });
    expect(again.status).toBe(401);
    expect(again.json.code).toBe('invalid_refresh_token');
    const row = await dbQuery(DB_NAME, 'SELECT revoked_at, revoked_reason FROM sessions WHERE id = $1', [sid]);
    expect(row.rows[0].revoked_at).not.toBeNull();
    expect(row.rows[0].revoked_reason).toBe('refresh_reuse');
  });

  it('(6) one replica SIGKILLed under load: every request to the surviving two succeeds', async () => {
    const token = (await signIn(B, 'kim')).access_token;
    for (const r of main) expect((await appGet(r, token, '/app/load')).status, r.name).toBe(200);

    type Result = autocannon.Result;
    const DURATION_S = 8;
    const KILL_AFTER_MS = 3000;
    const CONNECTIONS = 4;
    let killedAt = 0;
    // One autocannon instance per replica: the test is the load balancer. sampleInt 100 ms makes a
    // stop() take effect within 100 ms (autocannon acts on it at its next sample tick).
    const perReplica = main.map((r) => {
      const n = { okBefore: 0, okAfter: 0, otherBefore: 0, otherAfter: 0, errBefore: 0, errAfter: 0 };
      let instance!: autocannon.Instance;
      const done = new Promise<Result>((resolve, reject) => {
        instance = autocannon(
          {
            url: `${r.url}/app/load`,
            connections: CONNECTIONS,
            duration: DURATION_S,
            timeout: 10,
            sampleInt: 100,
            headers: { authorization: `Bearer ${token}` },
          },
          (err, result) => (err ? reject(err) : resolve(result)),
        );
      });
      instance.on('response', (_client: unknown, status: number) => {
        const ok = status >= 200 && status < 300;
        if (killedAt) ok ? n.okAfter++ : n.otherAfter++;
        else ok ? n.okBefore++ : n.otherBefore++;
      });
      instance.on('reqError', () => (killedAt ? n.errAfter++ : n.errBefore++));
      return { r, instance, done, n };
    });

    await sleep(KILL_AFTER_MS);
    const c = perReplica[2];
    expect(c.n.okBefore).toBeGreaterThan(0);
    C.child.kill('SIGKILL');
    killedAt = performance.now();
    // The test's load balancer takes the dead target out.
    c.instance.stop();
    const results = await Promise.all(perReplica.map((p) => p.done));
    const exit = await C.exited;
    running.delete(C);
    expect(exit.signal).toBe('SIGKILL');

    const figures = results.map((res, i) => ({
      replica: main[i].name,
      sent: res.requests.sent,
      '2xx': res['2xx'],
      non2xx: res.non2xx,
      errors: res.errors,
      timeouts: res.timeouts,
      // Sent but neither answered nor failed: cut off by the load generator's own stop.
      unanswered: res.requests.sent - res['2xx'] - res.non2xx - res.errors,
      '2xx after kill': perReplica[i].n.okAfter,
      'errors after kill': perReplica[i].n.errAfter,
      seconds: res.duration,
    }));
    console.log(`[replicas.e2e] kill under load (${DURATION_S} s, ${CONNECTIONS} connections per replica, C SIGKILLed after ${KILL_AFTER_MS} ms):`);
    console.table(figures);
    const [fa, fb, fc] = figures;
    console.log(
      `[replicas.e2e] A+B: ${fa.sent + fb.sent} requests sent (A ${fa.sent}, B ${fb.sent}), ${fa['2xx'] + fb['2xx']} succeeded, ` +
        `${fa.non2xx + fb.non2xx} non-2xx, ${fa.errors + fb.errors} errors, ${fa.timeouts + fb.timeouts} timeouts ` +
        `(${fa['2xx after kill'] + fb['2xx after kill']} of the successes after the kill); ` +
        `C: ${fc.sent} sent, ${c.n.okBefore} succeeded before the kill, ${c.n.okAfter} answered after the SIGKILL was sent, ` +
        `${c.n.errAfter} failed after it (in flight at the kill, or reconnects before the balancer's stop took effect), ${fc.unanswered} cut off unanswered`,
    );

    for (const f of [fa, fb]) {
      expect(f.errors, `${f.replica} errors`).toBe(0);
      expect(f.timeouts, `${f.replica} timeouts`).toBe(0);
      expect(f.non2xx, `${f.replica} non-2xx`).toBe(0);
      expect(f['2xx'], `${f.replica} served requests`).toBeGreaterThan(50);
      expect(f['2xx after kill'], `${f.replica} kept serving after the kill`).toBeGreaterThan(20);
      // At most one request per connection can be in flight when autocannon stops.
      expect(f.unanswered, `${f.replica} unanswered`).toBeLessThanOrEqual(CONNECTIONS);
    }
    expect(c.n.errBefore + c.n.otherBefore).toBe(0);
    expect(figures[2]['2xx']).toBeGreaterThan(0);
    // The survivors still sign in and serve.
    const after = await signIn(A, 'kim');
    expect((await appGet(B, after.access_token)).status).toBe(200);
    for (const r of [A, B]) expect((await fetch(`${r.adminUrl}/readyz`)).status).toBe(200);
  }, 120_000);

  it('(7) backup and restore: a pg_dump restored into a fresh database serves sign-ins with the same keys', async () => {
    // State before the dump: a live session, a logged-out session, a user with 2FA.
    const kept = await signIn(A, 'bea');
    const ended = await signIn(A, 'bea');
    expect((await call(A.url, '/api/auth/logout', { method: 'POST', token: ended.access_token })).status).toBe(204);
    const { secret } = await enrollTotp(A, 'bo');

    const dump = join(work, 'portcullis.dump');
    await pgTool('pg_dump', ['--format=custom', `--file=${dump}`, `--dbname=${dbUrl(DB_NAME)}`]);
    // Written after the dump: must not be in the restored copy.
    await addUser(configA, 'late');

    await pgTool('createdb', [...connArgs(), RESTORED_DB]);
    await pgTool('pg_restore', ['--no-owner', `--dbname=${dbUrl(RESTORED_DB)}`, dump]);
    const users = await dbQuery(RESTORED_DB, 'SELECT username FROM users ORDER BY username');
    expect(users.rows.map((r) => r.username)).toEqual([...USERS].sort());

    const restored = await startReplica('restored', writeConfig('restored', { database: RESTORED_DB, prefix: RESTORED_PREFIX, loginLimit: 100_000 }));
    // The migration history came with the dump: nothing to apply.
    expect(restored.out()).not.toContain('"event":"migrated"');
    expect(restored.out()).not.toContain('"event":"bootstrap_admin"');

    // A user created before the dump signs in and reaches the upstream.
    const t = await signIn(restored, 'bea');
    const res = await appGet(restored, t.access_token, '/app/after-restore');
    expect(res.status).toBe(200);
    expect(res.json.identity).toMatchObject({ user: 'bea', email: 'bea@example.com' });
    expect(res.json.path).toBe('/app/after-restore');

    // Sessions survive: the pre-dump access token verifies (same keys) and its refresh token rotates;
    // the session logged out before the dump stays revoked.
    expect((await appGet(restored, kept.access_token)).status).toBe(200);
    const rotated = await call(restored.url, '/api/auth/refresh', { body: { refresh_token: kept.refresh_token } });
    expect(rotated.status, JSON.stringify(rotated.json)).toBe(200);
    expect((await appGet(restored, ended.access_token)).status).toBe(401);

    // The 2FA secret decrypts with the same encryption key.
    const step1 = await login(restored, 'bo');
    expect(step1.json).toMatchObject({ mfa_required: true });
    const verified = await call(restored.url, '/api/auth/2fa/verify', { body: { mfa_token: step1.json.mfa_token, code: await totpAt(secret, Date.now()) } });
    expect(verified.status, JSON.stringify(verified.json)).toBe(200);

    // Nothing written after the dump is there.
    expect((await login(restored, 'late')).status).toBe(401);
    await stopReplica(restored);
    expect((await restored.exited).code).toBe(0);
  }, 180_000);
});
