/**
 * Issue 8: the attacks an independent review of the reshaped boundary found (or re-checked),
 * each from outside: raw bytes to a real gateway in front of an upstream that records every
 * request it parses. Each test is named after the attack it stops.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { addUser, login, rawRequest, sendRaw, startHarness, type Harness, type RawResponse } from './support/helpers.js';
import { startRecorder, type Recorder } from './support/recorder.js';

let rec: Recorder;
let h: Harness;
let staff: string;
let admin: string;

const ROUTES = `
routes:
  - name: mo-read
    match: { path: /mo/**, methods: [GET] }
    upstream: mo
    access: authenticated
  - name: mo-write
    match: { path: /mo/** }
    upstream: mo
    access: { roles: [admin] }
  - name: admin
    match: { path: /admin/** }
    upstream: rec
    access: { roles: [admin] }
  - name: administration
    match: { path: /administration/** }
    upstream: rec
    access: { roles: [admin] }
  - name: intranet
    match: { host: intranet.example.com, path: /** }
    upstream: rec
    access: { roles: [admin] }
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
  // Upgrades are recorded, then their socket is destroyed.
  rec = await startRecorder({ upgrade: 'destroy' });
  h = await startHarness({
    upstreamExtra: `  rec:\n    url: ${rec.url}\n    timeout: 5s\n  mo:\n    url: ${rec.url}\n    timeout: 5s\n    method_override: true\n`,
    routes: ROUTES,
  });
  await addUser(h, 'bob', ['staff']);
  await addUser(h, 'root', ['admin']);
  staff = await login(h, 'bob');
  admin = await login(h, 'root');
});

afterAll(async () => {
  await h?.close();
  await rec?.close();
});

beforeEach(() => {
  rec.seen.length = 0;
});

const send = (method: string, target: string, headers: Record<string, string> = {}, version = '1.1'): Promise<RawResponse> =>
  sendRaw(h.url, method, target, headers, version);

const bearer = (t: string) => ({ Authorization: `Bearer ${t}` });
const code = (r: RawResponse) => (JSON.parse(r.body) as { code: string }).code;

describe('method-override downgrade', () => {
  it('a DELETE claiming to be a GET (X-HTTP-Method-Override: GET) is judged as a DELETE: 403, nothing forwarded', async () => {
    for (const [m, header] of [
      ['DELETE', 'X-HTTP-Method-Override'],
      ['PUT', 'X-HTTP-Method-Override'],
      ['PATCH', 'X-HTTP-Method'],
      ['DELETE', 'X-Method-Override'],
    ]) {
      const r = await send(m, '/mo/x', { ...bearer(staff), [header]: 'GET' });
      expect(r.status, `${m} + ${header}: GET`).toBe(403);
      expect(code(r)).toBe('forbidden');
    }
    expect(rec.seen).toEqual([]);
  });

  it('a GET with ?_method=DELETE on an override-honouring upstream needs the DELETE rule', async () => {
    const r = await send('GET', '/mo/x?_method=DELETE', bearer(staff));
    expect(r.status).toBe(403);
    expect(rec.seen).toEqual([]);
    const ok = await send('GET', '/mo/x?_method=DELETE', bearer(admin));
    expect(ok.status).toBe(200);
    expect(rec.seen.map((s) => s.method)).toEqual(['GET']);
  });

  it('the override is still honoured both ways for a user allowed both (POST → DELETE as admin)', async () => {
    const r = await send('POST', '/mo/x', { ...bearer(admin), 'X-HTTP-Method-Override': 'DELETE', 'Content-Length': '0' });
    expect(r.status).toBe(200);
    expect(rec.seen[0].headers['x-http-method-override']).toBe('DELETE');
  });
});

describe('IIS spellings of a protected directory', () => {
  it.each([
    '/admin::$INDEX_ALLOCATION/x',
    '/admin:$i30:$INDEX_ALLOCATION/x',
    '/admin%3a%3a$INDEX_ALLOCATION/x',
    '/admin::$DATA::$DATA/x',
    '/ADMINI~1/x',
    '/administration/../ADMINI~1/x',
  ])('%s is refused 400 and never forwarded', async (target) => {
    const r = await send('GET', target, bearer(staff));
    expect(r.status).toBe(400);
    expect(code(r)).toBe('bad_path');
    expect(rec.seen).toEqual([]);
  });
});

describe('overlong and invalid UTF-8 escapes', () => {
  it.each(['/admin%c0%ae/x', '/app/%c0%ae%c0%ae/admin/x', '/admin%ff/x', '/app/%e0%80%ae%e0%80%ae/admin'])(
    '%s (a lenient decoder reads a dot) is 400',
    async (target) => {
      const r = await send('GET', target, bearer(staff));
      expect(r.status).toBe(400);
      expect(rec.seen).toEqual([]);
    },
  );

  it('valid UTF-8 escapes still pass', async () => {
    const r = await send('GET', '/app/caf%C3%A9', bearer(staff));
    expect(r.status).toBe(200);
    expect(rec.seen[0].url).toBe('/app/caf%C3%A9');
  });
});

describe('upgrades that are not WebSocket', () => {
  it.each(['h2c', 'foo', 'websocket, h2c'])('Upgrade: %s is refused 400 and the upstream sees nothing', async (upgrade) => {
    const r = await send('GET', '/public/x', {
      Connection: 'Upgrade',
      Upgrade: upgrade,
      'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==',
      'Sec-WebSocket-Version': '13',
      'HTTP2-Settings': 'AAMAAABkAAQAAP__',
    });
    expect(r.status).toBe(400);
    expect(rec.seen).toEqual([]);
  });
});

describe('Host', () => {
  it('an HTTP/1.0 request without Host (skipping every host rule) is 400', async () => {
    const r = await send('GET', '/x', { Host: '', ...bearer(staff) }, '1.0');
    expect(r.status).toBe(400);
    expect(code(r)).toBe('bad_host');
    expect(rec.seen).toEqual([]);
  });

  it('X-Host, X-Original-Host and X-Forwarded-Server (virtual-host overrides) never reach the upstream', async () => {
    const r = await send('GET', '/app/x', {
      ...bearer(staff),
      'X-Host': 'intranet.example.com',
      'X-Original-Host': 'intranet.example.com',
      'X-Forwarded-Server': 'intranet.example.com',
    });
    expect(r.status).toBe(200);
    expect(rec.seen).toHaveLength(1);
    expect(rec.seen[0].headers['x-host']).toBeUndefined();
    expect(rec.seen[0].headers['x-original-host']).toBeUndefined();
    expect(rec.seen[0].headers['x-forwarded-server']).toBeUndefined();
  });
});

describe('smuggling through http-proxy rewriting DELETE/OPTIONS framing', () => {
  it.each(['OPTIONS', 'DELETE'])(
    '%s /public/x with a chunked body carrying a second request: one request upstream, the body framed as a body',
    async (method) => {
      const inner = 'GET /admin/secret HTTP/1.1\r\nHost: x\r\nX-Auth-User: admin\r\nX-Auth-Roles: admin\r\nContent-Length: 0\r\n\r\n';
      const host = new URL(h.url).host;
      const r = await rawRequest(
        h.url,
        `${method} /public/x HTTP/1.1\r\nHost: ${host}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n${inner.length.toString(16)}\r\n${inner}\r\n0\r\n\r\n`,
      );
      expect(r.status).toBe(200);
      await new Promise((res) => setTimeout(res, 100));
      expect(rec.seen.map((s) => `${s.method} ${s.url}`)).toEqual([`${method} /public/x`]);
      // The body is forwarded as a body: chunked as it came, or (when it had fully arrived before
      // the upstream request started) with its exact length. Never as a second request.
      const fr = rec.seen[0].headers;
      expect(fr['transfer-encoding'] === 'chunked' || fr['content-length'] === String(Buffer.byteLength(inner)), JSON.stringify(fr)).toBe(true);
      expect(rec.seen[0].headers['x-auth-user']).toBeUndefined();
    },
  );
});
