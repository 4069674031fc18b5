import http from 'node:http';
import https from 'node:https';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import httpProxy from 'http-proxy';
import { Pool, type Dispatcher } from 'undici';
import type { Config, UpstreamConfig } from '../config/schema.js';
import { GatewayError, Errors, type GatewayErrorOptions } from '../errors/index.js';
import { HOP_BY_HOP_RESPONSE, getRequestHeader, replaceRequestHeaders } from './headers.js';
import { writeProblem } from './problem.js';
import { acceptMatches, websocketKey } from './ws-handshake.js';

/** Where and how one request is forwarded. */
export interface ForwardTarget {
  /** Upstream name (a key of `Config['upstreams']`). */
  readonly upstream: string;
  /** The normalized request path; the upstream receives exactly this (after the upstream URL's own base path, if any). */
  readonly path: string;
  /** The raw query string without the leading `?`; '' for none. */
  readonly query: string;
  /** `Set-Cookie` values the gateway adds to the upstream's response (e.g. after a silent refresh). */
  readonly setCookies?: readonly string[];
  /**
   * Headers the gateway sets on every response to this request (e.g. `Strict-Transport-Security`
   * under TLS): they replace the upstream's own, and also go on the proxy's 502/504 answers and
   * on the 101 (or refusal) of a WebSocket upgrade. Lower-case names.
   */
  readonly responseHeaders?: Readonly<Record<string, string>>;
  /**
   * The request headers to send, as a flat `[name, value, …]` list: the pipeline's mutate stage
   * (`headersFor`) made every header decision; the transport sends exactly these. The body's
   * framing is read from the request itself.
   */
  readonly headers: readonly string[];
  /** The session the request was authenticated with: its WebSocket tunnel closes when it is revoked. */
  readonly sessionId?: string;
  /**
   * Cookie names the upstream may not set (the gateway's own session cookies): such
   * `Set-Cookie` lines are dropped from upstream responses, so an app cannot plant, replace or
   * clear a gateway session.
   */
  readonly reservedCookies?: readonly string[];
}

/** Why an upstream request failed. */
export type UpstreamFailure = 'refused' | 'reset' | 'timeout';

/** One finished upstream exchange, for metrics. Client aborts are not reported. */
export interface UpstreamResult {
  readonly upstream: string;
  /** The upstream's status code (101 for an accepted WebSocket upgrade), or null on failure. */
  readonly status: number | null;
  /** Set when `status` is null. */
  readonly reason?: UpstreamFailure;
  /** From the start of forwarding until the response body ended (or the failure). */
  readonly durationSeconds: number;
}

/** A pino-compatible logger subset. */
export interface ProxyLog {
  debug(obj: Record<string, unknown>, msg?: string): void;
  warn(obj: Record<string, unknown>, msg?: string): void;
  error(obj: Record<string, unknown>, msg?: string): void;
}

/**
 * Writes the proxy's error answers and logs each exactly once: the http layer's one responder
 * (src/http/respond.ts) is one. The proxy never logs an error answer itself; what the line
 * should say (`event`, `upstream`, `reason`…) travels in the error's `log` fields.
 */
export interface ProxyResponder {
  /**
   * Answers `res` with `err` (problem+json, or the HTML page for a browser navigation); a
   * response whose head is already out is destroyed instead.
   */
  send(req: http.IncomingMessage, res: http.ServerResponse, err: GatewayError): void;
  /** Writes `err` as a complete HTTP/1.1 response on an upgrade's raw socket (with `setCookies`) and closes it. */
  sendToSocket(req: http.IncomingMessage, socket: Duplex, err: GatewayError, opts?: { setCookies?: readonly string[] }): void;
}

/** Options of {@link createProxy}. */
export interface CreateProxyOptions {
  /** The configured upstreams; one keep-alive agent each is created up front. */
  readonly upstreams: Config['upstreams'];
  /** Called once per upstream exchange (not for client aborts). */
  readonly onUpstreamResult?: (e: UpstreamResult) => void;
  /** Writes (and logs, once) every error the proxy answers with: 502/504, refused upgrades. */
  readonly respond: ProxyResponder;
  /**
   * Where the proxy's own events go (an upstream cookie dropped, tunnels closed on revocation,
   * internal faults); error answers are logged by {@link respond}. @default no logging
   */
  readonly log?: ProxyLog;
  /**
   * How long an idle pooled upstream connection is kept. A shorter `Keep-Alive: timeout=N`
   * announced by the upstream wins (minus one second), to avoid reusing a socket the upstream
   * is about to close. @default 4000
   */
  readonly freeSocketTimeoutMs?: number;
}

/** The proxy: header hygiene and forwarding to upstreams. */
export interface GatewayProxy {
  /**
   * Forwards `req` to `target.upstream`, streaming both bodies, and answers `res` with the
   * upstream's response or a problem+json 502/504. Never throws for upstream trouble.
   */
  forward(req: http.IncomingMessage, res: http.ServerResponse, target: ForwardTarget): void;
  /**
   * Proxies a WebSocket upgrade with the same header handling. A refused or failed upstream
   * handshake answers the client with a 502/504 and closes both sockets.
   */
  upgrade(req: http.IncomingMessage, socket: Duplex, head: Buffer, target: ForwardTarget): void;
  /**
   * Destroys the upstream agents (every connection they hold, in flight or idle) and every
   * established WebSocket tunnel. Later calls to forward()/upgrade() answer 502.
   */
  close(): void;
  /** Closes the WebSocket tunnels opened with session `sessionId` (it was revoked: logout, password change, disable). */
  closeSession(sessionId: string): void;
}

interface Upstream {
  readonly name: string;
  readonly cfg: UpstreamConfig;
  readonly target: { protocol: string; host: string; hostname: string; port: number };
  /** The upstream URL's path without the trailing slash ('' for none). */
  readonly basePath: string;
  /** TLS server name (https upstreams), so SNI and the certificate check use the upstream host, not the client's Host. */
  readonly servername: string | undefined;
  /** The keep-alive pool plain requests go through (undici). */
  readonly pool: Pool;
  /** `scheme://host:port` of the upstream. */
  readonly origin: string;
  /** Upgrades get sockets that are never pooled: a rejected upgrade must not leave one open (http-proxy #783). */
  readonly wsAgent: http.Agent;
}

interface Exchange {
  readonly up: Upstream;
  readonly started: number;
  proxyReq?: http.ClientRequest;
  /** Aborts the undici request (plain requests). */
  abort?: (err?: Error) => void;
  proxySocket?: Duplex;
  /** Cancels the pre-socket timer (a destroyed request may wait in the agent queue). */
  clearTimer?: () => void;
  timedOut: boolean;
  clientGone: boolean;
  settled: boolean;
  upgraded: boolean;
}

const REFUSED_CODES = new Set([
  'ECONNREFUSED',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENETDOWN',
  'EHOSTDOWN',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EAI_FAIL',
  'EAI_NONAME',
  'EADDRNOTAVAIL',
]);
/** Path characters Node itself accepts in a request target. */
const VALID_PATH = /^[\u0021-\u00ff]+$/;

/** `name` without a `__Host-`/`__Secure-` prefix, lower-cased. */
function cookieBase(name: string): string {
  return name
    .trim()
    .replace(/^__(?:host|secure)-/i, '')
    .toLowerCase();
}

/** True when a `Set-Cookie` value sets one of the reserved cookie names (any prefix or case). */
export function setsReservedCookie(setCookie: string, reserved: ReadonlySet<string>): boolean {
  const eq = setCookie.indexOf('=');
  return reserved.has(cookieBase(eq < 0 ? setCookie : setCookie.slice(0, eq)));
}

/** Maps a Node/TLS error to a failure reason (timeouts we detect ourselves are marked before this). */
export function classifyUpstreamError(err: unknown): UpstreamFailure {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code !== 'string') return 'reset';
  if (REFUSED_CODES.has(code)) return 'refused';
  if (
    code === 'ETIMEDOUT' ||
    code === 'ESOCKETTIMEDOUT' ||
    code === 'UND_ERR_CONNECT_TIMEOUT' ||
    code === 'UND_ERR_HEADERS_TIMEOUT' ||
    code === 'UND_ERR_BODY_TIMEOUT'
  )
    return 'timeout';
  // TLS handshake failures (bad certificate, wrong name, protocol): the upstream is unusable.
  if (code.startsWith('ERR_TLS') || code.startsWith('ERR_SSL') || /CERT|SELF_SIGNED|UNABLE_TO_/.test(code)) return 'refused';
  return 'reset';
}

function problemFor(reason: UpstreamFailure, headers?: Readonly<Record<string, string>>, more: Pick<GatewayErrorOptions, 'cause' | 'log'> = {}): GatewayError {
  const opts: GatewayErrorOptions = headers ? { ...more, headers: { ...headers } } : more;
  return reason === 'timeout'
    ? new GatewayError(Errors.upstream_timeout, 'The upstream service did not answer in time.', opts)
    : new GatewayError(Errors.upstream_unavailable, 'The upstream service could not be reached.', opts);
}

/**
 * The log fields of an upstream failure, for the responder's one line. The socket error's code
 * goes under `cause_code`: the app's logger redacts a top-level `code`.
 */
function upstreamErrorLog(upstream: string, reason: UpstreamFailure, err: unknown, more?: Record<string, unknown>): Record<string, unknown> {
  return { event: 'upstream_error', upstream, reason, cause_code: (err as { code?: unknown } | null)?.code ?? null, ...more };
}

/** Sets `headers` on `res` (replacing same-named ones) unless the response has started. */
function applyResponseHeaders(res: http.ServerResponse, headers: Readonly<Record<string, string>> | undefined): void {
  if (!headers || res.headersSent) return;
  for (const [k, v] of Object.entries(headers)) res.setHeader(k, v);
}

/** Sets `headers` on a header map http-proxy writes verbatim (the 101 / a refused upgrade). */
function overrideHeaderMap(map: http.IncomingHttpHeaders, headers: Readonly<Record<string, string>> | undefined): void {
  // Node lower-cases the keys of `IncomingMessage.headers`.
  if (headers) for (const [k, v] of Object.entries(headers)) map[k.toLowerCase()] = v;
}

/** Ends `s` and destroys it once flushed (or after 5 s at the latest). */
function closeSoon(s: Duplex): void {
  if (s.destroyed) return;
  const t = setTimeout(() => s.destroy(), 5_000);
  t.unref();
  s.once('close', () => clearTimeout(t));
  const soon = (s as Duplex & { destroySoon?: () => void }).destroySoon;
  if (typeof soon === 'function') soon.call(s);
  else s.end(() => s.destroy());
}

/**
 * An agent that behaves as `base` but sees each request first: `hook` runs synchronously in
 * the `ClientRequest` constructor, before the request line is rendered and before the
 * request waits in the agent's queue. http-proxy only exposes the request in its `proxyReq`
 * event, which fires when a socket is assigned — too late for a request that queued
 * behind `max_sockets` (the client may be gone by then, and its headers are already frozen).
 */
function hookedAgent(base: http.Agent, hook: (creq: http.ClientRequest, opts: Record<string, unknown>) => void): http.Agent {
  const a = Object.create(base) as http.Agent & { addRequest(r: http.ClientRequest, o: Record<string, unknown>): void };
  const baseAdd = (base as unknown as { addRequest(r: http.ClientRequest, o: Record<string, unknown>): void }).addRequest;
  a.addRequest = (creq, opts) => {
    hook(creq, opts);
    baseAdd.call(base, creq, opts);
  };
  return a;
}

function resolveUpstream(name: string, cfg: UpstreamConfig, freeMs: number): Upstream {
  const u = new URL(cfg.url);
  const isHttps = u.protocol === 'https:';
  const hostname = u.hostname.startsWith('[') ? u.hostname.slice(1, -1) : u.hostname;
  const port = u.port ? Number(u.port) : isHttps ? 443 : 80;
  const basePath = u.pathname.replace(/\/+$/, '');
  const isIpLiteral = /^[\d.]+$/.test(hostname) || hostname.includes(':');
  return {
    name,
    cfg,
    target: { protocol: u.protocol, host: hostname, hostname, port },
    basePath,
    servername: isHttps && !isIpLiteral ? hostname : undefined,
    origin: u.origin,
    pool: new Pool(u.origin, {
      connections: cfg.max_sockets,
      pipelining: 1,
      // Idle pooled connections: our idle limit, lowered by the upstream's Keep-Alive hint (undici
      // applies the hint itself, keeping `keepAliveTimeoutThreshold` in hand).
      keepAliveTimeout: freeMs,
      keepAliveMaxTimeout: freeMs,
      keepAliveTimeoutThreshold: 1_000,
      // Timeouts are armed per request below, so that the time spent queued counts too.
      headersTimeout: 0,
      bodyTimeout: 0,
      connectTimeout: cfg.timeout,
      strictContentLength: true,
      connect: isHttps && !isIpLiteral ? { servername: hostname } : {},
    }),
    wsAgent: isHttps ? new https.Agent({ keepAlive: false }) : new http.Agent({ keepAlive: false }),
  };
}

/**
 * Builds the proxy for a set of upstreams. Create it once per loaded config; on reload build
 * a new one and `close()` the old one once its requests have drained.
 */
export function createProxy(opts: CreateProxyOptions): GatewayProxy {
  const { log, respond } = opts;
  const freeMs = opts.freeSocketTimeoutMs ?? 4_000;
  const upstreams = new Map<string, Upstream>();
  for (const [name, cfg] of Object.entries(opts.upstreams)) {
    upstreams.set(name, resolveUpstream(name, cfg, freeMs));
  }
  let closed = false;
  /** Client sockets of established WebSocket tunnels (destroying one closes its upstream side). */
  const tunnels = new Set<Duplex>();
  /** The same sockets by the session they were authenticated with. */
  const bySession = new Map<string, Set<Duplex>>();

  const proxy = httpProxy.createProxyServer({
    xfwd: false, // X-Forwarded-* are set here, according to trust_proxy
    ignorePath: true, // the exact path is set on the request by the hooked agent
    changeOrigin: false, // the upstream sees the client's Host (X-Forwarded-Host too)
    selfHandleResponse: true, // hop-by-hop response headers are filtered here
    preserveHeaderKeyCase: true,
  });
  // Only WebSocket upgrades go through http-proxy (plain requests use undici, below). Its web
  // passes are never run; note for anyone who brings them back: `deleteLength` rewrites a
  // chunked DELETE/OPTIONS to `Content-Length: 0` while still piping the body (request smuggling).
  // Without an 'error' listener http-proxy rethrows and crashes the process. Every call passes
  // its own callback, so these only catch what slips through.
  proxy.on('error', (err: Error) => log?.warn({ event: 'proxy_error', err: err.message }, 'proxy error'));
  (proxy as unknown as NodeJS.EventEmitter).on('econnreset', () => {
    /* a client went away mid-request; handled by the exchange's close listeners */
  });

  function report(x: Exchange, status: number | null, reason?: UpstreamFailure): void {
    if (x.settled) return;
    x.settled = true;
    x.clearTimer?.();
    if (!opts.onUpstreamResult) return;
    const durationSeconds = (performance.now() - x.started) / 1000;
    try {
      opts.onUpstreamResult(reason ? { upstream: x.up.name, status, reason, durationSeconds } : { upstream: x.up.name, status, durationSeconds });
    } catch (e) {
      log?.error({ event: 'proxy_callback_error', err: (e as Error).message }, 'onUpstreamResult threw');
    }
  }

  function pathFor(up: Upstream, t: ForwardTarget): string | null {
    const p = up.basePath + t.path + (t.query ? `?${t.query}` : '');
    // The path is assigned after Node's own validation, so check it the way Node would.
    return p.startsWith('/') && VALID_PATH.test(p) ? p : null;
  }

  /** Upstream timeout: covers the agent queue and the connect (no socket timeout runs yet), then socket inactivity. */
  function armTimeout(x: Exchange, creq: http.ClientRequest, ms: number, onTimeout: () => void): void {
    const pre = setTimeout(onTimeout, ms);
    pre.unref();
    const clear = (): void => clearTimeout(pre);
    x.clearTimer = clear;
    creq.once('socket', (s: Socket) => {
      if (s.connecting) s.once('connect', clear);
      else clear();
    });
    creq.once('close', clear);
    creq.setTimeout(ms, onTimeout);
  }

  /** Answers an upstream failure (502/504) through the responder: one log line, `event: upstream_error`. */
  function fail(
    x: Exchange,
    res: http.ServerResponse,
    reason: UpstreamFailure,
    err: unknown,
    req: http.IncomingMessage,
    extraHeaders?: Readonly<Record<string, string>>,
    more?: Record<string, unknown>,
  ): void {
    report(x, null, reason);
    const problem = problemFor(reason, undefined, {
      cause: err ?? undefined,
      log: upstreamErrorLog(x.up.name, reason, err, { headers_sent: res.headersSent, ...more }),
    });
    applyResponseHeaders(res, extraHeaders);
    try {
      // The responder destroys a response whose head is already out.
      respond.send(req, res, problem);
    } catch {
      writeProblem(res, problem); // a responder that threw has logged already (it logs first)
    }
    x.proxyReq?.destroy();
  }

  /**
   * Writes the upstream's status and headers to `res`: hop-by-hop headers and those the upstream
   * lists in `Connection` dropped, Set-Cookie for the gateway's own cookies dropped, ours
   * appended (and then `Cache-Control: private, no-store`), the gateway's response headers
   * (HSTS) last so an upstream's cannot win. `raw` is the flat [name, value, …] list as received.
   */
  function copyResponse(status: number, statusText: string, raw: readonly string[], res: http.ServerResponse, t: ForwardTarget): void {
    const { setCookies, responseHeaders: extraHeaders } = t;
    const reserved = reservedSet(t);
    res.statusCode = status;
    if (statusText) res.statusMessage = statusText;
    let listed: Set<string> | undefined;
    for (let i = 0; i + 1 < raw.length; i += 2) {
      if (raw[i].length === 10 && raw[i].toLowerCase() === 'connection') {
        listed ??= new Set();
        for (const v of raw[i + 1].split(',')) listed.add(v.trim().toLowerCase());
      }
    }
    // Headers are set one name at a time; repeated names collect their values in order.
    const grouped = new Map<string, { name: string; values: string[] }>();
    let upstreamCookies: string[] | undefined;
    for (let i = 0; i + 1 < raw.length; i += 2) {
      const lower = raw[i].toLowerCase();
      if (HOP_BY_HOP_RESPONSE.has(lower) || (listed?.has(lower) && lower !== 'content-length')) continue;
      if (lower === 'set-cookie') {
        if (reserved && setsReservedCookie(raw[i + 1], reserved)) {
          dropped(t, raw[i + 1]);
          continue;
        }
        upstreamCookies ??= [];
        upstreamCookies.push(raw[i + 1]);
      }
      const g = grouped.get(lower);
      if (g) g.values.push(raw[i + 1]);
      else grouped.set(lower, { name: raw[i], values: [raw[i + 1]] });
    }
    for (const { name, values } of grouped.values()) {
      try {
        res.setHeader(name, values.length === 1 ? values[0] : values);
      } catch {
        // A header the upstream's parser accepted but Node's serializer refuses: drop it, keep the response.
      }
    }
    if (setCookies?.length) {
      // Appended, never replacing the upstream's own cookies (never res.getHeader: the caller
      // may have set ours already). A response that hands out session cookies must not be
      // stored by a shared cache, whatever the upstream said.
      res.setHeader('set-cookie', [...(upstreamCookies ?? []), ...setCookies]);
      res.setHeader('cache-control', 'private, no-store');
    }
    // The gateway's own (HSTS): after the upstream's, so an upstream's `max-age=0` cannot win.
    applyResponseHeaders(res, extraHeaders);
  }

  function forward(req: http.IncomingMessage, res: http.ServerResponse, t: ForwardTarget): void {
    const up = upstreams.get(t.upstream);
    if (!up || closed) {
      applyResponseHeaders(res, t.responseHeaders);
      respond.send(req, res, problemFor('refused', undefined, { log: { event: 'upstream_unknown', upstream: t.upstream, closed } }));
      return;
    }
    // The client left while we were authenticating: do not bother the upstream.
    if (res.destroyed || req.socket?.destroyed) return;
    const path = pathFor(up, t);
    if (path === null) {
      applyResponseHeaders(res, t.responseHeaders);
      respond.send(req, res, new GatewayError(Errors.bad_path));
      return;
    }
    // Framing as the client sent it: `Transfer-Encoding: chunked` → a streamed body without a
    // length (undici chunks it); `Content-Length: N` → that length (strictly checked); neither
    // → no body. The framing stage has already refused every other combination.
    const chunked = req.headers['transfer-encoding'] !== undefined;
    const length = req.headers['content-length'];
    const hasBody = chunked || (length !== undefined && length !== '0');

    const x: Exchange = { up, started: performance.now(), timedOut: false, clientGone: false, settled: false, upgraded: false };
    let headersSent = false;
    let status = 0;

    // Client gone (FIN, reset, or the response closed early): cancel the upstream request,
    // whether it is still queued for a connection or already in flight.
    const clientGone = (): void => {
      if (x.clientGone) return;
      x.clientGone = true;
      x.settled = true; // a client abort is not an upstream result
      x.clearTimer?.();
      x.abort?.(new Error('client gone'));
    };
    // The client's FIN arrives loop turns before our response's 'close' (Node's server does not
    // allow half-open HTTP). Reacting to it at once matters when many clients leave together:
    // each upstream slot freed would otherwise go to a queued request whose client has left.
    const sock = req.socket;
    const onClientEnd = (): void => {
      if (!res.writableFinished) clientGone();
    };
    sock?.once('end', onClientEnd);
    res.once('close', () => {
      sock?.off('end', onClientEnd);
      if (!res.writableFinished) clientGone();
    });

    // One timer for the whole wait: queued for a connection, connecting, then waiting for the
    // response head; then per-chunk inactivity while the body streams.
    const ms = up.cfg.timeout;
    const onTimeout = (): void => {
      if (x.timedOut || x.settled || x.clientGone) return;
      x.timedOut = true;
      if (headersSent) {
        report(x, null, 'timeout');
        res.destroy();
        x.abort?.(new Error('upstream timeout'));
        return;
      }
      fail(x, res, 'timeout', null, req, t.responseHeaders);
      x.abort?.(new Error('upstream timeout'));
    };
    let timer: NodeJS.Timeout | undefined = setTimeout(onTimeout, ms);
    const rearm = (): void => {
      if (timer) timer.refresh();
    };
    x.clearTimer = () => {
      if (timer) clearTimeout(timer);
      timer = undefined;
    };

    const handler: Dispatcher.DispatchHandler = {
      onConnect(abort) {
        x.abort = abort;
        if (x.clientGone || x.settled) abort(new Error('client gone'));
      },
      onHeaders(statusCode, rawHeaders, resume, statusText) {
        if (statusCode < 200) return true; // 1xx informational: not relayed
        if (x.settled || x.clientGone || res.destroyed) return false;
        status = statusCode;
        const raw = new Array<string>(rawHeaders.length);
        for (let i = 0; i < rawHeaders.length; i++) raw[i] = rawHeaders[i].toString('latin1');
        copyResponse(statusCode, statusText, raw, res, t);
        headersSent = true;
        rearm();
        res.on('drain', resume);
        return true;
      },
      onData(chunk) {
        rearm();
        return res.write(chunk);
      },
      onComplete() {
        x.clearTimer?.();
        res.end();
        report(x, status);
      },
      onError(err) {
        x.clearTimer?.();
        if (x.clientGone || x.settled) return;
        if (headersSent) {
          // The upstream died (or timed out) mid-body: the client must see a broken response.
          report(x, null, x.timedOut ? 'timeout' : 'reset');
          res.destroy();
          return;
        }
        fail(x, res, x.timedOut ? 'timeout' : classifyUpstreamError(err), err, req, t.responseHeaders);
      },
    };

    try {
      up.pool.dispatch(
        {
          origin: up.origin,
          path,
          method: (req.method ?? 'GET') as Dispatcher.HttpMethod,
          headers: t.headers as string[],
          body: hasBody ? req : null,
          // TLS: SNI and the certificate check name the upstream, never the client's Host (undici
          // would otherwise take the server name from the Host header).
          ...(up.origin.startsWith('https:') ? { servername: up.servername ?? up.target.hostname } : {}),
          // A request is never retried or pipelined: its body is a one-shot stream.
          idempotent: false,
          upgrade: null,
        },
        handler,
      );
    } catch (err) {
      // undici refused the request synchronously (e.g. a header value it rejects).
      x.clearTimer?.();
      if (!x.settled) fail(x, res, 'refused', err, req, t.responseHeaders, { stage: 'setup' });
      // Nobody to answer (the client left): still a fault worth a line.
      else log?.error({ event: 'proxy_setup_error', upstream: up.name, err: (err as Error).message }, 'could not start upstream request');
    }
  }

  function upgrade(req: http.IncomingMessage, socket: Duplex, head: Buffer, t: ForwardTarget): void {
    const up = upstreams.get(t.upstream);
    const x: Exchange | undefined = up ? { up, started: performance.now(), timedOut: false, clientGone: false, settled: false, upgraded: false } : undefined;
    // After an upgrade Node no longer watches the socket: an unhandled 'error' would crash us.
    // http-proxy only end()s the upstream socket on a client error (#1510); destroy both.
    socket.on('error', () => {
      if (x) x.clientGone = true;
      socket.destroy();
      x?.proxySocket?.destroy();
      x?.proxyReq?.destroy();
    });
    socket.on('close', () => {
      if (!x) return;
      if (!x.upgraded) {
        x.clientGone = true;
        x.settled = true;
        x.clearTimer?.();
        x.proxyReq?.destroy();
        return;
      }
      if (x.proxySocket) closeSoon(x.proxySocket);
    });
    // The server keeps upgraded sockets half-open on a client FIN; a WebSocket has no use for
    // half-close, so finish our side too (which leads to 'close' above).
    socket.on('end', () => {
      if (x && !x.upgraded) {
        x.clientGone = true;
        x.settled = true;
        x.clearTimer?.();
        x.proxyReq?.destroy();
      }
      socket.end();
    });
    // Every upgrade socket, tunnel or not yet, is closed by close(): the http server no longer
    // tracks it (closeAllConnections() skips it), yet server.close() waits for it.
    tunnels.add(socket);
    socket.once('close', () => tunnels.delete(socket));
    const sid = t.sessionId;
    if (sid !== undefined) {
      let set = bySession.get(sid);
      if (!set) {
        set = new Set();
        bySession.set(sid, set);
      }
      set.add(socket);
      socket.once('close', () => {
        set.delete(socket);
        if (set.size === 0 && bySession.get(sid) === set) bySession.delete(sid);
      });
    }
    if (!up || !x || closed) {
      respond.sendToSocket(req, socket, problemFor('refused', t.responseHeaders, { log: { event: 'upstream_unknown', upstream: t.upstream, closed } }));
      return;
    }
    if (req.method !== 'GET' || (getRequestHeader(req, 'upgrade') ?? '').toLowerCase() !== 'websocket') {
      respond.sendToSocket(req, socket, new GatewayError(Errors.bad_request, 'Only WebSocket upgrades are supported.', { headers: { ...t.responseHeaders } }));
      return;
    }
    // The upstream's 101 is verified against this key: without a valid one (one header, 16
    // bytes of base64) there is nothing to verify, so the upstream is never asked.
    const wsKey = websocketKey(req);
    if (wsKey === null) {
      respond.sendToSocket(
        req,
        socket,
        new GatewayError(Errors.bad_request, 'A WebSocket upgrade needs exactly one Sec-WebSocket-Key of 16 base64-encoded bytes.', {
          headers: { ...t.responseHeaders },
        }),
      );
      return;
    }
    if (socket.destroyed) return;
    const path = pathFor(up, t);
    if (path === null) {
      respond.sendToSocket(req, socket, new GatewayError(Errors.bad_path, undefined, { headers: { ...t.responseHeaders } }));
      return;
    }
    // http-proxy reads the request object: give it the decided headers.
    replaceRequestHeaders(req, t.headers);

    const failWs = (reason: UpstreamFailure, err: unknown, more?: Record<string, unknown>): void => {
      report(x, null, reason);
      const problem = problemFor(reason, t.responseHeaders, {
        cause: err ?? undefined,
        log: upstreamErrorLog(up.name, reason, err, { websocket: true, ...more }),
      });
      respond.sendToSocket(req, socket, problem, { setCookies: t.setCookies });
      x.proxyReq?.destroy();
    };
    /** A 101 whose Sec-WebSocket-Accept does not match the client's key: no tunnel, 502. */
    const rejectHandshake = (proxySocket: Duplex): void => {
      proxySocket.destroy();
      report(x, null, 'refused');
      // Whatever the client sends now goes nowhere (a socket the client has left is only destroyed).
      if (!x.clientGone && !socket.destroyed) socket.resume();
      const detail = 'The upstream answered the WebSocket handshake without a valid Sec-WebSocket-Accept.';
      const fields = upstreamErrorLog(up.name, 'refused', { code: 'bad_websocket_accept' }, { websocket: true });
      respond.sendToSocket(req, socket, new GatewayError(Errors.upstream_unavailable, detail, { headers: { ...t.responseHeaders }, log: fields }), {
        setCookies: t.setCookies,
      });
    };
    /**
     * The upstream answered the upgrade with something other than 101: relay that answer
     * (close-delimited), then close both connections, whatever the upstream's keep-alive says
     * and whatever the client sends meanwhile.
     */
    const reservedWs = reservedSet(t);
    const relayRefusal = (creq: http.ClientRequest, proxyRes: http.IncomingMessage): void => {
      report(x, proxyRes.statusCode ?? null);
      proxyRes.on('error', () => undefined);
      if (x.clientGone || socket.destroyed || !socket.writable) {
        creq.destroy();
        socket.destroy();
        return;
      }
      socket.resume(); // client bytes after the request (a frame, a pipelined request) are discarded
      const listed = new Set<string>();
      for (const v of (proxyRes.headers.connection ?? '').split(',')) listed.add(v.trim().toLowerCase());
      const chunked = proxyRes.headers['transfer-encoding'] !== undefined;
      const own = new Set(Object.keys(t.responseHeaders ?? {}).map((k) => k.toLowerCase()));
      const lines = [`HTTP/1.1 ${proxyRes.statusCode ?? 502} ${proxyRes.statusMessage ?? ''}`];
      const raw = proxyRes.rawHeaders;
      for (let i = 0; i + 1 < raw.length; i += 2) {
        const lower = raw[i].toLowerCase();
        if (HOP_BY_HOP_RESPONSE.has(lower) || own.has(lower) || (listed.has(lower) && lower !== 'content-length')) continue;
        if (lower === 'content-length' && chunked) continue; // the decoded body is close-delimited
        if (lower === 'set-cookie' && reservedWs && setsReservedCookie(raw[i + 1], reservedWs)) {
          dropped(t, raw[i + 1]);
          continue;
        }
        lines.push(`${raw[i]}: ${raw[i + 1]}`);
      }
      for (const [k, v] of Object.entries(t.responseHeaders ?? {})) lines.push(`${k}: ${v}`);
      for (const c of t.setCookies ?? []) lines.push(`Set-Cookie: ${c}`);
      lines.push('Connection: close');
      socket.write(`${lines.join('\r\n')}\r\n\r\n`);
      proxyRes.pipe(socket, { end: false });
      proxyRes.once('end', () => {
        creq.destroy(); // the upstream socket goes now, keep-alive or not
        closeSoon(socket);
      });
      proxyRes.once('close', () => {
        creq.destroy();
        if (!proxyRes.complete) socket.destroy(); // cut mid-body: the client must see a broken answer
      });
      // A body that stalls is cut after the upstream's timeout of silence.
      creq.setTimeout(up.cfg.timeout, () => {
        creq.destroy();
        socket.destroy();
      });
    };
    const onTimeout = (): void => {
      if (x.timedOut || x.settled || x.upgraded) return;
      x.timedOut = true;
      failWs('timeout', null);
    };

    const agent = hookedAgent(up.wsAgent, (creq, o) => {
      x.proxyReq = creq;
      creq.path = path;
      if (up.servername) o.servername = up.servername;
      armTimeout(x, creq, up.cfg.timeout, onTimeout);
      // http-proxy 1.18.1 opens a tunnel on any 101 and, for any other answer, writes it, pipes
      // the body and only end()s the client socket, leaving the upstream socket (#783) and a
      // half-open client behind. So neither event reaches it unless it is a verified 101.
      const emit = creq.emit;
      creq.emit = function (this: http.ClientRequest, event: string | symbol, ...args: unknown[]): boolean {
        if (event === 'response') {
          relayRefusal(creq, args[0] as http.IncomingMessage);
          return true;
        }
        if (event === 'upgrade' && !acceptMatches(args[0] as http.IncomingMessage, wsKey)) {
          rejectHandshake(args[1] as Duplex);
          return true;
        }
        return Reflect.apply(emit, this, [event, ...args]) as boolean;
      } as typeof creq.emit;
      // Registered before http-proxy's own listeners, so this runs first (verified 101s only).
      creq.on('upgrade', (upRes: http.IncomingMessage, proxySocket: Socket) => {
        // http-proxy writes the 101 from these headers after this listener runs.
        const theirs = (upRes.headers['set-cookie'] ?? []).filter((c) => {
          if (!reservedWs || !setsReservedCookie(c, reservedWs)) return true;
          dropped(t, c);
          return false;
        });
        upRes.headers['set-cookie'] = [...theirs, ...(t.setCookies ?? [])];
        if (upRes.headers['set-cookie'].length === 0) delete upRes.headers['set-cookie'];
        overrideHeaderMap(upRes.headers, t.responseHeaders);
        x.upgraded = true;
        x.proxySocket = proxySocket;
        report(x, 101);
        // Let what the upstream sent last (a close frame) reach the client, then close.
        proxySocket.on('close', () => closeSoon(socket));
        if (socket.destroyed) proxySocket.destroy();
      });
    });

    try {
      proxy.ws(req, socket, head, { target: up.target as unknown as httpProxy.ProxyTargetUrl, agent }, (err: Error) => {
        if (x.upgraded) {
          // An established tunnel broke on the upstream side.
          socket.destroy();
          x.proxySocket?.destroy();
          return;
        }
        if (x.clientGone || socket.destroyed) {
          x.proxyReq?.destroy();
          return;
        }
        if (x.settled) return;
        failWs(x.timedOut ? 'timeout' : classifyUpstreamError(err), err);
      });
    } catch (err) {
      x.proxyReq?.destroy();
      if (!x.settled) failWs('refused', err, { stage: 'setup' });
      // Nobody to answer (the client left): still a fault worth a line.
      else log?.error({ event: 'proxy_setup_error', upstream: up.name, err: (err as Error).message }, 'could not start upstream upgrade');
    }
  }

  function close(): void {
    if (closed) return;
    closed = true;
    for (const up of upstreams.values()) {
      void up.pool.destroy().catch(() => undefined);
      up.wsAgent.destroy();
    }
    // Upgraded sockets belong to no agent and no longer to the http server's bookkeeping
    // (closeAllConnections() skips them), yet they keep server.close() waiting.
    for (const s of tunnels) s.destroy();
    tunnels.clear();
    bySession.clear();
  }

  function reservedSet(t: ForwardTarget): ReadonlySet<string> | undefined {
    return t.reservedCookies?.length ? new Set(t.reservedCookies.map(cookieBase)) : undefined;
  }

  function dropped(t: ForwardTarget, setCookie: string): void {
    const eq = setCookie.indexOf('=');
    log?.warn(
      { event: 'upstream_cookie_dropped', upstream: t.upstream, cookie: (eq < 0 ? setCookie : setCookie.slice(0, eq)).trim() },
      'upstream tried to set a gateway session cookie',
    );
  }

  function closeSession(sessionId: string): void {
    const set = bySession.get(sessionId);
    if (!set) return;
    bySession.delete(sessionId);
    for (const s of set) s.destroy();
    if (set.size) log?.warn({ event: 'tunnel_closed', reason: 'session_revoked', count: set.size }, 'WebSocket tunnels of a revoked session closed');
  }

  return { forward, upgrade, close, closeSession };
}
