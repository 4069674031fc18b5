import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EchoReply } from '../src/demo/echo.js';
import { addUser, login, metricsText, rawRequest, sample, startHarness, type Harness, type RawResponse } from './support/helpers.js';

/**
 * The request pipeline (SPEC §3) as an Oathkeeper-style table: each row is one request through
 * the real gateway to a real header-echoing upstream, with the expected status, problem code
 * and what the upstream must (and must not) have received.
 */

type Kind = 'none' | 'user' | 'admin' | 'reporter' | 'garbage';

interface Row {
  name: string;
  method?: string;
  target: string;
  host?: string;
  token: Kind;
  accept?: string;
  headers?: Record<string, string>;
  body?: string;
  status: number;
  code?: string;
  /** Exact response headers expected (lower-case names). */
  response?: Record<string, string>;
  /** Upstream must have received these header values (lower-case names); null = absent. */
  upstream?: Record<string, string | null>;
  upstreamPath?: string;
}

let h: Harness;
let hTrusted: Harness;
const tokens: Partial<Record<Kind, string>> = { garbage: 'not.a.jwt' };
const ids: Record<string, string> = {};

beforeAll(async () => {
  h = await startHarness();
  ids.alice = (await addUser(h, 'alice', ['staff'])).id;
  ids.root = (await addUser(h, 'root', ['admin'])).id;
  ids.rita = (await addUser(h, 'rita', ['reporter'])).id;
  tokens.user = await login(h, 'alice');
  tokens.admin = await login(h, 'root');
  tokens.reporter = await login(h, 'rita');
  hTrusted = await startHarness({ extraYaml: 'trust_proxy: [127.0.0.1]' });
});

afterAll(async () => {
  await h?.close();
  await hTrusted?.close();
});

function send(g: Harness, r: Omit<Row, 'status' | 'name'>): Promise<RawResponse> {
  const host = r.host ?? new URL(g.url).host;
  const headers: Record<string, string> = { Host: host };
  const t = r.token === 'none' ? undefined : tokens[r.token];
  if (r.token !== 'none' && !t) throw new Error(`no token for ${r.token}`);
  if (t) headers.Authorization = `Bearer ${t}`;
  if (r.accept) headers.Accept = r.accept;
  Object.assign(headers, r.headers ?? {});
  if (r.body !== undefined) {
    headers['Content-Type'] ??= 'application/json';
    headers['Content-Length'] = String(Buffer.byteLength(r.body));
  }
  const head = `${r.method ?? 'GET'} ${r.target} HTTP/1.1\r\n${Object.entries(headers)
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join('')}Connection: close\r\n\r\n`;
  return rawRequest(g.url, head + (r.body ?? ''));
}

function echoOf(r: RawResponse): EchoReply {
  expect(r.headers['content-type'] ?? '').toMatch(/^application\/json/);
  return JSON.parse(r.body) as EchoReply;
}

/** Every header name (lower-case) in the upstream's raw header list, with how many copies. */
function rawCounts(e: EchoReply): Map<string, number> {
  const m = new Map<string, number>();
  for (const [k] of e.raw_headers) m.set(k.toLowerCase(), (m.get(k.toLowerCase()) ?? 0) + 1);
  return m;
}

/** Client-supplied identity headers that must never reach an upstream. */
const SPOOF = {
  'X-Auth-User': 'mallory',
  'x-auth-roles': 'admin,reporter',
  'X-Auth-User-Id': 'u-evil',
  'X-Auth-Email': 'mallory@evil.example',
  'X-Auth-Anything': 'yes',
  'X-Auth-Assertion': 'eyJhbGciOiJub25lIn0.e30.',
  X_Auth_User: 'underscore-mallory',
};

const table: Row[] = [
  // Routing and access rules.
  { name: 'no route', target: '/nowhere', token: 'none', status: 404, code: 'no_route' },
  { name: 'no route, even for an admin', target: '/nowhere/x', token: 'admin', status: 404, code: 'no_route' },
  { name: 'deny route, anonymous', target: '/internal/x', token: 'none', status: 403, code: 'access_denied' },
  { name: 'deny route, admin', target: '/internal/x', token: 'admin', status: 403, code: 'access_denied' },
  { name: 'deny route, garbage token is still 403 (not 401)', target: '/internal/x', token: 'garbage', status: 403, code: 'access_denied' },
  {
    name: 'authenticated route, anonymous API client',
    target: '/app/x',
    token: 'none',
    status: 401,
    code: 'unauthenticated',
    response: { 'www-authenticate': 'Bearer realm="portcullis"', 'content-type': 'application/problem+json' },
  },
  {
    name: 'authenticated route, garbage bearer',
    target: '/app/x',
    token: 'garbage',
    status: 401,
    code: 'invalid_token',
    response: { 'www-authenticate': 'Bearer realm="portcullis", error="invalid_token"' },
  },
  {
    name: 'authenticated route, malformed Authorization header',
    target: '/app/x',
    token: 'none',
    headers: { Authorization: 'Bearer' },
    status: 401,
    code: 'invalid_token',
    response: { 'www-authenticate': 'Bearer realm="portcullis", error="invalid_token"' },
  },
  {
    name: 'browser GET is redirected to the login page with rd = path + query',
    target: '/app/x?y=1',
    token: 'none',
    accept: 'text/html,application/xhtml+xml,*/*;q=0.8',
    status: 302,
    response: { location: '/api/auth/login?rd=%2Fapp%2Fx%3Fy%3D1' },
  },
  {
    name: 'browser GET: rd carries the normalized path',
    target: '/public/../app/x',
    token: 'none',
    accept: 'text/html',
    status: 302,
    response: { location: '/api/auth/login?rd=%2Fapp%2Fx' },
  },
  {
    name: 'browser HEAD is redirected too',
    method: 'HEAD',
    target: '/app/x',
    token: 'none',
    accept: 'text/html',
    status: 302,
    response: { location: '/api/auth/login?rd=%2Fapp%2Fx' },
  },
  {
    name: 'browser POST is not redirected',
    method: 'POST',
    target: '/app/x',
    token: 'none',
    accept: 'text/html',
    body: '{}',
    status: 401,
    response: { 'www-authenticate': 'Bearer realm="portcullis"' },
  },
  { name: 'role missing', target: '/admin/x', token: 'user', status: 403, code: 'forbidden' },
  { name: 'role missing (reporter on admin)', target: '/admin/x', token: 'reporter', status: 403, code: 'forbidden' },
  { name: 'mfa route without otp', target: '/secure/x', token: 'admin', status: 403, code: 'mfa_required' },
  {
    name: 'role present',
    target: '/admin/x',
    token: 'admin',
    status: 200,
    upstreamPath: '/admin/x',
    upstream: { 'x-auth-user': 'root', 'x-auth-roles': 'admin', authorization: null },
  },

  // Host routing.
  {
    name: 'reports host with the reporter role',
    target: '/r/1',
    host: 'reports.example.com',
    token: 'reporter',
    status: 200,
    upstreamPath: '/r/1',
    upstream: {
      host: 'reports.example.com',
      'x-forwarded-host': 'reports.example.com',
      'x-auth-user': 'rita',
      'x-auth-roles': 'reporter',
      'x-auth-email': 'rita@example.com',
    },
  },
  { name: 'reports host with a port, reporter role', target: '/r/1', host: 'REPORTS.example.com:8443', token: 'reporter', status: 200, upstreamPath: '/r/1' },
  { name: 'reports host without the role', target: '/r/1', host: 'reports.example.com', token: 'user', status: 403, code: 'forbidden' },
  { name: 'reports host, anonymous', target: '/r/1', host: 'reports.example.com', token: 'none', status: 401, code: 'unauthenticated' },
  {
    name: 'other host does not reach the reports route',
    target: '/r/1',
    host: 'reports.example.com.evil.test',
    token: 'reporter',
    status: 404,
    code: 'no_route',
  },

  // Identity headers: stripped everywhere, replaced by the real ones.
  {
    name: 'public route, anonymous: spoofed identity headers are stripped, none are set',
    target: '/public/p',
    token: 'none',
    headers: SPOOF,
    status: 200,
    upstreamPath: '/public/p',
    upstream: { 'x-auth-user': null, 'x-auth-roles': null, 'x-auth-user-id': null, 'x-auth-email': null, 'x-auth-anything': null, 'x-auth-assertion': null },
  },
  {
    name: 'public route, valid token: real identity replaces the spoofed one; bearer not forwarded',
    target: '/public/p',
    token: 'user',
    headers: SPOOF,
    status: 200,
    upstream: {
      'x-auth-user': 'alice',
      'x-auth-roles': 'staff',
      'x-auth-email': 'alice@example.com',
      'x-auth-anything': null,
      'x-auth-assertion': null,
      authorization: null,
    },
  },
  {
    name: 'authenticated route: real identity replaces the spoofed one; bearer not forwarded',
    method: 'POST',
    target: '/app/submit',
    token: 'user',
    headers: SPOOF,
    body: '{"a":1}',
    status: 200,
    upstreamPath: '/app/submit',
    upstream: {
      'x-auth-user': 'alice',
      'x-auth-roles': 'staff',
      'x-auth-email': 'alice@example.com',
      'x-auth-anything': null,
      'x-auth-assertion': null,
      authorization: null,
      'content-length': '7',
    },
  },
  {
    name: 'role route: spoofed roles cannot grant access',
    target: '/admin/x',
    token: 'user',
    headers: SPOOF,
    status: 403,
    code: 'forbidden',
  },
  {
    name: 'spoofed identity headers cannot authenticate',
    target: '/app/x',
    token: 'none',
    headers: SPOOF,
    status: 401,
    code: 'unauthenticated',
  },

  // X-Forwarded-*.
  {
    name: 'spoofed X-Forwarded-* from an untrusted peer are replaced by this hop',
    target: '/public/xff',
    token: 'none',
    headers: {
      'X-Forwarded-For': '6.6.6.6, 7.7.7.7',
      'X-Forwarded-Proto': 'https',
      'X-Forwarded-Host': 'evil.example',
      'X-Real-IP': '6.6.6.6',
      Forwarded: 'for=6.6.6.6',
    },
    status: 200,
    upstream: { 'x-forwarded-for': '127.0.0.1', 'x-forwarded-proto': 'http', 'x-real-ip': null, forwarded: null },
  },
];

describe('pipeline table', () => {
  for (const row of table) {
    it(`${row.method ?? 'GET'} ${row.host ? `${row.host} ` : ''}${row.target} [${row.token}] → ${row.status}${row.code ? ` ${row.code}` : ''}: ${row.name}`, async () => {
      const r = await send(h, row);
      expect(r.status).toBe(row.status);
      if (row.code) {
        expect(r.headers['content-type']).toMatch(/^application\/problem\+json/);
        const p = JSON.parse(r.body) as { code: string; status: number; type: string; title: string; detail: string };
        expect(p.code).toBe(row.code);
        expect(p.status).toBe(row.status);
        expect(typeof p.type).toBe('string');
        expect(typeof p.title).toBe('string');
        expect(typeof p.detail).toBe('string');
        expect(r.body).not.toMatch(/ at .*\.ts:\d+/); // never a stack trace
      }
      for (const [k, v] of Object.entries(row.response ?? {})) {
        if (k === 'content-type') expect(r.headers[k]).toMatch(new RegExp(`^${v.replace(/[+]/g, '\\+')}`));
        else expect(r.headers[k], `response header ${k}`).toBe(v);
      }
      if (row.status === 401 && !row.response?.['www-authenticate']) {
        expect(r.headers['www-authenticate']).toMatch(/^Bearer realm="portcullis"/);
      }
      if (row.status !== 200) {
        // Gateway answers never come from the echo.
        expect(r.body).not.toContain('raw_headers');
        return;
      }
      const e = echoOf(r);
      if (row.upstreamPath) expect(e.path).toBe(row.upstreamPath);
      for (const [k, v] of Object.entries(row.upstream ?? {})) {
        if (v === null) expect(e.headers[k], `upstream header ${k} must be absent`).toBeUndefined();
        else expect(e.headers[k], `upstream header ${k}`).toBe(v);
      }
      // Whatever the row, nothing spoofed survives and every identity header is present at most once.
      const counts = rawCounts(e);
      for (const [name, n] of counts) {
        if (name.replace(/_/g, '-').startsWith('x-auth-')) {
          expect(n, `copies of ${name}`).toBe(1);
          expect(['x-auth-user', 'x-auth-user-id', 'x-auth-email', 'x-auth-roles']).toContain(name);
        }
      }
      expect(JSON.stringify(e.raw_headers)).not.toMatch(/mallory|u-evil|underscore-mallory|eyJhbGciOiJub25lIn0/);
      expect(counts.get('x-forwarded-for')).toBe(1);
      expect(e.headers['x-forwarded-proto']).toBe('http');
      expect(e.headers['x-forwarded-host']).toBe(row.host ?? new URL(h.url).host);
    });
  }
});

describe('identity headers in detail', () => {
  it('the user id and email come from the token, not from the client', async () => {
    const r = await send(h, { target: '/app/me', token: 'user', headers: SPOOF });
    expect(r.status).toBe(200);
    const e = echoOf(r);
    expect(e.identity).toEqual({ user: 'alice', user_id: ids.alice, email: 'alice@example.com', roles: ['staff'] });
    expect(e.headers['x-auth-user-id']).toBe(ids.alice);
  });

  it('a non-gateway Authorization scheme on a public route is passed through untouched', async () => {
    const r = await send(h, { target: '/public/basic', token: 'none', headers: { Authorization: 'Basic dXNlcjpwYXNz' } });
    expect(r.status).toBe(200);
    expect(echoOf(r).headers.authorization).toBe('Basic dXNlcjpwYXNz');
  });

  it('a valid gateway bearer is never forwarded, on any route kind', async () => {
    for (const target of ['/public/t', '/app/t', '/admin/t', '/matrix/t']) {
      const r = await send(h, { target, token: 'admin' });
      expect(r.status, target).toBe(200);
      const e = echoOf(r);
      expect(e.headers.authorization, target).toBeUndefined();
      expect(JSON.stringify(e)).not.toContain(tokens.admin!);
    }
  });
});

describe('a gateway bearer that no longer verifies', () => {
  it('a revoked (logged-out) gateway token is 401 on an authenticated route and is not forwarded on a public one', async () => {
    const t = await login(h, 'alice');
    const out = await fetch(`${h.url}/api/auth/logout`, { method: 'POST', headers: { authorization: `Bearer ${t}` } });
    expect(out.status).toBe(204);
    const host = new URL(h.url).host;
    const app = await rawRequest(h.url, `GET /app/x HTTP/1.1\r\nHost: ${host}\r\nAuthorization: Bearer ${t}\r\nConnection: close\r\n\r\n`);
    expect(app.status).toBe(401);
    expect(app.headers['www-authenticate']).toBe('Bearer realm="portcullis", error="invalid_token"');
    // On a public route the request is served anonymously, but the gateway's own token (SPEC §3
    // rule 5: "remove … a gateway bearer token from Authorization") must not reach the upstream.
    const pub = await rawRequest(h.url, `GET /public/x HTTP/1.1\r\nHost: ${host}\r\nAuthorization: Bearer ${t}\r\nConnection: close\r\n\r\n`);
    expect(pub.status).toBe(200);
    const e = echoOf(pub);
    expect(e.identity.user).toBeNull();
    expect(e.headers.authorization).toBeUndefined();
  });
});

describe('X-Forwarded-For with trust_proxy', () => {
  it('from a trusted peer (127.0.0.1) the client chain is kept and the peer appended', async () => {
    const r = await send(hTrusted, { target: '/public/xff', token: 'none', headers: { 'X-Forwarded-For': '203.0.113.7, 198.51.100.2' } });
    expect(r.status).toBe(200);
    const e = echoOf(r);
    expect(e.headers['x-forwarded-for']).toBe('203.0.113.7, 198.51.100.2, 127.0.0.1');
    expect(rawCounts(e).get('x-forwarded-for')).toBe(1);
    expect(e.headers['x-forwarded-proto']).toBe('http');
    expect(e.headers['x-forwarded-host']).toBe(new URL(hTrusted.url).host);
  });

  it('from a trusted peer without X-Forwarded-For the peer is the whole chain', async () => {
    const r = await send(hTrusted, { target: '/public/xff', token: 'none' });
    expect(r.status).toBe(200);
    expect(echoOf(r).headers['x-forwarded-for']).toBe('127.0.0.1');
  });

  it('trusted peer: identity headers are still stripped', async () => {
    const r = await send(hTrusted, { target: '/public/xff', token: 'none', headers: SPOOF });
    expect(r.status).toBe(200);
    const e = echoOf(r);
    expect(e.identity).toEqual({ user: null, user_id: null, email: null, roles: [] });
    expect(e.headers['x-auth-anything']).toBeUndefined();
  });
});

async function until<T>(fn: () => Promise<T>, ok: (v: T) => boolean, timeoutMs = 5_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let v = await fn();
  while (!ok(v) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
    v = await fn();
  }
  return v;
}

describe('metrics', () => {
  it('portcullis_auth_decisions_total counts allow, unauthenticated, forbidden and deny by route name', async () => {
    const m = 'portcullis_auth_decisions_total';
    const cases: [string, string, Omit<Row, 'name' | 'status'>, number][] = [
      ['app', 'allow', { target: '/app/m', token: 'user' }, 200],
      ['app', 'unauthenticated', { target: '/app/m', token: 'none' }, 401],
      ['app', 'unauthenticated', { target: '/app/m', token: 'garbage' }, 401],
      ['admin', 'forbidden', { target: '/admin/m', token: 'user' }, 403],
      ['closed', 'deny', { target: '/internal/m', token: 'admin' }, 403],
      ['secure', 'mfa_required', { target: '/secure/m', token: 'admin' }, 403],
      ['public', 'allow', { target: '/public/m', token: 'none' }, 200],
    ];
    for (const [route, decision, req, status] of cases) {
      const before = sample(await metricsText(h), m, { route, decision });
      const r = await send(h, req);
      expect(r.status).toBe(status);
      const after = sample(await metricsText(h), m, { route, decision });
      expect(after, `${route}/${decision}`).toBe(before + 1);
    }
  });

  it('portcullis_http_requests_total labels routes by config name, never by raw path', async () => {
    // Make sure odd paths have been seen by this harness.
    for (const target of ['/nowhere/a/b', '/public/../admin', '/public/%2e%2e/x', '/app/../../x', '/public/q?x=/admin', '/api/auth/me']) {
      await send(h, { target, token: 'none' });
    }
    const text = await until(
      () => metricsText(h),
      (t) => sample(t, 'portcullis_http_requests_total', { route: '_invalid', method: 'GET', status: '400' }) > 0,
    );
    const routes = new Set<string>();
    for (const line of text.split('\n')) {
      if (!line.startsWith('portcullis_http_requests_total{')) continue;
      const m = /route="([^"]*)"/.exec(line);
      expect(m, line).not.toBeNull();
      routes.add(m![1]);
    }
    for (const r of routes) expect(r, 'route label').not.toContain('/');
    const known = new Set(['admin', 'secure', 'closed', 'public', 'semis', 'reports', 'app', '_none', '_invalid', '_auth']);
    for (const r of routes) expect(known.has(r), `unexpected route label ${r}`).toBe(true);
    for (const r of ['app', 'closed', 'public', 'admin', '_none', '_invalid']) expect(routes.has(r), `route label ${r} present`).toBe(true);
    expect(sample(text, 'portcullis_http_requests_total', { route: 'closed', method: 'GET', status: '403' })).toBeGreaterThanOrEqual(1);
    expect(sample(text, 'portcullis_http_requests_total', { route: '_none', method: 'GET', status: '404' })).toBeGreaterThanOrEqual(1);
    // No label of any portcullis_ series carries a raw path.
    for (const line of text.split('\n')) {
      if (!line.startsWith('portcullis_') || !line.includes('{')) continue;
      for (const [, k, v] of line.matchAll(/([a-z_]+)="([^"]*)"/g)) {
        if (k === 'le' || k === 'quantile' || k === 'version') continue;
        expect(v, `${k} in ${line}`).not.toContain('/');
      }
    }
  });
});

describe('logs', () => {
  it('a deny is one access_denied event with granted:false and the route name', async () => {
    const before = h.logs.length;
    const r = await send(h, { target: '/internal/logged', token: 'admin' });
    expect(r.status).toBe(403);
    const events = h.logs.slice(before).filter((l) => l.event === 'access_denied');
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({ event: 'access_denied', granted: false, route: 'closed', decision: 'deny', user: 'root', ip: '127.0.0.1' });
    // One line for the deny: the audit event is the responder's line (status and code on it).
    // Besides it, the request's access line (event "request"), with the same request id.
    const about = h.logs.slice(before).filter((l) => l.path === '/internal/logged' && l.event !== 'request');
    expect(about).toHaveLength(1);
    expect(about[0]).toMatchObject({ status: 403, error_code: 'access_denied', request_id: r.headers['x-request-id'] });
    // Written when the response closes, which may be a moment after the client has read it.
    const accessLines = () => h.logs.slice(before).filter((l) => l.event === 'request');
    for (let i = 0; i < 100 && accessLines().length === 0; i++) await new Promise((r) => setTimeout(r, 10));
    const access = accessLines();
    expect(access).toHaveLength(1);
    expect(access[0]).toMatchObject({ path: '/internal/logged', status: 403, route: 'closed', request_id: r.headers['x-request-id'] });
  });

  it('a browser sent to sign-in (302) still leaves its access_denied line', async () => {
    const before = h.logs.length;
    const r = await send(h, { target: '/app/browse', token: 'none', accept: 'text/html' });
    expect(r.status).toBe(302);
    const events = h.logs.slice(before).filter((l) => l.event === 'access_denied');
    expect(events.map((e) => [e.route, e.decision, e.path])).toEqual([['app', 'unauthenticated', '/app/browse']]);
  });

  it('unauthenticated and forbidden are logged with their decision', async () => {
    const before = h.logs.length;
    await send(h, { target: '/app/l', token: 'none' });
    await send(h, { target: '/admin/l', token: 'user' });
    const events = h.logs.slice(before).filter((l) => l.event === 'access_denied');
    expect(events.map((e) => [e.route, e.decision, e.granted])).toEqual([
      ['app', 'unauthenticated', false],
      ['admin', 'forbidden', false],
    ]);
  });

  it('an allowed request is not an access_denied event', async () => {
    const before = h.logs.length;
    expect((await send(h, { target: '/app/ok', token: 'user' })).status).toBe(200);
    expect(h.logs.slice(before).filter((l) => l.event === 'access_denied')).toHaveLength(0);
  });

  it('no log line carries a bearer token', () => {
    const all = JSON.stringify(h.logs);
    for (const k of ['user', 'admin', 'reporter'] as const) expect(all).not.toContain(tokens[k]!);
  });
});
