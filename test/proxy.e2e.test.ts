import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, readdirSync } from 'node:fs';
import http from 'node:http';
import { connect, createServer, type Socket } from 'node:net';
import { Readable } from 'node:stream';
import v8 from 'node:v8';
import vm from 'node:vm';
import { startEchoServer, type EchoReply, type EchoServer, type EchoStats } from '../src/demo/echo.js';
import { connectWebSocket, WsHandshakeError } from '../src/demo/ws.js';
import { addUser, login, metricsText, ROUTES, sample, startHarness, type Harness } from './support/helpers.js';

/**
 * Forwarding end to end: streaming bodies both ways, upstream failures (refused, reset,
 * timeout), client aborts releasing upstream work, and WebSocket upgrades through the same
 * checks as plain requests.
 */

const MB50 = 50 * 1024 * 1024;

let h: Harness;
/** A second echo app, reached through host-routed routes (its own upstream with a 500 ms timeout). */
let side: EchoServer;
let sideUpgrades = 0;
let deadPort: number;
let userToken: string;
/** 1 when a `/__echo/stats` call counts itself in `requests`/`inFlight`, 0 when it does not (measured, so the tests hold either way). */
let statsSelf: number;

/** A port nothing listens on: bind :0, note the port, close. */
async function closedPort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

beforeAll(async () => {
  side = await startEchoServer({ host: '127.0.0.1', port: 0 });
  const s1 = await echoStats(side.url);
  const s2 = await echoStats(side.url);
  statsSelf = s2.requests - s1.requests;
  expect([0, 1]).toContain(statsSelf);
  expect(s2.inFlight).toBe(statsSelf);
  side.server.prependListener('upgrade', () => {
    sideUpgrades++;
  });
  deadPort = await closedPort();
  // The echo recognizes its helpers only at the start of the path, and routes forward the
  // normalized path unchanged: so /__echo/** gets a public route of its own, and the other
  // upstreams are reached by Host, keeping the path intact (host routes first: the first
  // matching route decides, and /__echo/** matches any host).
  const routes = `
routes:
  - name: slow-host
    match: { host: slow.test, path: /** }
    upstream: side
    access: public
  - name: side-private
    match: { host: side.test, path: /** }
    upstream: side
    access: authenticated
  - name: dead-host
    match: { host: dead.test, path: /** }
    upstream: dead
    access: public
  - name: echo-tools
    match: { path: /__echo/** }
    upstream: echo
    access: public
${ROUTES.replace(/^\s*routes:\s*\n/, '')}`;
  h = await startHarness({
    upstreamExtra: `    max_sockets: 16
  side:
    url: ${side.url}
    timeout: 500ms
  dead:
    url: http://127.0.0.1:${deadPort}
    timeout: 5s
`,
    routes,
  });
  await addUser(h, 'alice', ['staff']);
  userToken = await login(h, 'alice');
}, 60_000);

afterAll(async () => {
  await h?.close();
  await side?.close();
});

interface Res {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

/** One request on its own connection (no pooling, so connection counts stay honest). */
function request(url: string, opts: { method?: string; path: string; headers?: Record<string, string>; body?: Readable }): Promise<Res> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const req = http.request(
      { hostname: u.hostname, port: u.port, method: opts.method ?? 'GET', path: opts.path, headers: opts.headers, agent: false },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      },
    );
    req.on('error', reject);
    if (opts.body) opts.body.pipe(req);
    else req.end();
  });
}

function json<T>(r: Res): T {
  return JSON.parse(r.body.toString('utf8')) as T;
}

async function echoStats(url: string): Promise<EchoStats> {
  return json<EchoStats>(await request(url, { path: '/__echo/stats' }));
}

/** A forced full GC, when V8 lets us enable it at runtime (it does on Node 20). */
const gc: (() => void) | undefined = (() => {
  try {
    v8.setFlagsFromString('--expose-gc');
    return vm.runInNewContext('gc') as () => void;
  } catch {
    return undefined;
  }
})();

interface MemGrowth<T> {
  value: T;
  /** Peak growth of live Buffer memory (`arrayBuffers`) after forced GCs, bytes. */
  live: number;
  /** Peak RSS growth, bytes. */
  rss: number;
}

/**
 * Samples this process's memory about every 50 ms while `work` runs, forcing a GC before each sample.
 * The gateway runs in this process, with the client and the echo: without the forced GC the
 * peak would mostly measure read buffers nobody holds any more (a first 50 MB transfer grows
 * RSS by ~30 MB even straight to the echo); with it, a gateway that held the body shows as
 * ~50 MB of live Buffer growth (checked by holding the chunks in a probe), a streaming one as
 * a few MB. Only Buffer memory is counted: a body is held as Buffers, heap growth is noise here.
 */
async function memoryGrowth<T>(work: () => Promise<T>): Promise<MemGrowth<T>> {
  const read = () => {
    gc?.();
    const m = process.memoryUsage();
    return { live: m.arrayBuffers, rss: m.rss };
  };
  const base = read();
  let peakLive = base.live;
  let peakRss = base.rss;
  const take = () => {
    const m = read();
    peakLive = Math.max(peakLive, m.live);
    peakRss = Math.max(peakRss, m.rss);
  };
  // Each sample 50 ms after the previous one ended (not on a fixed interval): on a busy box a
  // forced GC can take tens of ms, and back-to-back GCs would starve the transfer itself.
  let t: NodeJS.Timeout | undefined;
  const tick = () => {
    take();
    t = setTimeout(tick, 50);
  };
  t = setTimeout(tick, 50);
  try {
    const value = await work();
    take();
    return { value, live: peakLive - base.live, rss: peakRss - base.rss };
  } finally {
    clearTimeout(t);
  }
}

const mb = (n: number) => (n / 1048576).toFixed(1);

/** Sends `total` bytes as a chunked body, reusing one 64 KiB buffer (the client allocates nothing per chunk). */
function bodyOf(total: number): Readable {
  const chunk = Buffer.alloc(64 * 1024, 0x62);
  let left = total;
  return new Readable({
    read() {
      if (left === 0) {
        this.push(null);
        return;
      }
      const n = Math.min(left, chunk.length);
      left -= n;
      this.push(n === chunk.length ? chunk : chunk.subarray(0, n));
    },
  });
}

describe('streaming bodies', () => {
  beforeAll(async () => {
    // Warm-up straight to the echo (no gateway): the first large transfer in a process grows the
    // allocator's arenas by ~30 MB whoever does it, which would otherwise be charged to the gateway.
    const up = await request(h.echoUrl, { method: 'POST', path: '/warm-up', body: bodyOf(MB50) });
    expect(json<EchoReply>(up).body_bytes).toBe(MB50);
    const down = await request(h.echoUrl, { path: `/__echo/stream?bytes=${MB50}` });
    expect(down.body.length).toBe(MB50);
  }, 120_000);

  it('a 50 MB chunked upload streams through to the upstream', async () => {
    const body = bodyOf(MB50);
    const {
      value: r,
      live,
      rss,
    } = await memoryGrowth(() =>
      request(h.url, {
        method: 'POST',
        path: '/public/upload',
        headers: { 'content-type': 'application/octet-stream', authorization: `Bearer ${userToken}` },
        body,
      }),
    );
    expect(r.status).toBe(200);
    const e = json<EchoReply>(r);
    expect(e.body_bytes).toBe(52_428_800);
    expect(e.path).toBe('/public/upload');
    expect(e.headers['transfer-encoding']).toBe('chunked');
    expect(e.identity.user).toBe('alice');
    console.log(`[proxy e2e] 50 MB upload: peak live Buffer growth ${mb(live)} MB, peak RSS growth ${mb(rss)} MB (forced GC: ${gc ? 'yes' : 'no'})`);
    // Buffering the body anywhere in this process would show as ~50 MB; streaming stays far below.
    if (gc) expect(live).toBeLessThan(40 * 1024 * 1024);
    expect(rss).toBeLessThan(40 * 1024 * 1024);
  }, 120_000);

  it('a 50 MB download streams through to the client', async () => {
    const { value, live, rss } = await memoryGrowth(
      () =>
        new Promise<{ status: number; length: string | undefined; bytes: number; bad: number }>((resolve, reject) => {
          const u = new URL(h.url);
          const req = http.get({ hostname: u.hostname, port: u.port, path: `/__echo/stream?bytes=${MB50}`, agent: false }, (res) => {
            let bytes = 0;
            let bad = 0;
            res.on('data', (c: Buffer) => {
              bytes += c.length;
              if (c[0] !== 0x61 || c[c.length - 1] !== 0x61) bad++;
            });
            res.on('error', reject);
            res.on('end', () => resolve({ status: res.statusCode ?? 0, length: res.headers['content-length'], bytes, bad }));
          });
          req.on('error', reject);
        }),
    );
    expect(value.status).toBe(200);
    expect(value.length).toBe(String(MB50));
    expect(value.bytes).toBe(MB50);
    expect(value.bad).toBe(0);
    console.log(`[proxy e2e] 50 MB download: peak live Buffer growth ${mb(live)} MB, peak RSS growth ${mb(rss)} MB (forced GC: ${gc ? 'yes' : 'no'})`);
    if (gc) expect(live).toBeLessThan(40 * 1024 * 1024);
    expect(rss).toBeLessThan(40 * 1024 * 1024);
  }, 120_000);
});

describe('upstream failures', () => {
  const errors = (text: string, upstream: string, reason: string) => sample(text, 'portcullis_upstream_errors_total', { upstream, reason });

  it('refused: an upstream on a closed port → 502 upstream_unavailable, reason "refused"', async () => {
    const before = errors(await metricsText(h), 'dead', 'refused');
    const r = await request(h.url, { path: '/anything?x=1', headers: { host: 'dead.test' } });
    expect(r.status).toBe(502);
    expect(r.headers['content-type']).toMatch(/^application\/problem\+json/);
    const p = json<{ code: string; status: number; detail: string }>(r);
    expect(p.code).toBe('upstream_unavailable');
    expect(p.status).toBe(502);
    expect(p.detail).not.toContain(String(deadPort)); // no internals
    expect(errors(await metricsText(h), 'dead', 'refused')).toBe(before + 1);
  });

  it('reset: the upstream destroys the socket → 502 upstream_unavailable, reason "reset"', async () => {
    const before = errors(await metricsText(h), 'echo', 'reset');
    const r = await request(h.url, { path: '/__echo/reset' });
    expect(r.status).toBe(502);
    expect(json<{ code: string }>(r).code).toBe('upstream_unavailable');
    expect(errors(await metricsText(h), 'echo', 'reset')).toBe(before + 1);
  });

  it('timeout: an upstream slower than its timeout (500ms) → 504 upstream_timeout, reason "timeout", upstream request released', async () => {
    const before = errors(await metricsText(h), 'side', 'timeout');
    const sideBefore = await echoStats(side.url);
    const t0 = Date.now();
    const r = await request(h.url, { path: '/__echo/slow?ms=3000', headers: { host: 'slow.test' } });
    const elapsed = Date.now() - t0;
    expect(r.status).toBe(504);
    expect(r.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(json<{ code: string }>(r).code).toBe('upstream_timeout');
    expect(elapsed).toBeGreaterThanOrEqual(450);
    expect(elapsed).toBeLessThan(2_800);
    const after = await metricsText(h);
    expect(errors(after, 'side', 'timeout')).toBe(before + 1);
    expect(errors(after, 'side', 'reset')).toBe(0);
    // The timed-out upstream request was abandoned, not left running.
    const deadline = Date.now() + 5_000;
    let s = await echoStats(side.url);
    while (s.inFlight > statsSelf && Date.now() < deadline) {
      await new Promise((res) => setTimeout(res, 50));
      s = await echoStats(side.url);
    }
    expect(s.inFlight).toBe(statsSelf); // nothing but (perhaps) the stats request itself
    // It was the side upstream (500 ms timeout) that got the request.
    expect(s.requests - sideBefore.requests).toBeGreaterThanOrEqual(1 + statsSelf);
  });

  it('a fast enough slow upstream is not a timeout', async () => {
    const before = (await echoStats(side.url)).requests;
    const r = await request(h.url, { path: '/__echo/slow?ms=100&who=side', headers: { host: 'slow.test' } });
    expect(r.status).toBe(200);
    const e = json<EchoReply>(r);
    expect(e.path).toBe('/__echo/slow');
    expect(e.query).toBe('ms=100&who=side');
    expect(e.headers.host).toBe('slow.test');
    expect((await echoStats(side.url)).requests).toBe(before + 1 + statsSelf);
  });
});

interface Storm {
  abortAfterMs: number;
  /** Highest echo openConnections seen (the stats connection included). */
  peak: number;
  /** Highest number of upstream requests in flight seen before the abort. */
  peakInFlight: number;
  atAbort: EchoStats;
  settled: EchoStats;
  settleMs: number;
  /** After settling and a barrier request through the gateway's upstream pool. */
  later: EchoStats;
  /** Slow requests that reached the echo, from the first to the barrier. */
  upstreamRequests: number;
}

const MAX_SOCKETS = 16;

/**
 * Opens `n` connections to the gateway, each sending `GET /__echo/slow?ms=5000`; once the
 * upstream pool (max_sockets 16) is saturated and at least ~300 ms have passed, destroys every
 * client socket, then polls the echo directly until it is back to idle (or 10 s pass).
 */
async function abortStorm(n: number): Promise<Storm> {
  const host = new URL(h.url).host;
  const port = Number(new URL(h.url).port);
  const start = await echoStats(h.echoUrl);
  let statsCalls = 0; // stats requests after `start`
  const stats = async () => {
    statsCalls++;
    return echoStats(h.echoUrl);
  };
  const sockets: Socket[] = [];
  for (let i = 0; i < n; i++) {
    const s = connect(port, '127.0.0.1');
    s.on('error', () => undefined);
    s.write(`GET /__echo/slow?ms=5000&i=${i} HTTP/1.1\r\nHost: ${host}\r\n\r\n`);
    sockets.push(s);
  }
  const t0 = Date.now();
  let peak = 0;
  let peakInFlight = 0;
  // ~300 ms, and at least until the pool is in use (a slow box may need longer to accept them all).
  for (;;) {
    const s = await stats();
    peak = Math.max(peak, s.openConnections);
    peakInFlight = Math.max(peakInFlight, s.inFlight - statsSelf);
    if (Date.now() - t0 >= 300 && s.inFlight - statsSelf >= MAX_SOCKETS) break;
    if (Date.now() - t0 > 15_000) break;
    await new Promise((r) => setTimeout(r, 25));
  }
  const abortAfterMs = Date.now() - t0;
  const atAbort = await stats();
  for (const s of sockets) s.destroy();
  const t1 = Date.now();
  let settled = atAbort;
  for (;;) {
    settled = await stats();
    peak = Math.max(peak, settled.openConnections);
    if ((settled.openConnections <= MAX_SOCKETS && settled.inFlight <= statsSelf) || Date.now() - t1 > 10_000) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  const settleMs = Date.now() - t1;
  // The barrier: one more request through the gateway to the same upstream. The pool hands
  // out connections in FIFO order, so anything the gateway still held for the echo was sent
  // before this one completes (instead of waiting a fixed second for stragglers).
  const barrier = await request(h.url, { path: '/__echo/slow?ms=20&barrier=1' });
  if (barrier.status !== 200) throw new Error(`the barrier request failed: ${barrier.status}`);
  const later = await stats();
  const upstreamRequests = later.requests - start.requests - statsSelf * statsCalls - 1; // not the barrier
  return { abortAfterMs, peak, peakInFlight, atAbort, settled, settleMs, later, upstreamRequests };
}

function describeStorm(n: number, s: Storm): string {
  return (
    `${n} requests, aborted after ${s.abortAfterMs} ms; echo openConnections peak ${s.peak} (stats connection included; ` +
    `upstream requests in flight before the abort: ${s.peakInFlight}), at abort ${s.atAbort.openConnections}, ` +
    `settled ${s.settled.openConnections} (inFlight ${s.settled.inFlight - statsSelf}) after ${s.settleMs} ms, ` +
    `after a barrier request ${s.later.openConnections} (inFlight ${s.later.inFlight - statsSelf}); ` +
    `aborted slow requests that reached the upstream: ${s.upstreamRequests}`
  );
}

describe('client aborts', () => {
  it('500 aborted slow requests release their upstream connections (max_sockets 16); the gateway keeps serving', async () => {
    const N = 500;
    const s = await abortStorm(N);
    console.log(`[proxy e2e] client-abort: ${describeStorm(N, s)}`);
    expect(s.peakInFlight, 'the upstream pool was saturated before the abort').toBe(MAX_SOCKETS);
    expect(s.settled.openConnections).toBeLessThanOrEqual(MAX_SOCKETS);
    expect(s.settled.inFlight).toBe(statsSelf);
    expect(s.settleMs).toBeLessThan(10_000);
    expect(s.later.inFlight).toBe(statsSelf);
    expect(s.later.openConnections).toBeLessThanOrEqual(MAX_SOCKETS);
    // Sockets being torn down and new pooled ones overlap briefly, but never fan out.
    expect(s.peak).toBeLessThanOrEqual(2 * MAX_SOCKETS + 1);

    const ok = await request(h.url, { path: '/public/after-abort' });
    expect(ok.status).toBe(200);
    expect(json<EchoReply>(ok).path).toBe('/public/after-abort');
    const fast = await request(h.url, { path: '/__echo/slow?ms=10' });
    expect(fast.status).toBe(200);
    const health = await request(h.adminUrl, { path: '/healthz' });
    expect(health.status).toBe(200);
  }, 60_000);

  it('requests queued behind max_sockets whose clients left are never sent to the upstream', async () => {
    // Only the 16 requests holding a pooled socket at the abort should ever reach the echo. A
    // gateway that notices the abort only at the socket's 'close' (loop turns after the
    // client's FIN) hands each freed slot to a queued request whose client is already gone:
    // that request is sent (a POST would be executed) and cancelled right after.
    // The race does not show on every storm (measured: about 60% of storms leak), so up to
    // three are run, stopping at the first leak; a correct gateway gives exactly 16 each time.
    const N = 500;
    const counts: number[] = [];
    for (let k = 0; k < 3; k++) {
      const s = await abortStorm(N);
      console.log(`[proxy e2e] client-abort (queued, storm ${k + 1}): ${describeStorm(N, s)}`);
      expect(s.peakInFlight).toBe(MAX_SOCKETS);
      expect(s.settled.inFlight).toBe(statsSelf);
      counts.push(s.upstreamRequests);
      if (s.upstreamRequests > MAX_SOCKETS + 4) break;
    }
    for (const c of counts) {
      expect(c).toBeGreaterThanOrEqual(MAX_SOCKETS);
      expect(c, `aborted requests that reached the upstream, per storm: ${counts.join(', ')}`).toBeLessThanOrEqual(MAX_SOCKETS + 4);
    }
  }, 120_000);
});

describe('WebSocket', () => {
  const wsUrl = (path: string) => `${h.url}${path}`;

  it('an upgrade with a bearer token reaches the upstream with identity headers; text round-trips', async () => {
    const ws = await connectWebSocket(wsUrl('/app/ws?room=1'), { Authorization: `Bearer ${userToken}`, 'X-Auth-User': 'mallory', 'X-Auth-Roles': 'admin' });
    try {
      expect(ws.response.statusCode).toBe(101);
      const hello = JSON.parse(await ws.next(10_000)) as {
        type: string;
        path: string;
        query: string;
        identity: EchoReply['identity'];
        headers: http.IncomingHttpHeaders;
      };
      expect(hello.type).toBe('hello');
      expect(hello.path).toBe('/app/ws');
      expect(hello.query).toBe('room=1');
      expect(hello.identity.user).toBe('alice');
      expect(hello.identity.email).toBe('alice@example.com');
      expect(hello.identity.roles).toEqual(['staff']);
      expect(hello.identity.user_id).toMatch(/\S/);
      expect(hello.headers['x-auth-user']).toBe('alice');
      expect(hello.headers.authorization).toBeUndefined();
      expect(hello.headers['x-forwarded-for']).toBe('127.0.0.1');
      expect(hello.headers['x-forwarded-proto']).toBe('http');
      ws.send('ping through the gateway');
      expect(await ws.next(10_000)).toBe('echo: ping through the gateway');
      ws.send('second');
      expect(await ws.next(10_000)).toBe('echo: second');
    } finally {
      ws.close();
    }
  });

  it('an authenticated upgrade on the host-routed side upstream is counted there', async () => {
    const before = sideUpgrades;
    const ws = await connectWebSocket(wsUrl('/chat'), { Authorization: `Bearer ${userToken}`, Host: 'side.test' });
    try {
      const hello = JSON.parse(await ws.next(10_000)) as { identity: EchoReply['identity'] };
      expect(hello.identity.user).toBe('alice');
    } finally {
      ws.close();
    }
    expect(sideUpgrades).toBe(before + 1);
  });

  for (const [label, headers] of [
    ['anonymous', {}],
    ['garbage token', { Authorization: 'Bearer nope.nope.nope' }],
    ['spoofed identity headers only', { 'X-Auth-User': 'alice', 'X-Auth-Roles': 'staff' }],
  ] as [string, Record<string, string>][]) {
    const challenge = headers.Authorization ? 'Bearer realm="portcullis", error="invalid_token"' : 'Bearer realm="portcullis"';
    it(`${label} upgrade on an authenticated route is refused with 401 and never reaches the upstream`, async () => {
      const before = sideUpgrades;
      const err = await connectWebSocket(wsUrl('/chat'), { ...headers, Host: 'side.test' }).then(
        (ws) => {
          ws.close();
          return null;
        },
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(WsHandshakeError);
      expect((err as WsHandshakeError).status).toBe(401);
      const err2 = await connectWebSocket(wsUrl('/app/ws'), headers).then(
        (ws) => {
          ws.close();
          return null;
        },
        (e: unknown) => e,
      );
      expect(err2).toBeInstanceOf(WsHandshakeError);
      expect((err2 as WsHandshakeError).status).toBe(401);
      await new Promise((r) => setTimeout(r, 100));
      expect(sideUpgrades).toBe(before);
    });

    it(`${label} upgrade: the 401 carries the same challenge as a plain request (SPEC §3)`, async () => {
      const err = (await connectWebSocket(wsUrl('/app/ws'), headers).catch((e: unknown) => e)) as WsHandshakeError;
      expect(err).toBeInstanceOf(WsHandshakeError);
      expect(err.status).toBe(401);
      expect(err.headers['www-authenticate']).toBe(challenge);
    });
  }

  it.skipIf(!existsSync('/proc/self/fd'))("refused upgrades do not keep the gateway's socket open when the client stays half-open", async () => {
    // An anonymous client that sends an upgrade, reads the 401 and never closes its side must
    // not pin a descriptor in the gateway: an upgraded socket has no timeout of its own, so
    // the gateway has to close its end once the refusal is flushed. Client and gateway share
    // this process, so each leaked socket shows as a second descriptor per client.
    const N = 40;
    const u = new URL(h.url);
    const fds = () => readdirSync('/proc/self/fd').length;
    const base = fds();
    const socks: Socket[] = [];
    let refused = 0;
    let serverFin = 0;
    for (let i = 0; i < N; i++) {
      const s = connect({ port: Number(u.port), host: '127.0.0.1', allowHalfOpen: true });
      s.on('data', (c: Buffer) => {
        if (c.toString('latin1').startsWith('HTTP/1.1 401')) refused++;
      });
      s.on('end', () => serverFin++);
      s.on('error', () => undefined);
      s.write(
        `GET /app/ws HTTP/1.1\r\nHost: ${u.host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
          'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
      );
      socks.push(s);
    }
    try {
      const deadline = Date.now() + 5_000;
      while ((refused < N || serverFin < N || fds() - base > N + 10) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      const extra = fds() - base;
      console.log(
        `[proxy e2e] refused half-open upgrades: ${refused}/${N} got 401, ${serverFin}/${N} got FIN, descriptors over baseline ${extra} (the ${N} clients alone: ${N})`,
      );
      expect(refused).toBe(N);
      expect(serverFin).toBe(N);
      expect(extra, 'gateway-side sockets of refused upgrades still open').toBeLessThanOrEqual(N + 10);
    } finally {
      for (const s of socks) s.destroy();
    }
  });

  it('an upgrade on a deny route is 403 and a bad path is 400', async () => {
    const deny = await connectWebSocket(wsUrl('/internal/ws'), { Authorization: `Bearer ${userToken}` }).catch((e: unknown) => e);
    expect((deny as WsHandshakeError).status).toBe(403);
    // (connectWebSocket goes through WHATWG URL, which would resolve %2e%2e itself; %2f survives.)
    const bad = await connectWebSocket(wsUrl('/app/a%2fb'), { Authorization: `Bearer ${userToken}` }).catch((e: unknown) => e);
    expect((bad as WsHandshakeError).status).toBe(400);
  });
});
