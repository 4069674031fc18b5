import { METHODS } from 'node:http';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addUser, login, rawRequest, runCliInProcess, startHarness, type Harness } from './support/helpers.js';

/**
 * `portcullis policy explain --json` against the live gateway (SPEC §3.1 "one decision
 * function"): every request of the table below goes to a real gateway as raw bytes, once per
 * caller (anonymous, a signed-in user, an admin with and without a second factor, a reporter),
 * and through the CLI in this process (`runCliInProcess`) with the same method, target, Host,
 * roles and `--mfa`. The decision word, the status and the problem code must be the same.
 *
 * Rows without a Host of their own are sent with the gateway's own Host and explained without
 * `--host`: explain then takes the host of `public_url`, as every real client sends one.
 *
 * Disagreements this table found (fixed in src/policy/):
 * - a method the listener's HTTP parser does not know (`FOO`, `TRACK`, `PRI`, `DESCRIBE`) is a
 *   bare 400 at the gateway but was decided by the routes in explain (`TRACK`: 405);
 * - explain judged a bare path as a request without a Host, which no host rule matches, so a
 *   route for the gateway's own host (`own-host` below) was a 404 in explain and decided by that
 *   route at the gateway (which refuses a request without a Host altogether);
 * - a Host with spaces or tabs around it is trimmed by Node before the gateway reads it, but
 *   was a 400 `bad_host` in explain.
 * Not in the table: an absolute-form target (`GET http://h/x`, 400 at the gateway), which
 * explain's `--url` cannot express: it takes a URL, and clients send its path.
 */

const ROUTES = `
routes:
  - name: own-host
    match: { host: 127.0.0.1, path: /own/** }
    upstream: echo
    access: { roles: [staff] }
  - name: admin
    match: { path: /admin/** }
    upstream: echo
    access: { roles: [admin] }
  - name: secure
    match: { path: /secure/** }
    upstream: echo
    access: { roles: [admin] }
    mfa: true
  - name: ops-read
    match: { path: /ops/**, methods: [GET] }
    upstream: echo
    access: authenticated
  - name: ops-write
    match: { path: /ops/**, methods: [POST, PUT, PATCH, DELETE] }
    upstream: echo
    access: { roles: [admin] }
    mfa: true
  - name: closed
    match: { path: /internal/** }
    access: deny
  - name: public
    match: { path: /public/** }
    upstream: echo
    access: public
  - name: semis
    match: { path: /matrix/** }
    upstream: echo
    access: authenticated
    allow_semicolons: true
  - name: exact
    match: { path: /Exact/Case, case_sensitive: true }
    upstream: echo
    access: public
  - name: pictures
    match: { path: /files/*.png }
    upstream: echo
    access: public
  - name: reports
    match: { host: reports.example.com, path: /** }
    upstream: echo
    access: { roles: [reporter] }
  - name: tenants
    match: { host: "*.tenant.example.com", path: /** }
    upstream: echo
    access: authenticated
  - name: api-port
    match: { host: "api.example.com:8443", path: /** }
    upstream: echo
    access: public
  - name: app
    match: { path: /app/** }
    upstream: echo
    access: authenticated
`;

interface Caller {
  readonly name: string;
  readonly roles: readonly string[];
  readonly mfa: boolean;
}
const CALLERS: readonly Caller[] = [
  { name: 'anonymous', roles: [], mfa: false },
  { name: 'alice', roles: ['staff'], mfa: false },
  { name: 'root', roles: ['admin'], mfa: false },
  { name: 'root-otp', roles: ['admin'], mfa: true },
  { name: 'rita', roles: ['reporter'], mfa: false },
];

/** [method, request-target, Host (undefined: the gateway's own)] */
type Row = readonly [string, string, string | undefined];

/** Targets the gateway's own auth API answers (after normalization), whatever the routes say. */
const AUTH_API: readonly string[] = ['/api/auth/me', '//api/auth/./me', '/api/auth/login?rd=/admin', '/.well-known/jwks.json', '/api/auth'];

const PATHS: readonly string[] = [
  // plain, case, trailing dots and spaces, parameters
  '/public/a',
  '/PUBLIC/a',
  '/admin/x',
  '/ADMIN/x',
  '/Admin./x',
  '/admin%20/x',
  '/admin..../x',
  '/admin;jsessionid=1/x',
  '/admin%3Bv/x',
  '/admin%3bv/x',
  '/secure/x',
  '/secure',
  '/internal/x',
  '/INTERNAL./x',
  '/internal%2e/x',
  '/app/x/',
  '/app',
  '/nowhere',
  '/',
  // dot segments, double slashes, escapes
  '/public/../admin/x',
  '/public/./../admin/x',
  '//admin/x',
  '/public//..//admin/x',
  '/app/x/..',
  '/../app/x',
  '/public/%2e%2e/admin',
  '/public/.%2E/admin',
  '/public/..;/admin',
  '/public/..%3B/admin',
  '/admin/...',
  '/public/%2Fadmin',
  '/public%2fadmin',
  '/public/%5Cadmin',
  '/public\\..\\admin',
  '/public/%00',
  '/public/%252e%252e/admin',
  '/public/a%25',
  '/%61dmin/x',
  '/%41DMIN/x',
  '/admin%C0%AE/x',
  '/caf%C3%A9',
  '/admin/a.json::$DATA',
  '/ADMINI~1/x',
  '/public/x?next=/admin&a=%2F',
  '/public/x#frag',
  '*',
  '/own/x',
  // semicolons where they are allowed
  '/matrix;v=1/a',
  '/matrix/a;b=2',
  '/matrix/..;/admin',
  '/nowhere;x',
  // case-sensitive and glob routes
  '/Exact/Case',
  '/exact/case',
  '/Exact/Case/',
  '/files/a.png',
  '/files/A.PNG',
  '/files/a.png.',
  '/files/sub/a.png',
  '/files/.png',
  // method-restricted routes
  '/ops/x',
  '/OPS/x/',
  // the auth API (not a route): the gateway's own endpoints answer
  '/API/AUTH/me',
  '/api/auth/../admin/x',
  '/public/x?',
  '/public/x??a=%zz',
  '/public/%7Euser',
  '/public/x%',
  '/admin/x/../../internal/x',
  ...AUTH_API,
];

const HOSTS: readonly string[] = [
  'reports.example.com',
  'REPORTS.Example.COM.',
  'reports.example.com:8080',
  'reports.example.com..',
  '[reports.example.com]',
  'reports.example.com:99999',
  'reports.example.com:',
  'user@reports.example.com',
  'a.tenant.example.com',
  'A.B.Tenant.Example.Com',
  'tenant.example.com',
  '.tenant.example.com',
  'api.example.com:8443',
  'api.example.com',
  'api.example.com:443',
  '[::1]:8080',
  '[::1',
  '127.0.0.1',
  'exa_mple.com',
  ' reports.example.com\t',
];

const TABLE: Row[] = [
  ...PATHS.map((p): Row => ['GET', p, undefined]),
  ...['/admin/x', '/ops/x', '/public/a', '/internal/x', '/nowhere', '/Exact/Case'].flatMap((p) =>
    ['HEAD', 'OPTIONS', 'POST', 'PUT', 'PATCH', 'DELETE', 'PROPFIND', 'QUERY', 'M-SEARCH', 'TRACE', 'CONNECT', 'FOO', 'TRACK', 'PRI', 'DESCRIBE'].map(
      (m): Row => [m, p, undefined],
    ),
  ),
  ...HOSTS.flatMap((h) => ['/x', '/admin/x', '/app/y'].map((p): Row => ['GET', p, h])),
  ['DELETE', '/x', 'reports.example.com'],
  ['HEAD', '/x', 'a.tenant.example.com'],
];

/** What a caller was told, in the words of `policy test` (SPEC §2), with the status and code. */
interface Answer {
  decision: string;
  status: number;
  code: string | null;
}

const DECISION_OF: Record<string, string> = {
  no_route: 'no_route',
  access_denied: 'deny',
  unauthenticated: 'unauthenticated',
  invalid_token: 'unauthenticated',
  forbidden: 'forbidden',
  mfa_required: 'mfa_required',
  csrf: 'csrf',
};

let h: Harness;
let file: string;
let ownHost: string;
const tokens = new Map<string, string>();

beforeAll(async () => {
  h = await startHarness({ routes: ROUTES });
  file = join(h.dir, 'gateway.yaml');
  ownHost = new URL(h.url).host;
  // One caller signs in the way users do; the others get tokens from the gateway's own token
  // service (a second factor is an amr of ["pwd","otp"], as after /2fa/verify).
  await addUser(h, 'alice', ['staff']);
  tokens.set('alice', await login(h, 'alice'));
  for (const c of CALLERS.slice(2)) {
    const u = await addUser(h, c.name, [...c.roles]);
    const { token } = await h.app.tokens.signAccess({
      sub: u.id,
      sid: `parity-${c.name}`,
      username: c.name,
      roles: c.roles,
      amr: c.mfa ? ['pwd', 'otp'] : ['pwd'],
    });
    tokens.set(c.name, token);
  }
});

afterAll(async () => {
  await h?.close();
});

/** The live gateway's answer to one raw request. */
async function live(method: string, target: string, host: string, caller: Caller): Promise<Answer & { forwarded: boolean; user?: string | null }> {
  const token = tokens.get(caller.name);
  const auth = token ? `Authorization: Bearer ${token}\r\n` : '';
  const r = await rawRequest(h.url, `${method} ${target} HTTP/1.1\r\nHost: ${host}\r\n${auth}Connection: close\r\n\r\n`);
  const type = r.headers['content-type'] ?? '';
  if (type.startsWith('application/problem+json')) {
    // HEAD answers carry no body: the status says the rest.
    const code = method === 'HEAD' ? null : (JSON.parse(r.body) as { code: string }).code;
    const decision =
      code === null
        ? r.status === 401
          ? 'unauthenticated'
          : r.status === 404
            ? 'no_route'
            : r.status >= 400 && r.status !== 403
              ? 'bad_request'
              : '403'
        : (DECISION_OF[code] ?? 'bad_request');
    return { decision, status: r.status, code, forwarded: false };
  }
  // A bare 400 without a body: Node's HTTP parser refused the request (the clientError answer).
  if (type === '' && r.status === 400 && r.body === '') return { decision: 'bad_request', status: 400, code: null, forwarded: false };
  if (method === 'HEAD') {
    expect(type, `${method} ${target} (Host ${host}) as ${caller.name}`).toMatch(/^application\/json/);
    return { decision: 'allow', status: 200, code: null, forwarded: true };
  }
  // The echo upstream answers JSON describing what it received: the request was forwarded.
  const echo = type.startsWith('application/json') ? (JSON.parse(r.body) as { raw_headers?: unknown; identity?: { user: string | null } }) : {};
  if (echo.raw_headers === undefined || echo.identity === undefined) return { decision: 'not_forwarded', status: r.status, code: null, forwarded: false };
  return { decision: 'allow', status: 200, code: null, forwarded: true, user: echo.identity.user };
}

interface ExplainJson extends Answer {
  route: string | null;
  anonymous: Answer & { route: string | null };
}

/** `policy explain --json` in this process; without `host`, no `--host` (the gateway's own is taken). */
async function explainCli(method: string, target: string, host: string | undefined, caller: Caller): Promise<ExplainJson> {
  const args = ['policy', 'explain', '--json', '--method', method, '--url', target, ...(host === undefined ? [] : ['--host', host]), '--config', file];
  if (caller.roles.length) args.push('--roles', caller.roles.join(','));
  if (caller.mfa) args.push('--mfa');
  const r = await runCliInProcess(args);
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
  return JSON.parse(r.stdout) as ExplainJson;
}

/** Explain's view, reduced to what the wire shows for this method. */
function comparable(method: string, a: Answer, liveCode: string | null): Answer {
  const decision = method === 'HEAD' && a.status === 403 ? '403' : a.decision;
  return { decision, status: a.decision === 'allow' ? 200 : a.status, code: liveCode === null && a.decision !== 'allow' ? null : a.code };
}

const seen = new Set<string>();

describe('policy explain --json decides as the live gateway does', () => {
  for (const [method, target, hostOverride] of TABLE) {
    it(`${method} ${target}${hostOverride === undefined ? '' : ` (Host ${hostOverride})`}`, async () => {
      const host = hostOverride ?? ownHost;
      const gateway: Record<string, Answer> = {};
      const explained: Record<string, Answer> = {};
      for (const caller of CALLERS) {
        const got = await live(method, target, host, caller);
        const e = await explainCli(method, target, hostOverride, caller);
        expect(e.decision === 'auth_api', `${caller.name}: the auth API?`).toBe(AUTH_API.includes(target));
        if (AUTH_API.includes(target)) {
          // Not a route: the auth API answers for itself (whatever that is), never the upstream.
          expect(e.anonymous.decision, `${caller.name}`).toBe('auth_api');
          expect(got.forwarded, `${caller.name}: the auth API answers, not the upstream`).toBe(false);
          seen.add('auth_api');
          continue;
        }
        // The signed-in view for callers with a token; explain's anonymous view for the others
        // (and, whoever asks, it must be the same as for the anonymous caller).
        const view = caller.name === 'anonymous' ? e.anonymous : e;
        gateway[caller.name] = { decision: got.decision, status: got.status, code: got.code };
        explained[caller.name] = comparable(method, view, got.code);
        if (got.decision === 'allow' && got.user !== undefined)
          expect(got.user, 'the upstream saw the caller').toBe(caller.name === 'anonymous' ? null : caller.name);
        seen.add(view.decision);
      }
      expect(explained).toEqual(gateway);
    });
  }

  it('the table covers every decision word of policy test', () => {
    expect([...seen].sort()).toEqual(['allow', 'auth_api', 'bad_request', 'deny', 'forbidden', 'mfa_required', 'no_route', 'unauthenticated']);
  });

  it('every method the listener parses is in the table or decided like GET; others are 400', async () => {
    // A method Node's parser accepts reaches the decision; explain must not refuse it.
    for (const m of METHODS.filter((x) => x !== 'CONNECT' && x !== 'TRACE')) {
      const e = await explainCli(m, '/public/a', ownHost, CALLERS[0]);
      expect(e.anonymous.decision, m).toBe('allow');
    }
    for (const m of ['FOO', 'TRACK', 'PRI', 'GETS', 'DESCRIBE']) {
      const e = await explainCli(m, '/public/a', ownHost, CALLERS[0]);
      expect(e.anonymous, m).toMatchObject({ decision: 'bad_request', status: 400, code: 'bad_request' });
    }
  });

  it('the Host may come in the URL instead of --host: the same answers', async () => {
    for (const host of ['reports.example.com', 'REPORTS.example.com.', 'a.tenant.example.com', 'api.example.com:8443', '[::1]:8080', ownHost]) {
      for (const caller of CALLERS) {
        const viaFlag = await explainCli('GET', '/x', host, caller);
        const args = ['policy', 'explain', '--json', '--method', 'GET', '--url', `https://${host}/x`, '--config', file];
        if (caller.roles.length) args.push('--roles', caller.roles.join(','));
        if (caller.mfa) args.push('--mfa');
        const r = await runCliInProcess(args);
        expect(JSON.parse(r.stdout), `${host} ${caller.name}`).toEqual(viaFlag);
      }
    }
  });

  it("without a Host, explain judges the request as sent to the gateway's own host (public_url)", async () => {
    const r = await runCliInProcess(['policy', 'explain', '--json', '--url', '/own/x', '--roles', 'staff', '--config', file]);
    expect(JSON.parse(r.stdout)).toMatchObject({ route: 'own-host', decision: 'allow', anonymous: { route: 'own-host', decision: 'unauthenticated' } });
    expect(JSON.parse(r.stdout)).toEqual(await explainCli('GET', '/own/x', ownHost, CALLERS[1]));
    const text = await runCliInProcess(['policy', 'explain', '--url', '/own/x', '--config', file]);
    expect(text.stdout).toContain("(host 127.0.0.1:0: the gateway's own, from public_url; --host to change)");
  });
});
