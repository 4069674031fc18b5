import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { request } from 'node:https';
import { addUser, GOOD_PASSWORD, startHarness, type Harness } from './support/helpers.js';
import { selfSigned } from './support/services.js';

function httpsJson(
  url: string,
  ca: string,
  opts: { method?: string; body?: unknown; headers?: Record<string, string> } = {},
): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: any }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: opts.method ?? 'GET', ca, headers: { 'content-type': 'application/json', ...opts.headers } }, (res) => {
      let text = '';
      res.on('data', (c) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: text ? JSON.parse(text) : undefined }));
    });
    req.on('error', reject);
    req.end(opts.body === undefined ? undefined : JSON.stringify(opts.body));
  });
}

describe('TLS termination', () => {
  let h: Harness;
  let ca: string;
  beforeAll(async () => {
    const tls = selfSigned();
    ca = readFileSync(tls.cert, 'utf8');
    h = await startHarness({ extraYaml: `tls: { cert: ${tls.cert}, key: ${tls.key} }` });
    await addUser(h, 'tina', ['admin']);
  });
  afterAll(() => h.close());

  it('serves HTTPS with HSTS, and the upstream sees X-Forwarded-Proto https', async () => {
    expect(h.url.startsWith('https://')).toBe(true);
    const login = await httpsJson(`${h.url}/api/auth/login`, ca, { method: 'POST', body: { username: 'tina', password: GOOD_PASSWORD } });
    expect(login.status).toBe(200);
    expect(login.headers['strict-transport-security']).toBe('max-age=31536000; includeSubDomains');
    const echo = await httpsJson(`${h.url}/admin/x`, ca, { headers: { authorization: `Bearer ${login.body.access_token}` } });
    expect(echo.status).toBe(200);
    expect(echo.body.headers['x-forwarded-proto']).toBe('https');
    expect(echo.body.headers['x-auth-user']).toBe('tina');
  });

  it('refuses a client that does not trust the certificate', async () => {
    await expect(httpsJson(`${h.url}/api/auth/me`, '')).rejects.toThrow(/self-signed|certificate/i);
  });
});

describe('admin listener', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startHarness();
  });
  afterAll(() => h.close());

  it('answers /healthz and /readyz', async () => {
    const health = await fetch(`${h.adminUrl}/healthz`);
    expect(health.status).toBe(200);
    expect(await health.json()).toEqual({ status: 'ok' });
    const ready = await fetch(`${h.adminUrl}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toEqual({ status: 'ready', checks: { config: { ok: true }, database: { ok: true }, state_store: { ok: true } } });
  });

  it('exposes every SPEC metric with its type, plus process metrics', async () => {
    await fetch(`${h.url}/nowhere`);
    const text = await (await fetch(`${h.adminUrl}/metrics`)).text();
    const types: Record<string, string> = {
      portcullis_http_requests_total: 'counter',
      portcullis_http_request_duration_seconds: 'histogram',
      portcullis_upstream_request_duration_seconds: 'histogram',
      portcullis_upstream_errors_total: 'counter',
      portcullis_auth_decisions_total: 'counter',
      portcullis_login_attempts_total: 'counter',
      portcullis_lockouts_total: 'counter',
      portcullis_mfa_attempts_total: 'counter',
      portcullis_token_refresh_total: 'counter',
      portcullis_rate_limited_total: 'counter',
      portcullis_config_reloads_total: 'counter',
      portcullis_dependency_up: 'gauge',
    };
    for (const [name, type] of Object.entries(types)) expect(text).toContain(`# TYPE ${name} ${type}`);
    // Process metrics under their standard names (SPEC §9), as the common dashboards expect.
    expect(text).toContain('# TYPE process_cpu_seconds_total counter');
    expect(text).toContain('# TYPE nodejs_heap_size_used_bytes gauge');
    expect(text).not.toMatch(/^portcullis_(process|nodejs)_/m);
    expect(text).toContain('portcullis_dependency_up{dependency="database"} 1');
    expect(text).toContain('portcullis_http_requests_total{route="_none",method="GET",status="404"} 1');
  });

  it('is not reachable through the gateway listener', async () => {
    const r = await fetch(`${h.url}/metrics`);
    expect(r.status).toBe(404);
  });
});
