/**
 * End-to-end: what an SRE sees (SPEC §9, docs/observability.md). `/metrics` carries the build
 * info, the reload gauges, every counter whose labels are known up front at 0, and the process
 * metrics under their standard names, and passes `promtool check metrics`. Every request leaves
 * one access line whose `request_id` is the `X-Request-Id` the client got and the upstream saw,
 * and which every other line about that request carries. `/readyz` names what is wrong in words.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EchoReply } from '../src/demo/echo.js';
import { connectWebSocket, WsHandshakeError } from '../src/demo/ws.js';
import { GOOD_PASSWORD, ROUTES, addUser, login, metricsText, rawRequest, sample, startHarness, type Harness, type RawResponse } from './support/helpers.js';
import { closedPort } from './support/proxy.js';

type Line = Record<string, unknown>;

const PACKAGE_VERSION = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/**
 * The harness's routes plus a rate-limited one, an upstream nothing listens on, and the echo's
 * helpers; sign-ins are not limited to 5 a minute (this file signs in more often than that).
 */
const routes = (deadPort: number) => ({
  extraYaml: 'auth: { login_rate_limit: { requests: 100, per: 1m } }',
  upstreamExtra: `  dead:\n    url: http://127.0.0.1:${deadPort}\n    timeout: 5s\n`,
  routes: `${ROUTES}  - name: limited
    match: { path: /limited/** }
    upstream: echo
    access: public
    rate_limit: { requests: 1000, per: 1m }
  - name: dead
    match: { path: /dead/** }
    upstream: dead
    access: public
  - name: echo-helpers
    match: { path: /__echo/** }
    upstream: echo
    access: public
`,
});
const ROUTE_NAMES = ['admin', 'secure', 'closed', 'public', 'semis', 'reports', 'app', 'limited', 'dead', 'echo-helpers'];

/** One sample of Prometheus text: name, labels, value. */
interface Series {
  name: string;
  labels: Record<string, string>;
  value: number;
}

function parseSeries(text: string): Series[] {
  const out: Series[] = [];
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) continue;
    const labels = Object.fromEntries([...(m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)].map((x) => [x[1], x[2]]));
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}

/** The value of the one series with exactly these labels, or undefined when it is not exported. */
function seriesValue(series: Series[], name: string, labels: Record<string, string> = {}): number | undefined {
  const want = Object.entries(labels);
  const hit = series.filter((s) => s.name === name && Object.keys(s.labels).length === want.length && want.every(([k, v]) => s.labels[k] === v));
  expect(hit.length, `${name}${JSON.stringify(labels)} exported once`).toBeLessThanOrEqual(1);
  return hit[0]?.value;
}

async function until<T>(probe: () => T | Promise<T>, ok: (v: T) => boolean, ms = 3_000): Promise<T> {
  const end = Date.now() + ms;
  let v = await probe();
  while (!ok(v) && Date.now() < end) {
    await new Promise((r) => setTimeout(r, 10));
    v = await probe();
  }
  return v;
}

/** The access line (`event: "request"`) of the request with this id, waiting for it: it is written when the response closes. */
async function accessLine(g: Harness, id: string | undefined): Promise<Line> {
  expect(id, 'the answer carries an X-Request-Id').toBeTruthy();
  const lines = await until(
    () => g.logs.filter((l) => l.event === 'request' && l.request_id === id),
    (x) => x.length > 0,
  );
  expect(lines, `access line of ${id}`).toHaveLength(1);
  return lines[0];
}

/** Every line that carries this request id. */
const linesOf = (g: Harness, id: string) => g.logs.filter((l) => l.request_id === id);

/** One request written as given (Host of the harness, `Connection: close`). */
function send(g: Harness, method: string, target: string, headers: Record<string, string> = {}, body = ''): Promise<RawResponse> {
  const all: Record<string, string> = { Host: new URL(g.url).host, Connection: 'close', ...headers };
  if (body) all['Content-Length'] = String(Buffer.byteLength(body));
  const head = Object.entries(all)
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join('');
  return rawRequest(g.url, `${method} ${target} HTTP/1.1\r\n${head}\r\n${body}`);
}

let h: Harness;
let deadPort: number;

beforeAll(async () => {
  deadPort = await closedPort();
  h = await startHarness(routes(deadPort));
  await addUser(h, 'olive', ['staff']);
  await addUser(h, 'root', ['admin']);
});
afterAll(async () => {
  await h?.close();
});

describe('/metrics', () => {
  // First in the file: nothing has been asked of this gateway yet.
  it('before any traffic: build info, the reload gauges, and every counter with known labels at 0', async () => {
    const s = parseSeries(await metricsText(h));
    expect(seriesValue(s, 'portcullis_build_info', { version: PACKAGE_VERSION, node: process.version })).toBe(1);
    expect(seriesValue(s, 'portcullis_config_last_reload_successful')).toBe(1);
    const loadedAt = seriesValue(s, 'portcullis_config_last_reload_success_timestamp_seconds');
    expect(loadedAt).toBeGreaterThan(Date.now() / 1000 - 120);
    expect(loadedAt).toBeLessThanOrEqual(Date.now() / 1000);
    // The label values of SPEC §9, each exported at 0 before the first event of its kind.
    const zero: [string, Record<string, string>][] = [
      ...['success', 'invalid_credentials', 'locked', 'rate_limited', 'mfa_required', 'invalid_input'].map(
        (result) => ['portcullis_login_attempts_total', { result }] as [string, Record<string, string>],
      ),
      ...['success', 'invalid', 'replay', 'recovery_code'].map((result) => ['portcullis_mfa_attempts_total', { result }] as [string, Record<string, string>]),
      ...['success', 'invalid', 'reuse_detected'].map((result) => ['portcullis_token_refresh_total', { result }] as [string, Record<string, string>]),
      ...['success', 'failure'].map((result) => ['portcullis_config_reloads_total', { result }] as [string, Record<string, string>]),
      ['portcullis_lockouts_total', {}],
      // The sign-in and auth API limiters, and the one route with a rate_limit.
      ...['login', 'auth_api', 'route:limited'].map((limiter) => ['portcullis_rate_limited_total', { limiter }] as [string, Record<string, string>]),
      ...['echo', 'dead'].flatMap((upstream) =>
        ['refused', 'reset', 'timeout'].map((reason) => ['portcullis_upstream_errors_total', { upstream, reason }] as [string, Record<string, string>]),
      ),
      ...ROUTE_NAMES.flatMap((route) =>
        ['allow', 'unauthenticated', 'forbidden', 'mfa_required', 'csrf', 'deny'].map(
          (decision) => ['portcullis_auth_decisions_total', { route, decision }] as [string, Record<string, string>],
        ),
      ),
    ];
    for (const [name, labels] of zero) expect(seriesValue(s, name, labels), `${name}${JSON.stringify(labels)}`).toBe(0);
    // Nothing else: a limiter or upstream that does not exist is not invented.
    expect(s.filter((x) => x.name === 'portcullis_rate_limited_total').map((x) => x.labels.limiter)).toHaveLength(3);
  });

  it('the default process metrics keep their standard names (process_*, nodejs_*), without our prefix', async () => {
    const text = await metricsText(h);
    const s = parseSeries(text);
    for (const name of ['process_cpu_seconds_total', 'process_resident_memory_bytes', 'process_start_time_seconds', 'process_open_fds']) {
      expect(seriesValue(s, name), name).toBeGreaterThan(0);
    }
    expect(text).toContain('# TYPE nodejs_heap_size_used_bytes gauge');
    expect(text).toContain('# TYPE nodejs_eventloop_lag_seconds gauge');
    expect(s.some((x) => x.name === 'nodejs_version_info' && x.labels.version === process.version)).toBe(true);
    expect(text).not.toMatch(/^(# (HELP|TYPE) )?portcullis_(process|nodejs)_/m);
  });

  it('after traffic (a sign-in, a denial, a refused upstream…) /metrics passes `promtool check metrics`', async (ctx) => {
    const token = await login(h, 'olive');
    expect(
      (
        await fetch(`${h.url}/api/auth/login`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: '{"username":"olive","password":"wrong password here"}',
        })
      ).status,
    ).toBe(401);
    expect((await fetch(`${h.url}/app/x`, { headers: { authorization: `Bearer ${token}` } })).status).toBe(200);
    expect((await fetch(`${h.url}/admin/x`, { headers: { authorization: `Bearer ${token}` } })).status).toBe(403);
    expect((await fetch(`${h.url}/internal/x`)).status).toBe(403);
    expect((await fetch(`${h.url}/nowhere`)).status).toBe(404);
    expect((await fetch(`${h.url}/dead/x`)).status).toBe(502);
    expect((await send(h, 'GET', '/public/%2e%2e%2fx')).status).toBe(400);
    const text = await metricsText(h);
    const s = parseSeries(text);
    expect(seriesValue(s, 'portcullis_login_attempts_total', { result: 'success' })).toBe(1);
    expect(seriesValue(s, 'portcullis_login_attempts_total', { result: 'invalid_credentials' })).toBe(1);
    expect(seriesValue(s, 'portcullis_auth_decisions_total', { route: 'closed', decision: 'deny' })).toBe(1);
    expect(seriesValue(s, 'portcullis_upstream_errors_total', { upstream: 'dead', reason: 'refused' })).toBe(1);

    const check = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
    if (check.error) {
      // CI installs Debian's `prometheus` package: there a missing promtool is a failure, not a skip.
      if (process.env.CI === 'true') throw new Error(`promtool is not installed (apt-get install prometheus): ${check.error.message}`);
      ctx.skip();
      return;
    }
    // SPEC §9 excepts exactly prom-client's own gauges named like counters; nothing else may be reported.
    const excepted = /^nodejs_active_(handles|requests|resources)_total non-counter metrics should not have "_total" suffix$/;
    const findings = `${check.stdout}${check.stderr}`.split('\n').filter((l) => l.trim() !== '');
    const remaining = findings.filter((l) => !excepted.test(l.trim()));
    expect(remaining, findings.join('\n')).toEqual([]);
    // 0: clean; 3: lint findings only (all of them excepted above). 1 would be a text it cannot parse.
    expect([0, 3], `promtool exit ${check.status}`).toContain(check.status);
  });
});

describe('access log: one line per request, tied to everything else by X-Request-Id', () => {
  it('a proxied request: the client and the upstream get the same id as the access line, which has every field', async () => {
    const token = await login(h, 'olive');
    const r = await send(h, 'GET', '/public/../app/x?token=query-secret', { Authorization: `Bearer ${token}` });
    expect(r.status).toBe(200);
    const id = r.headers['x-request-id'];
    expect(id).toMatch(UUID);
    const echo = JSON.parse(r.body) as EchoReply;
    expect(echo.headers['x-request-id']).toBe(id);
    const line = await accessLine(h, id);
    expect(line).toMatchObject({
      level: 'info',
      event: 'request',
      request_id: id,
      method: 'GET',
      path: '/app/x',
      route: 'app',
      status: 200,
      upstream: 'echo',
      user: 'olive',
      ip: '127.0.0.1',
    });
    expect(typeof line.duration_ms).toBe('number');
    expect(line.duration_ms as number).toBeGreaterThanOrEqual(0);
    expect(line.duration_ms as number).toBeLessThan(5_000);
    expect(line.aborted).toBeUndefined();
    const about = JSON.stringify(linesOf(h, id));
    expect(about).not.toContain('query-secret');
    expect(about).not.toContain(token);
  });

  it("the gateway's own endpoints: a sign-in leaves an access line (no route, no upstream) and no secret anywhere", async () => {
    const before = h.logs.length;
    const r = await fetch(`${h.url}/api/auth/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ username: 'olive', password: GOOD_PASSWORD }),
    });
    expect(r.status).toBe(200);
    const { access_token, refresh_token } = (await r.json()) as { access_token: string; refresh_token: string };
    const id = r.headers.get('x-request-id') ?? undefined;
    expect(id).toMatch(UUID);
    expect(await accessLine(h, id)).toMatchObject({ method: 'POST', path: '/api/auth/login', route: null, upstream: null, status: 200, ip: '127.0.0.1' });
    const written = JSON.stringify(h.logs.slice(before));
    for (const secret of [GOOD_PASSWORD, access_token, refresh_token]) expect(written).not.toContain(secret);
    // The JWKS is served by the gateway too.
    const jwks = await fetch(`${h.url}/.well-known/jwks.json`);
    expect(await accessLine(h, jwks.headers.get('x-request-id') ?? undefined)).toMatchObject({ path: '/.well-known/jwks.json', status: 200, route: null });
  });

  it('refused requests: each answer carries its id, and the responder line and the access line share it', async () => {
    const token = await login(h, 'olive');
    const cases: { target: string; headers?: Record<string, string>; status: number; code: string; line: Line }[] = [
      { target: '/nowhere/x?q=1', status: 404, code: 'no_route', line: { path: '/nowhere/x', route: null, upstream: null, user: null } },
      { target: '/app/x', status: 401, code: 'unauthenticated', line: { path: '/app/x', route: 'app', upstream: null, user: null } },
      {
        target: '/admin/x',
        headers: { Authorization: `Bearer ${token}` },
        status: 403,
        code: 'forbidden',
        line: { path: '/admin/x', route: 'admin', upstream: null, user: 'olive' },
      },
      // A path that cannot be normalized is logged as sent, without its query.
      { target: '/public/%2e%2e%2fx?q=secret', status: 400, code: 'bad_path', line: { path: '/public/%2e%2e%2fx', route: null, upstream: null } },
      { target: '/dead/x', status: 502, code: 'upstream_unavailable', line: { path: '/dead/x', route: 'dead', upstream: 'dead' } },
    ];
    for (const c of cases) {
      const r = await send(h, 'GET', c.target, c.headers);
      expect(r.status, c.target).toBe(c.status);
      const id = r.headers['x-request-id'];
      expect(id, c.target).toMatch(UUID);
      expect(await accessLine(h, id)).toMatchObject({ ...c.line, status: c.status, method: 'GET' });
      const responder = linesOf(h, id).filter((l) => l.event !== 'request');
      expect(responder, c.target).toHaveLength(1);
      expect(responder[0]).toMatchObject({ error_code: c.code, status: c.status, path: c.line.path });
      expect(JSON.stringify(linesOf(h, id))).not.toContain('q=');
    }
  });

  it('a denial is logged with its normalized path (never the query), and its id', async () => {
    const r = await send(h, 'GET', '/public/../internal//reports?token=deny-secret');
    expect(r.status).toBe(403);
    const id = r.headers['x-request-id'];
    await accessLine(h, id);
    const denied = linesOf(h, id).filter((l) => l.event === 'access_denied');
    expect(denied).toHaveLength(1);
    expect(denied[0]).toMatchObject({ granted: false, route: 'closed', decision: 'deny', path: '/internal/reports', method: 'GET', ip: '127.0.0.1' });
    expect(JSON.stringify(h.logs)).not.toContain('deny-secret');
  });

  it("a client's X-Request-Id is not believed from a peer outside trust_proxy: the upstream and the logs get ours", async () => {
    const r = await send(h, 'GET', '/public/spoof', { 'X-Request-Id': 'spoofed-id-1', X_Request_Id: 'spoofed-id-2' });
    expect(r.status).toBe(200);
    const id = r.headers['x-request-id'];
    expect(id).toMatch(UUID);
    const echo = JSON.parse(r.body) as EchoReply;
    const sent = echo.raw_headers.filter(([k]) => k.toLowerCase().replace(/_/g, '-') === 'x-request-id');
    expect(sent).toEqual([['X-Request-Id', id]]);
    await accessLine(h, id);
    expect(JSON.stringify(h.logs)).not.toMatch(/spoofed-id/);
  });

  it('raw-socket answers carry an id and leave an access line: CONNECT, and a request Node cannot parse', async () => {
    const connectAnswer = await rawRequest(h.url, 'CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n');
    expect(connectAnswer.status).toBe(405);
    expect(await accessLine(h, connectAnswer.headers['x-request-id'])).toMatchObject({
      method: 'CONNECT',
      status: 405,
      route: null,
      upstream: null,
      ip: '127.0.0.1',
    });
    const garbage = await rawRequest(h.url, 'NOT A REQUEST\r\n\r\n');
    expect(garbage.status).toBe(400);
    const id = garbage.headers['x-request-id'];
    expect(await accessLine(h, id)).toMatchObject({ method: null, path: null, status: 400, ip: '127.0.0.1' });
    expect(linesOf(h, id).filter((l) => l.error_code === 'bad_request')).toHaveLength(1);
  });

  it("a WebSocket tunnel's line is written when it closes: status 101, its upstream, and how long it lived", async () => {
    const token = await login(h, 'olive');
    const ws = await connectWebSocket(`${h.url.replace('http', 'ws')}/app/ws-log`, { Authorization: `Bearer ${token}` });
    const id = ws.response.headers['x-request-id'] as string;
    expect(id).toMatch(UUID);
    ws.send('hello');
    await ws.next();
    expect(h.logs.some((l) => l.event === 'request' && l.request_id === id)).toBe(false);
    await new Promise((r) => setTimeout(r, 50));
    ws.close();
    const line = await accessLine(h, id);
    expect(line).toMatchObject({ websocket: true, method: 'GET', path: '/app/ws-log', route: 'app', status: 101, upstream: 'echo', user: 'olive' });
    expect(line.duration_ms as number).toBeGreaterThanOrEqual(50);
    // A refused upgrade: the answer carries the id and the line its status.
    const refused = await connectWebSocket(`${h.url.replace('http', 'ws')}/app/ws-log`).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(refused).toBeInstanceOf(WsHandshakeError);
    const e = refused as WsHandshakeError;
    expect(e.status).toBe(401);
    expect(await accessLine(h, e.headers['x-request-id'] as string)).toMatchObject({ websocket: true, status: 401, route: 'app', upstream: null });
  });

  it('a client that leaves before the answer: the line says no status was sent (aborted); the metric counts a 499, not a 200', async () => {
    const labels = { route: 'echo-helpers', method: 'GET' };
    const text0 = await metricsText(h);
    const [ok0, gone0] = [
      sample(text0, 'portcullis_http_requests_total', { ...labels, status: '200' }),
      sample(text0, 'portcullis_http_requests_total', { ...labels, status: '499' }),
    ];
    const sock = connect(Number(new URL(h.url).port), '127.0.0.1');
    await new Promise((r) => sock.once('connect', r));
    const before = h.logs.length;
    sock.write(`GET /__echo/slow?ms=2000 HTTP/1.1\r\nHost: ${new URL(h.url).host}\r\n\r\n`);
    await new Promise((r) => setTimeout(r, 200));
    sock.destroy();
    const lines = await until(
      () => h.logs.slice(before).filter((l) => l.event === 'request' && l.path === '/__echo/slow'),
      (x) => x.length > 0,
    );
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ status: null, aborted: true, route: 'echo-helpers', upstream: 'echo' });
    const text1 = await metricsText(h);
    expect(sample(text1, 'portcullis_http_requests_total', { ...labels, status: '499' })).toBe(gone0 + 1);
    expect(sample(text1, 'portcullis_http_requests_total', { ...labels, status: '200' })).toBe(ok0);
  });
});

describe('X-Request-Id from a trust_proxy peer', () => {
  let t: Harness;
  beforeAll(async () => {
    t = await startHarness({ extraYaml: 'trust_proxy: [127.0.0.1]' });
  });
  afterAll(async () => {
    await t?.close();
  });

  it('a valid id is kept end to end: the answer, the upstream and the access line', async () => {
    const given = 'edge-7f3a.9c:Zq+/=_1';
    const r = await send(t, 'GET', '/public/traced', { 'X-Request-Id': given });
    expect(r.headers['x-request-id']).toBe(given);
    expect((JSON.parse(r.body) as EchoReply).headers['x-request-id']).toBe(given);
    expect(await accessLine(t, given)).toMatchObject({ path: '/public/traced', status: 200 });
  });

  it('an id that is too long, has unsafe characters or comes twice is replaced by a new one', async () => {
    for (const headers of [{ 'X-Request-Id': 'a'.repeat(129) }, { 'X-Request-Id': 'has space' }, { 'X-Request-Id': 'x"y' }, { 'X-Request-Id': '' }]) {
      const r = await send(t, 'GET', '/public/traced', headers);
      expect(r.headers['x-request-id'], JSON.stringify(headers)).toMatch(UUID);
      expect((JSON.parse(r.body) as EchoReply).headers['x-request-id']).toBe(r.headers['x-request-id']);
    }
    const twice = await rawRequest(
      t.url,
      `GET /public/traced HTTP/1.1\r\nHost: ${new URL(t.url).host}\r\nX-Request-Id: one\r\nX-Request-Id: two\r\nConnection: close\r\n\r\n`,
    );
    expect(twice.headers['x-request-id']).toMatch(UUID);
    expect((JSON.parse(twice.body) as EchoReply).raw_headers.filter(([k]) => k.toLowerCase() === 'x-request-id')).toHaveLength(1);
    // 128 characters is the limit, not past it.
    const longest = 'b'.repeat(128);
    expect((await send(t, 'GET', '/public/traced', { 'X-Request-Id': longest })).headers['x-request-id']).toBe(longest);
  });
});

describe('/readyz', () => {
  it('200 with every check named and ok', async () => {
    const r = await fetch(`${h.adminUrl}/readyz`);
    expect(r.status).toBe(200);
    expect(await r.json()).toEqual({ status: 'ready', checks: { config: { ok: true }, database: { ok: true }, state_store: { ok: true } } });
  });

  it('503 naming the failing dependency in words; the log says the same once, and again when it recovers', async () => {
    const port = await closedPort();
    const db = h.app.db;
    const ping = db.ping;
    // A real refused connection, as a database server that is down gives.
    db.ping = () =>
      new Promise<void>((_, reject) => {
        const s = connect(port, '127.0.0.1');
        s.once('error', reject);
        s.once('connect', () => s.destroy());
      });
    const before = h.logs.length;
    try {
      for (let i = 0; i < 2; i++) {
        const r = await fetch(`${h.adminUrl}/readyz`);
        expect(r.status).toBe(503);
        const body = (await r.json()) as { status: string; checks: Record<string, { ok: boolean; reason?: string; error?: string }> };
        expect(body.status).toBe('not_ready');
        expect(body.checks.state_store).toEqual({ ok: true });
        expect(body.checks.database).toMatchObject({ ok: false, reason: 'refused' });
        expect(body.checks.database.error).toMatch(new RegExp(`unreachable at 127\\.0\\.0\\.1:${port}: connection refused$`));
        expect(body.checks.database.error).not.toMatch(/ECONNREFUSED|\n\s+at /);
        const failures = h.logs.slice(before).filter((l) => l.event === 'dependency_failure');
        expect(failures, 'logged once per outage, not per probe').toHaveLength(1);
        expect(failures[0]).toMatchObject({
          level: 'warn',
          dependency: 'database',
          reason: 'refused',
          error: body.checks.database.error,
          msg: body.checks.database.error,
        });
      }
      expect(parseSeries(await metricsText(h)).find((x) => x.name === 'portcullis_dependency_up' && x.labels.dependency === 'database')?.value).toBe(0);
    } finally {
      db.ping = ping;
    }
    expect((await fetch(`${h.adminUrl}/readyz`)).status).toBe(200);
    expect(h.logs.slice(before).filter((l) => l.event === 'dependency_recovered')).toMatchObject([{ level: 'info', dependency: 'database' }]);
  });

  it('draining (a shutdown began): 503 {"status":"draining"} at once, while in-flight requests finish', async () => {
    const d = await startHarness(routes(deadPort));
    try {
      const slow = fetch(`${d.url}/__echo/slow?ms=1500`);
      // In flight once the upstream has it.
      await until(
        async () => ((await (await fetch(`${d.echoUrl}/__echo/stats`)).json()) as { inFlight: number }).inFlight,
        (n) => n >= 1,
      );
      const stopping = d.app.stop(5_000);
      const t0 = Date.now();
      const r = await fetch(`${d.adminUrl}/readyz`);
      expect(Date.now() - t0).toBeLessThan(500);
      expect(r.status).toBe(503);
      expect(await r.json()).toEqual({ status: 'draining' });
      expect((await slow).status).toBe(200);
      await stopping;
    } finally {
      await d.close();
    }
  });
});

describe('reload', () => {
  let g: Harness;
  let file: string;
  let original: string;
  beforeAll(async () => {
    g = await startHarness(routes(deadPort));
    file = join(g.dir, 'gateway.yaml');
    original = readFileSync(file, 'utf8');
  });
  afterAll(async () => {
    await g?.close();
  });

  it("a reload's new routes, upstreams and limiters are exported at 0 on the next scrape; the old series stay", async () => {
    writeFileSync(
      file,
      `${original.replace('upstreams:\n', `upstreams:\n  spare:\n    url: http://127.0.0.1:${deadPort}\n`)}  - name: added\n    match: { path: /added/** }\n    upstream: spare\n    access: authenticated\n    rate_limit: { requests: 5, per: 1m }\n`,
    );
    expect(g.app.reload(file)).toEqual({ ok: true });
    const s = parseSeries(await metricsText(g));
    for (const decision of ['allow', 'unauthenticated', 'forbidden', 'mfa_required', 'csrf', 'deny'])
      expect(seriesValue(s, 'portcullis_auth_decisions_total', { route: 'added', decision })).toBe(0);
    for (const reason of ['refused', 'reset', 'timeout']) expect(seriesValue(s, 'portcullis_upstream_errors_total', { upstream: 'spare', reason })).toBe(0);
    expect(seriesValue(s, 'portcullis_rate_limited_total', { limiter: 'route:added' })).toBe(0);
    expect(seriesValue(s, 'portcullis_auth_decisions_total', { route: 'closed', decision: 'deny' })).toBe(0);
    // A route the reload removed keeps its series (a vanishing counter reads as a reset).
    writeFileSync(file, original);
    expect(g.app.reload(file)).toEqual({ ok: true });
    expect(seriesValue(parseSeries(await metricsText(g)), 'portcullis_auth_decisions_total', { route: 'added', decision: 'allow' })).toBe(0);
  });

  // Needs the composition root to call metrics.configReloaded(ok) on each reload (docs/observability.md).
  it('the reload gauges and counter follow each reload, successful or not', async () => {
    const at = (s: Series[]) => seriesValue(s, 'portcullis_config_last_reload_success_timestamp_seconds') as number;
    const s0 = parseSeries(await metricsText(g));
    const ok0 = seriesValue(s0, 'portcullis_config_reloads_total', { result: 'success' }) as number;
    const failed0 = seriesValue(s0, 'portcullis_config_reloads_total', { result: 'failure' }) as number;
    await new Promise((r) => setTimeout(r, 20));
    writeFileSync(file, original);
    expect(g.app.reload(file)).toEqual({ ok: true });
    const s1 = parseSeries(await metricsText(g));
    expect(seriesValue(s1, 'portcullis_config_reloads_total', { result: 'success' })).toBe(ok0 + 1);
    expect(seriesValue(s1, 'portcullis_config_last_reload_successful')).toBe(1);
    expect(at(s1)).toBeGreaterThan(at(s0));
    writeFileSync(file, `${original}\nnot_a_key: 1\n`);
    expect(g.app.reload(file).ok).toBe(false);
    const s2 = parseSeries(await metricsText(g));
    expect(seriesValue(s2, 'portcullis_config_reloads_total', { result: 'failure' })).toBe(failed0 + 1);
    expect(seriesValue(s2, 'portcullis_config_last_reload_successful')).toBe(0);
    // The config in use is still the one loaded at the last success.
    expect(at(s2)).toBe(at(s1));
    writeFileSync(file, original);
    expect(g.app.reload(file)).toEqual({ ok: true });
    expect(seriesValue(parseSeries(await metricsText(g)), 'portcullis_config_last_reload_successful')).toBe(1);
  });
});
