/**
 * End-to-end, issue 8 parts 6 and 7 (security review findings), over real HTTP against a real
 * gateway, echo upstream and SQLite database:
 *
 * - part 6, open redirect after sign-in: `rd=/.//evil.example/x` used to pass the `rd` check and
 *   come out, once normalized, as `Location: //evil.example/x` — through the login form, the
 *   2FA form and the 2FA setup page's Continue link. Every `Location` and `href` built from `rd`
 *   must be a same-origin path that is not protocol-relative (SPEC §6).
 * - part 7, password confirmations were not throttled: wrong `current_password` on
 *   `POST /password` and wrong password/code on `POST /2fa/disable` must count toward the
 *   username lockout, and a locked username gets 423 with Retry-After there too (SPEC §4).
 *
 * The harness runs on an injected clock (TOTP steps are taken by moving it, never by sleeping).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  GOOD_PASSWORD,
  addUser,
  fakeClock,
  login,
  totpAt,
  wrongTotp,
  type FakeClock,
  type Harness,
  unescapeHtml,
  toReply,
  type Reply,
} from './support/helpers.js';
import { startHarness } from './support/helpers.js';

const SEC = 1000;
const MIN = 60 * SEC;
const STEP = 30 * SEC;
/** 10 s into a 30 s TOTP step. */
const T0 = Date.UTC(2026, 1, 2, 9, 0, 10);
const PREFIX = '/api/auth';
const FORM = 'application/x-www-form-urlencoded';
const HTML = 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8';
const WRONG_PASSWORD = 'definitely not the password 11';
const NEW_PASSWORD = 'violet quasar parchment tundra 9182';

// Per-IP rate limits raised (they are not under test); the username lockout at its defaults.
const AUTH_YAML = `
auth:
  allowed_origins: [https://good]
  login_rate_limit: { requests: 100000, per: 1m }
  api_rate_limit: { requests: 100000, per: 1m }
  lockout: { max_failures: 5, window: 15m, duration: 15m }
`;

/** The protocol-relative escape of the review, and the other spellings of the same class. */
const ESCAPES = [
  '/.//evil.example/x',
  '/..//evil.example/x',
  '/a/..//evil.example/x',
  '/././/evil.example/x',
  '/%2e//evil.example/x',
  '/%2e%2e//evil.example/x',
  '/.%2f/evil.example/x',
  '/a/%2e%2e%2f%2fevil.example/x',
  '/./\\evil.example/x',
  '/.\t//evil.example/x',
  '/%2F%2Fevil.example/x',
  'https:evil.example/x',
  'https:/\\evil.example/x',
];

type Jar = Record<string, string>;
function jarWith(jar: Jar, setCookies: string[]): Jar {
  const out = { ...jar };
  for (const raw of setCookies) {
    const [pair, ...attrs] = raw.split(';');
    const eq = pair.indexOf('=');
    const name = pair.slice(0, eq).trim();
    if (attrs.some((a) => a.trim().toLowerCase() === 'max-age=0')) delete out[name];
    else out[name] = pair.slice(eq + 1).trim();
  }
  return out;
}

async function send(
  h: Harness,
  method: string,
  path: string,
  o: { token?: string; body?: unknown; form?: Record<string, string>; jar?: Jar; headers?: Record<string, string> } = {},
): Promise<Reply> {
  const headers: Record<string, string> = { ...(o.headers ?? {}) };
  if (o.token !== undefined) headers.authorization = `Bearer ${o.token}`;
  if (o.jar && Object.keys(o.jar).length)
    headers.cookie = Object.entries(o.jar)
      .map(([k, v]) => `${k}=${v}`)
      .join('; ');
  let body: string | undefined;
  if (o.form) {
    body = new URLSearchParams(o.form).toString();
    headers['content-type'] = FORM;
    headers.origin ??= h.url;
    headers.accept ??= HTML;
  } else if (o.body !== undefined) {
    body = JSON.stringify(o.body);
    headers['content-type'] = 'application/json';
  }
  return toReply(await fetch(`${h.url}${path}`, { method, headers, body, redirect: 'manual' }));
}

function hiddenRd(html: string): string {
  const m = /<input type="hidden" name="rd" value="([^"]*)">/.exec(html);
  if (!m) throw new Error(`no hidden rd field in:\n${html}`);
  return unescapeHtml(m[1]);
}

function continueHref(html: string): string {
  const m = /<a href="([^"]*)">Continue<\/a>/.exec(html);
  if (!m) throw new Error(`no Continue link in:\n${html}`);
  return unescapeHtml(m[1]);
}

/**
 * Asserts that a Location / href, read the way a browser reads it (tabs and newlines
 * stripped, `\` as `/`), stays on the gateway and is not protocol-relative.
 */
function expectStaysHome(h: Harness, target: string | null, label: string) {
  expect(target, label).not.toBeNull();
  const t = target!;
  const asBrowser = t.replace(/[\t\n\r]/g, '').replace(/\\/g, '/');
  expect(asBrowser.startsWith('//'), `${label}: ${t}`).toBe(false);
  expect(t.startsWith('/'), `${label}: ${t}`).toBe(true);
  expect(new URL(asBrowser, h.url).origin, `${label}: ${t}`).toBe(new URL(h.url).origin);
  expect(new URL(asBrowser, h.url).pathname.startsWith('//'), `${label}: ${t}`).toBe(false);
}

function expectLocked(r: Reply, label: string) {
  expect(r.status, `${label}: ${r.text}`).toBe(423);
  expect(r.json().code, label).toBe('account_locked');
  const retry = Number(r.headers.get('retry-after'));
  expect(retry, label).toBeGreaterThan(0);
  expect(retry, label).toBeLessThanOrEqual(900);
}

describe('issue 8: open redirect after sign-in and unthrottled password confirmations', () => {
  let h: Harness;
  let clock: FakeClock;

  beforeAll(async () => {
    clock = fakeClock(T0);
    h = await startHarness({ now: clock.now, extraYaml: AUTH_YAML });
  });
  afterAll(async () => {
    await h?.close();
  });

  const nextCode = (secret: string) => {
    clock.advance(STEP);
    return totpAt(secret, clock.ms());
  };

  /** A user with 2FA on (enrolled through the API); returns its secret. */
  async function mfaUser(username: string): Promise<string> {
    await addUser(h, username);
    const token = await login(h, username);
    const setup = await send(h, 'POST', `${PREFIX}/2fa/setup`, { token });
    expect(setup.status, setup.text).toBe(200);
    const secret = setup.json().secret as string;
    const enable = await send(h, 'POST', `${PREFIX}/2fa/enable`, { token, body: { code: await totpAt(secret, clock.ms()) } });
    expect(enable.status, enable.text).toBe(200);
    return secret;
  }

  /** Password + code at the next step over the JSON API: a full session's access token. */
  async function fullLogin(username: string, secret: string): Promise<string> {
    const first = await send(h, 'POST', `${PREFIX}/login`, { body: { username, password: GOOD_PASSWORD } });
    expect(first.status, first.text).toBe(200);
    const r = await send(h, 'POST', `${PREFIX}/2fa/verify`, { body: { mfa_token: first.json().mfa_token, code: await nextCode(secret) } });
    expect(r.status, r.text).toBe(200);
    return r.json().access_token;
  }

  describe('part 6: open redirect through rd', () => {
    it('login form POST with rd=/.//evil.example/x (and every other dot-segment / encoded / backslash spelling) answers 303 to /, not //evil.example', async () => {
      await addUser(h, 'rita');
      for (const rd of ESCAPES) {
        const r = await send(h, 'POST', `${PREFIX}/login`, { form: { username: 'rita', password: GOOD_PASSWORD, rd } });
        expect(r.status, `${JSON.stringify(rd)}: ${r.text}`).toBe(303);
        expectStaysHome(h, r.headers.get('location'), JSON.stringify(rd));
        expect(r.headers.get('location'), JSON.stringify(rd)).toBe('/');
      }
      // The gateway's own absolute URL with a protocol-relative path is no way around it.
      for (const rd of [`${h.url}//evil.example/x`, `${h.url}/.//evil.example/x`]) {
        const r = await send(h, 'POST', `${PREFIX}/login`, { form: { username: 'rita', password: GOOD_PASSWORD, rd } });
        expect(r.headers.get('location'), rd).toBe('/');
      }
      // A harmless rd is still honoured, normalized.
      const ok = await send(h, 'POST', `${PREFIX}/login`, { form: { username: 'rita', password: GOOD_PASSWORD, rd: '/app/./x/../y?z=1' } });
      expect(ok.headers.get('location')).toBe('/app/y?z=1');
    });

    it('sign-in page and its error page: the hidden rd for /.//evil.example/x is /, so a re-post cannot escape either', async () => {
      await addUser(h, 'rolf');
      for (const rd of ESCAPES) {
        const page = await send(h, 'GET', `${PREFIX}/login?rd=${encodeURIComponent(rd)}`, { headers: { accept: HTML } });
        expect(page.status).toBe(200);
        expect(hiddenRd(page.text), JSON.stringify(rd)).toBe('/');
      }
      const failed = await send(h, 'POST', `${PREFIX}/login`, { form: { username: 'rolf', password: WRONG_PASSWORD, rd: '/.//evil.example/x' } });
      expect(failed.status).toBe(401);
      expect(hiddenRd(failed.text)).toBe('/');
    });

    it('2FA form: rd=/.//evil.example/x through password → code page → code POST ends at /, not //evil.example', async () => {
      const secret = await mfaUser('rosa');
      const rd = '/.//evil.example/x';
      const password = await send(h, 'POST', `${PREFIX}/login`, { form: { username: 'rosa', password: GOOD_PASSWORD, rd } });
      expect(password.status, password.text).toBe(303);
      const toCodePage = password.headers.get('location')!;
      expect(toCodePage).toBe(`${PREFIX}/2fa?rd=${encodeURIComponent('/')}`);
      const jar = jarWith({}, password.setCookies);

      // The code page, even when reached with the escape in its own query, carries only /.
      for (const path of [toCodePage, `${PREFIX}/2fa?rd=${encodeURIComponent(rd)}`]) {
        const page = await send(h, 'GET', path, { jar, headers: { accept: HTML } });
        expect(page.status, page.text).toBe(200);
        expect(hiddenRd(page.text)).toBe('/');
      }

      // The code form posted with the escape (a crafted form) still lands on /.
      const done = await send(h, 'POST', `${PREFIX}/2fa/verify`, { jar, form: { code: await nextCode(secret), rd } });
      expect(done.status, done.text).toBe(303);
      expectStaysHome(h, done.headers.get('location'), '2fa verify');
      expect(done.headers.get('location')).toBe('/');

      // Every other spelling through the code form, too (a fresh MFA step each time).
      for (const bad of ESCAPES) {
        const p = await send(h, 'POST', `${PREFIX}/login`, { form: { username: 'rosa', password: GOOD_PASSWORD, rd: bad } });
        expectStaysHome(h, p.headers.get('location'), `password step ${JSON.stringify(bad)}`);
        const v = await send(h, 'POST', `${PREFIX}/2fa/verify`, { jar: jarWith({}, p.setCookies), form: { code: await nextCode(secret), rd: bad } });
        expect(v.status, `${JSON.stringify(bad)}: ${v.text}`).toBe(303);
        expect(v.headers.get('location'), JSON.stringify(bad)).toBe('/');
      }
    });

    it('2FA setup page: the Continue link for rd=/.//evil.example/x is /, not //evil.example', async () => {
      const secret = await mfaUser('rene');
      const token = await fullLogin('rene', secret);
      for (const rd of ESCAPES) {
        const page = await send(h, 'GET', `${PREFIX}/2fa/setup?rd=${encodeURIComponent(rd)}`, { token, headers: { accept: HTML } });
        expect(page.status, page.text).toBe(200);
        const href = continueHref(page.text);
        expectStaysHome(h, href, `Continue for ${JSON.stringify(rd)}`);
        expect(href, JSON.stringify(rd)).toBe('/');
      }
      // A harmless rd is still the Continue target.
      const ok = await send(h, 'GET', `${PREFIX}/2fa/setup?rd=${encodeURIComponent('/app/x?y=1')}`, { token, headers: { accept: HTML } });
      expect(continueHref(ok.text)).toBe('/app/x?y=1');
    });

    it('2FA setup forms: hidden rd, the recovery-codes Continue link and the anonymous redirect never carry /.//evil.example/x', async () => {
      await addUser(h, 'remy');
      const rd = '/.//evil.example/x';
      const anonymous = await send(h, 'GET', `${PREFIX}/2fa/setup?rd=${encodeURIComponent(rd)}`, { headers: { accept: HTML } });
      expect(anonymous.status).toBe(303);
      expect(anonymous.headers.get('location')).toBe(`${PREFIX}/login?rd=${encodeURIComponent(`${PREFIX}/2fa/setup?rd=${encodeURIComponent('/')}`)}`);

      const signIn = await send(h, 'POST', `${PREFIX}/login`, { form: { username: 'remy', password: GOOD_PASSWORD, rd: '/' } });
      const jar = jarWith({}, signIn.setCookies);
      const page = await send(h, 'GET', `${PREFIX}/2fa/setup?rd=${encodeURIComponent(rd)}`, { jar, headers: { accept: HTML } });
      expect(hiddenRd(page.text)).toBe('/');
      const qr = await send(h, 'POST', `${PREFIX}/2fa/setup`, { jar, form: { rd } });
      expect(qr.status, qr.text).toBe(200);
      expect(hiddenRd(qr.text)).toBe('/');
      const secret = /<code id="totp-secret">([A-Z2-7]+)<\/code>/.exec(qr.text)![1];
      const enabled = await send(h, 'POST', `${PREFIX}/2fa/enable`, { jar, form: { code: await totpAt(secret, clock.ms()), rd } });
      expect(enabled.status, enabled.text).toBe(200);
      const href = continueHref(enabled.text);
      expect(href).toBe(`${PREFIX}/login?rd=${encodeURIComponent('/')}`);
      expectStaysHome(h, href, 'recovery codes Continue');
    });
  });

  describe('part 7: password confirmations count toward the lockout', () => {
    it('password-confirmation brute force: 5 wrong current_password on /password → the 6th, even right, is 423 with Retry-After, and sign-in is 423', async () => {
      await addUser(h, 'pia');
      const token = await login(h, 'pia');
      for (let i = 0; i < 5; i++) {
        const r = await send(h, 'POST', `${PREFIX}/password`, { token, body: { current_password: `${WRONG_PASSWORD}${i}`, new_password: NEW_PASSWORD } });
        expect(r.status, r.text).toBe(403);
        expect(r.json().code).toBe('wrong_password');
      }
      expectLocked(
        await send(h, 'POST', `${PREFIX}/password`, { token, body: { current_password: GOOD_PASSWORD, new_password: NEW_PASSWORD } }),
        '/password with the right password',
      );
      expectLocked(await send(h, 'POST', `${PREFIX}/login`, { body: { username: 'pia', password: GOOD_PASSWORD } }), 'login');
      // The password was not changed while locked.
      clock.advance(15 * MIN + SEC);
      expect((await send(h, 'POST', `${PREFIX}/login`, { body: { username: 'pia', password: NEW_PASSWORD } })).status).toBe(401);
      expect((await send(h, 'POST', `${PREFIX}/login`, { body: { username: 'pia', password: GOOD_PASSWORD } })).status).toBe(200);
    });

    it('password-confirmation brute force mixed with sign-in guesses: 3 wrong logins + 2 wrong confirmations lock the username', async () => {
      await addUser(h, 'paz');
      const token = await login(h, 'paz');
      for (let i = 0; i < 3; i++) expect((await send(h, 'POST', `${PREFIX}/login`, { body: { username: 'paz', password: WRONG_PASSWORD } })).status).toBe(401);
      for (let i = 0; i < 2; i++)
        expect((await send(h, 'POST', `${PREFIX}/password`, { token, body: { current_password: WRONG_PASSWORD, new_password: NEW_PASSWORD } })).status).toBe(
          403,
        );
      expectLocked(await send(h, 'POST', `${PREFIX}/login`, { body: { username: 'paz', password: GOOD_PASSWORD } }), 'login');
      expectLocked(await send(h, 'POST', `${PREFIX}/password`, { token, body: { current_password: GOOD_PASSWORD, new_password: NEW_PASSWORD } }), '/password');
    });

    it('password-confirmation brute force over the browser form (cookie + Origin) is throttled the same way', async () => {
      await addUser(h, 'pam');
      const signIn = await send(h, 'POST', `${PREFIX}/login`, { form: { username: 'pam', password: GOOD_PASSWORD, rd: '/' } });
      const jar = jarWith({}, signIn.setCookies);
      for (let i = 0; i < 5; i++) {
        expect((await send(h, 'POST', `${PREFIX}/password`, { jar, form: { current_password: WRONG_PASSWORD, new_password: NEW_PASSWORD } })).status).toBe(403);
      }
      const r = await send(h, 'POST', `${PREFIX}/password`, { jar, form: { current_password: GOOD_PASSWORD, new_password: NEW_PASSWORD } });
      expect(r.status, r.text).toBe(423);
      expect(Number(r.headers.get('retry-after'))).toBeGreaterThan(0);
    });

    it('a right password confirmation resets the count (4 wrong, 1 right, 4 wrong: not locked)', async () => {
      await addUser(h, 'pat');
      const token = await login(h, 'pat');
      const change = (current: string, next: string) =>
        send(h, 'POST', `${PREFIX}/password`, { token, body: { current_password: current, new_password: next } });
      for (let i = 0; i < 4; i++) expect((await change(WRONG_PASSWORD, NEW_PASSWORD)).status).toBe(403);
      expect((await change(GOOD_PASSWORD, NEW_PASSWORD)).status).toBe(204);
      for (let i = 0; i < 4; i++) expect((await change(WRONG_PASSWORD, GOOD_PASSWORD)).status).toBe(403);
      expect((await change(NEW_PASSWORD, GOOD_PASSWORD)).status).toBe(204);
    });

    it('2FA-disable brute force: 5 wrong passwords or codes on /2fa/disable → the 6th, even right, is 423 with Retry-After, and sign-in is 423', async () => {
      const secret = await mfaUser('dora');
      const token = await fullLogin('dora', secret);
      const disable = (password: string, code: string) => send(h, 'POST', `${PREFIX}/2fa/disable`, { token, body: { password, code } });
      for (let i = 0; i < 3; i++) expect((await disable(WRONG_PASSWORD, await nextCode(secret))).status).toBe(403);
      for (let i = 0; i < 2; i++) expect((await disable(GOOD_PASSWORD, await wrongTotp(secret, clock.ms()))).status).toBe(403);
      expectLocked(await disable(GOOD_PASSWORD, await nextCode(secret)), '/2fa/disable with the right password and code');
      expectLocked(await send(h, 'POST', `${PREFIX}/login`, { body: { username: 'dora', password: GOOD_PASSWORD } }), 'login');
      expect((await send(h, 'GET', `${PREFIX}/me`, { token })).json().mfa_enabled).toBe(true);
    });

    it('2FA-disable code guessing alone (right password, wrong codes) locks the username', async () => {
      const secret = await mfaUser('dino');
      const token = await fullLogin('dino', secret);
      for (let i = 0; i < 5; i++) {
        const r = await send(h, 'POST', `${PREFIX}/2fa/disable`, { token, body: { password: GOOD_PASSWORD, code: await wrongTotp(secret, clock.ms()) } });
        expect(r.status, r.text).toBe(403);
      }
      expectLocked(await send(h, 'POST', `${PREFIX}/2fa/disable`, { token, body: { password: GOOD_PASSWORD, code: await nextCode(secret) } }), '/2fa/disable');
    });

    it('a username locked by wrong sign-ins cannot confirm its password: /password and /2fa/disable answer 423 even when right', async () => {
      const secret = await mfaUser('lola');
      const token = await fullLogin('lola', secret);
      for (let i = 0; i < 5; i++) expect((await send(h, 'POST', `${PREFIX}/login`, { body: { username: 'lola', password: WRONG_PASSWORD } })).status).toBe(401);
      expectLocked(await send(h, 'POST', `${PREFIX}/password`, { token, body: { current_password: GOOD_PASSWORD, new_password: NEW_PASSWORD } }), '/password');
      expectLocked(await send(h, 'POST', `${PREFIX}/2fa/disable`, { token, body: { password: GOOD_PASSWORD, code: await nextCode(secret) } }), '/2fa/disable');
    });

    it('password confirmations fail closed: with the lockout store unreachable, /password and /2fa/disable answer 503 within 2 s', async () => {
      const secret = await mfaUser('fay');
      const token = await fullLogin('fay', secret);
      const state = h.app.state.lockouts as unknown as Record<string, unknown>;
      const saved = { lockedFor: state.lockedFor, recordFailure: state.recordFailure };
      const down = () => Promise.reject(new Error('state store unreachable (test)'));
      state.lockedFor = down;
      state.recordFailure = down;
      try {
        for (const [path, body] of [
          ['/password', { current_password: WRONG_PASSWORD, new_password: NEW_PASSWORD }],
          ['/password', { current_password: GOOD_PASSWORD, new_password: NEW_PASSWORD }],
          ['/2fa/disable', { password: WRONG_PASSWORD, code: '000000' }],
        ] as const) {
          const started = performance.now();
          const r = await send(h, 'POST', `${PREFIX}${path}`, { token, body });
          expect(r.status, `${path}: ${r.text}`).toBe(503);
          expect(r.json().code).toBe('service_unavailable');
          expect(performance.now() - started).toBeLessThan(2000);
        }
      } finally {
        Object.assign(state, saved);
      }
      // Nothing changed while the store was down.
      expect((await send(h, 'POST', `${PREFIX}/login`, { body: { username: 'fay', password: NEW_PASSWORD } })).status).toBe(401);
    });
  });
});
