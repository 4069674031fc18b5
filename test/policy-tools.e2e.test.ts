import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCliInProcess as run } from './support/helpers.js';

/**
 * `portcullis policy test` and `portcullis routes` (SPEC §1, §2; issue 12 part 3), run in this
 * process through `main(argv, io)`. The shipped `config/policy-tests.yaml` must pass against the
 * shipped `config/gateway.yaml`: this is how `npm test` runs it.
 */

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const SHIPPED_CONFIG = join(ROOT, 'config/gateway.yaml');
const SHIPPED_TESTS = join(ROOT, 'config/policy-tests.yaml');

/** A config with what the shipped one lacks: host rules, mfa, method lists, no catch-all. */
const FIXTURE = `public_url: https://gw.example.com
upstreams:
  app: { url: "http://127.0.0.1:9" }
routes:
  - name: console
    match: { host: console.example.com, path: /** }
    upstream: app
    access: { roles: [ops] }
    mfa: true
    rate_limit: { requests: 100, per: 1m }
  - name: docs-read
    match: { path: /Docs/**, methods: [GET] }
    upstream: app
    access: public
  - name: docs-write
    match: { path: /docs/**, methods: [post, PUT] }
    upstream: app
    access: { roles: [editor, admin] }
  - name: exact
    match: { path: /%61pi/V1, case_sensitive: true }
    upstream: app
    access: authenticated
    allow_semicolons: true
  - name: closed
    match: { path: /internal/** }
    access: deny
`;

const FIXTURE_TESTS = `# cases for the fixture config
- name: ops with a second factor reach the console
  request: { url: "https://console.example.com/" }
  as: { roles: [ops], mfa: true }
  expect: allow
  route: console
- name: ops without a second factor are asked for one
  request: { url: /status, host: CONSOLE.example.com. }
  as: { roles: [ops] }
  expect: mfa_required
  route: console
- name: others are forbidden from the console
  request: { url: "https://console.example.com/x" }
  as: { roles: [editor], mfa: true }
  expect: forbidden
- name: anyone reads the docs
  request: { method: HEAD, url: /docs/intro }
  as: anonymous
  expect: allow
  route: docs-read
- name: editors write them
  request: { method: PUT, url: /DOCS/intro }
  as: { roles: [editor] }
  expect: allow
  route: docs-write
- name: a method no route lists is a 404
  request: { method: DELETE, url: /docs/intro }
  as: { roles: [admin] }
  expect: no_route
- name: a path no route matches is a 404
  request: { url: /elsewhere }
  as: anonymous
  expect: no_route
- name: the case-sensitive route
  request: { url: "/api/V1;v=2" }
  as: anonymous
  expect: unauthenticated
  route: exact
- name: the case-sensitive route does not take other spellings
  request: { url: /API/v1 }
  as: { roles: [admin] }
  expect: no_route
- name: closed
  request: { url: /internal/x }
  as: { roles: [ops], mfa: true }
  expect: deny
  route: closed
`;

let dir: string;
let fixture: string;
let fixtureTests: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'portcullis-policy-tools-'));
  fixture = join(dir, 'gateway.yaml');
  fixtureTests = join(dir, 'fixture-tests.yaml');
  writeFileSync(fixture, FIXTURE);
  writeFileSync(fixtureTests, FIXTURE_TESTS);
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** Writes a test file into the temp dir. */
function file(name: string, text: string): string {
  const f = join(dir, name);
  writeFileSync(f, text);
  return f;
}

describe('the shipped policy tests (config/policy-tests.yaml, run by npm test)', () => {
  it('pass against the shipped config/gateway.yaml: exit 0 and the summary line', async () => {
    const r = await run(['policy', 'test', SHIPPED_TESTS, '--config', SHIPPED_CONFIG]);
    const count = readFileSync(SHIPPED_TESTS, 'utf8').match(/^- name:/gm)?.length ?? 0;
    expect(count).toBeGreaterThan(30);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe(`${count} passed, 0 failed (1 file)\n`);
    expect(r.code).toBe(0);
  });

  it('cover every shipped route and every decision the shipped config can make', async () => {
    const r = await run(['policy', 'test', SHIPPED_TESTS, '--json', '--config', SHIPPED_CONFIG]);
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout) as { passed: number; failed: number; files: number; cases: { actual: { decision: string; route: string | null } }[] };
    expect(out).toMatchObject({ failed: 0, files: 1 });
    const routes = JSON.parse((await run(['routes', '--json', '--config', SHIPPED_CONFIG])).stdout) as { name: string }[];
    const decided = new Set(out.cases.map((c) => c.actual.route));
    for (const { name } of routes) expect(decided, `a case decided by route ${name}`).toContain(name);
    // No route of the shipped config has mfa: true, and /** catches every path: no mfa_required, no no_route.
    expect([...new Set(out.cases.map((c) => c.actual.decision))].sort()).toEqual(['allow', 'auth_api', 'bad_request', 'deny', 'forbidden', 'unauthenticated']);
  });

  it('decide as policy explain --json does, case by case (one decision path)', async () => {
    const r = await run(['policy', 'test', SHIPPED_TESTS, '--json', '--config', SHIPPED_CONFIG]);
    const cases = (
      JSON.parse(r.stdout) as { cases: { name: string; actual: { decision: string; route: string | null; status: number; code: string | null } }[] }
    ).cases;
    const text = readFileSync(SHIPPED_TESTS, 'utf8');
    const { parsePolicyTests } = await import('../src/policy/index.js');
    const parsed = parsePolicyTests(text, SHIPPED_TESTS).cases;
    expect(parsed).toHaveLength(cases.length);
    for (const [i, c] of parsed.entries()) {
      const args = ['policy', 'explain', '--json', '--method', c.request.method, '--url', c.request.url, '--config', SHIPPED_CONFIG];
      if (c.request.host !== undefined) args.push('--host', c.request.host);
      if (c.as !== 'anonymous') {
        if (c.as.roles.length) args.push('--roles', c.as.roles.join(','));
        if (c.as.mfa) args.push('--mfa');
      }
      const e = JSON.parse((await run(args)).stdout) as { route: string | null; decision: string; status: number; code: string | null; anonymous: object };
      const view = c.as === 'anonymous' ? e.anonymous : e;
      expect({ ...view, route: e.route }, c.name).toMatchObject(cases[i].actual);
    }
  });
});

describe('portcullis policy test', () => {
  it('runs several files: failures with file:line, name, expected and actual; the summary; exit 1', async () => {
    const wrong = file(
      'wrong.yaml',
      `- name: editors delete docs
  request: { method: POST, url: /docs/a }
  as: { roles: [editor] }
  expect: allow
  route: docs-write

# line 7 starts the case that fails
- name: ops need no second factor (wrong)
  request: { url: /, host: console.example.com }
  as: { roles: [ops] }
  expect: allow
  route: console
- name: wrong route
  request: { url: /docs/a }
  as: anonymous
  expect: allow
  route: docs-write
`,
    );
    const r = await run(['policy', 'test', fixtureTests, wrong, '--config', fixture]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(1);
    expect(r.stdout).toBe(
      [
        `${wrong}:8: FAIL ops need no second factor (wrong) (wrong decision)`,
        '    request:  GET / (host console.example.com) as roles [ops]',
        '    expected: allow by route "console"',
        '    actual:   mfa_required by route "console" (403 mfa_required): route "console" requires two-factor authentication; token amr is [pwd]',
        `${wrong}:13: FAIL wrong route (wrong route)`,
        '    request:  GET /docs/a as anonymous',
        '    expected: allow by route "docs-write"',
        '    actual:   allow by route "docs-read" (forwarded): route "docs-read" is public',
        '11 passed, 2 failed (2 files)',
        '',
      ].join('\n'),
    );
  });

  it('the fixture cases cover mfa_required, no_route (a method no route lists) and the rest: exit 0', async () => {
    const r = await run(['policy', 'test', fixtureTests, '--json', '--config', fixture]);
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout) as { passed: number; failed: number; files: number; cases: { line: number; expected: { decision: string } }[] };
    expect(out).toMatchObject({ passed: 10, failed: 0, files: 1 });
    expect(out.cases[0]).toMatchObject({ file: fixtureTests, line: 2, name: 'ops with a second factor reach the console', passed: true });
    expect(new Set(out.cases.map((c) => c.expected.decision))).toEqual(new Set(['allow', 'mfa_required', 'forbidden', 'no_route', 'unauthenticated', 'deny']));
  });

  it('a malformed file exits 2 with file:line: [index].key: message, and no case runs (other files neither)', async () => {
    const bad = file(
      'bad.yaml',
      `- name: fine
  request: { url: /docs/a }
  as: anonymous
  expect: allow
- name: typo
  request: { method: GET, uri: /docs/a }
  as: { role: [editor] }
  expect: alow
`,
    );
    const r = await run(['policy', 'test', fixtureTests, bad, join(dir, 'missing.yaml'), '--config', fixture]);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr.split('\n')).toEqual([
      `${bad}:6: [1].request.uri: unknown key (expected method, url, host)`,
      `${bad}:6: [1].request.url: required`,
      `${bad}:7: [1].as.role: unknown key (expected roles, mfa)`,
      `${bad}:8: [1].expect: "alow" is not a decision: use one of allow | unauthenticated | forbidden | mfa_required | deny | no_route | bad_request | auth_api`,
      `${join(dir, 'missing.yaml')}: cannot read the file (no such file)`,
      'portcullis: 2 invalid test files (5 problems); no case was run',
      '',
    ]);
  });

  it('YAML errors, a file that is not a list and an empty file exit 2', async () => {
    for (const [text, message] of [
      ['- name: a\n  request: { url: /x\n', /:\d+: YAML: /],
      ['name: a\n', /:1: expected a list of test cases/],
      ['', /:1: the file holds no test cases/],
    ] as const) {
      const r = await run(['policy', 'test', file('one.yaml', text), '--config', fixture]);
      expect(r.code, text).toBe(2);
      expect(r.stderr, text).toMatch(message);
      expect(r.stdout).toBe('');
    }
  });

  it('bad usage and an invalid config exit 2', async () => {
    const none = await run(['policy', 'test', '--config', fixture]);
    expect(none.code).toBe(2);
    expect(none.stderr).toMatch(/^portcullis: policy test needs at least one test file/);
    const flag = await run(['policy', 'test', fixtureTests, '--verbose', '--config', fixture]);
    expect(flag.code).toBe(2);
    expect(flag.stderr).toBe('portcullis: unknown option --verbose\n');
    const cfg = file('broken-config.yaml', 'upstreams: {}\nroutes:\n  - name: x\n    match: { path: /** }\n    upstream: nowhere\n    access: public\n');
    const r = await run(['policy', 'test', fixtureTests, '--config', cfg]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`${cfg}:5: routes[0].upstream: no upstream named "nowhere"`);
    const sub = await run(['policy', 'tset', fixtureTests]);
    expect(sub.code).toBe(2);
    expect(sub.stderr).toMatch(/usage: portcullis policy explain .* \| policy test FILE/);
  });
});

describe('portcullis routes', () => {
  it('prints the compiled table in match order', async () => {
    const r = await run(['routes', '--config', fixture]);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('');
    expect(r.stdout.split('\n')).toEqual([
      '#  NAME        HOST                 PATH                 METHODS   ACCESS                 MFA  UPSTREAM  RATE LIMIT  OPTIONS',
      '0  console     console.example.com  /**                  *         roles [ops]            yes  app       100/1m',
      '1  docs-read   *                    /docs/** (/Docs/**)  GET,HEAD  public                 no   app       -',
      '2  docs-write  *                    /docs/**             POST,PUT  roles [editor, admin]  no   app       -',
      '3  exact       *                    /api/V1 (/%61pi/V1)  *         authenticated          no   app       -           case_sensitive, allow_semicolons',
      '4  closed      *                    /internal/**         *         deny                   no   -         -',
      '',
      "First match decides; no match is 404. /api/auth/** and /.well-known/jwks.json are the gateway's own (auth API), before any route.",
      '',
    ]);
  });

  it('--json prints an array: order, name, host, path, methods, access, mfa, upstream, rate_limit', async () => {
    const r = await run(['routes', '--json', '--config', fixture]);
    expect(r.code).toBe(0);
    const rows = JSON.parse(r.stdout) as unknown[];
    expect(rows).toEqual([
      {
        order: 0,
        name: 'console',
        host: 'console.example.com',
        path: '/**',
        pattern: '/**',
        case_sensitive: false,
        methods: null,
        access: { roles: ['ops'] },
        mfa: true,
        upstream: 'app',
        rate_limit: { requests: 100, per: '1m' },
        allow_semicolons: false,
      },
      expect.objectContaining({ order: 1, name: 'docs-read', path: '/Docs/**', pattern: '/docs/**', methods: ['GET', 'HEAD'], access: 'public', mfa: false }),
      expect.objectContaining({ order: 2, name: 'docs-write', methods: ['POST', 'PUT'], access: { roles: ['editor', 'admin'] } }),
      expect.objectContaining({ order: 3, name: 'exact', path: '/%61pi/V1', pattern: '/api/V1', case_sensitive: true, allow_semicolons: true }),
      expect.objectContaining({ order: 4, name: 'closed', access: 'deny', upstream: null, rate_limit: null }),
    ]);
  });

  it('the shipped config: four routes, the catch-all last', async () => {
    const r = await run(['routes', '--json', '--config', SHIPPED_CONFIG]);
    expect(r.code).toBe(0);
    expect((JSON.parse(r.stdout) as { name: string; path: string }[]).map((x) => `${x.name} ${x.path}`)).toEqual([
      'demo-admin /admin/**',
      'demo-internal /internal/**',
      'demo-public /public/**',
      'demo /**',
    ]);
  });

  it('stray arguments are bad usage (exit 2); an invalid config exits 2', async () => {
    const r = await run(['routes', 'list', '--config', fixture]);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe('portcullis: usage: portcullis routes [--json] [--config FILE]\n');
    const bad = await run(['routes', '--config', join(dir, 'nope.yaml')]);
    expect(bad.code).toBe(2);
  });
});

describe('help', () => {
  it('the usage lists policy test, routes and config schema', async () => {
    const r = await run(['--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^ {2}policy test FILE\.\.\. \[--json\] +run YAML policy cases/m);
    expect(r.stdout).toMatch(/^ {2}routes \[--json\] +the compiled route table/m);
    expect(r.stdout).toMatch(/^ {2}config schema +print the JSON Schema of the config file/m);
  });

  it('routes --help, policy test --help and config --help print their usage (exit 0, nothing run)', async () => {
    const routes = await run(['routes', '--help', '--config', join(dir, 'nope.yaml')]);
    expect(routes).toMatchObject({ code: 0, stderr: '' });
    expect(routes.stdout).toMatch(/^usage: portcullis routes \[--json\] \[--config FILE\]\n/);
    const test = await run(['policy', 'test', 'x.yaml', '-h']);
    expect(test).toMatchObject({ code: 0, stderr: '' });
    expect(test.stdout).toContain('portcullis policy test FILE... [--json] [--config FILE]');
    expect(test.stdout).toContain('Exit 0 when all pass, 1 when any fails, 2 for a malformed file.');
    const config = await run(['config', '--help']);
    expect(config.stdout).toContain('portcullis config schema');
  });
});
