import { createHash } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

/** A server listening on 127.0.0.1:0 whose `close()` first destroys every open connection. */
export interface Listening {
  url: string;
  port: number;
  close(): Promise<void>;
}

/**
 * Listens on 127.0.0.1:0 and keeps track of the server's connections (upgraded ones too: they
 * are the same sockets), so that `close()` need not wait for keep-alive clients.
 */
export async function listenTracked(server: http.Server): Promise<Listening> {
  const sockets = new Set<Socket>();
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

/** One request the upstream's parser produced. */
export interface Seen {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  rawHeaders: string[];
  /** True for an upgrade request (recorded only with `upgrade` set). */
  upgrade: boolean;
}

export interface Recorder extends Listening {
  /** Every request the upstream's parser produced, in order (tests clear it themselves). */
  seen: Seen[];
  /** With `clientErrors`: bytes the upstream could not parse as HTTP (their error codes). */
  errors: string[];
}

export interface RecorderOptions {
  /** `server.maxHeadersCount`; 0 records every header line the gateway forwards. Node's default otherwise. */
  maxHeadersCount?: number;
  /**
   * Record the code of every client error in `errors` and destroy the socket (no 400 written),
   * except ECONNRESET and EPIPE: the gateway abandoning an upstream request whose client left
   * is not a parse error. Without it, Node's default handling (a bare 400) and nothing recorded.
   */
  clientErrors?: boolean;
  /** Record CONNECT requests in `seen`, then destroy the socket. Without it, Node closes them unrecorded. */
  connect?: boolean;
  /**
   * Record upgrade requests in `seen` (`upgrade: true`), then `accept` them (101 with the right
   * Sec-WebSocket-Accept, the tunnel left open) or `destroy` the socket. Without it, Node hands
   * them to the request handler as plain requests.
   */
  upgrade?: 'accept' | 'destroy';
}

const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
const acceptOf = (key: string) =>
  createHash('sha1')
    .update(key + WS_GUID)
    .digest('base64');

const record = (req: http.IncomingMessage, upgrade: boolean, method = ''): Seen => ({
  method: req.method ?? method,
  url: req.url ?? '',
  headers: req.headers,
  rawHeaders: req.rawHeaders,
  upgrade,
});

/**
 * A recording upstream: a plain node:http keep-alive server on 127.0.0.1:0 that records every
 * request it parses and, once the body is read, answers 200 with a small JSON body.
 */
export async function startRecorder(opts: RecorderOptions = {}): Promise<Recorder> {
  const seen: Seen[] = [];
  const errors: string[] = [];
  const server = http.createServer({ keepAlive: true }, (req, res) => {
    seen.push(record(req, false));
    req.resume();
    req.on('error', () => undefined);
    req.on('end', () => {
      const body = JSON.stringify({ ok: true, method: req.method, url: req.url, user: req.headers['x-auth-user'] ?? null });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    });
  });
  if (opts.maxHeadersCount !== undefined) server.maxHeadersCount = opts.maxHeadersCount;
  if (opts.clientErrors) {
    server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
      if (err.code !== 'ECONNRESET' && err.code !== 'EPIPE') errors.push(err.code ?? err.message);
      socket.destroy();
    });
  }
  if (opts.connect) {
    server.on('connect', (req: http.IncomingMessage, socket) => {
      seen.push(record(req, false, 'CONNECT'));
      socket.destroy();
    });
  }
  const upgrade = opts.upgrade;
  if (upgrade) {
    server.on('upgrade', (req: http.IncomingMessage, socket) => {
      seen.push(record(req, true));
      socket.on('error', () => socket.destroy());
      if (upgrade === 'destroy') {
        socket.destroy();
        return;
      }
      const key = String(req.headers['sec-websocket-key'] ?? '');
      socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${acceptOf(key)}\r\n\r\n`);
    });
  }
  return { ...(await listenTracked(server)), seen, errors };
}
