import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { generate } from 'otplib';
import { parseConfig } from '../../src/config/index.js';
import { createApp, type App } from '../../src/app.js';
import { createLogger } from '../../src/http/log.js';
import { startEchoServer } from '../../src/demo/echo.js';
import { main as cliMain } from '../../src/cli/main.js';

/** Default test routes: a spread of access rules over one echo upstream. */
export const ROUTES = `
routes:
  - name: admin
    match: { path: /admin/** }
    upstream: echo
    access: { roles: [admin] }
  - name: secure
    match: { path: /secure/** }
    upstream: echo
    access: { roles: [admin] }
    mfa: true
  - name: closed
    match: { path: /internal/** }
    access: deny
  - name: public
    match: { path: /public/** }
    upstream: echo
    access: public
  - name: semis
    match: { path: /matrix/** }
    upstream: echo
    access: authenticated
    allow_semicolons: true
  - name: reports
    match: { host: reports.example.com, path: /** }
    upstream: echo
    access: { roles: [reporter] }
  - name: app
    match: { path: /app/** }
    upstream: echo
    access: authenticated
`;

export interface Harness {
  app: App;
  url: string;
  adminUrl: string;
  echoUrl: string;
  dir: string;
  logs: Record<string, unknown>[];
  close(): Promise<void>;
}

/**
 * Starts a real echo upstream and a real gateway on 127.0.0.1:0 with a fresh SQLite file (or
 * the given database URL) in its own temp dir.
 */
export async function startHarness(
  opts: {
    extraYaml?: string;
    routes?: string;
    upstreamExtra?: string;
    databaseUrl?: string;
    redisUrl?: string;
    redisPrefix?: string;
    env?: NodeJS.ProcessEnv;
    now?: () => Date;
  } = {},
): Promise<Harness> {
  const dir = mkdtempSync(join(tmpdir(), 'portcullis-test-'));
  const echo = await startEchoServer({ host: '127.0.0.1', port: 0 });
  const yaml = `
listen: 127.0.0.1:0
admin: { listen: 127.0.0.1:0 }
data_dir: ${dir}
log_level: info
storage:
  database_url: ${opts.databaseUrl ?? `sqlite:${join(dir, 'test.db')}`}
${opts.redisUrl ? `  redis_url: ${opts.redisUrl}\n  redis_prefix: "${opts.redisPrefix ?? `pc-test:${process.pid}:${Date.now().toString(36)}:`}"` : ''}
upstreams:
  echo:
    url: ${echo.url}
    timeout: 5s
${opts.upstreamExtra ?? ''}
${opts.extraYaml ?? ''}
${opts.routes ?? ROUTES}
`;
  const file = join(dir, 'gateway.yaml');
  writeFileSync(file, yaml);
  const config = parseConfig(yaml, file, opts.env ?? {});
  const logs: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk, _enc, cb) {
      for (const line of String(chunk).split('\n')) if (line) logs.push(JSON.parse(line));
      cb();
    },
  });
  const app = await createApp({ config, env: opts.env ?? {}, logger: createLogger('info', sink), bootstrapAdmin: false, now: opts.now, revocationPollMs: 100 });
  const { url, adminUrl } = await app.start();
  return {
    app,
    url,
    adminUrl,
    echoUrl: echo.url,
    dir,
    logs,
    async close() {
      await app.stop(1000);
      await echo.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A whole HTTP answer, read once: status, headers, body text, the body as JSON, every `Set-Cookie`. */
export interface Reply {
  status: number;
  headers: Headers;
  text: string;
  json: () => any;
  setCookies: string[];
}

/** Reads a fetch `Response` into a {@link Reply}. */
export async function toReply(res: Response): Promise<Reply> {
  const text = await res.text();
  return { status: res.status, headers: res.headers, text, json: () => JSON.parse(text), setCookies: res.headers.getSetCookie() };
}

/** Undoes the gateway pages' HTML escaping (`escapeHtml`) of a value read out of a page. */
export const unescapeHtml = (s: string): string =>
  s
    .replace(/&quot;/g, '"')
    .replace(/&#39;/g, "'")
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&amp;/g, '&');

/** A password that satisfies the default policy. */
export const GOOD_PASSWORD = 'correct horse battery staple 42';

/** Creates a user straight in the store. */
export async function addUser(h: Harness, username: string, roles: string[] = [], opts: { email?: string; password?: string; disabled?: boolean } = {}) {
  const u = await h.app.db.users.create({
    username,
    email: opts.email ?? `${username}@example.com`,
    roles,
    passwordHash: await h.app.hasher.hash(opts.password ?? GOOD_PASSWORD),
  });
  if (opts.disabled) await h.app.db.users.update(u.id, { disabled: true });
  return u;
}

/** Logs in through HTTP and returns the access token. */
export async function login(h: Harness, username: string, password = GOOD_PASSWORD): Promise<string> {
  const res = await fetch(`${h.url}/api/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ username, password }),
  });
  if (res.status !== 200) throw new Error(`login failed: ${res.status} ${await res.text()}`);
  return ((await res.json()) as { access_token: string }).access_token;
}

export interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/**
 * Sends bytes exactly as given on a fresh socket (no client-side normalization) and parses
 * the response. The request should carry `Connection: close`.
 */
export function rawRequest(url: string, raw: string | Buffer): Promise<RawResponse> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const sock = connect(Number(port), hostname);
    const chunks: Buffer[] = [];
    sock.on('data', (c) => chunks.push(c));
    sock.on('error', reject);
    sock.on('close', () => {
      const text = Buffer.concat(chunks).toString('latin1');
      const [head, ...rest] = text.split('\r\n\r\n');
      const lines = head.split('\r\n');
      const status = Number(lines[0].split(' ')[1]);
      const headers: Record<string, string> = {};
      for (const l of lines.slice(1)) {
        const i = l.indexOf(':');
        headers[l.slice(0, i).toLowerCase()] = l.slice(i + 1).trim();
      }
      let body = rest.join('\r\n\r\n');
      if (headers['transfer-encoding'] === 'chunked') body = dechunk(body);
      resolve({ status, headers, body });
    });
    sock.write(raw);
  });
}

/** The payload of a complete chunked body (trailers ignored). */
export function dechunk(s: string): string {
  let out = '';
  let i = 0;
  for (;;) {
    const nl = s.indexOf('\r\n', i);
    if (nl === -1) break;
    const size = parseInt(s.slice(i, nl), 16);
    if (!size) break;
    out += s.slice(nl + 2, nl + 2 + size);
    i = nl + 2 + size + 2;
  }
  return out;
}

/**
 * One request written as given (`Host` of the harness and `Connection: close` unless overridden;
 * a header given as '' is left out), for targets and headers no client library would send.
 */
export function sendRaw(url: string, method: string, target: string, headers: Record<string, string> = {}, version = '1.1'): Promise<RawResponse> {
  const all: Record<string, string> = { Host: new URL(url).host, Connection: 'close', ...headers };
  const lines = Object.entries(all)
    .filter(([, v]) => v !== '')
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join('');
  return rawRequest(url, `${method} ${target} HTTP/${version}\r\n${lines}\r\n`);
}

/** GET with a raw request target through a socket; `host` replaces the Host value (default: the URL's). */
export function rawGet(url: string, target: string, headers: Record<string, string> = {}, host = new URL(url).host): Promise<RawResponse> {
  const extra = Object.entries(headers)
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join('');
  return rawRequest(url, `GET ${target} HTTP/1.1\r\nHost: ${host}\r\n${extra}Connection: close\r\n\r\n`);
}

/** The metrics text of a harness. */
export async function metricsText(h: Harness): Promise<string> {
  return (await fetch(`${h.adminUrl}/metrics`)).text();
}

/** Reads one sample's value from Prometheus text, 0 when absent. */
export function sample(text: string, name: string, labels: Record<string, string> = {}): number {
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const m = /^([a-z_]+)(\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries([...(m[3] ?? '').matchAll(/([a-z_]+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) return Number(m[4]);
  }
  return 0;
}

/**
 * A settable clock for `startHarness({ now })` (tokens, lockouts and TOTP all read it): tests
 * move time instead of sleeping.
 */
export interface FakeClock {
  now: () => Date;
  /** Current time, epoch milliseconds. */
  ms(): number;
  advance(ms: number): void;
}

export function fakeClock(startMs: number): FakeClock {
  let t = startMs;
  return {
    now: () => new Date(t),
    ms: () => t,
    advance(ms: number) {
      t += ms;
    },
  };
}

/** The RFC 6238 code (SHA-1, 6 digits, 30 s) of a base32 secret at the given epoch milliseconds. */
export async function totpAt(secret: string, atMs: number): Promise<string> {
  return generate({ secret, epoch: Math.floor(atMs / 1000) });
}

/** A 6-digit code that is wrong for the secret at any step the gateway accepts around `atMs`. */
export async function wrongTotp(secret: string, atMs: number): Promise<string> {
  const valid = new Set(await Promise.all([-2, -1, 0, 1, 2].map((s) => totpAt(secret, atMs + s * 30_000))));
  let n = (Number(await totpAt(secret, atMs)) + 500_000) % 1_000_000;
  while (valid.has(String(n).padStart(6, '0'))) n = (n + 1) % 1_000_000;
  return String(n).padStart(6, '0');
}

export interface CliRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs the real `portcullis` command (bin/portcullis.js, a new Node process running the compiled
 * dist/, which vitest's globalSetup builds) with a minimal environment. Keep it for what needs a process of its own
 * (signals, exit codes of the real binary, replicas); everything else uses
 * {@link runCliInProcess}.
 */
export async function runCli(args: string[], opts: { stdin?: string; env?: NodeJS.ProcessEnv } = {}): Promise<CliRun> {
  const root = fileURLToPath(new URL('../..', import.meta.url));
  return runProcess(process.execPath, [join(root, 'bin/portcullis.js'), ...args], {
    cwd: root,
    env: { PATH: process.env.PATH, ...opts.env },
    stdin: opts.stdin,
  });
}

/** Runs a command to its end and returns its exit code and everything it printed. */
export function runProcess(command: string, args: readonly string[], opts: { cwd: string; env: NodeJS.ProcessEnv; stdin?: string }): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: opts.cwd, env: opts.env });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c) => (stdout += c));
    child.stderr.on('data', (c) => (stderr += c));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(opts.stdin ?? '');
  });
}

/**
 * Runs one `portcullis` command in this process through `main(argv, io)`: the same code the
 * binary runs (src/cli/bin.ts only adds the exit code), with the same minimal environment
 * (`PATH` plus `env`, never this process's), `stdin` as the piped standard input (empty when
 * not given, as for a spawned command) and stdout/stderr captured. Commands keep no state
 * between runs: each opens and closes its own database (and Redis) connection, as a separate
 * process would. `serve` is not for this runner (it installs process signal handlers); tests
 * of the server start the real command.
 */
export async function runCliInProcess(args: string[], opts: { stdin?: string; env?: NodeJS.ProcessEnv } = {}): Promise<CliRun> {
  if (args[0] === 'serve' && !args.includes('--help') && !args.includes('-h'))
    throw new Error('runCliInProcess: start `serve` as a real process (runCli or spawn)');
  let stdout = '';
  let stderr = '';
  const code = await cliMain(args, {
    out: (s) => {
      stdout += s;
    },
    err: (s) => {
      stderr += s;
    },
    stdin: async () => opts.stdin ?? '',
    env: { PATH: process.env.PATH, ...opts.env },
  });
  return { code, stdout, stderr };
}
