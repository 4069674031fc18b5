import { randomBytes } from 'node:crypto';
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectWebSocket } from '../src/demo/ws.js';
import { startHarness, type Harness } from './support/helpers.js';

/**
 * SPEC §3.1 (WebSocket) and §10, from outside: a real gateway in front of a raw upstream that
 * misbehaves on purpose. A tunnel opens only on a 101 whose Sec-WebSocket-Accept matches the
 * client's key; any other answer is relayed and both connections are closed; nothing is left
 * open, and a stop finishes within its grace.
 */

const ROUTES = `
routes:
  - name: evil
    match: { path: /evil/** }
    upstream: evil
    access: public
  - name: public
    match: { path: /public/** }
    upstream: echo
    access: public
`;

/** A raw upstream that answers upgrades the way the path says, and keeps every socket open itself. */
interface EvilUpstream {
  port: number;
  /** Upstream sockets still open (the gateway's upstream side of each exchange). */
  open: Set<net.Socket>;
  /** Request heads received. */
  requests: string[];
  /** Bytes received on a socket after its request head (client bytes that leaked through). */
  leaked: number;
  close(): Promise<void>;
}

async function startEvilUpstream(): Promise<EvilUpstream> {
  const open = new Set<net.Socket>();
  const u: EvilUpstream = { port: 0, open, requests: [], leaked: 0, close: async () => undefined };
  const server = net.createServer((s) => {
    open.add(s);
    s.on('close', () => open.delete(s));
    s.on('error', () => undefined);
    let buf = '';
    let answered = false;
    s.on('data', (c: Buffer) => {
      if (answered) {
        u.leaked += c.length;
        return;
      }
      buf += c.toString('latin1');
      const end = buf.indexOf('\r\n\r\n');
      if (end === -1) return;
      answered = true;
      const head = buf.slice(0, end);
      u.requests.push(head);
      if (buf.length > end + 4) u.leaked += buf.length - end - 4;
      const path = head.split(' ')[1] ?? '';
      if (path.endsWith('/forged')) {
        // A 101 with an Accept that belongs to no key: the client's handshake must not complete.
        s.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n');
      } else if (path.endsWith('/no-accept')) {
        s.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n');
      } else {
        // A plain keep-alive answer: no upgrade, and the upstream would happily read on.
        s.write('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\nConnection: keep-alive\r\nKeep-Alive: timeout=60\r\n\r\nplain\n');
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  u.port = (server.address() as net.AddressInfo).port;
  u.close = () =>
    new Promise<void>((r) => {
      for (const s of open) s.destroy();
      server.close(() => r());
    });
  return u;
}

interface RawUpgrade {
  sock: net.Socket;
  /** Resolves with the response head (status line + headers) once it has arrived. */
  head: Promise<{ status: number; headers: Record<string, string> }>;
  /** Everything received so far. */
  received(): string;
  /** Resolves when the gateway has closed the connection (FIN or reset). */
  closed: Promise<void>;
}

function validKey(): string {
  return randomBytes(16).toString('base64');
}

/** Sends an upgrade request on a raw socket; `key: null` sends none. */
function rawUpgrade(h: Harness, path: string, key: string | string[] | null = validKey()): RawUpgrade {
  const { hostname, port, host } = new URL(h.url);
  const sock = net.connect(Number(port), hostname);
  sock.on('error', () => undefined);
  let text = '';
  let onHead: ((v: { status: number; headers: Record<string, string> }) => void) | undefined;
  const head = new Promise<{ status: number; headers: Record<string, string> }>((r) => (onHead = r));
  sock.on('data', (c: Buffer) => {
    text += c.toString('latin1');
    const end = text.indexOf('\r\n\r\n');
    if (end !== -1 && onHead) {
      const lines = text.slice(0, end).split('\r\n');
      const headers: Record<string, string> = {};
      for (const l of lines.slice(1)) headers[l.slice(0, l.indexOf(':')).toLowerCase()] = l.slice(l.indexOf(':') + 1).trim();
      onHead({ status: Number(lines[0].split(' ')[1]), headers });
      onHead = undefined;
    }
  });
  // FIN from the gateway: our side closes too (allowHalfOpen is off), as any client would.
  const closed = new Promise<void>((r) => {
    sock.once('end', () => r());
    sock.once('close', () => r());
  });
  const keys = key === null ? [] : Array.isArray(key) ? key : [key];
  sock.write(
    `GET ${path} HTTP/1.1\r\nHost: ${host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n` +
      keys.map((k) => `Sec-WebSocket-Key: ${k}\r\n`).join('') +
      '\r\n',
  );
  return { sock, head, received: () => text, closed };
}

function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout;
  return Promise.race([p, new Promise<T>((_, rej) => (t = setTimeout(() => rej(new Error(`${what}: not within ${ms} ms`)), ms)))]).finally(() =>
    clearTimeout(t),
  );
}

async function until(cond: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (!cond() && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
  return cond();
}

const fdCount = (): number => readdirSync('/proc/self/fd').length;

/** One attack: an upgrade the upstream answers with a keep-alive 200, then one more client byte. */
async function keepAliveAttempt(h: Harness): Promise<RawUpgrade> {
  const c = rawUpgrade(h, '/evil/plain');
  await within(c.head, 5_000, 'response head');
  c.sock.write('x');
  return c;
}

async function startEvilHarness(): Promise<{ h: Harness; evil: EvilUpstream }> {
  const evil = await startEvilUpstream();
  const h = await startHarness({ routes: ROUTES, upstreamExtra: `  evil:\n    url: http://127.0.0.1:${evil.port}\n    timeout: 5s\n` });
  return { h, evil };
}

describe('WebSocket boundary: the handshake is verified, and refused upgrades leave nothing open', () => {
  let h: Harness;
  let evil: EvilUpstream;
  const clients: net.Socket[] = [];
  beforeAll(async () => {
    ({ h, evil } = await startEvilHarness());
  });
  afterAll(async () => {
    for (const s of clients) s.destroy();
    await within(h.close(), 30_000, 'harness close').catch(() => undefined);
    await evil.close();
  });

  it('a valid WebSocket handshake through the gateway still opens a working tunnel', async () => {
    const ws = await connectWebSocket(`${h.url.replace('http:', 'ws:')}/public/chat`);
    try {
      expect(ws.response.statusCode).toBe(101);
      expect(JSON.parse(await ws.next())).toMatchObject({ type: 'hello', path: '/public/chat' });
      ws.send('still works');
      expect(await ws.next()).toBe('echo: still works');
    } finally {
      ws.close();
    }
  });

  it('a forged 101 with a wrong Sec-WebSocket-Accept opens no tunnel (502) and the upstream socket is closed', async () => {
    const before = evil.requests.length;
    const c = rawUpgrade(h, '/evil/forged');
    clients.push(c.sock);
    const head = await within(c.head, 5_000, 'response head');
    expect(head.status).toBe(502);
    expect(head.headers['content-type']).toBe('application/problem+json');
    expect(JSON.parse(c.received().split('\r\n\r\n')[1])).toMatchObject({ status: 502, code: 'upstream_unavailable' });
    expect(evil.requests.length).toBe(before + 1);
    // Frame bytes the client sends now must not reach the upstream through a tunnel.
    c.sock.write(Buffer.from([0x81, 0x80, 1, 2, 3, 4]));
    await within(c.closed, 3_000, 'client connection closed');
    expect(await until(() => evil.open.size === 0, 3_000)).toBe(true);
    expect(evil.leaked).toBe(0);
  });

  it('a 101 without any Sec-WebSocket-Accept opens no tunnel (502)', async () => {
    const c = rawUpgrade(h, '/evil/no-accept');
    clients.push(c.sock);
    const head = await within(c.head, 5_000, 'response head');
    expect(head.status).toBe(502);
    await within(c.closed, 3_000, 'client connection closed');
    expect(await until(() => evil.open.size === 0, 3_000)).toBe(true);
  });

  it('an upgrade without a valid Sec-WebSocket-Key is refused 400 before the upstream is contacted', async () => {
    const before = evil.requests.length;
    for (const key of [
      null,
      'abc',
      randomBytes(15).toString('base64'),
      randomBytes(17).toString('base64'),
      'not base64 at all!!!!!==',
      [validKey(), validKey()],
    ]) {
      const c = rawUpgrade(h, '/evil/plain', key);
      clients.push(c.sock);
      const head = await within(c.head, 5_000, 'response head');
      expect(head.status, `key ${JSON.stringify(key)}`).toBe(400);
      await within(c.closed, 3_000, 'client connection closed');
    }
    expect(evil.requests.length).toBe(before);
  });

  it('an upstream that answers an upgrade with a keep-alive 200 gets both sockets closed, even when the client sends more bytes', async () => {
    const c = await keepAliveAttempt(h);
    clients.push(c.sock);
    // The upstream's answer is relayed as is…
    const head = await c.head;
    expect(head.status).toBe(200);
    await within(c.closed, 3_000, 'client connection closed');
    expect(c.received()).toMatch(/\r\n\r\nplain\n$/);
    // …and the gateway's upstream socket is gone too, the extra byte never forwarded.
    expect(await until(() => evil.open.size === 0, 3_000)).toBe(true);
    expect(evil.leaked).toBe(0);
  });

  it('100 keep-alive refusals followed by a client byte leak no descriptor', async () => {
    // Warm up (lazy handles, the first upstream connection), then measure.
    for (const s of [await keepAliveAttempt(h)]) {
      clients.push(s.sock);
      await within(s.closed, 3_000, 'warm-up closed');
    }
    await until(() => evil.open.size === 0, 3_000);
    const baseline = fdCount();
    const batch: RawUpgrade[] = [];
    for (let i = 0; i < 100; i++) {
      const c = await keepAliveAttempt(h);
      batch.push(c);
      clients.push(c.sock);
    }
    // The clients keep their sockets: only the gateway closing them releases them.
    await until(() => fdCount() <= baseline + 5 && evil.open.size === 0, 5_000);
    const after = fdCount();
    console.log(`fd baseline ${baseline}, after 100 keep-alive refusals ${after}, upstream sockets open ${evil.open.size}`);
    expect(after).toBeLessThanOrEqual(baseline + 5);
    expect(evil.open.size).toBe(0);
  });
});

describe('WebSocket boundary: stop() after refused upgrades and with an open tunnel', () => {
  it('app.stop(grace) completes within the grace plus a few seconds and closes the open tunnels, one from before a reload included', {
    timeout: 90_000,
  }, async () => {
    const { h, evil } = await startEvilHarness();
    const clients: net.Socket[] = [];
    try {
      for (let i = 0; i < 100; i++) clients.push((await keepAliveAttempt(h)).sock);
      // One tunnel opened before a reload that replaces the upstreams (its proxy is retired,
      // not closed, so that it can drain), one after.
      const before = await connectWebSocket(`${h.url.replace('http:', 'ws:')}/public/before-reload`);
      await before.next();
      const file = join(h.dir, 'gateway.yaml');
      writeFileSync(file, readFileSync(file, 'utf8').replace('    timeout: 5s\n  evil:', '    timeout: 6s\n  evil:'));
      expect(h.app.reload()).toEqual({ ok: true });
      const after = await connectWebSocket(`${h.url.replace('http:', 'ws:')}/public/after-reload`);
      await after.next();
      const tunnelsClosed = Promise.all([before, after].map((ws) => new Promise<void>((r) => ws.socket.once('close', () => r()))));
      const grace = 1_000;
      const t0 = Date.now();
      await within(h.app.stop(grace), grace + 4_000, 'app.stop');
      const took = Date.now() - t0;
      console.log(`app.stop(${grace}) took ${took} ms`);
      await within(tunnelsClosed, 2_000, 'tunnels closed');
      expect(took).toBeLessThan(grace + 4_000);
    } finally {
      // Bounded: on a gateway that leaks, the stop above is still pending until these go.
      for (const s of clients) s.destroy();
      await within(h.close(), 30_000, 'harness close').catch(() => undefined);
      await evil.close();
    }
  });
});
