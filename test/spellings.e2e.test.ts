/**
 * Issue 8, class 2 (case and equivalent spellings), outside in: SPEC §3.1 "One canonical key
 * for matching". The upstream is a real EXPRESS app with its default (case-insensitive)
 * routing, the kind of legacy app that serves `/ADMIN/x` from its `/admin/*` handler — so a
 * gateway that matched routes case-sensitively, or kept a trailing dot/space, would let a
 * plain user reach the admin handler. Requests are raw socket bytes (no client normalizes).
 *
 * The contract: routes match a canonical key of the normalized path — case-folded (unless
 * `match.case_sensitive: true`), each segment's trailing dots and spaces removed (`%2e`, `%20`
 * too), `%3B` treated exactly like `;`; a double-encoded `.`, `/`, `\`, `;` or NUL is 400
 * `bad_path`. Host matching is case-insensitive and ignores one trailing dot. The upstream
 * receives the normalized path, not case-folded.
 */
import http from 'node:http';
import express from 'express';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { addUser, login, rawGet, startHarness, type Harness, type RawResponse } from './support/helpers.js';
import { listenTracked } from './support/recorder.js';

interface Seen {
  method: string;
  url: string;
  host: string | undefined;
}

interface ExpressUpstream {
  url: string;
  seen: Seen[];
  close(): Promise<void>;
}

/** The legacy app: Express 5 defaults (case-insensitive, non-strict routing). */
async function startExpressUpstream(): Promise<ExpressUpstream> {
  const seen: Seen[] = [];
  const app = express();
  app.use((req, _res, next) => {
    seen.push({ method: req.method, url: req.originalUrl, host: req.headers.host });
    next();
  });
  const reply = (served: string) => (req: express.Request, res: express.Response) => {
    res.json({ served, method: req.method, url: req.originalUrl, user: req.get('x-auth-user') ?? null, roles: req.get('x-auth-roles') ?? null });
  };
  app.all('/admin/*splat', reply('admin'));
  app.all('/internal/*splat', reply('internal'));
  app.all('/*splat', reply('app'));
  const { url, close } = await listenTracked(http.createServer(app));
  return { url, seen, close };
}

interface Served {
  served: string;
  method: string;
  url: string;
  user: string | null;
}

const ROUTES = `
routes:
  - name: admin
    match: { path: /admin/** }
    upstream: exp
    access: { roles: [admin] }
  - name: closed
    match: { path: /internal/** }
    access: deny
  - name: intranet
    match: { host: intranet.example.com, path: /** }
    upstream: exp
    access: { roles: [staff] }
  - name: app
    match: { path: /** }
    upstream: exp
    access: authenticated
`;

type Who = 'alice' | 'root' | 'sam';

let h: Harness;
let up: ExpressUpstream;
const tokens = {} as Record<Who, string>;

beforeAll(async () => {
  up = await startExpressUpstream();
  h = await startHarness({ upstreamExtra: `  exp:\n    url: ${up.url}\n    timeout: 5s\n`, routes: ROUTES });
  await addUser(h, 'alice', []);
  await addUser(h, 'root', ['admin']);
  await addUser(h, 'sam', ['staff']);
  for (const who of ['alice', 'root', 'sam'] as const) tokens[who] = await login(h, who);
});

afterAll(async () => {
  await h?.close();
  await up?.close();
});

beforeEach(() => {
  up.seen.length = 0;
});

/** GET with a raw target, as `who`, optionally with another Host. */
function get(gw: Harness, target: string, token: string | undefined, hostHeader?: string): Promise<RawResponse> {
  return rawGet(gw.url, target, token ? { Authorization: `Bearer ${token}` } : {}, hostHeader);
}

function problemCode(r: RawResponse): string | undefined {
  if (!/^application\/problem\+json/.test(r.headers['content-type'] ?? '')) return undefined;
  return (JSON.parse(r.body) as { code: string }).code;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function expectNotForwarded(upstream: ExpressUpstream, what: string): Promise<void> {
  await sleep(50);
  expect(
    upstream.seen.map((s) => `${s.method} ${s.url}`),
    `${what} reached the upstream`,
  ).toEqual([]);
}

describe('the threat is real: the express upstream serves other spellings of /admin from its admin handler', () => {
  for (const target of ['/ADMIN/x', '/Admin/x', '/aDmIn/x']) {
    it(`express answers ${target} with its admin handler`, async () => {
      const r = (await (await fetch(`${up.url}${target}`)).json()) as Served;
      expect(r.served).toBe('admin');
    });
  }
});

describe('case and trailing dot/space spellings of /admin are judged as /admin (403 for a non-admin, never forwarded)', () => {
  const spellings: [string, string][] = [
    ['/ADMIN/x', 'upper case'],
    ['/Admin/x', 'mixed case'],
    ['/admin./x', 'trailing dot'],
    ['/admin../x', 'two trailing dots'],
    ['/admin%2e/x', 'encoded trailing dot'],
    ['/admin%2E/x', 'encoded trailing dot, upper-case hex'],
    ['/admin%20/x', 'encoded trailing space'],
    ['/admin.%20/x', 'trailing dot and encoded space'],
    ['/ADMIN%20./x', 'upper case, encoded space and dot'],
    ['/admin./', 'trailing dot, nothing below'],
  ];
  for (const [target, why] of spellings) {
    it(`${target} (${why}) as a signed-in non-admin: 403 forbidden`, async () => {
      const r = await get(h, target, tokens.alice);
      await expectNotForwarded(up, target);
      expect(r.status, r.body).toBe(403);
      expect(problemCode(r)).toBe('forbidden');
    });
  }

  it('anonymous /ADMIN/x is 401 on the admin route (not the catch-all)', async () => {
    const r = await get(h, '/ADMIN/x', undefined);
    await expectNotForwarded(up, '/ADMIN/x');
    expect(r.status).toBe(401);
  });
});

describe('spellings of the deny route are denied', () => {
  const spellings = ['/internal./x', '/INTERNAL/x', '/Internal/x', '/internal%20/x', '/internal%2e/x', '/INTERNAL.%20/x'];
  for (const target of spellings) {
    it(`${target}: 403 for a plain user and for an admin, never forwarded`, async () => {
      for (const who of ['alice', 'root'] as const) {
        const r = await get(h, target, tokens[who]);
        await expectNotForwarded(up, `${target} as ${who}`);
        expect(r.status, `${target} as ${who}: ${r.body}`).toBe(403);
      }
    });
  }
});

describe('";" spelled %3B is treated exactly like ";" (400 on a route without allow_semicolons)', () => {
  for (const target of ['/admin;x/y', '/admin%3Bx/y', '/admin%3bx/y', '/app/a%3Bjsessionid=1']) {
    it(`${target}: 400 bad_path, never forwarded`, async () => {
      for (const who of ['alice', 'root'] as const) {
        const r = await get(h, target, tokens[who]);
        await expectNotForwarded(up, target);
        expect(r.status, `${target} as ${who}: ${r.body}`).toBe(400);
        expect(problemCode(r)).toBe('bad_path');
      }
    });
  }
});

describe('double-encoded ".", "/", "\\", ";" and NUL are 400 bad_path wherever they appear', () => {
  const targets = [
    '/app/%252e%252e/admin/x',
    '/app/%252E%252E/admin/x',
    '/%252e%252e/admin',
    '/app%252fadmin/x',
    '/app/a%252Fb',
    '/admin%255cx',
    '/app/a%255Cb',
    '/app/a%253bb',
    '/app/a%253Bx=1',
    '/app/a%2500',
    '/admin%2500/x',
    '/app/x/%252e',
  ];
  for (const target of targets) {
    it(`${target}: 400 bad_path for anyone`, async () => {
      for (const who of ['alice', 'root'] as const) {
        const r = await get(h, target, tokens[who]);
        await expectNotForwarded(up, target);
        expect(r.status, `${target} as ${who}: ${r.body}`).toBe(400);
        expect(problemCode(r)).toBe('bad_path');
      }
    });
  }
});

describe('Host spellings match the host route', () => {
  for (const hostHeader of ['INTRANET.example.com', 'Intranet.Example.Com', 'intranet.example.com.', 'INTRANET.EXAMPLE.COM.']) {
    it(`Host: ${hostHeader} is the intranet route: 403 for a non-staff user, 200 for staff`, async () => {
      const denied = await get(h, '/wiki', tokens.alice, hostHeader);
      await expectNotForwarded(up, `Host ${hostHeader} as alice`);
      expect(denied.status, denied.body).toBe(403);
      expect(problemCode(denied)).toBe('forbidden');
      const ok = await get(h, '/wiki', tokens.sam, hostHeader);
      expect(ok.status, ok.body).toBe(200);
      expect((JSON.parse(ok.body) as Served).user).toBe('sam');
    });
  }

  for (const hostHeader of ['intranet.example.com..', '[intranet.example.com]']) {
    it(`Host: ${hostHeader} is 400, never forwarded`, async () => {
      const r = await get(h, '/wiki', tokens.sam, hostHeader);
      await expectNotForwarded(up, `Host ${hostHeader}`);
      expect(r.status, r.body).toBe(400);
      const code = problemCode(r);
      if (code !== undefined) expect(code).toBe('bad_host');
    });
  }
});

describe('the upstream receives the normalized path, not the case-folded key', () => {
  for (const [target, forwarded] of [
    ['/ADMIN/X', '/ADMIN/X'],
    ['/Admin/Reports/Q3', '/Admin/Reports/Q3'],
    ['/ADMIN/%41b', '/ADMIN/Ab'],
  ] as const) {
    it(`an admin's ${target} arrives upstream as ${forwarded}`, async () => {
      const r = await get(h, target, tokens.root);
      expect(r.status, r.body).toBe(200);
      const s = JSON.parse(r.body) as Served;
      expect(s.url).toBe(forwarded);
      expect(s.served).toBe('admin');
      expect(s.user).toBe('root');
      expect(up.seen.map((x) => x.url)).toEqual([forwarded]);
    });
  }
});

describe('match.case_sensitive: true', () => {
  let cs: Harness;
  let csUp: ExpressUpstream;
  let alice: string;
  beforeAll(async () => {
    csUp = await startExpressUpstream();
    cs = await startHarness({
      upstreamExtra: `  exp:\n    url: ${csUp.url}\n    timeout: 5s\n`,
      routes: `
routes:
  - name: casesens
    match: { path: /CaseSens/**, case_sensitive: true }
    access: deny
  - name: app
    match: { path: /** }
    upstream: exp
    access: authenticated
`,
    });
    await addUser(cs, 'alice', []);
    alice = await login(cs, 'alice');
  });
  afterAll(async () => {
    await cs?.close();
    await csUp?.close();
  });
  beforeEach(() => {
    if (csUp) csUp.seen.length = 0;
  });

  it('/CaseSens/x matches the case-sensitive deny route (403)', async () => {
    const r = await get(cs, '/CaseSens/x', alice);
    await expectNotForwarded(csUp, '/CaseSens/x');
    expect(r.status).toBe(403);
  });

  it('/CaseSens./x still matches it (trailing dots are removed whatever the case rule)', async () => {
    const r = await get(cs, '/CaseSens./x', alice);
    await expectNotForwarded(csUp, '/CaseSens./x');
    expect(r.status).toBe(403);
  });

  for (const target of ['/casesens/x', '/CASESENS/x']) {
    it(`${target} does NOT match it: the catch-all forwards it unchanged`, async () => {
      const r = await get(cs, target, alice);
      expect(r.status, r.body).toBe(200);
      expect((JSON.parse(r.body) as Served).url).toBe(target);
    });
  }
});
