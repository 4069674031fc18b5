import { ServerResponse, type IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import type { Config } from '../config/index.js';
import { Errors, GatewayError, errorDef, is, unauthenticated, writeProblemToSocket } from '../errors/index.js';
import type { Metrics, AuthDecision } from '../metrics/index.js';
import {
  decideRequest,
  isVerdict,
  matchRequest,
  parseRequest,
  type PolicyContext,
  type RequestFacts,
  type Resolved,
  type RouteTable,
  type Verdict,
} from '../policy/index.js';
import type { ForwardTarget, GatewayProxy } from '../proxy/index.js';
import type { AuthService, TokenIdentity } from '../auth/login-flow.js';
import { type AccessLine, RequestRecord, attachRecord, elapsedMs, loggablePath, loggedPathOf, watchSocketStatus } from './access-log.js';
import { checkFraming } from './framing.js';
import { methodOverrideValues, type HeaderMutator, type HeaderPlan } from './mutate.js';

/** Who sent a request, and how: what the authenticate stage (src/http/authenticate.ts) returns. */
export interface RequestAuth {
  identity: TokenIdentity | null;
  /** How the identity was established; `cookie` makes the CSRF rule apply. */
  via: 'bearer' | 'cookie' | null;
  /** A bearer token was sent but is not valid (401 with `error="invalid_token"` off public routes). */
  bearerError: GatewayError | null;
  /** The request carried one of our bearer tokens (it never goes upstream). */
  stripBearer: boolean;
  /** `Set-Cookie` values to send back (silent refresh, or clearing dead cookies). */
  setCookies: string[];
}

/** A per-route rate limiter: false when it answered the request (429) itself. */
export type RouteLimiter = (req: IncomingMessage, res: ServerResponse) => Promise<boolean>;

/** The `status` label of a request that closed before any response head was sent. */
export const NO_RESPONSE_STATUS = 499;

/** Everything the request pipeline needs; rebuilt when the config is reloaded. */
export interface GatewayState {
  config: Config;
  routes: RouteTable;
  /** The decision context (routes, method-override upstreams, origins). */
  policy: PolicyContext;
  /** The mutate stage of this config's upstreams and identity header names. */
  mutator: HeaderMutator;
  /** Rate limiters of routes with `rate_limit`, by route name. */
  limiters: Map<string, RouteLimiter>;
  /**
   * The forwarding engine of this config's upstreams: a request forwards through the state it
   * started with, so a reload that removes or changes an upstream never sends a request that
   * was already authorized against the old config to the new engine (502 `upstream_unknown`).
   */
  proxy: Pick<GatewayProxy, 'forward' | 'upgrade'>;
}

export interface GatewayDeps {
  state: () => GatewayState;
  auth: AuthService;
  metrics: Metrics;
  log: Logger;
  /** The express app serving the auth API, pages and JWKS. */
  authApp: (req: IncomingMessage, res: ServerResponse) => void;
  /** Security headers for the gateway's own responses. */
  securityHeaders: (req: IncomingMessage, res: ServerResponse) => void;
  /** Headers on every response, proxied ones included (HSTS under TLS). */
  responseHeaders: () => Readonly<Record<string, string>> | undefined;
  /** The one responder (src/http/respond.ts): problem+json, or an HTML page for browsers; logs the error once. */
  sendError: (req: IncomingMessage, res: ServerResponse, err: unknown) => void;
  /** The same responder's raw-socket form (refused or failed upgrades): answers, logs once, closes the socket. */
  sendSocketError: (req: IncomingMessage, socket: Duplex, err: unknown, opts?: { setCookies?: readonly string[] }) => void;
  clientIp: (req: IncomingMessage) => string;
  /** The authenticate stage: bearer token, else session cookie (with silent refresh). */
  authenticate: (req: IncomingMessage) => Promise<RequestAuth>;
  /** The gateway's own cookie names, never forwarded upstream. */
  cookieNames: string[];
  /** Cookie names an upstream may not set (the gateway's session and MFA cookies). */
  reservedCookies: readonly string[];
  /** Signs an upstream assertion (`X-Auth-Assertion`). */
  signAssertion: (input: { sub: string; username: string; email: string | null; roles: readonly string[]; upstream: string }) => Promise<string>;
}

const KNOWN_METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);
const methodLabel = (m: string | undefined) => (m && KNOWN_METHODS.has(m) ? m : 'OTHER');
const DECISION_LABELS = new Set<string>(['allow', 'unauthenticated', 'forbidden', 'mfa_required', 'csrf', 'deny']);

/** True for a browser navigation: GET/HEAD that prefers HTML. */
export function wantsHtml(req: IncomingMessage): boolean {
  const accept = req.headers.accept;
  return (req.method === 'GET' || req.method === 'HEAD') && accept !== undefined && accept.includes('text/html');
}

/** The facts the decision function reads, taken from the request once. */
function factsOf(req: IncomingMessage, upgrade: boolean): RequestFacts {
  const h = req.headers;
  return {
    method: req.method ?? 'GET',
    target: req.url ?? '',
    host: h.host,
    methodOverrides: methodOverrideValues(req),
    upgrade,
    origin: h.origin,
    referer: h.referer,
    browser: wantsHtml(req),
  };
}

/** The error a refusing verdict is answered with (401s carry the RFC 6750 challenge). */
function verdictError(v: Verdict, a: RequestAuth | null): GatewayError {
  const def = errorDef(v.code ?? '') ?? Errors.bad_request;
  if (def === Errors.invalid_token && a?.bearerError) return a.bearerError;
  if (def === Errors.unauthenticated || def === Errors.invalid_token) return unauthenticated(def === Errors.invalid_token, v.detail);
  return new GatewayError(def, v.detail);
}

/**
 * The request pipeline, one stage after the other, for HTTP requests and WebSocket upgrades alike:
 * framing → strip identity headers → normalize → match → (rate limit) → authenticate →
 * authorize (the one decision function) → mutate headers → forward. The hot path does no I/O of
 * its own: tokens are verified locally (cached) and revocation is a local lookup.
 *
 * Every request gets an id (`X-Request-Id`: a `trust_proxy` peer's, or a new one) that goes to
 * the upstream, back to the client on every answer, and on every log line about the request; and
 * one access line (`event: "request"`) when it ends. See docs/observability.md.
 */
export function createGateway(d: GatewayDeps) {
  /** Client connections on which a request's framing was refused. */
  const poisoned = new WeakSet<object>();
  // The routes, upstreams and limiters of the config in use are exported at 0 from the first
  // scrape (and a reload's new ones from the next): the state is read when /metrics renders.
  d.metrics.primeFrom(() => (d.state() as GatewayState | undefined)?.config);
  // The access line's own logger, made once: same destination, level and format, without the
  // redaction pass. None of its fixed fields can hold a secret (see AccessLine), and redaction
  // is most of the cost of a line written for every request (src/http/log.ts).
  const accessLog = d.log.child({}, { redact: [] });

  /** The access line of a request or upgrade that has ended. */
  function logAccess(req: IncomingMessage, rec: RequestRecord, status: number | null, durationMs: number, aborted: boolean, websocket: boolean): void {
    if (!accessLog.isLevelEnabled('info')) return;
    const line: AccessLine = {
      event: 'request',
      request_id: rec.id,
      method: req.method ?? null,
      path: loggedPathOf(req, rec),
      route: rec.route,
      status,
      duration_ms: durationMs,
      upstream: rec.upstream,
      user: rec.user,
      // The peer itself unless it is a trusted proxy (known per connection, no parsing per request).
      ip: d.state().mutator.untrustedPeerAddress(req) ?? d.clientIp(req),
    };
    if (aborted) line.aborted = true;
    if (websocket) line.websocket = true;
    accessLog.info(line, 'request');
  }

  /** A response closed (sent, or the connection went first): its metrics and its access line. */
  function finish(req: IncomingMessage, res: ServerResponse, rec: RequestRecord): void {
    const ns = Number(process.hrtime.bigint() - rec.started);
    // No head went out (the client left first, or the connection was dropped): not the 200 that
    // res.statusCode still holds, but 499, nginx's "client closed request" (never a 5xx alert).
    d.metrics.requestDone(rec.label, methodLabel(req.method), res.headersSent ? res.statusCode : NO_RESPONSE_STATUS, ns / 1e9);
    logAccess(req, rec, res.headersSent ? res.statusCode : null, Math.round(ns / 1000) / 1000, !res.writableFinished, false);
  }

  /**
   * Every authorization outcome on a route: one metric and, for a denial, the fields of its
   * `access_denied` event. The event is not written here: it rides on the error, so the
   * responder's one line for the refusal carries it (a redirect, which has no error answer,
   * writes it itself).
   */
  function audit(v: Verdict, req: IncomingMessage, rec: RequestRecord, identity: TokenIdentity | null): Record<string, unknown> | undefined {
    if (!v.route || !DECISION_LABELS.has(v.decision)) return undefined;
    d.metrics.authDecisions.inc({ route: v.route.name, decision: v.decision as AuthDecision });
    if (v.decision === 'allow') return undefined;
    return {
      event: 'access_denied',
      granted: false,
      request_id: rec.id,
      route: v.route.name,
      decision: v.decision,
      reason: v.reason,
      method: req.method,
      // The normalized path (what the route matched), never its query or `;` parameters.
      path: loggablePath(rec.path ?? ''),
      user: identity?.username ?? null,
      ip: d.clientIp(req),
    };
  }

  type Outcome =
    | { ok: true; resolved: Resolved; auth: RequestAuth }
    | { ok: false; error: GatewayError; routeLabel: string; redirect?: string; setCookies?: string[]; answered?: boolean };

  /**
   * Stages match → rate limit → authenticate → authorize, shared by requests and upgrades. Every
   * stage of one request reads the one state it started with (`st`), so a reload while it
   * awaits cannot mix two configs in one decision.
   */
  async function authorize(
    st: GatewayState,
    req: IncomingMessage,
    facts: RequestFacts,
    parsed: ReturnType<typeof parseRequest>,
    res: ServerResponse,
    rec: RequestRecord,
  ): Promise<Outcome> {
    if (isVerdict(parsed)) return { ok: false, error: verdictError(parsed, null), routeLabel: '_invalid' };
    const resolved = matchRequest(st.policy, parsed, facts);
    if (isVerdict(resolved)) {
      if (resolved.route) rec.label = rec.route = resolved.route.name;
      return { ok: false, error: verdictError(resolved, null), routeLabel: resolved.route?.name ?? (resolved.decision === 'no_route' ? '_none' : '_invalid') };
    }
    const route = resolved.route;
    rec.label = rec.route = route.name;
    const limiter = st.limiters.get(route.name);
    if (limiter && !(await limiter(req, res))) {
      return { ok: false, error: new GatewayError(Errors.rate_limited), routeLabel: route.name, answered: true };
    }
    // Authenticated even on deny routes, so the audit log says who knocked.
    const a = await d.authenticate(req);
    if (a.identity) rec.user = a.identity.username;
    const v = decideRequest(st.policy, resolved, { identity: a.identity, via: a.via, invalidToken: a.bearerError !== null }, facts);
    const denied = audit(v, req, rec, a.identity);
    if (v.decision === 'allow') return { ok: true, resolved, auth: a };
    let redirect = v.redirect;
    if (v.decision === 'mfa_required' && redirect !== undefined && a.identity) {
      // A browser is sent where it can get the factor: enrollment when the user has none yet,
      // otherwise a fresh sign-in (which will ask for the code).
      const user = await d.auth.currentUser(a.identity).catch((e: unknown) => {
        // A failure here has no answer of its own (the redirect falls back to sign-in): its line.
        if (is(e, Errors.service_unavailable)) {
          d.log.warn(
            { event: 'dependency_failure', request_id: rec.id, err: (e.cause as Error | undefined)?.message },
            'could not read the user for the 2FA redirect; sending to sign-in',
          );
        }
        return null;
      });
      if (user && !user.mfaEnabled) redirect = `${st.config.auth.prefix}/2fa/setup?rd=${encodeURIComponent(v.returnTo ?? '/')}`;
    } else if (v.decision === 'mfa_required') {
      redirect = undefined;
    }
    const error = verdictError(v, a);
    if (denied && redirect !== undefined) d.log.info(denied, 'access denied');
    return { ok: false, error: denied ? error.withLog(denied) : error, routeLabel: route.name, redirect, setCookies: a.setCookies };
  }

  /** Stage "mutate": the header plan of an allowed request. */
  async function plan(config: GatewayState['config'], o: Extract<Outcome, { ok: true }>, websocket: boolean, requestId: string): Promise<HeaderPlan> {
    const upstream = o.resolved.route.config.upstream!;
    const id = o.auth.identity;
    // A signed assertion is minted per request (60 s, aud = upstream) for upstreams that ask.
    const assertion =
      id && config.upstreams[upstream]?.assertion
        ? await d.signAssertion({ sub: id.sub, username: id.username, email: id.email, roles: id.roles, upstream })
        : undefined;
    return {
      upstream,
      identity: id,
      assertion,
      gatewayCookieNames: d.cookieNames,
      // Our own bearer token never reaches an upstream, valid or not; a foreign one is the
      // upstream's business.
      stripBearer: o.auth.stripBearer,
      proto: config.tls ? 'https' : 'http',
      keepMethodOverride: o.resolved.overrideHonoured,
      websocket,
      requestId,
    };
  }

  /**
   * What the transport gets for an allowed request or upgrade (tunnels are tracked by session).
   * `responseHeaders` carry the request id: they replace the upstream's own, so the client gets
   * the id of the access line whatever the upstream answers.
   */
  async function target(
    req: IncomingMessage,
    st: GatewayState,
    o: Extract<Outcome, { ok: true }>,
    websocket: boolean,
    rec: RequestRecord,
    responseHeaders: Readonly<Record<string, string>>,
  ): Promise<ForwardTarget> {
    const p = await plan(st.config, o, websocket, rec.id);
    rec.upstream = p.upstream;
    const n = o.resolved.normalized;
    return {
      upstream: p.upstream,
      path: n.path,
      query: n.query,
      headers: st.mutator.headersFor(req, p),
      setCookies: o.auth.setCookies,
      responseHeaders,
      sessionId: websocket ? o.auth.identity?.sid : undefined,
      reservedCookies: d.reservedCookies,
    };
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const started = process.hrtime.bigint();
    const st = d.state();
    const rec = new RequestRecord(st.mutator.requestId(req), started);
    attachRecord(req, rec);
    // `on`, not `once`: 'close' fires once, and once() would wrap the listener in another closure.
    res.on('close', () => finish(req, res, rec));
    // On every answer, the gateway's own (errors, redirects, the auth app) and proxied ones alike.
    res.setHeader('x-request-id', rec.id);
    const extra = d.responseHeaders();
    if (extra) for (const [k, v] of Object.entries(extra)) res.setHeader(k, v);
    // A connection whose framing was refused carries nothing trustworthy after it: requests the
    // parser found behind the refused one (pipelined in the same packet) are dropped unanswered.
    if (poisoned.has(req.socket)) {
      req.socket.destroy();
      return;
    }
    const framing = checkFraming(req, st.config.limits.max_header_lines);
    if (framing) {
      // The body (if any) is not read: the connection cannot be trusted for another request.
      poisoned.add(req.socket);
      res.setHeader('connection', 'close');
      d.securityHeaders(req, res);
      d.sendError(req, res, framing);
      return;
    }
    st.mutator.strip(req);
    const facts = factsOf(req, false);
    const parsed = parseRequest(st.policy, facts);
    if (!isVerdict(parsed)) rec.path = parsed.normalized.path;
    else if (parsed.authApi) {
      rec.label = '_auth';
      rec.path = parsed.authApi.path;
      req.url = parsed.authApi.path + (parsed.authApi.query ? `?${parsed.authApi.query}` : '');
      d.authApp(req, res);
      return;
    }
    const o = await authorize(st, req, facts, parsed, res, rec);
    if (!o.ok) {
      rec.label = o.routeLabel;
      if (o.answered) return;
      d.securityHeaders(req, res);
      if (o.setCookies?.length) res.setHeader('set-cookie', o.setCookies);
      if (o.redirect) {
        res.writeHead(302, { location: o.redirect, 'cache-control': 'no-store', 'content-length': 0 });
        res.end();
        return;
      }
      d.sendError(req, res, o.error);
      return;
    }
    // Set now so an upstream failure (502/504) still hands the browser its rotated cookies;
    // on success the proxy appends them to the upstream's own.
    if (o.auth.setCookies.length) res.setHeader('set-cookie', o.auth.setCookies);
    st.proxy.forward(req, res, await target(req, st, o, false, rec, extra ? { ...extra, 'x-request-id': rec.id } : { 'x-request-id': rec.id }));
  }

  async function upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    const st = d.state();
    const rec = new RequestRecord(st.mutator.requestId(req), process.hrtime.bigint());
    attachRecord(req, rec);
    // A tunnel's access line is written when its connection closes: the status the client was
    // answered (101 for a tunnel) and how long the connection lived.
    watchSocketStatus(socket, rec);
    socket.once('close', () => logAccess(req, rec, rec.socketStatus, elapsedMs(rec.started), rec.socketStatus === null, true));
    // The socket answer ends the socket and destroys it once flushed: a refused client that
    // stays half-open must not keep a descriptor. Every answer (and the 101) carries the id.
    const base = d.responseHeaders();
    const extra: Readonly<Record<string, string>> = base ? { ...base, 'x-request-id': rec.id } : { 'x-request-id': rec.id };
    const withExtra = (err: GatewayError) => err.withHeaders(extra);
    const fail = (err: GatewayError, setCookies?: readonly string[]) => d.sendSocketError(req, socket, withExtra(err), { setCookies });
    socket.on('error', () => socket.destroy());
    const framing = checkFraming(req, st.config.limits.max_header_lines);
    if (framing) {
      fail(framing);
      return;
    }
    // Only WebSocket upgrades are tunnelled (h2c and others would be rewritten into one below).
    if (req.method !== 'GET' || (req.headers.upgrade ?? '').trim().toLowerCase() !== 'websocket') {
      fail(new GatewayError(Errors.bad_request, 'Only WebSocket upgrades (GET with Upgrade: websocket) are accepted.'));
      return;
    }
    st.mutator.strip(req);
    const facts = factsOf(req, true);
    const parsed = parseRequest(st.policy, facts);
    if (!isVerdict(parsed)) rec.path = parsed.normalized.path;
    else if (parsed.authApi) {
      rec.path = parsed.authApi.path;
      fail(new GatewayError(Errors.no_route, 'WebSockets are not served on the auth endpoints.'));
      return;
    }
    // The limiter answers its 429 (through the responder, which logs it once with `event:
    // rate_limited` and the limiter's name) into a detached response; the socket gets a copy of
    // that answer, not a second log line.
    const scratch = new ServerResponse(req);
    const o = await authorize(st, req, facts, parsed, scratch, rec);
    if (!o.ok) {
      if (o.answered) {
        const retry = scratch.getHeader('retry-after');
        writeProblemToSocket(
          socket,
          withExtra(
            new GatewayError(Errors.rate_limited, 'Too many requests; slow down.', { headers: retry === undefined ? {} : { 'retry-after': String(retry) } }),
          ),
        );
        return;
      }
      fail(o.error, o.setCookies);
      return;
    }
    st.proxy.upgrade(req, socket, head, await target(req, st, o, true, rec, extra));
  }

  return {
    handle: (req: IncomingMessage, res: ServerResponse) => {
      // The responder logs it (error, with the stack) and answers an opaque 500.
      handle(req, res).catch((e) => d.sendError(req, res, e));
    },
    upgrade: (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      // As for requests: logged once with the stack, an opaque 500 if the socket still takes it.
      upgrade(req, socket, head).catch((e) => d.sendSocketError(req, socket, e));
    },
  };
}
