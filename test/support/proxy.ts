/**
 * Test support for the proxy tests (not used at runtime): a real echo upstream, a plain
 * http server that calls `forward()`, and a small HTTP client that can send repeated headers.
 * Error answers go through the app's real responder, logging as the app does.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Writable, type Readable } from 'node:stream';
import type { IdentityHeaders, UpstreamConfig } from '../../src/config/schema.js';
import { startEchoServer, type EchoReply, type EchoServer } from '../../src/demo/echo.js';
import { createLogger } from '../../src/http/log.js';
import { createResponder } from '../../src/http/respond.js';
import { createHeaderMutator, type HeaderMutator, type HeaderPlan } from '../../src/pipeline/mutate.js';
import { createProxy, type ForwardTarget, type GatewayProxy, type UpstreamResult } from '../../src/proxy/proxy.js';

export const DEFAULT_IDENTITY_HEADERS: IdentityHeaders = {
  user: 'X-Auth-User',
  user_id: 'X-Auth-User-Id',
  email: 'X-Auth-Email',
  roles: 'X-Auth-Roles',
};

/** An upstream config with test defaults. */
export function upstreamConfig(url: string, o: Partial<UpstreamConfig> = {}): UpstreamConfig {
  return { url, timeout: 5_000, assertion: false, max_sockets: 16, method_override: false, ...o };
}

export interface ProxyHarness {
  echo: EchoServer;
  proxy: GatewayProxy;
  server: http.Server;
  /** The proxy server's URL. */
  url: string;
  results: UpstreamResult[];
  /** Every log line (the proxy's own and the responder's), parsed, as the app's logger writes it. */
  logs: { level: string; obj: Record<string, unknown> }[];
  /** The mutate stage the harness runs before forwarding (as the gateway pipeline does). */
  mutator: HeaderMutator;
  /** Per-request overrides of the forward target and header plan (mutable between tests). */
  target: (req: http.IncomingMessage) => Partial<Omit<ForwardTarget, 'headers'> & HeaderPlan>;
  close(): Promise<void>;
}

export interface HarnessOptions {
  /** Extra upstreams besides `echo` (their url may use `{echo}` for the echo URL). */
  upstreams?: Record<string, Partial<UpstreamConfig> & { url: string }>;
  echo?: Partial<UpstreamConfig>;
  trustProxy?: string[];
  identityHeaders?: IdentityHeaders;
}

/** Starts echo + proxy server on 127.0.0.1:0. Requests go to upstream `echo` unless the target override says otherwise. */
export async function startProxyHarness(o: HarnessOptions = {}): Promise<ProxyHarness> {
  const echo = await startEchoServer({ host: '127.0.0.1', port: 0 });
  const upstreams: Record<string, UpstreamConfig> = { echo: upstreamConfig(echo.url, o.echo) };
  for (const [name, u] of Object.entries(o.upstreams ?? {}))
    upstreams[name] = upstreamConfig(u.url.replace('{echo}', echo.url), { ...u, url: u.url.replace('{echo}', echo.url) });
  const results: UpstreamResult[] = [];
  const logs: ProxyHarness['logs'] = [];
  // The app's logger (its redaction included), writing parsed lines here.
  const sink = new Writable({
    write(chunk, _enc, cb) {
      for (const line of String(chunk).split('\n')) {
        if (!line) continue;
        const obj = JSON.parse(line) as Record<string, unknown>;
        logs.push({ level: String(obj.level), obj });
      }
      cb();
    },
  });
  const log = createLogger('debug', sink);
  const respond = createResponder({ log, pages: { name: 'portcullis', prefix: '/api/auth' }, clientIp: (req) => req.socket.remoteAddress ?? '' });
  const mutator = createHeaderMutator({ upstreams, identityHeaders: o.identityHeaders ?? DEFAULT_IDENTITY_HEADERS, trustProxy: o.trustProxy ?? [] });
  const proxy = createProxy({
    upstreams,
    onUpstreamResult: (r) => results.push(r),
    respond,
    log,
  });
  const h = {} as ProxyHarness;
  const targetOf = (req: http.IncomingMessage): Omit<ForwardTarget, 'headers'> & HeaderPlan => {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    return {
      upstream: 'echo',
      path: q === -1 ? url : url.slice(0, q),
      query: q === -1 ? '' : url.slice(q + 1),
      identity: null,
      gatewayCookieNames: [],
      stripBearer: false,
      proto: 'http',
      ...h.target(req),
    };
  };
  const server = http.createServer((req, res) => {
    const t = targetOf(req);
    proxy.forward(req, res, { ...t, headers: mutator.headersFor(req, t) });
  });
  server.on('upgrade', (req: http.IncomingMessage, socket, head: Buffer) => {
    const t = { ...targetOf(req), websocket: true };
    proxy.upgrade(req, socket, head, { ...t, headers: mutator.headersFor(req, t) });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  Object.assign(h, {
    echo,
    proxy,
    mutator,
    server,
    url: `http://127.0.0.1:${port}`,
    results,
    logs,
    target: () => ({}),
    async close() {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
      proxy.close();
      await echo.close();
    },
  });
  return h;
}

export interface SimpleResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  text: string;
  json<T = EchoReply>(): T;
}

/**
 * One request on a fresh connection. `headers` may be a flat [name, value, …] list to send
 * repeated headers exactly as given.
 */
export function send(
  url: string,
  o: { method?: string; path?: string; headers?: Record<string, string> | string[]; body?: Buffer | string | Readable; agent?: http.Agent | false } = {},
): Promise<SimpleResponse> {
  const u = new URL(url);
  // Node adds Host only for object headers; an HTTP/1.1 request without one is a 400.
  let headers = o.headers;
  if (Array.isArray(headers) && !headers.some((v, i) => i % 2 === 0 && v.toLowerCase() === 'host')) headers = ['Host', u.host, ...headers];
  return new Promise((resolve, reject) => {
    const req = http.request({
      hostname: u.hostname,
      port: u.port,
      method: o.method ?? 'GET',
      path: o.path ?? '/',
      headers: headers as http.OutgoingHttpHeaders,
      agent: o.agent ?? false,
    });
    req.on('error', reject);
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => {
        const body = Buffer.concat(chunks);
        const text = body.toString('utf8');
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body, text, json: <T>() => JSON.parse(text) as T });
      });
    });
    const b = o.body;
    if (b === undefined) req.end();
    else if (typeof b === 'string' || Buffer.isBuffer(b)) req.end(b);
    else b.pipe(req);
  });
}

/** A port that nothing listens on (bound, then released). */
export async function closedPort(): Promise<number> {
  const s = http.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address() as AddressInfo;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** Polls `fn` until it returns true or `timeoutMs` passes; returns the last value seen. */
export async function waitFor<T>(fn: () => Promise<T>, ok: (v: T) => boolean, timeoutMs: number, stepMs = 50): Promise<T> {
  const end = Date.now() + timeoutMs;
  let v = await fn();
  while (!ok(v) && Date.now() < end) {
    await new Promise((r) => setTimeout(r, stepMs));
    v = await fn();
  }
  return v;
}
