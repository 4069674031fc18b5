import { describe, expect, it } from 'vitest';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, loadConfig, parseConfig } from './index.js';

function problems(text: string, env: Record<string, string> = {}) {
  try {
    parseConfig(text, 'gw.yaml', env);
  } catch (e) {
    if (e instanceof ConfigError) return e.problems;
    throw e;
  }
  throw new Error('expected the config to be rejected');
}

const minimal = `
upstreams:
  app: { url: http://127.0.0.1:9000 }
routes:
  - name: all
    match: { path: /** }
    upstream: app
    access: authenticated
`;

describe('config', () => {
  it('fills every default from the SPEC', () => {
    const c = parseConfig(minimal, 'gw.yaml', {});
    expect(c.listen).toEqual({ host: '127.0.0.1', port: 8080 });
    expect(c.admin.listen).toEqual({ host: '127.0.0.1', port: 9464 });
    expect(c.auth.prefix).toBe('/api/auth');
    expect(c.auth.access_ttl).toBe(15 * 60_000);
    expect(c.auth.refresh_ttl).toBe(7 * 86_400_000);
    expect(c.auth.lockout).toEqual({ max_failures: 5, window: 900_000, duration: 900_000 });
    expect(c.auth.login_rate_limit).toEqual({ requests: 5, per: 60_000 });
    expect(c.auth.password).toEqual({ min_length: 12, max_length: 128, min_zxcvbn_score: 3 });
    expect(c.identity_headers).toEqual({ user: 'X-Auth-User', user_id: 'X-Auth-User-Id', email: 'X-Auth-Email', roles: 'X-Auth-Roles' });
    expect(c.storage.database_url).toBe('sqlite:./data/portcullis.db');
    expect(c.upstreams.app.timeout).toBe(30_000);
    expect(c.routes[0].mfa).toBe(false);
    expect(c.publicUrl).toBe('http://127.0.0.1:8080');
    expect(c.issuer).toBe('http://127.0.0.1:8080');
  });

  it('refuses a timeout a Node timer cannot hold (over 2^31-1 ms it would fire after 1 ms), but not a long session lifetime', () => {
    const long = `${minimal.replace('app: { url: http://127.0.0.1:9000 }', 'app: { url: http://127.0.0.1:9000, timeout: 25d }')}shutdown_grace: 30d\nlimits: { request_timeout: 3000h }\n`;
    const found = problems(long).map((p) => `${p.path}: ${p.message}`);
    expect(found).toEqual(
      expect.arrayContaining([
        'upstreams.app.timeout: too long: a timeout can be at most 24d (2147483647 ms)',
        'shutdown_grace: too long: a timeout can be at most 24d (2147483647 ms)',
        'limits.request_timeout: too long: a timeout can be at most 24d (2147483647 ms)',
      ]),
    );
    expect(found).toHaveLength(3);
    expect(parseConfig(`${minimal}shutdown_grace: 24d\nauth: { session_max_age: 90d }\n`, 'gw.yaml', {}).auth.session_max_age).toBe(90 * 86_400_000);
  });

  it('is deep-frozen', () => {
    const c = parseConfig(minimal, 'gw.yaml', {});
    expect(Object.isFrozen(c)).toBe(true);
    expect(Object.isFrozen(c.routes[0].match)).toBe(true);
    expect(() => {
      (c.routes as unknown as unknown[]).push({});
    }).toThrow();
  });

  // biome-ignore lint/suspicious/noTemplateCurlyInString: the test name quotes the config syntax
  it('interpolates ${VAR} and ${VAR:-default}, typing whole plain expressions', () => {
    const c = parseConfig(
      `listen: \${LISTEN}\nstorage: { database_url: "\${DB:-sqlite::memory:}" }\nauth:\n  login_rate_limit:\n    requests: \${N:-7}\n    per: 1m\n${minimal}`,
      'gw.yaml',
      { LISTEN: '0.0.0.0:9999' },
    );
    expect(c.listen).toEqual({ host: '0.0.0.0', port: 9999 });
    expect(c.storage.database_url).toBe('sqlite::memory:');
    expect(c.auth.login_rate_limit.requests).toBe(7);
  });

  it('reports an unset variable with its line and key', () => {
    const p = problems(`name: x\nlisten: \${NOPE}\n${minimal}`);
    expect(p).toContainEqual(expect.objectContaining({ line: 2, path: 'listen', message: expect.stringContaining('NOPE') }));
  });

  it('rejects unknown keys at their own line, with the key path', () => {
    const p = problems(`${minimal}    mfa: true\n    colour: blue\nauth:\n  prefx: /x\n`);
    expect(p).toContainEqual({ file: 'gw.yaml', line: 10, path: 'routes[0].colour', message: 'unknown key' });
    expect(p).toContainEqual({ file: 'gw.yaml', line: 12, path: 'auth.prefx', message: 'unknown key' });
  });

  it('lists every problem, not just the first', () => {
    const p = problems(`
listen: nowhere
upstreams:
  app: { url: ftp://x, timeout: soon }
routes:
  - name: a
    match: { path: no-slash }
    upstream: missing
    access: maybe
  - name: a
    match: { path: /x }
    access: deny
`);
    const paths = p.map((x) => x.path);
    expect(paths).toEqual(expect.arrayContaining(['listen', 'upstreams.app.url', 'upstreams.app.timeout', 'routes[0].match.path', 'routes[0].access']));
    expect(p.find((x) => x.path === 'listen')?.line).toBe(2);
    expect(p.find((x) => x.path === 'upstreams.app.timeout')?.line).toBe(4);
    // The checks across keys run in the same pass, on what did parse.
    expect(p).toContainEqual({ file: 'gw.yaml', line: 8, path: 'routes[0].upstream', message: 'no upstream named "missing" (upstreams: app)' });
    expect(p).toContainEqual({ file: 'gw.yaml', line: 10, path: 'routes[1].name', message: 'duplicate route name "a" (also routes[0])' });
    // In file order.
    expect(p.map((x) => x.line)).toEqual([...p.map((x) => x.line)].sort((a, b) => (a ?? 0) - (b ?? 0)));
  });

  it('reports an unset variable once, at its indexed key path (not again as a bad value)', () => {
    const p = problems(
      `upstreams:\n  app: { url: "\${APP_URL}" }\nroutes:\n  - name: a\n    match: { path: /a }\n    upstream: app\n    access: public\n  - name: b\n    match: { path: /b }\n    upstream: "\${B}"\n    access: public\n`,
    );
    expect(p).toEqual([
      // biome-ignore lint/suspicious/noTemplateCurlyInString: the config syntax, quoted
      { file: 'gw.yaml', line: 2, path: 'upstreams.app.url', message: 'environment variable APP_URL is not set (use ${APP_URL:-default} for a default)' },
      // biome-ignore lint/suspicious/noTemplateCurlyInString: the config syntax, quoted
      { file: 'gw.yaml', line: 10, path: 'routes[1].upstream', message: 'environment variable B is not set (use ${B:-default} for a default)' },
    ]);
  });

  it('gives a per-upstream identity_headers no defaults of its own: the top-level names fill the rest', () => {
    const c = parseConfig(`identity_headers: { user: X-User }\nupstreams:\n  a: { url: "http://x", identity_headers: { email: X-Mail } }\n`, 'gw.yaml', {});
    expect(c.upstreams.a.identity_headers).toEqual({ email: 'X-Mail' });
    expect(c.identity_headers.user).toBe('X-User');
  });

  it('rejects duplicate route names', () => {
    const p = problems(
      `upstreams: { a: { url: http://x } }\nroutes:\n  - { name: r, match: { path: /x }, upstream: a, access: public }\n  - { name: r, match: { path: /y }, upstream: a, access: public }\n`,
    );
    expect(p).toEqual([{ file: 'gw.yaml', line: 4, path: 'routes[1].name', message: 'duplicate route name "r" (also routes[0])' }]);
  });

  it('catches a route pointing at an unknown upstream', () => {
    const p = problems(`upstreams: {}\nroutes:\n  - name: a\n    match: { path: /x }\n    upstream: ghost\n    access: public\n`);
    expect(p).toEqual([{ file: 'gw.yaml', line: 5, path: 'routes[0].upstream', message: 'no upstream named "ghost" (no upstreams are configured)' }]);
  });

  it('reports YAML syntax errors with a line', () => {
    const p = problems(`name: x\nroutes: [\n  - a: b\n`);
    expect(p[0].line).toBeGreaterThanOrEqual(2);
    expect(p[0].message).toMatch(/^YAML:/);
  });

  it('rejects argon2 parameters below the floor', () => {
    const p = problems(`auth: { argon2: { memory_kib: 4096 } }\n${minimal}`);
    expect(p[0].path).toBe('auth.argon2.memory_kib');
  });

  it('loads the shipped example config', () => {
    const c = loadConfig(new URL('../../config/gateway.yaml', import.meta.url).pathname, {});
    expect(c.routes.map((r) => r.name)).toEqual(['demo-admin', 'demo-internal', 'demo-public', 'demo']);
    expect(c.demo_upstream?.listen).toEqual({ host: '127.0.0.1', port: 9000 });
  });

  it('says clearly when the file is missing', () => {
    const dir = mkdtempSync(join(tmpdir(), 'pc-cfg-'));
    expect(() => loadConfig(join(dir, 'nope.yaml'))).toThrow(/cannot read config: file not found/);
    writeFileSync(join(dir, 'ok.yaml'), minimal);
    expect(loadConfig(join(dir, 'ok.yaml'), {}).source).toBe(join(dir, 'ok.yaml'));
  });
});
