/**
 * Throughput of an authenticated proxied route against the echo upstream hit directly, in the
 * same run (this box is shared and noisy: only the ratio means something).
 *
 *   npx tsx bench/proxy-throughput.ts [--connections 50] [--seconds 10] [--rounds 2]
 *
 * Starts the echo upstream and `portcullis serve` as separate processes, signs in once, then
 * alternates autocannon runs: echo direct, gateway with a bearer token. Prints req/s, latency
 * and the ratio gateway/direct.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
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

async function load(url: string, headers: Record<string, string>): Promise<autocannon.Result> {
  return autocannon({ url, connections: CONNECTIONS, duration: SECONDS, headers, pipelining: 1 });
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

  const rows: { direct: number; bare: number; gateway: number }[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    const direct = await load(`${echoUrl}/bench`, {});
    const bareRun = await load(`${bareUrl}/bench`, {});
    const gateway = await load(`${gwUrl}/bench`, { authorization: `Bearer ${token}` });
    const non2xx = gateway.non2xx + gateway.errors;
    rows.push({ direct: direct.requests.average, bare: bareRun.requests.average, gateway: gateway.requests.average });
    console.log(
      `round ${r + 1}: direct ${direct.requests.average.toFixed(0)} req/s (p99 ${direct.latency.p99} ms) | ` +
        `bare http-proxy ${bareRun.requests.average.toFixed(0)} req/s (p99 ${bareRun.latency.p99} ms) | ` +
        `gateway ${gateway.requests.average.toFixed(0)} req/s (p99 ${gateway.latency.p99} ms, ${non2xx} non-2xx/errors)`,
    );
  }
  const avg = (k: 'direct' | 'bare' | 'gateway') => rows.reduce((a, x) => a + x[k], 0) / rows.length;
  console.log(`\n${CONNECTIONS} connections, ${SECONDS}s x ${ROUNDS} rounds, all on this machine`);
  console.log(`echo direct:              ${avg('direct').toFixed(0)} req/s`);
  console.log(`bare http-proxy:          ${avg('bare').toFixed(0)} req/s`);
  console.log(`gateway (bearer, authz):  ${avg('gateway').toFixed(0)} req/s`);
  console.log(`ratio gateway/direct:     ${(avg('gateway') / avg('direct')).toFixed(2)}`);
  console.log(`ratio gateway/bare proxy: ${(avg('gateway') / avg('bare')).toFixed(2)}`);
} finally {
  bare.child.kill('SIGTERM');
  gw.child.kill('SIGTERM');
  echo.child.kill('SIGTERM');
  rmSync(dir, { recursive: true, force: true });
}
