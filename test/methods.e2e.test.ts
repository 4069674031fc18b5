/**
 * Issue 8, class 3 (methods), outside in: SPEC §3.1 "Methods". Frameworks behind the gateway
 * (express `method-override`, Symfony, Rails, many Java stacks) let a header turn a POST into
 * a DELETE, and IIS/Symfony-style stacks route on `X-Original-URL`/`X-Rewrite-URL` instead of
 * the request line. A gateway that authorizes the request line and forwards those headers
 * authorizes a request the upstream never acts on.
 *
 * The contract: `X-HTTP-Method-Override`, `X-HTTP-Method` and `X-Method-Override` are removed
 * before forwarding unless the upstream sets `method_override: true`, in which case the
 * overriding method is the one authorized; `X-Original-URL` and `X-Rewrite-URL` never reach an
 * upstream. And the SHIPPED config must not let a signed-in non-admin's `DELETE /admin/x` fall
 * through its method-restricted admin route to the authenticated catch-all.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/index.js';
import { createApp } from '../src/app.js';
import { createLogger } from '../src/http/log.js';
import { addUser, login, rawRequest, startHarness, type Harness, type RawResponse } from './support/helpers.js';
import { startRecorder, type Recorder, type Seen } from './support/recorder.js';

const OVERRIDE_HEADERS = ['X-HTTP-Method-Override', 'X-HTTP-Method', 'X-Method-Override'];
const URL_HEADERS = ['X-Original-URL', 'X-Rewrite-URL'];

/** Viewers may GET and POST documents; everything else on /docs is denied. */
const routesFor = (upstream: string) => `
routes:
  - name: docs-read
    match: { path: /docs/**, methods: [GET, POST] }
    upstream: ${upstream}
    access: { roles: [viewer] }
  - name: docs-rest
    match: { path: /docs/** }
    access: deny
  - name: public
    match: { path: /public/** }
    upstream: ${upstream}
    access: public
  - name: app
    match: { path: /app/** }
    upstream: ${upstream}
    access: authenticated
`;

function send(gw: { url: string }, method: string, path: string, headers: [string, string][], body = ''): Promise<RawResponse> {
  const host = new URL(gw.url).host;
  const lines = headers.map(([k, v]) => `${k}: ${v}\r\n`).join('');
  const framing = method === 'GET' || method === 'HEAD' || method === 'DELETE' ? '' : `Content-Length: ${Buffer.byteLength(body)}\r\n`;
  return rawRequest(gw.url, `${method} ${path} HTTP/1.1\r\nHost: ${host}\r\n${lines}${framing}Connection: close\r\n\r\n${body}`);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function headerNames(s: Seen): string[] {
  const out: string[] = [];
  for (let i = 0; i < s.rawHeaders.length; i += 2) out.push(s.rawHeaders[i].toLowerCase());
  return out;
}

function expectNoneOf(s: Seen, names: string[]): void {
  const have = headerNames(s);
  for (const n of names) expect(have, `${n} reached the upstream on ${s.method} ${s.url}`).not.toContain(n.toLowerCase());
}

function problemCode(r: RawResponse): string | undefined {
  if (!/^application\/problem\+json/.test(r.headers['content-type'] ?? '')) return undefined;
  return (JSON.parse(r.body) as { code: string }).code;
}

describe('an ordinary upstream (method_override: false): override and rewrite headers are removed', () => {
  let h: Harness;
  let rec: Recorder;
  let viewer: string;
  beforeAll(async () => {
    rec = await startRecorder();
    h = await startHarness({ upstreamExtra: `  rec:\n    url: ${rec.url}\n    timeout: 5s\n`, routes: routesFor('rec') });
    await addUser(h, 'vera', ['viewer']);
    viewer = await login(h, 'vera');
  });
  afterAll(async () => {
    await h?.close();
    await rec?.close();
  });
  beforeEach(() => {
    rec.seen.length = 0;
  });

  it('the route set-up: a viewer may POST but not DELETE /docs/a', async () => {
    const post = await send(h, 'POST', '/docs/a', [['Authorization', `Bearer ${viewer}`]], '{}');
    expect(post.status).toBe(200);
    const del = await send(h, 'DELETE', '/docs/a', [['Authorization', `Bearer ${viewer}`]]);
    expect(del.status).toBe(403);
    await sleep(50);
    expect(rec.seen.map((s) => `${s.method} ${s.url}`)).toEqual(['POST /docs/a']);
  });

  for (const name of OVERRIDE_HEADERS) {
    it(`POST /docs/a with ${name}: DELETE is forwarded as a plain POST, without ${name}`, async () => {
      const r = await send(
        h,
        'POST',
        '/docs/a',
        [
          ['Authorization', `Bearer ${viewer}`],
          [name, 'DELETE'],
        ],
        '{}',
      );
      expect(r.status).toBe(200);
      expect(rec.seen).toHaveLength(1);
      expect(rec.seen[0].method).toBe('POST');
      expectNoneOf(rec.seen[0], OVERRIDE_HEADERS);
    });
  }

  it('every override header at once, in odd case and repeated, is removed', async () => {
    const r = await send(
      h,
      'POST',
      '/docs/a',
      [
        ['Authorization', `Bearer ${viewer}`],
        ['x-http-method-override', 'DELETE'],
        ['X-Http-Method-Override', 'DELETE'],
        ['x-HTTP-method', 'DELETE'],
        ['X-METHOD-OVERRIDE', 'DELETE'],
      ],
      '{}',
    );
    expect(r.status, r.body).toBe(200);
    expect(rec.seen).toHaveLength(1);
    expectNoneOf(rec.seen[0], OVERRIDE_HEADERS);
  });

  it('the CGI spelling X_HTTP_METHOD_OVERRIDE (same variable to PHP/Rack/WSGI upstreams) is removed too', async () => {
    const r = await send(
      h,
      'POST',
      '/docs/a',
      [
        ['Authorization', `Bearer ${viewer}`],
        ['X_HTTP_METHOD_OVERRIDE', 'DELETE'],
      ],
      '{}',
    );
    if (r.status === 200) {
      expect(rec.seen).toHaveLength(1);
      expectNoneOf(rec.seen[0], ['x_http_method_override']);
    } else {
      // Refusing the odd spelling outright is as safe.
      expect(r.status, r.body).toBe(400);
      expect(rec.seen).toEqual([]);
    }
  });

  it('override headers are removed on a public route too', async () => {
    const r = await send(
      h,
      'POST',
      '/public/form',
      OVERRIDE_HEADERS.map((n) => [n, 'DELETE'] as [string, string]),
      'a=1',
    );
    expect(r.status).toBe(200);
    expect(rec.seen).toHaveLength(1);
    expect(rec.seen[0].method).toBe('POST');
    expectNoneOf(rec.seen[0], OVERRIDE_HEADERS);
  });

  for (const name of URL_HEADERS) {
    for (const [path, auth] of [
      ['/public/a', false],
      ['/app/a', true],
      ['/docs/a', true],
    ] as const) {
      it(`${name}: /admin never reaches the upstream (GET ${path}${auth ? ', signed in' : ''})`, async () => {
        const headers: [string, string][] = [[name, '/admin/delete-everything']];
        if (auth) headers.push(['Authorization', `Bearer ${viewer}`]);
        const r = await send(h, 'GET', path, headers);
        expect(r.status).toBe(200);
        expect(rec.seen).toHaveLength(1);
        expect(rec.seen[0].url).toBe(path);
        expectNoneOf(rec.seen[0], URL_HEADERS);
      });
    }
  }

  it('X-Original-URL and X-Rewrite-URL in odd case, repeated, are all removed', async () => {
    const r = await send(h, 'GET', '/public/a', [
      ['x-original-url', '/admin'],
      ['X-ORIGINAL-URL', '/internal'],
      ['x-rewrite-url', '/admin'],
      ['X-Rewrite-Url', '/internal'],
    ]);
    expect(r.status).toBe(200);
    expect(rec.seen).toHaveLength(1);
    expectNoneOf(rec.seen[0], URL_HEADERS);
  });
});

describe('an upstream with method_override: true: the overriding method is the one authorized', () => {
  /**
   * Security first: no override header naming the refused method reaches this upstream (it
   * would act on it). Then the contract: the request is refused as that method (403), not
   * silently forwarded as the sent method.
   */
  async function expectRefusedAsOverride(r: RawResponse, statuses: number[] = [403]): Promise<void> {
    await sleep(50);
    for (const s of rec.seen) expectNoneOf(s, [...OVERRIDE_HEADERS, 'X_HTTP_METHOD_OVERRIDE']);
    expect(
      rec.seen.map((s) => `${s.method} ${s.url}`),
      'forwarded as the sent method instead of refused as the overriding one',
    ).toEqual([]);
    expect(statuses, r.body).toContain(r.status);
  }
  let h: Harness;
  let rec: Recorder;
  let viewer: string;
  beforeAll(async () => {
    rec = await startRecorder();
    h = await startHarness({ upstreamExtra: `  mo:\n    url: ${rec.url}\n    timeout: 5s\n    method_override: true\n`, routes: routesFor('mo') });
    await addUser(h, 'vera', ['viewer']);
    viewer = await login(h, 'vera');
  });
  afterAll(async () => {
    await h?.close();
    await rec?.close();
  });
  beforeEach(() => {
    if (rec) rec.seen.length = 0;
  });

  for (const name of OVERRIDE_HEADERS) {
    it(`POST /docs/a with ${name}: DELETE is judged as DELETE: 403, never forwarded`, async () => {
      const r = await send(
        h,
        'POST',
        '/docs/a',
        [
          ['Authorization', `Bearer ${viewer}`],
          [name, 'DELETE'],
        ],
        '{}',
      );
      await expectRefusedAsOverride(r);
    });
  }

  it('the CGI spelling X_HTTP_METHOD_OVERRIDE: DELETE is judged as DELETE too (403 or 400, never forwarded)', async () => {
    const r = await send(
      h,
      'POST',
      '/docs/a',
      [
        ['Authorization', `Bearer ${viewer}`],
        ['X_HTTP_METHOD_OVERRIDE', 'DELETE'],
      ],
      '{}',
    );
    await expectRefusedAsOverride(r, [400, 403]);
  });

  it('a lower-case override value (delete) is judged as DELETE too', async () => {
    const r = await send(
      h,
      'POST',
      '/docs/a',
      [
        ['Authorization', `Bearer ${viewer}`],
        ['X-HTTP-Method-Override', 'delete'],
      ],
      '{}',
    );
    await expectRefusedAsOverride(r);
  });

  it('GET /docs/a with X-HTTP-Method-Override: PUT is judged as PUT: 403', async () => {
    const r = await send(h, 'GET', '/docs/a', [
      ['Authorization', `Bearer ${viewer}`],
      ['X-HTTP-Method-Override', 'PUT'],
    ]);
    await expectRefusedAsOverride(r);
  });

  it('POST /docs/a with X-HTTP-Method-Override: GET (an allowed method) is forwarded with the header the upstream honours', async () => {
    const r = await send(
      h,
      'POST',
      '/docs/a',
      [
        ['Authorization', `Bearer ${viewer}`],
        ['X-HTTP-Method-Override', 'GET'],
      ],
      '{}',
    );
    expect(r.status, r.body).toBe(200);
    expect(rec.seen).toHaveLength(1);
    expect(rec.seen[0].headers['x-http-method-override']).toBe('GET');
  });

  it('a plain POST is still allowed', async () => {
    const r = await send(h, 'POST', '/docs/a', [['Authorization', `Bearer ${viewer}`]], '{}');
    expect(r.status, r.body).toBe(200);
    expect(rec.seen.map((s) => s.method)).toEqual(['POST']);
  });

  it('X-Original-URL and X-Rewrite-URL are removed here too', async () => {
    const r = await send(h, 'GET', '/docs/a', [
      ['Authorization', `Bearer ${viewer}`],
      ['X-Original-URL', '/admin'],
      ['X-Rewrite-URL', '/admin'],
    ]);
    expect(r.status, r.body).toBe(200);
    expect(rec.seen).toHaveLength(1);
    expectNoneOf(rec.seen[0], URL_HEADERS);
  });
});

describe('the shipped config/gateway.yaml', () => {
  let rec: Recorder;
  let dir: string;
  let gw: { url: string; app: Awaited<ReturnType<typeof createApp>> };
  let userToken: string;
  let adminToken: string;
  beforeAll(async () => {
    rec = await startRecorder();
    dir = mkdtempSync(join(tmpdir(), 'portcullis-shipped-'));
    const file = fileURLToPath(new URL('../config/gateway.yaml', import.meta.url));
    const env = {
      PORTCULLIS_LISTEN: '127.0.0.1:0',
      PORTCULLIS_ADMIN_LISTEN: '127.0.0.1:0',
      PORTCULLIS_DEMO_LISTEN: '127.0.0.1:0',
      PORTCULLIS_DEMO_URL: rec.url,
      DATABASE_URL: `sqlite:${join(dir, 'gateway.db')}`,
      REDIS_URL: '',
    };
    // The shipped file as loaded; only where it keeps files changes, and the bundled echo app
    // stays off (this test's recorder is the demo upstream).
    const { demo_upstream: _demo, ...loaded } = loadConfig(file, env);
    const config = { ...loaded, data_dir: dir };
    const sink = new Writable({ write: (_c, _e, cb) => cb() });
    const app = await createApp({ config, env: {}, logger: createLogger('info', sink), bootstrapAdmin: false });
    const { url } = await app.start();
    gw = { url, app };
    const asHarness = gw as unknown as Harness;
    await addUser(asHarness, 'alice', []);
    await addUser(asHarness, 'root', ['admin']);
    userToken = await login(asHarness, 'alice');
    adminToken = await login(asHarness, 'root');
  });
  afterAll(async () => {
    await gw?.app.stop(1000);
    await rec?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });
  beforeEach(() => {
    if (rec) rec.seen.length = 0;
  });

  for (const method of ['DELETE', 'PUT', 'PATCH']) {
    it(`a signed-in non-admin's ${method} /admin/x does not fall through to the catch-all: 403, never forwarded`, async () => {
      const r = await send(gw, method, '/admin/x', [['Authorization', `Bearer ${userToken}`]], method === 'DELETE' ? '' : '{}');
      await sleep(50);
      expect(
        rec.seen.map((s) => `${s.method} ${s.url}`),
        `${method} /admin/x reached the demo upstream`,
      ).toEqual([]);
      expect(r.status, r.body).toBe(403);
    });
  }

  it('a signed-in non-admin GET /admin/x is 403 (forbidden) and an admin GET is forwarded', async () => {
    const user = await send(gw, 'GET', '/admin/x', [['Authorization', `Bearer ${userToken}`]]);
    expect(user.status).toBe(403);
    expect(problemCode(user)).toBe('forbidden');
    const admin = await send(gw, 'GET', '/admin/x', [['Authorization', `Bearer ${adminToken}`]]);
    expect(admin.status).toBe(200);
    expect(rec.seen.map((s) => `${s.method} ${s.url}`)).toEqual(['GET /admin/x']);
  });

  it('the catch-all still serves a signed-in user', async () => {
    const r = await send(gw, 'GET', '/hello', [['Authorization', `Bearer ${userToken}`]]);
    expect(r.status).toBe(200);
    expect(rec.seen.map((s) => `${s.method} ${s.url}`)).toEqual(['GET /hello']);
  });
});
