import http from 'node:http';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEchoServer, type EchoReply, type EchoServer, type EchoStats } from './echo.js';
import { FrameParser, Opcode, WsHandshakeError, acceptKey, connectWebSocket, encodeFrame } from './ws.js';

function get(url: string, path: string, headers: Record<string, string> = {}, body?: string, method = 'GET') {
  const u = new URL(url);
  return new Promise<{ status: number; headers: http.IncomingHttpHeaders; text: string }>((resolve, reject) => {
    const req = http.request({ hostname: u.hostname, port: u.port, path, method, headers, agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

describe('demo echo upstream', () => {
  let echo: EchoServer;
  beforeAll(async () => {
    echo = await startEchoServer({ host: '127.0.0.1', port: 0 });
  });
  afterAll(() => echo.close());

  it('answers JSON describing the request and the identity headers', async () => {
    const res = await get(
      echo.url,
      '/some/path?a=1&b=2',
      { 'X-Auth-User': 'alice', 'X-Auth-User-Id': 'u1', 'X-Auth-Email': 'a@example.com', 'X-Auth-Roles': 'admin, ops' },
      'hello',
      'POST',
    );
    expect(res.status).toBe(200);
    expect(res.headers['content-type']).toBe('application/json; charset=utf-8');
    const r = JSON.parse(res.text) as EchoReply;
    expect(r).toMatchObject({ method: 'POST', url: '/some/path?a=1&b=2', path: '/some/path', query: 'a=1&b=2', body_bytes: 5 });
    expect(r.identity).toEqual({ user: 'alice', user_id: 'u1', email: 'a@example.com', roles: ['admin', 'ops'] });
    expect(r.headers['x-auth-user']).toBe('alice');
    expect(r.raw_headers).toContainEqual(['X-Auth-User', 'alice']);
  });

  it('renders an escaped HTML page for browsers, with no script', async () => {
    const res = await get(echo.url, '/p?<q>', { Accept: 'text/html', 'X-Auth-User': '<script>alert(1)</script>', 'X-Evil': '"><img src=x>' });
    expect(res.headers['content-type']).toBe('text/html; charset=utf-8');
    expect(res.text).toContain('&lt;script&gt;alert(1)&lt;/script&gt;');
    expect(res.text).toContain('&quot;&gt;&lt;img src=x&gt;');
    expect(res.text).not.toMatch(/<script|<img/i);
    const anon = await get(echo.url, '/', { Accept: 'text/html' });
    expect(anon.text).toContain('<strong>nobody</strong>');
  });

  it('serves the test helpers: slow, stream, status, reset, stats', async () => {
    const t0 = Date.now();
    expect((await get(echo.url, '/__echo/slow?ms=200')).status).toBe(200);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(190);
    const s = await get(echo.url, '/__echo/stream?bytes=100000');
    expect(s.headers['content-length']).toBe('100000');
    expect(s.text.length).toBe(100000);
    expect((await get(echo.url, '/__echo/status/503')).status).toBe(503);
    await expect(get(echo.url, '/__echo/reset')).rejects.toMatchObject({ code: 'ECONNRESET' });
    const stats = JSON.parse((await get(echo.url, '/__echo/stats')).text) as EchoStats;
    expect(stats.openConnections).toBe(1);
    expect(stats.inFlight).toBe(0);
    expect(stats.requests).toBe(7); // the earlier requests of this file; stats calls are not counted
  });

  it('counts open connections, including idle keep-alive ones', async () => {
    const agent = new http.Agent({ keepAlive: true });
    const u = new URL(echo.url);
    await new Promise<void>((resolve) => http.get({ hostname: u.hostname, port: u.port, path: '/', agent }, (r) => r.resume().on('end', resolve)));
    const stats = JSON.parse((await get(echo.url, '/__echo/stats')).text) as EchoStats;
    expect(stats.openConnections).toBe(2);
    agent.destroy();
  });

  it('speaks a minimal WebSocket: handshake, hello with identity, echo, ping/pong, close', async () => {
    expect(acceptKey('dGhlIHNhbXBsZSBub25jZQ==')).toBe('s3pPLMBiTxaQ9kYGzzhZRbK+xOo='); // RFC 6455 §1.3
    const ws = await connectWebSocket(`${echo.url.replace('http:', 'ws:')}/room?x=1`, { 'X-Auth-User': 'bob', 'X-Auth-Roles': 'a,b' });
    const hello = JSON.parse(await ws.next()) as { type: string; path: string; query: string; identity: { user: string; roles: string[] } };
    expect(hello).toMatchObject({ type: 'hello', path: '/room', query: 'x=1', identity: { user: 'bob', roles: ['a', 'b'] } });
    ws.send('ping?');
    expect(await ws.next()).toBe('echo: ping?');
    ws.close();
    await expect(connectWebSocket(`${echo.url.replace('http:', 'ws:')}/__echo/ws-reject`)).rejects.toBeInstanceOf(WsHandshakeError);
  });

  it('closes on an unmasked client frame (RFC 6455 §5.1)', async () => {
    const u = new URL(echo.url);
    const sock = net.connect(Number(u.port), u.hostname);
    const key = 'dGhlIHNhbXBsZSBub25jZQ==';
    sock.write(`GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`);
    const chunks: Buffer[] = [];
    sock.on('data', (c: Buffer) => {
      chunks.push(c);
      if (Buffer.concat(chunks).includes('\r\n\r\n') && chunks.length === 1) sock.write(encodeFrame(Opcode.text, 'unmasked', false));
    });
    await new Promise((r) => sock.on('close', r));
    const all = Buffer.concat(chunks);
    const body = all.subarray(all.indexOf('\r\n\r\n') + 4);
    const frames = new FrameParser().push(body);
    expect(frames.map((f) => f.opcode)).toEqual([Opcode.text, Opcode.close]);
    expect(frames[1].payload.readUInt16BE(0)).toBe(1002);
  });
});
