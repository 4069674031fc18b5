// The TLS boundary (SPEC §3.1): TLS 1.2+ only, forward-secret AEAD suites by default, HSTS on
// every response under TLS (proxied ones included), `tls.min_version` / `tls.ciphers`.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { createServer as createHttpServer, type Server } from 'node:http';
import { request } from 'node:https';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { connect as tlsConnect, createServer as createTlsServer, type ConnectionOptions, type TlsOptions } from 'node:tls';
import { ConfigError, parseConfig } from '../src/config/index.js';
import { DEFAULT_TLS_CIPHERS } from '../src/config/schema.js';
import { ROUTES, startHarness, type Harness } from './support/helpers.js';
import { freePort, selfSigned } from './support/services.js';

const HSTS = 'max-age=31536000; includeSubDomains';
const SSLSCAN = '/usr/bin/sslscan';
const haveSslscan = existsSync(SSLSCAN);
if (!haveSslscan && process.env.CI === 'true') throw new Error(`sslscan is not installed at ${SSLSCAN}, and CI=true requires the TLS scan`);
const TLS_SCAN = fileURLToPath(new URL('../scripts/tls-scan.sh', import.meta.url));

/** A self-signed RSA certificate: static-RSA key exchange is only possible with an RSA key. */
const selfSignedRsa = () => selfSigned({ rsa: true });

type Handshake = { ok: true; protocol: string | null; cipher: string } | { ok: false; code: string };

/** One TLS handshake against host:port with the given client options. */
function handshake(port: number, opts: ConnectionOptions): Promise<Handshake> {
  return new Promise((done) => {
    const s = tlsConnect({ host: '127.0.0.1', port, rejectUnauthorized: false, ...opts }, () => {
      done({ ok: true, protocol: s.getProtocol(), cipher: s.getCipher().name });
      s.destroy();
    });
    s.setTimeout(5_000, () => s.destroy(new Error('handshake timeout')));
    s.on('error', (e: NodeJS.ErrnoException) => done({ ok: false, code: e.code ?? e.message }));
  });
}

/** A bare Node TLS server with Node's defaults (plus `opts`): proves a client probe really offers what it claims. */
async function controlServer(cert: { cert: string; key: string }, opts: TlsOptions = {}): Promise<{ port: number; close: () => Promise<void> }> {
  const srv = createTlsServer({ cert: readFileSync(cert.cert), key: readFileSync(cert.key), ...opts }, (s) => s.end());
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  return { port: (srv.address() as AddressInfo).port, close: () => new Promise((r) => srv.close(() => r())) };
}

type Res = { status: number; headers: Record<string, string | string[] | undefined>; body: string };
function httpsGet(url: string, ca: string): Promise<Res> {
  return new Promise((done, reject) => {
    const req = request(url, { ca, agent: false }, (res) => {
      let body = '';
      res.on('data', (c) => (body += c));
      res.on('end', () => done({ status: res.statusCode!, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** Sends a WebSocket upgrade over TLS and returns the response head (status line + headers). */
function upgradeHead(port: number, ca: string, path: string): Promise<{ status: number; headers: Record<string, string> }> {
  return new Promise((done, reject) => {
    const s = tlsConnect({ host: '127.0.0.1', port, ca }, () => {
      s.write(
        `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`,
      );
    });
    let text = '';
    s.setEncoding('latin1');
    s.on('data', (c: string) => {
      text += c;
      const end = text.indexOf('\r\n\r\n');
      if (end < 0) return;
      const [statusLine, ...lines] = text.slice(0, end).split('\r\n');
      const headers: Record<string, string> = {};
      for (const l of lines) {
        const i = l.indexOf(':');
        headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
      }
      s.destroy();
      done({ status: Number(statusLine.split(' ')[1]), headers });
    });
    s.on('error', reject);
    s.setTimeout(5_000, () => s.destroy(new Error('upgrade timeout')));
  });
}

/** An upstream that tries to switch HSTS off (`max-age=0`) on every answer, its 404s and 101s included. */
async function hstsKillingUpstream(): Promise<{ url: string; close: () => Promise<void> }> {
  const srv: Server = createHttpServer((req, res) => {
    const status = req.url?.includes('/missing') ? 404 : 200;
    res.writeHead(status, { 'content-type': 'application/json', 'Strict-Transport-Security': 'max-age=0' });
    res.end(JSON.stringify({ path: req.url }));
  });
  srv.on('upgrade', (_req, socket) => {
    socket.write(
      'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nStrict-Transport-Security: max-age=0\r\n\r\n',
    );
    socket.on('error', () => socket.destroy());
    setTimeout(() => socket.destroy(), 200).unref();
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(srv.address() as AddressInfo).port}`,
    close: () =>
      new Promise((r) => {
        srv.closeAllConnections();
        srv.close(() => r());
      }),
  };
}

function sslscan(hostPort: string): Promise<string> {
  return new Promise((done, reject) => {
    execFile(SSLSCAN, ['--no-colour', hostPort], { timeout: 90_000 }, (err, stdout) => (err ? reject(err) : done(stdout)));
  });
}

function tlsScanScript(hostPort: string): Promise<{ code: number; out: string }> {
  return new Promise((done) => {
    execFile(TLS_SCAN, [hostPort], { timeout: 120_000, env: { ...process.env, SSLSCAN } }, (err, stdout, stderr) =>
      done({ code: err ? Number((err as { code?: unknown }).code ?? 99) : 0, out: stdout + stderr }),
    );
  });
}

const tmpDirs: string[] = [];
afterAll(() => {
  for (const d of tmpDirs) rmSync(d, { recursive: true, force: true });
});

describe('tls config keys', () => {
  const base = (tls: string) =>
    `tls: ${tls}\nupstreams: { a: { url: http://127.0.0.1:1 } }\nroutes:\n  - { name: r, match: { path: /** }, upstream: a, access: public }\n`;

  it('defaults to TLSv1.2 and the forward-secret AEAD cipher list', () => {
    const cfg = parseConfig(base('{ cert: /x.crt, key: /x.key }'), 'gw.yaml', {});
    expect(cfg.tls?.min_version).toBe('TLSv1.2');
    expect(cfg.tls?.ciphers).toBe(DEFAULT_TLS_CIPHERS);
    for (const suite of DEFAULT_TLS_CIPHERS.split(':'))
      expect(suite).toMatch(/^TLS_(AES_\d+_GCM|CHACHA20_POLY1305)_SHA\d+$|^ECDHE-(RSA|ECDSA)-(AES\d+-GCM-SHA\d+|CHACHA20-POLY1305)$/);
  });

  it('reports a bad cipher string or version as a config error at its key path, not a crash', () => {
    const text = base('\n  cert: /x.crt\n  key: /x.key\n  min_version: TLSv1.1\n  ciphers: "NOT-A-CIPHER:ALSO-NOT"');
    let err: unknown;
    try {
      parseConfig(text, 'gw.yaml', {});
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    const problems = (err as ConfigError).problems;
    expect(problems).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ path: 'tls.ciphers', line: 5, message: expect.stringMatching(/cipher/) }),
        expect.objectContaining({ path: 'tls.min_version', line: 4 }),
      ]),
    );
  });

  it('accepts a custom cipher string and TLSv1.3', () => {
    const cfg = parseConfig(
      base('{ cert: /x.crt, key: /x.key, min_version: TLSv1.3, ciphers: "ECDHE-ECDSA-AES256-GCM-SHA384:TLS_AES_256_GCM_SHA384" }'),
      'gw.yaml',
      {},
    );
    expect(cfg.tls).toMatchObject({ min_version: 'TLSv1.3', ciphers: 'ECDHE-ECDSA-AES256-GCM-SHA384:TLS_AES_256_GCM_SHA384' });
  });
});

describe('HTTPS listener with the default TLS policy (RSA certificate)', () => {
  let h: Harness;
  let ca: string;
  let port: number;
  let cert: { cert: string; key: string; dir: string };
  let upstream: Awaited<ReturnType<typeof hstsKillingUpstream>>;

  beforeAll(async () => {
    cert = selfSignedRsa();
    tmpDirs.push(cert.dir);
    ca = readFileSync(cert.cert, 'utf8');
    upstream = await hstsKillingUpstream();
    const dead = await freePort();
    h = await startHarness({
      extraYaml: `tls: { cert: ${cert.cert}, key: ${cert.key} }`,
      upstreamExtra: `  sts:\n    url: ${upstream.url}\n  dead:\n    url: http://127.0.0.1:${dead}\n    timeout: 2s\n`,
      routes: `
routes:
  - name: sts
    match: { path: /sts/** }
    upstream: sts
    access: public
  - name: closed
    match: { path: /internal/** }
    access: deny
  - name: dead
    match: { path: /dead/** }
    upstream: dead
    access: public
`,
    });
    port = Number(new URL(h.url).port);
  });
  afterAll(async () => {
    await h?.close();
    await upstream?.close();
  });

  it('puts HSTS on a proxied response, replacing the upstream’s max-age=0', async () => {
    const r = await httpsGet(`${h.url}/sts/page`, ca);
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body)).toEqual({ path: '/sts/page' });
    expect(r.headers['strict-transport-security']).toBe(HSTS);
  });

  it('puts HSTS on the upstream’s own 404, and on the gateway’s 404, 403 and 502', async () => {
    const upstream404 = await httpsGet(`${h.url}/sts/missing`, ca);
    expect(upstream404.status).toBe(404);
    expect(upstream404.headers['strict-transport-security']).toBe(HSTS);
    const noRoute = await httpsGet(`${h.url}/nowhere`, ca);
    expect(noRoute.status).toBe(404);
    expect(noRoute.headers['strict-transport-security']).toBe(HSTS);
    const denied = await httpsGet(`${h.url}/internal/x`, ca);
    expect(denied.status).toBe(403);
    expect(denied.headers['strict-transport-security']).toBe(HSTS);
    const bad = await httpsGet(`${h.url}/dead/x`, ca);
    expect(bad.status).toBe(502);
    expect(bad.headers['strict-transport-security']).toBe(HSTS);
  });

  it('puts HSTS on the 101 of a WebSocket upgrade and on a refused upgrade (502)', async () => {
    const ok = await upgradeHead(port, ca, '/sts/ws');
    expect(ok.status).toBe(101);
    expect(ok.headers['strict-transport-security']).toBe(HSTS);
    const failed = await upgradeHead(port, ca, '/dead/ws');
    expect(failed.status).toBe(502);
    expect(failed.headers['strict-transport-security']).toBe(HSTS);
  });

  it('refuses TLS 1.0 and TLS 1.1 clients (which a permissive server would accept)', async () => {
    const legacy = (v: 'TLSv1' | 'TLSv1.1'): ConnectionOptions => ({ minVersion: v, maxVersion: v, ciphers: 'DEFAULT@SECLEVEL=0' });
    const control = await controlServer(cert, { minVersion: 'TLSv1', ciphers: 'DEFAULT@SECLEVEL=0' });
    try {
      expect(await handshake(control.port, legacy('TLSv1.1'))).toMatchObject({ ok: true, protocol: 'TLSv1.1' });
      expect(await handshake(control.port, legacy('TLSv1'))).toMatchObject({ ok: true, protocol: 'TLSv1' });
    } finally {
      await control.close();
    }
    expect(await handshake(port, legacy('TLSv1.1'))).toMatchObject({ ok: false });
    expect(await handshake(port, legacy('TLSv1'))).toMatchObject({ ok: false });
  });

  it('refuses static-RSA and CBC/SHA-1 suites that Node’s defaults accept; accepts ECDHE AEAD suites', async () => {
    const tls12 = (ciphers: string): ConnectionOptions => ({ maxVersion: 'TLSv1.2', ciphers });
    const weak = ['AES128-GCM-SHA256', 'AES256-SHA256', 'ECDHE-RSA-AES128-SHA', 'ECDHE-RSA-AES256-SHA384'];
    const control = await controlServer(cert);
    try {
      for (const c of weak) expect(await handshake(control.port, tls12(c)), c).toMatchObject({ ok: true, cipher: c });
    } finally {
      await control.close();
    }
    for (const c of weak) expect(await handshake(port, tls12(c)), c).toMatchObject({ ok: false });
    for (const c of ['ECDHE-RSA-AES128-GCM-SHA256', 'ECDHE-RSA-AES256-GCM-SHA384', 'ECDHE-RSA-CHACHA20-POLY1305']) {
      expect(await handshake(port, tls12(c)), c).toEqual({ ok: true, protocol: 'TLSv1.2', cipher: c });
    }
    expect(await handshake(port, {})).toMatchObject({ ok: true, protocol: 'TLSv1.3' });
  });

  it('uses the server’s cipher order', async () => {
    // The client prefers AES-256; the server's list puts AES-128 first.
    const r = await handshake(port, { maxVersion: 'TLSv1.2', ciphers: 'ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-GCM-SHA256' });
    expect(r).toMatchObject({ ok: true, cipher: 'ECDHE-RSA-AES128-GCM-SHA256' });
  });

  it.runIf(haveSslscan)('sslscan finds no legacy protocol and no CBC, RC4, 3DES or non-forward-secret TLS 1.2 suite', async () => {
    const out = await sslscan(`127.0.0.1:${port}`);
    for (const p of ['SSLv2', 'SSLv3', 'TLSv1.0', 'TLSv1.1']) expect(out).toMatch(new RegExp(`^${p.replace('.', '\\.')}\\s+disabled`, 'm'));
    expect(out).toMatch(/^TLSv1\.2\s+enabled/m);
    const accepted = [...out.matchAll(/^(?:Preferred|Accepted)\s+(\S+)\s+\d+ bits\s+(\S+)/gm)].map((m) => ({ proto: m[1], suite: m[2] }));
    expect(accepted.filter((a) => a.proto === 'TLSv1.2').length).toBeGreaterThan(0);
    expect(accepted.filter((a) => a.proto === 'TLSv1.3').length).toBeGreaterThan(0);
    const bad = accepted.filter(
      (a) =>
        !/^TLSv1\.[23]$/.test(a.proto) ||
        (a.proto === 'TLSv1.2' && (!/^(ECDHE|DHE)-/.test(a.suite) || !/GCM|CHACHA20-POLY1305|CCM/.test(a.suite) || /RC4|DES|NULL|EXP|MD5|CBC/.test(a.suite))),
    );
    expect(bad).toEqual([]);
  });

  it.runIf(haveSslscan)('scripts/tls-scan.sh passes this listener and fails a server with Node’s default suites', async () => {
    const ours = await tlsScanScript(`127.0.0.1:${port}`);
    expect(ours.out).toMatch(/meets the policy/);
    expect(ours.code).toBe(0);
    const control = await controlServer(cert);
    try {
      const theirs = await tlsScanScript(`127.0.0.1:${control.port}`);
      expect(theirs.code).toBe(1);
      expect(theirs.out).toMatch(/AES128-GCM-SHA256 \(TLSv1\.2\): no-forward-secrecy/);
      expect(theirs.out).toMatch(/ECDHE-RSA-AES128-SHA \(TLSv1\.2\): not-AEAD/);
    } finally {
      await control.close();
    }
  });
});

describe('tls.min_version: TLSv1.3', () => {
  let h: Harness;
  let ca: string;
  let port: number;
  beforeAll(async () => {
    const cert = selfSigned();
    tmpDirs.push(cert.dir);
    ca = readFileSync(cert.cert, 'utf8');
    h = await startHarness({ extraYaml: `tls: { cert: ${cert.cert}, key: ${cert.key}, min_version: TLSv1.3 }`, routes: ROUTES });
    port = Number(new URL(h.url).port);
  });
  afterAll(() => h?.close());

  it('refuses a TLS 1.2 client and serves a TLS 1.3 one', async () => {
    expect(await handshake(port, { maxVersion: 'TLSv1.2', ciphers: 'ECDHE-ECDSA-AES128-GCM-SHA256' })).toMatchObject({ ok: false });
    expect(await handshake(port, { ca })).toMatchObject({ ok: true, protocol: 'TLSv1.3' });
    const r = await httpsGet(`${h.url}/public/x`, ca);
    expect(r.status).toBe(200);
    expect(r.headers['strict-transport-security']).toBe(HSTS);
  });
});
