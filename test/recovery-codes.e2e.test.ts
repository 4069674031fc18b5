/**
 * End-to-end: `POST /api/auth/2fa/recovery-codes` (SPEC §4, issue 13 part 2) over real HTTP
 * against a real gateway and SQLite database, on an injected clock (as in mfa.e2e.test.ts:
 * every successful TOTP code is taken at a fresh 30 s step).
 *
 * Confirmed with a current TOTP code or the password (exactly one); the confirmation counts
 * toward the username lockout like a sign-in; a success replaces all ten codes at once.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GOOD_PASSWORD, addUser, fakeClock, login, totpAt, wrongTotp, startHarness, type Harness, toReply, type Reply } from './support/helpers.js';

const STEP = 30_000;
/** 10 s into a 30 s TOTP step. */
const T0 = Date.UTC(2026, 0, 5, 9, 0, 10);
const PREFIX = '/api/auth';
const WRONG_PASSWORD = 'definitely not the password 11';
const EVIL = 'https://evil.example';

async function send(
  h: Harness,
  method: string,
  path: string,
  o: { token?: string; body?: unknown; cookie?: string; headers?: Record<string, string>; raw?: string } = {},
): Promise<Reply> {
  const headers: Record<string, string> = { ...(o.headers ?? {}) };
  if (o.token !== undefined) headers.authorization = `Bearer ${o.token}`;
  if (o.cookie) headers.cookie = o.cookie;
  let body: string | undefined;
  if (o.raw !== undefined || o.body !== undefined) {
    body = o.raw ?? JSON.stringify(o.body);
    headers['content-type'] ??= 'application/json';
  }
  return toReply(await fetch(`${h.url}${path}`, { method, headers, body, redirect: 'manual' }));
}

function expectProblem(r: Reply, status: number, code: string) {
  expect(r.status, r.text).toBe(status);
  expect(r.headers.get('content-type')).toMatch(/^application\/problem\+json/);
  const p = r.json();
  expect(p.code).toBe(code);
  return p;
}

const CODE_SHAPE = /^[A-Z2-9]{4}(-[A-Z2-9]{4}){3}$/;

describe('POST /2fa/recovery-codes', () => {
  let h: Harness;
  const clock = fakeClock(T0);
  const nextCode = (secret: string) => {
    clock.advance(STEP);
    return totpAt(secret, clock.ms());
  };
  const wrong = (secret: string) => wrongTotp(secret, clock.ms());

  beforeAll(async () => {
    h = await startHarness({
      now: clock.now,
      extraYaml: `
auth:
  login_rate_limit: { requests: 100000, per: 1m }
  api_rate_limit: { requests: 100000, per: 1m }
  lockout: { max_failures: 5, window: 15m, duration: 15m }
`,
    });
  });
  afterAll(async () => {
    await h?.close();
  });

  const regenerate = (o: { token?: string; body?: unknown; cookie?: string; headers?: Record<string, string>; raw?: string }) =>
    send(h, 'POST', `${PREFIX}/2fa/recovery-codes`, o);

  /** A user with 2FA on (setup + enable over the API) and a fully signed-in access token. */
  async function mfaUser(username: string): Promise<{ id: string; secret: string; recovery: string[]; token: string }> {
    const u = await addUser(h, username);
    const plain = await login(h, username);
    const { secret } = (await send(h, 'POST', `${PREFIX}/2fa/setup`, { token: plain })).json();
    const e = await send(h, 'POST', `${PREFIX}/2fa/enable`, { token: plain, body: { code: await totpAt(secret, clock.ms()) } });
    expect(e.status, e.text).toBe(200);
    const token = await fullLogin(username, secret);
    return { id: u.id, secret, recovery: e.json().recovery_codes, token };
  }

  async function mfaToken(username: string, password = GOOD_PASSWORD): Promise<Reply> {
    return send(h, 'POST', `${PREFIX}/login`, { body: { username, password } });
  }

  async function fullLogin(username: string, secret: string): Promise<string> {
    const t = (await mfaToken(username)).json().mfa_token;
    const v = await send(h, 'POST', `${PREFIX}/2fa/verify`, { body: { mfa_token: t, code: await nextCode(secret) } });
    expect(v.status, v.text).toBe(200);
    return v.json().access_token;
  }

  const verifyWith = async (username: string, code: string) =>
    send(h, 'POST', `${PREFIX}/2fa/verify`, { body: { mfa_token: (await mfaToken(username)).json().mfa_token, code } });

  const events = (event: string, userId?: string) => h.logs.filter((l) => l.event === event && (userId === undefined || l.user_id === userId));

  it('with a current code: ten new codes (no-store); the old ones are dead at /2fa/verify, a new one works once; one event, no codes logged', async () => {
    const { id, secret, recovery, token } = await mfaUser('rosa');
    const r = await regenerate({ token, body: { code: await nextCode(secret) } });
    expect(r.status, r.text).toBe(200);
    expect(r.headers.get('cache-control')).toBe('no-store');
    const body = r.json();
    expect(Object.keys(body)).toEqual(['recovery_codes']);
    const codes: string[] = body.recovery_codes;
    expect(codes).toHaveLength(10);
    expect(new Set(codes).size).toBe(10);
    for (const c of codes) expect(c).toMatch(CODE_SHAPE);
    for (const c of codes) expect(recovery).not.toContain(c);

    const rows = await (h.app.db as any).kysely.selectFrom('recovery_codes').selectAll().where('user_id', '=', id).execute();
    expect(rows).toHaveLength(10);
    for (const row of rows) expect(row.used_at).toBeNull();

    expectProblem(await verifyWith('rosa', recovery[0]), 401, 'invalid_mfa_code');
    expectProblem(await verifyWith('rosa', recovery[9]), 401, 'invalid_mfa_code');
    const ok = await verifyWith('rosa', codes[4]);
    expect(ok.status, ok.text).toBe(200);
    expectProblem(await verifyWith('rosa', codes[4]), 401, 'invalid_mfa_code');
    expect((await verifyWith('rosa', codes[5])).status).toBe(200);

    expect(events('recovery_codes_regenerated', id)).toEqual([expect.objectContaining({ level: 'info', user_id: id })]);
    const allLogs = JSON.stringify(h.logs);
    for (const c of codes) {
      expect(allLogs).not.toContain(c);
      expect(allLogs).not.toContain(c.replace(/-/g, ''));
    }
  });

  it('with the password: ten new codes, the old ones dead', async () => {
    const { id, recovery, token } = await mfaUser('pia');
    const r = await regenerate({ token, body: { password: GOOD_PASSWORD } });
    expect(r.status, r.text).toBe(200);
    const codes: string[] = r.json().recovery_codes;
    expect(codes).toHaveLength(10);
    expectProblem(await verifyWith('pia', recovery[1]), 401, 'invalid_mfa_code');
    expect((await verifyWith('pia', codes[0])).status).toBe(200);
    expect(events('recovery_codes_regenerated', id)).toHaveLength(1);
  });

  it('a recovery code is not accepted as the confirming code (a current TOTP code only)', async () => {
    const { recovery, token } = await mfaUser('remi');
    expectProblem(await regenerate({ token, body: { code: recovery[2] } }), 401, 'invalid_mfa_code');
    // The recovery code was not spent by the attempt.
    expect((await verifyWith('remi', recovery[2])).status).toBe(200);
  });

  it('a replayed TOTP code is refused (401) and counted as a replay', async () => {
    const { id, secret, token } = await mfaUser('ravi');
    // The code that completed the sign-in is spent.
    const used = await totpAt(secret, clock.ms());
    expectProblem(await regenerate({ token, body: { code: used } }), 401, 'invalid_mfa_code');
    const code = await nextCode(secret);
    expect((await regenerate({ token, body: { code } })).status).toBe(200);
    expectProblem(await regenerate({ token, body: { code } }), 401, 'invalid_mfa_code');
    expect(events('mfa_replay').filter((e) => e.user_id === id)).toHaveLength(2);
    expect(events('recovery_codes_regenerated', id)).toHaveLength(1);
  });

  it('wrong password (403 wrong_password) and wrong codes (401 invalid_mfa_code) count toward the lockout: the 5th locks; then 423 even when right', async () => {
    const { id, secret, recovery, token } = await mfaUser('lena');
    expectProblem(await regenerate({ token, body: { password: WRONG_PASSWORD } }), 403, 'wrong_password');
    expectProblem(await regenerate({ token, body: { password: WRONG_PASSWORD } }), 403, 'wrong_password');
    expectProblem(await regenerate({ token, body: { code: await wrong(secret) } }), 401, 'invalid_mfa_code');
    expectProblem(await regenerate({ token, body: { code: await wrong(secret) } }), 401, 'invalid_mfa_code');
    expect(events('account_locked').filter((e) => e.username === 'lena')).toHaveLength(0);
    expectProblem(await regenerate({ token, body: { password: WRONG_PASSWORD } }), 403, 'wrong_password');
    expect(events('account_locked').filter((e) => e.username === 'lena')).toEqual([expect.objectContaining({ failures: 5 })]);
    expect(events('recovery_codes_regenerate_failure', id)).toHaveLength(5);

    const byPassword = await regenerate({ token, body: { password: GOOD_PASSWORD } });
    expectProblem(byPassword, 423, 'account_locked');
    expect(Number(byPassword.headers.get('retry-after'))).toBeGreaterThan(0);
    expectProblem(await regenerate({ token, body: { code: await nextCode(secret) } }), 423, 'account_locked');
    // The same lock covers sign-in; the old codes still stand.
    expectProblem(await mfaToken('lena'), 423, 'account_locked');
    expect(events('recovery_codes_regenerated', id)).toHaveLength(0);

    clock.advance(15 * 60_000);
    expect((await verifyWith('lena', recovery[0])).status).toBe(200);
  });

  it('a success with a code resets the count; a success with the password alone does not (2FA is on)', async () => {
    const { secret, token } = await mfaUser('lio');
    for (let i = 0; i < 4; i++) expect((await regenerate({ token, body: { password: WRONG_PASSWORD } })).status).toBe(403);
    expect((await regenerate({ token, body: { code: await nextCode(secret) } })).status).toBe(200);
    for (let i = 0; i < 4; i++) expect((await regenerate({ token, body: { code: await wrong(secret) } })).status).toBe(401);
    expect(events('account_locked').filter((e) => e.username === 'lio')).toHaveLength(0);
    expect((await regenerate({ token, body: { password: GOOD_PASSWORD } })).status).toBe(200);
    // Still four failures on the books: one more locks.
    expectProblem(await regenerate({ token, body: { code: await wrong(secret) } }), 401, 'invalid_mfa_code');
    expect(events('account_locked').filter((e) => e.username === 'lio')).toEqual([expect.objectContaining({ failures: 5 })]);
    expectProblem(await mfaToken('lio'), 423, 'account_locked');
  });

  it('without 2FA: 409 mfa_not_set_up', async () => {
    await addUser(h, 'nora');
    const token = await login(h, 'nora');
    expectProblem(await regenerate({ token, body: { password: GOOD_PASSWORD } }), 409, 'mfa_not_set_up');
    expectProblem(await regenerate({ token, body: { code: '123456' } }), 409, 'mfa_not_set_up');
  });

  it('unauthenticated: 401; an MFA token as bearer: 401', async () => {
    const { secret } = await mfaUser('uma');
    expectProblem(await regenerate({ body: { password: GOOD_PASSWORD } }), 401, 'unauthenticated');
    const mfa = (await mfaToken('uma')).json().mfa_token;
    const r = await regenerate({ token: mfa, body: { code: await nextCode(secret) } });
    expect(r.status, r.text).toBe(401);
  });

  it('both fields, neither, wrong types or a non-object body: 422 invalid_input (malformed JSON: 400)', async () => {
    const { secret, token } = await mfaUser('vic');
    const both = expectProblem(await regenerate({ token, body: { code: await nextCode(secret), password: GOOD_PASSWORD } }), 422, 'invalid_input');
    expect(both.errors.map((e: { field: string }) => e.field).sort()).toEqual(['code', 'password']);
    const neither = expectProblem(await regenerate({ token, body: {} }), 422, 'invalid_input');
    expect(neither.errors.map((e: { field: string }) => e.field).sort()).toEqual(['code', 'password']);
    const typed = expectProblem(await regenerate({ token, body: { password: 12345 } }), 422, 'invalid_input');
    expect(typed.errors).toEqual([{ field: 'password', message: 'must be a string' }]);
    expectProblem(await regenerate({ token, body: ['password'] }), 422, 'invalid_input');
    expectProblem(await regenerate({ token, raw: '{"password":' }), 400, 'malformed_json');
    // None of these counted toward the lockout, and nothing changed.
    expect(events('recovery_codes_regenerate_failure').filter((e) => e.username === 'vic')).toHaveLength(0);
    expect((await regenerate({ token, body: { password: GOOD_PASSWORD } })).status).toBe(200);
  });

  it('session cookie: same origin works; a foreign Origin (or none) is 403 csrf and changes nothing', async () => {
    const u = await addUser(h, 'cora');
    const res = await fetch(`${h.url}${PREFIX}/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', origin: h.url },
      body: new URLSearchParams({ username: 'cora', password: GOOD_PASSWORD, rd: '/' }).toString(),
      redirect: 'manual',
    });
    expect(res.status).toBe(303);
    const cookie = res.headers
      .getSetCookie()
      .map((c) => c.split(';')[0])
      .join('; ');
    const own = { origin: h.url };
    const s = await send(h, 'POST', `${PREFIX}/2fa/setup`, { cookie, headers: own });
    expect(s.status, s.text).toBe(200);
    const { secret } = s.json();
    const e = await send(h, 'POST', `${PREFIX}/2fa/enable`, { cookie, headers: own, body: { code: await nextCode(secret) } });
    expect(e.status, e.text).toBe(200);
    const old: string[] = e.json().recovery_codes;

    expectProblem(await regenerate({ cookie, headers: { origin: EVIL }, body: { password: GOOD_PASSWORD } }), 403, 'csrf');
    expectProblem(await regenerate({ cookie, body: { password: GOOD_PASSWORD } }), 403, 'csrf');
    expect(events('recovery_codes_regenerated', u.id)).toHaveLength(0);
    expect((await verifyWith('cora', old[0])).status).toBe(200);

    const ok = await regenerate({ cookie, headers: own, body: { password: GOOD_PASSWORD } });
    expect(ok.status, ok.text).toBe(200);
    expect(ok.json().recovery_codes).toHaveLength(10);
    expectProblem(await verifyWith('cora', old[1]), 401, 'invalid_mfa_code');
  });
});
