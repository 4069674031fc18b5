/**
 * End-to-end: the real `portcullis serve` process started while Redis is unreachable (issue 11,
 * part 3: "dependency failures named plainly in logs … no raw stack traces on stderr when Redis
 * is down at start").
 *
 * Two gateway processes (bin/portcullis.js, as an operator runs it), each with its own SQLite
 * database: one with `redis_url: redis://127.0.0.1:<closed port>`, one with
 * `redis+sentinel://127.0.0.1:<closed>,127.0.0.1:<closed>/pcmaster`. Each must start anyway (not
 * ready, sign-in 503), write only JSON lines on stdout, nothing resembling a stack trace on
 * stderr (no "    at " lines, no "[ioredis]" lines), name the dependency and the reason in plain
 * words in one line per connection (not one per reconnect attempt), and stop cleanly on SIGTERM.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { GOOD_PASSWORD } from './support/helpers.js';
import { freePort } from './support/services.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const BIN = join(ROOT, 'bin/portcullis.js');
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

interface Gateway {
  child: ChildProcess;
  dir: string;
  stdout: () => string;
  stderr: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

const started: Gateway[] = [];

afterAll(async () => {
  for (const g of started) {
    if (g.child.exitCode === null && g.child.signalCode === null) g.child.kill('SIGKILL');
    await g.exited;
    rmSync(g.dir, { recursive: true, force: true });
  }
});

/** Spawns `portcullis serve --config <file>` with this redis_url; output is captured. */
function serve(redisUrl: string): Gateway {
  const dir = mkdtempSync(join(tmpdir(), 'portcullis-redis-down-'));
  const file = join(dir, 'gateway.yaml');
  writeFileSync(
    file,
    `listen: 127.0.0.1:0
admin: { listen: 127.0.0.1:0 }
data_dir: ${dir}
log_level: info
shutdown_grace: 2s
storage:
  database_url: "sqlite:${join(dir, 'gateway.db')}"
  redis_url: "${redisUrl}"
upstreams:
  app: { url: "http://127.0.0.1:9" }
routes:
  - name: app
    match: { path: /app/** }
    upstream: app
    access: authenticated
`,
  );
  const child = spawn(process.execPath, [BIN, 'serve', '--config', file], {
    cwd: ROOT,
    env: { PATH: process.env.PATH, PORTCULLIS_BOOTSTRAP_ADMIN_PASSWORD: GOOD_PASSWORD },
  });
  let out = '';
  let err = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (err += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('close', (code, signal) => resolve({ code, signal })),
  );
  const g: Gateway = { child, dir, stdout: () => out, stderr: () => err, exited };
  started.push(g);
  return g;
}

/** Every stdout line, parsed; fails on any line that is not a JSON object. */
function jsonLines(g: Gateway): Record<string, unknown>[] {
  return g
    .stdout()
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => {
      let v: unknown;
      try {
        v = JSON.parse(l);
      } catch {
        throw new Error(`stdout holds a line that is not JSON: ${l}`);
      }
      expect(typeof v === 'object' && v !== null && !Array.isArray(v), l).toBe(true);
      return v as Record<string, unknown>;
    });
}

async function listening(g: Gateway, timeoutMs = 30_000): Promise<{ url: string; admin: string }> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const line = jsonLines(g).find((l) => l.event === 'listening');
    if (line) return { url: String(line.url), admin: String(line.admin) };
    if (g.child.exitCode !== null) break;
    await sleep(50);
  }
  throw new Error(`the gateway did not start:\n${g.stdout()}\n${g.stderr()}`);
}

/** Nothing on stderr looks like a stack trace or an ioredis complaint. */
function expectNoStackTraces(text: string): void {
  expect(text).not.toMatch(/^\s+at /m);
  expect(text).not.toMatch(/\[ioredis\]/);
  expect(text).not.toMatch(/Unhandled|uncaught/i);
  expect(text).not.toMatch(/\bError: /);
}

describe('the gateway process started while Redis is unreachable', () => {
  it('starts (not ready, sign-in 503), logs the dependency plainly once, keeps stderr free of stack traces, stops on SIGTERM', async () => {
    const [plainPort, s1, s2] = [await freePort(), await freePort(), await freePort()];
    const plain = serve(`redis://127.0.0.1:${plainPort}`);
    const sentinel = serve(`redis+sentinel://127.0.0.1:${s1},127.0.0.1:${s2}/pcmaster`);
    const cases = [
      { g: plain, unreachable: `Redis (state store) unreachable at 127.0.0.1:${plainPort}: connection refused` },
      {
        g: sentinel,
        unreachable: `Redis (state store) unreachable: no Sentinel gave the address of master "pcmaster" (127.0.0.1:${s1}: cannot connect; 127.0.0.1:${s2}: cannot connect)`,
      },
    ];
    const addresses = await Promise.all(cases.map((c) => listening(c.g)));

    for (const [i] of cases.entries()) {
      const { url, admin } = addresses[i];
      const ready = await fetch(`${admin}/readyz`);
      expect(ready.status).toBe(503);
      const login = await fetch(`${url}/api/auth/login`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ username: 'admin', password: GOOD_PASSWORD }),
      });
      expect(login.status).toBe(503);
      expect((await login.json()) as object).toMatchObject({ code: 'service_unavailable' });
      // The proxied side still answers (401: no token) without touching Redis.
      expect((await fetch(`${url}/app/x`)).status).toBe(401);
    }
    // Let the clients retry for a while: each retry must not add a line.
    await sleep(2500);

    for (const { g, unreachable } of cases) {
      const lines = jsonLines(g);
      // What the Redis connections themselves report (not the readiness checks' lines).
      const byConnection = (name: string) => lines.filter((l) => l.connection === name).map((l) => l.msg);
      expect(byConnection('portcullis'), g.stdout()).toEqual([unreachable]);
      expect(lines.find((l) => l.msg === unreachable)).toMatchObject({ level: 'warn', event: 'state_store', connection: 'portcullis' });
      // The revocation channel's own connection says the same, once.
      expect(byConnection('portcullis-revocations')).toEqual([unreachable.replace('(state store)', '(revocation channel)')]);
      // The start-up line carries the same plain reason.
      const atStart = lines.find((l) => l.msg === 'Redis is not reachable at start; sign-in will answer 503 until it is');
      expect(atStart?.err).toBe(`redis not ready after 3000 ms: ${unreachable}`);
      expectNoStackTraces(g.stderr());
      expect(g.stdout()).not.toMatch(/\[ioredis\]/);
    }

    for (const { g } of cases) g.child.kill('SIGTERM');
    const exits = await Promise.all(cases.map(({ g }) => g.exited));
    expect(exits).toEqual([
      { code: 0, signal: null },
      { code: 0, signal: null },
    ]);
    for (const { g } of cases) {
      jsonLines(g);
      expectNoStackTraces(g.stderr());
      expect(g.stderr(), 'stderr').toBe('');
    }
  });
});
