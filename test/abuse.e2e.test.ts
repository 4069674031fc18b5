/**
 * End-to-end: abuse protection (SPEC §4) and all cores, over real HTTP against real gateways,
 * an echo upstream, SQLite and — for the shared-state variants — a real Redis.
 *
 * - per-IP rate limits: sign-in (default 5 a minute), the looser auth API budget, and a
 *   route's own `rate_limit` (429 problem+json, `Retry-After`, draft-8 `RateLimit` and
 *   `RateLimit-Policy`, metrics, `rate_limited` events);
 * - which client a request counts for: the peer, or under `trust_proxy` the right-most
 *   untrusted `X-Forwarded-For` address; IPv6 clients grouped by /56;
 * - the username lockout: 5 failures in 15 minutes → 423 for 15 minutes, known and unknown
 *   usernames alike, reset by a success, cleared by `portcullis user unlock`, counted across
 *   replicas (two gateways sharing one Redis prefix and one database);
 * - `workers: N`: refused without Redis; with Redis, node:cluster workers on one port sharing
 *   tokens, limits and lockouts, and a clean SIGTERM.
 *
 * Every rate-limit and lockout test runs against both the in-process state and Redis state.
 * Both read the gateway's injected clock, so a lock "ends" and a window slides by moving the
 * clock, never by waiting (the Redis variants that use `portcullis user unlock` keep the real
 * clock, which the CLI process reads too).
 *
 * Redis: `REDIS_URL` (default redis://127.0.0.1:6379). Every key of this file lives under one
 * prefix and is deleted afterwards. Without a Redis the Redis variants skip, loudly, unless
 * CI=true, where they fail.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Redis } from 'ioredis';
import { decodeJwt } from 'jose';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { startEchoServer, type EchoReply } from '../src/demo/echo.js';
import { connectWebSocket, WsHandshakeError } from '../src/demo/ws.js';
import { createRedisClient, redisReady } from '../src/store/state/redis.js';
import {
  GOOD_PASSWORD,
  addUser,
  fakeClock,
  metricsText,
  runCli,
  runCliInProcess,
  sample,
  startHarness,
  type FakeClock,
  type Harness,
} from './support/helpers.js';

/** Registers a test only for one kind of state (the other kind has its own variant), so nothing shows as skipped. */
function onlyFor(kind: string, wanted: 'memory' | 'redis'): typeof it {
  return (kind === wanted ? it : () => undefined) as typeof it;
}

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const IN_CI = process.env.CI === 'true';
/** Every Redis key of this file lives under it (and is deleted afterwards). */
const RUN_PREFIX = `pc-abuse:${process.pid}:${Date.now().toString(36)}:`;
const ROOT = fileURLToPath(new URL('..', import.meta.url));

const SEC = 1000;
const MIN = 60 * SEC;
const T0 = Date.UTC(2026, 0, 5, 9, 0, 0);
const PREFIX = '/api/auth';
const WRONG = 'definitely not the password 11';
const FORM = 'application/x-www-form-urlencoded';

type Kind = 'memory' | 'redis';

// ---------------------------------------------------------------------------------------------
// Redis reachability: in CI a missing Redis fails this file; elsewhere the Redis variants skip.
// ---------------------------------------------------------------------------------------------

async function probe(url: string): Promise<boolean> {
  const client = createRedisClient(url, { lazyConnect: true, redisOptions: { retryStrategy: () => null } });
  try {
    await redisReady(client, 2000);
    return (await client.ping()) === 'PONG';
  } catch {
    return false;
  } finally {
    client.disconnect();
  }
}

async function scanKeys(client: Redis, prefix: string): Promise<string[]> {
  const out: string[] = [];
  let cursor = '0';
  do {
    const [next, keys] = await client.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 500);
    cursor = next;
    out.push(...keys);
  } while (cursor !== '0');
  return out;
}

const reachable = await probe(REDIS_URL);
if (!reachable) {
  if (IN_CI) {
    describe('Redis-shared abuse protection', () => {
      it(`needs a Redis at ${REDIS_URL} (CI=true: this must not be skipped)`, () => {
        expect.fail(`Redis is unreachable at ${REDIS_URL}; start it or set REDIS_URL`);
      });
    });
  } else {
    console.warn(`\n⚠  SKIPPING the Redis variants of the abuse tests: no Redis at ${REDIS_URL} (set REDIS_URL, or CI=true to make this a failure)\n`);
  }
}
const redisAdmin = reachable ? createRedisClient(REDIS_URL, { connectionName: 'portcullis-abuse-test' }) : undefined;

afterAll(async () => {
  if (!redisAdmin) return;
  await redisReady(redisAdmin, 3000);
  const keys = await scanKeys(redisAdmin, RUN_PREFIX);
  for (let i = 0; i < keys.length; i += 500) await redisAdmin.del(...keys.slice(i, i + 500));
  const left = await scanKeys(redisAdmin, RUN_PREFIX);
  redisAdmin.disconnect();
  expect(left).toEqual([]);
});

// ---------------------------------------------------------------------------------------------
// Gateways
// ---------------------------------------------------------------------------------------------

/** `limited` has its own rate limit; `public` and `app` have none. */
const ROUTES = `
routes:
  - name: limited
    match: { path: /limited/** }
    upstream: echo
    access: public
    rate_limit: { requests: 3, per: 1m }
  - name: public
    match: { path: /public/** }
    upstream: echo
    access: public
  - name: app
    match: { path: /app/** }
    upstream: echo
    access: authenticated
`;

/** Per-IP limits raised out of the way (lockout tests). */
const LOOSE = `  login_rate_limit: { requests: 100000, per: 1m }
  api_rate_limit: { requests: 100000, per: 1m }
`;

let harnessNo = 0;
const open: Harness[] = [];
const tempDirs: string[] = [];

afterEach(async () => {
  while (open.length) await open.pop()!.close();
  while (tempDirs.length) rmSync(tempDirs.pop()!, { recursive: true, force: true });
});

interface GatewayOpts {
  /** Lines under `auth:` (indented two spaces). */
  auth?: string;
  trust?: string[];
  now?: () => Date;
  /** Redis prefix (two gateways sharing it act as replicas); default a fresh one. */
  prefix?: string;
  databaseUrl?: string;
}

async function gateway(kind: Kind, o: GatewayOpts = {}): Promise<Harness> {
  const extraYaml = [o.trust ? `trust_proxy: ${JSON.stringify(o.trust)}` : '', o.auth ? `auth:\n${o.auth}` : ''].join('\n');
  const h = await startHarness({
    extraYaml,
    routes: ROUTES,
    now: o.now,
    databaseUrl: o.databaseUrl,
    ...(kind === 'redis' ? { redisUrl: REDIS_URL, redisPrefix: o.prefix ?? `${RUN_PREFIX}${++harnessNo}:` } : {}),
  });
  open.push(h);
  return h;
}

function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'portcullis-abuse-'));
  tempDirs.push(d);
  return d;
}

// ---------------------------------------------------------------------------------------------
// HTTP helpers
// ---------------------------------------------------------------------------------------------

interface Reply {
  status: number;
  headers: Headers;
  text: string;
  json: () => any;
}

async function call(
  h: Harness,
  method: string,
  path: string,
  o: { body?: unknown; raw?: string; headers?: Record<string, string>; token?: string } = {},
): Promise<Reply> {
  const headers: Record<string, string> = { ...o.headers };
  let body: string | undefined;
  if (o.raw !== undefined) body = o.raw;
  else if (o.body !== undefined) {
    body = JSON.stringify(o.body);
    headers['content-type'] ??= 'application/json';
  }
  if (o.token) headers.authorization = `Bearer ${o.token}`;
  const res = await fetch(`${h.url}${path}`, { method, headers, body, redirect: 'manual' });
  const text = await res.text();
  return { status: res.status, headers: res.headers, text, json: () => JSON.parse(text) };
}

/** POST /login with a JSON body; `xff` sets X-Forwarded-For. */
const loginReq = (h: Harness, username: string, password = GOOD_PASSWORD, xff?: string) =>
  call(h, 'POST', `${PREFIX}/login`, { body: { username, password }, headers: xff === undefined ? {} : { 'x-forwarded-for': xff } });

function expectProblem(r: Reply, status: number, code: string): void {
  expect(r.status, r.text).toBe(status);
  expect(r.headers.get('content-type')).toMatch(/^application\/problem\+json/);
  expect(r.json()).toMatchObject({ status, code });
}

/** The draft-8 `RateLimit` header: `"name"; r=<remaining>; t=<reset seconds>`. */
function rateLimit(r: Reply): { name: string; remaining: number; reset: number } {
  const v = r.headers.get('ratelimit');
  const m = /^"([^"]+)"; r=(\d+); t=(\d+)$/.exec(v ?? '');
  if (!m) throw new Error(`no draft-8 RateLimit header (got ${JSON.stringify(v)}; status ${r.status})`);
  return { name: m[1], remaining: Number(m[2]), reset: Number(m[3]) };
}

/** The draft-8 `RateLimit-Policy` header: `"name"; q=<quota>; w=<window s>; pk=:<partition key>:`. */
function ratePolicy(r: Reply): { name: string; quota: number; window: number; pk: string } {
  const v = r.headers.get('ratelimit-policy');
  const m = /^"([^"]+)"; q=(\d+); w=(\d+); pk=:([A-Za-z0-9+/=]+):$/.exec(v ?? '');
  if (!m) throw new Error(`no draft-8 RateLimit-Policy header (got ${JSON.stringify(v)})`);
  return { name: m[1], quota: Number(m[2]), window: Number(m[3]), pk: m[4] };
}

/** A 429 from a limiter: problem+json, code rate_limited, Retry-After within the window, RateLimit r=0. */
function expectLimited(r: Reply, limiter: string, windowS = 60): void {
  expectProblem(r, 429, 'rate_limited');
  const retryAfter = Number(r.headers.get('retry-after'));
  expect(Number.isInteger(retryAfter), `Retry-After ${r.headers.get('retry-after')}`).toBe(true);
  expect(retryAfter).toBeGreaterThanOrEqual(1);
  expect(retryAfter).toBeLessThanOrEqual(windowS);
  const rl = rateLimit(r);
  expect(rl).toMatchObject({ name: limiter, remaining: 0 });
  expect(rl.reset).toBeGreaterThanOrEqual(1);
  expect(rl.reset).toBeLessThanOrEqual(windowS);
  expect(ratePolicy(r)).toMatchObject({ name: limiter, window: windowS });
}

function events(h: Harness, event: string, match: Record<string, unknown> = {}): Record<string, unknown>[] {
  return h.logs.filter((l) => l.event === event && Object.entries(match).every(([k, v]) => l[k] === v));
}

async function metric(h: Harness, name: string, labels: Record<string, string> = {}): Promise<number> {
  return sample(await metricsText(h), name, labels);
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

let uniq = 0;
/** A fresh unknown username: rate-limit probes must not lock a username along the way. */
const nobody = () => `nobody-${++uniq}`;

// ---------------------------------------------------------------------------------------------
// Rate limits, client IPs and lockouts: in-process state and Redis state
// ---------------------------------------------------------------------------------------------

for (const kind of ['memory', 'redis'] as const) {
  describe.skipIf(kind === 'redis' && !reachable)(`${kind} state`, () => {
    describe('sign-in rate limit (5 a minute per client IP)', () => {
      it('five login requests pass whatever their outcome; the sixth gets 429 rate_limited with Retry-After and draft-8 RateLimit headers', async () => {
        const h = await gateway(kind);
        await addUser(h, 'rita');
        const m0 = await metricsText(h);

        const five: Reply[] = [
          await loginReq(h, 'rita'),
          await loginReq(h, 'nobody-here', WRONG),
          await call(h, 'POST', `${PREFIX}/login`, {
            raw: `username=rita&password=${encodeURIComponent(WRONG)}`,
            headers: { 'content-type': FORM, origin: h.url },
          }),
          await loginReq(h, "admin' OR '1'='1"),
          await call(h, 'POST', `${PREFIX}/login`, { raw: '{"username": "rita", "password":', headers: { 'content-type': 'application/json' } }),
        ];
        expect(five.map((r) => r.status)).toEqual([200, 401, 401, 422, 400]);
        // Each answer carries the remaining budget, counting down to 0.
        expect(five.map((r) => rateLimit(r).remaining)).toEqual([4, 3, 2, 1, 0]);
        for (const r of five) {
          expect(rateLimit(r).name).toBe('login');
          expect(ratePolicy(r)).toMatchObject({ name: 'login', quota: 5, window: 60 });
        }

        // The right password does not help once the budget is spent.
        const sixth = await loginReq(h, 'rita');
        expectLimited(sixth, 'login');
        expect(sixth.json().access_token).toBeUndefined();
        expect(ratePolicy(sixth).pk).toBe(ratePolicy(five[0]).pk);
        expectLimited(await loginReq(h, 'rita', WRONG), 'login');

        const m1 = await metricsText(h);
        const delta = (name: string, labels: Record<string, string>) => sample(m1, name, labels) - sample(m0, name, labels);
        expect(delta('portcullis_rate_limited_total', { limiter: 'login' })).toBe(2);
        expect(delta('portcullis_login_attempts_total', { result: 'rate_limited' })).toBe(2);
        expect(delta('portcullis_login_attempts_total', { result: 'success' })).toBe(1);
        expect(delta('portcullis_login_attempts_total', { result: 'invalid_credentials' })).toBe(2);
        expect(delta('portcullis_rate_limited_total', { limiter: 'auth_api' })).toBe(0);

        const limited = events(h, 'rate_limited');
        expect(limited).toHaveLength(2);
        for (const e of limited) expect(e).toMatchObject({ limiter: 'login', ip: '127.0.0.1' });
        // Refused requests never reached the password check.
        expect(events(h, 'login_failure')).toHaveLength(2);
        expect(events(h, 'login_success')).toHaveLength(1);
      });

      it('a browser posting the sign-in form past the limit gets an HTML page (429, Retry-After), like every other form error', async () => {
        const h = await gateway(kind);
        for (let i = 0; i < 5; i++) expect((await loginReq(h, nobody(), WRONG)).status).toBe(401);
        const r = await call(h, 'POST', `${PREFIX}/login`, {
          raw: `username=rita&password=${encodeURIComponent(WRONG)}&rd=%2Fapp%2F`,
          headers: { 'content-type': FORM, origin: h.url, accept: 'text/html,application/xhtml+xml,*/*;q=0.8' },
        });
        expect(r.status).toBe(429);
        expect(Number(r.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
        expect(rateLimit(r)).toMatchObject({ name: 'login', remaining: 0 });
        expect(r.headers.get('content-type'), r.text).toMatch(/^text\/html/);
        expect(r.text).toContain('Too many requests');
      });

      it('the rest of the auth API has its own, looser per-IP budget: exhausting one leaves the other intact', async () => {
        const h = await gateway(kind, { trust: ['127.0.0.1'], auth: '  api_rate_limit: { requests: 10, per: 1m }\n' });
        await addUser(h, 'amos');
        const me = (ip: string) => call(h, 'GET', `${PREFIX}/me`, { headers: { 'x-forwarded-for': ip } });

        // Client A signs in to its limit first: the auth API budget is untouched by it.
        const a = '203.0.113.10';
        for (let i = 0; i < 5; i++) expect((await loginReq(h, nobody(), WRONG, a)).status).toBe(401);
        expectLimited(await loginReq(h, 'amos', GOOD_PASSWORD, a), 'login');
        for (let i = 0; i < 10; i++) {
          const r = await me(a);
          expectProblem(r, 401, 'unauthenticated');
          expect(rateLimit(r)).toMatchObject({ name: 'auth_api', remaining: 9 - i });
          expect(ratePolicy(r)).toMatchObject({ name: 'auth_api', quota: 10, window: 60 });
        }
        expectLimited(await me(a), 'auth_api');
        // One budget for every other auth endpoint.
        expectLimited(await call(h, 'POST', `${PREFIX}/refresh`, { body: { refresh_token: 'prt_x' }, headers: { 'x-forwarded-for': a } }), 'auth_api');
        expectLimited(await call(h, 'GET', `${PREFIX}/sessions`, { headers: { 'x-forwarded-for': a } }), 'auth_api');

        // Client B exhausts the auth API budget first: its sign-in budget is untouched by it.
        const b = '203.0.113.11';
        for (let i = 0; i < 10; i++) expect((await me(b)).status).toBe(401);
        expectLimited(await me(b), 'auth_api');
        const signIn = await loginReq(h, 'amos', GOOD_PASSWORD, b);
        expect(signIn.status, signIn.text).toBe(200);
        expect(rateLimit(signIn)).toEqual({ name: 'login', remaining: 4, reset: expect.any(Number) });
        for (let i = 0; i < 4; i++) expect((await loginReq(h, nobody(), WRONG, b)).status).toBe(401);
        expectLimited(await loginReq(h, 'amos', GOOD_PASSWORD, b), 'login');

        // Proxied routes and the JWKS are not under the auth API's limits.
        for (let i = 0; i < 3; i++) {
          const r = await call(h, 'GET', '/public/x', { headers: { 'x-forwarded-for': a } });
          expect(r.status).toBe(200);
          expect(r.headers.get('ratelimit')).toBeNull();
        }
        expect((await call(h, 'GET', '/.well-known/jwks.json', { headers: { 'x-forwarded-for': a } })).status).toBe(200);

        const m = await metricsText(h);
        expect(sample(m, 'portcullis_rate_limited_total', { limiter: 'auth_api' })).toBe(4);
        expect(sample(m, 'portcullis_rate_limited_total', { limiter: 'login' })).toBe(2);
        expect(events(h, 'rate_limited', { limiter: 'auth_api', ip: a })).toHaveLength(3);
        expect(events(h, 'rate_limited', { limiter: 'auth_api', ip: b })).toHaveLength(1);
      });
    });

    describe('the client IP', () => {
      it('from an untrusted peer (default trust_proxy: none), a different X-Forwarded-For per request buys no fresh budget', async () => {
        const h = await gateway(kind);
        for (let i = 1; i <= 5; i++) {
          const r = await loginReq(h, nobody(), WRONG, `198.51.100.${i}`);
          expect(r.status).toBe(401);
          expect(rateLimit(r).remaining).toBe(5 - i);
        }
        expectLimited(await loginReq(h, nobody(), WRONG, '198.51.100.99'), 'login');
        expectLimited(await loginReq(h, nobody(), WRONG, '2001:db8:77::1'), 'login');
        expectLimited(await loginReq(h, nobody(), WRONG), 'login');
        // Logged against the real peer, never the claimed address.
        expect(events(h, 'rate_limited').map((e) => e.ip)).toEqual(['127.0.0.1', '127.0.0.1', '127.0.0.1']);
        expect(new Set(events(h, 'login_failure').map((e) => e.ip))).toEqual(new Set(['127.0.0.1']));
      });

      it('behind a trusted proxy the X-Forwarded-For client is the key: one budget per client, shared by its requests', async () => {
        const h = await gateway(kind, { trust: ['127.0.0.1'] });
        const a = '203.0.113.1';
        const b = '203.0.113.2';
        const pks: string[] = [];
        for (let i = 0; i < 5; i++) {
          const r = await loginReq(h, nobody(), WRONG, a);
          expect(r.status).toBe(401);
          expect(rateLimit(r).remaining).toBe(4 - i);
          pks.push(ratePolicy(r).pk);
        }
        expectLimited(await loginReq(h, nobody(), WRONG, a), 'login');
        // The same client written as addr:port is the same client.
        expectLimited(await loginReq(h, nobody(), WRONG, `${a}:4711`), 'login');

        // Another client has a budget of its own, under another partition key.
        for (let i = 0; i < 5; i++) {
          const r = await loginReq(h, nobody(), WRONG, b);
          expect(r.status).toBe(401);
          expect(rateLimit(r).remaining).toBe(4 - i);
          expect(ratePolicy(r).pk).not.toBe(pks[0]);
        }
        expectLimited(await loginReq(h, nobody(), WRONG, b), 'login');
        // The proxy itself (no X-Forwarded-For) is a third client.
        expect(rateLimit(await loginReq(h, nobody(), WRONG)).remaining).toBe(4);

        expect(new Set(pks).size).toBe(1);
        expect(events(h, 'rate_limited').map((e) => e.ip)).toEqual([a, a, b]);
        expect(events(h, 'login_failure', { ip: a })).toHaveLength(5);
        expect(events(h, 'login_failure', { ip: b })).toHaveLength(5);
      });

      it('a client-prepended X-Forwarded-For does not help: the right-most untrusted address is the client', async () => {
        const h = await gateway(kind, { trust: ['127.0.0.1', '10.0.0.0/8'] });
        const real = '198.51.100.77';
        // The client sends its own X-Forwarded-For; the trusted proxy appends the real address.
        for (let i = 1; i <= 5; i++) {
          const r = await loginReq(h, nobody(), WRONG, `192.0.2.${i}, ${real}`);
          expect(r.status).toBe(401);
          expect(rateLimit(r).remaining).toBe(5 - i);
        }
        expectLimited(await loginReq(h, nobody(), WRONG, `192.0.2.200, ${real}`), 'login');
        // A spoofed trusted-looking entry, or another trusted hop on the right, changes nothing.
        expectLimited(await loginReq(h, nobody(), WRONG, `10.1.2.3, ${real}`), 'login');
        expectLimited(await loginReq(h, nobody(), WRONG, `192.0.2.9, ${real}, 10.0.0.5`), 'login');
        // Garbage left of the client is never reached.
        expectLimited(await loginReq(h, nobody(), WRONG, `not-an-ip, ${real}`), 'login');
        expect(new Set(events(h, 'rate_limited').map((e) => e.ip))).toEqual(new Set([real]));
        expect(new Set(events(h, 'login_failure').map((e) => e.ip))).toEqual(new Set([real]));
      });

      it('IPv6 clients are grouped by /56: one budget for one prefix in any notation, a fresh one for the next /56', async () => {
        const h = await gateway(kind, { trust: ['127.0.0.1'] });
        // All in 2001:db8:1::/56 (the 4th hextet's high byte is 00 in each).
        const same = ['2001:db8:1:1::1', '2001:db8:1:1::2', '2001:db8:1:ff::3', '[2001:db8:1:1::4]:443', '2001:0DB8:0001:0001:0000:0000:0000:0005'];
        const pks: string[] = [];
        for (const [i, ip] of same.entries()) {
          const r = await loginReq(h, nobody(), WRONG, ip);
          expect(r.status, ip).toBe(401);
          expect(rateLimit(r).remaining, ip).toBe(4 - i);
          pks.push(ratePolicy(r).pk);
        }
        expect(new Set(pks).size).toBe(1);
        const sixth = await loginReq(h, nobody(), WRONG, '2001:db8:1:2::9');
        expectLimited(sixth, 'login');
        expect(ratePolicy(sixth).pk).toBe(pks[0]);

        // 2001:db8:1:100:: is the next /56; 2001:db8:2:: another one entirely.
        for (const ip of ['2001:db8:1:100::1', '2001:db8:2::1']) {
          const r = await loginReq(h, nobody(), WRONG, ip);
          expect(r.status, ip).toBe(401);
          expect(rateLimit(r).remaining, ip).toBe(4);
          expect(ratePolicy(r).pk, ip).not.toBe(pks[0]);
        }
        expect(events(h, 'rate_limited').map((e) => e.ip)).toEqual(['2001:db8:1:2::9']);
      });

      it('an IPv4-mapped IPv6 address is the same client as the IPv4 address it carries', async () => {
        const h = await gateway(kind, { trust: ['127.0.0.1'] });
        const xffs = ['::ffff:192.0.2.7', '192.0.2.7', '::ffff:c000:207', '192.0.2.7', '::FFFF:192.0.2.7'];
        for (const [i, ip] of xffs.entries()) expect(rateLimit(await loginReq(h, nobody(), WRONG, ip)).remaining, ip).toBe(4 - i);
        expectLimited(await loginReq(h, nobody(), WRONG, '192.0.2.7'), 'login');
        expectLimited(await loginReq(h, nobody(), WRONG, '::ffff:192.0.2.7'), 'login');
        expect(new Set(events(h, 'rate_limited').map((e) => e.ip))).toEqual(new Set(['192.0.2.7']));
      });
    });

    describe('per-route rate_limit', () => {
      it('a route with rate_limit {requests: 3, per: 1m}: the 4th request gets 429 rate_limited; other routes and clients are unaffected', async () => {
        const h = await gateway(kind, { trust: ['127.0.0.1'] });
        const a = { 'x-forwarded-for': '203.0.113.50' };
        const m0 = await metricsText(h);
        for (let i = 0; i < 3; i++) {
          const r = await call(h, 'GET', `/limited/item/${i}`, { headers: a });
          expect(r.status, r.text).toBe(200);
          expect((r.json() as EchoReply).path).toBe(`/limited/item/${i}`);
          expect(rateLimit(r)).toMatchObject({ name: 'route:limited', remaining: 2 - i });
          expect(ratePolicy(r)).toMatchObject({ name: 'route:limited', quota: 3, window: 60 });
        }
        const fourth = await call(h, 'GET', '/limited/item/3', { headers: a });
        expectLimited(fourth, 'route:limited');
        expect(fourth.json().path).toBeUndefined();
        // Every method counts: a POST is refused too.
        expectLimited(await call(h, 'POST', '/limited/item/4', { headers: a, raw: 'x' }), 'route:limited');

        // Other routes for the same client: no limit, no RateLimit header.
        for (let i = 0; i < 5; i++) {
          const r = await call(h, 'GET', `/public/p${i}`, { headers: a });
          expect(r.status).toBe(200);
          expect(r.headers.get('ratelimit')).toBeNull();
        }
        // Another client on the limited route: a budget of its own.
        const other = await call(h, 'GET', '/limited/item/9', { headers: { 'x-forwarded-for': '203.0.113.51' } });
        expect(other.status).toBe(200);
        expect(rateLimit(other).remaining).toBe(2);

        const m1 = await metricsText(h);
        const delta = (name: string, labels: Record<string, string>) => sample(m1, name, labels) - sample(m0, name, labels);
        expect(delta('portcullis_rate_limited_total', { limiter: 'route:limited' })).toBe(2);
        expect(delta('portcullis_rate_limited_total', { limiter: 'login' })).toBe(0);
        expect(delta('portcullis_http_requests_total', { route: 'limited', method: 'GET', status: '200' })).toBe(4);
        expect(delta('portcullis_http_requests_total', { route: 'public', method: 'GET', status: '200' })).toBe(5);
        // Only the 9 allowed requests reached the upstream.
        expect(delta('portcullis_upstream_request_duration_seconds_count', { upstream: 'echo', status: '200' })).toBe(9);
        expect(events(h, 'rate_limited', { limiter: 'route:limited' }).map((e) => e.ip)).toEqual(['203.0.113.50', '203.0.113.50']);
        // The refused requests are counted under their route, like every other answer of it.
        expect(delta('portcullis_http_requests_total', { route: 'limited', method: 'GET', status: '429' })).toBe(1);
        expect(delta('portcullis_http_requests_total', { route: 'limited', method: 'POST', status: '429' })).toBe(1);
      });

      it('a WebSocket upgrade on a rate-limited route counts against the same budget (SPEC §3: upgrades pass the same checks)', async () => {
        const h = await gateway(kind, { trust: ['127.0.0.1'] });
        const a = { 'x-forwarded-for': '203.0.113.60' };
        for (let i = 0; i < 3; i++) expect((await call(h, 'GET', '/limited/x', { headers: a })).status).toBe(200);
        // Budget spent: neither a plain request nor an upgrade gets through.
        const refused = await connectWebSocket(`${h.url}/limited/ws`, a).then(
          (c) => {
            c.close();
            return null;
          },
          (e: unknown) => e,
        );
        expect(refused, 'the 4th attempt (an upgrade) was let through').toBeInstanceOf(WsHandshakeError);
        expect((refused as WsHandshakeError).status).toBe(429);
        expect(JSON.parse((refused as WsHandshakeError).body)).toMatchObject({ status: 429, code: 'rate_limited' });
        expectLimited(await call(h, 'GET', '/limited/x', { headers: a }), 'route:limited');
        expect(await metric(h, 'portcullis_rate_limited_total', { limiter: 'route:limited' })).toBe(2);
      });
    });

    describe('username lockout (5 failures in 15 minutes → 423 for 15 minutes)', () => {
      const clockFor = (): FakeClock | undefined => (kind === 'memory' ? fakeClock(T0) : undefined);

      it('five wrong passwords lock the username: the sixth attempt, right password included, gets 423 account_locked with Retry-After 900', async () => {
        const clock = clockFor();
        const h = await gateway(kind, { auth: LOOSE, now: clock?.now });
        await addUser(h, 'lara');
        await addUser(h, 'lena');
        const m0 = await metricsText(h);
        for (let i = 0; i < 5; i++) expectProblem(await loginReq(h, 'lara', WRONG), 401, 'invalid_credentials');

        const locked = await loginReq(h, 'lara');
        expectProblem(locked, 423, 'account_locked');
        expect(locked.json().access_token).toBeUndefined();
        const retryAfter = Number(locked.headers.get('retry-after'));
        if (kind === 'memory') expect(retryAfter).toBe(900);
        else {
          expect(retryAfter).toBeGreaterThanOrEqual(895);
          expect(retryAfter).toBeLessThanOrEqual(900);
        }
        expectProblem(await loginReq(h, 'lara', WRONG), 423, 'account_locked');
        // Case does not dodge it; another user is not affected.
        expectProblem(await loginReq(h, 'LARA'), 423, 'account_locked');
        expect((await loginReq(h, 'lena')).status).toBe(200);

        const m1 = await metricsText(h);
        const delta = (name: string, labels: Record<string, string> = {}) => sample(m1, name, labels) - sample(m0, name, labels);
        expect(delta('portcullis_lockouts_total')).toBe(1);
        expect(delta('portcullis_login_attempts_total', { result: 'locked' })).toBe(3);
        expect(delta('portcullis_login_attempts_total', { result: 'invalid_credentials' })).toBe(5);
        expect(delta('portcullis_login_attempts_total', { result: 'success' })).toBe(1);
        const ev = events(h, 'account_locked');
        expect(ev).toHaveLength(1);
        expect(ev[0]).toMatchObject({ username: 'lara', failures: 5, duration_ms: 900_000, ip: '127.0.0.1' });
        expect(events(h, 'login_failure', { username: 'lara', reason: 'locked' })).toHaveLength(3);
      });

      it('unknown usernames are locked the same way, with the same answer', async () => {
        const clock = clockFor();
        const h = await gateway(kind, { auth: LOOSE, now: clock?.now });
        await addUser(h, 'kim');
        for (const name of ['kim', 'no-such-user-9']) {
          for (let i = 0; i < 5; i++) expectProblem(await loginReq(h, name, WRONG), 401, 'invalid_credentials');
        }
        const known = await loginReq(h, 'kim');
        const unknown = await loginReq(h, 'no-such-user-9');
        expectProblem(known, 423, 'account_locked');
        expectProblem(unknown, 423, 'account_locked');
        if (kind === 'memory') {
          expect(unknown.json()).toEqual(known.json());
          expect(unknown.headers.get('retry-after')).toBe(known.headers.get('retry-after'));
        } else {
          const { detail: _d1, ...k } = known.json();
          const { detail: _d2, ...u } = unknown.json();
          expect(u).toEqual(k);
          expect(Math.abs(Number(unknown.headers.get('retry-after')) - Number(known.headers.get('retry-after')))).toBeLessThanOrEqual(2);
        }
        expectProblem(await loginReq(h, 'No-Such-User-9', WRONG), 423, 'account_locked');
        expect(events(h, 'account_locked').map((e) => e.username)).toEqual(['kim', 'no-such-user-9']);
        expect(await metric(h, 'portcullis_lockouts_total')).toBe(2);
      });

      it('a success before the fifth failure resets the count', async () => {
        const clock = clockFor();
        const h = await gateway(kind, { auth: LOOSE, now: clock?.now });
        await addUser(h, 'liv');
        for (let round = 0; round < 3; round++) {
          for (let i = 0; i < 4; i++) expectProblem(await loginReq(h, 'liv', WRONG), 401, 'invalid_credentials');
          const ok = await loginReq(h, 'liv');
          expect(ok.status, `round ${round}: ${ok.text}`).toBe(200);
        }
        expect(await metric(h, 'portcullis_lockouts_total')).toBe(0);
        expect(events(h, 'account_locked')).toHaveLength(0);
        // Five in a row still lock.
        for (let i = 0; i < 5; i++) expect((await loginReq(h, 'liv', WRONG)).status).toBe(401);
        expectProblem(await loginReq(h, 'liv'), 423, 'account_locked');
      });

      onlyFor(kind, 'memory')('the lock ends after 15 minutes (injected clock), and the count starts over', async () => {
        const clock = fakeClock(T0);
        const h = await gateway(kind, { auth: LOOSE, now: clock.now });
        await addUser(h, 'lena');
        for (let i = 0; i < 5; i++) expect((await loginReq(h, 'lena', WRONG)).status).toBe(401);
        expect((await loginReq(h, 'lena')).headers.get('retry-after')).toBe('900');
        clock.advance(14 * MIN);
        const still = await loginReq(h, 'lena');
        expectProblem(still, 423, 'account_locked');
        expect(still.headers.get('retry-after')).toBe('60');
        clock.advance(59 * SEC);
        expect((await loginReq(h, 'lena')).headers.get('retry-after')).toBe('1');
        clock.advance(1 * SEC);
        const ok = await loginReq(h, 'lena');
        expect(ok.status, ok.text).toBe(200);
        // A plain password sign-in after the lock: the token says so.
        expect(decodeJwt(ok.json().access_token).amr).toEqual(['pwd']);
        // A fresh count: four failures do not lock again.
        for (let i = 0; i < 4; i++) expect((await loginReq(h, 'lena', WRONG)).status).toBe(401);
        expect((await loginReq(h, 'lena')).status).toBe(200);
        expect(await metric(h, 'portcullis_lockouts_total')).toBe(1);
      });

      onlyFor(kind, 'redis')('the lock ends after its duration (lockout.duration 2s in Redis, injected clock)', async () => {
        const clock = fakeClock(T0);
        const h = await gateway(kind, { auth: `${LOOSE}  lockout: { max_failures: 3, window: 15m, duration: 2s }\n`, now: clock.now });
        await addUser(h, 'lena');
        for (let i = 0; i < 3; i++) expect((await loginReq(h, 'lena', WRONG)).status).toBe(401);
        const locked = await loginReq(h, 'lena');
        expectProblem(locked, 423, 'account_locked');
        expect(['1', '2']).toContain(locked.headers.get('retry-after'));
        expect(events(h, 'account_locked')[0]).toMatchObject({ username: 'lena', failures: 3, duration_ms: 2000 });
        // The lock was set at the clock's current time (it has not moved since): 2.3 s is past it.
        clock.advance(2300);
        const ok = await loginReq(h, 'lena');
        expect(ok.status, ok.text).toBe(200);
        // A fresh count: two failures do not lock again.
        for (let i = 0; i < 2; i++) expect((await loginReq(h, 'lena', WRONG)).status).toBe(401);
        expect((await loginReq(h, 'lena')).status).toBe(200);
        expect(await metric(h, 'portcullis_lockouts_total')).toBe(1);
      });

      onlyFor(kind, 'memory')('the window slides: failures older than 15 minutes drop out, younger ones still count (injected clock)', async () => {
        const clock = fakeClock(T0);
        const h = await gateway(kind, { auth: LOOSE, now: clock.now });
        await addUser(h, 'sid');
        // 1 failure at 0:00, 3 at 0:10; at 0:16 the first has dropped out: 3 + 1 = 4, not locked.
        expect((await loginReq(h, 'sid', WRONG)).status).toBe(401);
        clock.advance(10 * MIN);
        for (let i = 0; i < 3; i++) expect((await loginReq(h, 'sid', WRONG)).status).toBe(401);
        clock.advance(6 * MIN);
        expect((await loginReq(h, 'sid', WRONG)).status).toBe(401);
        expect(events(h, 'account_locked')).toHaveLength(0);
        // …and a fifth within 15 minutes of the 0:10 ones locks (a window fixed at 0:00–0:15
        // would have started over at 0:16 with a count of 2).
        expect((await loginReq(h, 'sid', WRONG)).status).toBe(401);
        expectProblem(await loginReq(h, 'sid'), 423, 'account_locked');
        expect(events(h, 'account_locked')).toHaveLength(1);
      });

      onlyFor(kind, 'redis')('the window slides: failures older than the window drop out (lockout.window 2s in Redis, injected clock)', async () => {
        const clock = fakeClock(T0);
        const h = await gateway(kind, { auth: `${LOOSE}  lockout: { max_failures: 3, window: 2s, duration: 15m }\n`, now: clock.now });
        await addUser(h, 'sid');
        await addUser(h, 'sue');
        for (let i = 0; i < 2; i++) expect((await loginReq(h, 'sid', WRONG)).status).toBe(401);
        clock.advance(2300);
        for (let i = 0; i < 2; i++) expect((await loginReq(h, 'sid', WRONG)).status).toBe(401);
        // Only two within the window: not locked.
        const ok = await loginReq(h, 'sid');
        expect(ok.status, ok.text).toBe(200);
        for (let i = 0; i < 3; i++) expect((await loginReq(h, 'sue', WRONG)).status).toBe(401);
        expectProblem(await loginReq(h, 'sue'), 423, 'account_locked');
        expect(events(h, 'account_locked').map((e) => e.username)).toEqual(['sue']);
      });

      it(`\`portcullis user unlock NAME\` clears the lock and the count (${kind === 'memory' ? 'through the admin listener' : 'in Redis directly'})`, {
        timeout: 120_000,
      }, async () => {
        const clock = clockFor();
        const h = await gateway(kind, { auth: LOOSE, now: clock?.now });
        const cfg = join(h.dir, 'gateway.yaml');
        expect(existsSync(join(h.dir, 'admin.token'))).toBe(kind === 'memory');
        await addUser(h, 'ula');
        await addUser(h, 'ulf');
        for (const name of ['ula', 'ghost-ula']) {
          for (let i = 0; i < 5; i++) expect((await loginReq(h, name, WRONG)).status).toBe(401);
          expectProblem(await loginReq(h, name), 423, 'account_locked');
        }

        const r = await runCliInProcess(['user', 'unlock', 'ULA', '--config', cfg]);
        expect(r.stderr).toBe('');
        expect(r.code).toBe(0);
        expect(r.stdout).toBe('ula: unlocked\n');
        const ok = await loginReq(h, 'ula');
        expect(ok.status, ok.text).toBe(200);

        const ghost = await runCliInProcess(['user', 'unlock', 'ghost-ula', '--config', cfg]);
        expect(ghost.code).toBe(0);
        expect(ghost.stdout).toBe('ghost-ula: unlocked (no such user)\n');
        expectProblem(await loginReq(h, 'ghost-ula', WRONG), 401, 'invalid_credentials');

        // Not locked, but with four failures counted: unlock clears the count as well.
        for (let i = 0; i < 4; i++) expect((await loginReq(h, 'ulf', WRONG)).status).toBe(401);
        const again = await runCliInProcess(['user', 'unlock', 'ulf', '--config', cfg]);
        expect(again.code).toBe(0);
        expect(again.stdout).toBe('ulf: was not locked\n');
        expect((await loginReq(h, 'ulf', WRONG)).status).toBe(401);
        const ulf = await loginReq(h, 'ulf');
        expect(ulf.status, 'the four earlier failures were still counted').toBe(200);

        // Unlocking is not a lockout: the counter saw exactly the two locks.
        expect(await metric(h, 'portcullis_lockouts_total')).toBe(2);
        expect(events(h, 'account_locked').map((e) => e.username)).toEqual(['ula', 'ghost-ula']);
      });

      it('a burst of concurrent failures locks the username once (one lockout counted, one account_locked event)', async () => {
        const clock = clockFor();
        const h = await gateway(kind, { auth: LOOSE, now: clock?.now });
        await addUser(h, 'bea');
        const burst = await Promise.all(Array.from({ length: 12 }, () => loginReq(h, 'bea', WRONG)));
        for (const r of burst) expect([401, 423]).toContain(r.status);
        expectProblem(await loginReq(h, 'bea'), 423, 'account_locked');
        expect(events(h, 'account_locked', { username: 'bea' })).toHaveLength(1);
        expect(await metric(h, 'portcullis_lockouts_total')).toBe(1);
      });
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Replicas: two gateways sharing one Redis prefix and one database act as one
// ---------------------------------------------------------------------------------------------

describe.skipIf(!reachable)('two replicas sharing Redis and the database', () => {
  async function replicas(auth: string): Promise<[Harness, Harness]> {
    const prefix = `${RUN_PREFIX}rep${++harnessNo}:`;
    const databaseUrl = `sqlite:${join(tempDir(), 'shared.db')}`;
    const a = await gateway('redis', { prefix, databaseUrl, auth });
    const b = await gateway('redis', { prefix, databaseUrl, auth });
    return [a, b];
  }

  it('failures alternated between the replicas lock the username on both; the lock is counted once; unlock through either clears both', {
    timeout: 120_000,
  }, async () => {
    const [a, b] = await replicas(LOOSE);
    await addUser(a, 'rex');
    // Same database: b knows the user a created.
    expect((await loginReq(b, 'rex')).status).toBe(200);

    for (const name of ['rex', 'ghost-rex']) {
      const order = name === 'rex' ? [a, b, a, b, a] : [b, a, b, a, b];
      for (const h of order) expectProblem(await loginReq(h, name, WRONG), 401, 'invalid_credentials');
      for (const h of [a, b]) {
        const r = await loginReq(h, name);
        expectProblem(r, 423, 'account_locked');
        expect(Number(r.headers.get('retry-after'))).toBeGreaterThanOrEqual(895);
      }
    }
    // Each lock was counted by the replica that saw the fifth failure, and only there.
    expect(await metric(a, 'portcullis_lockouts_total')).toBe(1);
    expect(await metric(b, 'portcullis_lockouts_total')).toBe(1);
    expect(events(a, 'account_locked').map((e) => e.username)).toEqual(['rex']);
    expect(events(b, 'account_locked').map((e) => e.username)).toEqual(['ghost-rex']);

    // A success on one replica resets the count on the other.
    await addUser(a, 'ria');
    for (const h of [a, b, a, b]) expect((await loginReq(h, 'ria', WRONG)).status).toBe(401);
    expect((await loginReq(b, 'ria')).status).toBe(200);
    for (const h of [a, b, a, b]) expect((await loginReq(h, 'ria', WRONG)).status).toBe(401);
    expect((await loginReq(a, 'ria')).status).toBe(200);

    const r = await runCliInProcess(['user', 'unlock', 'rex', '--config', join(b.dir, 'gateway.yaml')]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('rex: unlocked\n');
    expect((await loginReq(a, 'rex')).status).toBe(200);
    expectProblem(await loginReq(a, 'ghost-rex', WRONG), 423, 'account_locked');
  });

  it('one client IP has one sign-in budget across replicas', async () => {
    const [a, b] = await replicas('');
    const statuses: number[] = [];
    for (const h of [a, a, a]) statuses.push((await loginReq(h, 'nobody', WRONG)).status);
    const fourth = await loginReq(b, 'nobody', WRONG);
    expect(rateLimit(fourth).remaining).toBe(1);
    statuses.push(fourth.status, (await loginReq(b, 'nobody', WRONG)).status);
    expect(statuses).toEqual([401, 401, 401, 401, 401]);
    expectLimited(await loginReq(a, 'nobody', WRONG), 'login');
    expectLimited(await loginReq(b, 'nobody', WRONG), 'login');
  });
});

// ---------------------------------------------------------------------------------------------
// All cores: `workers: N | auto`
// ---------------------------------------------------------------------------------------------

interface Proc {
  child: ChildProcess;
  stdout: string;
  stderr: string;
  exit: Promise<number | null>;
}

function spawnCli(args: string[], env: NodeJS.ProcessEnv = {}): Proc {
  const child = spawn(process.execPath, [join(ROOT, 'bin/portcullis.js'), ...args], {
    cwd: ROOT,
    env: { PATH: process.env.PATH, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const p: Proc = { child, stdout: '', stderr: '', exit: once(child, 'exit').then(([code]) => code as number | null) };
  child.stdout!.on('data', (c) => (p.stdout += c));
  child.stderr!.on('data', (c) => (p.stderr += c));
  return p;
}

async function exitWithin(p: Proc, ms: number): Promise<number | null> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), ms)));
  const code = await Promise.race([p.exit, timeout]);
  clearTimeout(timer);
  if (code === 'timeout') {
    p.child.kill('SIGKILL');
    throw new Error(`portcullis did not exit within ${ms} ms\nstdout: ${p.stdout}\nstderr: ${p.stderr}`);
  }
  return code;
}

function jsonLines(text: string): Record<string, unknown>[] {
  return text
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => {
      try {
        return JSON.parse(l) as Record<string, unknown>;
      } catch {
        return {};
      }
    });
}

/** Direct children of `ppid` (Linux /proc). */
function childPids(ppid: number): number[] {
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(fields[1]) === ppid) out.push(Number(d));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

/**
 * Which of `pids` holds the server side of the TCP connection 127.0.0.1:clientPort →
 * 127.0.0.1:serverPort (Linux /proc): that is the worker that answered on it.
 */
function connectionOwner(serverPort: number, clientPort: number, pids: number[]): number | undefined {
  const hex = (p: number) => p.toString(16).toUpperCase().padStart(4, '0');
  const local = `0100007F:${hex(serverPort)}`;
  const remote = `0100007F:${hex(clientPort)}`;
  let inode: string | undefined;
  for (const line of readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f[1] === local && f[2] === remote) inode = f[9];
  }
  if (!inode) return undefined;
  for (const pid of pids) {
    for (const fd of readdirSync(`/proc/${pid}/fd`)) {
      try {
        if (readlinkSync(`/proc/${pid}/fd/${fd}`) === `socket:[${inode}]`) return pid;
      } catch {
        // closed meanwhile
      }
    }
  }
  return undefined;
}

interface WorkerReply {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
  json: () => any;
  /** The worker pid that answered. */
  worker: number | undefined;
}

/** One request on a fresh connection (so the cluster primary hands it to the next worker). */
function viaWorker(base: string, pids: number[], method: string, path: string, o: { body?: unknown; token?: string } = {}): Promise<WorkerReply> {
  const u = new URL(base);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const headers: Record<string, string> = {};
  const body = o.body === undefined ? undefined : JSON.stringify(o.body);
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (o.token) headers.authorization = `Bearer ${o.token}`;
  return new Promise((resolve, reject) => {
    const req = http.request({ hostname: u.hostname, port: u.port, method, path, headers, agent }, (res) => {
      const clientPort = res.socket.localPort!;
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => {
        // The connection is still open (keep-alive): find the worker on the other end.
        const worker = connectionOwner(Number(u.port), clientPort, pids);
        agent.destroy();
        resolve({ status: res.statusCode!, headers: res.headers, text, json: () => JSON.parse(text), worker });
      });
    });
    req.on('error', (e) => {
      agent.destroy();
      reject(e);
    });
    req.end(body);
  });
}

describe('workers (node:cluster)', () => {
  function workersYaml(dir: string, o: { workers: string; redisPrefix?: string; echoUrl?: string }): string {
    const file = join(dir, 'gateway.yaml');
    writeFileSync(
      file,
      `
listen: 127.0.0.1:0
admin: { listen: 127.0.0.1:0 }
workers: ${o.workers}
data_dir: ${dir}
storage:
  database_url: sqlite:${join(dir, 'gw.db')}
${o.redisPrefix ? `  redis_url: ${REDIS_URL}\n  redis_prefix: "${o.redisPrefix}"` : ''}
auth:
  login_rate_limit: { requests: 100000, per: 1m }
  api_rate_limit: { requests: 100000, per: 1m }
upstreams:
  echo: { url: "${o.echoUrl ?? 'http://127.0.0.1:9'}", timeout: 5s }
routes:
  - name: limited
    match: { path: /limited/** }
    upstream: echo
    access: public
    rate_limit: { requests: 6, per: 1m }
  - name: app
    match: { path: /app/** }
    upstream: echo
    access: authenticated
`,
    );
    return file;
  }

  it('`workers: 2` (or `auto` on a multi-core machine) with in-process state refuses to start: exit 2, one clear line at workers naming storage.redis_url', {
    timeout: 60_000,
  }, async () => {
    const dir = tempDir();
    const cases = ['2', ...(availableParallelism() > 1 ? ['auto'] : [])];
    for (const workers of cases) {
      const file = workersYaml(dir, { workers });
      const p = spawnCli(['serve', '--config', file]);
      const code = await exitWithin(p, 30_000);
      expect(code, p.stderr).toBe(2);
      const lines = p.stderr.trimEnd().split('\n');
      // The problem at the line of `workers` (file:line: key.path: message), then the count.
      expect(lines, p.stderr).toHaveLength(2);
      expect(lines[0].startsWith(`${file}:4: workers: ${workers}`), lines[0]).toBe(true);
      expect(lines[0]).toContain('needs storage.redis_url');
      expect(lines[0]).not.toMatch(/\bat .*:\d+:\d+/);
      expect(lines[1]).toBe('portcullis: the config is invalid (1 problem)');
      // Nothing was started: no log lines, no database, no listener.
      expect(p.stdout).toBe('');
      expect(existsSync(join(dir, 'gw.db'))).toBe(false);
    }
  });

  it.skipIf(!reachable || process.platform !== 'linux')(
    '`workers: 2` with Redis: two workers serve one port; tokens, a route limit and a lockout are shared by both; unlock clears it; SIGTERM exits 0',
    { timeout: 240_000 },
    async () => {
      const dir = tempDir();
      const echo = await startEchoServer({ host: '127.0.0.1', port: 0 });
      const file = workersYaml(dir, { workers: '2', redisPrefix: `${RUN_PREFIX}workers:`, echoUrl: echo.url });
      const p = spawnCli(['serve', '--config', file], { PORTCULLIS_BOOTSTRAP_ADMIN_PASSWORD: GOOD_PASSWORD });
      let pids: number[] = [];
      try {
        // Both workers start (allow a slow, loaded machine plenty of time).
        const deadline = Date.now() + 120_000;
        while (jsonLines(p.stdout).filter((l) => l.event === 'listening').length < 2) {
          if (p.child.exitCode !== null) throw new Error(`portcullis exited (${p.child.exitCode})\nstdout: ${p.stdout}\nstderr: ${p.stderr}`);
          if (Date.now() > deadline) throw new Error(`two workers did not start\nstdout: ${p.stdout}\nstderr: ${p.stderr}`);
          await sleep(100);
        }
        const listening = jsonLines(p.stdout).filter((l) => l.event === 'listening');
        expect(listening).toHaveLength(2);
        const url = listening[0].url as string;
        expect(listening[1].url).toBe(url);
        pids = childPids(p.child.pid!);
        expect(pids).toHaveLength(2);
        const req = (method: string, path: string, o: { body?: unknown; token?: string } = {}) => viaWorker(url, pids, method, path, o);

        // A token issued by one worker is accepted by both.
        const signIn = await req('POST', `${PREFIX}/login`, { body: { username: 'admin', password: GOOD_PASSWORD } });
        expect(signIn.status, signIn.text).toBe(200);
        const token = signIn.json().access_token as string;
        const app: WorkerReply[] = [];
        for (let i = 0; i < 6; i++) app.push(await req('GET', `/app/w${i}`, { token }));
        for (const r of app) {
          expect(r.status, r.text).toBe(200);
          expect((r.json() as EchoReply).identity.user).toBe('admin');
        }
        expect(new Set(app.map((r) => r.worker))).toEqual(new Set(pids));

        // The route limit (6 a minute) is one budget, not one per worker.
        const limited: WorkerReply[] = [];
        for (let i = 0; i < 9; i++) limited.push(await req('GET', `/limited/${i}`));
        // (soft: a failure here is reported, and the lockout and shutdown checks still run)
        expect.soft(limited.map((r) => r.status)).toEqual([200, 200, 200, 200, 200, 200, 429, 429, 429]);
        expect.soft(new Set(limited.slice(0, 6).map((r) => r.worker))).toEqual(new Set(pids));
        expect.soft(new Set(limited.slice(6).map((r) => r.worker))).toEqual(new Set(pids));

        // A lockout reached over requests handled by both workers locks on both.
        const failures: WorkerReply[] = [];
        for (let i = 0; i < 5; i++) failures.push(await req('POST', `${PREFIX}/login`, { body: { username: 'admin', password: WRONG } }));
        expect(failures.map((r) => r.status)).toEqual([401, 401, 401, 401, 401]);
        expect(new Set(failures.map((r) => r.worker))).toEqual(new Set(pids));
        const locked: WorkerReply[] = [];
        for (let i = 0; i < 4; i++) locked.push(await req('POST', `${PREFIX}/login`, { body: { username: 'admin', password: GOOD_PASSWORD } }));
        for (const r of locked) {
          expect(r.status, r.text).toBe(423);
          expect(r.json().code).toBe('account_locked');
          expect(Number(r.headers['retry-after'])).toBeGreaterThanOrEqual(895);
        }
        expect(new Set(locked.map((r) => r.worker))).toEqual(new Set(pids));
        // Log lines are written in batches (within 100 ms): wait for the one line, then make sure it stays one.
        const lockedLines = () => jsonLines(p.stdout).filter((l) => l.event === 'account_locked');
        for (const until = Date.now() + 3000; lockedLines().length === 0 && Date.now() < until; ) await new Promise((r) => setTimeout(r, 25));
        await new Promise((r) => setTimeout(r, 200));
        expect(lockedLines()).toHaveLength(1);

        // `portcullis user unlock` (Redis directly) clears it for every worker.
        const unlock = await runCli(['user', 'unlock', 'admin', '--config', file]);
        expect(unlock.stderr).toBe('');
        expect(unlock.code).toBe(0);
        expect(unlock.stdout).toBe('admin: unlocked\n');
        const after: WorkerReply[] = [];
        for (let i = 0; i < 2; i++) after.push(await req('POST', `${PREFIX}/login`, { body: { username: 'admin', password: GOOD_PASSWORD } }));
        expect(after.map((r) => r.status)).toEqual([200, 200]);
        expect(new Set(after.map((r) => r.worker))).toEqual(new Set(pids));

        // SIGTERM: both workers drain and stop, the primary exits 0.
        p.child.kill('SIGTERM');
        const code = await exitWithin(p, 60_000);
        expect(code, p.stderr).toBe(0);
        expect(jsonLines(p.stdout).filter((l) => l.event === 'stopped')).toHaveLength(2);
        // No worker died and had to be replaced along the way.
        expect(p.stderr.trimEnd().split('\n')).toEqual(['portcullis: started 2 workers']);
        for (const pid of pids) expect(existsSync(`/proc/${pid}`)).toBe(false);
      } finally {
        if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL');
        for (const pid of pids) {
          try {
            process.kill(pid, 'SIGKILL');
          } catch {
            // already gone
          }
        }
        await echo.close();
      }
    },
  );
});
