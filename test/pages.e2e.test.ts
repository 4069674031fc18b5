/**
 * End-to-end (issue 13 part 3): every page a browser sees from the gateway shares the one
 * layout — the viewport meta, the one stylesheet, no inline style or script — and every error
 * page offers a way back (Home and Sign out, as plain links). The 423 and 429 pages say when
 * to try again in words ("Try again in about 15 minutes"), from a real lockout and a real rate
 * limit, while the Retry-After header keeps its seconds.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROUTES, addUser, login, startHarness, type Harness } from './support/helpers.js';
import { closedPort } from './support/proxy.js';

const PREFIX = '/api/auth';
const BROWSER_ACCEPT = 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8';

/** What every gateway page carries, and never carries. */
function expectSharedLayout(html: string) {
  expect(html).toContain('<meta name="viewport" content="width=device-width, initial-scale=1">');
  expect(html).toContain(`<link rel="stylesheet" href="${PREFIX}/static/portcullis.css">`);
  expect(html.toLowerCase()).not.toContain('<script');
  expect(html.toLowerCase()).not.toContain('<style');
  expect(html).not.toMatch(/\sstyle=/i);
  expect(html).not.toMatch(/\son[a-z]+=/i);
}

/** An error page's way back: home and the sign-out page, as links. */
function expectWayBack(html: string) {
  expect(html).toContain('<a href="/">Home</a>');
  expect(html).toContain(`<a href="${PREFIX}/logout">Sign out</a>`);
}

/** A sign-in form post, as a browser sends it. */
function signInForm(h: Harness, username: string, password: string): Promise<Response> {
  return fetch(`${h.url}${PREFIX}/login`, {
    method: 'POST',
    redirect: 'manual',
    headers: { 'content-type': 'application/x-www-form-urlencoded', origin: h.url, accept: BROWSER_ACCEPT },
    body: new URLSearchParams({ username, password, rd: '/app/x' }).toString(),
  });
}

describe('error pages for browsers: layout, way back, wording', () => {
  let h: Harness;
  let hanging: Server;
  let token: string;

  beforeAll(async () => {
    // `dead`: nothing listens (502); `stuck`: accepts and never answers (504 after 300 ms).
    const dead = await closedPort();
    hanging = createServer(() => {});
    await new Promise<void>((r) => hanging.listen(0, '127.0.0.1', r));
    const stuck = (hanging.address() as AddressInfo).port;
    h = await startHarness({
      extraYaml: `
auth:
  login_rate_limit: { requests: 100000, per: 1m }
  api_rate_limit: { requests: 100000, per: 1m }
  lockout: { max_failures: 5, window: 15m, duration: 15m }
`,
      upstreamExtra: `  dead:\n    url: http://127.0.0.1:${dead}\n    timeout: 5s\n  stuck:\n    url: http://127.0.0.1:${stuck}\n    timeout: 300ms\n`,
      routes: `${ROUTES}  - name: dead\n    match: { path: /dead/** }\n    upstream: dead\n    access: public\n  - name: stuck\n    match: { path: /stuck/** }\n    upstream: stuck\n    access: public\n`,
    });
    await addUser(h, 'pat', []);
    await addUser(h, 'lou', []);
    token = await login(h, 'pat');
  });
  afterAll(async () => {
    await h?.close();
    hanging?.closeAllConnections();
    await new Promise((r) => hanging?.close(r));
  });

  const get = (path: string, headers: Record<string, string> = {}) =>
    fetch(`${h.url}${path}`, { redirect: 'manual', headers: { accept: BROWSER_ACCEPT, ...headers } });

  it.each([
    ['403', '/internal/page', true, 403, 'Access denied'],
    ['403 (role missing)', '/admin/x', true, 403, 'Forbidden'],
    ['404', '/no/such/route', false, 404, 'Not found'],
    ['502', '/dead/x', false, 502, undefined],
    ['504', '/stuck/x', false, 504, undefined],
  ] as const)('%s: the shared layout and a way back', async (_name, path, signedIn, status, title) => {
    const r = await get(path, signedIn ? { authorization: `Bearer ${token}` } : {});
    expect(r.status).toBe(status);
    expect(r.headers.get('content-type')).toMatch(/^text\/html\b/);
    const html = await r.text();
    expectSharedLayout(html);
    expectWayBack(html);
    if (title) expect(html).toContain(`<h1>${title}</h1>`);
    expect(html).toContain(`${status} · `);
  });

  it('the sign-in, 2FA and sign-out pages share the layout too', async () => {
    for (const path of [`${PREFIX}/login?rd=/app/x`, `${PREFIX}/logout`]) {
      const r = await get(path);
      expect(r.status, path).toBe(200);
      expectSharedLayout(await r.text());
    }
    // The code prompt shows once a sign-in is between its two steps (the MFA cookie is set).
    const mfa = await get(`${PREFIX}/2fa?rd=/app/x`, { cookie: 'portcullis_mfa=pending' });
    expect(mfa.status).toBe(200);
    const html = await mfa.text();
    expect(html).toContain('<label for="code">');
    expectSharedLayout(html);
  });

  it('the sign-out page linked from the error pages answers a browser, signed in or not', async () => {
    const r = await get(`${PREFIX}/logout`);
    expect(await r.text()).toContain('You are not signed in.');
  });

  it('423: a locked account is told "Try again in about 15 minutes", Retry-After keeps its seconds', async () => {
    for (let i = 0; i < 5; i++) {
      const r = await signInForm(h, 'lou', `wrong password number ${i}`);
      expect(r.status).toBe(401);
      await r.arrayBuffer();
    }
    const r = await signInForm(h, 'lou', `wrong password number 6`);
    expect(r.status).toBe(423);
    const seconds = Number(r.headers.get('retry-after'));
    expect(seconds).toBeGreaterThan(880);
    expect(seconds).toBeLessThanOrEqual(900);
    const html = await r.text();
    expectSharedLayout(html);
    expect(html).toContain('Try again in about 15 minutes.');
    expect(html).not.toMatch(/\d+ s\b/);
    // An API client still gets the seconds in problem+json.
    const api = await fetch(`${h.url}${PREFIX}/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ username: 'lou', password: 'x' }),
    });
    expect(api.status).toBe(423);
    expect(api.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    expect(((await api.json()) as { code: string }).code).toBe('account_locked');
  });
});

describe('429 for browsers', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startHarness({ extraYaml: `\nauth:\n  login_rate_limit: { requests: 2, per: 1m }\n` });
    await addUser(h, 'kim', []);
  });
  afterAll(async () => {
    await h?.close();
  });

  it('the page says when to retry, has the layout and a way back; Retry-After stays in seconds', async () => {
    let r: Response | undefined;
    for (let i = 0; i < 3; i++) {
      r = await signInForm(h, 'kim', 'not the password');
      if (r.status === 429) break;
      await r.arrayBuffer();
    }
    expect(r?.status).toBe(429);
    const seconds = Number(r!.headers.get('retry-after'));
    expect(seconds).toBeGreaterThanOrEqual(0);
    expect(seconds).toBeLessThanOrEqual(60);
    const html = await r!.text();
    expectSharedLayout(html);
    expectWayBack(html);
    expect(html).toMatch(/Try again in (less than a minute|about 1 minute)\./);
    expect(html).toContain('<h1>Too many requests</h1>');
  });
});
