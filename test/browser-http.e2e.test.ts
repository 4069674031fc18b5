/**
 * End-to-end: browser sessions over real HTTP (SPEC §3 CSRF row, §4 pages, §6 cookies and
 * `rd`): the sign-in and sign-out pages, form login cookies (plain and `__Host-` over TLS),
 * the 302 to the sign-in page, cookie stripping before the upstream, silent refresh with
 * rotation and reuse detection, CSRF origin checks and the CORS allowlist of the auth API.
 */
import { readFileSync, rmSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from 'node:net';
import { GOOD_PASSWORD, ROUTES, addUser, login, metricsText, sample, startHarness, type Harness } from './support/helpers.js';
import { selfSigned } from './support/services.js';

// This file tests browser sessions, not abuse protection: generous limits, so the many form
// logins below never trip a limiter or a lockout once those are enforced.
const LIMITS = `
  login_rate_limit: { requests: 100000, per: 1m }
  lockout: { max_failures: 100000, window: 15m, duration: 15m }`;
const GOOD = 'https://good';
const AUTH_YAML = `
auth:
  allowed_origins: [${GOOD}]${LIMITS}
`;

const FORM = 'application/x-www-form-urlencoded';
const BROWSER_ACCEPT = 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8';
const ACCESS_MAX_AGE = 900; // 15 min
const REFRESH_MAX_AGE = 7 * 86_400; // 7 d

/**
 * Sends a WebSocket upgrade on a raw socket and returns the status and headers of the
 * answer (then closes the socket; the tunnel itself is not the point here).
 */
function upgradeHead(url: string, path: string, headers: Record<string, string>): Promise<{ status: number; setCookies: string[] }> {
  const { hostname, port, host } = new URL(url);
  return new Promise((resolve, reject) => {
    const sock = connect(Number(port), hostname);
    let buf = '';
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`no upgrade answer; got ${JSON.stringify(buf)}`));
    }, 10_000);
    sock.setEncoding('latin1');
    sock.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    sock.on('data', (d: string) => {
      buf += d;
      const end = buf.indexOf('\r\n\r\n');
      if (end === -1) return;
      clearTimeout(timer);
      sock.destroy();
      const lines = buf.slice(0, end).split('\r\n');
      const setCookies = lines
        .slice(1)
        .filter((l) => /^set-cookie:/i.test(l))
        .map((l) => l.slice(l.indexOf(':') + 1).trim());
      resolve({ status: Number(lines[0].split(' ')[1]), setCookies });
    });
    const extra = Object.entries(headers)
      .map(([k, v]) => `${k}: ${v}\r\n`)
      .join('');
    sock.write(
      `GET ${path} HTTP/1.1\r\nHost: ${host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n${extra}\r\n`,
    );
  });
}

/** One parsed `Set-Cookie` value. */
interface SetCookie {
  name: string;
  value: string;
  attrs: Record<string, string | true>;
  raw: string;
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
  return { name: pair.slice(0, eq).trim(), value: pair.slice(eq + 1).trim(), attrs, raw };
}

function setCookies(res: Response): SetCookie[] {
  return res.headers.getSetCookie().map(parseSetCookie);
}

/** A browser's cookie jar after a response: name → value (cleared cookies dropped). */
type Jar = Record<string, string>;
function jarOf(cookies: SetCookie[], base: Jar = {}): Jar {
  const out = { ...base };
  for (const c of cookies) {
    if (c.attrs['max-age'] === '0') delete out[c.name];
    else out[c.name] = c.value;
  }
  return out;
}
const cookieHeader = (jar: Jar, extra: string[] = []) => [...Object.entries(jar).map(([k, v]) => `${k}=${v}`), ...extra].join('; ');

/** Asserts the SPEC §6 attributes of one gateway cookie. */
function expectCookieAttrs(c: SetCookie, maxAge: number, secure: boolean) {
  expect(c.attrs.path).toBe('/');
  expect(c.attrs.httponly).toBe(true);
  expect(c.attrs.samesite).toBe('Lax');
  expect(c.attrs['max-age']).toBe(String(maxAge));
  expect('domain' in c.attrs).toBe(false);
  expect('expires' in c.attrs).toBe(false);
  if (secure) expect(c.attrs.secure).toBe(true);
  else expect('secure' in c.attrs).toBe(false);
}

function hiddenRd(html: string): string {
  const m = /<input type="hidden" name="rd" value="([^"]*)">/.exec(html);
  if (!m) throw new Error(`no hidden rd field in:\n${html}`);
  return m[1]
    .replace(/&amp;/g, '&')
    .replace(/&quot;/g, '"')
    .replace(/&#39;/g, "'")
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>');
}

interface Echo {
  method: string;
  path: string;
  query: string;
  headers: Record<string, string | undefined>;
  raw_headers: [string, string][];
  identity: { user: string | null; roles: string[] };
}

function makeClient(h: () => Harness) {
  const formLogin = (username: string, opts: { password?: string; rd?: string; origin?: string | null; referer?: string } = {}) => {
    const fields: Record<string, string> = {};
    if (opts.rd !== undefined) fields.rd = opts.rd;
    fields.username = username;
    fields.password = opts.password ?? GOOD_PASSWORD;
    const headers: Record<string, string> = { 'content-type': FORM, accept: BROWSER_ACCEPT };
    if (opts.origin !== null) headers.origin = opts.origin ?? h().url;
    if (opts.referer) headers.referer = opts.referer;
    return fetch(`${h().url}/api/auth/login`, { method: 'POST', redirect: 'manual', headers, body: new URLSearchParams(fields).toString() });
  };
  /** A successful form login: the jar holding both gateway cookies. */
  const signIn = async (username: string): Promise<Jar> => {
    const res = await formLogin(username);
    expect(res.status).toBe(303);
    await res.arrayBuffer();
    const jar = jarOf(setCookies(res));
    expect(Object.keys(jar).sort()).toEqual(['portcullis_at', 'portcullis_rt']);
    return jar;
  };
  const browserGet = (path: string, jar?: Jar, extra: Record<string, string> = {}) =>
    fetch(`${h().url}${path}`, { redirect: 'manual', headers: { accept: BROWSER_ACCEPT, ...(jar ? { cookie: cookieHeader(jar) } : {}), ...extra } });
  const apiGet = (path: string, jar?: Jar, extra: Record<string, string> = {}) =>
    fetch(`${h().url}${path}`, { redirect: 'manual', headers: { accept: 'application/json', ...(jar ? { cookie: cookieHeader(jar) } : {}), ...extra } });
  const echoRequests = async (): Promise<number> => ((await (await fetch(`${h().echoUrl}/__echo/stats`)).json()) as { requests: number }).requests;
  return { formLogin, signIn, browserGet, apiGet, echoRequests };
}

// ---------------------------------------------------------------------------------------

describe('browser sessions over HTTP', () => {
  let h: Harness;
  const c = makeClient(() => h);
  beforeAll(async () => {
    h = await startHarness({ extraYaml: AUTH_YAML });
    await addUser(h, 'alice', ['staff']);
    await addUser(h, 'bob', []);
  });
  afterAll(() => h.close());

  describe('the sign-in page (GET /api/auth/login)', () => {
    it('is server-rendered HTML with labelled fields, the rd field, no script and a loading stylesheet', async () => {
      const res = await c.browserGet('/api/auth/login?rd=/app/x');
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toMatch(/^text\/html\b/);
      expect(res.headers.get('cache-control')).toBe('no-store');
      const html = await res.text();
      expect(html).toContain('<label for="username">');
      expect(html).toContain('<label for="password">');
      expect(html).toMatch(/<input id="username" name="username" type="text"[^>]*autocomplete="username"/);
      expect(html).toMatch(/<input id="password" name="password" type="password"[^>]*autocomplete="current-password"/);
      expect(html).toContain('<form method="post" action="/api/auth/login"');
      expect(hiddenRd(html)).toBe('/app/x');
      expect(html.toLowerCase()).not.toContain('<script');
      expect(html).not.toMatch(/\son[a-z]+=/i); // no inline event handlers either
      expect(html).not.toMatch(/\sstyle=/i);

      const link = /<link rel="stylesheet" href="([^"]+)">/.exec(html);
      expect(link).not.toBeNull();
      expect(link![1]).toBe('/api/auth/static/portcullis.css');
      const css = await fetch(new URL(link![1], h.url));
      expect(css.status).toBe(200);
      expect(css.headers.get('content-type')).toMatch(/^text\/css\b/);
      const cssText = await css.text();
      expect(cssText).toContain('label{');
    });

    it('sends a strict CSP and refuses framing', async () => {
      const res = await c.browserGet('/api/auth/login?rd=/app/x');
      await res.arrayBuffer();
      const csp = res.headers.get('content-security-policy') ?? '';
      const directives = new Map(
        csp
          .split(';')
          .map((d) => d.trim())
          .filter(Boolean)
          .map((d) => {
            const [name, ...values] = d.split(/\s+/);
            return [name.toLowerCase(), values] as const;
          }),
      );
      expect(directives.get('default-src')).toEqual(["'none'"]);
      expect(directives.get('frame-ancestors')).toEqual(["'none'"]);
      expect(directives.get('style-src')).toEqual(["'self'"]);
      // Scripts fall back to default-src 'none' or are at most 'self'; never inline or eval.
      for (const name of ['script-src', 'script-src-elem', 'script-src-attr']) {
        const v = directives.get(name);
        if (v) {
          expect(v).not.toContain("'unsafe-inline'");
          expect(v).not.toContain("'unsafe-eval'");
        }
      }
      expect(csp).not.toContain('unsafe-inline');
      expect(directives.get('form-action')).toContain("'self'");
      expect(['DENY', 'SAMEORIGIN']).toContain(res.headers.get('x-frame-options'));
      expect(res.headers.get('x-content-type-options')).toBe('nosniff');
      // Plain HTTP listener: no HSTS, and no upgrade-insecure-requests.
      expect(res.headers.get('strict-transport-security')).toBeNull();
      expect(directives.has('upgrade-insecure-requests')).toBe(false);
    });
  });

  describe('form login (POST /api/auth/login)', () => {
    it('sets both session cookies and answers 303 to rd', async () => {
      const res = await c.formLogin('alice', { rd: '/app/x' });
      expect(res.status).toBe(303);
      expect(res.headers.get('location')).toBe('/app/x');
      const cookies = setCookies(res);
      expect(cookies.map((k) => k.name)).toEqual(['portcullis_at', 'portcullis_rt']);
      const [at, rt] = cookies;
      expect(at.raw).toMatch(/^portcullis_at=[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+; Path=\/; HttpOnly; SameSite=Lax; Max-Age=900$/);
      expectCookieAttrs(at, ACCESS_MAX_AGE, false);
      expectCookieAttrs(rt, REFRESH_MAX_AGE, false);
      expect(rt.value).toMatch(/^prt_[A-Za-z0-9_-]{20,}$/);
      // The cookie is a working session: /me with it names alice.
      const me = await c.apiGet('/api/auth/me', jarOf(cookies));
      expect(me.status).toBe(200);
      expect(((await me.json()) as { username: string }).username).toBe('alice');
    });

    it('a login without rd goes to /', async () => {
      const res = await c.formLogin('alice');
      expect(res.status).toBe(303);
      expect(res.headers.get('location')).toBe('/');
      expect(setCookies(res)).toHaveLength(2);
    });

    it('a wrong password re-renders the form with an alert, keeps the username and sets no cookie', async () => {
      const res = await c.formLogin('alice', { password: 'Not-the-right-one-9371', rd: '/app/x' });
      expect(res.status).toBe(401);
      expect(res.headers.get('content-type')).toMatch(/^text\/html\b/);
      expect(res.headers.getSetCookie()).toEqual([]);
      const html = await res.text();
      expect(html).toMatch(/<p class="error" role="alert" id="login-error">The username or password is wrong\.<\/p>/);
      expect(html).toContain('aria-describedby="login-error"');
      expect(html).toMatch(/<input id="username" name="username"[^>]* value="alice"/);
      // The password is never echoed back, and rd survives.
      expect(html).not.toContain('Not-the-right-one-9371');
      expect(hiddenRd(html)).toBe('/app/x');
      expect(html.toLowerCase()).not.toContain('<script');
    });

    it('an unknown user gets the same page (username kept, escaped)', async () => {
      const res = await c.formLogin('nobody-here', { password: 'Not-the-right-one-9371' });
      expect(res.status).toBe(401);
      expect(res.headers.getSetCookie()).toEqual([]);
      const html = await res.text();
      expect(html).toContain('role="alert"');
      expect(html).toContain('value="nobody-here"');
    });

    it('an invalid username is 422 HTML with the form, the value HTML-escaped', async () => {
      const res = await c.formLogin(`"><b>x`, { password: 'whatever-at-all-123' });
      expect(res.status).toBe(422);
      expect(res.headers.get('content-type')).toMatch(/^text\/html\b/);
      expect(res.headers.getSetCookie()).toEqual([]);
      const html = await res.text();
      expect(html).toContain('role="alert"');
      expect(html).toContain('value="&quot;&gt;&lt;b&gt;x"');
      expect(html).not.toContain('<b>x');
    });
  });

  describe('browser navigation to a protected route', () => {
    it('unauthenticated: 302 to the sign-in page with rd = path + query, which round-trips into the form', async () => {
      const res = await c.browserGet('/app/x?y=1');
      expect(res.status).toBe(302);
      expect(res.headers.get('location')).toBe('/api/auth/login?rd=%2Fapp%2Fx%3Fy%3D1');
      expect(res.headers.getSetCookie()).toEqual([]);
      const page = await c.browserGet(res.headers.get('location')!);
      expect(page.status).toBe(200);
      expect(hiddenRd(await page.text())).toBe('/app/x?y=1');
      // An API client gets 401, not a redirect.
      const api = await c.apiGet('/app/x?y=1');
      expect(api.status).toBe(401);
      expect(api.headers.get('www-authenticate')).toBe('Bearer realm="portcullis"');
    });

    it('with the cookies: 200, identity headers set, gateway cookies stripped and other cookies kept', async () => {
      const jar = await c.signIn('alice');
      const html = await c.browserGet('/app/x?y=1', jar);
      expect(html.status).toBe(200);
      expect(await html.text()).toContain('Signed in as <strong>alice</strong>');

      const res = await fetch(`${h.url}/app/x?y=1`, {
        headers: { accept: 'application/json', cookie: `portcullis_at=${jar.portcullis_at}; other=1; portcullis_rt=${jar.portcullis_rt}` },
      });
      expect(res.status).toBe(200);
      const echo = (await res.json()) as Echo;
      expect(echo.path).toBe('/app/x');
      expect(echo.query).toBe('y=1');
      expect(echo.headers['x-auth-user']).toBe('alice');
      expect(echo.headers['x-auth-roles']).toBe('staff');
      expect(echo.headers.cookie).toBe('other=1');
      const rawCookies = echo.raw_headers.filter(([k]) => k.toLowerCase() === 'cookie').map(([, v]) => v);
      expect(rawCookies).toEqual(['other=1']);
      const everything = JSON.stringify(echo);
      expect(everything).not.toContain('portcullis_at');
      expect(everything).not.toContain('portcullis_rt');
      expect(everything).not.toContain(jar.portcullis_at);
      expect(everything).not.toContain(jar.portcullis_rt);
    });

    it('only gateway cookies: no Cookie header reaches the upstream', async () => {
      const jar = await c.signIn('alice');
      const res = await c.apiGet('/app/y', jar);
      expect(res.status).toBe(200);
      const echo = (await res.json()) as Echo;
      expect(echo.identity.user).toBe('alice');
      expect(echo.headers.cookie).toBeUndefined();
    });
  });

  describe('rd (SPEC §6)', () => {
    const EVIL = [
      '//evil.example',
      '/\\evil.example',
      '/%09/evil.example',
      'https://evil.example',
      'https://good.evil',
      'https://good@evil.example',
      'javascript:alert(1)',
      '%2F%2Fevil.example',
      '%5Cevil.example',
      '/\t/evil',
      '/\n/evil',
      '/%0d%0a/evil',
      // more of the same family
      '\\\\evil.example',
      '/%2F/evil.example',
      '/%5C/evil.example',
      '/%252F%252Fevil.example',
      'http://evil.example',
      'HTTPS://evil.example',
      'https:evil.example',
      'data:text/html,x',
      ' //evil.example',
      'https://good:444/x',
      'http://good/x',
    ];

    for (const rd of EVIL) {
      it(`form login with rd=${JSON.stringify(rd)} goes to /`, async () => {
        const res = await c.formLogin('bob', { rd });
        expect(res.status).toBe(303);
        expect(res.headers.get('location')).toBe('/');
        expect(setCookies(res)).toHaveLength(2);
      });
    }

    it('an allowed absolute origin and a same-origin path are kept', async () => {
      const a = await c.formLogin('bob', { rd: 'https://good/dash' });
      expect(a.status).toBe(303);
      expect(a.headers.get('location')).toBe('https://good/dash');
      const b = await c.formLogin('bob', { rd: '/app/x?y=1' });
      expect(b.status).toBe(303);
      expect(b.headers.get('location')).toBe('/app/x?y=1');
      // The gateway's own absolute URL is reduced to its path.
      const own = await c.formLogin('bob', { rd: `${h.url}/app/z?q=2` });
      expect(own.status).toBe(303);
      expect(own.headers.get('location')).toBe('/app/z?q=2');
    });

    it('the sign-in page renders every evil rd as /', async () => {
      for (const rd of EVIL) {
        const res = await c.browserGet(`/api/auth/login?rd=${encodeURIComponent(rd)}`);
        expect(res.status, rd).toBe(200);
        expect(hiddenRd(await res.text()), rd).toBe('/');
      }
      const ok = await c.browserGet(`/api/auth/login?rd=${encodeURIComponent('https://good/dash')}`);
      expect(hiddenRd(await ok.text())).toBe('https://good/dash');
    });
  });

  describe('CSRF on cookie-authenticated unsafe methods (proxied)', () => {
    let jar: Jar;
    beforeAll(async () => {
      jar = await c.signIn('alice');
    });
    const send = (method: string, headers: Record<string, string>, useJar = true) =>
      fetch(`${h.url}/app/form`, {
        method,
        redirect: 'manual',
        headers: { accept: 'application/json', 'content-type': 'application/json', ...(useJar ? { cookie: cookieHeader(jar) } : {}), ...headers },
        body: method === 'GET' || method === 'HEAD' ? undefined : '{"a":1}',
      });

    it('a foreign Origin is 403 csrf, counted, and never reaches the upstream', async () => {
      const before = sample(await metricsText(h), 'portcullis_auth_decisions_total', { route: 'app', decision: 'csrf' });
      const upstreamBefore = await c.echoRequests();
      const res = await send('POST', { origin: 'https://evil.example' });
      expect(res.status).toBe(403);
      expect(res.headers.get('content-type')).toBe('application/problem+json');
      const p = (await res.json()) as { code: string; status: number };
      expect(p.code).toBe('csrf');
      expect(p.status).toBe(403);
      expect(await c.echoRequests()).toBe(upstreamBefore);
      const after = sample(await metricsText(h), 'portcullis_auth_decisions_total', { route: 'app', decision: 'csrf' });
      expect(after).toBe(before + 1);
    });

    it('the own origin, a same-origin Referer, and an allowed origin are forwarded', async () => {
      const cases: Record<string, string>[] = [{ origin: h.url }, { referer: `${h.url}/page` }, { origin: GOOD }];
      for (const headers of cases) {
        const res = await send('POST', headers);
        expect(res.status, JSON.stringify(headers)).toBe(200);
        const echo = (await res.json()) as Echo;
        expect(echo.method).toBe('POST');
        expect(echo.identity.user).toBe('alice');
      }
    });

    it('neither Origin nor Referer, a foreign Referer, or Origin "null" alone: 403 csrf', async () => {
      const upstreamBefore = await c.echoRequests();
      // `Origin: null` is refused even with a same-origin Referer: browsers send it after a
      // cross-origin redirect, with the Referer of the page that started the chain.
      const cases: Record<string, string>[] = [
        {},
        { referer: 'https://evil.example/page' },
        { origin: 'null' },
        { origin: 'null', referer: `${h.url}/app/page?x=1` },
        { origin: 'https://good.evil' },
        { origin: h.url.replace('127.0.0.1', 'localhost') },
      ];
      for (const headers of cases) {
        const res = await send('POST', headers);
        expect(res.status, JSON.stringify(headers)).toBe(403);
        expect(((await res.json()) as { code: string }).code).toBe('csrf');
      }
      expect(await c.echoRequests()).toBe(upstreamBefore);
    });

    it('PUT, PATCH and DELETE from a foreign origin are 403 csrf too; GET from it is fine', async () => {
      for (const method of ['PUT', 'PATCH', 'DELETE']) {
        const res = await send(method, { origin: 'https://evil.example' });
        expect(res.status, method).toBe(403);
        expect(((await res.json()) as { code: string }).code).toBe('csrf');
        const ok = await send(method, { origin: h.url });
        expect(ok.status, method).toBe(200);
        expect(((await ok.json()) as Echo).method).toBe(method);
      }
      const get = await send('GET', { origin: 'https://evil.example' });
      expect(get.status).toBe(200);
      expect(((await get.json()) as Echo).identity.user).toBe('alice');
    });

    it('a bearer-authenticated POST is exempt', async () => {
      const token = await login(h, 'alice');
      const res = await send('POST', { origin: 'https://evil.example', authorization: `Bearer ${token}` }, false);
      expect(res.status).toBe(200);
      const echo = (await res.json()) as Echo;
      expect(echo.identity.user).toBe('alice');
      expect(echo.headers.authorization).toBeUndefined();
    });

    it('an anonymous POST from a foreign origin is just unauthenticated (401), not csrf', async () => {
      const res = await send('POST', { origin: 'https://evil.example' }, false);
      expect(res.status).toBe(401);
      expect(((await res.json()) as { code: string }).code).not.toBe('csrf');
    });
  });

  describe('CSRF on the gateway forms', () => {
    it('a form login from a foreign origin (or with no origin at all) is 403 and sets no cookie', async () => {
      for (const opts of [{ origin: 'https://evil.example' }, { origin: null }, { origin: null, referer: 'https://evil.example/x' }]) {
        const res = await c.formLogin('alice', opts);
        expect(res.status, JSON.stringify(opts)).toBe(403);
        expect(res.headers.getSetCookie()).toEqual([]);
        expect(res.headers.get('location')).toBeNull();
        expect(res.headers.get('content-type')).toMatch(/^text\/html\b/);
        await res.arrayBuffer();
      }
      // From the allowed origin, and with a same-origin Referer only, it works.
      const good = await c.formLogin('alice', { origin: GOOD });
      expect(good.status).toBe(303);
      const ref = await c.formLogin('alice', { origin: null, referer: `${h.url}/api/auth/login` });
      expect(ref.status).toBe(303);
    });

    it('a form logout from a foreign origin is 403 and the session keeps working', async () => {
      const jar = await c.signIn('alice');
      const res = await fetch(`${h.url}/api/auth/logout`, {
        method: 'POST',
        redirect: 'manual',
        headers: { 'content-type': FORM, origin: 'https://evil.example', cookie: cookieHeader(jar) },
        body: '',
      });
      expect(res.status).toBe(403);
      expect(res.headers.getSetCookie()).toEqual([]);
      await res.arrayBuffer();
      const still = await c.browserGet('/app/x', jar);
      expect(still.status).toBe(200);
      expect(await still.text()).toContain('Signed in as <strong>alice</strong>');
      // A JSON logout with the cookie from a foreign origin is refused too.
      const json = await fetch(`${h.url}/api/auth/logout`, { method: 'POST', headers: { origin: 'https://evil.example', cookie: cookieHeader(jar) } });
      expect(json.status).toBe(403);
      expect(((await json.json()) as { code: string }).code).toBe('csrf');
      expect((await c.apiGet('/api/auth/me', jar)).status).toBe(200);
    });
  });

  describe('CORS on the auth API', () => {
    it('a preflight from an allowed origin is answered with that origin and credentials', async () => {
      const res = await fetch(`${h.url}/api/auth/me`, {
        method: 'OPTIONS',
        headers: { origin: GOOD, 'access-control-request-method': 'GET', 'access-control-request-headers': 'authorization' },
      });
      expect(res.status).toBe(204);
      expect(res.headers.get('access-control-allow-origin')).toBe(GOOD);
      expect(res.headers.get('access-control-allow-credentials')).toBe('true');
      expect(res.headers.get('access-control-allow-methods')).toMatch(/\bGET\b/);
      expect((res.headers.get('access-control-allow-headers') ?? '').toLowerCase()).toContain('authorization');
      expect(res.headers.get('vary') ?? '').toMatch(/origin/i);
    });

    it('a preflight from a foreign origin gets no CORS grant', async () => {
      for (const origin of ['https://evil.example', 'https://good.evil', 'http://good', 'null']) {
        const res = await fetch(`${h.url}/api/auth/me`, { method: 'OPTIONS', headers: { origin, 'access-control-request-method': 'GET' } });
        expect(res.status).toBeLessThan(500);
        expect(res.headers.get('access-control-allow-origin'), origin).toBeNull();
        expect(res.headers.get('access-control-allow-credentials'), origin).toBeNull();
      }
    });

    it('a simple GET from an allowed origin carries the grant (never *); a foreign one does not', async () => {
      const jar = await c.signIn('alice');
      const ok = await c.apiGet('/api/auth/me', jar, { origin: GOOD });
      expect(ok.status).toBe(200);
      expect(ok.headers.get('access-control-allow-origin')).toBe(GOOD);
      expect(ok.headers.get('access-control-allow-credentials')).toBe('true');
      expect(((await ok.json()) as { username: string }).username).toBe('alice');
      const foreign = await c.apiGet('/api/auth/me', jar, { origin: 'https://evil.example' });
      expect(foreign.headers.get('access-control-allow-origin')).toBeNull();
      await foreign.arrayBuffer();
      const none = await c.apiGet('/api/auth/me', jar);
      expect(none.headers.get('access-control-allow-origin')).toBeNull();
      await none.arrayBuffer();
    });
  });

  describe('sign-out page', () => {
    it('GET shows who is signed in and a form posting to /api/auth/logout; no script', async () => {
      const jar = await c.signIn('alice');
      const res = await c.browserGet('/api/auth/logout', jar);
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toMatch(/^text\/html\b/);
      expect(res.headers.get('content-security-policy') ?? '').toContain("default-src 'none'");
      const html = await res.text();
      expect(html).toContain('<form method="post" action="/api/auth/logout">');
      expect(html).toContain('Signed in as <strong>alice</strong>');
      expect(html.toLowerCase()).not.toContain('<script');
      // GET never signs out.
      expect((await c.apiGet('/api/auth/me', jar)).status).toBe(200);
      const anon = await c.browserGet('/api/auth/logout');
      expect(anon.status).toBe(200);
      expect(await anon.text()).toContain('You are not signed in.');
    });

    it('the form POST clears both cookies, goes to the sign-in page, and the old cookies are dead', async () => {
      const jar = await c.signIn('alice');
      const res = await fetch(`${h.url}/api/auth/logout`, {
        method: 'POST',
        redirect: 'manual',
        headers: { 'content-type': FORM, origin: h.url, cookie: cookieHeader(jar) },
        body: '',
      });
      expect(res.status).toBe(303);
      expect(res.headers.get('location')).toBe('/api/auth/login');
      const cleared = setCookies(res);
      expect(cleared.map((k) => k.name).sort()).toEqual(['portcullis_at', 'portcullis_rt']);
      for (const k of cleared) {
        expect(k.value).toBe('');
        expectCookieAttrs(k, 0, false);
      }
      const access = await c.browserGet('/app/x', { portcullis_at: jar.portcullis_at });
      expect(access.status).toBe(302);
      expect(access.headers.get('location')).toBe('/api/auth/login?rd=%2Fapp%2Fx');
      // Both old cookies: still 302, and the browser is told to drop them.
      const both = await c.browserGet('/app/x', jar);
      expect(both.status).toBe(302);
      expect(jarOf(setCookies(both), jar)).toEqual({});
      expect((await c.apiGet('/api/auth/me', jar)).status).toBe(401);
    });

    it('a form POST from a signed-out browser just lands on the sign-in page', async () => {
      const res = await fetch(`${h.url}/api/auth/logout`, { method: 'POST', redirect: 'manual', headers: { 'content-type': FORM, origin: h.url }, body: '' });
      expect(res.status).toBe(303);
      expect(res.headers.get('location')).toBe('/api/auth/login');
    });
  });
});

// ---------------------------------------------------------------------------------------

describe('silent refresh with an injected clock', () => {
  let h: Harness;
  let offsetMs = 0;
  const c = makeClient(() => h);
  const advance = (ms: number) => {
    offsetMs += ms;
  };
  // A silent-refresh result is shared only with siblings arriving while it runs (no window
  // after it: see silentRefresh in src/auth/login-flow.ts), so nothing here waits in real time.
  beforeAll(async () => {
    // ROUTES plus the echo app's helpers (here: /__echo/reset, an upstream that drops the connection).
    const routes = `${ROUTES}
  - name: echo-tools
    match: { path: /__echo/** }
    upstream: echo
    access: authenticated
`;
    h = await startHarness({ extraYaml: AUTH_YAML, routes, now: () => new Date(Date.now() + offsetMs) });
    await addUser(h, 'sam', ['staff']);
  });
  afterAll(() => h.close());

  it('an expired access cookie is refreshed on the proxied request; the spent refresh cookie past the grace revokes the session', async () => {
    const old = await c.signIn('sam');
    advance(16 * 60_000); // past access_ttl (15 min)
    // The access cookie alone is now refused.
    expect((await c.apiGet('/api/auth/me', { portcullis_at: old.portcullis_at })).status).toBe(401);

    const res = await c.browserGet('/app/x', old);
    expect(res.status).toBe(200);
    expect(await res.text()).toContain('Signed in as <strong>sam</strong>');
    const fresh = setCookies(res);
    expect(fresh.map((k) => k.name)).toEqual(['portcullis_at', 'portcullis_rt']);
    expectCookieAttrs(fresh[0], ACCESS_MAX_AGE, false);
    expectCookieAttrs(fresh[1], REFRESH_MAX_AGE, false);
    const next = jarOf(fresh);
    expect(next.portcullis_at).not.toBe(old.portcullis_at);
    expect(next.portcullis_rt).not.toBe(old.portcullis_rt);
    const me = await c.apiGet('/api/auth/me', next);
    expect(me.status).toBe(200);
    expect(me.headers.getSetCookie()).toEqual([]); // a valid access cookie needs no refresh
    expect(((await me.json()) as { username: string }).username).toBe('sam');

    // Replay the OLD cookies past the 10 s grace.
    advance(11_000);
    const before = sample(await metricsText(h), 'portcullis_token_refresh_total', { result: 'reuse_detected' });
    const replay = await c.browserGet('/app/x', old);
    expect(replay.status).toBe(302);
    expect(replay.headers.get('location')).toBe('/api/auth/login?rd=%2Fapp%2Fx');
    const cleared = setCookies(replay);
    expect(cleared.map((k) => k.name).sort()).toEqual(['portcullis_at', 'portcullis_rt']);
    for (const k of cleared) expect(k.attrs['max-age']).toBe('0');
    expect(sample(await metricsText(h), 'portcullis_token_refresh_total', { result: 'reuse_detected' })).toBe(before + 1);
    expect(h.logs.some((l) => l.event === 'refresh_reuse_detected')).toBe(true);

    // Reuse detection revoked the whole session: the new cookies are dead too.
    const after = await c.browserGet('/app/x', next);
    expect(after.status).toBe(302);
    expect(jarOf(setCookies(after), next)).toEqual({});
    expect((await c.apiGet('/api/auth/me', { portcullis_at: next.portcullis_at })).status).toBe(401);
  });

  it('within the grace: concurrent requests with the same expired cookies all succeed, and a late sibling gets an access cookie only', async () => {
    const old = await c.signIn('sam');
    advance(16 * 60_000);
    const [a, b] = await Promise.all([c.apiGet('/app/x', old), c.apiGet('/app/x', old)]);
    expect(a.status).toBe(200);
    expect(b.status).toBe(200);
    for (const r of [a, b]) expect(((await r.json()) as Echo).identity.user).toBe('sam');
    // Each answer carries a fresh access cookie; the refresh cookie was rotated (siblings in
    // one process share the rotated pair).
    const ja = jarOf(setCookies(a), old);
    const jb = jarOf(setCookies(b), old);
    for (const j of [ja, jb]) expect(j.portcullis_at).not.toBe(old.portcullis_at);
    expect(ja.portcullis_rt !== old.portcullis_rt || jb.portcullis_rt !== old.portcullis_rt).toBe(true);

    // A sibling arriving later (another replica, say), still within the 10 s grace.
    advance(5_000);
    const late = await c.apiGet('/app/x', old);
    expect(late.status).toBe(200);
    expect(((await late.json()) as Echo).identity.user).toBe('sam');
    const lateCookies = setCookies(late);
    expect(lateCookies.map((k) => k.name)).toEqual(['portcullis_at']);
    expectCookieAttrs(lateCookies[0], ACCESS_MAX_AGE, false);

    // The session is alive: both the rotated pair and the late access cookie work.
    for (const jar of [{ portcullis_at: ja.portcullis_at }, { portcullis_at: jb.portcullis_at }, { portcullis_at: lateCookies[0].value }]) {
      const me = await c.apiGet('/api/auth/me', jar);
      expect(me.status).toBe(200);
      expect(((await me.json()) as { username: string }).username).toBe('sam');
    }
  });

  it('a refresh cookie replayed right after sign-out is refused (no shared refresh result outlives a revocation)', async () => {
    const old = await c.signIn('sam');
    advance(16 * 60_000);
    const first = await c.apiGet('/app/x', old);
    expect(first.status).toBe(200);
    await first.arrayBuffer();
    const next = jarOf(setCookies(first));
    const out = await fetch(`${h.url}/api/auth/logout`, {
      method: 'POST',
      redirect: 'manual',
      headers: { 'content-type': FORM, origin: h.url, cookie: cookieHeader(next) },
      body: '',
    });
    expect(out.status).toBe(303);
    // The session is revoked: the old cookies must not authenticate anything, at once.
    const replay = await c.browserGet('/app/x', old);
    expect(replay.status).toBe(302);
    const echoed = await replay.text();
    expect(echoed).not.toContain('Signed in as <strong>sam</strong>');
  });

  it('a silent refresh on a request whose upstream fails still hands the browser its new cookies', async () => {
    const old = await c.signIn('sam');
    advance(16 * 60_000);
    const failed = await c.apiGet('/__echo/reset', old);
    expect(failed.status).toBe(502);
    await failed.arrayBuffer();
    // The refresh cookie was spent by this request: the browser must be given its successor,
    // or the session dies as "reuse" on the next request after the grace.
    const jar = jarOf(setCookies(failed), old);
    expect(jar.portcullis_rt).not.toBe(old.portcullis_rt);
    advance(11_000);
    const next = await c.apiGet('/app/x', jar);
    expect(next.status).toBe(200);
    expect(((await next.json()) as Echo).identity.user).toBe('sam');
  });

  it('a silent refresh on a WebSocket upgrade sends the new cookies with the 101', async () => {
    const old = await c.signIn('sam');
    advance(16 * 60_000);
    const ws = await upgradeHead(h.url, '/app/ws', { origin: h.url, cookie: cookieHeader(old) });
    expect(ws.status).toBe(101);
    const jar = jarOf(ws.setCookies.map(parseSetCookie), old);
    expect(jar.portcullis_rt).not.toBe(old.portcullis_rt);
    advance(11_000);
    const next = await c.apiGet('/app/x', jar);
    expect(next.status).toBe(200);
    expect(((await next.json()) as Echo).identity.user).toBe('sam');
  });

  it('an expired refresh cookie is not refreshed: 302 and both cookies cleared', async () => {
    const old = await c.signIn('sam');
    advance(7 * 86_400_000 + 60_000); // past refresh_ttl (7 d)
    const res = await c.browserGet('/app/x', old);
    expect(res.status).toBe(302);
    expect(jarOf(setCookies(res), old)).toEqual({});
  });
});

// ---------------------------------------------------------------------------------------

function httpsCall(
  url: string,
  ca: string,
  opts: { method?: string; body?: string; headers?: Record<string, string> } = {},
): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; text: string }> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(url, { method: opts.method ?? 'GET', ca, headers: opts.headers ?? {} }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, text }));
    });
    req.on('error', reject);
    req.end(opts.body);
  });
}

describe('browser sessions over TLS', () => {
  let h: Harness;
  let ca: string;
  let tlsDir: string;
  beforeAll(async () => {
    const tls = selfSigned();
    tlsDir = tls.dir;
    ca = readFileSync(tls.cert, 'utf8');
    h = await startHarness({ extraYaml: `tls: { cert: ${tls.cert}, key: ${tls.key} }\n${AUTH_YAML}` });
    await addUser(h, 'tina', ['staff']);
  });
  afterAll(async () => {
    await h.close();
    rmSync(tlsDir, { recursive: true, force: true });
  });

  it('form login sets __Host- prefixed Secure cookies, which authenticate and never reach the upstream', async () => {
    expect(h.url.startsWith('https://')).toBe(true);
    const res = await httpsCall(`${h.url}/api/auth/login`, ca, {
      method: 'POST',
      headers: { 'content-type': FORM, origin: h.url },
      body: new URLSearchParams({ rd: '/app/x', username: 'tina', password: GOOD_PASSWORD }).toString(),
    });
    expect(res.status).toBe(303);
    expect(res.headers.location).toBe('/app/x');
    expect(res.headers['strict-transport-security']).toBe('max-age=31536000; includeSubDomains');
    const cookies = ((res.headers['set-cookie'] as string[] | undefined) ?? []).map(parseSetCookie);
    expect(cookies.map((k) => k.name)).toEqual(['__Host-portcullis_at', '__Host-portcullis_rt']);
    expect(cookies[0].raw).toMatch(/^__Host-portcullis_at=[^;]+; Path=\/; HttpOnly; SameSite=Lax; Max-Age=900; Secure$/);
    expectCookieAttrs(cookies[0], ACCESS_MAX_AGE, true);
    expectCookieAttrs(cookies[1], REFRESH_MAX_AGE, true);

    const jar = jarOf(cookies);
    const echo = await httpsCall(`${h.url}/app/x?y=1`, ca, { headers: { accept: 'application/json', cookie: cookieHeader(jar, ['other=1']) } });
    expect(echo.status).toBe(200);
    const body = JSON.parse(echo.text) as Echo;
    expect(body.headers['x-auth-user']).toBe('tina');
    expect(body.headers['x-forwarded-proto']).toBe('https');
    expect(body.headers.cookie).toBe('other=1');
    expect(echo.text).not.toContain('portcullis_');

    // The plain-HTTP cookie names mean nothing here.
    const plain = await httpsCall(`${h.url}/app/x`, ca, { headers: { accept: BROWSER_ACCEPT, cookie: `portcullis_at=${jar['__Host-portcullis_at']}` } });
    expect(plain.status).toBe(302);
  });

  it('logout over TLS clears the __Host- cookies with Secure', async () => {
    const login = await httpsCall(`${h.url}/api/auth/login`, ca, {
      method: 'POST',
      headers: { 'content-type': FORM, origin: h.url },
      body: new URLSearchParams({ username: 'tina', password: GOOD_PASSWORD }).toString(),
    });
    expect(login.status).toBe(303);
    const jar = jarOf(((login.headers['set-cookie'] as string[]) ?? []).map(parseSetCookie));
    const out = await httpsCall(`${h.url}/api/auth/logout`, ca, {
      method: 'POST',
      headers: { 'content-type': FORM, origin: h.url, cookie: cookieHeader(jar), 'content-length': '0' },
      body: '',
    });
    expect(out.status).toBe(303);
    const cleared = ((out.headers['set-cookie'] as string[]) ?? []).map(parseSetCookie);
    expect(cleared.map((k) => k.name).sort()).toEqual(['__Host-portcullis_at', '__Host-portcullis_rt']);
    for (const k of cleared) expectCookieAttrs(k, 0, true);
  });
});
