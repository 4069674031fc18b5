import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { FrameParser, Opcode, acceptKey, encodeFrame } from './ws.js';

/**
 * The bundled demo upstream: an "unchanged legacy app" that shows what it received, above
 * all the identity headers the gateway set. Also the upstream of the proxy tests, hence the
 * helpers under `/__echo/`.
 */

/** Identity header names the echo app reads. @default X-Auth-User, X-Auth-User-Id, X-Auth-Email, X-Auth-Roles */
export interface EchoIdentityHeaders {
  user: string;
  user_id: string;
  email: string;
  roles: string;
}

/** Options of {@link startEchoServer}. */
export interface EchoOptions {
  host: string;
  /** 0 picks a free port. */
  port: number;
  /** Header names to read the identity from. */
  identityHeaders?: Partial<EchoIdentityHeaders>;
  /**
   * Answer every non-helper request with the same small JSON body (`{"ok":true}`) instead of
   * echoing the request: a fixed-size upstream for benchmarks, so that routes that forward more
   * headers (identity headers) do not also get bigger responses.
   */
  fixed?: boolean;
}

/** A running echo server. */
export interface EchoServer {
  server: http.Server;
  /** `http://host:port` (IPv6 hosts in brackets). */
  url: string;
  /** Stops listening and destroys every open connection (WebSockets included). */
  close(): Promise<void>;
}

/** What the echo app saw of one request (its JSON answer). */
export interface EchoReply {
  method: string;
  /** The request target as received. */
  url: string;
  /** The path part of `url`. */
  path: string;
  /** The query string without `?` ('' for none). */
  query: string;
  /** `req.headers` (lower-case names, repeated headers joined). */
  headers: http.IncomingHttpHeaders;
  /** `req.rawHeaders` as [name, value] pairs, to see every copy of a header. */
  raw_headers: [string, string][];
  /** Request body size, counted while streaming. */
  body_bytes: number;
  identity: { user: string | null; user_id: string | null; email: string | null; roles: string[] };
}

/** `GET /__echo/stats`. */
export interface EchoStats {
  /** TCP connections currently open to the echo server (this request's included). */
  openConnections: number;
  /** Requests currently being handled (stats requests not counted). */
  inFlight: number;
  /** Requests received since start (stats requests not counted). */
  requests: number;
  /** WebSocket connections currently open. */
  webSockets: number;
}

const MAX_STREAM_BYTES = 1024 * 1024 * 1024;
const MAX_SLOW_MS = 120_000;
const CHUNK = Buffer.alloc(64 * 1024, 0x61);

const ESC: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
function esc(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ESC[c]);
}

function intParam(q: URLSearchParams, name: string, max: number): number {
  const n = Number(q.get(name) ?? '0');
  return Number.isFinite(n) && n > 0 ? Math.min(Math.floor(n), max) : 0;
}

function headerValue(req: http.IncomingMessage, name: string): string | null {
  const v = req.headers[name.toLowerCase()];
  if (v === undefined) return null;
  return Array.isArray(v) ? v.join(', ') : v;
}

function identityOf(req: http.IncomingMessage, names: EchoIdentityHeaders): EchoReply['identity'] {
  const roles = headerValue(req, names.roles);
  return {
    user: headerValue(req, names.user),
    user_id: headerValue(req, names.user_id),
    email: headerValue(req, names.email),
    roles: roles
      ? roles
          .split(',')
          .map((r) => r.trim())
          .filter(Boolean)
      : [],
  };
}

function replyOf(req: http.IncomingMessage, bodyBytes: number, names: EchoIdentityHeaders): EchoReply {
  const url = req.url ?? '/';
  const q = url.indexOf('?');
  const raw: [string, string][] = [];
  for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) raw.push([req.rawHeaders[i], req.rawHeaders[i + 1]]);
  return {
    method: req.method ?? 'GET',
    url,
    path: q === -1 ? url : url.slice(0, q),
    query: q === -1 ? '' : url.slice(q + 1),
    headers: req.headers,
    raw_headers: raw,
    body_bytes: bodyBytes,
    identity: identityOf(req, names),
  };
}

function renderHtml(r: EchoReply): string {
  const who = r.identity.user
    ? `<p>Signed in as <strong>${esc(r.identity.user)}</strong>${r.identity.email ? ` &lt;${esc(r.identity.email)}&gt;` : ''}` +
      ` — user id <code>${esc(r.identity.user_id ?? '?')}</code>, roles: ${r.identity.roles.length ? esc(r.identity.roles.join(', ')) : '<em>none</em>'}</p>`
    : '<p>Signed in as <strong>nobody</strong> (no identity headers received).</p>';
  // The gateway's account and sign-out pages (default auth prefix); links, since the sign-out
  // page itself posts the form.
  const signOut = r.identity.user
    ? '<p><a href="/api/auth/account" id="account">Your account</a> · <a href="/api/auth/logout" id="sign-out">Sign out</a></p>'
    : '<p><a href="/api/auth/login">Sign in</a></p>';
  const rows = r.raw_headers.map(([k, v]) => `<tr><th scope="row">${esc(k)}</th><td>${esc(v)}</td></tr>`).join('\n');
  return `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>Portcullis demo upstream</title></head>
<body>
<main>
<h1>Demo upstream</h1>
${who}
${signOut}
<p>Request: <code>${esc(r.method)} ${esc(r.path)}</code>${r.query ? ` query <code>${esc(r.query)}</code>` : ''}, ${r.body_bytes} body bytes.</p>
<h2>Headers received</h2>
<table>
<thead><tr><th scope="col">Name</th><th scope="col">Value</th></tr></thead>
<tbody>
${rows}
</tbody>
</table>
</main>
</body>
</html>
`;
}

function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
  res.end(text);
}

function streamBytes(res: http.ServerResponse, total: number): void {
  res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': total, 'cache-control': 'no-store' });
  let left = total;
  const pump = (): void => {
    while (left > 0) {
      const n = Math.min(left, CHUNK.length);
      left -= n;
      const ok = res.write(n === CHUNK.length ? CHUNK : CHUNK.subarray(0, n));
      if (!ok) {
        res.once('drain', pump);
        return;
      }
    }
    res.end();
  };
  res.on('close', () => {
    left = 0;
  });
  pump();
}

/** Sends `total` bytes one at a time, `intervalMs` apart: a slow but live upstream. */
function dripBytes(res: http.ServerResponse, total: number, intervalMs: number): void {
  res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': total, 'cache-control': 'no-store' });
  res.flushHeaders();
  let left = total;
  if (left === 0) {
    res.end();
    return;
  }
  const t = setInterval(() => {
    left--;
    if (left === 0) {
      clearInterval(t);
      res.end('.');
    } else {
      res.write('.');
    }
  }, intervalMs);
  res.on('close', () => clearInterval(t));
}

/** Answers a WebSocket handshake and echoes text frames as `echo: <text>`; the first message is a JSON hello with the identity seen. */
function handleUpgrade(req: http.IncomingMessage, socket: Duplex, head: Buffer, names: EchoIdentityHeaders, sockets: Set<Duplex>): void {
  socket.on('error', () => socket.destroy());
  const key = headerValue(req, 'sec-websocket-key');
  const path = (req.url ?? '/').split('?')[0];
  if (path === '/__echo/ws-reject') {
    const body = 'upgrade refused by the echo server\n';
    socket.end(`HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
    return;
  }
  if (!key || headerValue(req, 'sec-websocket-version') !== '13' || (headerValue(req, 'upgrade') ?? '').toLowerCase() !== 'websocket') {
    socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
    return;
  }
  sockets.add(socket);
  socket.on('close', () => sockets.delete(socket));
  socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${acceptKey(key)}\r\n\r\n`);
  const r = replyOf(req, 0, names);
  socket.write(encodeFrame(Opcode.text, JSON.stringify({ type: 'hello', path: r.path, query: r.query, identity: r.identity, headers: r.headers }), false));
  const parser = new FrameParser(1024 * 1024);
  const onData = (chunk: Buffer): void => {
    let frames: ReturnType<FrameParser['push']>;
    try {
      frames = parser.push(chunk);
    } catch {
      socket.destroy();
      return;
    }
    for (const f of frames) {
      if (!f.masked) {
        // RFC 6455 §5.1: a server closes on an unmasked client frame (1002 protocol error).
        socket.end(encodeFrame(Opcode.close, Buffer.from([0x03, 0xea]), false));
        return;
      }
      if (f.opcode === Opcode.text) socket.write(encodeFrame(Opcode.text, `echo: ${f.payload.toString('utf8')}`, false));
      else if (f.opcode === Opcode.binary) socket.write(encodeFrame(Opcode.binary, f.payload, false));
      else if (f.opcode === Opcode.ping) socket.write(encodeFrame(Opcode.pong, f.payload, false));
      else if (f.opcode === Opcode.close) {
        socket.end(encodeFrame(Opcode.close, f.payload.subarray(0, 2), false));
        return;
      }
    }
  };
  socket.on('data', onData);
  // The http server allows half-open sockets; a WebSocket peer that sent FIN is done.
  socket.on('end', () => socket.end());
  if (head.length) onData(head);
}

/**
 * Starts the echo app. For every request it answers JSON ({@link EchoReply}), or an HTML page
 * when `Accept` includes `text/html`. Helpers: `/__echo/slow?ms=N` (answer after N ms),
 * `/__echo/reset` (destroy the socket), `/__echo/stream?bytes=N` (N bytes of body),
 * `/__echo/drip?bytes=N&interval=MS` (N bytes, one every MS ms),
 * `/__echo/status/NNN` (answer with that status), `/__echo/stats` ({@link EchoStats}).
 * WebSocket upgrades are accepted at any path (`/__echo/ws-reject` answers 403 instead).
 */
const FIXED_BODY = Buffer.from('{"ok":true}');

export async function startEchoServer(opts: EchoOptions): Promise<EchoServer> {
  const names: EchoIdentityHeaders = {
    user: opts.identityHeaders?.user ?? 'X-Auth-User',
    user_id: opts.identityHeaders?.user_id ?? 'X-Auth-User-Id',
    email: opts.identityHeaders?.email ?? 'X-Auth-Email',
    roles: opts.identityHeaders?.roles ?? 'X-Auth-Roles',
  };
  const connections = new Set<Socket>();
  const wsSockets = new Set<Duplex>();
  let inFlight = 0;
  let requests = 0;

  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://echo.invalid');
    const path = url.pathname;
    // Stats calls are not counted, so polling them does not disturb what they measure.
    if (path !== '/__echo/stats') {
      requests++;
      inFlight++;
      res.on('close', () => inFlight--);
    }
    if (path === '/__echo/reset') {
      req.socket.destroy();
      return;
    }
    let bodyBytes = 0;
    req.on('data', (c: Buffer) => {
      bodyBytes += c.length;
    });
    req.on('error', () => undefined);
    req.on('end', () => {
      if (path === '/__echo/stats') {
        const stats: EchoStats = { openConnections: connections.size, inFlight, requests, webSockets: wsSockets.size };
        sendJson(res, 200, stats);
        return;
      }
      if (path === '/__echo/stream') {
        streamBytes(res, intParam(url.searchParams, 'bytes', MAX_STREAM_BYTES));
        return;
      }
      if (path === '/__echo/drip') {
        dripBytes(res, intParam(url.searchParams, 'bytes', 10_000), intParam(url.searchParams, 'interval', 10_000));
        return;
      }
      const status = /^\/__echo\/status\/([1-5]\d\d)$/.exec(path);
      const reply = (): void => {
        const r = replyOf(req, bodyBytes, names);
        const code = status ? Number(status[1]) : 200;
        if ((req.headers.accept ?? '').includes('text/html')) {
          const html = renderHtml(r);
          res.writeHead(code, {
            'content-type': 'text/html; charset=utf-8',
            'content-length': Buffer.byteLength(html),
            'cache-control': 'no-store',
            'content-security-policy': "default-src 'none'; form-action 'self'; frame-ancestors 'none'",
          });
          res.end(html);
          return;
        }
        sendJson(res, code, r);
      };
      if (opts.fixed && !path.startsWith('/__echo/')) {
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': FIXED_BODY.length });
        res.end(FIXED_BODY);
        return;
      }
      if (path === '/__echo/slow') {
        const t = setTimeout(reply, intParam(url.searchParams, 'ms', MAX_SLOW_MS));
        res.on('close', () => clearTimeout(t));
        return;
      }
      reply();
    });
  });
  server.on('connection', (s: Socket) => {
    connections.add(s);
    s.on('close', () => connections.delete(s));
  });
  server.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => handleUpgrade(req, socket, head, names, wsSockets));
  server.on('clientError', (_err, socket: Duplex) => socket.destroy());

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const addr = server.address() as AddressInfo;
  const host = addr.family === 'IPv6' || addr.address.includes(':') ? `[${addr.address}]` : addr.address;
  return {
    server,
    url: `http://${host}:${addr.port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of wsSockets) s.destroy();
        server.closeAllConnections();
      }),
  };
}

/**
 * Runs the echo app from the command line: `--listen host:port` (or `ECHO_LISTEN`), default
 * `127.0.0.1:9000`. Prints the URL and stops on SIGINT/SIGTERM.
 */
export async function echoMain(argv: readonly string[] = process.argv.slice(2), env: NodeJS.ProcessEnv = process.env): Promise<EchoServer> {
  const i = argv.indexOf('--listen');
  const listen = (i !== -1 ? argv[i + 1] : undefined) ?? env.ECHO_LISTEN ?? '127.0.0.1:9000';
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(listen);
  if (!m) throw new Error(`not a listen address: "${listen}" (use host:port)`);
  const echo = await startEchoServer({ host: m[1] ?? (m[2] || '127.0.0.1'), port: Number(m[3]), fixed: argv.includes('--fixed') });
  process.stdout.write(`echo upstream listening on ${echo.url}\n`);
  const stop = (): void => {
    void echo.close().then(() => process.exit(0));
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  return echo;
}
