import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { chmodSync, cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, type TestContext } from 'vitest';
import { parse as parseYaml, parseAllDocuments } from 'yaml';
import { loadConfig, parseConfig } from '../src/config/index.js';
import { startEchoServer, type EchoServer } from '../src/demo/echo.js';
import { generateSigningJwk } from '../src/tokens/keys.js';
import { type Harness, metricsText, runCliInProcess, startHarness } from './support/helpers.js';
import { freePort, PrivateRedis, postgresReachable } from './support/services.js';

/**
 * The deploy kit (SPEC §11), each file checked with its own ecosystem's tool: promtool for the
 * alert rules, yamllint for every YAML file, kubectl kustomize for the Kubernetes base, the
 * compose validator for deploy/compose.yaml, nginx -t for the load balancer. Plus what no tool
 * checks: that the files agree with each other and with the gateway (ports, paths, secret
 * names, grace periods, and every metric the dashboard and alerts query).
 *
 * A missing tool skips its check on a developer's machine, and fails it under CI=true, where
 * .ci/run installs them.
 */

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const at = (...p: string[]) => join(ROOT, ...p);
const read = (...p: string[]) => readFileSync(at(...p), 'utf8');
const CI = process.env.CI === 'true';

/** Files the checks write (a real signing key file, for `config check`). */
const scratch = mkdtempSync(join(tmpdir(), 'portcullis-deploy-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));
async function realKeysFile(): Promise<string> {
  const file = join(scratch, 'signing-keys.json');
  if (!existsSync(file)) writeFileSync(file, JSON.stringify({ keys: [await generateSigningJwk()] }), { mode: 0o600 });
  return file;
}

/** The Node.js line the image is built on: the Active LTS (Node 26 since October 2026). */
const NODE_LTS_MAJOR = 26;

function which(cmd: string): string | undefined {
  const r = spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' });
  if (r.status === 0 && r.stdout.trim()) return r.stdout.trim();
  // nginx lives in /usr/sbin, which a non-login PATH may lack.
  return ['/usr/sbin', '/sbin'].map((d) => join(d, cmd)).find((p) => existsSync(p));
}

/** The tool's path; without it, a skip with the reason, or a failure under CI. */
function tool(ctx: TestContext, cmd: string, debianPackage: string): string {
  const path = which(cmd);
  if (path) return path;
  const why = `${cmd} is not installed (Debian package ${debianPackage}; .ci/run installs it)`;
  if (CI) throw new Error(`${why}, and CI=true requires this check`);
  return ctx.skip(why);
}

function run(cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}) {
  const r = spawnSync(cmd, args, { cwd: opts.cwd ?? ROOT, env: opts.env ?? process.env, encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, out: r.stdout ?? '', err: `${r.stderr ?? ''}${r.error ? String(r.error) : ''}` };
}

// ---------------------------------------------------------------------------------------------
// PromQL: which metric names an expression reads.

const PROMQL_KEYWORDS = new Set([
  'and',
  'or',
  'unless',
  'by',
  'without',
  'on',
  'ignoring',
  'group_left',
  'group_right',
  'bool',
  'offset',
  'atan2',
  'inf',
  'nan',
]);

/**
 * The metric names an expression selects. Grafana variables become a duration, then strings,
 * label matchers, ranges, grouping clauses and numbers are removed; of the identifiers left,
 * those followed by `(` are functions or aggregations, the rest metric names.
 */
function promqlMetricNames(expr: string): Set<string> {
  let s = expr.replace(/\$\{[A-Za-z_]\w*(?::\w+)?\}|\$[A-Za-z_]\w*|\[\[[A-Za-z_]\w*\]\]/g, '5m');
  s = s.replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, '""');
  s = s.replace(/\{[^}]*\}/g, ' ');
  s = s.replace(/\[[^\]]*\]/g, ' ');
  s = s.replace(/\boffset\s+-?\w+/g, ' ');
  s = s.replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ');
  s = s.replace(/(^|[^A-Za-z0-9_:])(0x[0-9a-f]+|\d+(\.\d*)?(e[+-]?\d+)?|\.\d+(e[+-]?\d+)?)/gi, '$1 ');
  const names = new Set<string>();
  for (const m of s.matchAll(/[A-Za-z_:][A-Za-z0-9_:]*/g)) {
    const after = s.slice((m.index ?? 0) + m[0].length).trimStart();
    if (after.startsWith('(') || PROMQL_KEYWORDS.has(m[0].toLowerCase())) continue;
    names.add(m[0]);
  }
  return names;
}

/** Series names a `/metrics` exposition offers: from its `# TYPE` lines (histograms as _bucket, _sum, _count). */
function exportedSeriesNames(exposition: string): Set<string> {
  const out = new Set<string>();
  for (const m of exposition.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    const [, name, type] = m;
    if (type === 'histogram') for (const s of ['_bucket', '_sum', '_count']) out.add(name + s);
    else if (type === 'summary') for (const s of ['', '_sum', '_count']) out.add(name + s);
    else out.add(name);
  }
  return out;
}

interface Panel {
  type: string;
  id: number;
  title: string;
  gridPos: { h: number; w: number; x: number; y: number };
  datasource?: { type: string; uid: string };
  targets?: { expr: string; refId: string }[];
  panels?: Panel[];
}
interface Dashboard {
  uid: string;
  title: string;
  panels: Panel[];
  templating: { list: { name: string; type: string; query: unknown; datasource?: unknown }[] };
}

const dashboard = (): Dashboard => JSON.parse(read('deploy/grafana/portcullis.json'));
const allPanels = (d: Dashboard): Panel[] => d.panels.flatMap((p) => [p, ...(p.panels ?? [])]);

/** Every PromQL expression of the dashboard: panel targets and query variables (`label_values(sel, label)` → sel). */
function dashboardExpressions(d: Dashboard): { where: string; expr: string }[] {
  const out: { where: string; expr: string }[] = [];
  for (const p of allPanels(d)) for (const t of p.targets ?? []) out.push({ where: `panel "${p.title}" ${t.refId}`, expr: t.expr });
  for (const v of d.templating.list) {
    if (v.type !== 'query') continue;
    const q = typeof v.query === 'string' ? v.query : (v.query as { query: string }).query;
    const lv = /^\s*label_values\((.*),\s*[A-Za-z_]\w*\s*\)\s*$/.exec(q);
    out.push({ where: `variable $${v.name}`, expr: lv ? lv[1] : q });
  }
  return out;
}

interface Rule {
  alert?: string;
  record?: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}
const alertRules = (): Rule[] => (parseYaml(read('deploy/prometheus/alerts.yaml')) as { groups: { rules: Rule[] }[] }).groups.flatMap((g) => g.rules);

describe('PromQL metric-name extraction (used by the checks below)', () => {
  it('finds metric names and ignores functions, labels, strings, durations, numbers and variables', () => {
    const expr = `histogram_quantile(0.99, sum by (route, le) (rate(portcullis_http_request_duration_seconds_bucket{job=~"$job",status=~"5.."}[$__rate_interval])))
      / on (job) group_left (version) max by (job, version) (portcullis_build_info offset 5m) > 1e-3
      and time() - process_start_time_seconds > bool 2.5 unless absent(nodejs_eventloop_lag_p99_seconds{instance="a:9464"})`;
    expect([...promqlMetricNames(expr)].sort()).toEqual([
      'nodejs_eventloop_lag_p99_seconds',
      'portcullis_build_info',
      'portcullis_http_request_duration_seconds_bucket',
      'process_start_time_seconds',
    ]);
    expect([...promqlMetricNames('sum(increase(portcullis_lockouts_total[15m])) > 5')]).toEqual(['portcullis_lockouts_total']);
    expect([...promqlMetricNames('label_replace(up, "dst", "$1", "instance", "(.*):.*")')]).toEqual(['up']);
  });

  it('reads metric names from a /metrics exposition, histograms as their three series', () => {
    const names = exportedSeriesNames('# HELP a_total x\n# TYPE a_total counter\n# TYPE b_seconds histogram\nb_seconds_bucket{le="1"} 0\n# TYPE c gauge\n');
    expect([...names].sort()).toEqual(['a_total', 'b_seconds_bucket', 'b_seconds_count', 'b_seconds_sum', 'c']);
  });
});

// ---------------------------------------------------------------------------------------------

describe('Dockerfile', () => {
  const text = read('Dockerfile');
  // Instructions with their continuation lines joined, comments dropped.
  const instructions = text
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));
  const stages: string[][] = [];
  for (const l of instructions) {
    if (/^FROM\s/i.test(l)) stages.push([]);
    stages.at(-1)?.push(l);
  }
  const runtime = stages.at(-1) ?? [];
  const arg = (l: string) => l.replace(/^\S+\s+/, '');
  const last = (stage: string[], op: string) => stage.filter((l) => l.toUpperCase().startsWith(`${op} `)).at(-1);

  it(`is multi-stage, every stage on the node:${NODE_LTS_MAJOR} (LTS) slim image`, () => {
    expect(stages.length).toBeGreaterThanOrEqual(2);
    for (const s of stages) expect(s[0]).toMatch(new RegExp(`^FROM node:${NODE_LTS_MAJOR}-(?:[a-z]+-)?slim(?:@sha256:[0-9a-f]{64})?\\s+AS\\s+\\w+$`, 'i'));
    expect(runtime.some((l) => /^COPY --from=build\b/.test(l))).toBe(true);
  });

  it('builds in the first stage: npm ci, npm run build, then production dependencies only', () => {
    const build = stages[0].join('\n');
    const ci = build.indexOf('npm ci');
    const bld = build.indexOf('npm run build');
    const prune = build.indexOf('npm prune --omit=dev');
    expect(ci).toBeGreaterThan(-1);
    expect(bld).toBeGreaterThan(ci);
    expect(prune).toBeGreaterThan(bld);
    // tsconfig and sources are in place before `npm ci` (a `prepare` script may build during it).
    const copies = stages[0].slice(
      0,
      stages[0].findIndex((l) => l.includes('npm ci')),
    );
    expect(copies.join('\n')).toMatch(/COPY .*tsconfig\.build\.json/);
    expect(copies.join('\n')).toMatch(/COPY src /);
    // Every file the lifecycle scripts run during `npm ci` (prepare, build) is copied before it
    // and let through .dockerignore.
    const scripts = JSON.parse(read('package.json')).scripts as Record<string, string>;
    const files = [scripts.prepare, scripts.build].flatMap((cmd) => [...(cmd ?? '').matchAll(/\bnode\s+(\S+\.m?js)/g)].map((m) => m[1]));
    expect(files.length).toBeGreaterThan(0);
    for (const f of files) {
      expect(copies.join('\n'), `${f} is copied before npm ci`).toContain(f);
      expect(read('.dockerignore'), `${f} is let into the build context`).toContain(`!${f}`);
    }
  });

  it('runs as a non-root numeric user, in production mode, the compiled CLI with the container config', () => {
    const user = arg(last(runtime, 'USER') ?? 'USER root');
    expect(user).toMatch(/^\d+(:\d+)?$/);
    expect(Number(user.split(':')[0])).toBeGreaterThan(0);
    const env = runtime.filter((l) => l.startsWith('ENV ')).join(' ');
    expect(env).toMatch(/\bNODE_ENV=production\b/);
    const configPath = /\bPORTCULLIS_CONFIG=(\S+)/.exec(env)?.[1];
    expect(configPath).toBe('/app/config/container.yaml');
    expect(runtime).toContain(`COPY config/container.yaml ./config/container.yaml`);
    expect(arg(last(runtime, 'WORKDIR') ?? '')).toBe('/app');
    expect(JSON.parse(arg(last(runtime, 'ENTRYPOINT') ?? '[]'))).toEqual(['node', 'dist/cli/bin.js']);
    expect(JSON.parse(arg(last(runtime, 'CMD') ?? '[]'))).toEqual(['serve']);
    // Nothing in the runtime stage starts or configures the demo upstream.
    expect(runtime.join('\n')).not.toMatch(/demo/i);
  });

  it('declares the data_dir of the container config as its only writable volume, owned by the runtime user', () => {
    const cfg = loadConfig(at('config/container.yaml'), productionEnv());
    const volume = JSON.parse(arg(last(runtime, 'VOLUME') ?? '[]'));
    expect(volume).toEqual([cfg.data_dir]);
    const uid = arg(last(runtime, 'USER') ?? '').split(':')[0];
    expect(runtime.join('\n')).toContain(`install -d -o ${uid} -g ${uid} -m 0700 ${cfg.data_dir}`);
  });

  it('exposes the ports the container config listens on, and has a HEALTHCHECK on /healthz without curl', () => {
    const cfg = loadConfig(at('config/container.yaml'), productionEnv());
    const exposed = arg(last(runtime, 'EXPOSE') ?? '')
      .split(/\s+/)
      .map(Number);
    expect(exposed).toEqual(expect.arrayContaining([cfg.listen.port, cfg.admin.listen.port]));
    const hc = healthcheckCommand();
    expect(hc[0]).toBe('node');
    expect(hc.join(' ')).toContain('/healthz');
    expect(instructions.join('\n')).not.toMatch(/\b(curl|wget)\b/);
  });

  it('sends only what the image needs as build context (.dockerignore is an allow-list)', () => {
    const ignore = read('.dockerignore')
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l && !l.startsWith('#'));
    expect(ignore[0]).toBe('**');
    const sources = instructions
      .filter((l) => /^COPY\s/.test(l) && !/--from=/.test(l))
      .flatMap((l) => arg(l).split(/\s+/).slice(0, -1))
      .filter((s) => !s.startsWith('--'));
    expect(sources.length).toBeGreaterThan(0);
    for (const s of sources) {
      const readmitted = ignore.some((p) => p === `!${s}` || p === `!${s}/` || p === `!${s.replace(/\/$/, '')}/`);
      expect(readmitted, `.dockerignore lets ${s} into the build context`).toBe(true);
      expect(() => readFileSync(at(s)), `${s} exists`).not.toThrow(/ENOENT/);
    }
  });
});

/** The HEALTHCHECK's exec form, as an argv. */
function healthcheckCommand(): string[] {
  const joined = read('Dockerfile').replace(/\\\n/g, ' ');
  const m = /^HEALTHCHECK\s.*?\bCMD\s+(\[.*\])\s*$/m.exec(joined);
  if (!m) throw new Error('no HEALTHCHECK … CMD [exec form] in Dockerfile');
  return JSON.parse(m[1]);
}

// ---------------------------------------------------------------------------------------------

/** The environment of a production container: what deploy/README.md tells an SRE to set. */
function productionEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return {
    NODE_ENV: 'production',
    PORTCULLIS_PUBLIC_URL: 'https://gw.example.com',
    PORTCULLIS_UPSTREAM_URL: 'http://app.internal:8080',
    DATABASE_URL: 'postgres://portcullis:secret@db.internal:5432/portcullis',
    REDIS_URL: 'redis://redis.internal:6379',
    PORTCULLIS_SIGNING_KEYS_FILE: '/run/secrets/signing-keys.json',
    PORTCULLIS_ENCRYPTION_KEY: Buffer.alloc(32, 7).toString('base64'),
    ...extra,
  };
}

describe('config/container.yaml (the image config)', () => {
  it('loads under a production environment: 0.0.0.0 listeners, no demo upstream, storage, keys and URL from the environment', () => {
    const env = productionEnv();
    const cfg = loadConfig(at('config/container.yaml'), env);
    expect(cfg.listen).toEqual({ host: '0.0.0.0', port: 8080 });
    expect(cfg.admin.listen).toEqual({ host: '0.0.0.0', port: 9464 });
    expect(cfg.demo_upstream).toBeUndefined();
    expect(read('config/container.yaml')).not.toMatch(/^\s*demo_upstream\s*:/m);
    expect(cfg.public_url).toBe(env.PORTCULLIS_PUBLIC_URL);
    expect(cfg.issuer).toBe(env.PORTCULLIS_PUBLIC_URL);
    expect(cfg.storage.database_url).toBe(env.DATABASE_URL);
    expect(cfg.storage.redis_url).toBe(env.REDIS_URL);
    expect(cfg.keys.signing_keys_file).toBe(env.PORTCULLIS_SIGNING_KEYS_FILE);
    expect(cfg.upstreams.app.url).toBe(env.PORTCULLIS_UPSTREAM_URL);
    expect(cfg.auth.argon2.max_concurrent).toBe(1);
  });

  it('keeps embedded mode inside data_dir when no DATABASE_URL is given', () => {
    const cfg = loadConfig(at('config/container.yaml'), productionEnv({ DATABASE_URL: undefined, REDIS_URL: undefined }));
    expect(cfg.storage.database_url).toBe(`sqlite:${posix.join(cfg.data_dir, 'portcullis.db')}`);
    expect(cfg.storage.redis_url).toBe('');
  });

  it('names the missing upstream URL instead of guessing one', () => {
    expect(() => loadConfig(at('config/container.yaml'), productionEnv({ PORTCULLIS_UPSTREAM_URL: undefined }))).toThrow(/PORTCULLIS_UPSTREAM_URL is not set/);
  });

  it('passes `portcullis config check`', async () => {
    const r = await runCliInProcess(['config', 'check', '--config', at('config/container.yaml')], {
      env: productionEnv({ PORTCULLIS_SIGNING_KEYS_FILE: await realKeysFile() }),
    });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
  });
});

// ---------------------------------------------------------------------------------------------

describe('deploy/prometheus', () => {
  it('promtool check rules: the alert rules are valid', (ctx) => {
    const promtool = tool(ctx, 'promtool', 'prometheus');
    const r = run(promtool, ['check', 'rules', 'deploy/prometheus/alerts.yaml']);
    expect(r.code, r.out + r.err).toBe(0);
    expect(r.out).toMatch(/SUCCESS: \d+ rules found/);
  });

  it('promtool test rules: every alert has cases that fire and cases that must not', (ctx) => {
    const promtool = tool(ctx, 'promtool', 'prometheus');
    const r = run(promtool, ['test', 'rules', 'deploy/prometheus/alerts.test.yaml']);
    expect(r.code, r.out + r.err).toBe(0);
    const tests = (
      parseYaml(read('deploy/prometheus/alerts.test.yaml')) as { tests: { alert_rule_test?: { alertname: string; exp_alerts?: unknown[] }[] }[] }
    ).tests.flatMap((t) => t.alert_rule_test ?? []);
    for (const rule of alertRules()) {
      const cases = tests.filter((t) => t.alertname === rule.alert);
      expect(
        cases.some((c) => (c.exp_alerts ?? []).length > 0),
        `${rule.alert} has a case that fires`,
      ).toBe(true);
      expect(
        cases.some((c) => (c.exp_alerts ?? []).length === 0),
        `${rule.alert} has a case that must not fire`,
      ).toBe(true);
    }
  });

  it('covers what SPEC §11 asks for, each alert with a severity and an explanation', () => {
    const rules = alertRules();
    const byMetric = (name: string) => rules.filter((r) => promqlMetricNames(r.expr).has(name));
    expect(byMetric('portcullis_login_attempts_total').length).toBeGreaterThan(0); // login failure ratio
    expect(byMetric('portcullis_lockouts_total').length).toBeGreaterThan(0); // lockout spike
    expect(rules.some((r) => r.expr.includes('reuse_detected'))).toBe(true); // any refresh reuse
    expect(byMetric('portcullis_upstream_request_duration_seconds_count').length).toBeGreaterThan(0); // upstream 5xx/timeout ratio
    expect(byMetric('portcullis_dependency_up').length).toBeGreaterThan(0); // dependency down
    expect(byMetric('portcullis_config_last_reload_successful').length).toBeGreaterThan(0); // reload failed
    expect(rules.some((r) => /histogram_quantile\(\s*0\.99/.test(r.expr))).toBe(true); // p99 latency
    for (const r of rules) {
      expect(r.alert).toMatch(/^Portcullis[A-Za-z0-9]+$/);
      expect(['warning', 'critical']).toContain(r.labels?.severity);
      expect(r.annotations?.summary, `${r.alert} summary`).toBeTruthy();
      expect(r.annotations?.description, `${r.alert} description`).toBeTruthy();
    }
    // deploy/README.md explains every alert.
    const readme = read('deploy/README.md');
    for (const r of rules) expect(readme, `deploy/README.md explains ${r.alert}`).toContain(r.alert);
  });

  it('promtool check config: the compose Prometheus config is valid and loads the rules', (ctx) => {
    const promtool = tool(ctx, 'promtool', 'prometheus');
    const r = run(promtool, ['check', 'config', 'deploy/prometheus/prometheus.yml']);
    expect(r.code, r.out + r.err).toBe(0);
    expect(r.out).toMatch(/SUCCESS: 1 rule files found/);
  });
});

// ---------------------------------------------------------------------------------------------

describe('the dashboard and the alerts query only what the gateway exports', () => {
  let h: Harness;
  let exported: Set<string>;
  beforeAll(async () => {
    h = await startHarness();
    exported = exportedSeriesNames(await metricsText(h));
  });
  afterAll(async () => {
    await h?.close();
  });

  it('the exposition lists the SPEC §9 metrics (so the comparison below is against a real one)', () => {
    for (const name of [
      'portcullis_http_requests_total',
      'portcullis_http_request_duration_seconds_bucket',
      'portcullis_dependency_up',
      'portcullis_lockouts_total',
    ])
      expect(exported).toContain(name);
  });

  it('every metric in the dashboard exists in /metrics', () => {
    const missing = dashboardExpressions(dashboard()).flatMap(({ where, expr }) =>
      [...promqlMetricNames(expr)].filter((n) => !exported.has(n)).map((n) => `${n} (${where})`),
    );
    expect(missing, 'metrics the dashboard queries but the gateway does not export').toEqual([]);
  });

  it('every metric in the alert rules exists in /metrics', () => {
    const missing = alertRules().flatMap((r) => [...promqlMetricNames(r.expr)].filter((n) => !exported.has(n)).map((n) => `${n} (${r.alert})`));
    expect(missing, 'metrics the alerts query but the gateway does not export').toEqual([]);
  });

  it("the image's HEALTHCHECK command passes against a live admin listener and fails against none", async () => {
    const [, ...args] = healthcheckCommand();
    // Asynchronously: the admin listener answers from this very process.
    const healthcheck = async (port: string | number) => {
      const child = spawn(process.execPath, args, { env: { PATH: process.env.PATH, PORTCULLIS_ADMIN_LISTEN: `0.0.0.0:${port}` }, stdio: 'ignore' });
      const [code] = (await once(child, 'exit')) as [number | null];
      return code;
    };
    expect(await healthcheck(new URL(h.adminUrl).port)).toBe(0);
    expect(await healthcheck(await freePort())).toBe(1);
  });
});

describe('deploy/grafana/portcullis.json', () => {
  it('is an importable dashboard: unique panel ids, a Prometheus data source variable, every panel on it', () => {
    const d = dashboard();
    expect(d.uid).toBe('portcullis');
    expect(d.title).toBeTruthy();
    const panels = allPanels(d);
    const ids = panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    const dsVar = d.templating.list.find((v) => v.type === 'datasource');
    expect(dsVar?.query).toBe('prometheus');
    for (const p of panels.filter((p) => p.type !== 'row')) {
      expect(p.datasource, `panel "${p.title}"`).toEqual({ type: 'prometheus', uid: `\${${dsVar?.name}}` });
      expect(p.targets?.length, `panel "${p.title}" has queries`).toBeGreaterThan(0);
      expect(p.gridPos.x + p.gridPos.w).toBeLessThanOrEqual(24);
    }
  });

  it('shows every SPEC §9 metric', () => {
    const used = new Set(dashboardExpressions(dashboard()).flatMap(({ expr }) => [...promqlMetricNames(expr)]));
    const spec = [
      'portcullis_http_requests_total',
      'portcullis_http_request_duration_seconds_bucket',
      'portcullis_upstream_request_duration_seconds_bucket',
      'portcullis_upstream_errors_total',
      'portcullis_auth_decisions_total',
      'portcullis_login_attempts_total',
      'portcullis_lockouts_total',
      'portcullis_mfa_attempts_total',
      'portcullis_token_refresh_total',
      'portcullis_rate_limited_total',
      'portcullis_config_reloads_total',
      'portcullis_dependency_up',
      'portcullis_build_info',
      'portcullis_config_last_reload_successful',
      'portcullis_config_last_reload_success_timestamp_seconds',
    ];
    expect(spec.filter((m) => !used.has(m))).toEqual([]);
  });
});

// ---------------------------------------------------------------------------------------------

describe('yamllint', () => {
  it('passes on deploy/ and config/ with the repository .yamllint (strict: warnings fail)', (ctx) => {
    const yamllint = tool(ctx, 'yamllint', 'yamllint');
    const listed = run(yamllint, ['-c', '.yamllint', '--list-files', 'deploy', 'config']);
    expect(listed.code, listed.err).toBe(0);
    const files = listed.out.split('\n').filter(Boolean);
    for (const f of ['deploy/compose.yaml', 'deploy/prometheus/alerts.yaml', 'deploy/kubernetes/deployment.yaml', 'config/container.yaml'])
      expect(files).toContain(f);
    const r = run(yamllint, ['--strict', '-f', 'parsable', '-c', '.yamllint', 'deploy', 'config', '.yamllint']);
    expect(r.out + r.err).toBe('');
    expect(r.code).toBe(0);
  });
});

// ---------------------------------------------------------------------------------------------

interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; labels?: Record<string, string> };
  spec?: any;
  data?: Record<string, string>;
}

describe('deploy/kubernetes (kustomize base)', () => {
  let objects: K8sObject[] = [];
  const one = (kind: string): K8sObject => {
    const found = objects.filter((o) => o.kind === kind);
    expect(found, `exactly one ${kind}`).toHaveLength(1);
    return found[0];
  };
  const matches = (selector: Record<string, string>, labels: Record<string, string>) =>
    Object.keys(selector).length > 0 && Object.entries(selector).every(([k, v]) => labels[k] === v);

  beforeAll(() => {
    const kubectl = which('kubectl');
    if (!kubectl) return;
    const r = run(kubectl, ['kustomize', 'deploy/kubernetes']);
    if (r.code !== 0) throw new Error(`kubectl kustomize deploy/kubernetes failed:\n${r.err}`);
    objects = parseAllDocuments(r.out).map((d) => d.toJS() as K8sObject);
  });

  it('kubectl kustomize renders every object of the base, and no Secret (secrets are referenced, not committed)', (ctx) => {
    tool(ctx, 'kubectl', 'kubectl');
    const kinds = objects.map((o) => o.kind).sort();
    expect(kinds).toEqual(['ConfigMap', 'Deployment', 'HorizontalPodAutoscaler', 'NetworkPolicy', 'PodDisruptionBudget', 'Service', 'ServiceAccount']);
    expect(read('deploy/kubernetes/kustomization.yaml')).not.toMatch(/secretGenerator/);
  });

  it('Deployment: 3 replicas, probes on the admin port, preStop, a grace period above the drain, resources', (ctx) => {
    tool(ctx, 'kubectl', 'kubectl');
    const dep = one('Deployment');
    expect(dep.apiVersion).toBe('apps/v1');
    expect(dep.spec.replicas).toBe(3);
    const pod = dep.spec.template.spec;
    expect(pod.containers).toHaveLength(1);
    const c = pod.containers[0];
    const ports = Object.fromEntries(c.ports.map((p: { name: string; containerPort: number }) => [p.name, p.containerPort]));
    expect(c.readinessProbe.httpGet).toEqual({ path: '/readyz', port: 'admin' });
    expect(c.livenessProbe.httpGet).toEqual({ path: '/healthz', port: 'admin' });
    expect(c.startupProbe?.httpGet?.path).toBe('/healthz');
    const preStop = c.lifecycle.preStop;
    const preStopSeconds: number = preStop.sleep?.seconds ?? Number(/sleep\s+(\d+)/.exec((preStop.exec?.command ?? []).join(' '))?.[1]);
    expect(preStopSeconds).toBeGreaterThan(0);
    // The gateway's own drain (shutdown_grace in the mounted config) must fit after preStop.
    const cfg = mountedConfig();
    expect(pod.terminationGracePeriodSeconds).toBeGreaterThan(preStopSeconds + cfg.shutdown_grace / 1000);
    expect(ports.http).toBe(cfg.listen.port);
    expect(ports.admin).toBe(cfg.admin.listen.port);
    for (const kind of ['requests', 'limits']) {
      expect(c.resources[kind].cpu, `resources.${kind}.cpu`).toBeTruthy();
      expect(c.resources[kind].memory, `resources.${kind}.memory`).toBeTruthy();
    }
    expect(c.image).toMatch(/^portcullis:\S+$/);
  });

  it('Deployment: non-root, read-only root filesystem, no privilege escalation, no capabilities, RuntimeDefault seccomp', (ctx) => {
    tool(ctx, 'kubectl', 'kubectl');
    const pod = one('Deployment').spec.template.spec;
    const c = pod.containers[0];
    expect(pod.securityContext.runAsNonRoot).toBe(true);
    expect(pod.securityContext.runAsUser).toBeGreaterThan(0);
    expect(pod.securityContext.seccompProfile).toEqual({ type: 'RuntimeDefault' });
    expect(c.securityContext).toMatchObject({
      runAsNonRoot: true,
      readOnlyRootFilesystem: true,
      allowPrivilegeEscalation: false,
      capabilities: { drop: ['ALL'] },
    });
    expect(pod.automountServiceAccountToken).toBe(false);
    // No volume is writable: with PostgreSQL and Redis the gateway writes nothing.
    for (const m of c.volumeMounts) expect(m.readOnly, `${m.name} mounted read-only`).toBe(true);
  });

  it('Deployment: the config comes from the generated ConfigMap, the secrets from Secret references', (ctx) => {
    tool(ctx, 'kubectl', 'kubectl');
    const pod = one('Deployment').spec.template.spec;
    const c = pod.containers[0];
    const env = Object.fromEntries(c.env.map((e: { name: string }) => [e.name, e]));
    const volume = (name: string) => pod.volumes.find((v: { name: string }) => v.name === name);
    const mountOf = (name: string) => c.volumeMounts.find((m: { name: string }) => m.name === name);
    // Config: PORTCULLIS_CONFIG points into the ConfigMap's mount, at its gateway.yaml key.
    const cm = one('ConfigMap');
    const cfgVolume = pod.volumes.find((v: { configMap?: { name: string } }) => v.configMap?.name === cm.metadata.name);
    expect(cfgVolume, 'a volume of the generated ConfigMap').toBeTruthy();
    expect(env.PORTCULLIS_CONFIG.value).toBe(posix.join(mountOf(cfgVolume.name).mountPath, 'gateway.yaml'));
    expect(Object.keys(cm.data ?? {})).toEqual(['gateway.yaml']);
    // Secrets: referenced by name and key, never given as values.
    for (const name of ['DATABASE_URL', 'REDIS_URL', 'PORTCULLIS_ENCRYPTION_KEY']) {
      expect(env[name]?.valueFrom?.secretKeyRef, `${name} from a Secret`).toMatchObject({ name: 'portcullis', key: name });
      expect(env[name].value).toBeUndefined();
    }
    const keysFile = env.PORTCULLIS_SIGNING_KEYS_FILE.value as string;
    const keysVolume = volume('signing-keys');
    expect(keysVolume.secret.secretName).toBe('portcullis');
    expect(keysVolume.secret.items).toEqual([{ key: 'signing-keys.json', path: posix.basename(keysFile) }]);
    expect(mountOf('signing-keys').mountPath).toBe(posix.dirname(keysFile));
    expect(env.PORTCULLIS_PUBLIC_URL.value).toMatch(/^https:\/\//);
  });

  it('the ConfigMap gateway.yaml loads: 0.0.0.0 listeners, no demo upstream, passes config check', async (ctx) => {
    tool(ctx, 'kubectl', 'kubectl');
    const cfg = mountedConfig();
    expect(cfg.listen.host).toBe('0.0.0.0');
    expect(cfg.admin.listen.host).toBe('0.0.0.0');
    expect(cfg.demo_upstream).toBeUndefined();
    expect(cfg.storage.database_url).toMatch(/^postgres:/);
    expect(cfg.storage.redis_url).toMatch(/^redis:/);
    const dir = mkdtempSync(join(tmpdir(), 'portcullis-k8s-'));
    try {
      writeFileSync(join(dir, 'gateway.yaml'), one('ConfigMap').data?.['gateway.yaml'] ?? '');
      const r = await runCliInProcess(['config', 'check', '--config', join(dir, 'gateway.yaml')], {
        env: { ...podEnv(), PORTCULLIS_SIGNING_KEYS_FILE: await realKeysFile() },
      });
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('Service, PodDisruptionBudget, HPA and NetworkPolicy select the gateway pods and fit together', (ctx) => {
    tool(ctx, 'kubectl', 'kubectl');
    const dep = one('Deployment');
    const podLabels = dep.spec.template.metadata.labels;
    expect(matches(dep.spec.selector.matchLabels, podLabels)).toBe(true);
    const containerPorts = dep.spec.template.spec.containers[0].ports.map((p: { name: string }) => p.name);

    const svc = one('Service');
    expect(matches(svc.spec.selector, podLabels)).toBe(true);
    for (const p of svc.spec.ports) expect(containerPorts).toContain(p.targetPort);

    const pdb = one('PodDisruptionBudget');
    expect(pdb.apiVersion).toBe('policy/v1');
    expect(matches(pdb.spec.selector.matchLabels, podLabels)).toBe(true);
    // It lets a drain proceed (one pod at a time) and keeps the others serving.
    const maxUnavailable = pdb.spec.maxUnavailable ?? dep.spec.replicas - pdb.spec.minAvailable;
    expect(maxUnavailable).toBeGreaterThanOrEqual(1);
    expect(maxUnavailable).toBeLessThan(dep.spec.replicas);

    const hpa = one('HorizontalPodAutoscaler');
    expect(hpa.apiVersion).toBe('autoscaling/v2');
    expect(hpa.spec.scaleTargetRef).toEqual({ apiVersion: 'apps/v1', kind: 'Deployment', name: dep.metadata.name });
    expect(hpa.spec.minReplicas).toBe(dep.spec.replicas);
    expect(hpa.spec.maxReplicas).toBeGreaterThan(hpa.spec.minReplicas);
    expect(hpa.spec.metrics.length).toBeGreaterThan(0);

    const np = one('NetworkPolicy');
    expect(matches(np.spec.podSelector.matchLabels, podLabels)).toBe(true);
    expect(np.spec.policyTypes).toEqual(expect.arrayContaining(['Ingress', 'Egress']));
    type Rule = { from?: unknown[]; ports?: { port: string | number }[] };
    const adminRules = (np.spec.ingress as Rule[]).filter((r) => r.ports?.some((p) => p.port === 'admin' || p.port === 9464));
    expect(adminRules.length).toBeGreaterThan(0);
    // The admin listener is never open to everyone.
    for (const r of adminRules) expect(r.from?.length, 'admin port restricted to named peers').toBeGreaterThan(0);
    // The egress rules allow DNS, PostgreSQL and Redis.
    const egressPorts = (np.spec.egress as Rule[]).flatMap((r) => (r.ports ?? []).map((p) => p.port));
    expect(egressPorts).toEqual(expect.arrayContaining([53, 5432, 6379]));
  });

  /** The environment the pod gets (secrets replaced by stand-ins of the right shape). */
  function podEnv(): NodeJS.ProcessEnv {
    const c = one('Deployment').spec.template.spec.containers[0];
    const env: NodeJS.ProcessEnv = { NODE_ENV: 'production' };
    for (const e of c.env as { name: string; value?: string }[]) if (e.value !== undefined) env[e.name] = e.value;
    return {
      ...env,
      DATABASE_URL: 'postgres://portcullis:x@postgres:5432/portcullis',
      REDIS_URL: 'redis://redis:6379',
      PORTCULLIS_ENCRYPTION_KEY: Buffer.alloc(32, 3).toString('base64'),
    };
  }
  /** The gateway config the pods run with, loaded as `serve` would. */
  function mountedConfig() {
    return parseConfig(one('ConfigMap').data?.['gateway.yaml'] ?? '', 'configmap:gateway.yaml', podEnv());
  }
});

// ---------------------------------------------------------------------------------------------

describe('deploy/compose.yaml', () => {
  let rendered: any;
  const secrets = { POSTGRES_PASSWORD: 'pw-from-env-file', PORTCULLIS_ENCRYPTION_KEY: Buffer.alloc(32, 9).toString('base64') };

  /** `docker compose` (plugin) when it answers, else Debian's docker-compose. */
  function composeCommand(ctx: TestContext): string[] {
    const docker = which('docker');
    if (docker && run(docker, ['compose', 'version']).code === 0) return [docker, 'compose'];
    return [tool(ctx, 'docker-compose', 'docker-compose')];
  }
  function composeConfig(ctx: TestContext, env: Record<string, string>) {
    const [cmd, ...pre] = composeCommand(ctx);
    const dir = mkdtempSync(join(tmpdir(), 'portcullis-compose-'));
    try {
      // An env file of the test's own, so that a developer's deploy/.env does not count.
      const envFile = join(dir, 'env');
      writeFileSync(
        envFile,
        Object.entries(env)
          .map(([k, v]) => `${k}=${v}\n`)
          .join(''),
      );
      return run(cmd, [...pre, '--env-file', envFile, '-f', 'deploy/compose.yaml', 'config'], { env: { PATH: process.env.PATH, HOME: dir } });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }

  it('is valid for the compose validator, and names a missing secret instead of starting without it', (ctx) => {
    const r = composeConfig(ctx, secrets);
    expect(r.code, r.err).toBe(0);
    rendered = parseYaml(r.out);
    const missing = composeConfig(ctx, { PORTCULLIS_ENCRYPTION_KEY: secrets.PORTCULLIS_ENCRYPTION_KEY });
    expect(missing.code).not.toBe(0);
    expect(missing.err).toMatch(/POSTGRES_PASSWORD/);
  });

  it('runs two gateway replicas, PostgreSQL, Redis, the demo app, a load balancer and Prometheus', (ctx) => {
    if (!rendered) return ctx.skip('needs the rendered compose model (see the test above)');
    expect(Object.keys(rendered.services).sort()).toEqual(['demo', 'gateway', 'lb', 'postgres', 'prometheus', 'redis']);
    const gw = rendered.services.gateway;
    expect(gw.deploy.replicas).toBe(2);
    expect(gw.container_name).toBeUndefined();
    expect(gw.ports).toBeUndefined(); // reached through the load balancer only
    expect(gw.read_only).toBe(true);
    expect(gw.cap_drop).toEqual(['ALL']);
    for (const s of ['gateway', 'demo', 'postgres', 'redis']) expect(rendered.services[s].healthcheck?.test, `${s} healthcheck`).toBeTruthy();
    expect(gw.healthcheck.test.join(' ')).toContain('/readyz');
    for (const dep of ['postgres', 'redis']) expect(gw.depends_on[dep].condition).toBe('service_healthy');
    expect(rendered.services.lb.depends_on.gateway.condition).toBe('service_healthy');
  });

  it('gives both replicas the same public URL, keys, database and Redis, and a config that loads with them', (ctx) => {
    if (!rendered) return ctx.skip('needs the rendered compose model (see the test above)');
    const gw = rendered.services.gateway;
    const env: Record<string, string> = gw.environment;
    expect(env.PORTCULLIS_ENCRYPTION_KEY).toBe(secrets.PORTCULLIS_ENCRYPTION_KEY);
    expect(env.DATABASE_URL).toBe(`postgres://portcullis:${secrets.POSTGRES_PASSWORD}@postgres:5432/portcullis`);
    expect(env.REDIS_URL).toBe('redis://redis:6379');
    expect(env.PORTCULLIS_PUBLIC_URL).toBe('http://localhost:8080');
    // The mounted gateway config, loaded with the replica's environment.
    const mount = (gw.volumes as (string | { source: string; target: string })[])
      .map((v) => (typeof v === 'string' ? { source: v.split(':')[0], target: v.split(':')[1] } : v))
      .find((v) => v.target === env.PORTCULLIS_CONFIG);
    expect(mount, 'PORTCULLIS_CONFIG is a mounted file').toBeTruthy();
    const cfg = loadConfig(mount?.source ?? '', { NODE_ENV: 'production', ...env });
    expect(cfg.public_url).toBe(env.PORTCULLIS_PUBLIC_URL);
    expect(cfg.listen.host).toBe('0.0.0.0');
    expect(cfg.admin.listen.host).toBe('0.0.0.0');
    expect(cfg.demo_upstream).toBeUndefined();
    // Signing keys: the compose secret, at the path the config reads.
    const secretNames = (gw.secrets as (string | { source: string })[]).map((s) => (typeof s === 'string' ? s : s.source));
    expect(secretNames).toContain('signing_keys');
    expect(cfg.keys.signing_keys_file).toBe('/run/secrets/signing_keys');
    expect(rendered.secrets.signing_keys.file).toMatch(/deploy\/secrets\/signing-keys\.json$/);
    // The load balancer's X-Forwarded-For is believed: the pinned compose network is trusted.
    expect(cfg.trust_proxy).toContain(rendered.networks.default.ipam.config[0].subnet);
    // The demo upstream is the compose service that runs the bundled echo app.
    const demoUrl = new URL(Object.values(cfg.upstreams)[0].url);
    expect(demoUrl.hostname).toBe('demo');
    expect(rendered.services.demo.environment.ECHO_LISTEN).toBe(`0.0.0.0:${demoUrl.port}`);
    expect(rendered.services.demo.entrypoint.join(' ')).toContain('dist/demo/echo.js');
  });

  it('Prometheus scrapes every replica on the admin port and loads the alert rules', (ctx) => {
    if (!rendered) return ctx.skip('needs the rendered compose model (see the test above)');
    const prom = rendered.services.prometheus;
    const mounts = (prom.volumes as (string | { source: string; target: string })[]).map((v) =>
      typeof v === 'string' ? { source: v.split(':')[0], target: v.split(':')[1] } : v,
    );
    expect(mounts.map((m) => m.target)).toEqual(expect.arrayContaining(['/etc/prometheus/prometheus.yml', '/etc/prometheus/alerts.yaml']));
    const promCfg = parseYaml(read('deploy/prometheus/prometheus.yml'));
    expect(promCfg.rule_files).toEqual(['alerts.yaml']);
    const sd = promCfg.scrape_configs[0].dns_sd_configs[0];
    expect(sd.names).toEqual(['gateway']);
    const cfg = loadConfig(at('deploy/compose/gateway.yaml'), { ...rendered.services.gateway.environment });
    expect(sd.port).toBe(cfg.admin.listen.port);
    expect(rendered.services.gateway.healthcheck.test.join(' ')).toContain(`127.0.0.1:${cfg.admin.listen.port}/readyz`);
  });

  it('nginx -t accepts the load balancer config', (ctx) => {
    const nginx = tool(ctx, 'nginx', 'nginx');
    const dir = mkdtempSync(join(tmpdir(), 'portcullis-nginx-'));
    try {
      // `gateway` only resolves on the compose network: point it at loopback for the syntax check.
      const conf = read('deploy/compose/nginx.conf');
      const gateway = loadConfig(at('deploy/compose/gateway.yaml'), {
        PORTCULLIS_PUBLIC_URL: 'http://localhost:8080',
        DATABASE_URL: 'postgres://portcullis:x@postgres:5432/portcullis',
        REDIS_URL: 'redis://redis:6379',
      });
      const upstream = `server gateway:${gateway.listen.port}`;
      expect(conf, 'nginx sends to the port the replicas listen on').toContain(upstream);
      writeFileSync(join(dir, 'nginx.conf'), conf.replace(upstream, `server 127.0.0.1:${gateway.listen.port}`));
      const r = run(nginx, ['-t', '-p', dir, '-c', join(dir, 'nginx.conf')]);
      expect(r.err).toMatch(/test is successful/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

// ---------------------------------------------------------------------------------------------

/**
 * The image's read-only-root claim, on the compiled gateway: every mount of this machine is
 * remounted read-only in a private mount namespace (unshare, root only), a tmpfs stands in for
 * the data_dir volume, and the gateway runs as uid 1000 with config/container.yaml in
 * production mode. With PostgreSQL and Redis it writes nothing; in embedded mode only data_dir.
 */
describe('read-only root filesystem (compiled gateway, container config, uid 1000)', () => {
  const pgUrl = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
  const schema = `pc_deploy_${process.pid}_${Date.now().toString(36)}`;
  let work = '';
  let echo: EchoServer | undefined;
  let redis: PrivateRedis | undefined;
  let keysJson = '';
  let unavailable: string | undefined;
  /** Gateways started here: killed in afterAll should a test fail before stopping its own. */
  const started = new Set<ChildProcess>();

  beforeAll(async () => {
    const missing = ['unshare', 'setpriv', 'mount'].filter((c) => !which(c));
    if (process.getuid?.() !== 0) unavailable = 'needs root (unshare --mount)';
    else if (missing.length) unavailable = `needs ${missing.join(', ')} (Debian util-linux, mount)`;
    else if (run('unshare', ['--mount', '--propagation', 'private', '--', 'true']).code !== 0) unavailable = 'unshare --mount is not permitted here';
    if (unavailable) return;
    // The image's layout: dist/ compiled by tsconfig.build.json, package.json, node_modules, the config.
    work = mkdtempSync(join(tmpdir(), 'portcullis-ro-'));
    chmodSync(work, 0o755);
    const app = join(work, 'app');
    mkdirSync(join(app, 'config'), { recursive: true });
    // dist/ is fresh: vitest's globalSetup compiled it (tsconfig.build.json) before any test.
    cpSync(at('dist'), join(app, 'dist'), { recursive: true, filter: (src) => !src.endsWith('.tsbuildinfo') });
    writeFileSync(join(app, 'package.json'), read('package.json'));
    writeFileSync(join(app, 'config', 'container.yaml'), read('config/container.yaml'));
    symlinkSync(at('node_modules'), join(app, 'node_modules'));
    writeFileSync(join(work, 'ro-run.sh'), RO_RUN_SH, { mode: 0o755 });
    keysJson = JSON.stringify({ keys: [await generateSigningJwk()] });
    writeFileSync(join(work, 'signing-keys.json'), keysJson, { mode: 0o644 });
    echo = await startEchoServer({ host: '127.0.0.1', port: 0 });
  }, 120_000);

  afterAll(async () => {
    for (const child of started) {
      if (child.pid === undefined || (child.exitCode !== null && child.signalCode === null)) continue;
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        // the group is gone already
      }
    }
    await echo?.close();
    await redis?.kill();
    if (work) rmSync(work, { recursive: true, force: true });
    if (!unavailable && (await postgresReachable(pgUrl))) {
      const c = new pg.Client({ connectionString: pgUrl });
      await c.connect();
      await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      await c.end();
    }
  });

  function skipUnlessAble(ctx: TestContext): void {
    if (!unavailable) return;
    if (CI) throw new Error(`the read-only root check ${unavailable}, and CI=true requires it`);
    ctx.skip(`read-only root check: ${unavailable}`);
  }

  /** Starts the gateway in the read-only namespace; resolves once it listens. */
  async function startReadOnly(env: NodeJS.ProcessEnv) {
    const child: ChildProcess = spawn(
      'unshare',
      ['--mount', '--propagation', 'private', '--', join(work, 'ro-run.sh'), process.execPath, 'dist/cli/bin.js', 'serve'],
      {
        cwd: join(work, 'app'),
        env: {
          PATH: process.env.PATH,
          NODE_ENV: 'production',
          PORTCULLIS_CONFIG: join(work, 'app', 'config', 'container.yaml'),
          PORTCULLIS_LISTEN: '0.0.0.0:0',
          PORTCULLIS_ADMIN_LISTEN: '0.0.0.0:0',
          PORTCULLIS_PUBLIC_URL: 'https://gw.example.com',
          PORTCULLIS_UPSTREAM_URL: echo?.url,
          PORTCULLIS_ENCRYPTION_KEY: Buffer.alloc(32, 5).toString('base64'),
          PORTCULLIS_BOOTSTRAP_ADMIN_PASSWORD: 'correct horse battery staple 42',
          ...env,
        },
        stdio: ['ignore', 'pipe', 'pipe'],
        // Its own process group, so that cleanup can reach the gateway behind the script too.
        detached: true,
      },
    );
    started.add(child);
    let output = '';
    child.stdout?.on('data', (d) => {
      output += d;
    });
    child.stderr?.on('data', (d) => {
      output += d;
    });
    const exited = once(child, 'exit') as Promise<[number | null, string | null]>;
    const deadline = Date.now() + 45_000;
    let listening: { url: string; admin: string } | undefined;
    while (!listening) {
      const line = output.split('\n').find((l) => l.includes('"event":"listening"'));
      if (line) listening = JSON.parse(line);
      else if (child.exitCode !== null || Date.now() > deadline) throw new Error(`the gateway did not start (exit ${child.exitCode}):\n${output}`);
      else await new Promise((r) => setTimeout(r, 50));
    }
    const local = (u: string) => u.replace('0.0.0.0', '127.0.0.1');
    return {
      url: local(listening.url),
      admin: local(listening.admin),
      listening,
      output: () => output,
      /** SIGTERM (forwarded by the script to the gateway); the exit code and what data_dir held. */
      async stop() {
        child.kill('SIGTERM');
        const [code] = await exited;
        const dataDir = /data_dir after exit: \[(.*)\]/.exec(output)?.[1].trim().split(/\s+/).filter(Boolean);
        return { code, dataDir };
      },
    };
  }

  async function exercise(gw: Awaited<ReturnType<typeof startReadOnly>>) {
    // Both listeners bound to every interface, as a container needs.
    expect(gw.listening.url).toMatch(/^http:\/\/0\.0\.0\.0:\d+$/);
    expect(gw.listening.admin).toMatch(/^http:\/\/0\.0\.0\.0:\d+$/);
    expect((await fetch(`${gw.admin}/healthz`)).status).toBe(200);
    expect((await fetch(`${gw.admin}/readyz`)).status).toBe(200);
    expect((await fetch(`${gw.admin}/metrics`)).status).toBe(200);
    // A sign-in (argon2, a session written to the database) and a proxied request.
    const res = await fetch(`${gw.url}/api/auth/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ username: 'admin', password: 'correct horse battery staple 42' }),
    });
    expect(res.status).toBe(200);
    const { access_token } = (await res.json()) as { access_token: string };
    const proxied = await fetch(`${gw.url}/hello`, { headers: { authorization: `Bearer ${access_token}` } });
    expect(proxied.status).toBe(200);
    expect(((await proxied.json()) as { identity: { user: string } }).identity.user).toBe('admin');
  }

  it('with PostgreSQL and Redis: serves, signs in, proxies, drains on SIGTERM, and writes nothing at all', async (ctx) => {
    skipUnlessAble(ctx);
    if (!(await postgresReachable(pgUrl))) {
      if (CI) throw new Error(`PostgreSQL at ${pgUrl} is unreachable, and CI=true requires it`);
      return ctx.skip(`PostgreSQL at ${pgUrl} is unreachable`);
    }
    redis = new PrivateRedis(await freePort());
    await redis.start();
    const sep = pgUrl.includes('?') ? '&' : '?';
    const gw = await startReadOnly({
      DATABASE_URL: `${pgUrl}${sep}schema=${schema}`,
      REDIS_URL: redis.url,
      PORTCULLIS_SIGNING_KEYS_FILE: join(work, 'signing-keys.json'),
    });
    await exercise(gw);
    const { code, dataDir } = await gw.stop();
    expect(code, gw.output()).toBe(0);
    expect(gw.output()).not.toMatch(/EROFS|read-only file system/i);
    expect(dataDir).toEqual([]);
  }, 90_000);

  it('in embedded mode: the same, writing only into the data_dir volume', async (ctx) => {
    skipUnlessAble(ctx);
    const gw = await startReadOnly({ PORTCULLIS_SIGNING_KEYS: keysJson });
    await exercise(gw);
    const { code, dataDir } = await gw.stop();
    expect(code, gw.output()).toBe(0);
    expect(gw.output()).not.toMatch(/EROFS|read-only file system/i);
    expect(dataDir).toContain('portcullis.db');
    for (const f of dataDir ?? []) expect(f).toMatch(/^(portcullis\.db(-wal|-shm)?|admin\.token)$/);
  }, 90_000);

  it('the namespace is read-only outside data_dir: root cannot write to /, /tmp or the app, uid 1000 can write data_dir', (ctx) => {
    skipUnlessAble(ctx);
    // The script itself exits 97 when any of its probes (as root) could write.
    const r = run('unshare', ['--mount', '--propagation', 'private', '--', join(work, 'ro-run.sh'), 'sh', '-c', 'touch /var/lib/portcullis/ok'], {
      cwd: join(work, 'app'),
    });
    expect(r.code, r.err).toBe(0);
    expect(r.err).toContain('data_dir after exit: [ok ]');
    expect(readdirSync(join(work, 'app'))).not.toContain('.portcullis-ro-probe');
  });
});

/**
 * Runs "$@" as uid 1000 with every mount read-only (per-mount flags, in this private mount
 * namespace only) and a tmpfs at /var/lib holding the data_dir /var/lib/portcullis. Forwards
 * SIGTERM, then prints what data_dir holds.
 */
const RO_RUN_SH = `#!/bin/sh
set -e
awk '{print $5}' /proc/self/mountinfo | while read -r m; do
  case "$m" in /proc|/proc/*|/sys|/sys/*|/dev|/dev/*) continue ;; esac
  mount -o remount,bind,ro "$m"
done
mount -t tmpfs -o mode=0755,size=64m portcullis-data /var/lib
install -d -o 1000 -g 1000 -m 0700 /var/lib/portcullis
for p in / /tmp /var/tmp /root "$PWD"; do
  if ( : > "$p/.portcullis-ro-probe" ) 2>/dev/null; then rm -f "$p/.portcullis-ro-probe"; echo "still writable: $p" >&2; exit 97; fi
done
setpriv --reuid=1000 --regid=1000 --clear-groups -- "$@" &
child=$!
trap 'kill -TERM $child' TERM INT
set +e
wait $child
rc=$?
if kill -0 $child 2>/dev/null; then wait $child; rc=$?; fi
echo "data_dir after exit: [$(ls -A /var/lib/portcullis | tr '\\n' ' ')]" >&2
exit $rc
`;
