import { ServerResponse, type IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import type { Config } from '../config/index.js';
import { AuthErrors, GatewayError, PolicyErrors } from '../errors/index.js';
import type { Metrics, AuthDecision } from '../metrics/index.js';
import { decide, normalizePath, type CompiledRoute, type RouteTable } from '../policy/index.js';
import { writeProblemToSocket, type ForwardTarget, type Proxy } from '../proxy/index.js';
import type { AuthService, TokenIdentity } from '../auth/login-flow.js';
import type { Authenticate } from './authenticate.js';
import { originAllowed } from './redirect.js';
import type { Limiter } from './rate-limit.js';
import { sendError, unauthenticated, wantsHtml } from './problem.js';

/** Everything the request pipeline needs; rebuilt when the config is reloaded. */
export interface GatewayState {
  config: Config;
  routes: RouteTable;
  /** Rate limiters of routes with `rate_limit`, by route name. */
  limiters: Map<string, Limiter>;
}

export interface GatewayDeps {
  state: () => GatewayState;
  auth: AuthService;
  proxy: Proxy;
  metrics: Metrics;
  log: Logger;
  /** The express app serving the auth API, pages and JWKS. */
  authApp: (req: IncomingMessage, res: ServerResponse) => void;
  /** Security headers for the gateway's own responses. */
  securityHeaders: (req: IncomingMessage, res: ServerResponse) => void;
  clientIp: (req: IncomingMessage) => string;
  /** True when a bearer token was issued by this gateway (its `kid` is in our key set). */
  authenticate: Authenticate;
  /** The gateway's own cookie names, never forwarded upstream. */
  cookieNames: string[];
  /** The gateway's own origin (for CSRF checks). */
  origin: () => string;
  /** Signs an upstream assertion (`X-Auth-Assertion`). */
  signAssertion: (input: { sub: string; username: string; email: string | null; roles: readonly string[]; upstream: string }) => Promise<string>;
}

const UNSAFE = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);
const KNOWN_METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);
const methodLabel = (m: string | undefined) => (m && KNOWN_METHODS.has(m) ? m : 'OTHER');

/** Outcome of the checks every proxied request (and WebSocket upgrade) passes. */
type Checked =
  | { ok: true; route: CompiledRoute; path: string; query: string; identity: TokenIdentity | null; tokenUsed: boolean; setCookies: string[] }
  | { ok: false; error: GatewayError; routeLabel: string; redirect?: string; setCookies?: string[]; /** the response was already written (429) */ answered?: boolean };

/**
 * The request pipeline: normalize → match route → authenticate → authorize → proxy.
 * The hot path does no I/O of its own: tokens are verified locally (cached) and revocation
 * is a local lookup.
 */
export function createGateway(d: GatewayDeps) {
  const authPaths = (prefix: string, path: string) => path === prefix || path.startsWith(prefix + '/') || path === '/.well-known/jwks.json';

  function record(req: IncomingMessage, res: ServerResponse, started: bigint, route: () => string) {
    res.once('close', () => {
      d.metrics.requestDone(route(), methodLabel(req.method), res.statusCode, Number(process.hrtime.bigint() - started) / 1e9);
    });
  }

  function decision(route: string, result: AuthDecision, reason: string, req: IncomingMessage, identity: TokenIdentity | null) {
    d.metrics.authDecisions.inc({ route, decision: result });
    if (result !== 'allow') {
      d.log.info({ event: 'access_denied', granted: false, route, decision: result, reason, method: req.method, user: identity?.username ?? null, ip: d.clientIp(req) }, 'access denied');
    }
  }

  async function check(req: IncomingMessage, pathInfo: { path: string; query: string; hasSemicolon: boolean }, res: ServerResponse, onRoute?: (name: string) => void): Promise<Checked> {
    const { routes } = d.state();
    const route = routes.match({ host: req.headers.host, method: req.method ?? 'GET', path: pathInfo.path });
    if (route) onRoute?.(route.name);
    // A `;` is refused unless the matched route allows it; with no route at all it is still a
    // bad path (400), not a mere miss (404).
    if (pathInfo.hasSemicolon && !route?.config.allow_semicolons) {
      return { ok: false, routeLabel: route?.name ?? '_invalid', error: new GatewayError(PolicyErrors.bad_path, '";" is not allowed in paths on this route.') };
    }
    if (!route) return { ok: false, routeLabel: '_none', error: new GatewayError(PolicyErrors.no_route, 'No route matches this request.') };
    const limiter = d.state().limiters.get(route.name);
    if (limiter && !(await limiter(req, res))) {
      return { ok: false, routeLabel: route.name, error: new GatewayError(AuthErrors.rate_limited), answered: true };
    }
    const access = route.config.access;
    const a = await d.authenticate(req);
    const identity = a.identity;
    if (access === 'deny') {
      // Authenticated first only so the audit log says who knocked.
      decision(route.name, 'deny', `route "${route.name}" denies all requests`, req, identity);
      return { ok: false, routeLabel: route.name, error: new GatewayError(PolicyErrors.access_denied, 'This path is closed.'), setCookies: a.setCookies };
    }
    // A bad bearer token on a public route is ignored (the request is anonymous); elsewhere 401.
    if (a.bearerError && access !== 'public') {
      decision(route.name, 'unauthenticated', a.bearerError.message, req, null);
      return { ok: false, routeLabel: route.name, error: a.bearerError, setCookies: a.setCookies };
    }
    // Cookies ride along on cross-site requests: an unsafe method authenticated by cookie
    // must come from our own (or an allowed) origin.
    if (a.via === 'cookie' && UNSAFE.has(req.method ?? '') && !originAllowed(req.headers, d.origin(), d.state().config.auth.allowed_origins)) {
      decision(route.name, 'csrf', 'cookie-authenticated unsafe request from a foreign origin', req, identity);
      return { ok: false, routeLabel: route.name, error: new GatewayError(PolicyErrors.csrf, 'This request did not come from a page of this site.'), setCookies: a.setCookies };
    }
    const result = decide(route, identity);
    decision(route.name, result.decision, result.reason, req, identity);
    switch (result.decision) {
      case 'allow':
        // Our own bearer token never reaches an upstream, valid or not (an expired or revoked
        // one on a public route included); a foreign bearer token is the upstream's business.
        return { ok: true, route, path: pathInfo.path, query: pathInfo.query, identity, tokenUsed: a.stripBearer, setCookies: a.setCookies };
      case 'deny':
        return { ok: false, routeLabel: route.name, error: new GatewayError(PolicyErrors.access_denied, 'This path is closed.'), setCookies: a.setCookies };
      case 'unauthenticated': {
        const prefix = d.state().config.auth.prefix;
        const target = pathInfo.path + (pathInfo.query ? `?${pathInfo.query}` : '');
        return { ok: false, routeLabel: route.name, error: unauthenticated(false), redirect: `${prefix}/login?rd=${encodeURIComponent(target)}`, setCookies: a.setCookies };
      }
      case 'forbidden':
        return { ok: false, routeLabel: route.name, error: new GatewayError(PolicyErrors.forbidden, 'Your roles do not grant access to this route.'), setCookies: a.setCookies };
      case 'mfa_required': {
        const error = new GatewayError(PolicyErrors.mfa_required, 'This route needs a sign-in with a second factor.');
        if (!wantsHtml(req) || !identity) return { ok: false, routeLabel: route.name, error, setCookies: a.setCookies };
        // A browser is sent where it can get the factor: enrollment when the user has none
        // yet, otherwise a fresh sign-in (which will ask for the code).
        const prefix = d.state().config.auth.prefix;
        const rd = encodeURIComponent(pathInfo.path + (pathInfo.query ? `?${pathInfo.query}` : ''));
        const user = await d.auth.currentUser(identity).catch(() => null);
        const redirect = user && !user.mfaEnabled ? `${prefix}/2fa/setup?rd=${rd}` : `${prefix}/login?rd=${rd}`;
        return { ok: false, routeLabel: route.name, error, redirect, setCookies: a.setCookies };
      }
    }
  }

  async function target(req: IncomingMessage, c: Extract<Checked, { ok: true }>): Promise<ForwardTarget> {
    const { config } = d.state();
    const upstream = c.route.config.upstream!;
    const id = c.identity;
    // A signed assertion is minted per request (60 s, aud = upstream) for upstreams that ask.
    const assertion = id && config.upstreams[upstream]?.assertion ? await d.signAssertion({ sub: id.sub, username: id.username, email: id.email, roles: id.roles, upstream }) : undefined;
    return {
      upstream,
      path: c.path,
      query: c.query,
      assertion,
      identity: id && { sub: id.sub, username: id.username, email: id.email, roles: [...id.roles] },
      gatewayCookieNames: d.cookieNames,
      stripBearer: c.tokenUsed,
      setCookies: c.setCookies,
      clientIp: d.clientIp(req),
      proto: (config.tls ? 'https' : 'http') as 'http' | 'https',
      responseHeaders: config.tls ? { 'strict-transport-security': 'max-age=31536000; includeSubDomains' } : undefined, // = helmet's HSTS in app.ts
    };
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const started = process.hrtime.bigint();
    let routeLabel = '_invalid';
    record(req, res, started, () => routeLabel);
    let pathInfo;
    try {
      pathInfo = normalizePath(req.url ?? '');
    } catch (e) {
      d.securityHeaders(req, res);
      sendError(req, res, e);
      return;
    }
    const { config } = d.state();
    d.proxy.stripIdentityHeaders(req);
    if (authPaths(config.auth.prefix, pathInfo.path)) {
      routeLabel = '_auth';
      req.url = pathInfo.path + (pathInfo.query ? `?${pathInfo.query}` : '');
      d.authApp(req, res);
      return;
    }
    const c = await check(req, pathInfo, res, (name) => (routeLabel = name));
    if (!c.ok) {
      routeLabel = c.routeLabel;
      if (c.answered) return;
      d.securityHeaders(req, res);
      if (c.setCookies?.length) res.setHeader('set-cookie', c.setCookies);
      if (c.redirect && wantsHtml(req)) {
        res.writeHead(302, { location: c.redirect, 'cache-control': 'no-store', 'content-length': 0 });
        res.end();
        return;
      }
      sendError(req, res, c.error);
      return;
    }
    routeLabel = c.route.name;
    // Set now so an upstream failure (502/504) still hands the browser its rotated cookies;
    // on success the proxy appends them to the upstream's own.
    if (c.setCookies.length) res.setHeader('set-cookie', c.setCookies);
    d.proxy.forward(req, res, await target(req, c));
  }

  async function upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    // writeProblemToSocket ends the socket and destroys it once flushed: a refused client
    // that stays half-open must not keep a descriptor.
    const fail = (err: GatewayError, setCookies?: readonly string[]) => writeProblemToSocket(socket, err, setCookies);
    socket.on('error', () => socket.destroy());
    let pathInfo;
    try {
      pathInfo = normalizePath(req.url ?? '');
    } catch (e) {
      fail(e instanceof GatewayError ? e : new GatewayError(PolicyErrors.bad_path, 'Bad request path.'));
      return;
    }
    d.proxy.stripIdentityHeaders(req);
    if (authPaths(d.state().config.auth.prefix, pathInfo.path)) {
      fail(new GatewayError(PolicyErrors.no_route, 'WebSockets are not served on the auth endpoints.'));
      return;
    }
    // The limiter writes its 429 into a detached response; the socket gets the same answer.
    const scratch = new ServerResponse(req);
    const c = await check(req, pathInfo, scratch);
    if (!c.ok) {
      if (c.answered) {
        const retry = scratch.getHeader('retry-after');
        fail(new GatewayError(AuthErrors.rate_limited, 'Too many requests; slow down.', { headers: retry === undefined ? {} : { 'retry-after': String(retry) } }));
        return;
      }
      fail(c.error, c.setCookies);
      return;
    }
    d.proxy.upgrade(req, socket, head, await target(req, c));
  }

  return {
    handle: (req: IncomingMessage, res: ServerResponse) => {
      handle(req, res).catch((e) => {
        d.log.error({ err: (e as Error).message, stack: (e as Error).stack }, 'request failed');
        sendError(req, res, e);
      });
    },
    upgrade: (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      upgrade(req, socket, head).catch((e) => {
        d.log.error({ err: (e as Error).message }, 'upgrade failed');
        socket.destroy();
      });
    },
  };
}
