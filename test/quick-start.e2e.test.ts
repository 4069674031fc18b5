import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startRecorder, type Recorder } from './support/recorder.js';
import { PrivateRedis, freePort, postgresReachable } from './support/services.js';
import { runProcess } from './support/helpers.js';

/**
 * docs/operations.md "Production quick-start", followed literally: its three shell blocks
 * (setup, serve, check) run as written, with only the variables the page asks the reader to
 * set, against a fresh PostgreSQL database, a private redis-server and a recording app.
 */
const ROOT = fileURLToPath(new URL('..', import.meta.url));
const PG_URL = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const DB = `portcullis_quickstart_${process.pid}_${Date.now()}`;
const ADMIN_PASSWORD = 'quick start passphrase 2048 otter';

/** The fenced block of docs/operations.md whose info string is `sh <name>`. */
function block(name: string): string {
  const doc = readFileSync(join(ROOT, 'docs/operations.md'), 'utf8');
  const m = new RegExp(`\`\`\`sh ${name}\\n([\\s\\S]*?)\\n\`\`\``).exec(doc);
  if (!m) throw new Error(`docs/operations.md has no \`\`\`sh ${name} block`);
  return m[1];
}

async function adminQuery(sql: string): Promise<void> {
  const { default: pg } = await import('pg');
  const c = new pg.Client({ connectionString: PG_URL, connectionTimeoutMillis: 5000 });
  await c.connect();
  try {
    await c.query(sql);
  } finally {
    await c.end();
  }
}

const bash = (script: string, env: NodeJS.ProcessEnv) => runProcess('bash', ['-c', script], { cwd: ROOT, env });

describe('docs/operations.md production quick-start, followed literally (PostgreSQL, Redis)', async () => {
  const reachable = await postgresReachable(PG_URL);
  if (!reachable && process.env.CI === 'true') throw new Error(`CI=true but PostgreSQL is not reachable at ${PG_URL}`);

  let redis: PrivateRedis;
  let app: Recorder;
  let confDir: string;
  let env: NodeJS.ProcessEnv;
  let server: ChildProcess | undefined;
  let serverOut = '';

  beforeAll(async () => {
    if (!reachable) return;
    await adminQuery(`CREATE DATABASE ${DB}`);
    redis = new PrivateRedis(await freePort());
    await redis.start();
    app = await startRecorder();
    confDir = mkdtempSync(join(tmpdir(), 'portcullis-quickstart-'));
    const port = await freePort();
    const adminPort = await freePort();
    const db = new URL(PG_URL);
    db.pathname = `/${DB}`;
    // Exactly the variables the page's table asks for, plus the two listen addresses (free
    // ports here) and what any shell has (PATH, HOME for npx).
    env = {
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      DATABASE_URL: db.toString(),
      REDIS_URL: redis.url,
      PORTCULLIS_PUBLIC_URL: `http://127.0.0.1:${port}`,
      APP_URL: app.url,
      ADMIN_PASSWORD,
      CONF_DIR: confDir,
      PORTCULLIS_LISTEN: `127.0.0.1:${port}`,
      PORTCULLIS_ADMIN_LISTEN: `127.0.0.1:${adminPort}`,
    };
  }, 60_000);

  afterAll(async () => {
    if (server && server.exitCode === null) server.kill('SIGKILL');
    await app?.close();
    await redis?.kill();
    if (confDir) rmSync(confDir, { recursive: true, force: true });
    if (reachable) await adminQuery(`DROP DATABASE IF EXISTS ${DB} WITH (FORCE)`);
  });

  it.skipIf(!reachable)(
    'setup makes keys, config and the first admin; serve starts in production; check signs in; the routes work; SIGTERM exits 0',
    async () => {
      const setup = await bash(block('quick-start-setup'), env);
      expect(setup.code, `setup failed:\n${setup.stdout}\n${setup.stderr}`).toBe(0);
      expect(setup.stdout).toMatch(/gateway\.yaml: ok \(2 routes, 1 upstreams\)/);
      expect(setup.stdout).toMatch(/created user admin .* with roles admin/);

      server = spawn('bash', ['-c', block('quick-start-serve')], { cwd: ROOT, env });
      server.stdout!.on('data', (c) => (serverOut += c));
      server.stderr!.on('data', (c) => (serverOut += c));
      const deadline = Date.now() + 30_000;
      while (!serverOut.includes('"event":"listening"')) {
        if (server.exitCode !== null) throw new Error(`serve exited (${server.exitCode}):\n${serverOut}`);
        if (Date.now() > deadline) throw new Error(`serve did not start:\n${serverOut}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      // Production: no demo app, no generated key files, no bootstrap password printed.
      expect(serverOut).not.toMatch(/first admin account created|keys_generated|demo/);

      const check = await bash(block('quick-start-check'), env);
      expect(check.code, `check failed:\n${check.stdout}\n${check.stderr}`).toBe(0);
      const token = JSON.parse(check.stdout.slice(check.stdout.indexOf('{"access_token"'))).access_token as string;
      expect(token).toMatch(/^ey/);
      // The token's issuer is public_url, the same on every replica.
      expect(JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString()).iss).toBe(env.PORTCULLIS_PUBLIC_URL);

      const base = env.PORTCULLIS_PUBLIC_URL!;
      const proxied = await fetch(`${base}/reports/1`, { headers: { authorization: `Bearer ${token}` } });
      expect(proxied.status).toBe(200);
      expect(app.seen.at(-1)?.headers['x-auth-user']).toBe('admin');
      expect((await fetch(`${base}/reports/1`)).status).toBe(401);
      const admin = await fetch(`${base}/admin/x`, { headers: { authorization: `Bearer ${token}` } });
      expect(admin.status).toBe(403);
      expect(((await admin.json()) as { code: string }).code).toBe('mfa_required');

      const exited = once(server, 'exit');
      const stopAt = Date.now();
      server.kill('SIGTERM');
      const [code] = await exited;
      expect(code).toBe(0);
      expect(Date.now() - stopAt).toBeLessThan(30_000);
    },
    120_000,
  );
});
