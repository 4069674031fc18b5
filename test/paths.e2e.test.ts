import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EchoReply } from '../src/demo/echo.js';
import { addUser, login, rawGet, rawRequest, startHarness, type Harness, type RawResponse } from './support/helpers.js';

/**
 * SPEC §3 rule 1 end to end: raw request targets (written byte for byte on a socket, so no
 * client normalizes them) against the real gateway and a real echo upstream. For every target
 * the gateway either rejects it with 400 `bad_path`, or matches the route of the *normalized*
 * path and forwards exactly that normalized path.
 */

type Who = 'anon' | 'user' | 'admin';

let h: Harness;
const tokens: Record<Who, string | undefined> = { anon: undefined, user: undefined, admin: undefined };

beforeAll(async () => {
  h = await startHarness();
  await addUser(h, 'alice', ['staff']);
  await addUser(h, 'root', ['admin']);
  tokens.user = await login(h, 'alice');
  tokens.admin = await login(h, 'root');
});

afterAll(async () => {
  await h?.close();
});

function auth(who: Who): Record<string, string> {
  const t = tokens[who];
  return t ? { Authorization: `Bearer ${t}` } : {};
}

function get(target: string, who: Who): Promise<RawResponse> {
  return rawGet(h.url, target, auth(who));
}

/** Sends a request whose target may contain bytes `rawGet` cannot express in a JS string literal nicely. */
function getBytes(target: Buffer, who: Who): Promise<RawResponse> {
  const host = new URL(h.url).host;
  const extra = Object.entries(auth(who))
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join('');
  return rawRequest(h.url, Buffer.concat([Buffer.from('GET '), target, Buffer.from(` HTTP/1.1\r\nHost: ${host}\r\n${extra}Connection: close\r\n\r\n`)]));
}

function echoOf(r: RawResponse): EchoReply {
  expect(r.headers['content-type'] ?? '').toMatch(/^application\/json/);
  return JSON.parse(r.body) as EchoReply;
}

/** A 400 from the gateway: when it has a body (Node's own parser may answer a bare 400), the problem code is bad_path. */
function expectBadPath(r: RawResponse): void {
  expect(r.status).toBe(400);
  if (r.body.length > 0) {
    expect(r.headers['content-type']).toMatch(/^application\/problem\+json/);
    const p = JSON.parse(r.body) as { code: string; status: number };
    expect(p.code).toBe('bad_path');
    expect(p.status).toBe(400);
  }
}

/** The admin route's answer for a path that normalizes into it. */
async function expectAdminRoute(target: string, expectedUpstreamPath: string): Promise<void> {
  const anon = await get(target, 'anon');
  expect(anon.status, `${target} anonymous`).toBe(401);
  expect(JSON.parse(anon.body).code).toBe('unauthenticated');
  expect(anon.headers['www-authenticate']).toBe('Bearer realm="portcullis"');

  const user = await get(target, 'user');
  expect(user.status, `${target} non-admin`).toBe(403);
  expect(JSON.parse(user.body).code).toBe('forbidden');

  const admin = await get(target, 'admin');
  expect(admin.status, `${target} admin`).toBe(200);
  const e = echoOf(admin);
  expect(e.path).toBe(expectedUpstreamPath);
  expect(e.url).toBe(expectedUpstreamPath);
  expect(e.identity.user).toBe('root');
  expect(e.identity.roles).toEqual(['admin']);
}

describe('dot segments and slashes resolve before matching', () => {
  it('/public/../admin is not served as public: it is /admin (401 / 403 / forwarded as exactly /admin)', async () => {
    await expectAdminRoute('/public/../admin', '/admin');
  });

  it('//admin is treated as /admin', async () => {
    await expectAdminRoute('//admin', '/admin');
  });

  it('/./admin is treated as /admin', async () => {
    await expectAdminRoute('/./admin', '/admin');
  });

  it('/%61dmin (encoded unreserved character) is matched as /admin', async () => {
    await expectAdminRoute('/%61dmin', '/admin');
  });

  it('a deeper walk-out /public/a/b/../../../admin/x lands on /admin/x', async () => {
    await expectAdminRoute('/public/a/b/../../../admin/x', '/admin/x');
  });

  it('/public//x/./y/ is forwarded collapsed as /public/x/y/', async () => {
    const r = await get('/public//x/./y/', 'anon');
    expect(r.status).toBe(200);
    expect(echoOf(r).path).toBe('/public/x/y/');
  });
});

describe('rejected targets (400 bad_path), whoever asks', () => {
  const rejected: [string, string][] = [
    ['/public/%2e%2e/admin', 'encoded dot segment'],
    ['/public/%2E%2E/admin', 'encoded dot segment, upper-case hex'],
    ['/public/.%2e/admin', 'half-encoded dot segment'],
    ['/public/..%2fadmin', 'encoded slash'],
    ['/public/%2Fadmin', 'encoded slash, upper-case'],
    ['/admin/%00', 'encoded NUL'],
    ['/admin%5c..', 'encoded backslash'],
    ['/public/%5c../admin', 'encoded backslash in a segment'],
    ['/..', 'dot-dot above the root'],
    ['/public/../..', 'dot-dot above the root after a segment'],
    ['/public/a#frag', 'fragment in the target'],
    ['/public/#/../admin', 'fragment hiding a walk-out'],
    ['/public\\..\\admin', 'literal backslash'],
    ['/public/..;/admin', 'dot segment with parameters (Tomcat ..;)'],
    ['/public/%zz', 'invalid percent-escape'],
  ];
  for (const [target, why] of rejected) {
    for (const who of ['anon', 'user', 'admin'] as const) {
      it(`${target} (${why}) as ${who}`, async () => {
        expectBadPath(await get(target, who));
      });
    }
  }

  it('a control character in the path (0x01) is rejected', async () => {
    expectBadPath(await getBytes(Buffer.from([0x2f, 0x70, 0x75, 0x62, 0x6c, 0x69, 0x63, 0x2f, 0x61, 0x01, 0x62]), 'user'));
  });

  it('DEL (0x7f) in the path is rejected', async () => {
    expectBadPath(await getBytes(Buffer.from('/public/a\x7fb', 'latin1'), 'user'));
  });

  it('an encoded control character (%0a) in the path is rejected', async () => {
    expectBadPath(await get('/public/a%0ab', 'user'));
  });

  it('a tab in the path is rejected', async () => {
    expectBadPath(await getBytes(Buffer.from('/public/a\tb', 'latin1'), 'anon'));
  });
});

describe('semicolons', () => {
  it('/admin;x=1 is rejected with 400 on a route without allow_semicolons (not 404, not forwarded)', async () => {
    for (const who of ['anon', 'user', 'admin'] as const) {
      const r = await get('/admin;x=1', who);
      expectBadPath(r);
      expect(r.body.length).toBeGreaterThan(0);
    }
  });

  it('/admin/x;y=1 (inside the admin route) is rejected with 400 before authentication', async () => {
    for (const who of ['anon', 'user', 'admin'] as const) {
      const r = await get('/admin/x;y=1', who);
      expectBadPath(r);
      expect(r.body.length).toBeGreaterThan(0);
    }
  });

  it('/public/a;jsessionid=1 is rejected on the public route', async () => {
    expectBadPath(await get('/public/a;jsessionid=1', 'anon'));
  });

  it('/matrix/a;x=1 is forwarded unchanged on the allow_semicolons route', async () => {
    const r = await get('/matrix/a;x=1', 'user');
    expect(r.status).toBe(200);
    const e = echoOf(r);
    expect(e.path).toBe('/matrix/a;x=1');
    expect(e.identity.user).toBe('alice');
    // The route is still authenticated.
    const anon = await get('/matrix/a;x=1', 'anon');
    expect(anon.status).toBe(401);
  });
});

describe('the query never takes part in matching', () => {
  it('/public/x?next=/admin/secret is the public route; the upstream gets the query unchanged', async () => {
    for (const who of ['anon', 'user'] as const) {
      const r = await get('/public/x?next=/admin/secret', who);
      expect(r.status).toBe(200);
      const e = echoOf(r);
      expect(e.path).toBe('/public/x');
      expect(e.query).toBe('next=/admin/secret');
      expect(e.url).toBe('/public/x?next=/admin/secret');
    }
  });

  it('an encoded query is forwarded byte for byte (no decoding, no re-encoding)', async () => {
    const r = await get('/public/x?a=%2e%2e%2F&b=..%2f', 'anon');
    expect(r.status).toBe(200);
    const e = echoOf(r);
    expect(e.path).toBe('/public/x');
    expect(e.query).toBe('a=%2e%2e%2F&b=..%2f');
  });

  it('/admin?x=/public/y is still the admin route', async () => {
    const r = await get('/admin?x=/public/y', 'user');
    expect(r.status).toBe(403);
    const a = await get('/admin?x=/public/y', 'admin');
    expect(a.status).toBe(200);
    expect(echoOf(a).url).toBe('/admin?x=/public/y');
  });
});
