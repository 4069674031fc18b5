import http from 'node:http';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EchoReply } from '../demo/echo.js';
import { startProxyHarness, type ProxyHarness } from '../../test/support/proxy.js';

const SIZE = 50 * 1024 * 1024;
const CHUNK = 64 * 1024;
// Everything (client, proxy, echo upstream) runs in this process, so any layer that buffered
// the body would show up as ~50 MB (or a multiple of it) of extra RSS. Streaming costs a few MB.
const RSS_BOUND = 35 * 1024 * 1024;

/** Samples RSS every 20 ms until stopped; returns the peak growth over the starting value. */
function rssWatch(): { stop(): number } {
  global.gc?.();
  const base = process.memoryUsage.rss();
  let peak = base;
  const t = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage.rss());
  }, 20);
  return {
    stop() {
      clearInterval(t);
      peak = Math.max(peak, process.memoryUsage.rss());
      return peak - base;
    },
  };
}

/**
 * Runs `transfer` under an RSS watch; if the growth exceeds the bound, runs it once more and
 * keeps the smaller figure. Allocator/GC noise is one-off and timing-dependent; buffering a
 * 50 MB body would show up on every run.
 */
async function measured<T>(transfer: () => Promise<T>): Promise<{ value: T; grew: number }> {
  let watch = rssWatch();
  let value = await transfer();
  let grew = watch.stop();
  if (grew >= RSS_BOUND) {
    watch = rssWatch();
    value = await transfer();
    grew = Math.min(grew, watch.stop());
  }
  return { value, grew };
}

/** A generated body: `size` bytes, produced on demand in 64 KiB chunks. */
function generated(size: number): Readable {
  let left = size;
  const block = Buffer.alloc(CHUNK, 0x7a);
  return new Readable({
    read() {
      if (left <= 0) {
        this.push(null);
        return;
      }
      const n = Math.min(left, CHUNK);
      left -= n;
      this.push(n === CHUNK ? block : block.subarray(0, n));
    },
  });
}

function upload(url: string, size: number): Promise<void> {
  const u = new URL(url);
  return new Promise<void>((resolve, reject) => {
    const req = http.request({ hostname: u.hostname, port: u.port, method: 'POST', path: '/warm', agent: false }, (res) => {
      res.resume();
      res.on('end', resolve);
    });
    req.on('error', reject);
    generated(size).pipe(req);
  });
}

function download(url: string, size: number): Promise<void> {
  const u = new URL(url);
  return new Promise<void>((resolve, reject) => {
    const req = http.request({ hostname: u.hostname, port: u.port, path: `/__echo/stream?bytes=${size}`, agent: false }, (res) => {
      res.resume();
      res.on('end', resolve);
    });
    req.on('error', reject);
    req.end();
  });
}

describe('forward: bodies are streamed both ways', () => {
  let h: ProxyHarness;
  beforeAll(async () => {
    h = await startProxyHarness({ echo: { timeout: 20_000 } });
    // Warm up: the first large transfer in a process grows RSS by up to ~30 MB even without
    // any proxy (allocator arenas, received chunks awaiting GC; measured here). Move 50 MB each
    // way straight to the echo server, and a little through the proxy, before measuring.
    await upload(h.echo.url, SIZE);
    await download(h.echo.url, SIZE);
    await upload(h.url, 4 * 1024 * 1024);
  });
  afterAll(() => h.close());

  it('a 50 MB upload (chunked, generated on the fly) reaches the upstream whole, without buffering', async () => {
    const u = new URL(h.url);
    const { value: reply, grew } = await measured(
      () =>
        new Promise<EchoReply>((resolve, reject) => {
          const req = http.request(
            { hostname: u.hostname, port: u.port, method: 'POST', path: '/upload', agent: false, headers: { 'content-type': 'application/octet-stream' } },
            (res) => {
              let s = '';
              res.setEncoding('utf8');
              res.on('data', (c: string) => (s += c));
              res.on('end', () => resolve(JSON.parse(s) as EchoReply));
            },
          );
          req.on('error', reject);
          generated(SIZE).pipe(req);
        }),
    );
    expect(reply.body_bytes).toBe(SIZE);
    expect(reply.headers['transfer-encoding']).toBe('chunked');
    expect(grew).toBeLessThan(RSS_BOUND);
    console.log(`upload 50 MB: RSS grew ${(grew / 1048576).toFixed(1)} MB`);
  });

  it('a 50 MB upload with Content-Length streams too', async () => {
    const u = new URL(h.url);
    const { value: reply, grew } = await measured(
      () =>
        new Promise<EchoReply>((resolve, reject) => {
          const req = http.request(
            { hostname: u.hostname, port: u.port, method: 'PUT', path: '/upload', agent: false, headers: { 'content-length': String(SIZE) } },
            (res) => {
              let s = '';
              res.on('data', (c: Buffer) => (s += c));
              res.on('end', () => resolve(JSON.parse(s) as EchoReply));
            },
          );
          req.on('error', reject);
          generated(SIZE).pipe(req);
        }),
    );
    expect(reply.body_bytes).toBe(SIZE);
    expect(reply.headers['content-length']).toBe(String(SIZE));
    expect(grew).toBeLessThan(RSS_BOUND);
    console.log(`upload 50 MB (content-length): RSS grew ${(grew / 1048576).toFixed(1)} MB`);
  });

  it('a 50 MB download streams back, byte count exact, without buffering', async () => {
    const u = new URL(h.url);
    const { value, grew } = await measured(
      () =>
        new Promise<{ status: number; length: string | undefined; bytes: number }>((resolve, reject) => {
          const req = http.request({ hostname: u.hostname, port: u.port, path: `/__echo/stream?bytes=${SIZE}`, agent: false }, (res) => {
            let n = 0;
            res.on('data', (c: Buffer) => (n += c.length));
            res.on('end', () => resolve({ status: res.statusCode ?? 0, length: res.headers['content-length'], bytes: n }));
            res.on('error', reject);
          });
          req.on('error', reject);
          req.end();
        }),
    );
    expect(value.status).toBe(200);
    expect(value.length).toBe(String(SIZE));
    expect(value.bytes).toBe(SIZE);
    expect(grew).toBeLessThan(RSS_BOUND);
    console.log(`download 50 MB: RSS grew ${(grew / 1048576).toFixed(1)} MB`);
    expect(h.results.at(-1)).toMatchObject({ upstream: 'echo', status: 200 });
  });
});

describe('forward: streaming is observable end to end', () => {
  let h: ProxyHarness;
  let upstream: http.Server;
  let releaseDownload: () => void = () => undefined;
  beforeAll(async () => {
    // /early answers after the first MiB of the request body, long before the client is done.
    // /held sends 1 MiB, then holds the rest until the test releases it.
    upstream = http.createServer((req, res) => {
      if (req.url === '/early') {
        let n = 0;
        const onData = (c: Buffer): void => {
          n += c.length;
          if (n >= 1024 * 1024) {
            req.off('data', onData);
            req.pause();
            res.end(JSON.stringify({ seen: n }));
          }
        };
        req.on('data', onData);
        return;
      }
      res.writeHead(200, { 'content-length': String(2 * 1024 * 1024) });
      res.write(Buffer.alloc(1024 * 1024, 0x61));
      releaseDownload = () => res.end(Buffer.alloc(1024 * 1024, 0x62));
    });
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
    const port = (upstream.address() as { port: number }).port;
    h = await startProxyHarness({ upstreams: { raw: { url: `http://127.0.0.1:${port}` } } });
    h.target = (req) => ({ upstream: 'raw', path: req.url ?? '/' });
  });
  afterAll(async () => {
    await h.close();
    upstream.closeAllConnections();
    await new Promise<void>((r) => upstream.close(() => r()));
  });

  it('the upstream receives the upload while the client is still sending', async () => {
    const u = new URL(h.url);
    let sent = 0;
    const body = new Readable({
      read() {
        // 50 MB on offer, but only what the pipeline pulls is produced.
        if (sent >= SIZE) return void this.push(null);
        sent += CHUNK;
        this.push(Buffer.alloc(CHUNK, 0x63));
      },
    });
    const result = await new Promise<{ status: number; seen: number; sentAtResponse: number }>((resolve, reject) => {
      let responded = false;
      const req = http.request({ hostname: u.hostname, port: u.port, method: 'POST', path: '/early', agent: false }, (res) => {
        responded = true;
        const sentAtResponse = sent;
        let s = '';
        res.on('data', (c: Buffer) => (s += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, seen: (JSON.parse(s) as { seen: number }).seen, sentAtResponse }));
      });
      // The body is cut short once the response is in; an error before that fails the test.
      req.on('error', (e) => (responded ? undefined : reject(e)));
      body.pipe(req);
    });
    body.unpipe();
    body.destroy();
    expect(result.status).toBe(200);
    expect(result.seen).toBeGreaterThanOrEqual(1024 * 1024);
    // A buffering proxy would have needed all 50 MB before contacting the upstream.
    expect(result.sentAtResponse).toBeLessThan(SIZE / 2);
  });

  it('the client receives the download while the upstream is still sending', async () => {
    const u = new URL(h.url);
    const got = await new Promise<{ first: number; total: number }>((resolve, reject) => {
      const req = http.request({ hostname: u.hostname, port: u.port, path: '/held', agent: false }, (res) => {
        let n = 0;
        let first = 0;
        res.on('data', (c: Buffer) => {
          n += c.length;
          if (first === 0 && n >= 1024 * 1024) {
            first = n;
            releaseDownload(); // only now does the upstream finish
          }
        });
        res.on('end', () => resolve({ first, total: n }));
      });
      req.on('error', reject);
      req.end();
    });
    expect(got.first).toBeGreaterThanOrEqual(1024 * 1024);
    expect(got.first).toBeLessThan(2 * 1024 * 1024);
    expect(got.total).toBe(2 * 1024 * 1024);
  });
});
