/**
 * Issue 8, class 4 (CSRF beyond POST/PUT/PATCH/DELETE), outside in: SPEC §3.1 "CSRF". Cookies
 * ride along on cross-site requests: a page on evil.example can make a signed-in browser send
 * WebDAV methods (PROPFIND, MOVE, LOCK, …) or open a WebSocket, and the upstream acts on them
 * as the user. The contract: for cookie-authenticated requests, every method other than GET,
 * HEAD and OPTIONS, and every WebSocket upgrade, must come from the gateway's own or an
 * allowed origin — else 403 `csrf`, and the upstream sees nothing. Bearer-authenticated
 * requests carry no ambient credential and are exempt.
 *
 * A real gateway on 127.0.0.1:0 in front of a recording upstream (plain HTTP and WebSocket
 * handshakes); sessions come from the real sign-in form; requests are raw socket bytes.
 */
import { randomBytes } from 'node:crypto';
import { connect } from 'node:net';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { GOOD_PASSWORD, addUser, dechunk, login, startHarness, type Harness } from './support/helpers.js';
import { startRecorder, type Recorder } from './support/recorder.js';

interface Answer {
  status: number;
  headers: Record<string, string>;
  body: string;
  raw: string;
}

/**
 * Writes one request on a fresh socket. Plain requests (with `Connection: close`) are read to
 * the end; upgrades are read up to the end of the response head — then, for a 101, the tunnel
 * is closed by us; otherwise the rest of the answer (the problem body) is read to the close.
 */
function send(url: string, raw: string, opts: { upgrade?: boolean } = {}): Promise<Answer> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const sock = connect(Number(port), hostname);
    let text = '';
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      const end = text.indexOf('\r\n\r\n');
      const head = end === -1 ? text : text.slice(0, end);
      const lines = head.split('\r\n');
      const headers: Record<string, string> = {};
      for (const l of lines.slice(1)) {
        const c = l.indexOf(':');
        if (c > 0) headers[l.slice(0, c).trim().toLowerCase()] = l.slice(c + 1).trim();
      }
      let body = end === -1 ? '' : text.slice(end + 4);
      if (/chunked/i.test(headers['transfer-encoding'] ?? '')) body = dechunk(body);
      resolve({ status: Number(lines[0].split(' ')[1]), headers, body, raw: text });
    };
    const timer = setTimeout(() => {
      if (text) return finish();
      sock.destroy();
      reject(new Error('no answer within 5 s'));
    }, 5000);
    sock.on('data', (d: Buffer) => {
      text += d.toString('latin1');
      if (opts.upgrade && /^HTTP\/1\.1 101 /.test(text) && text.includes('\r\n\r\n')) finish();
    });
    sock.on('error', () => undefined);
    sock.on('close', finish);
    sock.write(raw);
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const EVIL = 'https://evil.example';
const GOOD = 'https://good.example';
const BROWSER_ACCEPT = 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8';

const ROUTES = `
routes:
  - name: app
    match: { path: /app/** }
    upstream: rec
    access: authenticated
  - name: ws
    match: { path: /ws/** }
    upstream: rec
    access: authenticated
`;

// Many form sign-ins below: generous limits, so no limiter or lockout interferes.
const AUTH_YAML = `
auth:
  allowed_origins: [${GOOD}]
  login_rate_limit: { requests: 100000, per: 1m }
  lockout: { max_failures: 100000, window: 15m, duration: 15m }
`;

let h: Harness;
let rec: Recorder;
let host: string;
/** A browser session of alice: name → value of both gateway cookies. */
let jar: Record<string, string>;
let bearer: string;

/** Signs in through the HTML form (same-origin, as a browser does) and returns the cookie jar. */
async function signIn(username: string): Promise<Record<string, string>> {
  const res = await fetch(`${h.url}/api/auth/login`, {
    method: 'POST',
    redirect: 'manual',
    headers: { 'content-type': 'application/x-www-form-urlencoded', accept: BROWSER_ACCEPT, origin: h.url },
    body: new URLSearchParams({ username, password: GOOD_PASSWORD }).toString(),
  });
  await res.arrayBuffer();
  expect(res.status).toBe(303);
  const out: Record<string, string> = {};
  for (const c of res.headers.getSetCookie()) {
    const [pair] = c.split(';');
    const eq = pair.indexOf('=');
    const name = pair.slice(0, eq).trim();
    const value = pair.slice(eq + 1).trim();
    if (value) out[name] = value;
  }
  expect(Object.keys(out).length).toBe(2);
  return out;
}

const cookieHeader = (j: Record<string, string>) =>
  Object.entries(j)
    .map(([k, v]) => `${k}=${v}`)
    .join('; ');
/** Only the refresh cookie (the access cookie expired or was dropped): the silent refresh path. */
const refreshOnly = (j: Record<string, string>) => Object.fromEntries(Object.entries(j).filter(([k]) => /rt$/.test(k)));

function request(method: string, path: string, headers: Record<string, string>, body = ''): string {
  const lines = Object.entries(headers)
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join('');
  const framing = body || !['GET', 'HEAD', 'OPTIONS'].includes(method) ? `Content-Length: ${Buffer.byteLength(body)}\r\n` : '';
  return `${method} ${path} HTTP/1.1\r\nHost: ${host}\r\nAccept: application/json\r\n${lines}${framing}Connection: close\r\n\r\n${body}`;
}

function upgradeRequest(path: string, headers: Record<string, string>): string {
  const key = randomBytes(16).toString('base64');
  const lines = Object.entries(headers)
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join('');
  return `GET ${path} HTTP/1.1\r\nHost: ${host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n${lines}\r\n`;
}

async function expectCsrf(a: Answer, what: string): Promise<void> {
  await sleep(100);
  expect(
    rec.seen.map((s) => `${s.upgrade ? 'UPGRADE ' : ''}${s.method} ${s.url}`),
    `${what} reached the upstream`,
  ).toEqual([]);
  expect(a.status, `${what}: ${a.raw.slice(0, 300)}`).toBe(403);
  expect(a.headers['content-type'] ?? '').toMatch(/^application\/problem\+json/);
  expect((JSON.parse(a.body) as { code: string }).code).toBe('csrf');
}

const PROPFIND_BODY = '<?xml version="1.0"?><propfind xmlns="DAV:"><allprop/></propfind>';

beforeAll(async () => {
  // Upgrades are recorded and accepted (101, correct Sec-WebSocket-Accept).
  rec = await startRecorder({ upgrade: 'accept' });
  h = await startHarness({ upstreamExtra: `  rec:\n    url: ${rec.url}\n    timeout: 5s\n`, routes: ROUTES, extraYaml: AUTH_YAML });
  host = new URL(h.url).host;
  await addUser(h, 'alice', []);
  jar = await signIn('alice');
  bearer = await login(h, 'alice');
});

afterAll(async () => {
  await h?.close();
  await rec?.close();
});

beforeEach(() => {
  rec.seen.length = 0;
});

describe('cookie-authenticated non-GET/HEAD/OPTIONS methods from a foreign origin: 403 csrf', () => {
  const methods = ['PROPFIND', 'PROPPATCH', 'MOVE', 'COPY', 'LOCK', 'UNLOCK', 'MKCOL', 'PATCH', 'PURGE', 'REPORT', 'SEARCH', 'MKCALENDAR'];
  for (const method of methods) {
    it(`${method} /app/files with the session cookie and Origin: ${EVIL} is refused and never forwarded`, async () => {
      const body = method === 'PROPFIND' || method === 'REPORT' ? PROPFIND_BODY : '';
      const headers: Record<string, string> = { Cookie: cookieHeader(jar), Origin: EVIL };
      if (method === 'MOVE' || method === 'COPY') headers.Destination = `${h.url}/app/elsewhere`;
      const a = await send(h.url, request(method, '/app/files', headers, body));
      await expectCsrf(a, method);
    });
  }

  it('PROPFIND with only a foreign Referer is refused', async () => {
    await expectCsrf(
      await send(h.url, request('PROPFIND', '/app/files', { Cookie: cookieHeader(jar), Referer: `${EVIL}/page` }, PROPFIND_BODY)),
      'PROPFIND (foreign Referer)',
    );
  });

  it('PROPFIND with neither Origin nor Referer is refused', async () => {
    await expectCsrf(await send(h.url, request('PROPFIND', '/app/files', { Cookie: cookieHeader(jar) }, PROPFIND_BODY)), 'PROPFIND (no Origin)');
  });

  it('PROPFIND from a foreign origin with only the refresh cookie (silent refresh path) is refused', async () => {
    const fresh = await signIn('alice');
    await expectCsrf(
      await send(h.url, request('PROPFIND', '/app/files', { Cookie: cookieHeader(refreshOnly(fresh)), Origin: EVIL }, PROPFIND_BODY)),
      'PROPFIND (refresh cookie only)',
    );
  });
});

describe('what stays allowed', () => {
  for (const method of ['GET', 'HEAD', 'OPTIONS']) {
    it(`${method} with the session cookie from a foreign origin is forwarded (safe method)`, async () => {
      const a = await send(h.url, request(method, '/app/files', { Cookie: cookieHeader(jar), Origin: EVIL }));
      expect(a.status, a.raw.slice(0, 300)).toBe(200);
      expect(rec.seen.map((s) => s.method)).toEqual([method]);
      expect(rec.seen[0].headers['x-auth-user']).toBe('alice');
    });
  }

  it('a same-origin PROPFIND with the session cookie is forwarded as alice', async () => {
    const a = await send(h.url, request('PROPFIND', '/app/files', { Cookie: cookieHeader(jar), Origin: h.url, Depth: '1' }, PROPFIND_BODY));
    expect(a.status, a.raw.slice(0, 300)).toBe(200);
    expect(rec.seen.map((s) => `${s.method} ${s.url}`)).toEqual(['PROPFIND /app/files']);
    expect(rec.seen[0].headers['x-auth-user']).toBe('alice');
  });

  it('a PROPFIND from an allowed origin with the session cookie is forwarded', async () => {
    const a = await send(h.url, request('PROPFIND', '/app/files', { Cookie: cookieHeader(jar), Origin: GOOD }, PROPFIND_BODY));
    expect(a.status, a.raw.slice(0, 300)).toBe(200);
    expect(rec.seen.map((s) => s.method)).toEqual(['PROPFIND']);
  });

  it('a bearer-authenticated PROPFIND from a foreign origin is forwarded (no cookies, no CSRF)', async () => {
    const a = await send(h.url, request('PROPFIND', '/app/files', { Authorization: `Bearer ${bearer}`, Origin: EVIL }, PROPFIND_BODY));
    expect(a.status, a.raw.slice(0, 300)).toBe(200);
    expect(rec.seen.map((s) => s.method)).toEqual(['PROPFIND']);
    expect(rec.seen[0].headers['x-auth-user']).toBe('alice');
  });
});

describe('cookie-authenticated WebSocket upgrades (cross-site WebSocket hijacking)', () => {
  it(`with the session cookie and Origin: ${EVIL}: 403 csrf, no tunnel, the upstream sees no upgrade`, async () => {
    const a = await send(h.url, upgradeRequest('/ws/chat', { Cookie: cookieHeader(jar), Origin: EVIL }), { upgrade: true });
    await expectCsrf(a, 'the cross-site upgrade');
  });

  it(`with only the refresh cookie (silent refresh) and Origin: ${EVIL}: 403 csrf, no tunnel`, async () => {
    const fresh = await signIn('alice');
    const a = await send(h.url, upgradeRequest('/ws/chat', { Cookie: cookieHeader(refreshOnly(fresh)), Origin: EVIL }), { upgrade: true });
    await expectCsrf(a, 'the cross-site upgrade (refresh cookie only)');
  });

  it('with the session cookie and no Origin at all: 403 csrf, no tunnel', async () => {
    const a = await send(h.url, upgradeRequest('/ws/chat', { Cookie: cookieHeader(jar) }), { upgrade: true });
    await expectCsrf(a, 'the upgrade without Origin');
  });

  it('with the session cookie and the own Origin: the tunnel opens (101) as alice', async () => {
    const a = await send(h.url, upgradeRequest('/ws/chat', { Cookie: cookieHeader(jar), Origin: h.url }), { upgrade: true });
    expect(a.status, a.raw.slice(0, 300)).toBe(101);
    expect(rec.seen).toHaveLength(1);
    expect(rec.seen[0].upgrade).toBe(true);
    expect(rec.seen[0].headers['x-auth-user']).toBe('alice');
  });

  it('with the session cookie from an allowed origin: 101', async () => {
    const a = await send(h.url, upgradeRequest('/ws/chat', { Cookie: cookieHeader(jar), Origin: GOOD }), { upgrade: true });
    expect(a.status, a.raw.slice(0, 300)).toBe(101);
  });

  it('bearer-authenticated from a foreign origin: 101 (no cookies, no CSRF)', async () => {
    const a = await send(h.url, upgradeRequest('/ws/chat', { Authorization: `Bearer ${bearer}`, Origin: EVIL }), { upgrade: true });
    expect(a.status, a.raw.slice(0, 300)).toBe(101);
    expect(rec.seen.map((s) => s.upgrade)).toEqual([true]);
  });
});
