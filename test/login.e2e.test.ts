/**
 * End-to-end: the password login API (SPEC §4, §5, §8, §9) over real HTTP against a real
 * gateway and echo upstream.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import argon2 from 'argon2';
import { createLocalJWKSet, decodeJwt, decodeProtectedHeader, jwtVerify, type JWK } from 'jose';
import { GOOD_PASSWORD, addUser, login, metricsText, sample, startHarness, type Harness } from './support/helpers.js';

// Generous abuse limits, so the many logins below (timing runs) never trip a limiter or a
// lockout once those are enforced; this file tests credentials, not abuse protection.
const LIMITS = `
auth:
  login_rate_limit: { requests: 100000, per: 1m }
  lockout: { max_failures: 100000, window: 15m, duration: 15m }
`;

let h: Harness;
/** Every password and token this file sends: none may ever show up in a log line. */
const secretsSent = new Set<string>([GOOD_PASSWORD]);
let userIds: Record<string, string> = {};

interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  code: string;
  errors?: { field: string; message: string }[];
}

async function postLogin(body: unknown, headers: Record<string, string> = { 'content-type': 'application/json' }) {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  const res = await fetch(`${h.url}/api/auth/login`, { method: 'POST', headers, body: text });
  const out = await res.text();
  return { res, status: res.status, text: out, json: () => JSON.parse(out) };
}

function expectProblem(r: { res: Response; status: number; text: string }, status: number, code: string): Problem {
  expect(r.status).toBe(status);
  expect(r.res.headers.get('content-type')).toBe('application/problem+json');
  const p = JSON.parse(r.text) as Problem;
  expect(p.status).toBe(status);
  expect(p.code).toBe(code);
  expect(typeof p.type).toBe('string');
  expect(p.type.length).toBeGreaterThan(0);
  expect(typeof p.title).toBe('string');
  expect(p.title.length).toBeGreaterThan(0);
  expect(typeof p.detail).toBe('string');
  expect(p.detail.length).toBeGreaterThan(0);
  return p;
}

function wrongPassword(): string {
  const pw = `Wr0ng-pass-${randomBytes(9).toString('base64url')}`;
  secretsSent.add(pw);
  return pw;
}

beforeAll(async () => {
  h = await startHarness({ extraYaml: LIMITS });
  const alice = await addUser(h, 'alice', ['admin', 'reporter'], { email: 'alice@example.com' });
  const bob = await addUser(h, 'bob', []);
  const dora = await addUser(h, 'dora', ['admin'], { disabled: true });
  const kate = await addUser(h, 'kate', []);
  userIds = { alice: alice.id, bob: bob.id, dora: dora.id, kate: kate.id };
});

afterAll(async () => {
  await h?.close();
});

describe('POST /api/auth/login — success', () => {
  it('returns a Bearer access token valid for 900 s, not cacheable', async () => {
    const r = await postLogin({ username: 'alice', password: GOOD_PASSWORD });
    expect(r.status).toBe(200);
    expect(r.res.headers.get('content-type')).toMatch(/^application\/json\b/);
    expect(r.res.headers.get('cache-control')).toBe('no-store');
    const body = r.json();
    expect(body.token_type).toBe('Bearer');
    expect(body.expires_in).toBe(900);
    expect(typeof body.access_token).toBe('string');
    expect(body.access_token.split('.')).toHaveLength(3);
    secretsSent.add(body.access_token);

    const header = decodeProtectedHeader(body.access_token);
    expect(header).toMatchObject({ alg: 'EdDSA', typ: 'at+jwt' });
    expect(typeof header.kid).toBe('string');
    const claims = decodeJwt(body.access_token);
    expect(claims.sub).toBe(userIds.alice);
    expect(claims.username).toBe('alice');
    expect(claims.roles).toEqual(['admin', 'reporter']);
    expect(claims.amr).toEqual(['pwd']);
    expect(claims.aud).toBe('portcullis');
    expect(claims.iss).toBe(h.app.config.issuer);
    expect((claims.exp as number) - (claims.iat as number)).toBe(900);
    expect(typeof claims.jti).toBe('string');
    expect(typeof claims.sid).toBe('string');
  });

  it('the access token reaches the upstream as identity headers (and the bearer is not forwarded)', async () => {
    const token = await login(h, 'alice');
    secretsSent.add(token);
    const res = await fetch(`${h.url}/app/x?q=1`, { headers: { authorization: `Bearer ${token}` } });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^application\/json/);
    const echo = (await res.json()) as {
      path: string;
      query: string;
      headers: Record<string, string>;
      identity: { user: string; user_id: string; email: string; roles: string[] };
    };
    expect(echo.path).toBe('/app/x');
    expect(echo.query).toBe('q=1');
    expect(echo.headers['x-auth-user']).toBe('alice');
    expect(echo.headers['x-auth-user-id']).toBe(userIds.alice);
    expect(echo.headers['x-auth-email']).toBe('alice@example.com');
    expect(echo.headers['x-auth-roles']).toBe('admin,reporter');
    expect(echo.identity).toEqual({ user: 'alice', user_id: userIds.alice, email: 'alice@example.com', roles: ['admin', 'reporter'] });
    expect(echo.headers.authorization).toBeUndefined();
  });

  it("GET /api/auth/me returns the current user and the token's session id", async () => {
    const token = await login(h, 'alice');
    secretsSent.add(token);
    const res = await fetch(`${h.url}/api/auth/me`, { headers: { authorization: `Bearer ${token}` } });
    expect(res.status).toBe(200);
    expect(res.headers.get('cache-control')).toBe('no-store');
    const me = await res.json();
    const sid = decodeJwt(token).sid;
    expect(typeof sid).toBe('string');
    expect(me).toEqual({ id: userIds.alice, username: 'alice', email: 'alice@example.com', roles: ['admin', 'reporter'], mfa_enabled: false, session_id: sid });
  });

  it('each login is its own session', async () => {
    const a = decodeJwt(await login(h, 'bob')).sid;
    const b = decodeJwt(await login(h, 'bob')).sid;
    expect(a).not.toBe(b);
  });

  it('usernames are case-insensitive: ALICE logs in as alice', async () => {
    const r = await postLogin({ username: 'ALICE', password: GOOD_PASSWORD });
    expect(r.status).toBe(200);
    const token = r.json().access_token as string;
    secretsSent.add(token);
    expect(decodeJwt(token)).toMatchObject({ sub: userIds.alice, username: 'alice' });
    const me = await (await fetch(`${h.url}/api/auth/me`, { headers: { authorization: `Bearer ${token}` } })).json();
    expect(me.username).toBe('alice');
    expect(me.id).toBe(userIds.alice);
  });

  it('a Kelvin sign (U+212A) does not alias "k" (no Unicode case folding): 422', async () => {
    const r = await postLogin({ username: '\u212Aate', password: GOOD_PASSWORD });
    const p = expectProblem(r, 422, 'invalid_input');
    expect(p.errors?.map((e) => e.field)).toEqual(['username']);
  });
});

describe('POST /api/auth/login — failures look the same', () => {
  it('wrong password, unknown user and disabled user get byte-identical 401 invalid_credentials', async () => {
    const wrong = await postLogin({ username: 'bob', password: wrongPassword() });
    const unknown = await postLogin({ username: 'nobody-here', password: wrongPassword() });
    // The disabled user's *correct* password must not reveal that the account exists.
    const disabled = await postLogin({ username: 'dora', password: GOOD_PASSWORD });
    const p = expectProblem(wrong, 401, 'invalid_credentials');
    expectProblem(unknown, 401, 'invalid_credentials');
    expectProblem(disabled, 401, 'invalid_credentials');
    expect(unknown.text).toBe(wrong.text);
    expect(disabled.text).toBe(wrong.text);
    expect(p.detail).not.toMatch(/bob|unknown|disabled|exist/i);

    // Same headers too (apart from Date, the per-IP rate-limit budget that each request spends,
    // and the request's own id).
    const heads = (r: { res: Response }) => [...r.res.headers.entries()].filter(([k]) => k !== 'date' && k !== 'ratelimit' && k !== 'x-request-id').sort();
    expect(heads(unknown)).toEqual(heads(wrong));
    expect(heads(disabled)).toEqual(heads(wrong));
    expect(wrong.res.headers.get('www-authenticate')).toBeNull();
  });

  it('take the same time: medians of interleaved runs within 20 % (disabled in the same ballpark)', async () => {
    const kinds = {
      wrong: { username: 'bob', password: wrongPassword() },
      unknown: { username: 'nobody-at-all', password: wrongPassword() },
      disabled: { username: 'dora', password: wrongPassword() },
    } as const;
    type Kind = keyof typeof kinds;
    const names = Object.keys(kinds) as Kind[];
    const once = async (k: Kind): Promise<number> => {
      const t0 = performance.now();
      const res = await fetch(`${h.url}/api/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(kinds[k]) });
      await res.arrayBuffer();
      const ms = performance.now() - t0;
      expect(res.status).toBe(401);
      return ms;
    };
    const median = (xs: number[]) => {
      const s = [...xs].sort((a, b) => a - b);
      return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
    };
    /** Symmetric ratio: 1.2 means one side is 20 % slower than the other, whichever it is. */
    const spread = (r: number) => Math.max(r, 1 / r);
    const measure = async (rounds: number) => {
      const t: Record<Kind, number[]> = { wrong: [], unknown: [], disabled: [] };
      for (const k of names) await once(k); // warm-up (connection pool, JIT)
      for (let i = 0; i < rounds; i++) {
        // Rotate the order each round so no kind always runs first (or right after a GC).
        for (let j = 0; j < names.length; j++) {
          const k = names[(i + j) % names.length];
          t[k].push(await once(k));
        }
      }
      // Compare kinds within each round (the three ran back to back, under the same load from
      // whatever else the box is doing), then take the median over rounds: a burst of load
      // spoils a few rounds, not the median. A skipped or cheaper hash shows as a ratio of
      // several times, far outside these bounds.
      const paired = (a: Kind, b: Kind) => spread(median(t[a].map((x, i) => x / t[b][i])));
      return {
        wu: paired('wrong', 'unknown'),
        dw: paired('disabled', 'wrong'),
        du: paired('disabled', 'unknown'),
        medians: { wrong: median(t.wrong), unknown: median(t.unknown), disabled: median(t.disabled) },
        samples: t,
      };
    };
    const ok = (r: Awaited<ReturnType<typeof measure>>) => r.wu <= 1.2 && r.dw <= 1.3 && r.du <= 1.3;
    let r = await measure(21);
    if (!ok(r)) r = await measure(31); // one retry on a noisy box
    const info = JSON.stringify(r, (_k, v) => (typeof v === 'number' ? Math.round(v * 1000) / 1000 : v));
    expect(r.wu, info).toBeLessThanOrEqual(1.2);
    expect(r.dw, info).toBeLessThanOrEqual(1.3);
    expect(r.du, info).toBeLessThanOrEqual(1.3);
  }, 180_000);
});

describe('POST /api/auth/login — input validation', () => {
  it("SQL injection in the username (admin' OR '1'='1) is 422 invalid_input naming username", async () => {
    const r = await postLogin({ username: "admin' OR '1'='1", password: 'x' });
    const p = expectProblem(r, 422, 'invalid_input');
    expect(p.errors?.map((e) => e.field)).toEqual(['username']);
  });

  it('a 65-character username is 422; 64 characters is a normal (failed) login', async () => {
    const long = expectProblem(await postLogin({ username: 'a'.repeat(65), password: 'x' }), 422, 'invalid_input');
    expect(long.errors?.map((e) => e.field)).toEqual(['username']);
    expectProblem(await postLogin({ username: 'a'.repeat(64), password: wrongPassword() }), 401, 'invalid_credentials');
  });

  it('non-string fields are 422 listing both fields', async () => {
    const p = expectProblem(await postLogin({ username: 1, password: [] }), 422, 'invalid_input');
    expect(p.errors?.map((e) => e.field).sort()).toEqual(['password', 'username']);
  });

  it('missing fields are 422 listing them', async () => {
    const both = expectProblem(await postLogin({}), 422, 'invalid_input');
    expect(both.errors?.map((e) => e.field).sort()).toEqual(['password', 'username']);
    const pw = expectProblem(await postLogin({ username: 'alice' }), 422, 'invalid_input');
    expect(pw.errors?.map((e) => e.field)).toEqual(['password']);
  });

  it('a JSON array body is 422', async () => {
    expectProblem(await postLogin('[]'), 422, 'invalid_input');
  });

  it('malformed JSON is 400 malformed_json', async () => {
    expectProblem(await postLogin('{"username": "alice", "password": '), 400, 'malformed_json');
  });

  it('a body over 16 KiB is 413 body_too_large; exactly 16 KiB is accepted', async () => {
    const bodyOf = (size: number) => {
      const base = JSON.stringify({ username: 'bob', password: '' });
      return JSON.stringify({ username: 'bob', password: 'p'.repeat(size - base.length) });
    };
    const exact = bodyOf(16 * 1024);
    expect(Buffer.byteLength(exact)).toBe(16384);
    secretsSent.add(JSON.parse(exact).password);
    expectProblem(await postLogin(exact), 401, 'invalid_credentials');
    const over = bodyOf(16 * 1024 + 1);
    expectProblem(await postLogin(over), 413, 'body_too_large');
  });

  it('a chunked body over 16 KiB (no Content-Length) is 413 too', async () => {
    const big = new TextEncoder().encode(JSON.stringify({ username: 'bob', password: 'q'.repeat(20_000) }));
    const stream = new ReadableStream<Uint8Array>({
      start(c) {
        c.enqueue(big);
        c.close();
      },
    });
    const res = await fetch(`${h.url}/api/auth/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: stream,
      duplex: 'half',
    } as RequestInit);
    expectProblem({ res, status: res.status, text: await res.text() }, 413, 'body_too_large');
  });

  it('a non-JSON content type is 415 unsupported_media_type (as is none at all)', async () => {
    const body = JSON.stringify({ username: 'alice', password: GOOD_PASSWORD });
    expectProblem(await postLogin(body, { 'content-type': 'text/plain' }), 415, 'unsupported_media_type');
    const res = await fetch(`${h.url}/api/auth/login`, { method: 'POST', body: new Blob([body]) }); // Blob without type: no Content-Type
    expectProblem({ res, status: res.status, text: await res.text() }, 415, 'unsupported_media_type');
  });
});

describe('POST /api/auth/logout', () => {
  it('204, then the same token is 401 invalid_token on the gateway and on /me; other sessions live on', async () => {
    const token = await login(h, 'bob');
    const other = await login(h, 'bob');
    secretsSent.add(token).add(other);
    const auth = { authorization: `Bearer ${token}` };
    expect((await fetch(`${h.url}/app/x`, { headers: auth })).status).toBe(200);

    const out = await fetch(`${h.url}/api/auth/logout`, { method: 'POST', headers: auth });
    expect(out.status).toBe(204);
    expect(await out.text()).toBe('');

    const app = await fetch(`${h.url}/app/x`, { headers: auth });
    expect(app.status).toBe(401);
    expect(app.headers.get('www-authenticate')).toBe('Bearer realm="portcullis", error="invalid_token"');
    expect(app.headers.get('content-type')).toBe('application/problem+json');
    expect((await app.json()).code).toBe('invalid_token');

    const me = await fetch(`${h.url}/api/auth/me`, { headers: auth });
    expect(me.status).toBe(401);
    expect(me.headers.get('www-authenticate')).toBe('Bearer realm="portcullis", error="invalid_token"');
    expect((await me.json()).code).toBe('invalid_token');

    // Logging out again with the dead token is not a success.
    expect((await fetch(`${h.url}/api/auth/logout`, { method: 'POST', headers: auth })).status).toBe(401);

    // Only that session ended.
    expect((await fetch(`${h.url}/app/x`, { headers: { authorization: `Bearer ${other}` } })).status).toBe(200);
  });

  it('without a token: 401 with a bare Bearer challenge', async () => {
    const res = await fetch(`${h.url}/api/auth/logout`, { method: 'POST' });
    expect(res.status).toBe(401);
    expect(res.headers.get('www-authenticate')).toBe('Bearer realm="portcullis"');
    expect((await res.json()).code).toBe('unauthenticated');
  });
});

describe('GET /.well-known/jwks.json', () => {
  it('lists public Ed25519 keys only, and verifies a login token', async () => {
    const res = await fetch(`${h.url}/.well-known/jwks.json`);
    expect(res.status).toBe(200);
    const jwks = (await res.json()) as { keys: JWK[] };
    expect(jwks.keys.length).toBeGreaterThanOrEqual(1);
    for (const k of jwks.keys) {
      expect(k.kty).toBe('OKP');
      expect(k.crv).toBe('Ed25519');
      expect(typeof k.kid).toBe('string');
      expect(typeof k.x).toBe('string');
      expect(k).not.toHaveProperty('d');
    }
    expect(JSON.stringify(jwks)).not.toMatch(/"d"\s*:/);

    const token = await login(h, 'alice');
    secretsSent.add(token);
    expect(jwks.keys.map((k) => k.kid)).toContain(decodeProtectedHeader(token).kid);
    const { payload, protectedHeader } = await jwtVerify(token, createLocalJWKSet(jwks), {
      algorithms: ['EdDSA'],
      typ: 'at+jwt',
      issuer: h.app.config.issuer,
      audience: 'portcullis',
    });
    expect(protectedHeader.alg).toBe('EdDSA');
    expect(payload.sub).toBe(userIds.alice);
  });
});

/** The algorithm and cost parameters of a PHC argon2 string (parameter order varies). */
function phcParams(hash: string): Record<string, unknown> {
  const [, alg, , params] = hash.split('$');
  const out: Record<string, unknown> = { alg };
  for (const kv of params.split(',')) {
    const [k, v] = kv.split('=');
    out[k] = Number(v);
  }
  return out;
}

describe('password rehash at login', () => {
  it('a hash with weaker argon2 parameters is upgraded to m=19456,t=2,p=1 at the next successful login', async () => {
    const u = await addUser(h, 'olduser', []);
    const weak = await argon2.hash(GOOD_PASSWORD, { type: argon2.argon2id, memoryCost: 8192, timeCost: 1, parallelism: 1 });
    await h.app.db.users.update(u.id, { passwordHash: weak });
    expect(phcParams((await h.app.db.users.findById(u.id))!.passwordHash)).toEqual({ alg: 'argon2id', m: 8192, t: 1, p: 1 });

    // A failed login must not touch the hash.
    expect((await postLogin({ username: 'olduser', password: wrongPassword() })).status).toBe(401);
    expect((await h.app.db.users.findById(u.id))!.passwordHash).toBe(weak);

    await login(h, 'olduser');
    const stored = (await h.app.db.users.findById(u.id))!.passwordHash;
    expect(phcParams(stored)).toEqual({ alg: 'argon2id', m: 19456, t: 2, p: 1 });
    expect(stored).not.toBe(weak);
    expect(await argon2.verify(stored, GOOD_PASSWORD)).toBe(true);
    expect(h.logs.some((l) => l.event === 'password_rehashed' && l.user_id === u.id)).toBe(true);
    // Still the same password afterwards.
    await login(h, 'olduser');
  });

  // SPEC §8: "at least m=19 MiB, t=2, p=1 (configurable upward); hashes with *weaker*
  // parameters are upgraded". A stronger hash must not be silently weakened.
  it('a hash with stronger argon2 parameters is not downgraded at login', async () => {
    const u = await addUser(h, 'stronguser', []);
    const strong = await argon2.hash(GOOD_PASSWORD, { type: argon2.argon2id, memoryCost: 32768, timeCost: 3, parallelism: 1 });
    await h.app.db.users.update(u.id, { passwordHash: strong });
    await login(h, 'stronguser');
    expect((await h.app.db.users.findById(u.id))!.passwordHash).toBe(strong);
  });
});

describe('observability of logins', () => {
  it('counts success, invalid_credentials and invalid_input; logs login_failure; never logs a secret', async () => {
    // Make this test stand on its own: one of each outcome.
    secretsSent.add(await login(h, 'kate'));
    expect((await postLogin({ username: 'kate', password: wrongPassword() })).status).toBe(401);
    expect((await postLogin({ username: 'ka te', password: wrongPassword() })).status).toBe(422);

    const text = await metricsText(h);
    expect(sample(text, 'portcullis_login_attempts_total', { result: 'success' })).toBeGreaterThan(0);
    expect(sample(text, 'portcullis_login_attempts_total', { result: 'invalid_credentials' })).toBeGreaterThan(0);
    expect(sample(text, 'portcullis_login_attempts_total', { result: 'invalid_input' })).toBeGreaterThan(0);

    const failures = h.logs.filter((l) => l.event === 'login_failure');
    expect(failures.length).toBeGreaterThan(0);
    expect(failures.some((l) => l.username === 'kate')).toBe(true);
    expect(h.logs.some((l) => l.event === 'login_success' && l.username === 'kate')).toBe(true);

    const all = JSON.stringify(h.logs);
    expect(secretsSent.size).toBeGreaterThan(10);
    for (const s of secretsSent) {
      expect(all.includes(s), `a log line contains a secret that was sent (${s.slice(0, 12)}…)`).toBe(false);
      // The signature part alone is enough to be a leak for tokens.
      if (s.split('.').length === 3) expect(all.includes(s.split('.')[2])).toBe(false);
    }
  });
});

describe("security headers on the gateway's own responses (plain HTTP)", () => {
  const check = (res: Response) => {
    expect(res.headers.get('x-content-type-options')).toBe('nosniff');
    const csp = res.headers.get('content-security-policy') ?? '';
    expect(csp).toContain("default-src 'none'");
    expect(csp).toContain("frame-ancestors 'none'");
    expect(csp).not.toContain('upgrade-insecure-requests');
    expect(res.headers.get('strict-transport-security')).toBeNull();
  };

  it('login (200 and 401), /me, JWKS, and pipeline errors (401/403/404/400) carry them, without HSTS', async () => {
    const ok = await fetch(`${h.url}/api/auth/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ username: 'alice', password: GOOD_PASSWORD }),
    });
    expect(ok.status).toBe(200);
    const token = ((await ok.json()) as { access_token: string }).access_token;
    secretsSent.add(token);
    check(ok);
    const bad = await postLogin({ username: 'alice', password: wrongPassword() });
    expect(bad.status).toBe(401);
    check(bad.res);

    const me = await fetch(`${h.url}/api/auth/me`, { headers: { authorization: `Bearer ${token}` } });
    expect(me.status).toBe(200);
    check(me);

    const jwks = await fetch(`${h.url}/.well-known/jwks.json`);
    expect(jwks.status).toBe(200);
    check(jwks);

    const cases: [string, number][] = [
      ['/app/x', 401],
      ['/internal/x', 403],
      ['/nowhere', 404],
      ['/app/a%2Fb', 400],
    ];
    for (const [path, status] of cases) {
      const res = await fetch(`${h.url}${path}`);
      expect(res.status, path).toBe(status);
      expect(res.headers.get('content-type'), path).toBe('application/problem+json');
      check(res);
    }
  });
});
