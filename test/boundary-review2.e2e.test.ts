/**
 * Issue 8: what the second independent review of the boundary found, each from outside against
 * a real gateway and real upstreams, named after the attack it stops.
 */
import http from 'node:http';
import { connect, type Socket } from 'node:net';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { compileRoutes, explain, policyContext } from '../src/policy/index.js';
import { addUser, login, rawRequest, sendRaw, startHarness, type Harness, type RawResponse } from './support/helpers.js';
import { listenTracked, startRecorder, type Listening, type Recorder } from './support/recorder.js';

let rec: Recorder;
let evil: Listening;
let h: Harness;
let staff: string;

const ROUTES = `
routes:
  - name: docs-read
    match: { path: /mo/docs/**, methods: [GET, POST] }
    upstream: mo
    access: authenticated
  - name: docs-admin
    match: { path: /mo/docs/** }
    upstream: mo
    access: { roles: [admin] }
  - name: evil
    match: { path: /evil/** }
    upstream: evil
    access: public
  - name: ws
    match: { path: /ws/** }
    upstream: echo
    access: authenticated
  - name: public
    match: { path: /public/** }
    upstream: rec
    access: public
  - name: app
    match: { path: /** }
    upstream: rec
    access: authenticated
`;

beforeAll(async () => {
  rec = await startRecorder();
  // An upstream that misbehaves on purpose: plants the gateway's cookies, answers 101 to a GET.
  evil = await listenTracked(
    http.createServer((req, res) => {
      if (req.url?.startsWith('/evil/plant')) {
        res.writeHead(200, {
          'set-cookie': ['portcullis_at=PLANTED; Path=/', '__Host-portcullis_rt=PLANTED; Path=/; Secure', 'PORTCULLIS_MFA=x; Path=/', 'theme=dark; Path=/'],
          'content-type': 'text/plain',
        });
        res.end('ok');
        return;
      }
      if (req.url?.startsWith('/evil/switch')) {
        req.socket.write('HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n');
        return;
      }
      res.writeHead(200, { 'cache-control': 'public, max-age=3600', 'content-type': 'text/plain' });
      res.end('cacheable');
    }),
  );
  h = await startHarness({
    upstreamExtra: `  rec:\n    url: ${rec.url}\n    timeout: 5s\n  mo:\n    url: ${rec.url}\n    timeout: 5s\n    method_override: true\n  evil:\n    url: ${evil.url}\n    timeout: 2s\n`,
    routes: ROUTES,
  });
  await addUser(h, 'bob', ['staff']);
  staff = await login(h, 'bob');
});

afterAll(async () => {
  await h?.close();
  await rec?.close();
  await evil?.close();
});

beforeEach(() => {
  rec.seen.length = 0;
});

const send = (method: string, target: string, headers: Record<string, string> = {}, version = '1.1'): Promise<RawResponse> =>
  sendRaw(h.url, method, target, headers, version);

/** Every Set-Cookie line of a raw response (rawRequest keeps only the last of a repeated header). */
async function rawSetCookies(target: string): Promise<{ status: number; cookies: string[] }> {
  const { hostname, port } = new URL(h.url);
  const text = await new Promise<string>((resolve, reject) => {
    const s = connect(Number(port), hostname);
    let out = '';
    s.on('data', (c) => (out += c.toString('latin1')));
    s.on('error', reject);
    s.on('close', () => resolve(out));
    s.write(`GET ${target} HTTP/1.1\r\nHost: ${new URL(h.url).host}\r\nConnection: close\r\n\r\n`);
  });
  const head = text.split('\r\n\r\n')[0].split('\r\n');
  return { status: Number(head[0].split(' ')[1]), cookies: head.filter((l) => /^set-cookie:/i.test(l)).map((l) => l.slice(11).trim()) };
}

const bearer = (t: string) => ({ Authorization: `Bearer ${t}` });

describe('respelled _method query parameters (PHP reads them all as _method)', () => {
  it.each([
    '_method=DELETE',
    '%5Fmethod=DELETE',
    '_%6Dethod=DELETE',
    '.method=DELETE',
    '%2Emethod=DELETE',
    '_method%00x=DELETE',
    '+_method=DELETE',
    '_METHOD=DELETE',
  ])('POST /mo/docs/1?%s as a non-admin is judged as a DELETE: 403, nothing forwarded', async (q) => {
    const r = await send('POST', `/mo/docs/1?${q}`, { ...bearer(staff), 'Content-Length': '0' });
    expect(r.status).toBe(403);
    expect(rec.seen).toEqual([]);
  });
});

describe('an upstream planting the gateway session cookies', () => {
  it('Set-Cookie for portcullis_at / __Host-portcullis_rt / the MFA cookie (any case) is dropped; other cookies pass', async () => {
    const r = await rawSetCookies('/evil/plant');
    expect(r.status).toBe(200);
    expect(r.cookies).toEqual(['theme=dark; Path=/']);
    expect(h.logs.some((l) => l.event === 'upstream_cookie_dropped')).toBe(true);
  });
});

describe('fresh session cookies on a cacheable response', () => {
  it('a silent refresh on a proxied response forces Cache-Control: private, no-store', async () => {
    const res = await fetch(`${h.url}/api/auth/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ username: 'bob', password: 'correct horse battery staple 42' }),
    });
    const { refresh_token } = (await res.json()) as { refresh_token: string };
    const r = await send('GET', '/evil/cache', { Cookie: `portcullis_rt=${refresh_token}` });
    expect(r.status).toBe(200);
    expect(r.headers['set-cookie']).toBeDefined();
    expect(r.headers['cache-control']).toBe('private, no-store');
  });

  it('without new cookies the upstream caching header is left alone', async () => {
    const r = await send('GET', '/evil/cache');
    expect(r.headers['cache-control']).toBe('public, max-age=3600');
  });
});

describe('a malformed Authorization header carrying our token', () => {
  it.each([
    ['Bearer <token> x', (t: string) => `Bearer ${t} x`],
    ['Bearer <token>,', (t: string) => `Bearer ${t},`],
    ['bearer  <token> ;', (t: string) => `bearer  ${t} ;`],
  ] as const)('"%s" never reaches the upstream of a public route', async (_label, spell) => {
    const r = await send('GET', '/public/x', { Authorization: spell(staff) });
    expect(r.status).toBe(200);
    expect(rec.seen).toHaveLength(1);
    expect(rec.seen[0].headers.authorization).toBeUndefined();
  });
});

describe('an upstream answering 101 to a plain request', () => {
  it('is a 502 within the upstream timeout, not a hung client', async () => {
    const started = Date.now();
    const r = await send('GET', '/evil/switch');
    expect(r.status).toBe(502);
    expect(Date.now() - started).toBeLessThan(2000);
  });
});

describe('client-address claims from an untrusted peer', () => {
  it('True-Client-IP, Client-IP, X-Client-IP, CF-Connecting-IP and X-Real-IP never reach the upstream', async () => {
    const spoof = {
      'True-Client-IP': '10.0.0.1',
      'Client-IP': '10.0.0.1',
      'X-Client-IP': '10.0.0.1',
      'CF-Connecting-IP': '10.0.0.1',
      'X-Real-IP': '10.0.0.1',
      'X-Cluster-Client-IP': '10.0.0.1',
    };
    const r = await send('GET', '/public/x', spoof);
    expect(r.status).toBe(200);
    for (const k of Object.keys(spoof)) expect(rec.seen[0].headers[k.toLowerCase()], k).toBeUndefined();
    expect(rec.seen[0].headers['x-forwarded-for']).toBe('127.0.0.1');
  });
});

describe('WebSocket tunnels of a revoked session', () => {
  it('a tunnel opened with a bearer token closes when its session logs out', async () => {
    const token = await login(h, 'bob');
    const { hostname, port } = new URL(h.url);
    const sock: Socket = connect(Number(port), hostname);
    let head = '';
    const opened = new Promise<void>((resolve, reject) => {
      sock.on('data', (c) => {
        head += c.toString('latin1');
        if (head.includes('\r\n\r\n')) resolve();
      });
      sock.on('error', reject);
    });
    const closed = new Promise<void>((resolve) => sock.on('close', () => resolve()));
    sock.write(
      `GET /ws/chat HTTP/1.1\r\nHost: ${new URL(h.url).host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAuthorization: Bearer ${token}\r\n\r\n`,
    );
    await opened;
    expect(head.split('\r\n')[0]).toContain('101');
    const out = await fetch(`${h.url}/api/auth/logout`, { method: 'POST', headers: { authorization: `Bearer ${token}` } });
    expect(out.status).toBe(204);
    const t0 = Date.now();
    await Promise.race([closed, new Promise((_, reject) => setTimeout(() => reject(new Error('tunnel still open 3 s after logout')), 3000))]);
    expect(Date.now() - t0).toBeLessThan(3000);
  });
});

describe('policy explain and the auth API', () => {
  it('explain says the auth API answers /api/auth/* and the JWKS, whatever the routes and Host', () => {
    const ctx = policyContext(compileRoutes(h.app.config.routes), h.app.config, new URL(h.url).origin);
    for (const [method, url] of [
      ['GET', '/api/auth/me'],
      ['POST', '/api/auth/me'],
      ['GET', '/api/auth'],
      ['POST', '/.well-known/jwks.json'],
    ]) {
      const e = explain(ctx, { method, url, host: 'secret.example.com', roles: ['staff'], mfa: false });
      expect(e.anonymous.outcome, `${method} ${url}`).toBe('auth_api');
      expect(e.identity.verdict.outcome).toBe('auth_api');
      expect(e.route).toBeUndefined();
    }
    // A spelling that is not the auth API goes to the routes, at the gateway and in explain alike.
    expect(explain(ctx, { method: 'GET', url: '/API/AUTH/me', roles: [], mfa: false }).route?.name).toBe('app');
  });
});

describe('headers Node keeps one copy of (a review of the undici engine)', () => {
  it('a second Authorization carrying our token never reaches the upstream: two Authorization headers are 400', async () => {
    const r = await send('GET', '/public/dupauth', { Authorization: 'Basic Zm9vOmJhcg==', authorization: `Bearer ${staff}` });
    expect(r.status).toBe(400);
    expect(rec.seen).toEqual([]);
  });

  it('a second Referer (or User-Agent) is not forwarded: the upstream sees the copy the gateway judged', async () => {
    const host = new URL(h.url).host;
    const r = await rawRequest(
      h.url,
      `GET /public/dupref HTTP/1.1\r\nHost: ${host}\r\nReferer: http://${host}/\r\nReferer: http://evil.example/\r\nUser-Agent: a\r\nUser-Agent: b\r\nConnection: close\r\n\r\n`,
    );
    expect(r.status).toBe(200);
    expect(rec.seen[0].rawHeaders.filter((_v, i, a) => i % 2 === 0 && a[i].toLowerCase() === 'referer')).toHaveLength(1);
    expect(rec.seen[0].headers.referer).toBe(`http://${host}/`);
    expect(rec.seen[0].headers['user-agent']).toBe('a');
  });

  it('two Cookie lines reach the upstream as one (the gateway cookies removed from both)', async () => {
    const host = new URL(h.url).host;
    const r = await rawRequest(
      h.url,
      `GET /public/cookies HTTP/1.1\r\nHost: ${host}\r\nCookie: a=1; portcullis_at=x\r\nCookie: portcullis_rt=y; b=2\r\nConnection: close\r\n\r\n`,
    );
    expect(r.status).toBe(200);
    const lines = rec.seen[0].rawHeaders.filter((_v, i, a) => i % 2 === 0 && a[i].toLowerCase() === 'cookie');
    expect(lines).toHaveLength(1);
    expect(rec.seen[0].headers.cookie).toBe('a=1; b=2');
  });
});
