/**
 * End-to-end: failure behaviour (docs/operations.md, "Running several replicas" and "Database").
 *
 * Real gateways (startHarness) in front of a real echo upstream, against dependencies these
 * tests really take down and bring back:
 *
 * - A. a PRIVATE redis-server (no persistence) that is SIGKILLed and restarted on the same
 *   port, and later frozen with SIGSTOP;
 * - B. the real PostgreSQL behind a small TCP proxy that is stopped (listener closed, every
 *   piped socket destroyed) and restarted on the same port, and later frozen (connections
 *   accepted, nothing relayed);
 * - C. a Redis URL with nothing behind it at start, where a redis-server is started later.
 *
 * While a dependency is down, login, refresh and 2FA verification must answer 503
 * `service_unavailable` within 2 s, `/readyz` must say which dependency is down,
 * `portcullis_dependency_up` must drop to 0, and proxied requests with valid tokens must keep
 * working on the last known revocation list. When the dependency returns, everything must
 * recover without restarting the gateway.
 *
 * CI rule: with CI=true, a missing redis-server or an unreachable PostgreSQL fails this file
 * (a failing test per missing dependency); elsewhere those suites are skipped, loudly.
 */
import { spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import pg from 'pg';
import { decodeJwt } from 'jose';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SqlDatabase } from '../src/store/sql/index.js';
import { generateSigningJwk } from '../src/tokens/index.js';
import { GOOD_PASSWORD, addUser, metricsText, sample, startHarness, totpAt, type Harness } from './support/helpers.js';
import { freePort, PrivateRedis, postgresReachable } from './support/services.js';

const IN_CI = process.env.CI === 'true';
const PG_URL = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const AUTH = '/api/auth';
/** The requirement: a dependency outage is answered within this many milliseconds. */
const FAIL_FAST_MS = 2000;
/** How long recovery may take once the dependency is back (reconnect backoff is capped at 2 s). */
const RECOVERY_DEADLINE_MS = 10_000;

/** This file tests outages, not the per-IP limits: those are raised out of the way. */
const AUTH_YAML = `
auth:
  login_rate_limit: { requests: 100000, per: 1m }
  api_rate_limit: { requests: 100000, per: 1m }
`;

/** `app` needs no shared state on the hot path; `limited` has a per-route limit (kept in Redis when configured). */
const FAILURE_ROUTES = `
routes:
  - name: limited
    match: { path: /limited/** }
    upstream: echo
    access: authenticated
    rate_limit: { requests: 100000, per: 1m }
  - name: app
    match: { path: /app/** }
    upstream: echo
    access: authenticated
`;

/** Every latency measured under failure, printed at the end (and quoted in reports). */
const measured: Record<string, number> = {};
afterAll(() => {
  if (Object.keys(measured).length) console.log(`[failure.e2e] measured latencies (ms): ${JSON.stringify(measured, null, 1)}`);
});

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

interface Reply {
  status: number;
  /** Wall time from sending the request to having the whole body, in ms. */
  ms: number;
  headers: Headers;
  text: string;
  json: any;
}

async function request(url: string, init: RequestInit = {}): Promise<Reply> {
  const start = performance.now();
  const res = await fetch(url, { ...init, signal: AbortSignal.timeout(15_000) });
  const text = await res.text();
  const ms = Math.round(performance.now() - start);
  let json: any;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, ms, headers: res.headers, text, json };
}

const postJson = (h: Harness, path: string, body: unknown, headers: Record<string, string> = {}) =>
  request(`${h.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });

const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

const loginReq = (h: Harness, username: string) => postJson(h, `${AUTH}/login`, { username, password: GOOD_PASSWORD });

interface Tokens {
  access: string;
  refresh: string;
  sid: string;
}

async function signIn(h: Harness, username: string): Promise<Tokens> {
  const r = await loginReq(h, username);
  expect(r.status, r.text).toBe(200);
  return { access: r.json.access_token, refresh: r.json.refresh_token, sid: String(decodeJwt(r.json.access_token).sid) };
}

/** A user with 2FA enabled (enrolled over HTTP, code from otplib at real time); returns the TOTP secret. */
async function enrollMfaUser(h: Harness, username: string): Promise<string> {
  await addUser(h, username);
  const t = await signIn(h, username);
  const setup = await request(`${h.url}${AUTH}/2fa/setup`, { method: 'POST', headers: bearer(t.access) });
  expect(setup.status, setup.text).toBe(200);
  const secret: string = setup.json.secret;
  const enable = await postJson(h, `${AUTH}/2fa/enable`, { code: await totpAt(secret, Date.now()) }, bearer(t.access));
  expect(enable.status, enable.text).toBe(200);
  expect(enable.json.recovery_codes).toHaveLength(10);
  return secret;
}

/** The password step of a 2FA sign-in: returns the MFA token. */
async function mfaToken(h: Harness, username: string): Promise<string> {
  const r = await loginReq(h, username);
  expect(r.status, r.text).toBe(200);
  expect(r.json.mfa_required).toBe(true);
  return r.json.mfa_token;
}

/** A code at a TOTP step after the current one: valid (one step of skew) and never a replay of enrollment's. */
const nextStepCode = (secret: string) => totpAt(secret, Date.now() + 30_000);

/** Asserts the fail-closed answer: 503 problem+json `service_unavailable` with Retry-After, within 2 s. */
function expectUnavailable(r: Reply, label: string): void {
  measured[label] = r.ms;
  expect(r.status, `${label}: ${r.text}`).toBe(503);
  expect(r.headers.get('content-type')).toMatch(/^application\/problem\+json/);
  expect(r.json).toMatchObject({ status: 503, code: 'service_unavailable' });
  expect(r.headers.get('retry-after')).toBe('2');
  expect(r.ms, `${label} took ${r.ms} ms`).toBeLessThan(FAIL_FAST_MS);
}

const readyz = (h: Harness) => request(`${h.adminUrl}/readyz`);

/**
 * A dependency failure is named in words (docs/observability.md): a sentence saying what is
 * unreachable or failing and why, never a bare library message or a stack; the log line
 * (`event: dependency_failure`) says the same.
 */
function expectPlainFailure(h: Harness, dependency: string, error: string): void {
  expect(error).toMatch(/ (unreachable|failing)( at \S+)?: \S/);
  expect(error).not.toMatch(/ECONNREFUSED|enableOfflineQueue|Stream isn't writeable|\n\s+at /);
  const logged = h.logs.filter((l) => l.event === 'dependency_failure' && l.dependency === dependency);
  expect(logged.map((l) => l.error)).toContain(error);
}

/** Polls `probe` until it returns a truthy value; fails naming `what` (and the last value) after `timeoutMs`. */
async function eventually<T>(
  what: string,
  probe: () => Promise<T | false | undefined>,
  timeoutMs = RECOVERY_DEADLINE_MS,
  everyMs = 150,
): Promise<{ value: T; ms: number }> {
  const start = performance.now();
  let last: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v) return { value: v, ms: Math.round(performance.now() - start) };
      last = v;
    } catch (e) {
      last = e;
    }
    if (performance.now() - start > timeoutMs)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
    await sleep(everyMs);
  }
}

/** Polls `check` (sync) every 10 ms; returns how long it took, in ms. */
async function within(what: string, check: () => boolean | Promise<boolean>, timeoutMs: number): Promise<number> {
  const start = performance.now();
  while (!(await check())) {
    if (performance.now() - start > timeoutMs) throw new Error(`not within ${timeoutMs} ms: ${what}`);
    await sleep(10);
  }
  return Math.round(performance.now() - start);
}

async function proxiedStatus(h: Harness, path: string, token: string): Promise<Reply> {
  return request(`${h.url}${path}`, { headers: bearer(token) });
}

/**
 * A TCP relay in front of PostgreSQL: `stop()` closes the listener and destroys every relayed
 * socket (as a crashed server would), `start()` listens again on the same port, `freeze()`
 * keeps accepting connections but relays nothing (a hung server or a network partition) until
 * `thaw()`, which delivers what was held.
 */
class TcpProxy {
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  private frozen = false;
  private held: [Socket, Buffer][] = [];
  port = 0;

  constructor(
    private readonly targetHost: string,
    private readonly targetPort: number,
  ) {}

  get running(): boolean {
    return this.server !== undefined;
  }

  async start(): Promise<number> {
    const server = createServer((client) => this.relay(client));
    server.listen(this.port, '127.0.0.1');
    await once(server, 'listening');
    this.port = (server.address() as { port: number }).port;
    this.server = server;
    return this.port;
  }

  private relay(client: Socket): void {
    const upstream = createConnection({ host: this.targetHost, port: this.targetPort });
    for (const s of [client, upstream]) {
      this.sockets.add(s);
      s.setNoDelay(true);
      s.on('error', () => undefined);
      s.on('close', () => {
        this.sockets.delete(s);
        (s === client ? upstream : client).destroy();
      });
    }
    const pipe = (from: Socket, to: Socket) =>
      from.on('data', (d: Buffer) => {
        if (this.frozen) this.held.push([to, d]);
        else if (!to.destroyed) to.write(d);
      });
    pipe(client, upstream);
    pipe(upstream, client);
  }

  /** Closes the listener and destroys every relayed socket; resolves once the port is free. */
  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    this.frozen = false;
    this.held = [];
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  freeze(): void {
    this.frozen = true;
  }

  thaw(): void {
    this.frozen = false;
    const held = this.held;
    this.held = [];
    for (const [to, d] of held) if (!to.destroyed) to.write(d);
  }
}

// ---------------------------------------------------------------------------------------------
// Availability: in CI a missing dependency fails the run; elsewhere the suites skip, loudly.
// ---------------------------------------------------------------------------------------------

const haveRedisServer = spawnSync('redis-server', ['--version']).status === 0;

const pgReachable = (): Promise<boolean> => postgresReachable(PG_URL);
const havePostgres = await pgReachable();

if (!haveRedisServer) {
  if (IN_CI) {
    describe('Redis outages', () => {
      it('need redis-server on PATH (CI=true: this must not be skipped)', () => {
        expect.fail('redis-server is not on PATH');
      });
    });
  } else {
    console.warn('\n⚠  SKIPPING the Redis outage e2e tests: redis-server is not on PATH (CI=true makes this a failure)\n');
  }
}
if (!havePostgres) {
  if (IN_CI) {
    describe('PostgreSQL outages', () => {
      it(`need PostgreSQL at ${PG_URL} (CI=true: this must not be skipped)`, () => {
        expect.fail(`PostgreSQL is unreachable at ${PG_URL}; start it or set DATABASE_URL`);
      });
    });
  } else {
    console.warn(`\n⚠  SKIPPING the PostgreSQL outage e2e tests: PostgreSQL at ${PG_URL} is unreachable (CI=true makes this a failure)\n`);
  }
}

const withRedisServer = describe.runIf(haveRedisServer);
const withPostgres = describe.runIf(havePostgres);

// ---------------------------------------------------------------------------------------------
// A. Redis goes down (SIGKILL), comes back on the same port; then freezes (SIGSTOP)
// ---------------------------------------------------------------------------------------------

withRedisServer('A. Redis outage (private redis-server, SIGKILL and restart)', () => {
  let redis: PrivateRedis;
  /** The gateway under test: SQLite + the private Redis. */
  let h: Harness;
  /**
   * A second replica: same Redis and prefix, same signing key, but its OWN database, so the
   * only way it can learn of a revocation made on `h` is the Redis pub/sub channel.
   */
  let h2: Harness;
  let user: Tokens;
  let mfaSecret: string;
  let preOutageMfaToken: string;

  beforeAll(async () => {
    redis = new PrivateRedis(await freePort());
    await redis.start();
    const prefix = `pc-fail:${process.pid}:${Date.now().toString(36)}:`;
    const env = { PORTCULLIS_SIGNING_KEYS: JSON.stringify({ keys: [await generateSigningJwk()] }) };
    h = await startHarness({ redisUrl: redis.url, redisPrefix: prefix, env, extraYaml: AUTH_YAML, routes: FAILURE_ROUTES });
    h2 = await startHarness({ redisUrl: redis.url, redisPrefix: prefix, env, extraYaml: AUTH_YAML, routes: FAILURE_ROUTES });
    expect(h.app.state.backend).toBe('redis');
    await addUser(h, 'alice');
    mfaSecret = await enrollMfaUser(h, 'mallory');
  });

  afterAll(async () => {
    redis?.thaw();
    await h?.close();
    await h2?.close();
    await redis?.kill();
  });

  it('before the outage: signs in, proxies, is ready, and a logout on one replica reaches the other within 1 s', async () => {
    user = await signIn(h, 'alice');
    expect((await proxiedStatus(h, '/app/x', user.access)).status).toBe(200);
    const echo = (await proxiedStatus(h2, '/app/x', user.access)).json;
    expect(echo.headers['x-auth-user']).toBe('alice');
    preOutageMfaToken = await mfaToken(h, 'mallory');

    const ready = await readyz(h);
    expect(ready.status, ready.text).toBe(200);
    expect(ready.json.checks).toEqual({ config: { ok: true }, database: { ok: true }, state_store: { ok: true } });
    expect(sample(await metricsText(h), 'portcullis_dependency_up', { dependency: 'state_store' })).toBe(1);

    // Baseline of the pub/sub path (h2 has its own database: no poll can tell it).
    const other = await signIn(h, 'alice');
    expect((await proxiedStatus(h2, '/app/x', other.access)).status).toBe(200);
    const out = await request(`${h.url}${AUTH}/logout`, { method: 'POST', headers: bearer(other.access) });
    expect(out.status, out.text).toBe(204);
    measured['A pub/sub delivery before outage'] = await within(
      'h2 refuses the logged-out token',
      async () => (await proxiedStatus(h2, '/app/x', other.access)).status === 401,
      1000,
    );
  });

  describe('while Redis is down (SIGKILL)', () => {
    beforeAll(async () => {
      await redis.kill();
    });

    it('POST /login answers 503 service_unavailable within 2 s', async () => {
      expectUnavailable(await loginReq(h, 'alice'), 'A login (Redis killed)');
      // Not just the first request: the next ones too (no slow retry path after the first).
      expectUnavailable(await loginReq(h, 'alice'), 'A login again (Redis killed)');
    });

    it('POST /refresh answers 503 within 2 s (and does not spend the refresh token)', async () => {
      expectUnavailable(await postJson(h, `${AUTH}/refresh`, { refresh_token: user.refresh }), 'A refresh (Redis killed)');
    });

    it('POST /2fa/verify with a valid MFA token and a valid code answers 503 (not 401) within 2 s', async () => {
      const r = await postJson(h, `${AUTH}/2fa/verify`, { mfa_token: preOutageMfaToken, code: await nextStepCode(mfaSecret) });
      expectUnavailable(r, 'A 2fa verify (Redis killed)');
    });

    it('the 2FA step itself maps a state-store failure to 503 (not 500), also when the limiter in front passed', async () => {
      // Over HTTP, the auth-API rate limiter (which also needs Redis) answers 503 first. Redis can
      // just as well die between the limiter and the 2FA step; call the step directly to see what
      // it does then. It must fail closed with 503 like login does, not leak a raw ioredis error
      // (which the HTTP layer turns into a 500 internal_error).
      const start = performance.now();
      const err = await h.app.mfa.verifyLogin({ mfa_token: preOutageMfaToken, code: await nextStepCode(mfaSecret) }, '127.0.0.1').then(
        () => undefined,
        (e: unknown) => e,
      );
      measured['A mfa.verifyLogin direct (Redis killed)'] = Math.round(performance.now() - start);
      expect(err, 'verifyLogin should reject while Redis is down').toBeDefined();
      expect(err).toMatchObject({ status: 503, code: 'service_unavailable' });
    });

    it('/readyz answers 503 naming state_store, and portcullis_dependency_up{state_store} is 0', async () => {
      const r = await readyz(h);
      measured['A /readyz (Redis killed)'] = r.ms;
      expect(r.status, r.text).toBe(503);
      expect(r.json.status).toBe('not_ready');
      expect(r.json.checks.state_store.ok).toBe(false);
      expect(typeof r.json.checks.state_store.error).toBe('string');
      expectPlainFailure(h, 'state_store', r.json.checks.state_store.error);
      expect(r.json.checks.state_store.error).toMatch(/^Redis \(state store\) unreachable/);
      expect(r.json.checks.database).toEqual({ ok: true });
      expect(r.ms).toBeLessThan(FAIL_FAST_MS);
      const m = await metricsText(h);
      expect(sample(m, 'portcullis_dependency_up', { dependency: 'state_store' })).toBe(0);
      expect(sample(m, 'portcullis_dependency_up', { dependency: 'database' })).toBe(1);
    });

    it('proxied requests with a valid token keep working (and a per-route limit fails open)', async () => {
      const r = await proxiedStatus(h, '/app/x', user.access);
      measured['A proxied /app/x (Redis killed)'] = r.ms;
      expect(r.status, r.text).toBe(200);
      expect(r.json.headers['x-auth-user']).toBe('alice');
      expect((await proxiedStatus(h2, '/app/x', user.access)).status).toBe(200);
      const limited = await proxiedStatus(h, '/limited/y', user.access);
      expect(limited.status, limited.text).toBe(200);
      // No token is still no entry.
      expect((await request(`${h.url}/app/x`)).status).toBe(401);
      // docs/operations.md: the route "lets requests through and logs rate_limit_store_error".
      expect(
        h.logs.some((l) => l.event === 'rate_limit_store_error' && l.limiter === 'route:limited'),
        'rate_limit_store_error logged for route:limited',
      ).toBe(true);
    });
  });

  describe('after redis-server restarts on the same port', () => {
    beforeAll(async () => {
      await redis.start();
    });

    it('once /readyz says the state store is back, the very next login and refresh succeed (no leftover 503)', async () => {
      const { ms } = await eventually('readyz 200', async () => (await readyz(h)).status === 200);
      measured['A readyz recovery after restart'] = ms;
      // Each rate limiter (login, auth API) must not need a sacrificial request to recover.
      const first = await loginReq(h, 'alice');
      expect(first.status, `first login after recovery: ${first.text}`).toBe(200);
      const other = await signIn(h, 'alice');
      const rf = await postJson(h, `${AUTH}/refresh`, { refresh_token: other.refresh });
      expect(rf.status, `first refresh after recovery: ${rf.text}`).toBe(200);
    });

    it('login works again, /readyz is 200 and dependency_up is 1, without a restart', async () => {
      const { value: r, ms } = await eventually('login to succeed again', async () => {
        const x = await loginReq(h, 'alice');
        return x.status === 200 ? x : false;
      });
      measured['A login recovery after restart'] = ms;
      expect(r.json.token_type).toBe('Bearer');
      const ready = await eventually('readyz 200', async () => {
        const x = await readyz(h);
        return x.status === 200 ? x : false;
      });
      expect(ready.value.json.checks).toEqual({ config: { ok: true }, database: { ok: true }, state_store: { ok: true } });
      expect(sample(await metricsText(h), 'portcullis_dependency_up', { dependency: 'state_store' })).toBe(1);
    });

    it('refresh and 2FA verify work again (with the token and MFA token from before the outage)', async () => {
      const rf = await eventually('refresh to succeed', async () => {
        const x = await postJson(h, `${AUTH}/refresh`, { refresh_token: user.refresh });
        return x.status === 200 ? x : false;
      });
      expect(rf.value.json.refresh_token).not.toBe(user.refresh);
      user = { ...user, access: rf.value.json.access_token, refresh: rf.value.json.refresh_token };
      const v = await postJson(h, `${AUTH}/2fa/verify`, { mfa_token: preOutageMfaToken, code: await nextStepCode(mfaSecret) });
      expect(v.status, v.text).toBe(200);
      expect(decodeJwt(v.json.access_token).amr).toEqual(['pwd', 'otp']);
    });

    it('a logout made after recovery is refused on the other replica within 1 s (pub/sub re-subscribed)', async () => {
      // Wait until both replicas' subscriber connections have re-subscribed (they log it).
      const resubscribed = (x: Harness) => x.logs.some((l) => l.msg === 'revocation channel re-subscribed; reloading revocations from the database');
      await eventually('both replicas to re-subscribe', async () => resubscribed(h) && resubscribed(h2));
      const t = await signIn(h, 'alice');
      expect((await proxiedStatus(h2, '/app/x', t.access)).status).toBe(200);
      const out = await request(`${h.url}${AUTH}/logout`, { method: 'POST', headers: bearer(t.access) });
      expect(out.status, out.text).toBe(204);
      expect((await proxiedStatus(h, '/app/x', t.access)).status).toBe(401);
      measured['A pub/sub delivery after recovery'] = await within(
        'h2 refuses the logged-out token',
        async () => (await proxiedStatus(h2, '/app/x', t.access)).status === 401,
        1000,
      );
    });
  });

  describe('while Redis is frozen (SIGSTOP: connections accepted, nothing answered)', () => {
    beforeAll(() => {
      redis.freeze();
    });

    it('login, refresh and 2FA verify answer 503 within 2 s; /readyz 503 within 2 s; proxying goes on', async () => {
      const mfa = await (async () => {
        redis.thaw();
        const t = await eventually('an MFA token', async () => {
          const x = await loginReq(h, 'mallory');
          return x.status === 200 ? (x.json.mfa_token as string) : false;
        });
        redis.freeze();
        return t.value;
      })();
      expectUnavailable(await loginReq(h, 'alice'), 'A login (Redis frozen)');
      expectUnavailable(await postJson(h, `${AUTH}/refresh`, { refresh_token: user.refresh }), 'A refresh (Redis frozen)');
      expectUnavailable(await postJson(h, `${AUTH}/2fa/verify`, { mfa_token: mfa, code: await nextStepCode(mfaSecret) }), 'A 2fa verify (Redis frozen)');
      const r = await readyz(h);
      measured['A /readyz (Redis frozen)'] = r.ms;
      expect(r.status, r.text).toBe(503);
      expect(r.json.checks.state_store.ok).toBe(false);
      expect(r.ms).toBeLessThan(FAIL_FAST_MS);
      expect(sample(await metricsText(h), 'portcullis_dependency_up', { dependency: 'state_store' })).toBe(0);
      const p = await proxiedStatus(h, '/app/x', user.access);
      measured['A proxied /app/x (Redis frozen)'] = p.ms;
      expect(p.status).toBe(200);
    });

    it('thawed: login works again without a restart', async () => {
      redis.thaw();
      const { ms } = await eventually('login after the thaw', async () => (await loginReq(h, 'alice')).status === 200);
      measured['A login recovery after thaw'] = ms;
      expect((await readyz(h)).status).toBe(200);
    });
  });
});

// ---------------------------------------------------------------------------------------------
// B. PostgreSQL goes away (TCP relay stopped) and comes back; then hangs (relay frozen)
// ---------------------------------------------------------------------------------------------

withPostgres('B. PostgreSQL outage (TCP relay in front of the real server)', () => {
  const schema = `pc_fail_${process.pid}_${Date.now().toString(36)}`;
  const target = new URL(PG_URL);
  const relay = new TcpProxy(target.hostname, Number(target.port || 5432));
  let h: Harness;
  let user: Tokens;
  let loggedOut: Tokens;
  let revokedElsewhere: Tokens;
  let mfaSecret: string;
  /** Uncaught exceptions while PostgreSQL comes and goes (in production any one of them ends the process). */
  const uncaught: Error[] = [];
  const onUncaught = (e: Error) => uncaught.push(e);

  beforeAll(async () => {
    process.on('uncaughtException', onUncaught);
    const port = await relay.start();
    const via = new URL(PG_URL);
    via.hostname = '127.0.0.1';
    via.port = String(port);
    via.searchParams.set('schema', schema);
    h = await startHarness({ databaseUrl: via.toString(), extraYaml: AUTH_YAML, routes: FAILURE_ROUTES });
    expect(h.app.db.dialect).toBe('postgres');
    await addUser(h, 'bob');
    mfaSecret = await enrollMfaUser(h, 'trudy');
  });

  afterAll(async () => {
    process.off('uncaughtException', onUncaught);
    try {
      if (!relay.running) await relay.start();
      relay.thaw();
      await h?.close();
    } finally {
      await relay.stop();
      const c = new pg.Client({ connectionString: PG_URL });
      await c.connect();
      await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      await c.end();
    }
  });

  it('before the outage: signs in and proxies; one session logged out, one revoked in the database by another party', async () => {
    user = await signIn(h, 'bob');
    expect((await proxiedStatus(h, '/app/x', user.access)).status).toBe(200);

    loggedOut = await signIn(h, 'bob');
    const out = await request(`${h.url}${AUTH}/logout`, { method: 'POST', headers: bearer(loggedOut.access) });
    expect(out.status, out.text).toBe(204);
    expect((await proxiedStatus(h, '/app/x', loggedOut.access)).status).toBe(401);

    // Revoked straight in PostgreSQL (as another replica or the CLI would): the gateway learns it by its poll.
    revokedElsewhere = await signIn(h, 'bob');
    expect((await proxiedStatus(h, '/app/x', revokedElsewhere.access)).status).toBe(200);
    const c = new pg.Client({ connectionString: PG_URL });
    await c.connect();
    const upd = await c.query(`UPDATE ${schema}.sessions SET revoked_at = $1, revoked_reason = 'admin' WHERE id = $2`, [Date.now(), revokedElsewhere.sid]);
    await c.end();
    expect(upd.rowCount).toBe(1);
    await within('the poll to pick up the revocation', async () => (await proxiedStatus(h, '/app/x', revokedElsewhere.access)).status === 401, 5000);

    const ready = await readyz(h);
    expect(ready.status, ready.text).toBe(200);
    expect(sample(await metricsText(h), 'portcullis_dependency_up', { dependency: 'database' })).toBe(1);
  });

  describe('while PostgreSQL is unreachable (relay stopped, every connection cut)', () => {
    let mfa: string;
    let inFlight: Promise<unknown>;
    beforeAll(async () => {
      mfa = await mfaToken(h, 'trudy');
      // A query in flight on the gateway's own pool when the database goes away (any request
      // or the revocation poll can be mid-query at that moment; this one makes it certain).
      inFlight = sql`select pg_sleep(2)`.execute((h.app.db as SqlDatabase).kysely).then(
        () => 'completed',
        (e: Error) => e,
      );
      await sleep(200);
      await relay.stop();
    });
    it('the gateway process survives connections cut mid-query (no uncaught pg client error)', async () => {
      const outcome = await inFlight;
      expect(outcome, 'the in-flight query must fail, not hang or succeed').toBeInstanceOf(Error);
      await sleep(300);
      // In production an uncaught exception ends the process: a database restart must not crash the gateway.
      expect(uncaught.map((e) => e.message)).toEqual([]);
    });

    it('POST /login answers 503 service_unavailable within 2 s', async () => {
      expectUnavailable(await loginReq(h, 'bob'), 'B login (PG stopped)');
      expectUnavailable(await loginReq(h, 'bob'), 'B login again (PG stopped)');
    });

    it('POST /refresh and POST /2fa/verify answer 503 within 2 s', async () => {
      expectUnavailable(await postJson(h, `${AUTH}/refresh`, { refresh_token: user.refresh }), 'B refresh (PG stopped)');
      expectUnavailable(await postJson(h, `${AUTH}/2fa/verify`, { mfa_token: mfa, code: await nextStepCode(mfaSecret) }), 'B 2fa verify (PG stopped)');
    });

    it('/readyz answers 503 naming database, and portcullis_dependency_up{database} is 0', async () => {
      const r = await readyz(h);
      measured['B /readyz (PG stopped)'] = r.ms;
      expect(r.status, r.text).toBe(503);
      expect(r.json.checks.database.ok).toBe(false);
      expect(typeof r.json.checks.database.error).toBe('string');
      expectPlainFailure(h, 'database', r.json.checks.database.error);
      expect(r.json.checks.state_store).toEqual({ ok: true });
      expect(r.ms).toBeLessThan(FAIL_FAST_MS);
      const m = await metricsText(h);
      expect(sample(m, 'portcullis_dependency_up', { dependency: 'database' })).toBe(0);
      expect(sample(m, 'portcullis_dependency_up', { dependency: 'state_store' })).toBe(1);
    });

    it('proxied requests with a valid token keep working; revocations made before the outage are still enforced', async () => {
      const r = await proxiedStatus(h, '/app/x', user.access);
      measured['B proxied /app/x (PG stopped)'] = r.ms;
      expect(r.status, r.text).toBe(200);
      expect(r.json.headers['x-auth-user']).toBe('bob');
      // Several poll rounds fail meanwhile (100 ms interval): the list must not be emptied.
      await sleep(500);
      expect(h.logs.some((l) => l.msg === 'revocation sync failed; keeping the last known list')).toBe(true);
      expect((await proxiedStatus(h, '/app/x', loggedOut.access)).status).toBe(401);
      expect((await proxiedStatus(h, '/app/x', revokedElsewhere.access)).status).toBe(401);
      expect((await proxiedStatus(h, '/app/x', user.access)).status).toBe(200);
    });
  });

  describe('after the relay starts again on the same port', () => {
    beforeAll(async () => {
      await relay.start();
    });

    it('login, refresh and /readyz recover without restarting the gateway', async () => {
      const { ms } = await eventually('login to succeed again', async () => (await loginReq(h, 'bob')).status === 200);
      measured['B login recovery after restart'] = ms;
      const ready = await readyz(h);
      expect(ready.status, ready.text).toBe(200);
      expect(ready.json.checks).toEqual({ config: { ok: true }, database: { ok: true }, state_store: { ok: true } });
      expect(sample(await metricsText(h), 'portcullis_dependency_up', { dependency: 'database' })).toBe(1);
      const rf = await postJson(h, `${AUTH}/refresh`, { refresh_token: user.refresh });
      expect(rf.status, rf.text).toBe(200);
      user = { ...user, access: rf.json.access_token, refresh: rf.json.refresh_token };
      // The revocations are still there after the poll resumed.
      expect((await proxiedStatus(h, '/app/x', revokedElsewhere.access)).status).toBe(401);
    });
  });

  describe('while PostgreSQL hangs on new connections (relay restarted frozen: accepted, nothing relayed)', () => {
    beforeAll(async () => {
      // Every pooled connection is cut, and new ones get no answer: the pool's 2 s connect timeout applies.
      await relay.stop();
      await relay.start();
      relay.freeze();
    });

    it('/readyz answers 503 within 2 s', async () => {
      const r = await readyz(h);
      measured['B /readyz (PG hangs, new connections)'] = r.ms;
      expect(r.status, r.text).toBe(503);
      expect(r.json.checks.database.ok).toBe(false);
      expect(r.ms).toBeLessThan(FAIL_FAST_MS);
    });

    it('POST /login answers 503 within 2 s', async () => {
      expectUnavailable(await loginReq(h, 'bob'), 'B login (PG hangs, new connections)');
    });

    it('POST /refresh answers 503 within 2 s', async () => {
      expectUnavailable(await postJson(h, `${AUTH}/refresh`, { refresh_token: user.refresh }), 'B refresh (PG hangs, new connections)');
    });

    it('proxied requests keep working; after the thaw login recovers', async () => {
      const p = await proxiedStatus(h, '/app/x', user.access);
      measured['B proxied /app/x (PG hangs, new connections)'] = p.ms;
      expect(p.status).toBe(200);
      relay.thaw();
      const { ms } = await eventually('login after the thaw', async () => (await loginReq(h, 'bob')).status === 200, 15_000);
      measured['B login recovery after thaw (new connections)'] = ms;
      expect((await readyz(h)).status).toBe(200);
    });
  });

  describe('while PostgreSQL hangs on open connections (relay frozen under a warm pool)', () => {
    let spentBefore: Tokens;
    beforeAll(async () => {
      // Make sure the pool holds idle connections (as it does under traffic), then freeze.
      await Promise.all([loginReq(h, 'bob'), loginReq(h, 'bob'), loginReq(h, 'bob'), loginReq(h, 'bob')]);
      spentBefore = user;
      relay.freeze();
    });

    it('POST /refresh answers 503 within 2 s', async () => {
      // First request after the freeze: its query goes out on an idle, healthy pooled connection.
      expectUnavailable(await postJson(h, `${AUTH}/refresh`, { refresh_token: user.refresh }), 'B refresh (PG hangs, pooled connections)');
    });

    it('POST /login answers 503 within 2 s', async () => {
      expectUnavailable(await loginReq(h, 'bob'), 'B login (PG hangs, pooled connections)');
    });

    it('/readyz answers 503 within 2 s', async () => {
      const r = await readyz(h);
      measured['B /readyz (PG hangs, pooled connections)'] = r.ms;
      expect(r.status, r.text).toBe(503);
      expect(r.json.checks.database.ok).toBe(false);
      expect(r.ms).toBeLessThan(FAIL_FAST_MS);
    });

    it('proxied requests keep working while it hangs; after the thaw login recovers', async () => {
      const p = await proxiedStatus(h, '/app/x', user.access);
      measured['B proxied /app/x (PG hangs, pooled connections)'] = p.ms;
      expect(p.status).toBe(200);
      relay.thaw();
      const { ms } = await eventually('login after the thaw', async () => (await loginReq(h, 'bob')).status === 200, 15_000);
      measured['B login recovery after thaw (pooled connections)'] = ms;
      expect((await readyz(h)).status).toBe(200);
    });

    it('a refresh that was answered 503 during the hang did not spend the token: retrying it works and keeps the session', async () => {
      // The client was told "unavailable, try again shortly": its retry must not count as refresh-token reuse.
      const rf = await postJson(h, `${AUTH}/refresh`, { refresh_token: spentBefore.refresh });
      await sleep(300);
      const session = await proxiedStatus(h, '/app/x', spentBefore.access);
      const reuse = h.logs.filter((l) => l.event === 'refresh_reuse_detected' && l.session_id === spentBefore.sid).length;
      expect({ retriedRefresh: rf.status, sessionStillValid: session.status, reuseDetected: reuse }, rf.text).toEqual({
        retriedRefresh: 200,
        sessionStillValid: 200,
        reuseDetected: 0,
      });
    });
  });

  it('no uncaught exception escaped the gateway through all of these outages', () => {
    expect(uncaught.map((e) => e.message)).toEqual([]);
  });
});

// ---------------------------------------------------------------------------------------------
// C. Redis unreachable at start; a redis-server appears later on that port
// ---------------------------------------------------------------------------------------------

withRedisServer('C. gateway started while Redis is unreachable', () => {
  let port: number;
  let h: Harness;
  let redis: PrivateRedis | undefined;

  beforeAll(async () => {
    port = await freePort();
    h = await startHarness({ redisUrl: `redis://127.0.0.1:${port}`, extraYaml: AUTH_YAML, routes: FAILURE_ROUTES });
    await addUser(h, 'carol');
  });

  afterAll(async () => {
    await h?.close();
    await redis?.kill();
  });

  it('starts anyway, not ready: /readyz 503 (state_store down), dependency_up 0, login 503 within 2 s', async () => {
    expect(h.logs.some((l) => l.msg === 'Redis is not reachable at start; sign-in will answer 503 until it is')).toBe(true);
    const r = await readyz(h);
    expect(r.status, r.text).toBe(503);
    expect(r.json.checks.state_store.ok).toBe(false);
    expect(r.json.checks.database).toEqual({ ok: true });
    expect(sample(await metricsText(h), 'portcullis_dependency_up', { dependency: 'state_store' })).toBe(0);
    expectUnavailable(await loginReq(h, 'carol'), 'C login (Redis never up)');
    expectUnavailable(await postJson(h, `${AUTH}/refresh`, { refresh_token: `prt_${'x'.repeat(43)}` }), 'C refresh (Redis never up)');
  });

  it('once a redis-server listens on that port and /readyz is 200, the very next login succeeds', async () => {
    redis = new PrivateRedis(port);
    await redis.start();
    const { ms } = await eventually('readyz 200', async () => (await readyz(h)).status === 200);
    measured['C readyz recovery after Redis appears'] = ms;
    // The limiters' script uploads failed at start; the first sign-in must not be sacrificed to redo them.
    const first = await loginReq(h, 'carol');
    expect(first.status, `first login after Redis appeared: ${first.text}`).toBe(200);
  });

  it('once a redis-server listens on that port: ready, login works, revocation channel subscribed — no restart', async () => {
    const { ms } = await eventually('login once Redis is up', async () => (await loginReq(h, 'carol')).status === 200);
    measured['C login recovery after Redis appears'] = ms;
    const ready = await readyz(h);
    expect(ready.status, ready.text).toBe(200);
    expect(ready.json.checks).toEqual({ config: { ok: true }, database: { ok: true }, state_store: { ok: true } });
    expect(sample(await metricsText(h), 'portcullis_dependency_up', { dependency: 'state_store' })).toBe(1);
    await eventually('the revocation channel to be subscribed', async () =>
      h.logs.some((l) => l.msg === 'revocation channel re-subscribed; reloading revocations from the database'),
    );
    const t = await signIn(h, 'carol');
    expect((await proxiedStatus(h, '/app/x', t.access)).status).toBe(200);
  });
});
