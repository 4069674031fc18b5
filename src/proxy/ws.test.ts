import http from 'node:http';
import net from 'node:net';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { EchoStats } from '../demo/echo.js';
import { WsHandshakeError, connectWebSocket } from '../demo/ws.js';
import { closedPort, send, startProxyHarness, waitFor, type ProxyHarness } from '../../test/support/proxy.js';

interface Hello {
  type: string;
  path: string;
  query: string;
  identity: { user: string | null; user_id: string | null; email: string | null; roles: string[] };
  headers: Record<string, string>;
}

async function stats(h: ProxyHarness): Promise<EchoStats> {
  return (await send(h.echo.url, { path: '/__echo/stats' })).json<EchoStats>();
}

describe('upgrade: WebSocket proxying', () => {
  let h: ProxyHarness;
  beforeAll(async () => {
    h = await startProxyHarness();
  });
  afterAll(() => h.close());
  beforeEach(() => {
    h.results.length = 0;
    h.target = () => ({});
  });

  it('round-trips messages and delivers identity headers, with spoofed ones stripped', async () => {
    h.target = () => ({
      path: '/chat',
      query: 'room=1',
      identity: { sub: 'u-1', username: 'alice', email: 'alice@example.com', roles: ['admin', 'ops'] },
      gatewayCookieNames: ['pc_access'],
    });
    const ws = await connectWebSocket(`${h.url.replace('http:', 'ws:')}/raw/path`, {
      'X-Auth-User': 'mallory',
      'X-Auth-Anything': 'x',
      'X-Forwarded-For': '6.6.6.6',
      Cookie: 'pc_access=secret; theme=dark',
    });
    try {
      expect(ws.response.statusCode).toBe(101);
      const hello = JSON.parse(await ws.next()) as Hello;
      expect(hello.type).toBe('hello');
      expect(hello.path).toBe('/chat');
      expect(hello.query).toBe('room=1');
      expect(hello.identity).toEqual({ user: 'alice', user_id: 'u-1', email: 'alice@example.com', roles: ['admin', 'ops'] });
      expect(hello.headers['x-auth-anything']).toBeUndefined();
      expect(hello.headers['x-forwarded-for']).toBe('127.0.0.1');
      expect(hello.headers.cookie).toBe('theme=dark');
      ws.send('hello through the gateway');
      expect(await ws.next()).toBe('echo: hello through the gateway');
      ws.send('x'.repeat(70_000)); // a 64-bit length frame
      expect(await ws.next()).toBe(`echo: ${'x'.repeat(70_000)}`);
      expect(h.results).toEqual([{ upstream: 'echo', status: 101, durationSeconds: expect.any(Number) }]);
    } finally {
      ws.close();
    }
  });

  it('closing or resetting the client closes the upstream WebSocket, and vice versa', async () => {
    const ws = await connectWebSocket(`${h.url.replace('http:', 'ws:')}/a`);
    await ws.next();
    expect((await stats(h)).webSockets).toBe(1);
    ws.socket.destroy(); // abrupt, no close frame
    const s = await waitFor(
      () => stats(h),
      (x) => x.webSockets === 0,
      3_000,
    );
    expect(s.webSockets).toBe(0);

    // A client socket error (RST) destroys both sides instead of end()ing them (#1510).
    const ws3 = await connectWebSocket(`${h.url.replace('http:', 'ws:')}/c`);
    await ws3.next();
    expect((await stats(h)).webSockets).toBe(1);
    (ws3.socket as net.Socket).resetAndDestroy();
    const s3 = await waitFor(
      () => stats(h),
      (x) => x.webSockets === 0,
      3_000,
    );
    expect(s3.webSockets).toBe(0);

    const ws2 = await connectWebSocket(`${h.url.replace('http:', 'ws:')}/b`);
    await ws2.next();
    const closed = new Promise<void>((r) => ws2.socket.once('close', () => r()));
    await h.echo.close(); // upstream goes away (destroys its sockets)
    await closed;
    expect(ws2.socket.destroyed).toBe(true);
  });
});

describe('upgrade: failures', () => {
  let h: ProxyHarness;
  let silent: net.Server;
  const silentSockets = new Set<net.Socket>();
  beforeAll(async () => {
    // Reads (so it notices our FIN) but never answers.
    silent = net.createServer((s) => {
      s.resume();
      silentSockets.add(s);
      s.on('close', () => silentSockets.delete(s));
    });
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    const dead = await closedPort();
    h = await startProxyHarness({
      upstreams: {
        dead: { url: `http://127.0.0.1:${dead}` },
        hung: { url: `http://127.0.0.1:${(silent.address() as net.AddressInfo).port}`, timeout: 300 },
      },
    });
  });
  afterAll(async () => {
    await h.close();
    for (const s of silentSockets) s.destroy();
    await new Promise<void>((r) => silent.close(() => r()));
  });
  beforeEach(() => {
    h.results.length = 0;
    h.target = () => ({});
  });

  it('close() tears down established tunnels (they would keep server.close() waiting)', async () => {
    const { startProxyHarness: start } = await import('../../test/support/proxy.js');
    const h2 = await start();
    const ws = await connectWebSocket(`${h2.url.replace('http:', 'ws:')}/t`);
    await ws.next();
    const closed = new Promise<void>((r) => ws.socket.once('close', () => r()));
    h2.proxy.close();
    await closed;
    const s = await waitFor(
      () => stats(h2),
      (x) => x.webSockets === 0,
      3_000,
    );
    expect(s.webSockets).toBe(0);
    await h2.close(); // would hang if a tunnel were left
  });

  it("relays an upstream's refusal (403) and does not keep the upstream socket (#783)", async () => {
    const before = await stats(h);
    const err = await connectWebSocket(`${h.url.replace('http:', 'ws:')}/__echo/ws-reject`).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(WsHandshakeError);
    expect((err as WsHandshakeError).status).toBe(403);
    expect((err as WsHandshakeError).body).toBe('upgrade refused by the echo server\n');
    expect(h.results).toEqual([{ upstream: 'echo', status: 403, durationSeconds: expect.any(Number) }]);
    const after = await waitFor(
      () => stats(h),
      (s) => s.openConnections <= before.openConnections,
      3_000,
    );
    expect(after.openConnections).toBeLessThanOrEqual(before.openConnections);
  });

  it('refused upstream → 502 problem on the socket, then closed', async () => {
    h.target = () => ({ upstream: 'dead' });
    const err = (await connectWebSocket(`${h.url.replace('http:', 'ws:')}/x`).catch((e: unknown) => e)) as WsHandshakeError;
    expect(err).toBeInstanceOf(WsHandshakeError);
    expect(err.status).toBe(502);
    expect(err.headers['content-type']).toBe('application/problem+json');
    expect(JSON.parse(err.body)).toMatchObject({ code: 'upstream_unavailable', status: 502 });
    expect(h.results).toEqual([{ upstream: 'dead', status: null, reason: 'refused', durationSeconds: expect.any(Number) }]);
  });

  it('hung upstream handshake → 504 after the timeout, upstream socket destroyed', async () => {
    h.target = () => ({ upstream: 'hung' });
    const t0 = Date.now();
    const err = (await connectWebSocket(`${h.url.replace('http:', 'ws:')}/x`).catch((e: unknown) => e)) as WsHandshakeError;
    expect(err).toBeInstanceOf(WsHandshakeError);
    expect(err.status).toBe(504);
    expect(JSON.parse(err.body)).toMatchObject({ code: 'upstream_timeout' });
    expect(Date.now() - t0).toBeLessThan(2_000);
    expect(h.results).toEqual([{ upstream: 'hung', status: null, reason: 'timeout', durationSeconds: expect.any(Number) }]);
    const left = await waitFor(
      async () => silentSockets.size,
      (n) => n === 0,
      2_000,
    );
    expect(left).toBe(0);
  });

  it('a non-WebSocket upgrade (h2c) is refused with 400', async () => {
    const u = new URL(h.url);
    const status = await new Promise<number>((resolve, reject) => {
      const req = http.request({
        hostname: u.hostname,
        port: u.port,
        path: '/',
        agent: false,
        headers: { Connection: 'Upgrade, HTTP2-Settings', Upgrade: 'h2c', 'HTTP2-Settings': 'AAMAAABkAAQAAP__' },
      });
      req.on('response', (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('upgrade', () => reject(new Error('upgraded')));
      req.on('error', reject);
      req.end();
    });
    expect(status).toBe(400);
  });
});
