/**
 * Issue 8, class 1 (framing) and the Host/method items of class 8, outside in: SPEC §3.1
 * "Framing". A real gateway on 127.0.0.1:0 in front of a RECORDING upstream (a plain
 * node:http keep-alive server that logs every request its parser sees). Requests are written
 * byte for byte on raw sockets, so no client normalizes them.
 *
 * The attack these tests stop: Node drops header lines past `maxHeadersCount` from
 * `req.headers` yet llhttp still frames the body with a `Transfer-Encoding`/`Content-Length`
 * among them. A gateway that forwards `req.headers` then sends a GET with an unframed body,
 * and the upstream parses that body as a second request — one the gateway never judged,
 * carrying a forged `X-Auth-User: admin`.
 *
 * The contract: more than `limits.max_header_lines` (default 100) header lines → 431
 * `too_many_headers`, connection closed, never forwarded; conflicting or unparseable
 * `Content-Length`/`Transfer-Encoding` (any `Transfer-Encoding` other than exactly `chunked`),
 * a duplicate `Host` or an invalid `Host` → 400 (`bad_host` for the Host); `TRACE`/`CONNECT`
 * → 405. Node's own parser answers some of these with a bare 400 before the gateway sees them:
 * a 400 with or without a body is accepted there, but the upstream must have seen nothing.
 */
import { connect } from 'node:net';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { addUser, login, startHarness, type Harness } from './support/helpers.js';
import { startRecorder, type Recorder } from './support/recorder.js';
import { seededRandom } from './support/prng.js';

// ---------------------------------------------------------------------------------------
// Raw client: writes bytes, reads responses until the server closes (or a timeout)

interface Resp {
  status: number;
  headers: Record<string, string>;
  body: string;
}

interface Exchange {
  responses: Resp[];
  /** True when the server closed the connection within the wait. */
  closed: boolean;
  raw: string;
}

/** Parses consecutive HTTP/1.1 responses; `methods[i]` is the method of the i-th request (HEAD has no body). */
function parseResponses(text: string, methods: readonly string[], closed: boolean): Resp[] {
  const out: Resp[] = [];
  let i = 0;
  while (i < text.length) {
    const end = text.indexOf('\r\n\r\n', i);
    if (end === -1) break;
    const lines = text.slice(i, end).split('\r\n');
    const status = Number(lines[0].split(' ')[1]);
    const headers: Record<string, string> = {};
    for (const l of lines.slice(1)) {
      const c = l.indexOf(':');
      if (c > 0) headers[l.slice(0, c).trim().toLowerCase()] = l.slice(c + 1).trim();
    }
    let p = end + 4;
    let body = '';
    const method = methods[out.length] ?? 'GET';
    if (status === 100) {
      i = p;
      continue;
    }
    if (method === 'HEAD' || status < 200 || status === 204 || status === 304) {
      // no body
    } else if (/chunked/i.test(headers['transfer-encoding'] ?? '')) {
      let complete = false;
      for (;;) {
        const nl = text.indexOf('\r\n', p);
        if (nl === -1) break;
        const size = parseInt(text.slice(p, nl), 16);
        if (Number.isNaN(size)) break;
        if (size === 0) {
          const t = text.indexOf('\r\n\r\n', nl);
          if (t === -1) break;
          p = t + 4;
          complete = true;
          break;
        }
        if (nl + 2 + size + 2 > text.length) break;
        body += text.slice(nl + 2, nl + 2 + size);
        p = nl + 2 + size + 2;
      }
      if (!complete) break;
    } else if (headers['content-length'] !== undefined) {
      const n = Number(headers['content-length']);
      if (p + n > text.length) break;
      body = text.slice(p, p + n);
      p += n;
    } else {
      if (!closed) break;
      body = text.slice(p);
      p = text.length;
    }
    out.push({ status, headers, body });
    if (status === 101) break;
    i = p;
  }
  return out;
}

function exchange(url: string, data: string | Buffer, opts: { methods?: string[]; waitMs?: number } = {}): Promise<Exchange> {
  const { hostname, port } = new URL(url);
  const methods = opts.methods ?? [];
  return new Promise((resolve) => {
    const sock = connect(Number(port), hostname);
    let text = '';
    let closed = false;
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      resolve({ responses: parseResponses(text, methods, closed), closed, raw: text });
    };
    const timer = setTimeout(finish, opts.waitMs ?? 2500);
    sock.on('data', (d: Buffer) => (text += d.toString('latin1')));
    // A reset after the answer (the server closed with unread bytes) is a close too.
    sock.on('error', () => undefined);
    sock.on('close', () => {
      closed = true;
      finish();
    });
    sock.write(typeof data === 'string' ? Buffer.from(data, 'latin1') : data);
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------

const ROUTES = `
routes:
  - name: public
    match: { path: /public/** }
    upstream: rec
    access: public
  - name: admin
    match: { path: /admin/** }
    upstream: rec
    access: { roles: [admin] }
  - name: closed
    match: { path: /internal/** }
    access: deny
  - name: app
    match: { path: /app/** }
    upstream: rec
    access: authenticated
`;

let h: Harness;
let rec: Recorder;
let host: string;
let token: string;

beforeAll(async () => {
  // Every header line the gateway forwards is recorded; so is every CONNECT, and every parse
  // error (bytes that were no request of the client's reached the upstream).
  rec = await startRecorder({ maxHeadersCount: 0, clientErrors: true, connect: true });
  h = await startHarness({ upstreamExtra: `  rec:\n    url: ${rec.url}\n    timeout: 5s\n`, routes: ROUTES });
  host = new URL(h.url).host;
  await addUser(h, 'alice', []);
  token = await login(h, 'alice');
});

afterAll(async () => {
  await h?.close();
  await rec?.close();
});

beforeEach(() => {
  rec.seen.length = 0;
  rec.errors.length = 0;
});

/** `n` short filler header lines. */
function filler(n: number, from = 0): string {
  let s = '';
  for (let i = from; i < from + n; i++) s += `f${i}: 1\r\n`;
  return s;
}

/** The request the attacker wants the upstream to act on: a forged admin DELETE. */
function smuggled(path = '/app/x'): string {
  return `DELETE ${path} HTTP/1.1\r\nHost: ${host}\r\nX-Auth-User: admin\r\nContent-Length: 0\r\n\r\n`;
}

function chunked(data: string): string {
  return `${Buffer.byteLength(data, 'latin1').toString(16)}\r\n${data}\r\n0\r\n\r\n`;
}

function describeSeen(): string {
  return JSON.stringify({ seen: rec.seen.map((s) => `${s.method} ${s.url} x-auth-user=${String(s.headers['x-auth-user'])}`), errors: rec.errors });
}

/**
 * Waits for late arrivals at the upstream (150 ms, unless the caller already waited), then
 * asserts it received nothing at all.
 */
async function expectNothingForwarded(waitMs = 150): Promise<void> {
  await sleep(waitMs);
  expect(rec.seen, `the upstream received a request: ${describeSeen()}`).toEqual([]);
  expect(rec.errors, `the upstream received unparseable bytes: ${describeSeen()}`).toEqual([]);
}

/** Never a forged identity, never a smuggled request (in this test). */
function expectNoForgery(): void {
  for (const s of rec.seen) {
    expect(s.headers['x-auth-user'], `forged identity reached the upstream: ${s.method} ${s.url}`).not.toBe('admin');
    expect(s.url, `smuggled request reached the upstream: ${s.method} ${s.url}`).not.toContain('smuggled');
  }
}

function expectProblem(r: Resp, status: number, code: string): void {
  expect(r.status).toBe(status);
  expect(r.headers['content-type'] ?? '').toMatch(/^application\/problem\+json/);
  const p = JSON.parse(r.body) as { code: string; status: number };
  expect(p.code).toBe(code);
  expect(p.status).toBe(status);
}

/** A 400 from the gateway or from Node's parser (bare); a body, when present, is problem+json. */
function expect400(r: Resp | undefined, code?: string): void {
  expect(r, 'no response at all').toBeDefined();
  expect(r!.status).toBe(400);
  if (r!.body.length > 0 && /^application\/problem\+json/.test(r!.headers['content-type'] ?? '')) {
    const p = JSON.parse(r!.body) as { code: string; status: number };
    expect(p.status).toBe(400);
    if (code) expect(p.code).toBe(code);
  }
}

// ---------------------------------------------------------------------------------------

describe('header-count smuggling: framing hidden past the header limit is 431, never forwarded', () => {
  const cases: { method: string; path: string; auth: boolean }[] = [];
  for (const method of ['GET', 'HEAD', 'DELETE', 'OPTIONS']) {
    cases.push({ method, path: '/public/a', auth: false });
    cases.push({ method, path: '/app/a', auth: true });
  }
  for (const { method, path, auth } of cases) {
    for (const framing of ['chunked', 'content-length'] as const) {
      const who = auth ? 'with a bearer token (authenticated route)' : 'anonymous (public route)';
      it(`${method} ${path} ${who}: 1000 filler headers then ${framing === 'chunked' ? 'Transfer-Encoding: chunked' : 'Content-Length'} cannot smuggle DELETE /app/x as admin (431 too_many_headers)`, async () => {
        const inner = smuggled('/app/x');
        const framingLine = framing === 'chunked' ? 'Transfer-Encoding: chunked\r\n' : `Content-Length: ${inner.length}\r\n`;
        const body = framing === 'chunked' ? chunked(inner) : inner;
        const authLine = auth ? `Authorization: Bearer ${token}\r\n` : '';
        // No `Connection: close`: the gateway itself must close the connection.
        const raw = `${method} ${path} HTTP/1.1\r\nHost: ${host}\r\n${authLine}${filler(1000)}${framingLine}\r\n${body}`;
        const ex = await exchange(h.url, raw, { methods: [method, 'DELETE'] });
        // First what matters most: the upstream acted on nothing, least of all the forged DELETE.
        await sleep(150);
        expectNoForgery();
        await expectNothingForwarded(0); // waited just above
        expect(ex.responses.length, `responses: ${JSON.stringify(ex.raw.slice(0, 400))}`).toBe(1);
        const r = ex.responses[0];
        if (method === 'HEAD') expect(r.status).toBe(431);
        else expectProblem(r, 431, 'too_many_headers');
        expect(ex.closed, 'the gateway must close the connection after a 431').toBe(true);
      });
    }
  }

  it('the framing header first, then 1000 filler lines: still 431 and nothing forwarded', async () => {
    const inner = smuggled('/app/x');
    const raw = `GET /public/a HTTP/1.1\r\nHost: ${host}\r\nContent-Length: ${inner.length}\r\n${filler(1000)}\r\n${inner}`;
    const ex = await exchange(h.url, raw, { methods: ['GET'] });
    await expectNothingForwarded();
    expectProblem(ex.responses[0], 431, 'too_many_headers');
    expect(ex.closed).toBe(true);
  });

  it("150 header lines (under Node's own limit, over the gateway's 100) are 431, not forwarded truncated or whole", async () => {
    const raw = `GET /public/a HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n${filler(148)}\r\n`;
    const ex = await exchange(h.url, raw, { methods: ['GET'] });
    await expectNothingForwarded();
    expectProblem(ex.responses[0], 431, 'too_many_headers');
  });

  it('101 header lines are 431', async () => {
    const raw = `GET /public/a HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n${filler(99)}\r\n`;
    const ex = await exchange(h.url, raw, { methods: ['GET'] });
    await expectNothingForwarded();
    expectProblem(ex.responses[0], 431, 'too_many_headers');
  });

  it('exactly 100 header lines are accepted and every one is forwarded', async () => {
    const raw = `GET /public/a HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n${filler(98)}\r\n`;
    const ex = await exchange(h.url, raw, { methods: ['GET'] });
    expect(ex.responses[0]?.status).toBe(200);
    await sleep(50);
    expect(rec.seen).toHaveLength(1);
    expect(rec.seen[0].method).toBe('GET');
    expect(rec.seen[0].url).toBe('/public/a');
    expect(rec.seen[0].headers.f0).toBe('1');
    expect(rec.seen[0].headers.f97).toBe('1');
  });
});

describe('conflicting or unparseable framing is 400 and nothing is forwarded', () => {
  const inner = (): string => smuggled('/app/smuggled-framing');
  /** [name, framing header lines, body] */
  const cases: [string, () => string, () => string][] = [
    ['Content-Length: 5, 6', () => 'Content-Length: 5, 6\r\n', () => inner()],
    ['two differing Content-Length lines', () => `Content-Length: 5\r\nContent-Length: ${inner().length}\r\n`, () => inner()],
    ['Content-Length: +N', () => `Content-Length: +${inner().length}\r\n`, () => inner()],
    ['Content-Length: 0xN (hex)', () => `Content-Length: 0x${inner().length.toString(16)}\r\n`, () => inner()],
    ['Transfer-Encoding: gzip, chunked', () => 'Transfer-Encoding: gzip, chunked\r\n', () => chunked(inner())],
    ['Transfer-Encoding: chunked, identity', () => 'Transfer-Encoding: chunked, identity\r\n', () => chunked(inner())],
    ['Transfer-Encoding: xchunked', () => 'Transfer-Encoding: xchunked\r\n', () => chunked(inner())],
    ['Transfer-Encoding: identity', () => 'Transfer-Encoding: identity\r\n', () => inner()],
    ['Transfer-Encoding obs-folded onto a continuation line', () => 'Transfer-Encoding:\r\n chunked\r\n', () => chunked(inner())],
    ['two Transfer-Encoding: chunked lines', () => 'Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n', () => chunked(inner())],
    [
      'Transfer-Encoding: identity then Transfer-Encoding: chunked',
      () => 'Transfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n',
      () => chunked(inner()),
    ],
    [
      'Transfer-Encoding: chunked together with Content-Length',
      () => `Transfer-Encoding: chunked\r\nContent-Length: ${inner().length}\r\n`,
      () => chunked(inner()),
    ],
  ];
  for (const [name, headers, body] of cases) {
    for (const method of ['POST', 'GET']) {
      it(`${method} with ${name}: 400, the upstream sees nothing`, async () => {
        const raw = `${method} /public/a HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n${headers()}\r\n${body()}`;
        const ex = await exchange(h.url, raw, { methods: [method] });
        await expectNothingForwarded();
        expect400(ex.responses[0]);
        expectNoForgery();
      });
    }
  }

  it('a properly chunked POST is still forwarded (the checks are not a blanket refusal)', async () => {
    const raw = `POST /public/a HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n${chunked('hello')}`;
    const ex = await exchange(h.url, raw, { methods: ['POST'] });
    expect(ex.responses[0]?.status).toBe(200);
    expect(rec.seen.map((s) => `${s.method} ${s.url}`)).toEqual(['POST /public/a']);
  });
});

describe('a well-framed body on a bodiless-by-habit method is forwarded framed, as a body', () => {
  // GET/HEAD/DELETE/OPTIONS requests are sent without framing by Node's http client when no
  // framing header is passed on: the body must still arrive as a body, never as a request.
  for (const method of ['GET', 'HEAD', 'DELETE', 'OPTIONS']) {
    for (const framing of ['chunked', 'content-length'] as const) {
      it(`${method} /public/a with a ${framing} body holding a request: the upstream sees exactly one ${method}`, async () => {
        const inner = smuggled(`/public/smuggled-body-${method}-${framing}`);
        const framingLine = framing === 'chunked' ? 'Transfer-Encoding: chunked\r\n' : `Content-Length: ${inner.length}\r\n`;
        const body = framing === 'chunked' ? chunked(inner) : inner;
        const ex = await exchange(h.url, `${method} /public/a HTTP/1.1\r\nHost: ${host}\r\n${framingLine}Connection: close\r\n\r\n${body}`, {
          methods: [method],
        });
        await sleep(150);
        expectNoForgery();
        expect(
          rec.seen.map((s) => `${s.method} ${s.url}`).filter((x) => x !== `${method} /public/a`),
          describeSeen(),
        ).toEqual([]);
        expect(rec.seen.length, describeSeen()).toBeLessThanOrEqual(1);
        expect(rec.errors, describeSeen()).toEqual([]);
        // Refusing such a body would be safe too; forwarding it unframed is what must not happen.
        const status = ex.responses[0]?.status;
        expect([200, 400, 413]).toContain(status);
        if (status === 200) expect(rec.seen).toHaveLength(1);
      });
    }
  }
});

describe('Host: duplicate or invalid is 400, never routed', () => {
  it('two identical Host lines: 400, nothing forwarded', async () => {
    const ex = await exchange(h.url, `GET /public/a HTTP/1.1\r\nHost: ${host}\r\nHost: ${host}\r\nConnection: close\r\n\r\n`, { methods: ['GET'] });
    await expectNothingForwarded();
    expect400(ex.responses[0]);
  });

  it('two different Host lines (first one routed, second one read by the upstream): 400, nothing forwarded', async () => {
    const ex = await exchange(h.url, `GET /public/a HTTP/1.1\r\nHost: ${host}\r\nHost: intranet.example.com\r\nConnection: close\r\n\r\n`, {
      methods: ['GET'],
    });
    await expectNothingForwarded();
    expect400(ex.responses[0]);
  });

  const invalid: [string, string][] = [
    ['a b', 'a space'],
    ['host..', 'an empty label (two trailing dots)'],
    ['[intranet.example.com]', 'a bracketed name that is not an IP literal'],
    ['ex@mple.com', 'userinfo-like @'],
    ['host:abc', 'a non-numeric port'],
    ['host:99999', 'a port above 65535'],
    ['', 'an empty value'],
  ];
  for (const [value, why] of invalid) {
    it(`Host: ${JSON.stringify(value)} (${why}) is 400 bad_host, nothing forwarded`, async () => {
      const ex = await exchange(h.url, `GET /public/a HTTP/1.1\r\nHost: ${value}\r\nConnection: close\r\n\r\n`, { methods: ['GET'] });
      await expectNothingForwarded();
      expect400(ex.responses[0], 'bad_host');
    });
  }

  const valid = ['localhost', 'gw.example.com', 'gw.example.com.', 'GW.Example.COM:8080', '127.0.0.1', '[::1]:8080'];
  for (const value of valid) {
    it(`Host: ${value} is valid and the public route answers`, async () => {
      const ex = await exchange(h.url, `GET /public/a HTTP/1.1\r\nHost: ${value}\r\nConnection: close\r\n\r\n`, { methods: ['GET'] });
      expect(ex.responses[0]?.status).toBe(200);
      expect(rec.seen.map((s) => s.url)).toEqual(['/public/a']);
    });
  }
});

describe('TRACE and CONNECT are 405', () => {
  it('TRACE on a public route is 405 and not forwarded', async () => {
    const ex = await exchange(h.url, `TRACE /public/a HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`, { methods: ['TRACE'] });
    await expectNothingForwarded();
    expect(ex.responses[0]?.status).toBe(405);
  });

  it('TRACE on an authenticated route with a valid token is 405 and not forwarded', async () => {
    const ex = await exchange(h.url, `TRACE /app/a HTTP/1.1\r\nHost: ${host}\r\nAuthorization: Bearer ${token}\r\nConnection: close\r\n\r\n`, {
      methods: ['TRACE'],
    });
    await expectNothingForwarded();
    expect(ex.responses[0]?.status).toBe(405);
  });

  it("CONNECT to the upstream's address is 405 and opens no tunnel", async () => {
    const target = `127.0.0.1:${rec.port}`;
    const ex = await exchange(h.url, `CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n\r\n`, { methods: ['CONNECT'] });
    await expectNothingForwarded();
    expect(ex.responses[0]?.status, `answer: ${JSON.stringify(ex.raw.slice(0, 200))}`).toBe(405);
  });
});

describe('keep-alive: after a refused request, nothing unframed reaches the upstream on that connection', () => {
  /** A properly framed follow-up request on the same connection; the upstream may see it. */
  const followUp = (n: number) => `GET /public/after-${n} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`;

  /** Only well-framed follow-ups may reach the upstream; never the body-borne request. */
  async function expectOnlyFollowUps(n: number): Promise<void> {
    await sleep(150);
    for (const s of rec.seen) expect(`${s.method} ${s.url}`, describeSeen()).toBe(`GET /public/after-${n}`);
    expect(rec.errors, describeSeen()).toEqual([]);
    expectNoForgery();
  }

  it('403 (deny route) with a Content-Length body holding a request: the body is not parsed as a request', async () => {
    const inner = smuggled('/public/smuggled-ka1');
    const ex = await exchange(h.url, `GET /internal/x HTTP/1.1\r\nHost: ${host}\r\nContent-Length: ${inner.length}\r\n\r\n${inner}${followUp(1)}`, {
      methods: ['GET', 'GET'],
    });
    await expectOnlyFollowUps(1);
    expect(ex.responses[0]?.status).toBe(403);
    if (ex.responses[1]) expect(ex.responses[1].status).toBe(200);
  });

  it('401 (anonymous, authenticated route) with a chunked body holding a request', async () => {
    const inner = smuggled('/public/smuggled-ka2');
    const ex = await exchange(h.url, `DELETE /app/x HTTP/1.1\r\nHost: ${host}\r\nTransfer-Encoding: chunked\r\n\r\n${chunked(inner)}${followUp(2)}`, {
      methods: ['DELETE', 'GET'],
    });
    await expectOnlyFollowUps(2);
    expect(ex.responses[0]?.status).toBe(401);
  });

  it('404 (no route) with a Content-Length body holding a request', async () => {
    const inner = smuggled('/public/smuggled-ka3');
    const ex = await exchange(h.url, `OPTIONS /nowhere HTTP/1.1\r\nHost: ${host}\r\nContent-Length: ${inner.length}\r\n\r\n${inner}${followUp(3)}`, {
      methods: ['OPTIONS', 'GET'],
    });
    await expectOnlyFollowUps(3);
    expect(ex.responses[0]?.status).toBe(404);
  });

  it('400 bad_path with a Content-Length body holding a request', async () => {
    const inner = smuggled('/public/smuggled-ka4');
    const ex = await exchange(h.url, `GET /public/%2e%2e/app HTTP/1.1\r\nHost: ${host}\r\nContent-Length: ${inner.length}\r\n\r\n${inner}${followUp(4)}`, {
      methods: ['GET', 'GET'],
    });
    await expectOnlyFollowUps(4);
    expect(ex.responses[0]?.status).toBe(400);
  });

  it('405 TRACE with a Content-Length body holding a request', async () => {
    const inner = smuggled('/public/smuggled-ka5');
    const ex = await exchange(h.url, `TRACE /public/a HTTP/1.1\r\nHost: ${host}\r\nContent-Length: ${inner.length}\r\n\r\n${inner}${followUp(5)}`, {
      methods: ['TRACE', 'GET'],
    });
    await expectOnlyFollowUps(5);
    expect(ex.responses[0]?.status).toBe(405);
  });

  it('400 duplicate Host with a Content-Length body holding a request', async () => {
    const inner = smuggled('/public/smuggled-ka6');
    const ex = await exchange(
      h.url,
      `GET /public/a HTTP/1.1\r\nHost: ${host}\r\nHost: ${host}\r\nContent-Length: ${inner.length}\r\n\r\n${inner}${followUp(6)}`,
      { methods: ['GET', 'GET'] },
    );
    await expectOnlyFollowUps(6);
    expect(ex.responses[0]?.status).toBe(400);
  });

  it('400 Transfer-Encoding + Content-Length: the connection is closed and nothing after it reaches the upstream', async () => {
    const inner = smuggled('/public/smuggled-ka7');
    const ex = await exchange(
      h.url,
      `POST /public/a HTTP/1.1\r\nHost: ${host}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n${chunked(inner)}${followUp(7)}`,
      { methods: ['POST', 'GET'] },
    );
    await expectNothingForwarded();
    expect400(ex.responses[0]);
    expect(ex.responses).toHaveLength(1);
    expect(ex.closed).toBe(true);
  });

  it('431: the connection is closed and neither the hidden body nor a follow-up reaches the upstream', async () => {
    const inner = smuggled('/public/smuggled-ka8');
    const ex = await exchange(
      h.url,
      `GET /public/a HTTP/1.1\r\nHost: ${host}\r\n${filler(1000)}Transfer-Encoding: chunked\r\n\r\n${chunked(inner)}${followUp(8)}`,
      { methods: ['GET', 'GET'] },
    );
    await expectNothingForwarded();
    expect(ex.responses[0]?.status).toBe(431);
    expect(ex.responses).toHaveLength(1);
    expect(ex.closed).toBe(true);
  });
});

describe('property: no random header layout makes the upstream see a second request', () => {
  /** mulberry32: a small seeded PRNG, so a failure is reproducible. */
  const prng = seededRandom;

  const SEED = 0x8badf00d;
  const N = 300;
  const METHODS = ['GET', 'HEAD', 'DELETE', 'OPTIONS', 'POST', 'PUT'];

  it(`${N} seeded random requests (seed ${SEED.toString(16)}): never a smuggled request, never a forged X-Auth-User, never more than one upstream request per client request`, async () => {
    const rnd = prng(SEED);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)];
    interface Case {
      i: number;
      method: string;
      lines: number;
      framing: 'te' | 'cl' | 'none';
      /** 0-based header line of the framing header (-1: none). */
      framingAt: number;
      raw: string;
    }
    const cases: Case[] = [];
    for (let i = 0; i < N; i++) {
      const method = pick(METHODS);
      const fillers = Math.floor(rnd() * 1101);
      const framing = pick(['te', 'cl', 'none'] as const);
      const auth = rnd() < 0.5;
      const path = auth ? `/app/fuzz-${i}` : `/public/fuzz-${i}`;
      const inner = `DELETE /public/smuggled-${i} HTTP/1.1\r\nHost: ${host}\r\nX-Auth-User: admin\r\nContent-Length: 0\r\n\r\n`;
      const lines: string[] = [`Host: ${host}`, 'Connection: close'];
      if (auth) lines.push(`Authorization: Bearer ${token}`);
      for (let k = 0; k < fillers; k++) lines.push(`f${k}: 1`);
      let body = inner;
      let framingAt = -1;
      if (framing !== 'none') {
        const line = framing === 'te' ? 'Transfer-Encoding: chunked' : `Content-Length: ${inner.length}`;
        if (framing === 'te') body = chunked(inner);
        framingAt = Math.floor(rnd() * (lines.length + 1));
        lines.splice(framingAt, 0, line);
      }
      cases.push({
        i,
        method,
        lines: lines.length,
        framing,
        framingAt,
        raw: `${method} ${path} HTTP/1.1\r\n${lines.map((l) => `${l}\r\n`).join('')}\r\n${body}`,
      });
    }
    const statuses: { c: Case; status: number | undefined }[] = [];
    const started = Date.now();
    const CONCURRENCY = 8;
    for (let k = 0; k < cases.length; k += CONCURRENCY) {
      const batch = cases.slice(k, k + CONCURRENCY);
      const res = await Promise.all(batch.map((c) => exchange(h.url, c.raw, { methods: [c.method], waitMs: 5000 })));
      for (const [j, ex] of res.entries()) statuses.push({ c: batch[j], status: ex.responses[0]?.status });
    }
    await sleep(300);
    const elapsed = Date.now() - started;

    const seenUrls = rec.seen.map((s) => `${s.method} ${s.url}`);
    const describeCase = (c: Case, status: number | undefined) =>
      `case ${c.i}: ${c.method} with ${c.lines} header lines, framing ${c.framing} at line ${c.framingAt}, answered ${status}`;
    const smuggledSeen = rec.seen.filter((s) => s.url.includes('smuggled'));
    expect(
      smuggledSeen.map((s) => {
        const i = Number(/smuggled-(\d+)/.exec(s.url)![1]);
        return `${s.method} ${s.url} (${describeCase(cases[i], statuses.find((x) => x.c.i === i)?.status)})`;
      }),
      'requests hidden in bodies reached the upstream',
    ).toEqual([]);
    expect(
      rec.seen.filter((s) => s.headers['x-auth-user'] === 'admin').map((s) => `${s.method} ${s.url}`),
      'forged X-Auth-User reached the upstream',
    ).toEqual([]);
    expect(rec.errors, 'the upstream received bytes it could not parse').toEqual([]);
    expect(rec.seen.length).toBeLessThanOrEqual(N);
    for (const c of cases) {
      const n = seenUrls.filter((u) => u.endsWith(`/fuzz-${c.i}`)).length;
      expect(n, describeCase(c, statuses.find((x) => x.c.i === c.i)?.status)).toBeLessThanOrEqual(1);
    }
    // Framed requests over the header-line limit are 431 (unframed ones may instead meet
    // Node's "data after Connection: close" 400).
    const wrong = statuses.filter(({ c, status }) => c.framing !== 'none' && c.lines > 100 && status !== 431).map(({ c, status }) => describeCase(c, status));
    expect(wrong.slice(0, 10), `${wrong.length} over-long requests were not refused with 431`).toEqual([]);
    expect(elapsed).toBeLessThan(20_000);
  }, 60_000);
});
