/**
 * End-to-end: the self-service account page (SPEC §4 `GET /account`, issue 13 part 1) and its
 * seven url-encoded forms under `{prefix}/account/`, over real HTTP against a real gateway, a
 * real echo upstream and SQLite.
 *
 * The browser is played by a small cookie jar (`Browser`): it signs in through the sign-in form
 * and keeps whatever `Set-Cookie` the gateway answers with (so a silent refresh after the clock
 * moves is followed like a browser would). Other sessions are JSON sign-ins used as bearer
 * tokens on a proxied route (`/app/x`) and on `GET /me`, to prove what a form did or did not do.
 *
 * The gateway's clock runs ahead of real time by `skew`: a used TOTP step is stepped past by
 * moving it a minute on, and a lockout is waited out by moving it 16 minutes on.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GOOD_PASSWORD, addUser, startHarness, totpAt, wrongTotp, type Harness, unescapeHtml, toReply, type Reply } from './support/helpers.js';

const PREFIX = '/api/auth';
const ACCOUNT = `${PREFIX}/account`;
/** Where a visitor who is not signed in is sent: the sign-in form, returning to the account page. */
const SIGN_IN_BACK = `${PREFIX}/login?rd=%2Fapi%2Fauth%2Faccount`;
const EVIL = 'https://evil.example';
const NEW_PASSWORD = 'purple elephant marmalade orbit 97';
const WRONG_PASSWORD = 'definitely not the password 11';
const FIREFOX = 'Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0';
const CURL = 'curl/8.5.0';
const HOSTILE_UA = '<script>alert(1)</script>';
const MAX_FAILURES = 3;
const STEP = 30_000;

/** The seven form routes. */
const FORMS = {
  revoke: `${ACCOUNT}/sessions/revoke`,
  revokeOthers: `${ACCOUNT}/sessions/revoke-others`,
  password: `${ACCOUNT}/password`,
  setup: `${ACCOUNT}/2fa/setup`,
  enable: `${ACCOUNT}/2fa/enable`,
  disable: `${ACCOUNT}/2fa/disable`,
  recovery: `${ACCOUNT}/recovery-codes`,
} as const;

const EXTRA_YAML = `
auth:
  login_rate_limit: { requests: 100000, per: 1m }
  api_rate_limit: { requests: 100000, per: 1m }
  lockout: { max_failures: ${MAX_FAILURES}, window: 15m, duration: 15m }
`;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/** One request, never following redirects. */
async function send(h: Harness, method: string, path: string, headers: Record<string, string> = {}, body?: string): Promise<Reply> {
  return toReply(await fetch(`${h.url}${path}`, { method, headers, body, redirect: 'manual' }));
}

const formBody = (fields: Record<string, string>) => new URLSearchParams(fields).toString();
const FORM_TYPE = 'application/x-www-form-urlencoded';

/** A browser: a cookie jar that keeps what the gateway sets (and drops what it clears). */
class Browser {
  private readonly jar = new Map<string, string>();

  constructor(
    private readonly h: Harness,
    readonly ua = FIREFOX,
  ) {}

  /** The `Cookie` header this browser sends. */
  get cookie(): string {
    return [...this.jar].map(([k, v]) => `${k}=${v}`).join('; ');
  }

  /** A copy of the jar as it is now (a stolen or stale cookie). */
  snapshot(): string {
    return this.cookie;
  }

  private absorb(r: Reply): void {
    for (const c of r.setCookies) {
      const pair = c.split(';')[0];
      const i = pair.indexOf('=');
      const name = pair.slice(0, i);
      const value = pair.slice(i + 1);
      if (value === '' || /;\s*max-age=0\b/i.test(c)) this.jar.delete(name);
      else this.jar.set(name, value);
    }
  }

  async request(method: string, path: string, headers: Record<string, string> = {}, body?: string): Promise<Reply> {
    const all: Record<string, string> = { 'user-agent': this.ua, ...headers };
    if (this.jar.size) all.cookie = this.cookie;
    const r = await send(this.h, method, path, all, body);
    this.absorb(r);
    return r;
  }

  get(path: string): Promise<Reply> {
    return this.request('GET', path, { accept: 'text/html' });
  }

  /** A form post as one of the gateway's own pages sends it (same Origin). */
  post(path: string, fields: Record<string, string> = {}, headers: Record<string, string> = { origin: this.h.url }): Promise<Reply> {
    return this.request('POST', path, { 'content-type': FORM_TYPE, accept: 'text/html', ...headers }, formBody(fields));
  }

  /** Signs in through the sign-in form (no 2FA). */
  async signIn(username: string, password = GOOD_PASSWORD): Promise<void> {
    const r = await this.post(`${PREFIX}/login`, { username, password, rd: ACCOUNT });
    expect(r.status, r.text).toBe(303);
    expect(this.cookie).toContain('portcullis_at=');
  }
}

/** A signed-in browser of a new user. */
async function browserFor(h: Harness, username: string, ua = FIREFOX): Promise<Browser> {
  const b = new Browser(h, ua);
  await b.signIn(username);
  return b;
}

/** A JSON sign-in (its own session): the reply as is. */
function jsonLogin(h: Harness, username: string, password = GOOD_PASSWORD, ua = CURL): Promise<Reply> {
  return send(h, 'POST', `${PREFIX}/login`, { 'content-type': 'application/json', 'user-agent': ua }, JSON.stringify({ username, password }));
}

/** Another session of a user without 2FA: its access token and session id. */
async function otherSession(h: Harness, username: string, ua = CURL): Promise<{ token: string; sid: string }> {
  const r = await jsonLogin(h, username, GOOD_PASSWORD, ua);
  expect(r.status, r.text).toBe(200);
  const token: string = r.json().access_token;
  const m = await me(h, { authorization: `Bearer ${token}` });
  expect(m.status).toBe(200);
  return { token, sid: m.json().session_id };
}

const me = (h: Harness, headers: Record<string, string>) => send(h, 'GET', `${PREFIX}/me`, headers);
const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

/** Status of a bearer token on a proxied route and on `GET /me`. */
async function tokenWorks(h: Harness, token: string): Promise<{ proxied: number; me: number }> {
  const p = await send(h, 'GET', '/app/x', bearer(token));
  const m = await me(h, bearer(token));
  return { proxied: p.status, me: m.status };
}

/** `/2fa/verify` with a fresh MFA token of the user and `code`. */
async function verifyWith(h: Harness, username: string, code: string): Promise<Reply> {
  const l = await jsonLogin(h, username);
  expect(l.status, l.text).toBe(200);
  const mfaToken = l.json().mfa_token;
  expect(typeof mfaToken).toBe('string');
  return send(h, 'POST', `${PREFIX}/2fa/verify`, { 'content-type': 'application/json' }, JSON.stringify({ mfa_token: mfaToken, code }));
}

/** A problem+json answer with its status and code. */
function expectProblem(r: Reply, status: number, code: string): void {
  expect(r.status, r.text).toBe(status);
  expect(r.headers.get('content-type')).toMatch(/^application\/problem\+json/);
  expect(r.json().code).toBe(code);
}

/** The Content-Security-Policy as directive → sources. */
function cspOf(r: Reply): Map<string, string[]> {
  const csp = r.headers.get('content-security-policy') ?? '';
  return new Map(
    csp
      .split(';')
      .map((d) => d.trim())
      .filter(Boolean)
      .map((d) => {
        const [name, ...sources] = d.split(/\s+/);
        return [name.toLowerCase(), sources] as [string, string[]];
      }),
  );
}

/** An HTML page of the gateway: no-store, a strict CSP, no script and no inline style. */
function expectPage(r: Reply, status = 200): void {
  expect(r.status, r.text).toBe(status);
  expect(r.headers.get('content-type')).toMatch(/^text\/html\b/);
  expect(r.headers.get('cache-control')).toBe('no-store');
  const csp = cspOf(r);
  expect(csp.get('default-src')).toEqual(["'none'"]);
  expect(csp.get('frame-ancestors')).toEqual(["'none'"]);
  const raw = r.headers.get('content-security-policy') ?? '';
  expect(raw).not.toContain("'unsafe-inline'");
  expect(raw).not.toContain("'unsafe-eval'");
  expect(raw).not.toContain('*');
  // Scripts: none from anywhere but the site itself (and the pages have none).
  for (const s of csp.get('script-src') ?? []) expect(["'self'", "'none'"]).toContain(s);
  expect(r.text.toLowerCase()).not.toContain('<script');
  expect(r.text.toLowerCase()).not.toContain('<style');
  expect(r.text).not.toMatch(/\sstyle=/i);
  // No event-handler attribute in any tag (escaped text may well say "onerror=").
  expect(r.text).not.toMatch(/<[^>]*\son[a-z]+=/i);
}

/** One section of the account page, by its heading id (`sessions`, `password`, `mfa`, `recovery`). */
function sectionOf(html: string, name: string): string {
  const m = new RegExp(`<section aria-labelledby="${name}-h">([\\s\\S]*?)</section>`).exec(html);
  if (!m) throw new Error(`no ${name} section in:\n${html}`);
  return m[1];
}

/** The inline error of a section (its text), or undefined. */
function inlineError(html: string, name: string): string | undefined {
  const m = new RegExp(`<div class="error" role="alert" id="${name}-error">([\\s\\S]*?)</div>`).exec(sectionOf(html, name));
  return m?.[1];
}

/** Every `role="alert"` box on the page, wherever it is. */
const alertCount = (html: string) => (html.match(/role="alert"/g) ?? []).length;

interface SessionItem {
  id: string;
  current: boolean;
  html: string;
}

/** The sessions listed on the account page, in page order. */
function sessionsOf(html: string): SessionItem[] {
  return [...sectionOf(html, 'sessions').matchAll(/<li data-session-id="([^"]+)"( aria-current="true")?>([\s\S]*?)<\/li>/g)].map((m) => ({
    id: m[1],
    current: m[2] !== undefined,
    html: m[3],
  }));
}

/** The recovery codes on a codes page (`#recovery-codes li`). */
function codesOf(html: string): string[] {
  const list = /<ul id="recovery-codes">([\s\S]*?)<\/ul>/.exec(html);
  if (!list) throw new Error(`no #recovery-codes in:\n${html}`);
  return [...list[1].matchAll(/<li><code>([^<]*)<\/code><\/li>/g)].map((m) => unescapeHtml(m[1]));
}

/** The key shown on the setup page (`#totp-secret`). */
function secretOf(html: string): string {
  const m = /<code id="totp-secret">([^<]+)<\/code>/.exec(html);
  if (!m) throw new Error(`no #totp-secret in:\n${html}`);
  return unescapeHtml(m[1]);
}

const CODE_SHAPE = /^[A-Z2-9]{4}(-[A-Z2-9]{4}){3}$/;

// ---------------------------------------------------------------------------------------------
// One gateway for the file; every describe block has users of its own.
// ---------------------------------------------------------------------------------------------

let h: Harness;
/** How far the gateway's clock runs ahead of real time (ms). */
let skew = 0;
const gatewayNow = () => Date.now() + skew;
/** A TOTP code at a time step later than any used before (the clock moves a minute on). */
async function nextCode(secret: string): Promise<string> {
  skew += 2 * STEP;
  return totpAt(secret, gatewayNow());
}

beforeAll(async () => {
  h = await startHarness({ extraYaml: EXTRA_YAML, now: () => new Date(gatewayNow()) });
});
afterAll(async () => {
  await h?.close();
});

/** Turns 2FA on through the account forms; returns the key and the ten recovery codes. */
async function enableMfa(b: Browser): Promise<{ secret: string; codes: string[] }> {
  const s = await b.post(FORMS.setup);
  expectPage(s);
  const secret = secretOf(s.text);
  const e = await b.post(FORMS.enable, { code: await nextCode(secret) });
  expectPage(e);
  const codes = codesOf(e.text);
  expect(codes).toHaveLength(10);
  return { secret, codes };
}

// ---------------------------------------------------------------------------------------------

describe('GET /account', () => {
  it('not signed in: 303 to the sign-in form with rd back to the account page', async () => {
    const r = await send(h, 'GET', ACCOUNT, { accept: 'text/html' });
    expect(r.status).toBe(303);
    expect(r.headers.get('location')).toBe(SIGN_IN_BACK);
    expect(r.text).toBe('');
    // A cookie that is not a valid session is the same, and is cleared.
    const junk = await send(h, 'GET', ACCOUNT, { accept: 'text/html', cookie: 'portcullis_at=junk; portcullis_rt=junk' });
    expect(junk.status).toBe(303);
    expect(junk.headers.get('location')).toBe(SIGN_IN_BACK);
    expect(junk.setCookies.join('\n')).toMatch(/portcullis_at=;.*Max-Age=0/);

    // The sign-in form carries rd, and signing in there lands back on the account page.
    await addUser(h, 'rho', []);
    const form = await send(h, 'GET', r.headers.get('location')!, { accept: 'text/html' });
    expect(form.status).toBe(200);
    expect(form.text).toContain(`<input type="hidden" name="rd" value="${ACCOUNT}">`);
    const b = new Browser(h);
    const signIn = await b.post(`${PREFIX}/login`, { username: 'rho', password: GOOD_PASSWORD, rd: ACCOUNT });
    expect(signIn.status).toBe(303);
    expect(signIn.headers.get('location')).toBe(ACCOUNT);
    const page = await b.get(ACCOUNT);
    expectPage(page);
    expect(page.text).toContain('<dt>Username</dt><dd>rho</dd>');
  });

  it('signed in: no-store, strict CSP, who you are, 2FA off, and every session with its device, IP and a sign-out form for the others', async () => {
    await addUser(h, 'ada', ['editor', 'reporter'], { email: 'ada@example.com' });
    const other = await otherSession(h, 'ada', CURL);
    const hostile = await otherSession(h, 'ada', HOSTILE_UA);
    const b = await browserFor(h, 'ada', FIREFOX);
    const current = (await me(h, { cookie: b.cookie })).json().session_id as string;

    const r = await b.get(ACCOUNT);
    expectPage(r);
    expect(r.headers.get('x-frame-options')).toBe('DENY');
    const html = r.text;
    expect(html).toContain('<h1>Your account</h1>');
    expect(html).toContain('<dt>Username</dt><dd>ada</dd>');
    expect(html).toContain('<dt>Email</dt><dd>ada@example.com</dd>');
    expect(html).toContain('<dt>Roles</dt><dd>editor, reporter</dd>');
    expect(html).toContain('<dt>Two-factor</dt><dd>Off</dd>');
    // 2FA off: the turn-on form, no disable form, no recovery section.
    expect(sectionOf(html, 'mfa')).toContain(`action="${FORMS.setup}"`);
    expect(html).not.toContain(`action="${FORMS.disable}"`);
    expect(html).not.toContain('recovery-h');
    // No notice, no error.
    expect(html).not.toContain('role="status"');
    expect(alertCount(html)).toBe(0);

    const sessions = sessionsOf(html);
    // This device first, then the others newest first.
    expect(sessions.map((s) => s.id)).toEqual([current, hostile.sid, other.sid]);
    // This device first, and only it is marked.
    expect(sessions[0]).toMatchObject({ id: current, current: true });
    expect(sessions.filter((s) => s.current)).toHaveLength(1);
    expect(html.match(/This device/g)).toHaveLength(1);
    expect(sessions[0].html).toContain('<strong>Firefox on Linux</strong> <span class="badge">This device</span>');
    expect(sessions[0].html).not.toContain('<form');
    expect(sessions[0].html).toContain(`<a href="${PREFIX}/logout">Sign out</a>`);
    for (const s of sessions) expect(s.html).toContain('IP 127.0.0.1');

    const curl = sessions.find((s) => s.id === other.sid)!;
    expect(curl.html).toContain('<strong>curl</strong>');
    expect(curl.html).not.toContain('This device');
    expect(curl.html).toContain(`<form method="post" action="${FORMS.revoke}">`);
    expect(curl.html).toContain(`<input type="hidden" name="session_id" value="${other.sid}">`);

    // The hostile User-Agent is not shown at all: only the device in words.
    const bad = sessions.find((s) => s.id === hostile.sid)!;
    expect(bad.html).toContain('<strong>Unknown device</strong>');
    expect(bad.html).toContain(`value="${hostile.sid}"`);
    expect(html).not.toContain('alert(1)');
    expect(html).not.toContain('&lt;script');

    // One revoke form per other session, and "sign out everywhere else".
    expect(sectionOf(html, 'sessions').match(new RegExp(`action="${FORMS.revoke}"`, 'g'))).toHaveLength(2);
    expect(sectionOf(html, 'sessions')).toContain(`<form method="post" action="${FORMS.revokeOthers}">`);
    // The other forms.
    expect(sectionOf(html, 'password')).toContain(`<form method="post" action="${FORMS.password}">`);
    expect(html).toContain(`<a href="${PREFIX}/logout">Sign out</a>`);
  });

  it('alone: "not signed in anywhere else" and no sign-out-everywhere form', async () => {
    await addUser(h, 'solo', []);
    const b = await browserFor(h, 'solo', CURL);
    const r = await b.get(ACCOUNT);
    expectPage(r);
    const sessions = sessionsOf(r.text);
    expect(sessions).toHaveLength(1);
    expect(sessions[0].current).toBe(true);
    expect(sessions[0].html).toContain('<strong>curl</strong>');
    expect(r.text).toContain('<dt>Roles</dt><dd><span class="muted">none</span></dd>');
    expect(sectionOf(r.text, 'sessions')).toContain('You are not signed in anywhere else.');
    expect(r.text).not.toContain(FORMS.revokeOthers);
    expect(r.text).not.toContain(`action="${FORMS.revoke}"`);
  });

  it('hostile stored values (email, roles, a browser User-Agent with markup) are escaped', async () => {
    const email = 'x"><img src=x onerror=alert(2)>@example.com';
    await addUser(h, 'hal', ['<b>boss</b>', "o'neil"], { email });
    const hostileBrowser = 'Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0 "><img src=y onerror=alert(3)>';
    await otherSession(h, 'hal', hostileBrowser);
    const b = await browserFor(h, 'hal');
    const r = await b.get(ACCOUNT);
    expectPage(r);
    expect(r.text).not.toContain('<img');
    expect(r.text).not.toContain('<b>boss');
    expect(r.text).toContain('<dt>Email</dt><dd>x&quot;&gt;&lt;img src=x onerror=alert(2)&gt;@example.com</dd>');
    expect(r.text).toContain('<dt>Roles</dt><dd>&lt;b&gt;boss&lt;/b&gt;, o&#39;neil</dd>');
    // The browser's UA is only named, never echoed.
    expect(r.text).not.toContain('alert(3)');
    expect(sessionsOf(r.text).filter((s) => s.html.includes('<strong>Firefox on Linux</strong>'))).toHaveLength(2);
  });

  it('?done=<known key> shows its fixed notice; anything else shows nothing and reflects nothing', async () => {
    await addUser(h, 'nia', []);
    const b = await browserFor(h, 'nia');
    const ok = await b.get(`${ACCOUNT}?done=password_changed`);
    expectPage(ok);
    expect(ok.text).toContain('<p class="notice" role="status">Your password is changed. Every other session is signed out.</p>');
    const signedOut = await b.get(`${ACCOUNT}?done=others_signed_out`);
    expect(signedOut.text).toContain('<p class="notice" role="status">Every other session is signed out.</p>');

    for (const q of ['<img src=x>', 'unknown', '__proto__', 'constructor', 'toString', 'password_changed&done=x', 'Password_Changed']) {
      const r = await b.get(`${ACCOUNT}?done=${q}`);
      expectPage(r);
      expect(r.text, q).not.toContain('role="status"');
      expect(r.text, q).not.toContain('class="notice"');
      expect(r.text, q).not.toContain('img src');
      expect(r.text, q).not.toContain('&lt;img');
      expect(r.text, q).not.toContain('Password_Changed');
      expect(r.text, q).not.toContain('done=');
    }
  });
});

// ---------------------------------------------------------------------------------------------

describe('CSRF and content types on every form route', () => {
  /** cy: no 2FA, an enrollment pending; cm: 2FA on. Each has a browser and a bearer session. */
  let cy: { b: Browser; other: { token: string; sid: string }; id: string; secret: string };
  let cm: { b: Browser; other: string; codes: string[]; secret: string };

  beforeAll(async () => {
    const u = await addUser(h, 'cy', []);
    const other = await otherSession(h, 'cy');
    const b = await browserFor(h, 'cy');
    const s = await b.post(FORMS.setup);
    expectPage(s);
    cy = { b, other, id: u.id, secret: secretOf(s.text) };

    await addUser(h, 'cm', []);
    const mb = await browserFor(h, 'cm');
    const { secret, codes } = await enableMfa(mb);
    const v = await verifyWith(h, 'cm', await nextCode(secret));
    expect(v.status, v.text).toBe(200);
    cm = { b: mb, other: v.json().access_token, codes, secret };
  });

  const cyUntouched = async () => {
    expect(await tokenWorks(h, cy.other.token)).toEqual({ proxied: 200, me: 200 });
    const r = await cy.b.get(ACCOUNT);
    expectPage(r);
    expect(sessionsOf(r.text).map((s) => s.id)).toContain(cy.other.sid);
  };
  let recoveryIndex = 0;

  interface Case {
    path: string;
    who: () => Browser;
    fields: () => Promise<Record<string, string>>;
    unchanged: () => Promise<void>;
  }
  const cases: Record<string, Case> = {
    'sessions/revoke': { path: FORMS.revoke, who: () => cy.b, fields: async () => ({ session_id: cy.other.sid }), unchanged: cyUntouched },
    'sessions/revoke-others': { path: FORMS.revokeOthers, who: () => cy.b, fields: async () => ({}), unchanged: cyUntouched },
    password: {
      path: FORMS.password,
      who: () => cy.b,
      fields: async () => ({ current_password: GOOD_PASSWORD, new_password: NEW_PASSWORD, confirm_password: NEW_PASSWORD }),
      unchanged: async () => {
        await cyUntouched();
        expect((await jsonLogin(h, 'cy')).status).toBe(200);
      },
    },
    '2fa/setup': {
      path: FORMS.setup,
      who: () => cy.b,
      fields: async () => ({}),
      unchanged: async () => {
        // The pending key is the same one: a new setup would have replaced it.
        const enc = (await h.app.db.users.findById(cy.id))?.totpSecret;
        expect(enc).toBeTruthy();
        const again = await cy.b.post(FORMS.enable, { code: await wrongTotp(cy.secret, gatewayNow()), secret: cy.secret });
        expect(again.status).toBe(422);
        expect(secretOf(again.text)).toBe(cy.secret);
        expect((await me(h, bearer(cy.other.token))).json().mfa_enabled).toBe(false);
      },
    },
    '2fa/enable': {
      path: FORMS.enable,
      who: () => cy.b,
      fields: async () => ({ code: await totpAt(cy.secret, gatewayNow()), secret: cy.secret }),
      unchanged: async () => {
        expect((await me(h, bearer(cy.other.token))).json().mfa_enabled).toBe(false);
        expect((await me(h, { cookie: cy.b.cookie })).json().mfa_enabled).toBe(false);
      },
    },
    '2fa/disable': {
      path: FORMS.disable,
      who: () => cm.b,
      fields: async () => ({ password: GOOD_PASSWORD, code: await totpAt(cm.secret, gatewayNow()) }),
      unchanged: async () => {
        expect((await me(h, { cookie: cm.b.cookie })).json().mfa_enabled).toBe(true);
        expect(await tokenWorks(h, cm.other)).toEqual({ proxied: 200, me: 200 });
      },
    },
    'recovery-codes': {
      path: FORMS.recovery,
      who: () => cm.b,
      fields: async () => ({ password: GOOD_PASSWORD }),
      unchanged: async () => {
        // An old recovery code still signs in.
        const v = await verifyWith(h, 'cm', cm.codes[recoveryIndex++]);
        expect(v.status, v.text).toBe(200);
      },
    },
  };

  it.each(Object.keys(cases))('%s: a foreign, null or missing origin is 403 csrf and changes nothing', async (name) => {
    const c = cases[name];
    const b = c.who();
    const fields = await c.fields();
    const refusals: Record<string, Record<string, string>> = {
      'foreign Origin': { origin: EVIL },
      'no Origin, no Referer': {},
      'Origin: null': { origin: 'null' },
      'foreign Referer only': { referer: `${EVIL}${ACCOUNT}` },
      'foreign Origin, own Referer': { origin: EVIL, referer: `${h.url}${ACCOUNT}` },
      'own origin with a path': { origin: `${h.url}${ACCOUNT}` },
    };
    for (const [label, headers] of Object.entries(refusals)) {
      const r = await b.post(c.path, fields, headers);
      expect(r.status, `${label}: ${r.text}`).toBe(403);
      expect(r.headers.get('content-type'), label).toMatch(/^text\/html\b/);
      expect(r.text, label).toContain('403 · csrf');
      expect(r.text, label).toContain('<h1>Cross-site request refused</h1>');
      expect(r.text, label).not.toContain('<h1>Your account</h1>');
      expect(r.setCookies, label).toEqual([]);
      // Whatever the client asks for, the refusal names csrf.
      const api = await b.post(c.path, fields, { ...headers, accept: 'application/json' });
      expect(api.status).toBe(403);
      expect(api.text).toContain('csrf');
    }
    // A type that reads as both a form and JSON (`…urlencoded+json`) is not a form: 415 before
    // anything else (the review found it parsed as JSON past the form-only gate; the cookie's
    // own CSRF check still refused it).
    const hybrid = await b.request(
      'POST',
      c.path,
      { origin: EVIL, 'content-type': 'application/x-www-form-urlencoded+json', accept: 'text/html' },
      JSON.stringify(fields),
    );
    expect(hybrid.status, hybrid.text).toBe(415);
    expect(hybrid.text).toContain('unsupported_media_type');
    await c.unchanged();
  });

  it.each(Object.keys(cases))('%s: a JSON or text/plain body is 415 unsupported_media_type and changes nothing', async (name) => {
    const c = cases[name];
    const b = c.who();
    const fields = await c.fields();
    const own = { origin: h.url };
    expectProblem(await b.request('POST', c.path, { ...own, 'content-type': 'application/json' }, JSON.stringify(fields)), 415, 'unsupported_media_type');
    expectProblem(await b.request('POST', c.path, { ...own, 'content-type': 'text/plain' }, formBody(fields)), 415, 'unsupported_media_type');
    expectProblem(await b.request('POST', c.path, { ...own, 'content-type': 'multipart/form-data; boundary=x' }, '--x--'), 415, 'unsupported_media_type');
    expectProblem(await b.request('POST', c.path, own, formBody(fields)), 415, 'unsupported_media_type');
    await c.unchanged();
  });

  it('a same-origin Referer without Origin is accepted', async () => {
    await addUser(h, 'cr', []);
    const other = await otherSession(h, 'cr');
    const b = await browserFor(h, 'cr');
    const r = await b.post(FORMS.revokeOthers, {}, { referer: `${h.url}${ACCOUNT}` });
    expect(r.status, r.text).toBe(303);
    expect(r.headers.get('location')).toBe(`${ACCOUNT}?done=others_signed_out`);
    expect(await tokenWorks(h, other.token)).toEqual({ proxied: 401, me: 401 });
  });
});

// ---------------------------------------------------------------------------------------------

describe('sessions', () => {
  it('revoking another session: 303 with a notice; its token is refused at once on /app/x and /me', async () => {
    await addUser(h, 'sam', []);
    const other = await otherSession(h, 'sam');
    const b = await browserFor(h, 'sam');
    expect(await tokenWorks(h, other.token)).toEqual({ proxied: 200, me: 200 });

    const r = await b.post(FORMS.revoke, { session_id: other.sid });
    expect(r.status, r.text).toBe(303);
    expect(r.headers.get('location')).toBe(`${ACCOUNT}?done=session_revoked`);
    expect(await tokenWorks(h, other.token)).toEqual({ proxied: 401, me: 401 });

    const page = await b.get(r.headers.get('location')!);
    expectPage(page);
    expect(page.text).toContain('<p class="notice" role="status">That session is signed out.</p>');
    expect(sessionsOf(page.text).map((s) => s.id)).not.toContain(other.sid);
    expect(sessionsOf(page.text)).toHaveLength(1);
    // Revoking it again: it is gone.
    const again = await b.post(FORMS.revoke, { session_id: other.sid });
    expectPage(again, 404);
  });

  it("another user's session id or a made-up one: 404 with the error in the sessions section; nothing revoked", async () => {
    await addUser(h, 'sol', []);
    await addUser(h, 'sue', []);
    const sues = await otherSession(h, 'sue');
    const mine = await otherSession(h, 'sol');
    const b = await browserFor(h, 'sol');
    for (const id of [sues.sid, '00000000-0000-4000-8000-000000000000', 'no-such-session', "'><b>x"]) {
      const r = await b.post(FORMS.revoke, { session_id: id });
      expectPage(r, 404);
      // The account page again, with the reason beside the sessions.
      expect(r.text).toContain('<h1>Your account</h1>');
      expect(inlineError(r.text, 'sessions')).toContain('That session is already signed out, or is not one of yours.');
      expect(alertCount(r.text)).toBe(1);
      expect(r.text).not.toContain('<b>x');
    }
    expect(await tokenWorks(h, sues.token)).toEqual({ proxied: 200, me: 200 });
    expect(await tokenWorks(h, mine.token)).toEqual({ proxied: 200, me: 200 });
    // No id at all: 422 in the same place.
    const none = await b.post(FORMS.revoke, {});
    expectPage(none, 422);
    expect(inlineError(none.text, 'sessions')).toContain('Choose a session to sign out.');
  });

  it('revoking the current session signs out: cookies cleared, 303 to sign in; the cookie is dead', async () => {
    await addUser(h, 'sid', []);
    const other = await otherSession(h, 'sid');
    const b = await browserFor(h, 'sid');
    const stale = b.snapshot();
    const current = (await me(h, { cookie: stale })).json().session_id as string;

    const r = await b.post(FORMS.revoke, { session_id: current });
    expect(r.status, r.text).toBe(303);
    expect(r.headers.get('location')).toBe(SIGN_IN_BACK);
    const cleared = r.setCookies.join('\n');
    expect(cleared).toMatch(/portcullis_at=;[^\n]*Max-Age=0/);
    expect(cleared).toMatch(/portcullis_rt=;[^\n]*Max-Age=0/);
    expect(b.cookie).toBe('');

    // The old cookie pair (access and refresh) no longer signs anyone in.
    expectProblem(await me(h, { cookie: stale }), 401, 'unauthenticated');
    const page = await send(h, 'GET', ACCOUNT, { cookie: stale, accept: 'text/html' });
    expect(page.status).toBe(303);
    expect(page.headers.get('location')).toBe(SIGN_IN_BACK);
    // The other session is untouched.
    expect(await tokenWorks(h, other.token)).toEqual({ proxied: 200, me: 200 });
  });

  it('"Sign out everywhere else": every other token refused, this browser still signed in', async () => {
    await addUser(h, 'eve', []);
    const others = [await otherSession(h, 'eve', CURL), await otherSession(h, 'eve', FIREFOX), await otherSession(h, 'eve', 'Wget/1.21')];
    const b = await browserFor(h, 'eve');
    const before = await b.get(ACCOUNT);
    expect(sessionsOf(before.text)).toHaveLength(4);

    const r = await b.post(FORMS.revokeOthers);
    expect(r.status, r.text).toBe(303);
    expect(r.headers.get('location')).toBe(`${ACCOUNT}?done=others_signed_out`);
    for (const o of others) expect(await tokenWorks(h, o.token)).toEqual({ proxied: 401, me: 401 });

    const after = await b.get(r.headers.get('location')!);
    expectPage(after);
    expect(after.text).toContain('<p class="notice" role="status">Every other session is signed out.</p>');
    const sessions = sessionsOf(after.text);
    expect(sessions).toHaveLength(1);
    expect(sessions[0].current).toBe(true);
    expect(after.text).toContain('You are not signed in anywhere else.');
    expect((await b.request('GET', '/app/x')).status).toBe(200);
  });
});

// ---------------------------------------------------------------------------------------------

describe('change password', () => {
  const change = (b: Browser, current: string, next: string, confirm = next) =>
    b.post(FORMS.password, { current_password: current, new_password: next, confirm_password: confirm });

  it('mismatched confirmation: 422 inline in the password section, and never counts toward the lockout', async () => {
    await addUser(h, 'pam', []);
    const b = await browserFor(h, 'pam');
    // Even with a wrong current password: the confirmation is checked first, so this is a typo, not a guess.
    for (let i = 0; i < MAX_FAILURES + 1; i++) {
      const r = await change(b, WRONG_PASSWORD, NEW_PASSWORD, `${NEW_PASSWORD}x`);
      expectPage(r, 422);
      expect(inlineError(r.text, 'password')).toBe('<p>The two new passwords are not the same.</p>');
      expect(alertCount(r.text)).toBe(1);
      expect(sectionOf(r.text, 'password')).toContain('aria-describedby="password-error"');
      // The page never echoes a password back.
      expect(r.text).not.toContain(NEW_PASSWORD);
      expect(r.text).not.toContain(WRONG_PASSWORD);
    }
    // Not locked: the password still signs in, and it was not changed.
    expect(h.logs.filter((l) => l.event === 'account_locked' && l.username === 'pam')).toHaveLength(0);
    expect((await jsonLogin(h, 'pam')).status).toBe(200);
  });

  it('a weak new password: 422 with each policy reason as a list item in the password section', async () => {
    await addUser(h, 'pia', []);
    const b = await browserFor(h, 'pia');
    const r = await change(b, GOOD_PASSWORD, 'pia12');
    expectPage(r, 422);
    const err = inlineError(r.text, 'password');
    expect(err).toContain('<p>Choose another new password:</p>');
    const items = [...(err ?? '').matchAll(/<li>([^<]*)<\/li>/g)].map((m) => unescapeHtml(m[1]));
    expect(items).toContain('Password must be at least 12 characters long.');
    expect(items).toContain('Password must not contain the username.');
    expect(items.some((i) => i.startsWith('Password is too easy to guess'))).toBe(true);
    expect(items.length).toBeGreaterThanOrEqual(3);
    // Nothing changed.
    expect((await jsonLogin(h, 'pia')).status).toBe(200);
    expect((await b.get(ACCOUNT)).status).toBe(200);
  });

  it('a wrong current password: 403 inline; it counts toward the lockout, then 423 "Try again in about 15 minutes"', async () => {
    await addUser(h, 'lil', []);
    const b = await browserFor(h, 'lil');
    for (let i = 0; i < MAX_FAILURES; i++) {
      const r = await change(b, `${WRONG_PASSWORD}${i}`, NEW_PASSWORD);
      expectPage(r, 403);
      expect(inlineError(r.text, 'password')).toBe('<p>The current password is wrong.</p>');
      expect(alertCount(r.text)).toBe(1);
    }
    expect(h.logs.filter((l) => l.event === 'account_locked' && l.username === 'lil')).toEqual([expect.objectContaining({ failures: MAX_FAILURES })]);
    // Locked: even the right password is refused, with the wait in words beside the form.
    const locked = await change(b, GOOD_PASSWORD, NEW_PASSWORD);
    expectPage(locked, 423);
    const seconds = Number(locked.headers.get('retry-after'));
    expect(seconds).toBeGreaterThan(800);
    expect(seconds).toBeLessThanOrEqual(900);
    expect(inlineError(locked.text, 'password')).toContain('Try again in about 15 minutes.');
    expect(locked.text).not.toMatch(/\d+ s\b/);
    // The same lock covers sign-in; the password was not changed.
    expectProblem(await jsonLogin(h, 'lil'), 423, 'account_locked');
    expect((await b.get(ACCOUNT)).status).toBe(200);
  });

  it('a good change: 303 with a notice; old password refused, new one works, other sessions out, this one stays', async () => {
    await addUser(h, 'pete', []);
    const other = await otherSession(h, 'pete');
    const b = await browserFor(h, 'pete');
    const r = await change(b, GOOD_PASSWORD, NEW_PASSWORD);
    expect(r.status, r.text).toBe(303);
    expect(r.headers.get('location')).toBe(`${ACCOUNT}?done=password_changed`);

    expect(await tokenWorks(h, other.token)).toEqual({ proxied: 401, me: 401 });
    const page = await b.get(r.headers.get('location')!);
    expectPage(page);
    expect(page.text).toContain('<p class="notice" role="status">Your password is changed. Every other session is signed out.</p>');
    expect(sessionsOf(page.text)).toHaveLength(1);
    expect((await b.request('GET', '/app/x')).status).toBe(200);

    expectProblem(await jsonLogin(h, 'pete', GOOD_PASSWORD), 401, 'invalid_credentials');
    expect((await jsonLogin(h, 'pete', NEW_PASSWORD)).status).toBe(200);
    // The sign-in form agrees.
    const fresh = new Browser(h);
    await fresh.signIn('pete', NEW_PASSWORD);
  });
});

// ---------------------------------------------------------------------------------------------

describe('two-factor authentication', () => {
  let b: Browser;
  let secret: string;
  let codes: string[];

  beforeAll(async () => {
    await addUser(h, 'tia', []);
    b = await browserFor(h, 'tia');
  });

  it('enable before any setup: 409 in the 2FA section, 2FA stays off', async () => {
    for (const code of ['123456', 'abc']) {
      const r = await b.post(FORMS.enable, { code });
      expectPage(r, 409);
      expect(r.text).toContain('<h1>Your account</h1>');
      expect(inlineError(r.text, 'mfa')).toBeDefined();
      expect(alertCount(r.text)).toBe(1);
    }
    expect((await me(h, { cookie: b.cookie })).json().mfa_enabled).toBe(false);
  });

  it('setup: the QR code, the key as text, and a form posting to the account enable route', async () => {
    const r = await b.post(FORMS.setup);
    expectPage(r);
    expect(r.text).toContain('<div class="qr" role="img" aria-label="QR code for your authenticator app"><svg');
    secret = secretOf(r.text);
    expect(secret).toMatch(/^[A-Z2-7]{16,}$/);
    expect(r.text).toContain(`<form method="post" action="${FORMS.enable}">`);
    expect(r.text).toContain('<label for="code">Code from the app</label>');
    // Still off until a code confirms it.
    expect((await me(h, { cookie: b.cookie })).json().mfa_enabled).toBe(false);
  });

  it('the confirm form sends the key back (a hidden field): the proof that it was shown it', async () => {
    const r = await b.post(FORMS.setup);
    expectPage(r);
    secret = secretOf(r.text);
    expect(r.text).toContain(`<input type="hidden" name="secret" value="${secret}">`);
  });

  it('pending-secret theft: another session of the account (or this one without the key) posting a wrong code is shown no key', async () => {
    const thief = await browserFor(h, 'tia');
    for (const [who, body] of [
      [thief, { code: '000000' }],
      [thief, { code: '000000', secret: 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA' }],
      [thief, { code: '000000', secret: secret.toLowerCase() }],
      [b, { code: '000000' }],
    ] as const) {
      const r = await who.post(FORMS.enable, body);
      expectPage(r, 409);
      expect(r.text).not.toContain(secret);
      expect(r.text).not.toContain('<svg');
      expect(inlineError(r.text, 'mfa')).toContain('Two-factor authentication is off');
    }
    // The enrollment itself is untouched: the page that was shown the key still completes it below.
    expect((await me(h, { cookie: b.cookie })).json().mfa_enabled).toBe(false);
  });

  it('a wrong code: 422 and the same key shown again with the reason', async () => {
    const r = await b.post(FORMS.enable, { code: await wrongTotp(secret, gatewayNow()), secret });
    expectPage(r, 422);
    expect(secretOf(r.text)).toBe(secret);
    expect(r.text).toContain('<svg');
    expect(r.text).toContain('role="alert" id="setup-error"');
    expect(r.text).toContain('That code is not valid.');
    expect(r.text).toContain(`action="${FORMS.enable}"`);
    expect((await me(h, { cookie: b.cookie })).json().mfa_enabled).toBe(false);
  });

  it('the right code: ten recovery codes on the page and in a data: text file; 2FA is on', async () => {
    const r = await b.post(FORMS.enable, { code: await nextCode(secret) });
    expectPage(r);
    codes = codesOf(r.text);
    expect(codes).toHaveLength(10);
    expect(new Set(codes).size).toBe(10);
    for (const c of codes) expect(c).toMatch(CODE_SHAPE);

    const link = /<a id="download-codes" href="([^"]+)" download="recovery-codes.txt">/.exec(r.text);
    expect(link).not.toBeNull();
    const href = unescapeHtml(link![1]);
    expect(href.startsWith('data:text/plain')).toBe(true);
    const text = decodeURIComponent(href.slice(href.indexOf(',') + 1));
    for (const c of codes) expect(text).toContain(c);
    expect(text).toContain('tia');
    expect(r.text).toContain(`<a href="${ACCOUNT}?done=mfa_enabled">Continue</a>`);

    const m = await me(h, { cookie: b.cookie });
    expect(m.json().mfa_enabled).toBe(true);
    const page = await b.get(`${ACCOUNT}?done=mfa_enabled`);
    expectPage(page);
    expect(page.text).toContain('<p class="notice" role="status">Two-factor authentication is on. Sessions signed in before keep working');
    expect(page.text).toContain('<dt>Two-factor</dt><dd>On</dd>');
    expect(sectionOf(page.text, 'mfa')).toContain(`action="${FORMS.disable}"`);
    expect(sectionOf(page.text, 'recovery')).toContain(`action="${FORMS.recovery}"`);
    // A sign-in now asks for the second factor, and a recovery code answers it.
    const v = await verifyWith(h, 'tia', codes[0]);
    expect(v.status, v.text).toBe(200);
  });

  it('setup (or enable) again while on: 409 shown in the 2FA section; the key is unchanged', async () => {
    const r = await b.post(FORMS.setup);
    expectPage(r, 409);
    expect(r.text).toContain('<h1>Your account</h1>');
    expect(inlineError(r.text, 'mfa')).toContain('Two-factor authentication is already on');
    const e = await b.post(FORMS.enable, { code: await nextCode(secret) });
    expectPage(e, 409);
    expect(inlineError(e.text, 'mfa')).toContain('Two-factor authentication is already on');
    // The old key still works.
    const v = await verifyWith(h, 'tia', await nextCode(secret));
    expect(v.status, v.text).toBe(200);
  });

  it('disable with a wrong code or password: 403 inline; it counts toward the lockout (then 423)', async () => {
    const wrongCode = await b.post(FORMS.disable, { password: GOOD_PASSWORD, code: await wrongTotp(secret, gatewayNow()) });
    expectPage(wrongCode, 403);
    expect(inlineError(wrongCode.text, 'mfa')).toContain('The password or the code is wrong.');
    expect(wrongCode.text).toContain('<dt>Two-factor</dt><dd>On</dd>');
    const wrongPassword = await b.post(FORMS.disable, { password: WRONG_PASSWORD, code: await nextCode(secret) });
    expectPage(wrongPassword, 403);
    expect(inlineError(wrongPassword.text, 'mfa')).toContain('The password or the code is wrong.');
    expect((await me(h, { cookie: b.cookie })).json().mfa_enabled).toBe(true);
    // Missing fields are the same refusal.
    const third = await b.post(FORMS.disable, { password: GOOD_PASSWORD });
    expectPage(third, 403);
    expect(h.logs.filter((l) => l.event === 'account_locked' && l.username === 'tia')).toHaveLength(1);
    // (The clock stays put: the wait is the whole 15 minutes.)
    const locked = await b.post(FORMS.disable, { password: GOOD_PASSWORD, code: await totpAt(secret, gatewayNow()) });
    expectPage(locked, 423);
    expect(inlineError(locked.text, 'mfa')).toContain('Try again in about 15 minutes.');
    expect((await me(h, { cookie: b.cookie })).json().mfa_enabled).toBe(true);
  });

  it('disable with the password and a right code (once the lock is over): 303 with a notice, 2FA off', async () => {
    // Wait the lock out on the gateway's clock (the browser refreshes its expired access cookie).
    skew += 16 * 60_000;
    const r = await b.post(FORMS.disable, { password: GOOD_PASSWORD, code: await nextCode(secret) });
    expect(r.status, r.text).toBe(303);
    expect(r.headers.get('location')).toBe(`${ACCOUNT}?done=mfa_disabled`);
    expect((await me(h, { cookie: b.cookie })).json().mfa_enabled).toBe(false);
    const page = await b.get(r.headers.get('location')!);
    expectPage(page);
    expect(page.text).toContain('<p class="notice" role="status">Two-factor authentication is off.</p>');
    expect(page.text).toContain('<dt>Two-factor</dt><dd>Off</dd>');
    expect(page.text).not.toContain('recovery-h');
    // A sign-in is one step again.
    const l = await jsonLogin(h, 'tia');
    expect(l.status).toBe(200);
    expect(typeof l.json().access_token).toBe('string');
  });
});

// ---------------------------------------------------------------------------------------------

describe('new recovery codes', () => {
  let b: Browser;
  let secret: string;
  let old: string[];
  let newCodes: string[] = [];

  beforeAll(async () => {
    await addUser(h, 'rae', []);
    b = await browserFor(h, 'rae');
    ({ secret, codes: old } = await enableMfa(b));
  });

  it('both fields or neither: 422 in the recovery section; nothing changed', async () => {
    const both = await b.post(FORMS.recovery, { code: await nextCode(secret), password: GOOD_PASSWORD });
    expectPage(both, 422);
    expect(inlineError(both.text, 'recovery')).toContain('Fill in one of the two: the code or your password.');
    expect(alertCount(both.text)).toBe(1);
    const neither = await b.post(FORMS.recovery, { code: '  ', password: '' });
    expectPage(neither, 422);
    expect(inlineError(neither.text, 'recovery')).toContain('Fill in a code from your app or your password.');
    expect((await verifyWith(h, 'rae', old[0])).status).toBe(200);
  });

  it('a wrong password: 403 in the recovery section; the old codes stand', async () => {
    const r = await b.post(FORMS.recovery, { password: WRONG_PASSWORD });
    expectPage(r, 403);
    expect(inlineError(r.text, 'recovery')).toContain('The password is wrong.');
    expect((await verifyWith(h, 'rae', old[1])).status).toBe(200);
  });

  it('with the password: ten new codes; an old code is refused at /2fa/verify, a new one works', async () => {
    const r = await b.post(FORMS.recovery, { password: GOOD_PASSWORD });
    expectPage(r);
    const codes = codesOf(r.text);
    expect(codes).toHaveLength(10);
    for (const c of codes) expect(c).toMatch(CODE_SHAPE);
    for (const c of codes) expect(old).not.toContain(c);
    expect(r.text).toContain(`<a href="${ACCOUNT}">Continue</a>`);
    expect(r.text).toContain('id="download-codes"');

    expectProblem(await verifyWith(h, 'rae', old[2]), 401, 'invalid_mfa_code');
    const ok = await verifyWith(h, 'rae', codes[3]);
    expect(ok.status, ok.text).toBe(200);
    expect(typeof ok.json().access_token).toBe('string');
    // That sign-in is listed with its second factor; this browser's (password only) is not.
    const page = await b.get(ACCOUNT);
    const sessions = sessionsOf(page.text);
    const sid = (await me(h, bearer(ok.json().access_token))).json().session_id;
    expect(sessions.find((s) => s.id === sid)?.html).toContain('with a second factor');
    expect(sessions.find((s) => s.current)?.html).not.toContain('with a second factor');
    newCodes = codes;
  });

  it('with a current code from the app: ten new codes again', async () => {
    const r = await b.post(FORMS.recovery, { code: await nextCode(secret) });
    expectPage(r);
    const codes = codesOf(r.text);
    expect(codes).toHaveLength(10);
    expectProblem(await verifyWith(h, 'rae', newCodes[4]), 401, 'invalid_mfa_code');
    newCodes = codes;
  });

  it('a recovery code also turns 2FA off (with the password)', async () => {
    const r = await b.post(FORMS.disable, { password: GOOD_PASSWORD, code: newCodes[0] });
    expect(r.status, r.text).toBe(303);
    expect(r.headers.get('location')).toBe(`${ACCOUNT}?done=mfa_disabled`);
    expect((await me(h, { cookie: b.cookie })).json().mfa_enabled).toBe(false);
  });

  // Found while writing these tests: the recovery section is not drawn with 2FA off, and its
  // form's refusal used to be dropped with it (the page under 409 with no reason anywhere).
  it('the recovery form after 2FA was turned off elsewhere (a stale tab): the refusal says why', async () => {
    expect((await me(h, { cookie: b.cookie })).json().mfa_enabled).toBe(false);
    const r = await b.post(FORMS.recovery, { password: GOOD_PASSWORD });
    expectPage(r, 409);
    expect(r.text).toContain('<h1>Your account</h1>');
    expect(r.text).toContain('<dt>Two-factor</dt><dd>Off</dd>');
    // The reason is on the page, in an alert.
    expect(alertCount(r.text)).toBe(1);
    expect(r.text).toMatch(/role="alert"[^>]*>\s*<p>[^<]+<\/p>/);
    // In words for people, in the 2FA section (the only one there is).
    expect(r.text).toMatch(/<div class="error" role="alert" id="mfa-error"><p>Two-factor authentication is off/);
    expect(r.text).not.toContain('/2fa/setup first');
  });
});

// ---------------------------------------------------------------------------------------------

describe('a form posted after the session was revoked', () => {
  it('303 to sign in with rd back to the account page, cookies cleared, nothing changed', async () => {
    const u = await addUser(h, 'vic', []);
    const other = await otherSession(h, 'vic');
    const b = await browserFor(h, 'vic');
    const sid = (await me(h, { cookie: b.cookie })).json().session_id as string;
    // Signed out elsewhere (the other session revokes this one through the API).
    const del = await send(h, 'DELETE', `${PREFIX}/sessions/${sid}`, bearer(other.token));
    expect(del.status, del.text).toBe(204);

    const stale = b.snapshot();
    const posts: [string, Record<string, string>][] = [
      [FORMS.password, { current_password: GOOD_PASSWORD, new_password: NEW_PASSWORD, confirm_password: NEW_PASSWORD }],
      [FORMS.revokeOthers, {}],
      [FORMS.revoke, { session_id: other.sid }],
      [FORMS.setup, {}],
      [FORMS.recovery, { password: GOOD_PASSWORD }],
    ];
    for (const [path, fields] of posts) {
      const r = await send(h, 'POST', path, { cookie: stale, origin: h.url, 'content-type': FORM_TYPE, accept: 'text/html' }, formBody(fields));
      expect(r.status, `${path}: ${r.text}`).toBe(303);
      expect(r.headers.get('location'), path).toBe(SIGN_IN_BACK);
      expect(r.setCookies.join('\n'), path).toMatch(/portcullis_rt=;[^\n]*Max-Age=0/);
    }
    // Nothing changed: the other session works, the password is the old one, no 2FA enrollment.
    expect(await tokenWorks(h, other.token)).toEqual({ proxied: 200, me: 200 });
    expect((await jsonLogin(h, 'vic', GOOD_PASSWORD)).status).toBe(200);
    expect((await h.app.db.users.findById(u.id))?.totpSecret ?? null).toBeNull();
    expect(h.logs.filter((l) => l.event === 'password_changed' && l.user_id === u.id)).toHaveLength(0);
  });
});
