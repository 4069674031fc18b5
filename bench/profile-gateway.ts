/**
 * CPU profile of `portcullis serve` under load: the setup of the authenticated row of
 * `npm run bench` (echo upstream, an authenticated catch-all route, bearer token), but the
 * gateway runs under `node --cpu-prof` and the profile is summarised by self time. A
 * diagnostic tool beside bench/run.ts, not part of its report.
 *
 *   npx tsx bench/profile-gateway.ts [--seconds 10] [--connections 50] [--compiled] [--top 40] [--out DIR] [--perf]
 *
 * The V8 profiler samples wall-clock time: on a box where the load generator, the upstream and
 * the gateway share two cores, a sample often lands in a write syscall during which the
 * gateway was merely preempted, so native socket writes look far costlier than they are.
 * Read the JS frames, not `writev`/`writeLatin1String`. --perf samples on-CPU time instead
 * (`perf record` with `--perf-basic-prof` symbols) and prints `perf report`'s self-time table;
 * it needs `perf` and perf_event_paranoid <= 2.
 *
 * --compiled runs dist/cli/bin.js (run `npm run build` first) instead of bin/portcullis.js (tsx).
 * The raw .cpuprofile is kept in --out (default: a temp dir) for Chrome DevTools / speedscope.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';

const arg = (name: string, def: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i === -1 ? def : Number(process.argv[i + 1]);
};
const strArg = (name: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i === -1 ? undefined : process.argv[i + 1];
};
const CONNECTIONS = arg('connections', 50);
const SECONDS = arg('seconds', 10);
const TOP = arg('top', 40);
const COMPILED = process.argv.includes('--compiled');
const PERF = process.argv.includes('--perf');
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

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

/** Self time per function (by name + file + line) and per file/package, from a .cpuprofile. */
function summarise(p: Profile): void {
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const self = new Map<number, number>();
  for (let i = 0; i < p.samples.length; i++) self.set(p.samples[i], (self.get(p.samples[i]) ?? 0) + (p.timeDeltas[i] ?? 0));
  let total = 0;
  const fn = new Map<string, number>();
  const where = new Map<string, number>();
  const short = (url: string) => {
    if (!url) return '(native)';
    const u = url.replace(/^file:\/\//, '');
    const nm = u.lastIndexOf('/node_modules/');
    if (nm >= 0)
      return u
        .slice(nm + 14)
        .split('/')
        .slice(0, u.slice(nm + 14).startsWith('@') ? 2 : 1)
        .join('/');
    if (u.startsWith(ROOT)) return u.slice(ROOT.length);
    return u.startsWith('node:') ? `node:${u.slice(5).split('/')[0]}` : u;
  };
  for (const [id, us] of self) {
    const n = byId.get(id)!;
    total += us;
    const f = n.callFrame;
    const key = `${f.functionName || '(anonymous)'}  ${short(f.url)}${f.url ? `:${f.lineNumber + 1}` : ''}`;
    fn.set(key, (fn.get(key) ?? 0) + us);
    const w = f.url ? (short(f.url).startsWith('src/') ? short(f.url) : short(f.url)) : f.functionName;
    where.set(w, (where.get(w) ?? 0) + us);
  }
  const pct = (us: number) => `${((100 * us) / total).toFixed(1).padStart(5)}%`;
  console.log(`\nself time, top ${TOP} functions (total ${(total / 1e6).toFixed(1)} s sampled):`);
  for (const [k, us] of [...fn].sort((a, b) => b[1] - a[1]).slice(0, TOP)) console.log(`${pct(us)}  ${k}`);
  console.log('\nself time by file / package:');
  for (const [k, us] of [...where].sort((a, b) => b[1] - a[1]).slice(0, TOP)) console.log(`${pct(us)}  ${k}`);
}

const dir = mkdtempSync(join(tmpdir(), 'portcullis-prof-'));
const out = strArg('out') ?? join(dir, 'profile');
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
const entry = COMPILED ? join(ROOT, 'dist/cli/bin.js') : join(ROOT, 'bin/portcullis.js');
mkdirSync(out, { recursive: true });
const flags = PERF ? ['--perf-basic-prof-only-functions', '--interpreted-frames-native-stack'] : ['--cpu-prof', `--cpu-prof-dir=${out}`];
const gw = await start(
  [...flags, entry, 'serve', '--config', cfg],
  { PORTCULLIS_BOOTSTRAP_ADMIN_PASSWORD: PASSWORD, NODE_ENV: 'development' },
  /"url":"(http:\/\/[\d.:]+)"/,
);
const gwUrl = gw.match[1];
try {
  const res = await fetch(`${gwUrl}/api/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ username: 'admin', password: PASSWORD }),
  });
  const { access_token: token } = (await res.json()) as { access_token: string };
  const headers = { authorization: `Bearer ${token}` };
  await autocannon({ url: `${gwUrl}/bench`, connections: 10, duration: 2, headers });
  const perf = PERF ? spawn('perf', ['record', '-F', '999', '-g', '-o', join(out, 'perf.data'), '-p', String(gw.child.pid)], { stdio: 'ignore' }) : undefined;
  const perfDone = perf && new Promise((res) => perf.once('exit', res));
  const r = await autocannon({ url: `${gwUrl}/bench`, connections: CONNECTIONS, duration: SECONDS, headers, pipelining: 1 });
  perf?.kill('SIGINT');
  await perfDone;
  console.log(
    `${COMPILED ? 'compiled' : 'tsx'} gateway under ${PERF ? 'perf' : '--cpu-prof'}: ${r.requests.average.toFixed(0)} req/s, ${r.non2xx + r.errors} non-2xx/errors`,
  );
} finally {
  const exited = new Promise((res) => gw.child.once('exit', res));
  gw.child.kill('SIGTERM');
  await exited;
  echo.child.kill('SIGTERM');
}
if (PERF) {
  const rep = spawnSync(
    'perf',
    ['report', '-i', join(out, 'perf.data'), '--no-children', '--sort', 'dso,sym', '--stdio', '-g', 'none', '--percent-limit', '0.3'],
    { encoding: 'utf8', maxBuffer: 64 << 20 },
  );
  console.log(
    rep.stdout
      .split('\n')
      .filter((l) => l && !l.startsWith('#'))
      .slice(0, TOP * 2)
      .join('\n'),
  );
  console.log(`\nperf data: ${join(out, 'perf.data')} (perf report -i … --no-children)`);
  process.exit(0);
}
// The main thread's profile (tsx's loader thread writes a second one).
const file = readdirSync(out)
  .filter((f) => f.endsWith('.cpuprofile'))
  .sort()[0];
if (!file) throw new Error(`no profile written to ${out}`);
summarise(JSON.parse(readFileSync(join(out, file), 'utf8')) as Profile);
console.log(`\nprofile: ${join(out, file)}`);
if (!strArg('out')) {
  // Keep the profile, drop the database and config.
  for (const f of readdirSync(dir)) if (f !== 'profile') rmSync(join(dir, f), { recursive: true, force: true });
}
