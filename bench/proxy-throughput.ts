/**
 * Throughput of an authenticated proxied route against the echo upstream hit directly, in the
 * same run (this box is shared and noisy: only the ratio means something).
 *
 *   npx tsx bench/proxy-throughput.ts [--connections 50] [--seconds 10] [--rounds 2]
 *
 * Starts the echo upstream and `portcullis serve` as separate processes, signs in once, then
 * alternates autocannon runs: echo direct, gateway with a bearer token. Prints req/s, latency
 * and the ratio gateway/direct. Also prints the CPU time each server process used per request
 * (from /proc, Linux only): on a shared box that is steadier than req/s, and it is what the
 * gateway adds over a bare http-proxy.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';

const arg = (name: string, def: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i === -1 ? def : Number(process.argv[i + 1]);
};
const CONNECTIONS = arg('connections', 50);
const SECONDS = arg('seconds', 10);
const ROUNDS = arg('rounds', 2);
const ROOT = fileURLToPath(new URL('..', import.meta.url));
const PASSWORD = 'bench passphrase that is long 91';

function start(args: string[], env: NodeJS.ProcessEnv, ready: RegExp): Promise<{ child: ChildProcess; match: RegExpMatchArray }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { cwd: ROOT, env: { ...process.env, ...env } });
    let out = '';
    const onData = (d: Buffer) => {
      out += d;
      const m = out.match(ready);
      if (m) resolve({ child, match: m });
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.on('exit', (code) => reject(new Error(`${args.join(' ')} exited ${code}:\n${out}`)));
  });
}

/**
 * CPU seconds (user + system) a process and its descendants (the tsx CLI runs scripts in a
 * child process) have used so far, or NaN where /proc is missing.
 */
function cpuSeconds(pid: number | undefined): number {
  if (pid === undefined || !existsSync(`/proc/${pid}/stat`)) return NaN;
  let total = 0;
  const stack = [pid];
  while (stack.length) {
    const p = stack.pop()!;
    try {
      // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
      const rest = readFileSync(`/proc/${p}/stat`, 'utf8').split(') ')[1].split(' ');
      total += (Number(rest[11]) + Number(rest[12])) / 100; // USER_HZ is 100 on Linux
      stack.push(...readFileSync(`/proc/${p}/task/${p}/children`, 'utf8').split(' ').filter(Boolean).map(Number));
    } catch {
      // gone meanwhile
    }
  }
  return total;
}

/** One load run against `url`, with the CPU that `server` (the process answering it) spent per request. */
async function load(url: string, headers: Record<string, string>, server: ChildProcess): Promise<{ r: autocannon.Result; cpuUs: number }> {
  const c0 = cpuSeconds(server.pid);
  const r = await autocannon({ url, connections: CONNECTIONS, duration: SECONDS, headers, pipelining: 1 });
  return { r, cpuUs: ((cpuSeconds(server.pid) - c0) / r.requests.total) * 1e6 };
}

const dir = mkdtempSync(join(tmpdir(), 'portcullis-bench-'));
const echo = await start([join(ROOT, 'node_modules/tsx/dist/cli.mjs'), 'bench/echo-main.ts', '--listen', '127.0.0.1:0'], {}, /listening on (http:\/\/[\d.:]+)/);
const echoUrl = echo.match[1];
const cfg = join(dir, 'gateway.yaml');
writeFileSync(
  cfg,
  `listen: 127.0.0.1:0
admin: { listen: 127.0.0.1:0 }
data_dir: ${dir}
log_level: info
storage: { database_url: "sqlite:${join(dir, 'bench.db')}" }
upstreams:
  echo: { url: "${echoUrl}", max_sockets: 64 }
routes:
  - name: app
    match: { path: /** }
    upstream: echo
    access: authenticated
`,
);
const gw = await start([join(ROOT, 'bin/portcullis.js'), 'serve', '--config', cfg], { PORTCULLIS_BOOTSTRAP_ADMIN_PASSWORD: PASSWORD, NODE_ENV: 'development' }, /"url":"(http:\/\/[\d.:]+)"/);
const gwUrl = gw.match[1];

const bare = await start([join(ROOT, 'node_modules/tsx/dist/cli.mjs'), 'bench/bare-proxy.ts', echoUrl], {}, /listening on (http:\/\/[\d.:]+)/);
const bareUrl = bare.match[1];

try {
  const res = await fetch(`${gwUrl}/api/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: 'admin', password: PASSWORD }) });
  const { access_token: token } = (await res.json()) as { access_token: string };
  const check = await fetch(`${gwUrl}/bench`, { headers: { authorization: `Bearer ${token}` } });
  if (check.status !== 200) throw new Error(`authenticated request failed: ${check.status}`);
  // Warm up both paths (JIT, keep-alive pools, token cache).
  await autocannon({ url: `${echoUrl}/bench`, connections: 10, duration: 2 });
  await autocannon({ url: `${gwUrl}/bench`, connections: 10, duration: 2, headers: { authorization: `Bearer ${token}` } });

  await autocannon({ url: `${bareUrl}/bench`, connections: 10, duration: 2 });

  type Row = { direct: number; bare: number; gateway: number; directCpu: number; bareCpu: number; gatewayCpu: number };
  const rows: Row[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    const { r: direct, cpuUs: directCpu } = await load(`${echoUrl}/bench`, {}, echo.child);
    const { r: bareRun, cpuUs: bareCpu } = await load(`${bareUrl}/bench`, {}, bare.child);
    const { r: gateway, cpuUs: gatewayCpu } = await load(`${gwUrl}/bench`, { authorization: `Bearer ${token}` }, gw.child);
    const non2xx = gateway.non2xx + gateway.errors;
    rows.push({ direct: direct.requests.average, bare: bareRun.requests.average, gateway: gateway.requests.average, directCpu, bareCpu, gatewayCpu });
    console.log(
      `round ${r + 1}: direct ${direct.requests.average.toFixed(0)} req/s (p99 ${direct.latency.p99} ms, ${directCpu.toFixed(0)} µs CPU/req) | ` +
        `bare http-proxy ${bareRun.requests.average.toFixed(0)} req/s (p99 ${bareRun.latency.p99} ms, ${bareCpu.toFixed(0)} µs CPU/req) | ` +
        `gateway ${gateway.requests.average.toFixed(0)} req/s (p99 ${gateway.latency.p99} ms, ${gatewayCpu.toFixed(0)} µs CPU/req, ${non2xx} non-2xx/errors)`,
    );
  }
  const avg = (k: keyof Row) => rows.reduce((a, x) => a + x[k], 0) / rows.length;
  console.log(`\n${CONNECTIONS} connections, ${SECONDS}s x ${ROUNDS} rounds, all on this machine`);
  console.log(`echo direct:              ${avg('direct').toFixed(0)} req/s`);
  console.log(`bare http-proxy:          ${avg('bare').toFixed(0)} req/s`);
  console.log(`gateway (bearer, authz):  ${avg('gateway').toFixed(0)} req/s`);
  console.log(`ratio gateway/direct:     ${(avg('gateway') / avg('direct')).toFixed(2)}`);
  console.log(`ratio gateway/bare proxy: ${(avg('gateway') / avg('bare')).toFixed(2)}`);
  console.log(`CPU per request (server process, user+sys): echo ${avg('directCpu').toFixed(0)} µs, bare http-proxy ${avg('bareCpu').toFixed(0)} µs, gateway ${avg('gatewayCpu').toFixed(0)} µs`);
  console.log(`CPU ratio gateway/bare proxy: ${(avg('gatewayCpu') / avg('bareCpu')).toFixed(2)}`);
} finally {
  bare.child.kill('SIGTERM');
  gw.child.kill('SIGTERM');
  echo.child.kill('SIGTERM');
  rmSync(dir, { recursive: true, force: true });
}
