import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateSigningJwk } from '../src/tokens/index.js';
import { checkConfigFile } from '../src/preflight.js';
import { ConfigError, formatProblem } from '../src/config/index.js';
import { runCli, runCliInProcess } from './support/helpers.js';
import { selfSigned } from './support/services.js';

/**
 * `config check` runs every check `serve` runs at start (SPEC §2), in one pass: each bad config
 * below is refused with the exact `file:line: key.path: message`, by `config check` (in this
 * process) and by the function `serve` calls before it opens anything; the real `serve` binary
 * refuses the many-problem file with the very same lines, and starts on a file the check accepts.
 */
const ROOT = fileURLToPath(new URL('..', import.meta.url));
let dir: string;
let tlsA: ReturnType<typeof selfSigned>;
let tlsB: ReturnType<typeof selfSigned>;
let keysFile: string;
let notKeys: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'portcullis-check-'));
  tlsA = selfSigned();
  tlsB = selfSigned();
  keysFile = join(dir, 'keys.json');
  writeFileSync(keysFile, JSON.stringify({ keys: [await generateSigningJwk()] }), { mode: 0o600 });
  notKeys = join(dir, 'not-keys.json');
  writeFileSync(notKeys, '{}');
});
afterAll(() => {
  for (const d of [dir, tlsA.dir, tlsB.dir]) rmSync(d, { recursive: true, force: true });
});

let n = 0;
/** Writes a config file: `lines` joined (line 1 is the first), under a fresh name. */
function file(lines: string[]): string {
  const f = join(dir, `case-${++n}.yaml`);
  writeFileSync(f, `${lines.join('\n')}\n`);
  return f;
}

const U = 'upstreams: { app: { url: "http://127.0.0.1:9" } }';

/** Each case: the file's lines (with `DIR`, `A_CRT`… placeholders) and the problems expected, as `line: key.path: message`. */
const CASES: { what: string; lines: () => string[]; expect: () => string[]; env?: NodeJS.ProcessEnv }[] = [
  {
    what: 'trust_proxy entries that are not addresses or ranges (the IP parser the gateway uses)',
    lines: () => ['trust_proxy: [10.0.0.0/33, 300.1.2.3, "::1/129", 10.1.2.3]'],
    expect: () => [
      '1: trust_proxy[0]: bad prefix length in "10.0.0.0/33" (0..32)',
      '1: trust_proxy[1]: not an IP address or CIDR range: "300.1.2.3"',
      '1: trust_proxy[2]: bad prefix length in "::1/129" (0..128)',
    ],
  },
  {
    what: 'a listen address written as an IP that is not one',
    lines: () => ['listen: 300.1.2.3:8080', 'admin: { listen: "[::g]:9464" }'],
    expect: () => [
      '1: listen: "300.1.2.3" is not an IP address (use a host name, an IPv4 address or [IPv6]:port)',
      '2: admin.listen: not a listen address: "[::g]:9464" (use host:port, e.g. 127.0.0.1:8080)',
    ],
  },
  {
    what: 'a mysql:// Redis URL (refused by the schema)',
    lines: () => ['storage:', '  redis_url: "mysql://db:3306"'],
    expect: () => ['2: storage.redis_url: unsupported scheme "mysql://": use redis://, rediss:// (TLS), redis+sentinel:// or rediss+sentinel:// (Sentinel)'],
  },
  {
    what: 'database URLs: another scheme (no password echoed), no SQLite file, a bad PostgreSQL schema',
    lines: () => ['storage: { database_url: "mysql://u:s3cret@h/db" }'],
    expect: () => ['1: storage.database_url: not a database URL: use sqlite:./file.db, sqlite::memory: or postgres://user@host:5432/db (postgresql:// too)'],
  },
  {
    what: 'an SQLite URL without a file name (the database layer’s own parser)',
    lines: () => ['storage: { database_url: "sqlite:" }'],
    expect: () => [
      '1: storage.database_url: Invalid database URL "sqlite:": no SQLite file name. Accepted forms: sqlite:./relative/file.db, sqlite:/absolute/file.db, sqlite::memory:, postgres://user:pass@host:5432/db[?schema=name] or postgresql://…',
    ],
  },
  {
    what: 'a PostgreSQL schema name that needs quoting',
    lines: () => ['storage:', '  database_url: "postgresql://h/db?schema=Bad-Name"'],
    expect: () => [
      '2: storage.database_url: Invalid PostgreSQL schema name "Bad-Name": use lower-case letters, digits and _ (starting with a letter or _), at most 63 characters',
    ],
  },
  {
    what: 'URL schemes: upstream, public_url, allowed_origins',
    lines: () => [
      'public_url: ftp://gw.example.com',
      'auth: { allowed_origins: ["javascript:alert(1)"] }',
      'upstreams:',
      '  app: { url: "file:///etc/passwd" }',
    ],
    expect: () => [
      '1: public_url: an http:// or https:// URL',
      '2: auth.allowed_origins[0]: an http(s) origin such as https://app.example.com',
      '4: upstreams.app.url: an http:// or https:// URL',
    ],
  },
  {
    what: 'TLS files that do not exist (serve used to exit 1 without a line)',
    lines: () => ['tls:', `  cert: ${dir}/missing.crt`, `  key: ${dir}/missing.key`],
    expect: () => [`2: tls.cert: cannot read ${dir}/missing.crt: file not found`, `3: tls.key: cannot read ${dir}/missing.key: file not found`],
  },
  {
    what: 'TLS files swapped (neither parses as what it should be)',
    lines: () => ['tls:', `  cert: ${tlsA.key}`, `  key: ${tlsA.cert}`],
    expect: () => [
      `2: tls.cert: ${tlsA.key} is not a PEM certificate (no PEM block of that kind)`,
      `3: tls.key: ${tlsA.cert} is not a PEM private key (no PEM block of that kind)`,
    ],
  },
  {
    what: 'a TLS key that is not the certificate’s',
    lines: () => ['tls:', `  cert: ${tlsA.cert}`, `  key: ${tlsB.key}`],
    expect: () => [`3: tls.key: ${tlsB.key} is not the key of the certificate in ${tlsA.cert}`],
  },
  {
    what: 'TLS ciphers OpenSSL does not know, and a directory for a certificate',
    lines: () => ['tls:', `  cert: ${dir}`, `  key: ${tlsA.key}`, '  ciphers: NOT-A-CIPHER'],
    expect: () => [`2: tls.cert: cannot read ${dir}: is a directory`, '4: tls.ciphers: not a usable OpenSSL cipher string (no cipher match)'],
  },
  {
    what: 'a signing key file that does not exist',
    lines: () => ['keys:', `  signing_keys_file: ${dir}/nokeys.json`],
    expect: () => [`2: keys.signing_keys_file: signing key file ${dir}/nokeys.json not found`],
  },
  {
    what: 'a signing key file that is not a key set',
    lines: () => [`keys: { signing_keys_file: ${notKeys} }`],
    expect: () => [`1: keys.signing_keys_file: signing key file ${notKeys}: expected a JWKS object { "keys": [...] }`],
  },
  {
    what: 'route patterns, upstream references and duplicate route names',
    lines: () => [
      U,
      'routes:',
      '  - name: assets',
      '    match: { path: /static/**.js }',
      '    upstream: app',
      '    access: public',
      '  - name: assets',
      '    match: { path: /a/../b }',
      '    upstream: ghost',
      '    access: authenticated',
      '  - name: open',
      '    match: { path: /open/** }',
      '    access: public',
      '    mfa: true',
    ],
    expect: () => [
      '4: routes[0].match.path: path pattern "/static/**.js": "**" must be a whole segment (e.g. /static/**/*.js)',
      '7: routes[1].name: duplicate route name "assets" (also routes[0])',
      '8: routes[1].match.path: path pattern "/a/../b": "." and ".." segments can never match a normalized path',
      '9: routes[1].upstream: no upstream named "ghost" (upstreams: app)',
      '11: routes[2].upstream: required unless access is deny',
      '14: routes[2].mfa: mfa: true makes no sense on a public route',
    ],
  },
  {
    what: 'listeners that would collide at start, and workers without shared state',
    lines: () => ['listen: 0.0.0.0:18080', 'admin: { listen: 127.0.0.1:18080 }', 'workers: 3', 'demo_upstream: { listen: 127.0.0.1:18080 }'],
    expect: () => [
      '2: admin.listen: the same port as listen: both listeners cannot bind it',
      '3: workers: 3 needs storage.redis_url: in-process state (rate limits, lockouts, revocations, TOTP steps) is not shared between processes',
      '4: demo_upstream.listen: the same port as listen: both listeners cannot bind it',
    ],
  },
  {
    what: 'listeners that collide through a host name (localhost is 127.0.0.1), and a listen name that does not resolve',
    lines: () => ['listen: 127.0.0.1:18081', 'admin: { listen: "localhost:18081" }', 'demo_upstream: { listen: "nohost.invalid:18082" }'],
    expect: () => [
      '2: admin.listen: the same port as listen: both listeners cannot bind it',
      '3: demo_upstream.listen: cannot resolve the host name "nohost.invalid": serve could not listen on it',
    ],
  },
  {
    what: 'upstream URL parts the proxy would drop silently: credentials, a query, a fragment',
    lines: () => ['upstreams:', '  app: { url: "http://bob:secret@127.0.0.1:9000/base/?q=1#frag" }', '  ok: { url: "http://127.0.0.1:9001/base/" }'],
    expect: () => [
      '2: upstreams.app.url: credentials (user:password@), a query string, a fragment in an upstream URL would not be sent: remove them (the base path is kept)',
    ],
  },
  {
    what: 'an unset variable (once, not again as a bad value), a bad duration, an unknown key',
    // biome-ignore lint/suspicious/noTemplateCurlyInString: the config syntax, quoted
    lines: () => ['upstreams:', '  app:', '    url: ${CHECK_TEST_UNSET_URL}', '    timeout: soon', '    colour: red'],
    expect: () => [
      // biome-ignore lint/suspicious/noTemplateCurlyInString: the config syntax, quoted
      '3: upstreams.app.url: environment variable CHECK_TEST_UNSET_URL is not set (use ${CHECK_TEST_UNSET_URL:-default} for a default)',
      '4: upstreams.app.timeout: not a duration: "soon" (use e.g. 500ms, 30s, 15m, 1h, 7d)',
      '5: upstreams.app.colour: unknown key',
    ],
  },
];

/** `file:line: key.path: message` lines from the `line: key.path: message` a case expects. */
const located = (f: string, expected: string[]) => expected.map((e) => `${f}:${e}`);

describe('portcullis config check refuses what serve refuses, with file:line and key path', () => {
  for (const c of CASES) {
    it(c.what, async () => {
      const f = file(c.lines());
      const want = located(f, c.expect());
      const r = await runCliInProcess(['config', 'check', '--config', f], { env: c.env ?? {} });
      expect(r.code, r.stderr).toBe(2);
      expect(r.stdout).toBe('');
      expect(r.stderr.trim().split('\n')).toEqual([...want, `portcullis: the config is invalid (${want.length} problem${want.length === 1 ? '' : 's'})`]);
      expect(r.stderr).not.toContain('s3cret');
      // What serve runs before it opens anything: the same function, the same problems.
      const refused = await checkConfigFile(f, c.env ?? {}).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(refused).toBeInstanceOf(ConfigError);
      expect((refused as ConfigError).problems.map(formatProblem)).toEqual(want);
    });
  }
});

describe('every problem in one run', () => {
  const many = () =>
    file([
      'listen: nowhere', // 1
      'trust_proxy: [10.0.0.0/33, 300.1.2.3]', // 2
      'tls:', // 3
      `  cert: ${dir}/missing.crt`, // 4
      `  key: ${dir}/missing.key`, // 5
      'storage:', // 6
      '  redis_url: "mysql://db:3306"', // 7
      '  database_url: "sqlite:"', // 8
      `keys: { signing_keys_file: ${notKeys} }`, // 9
      'workers: 2', // 10
      'upstreams:', // 11
      '  app: { url: "ftp://x", timeout: soon }', // 12
      'routes:', // 13
      '  - name: a', // 14
      '    match: { path: /static/**.js }', // 15
      '    upstream: ghost', // 16
      '    access: maybe', // 17
      '  - name: a', // 18
      '    match: { path: /x }', // 19
      '    access: deny', // 20
    ]);
  const expected = (f: string) =>
    located(f, [
      '1: listen: not a listen address: "nowhere" (use host:port, e.g. 127.0.0.1:8080)',
      '2: trust_proxy[0]: bad prefix length in "10.0.0.0/33" (0..32)',
      '2: trust_proxy[1]: not an IP address or CIDR range: "300.1.2.3"',
      `4: tls.cert: cannot read ${dir}/missing.crt: file not found`,
      `5: tls.key: cannot read ${dir}/missing.key: file not found`,
      '7: storage.redis_url: unsupported scheme "mysql://": use redis://, rediss:// (TLS), redis+sentinel:// or rediss+sentinel:// (Sentinel)',
      '8: storage.database_url: Invalid database URL "sqlite:": no SQLite file name. Accepted forms: sqlite:./relative/file.db, sqlite:/absolute/file.db, sqlite::memory:, postgres://user:pass@host:5432/db[?schema=name] or postgresql://…',
      `9: keys.signing_keys_file: signing key file ${notKeys}: expected a JWKS object { "keys": [...] }`,
      '12: upstreams.app.url: an http:// or https:// URL',
      '12: upstreams.app.timeout: not a duration: "soon" (use e.g. 500ms, 30s, 15m, 1h, 7d)',
      '15: routes[0].match.path: path pattern "/static/**.js": "**" must be a whole segment (e.g. /static/**/*.js)',
      '16: routes[0].upstream: no upstream named "ghost" (upstreams: app)',
      '17: routes[0].access: one of public, authenticated, deny, or { roles: [role, …] }',
      '18: routes[1].name: duplicate route name "a" (also routes[0])',
    ]);

  it('config check lists them all, schema, cross-key, file and environment problems alike, in file order', async () => {
    const f = many();
    const r = await runCliInProcess(['config', 'check', '--config', f], { env: { NODE_ENV: 'production' } });
    expect(r.code).toBe(2);
    const lines = r.stderr.trim().split('\n');
    // workers: 2 with a redis_url that is given but invalid: the URL is the problem, not the rule.
    expect(lines).toEqual([
      ...expected(f),
      'portcullis: NODE_ENV=production refuses to start without public_url (the URL users reach the gateway at; PORTCULLIS_PUBLIC_URL in the shipped config); the encryption key (PORTCULLIS_ENCRYPTION_KEY: openssl rand -base64 32)',
      'portcullis: the config is invalid (15 problems)',
    ]);
  });

  it('the real serve binary refuses the same file with the same lines, exit 2, before opening anything', async () => {
    const f = many();
    const env = { NODE_ENV: 'production' };
    const [check, serve] = await Promise.all([runCliInProcess(['config', 'check', '--config', f], { env }), runCli(['serve', '--config', f], { env })]);
    expect(serve.code).toBe(2);
    expect(serve.stdout).toBe('');
    expect(serve.stderr.replaceAll(f, 'F')).toBe(check.stderr.replaceAll(f, 'F'));
    expect(serve.stderr).not.toMatch(/\n\s+at /);
  });
});

describe('a config the check accepts starts', () => {
  it('TLS pair, key file, trust_proxy ranges: config check says ok, and the real serve starts on it', async () => {
    const f = file([
      'listen: 127.0.0.1:0',
      'admin: { listen: 127.0.0.1:0 }',
      `data_dir: ${dir}/data`,
      `tls: { cert: ${tlsA.cert}, key: ${tlsA.key}, min_version: TLSv1.3 }`,
      'trust_proxy: [10.0.0.0/8, "::1", "fd00::/8"]',
      `storage: { database_url: "sqlite:${dir}/ok.db" }`,
      `keys: { signing_keys_file: ${keysFile} }`,
      U,
      'routes:',
      '  - { name: app, match: { path: /** }, upstream: app, access: authenticated }',
    ]);
    const env = { PORTCULLIS_ENCRYPTION_KEY: Buffer.alloc(32, 3).toString('base64') };
    const r = await runCliInProcess(['config', 'check', '--config', f], { env });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`${f}: ok (1 routes, 1 upstreams)\n`);

    const child = spawn(process.execPath, [join(ROOT, 'bin/portcullis.js'), 'serve', '--config', f], { cwd: ROOT, env: { PATH: process.env.PATH, ...env } });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
    try {
      const started = Date.now();
      while (!out.includes('"event":"listening"') && child.exitCode === null && Date.now() - started < 20_000) await new Promise((res) => setTimeout(res, 50));
      expect(out, out).toContain('"event":"listening"');
      expect(out).toMatch(/"url":"https:\/\/127\.0\.0\.1:\d+"/);
    } finally {
      child.kill('SIGTERM');
    }
    expect(await exited).toBe(0);
  });
});

describe('environment problems', () => {
  it('alone: one line, no file:line (the production refusal as SPEC §1 has it)', async () => {
    const f = file(['listen: 127.0.0.1:0', U]);
    const r = await runCliInProcess(['config', 'check', '--config', f], { env: { NODE_ENV: 'production', PORTCULLIS_SIGNING_KEYS: 'not json' } });
    expect(r.code).toBe(2);
    // Two problems of the environment: each its own line.
    expect(r.stderr.trim().split('\n')).toEqual([
      'portcullis: PORTCULLIS_SIGNING_KEYS is not valid JSON (expected a JWKS with private keys).',
      'portcullis: NODE_ENV=production refuses to start without public_url (the URL users reach the gateway at; PORTCULLIS_PUBLIC_URL in the shipped config); the encryption key (PORTCULLIS_ENCRYPTION_KEY: openssl rand -base64 32)',
      'portcullis: the config is invalid (2 problems)',
    ]);
  });

  it('a public_url present but invalid is reported as such, not also as missing', async () => {
    const f = file(['public_url: gw.example.com', U]);
    const r = await runCliInProcess(['config', 'check', '--config', f], {
      env: { NODE_ENV: 'production', PORTCULLIS_SIGNING_KEYS: await keysJson(), PORTCULLIS_ENCRYPTION_KEY: Buffer.alloc(32, 1).toString('base64') },
    });
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split('\n')).toEqual([`${f}:1: public_url: an http:// or https:// URL`, 'portcullis: the config is invalid (1 problem)']);
  });
});

async function keysJson(): Promise<string> {
  return JSON.stringify({ keys: [await generateSigningJwk()] });
}

describe('warnings (legal, likely wrong): exit 0, each at its line', () => {
  it('method fall-through onto weaker access, and a route an earlier one shadows', async () => {
    const f = file([
      U,
      'routes:',
      '  - name: admin', // 3
      '    match: { path: /admin/**, methods: [GET, POST] }', // 4
      '    upstream: app',
      '    access: { roles: [admin] }',
      '  - name: app', // 7
      '    match: { path: /** }',
      '    upstream: app',
      '    access: authenticated',
      '  - name: reports', // 11
      '    match: { path: /reports/** }',
      '    upstream: app',
      '    access: { roles: [reporter] }',
    ]);
    const r = await runCliInProcess(['config', 'check', '--config', f], { env: {} });
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`${f}: ok (3 routes, 1 upstreams; 2 warnings)\n`);
    expect(r.stderr.trim().split('\n')).toEqual([
      `${f}:4: routes[0].match.methods: warning: route "admin" (roles [admin]) only takes [GET, POST]: PUT, PATCH, DELETE, OPTIONS /admin/x fall through to route "app" (authenticated). Drop the method list, or add a route for the other methods with access: deny.`,
      `${f}:11: routes[2]: warning: route "reports" can never match: route "app" (routes[1]) takes every request it would (any host, path /reports/**, any method). Move it above "app", narrow that route, or remove it.`,
    ]);
  });

  it('none for the shipped config', async () => {
    const r = await runCliInProcess(['config', 'check', '--config', 'config/gateway.yaml'], { env: {} });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
  });
});

describe('portcullis config schema', () => {
  it('prints the JSON Schema (draft-07, with the title), takes --config like every command, and refuses other arguments', async () => {
    const r = await runCliInProcess(['config', 'schema', '--config', 'config/gateway.yaml']);
    expect(r.code).toBe(0);
    const schema = JSON.parse(r.stdout);
    expect(schema.$schema).toBe('http://json-schema.org/draft-07/schema#');
    expect(schema.title).toBe('Portcullis gateway configuration');
    const bad = await runCliInProcess(['config', 'schema', 'extra']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toBe('portcullis: config schema takes no arguments (got "extra")\n');
    const unknown = await runCliInProcess(['config', 'lint']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toBe('portcullis: usage: portcullis config check [--config FILE] | portcullis config schema\n');
  });
});
