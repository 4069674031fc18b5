import { METHODS } from 'node:http';
import { Errors, GatewayError, type ErrorDef } from '../errors/index.js';
import { validHost } from './host.js';
import { matchKey, normalizePath, type MatchKey, type NormalizedTarget } from './normalize.js';
import { originAllowed } from './origin.js';
import type { CompiledRoute, RouteTable } from './routes.js';

/** Who is asking, as established by a verified access token or session cookie. */
export interface Identity {
  /** User id (token `sub`). */
  readonly sub: string;
  readonly username: string;
  /** Role names; compared case-sensitively with the route's `access.roles`. */
  readonly roles: readonly string[];
  /** Authentication methods (token `amr`): `['pwd']` or `['pwd', 'otp']`. */
  readonly amr: readonly string[];
}

/** The outcome of the access rule of one route; `decision` is also the metric label value. */
export interface Decision {
  readonly decision: 'allow' | 'unauthenticated' | 'forbidden' | 'mfa_required' | 'deny';
  /** A short human explanation, the same string for the log event and the explain output. */
  readonly reason: string;
}

/**
 * Every outcome of {@link decideRequest}; the words of `portcullis policy test` plus `csrf`.
 * `bad_request` covers every 4xx the request itself earns (bad path, bad host, refused method);
 * `auth_api` means the gateway's own auth API and pages answer (under `auth.prefix`, and
 * `/.well-known/jwks.json`): no route is consulted, the endpoint decides for itself.
 */
export type PolicyDecision = 'allow' | 'unauthenticated' | 'forbidden' | 'mfa_required' | 'deny' | 'csrf' | 'no_route' | 'bad_request' | 'auth_api';

/** The request as the gateway received it: everything the decision may depend on. */
export interface RequestFacts {
  /** The request method as sent. */
  readonly method: string;
  /** The raw request-target (`req.url`). */
  readonly target: string;
  /** The `Host` header; `undefined` when absent. */
  readonly host: string | undefined;
  /**
   * Every value of `X-HTTP-Method-Override`, `X-HTTP-Method` and `X-Method-Override` (each
   * header's copies, any order); empty or absent when none was sent.
   */
  readonly methodOverrides?: readonly string[];
  /** A WebSocket (or other) upgrade request. */
  readonly upgrade?: boolean;
  /** `Origin` and `Referer` (for the CSRF rule). */
  readonly origin?: string;
  readonly referer?: string;
  /** A browser navigation (GET/HEAD preferring HTML): denials may redirect to the sign-in page. */
  readonly browser?: boolean;
}

/** Who sent the request, as the authenticate stage found it. */
export interface AuthFacts {
  readonly identity: Identity | null;
  /** How the identity was established; `cookie` makes the CSRF rule apply. */
  readonly via: 'bearer' | 'cookie' | null;
  /** A bearer token was sent and refused (401 `invalid_token` unless the route is public). */
  readonly invalidToken?: boolean;
}

/** What the decision needs from the loaded configuration; built once per config load. */
export interface PolicyContext {
  readonly table: RouteTable;
  /** Upstreams that honour method-override headers (`method_override: true`), by name. */
  readonly methodOverrideUpstreams: ReadonlySet<string>;
  /** `auth.prefix` (sign-in redirects). */
  readonly authPrefix: string;
  /** The gateway's own origin and the other allowed origins (CSRF rule). */
  readonly ownOrigin: string;
  readonly allowedOrigins: readonly string[];
}

/** The request as the upstream will read it: normalized, matched, method resolved. */
export interface Resolved {
  readonly ok: true;
  readonly route: CompiledRoute;
  readonly normalized: NormalizedTarget;
  readonly key: MatchKey;
  /** The method that is authorized: the overriding one when the upstream honours overrides. */
  readonly method: string;
  /** Method-override headers are forwarded (the route's upstream honours them). */
  readonly overrideHonoured: boolean;
  /**
   * With an honoured override: the reading by the sent method, which must be authorized too
   * (an upstream may apply the override to POST only).
   */
  readonly alsoAs?: { readonly route: CompiledRoute; readonly method: string };
}

/** The answer of {@link decideRequest}. */
export interface Verdict {
  readonly decision: PolicyDecision;
  /** The HTTP status the gateway answers; 200 stands for "forwarded" (the upstream's status wins). */
  readonly status: number;
  /** The problem+json `code`; `null` for `allow`. */
  readonly code: string | null;
  /** Why, for logs and `policy explain` (may name routes and roles: never sent to clients). */
  readonly reason: string;
  /** What the client is told (problem+json `detail`). */
  readonly detail: string;
  /** The route that decided, if any matched. */
  readonly route: CompiledRoute | null;
  /** Browsers: where to send them instead (the sign-in page with `rd`). */
  readonly redirect?: string;
  /** The original path and query, for `rd` links. */
  readonly returnTo?: string;
  /** Set with decision `auth_api`: the normalized target the auth API receives. */
  readonly authApi?: NormalizedTarget;
}

const list = (xs: readonly string[]): string => `[${xs.join(', ')}]`;

/**
 * The access rule of one route for `identity` (or an anonymous caller, `null`). Checks run in a
 * fixed order: `access: deny` → `deny` (everyone, anonymous included); `public` → `allow` (mfa
 * is not considered); no identity → `unauthenticated`; `{roles}` with none held → `forbidden`;
 * route `mfa: true` and no `otp` in `amr` → `mfa_required`; otherwise `allow`. Only
 * {@link decideRequest} calls it outside tests.
 */
export function decide(route: CompiledRoute, identity: Identity | null): Decision {
  const { access, mfa } = route.config;
  const name = route.name;
  if (access === 'deny') return { decision: 'deny', reason: `route "${name}" denies all access` };
  if (access === 'public') return { decision: 'allow', reason: `route "${name}" is public` };
  if (identity === null) {
    const need = access === 'authenticated' ? 'authentication' : `one of roles ${list(access.roles)}`;
    return { decision: 'unauthenticated', reason: `route "${name}" requires ${need}; request is not authenticated` };
  }
  if (access !== 'authenticated' && !access.roles.some((r) => identity.roles.includes(r))) {
    return {
      decision: 'forbidden',
      reason: `route "${name}" requires one of roles ${list(access.roles)}; user has ${list(identity.roles)}`,
    };
  }
  if (mfa && !identity.amr.includes('otp')) {
    return { decision: 'mfa_required', reason: `route "${name}" requires two-factor authentication; token amr is ${list(identity.amr)}` };
  }
  const why = access === 'authenticated' ? 'authenticated user' : `user has one of roles ${list(access.roles)}`;
  return { decision: 'allow', reason: `route "${name}": ${why}${mfa ? ' with two-factor authentication' : ''}` };
}

/** Methods a cookie may carry without an origin check (SPEC §3.1). */
const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);
/** Methods never forwarded: TRACE reflects headers (cookies included), CONNECT opens tunnels. */
const REFUSED_METHODS = new Set(['TRACE', 'CONNECT', 'TRACK']);
const METHOD_TOKEN = /^[A-Za-z]{1,32}$/;
/**
 * The methods the gateway's listener can receive at all: Node's HTTP parser (llhttp) answers
 * any other request line (`FOO`, `TRACK`, `PRI`, RTSP's `DESCRIBE`) with a bare 400 before the
 * pipeline sees it. Checked here too, so `policy explain` and `policy test` say what the
 * gateway says for such a method instead of deciding it by the routes.
 */
const LISTENER_METHODS: ReadonlySet<string> = new Set(METHODS);

function refuse(def: ErrorDef, reason: string, route: CompiledRoute | null = null, decision: PolicyDecision = 'bad_request'): Verdict {
  return { decision, status: def.status, code: def.code, reason, detail: reason, route };
}

/** A request whose method, Host and target passed the checks of {@link parseRequest}. */
export interface Parsed {
  readonly ok: true;
  /** The method as sent, upper-cased. */
  readonly method: string;
  readonly normalized: NormalizedTarget;
  readonly key: MatchKey;
}

/**
 * Stage "normalize" (pure): refuses a method the listener cannot parse (400 `bad_request`),
 * TRACE/CONNECT (405), an invalid Host (400 `bad_host`) and a bad path (400 `bad_path`);
 * normalizes the target and derives its matching key.
 */
export function parseRequest(ctx: Pick<PolicyContext, 'authPrefix'>, req: RequestFacts): Parsed | Verdict {
  const method = req.method.toUpperCase();
  if (!LISTENER_METHODS.has(method)) return refuse(Errors.bad_request, `${JSON.stringify(req.method)} is not an HTTP method the gateway accepts`);
  if (REFUSED_METHODS.has(method)) return refuse(Errors.method_not_allowed, `the ${method} method is not accepted`);
  if (req.host !== undefined && !validHost(req.host)) return refuse(Errors.bad_host, 'the Host header is not a valid host[:port]');
  try {
    const normalized = normalizePath(req.target);
    // The auth API is matched on the normalized path exactly as spelled (`/API/AUTH/x` is an
    // ordinary request for the routes): it is the gateway's own, not a case-folding upstream's.
    const p = normalized.path;
    if (p === ctx.authPrefix || p.startsWith(`${ctx.authPrefix}/`) || p === '/.well-known/jwks.json') {
      return {
        decision: 'auth_api',
        status: 200,
        code: null,
        reason: `served by the gateway's own auth API (${p === '/.well-known/jwks.json' ? 'JWKS' : `auth.prefix ${ctx.authPrefix}`}); the endpoint answers for itself`,
        detail: '',
        route: null,
        authApi: normalized,
      };
    }
    return { ok: true, method, normalized, key: matchKey(p) };
  } catch (e) {
    if (!(e instanceof GatewayError)) throw e;
    return refuse(Errors.bad_path, e.message);
  }
}

/**
 * Stage "match" (pure): resolves a method override the upstream would honour and finds the first
 * matching route. Returns the refusal instead when there is nothing to authorize.
 */
export function matchRequest(ctx: PolicyContext, parsed: Parsed, req: RequestFacts): Resolved | Verdict {
  const { normalized, key } = parsed;
  const sent = parsed.method;

  // A method override is judged as the upstream reads it. It counts when the request reaches an
  // upstream that honours overrides (`method_override: true`); then BOTH readings must pass:
  // the overriding method (what the upstream acts on when it applies the override) and the sent
  // one (what it acts on when it does not: most frameworks apply overrides to POST only, so a
  // DELETE carrying `X-HTTP-Method-Override: GET` is still a DELETE to them). Otherwise the
  // headers are removed and only the sent method counts.
  let method = sent;
  let overrideHonoured = false;
  let route: CompiledRoute | undefined;
  let alsoAs: { route: CompiledRoute; method: string } | undefined;
  const honours = (r: CompiledRoute | undefined) => r?.config.upstream !== undefined && ctx.methodOverrideUpstreams.has(r.config.upstream);
  const values = new Set<string>();
  for (const v of req.methodOverrides ?? []) for (const part of v.split(',')) values.add(part.trim().toUpperCase());
  for (const v of values) {
    if (!METHOD_TOKEN.test(v)) return refuse(Errors.bad_request, 'a method-override header does not name a method');
  }
  const mayOverride = values.size > 0 || (normalized.query !== '' && ctx.methodOverrideUpstreams.size > 0);
  const asSentFirst = mayOverride ? ctx.table.match({ host: req.host, method: sent, path: normalized.path, key }) : undefined;
  // Symfony and Laravel also read `_method` from the query string: it counts for honouring upstreams.
  if (honours(asSentFirst)) for (const v of queryMethods(normalized.query)) values.add(v);
  if (values.size > 1) return refuse(Errors.bad_request, 'method overrides name different methods');
  if (values.size === 1) {
    const [over] = values;
    if (!METHOD_TOKEN.test(over)) return refuse(Errors.bad_request, 'a method override does not name a method');
    const asSent = asSentFirst;
    const asOverridden = ctx.table.match({ host: req.host, method: over, path: normalized.path, key });
    if (honours(asSent) || honours(asOverridden)) {
      if (REFUSED_METHODS.has(over)) return refuse(Errors.method_not_allowed, `the ${over} method is not accepted`);
      if (asOverridden === undefined || asSent === undefined) {
        return {
          ...refuse(Errors.no_route, `no route matches ${asOverridden ? sent : over} ${normalized.path}`, null, 'no_route'),
          detail: 'No route matches this request.',
        };
      }
      // Both readings must send the request to the same upstream, one that honours overrides.
      if (asOverridden.config.upstream !== undefined && (!honours(asOverridden) || asOverridden.config.upstream !== asSent.config.upstream)) {
        return refuse(Errors.bad_request, `the ${over} override and the ${sent} request lead to different upstreams`);
      }
      method = over;
      overrideHonoured = true;
      route = asOverridden;
      if (asSent !== asOverridden || sent !== over) alsoAs = { route: asSent, method: sent };
    }
  }
  route ??= ctx.table.match({ host: req.host, method, path: normalized.path, key });
  // A `;` (or `%3B`) is refused unless the matched route allows it; with no route at all it is
  // still a bad path (400), not a mere miss (404).
  if (normalized.hasSemicolon && !route?.config.allow_semicolons) {
    const why = route ? `";" in the path is not allowed on route "${route.name}" (set allow_semicolons: true to permit it)` : '";" is not allowed in paths';
    return { ...refuse(Errors.bad_path, why, route ?? null), detail: '";" is not allowed in paths on this route.' };
  }
  if (!route) return { ...refuse(Errors.no_route, 'no route matches this request', null, 'no_route'), detail: 'No route matches this request.' };
  return { ok: true, route, normalized, key, method, overrideHonoured, ...(alsoAs ? { alsoAs } : {}) };
}

/**
 * Values of `_method` parameters in a raw query string, upper-cased, found the way PHP (Symfony,
 * Laravel) reads parameter names: fully decoded (`%5Fmethod`, `_%6Dethod`), leading spaces
 * dropped, `.`, space and `[` turned into `_` (`.method`), cut at a NUL; case ignored.
 */
function queryMethods(query: string): string[] {
  const out: string[] = [];
  for (const pair of query.split(/[&;]/)) {
    const eq = pair.indexOf('=');
    let name = safeDecode(eq < 0 ? pair : pair.slice(0, eq));
    const nul = name.indexOf('\0');
    if (nul >= 0) name = name.slice(0, nul);
    name = name.replace(/^ +/, '').replace(/[ .[]/g, '_').toLowerCase();
    if (name !== '_method') continue;
    out.push(
      safeDecode(eq < 0 ? '' : pair.slice(eq + 1))
        .trim()
        .toUpperCase(),
    );
  }
  return out;
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s.replace(/\+/g, ' '));
  } catch {
    return s;
  }
}

/** Stages "normalize" and "match" together. */
export function resolveRequest(ctx: PolicyContext, req: RequestFacts): Resolved | Verdict {
  const parsed = parseRequest(ctx, req);
  return isVerdict(parsed) ? parsed : matchRequest(ctx, parsed, req);
}

/** True when `r` is a refusal rather than a parsed or resolved request. */
export function isVerdict<T extends { readonly ok: true }>(r: T | Verdict): r is Verdict {
  return (r as { ok?: unknown }).ok !== true;
}

/**
 * Stage "authorize" (pure): the one decision function. The HTTP handler, the upgrade handler,
 * `policy explain` and `policy test` all come here, so they cannot disagree. Order: route
 * `deny` → 403; a refused bearer token on a non-public route → 401 `invalid_token`; a
 * cookie-authenticated request other than GET/HEAD/OPTIONS, or any cookie-authenticated
 * upgrade, from a foreign origin → 403 `csrf`; then the route's access rule ({@link decide}).
 */
export function decideRequest(ctx: PolicyContext, resolved: Resolved | Verdict, auth: AuthFacts, req: RequestFacts): Verdict {
  if (isVerdict(resolved)) return resolved;
  const first = decideOne(ctx, resolved, auth, req);
  if (first.decision !== 'allow' || resolved.alsoAs === undefined) return first;
  // An honoured override: the sent method must pass as well (the stricter reading wins).
  const second = decideOne(ctx, { ...resolved, route: resolved.alsoAs.route, method: resolved.alsoAs.method }, auth, req);
  return second.decision === 'allow' ? first : second;
}

function decideOne(ctx: PolicyContext, resolved: Resolved, auth: AuthFacts, req: RequestFacts): Verdict {
  const { route, normalized, method } = resolved;
  const returnTo = normalized.path + (normalized.query ? `?${normalized.query}` : '');
  const access = route.config.access;
  const out = (decision: PolicyDecision, def: ErrorDef | null, reason: string, detail: string, redirect?: string): Verdict => ({
    decision,
    status: def?.status ?? 200,
    code: def?.code ?? null,
    reason,
    detail,
    route,
    returnTo,
    ...(redirect === undefined ? {} : { redirect }),
  });

  if (access === 'deny') return out('deny', Errors.access_denied, `route "${route.name}" denies all access`, 'This path is closed.');
  if (auth.invalidToken && access !== 'public') {
    return out('unauthenticated', Errors.invalid_token, 'the bearer token was refused', 'The access token is invalid or expired.');
  }
  if (auth.via === 'cookie' && auth.identity !== null) {
    const unsafe = req.upgrade === true || !SAFE_METHODS.has(req.method.toUpperCase()) || !SAFE_METHODS.has(method);
    if (unsafe && !originAllowed({ origin: req.origin, referer: req.referer }, ctx.ownOrigin, ctx.allowedOrigins)) {
      const what = req.upgrade ? 'upgrade' : `${req.method.toUpperCase()} request`;
      return out('csrf', Errors.csrf, `cookie-authenticated ${what} from a foreign origin`, 'This request did not come from a page of this site.');
    }
  }
  const d = decide(route, auth.identity);
  switch (d.decision) {
    case 'allow':
      return out('allow', null, d.reason, '');
    case 'deny':
      return out('deny', Errors.access_denied, d.reason, 'This path is closed.');
    case 'unauthenticated': {
      const redirect = req.browser ? `${ctx.authPrefix}/login?rd=${encodeURIComponent(returnTo)}` : undefined;
      return out('unauthenticated', Errors.unauthenticated, d.reason, 'Sign in or send a bearer token.', redirect);
    }
    case 'forbidden':
      return out('forbidden', Errors.forbidden, d.reason, 'Your roles do not grant access to this route.');
    case 'mfa_required': {
      const redirect = req.browser ? `${ctx.authPrefix}/login?rd=${encodeURIComponent(returnTo)}` : undefined;
      return out('mfa_required', Errors.mfa_required, d.reason, 'This route needs a sign-in with a second factor.', redirect);
    }
  }
}

/** Both stages at once, for callers without I/O in between (`policy explain`, `policy test`). */
export function evaluateRequest(ctx: PolicyContext, req: RequestFacts, auth: AuthFacts): Verdict {
  return decideRequest(ctx, resolveRequest(ctx, req), auth, req);
}

/**
 * The error a denying decision of {@link decide} maps to (`deny` → `access_denied` 403,
 * `unauthenticated` → 401, `forbidden` → 403, `mfa_required` → 403); `undefined` for `allow`.
 */
export function decisionError(d: Decision): ErrorDef | undefined {
  switch (d.decision) {
    case 'allow':
      return undefined;
    case 'deny':
      return Errors.access_denied;
    case 'unauthenticated':
      return Errors.unauthenticated;
    case 'forbidden':
      return Errors.forbidden;
    case 'mfa_required':
      return Errors.mfa_required;
  }
}

/** Builds the {@link PolicyContext} of a loaded config. */
export function policyContext(
  table: RouteTable,
  cfg: {
    readonly upstreams: Readonly<Record<string, { readonly method_override?: boolean }>>;
    readonly auth: { readonly prefix: string; readonly allowed_origins: readonly string[] };
  },
  ownOrigin: string,
): PolicyContext {
  const methodOverrideUpstreams = new Set(
    Object.entries(cfg.upstreams)
      .filter(([, u]) => u.method_override === true)
      .map(([n]) => n),
  );
  return { table, methodOverrideUpstreams, authPrefix: cfg.auth.prefix, ownOrigin, allowedOrigins: cfg.auth.allowed_origins };
}
