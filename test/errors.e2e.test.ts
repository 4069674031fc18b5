/**
 * End-to-end: the one responder (src/http/respond.ts). Every error the gateway answers with —
 * auth API or proxied route, problem+json, HTML page or raw socket — is written by the same
 * code and logged exactly once: 4xx at info, 5xx at error with the stack. Nothing secret ever
 * reaches a log line, and no stack ever reaches a client.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GOOD_PASSWORD, ROUTES, addUser, login, rawRequest, sendRaw, startHarness, type Harness } from './support/helpers.js';
import { closedPort } from './support/proxy.js';

const PREFIX = '/api/auth';
const BROWSER_ACCEPT = 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8';

let h: Harness;
let token: string;

beforeAll(async () => {
  // `dead`: an upstream nothing listens on (every request to it is refused: 502).
  const dead = await closedPort();
  h = await startHarness({
    upstreamExtra: `  dead:\n    url: http://127.0.0.1:${dead}\n    timeout: 5s\n`,
    routes: `${ROUTES}  - name: dead\n    match: { path: /dead/** }\n    upstream: dead\n    access: public\n`,
  });
  await addUser(h, 'erin', ['admin']);
  token = await login(h, 'erin');
});
afterAll(async () => {
  await h?.close();
});

type Line = Record<string, unknown>;

/** Runs `fn` and returns the log lines written meanwhile. */
async function logsOf(fn: () => Promise<void>): Promise<Line[]> {
  const before = h.logs.length;
  await fn();
  return h.logs.slice(before);
}

/** The responder's lines (the ones describing an error response) among `lines`. */
const errorLines = (lines: Line[]) => lines.filter((l) => typeof l.error_code === 'string');

/** Replaces a method of `target` for the duration of `fn`. */
async function broken<T extends object, K extends keyof T>(target: T, key: K, impl: T[K], fn: () => Promise<void>): Promise<void> {
  const original = target[key];
  target[key] = impl;
  try {
    await fn();
  } finally {
    target[key] = original;
  }
}

function expectOpaque500(status: number, body: string, marker: string) {
  expect(status).toBe(500);
  const p = JSON.parse(body) as { code: string; status: number; detail: string };
  expect(p).toMatchObject({ code: 'internal_error', status: 500 });
  expect(body).not.toContain(marker);
  expect(body).not.toMatch(/ at .*\.ts:\d+/);
}

describe('5xx: logged once, at error, with the stack', () => {
  it('an internal error in the auth API (GET /sessions) is a 500 and one error line with its stack', async () => {
    const marker = 'session listing broke (auth-api-marker)';
    const lines = await logsOf(() =>
      broken(
        h.app.auth,
        'listSessions',
        async () => {
          throw new TypeError(marker);
        },
        async () => {
          const r = await fetch(`${h.url}${PREFIX}/sessions`, { headers: { authorization: `Bearer ${token}` } });
          expectOpaque500(r.status, await r.text(), marker);
        },
      ),
    );
    const logged = lines.filter((l) => JSON.stringify(l).includes(marker));
    expect(logged, JSON.stringify(lines)).toHaveLength(1);
    expect(logged[0]).toMatchObject({ level: 'error', status: 500, error_code: 'internal_error', method: 'GET', path: `${PREFIX}/sessions`, err: marker });
    expect(String(logged[0].stack)).toContain(`TypeError: ${marker}`);
    expect(String(logged[0].stack)).toMatch(/\n\s+at /);
    expect(JSON.stringify(lines)).not.toContain(token);
  });

  it('the same on a proxied route: one error line of the same shape', async () => {
    const marker = 'token check broke (proxy-marker)';
    const lines = await logsOf(() =>
      broken(
        h.app.auth,
        'verify',
        async () => {
          throw new TypeError(marker);
        },
        async () => {
          const r = await fetch(`${h.url}/app/x?secret=abc`, { headers: { authorization: `Bearer ${token}` } });
          expectOpaque500(r.status, await r.text(), marker);
        },
      ),
    );
    const logged = lines.filter((l) => JSON.stringify(l).includes(marker));
    expect(logged, JSON.stringify(lines)).toHaveLength(1);
    // The path is logged without its query string (queries may carry secrets).
    expect(logged[0]).toMatchObject({ level: 'error', status: 500, error_code: 'internal_error', method: 'GET', path: '/app/x', err: marker });
    expect(String(logged[0].stack)).toContain(`TypeError: ${marker}`);
    expect(JSON.stringify(lines)).not.toContain(token);
    expect(JSON.stringify(lines)).not.toContain('secret=abc');
  });

  it('an internal error behind the sign-in form is logged once too', async () => {
    const marker = 'sign-in broke (form-marker)';
    const lines = await logsOf(() =>
      broken(
        h.app.auth,
        'login',
        async () => {
          throw new TypeError(marker);
        },
        async () => {
          const r = await fetch(`${h.url}${PREFIX}/login`, {
            method: 'POST',
            redirect: 'manual',
            headers: { 'content-type': 'application/x-www-form-urlencoded', origin: h.url },
            body: `username=erin&password=${encodeURIComponent(GOOD_PASSWORD)}&rd=%2F`,
          });
          expect(r.status).toBe(500);
          const text = await r.text();
          expect(text).not.toContain(marker);
        },
      ),
    );
    const logged = lines.filter((l) => JSON.stringify(l).includes(marker));
    expect(logged, JSON.stringify(lines)).toHaveLength(1);
    expect(logged[0]).toMatchObject({ level: 'error', status: 500, error_code: 'internal_error', method: 'POST', path: `${PREFIX}/login` });
    expect(JSON.stringify(lines)).not.toContain(GOOD_PASSWORD);
  });
});

describe('a named failure is the same one line, with its event', () => {
  it('a refused upstream (502) is one error line for the request, carrying event upstream_error', async () => {
    const lines = await logsOf(async () => {
      const r = await fetch(`${h.url}/dead/refused-marker?secret=abc`);
      expect(r.status).toBe(502);
      expect(await r.json()).toMatchObject({ status: 502, code: 'upstream_unavailable' });
    });
    // Anything written about this request (by its path, its upstream or the event) besides its
    // access line (event "request", docs/observability.md), which carries the same request id.
    const about = lines.filter(
      (l) => l.event !== 'request' && (JSON.stringify(l).includes('refused-marker') || l.upstream === 'dead' || l.event === 'upstream_error'),
    );
    expect(about, JSON.stringify(lines)).toHaveLength(1);
    // Written when the response closes, which may be a moment after the client has read it.
    const accessLines = () => h.logs.filter((l) => l.event === 'request' && l.path === '/dead/refused-marker');
    for (let i = 0; i < 100 && accessLines().length === 0; i++) await new Promise((r) => setTimeout(r, 10));
    const access = accessLines();
    expect(access).toHaveLength(1);
    expect(access[0]).toMatchObject({ status: 502, upstream: 'dead', route: 'dead', request_id: about[0].request_id });
    expect(about[0]).toMatchObject({
      level: 'error',
      status: 502,
      error_code: 'upstream_unavailable',
      method: 'GET',
      path: '/dead/refused-marker',
      event: 'upstream_error',
      upstream: 'dead',
      reason: 'refused',
      cause_code: 'ECONNREFUSED',
    });
    // The socket error's own stack, not the gateway error's.
    expect(String(about[0].stack)).toMatch(/ECONNREFUSED[\s\S]*\n\s+at /);
    expect(JSON.stringify(lines)).not.toContain('secret=abc');
  });
});

describe('4xx: logged once, at info, without a stack', () => {
  it('the auth API: 401 on /me', async () => {
    const lines = await logsOf(async () => {
      expect((await fetch(`${h.url}${PREFIX}/me`)).status).toBe(401);
    });
    const logged = errorLines(lines);
    expect(logged, JSON.stringify(lines)).toHaveLength(1);
    expect(logged[0]).toMatchObject({ level: 'info', status: 401, error_code: 'unauthenticated', method: 'GET', path: `${PREFIX}/me` });
    expect(logged[0].stack).toBeUndefined();
  });

  it('a proxied route: 401 for an API client, 403 on a deny route', async () => {
    const lines = await logsOf(async () => {
      expect((await fetch(`${h.url}/app/x`)).status).toBe(401);
      expect((await fetch(`${h.url}/internal/x`, { headers: { authorization: `Bearer ${token}` } })).status).toBe(403);
    });
    expect(errorLines(lines).map((l) => [l.level, l.status, l.error_code, l.path])).toEqual([
      ['info', 401, 'unauthenticated', '/app/x'],
      ['info', 403, 'access_denied', '/internal/x'],
    ]);
    expect(JSON.stringify(lines)).not.toContain(token);
  });

  it('the sign-in form answering a wrong password with its page', async () => {
    const lines = await logsOf(async () => {
      const r = await fetch(`${h.url}${PREFIX}/login`, {
        method: 'POST',
        redirect: 'manual',
        headers: { 'content-type': 'application/x-www-form-urlencoded', origin: h.url },
        body: 'username=erin&password=not-the-password-4471&rd=%2F',
      });
      expect(r.status).toBe(401);
      expect(await r.text()).toContain('id="login-error"');
    });
    expect(errorLines(lines).map((l) => [l.level, l.status, l.error_code])).toEqual([['info', 401, 'invalid_credentials']]);
    expect(JSON.stringify(lines)).not.toContain('not-the-password-4471');
  });

  it('the admin listener logs a failure of its own (/metrics 500) once, at error, with the stack', async () => {
    const lines = await logsOf(() =>
      broken(
        h.app.metrics,
        'render',
        async () => {
          throw new Error('registry exploded marker-7731');
        },
        async () => {
          const r = await fetch(`${h.adminUrl}/metrics`);
          expect(r.status).toBe(500);
          expect(await r.text()).not.toContain('marker-7731');
        },
      ),
    );
    const about = lines.filter((l) => l.event === 'admin_error');
    expect(about).toHaveLength(1);
    expect(about[0]).toMatchObject({ level: 'error', what: 'metrics' });
    expect(String(about[0].stack)).toContain('marker-7731');
  });

  it('credential leak into logs: an absolute-form target with userinfo, a path parameter and a query are never logged', async () => {
    const lines = await logsOf(async () => {
      // Both are refused (absolute-form targets and `;` are 400) and logged by the responder.
      const a = await sendRaw(h.url, 'GET', 'http://alice:hunter2@gw.example/app/x?access_token=tok-9931', { Host: 'gw.example' });
      expect(a.status).toBe(400);
      const b = await sendRaw(h.url, 'GET', '/app/y;jsessionid=sess-0042?access_token=tok-9931', { Host: 'gw.example' });
      expect(b.status).toBe(400);
      const c = await sendRaw(h.url, 'GET', '/app/z%3Bjsessionid=sess-0042', { Host: 'gw.example' });
      expect(c.status).toBe(400);
    });
    const logged = errorLines(lines);
    expect(logged.map((l) => l.path)).toEqual(['/app/x', '/app/y', '/app/z']);
    const text = JSON.stringify(lines);
    for (const secret of ['hunter2', 'alice', 'tok-9931', 'sess-0042']) expect(text, secret).not.toContain(secret);
  });

  it('raw-socket answers: CONNECT, a refused WebSocket upgrade, a request Node cannot parse', async () => {
    const lines = await logsOf(async () => {
      expect((await sendRaw(h.url, 'CONNECT', 'example.com:443', { Host: 'example.com:443' })).status).toBe(405);
      const ws = await sendRaw(h.url, 'GET', '/internal/ws', {
        Upgrade: 'websocket',
        Connection: 'Upgrade',
        'Sec-WebSocket-Version': '13',
        'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==',
      });
      expect(ws.status).toBe(403);
      expect(JSON.parse(ws.body)).toMatchObject({ code: 'access_denied' });
      const bad = await rawRequest(h.url, 'NOT A REQUEST\r\n\r\n');
      expect(bad.status).toBe(400);
      expect(bad.body).toBe('');
    });
    expect(errorLines(lines).map((l) => [l.level, l.status, l.error_code])).toEqual([
      ['info', 405, 'method_not_allowed'],
      ['info', 403, 'access_denied'],
      ['info', 400, 'bad_request'],
    ]);
  });
});

describe("HTML error pages share the pages' one layout", () => {
  it('a browser refused on a proxied route gets the layout (stylesheet, title, code)', async () => {
    const r = await fetch(`${h.url}/internal/page`, { headers: { accept: BROWSER_ACCEPT, authorization: `Bearer ${token}` } });
    expect(r.status).toBe(403);
    expect(r.headers.get('content-type')).toMatch(/^text\/html\b/);
    const html = await r.text();
    expect(html).toContain(`<link rel="stylesheet" href="${PREFIX}/static/portcullis.css">`);
    expect(html).toMatch(/<title>Access denied · [^<]+<\/title>/);
    expect(html).toContain('<h1>Access denied</h1>');
    expect(html).toContain('403 · access_denied');
    expect(html.toLowerCase()).not.toContain('<script');
  });

  it('a form post refused by the auth API gets the layout with a way back to sign in', async () => {
    const r = await fetch(`${h.url}${PREFIX}/login`, {
      method: 'POST',
      redirect: 'manual',
      headers: { 'content-type': 'application/x-www-form-urlencoded', origin: h.url },
      body: `${'x'.repeat(17 * 1024)}=1`,
    });
    expect(r.status).toBe(413);
    const html = await r.text();
    expect(html).toContain(`<link rel="stylesheet" href="${PREFIX}/static/portcullis.css">`);
    expect(html).toContain('<h1>Request body too large</h1>');
    expect(html).toContain(`<a href="${PREFIX}/login">Back to sign in</a>`);
  });
});
