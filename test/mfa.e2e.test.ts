/**
 * End-to-end: TOTP two-factor authentication (SPEC §4 endpoints and lockout, §5 MFA token, §7
 * TOTP, §9 metrics and events) over real HTTP against a real gateway, echo upstream and SQLite
 * database, plus the real `portcullis` CLI (unlock, reset-2fa) against a running harness.
 *
 * Codes are computed with otplib from the secret the gateway handed out at enrollment. Every
 * harness runs on an injected clock that the tests move (a new TOTP step, an expired MFA token,
 * a lock running out): nothing sleeps through a time step. A time step can be used once per
 * user, so every successful code below is taken at a fresh step (`nextCode` moves the clock on
 * by 30 s first).
 */
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeJwt } from 'jose';
import { createApp } from '../src/app.js';
import { SecretBox } from '../src/auth/secret-box.js';
import { parseConfig } from '../src/config/index.js';
import { createLogger } from '../src/http/log.js';
import { generateSigningJwk } from '../src/tokens/index.js';
import {
  GOOD_PASSWORD,
  addUser,
  fakeClock,
  login,
  metricsText,
  runCliInProcess,
  sample,
  startHarness,
  totpAt,
  wrongTotp,
  type FakeClock,
  type Harness,
} from './support/helpers.js';

const SEC = 1000;
const MIN = 60 * SEC;
const STEP = 30 * SEC;
/** 10 s into a 30 s TOTP step. */
const T0 = Date.UTC(2026, 0, 5, 9, 0, 10);
const WRONG_PASSWORD = 'definitely not the password 11';
const FORM = 'application/x-www-form-urlencoded';
const HTML = 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8';
const PREFIX = '/api/auth';

/** Whether this build's config knows `auth.api_rate_limit` (then it is raised too). */
const HAS_API_LIMIT = (() => {
  try {
    parseConfig('auth:\n  api_rate_limit: { requests: 1, per: 1m }\n', 'probe.yaml', {});
    return true;
  } catch {
    return false;
  }
})();

/** This file tests 2FA and the username lockout, not the per-IP rate limits: those are raised. */
function authYaml(lockout = '{ max_failures: 5, window: 15m, duration: 15m }'): string {
  return `
auth:
  login_rate_limit: { requests: 100000, per: 1m }
${HAS_API_LIMIT ? '  api_rate_limit: { requests: 100000, per: 1m }\n' : ''}  lockout: ${lockout}
`;
}

interface Reply {
  status: number;
  headers: Headers;
  text: string;
  json: () => any;
  cookies: SetCookie[];
}

interface SetCookie {
  name: string;
  value: string;
  attrs: Record<string, string | true>;
}

function parseSetCookie(raw: string): SetCookie {
  const [pair, ...rest] = raw.split(';');
  const eq = pair.indexOf('=');
  const attrs: Record<string, string | true> = {};
  for (const a of rest) {
    const t = a.trim();
    if (!t) continue;
    const i = t.indexOf('=');
    if (i === -1) attrs[t.toLowerCase()] = true;
    else attrs[t.slice(0, i).trim().toLowerCase()] = t.slice(i + 1).trim();
  }
  return { name: pair.slice(0, eq).trim(), value: pair.slice(eq + 1).trim(), attrs };
}

/** A cookie jar: name → value; cookies cleared with Max-Age=0 are dropped. */
type Jar = Record<string, string>;
function jarWith(jar: Jar, cookies: SetCookie[]): Jar {
  const out = { ...jar };
  for (const c of cookies) {
    if (c.attrs['max-age'] === '0') delete out[c.name];
    else out[c.name] = c.value;
  }
  return out;
}
const cookieHeader = (jar: Jar) =>
  Object.entries(jar)
    .map(([k, v]) => `${k}=${v}`)
    .join('; ');

interface SendOpts {
  token?: string;
  body?: unknown;
  form?: Record<string, string>;
  jar?: Jar;
  headers?: Record<string, string>;
}

async function send(h: Harness, method: string, path: string, o: SendOpts = {}): Promise<Reply> {
  const headers: Record<string, string> = { ...(o.headers ?? {}) };
  if (o.token !== undefined) headers.authorization = `Bearer ${o.token}`;
  if (o.jar && Object.keys(o.jar).length) headers.cookie = cookieHeader(o.jar);
  let body: string | undefined;
  if (o.form) {
    body = new URLSearchParams(o.form).toString();
    headers['content-type'] = FORM;
    headers.origin ??= h.url;
  } else if (o.body !== undefined) {
    body = JSON.stringify(o.body);
    headers['content-type'] ??= 'application/json';
  }
  const res = await fetch(`${h.url}${path}`, { method, headers, body, redirect: 'manual' });
  const text = await res.text();
  return { status: res.status, headers: res.headers, text, json: () => JSON.parse(text), cookies: res.headers.getSetCookie().map(parseSetCookie) };
}

function expectProblem(r: Reply, status: number, code: string) {
  expect(r.status, r.text).toBe(status);
  expect(r.headers.get('content-type')).toMatch(/^application\/problem\+json/);
  const p = r.json();
  expect(p.code).toBe(code);
  expect(p.status).toBe(status);
  return p;
}

const kidOf = (key: Buffer) => createHash('sha256').update(key).digest('hex').slice(0, 16);

/** Everything one harness's tests need: the harness, its clock and the 2FA flows over HTTP. */
class Flows {
  constructor(
    readonly h: Harness,
    readonly clock: FakeClock,
  ) {}

  /** Moves the clock to the next TOTP step and returns the code there. */
  async nextCode(secret: string): Promise<string> {
    this.clock.advance(STEP);
    return totpAt(secret, this.clock.ms());
  }

  code(secret: string): Promise<string> {
    return totpAt(secret, this.clock.ms());
  }

  wrong(secret: string): Promise<string> {
    return wrongTotp(secret, this.clock.ms());
  }

  passwordLogin(username: string, password = GOOD_PASSWORD): Promise<Reply> {
    return send(this.h, 'POST', `${PREFIX}/login`, { body: { username, password } });
  }

  /** Logs in with the password of a 2FA user and returns the MFA token. */
  async mfaToken(username: string): Promise<string> {
    const r = await this.passwordLogin(username);
    expect(r.status, r.text).toBe(200);
    const b = r.json();
    expect(b).toEqual({ mfa_required: true, mfa_token: expect.any(String), expires_in: 300 });
    return b.mfa_token;
  }

  verify(mfaToken: string, code: string): Promise<Reply> {
    return send(this.h, 'POST', `${PREFIX}/2fa/verify`, { body: { mfa_token: mfaToken, code } });
  }

  /** setup + enable with a current code; returns what the gateway handed out. */
  async enroll(auth: { token?: string; jar?: Jar }): Promise<{ secret: string; otpauth_uri: string; qr_svg: string; recovery_codes: string[] }> {
    const headers = auth.jar ? { origin: this.h.url } : undefined;
    const s = await send(this.h, 'POST', `${PREFIX}/2fa/setup`, { ...auth, headers });
    expect(s.status, s.text).toBe(200);
    const setup = s.json();
    const e = await send(this.h, 'POST', `${PREFIX}/2fa/enable`, { ...auth, headers, body: { code: await this.code(setup.secret) } });
    expect(e.status, e.text).toBe(200);
    return { ...setup, recovery_codes: e.json().recovery_codes };
  }

  /** A user with 2FA turned on (through the API). */
  async mfaUser(username: string, roles: string[] = []): Promise<{ id: string; secret: string; recovery: string[] }> {
    const u = await addUser(this.h, username, roles);
    const token = await login(this.h, username);
    const { secret, recovery_codes } = await this.enroll({ token });
    return { id: u.id, secret, recovery: recovery_codes };
  }

  /** Password + code at the next step: the token pair of a completed 2FA sign-in. */
  async fullLogin(username: string, secret: string): Promise<{ access_token: string; refresh_token: string }> {
    const t = await this.mfaToken(username);
    const r = await this.verify(t, await this.nextCode(secret));
    expect(r.status, r.text).toBe(200);
    return r.json();
  }

  /** A browser's form sign-in; returns the response (303) and the resulting jar. */
  async formLogin(username: string, rd: string): Promise<{ res: Reply; jar: Jar }> {
    const res = await send(this.h, 'POST', `${PREFIX}/login`, { form: { username, password: GOOD_PASSWORD, rd } });
    expect(res.status, res.text).toBe(303);
    return { res, jar: jarWith({}, res.cookies) };
  }

  async metrics(): Promise<string> {
    return metricsText(this.h);
  }

  async userRow(username: string): Promise<Record<string, any>> {
    return (this.h.app.db as any).kysely.selectFrom('users').selectAll().where('username', '=', username).executeTakeFirstOrThrow();
  }

  async recoveryRows(userId: string): Promise<Record<string, any>[]> {
    return (this.h.app.db as any).kysely.selectFrom('recovery_codes').selectAll().where('user_id', '=', userId).execute();
  }

  events(event: string, username?: string): Record<string, unknown>[] {
    return this.h.logs.filter((l) => l.event === event && (username === undefined || l.username === username));
  }
}

const mfaCount = (m: string, result: string) => sample(m, 'portcullis_mfa_attempts_total', { result });

// ---------------------------------------------------------------------------------------------
// The main harness: default lockout (5 failures in 15 minutes lock for 15 minutes).
// ---------------------------------------------------------------------------------------------

describe('2FA over HTTP', () => {
  let h: Harness;
  let f: Flows;
  const clock = fakeClock(T0);

  beforeAll(async () => {
    h = await startHarness({ now: clock.now, extraYaml: authYaml() });
    f = new Flows(h, clock);
  });
  afterAll(async () => {
    await h?.close();
  });

  describe('enrollment', () => {
    it('setup returns a fresh base32 secret, its otpauth URI (issuer Portcullis, the username) and an SVG QR code', async () => {
      await addUser(h, 'enid');
      const token = await login(h, 'enid');
      const r = await send(h, 'POST', `${PREFIX}/2fa/setup`, { token });
      expect(r.status, r.text).toBe(200);
      expect(r.headers.get('cache-control')).toBe('no-store');
      const b = r.json();
      expect(Object.keys(b).sort()).toEqual(['otpauth_uri', 'qr_svg', 'secret']);
      expect(b.secret).toMatch(/^[A-Z2-7]{32}$/); // 20 random bytes, base32

      const uri = new URL(b.otpauth_uri);
      expect(uri.protocol).toBe('otpauth:');
      expect(uri.host).toBe('totp');
      expect(decodeURIComponent(uri.pathname)).toBe('/Portcullis:enid');
      expect(uri.searchParams.get('secret')).toBe(b.secret);
      expect(uri.searchParams.get('issuer')).toBe('Portcullis');
      // RFC 6238 defaults (SHA-1, 6 digits, 30 s) where stated at all.
      expect(uri.searchParams.get('algorithm') ?? 'SHA1').toBe('SHA1');
      expect(uri.searchParams.get('digits') ?? '6').toBe('6');
      expect(uri.searchParams.get('period') ?? '30').toBe('30');

      expect(b.qr_svg.startsWith('<svg')).toBe(true);
      expect(b.qr_svg.trimEnd().endsWith('</svg>')).toBe(true);
      expect(b.qr_svg).not.toMatch(/<script|on\w+=/i);

      // Not on yet; a second setup replaces the pending secret with a fresh one.
      expect((await send(h, 'GET', `${PREFIX}/me`, { token })).json().mfa_enabled).toBe(false);
      const again = (await send(h, 'POST', `${PREFIX}/2fa/setup`, { token })).json();
      expect(again.secret).toMatch(/^[A-Z2-7]{32}$/);
      expect(again.secret).not.toBe(b.secret);
      // The first secret's code no longer enables (unless it happens to be valid for the new one too).
      const oldCode = await totpAt(b.secret, clock.ms());
      const newCodes = await Promise.all([-1, 0, 1].map((s) => totpAt(again.secret, clock.ms() + s * STEP)));
      if (!newCodes.includes(oldCode)) expectProblem(await send(h, 'POST', `${PREFIX}/2fa/enable`, { token, body: { code: oldCode } }), 422, 'invalid_input');
      expect((await send(h, 'GET', `${PREFIX}/me`, { token })).json().mfa_enabled).toBe(false);
    });

    it('enable: a wrong code is 422 (still off); the right code turns 2FA on and returns 10 distinct recovery codes, stored hashed', async () => {
      const u = await addUser(h, 'eli');
      const token = await login(h, 'eli');
      const { secret } = (await send(h, 'POST', `${PREFIX}/2fa/setup`, { token })).json();

      const bad = await send(h, 'POST', `${PREFIX}/2fa/enable`, { token, body: { code: await f.wrong(secret) } });
      const p = expectProblem(bad, 422, 'invalid_input');
      expect(p.errors).toEqual([{ field: 'code', message: expect.any(String) }]);
      expectProblem(await send(h, 'POST', `${PREFIX}/2fa/enable`, { token, body: {} }), 422, 'invalid_input');
      expectProblem(await send(h, 'POST', `${PREFIX}/2fa/enable`, { token, body: { code: 123456 } }), 422, 'invalid_input');
      expect((await send(h, 'GET', `${PREFIX}/me`, { token })).json().mfa_enabled).toBe(false);
      expect(await f.recoveryRows(u.id)).toHaveLength(0);

      const ok = await send(h, 'POST', `${PREFIX}/2fa/enable`, { token, body: { code: await f.code(secret) } });
      expect(ok.status, ok.text).toBe(200);
      const body = ok.json();
      expect(Object.keys(body)).toEqual(['recovery_codes']);
      const codes: string[] = body.recovery_codes;
      expect(codes).toHaveLength(10);
      expect(new Set(codes).size).toBe(10);
      for (const c of codes) expect(c).toMatch(/^[A-Z2-9]{4}(-[A-Z2-9]{4}){3}$/);
      expect((await send(h, 'GET', `${PREFIX}/me`, { token })).json().mfa_enabled).toBe(true);

      const rows = await f.recoveryRows(u.id);
      expect(rows).toHaveLength(10);
      for (const row of rows) {
        expect(row.used_at).toBeNull();
        for (const c of codes) {
          expect(row.hash).not.toContain(c);
          expect(row.hash).not.toContain(c.replace(/-/g, ''));
        }
      }
      expect(f.events('mfa_enabled').some((e) => e.user_id === u.id)).toBe(true);

      // On means on: no second enrollment over it.
      expectProblem(await send(h, 'POST', `${PREFIX}/2fa/setup`, { token }), 409, 'mfa_already_enabled');
      expectProblem(await send(h, 'POST', `${PREFIX}/2fa/enable`, { token, body: { code: await f.nextCode(secret) } }), 409, 'mfa_already_enabled');

      // And the next sign-in asks for the code.
      const next = await f.passwordLogin('eli');
      expect(next.json()).toEqual({ mfa_required: true, mfa_token: expect.any(String), expires_in: 300 });
    });

    it('setup and enable need a signed-in user: none, or an MFA token as bearer, is 401', async () => {
      await f.mfaUser('erin');
      const mfa = await f.mfaToken('erin');
      expectProblem(await send(h, 'POST', `${PREFIX}/2fa/setup`), 401, 'unauthenticated');
      const r = await send(h, 'POST', `${PREFIX}/2fa/setup`, { token: mfa });
      expect(r.status).toBe(401);
      expect(r.headers.get('www-authenticate')).toMatch(/^Bearer realm="portcullis", error="invalid_token"/);
      expect((await send(h, 'POST', `${PREFIX}/2fa/enable`, { token: mfa, body: { code: '123456' } })).status).toBe(401);
    });
  });

  describe('sign-in with 2FA', () => {
    it('login answers {mfa_required, mfa_token, expires_in: 300}; a TOTP code completes it with amr [pwd, otp]', async () => {
      const { id, secret } = await f.mfaUser('ada', ['admin']);
      const m0 = await f.metrics();

      const r = await f.passwordLogin('ada');
      expect(r.status).toBe(200);
      const step = r.json();
      expect(step).toEqual({ mfa_required: true, mfa_token: expect.any(String), expires_in: 300 });
      const claims = decodeJwt(step.mfa_token);
      expect(claims.exp! - claims.iat!).toBe(300);
      expect(claims.sub).toBe(id);
      expect(claims).not.toHaveProperty('amr');

      const v = await f.verify(step.mfa_token, await f.nextCode(secret));
      expect(v.status, v.text).toBe(200);
      const pair = v.json();
      expect(pair).toEqual({ access_token: expect.any(String), refresh_token: expect.any(String), token_type: 'Bearer', expires_in: 900 });
      const at = decodeJwt(pair.access_token);
      expect(at.amr).toEqual(['pwd', 'otp']);
      expect(at.sub).toBe(id);
      expect(at.username).toBe('ada');
      expect(at.roles).toEqual(['admin']);

      // An admin with the second factor passes the mfa: true route.
      const secure = await send(h, 'GET', '/secure/x?q=1', { token: pair.access_token });
      expect(secure.status, secure.text).toBe(200);
      const echoed = secure.json();
      expect(echoed.headers['x-auth-user']).toBe('ada');
      expect(echoed.headers.authorization).toBeUndefined();

      const sessions = (await send(h, 'GET', `${PREFIX}/sessions`, { token: pair.access_token })).json().sessions;
      expect(sessions.find((s: { current: boolean }) => s.current).amr).toEqual(['pwd', 'otp']);

      // A refreshed token keeps the factor.
      const refreshed = await send(h, 'POST', `${PREFIX}/refresh`, { body: { refresh_token: pair.refresh_token } });
      expect(refreshed.status).toBe(200);
      expect(decodeJwt(refreshed.json().access_token).amr).toEqual(['pwd', 'otp']);

      const m1 = await f.metrics();
      expect(
        sample(m1, 'portcullis_login_attempts_total', { result: 'mfa_required' }) - sample(m0, 'portcullis_login_attempts_total', { result: 'mfa_required' }),
      ).toBe(1);
      expect(sample(m1, 'portcullis_login_attempts_total', { result: 'success' }) - sample(m0, 'portcullis_login_attempts_total', { result: 'success' })).toBe(
        1,
      );
      expect(mfaCount(m1, 'success') - mfaCount(m0, 'success')).toBe(1);
      expect(f.events('login_success', 'ada').at(-1)).toMatchObject({ amr: ['pwd', 'otp'], user_id: id });
    });

    it('the MFA token is accepted only by /2fa/verify, and /2fa/verify accepts only an MFA token', async () => {
      const { secret } = await f.mfaUser('ben', ['admin']);
      const mfa = await f.mfaToken('ben');
      for (const path of [`${PREFIX}/me`, '/secure/x', '/app/x']) {
        const r = await send(h, 'GET', path, { token: mfa });
        expect(r.status, path).toBe(401);
        expect(r.headers.get('www-authenticate'), path).toMatch(/error="invalid_token"/);
      }
      expectProblem(await send(h, 'POST', `${PREFIX}/refresh`, { body: { refresh_token: mfa } }), 401, 'invalid_refresh_token');

      const pair = await f.fullLogin('ben', secret);
      const code = await f.nextCode(secret);
      for (const wrongKind of [pair.access_token, pair.refresh_token, 'not-a-token', '']) {
        expectProblem(await f.verify(wrongKind, code), 401, 'invalid_token');
      }
      expectProblem(await send(h, 'POST', `${PREFIX}/2fa/verify`, { body: { mfa_token: mfa } }), 422, 'invalid_input');
      // None of that spent the code or the MFA token.
      expect((await f.verify(mfa, code)).status).toBe(200);
    });

    it('an MFA token lives 5 minutes', async () => {
      const { secret } = await f.mfaUser('cleo');
      const early = await f.mfaToken('cleo');
      clock.advance(4 * MIN + 59 * SEC);
      expect((await f.verify(early, await f.code(secret))).status).toBe(200);

      const late = await f.mfaToken('cleo');
      clock.advance(5 * MIN + 1 * SEC);
      const code = await f.code(secret);
      expectProblem(await f.verify(late, code), 401, 'invalid_token');
      // The code itself was good (and is still unused): a fresh sign-in takes it.
      expect((await f.verify(await f.mfaToken('cleo'), code)).status).toBe(200);
    });

    it('a completed MFA token is spent: it cannot start a second session', async () => {
      const { secret } = await f.mfaUser('dora');
      const mfa = await f.mfaToken('dora');
      expect((await f.verify(mfa, await f.nextCode(secret))).status).toBe(200);
      const again = await f.verify(mfa, await f.nextCode(secret));
      expect(again.status, again.text).toBe(401);
    });

    it('a recovery code completes the sign-in once (counted as recovery_code); reusing it fails', async () => {
      const { id, recovery } = await f.mfaUser('remy', ['admin']);
      const m0 = await f.metrics();
      const ok = await f.verify(await f.mfaToken('remy'), recovery[3]);
      expect(ok.status, ok.text).toBe(200);
      expect(decodeJwt(ok.json().access_token).amr).toEqual(['pwd', 'otp']);
      expect((await send(h, 'GET', '/secure/x', { token: ok.json().access_token })).status).toBe(200);
      const m1 = await f.metrics();
      expect(mfaCount(m1, 'recovery_code') - mfaCount(m0, 'recovery_code')).toBe(1);
      expect(mfaCount(m1, 'success') - mfaCount(m0, 'success')).toBe(0);
      const rows = await f.recoveryRows(id);
      expect(rows.filter((r) => r.used_at !== null)).toHaveLength(1);
      expect(Number(rows.find((r) => r.used_at !== null)!.used_at)).toBe(clock.ms());

      const reuse = await f.verify(await f.mfaToken('remy'), recovery[3]);
      expectProblem(reuse, 401, 'invalid_mfa_code');
      const m2 = await f.metrics();
      expect(mfaCount(m2, 'recovery_code') - mfaCount(m1, 'recovery_code')).toBe(0);
      expect(mfaCount(m2, 'invalid') - mfaCount(m1, 'invalid')).toBe(1);

      // Typed the way people type: lower case, no dashes.
      const typed = await f.verify(await f.mfaToken('remy'), recovery[7].toLowerCase().replace(/-/g, ''));
      expect(typed.status, typed.text).toBe(200);
      expect((await f.recoveryRows(id)).filter((r) => r.used_at === null)).toHaveLength(8);
    });
  });

  describe('replay prevention', () => {
    it('a time step is accepted once per user: replays are refused (401), logged as mfa_replay and counted as replay', async () => {
      const { id, secret } = await f.mfaUser('rex');
      // The code that turned 2FA on cannot sign in: its step is used.
      const enableCode = await f.code(secret);
      const m0 = await f.metrics();
      expectProblem(await f.verify(await f.mfaToken('rex'), enableCode), 401, 'invalid_mfa_code');

      const code = await f.nextCode(secret);
      expect((await f.verify(await f.mfaToken('rex'), code)).status).toBe(200);
      expectProblem(await f.verify(await f.mfaToken('rex'), code), 401, 'invalid_mfa_code');
      // One step later the old code is still inside the skew window, and still spent.
      clock.advance(STEP);
      expect(await f.code(secret)).not.toBe(code);
      expectProblem(await f.verify(await f.mfaToken('rex'), code), 401, 'invalid_mfa_code');

      const m1 = await f.metrics();
      expect(mfaCount(m1, 'replay') - mfaCount(m0, 'replay')).toBe(3);
      const logged = f.events('mfa_replay', 'rex');
      expect(logged).toHaveLength(3);
      for (const l of logged) {
        expect(l).toMatchObject({ level: 'warn', user_id: id });
        expect(JSON.stringify(l)).not.toContain(code);
      }

      // The current step is fresh.
      expect((await f.verify(await f.mfaToken('rex'), await f.code(secret))).status).toBe(200);
    });

    it('a replay is counted once, as replay (not also as invalid)', async () => {
      const { secret } = await f.mfaUser('ray');
      const code = await f.nextCode(secret);
      expect((await f.verify(await f.mfaToken('ray'), code)).status).toBe(200);
      const m0 = await f.metrics();
      expect((await f.verify(await f.mfaToken('ray'), code)).status).toBe(401);
      const m1 = await f.metrics();
      expect(mfaCount(m1, 'replay') - mfaCount(m0, 'replay')).toBe(1);
      expect(mfaCount(m1, 'invalid') - mfaCount(m0, 'invalid')).toBe(0);
    });
  });

  describe('lockout', () => {
    it('5 wrong codes lock the username: 423 with Retry-After on login and on /2fa/verify; lockouts_total and account_locked', async () => {
      const { secret } = await f.mfaUser('lou');
      const m0 = await f.metrics();
      const mfa = await f.mfaToken('lou');
      for (let i = 0; i < 5; i++) expectProblem(await f.verify(mfa, await f.wrong(secret)), 401, 'invalid_mfa_code');

      const m1 = await f.metrics();
      expect(sample(m1, 'portcullis_lockouts_total') - sample(m0, 'portcullis_lockouts_total')).toBe(1);
      expect(mfaCount(m1, 'invalid') - mfaCount(m0, 'invalid')).toBe(5);
      expect(f.events('mfa_failure', 'lou')).toHaveLength(5);
      expect(f.events('account_locked', 'lou')).toEqual([expect.objectContaining({ level: 'warn', failures: 5 })]);

      for (const password of [GOOD_PASSWORD, WRONG_PASSWORD]) {
        const r = await f.passwordLogin('lou', password);
        expectProblem(r, 423, 'account_locked');
        expect(r.headers.get('retry-after')).toBe('900');
      }
      const v = await f.verify(mfa, await f.nextCode(secret));
      expectProblem(v, 423, 'account_locked');
      expect(Number(v.headers.get('retry-after'))).toBe(870);
      const m2 = await f.metrics();
      expect(sample(m2, 'portcullis_login_attempts_total', { result: 'locked' }) - sample(m1, 'portcullis_login_attempts_total', { result: 'locked' })).toBe(2);
      expect(sample(m2, 'portcullis_lockouts_total')).toBe(sample(m1, 'portcullis_lockouts_total'));
    });

    it('wrong codes add up over several MFA tokens: a correct password in between does not reset them', async () => {
      const { secret } = await f.mfaUser('lars');
      const first = await f.mfaToken('lars');
      for (let i = 0; i < 3; i++) expect((await f.verify(first, await f.wrong(secret))).status).toBe(401);
      const second = await f.mfaToken('lars');
      for (let i = 0; i < 2; i++) expect((await f.verify(second, await f.wrong(secret))).status).toBe(401);
      const r = await f.passwordLogin('lars');
      expectProblem(r, 423, 'account_locked');
      expect(r.headers.get('retry-after')).toBe('900');
    });

    it('unknown usernames lock like known ones after 5 wrong passwords: same 423, same Retry-After', async () => {
      await addUser(h, 'kim');
      const m0 = await f.metrics();
      for (const name of ['kim', 'no-such-user-9']) {
        for (let i = 0; i < 5; i++) expectProblem(await f.passwordLogin(name, WRONG_PASSWORD), 401, 'invalid_credentials');
      }
      const known = await f.passwordLogin('kim');
      const unknown = await f.passwordLogin('no-such-user-9');
      for (const r of [known, unknown]) {
        expectProblem(r, 423, 'account_locked');
        expect(r.headers.get('retry-after')).toBe('900');
      }
      expect(unknown.text).toBe(known.text);
      const m1 = await f.metrics();
      expect(sample(m1, 'portcullis_lockouts_total') - sample(m0, 'portcullis_lockouts_total')).toBe(2);
      expect(f.events('account_locked', 'kim')).toHaveLength(1);
      expect(f.events('account_locked', 'no-such-user-9')).toHaveLength(1);
      // Case does not dodge the lock.
      expectProblem(await f.passwordLogin('No-Such-User-9', WRONG_PASSWORD), 423, 'account_locked');
    });

    it('a success resets the count', async () => {
      const { secret } = await f.mfaUser('liv');
      const m0 = await f.metrics();
      const first = await f.mfaToken('liv');
      for (let i = 0; i < 4; i++) expect((await f.verify(first, await f.wrong(secret))).status).toBe(401);
      expect((await f.verify(first, await f.nextCode(secret))).status).toBe(200);
      const second = await f.mfaToken('liv');
      for (let i = 0; i < 4; i++) expect((await f.verify(second, await f.wrong(secret))).status).toBe(401);
      expect((await f.verify(second, await f.nextCode(secret))).status).toBe(200);

      await addUser(h, 'lee');
      for (let i = 0; i < 4; i++) expect((await f.passwordLogin('lee', WRONG_PASSWORD)).status).toBe(401);
      expect((await f.passwordLogin('lee')).status).toBe(200);
      for (let i = 0; i < 4; i++) expect((await f.passwordLogin('lee', WRONG_PASSWORD)).status).toBe(401);
      expect((await f.passwordLogin('lee')).status).toBe(200);
      expect((await f.passwordLogin('liv')).status).toBe(200);
      const m1 = await f.metrics();
      expect(sample(m1, 'portcullis_lockouts_total')).toBe(sample(m0, 'portcullis_lockouts_total'));
    });
  });

  describe('disable and reset', () => {
    it('disable needs the password and a current code (either wrong: 403); afterwards sign-in asks for no code', async () => {
      const { id, secret } = await f.mfaUser('dina');
      const { access_token } = await f.fullLogin('dina', secret);
      const disable = (body: unknown) => send(h, 'POST', `${PREFIX}/2fa/disable`, { token: access_token, body });

      expectProblem(await disable({ password: WRONG_PASSWORD, code: await f.nextCode(secret) }), 403, 'wrong_password');
      expectProblem(await disable({ password: GOOD_PASSWORD, code: await f.wrong(secret) }), 403, 'wrong_password');
      expectProblem(await disable({ password: GOOD_PASSWORD }), 422, 'invalid_input');
      expectProblem(await send(h, 'POST', `${PREFIX}/2fa/disable`, { body: { password: GOOD_PASSWORD, code: await f.code(secret) } }), 401, 'unauthenticated');
      expect((await send(h, 'GET', `${PREFIX}/me`, { token: access_token })).json().mfa_enabled).toBe(true);

      const ok = await disable({ password: GOOD_PASSWORD, code: await f.code(secret) });
      expect(ok.status, ok.text).toBe(204);
      expect((await send(h, 'GET', `${PREFIX}/me`, { token: access_token })).json().mfa_enabled).toBe(false);
      const row = await f.userRow('dina');
      expect(row.totp_secret).toBeNull();
      expect(Number(row.mfa_enabled)).toBe(0);
      expect(await f.recoveryRows(id)).toHaveLength(0);

      const plain = await f.passwordLogin('dina');
      expect(plain.status).toBe(200);
      expect(plain.json()).toMatchObject({ token_type: 'Bearer' });
      expect(decodeJwt(plain.json().access_token).amr).toEqual(['pwd']);
      expectProblem(await disable({ password: GOOD_PASSWORD, code: await f.nextCode(secret) }), 409, 'mfa_not_set_up');
    });

    it('`portcullis user reset-2fa NAME` turns 2FA off and removes the recovery codes', { timeout: 120_000 }, async () => {
      const { id, secret } = await f.mfaUser('ross');
      expect(await f.recoveryRows(id)).toHaveLength(10);
      const cfg = join(h.dir, 'gateway.yaml');
      const r = await runCliInProcess(['user', 'reset-2fa', 'ross', '--config', cfg]);
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      expect(r.stdout).toBe('two-factor authentication of ross reset (10 recovery codes removed)\n');

      const row = await f.userRow('ross');
      expect(row.totp_secret).toBeNull();
      expect(Number(row.mfa_enabled)).toBe(0);
      expect(await f.recoveryRows(id)).toHaveLength(0);
      const plain = await f.passwordLogin('ross');
      expect(plain.status).toBe(200);
      expect(decodeJwt(plain.json().access_token).amr).toEqual(['pwd']);
      // They can enroll a new authenticator (at a step not used yet).
      clock.advance(STEP);
      const again = await f.enroll({ token: plain.json().access_token });
      expect(again.secret).not.toBe(secret);

      const missing = await runCliInProcess(['user', 'reset-2fa', 'nobody-at-all', '--config', cfg]);
      expect(missing.code).toBe(2);
      expect(missing.stderr).toBe('portcullis: no user "nobody-at-all"\n');
    });
  });

  describe('per-route MFA (mfa: true)', () => {
    it('API: a token without otp is 403 mfa_required on the mfa route (the same token passes the admin route)', async () => {
      await addUser(h, 'rita', ['admin']);
      const token = await login(h, 'rita');
      const m0 = await f.metrics();
      const r = await send(h, 'GET', '/secure/x', { token });
      expectProblem(r, 403, 'mfa_required');
      expect(r.headers.get('location')).toBeNull();
      expect((await send(h, 'GET', '/admin/x', { token })).status).toBe(200);
      const m1 = await f.metrics();
      expect(
        sample(m1, 'portcullis_auth_decisions_total', { route: 'secure', decision: 'mfa_required' }) -
          sample(m0, 'portcullis_auth_decisions_total', { route: 'secure', decision: 'mfa_required' }),
      ).toBe(1);
    });

    it('browser: a user without 2FA is sent to the setup page; with 2FA but a password-only session, to sign in again', async () => {
      await addUser(h, 'bruno', ['admin']);
      const { jar } = await f.formLogin('bruno', '/');
      expect(Object.keys(jar).sort()).toEqual(['portcullis_at', 'portcullis_rt']);

      const target = '/secure/x?a=1&b=two';
      const toSetup = await send(h, 'GET', target, { jar, headers: { accept: HTML } });
      expect(toSetup.status).toBe(302);
      expect(toSetup.headers.get('location')).toBe(`${PREFIX}/2fa/setup?rd=${encodeURIComponent(target)}`);
      // An API client with the same cookies gets the problem, not a redirect.
      expectProblem(await send(h, 'GET', target, { jar, headers: { accept: 'application/json' } }), 403, 'mfa_required');

      // Turn 2FA on from this (password-only) browser session.
      await f.enroll({ jar });
      const toLogin = await send(h, 'GET', target, { jar, headers: { accept: HTML } });
      expect(toLogin.status).toBe(302);
      expect(toLogin.headers.get('location')).toBe(`${PREFIX}/login?rd=${encodeURIComponent(target)}`);
    });

    it('browser sign-in with 2FA: password form → 303 to the code page with the portcullis_mfa cookie → code form → session', async () => {
      const { secret } = await f.mfaUser('bea', ['admin']);
      const rd = '/secure/x?y=2';
      const { res, jar: afterPassword } = await f.formLogin('bea', rd);
      expect(res.headers.get('location')).toBe(`${PREFIX}/2fa?rd=${encodeURIComponent(rd)}`);
      expect(res.cookies.map((c) => c.name)).toEqual(['portcullis_mfa']);
      const mfaCookie = res.cookies[0];
      expect(mfaCookie.attrs).toMatchObject({ path: PREFIX, httponly: true, samesite: 'Lax', 'max-age': '300' });
      expect('domain' in mfaCookie.attrs).toBe(false);
      expect(decodeJwt(mfaCookie.value).username).toBe('bea');

      const page = await send(h, 'GET', res.headers.get('location')!, { jar: afterPassword, headers: { accept: HTML } });
      expect(page.status).toBe(200);
      expect(page.headers.get('content-type')).toMatch(/^text\/html/);
      expect(page.text).toMatch(/<label for="code">[^<]+<\/label>/);
      expect(page.text).toMatch(/<input id="code" name="code"[^>]*autocomplete="one-time-code"/);
      expect(page.text).toContain(`<form method="post" action="${PREFIX}/2fa/verify"`);
      expect(page.text).toContain(`<input type="hidden" name="rd" value="${rd}">`);
      expect(page.text).not.toMatch(/<script/i);
      const csp = page.headers.get('content-security-policy') ?? '';
      expect(csp).toContain("default-src 'none'");
      expect(csp).not.toContain('unsafe-inline');
      // Without the cookie the code page sends the browser back to the password step.
      const noCookie = await send(h, 'GET', `${PREFIX}/2fa?rd=${encodeURIComponent(rd)}`, { headers: { accept: HTML } });
      expect(noCookie.status).toBe(303);
      expect(noCookie.headers.get('location')).toBe(`${PREFIX}/login?rd=${encodeURIComponent(rd)}`);

      // A wrong code: the form again with an error, no session.
      const bad = await send(h, 'POST', `${PREFIX}/2fa/verify`, { jar: afterPassword, form: { code: await f.wrong(secret), rd } });
      expect(bad.status).toBe(401);
      expect(bad.text).toContain('role="alert"');
      expect(bad.text).toContain('name="code"');
      expect(bad.cookies.filter((c) => c.name === 'portcullis_at')).toEqual([]);

      const ok = await send(h, 'POST', `${PREFIX}/2fa/verify`, { jar: afterPassword, form: { code: await f.nextCode(secret), rd } });
      expect(ok.status, ok.text).toBe(303);
      expect(ok.headers.get('location')).toBe(rd);
      const byName = Object.fromEntries(ok.cookies.map((c) => [c.name, c]));
      expect(Object.keys(byName).sort()).toEqual(['portcullis_at', 'portcullis_mfa', 'portcullis_rt']);
      expect(byName.portcullis_mfa.attrs).toMatchObject({ path: PREFIX, 'max-age': '0' });
      expect(byName.portcullis_at.attrs).toMatchObject({ path: '/', httponly: true, samesite: 'Lax' });
      expect(decodeJwt(byName.portcullis_at.value).amr).toEqual(['pwd', 'otp']);

      const session = jarWith(afterPassword, ok.cookies);
      expect(Object.keys(session).sort()).toEqual(['portcullis_at', 'portcullis_rt']);
      const secure = await send(h, 'GET', rd, { jar: session, headers: { accept: 'application/json' } });
      expect(secure.status, secure.text).toBe(200);
      expect(secure.json().headers['x-auth-user']).toBe('bea');
    });

    it('setup pages: GET /2fa/setup offers a form; posting it shows the QR code and key; the enable form turns 2FA on', async () => {
      await addUser(h, 'cyd', ['admin']);
      const rd = '/secure/x';
      const anonymous = await send(h, 'GET', `${PREFIX}/2fa/setup?rd=${encodeURIComponent(rd)}`, { headers: { accept: HTML } });
      expect(anonymous.status).toBe(303);
      expect(anonymous.headers.get('location')).toBe(`${PREFIX}/login?rd=${encodeURIComponent(`${PREFIX}/2fa/setup?rd=${encodeURIComponent(rd)}`)}`);

      const { jar } = await f.formLogin('cyd', '/');
      const page = await send(h, 'GET', `${PREFIX}/2fa/setup?rd=${encodeURIComponent(rd)}`, { jar, headers: { accept: HTML } });
      expect(page.status).toBe(200);
      expect(page.text).toContain(`<form method="post" action="${PREFIX}/2fa/setup">`);
      expect(page.text).toContain(`<input type="hidden" name="rd" value="${rd}">`);
      expect(page.text).not.toMatch(/<script/i);

      // A cross-site form post is refused.
      const csrf = await send(h, 'POST', `${PREFIX}/2fa/setup`, { jar, form: { rd }, headers: { origin: 'https://evil.example', accept: HTML } });
      expect(csrf.status).toBe(403);
      expect(csrf.text).not.toContain('<svg');

      const qr = await send(h, 'POST', `${PREFIX}/2fa/setup`, { jar, form: { rd }, headers: { accept: HTML } });
      expect(qr.status, qr.text).toBe(200);
      expect(qr.headers.get('content-type')).toMatch(/^text\/html/);
      expect(qr.text).toMatch(/<div class="qr"[^>]*><svg /);
      expect(qr.text).not.toMatch(/<script/i);
      const secret = /<code id="totp-secret">([A-Z2-7]+)<\/code>/.exec(qr.text)?.[1];
      expect(secret).toMatch(/^[A-Z2-7]{32}$/);
      expect(qr.text).toContain(`<form method="post" action="${PREFIX}/2fa/enable">`);
      expect(qr.text).toMatch(/<label for="code">[^<]+<\/label>/);

      const enabled = await send(h, 'POST', `${PREFIX}/2fa/enable`, { jar, form: { code: await f.code(secret!), rd }, headers: { accept: HTML } });
      expect(enabled.status, enabled.text).toBe(200);
      const codes = [...enabled.text.matchAll(/<li><code>([A-Z0-9-]+)<\/code><\/li>/g)].map((m) => m[1]);
      expect(codes).toHaveLength(10);
      expect(new Set(codes).size).toBe(10);
      expect(enabled.text).toContain(`href="${PREFIX}/login?rd=${encodeURIComponent(rd)}"`);
      expect((await send(h, 'GET', `${PREFIX}/me`, { jar })).json().mfa_enabled).toBe(true);
      // The page's key is the real one: it signs in.
      expect((await f.verify(await f.mfaToken('cyd'), await f.nextCode(secret!))).status).toBe(200);
    });
  });

  describe('secrets at rest', () => {
    it('embedded mode generated the encryption key into data_dir (mode 0600) with a warning', () => {
      const file = join(h.dir, 'encryption.key');
      expect(existsSync(file)).toBe(true);
      expect(statSync(file).mode & 0o777).toBe(0o600);
      expect(Buffer.from(readFileSync(file, 'utf8').trim(), 'base64')).toHaveLength(32);
      const warning = h.logs.find((l) => l.level === 'warn' && typeof l.msg === 'string' && l.msg.includes(file));
      expect(warning, JSON.stringify(h.logs.filter((l) => l.level === 'warn'))).toBeDefined();
      expect(warning!.msg).toMatch(/PORTCULLIS_ENCRYPTION_KEY/);
    });

    it('the database holds the TOTP secret only as v1.<kid>.… AES-256-GCM ciphertext, and recovery codes only hashed', async () => {
      const { id, secret, recovery } = await f.mfaUser('sam');
      const row = await f.userRow('sam');
      const key = Buffer.from(readFileSync(join(h.dir, 'encryption.key'), 'utf8').trim(), 'base64');
      expect(row.totp_secret).toMatch(/^v1\.[0-9a-f]{16}\.[A-Za-z0-9_-]{16}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{22}$/);
      expect(row.totp_secret.split('.')[1]).toBe(kidOf(key));
      const rowText = JSON.stringify(row);
      expect(rowText).not.toContain(secret);
      expect(rowText.toLowerCase()).not.toContain(secret.toLowerCase());
      // It is that secret, under that key, bound to this user.
      expect(new SecretBox(key.toString('base64')).decrypt(row.totp_secret, 'totp-secret', id).plaintext).toBe(secret);

      const dbFile = join(h.dir, 'test.db');
      const raw = [dbFile, `${dbFile}-wal`]
        .filter(existsSync)
        .map((p) => readFileSync(p).toString('latin1'))
        .join('');
      expect(raw).toContain('sam@example.com'); // the raw read sees this user's row
      expect(raw).toContain(row.totp_secret.split('.')[3]);
      expect(raw).not.toContain(secret);
      expect(raw).not.toContain(secret.toLowerCase());
      for (const c of recovery) {
        expect(raw).not.toContain(c);
        expect(raw).not.toContain(c.replace(/-/g, ''));
      }
      const rows = await f.recoveryRows(id);
      expect(rows).toHaveLength(10);
      expect(rows.every((r) => !recovery.includes(r.hash))).toBe(true);
    });
  });
});

// ---------------------------------------------------------------------------------------------
// A harness with a lockout too high to interfere: the per-token attempt limit and concurrency.
// ---------------------------------------------------------------------------------------------

describe('2FA: MFA token attempt limit and concurrent codes', () => {
  let h: Harness;
  let f: Flows;
  const clock = fakeClock(T0);

  beforeAll(async () => {
    h = await startHarness({ now: clock.now, extraYaml: authYaml('{ max_failures: 100000, window: 15m, duration: 15m }') });
    f = new Flows(h, clock);
  });
  afterAll(async () => {
    await h?.close();
  });

  it('an MFA token takes at most 5 codes: the sixth is 401 even when right', async () => {
    const { secret } = await f.mfaUser('sixten');
    const mfa = await f.mfaToken('sixten');
    const right = await f.nextCode(secret);
    for (let i = 0; i < 5; i++) expectProblem(await f.verify(mfa, await f.wrong(secret)), 401, 'invalid_mfa_code');
    const sixth = await f.verify(mfa, right);
    expectProblem(sixth, 401, 'invalid_token');
    // The code was right and is still unused: a new sign-in takes it.
    expect((await f.verify(await f.mfaToken('sixten'), right)).status).toBe(200);
  });

  it('the same code sent 10 times at once on 10 MFA tokens passes exactly once', async () => {
    const { secret } = await f.mfaUser('conny');
    const tokens: string[] = [];
    for (let i = 0; i < 10; i++) tokens.push(await f.mfaToken('conny'));
    const code = await f.nextCode(secret);
    const m0 = await f.metrics();
    const replies = await Promise.all(tokens.map((t) => f.verify(t, code)));
    const statuses = replies.map((r) => r.status).sort();
    expect(statuses).toEqual([200, 401, 401, 401, 401, 401, 401, 401, 401, 401]);
    for (const r of replies.filter((x) => x.status === 401)) expect(r.json().code).toBe('invalid_mfa_code');
    const winner = replies.find((r) => r.status === 200)!;
    expect(decodeJwt(winner.json().access_token).amr).toEqual(['pwd', 'otp']);
    const m1 = await f.metrics();
    expect(mfaCount(m1, 'success') - mfaCount(m0, 'success')).toBe(1);
    expect(mfaCount(m1, 'replay') - mfaCount(m0, 'replay')).toBe(9);
    expect(f.events('mfa_replay', 'conny')).toHaveLength(9);
  });

  it('concurrent verifies with one code on one MFA token also pass at most once', async () => {
    const { secret } = await f.mfaUser('cora');
    const mfa = await f.mfaToken('cora');
    const code = await f.nextCode(secret);
    const replies = await Promise.all(Array.from({ length: 5 }, () => f.verify(mfa, code)));
    expect(replies.filter((r) => r.status === 200)).toHaveLength(1);
  });
});

// ---------------------------------------------------------------------------------------------
// Encryption keys: rotation across restarts on one database, and production refusing to start.
// ---------------------------------------------------------------------------------------------

describe('2FA secrets: encryption key rotation and production keys', () => {
  const clock = fakeClock(T0);
  let dir: string;
  let dbUrl: string;
  const keyA = randomBytes(32);
  const keyB = randomBytes(32);
  let secret: string;
  let userId: string;

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'portcullis-rotate-'));
    dbUrl = `sqlite:${join(dir, 'shared.db')}`;
  });
  afterAll(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  /** Runs fn against a harness on the shared database with the given environment, then stops it. */
  async function withHarness(env: NodeJS.ProcessEnv, fn: (f: Flows) => Promise<void>): Promise<void> {
    const h = await startHarness({ now: clock.now, env, databaseUrl: dbUrl, extraYaml: authYaml() });
    try {
      await fn(new Flows(h, clock));
    } finally {
      await h.close();
    }
  }

  const storedSecret = async (f: Flows) => (await f.userRow('rota')).totp_secret as string;

  it('enrolls under key A (no key file generated when the key comes from the environment)', async () => {
    await withHarness({ PORTCULLIS_ENCRYPTION_KEY: keyA.toString('base64') }, async (f) => {
      const u = await f.mfaUser('rota', ['admin']);
      secret = u.secret;
      userId = u.id;
      expect((await storedSecret(f)).split('.')[1]).toBe(kidOf(keyA));
      expect(existsSync(join(f.h.dir, 'encryption.key'))).toBe(false);
      expect(f.h.logs.some((l) => typeof l.msg === 'string' && l.msg.includes('encryption key'))).toBe(false);
    });
  });

  it('with key B alone the A-encrypted secret cannot be read: verification fails closed and the row is untouched', async () => {
    expect(secret).toBeDefined();
    await withHarness({ PORTCULLIS_ENCRYPTION_KEY: keyB.toString('base64') }, async (f) => {
      const before = await storedSecret(f);
      const r = await f.verify(await f.mfaToken('rota'), await f.nextCode(secret));
      expect(r.status).not.toBe(200);
      expect(r.status).toBeGreaterThanOrEqual(400);
      expect(r.text).not.toContain('access_token');
      expect(await storedSecret(f)).toBe(before);
    });
  });

  it('with B active and A previous, verification works and re-encrypts the secret under B', async () => {
    await withHarness({ PORTCULLIS_ENCRYPTION_KEY: keyB.toString('base64'), PORTCULLIS_ENCRYPTION_KEYS_PREVIOUS: keyA.toString('base64') }, async (f) => {
      const before = await storedSecret(f);
      expect(before.split('.')[1]).toBe(kidOf(keyA));
      const r = await f.verify(await f.mfaToken('rota'), await f.nextCode(secret));
      expect(r.status, r.text).toBe(200);
      expect(decodeJwt(r.json().access_token).amr).toEqual(['pwd', 'otp']);
      const after = await storedSecret(f);
      expect(after.split('.')[1]).toBe(kidOf(keyB));
      expect(after).not.toBe(before);
      expect(new SecretBox(keyB.toString('base64')).decrypt(after, 'totp-secret', userId).plaintext).toBe(secret);
    });
  });

  it('once re-encrypted, key B alone is enough', async () => {
    await withHarness({ PORTCULLIS_ENCRYPTION_KEY: keyB.toString('base64') }, async (f) => {
      const r = await f.verify(await f.mfaToken('rota'), await f.nextCode(secret));
      expect(r.status, r.text).toBe(200);
    });
  });

  it('NODE_ENV=production without PORTCULLIS_ENCRYPTION_KEY: createApp refuses (invalid_config) naming it alone, and writes no key file', async () => {
    const prodDir = mkdtempSync(join(tmpdir(), 'portcullis-prod-'));
    try {
      const jwk = await generateSigningJwk();
      const yaml = `listen: 127.0.0.1:0\nadmin: { listen: 127.0.0.1:0 }\npublic_url: https://gw.example.com\ndata_dir: ${prodDir}\nstorage: { database_url: "sqlite:${join(prodDir, 'prod.db')}" }\n`;
      const env = { NODE_ENV: 'production', PORTCULLIS_SIGNING_KEYS: JSON.stringify({ keys: [jwk] }) };
      const config = parseConfig(yaml, join(prodDir, 'gateway.yaml'), env);
      const lines: string[] = [];
      const logger = createLogger(
        'info',
        new Writable({
          write: (c, _e, cb) => {
            lines.push(String(c));
            cb();
          },
        }),
      );
      let err: any;
      try {
        const app = await createApp({ config, env, logger, bootstrapAdmin: false });
        await app.stop(100);
      } catch (e) {
        err = e;
      }
      expect(err, 'createApp should refuse').toBeDefined();
      expect(err.code).toBe('invalid_config');
      expect(err.message).toMatch(/PORTCULLIS_ENCRYPTION_KEY/);
      expect(err.message).not.toMatch(/public_url|signing keys/);
      expect(existsSync(join(prodDir, 'encryption.key'))).toBe(false);
      expect(existsSync(join(prodDir, 'signing-keys.json'))).toBe(false);
    } finally {
      rmSync(prodDir, { recursive: true, force: true });
    }
  });

  it('NODE_ENV=production with both keys starts and generates no key file', async () => {
    const jwk = await generateSigningJwk();
    const h = await startHarness({
      now: clock.now,
      // Production needs a public_url: the token issuer every replica shares.
      extraYaml: `${authYaml()}public_url: http://gw.mfa.test\n`,
      env: { NODE_ENV: 'production', PORTCULLIS_SIGNING_KEYS: JSON.stringify({ keys: [jwk] }), PORTCULLIS_ENCRYPTION_KEY: keyA.toString('hex') },
    });
    try {
      expect(existsSync(join(h.dir, 'encryption.key'))).toBe(false);
      const f = new Flows(h, clock);
      const u = await f.mfaUser('prod-user');
      expect((await f.userRow('prod-user')).totp_secret.split('.')[1]).toBe(kidOf(keyA));
      expect((await f.verify(await f.mfaToken('prod-user'), await f.nextCode(u.secret))).status).toBe(200);
    } finally {
      await h.close();
    }
  });
});
