import http from 'node:http';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { EchoReply } from '../demo/echo.js';
import { closedPort, send, startProxyHarness, type ProxyHarness } from '../../test/support/proxy.js';

const IDENTITY = { sub: 'u-123', username: 'alice', email: 'alice@example.com', roles: ['admin', 'ops'] };

/** Every header name (lower-case) the upstream received, once per copy. */
function rawNames(r: EchoReply): string[] {
  return r.raw_headers.map(([k]) => k.toLowerCase());
}

describe('forward: identity header hygiene', () => {
  let h: ProxyHarness;
  beforeAll(async () => {
    h = await startProxyHarness({
      identityHeaders: { user: 'X-Remote-User', user_id: 'X-Auth-User-Id', email: 'X-Auth-Email', roles: 'X-Auth-Roles' },
      upstreams: { custom: { url: '{echo}', identity_headers: { email: 'X-Upstream-Mail', roles: 'Remote-Groups' } } },
    });
  });
  afterAll(() => h.close());
  beforeEach(() => {
    h.target = () => ({});
  });

  it('strips spoofed X-Auth-*, configured custom names and underscore variants on a public (anonymous) route, every copy', async () => {
    const res = await send(h.url, {
      path: '/public/page',
      headers: [
        'X-Auth-User',
        'mallory',
        'x-auth-user',
        'mallory2',
        'X-AUTH-ROLES',
        'admin',
        'x-auth-anything',
        'x',
        'X-Auth-Assertion',
        'forged.jwt.value',
        'X-Remote-User',
        'root',
        'x-remote-user',
        'root2',
        'X-Upstream-Mail',
        'boss@example.com',
        'Remote-Groups',
        'admin',
        'X_Auth_User',
        'underscore',
        'x_remote_user',
        'underscore2',
        'X-Keep-Me',
        'yes',
      ],
    });
    expect(res.status).toBe(200);
    const r = res.json();
    const names = rawNames(r);
    for (const n of [
      'x-auth-user',
      'x-auth-roles',
      'x-auth-anything',
      'x-auth-assertion',
      'x-remote-user',
      'x-upstream-mail',
      'remote-groups',
      'x_auth_user',
      'x_remote_user',
    ]) {
      expect(names, n).not.toContain(n);
      expect(r.headers[n], n).toBeUndefined();
    }
    expect(r.headers['x-keep-me']).toBe('yes');
    expect(r.identity).toEqual({ user: null, user_id: null, email: null, roles: [] });
  });

  it('strips identity headers in headers, headersDistinct and rawHeaders alike', () => {
    const req = {
      headers: { 'x-auth-email': 'a', 'x-auth-user': 'b', other: 'c' },
      rawHeaders: ['X-Auth-Email', 'a', 'X-Auth-User', 'b', 'Other', 'c'],
      headersDistinct: { 'x-auth-email': ['a'], 'x-auth-user': ['b'], other: ['c'] },
    };
    h.mutator.strip(req as unknown as http.IncomingMessage);
    expect(req.headers).toEqual({ other: 'c' });
    expect(req.rawHeaders).toEqual(['Other', 'c']);
    expect(req.headersDistinct).toEqual({ other: ['c'] });
  });

  it('sets the identity headers (global names), exactly one copy each, replacing spoofed ones', async () => {
    h.target = () => ({ identity: IDENTITY, assertion: 'signed.assertion.jwt' });
    const res = await send(h.url, { path: '/app', headers: ['X-Remote-User', 'mallory', 'X-Auth-Roles', 'root', 'X-Auth-Assertion', 'forged'] });
    const r = res.json();
    expect(r.headers['x-remote-user']).toBe('alice');
    expect(r.headers['x-auth-user-id']).toBe('u-123');
    expect(r.headers['x-auth-email']).toBe('alice@example.com');
    expect(r.headers['x-auth-roles']).toBe('admin,ops');
    expect(r.headers['x-auth-assertion']).toBe('signed.assertion.jwt');
    const names = rawNames(r);
    for (const n of ['x-remote-user', 'x-auth-user-id', 'x-auth-email', 'x-auth-roles', 'x-auth-assertion'])
      expect(
        names.filter((x) => x === n),
        n,
      ).toHaveLength(1);
  });

  it('uses per-upstream names over the global ones, omits a null email and sends empty roles as ""', async () => {
    h.target = () => ({ upstream: 'custom', identity: { sub: 'u-9', username: 'bob', email: null, roles: [] } });
    const r = (await send(h.url, { path: '/x' })).json();
    expect(r.headers['x-remote-user']).toBe('bob');
    expect(r.headers['x-auth-user-id']).toBe('u-9');
    expect(r.headers['x-upstream-mail']).toBeUndefined();
    expect(r.headers['x-auth-email']).toBeUndefined();
    expect(r.headers['remote-groups']).toBe('');
    expect(r.headers['x-auth-roles']).toBeUndefined();
  });

  it('percent-encodes identity values that are not plain ASCII (no header splitting)', async () => {
    h.target = () => ({ identity: { sub: 'u-1', username: 'jörg\r\nX-Evil: 1', email: 'j@example.com', roles: ['r'] } });
    const r = (await send(h.url, { path: '/x' })).json();
    expect(r.headers['x-remote-user']).toBe('j%C3%B6rg%0D%0AX-Evil: 1');
    expect(r.headers['x-evil']).toBeUndefined();
  });
});

describe('forward: cookies, bearer, forwarding headers, path', () => {
  let h: ProxyHarness;
  beforeAll(async () => {
    h = await startProxyHarness({ upstreams: { based: { url: '{echo}/base/' } } });
  });
  afterAll(() => h.close());
  beforeEach(() => {
    h.target = () => ({});
  });

  it("removes the gateway's cookies and keeps the others in order", async () => {
    h.target = () => ({ gatewayCookieNames: ['__Host-pc_access', 'pc_refresh'] });
    const r = (await send(h.url, { headers: { Cookie: 'a=1; __Host-pc_access=tok; b=two=2; pc_refresh=r; c' } })).json();
    expect(r.headers.cookie).toBe('a=1; b=two=2; c');
  });

  it('drops Cookie entirely when only gateway cookies were sent (repeated Cookie headers too)', async () => {
    h.target = () => ({ gatewayCookieNames: ['pc_access', 'pc_refresh'] });
    const r = (await send(h.url, { headers: ['Cookie', 'pc_access=tok', 'Cookie', 'pc_refresh=r'] })).json();
    expect(r.headers.cookie).toBeUndefined();
    expect(rawNames(r)).not.toContain('cookie');
  });

  it('removes Authorization when it carried our bearer token, keeps it otherwise', async () => {
    h.target = () => ({ stripBearer: true });
    expect((await send(h.url, { headers: { Authorization: 'Bearer gateway.token' } })).json().headers.authorization).toBeUndefined();
    h.target = () => ({ stripBearer: false });
    expect((await send(h.url, { headers: { Authorization: 'Basic dXNlcjpwYXNz' } })).json().headers.authorization).toBe('Basic dXNlcjpwYXNz');
  });

  it('replaces X-Forwarded-* (and Forwarded, X-Real-IP) from an untrusted peer with this hop only', async () => {
    const r = (
      await send(h.url, {
        path: '/p',
        headers: {
          Host: 'gw.example.com',
          'X-Forwarded-For': '6.6.6.6',
          'X-Forwarded-Proto': 'https',
          'X-Forwarded-Host': 'evil.example',
          'X-Forwarded-Port': '1',
          X_Forwarded_For: '7.7.7.7',
          Forwarded: 'for=6.6.6.6',
          'X-Real-IP': '6.6.6.6',
        },
      })
    ).json();
    expect(r.headers['x-forwarded-for']).toBe('127.0.0.1');
    expect(r.headers['x-forwarded-proto']).toBe('http');
    expect(r.headers['x-forwarded-host']).toBe('gw.example.com');
    expect(r.headers.host).toBe('gw.example.com');
    for (const n of ['x-forwarded-port', 'x_forwarded_for', 'forwarded', 'x-real-ip']) expect(rawNames(r), n).not.toContain(n);
  });

  it('sets X-Forwarded-Proto from the target (https listener)', async () => {
    h.target = () => ({ proto: 'https' });
    expect((await send(h.url)).json().headers['x-forwarded-proto']).toBe('https');
  });

  it('rewrites the path to exactly the normalized path + query, whatever the client sent', async () => {
    h.target = () => ({ path: '/norm/a b'.replace(' ', '%20'), query: 'x=1&next=http://a//b&y=%2F' });
    const r = (await send(h.url, { path: '/raw/../whatever//x?ignored=1' })).json();
    expect(r.url).toBe('/norm/a%20b?x=1&next=http://a//b&y=%2F');
  });

  it('keeps path segments http-proxy would mangle (http:/ and a trailing "?"-less query)', async () => {
    h.target = () => ({ path: '/go/http:/example.com/', query: '' });
    expect((await send(h.url, { path: '/anything' })).json().url).toBe('/go/http:/example.com/');
  });

  it("prefixes the upstream URL's base path", async () => {
    h.target = () => ({ upstream: 'based', path: '/x/y', query: 'q=1' });
    expect((await send(h.url)).json().url).toBe('/base/x/y?q=1');
  });

  it('answers 400 instead of forwarding a path Node would refuse', async () => {
    h.target = () => ({ path: '/bad path' });
    const res = await send(h.url);
    expect(res.status).toBe(400);
    expect(res.json<{ code: string }>().code).toBe('bad_path');
  });

  it('drops hop-by-hop headers and the ones Connection lists, but not framing headers', async () => {
    const r = (
      await send(h.url, {
        method: 'POST',
        headers: {
          Connection: 'keep-alive, X-Drop-Me, Content-Length',
          'X-Drop-Me': '1',
          'Keep-Alive': 'timeout=99',
          Upgrade: 'h2c',
          'Proxy-Authorization': 'Basic x',
          TE: 'trailers',
          'Content-Length': '5',
        },
        body: 'hello',
      })
    ).json();
    for (const n of ['x-drop-me', 'keep-alive', 'upgrade', 'proxy-authorization', 'te']) expect(rawNames(r), n).not.toContain(n);
    expect(r.body_bytes).toBe(5);
    expect(r.headers['content-length']).toBe('5');
  });

  it('forwards a request with Expect: 100-continue (path still exact)', async () => {
    h.target = () => ({ path: '/exp', query: 'a=1' });
    const u = new URL(h.url);
    const r = await new Promise<EchoReply>((resolve, reject) => {
      const req = http.request({
        hostname: u.hostname,
        port: u.port,
        method: 'PUT',
        path: '/x',
        agent: false,
        headers: { Expect: '100-continue', 'Content-Length': '3' },
      });
      req.on('continue', () => req.end('abc'));
      req.on('error', reject);
      req.on('response', (res) => {
        let s = '';
        res.on('data', (c) => (s += c));
        res.on('end', () => resolve(JSON.parse(s) as EchoReply));
      });
    });
    expect(r.url).toBe('/exp?a=1');
    expect(r.body_bytes).toBe(3);
    expect(r.headers.expect).toBeUndefined();
  });

  it("passes the upstream's status, headers and body through and reports the result", async () => {
    h.results.length = 0;
    const res = await send(h.url, { path: '/__echo/status/418', headers: { Accept: 'text/html' } });
    expect(res.status).toBe(418);
    expect(res.headers['content-type']).toBe('text/html; charset=utf-8');
    expect(res.headers['content-security-policy']).toContain("default-src 'none'");
    expect(res.text).toContain('<strong>nobody</strong>');
    expect(h.results).toHaveLength(1);
    expect(h.results[0]).toMatchObject({ upstream: 'echo', status: 418 });
    expect(h.results[0].reason).toBeUndefined();
    expect(h.results[0].durationSeconds).toBeGreaterThan(0);
    expect(h.results[0].durationSeconds).toBeLessThan(5);
  });
});

describe('forward: X-Forwarded-* from a trusted peer', () => {
  let h: ProxyHarness;
  beforeAll(async () => {
    h = await startProxyHarness({ trustProxy: ['10.0.0.0/8', '127.0.0.0/8', '::1'] });
  });
  afterAll(() => h.close());

  it("appends the peer to the trusted proxy's X-Forwarded-For and keeps its Proto/Host", async () => {
    const r = (
      await send(h.url, {
        headers: {
          Host: 'inner:8080',
          'X-Forwarded-For': '203.0.113.7, 10.1.1.1',
          'X-Forwarded-Proto': 'https',
          'X-Forwarded-Host': 'gw.example.com',
          'X-Forwarded-Port': '443',
        },
      })
    ).json();
    expect(r.headers['x-forwarded-for']).toBe('203.0.113.7, 10.1.1.1, 127.0.0.1');
    expect(r.headers['x-forwarded-proto']).toBe('https');
    expect(r.headers['x-forwarded-host']).toBe('gw.example.com');
    expect(r.headers['x-forwarded-port']).toBe('443');
  });

  it('fills in what a trusted peer did not send', async () => {
    const r = (await send(h.url, { headers: { Host: 'inner:8080' } })).json();
    expect(r.headers['x-forwarded-for']).toBe('127.0.0.1');
    expect(r.headers['x-forwarded-proto']).toBe('http');
    expect(r.headers['x-forwarded-host']).toBe('inner:8080');
  });
});

describe('forward: upstream failures', () => {
  let h: ProxyHarness;
  beforeAll(async () => {
    const dead = await closedPort();
    h = await startProxyHarness({
      upstreams: {
        dead: { url: `http://127.0.0.1:${dead}` },
        quick: { url: '{echo}', timeout: 300 },
        single: { url: '{echo}', timeout: 500, max_sockets: 1 },
      },
    });
  });
  afterAll(() => h.close());
  beforeEach(() => {
    h.results.length = 0;
    h.target = () => ({});
  });

  it('refused connection → 502 problem+json upstream_unavailable, reason refused', async () => {
    h.target = () => ({ upstream: 'dead' });
    const res = await send(h.url, { path: '/x' });
    expect(res.status).toBe(502);
    expect(res.headers['content-type']).toBe('application/problem+json');
    expect(res.headers['cache-control']).toBe('no-store');
    expect(res.json()).toEqual({
      type: 'https://portcullis.dev/problems/upstream-unavailable',
      title: 'Upstream unavailable',
      status: 502,
      detail: 'The upstream service could not be reached.',
      code: 'upstream_unavailable',
    });
    expect(h.results).toEqual([{ upstream: 'dead', status: null, reason: 'refused', durationSeconds: expect.any(Number) }]);
    expect(h.logs.some((l) => l.obj.event === 'upstream_error' && l.obj.reason === 'refused' && l.obj.cause_code === 'ECONNREFUSED')).toBe(true);
  });

  it('upstream resets the connection → 502, reason reset', async () => {
    const res = await send(h.url, { path: '/__echo/reset' });
    expect(res.status).toBe(502);
    expect(res.json<{ code: string }>().code).toBe('upstream_unavailable');
    expect(h.results).toEqual([{ upstream: 'echo', status: null, reason: 'reset', durationSeconds: expect.any(Number) }]);
  });

  it('slower than the upstream timeout → 504 upstream_timeout, reason timeout, without waiting for the upstream', async () => {
    h.target = () => ({ upstream: 'quick' });
    const t0 = Date.now();
    const res = await send(h.url, { path: '/__echo/slow?ms=2000' });
    const elapsed = Date.now() - t0;
    expect(res.status).toBe(504);
    expect(res.json<{ code: string; status: number }>()).toMatchObject({ code: 'upstream_timeout', status: 504 });
    expect(elapsed).toBeGreaterThanOrEqual(250);
    expect(elapsed).toBeLessThan(1_900);
    expect(h.results).toHaveLength(1);
    expect(h.results[0]).toMatchObject({ upstream: 'quick', status: null, reason: 'timeout' });
    expect(h.results[0].durationSeconds).toBeGreaterThanOrEqual(0.25);
  });

  it('an upstream within its timeout is not cut off', async () => {
    h.target = () => ({ upstream: 'quick' });
    const res = await send(h.url, { path: '/__echo/slow?ms=100' });
    expect(res.status).toBe(200);
    expect(h.results[0]).toMatchObject({ upstream: 'quick', status: 200 });
  });

  it('a request queued behind max_sockets times out too (the wait counts), while a live slow one does not', async () => {
    // The first request holds the only socket for ~1.5 s but is never idle for 500 ms.
    h.target = (req) =>
      req.url === '/first' ? { upstream: 'single', path: '/__echo/drip', query: 'bytes=15&interval=100' } : { upstream: 'single', path: '/fast', query: '' };
    const first = send(h.url, { path: '/first' });
    await new Promise((r) => setTimeout(r, 100));
    const t0 = Date.now();
    const second = await send(h.url, { path: '/second' });
    expect(second.status).toBe(504);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(450);
    expect(Date.now() - t0).toBeLessThan(1_300);
    const f = await first;
    expect(f.status).toBe(200);
    expect(f.text).toBe('.'.repeat(15));
    expect(h.results.map((r) => r.status ?? r.reason).sort()).toEqual([200, 'timeout'].sort());
  });

  it('a timeout after the response started destroys the client response', async () => {
    h.target = () => ({ upstream: 'quick', path: '/__echo/stream', query: 'bytes=1000' });
    // A normal short stream is fine…
    expect((await send(h.url)).body.length).toBe(1000);
    // …but an upstream that stalls mid-body breaks the response instead of hanging it.
    const stall = http.createServer((_req, res) => {
      res.writeHead(200, { 'content-length': '100' });
      res.write('partial');
    });
    await new Promise<void>((r) => stall.listen(0, '127.0.0.1', r));
    const { startProxyHarness: start } = await import('../../test/support/proxy.js');
    const port = (stall.address() as { port: number }).port;
    const h2 = await start({ upstreams: { stall: { url: `http://127.0.0.1:${port}`, timeout: 300 } } });
    h2.target = () => ({ upstream: 'stall' });
    try {
      const err = await send(h2.url).then(
        () => null,
        (e: NodeJS.ErrnoException) => e,
      );
      expect(err).not.toBeNull();
      expect(h2.results).toEqual([{ upstream: 'stall', status: null, reason: 'timeout', durationSeconds: expect.any(Number) }]);
    } finally {
      await h2.close();
      stall.closeAllConnections();
      stall.close();
    }
  });
});
