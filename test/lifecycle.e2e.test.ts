import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import { connect, type Socket } from 'node:net';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startRecorder, type Recorder } from './support/recorder.js';

/**
 * SIGTERM (SPEC §10), on the real binary: /readyz answers 503 from the first moment, in-flight
 * requests get the grace, then WebSocket tunnels, stuck requests and half-sent request heads
 * are closed and the process exits 0, within the grace plus a few seconds.
 */
const ROOT = fileURLToPath(new URL('..', import.meta.url));
const GRACE_MS = 1500;

let dir: string;
let stuck: Server;
let stuckUrl: string;
let app: Recorder;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'portcullis-lifecycle-'));
  // An upstream that reads requests and never answers them.
  stuck = createServer(() => undefined);
  await new Promise<void>((r) => stuck.listen(0, '127.0.0.1', r));
  stuckUrl = `http://127.0.0.1:${(stuck.address() as { port: number }).port}`;
  app = await startRecorder({ upgrade: 'accept' });
});
afterAll(async () => {
  stuck.closeAllConnections();
  await new Promise((r) => stuck.close(r));
  await app.close();
  rmSync(dir, { recursive: true, force: true });
});

async function serve(grace = `${GRACE_MS}ms`): Promise<{ child: ChildProcess; url: URL; admin: string; out: () => string }> {
  const file = join(dir, 'gateway.yaml');
  writeFileSync(
    file,
    `listen: 127.0.0.1:0
admin: { listen: 127.0.0.1:0 }
data_dir: ${dir}
shutdown_grace: ${grace}
storage: { database_url: "sqlite:${join(dir, 'g.db')}" }
upstreams:
  stuck: { url: "${stuckUrl}", timeout: 5m }
  app: { url: "${app.url}" }
routes:
  - { name: stuck, match: { path: /stuck/** }, upstream: stuck, access: public }
  - { name: app, match: { path: /** }, upstream: app, access: public }
`,
  );
  const child = spawn(process.execPath, [join(ROOT, 'bin/portcullis.js'), 'serve', '--config', file], {
    cwd: ROOT,
    env: { PATH: process.env.PATH, PORTCULLIS_BOOTSTRAP_ADMIN_PASSWORD: 'lifecycle passphrase 31 walrus' },
  });
  let out = '';
  child.stdout!.on('data', (c) => (out += c));
  child.stderr!.on('data', (c) => (out += c));
  const deadline = Date.now() + 30_000;
  for (;;) {
    const line = out.split('\n').find((l) => l.includes('"event":"listening"'));
    if (line) {
      const j = JSON.parse(line);
      return { child, url: new URL(j.url), admin: j.admin, out: () => out };
    }
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`serve did not start:\n${out}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A raw connection that resolves once `until` appears in what it received. */
function rawSocket(url: URL, bytes: string, until?: RegExp): Promise<{ socket: Socket; closed: Promise<void>; got: () => string }> {
  return new Promise((resolve, reject) => {
    const socket = connect(Number(url.port), url.hostname);
    let got = '';
    const closed = new Promise<void>((r) => socket.once('close', () => r()));
    socket.on('error', () => undefined);
    socket.on('data', (c) => {
      got += c;
      if (until?.test(got)) resolve({ socket, closed, got: () => got });
    });
    socket.once('connect', () => {
      socket.write(bytes);
      if (!until) resolve({ socket, closed, got: () => got });
    });
    socket.once('close', () => reject(new Error(`closed before ${until}: ${got}`)));
  });
}

describe('SIGTERM on the real binary', () => {
  it('readyz 503 at once; tunnels, stuck requests and half-sent heads closed; exit 0 within the grace plus a few seconds', async () => {
    const s = await serve();
    const host = `Host: ${s.url.host}\r\n`;
    try {
      expect((await fetch(`${s.admin}/readyz`)).status).toBe(200);
      // A WebSocket tunnel, open.
      const ws = await rawSocket(
        s.url,
        `GET /ws HTTP/1.1\r\n${host}Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`,
        /^HTTP\/1\.1 101 /,
      );
      // A request its upstream never answers (in flight for the whole grace).
      const inFlight = await rawSocket(s.url, `GET /stuck/forever HTTP/1.1\r\n${host}\r\n`);
      // A request head never finished (slowloris).
      const half = await rawSocket(s.url, `GET /app HTTP/1.1\r\n${host}X-Slow: 1\r\n`);
      await new Promise((r) => setTimeout(r, 200));
      expect(inFlight.got()).toBe('');

      const exited = once(s.child, 'exit');
      const t0 = Date.now();
      s.child.kill('SIGTERM');
      // Ready no longer, at once: the first answer after the signal is handled is a 503.
      let readyz: Response | undefined;
      while (Date.now() - t0 < 1000) {
        readyz = await fetch(`${s.admin}/readyz`);
        if (readyz.status === 503) break;
        await new Promise((r) => setTimeout(r, 10));
      }
      const flippedAfter = Date.now() - t0;
      expect(readyz?.status).toBe(503);
      expect(await readyz?.json()).toEqual({ status: 'draining' });
      expect(flippedAfter).toBeLessThan(500);
      // The listener stopped accepting, while the in-flight request still has its grace.
      expect(s.child.exitCode).toBeNull();
      const refused = await fetch(s.url, { signal: AbortSignal.timeout(1000) }).then(
        (r) => r.status,
        (e: Error) => (e.cause as NodeJS.ErrnoException | undefined)?.code ?? e.name,
      );
      expect(refused).toBe('ECONNREFUSED');

      const [code] = await exited;
      const took = Date.now() - t0;
      expect(code).toBe(0);
      expect(took).toBeGreaterThanOrEqual(GRACE_MS - 100);
      expect(took).toBeLessThan(GRACE_MS + 4000);
      await Promise.all([ws.closed, inFlight.closed, half.closed]);
      expect(s.out()).toMatch(/"event":"stopped"/);
    } finally {
      if (s.child.exitCode === null) s.child.kill('SIGKILL');
    }
  }, 60_000);

  it('a second SIGTERM while draining exits at once, with 0 (the grace is 30 s and a request is stuck)', async () => {
    const s = await serve('30s');
    try {
      const stuckReq = await rawSocket(s.url, `GET /stuck/long HTTP/1.1\r\nHost: ${s.url.host}\r\n\r\n`);
      await new Promise((r) => setTimeout(r, 200));
      const exited = once(s.child, 'exit');
      s.child.kill('SIGTERM');
      await new Promise((r) => setTimeout(r, 300));
      expect(s.child.exitCode).toBeNull();
      const t0 = Date.now();
      s.child.kill('SIGTERM');
      const [code] = await exited;
      expect(code).toBe(0);
      expect(Date.now() - t0).toBeLessThan(2000);
      expect(s.out()).toMatch(/"event":"shutdown_forced"/);
      await stuckReq.closed;
    } finally {
      if (s.child.exitCode === null) s.child.kill('SIGKILL');
    }
  }, 60_000);
});
