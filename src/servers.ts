import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { readFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import helmet from 'helmet';
import { decodeProtectedHeader } from 'jose';
import type { Config } from './config/index.js';
import { Errors, GatewayError } from './errors/index.js';
import { compileRoutes, policyContext } from './policy/index.js';
import { createProxy, type GatewayProxy } from './proxy/index.js';
import { clientIpFrom } from './proxy/ip.js';
import { createAuthApi, createAuthContext, formErrorResponder } from './http/auth-api/index.js';
import { createAuthenticator } from './http/authenticate.js';
import { createLimiter } from './http/rate-limit.js';
import { reservedCookieNames } from './http/cookies.js';
import { createGateway, createHeaderMutator, type GatewayState } from './pipeline/index.js';
import { createAdminServer } from './http/admin.js';
import { createResponder } from './http/respond.js';
import type { Services } from './services.js';

/** HSTS under TLS (the same value helmet sets on the gateway's own pages). */
const HSTS_HEADERS: Readonly<Record<string, string>> = Object.freeze({ 'strict-transport-security': 'max-age=31536000; includeSubDomains' });

/**
 * Explicit limits on a listener (SPEC §3.1), never Node's defaults: every header line is kept
 * (`maxHeadersCount: 0`; the framing stage answers 431 past `limits.max_header_lines`, so no
 * line is ever dropped silently), and the three timeouts come from `limits`.
 */
export function applyListenerLimits(server: Server, limits: Config['limits']): void {
  server.maxHeadersCount = 0;
  server.headersTimeout = limits.headers_timeout;
  server.requestTimeout = limits.request_timeout;
  server.keepAliveTimeout = limits.keep_alive_timeout;
}

export interface ServersOptions {
  /** Whether `/readyz` may answer 200 (false from the first moment of a shutdown). */
  ready: () => boolean;
  /** `POST /unlock` on the admin listener, for `portcullis user unlock` with in-process state. */
  adminUnlockToken?: string;
}

/** The gateway's two listeners over the services, and what a reload or a shutdown needs of them. */
export interface Servers {
  /** The gateway listener (HTTP or HTTPS): proxied routes and the auth app. */
  readonly server: Server;
  /** The admin listener: /metrics, /healthz, /readyz. */
  readonly admin: Server;
  /** Requests being answered now. */
  inFlight(): number;
  /** The gateway's own origin once the listen address is known (when public_url is unset). */
  setOrigin(origin: string): void;
  /** Applies a new config's routes, upstreams and headers; throws before anything changes. */
  reload(next: Config): void;
  /** Closes every upstream pool and WebSocket tunnel, reload-retired ones included. */
  closeUpstreams(): void;
}

/** Builds the HTTP side: responder, proxy, limiters, auth app, pipeline and both listeners. */
export function createServers(svc: Services, opts: ServersOptions): Servers {
  const { log, metrics, auth, mfa, tokens, keySet } = svc;
  let config = svc.config;
  // The gateway's own origin: public_url, else the address actually bound (known after listen).
  let origin = new URL(config.publicUrl).origin;
  // Where the gateway's own app is served and what it trusts (prefix, name, origins, cookies,
  // the rd check), made once for the auth app, the authenticator and the responder.
  const site = createAuthContext({
    prefix: config.auth.prefix,
    name: config.name,
    origin: () => origin,
    allowedOrigins: config.auth.allowed_origins,
    secure: Boolean(config.tls) || origin.startsWith('https:'),
  });
  let state: GatewayState;
  const clientIp = (req: IncomingMessage) => clientIpFrom(req, state.config.trust_proxy);
  // The one responder: every error answer (auth app, pipeline, proxy, limiters, raw sockets) is
  // written and logged by it.
  const responder = createResponder({ log, pages: site.pages, clientIp });

  const makeProxy = (c: Config): GatewayProxy =>
    createProxy({
      upstreams: c.upstreams,
      log,
      respond: responder,
      onUpstreamResult: (r) => {
        metrics.upstreamDuration.observe({ upstream: r.upstream, status: r.status === null ? 'error' : String(r.status) }, r.durationSeconds);
        if (r.reason) metrics.upstreamErrors.inc({ upstream: r.upstream, reason: r.reason });
      },
    });
  let proxy = makeProxy(config);
  /** Proxies replaced by a reload, still draining: closeUpstreams() closes them too (their tunnels would keep server.close() waiting). */
  const retired = new Set<GatewayProxy>();
  // A revoked session's WebSocket tunnels close at once, wherever the revocation came from.
  svc.localRevocations.onAdd((sid) => {
    proxy.closeSession(sid);
    for (const old of retired) old.closeSession(sid);
  });

  const helmetMw = helmet({
    // HSTS only when this listener speaks TLS: over plain HTTP it would be a lie.
    strictTransportSecurity: config.tls ? { maxAge: 31_536_000, includeSubDomains: true } : false,
    contentSecurityPolicy: {
      directives: {
        defaultSrc: ["'none'"],
        styleSrc: ["'self'"],
        imgSrc: ["'self'", 'data:'],
        formAction: ["'self'", ...config.auth.allowed_origins],
        frameAncestors: ["'none'"],
        baseUri: ["'none'"],
        upgradeInsecureRequests: config.tls ? [] : null,
      },
    },
    crossOriginEmbedderPolicy: false,
    // Not no-referrer: with it, browsers send `Origin: null` on form posts, and the CSRF check
    // needs the real origin of our own sign-in form.
    referrerPolicy: { policy: 'same-origin' },
    xFrameOptions: { action: 'deny' },
  });
  const ourKids = new Set(keySet.kids);
  const isGatewayToken = (token: string) => {
    try {
      const kid = decodeProtectedHeader(token).kid;
      return typeof kid === 'string' && ourKids.has(kid);
    } catch {
      return false;
    }
  };
  const authenticate = createAuthenticator({ auth, cookies: site.cookies, isGatewayToken });
  const limiterBase = { clientIp, metrics, log, respond: responder.send };
  const loginLimiter = createLimiter({
    ...limiterBase,
    store: svc.rateLimitStore(),
    name: 'login',
    requests: config.auth.login_rate_limit.requests,
    perMs: config.auth.login_rate_limit.per,
    onStoreError: 'closed',
    onLimited: () => metrics.loginAttempts.inc({ result: 'rate_limited' }),
    // The sign-in form gets a page, like its other errors; API clients get problem+json.
    respond: formErrorResponder(site, responder),
  });
  const apiLimiter = createLimiter({
    ...limiterBase,
    store: svc.rateLimitStore(),
    name: 'auth_api',
    requests: config.auth.api_rate_limit.requests,
    perMs: config.auth.api_rate_limit.per,
    onStoreError: 'closed',
  });
  /** Per-route limiters, rebuilt with the routes on reload; a store outage lets traffic through. */
  const routeLimiters = (c: Config) =>
    new Map(
      c.routes
        .filter((r) => r.rate_limit)
        .map((r) => [
          r.name,
          createLimiter({
            ...limiterBase,
            store: svc.rateLimitStore(),
            name: `route:${r.name}`,
            requests: r.rate_limit!.requests,
            perMs: r.rate_limit!.per,
            onStoreError: 'open',
          }),
        ]),
    );
  const authApp = createAuthApi({
    loginLimiter,
    apiLimiter,
    auth,
    mfa,
    authenticate,
    ctx: site,
    respond: responder,
    publicJwks: () => keySet.publicJwks(),
    helmet: helmetMw,
    clientIp,
    now: svc.now,
  });
  const gateway = createGateway({
    state: () => state,
    auth,
    metrics,
    log,
    authApp: authApp as unknown as (req: IncomingMessage, res: ServerResponse) => void,
    securityHeaders: (req, res) => helmetMw(req as never, res as never, () => undefined),
    // HSTS on every response under TLS, proxied ones included (helmet covers our own pages).
    responseHeaders: () => (state.config.tls ? HSTS_HEADERS : undefined),
    sendError: responder.send,
    sendSocketError: responder.sendToSocket,
    clientIp,
    signAssertion: (input) => tokens.signAssertion(input),
    authenticate,
    cookieNames: [site.cookies.names.access, site.cookies.names.refresh],
    reservedCookies: reservedCookieNames(),
  });

  /** Everything the pipeline needs from one config, built once per load. */
  const buildState = (c: Config, p: GatewayProxy): GatewayState => {
    const routes = compileRoutes(c.routes);
    return {
      config: c,
      routes,
      policy: policyContext(routes, c, origin),
      mutator: createHeaderMutator({ identityHeaders: c.identity_headers, upstreams: c.upstreams, trustProxy: c.trust_proxy }),
      limiters: routeLimiters(c),
      proxy: p,
    };
  };
  state = buildState(config, proxy);

  const server: Server = config.tls
    ? createHttpsServer(
        {
          cert: readFileSync(config.tls.cert),
          key: readFileSync(config.tls.key),
          // TLS 1.2+ with forward-secret AEAD suites by default (SPEC §3.1), the server's order
          // first, ECDHE over X25519 / P-256 / P-384 only.
          minVersion: config.tls.min_version,
          ciphers: config.tls.ciphers,
          honorCipherOrder: true,
          ecdhCurve: 'X25519:P-256:P-384',
        },
        gateway.handle,
      )
    : createHttpServer(gateway.handle);
  server.on('upgrade', gateway.upgrade);
  applyListenerLimits(server, config.limits);
  // CONNECT is a forward proxy's business, never a gateway's: 405 (without a listener Node
  // would drop the connection without a word).
  server.on('connect', (req: IncomingMessage, socket: Socket) => {
    responder.sendToSocket(
      req,
      socket,
      new GatewayError(Errors.method_not_allowed, 'The CONNECT method is not accepted.', { headers: config.tls ? { ...HSTS_HEADERS } : {} }),
    );
  });
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
    // Requests Node's parser refuses (bad request line, conflicting framing, oversized head) get
    // a bare 400 (431 for an oversized head) and the connection is closed: nothing after the
    // unparseable part can be trusted to be a request of its own. Bare: the method is unknown,
    // and after a HEAD a body would be read as the next response. A connection that is already
    // gone (a reset) gets nothing and is not an error of the client's request.
    if (!socket.writable || socket.destroyed) {
      socket.destroy();
      return;
    }
    const refused =
      err.code === 'HPE_HEADER_OVERFLOW'
        ? new GatewayError(Errors.too_many_headers, 'The request head is too large.')
        : new GatewayError(Errors.bad_request, 'The request could not be parsed.');
    responder.sendToSocket(undefined, socket, config.tls ? refused.withHeaders(HSTS_HEADERS) : refused, { body: false });
  });
  let inFlight = 0;
  server.on('request', (_req: IncomingMessage, res: ServerResponse) => {
    inFlight++;
    res.once('close', () => inFlight--);
  });

  const admin = createAdminServer({
    metrics,
    dependencies: () => svc.dependencies,
    ready: opts.ready,
    unlock: opts.adminUnlockToken ? { token: opts.adminUnlockToken, run: (u) => svc.lockout.unlock(u) } : undefined,
    log,
  });
  applyListenerLimits(admin, config.limits);

  return {
    server,
    admin,
    inFlight: () => inFlight,
    setOrigin(next) {
      origin = next;
      state = { ...state, policy: policyContext(state.routes, state.config, origin) };
    },
    reload(next) {
      const upstreamsChanged =
        JSON.stringify(next.upstreams) !== JSON.stringify(config.upstreams) ||
        JSON.stringify(next.identity_headers) !== JSON.stringify(config.identity_headers) ||
        JSON.stringify(next.trust_proxy) !== JSON.stringify(config.trust_proxy);
      const nextState = buildState(next, proxy); // compiles the routes: throws before anything changes
      if (upstreamsChanged) {
        const old = proxy;
        proxy = makeProxy(next);
        nextState.proxy = proxy;
        // In-flight requests keep their sockets; idle ones go when the old agents close.
        retired.add(old);
        setTimeout(() => {
          retired.delete(old);
          old.close();
        }, config.shutdown_grace).unref();
      }
      config = next;
      state = nextState;
    },
    closeUpstreams() {
      proxy.close();
      for (const old of retired) old.close();
      retired.clear();
    },
  };
}
