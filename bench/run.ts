/**
 * The Portcullis benchmark (`npm run bench`; SPEC §12). Never part of `npm test`.
 *
 * In one run on this machine, each server in its own process: the echo upstream alone, nginx
 * `proxy_pass` (1 worker, keep-alive: the 1.00 baseline), a bare undici Pool forwarder, the
 * compiled gateway on an authenticated (bearer) and on a public route, and nginx
 * `auth_request` to a Node jose verifier (forward-auth). Each is driven by wrk; the table gives
 * req/s, the ratio to nginx, p50/p99 and the CPU the proxy spent per request. Then: proxied
 * latency idle and during a login storm, 10,000 aborted requests, memory per idle keep-alive
 * connection, idle RSS, and throughput with 1 and 2 workers sharing Redis. Targets are printed
 * PASS/FAIL. See bench/README.md.
 *
 *   npm run bench -- [--seconds 10] [--runs 1] [--only a,b] [--connections 50] [--threads 1]
 *                    [--no-build] [--keep] [--redis redis://127.0.0.1:6379]
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { connect, type Socket } from 'node:net';
import { Redis } from 'ioredis';
import type { EchoStats } from '../src/demo/echo.js';
import {
  attachInspector,
  fdCount,
  freePort,
  measured,
  oneRequest,
  processTree,
  request,
  rssBytes,
  sleep,
  startProcess,
  stopProcess,
  tail,
  waitForPort,
  which,
  wrk,
  type Inspector,
  type Proc,
  type WrkOptions,
  type WrkResult,
} from './lib.js';

// ---------------------------------------------------------------------------------------------
// Options

const argv = process.argv.slice(2);
const ECHO = argv.includes('--echo');
const opt = (name: string) => {
  const i = argv.indexOf(`--${name}`);
  return i === -1 ? undefined : argv[i + 1];
};
const num = (name: string, def: number) => {
  const v = opt(name);
  const n = v === undefined ? def : Number(v);
  if (!Number.isFinite(n) || n <= 0) usage(`--${name} needs a positive number`);
  return n;
};
function usage(msg?: string): never {
  if (msg) process.stderr.write(`bench: ${msg}\n`);
  process.stderr.write(
    'usage: npm run bench -- [--seconds N] [--runs N] [--only a,b] [--connections N] [--threads N] [--no-build] [--keep] [--redis URL] [--echo]\n' +
      '  --echo: the upstream echoes each request (bigger answers for routes that add identity headers); default: a fixed small JSON\n' +
      `  --only takes any of: ${SECTIONS.join(', ')}\n`,
  );
  process.exit(2);
}
const ROWS = ['upstream', 'nginx', 'bare', 'auth', 'public', 'forward-auth'] as const;
const SECTIONS = [...ROWS, 'storm', 'aborts', 'keepalive', 'rss', 'workers'] as const;
type Section = (typeof SECTIONS)[number];
type Row = (typeof ROWS)[number];
if (argv.includes('--help') || argv.includes('-h')) usage();
const SECONDS = num('seconds', 10);
const RUNS = num('runs', 1);
const CONNECTIONS = num('connections', 50);
const THREADS = num('threads', 1);
const ABORTS = num('aborts', 10_000);
const KEEPALIVE = num('keepalive-connections', 2_000);
const REDIS_URL = opt('redis') ?? 'redis://127.0.0.1:6379';
const only = opt('only')
  ?.split(',')
  .map((s) => s.trim())
  .filter(Boolean);
for (const s of only ?? []) if (!(SECTIONS as readonly string[]).includes(s)) usage(`unknown section "${s}"`);
const want = (s: Section) => !only || only.includes(s);

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const PASSWORD = 'quiet harbour lantern 7342 plum';
const STORM_CLIENTS = 8;
const WARMUP_SECONDS = 2;
const SETTLE_MS = 6000; // > the upstream's 5 s keep-alive timeout: pooled upstream sockets are gone
const AUTH_PATH = '/app/bench';
const PUBLIC_PATH = '/pub/bench'; // same length as AUTH_PATH: same echo body size

const say = (s: string) => process.stderr.write(`· ${s}\n`);
const avg = (xs: number[]) => xs.reduce((a, x) => a + x, 0) / xs.length;
const fmt = (n: number, d = 0) => (Number.isFinite(n) ? n.toFixed(d) : 'n/a');
const ms = (n: number) => (Number.isFinite(n) ? `${n < 10 ? n.toFixed(2) : n.toFixed(1)} ms` : 'n/a');
const mb = (b: number) => (Number.isFinite(b) ? `${(b / 1048576).toFixed(1)} MB` : 'n/a');
const verdict = (ok: boolean | undefined) => (ok === undefined ? 'n/a ' : ok ? 'PASS' : 'FAIL');

// ---------------------------------------------------------------------------------------------
// Prerequisites

const wantNginx = want('nginx') || want('forward-auth');
const missing = [which('wrk') ? null : 'wrk', wantNginx && !which('nginx') ? 'nginx' : null].filter((x): x is string => x !== null);
if (missing.length) {
  process.stderr.write(
    `bench: ${missing.join(' and ')} not found. Install from Debian/Ubuntu with:\n` +
      `  sudo apt-get install -y ${missing.join(' ')}\n` +
      `(nginx needs the auth_request module, which Debian's nginx package includes; \`nginx -V\` lists --with-http_auth_request_module.)\n`,
  );
  process.exit(2);
}
const notes: string[] = [];
const load1 = loadavg()[0];
if (load1 > 1)
  notes.push(`load average was ${load1.toFixed(2)} at start (${availableParallelism()} CPUs): other work may have been running; figures are noisier`);

if (!argv.includes('--no-build')) {
  say('building the gateway (tsc -p tsconfig.build.json)');
  const b = spawnSync(process.execPath, [join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.build.json'], { cwd: ROOT, encoding: 'utf8' });
  if (b.status !== 0) {
    const errors = (b.stdout.match(/error TS\d+/g) ?? []).length;
    process.stderr.write(`${b.stdout.split('\n').slice(0, 20).join('\n')}\n`);
    notes.push(`tsc reported ${errors} type error(s); dist/ was emitted anyway and is what ran`);
  }
}
const BIN = join(ROOT, 'dist/cli/bin.js');

// ---------------------------------------------------------------------------------------------
// Processes

const dir = mkdtempSync(join(tmpdir(), 'portcullis-bench-'));
const procs: Proc[] = [];
const ENV = {
  NODE_ENV: 'production',
  PORTCULLIS_ENCRYPTION_KEY: randomBytes(32).toString('base64'),
};
const tsx = (file: string, args: string[], name: string) => {
  const p = startProcess(name, process.execPath, ['--import', 'tsx', join(ROOT, file), ...args], { cwd: ROOT, log: join(dir, `${name}.log`) });
  procs.push(p);
  return p;
};

async function startEcho(): Promise<{ proc: Proc; port: number; url: string }> {
  const port = await freePort();
  // A small fixed JSON answer (as the issue's figures used), so the authenticated route's extra
  // identity headers do not also buy it a bigger echoed response; `--echo` reflects requests.
  const proc = tsx('bench/echo-main.ts', ['--listen', `127.0.0.1:${port}`, ...(ECHO ? [] : ['--fixed'])], 'echo');
  await waitForPort(port, 15_000, proc.child, 'echo upstream');
  return { proc, port, url: `http://127.0.0.1:${port}` };
}

interface Gateway {
  proc: Proc;
  port: number;
  adminPort: number;
  inspectPort: number;
  url: string;
  token: string;
  issuer: string;
  config: string;
  /** RSS once ready, before any request. */
  rssReady: number;
}

function cli(args: string[], input?: string): string {
  const r = spawnSync(process.execPath, [BIN, ...args], { cwd: ROOT, env: { ...process.env, ...ENV }, input, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`portcullis ${args.join(' ')} failed (${r.status}): ${r.stderr.trim()}`);
  return r.stdout;
}

let userCreated = false;
async function startGateway(name: string, echoUrl: string, extra: { workers?: number | 'auto'; redisPrefix?: string } = {}): Promise<Gateway> {
  const [port, adminPort, inspectPort] = [await freePort(), await freePort(), await freePort()];
  const cfg = join(dir, `${name}.yaml`);
  writeFileSync(
    cfg,
    `# generated by bench/run.ts
listen: 127.0.0.1:${port}
public_url: http://127.0.0.1:${port}
admin: { listen: 127.0.0.1:${adminPort} }
data_dir: ${dir}/data
log_level: info
workers: ${extra.workers ?? 1}
limits: { keep_alive_timeout: 60s }    # the idle keep-alive memory test holds connections open
storage:
  database_url: "sqlite:${dir}/data/bench.db"
  redis_url: "${extra.redisPrefix ? REDIS_URL : ''}"
  redis_prefix: "${extra.redisPrefix ?? 'portcullis:'}"
keys: { signing_keys_file: ${dir}/signing-keys.json }
auth:
  access_ttl: 1h
  login_rate_limit: { requests: 1000000, per: 1m }   # the login storm comes from one IP
upstreams:
  echo: { url: "${echoUrl}" }
routes:
  - name: app
    match: { path: /app/** }
    upstream: echo
    access: authenticated
  - name: pub
    match: { path: /pub/** }
    upstream: echo
    access: public
  - name: rest
    match: { path: /** }
    upstream: echo
    access: authenticated
`,
  );
  // One database for every gateway of the run: the bench user is created once.
  if (!userCreated) cli(['user', 'add', 'bench', '--role', 'admin', '--password-stdin', '--config', cfg], `${PASSWORD}\n`);
  userCreated = true;
  const proc = startProcess(name, process.execPath, [`--inspect-port=127.0.0.1:${inspectPort}`, BIN, 'serve', '--config', cfg], {
    cwd: ROOT,
    env: ENV,
    log: join(dir, `${name}.log`),
  });
  procs.push(proc);
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (proc.child.exitCode !== null) throw new Error(`gateway exited (${proc.child.exitCode}):\n${tail(proc.log)}`);
    const ok = await fetch(`http://127.0.0.1:${adminPort}/readyz`).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) break;
    if (Date.now() > deadline) throw new Error(`gateway not ready after 30 s:\n${tail(proc.log)}`);
    await sleep(100);
  }
  await sleep(1000);
  const rssReady = rssBytes(proc.child.pid);
  const url = `http://127.0.0.1:${port}`;
  const token = await login(url).then((r) => {
    if (r.status !== 200 || !r.token) throw new Error(`bench login failed: ${r.status}`);
    return r.token;
  });
  const check = await fetch(`${url}${AUTH_PATH}`, { headers: { authorization: `Bearer ${token}` } });
  await check.arrayBuffer();
  if (check.status !== 200) throw new Error(`authenticated request answered ${check.status}`);
  return { proc, port, adminPort, inspectPort, url, token, issuer: url, config: cfg, rssReady };
}

async function login(url: string, username = 'bench'): Promise<{ status: number; token?: string; retryAfter?: string }> {
  const r = await fetch(`${url}/api/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json' },
    body: JSON.stringify({ username, password: PASSWORD }),
  });
  const body = (await r.json().catch(() => ({}))) as { access_token?: string };
  return { status: r.status, token: body.access_token, retryAfter: r.headers.get('retry-after') ?? undefined };
}

async function startNginx(echoPort: number, verifierPort: number | undefined): Promise<{ proc: Proc; plainPort: number; authPort: number }> {
  const [plainPort, authPort] = [await freePort(), await freePort()];
  const nd = join(dir, 'nginx');
  mkdirSync(join(nd, 'tmp'), { recursive: true });
  const proxy = `proxy_http_version 1.1;\n      proxy_set_header Connection "";`;
  writeFileSync(
    join(nd, 'nginx.conf'),
    `# generated by bench/run.ts
${process.getuid?.() === 0 ? 'user root root;' : ''}
worker_processes 1;
daemon off;
master_process on;
pid ${nd}/nginx.pid;
error_log ${nd}/error.log warn;
events { worker_connections 8192; }
http {
  # Like the gateway (one JSON access line per request, SPEC §9), buffered as the gateway batches its lines.
  access_log ${nd}/access.log combined buffer=64k flush=100ms;
  client_body_temp_path ${nd}/tmp/body;
  proxy_temp_path ${nd}/tmp/proxy;
  fastcgi_temp_path ${nd}/tmp/fastcgi;
  uwsgi_temp_path ${nd}/tmp/uwsgi;
  scgi_temp_path ${nd}/tmp/scgi;
  upstream echo { server 127.0.0.1:${echoPort}; keepalive 64; keepalive_timeout 4s; }
  ${verifierPort ? `upstream verifier { server 127.0.0.1:${verifierPort}; keepalive 64; keepalive_timeout 60s; }` : ''}
  server {
    listen 127.0.0.1:${plainPort};
    location / {
      proxy_pass http://echo;
      ${proxy}
    }
  }
  ${
    verifierPort
      ? `server {
    listen 127.0.0.1:${authPort};
    location = /_auth {
      internal;
      proxy_pass http://verifier;
      ${proxy}
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Original-URI $request_uri;
    }
    location / {
      auth_request /_auth;
      auth_request_set $auth_user $upstream_http_x_auth_user;
      auth_request_set $auth_user_id $upstream_http_x_auth_user_id;
      auth_request_set $auth_roles $upstream_http_x_auth_roles;
      proxy_pass http://echo;
      ${proxy}
      proxy_set_header X-Auth-User $auth_user;
      proxy_set_header X-Auth-User-Id $auth_user_id;
      proxy_set_header X-Auth-Roles $auth_roles;
    }
  }`
      : ''
  }
}
`,
  );
  const proc = startProcess('nginx', 'nginx', ['-p', nd, '-c', join(nd, 'nginx.conf'), '-e', join(nd, 'error.log')], { cwd: nd, log: join(dir, 'nginx.log') });
  procs.push(proc);
  await waitForPort(plainPort, 10_000, proc.child, `nginx (${tail(proc.log)})`);
  if (verifierPort) await waitForPort(authPort, 10_000, proc.child, 'nginx');
  return { proc, plainPort, authPort };
}

// ---------------------------------------------------------------------------------------------
// The run

interface Measured extends WrkResult {
  cpuUs: number;
}
const results = new Map<Row, Measured[]>();
const cpuLabel: Record<Row, string> = {
  upstream: 'echo',
  nginx: 'nginx',
  bare: 'forwarder',
  auth: 'gateway',
  public: 'gateway',
  'forward-auth': 'nginx+verifier',
};
const label: Record<Row, string> = {
  upstream: ECHO ? 'upstream alone (echo)' : 'upstream alone (small JSON)',
  nginx: 'nginx proxy_pass, 1 worker, keep-alive',
  bare: 'bare undici Pool forwarder (no auth)',
  auth: 'gateway, authenticated route (bearer)',
  public: 'gateway, public route',
  'forward-auth': 'nginx auth_request -> jose verifier',
};
let storm: { idle: Measured; storm: Measured; ok: number; s503: number; other: Map<string, number>; loginMs: number[] } | undefined;
let aborts:
  | { n: number; reached: number; fd0: number; fd1: number; inFlight: number; rss0: number; rss1: number; heap0: number; heap1: number; answered: number }
  | undefined;
let keepalive: { n: number; perConn: number; rss0: number; rss1: number; heap0: number; heap1: number } | undefined;
const rss: { ready?: number; start?: number; loaded?: number } = {};
const workers: { n: string; r: Measured }[] = [];
const skipped: string[] = [];

const w = (url: string, headers?: Record<string, string>, seconds = SECONDS, connections = CONNECTIONS): WrkOptions => ({
  url,
  seconds,
  connections,
  threads: THREADS,
  headers,
});
let redisClient: Redis | undefined;
const redisPrefix = `portcullis-bench-${process.pid}:`;

try {
  say(`temp dir ${dir}`);
  const echo = await startEcho();
  const needGateway =
    ROWS.some((r) => r !== 'upstream' && r !== 'nginx' && r !== 'bare' && want(r)) || want('storm') || want('aborts') || want('keepalive') || want('rss');
  // SPEC §1: `keys generate` prints {"keys":[…]}; a bare JWK (older builds) is wrapped.
  const generated = JSON.parse(cli(['keys', 'generate'])) as { keys?: unknown[] };
  writeFileSync(join(dir, 'signing-keys.json'), JSON.stringify(generated.keys ? generated : { keys: [generated] }));
  let gw: Gateway | undefined;
  if (needGateway) {
    say('starting the compiled gateway');
    gw = await startGateway('gateway', echo.url);
    await sleep(2000);
    rss.ready = gw.rssReady;
    rss.start = rssBytes(gw.proc.child.pid);
  }
  let verifier: { proc: Proc; port: number } | undefined;
  if (want('forward-auth') && gw) {
    const port = await freePort();
    const proc = tsx('bench/verifier.ts', ['--listen', `127.0.0.1:${port}`, '--jwks', `${gw.url}/.well-known/jwks.json`, '--issuer', gw.issuer], 'verifier');
    await waitForPort(port, 15_000, proc.child, 'verifier');
    verifier = { proc, port };
  }
  const nginx = wantNginx ? await startNginx(echo.port, verifier?.port) : undefined;
  let bare: { proc: Proc; port: number } | undefined;
  if (want('bare')) {
    const port = await freePort();
    const proc = tsx('bench/bare-proxy.ts', [echo.url, `127.0.0.1:${port}`], 'bare');
    await waitForPort(port, 15_000, proc.child, 'bare forwarder');
    bare = { proc, port };
  }

  const bearer = gw ? { authorization: `Bearer ${gw.token}` } : undefined;
  const nginxWorker = () => (nginx ? processTree(nginx.proc.child.pid!)[1] : undefined);
  const target: Record<Row, () => { opts: WrkOptions; cpu: (number | undefined)[] } | undefined> = {
    upstream: () => ({ opts: w(`${echo.url}${AUTH_PATH}`), cpu: [echo.proc.child.pid] }),
    nginx: () => (nginx ? { opts: w(`http://127.0.0.1:${nginx.plainPort}${AUTH_PATH}`), cpu: [nginxWorker()] } : undefined),
    bare: () => (bare ? { opts: w(`http://127.0.0.1:${bare.port}${AUTH_PATH}`), cpu: [bare.proc.child.pid] } : undefined),
    auth: () => (gw ? { opts: w(`${gw.url}${AUTH_PATH}`, bearer), cpu: [gw.proc.child.pid] } : undefined),
    public: () => (gw ? { opts: w(`${gw.url}${PUBLIC_PATH}`), cpu: [gw.proc.child.pid] } : undefined),
    'forward-auth': () =>
      nginx && verifier ? { opts: w(`http://127.0.0.1:${nginx.authPort}${AUTH_PATH}`, bearer), cpu: [nginxWorker(), verifier.proc.child.pid] } : undefined,
  };
  const rows = ROWS.filter((r) => want(r));
  if (rows.length) {
    say(`warming up ${rows.join(', ')} (${WARMUP_SECONDS} s each)`);
    for (const r of rows) {
      const t = target[r]();
      if (!t) continue;
      const warm = await wrk({ ...t.opts, seconds: WARMUP_SECONDS, connections: 10 });
      if (warm.errors > 0) say(`warning: ${r} warm-up had ${warm.errors} errors / non-2xx`);
    }
    for (let run = 1; run <= RUNS; run++) {
      for (const r of rows) {
        const t = target[r]();
        if (!t) continue;
        const m = await measured(t.opts, t.cpu);
        results.set(r, [...(results.get(r) ?? []), m]);
        say(`run ${run}/${RUNS} ${r}: ${fmt(m.rps)} req/s, p50 ${ms(m.p50)}, p99 ${ms(m.p99)}, ${fmt(m.cpuUs)} µs CPU/req, ${m.errors} errors`);
      }
    }
  }
  await stopProcess(bare?.proc);
  await stopProcess(nginx?.proc);
  await stopProcess(verifier?.proc);

  if (gw && want('rss')) {
    await sleep(SETTLE_MS);
    rss.loaded = rows.length ? rssBytes(gw.proc.child.pid) : NaN;
  }

  if (gw && want('storm')) {
    // One user per client: guesses for one username take turns (SPEC lockout), so 8 clients of
    // one user would measure that queue, not a storm of sign-ins.
    say(`creating ${STORM_CLIENTS} storm users`);
    for (let i = 1; i <= STORM_CLIENTS; i++) cli(['user', 'add', `storm${i}`, '--password-stdin', '--config', gw.config], `${PASSWORD}\n`);
    say(`login storm: ${SECONDS} s idle, then ${SECONDS} s with ${STORM_CLIENTS} clients signing in back to back (x ${RUNS})`);
    const gwPid = gw.proc.child.pid;
    const url = gw.url;
    await wrk({ ...w(`${url}${AUTH_PATH}`, bearer), seconds: WARMUP_SECONDS, connections: 10 });
    const idles: Measured[] = [];
    const storms: Measured[] = [];
    let ok = 0;
    let s503 = 0;
    const other = new Map<string, number>();
    const loginMs: number[] = [];
    // With --runs N, N idle/storm pairs, averaged: one noisy idle run on a shared box otherwise decides.
    for (let run = 0; run < RUNS; run++) {
      idles.push(await measured(w(`${url}${AUTH_PATH}`, bearer), [gwPid]));
      let stop = false;
      const running = measured(w(`${url}${AUTH_PATH}`, bearer), [gwPid]).finally(() => (stop = true));
      const clients = Array.from({ length: STORM_CLIENTS }, async (_, i) => {
        while (!stop) {
          const t0 = performance.now();
          try {
            const r = await login(url, `storm${i + 1}`);
            if (r.status === 200) {
              ok++;
              loginMs.push(performance.now() - t0);
            } else if (r.status === 503) {
              s503++;
              await sleep(50); // a short back-off instead of a hot retry loop
            } else {
              other.set(String(r.status), (other.get(String(r.status)) ?? 0) + 1);
            }
          } catch (e) {
            const k = (e as Error).message;
            other.set(k, (other.get(k) ?? 0) + 1);
            await sleep(50);
          }
        }
      });
      storms.push(await running);
      await Promise.all(clients);
      const [a, b] = [idles.at(-1)!, storms.at(-1)!];
      say(`storm ${run + 1}/${RUNS}: idle p50/p99 ${ms(a.p50)}/${ms(a.p99)}, storm ${ms(b.p50)}/${ms(b.p99)}`);
    }
    const mean = (xs: Measured[]): Measured => ({
      ...xs[0],
      rps: avg(xs.map((x) => x.rps)),
      p50: avg(xs.map((x) => x.p50)),
      p99: avg(xs.map((x) => x.p99)),
      errors: xs.reduce((a, x) => a + x.errors, 0),
    });
    storm = { idle: mean(idles), storm: mean(storms), ok, s503, other, loginMs };
  }

  let inspector: Inspector | undefined;
  const memory = async (pid: number) => {
    let heap = NaN;
    if (inspector) heap = (await inspector.gcAndMemory()).heapUsed;
    return { rss: rssBytes(pid), heap, fd: fdCount(pid) };
  };
  if (gw && (want('aborts') || want('keepalive'))) {
    try {
      inspector = await attachInspector(gw.proc.child.pid!, gw.inspectPort);
    } catch (e) {
      notes.push(`no inspector (${(e as Error).message}): memory compared without a forced GC`);
    }
  }

  if (gw && want('aborts')) {
    const pid = gw.proc.child.pid!;
    const batch = 100;
    say(`${ABORTS} aborted requests to the slow upstream route, ${batch} at a time`);
    const stats = async () => (await (await fetch(`${echo.url}/__echo/stats`)).json()) as EchoStats;
    await sleep(SETTLE_MS);
    const m0 = await memory(pid);
    let reached = 0;
    let answered = 0;
    const req = request('/__echo/slow?ms=60000', { authorization: `Bearer ${gw.token}` });
    for (let done = 0; done < ABORTS; done += batch) {
      const n = Math.min(batch, ABORTS - done);
      const r0 = (await stats()).requests;
      const socks: Socket[] = [];
      for (let i = 0; i < n; i++) {
        const s = connect(gw.port, '127.0.0.1');
        s.on('error', () => undefined);
        s.on('data', () => answered++);
        s.write(req);
        socks.push(s);
      }
      // Disconnect once the gateway has forwarded them (the upstream saw them), or after 1 s.
      const deadline = Date.now() + 1000;
      let r1 = (await stats()).requests;
      while (r1 < r0 + n && Date.now() < deadline) {
        await sleep(5);
        r1 = (await stats()).requests;
      }
      reached += r1 - r0;
      for (const s of socks) s.destroy();
    }
    const deadline = Date.now() + 10_000;
    while ((await stats()).inFlight > 0 && Date.now() < deadline) await sleep(100);
    await sleep(SETTLE_MS);
    const inFlight = (await stats()).inFlight;
    const m1 = await memory(pid);
    aborts = { n: ABORTS, reached, fd0: m0.fd, fd1: m1.fd, inFlight, rss0: m0.rss, rss1: m1.rss, heap0: m0.heap, heap1: m1.heap, answered };
  }

  if (gw && want('keepalive')) {
    const pid = gw.proc.child.pid!;
    say(`${KEEPALIVE} idle keep-alive connections, one request each`);
    await sleep(1000);
    const m0 = await memory(pid);
    const socks: Socket[] = [];
    try {
      for (let i = 0; i < KEEPALIVE; i += 200) {
        const n = Math.min(200, KEEPALIVE - i);
        socks.push(...(await Promise.all(Array.from({ length: n }, () => oneRequest(gw.port, AUTH_PATH, bearer!)))));
      }
      await sleep(1000);
      const m1 = await memory(pid);
      keepalive = { n: KEEPALIVE, perConn: (m1.rss - m0.rss) / KEEPALIVE, rss0: m0.rss, rss1: m1.rss, heap0: m0.heap, heap1: m1.heap };
    } finally {
      for (const s of socks) s.destroy();
    }
  }
  inspector?.close();
  await stopProcess(gw?.proc);

  if (want('workers')) {
    redisClient = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 1, retryStrategy: () => null });
    const up = await redisClient.connect().then(
      () => true,
      () => false,
    );
    if (!up) {
      skipped.push(`workers: no Redis at ${REDIS_URL} (start one, or pass --redis URL)`);
    } else {
      for (const n of [1, 'auto'] as const) {
        say(`workers: ${n} with Redis (${REDIS_URL}, prefix ${redisPrefix})`);
        const g = await startGateway(`gateway-workers-${n}`, echo.url, { workers: n, redisPrefix });
        try {
          const t = w(`${g.url}${AUTH_PATH}`, { authorization: `Bearer ${g.token}` });
          await wrk({ ...t, seconds: WARMUP_SECONDS, connections: 10 });
          const r = await measured(t, [g.proc.child.pid]);
          workers.push({ n: n === 'auto' ? `auto (${availableParallelism()})` : String(n), r });
          say(`workers ${n}: ${fmt(r.rps)} req/s, ${fmt(r.cpuUs)} µs CPU/req`);
        } finally {
          await stopProcess(g.proc);
        }
      }
    }
  }
} catch (e) {
  process.stderr.write(`bench: ${(e as Error).stack ?? e}\n`);
  process.exitCode = 1;
} finally {
  for (const p of procs.reverse()) await stopProcess(p);
  if (redisClient?.status === 'ready') {
    const keys = await redisClient.keys(`${redisPrefix}*`).catch(() => [] as string[]);
    if (keys.length) await redisClient.del(...keys).catch(() => 0);
    redisClient.disconnect();
  }
  if (argv.includes('--keep') || process.exitCode) say(`logs and configs kept in ${dir}`);
  else rmSync(dir, { recursive: true, force: true });
}

// ---------------------------------------------------------------------------------------------
// Report

if (process.exitCode) process.exit();

const row = (r: Row) => {
  const m = results.get(r);
  if (!m?.length) return undefined;
  return {
    rps: avg(m.map((x) => x.rps)),
    p50: avg(m.map((x) => x.p50)),
    p99: avg(m.map((x) => x.p99)),
    cpuUs: avg(m.map((x) => x.cpuUs)),
    errors: m.reduce((a, x) => a + x.errors, 0),
    all: m,
  };
};
const nginxRps = row('nginx')?.rps ?? NaN;
const out: string[] = [];
out.push(
  `Portcullis benchmark — ${new Date().toISOString().slice(0, 16)}Z, ${availableParallelism()} CPUs, node ${process.version}, ` +
    `wrk ${THREADS} thread(s) x ${CONNECTIONS} connections, ${SECONDS} s per run, ${RUNS} run(s)`,
);
out.push('');
out.push(
  `${'setup'.padEnd(40)} ${'req/s'.padStart(8)} ${'x nginx'.padStart(8)} ${'p50'.padStart(9)} ${'p99'.padStart(9)}  ${'CPU us/req'.padStart(10)}  errors`,
);
for (const r of ROWS) {
  const x = row(r);
  if (!x) {
    out.push(`${label[r].padEnd(40)} ${'—'.padStart(8)}   (not run)`);
    continue;
  }
  const spread = x.all.length > 1 ? `  [${x.all.map((m) => fmt(m.rps)).join(', ')}]` : '';
  out.push(
    `${label[r].padEnd(40)} ${fmt(x.rps).padStart(8)} ${fmt(x.rps / nginxRps, 2).padStart(8)} ${ms(x.p50).padStart(9)} ${ms(x.p99).padStart(9)}  ` +
      `${fmt(x.cpuUs).padStart(5)} ${cpuLabel[r].padEnd(14)} ${x.errors}${spread}`,
  );
}
const auth = row('auth');
const pub = row('public');
const fwd = row('forward-auth');
const bareRow = row('bare');
const ratio = (a?: number, b?: number) => (a !== undefined && b !== undefined && Number.isFinite(a / b) ? a / b : undefined);
const target = (ok: boolean | undefined, text: string) => out.push(`  ${verdict(ok)}  ${text}`);
out.push('');
out.push('targets');
const rNginx = ratio(auth?.rps, nginxRps);
if (want('auth') || want('nginx'))
  target(rNginx === undefined ? undefined : rNginx >= 0.4, `authenticated >= 0.40x nginx proxy_pass: ${fmt(rNginx ?? NaN, 2)}x`);
const rFwd = ratio(auth?.rps, fwd?.rps);
if (want('auth') || want('forward-auth'))
  target(rFwd === undefined ? undefined : rFwd >= 3, `authenticated >= 3x nginx auth_request (forward-auth): ${fmt(rFwd ?? NaN, 2)}x`);
const rPub = ratio(auth?.rps, pub?.rps);
if (want('auth') || want('public')) target(rPub === undefined ? undefined : rPub >= 0.9, `authenticated >= 0.9x public route: ${fmt(rPub ?? NaN, 2)}x`);
if (auth || bareRow) {
  out.push(
    `  info  gateway CPU per request: authenticated ${fmt(auth?.cpuUs ?? NaN)} us, public ${fmt(pub?.cpuUs ?? NaN)} us; ` +
      `bare undici forwarder ${fmt(bareRow?.cpuUs ?? NaN)} us (authenticated = ${fmt(ratio(auth?.cpuUs, bareRow?.cpuUs) ?? NaN, 2)}x the forwarder)`,
  );
}
if (storm) {
  const rp99 = storm.storm.p99 / storm.idle.p99;
  target(
    rp99 < 2,
    `login storm p99 < 2x idle: idle p50/p99 ${ms(storm.idle.p50)}/${ms(storm.idle.p99)} (${fmt(storm.idle.rps)} req/s), ` +
      `storm ${ms(storm.storm.p50)}/${ms(storm.storm.p99)} (${fmt(storm.storm.rps)} req/s): ${fmt(rp99, 2)}x`,
  );
  const sorted = [...storm.loginMs].sort((a, b) => a - b);
  const others = [...storm.other].map(([k, v]) => `${v} x ${k}`).join(', ') || 'none';
  out.push(
    `  info  logins during the storm (${STORM_CLIENTS} clients, ${RUNS} x ${SECONDS} s): ${storm.ok} succeeded, ${storm.s503} x 503, other: ${others}; ` +
      `login p50 ${ms(sorted[Math.floor(sorted.length / 2)] ?? NaN)}; proxied errors ${storm.storm.errors}`,
  );
}
if (aborts) {
  const heapGrowth = aborts.heap1 - aborts.heap0;
  const rssGrowth = aborts.rss1 - aborts.rss0;
  const memOk = Number.isFinite(heapGrowth) ? heapGrowth < 2 * 1048576 : rssGrowth < 10 * 1048576;
  target(
    aborts.fd1 <= aborts.fd0 + 5 && aborts.inFlight === 0 && memOk,
    `${aborts.n} aborted requests (${aborts.reached} reached the upstream first): fds ${aborts.fd0} -> ${aborts.fd1}, ` +
      `upstream in-flight after ${aborts.inFlight}, heap after GC ${mb(aborts.heap0)} -> ${mb(aborts.heap1)}, RSS ${mb(aborts.rss0)} -> ${mb(aborts.rss1)}`,
  );
}
if (keepalive) {
  target(
    keepalive.perConn <= 20 * 1024,
    `memory per idle keep-alive connection <= 20 kB: ${fmt(keepalive.perConn / 1024, 1)} kB ` +
      `(${keepalive.n} connections, RSS ${mb(keepalive.rss0)} -> ${mb(keepalive.rss1)}, heap after GC ${mb(keepalive.heap0)} -> ${mb(keepalive.heap1)})`,
  );
}
if (rss.start !== undefined) {
  const worst = Math.max(rss.ready ?? 0, rss.start, Number.isFinite(rss.loaded ?? NaN) ? rss.loaded! : 0);
  target(
    worst <= 120 * 1048576,
    `idle RSS of the compiled gateway <= 120 MB: ${mb(rss.ready ?? NaN)} ready, ${mb(rss.start)} after one login, ${mb(rss.loaded ?? NaN)} idle after the load runs`,
  );
}
if (workers.length) {
  const base = workers[0].r.rps;
  out.push(
    `  info  workers with Redis (authenticated route): ${workers.map((x) => `${x.n} -> ${fmt(x.r.rps)} req/s, p99 ${ms(x.r.p99)}, ${fmt(x.r.cpuUs)} us CPU/req (${fmt(x.r.rps / base, 2)}x)`).join('; ')}`,
  );
}
for (const s of skipped) out.push(`  skip  ${s}`);
for (const n of notes) out.push(`  note  ${n}`);
process.stdout.write(`${out.join('\n')}\n`);
