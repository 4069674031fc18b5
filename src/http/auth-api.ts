import express, { type NextFunction, type Request, type Response } from 'express';
import type { RequestHandler } from 'express';
import { AuthErrors, GatewayError, PolicyErrors } from '../errors/index.js';
import type { AuthService, LoginResult, MfaService, TokenIdentity, TokenResponse } from '../auth/index.js';
import type { UserRecord } from '../store/ports.js';
import type { Authenticate } from './authenticate.js';
import { sessionCookies } from './authenticate.js';
import { clearCookies, mfaCookieName, parseCookies, serializeCookie, type CookieNames } from './cookies.js';
import { loginPage, logoutPage, messagePage, mfaPage, mfaSetupPage, recoveryCodesPage, STYLESHEET, type PageContext } from './pages.js';
import { sendError, unauthenticated } from './problem.js';
import { isSafeLocation, originAllowed, safeRedirect } from './redirect.js';
import { asMiddleware, type Limiter } from './rate-limit.js';

export { bearerToken } from './bearer.js';

export interface AuthApiDeps {
  auth: AuthService;
  mfa: MfaService;
  authenticate: Authenticate;
  prefix: string;
  name: string;
  publicJwks: () => unknown;
  helmet: RequestHandler;
  clientIp: (req: Request) => string;
  cookies: CookieNames;
  secureCookies: boolean;
  /** The gateway's own origin (known once the listener is bound). */
  origin: () => string;
  allowedOrigins: readonly string[];
  /** Per-IP limit on POST /login (both forms). */
  loginLimiter: Limiter;
  /** Per-IP limit on every other auth API request. */
  apiLimiter: Limiter;
}

type Authed = { identity: TokenIdentity; user: UserRecord; via: 'bearer' | 'cookie' };

const isMfaStep = (r: LoginResult): r is Extract<LoginResult, { mfa_required: true }> => 'mfa_required' in r;
const UNSAFE = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);
const isForm = (req: Request) => /^application\/x-www-form-urlencoded\b/i.test(req.headers['content-type'] ?? '');
const isJson = (req: Request) => /^application\/(?:[\w.+-]+\+)?json\b/i.test(req.headers['content-type'] ?? '');

/**
 * The gateway's own small web app: the auth API, the sign-in pages and the JWKS. Proxied
 * traffic never passes through express (no body parser may touch it).
 */
export function createAuthApi(d: AuthApiDeps): express.Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.use(d.helmet);
  app.use((_req, res, next) => {
    res.setHeader('cache-control', 'no-store');
    next();
  });
  const pageCtx: PageContext = { name: d.name, prefix: d.prefix };
  // Carries the MFA token from the password form to the code form; scoped to the auth prefix,
  // so it cannot take the __Host- prefix (that needs Path=/).
  const mfaCookie = mfaCookieName(d.secureCookies);
  const csrfError = () => new GatewayError(PolicyErrors.csrf, 'This request did not come from a page of this site.');

  // CORS for the auth API: an explicit allowlist, echoed back; never `*` with credentials.
  app.use(d.prefix, (req, res, next) => {
    const origin = req.headers.origin;
    if (origin && d.allowedOrigins.some((o) => new URL(o).origin === origin)) {
      res.setHeader('access-control-allow-origin', origin);
      res.setHeader('access-control-allow-credentials', 'true');
      res.setHeader('vary', 'Origin');
      if (req.method === 'OPTIONS') {
        res.setHeader('access-control-allow-methods', 'GET, POST, DELETE');
        res.setHeader('access-control-allow-headers', 'authorization, content-type');
        res.setHeader('access-control-max-age', '600');
        res.status(204).end();
        return;
      }
    } else if (req.method === 'OPTIONS') {
      res.status(204).end();
      return;
    }
    next();
  });

  const json = express.json({ limit: '16kb', type: () => true });
  const form = express.urlencoded({ limit: '16kb', extended: false, type: () => true, parameterLimit: 20 });
  /** JSON for API clients, url-encoded forms from our pages; forms must come from our origin. */
  const body: RequestHandler = (req, res, next) => {
    if (isJson(req)) return json(req, res, next);
    if (isForm(req)) {
      if (!originAllowed(req.headers, d.origin(), d.allowedOrigins)) return next(csrfError());
      return form(req, res, next);
    }
    next(new GatewayError(AuthErrors.unsupported_media_type, 'Send a JSON body with Content-Type: application/json.'));
  };
  const optionalBody: RequestHandler = (req, res, next) => (req.headers['content-length'] === '0' || (!req.headers['content-length'] && !req.headers['transfer-encoding']) ? next() : body(req, res, next));

  const wrap =
    (fn: (req: Request, res: Response) => Promise<void>): RequestHandler =>
    (req, res, next) => {
      fn(req, res).catch(next);
    };

  const appendCookies = (res: Response, cookies: string[]) => {
    if (cookies.length) res.append('set-cookie', cookies);
  };

  /** Bearer or cookie; cookie-authenticated unsafe requests must pass the CSRF origin check. */
  const requireAuth = async (req: Request, res: Response): Promise<Authed> => {
    const r = await d.authenticate(req);
    appendCookies(res, r.setCookies);
    if (r.bearerError) throw r.bearerError;
    if (!r.identity || !r.via) throw unauthenticated(false);
    if (r.via === 'cookie' && UNSAFE.has(req.method) && !originAllowed(req.headers, d.origin(), d.allowedOrigins)) throw csrfError();
    const user = await d.auth.currentUser(r.identity);
    return { identity: r.identity, user, via: r.via };
  };

  /** `rd` from a query or form, checked on its final (normalized) value (SPEC §6). */
  const rdOf = (v: unknown): string => safeRedirect(v, d.origin(), d.allowedOrigins);
  /** Every href built from `rd`: the exact string rendered passes the final-value check. */
  const link = (href: string): string => (isSafeLocation(href, d.origin(), d.allowedOrigins) ? href : '/');
  /**
   * Every 303 of the auth API: the exact string sent as `Location` passes the final-value
   * check (set as is; express's own re-encoding never runs on it).
   */
  const seeOther = (res: Response, location: string): void => {
    res.setHeader('location', link(location));
    res.status(303).end();
  };

  const tokenBody = (t: TokenResponse) => ({ access_token: t.access_token, refresh_token: t.refresh_token, token_type: t.token_type, expires_in: t.expires_in });

  const r = express.Router();
  const loginLimit = asMiddleware(d.loginLimiter);
  const apiLimit = asMiddleware(d.apiLimiter);
  // Sign-in has its own, tighter limit; everything else under the prefix shares a looser one.
  r.use((req, res, next) => (req.method === 'POST' && req.path === '/login' ? next() : apiLimit(req, res, next)));
  r.get('/static/portcullis.css', (_req, res) => {
    res.setHeader('cache-control', 'public, max-age=3600');
    res.type('text/css').send(STYLESHEET);
  });

  r.get('/login', (req, res) => {
    const rd = rdOf(req.query.rd);
    res.type('html').send(loginPage(pageCtx, { rd }));
  });

  r.post(
    '/login',
    loginLimit,
    body,
    wrap(async (req, res) => {
      const ctx = { ip: d.clientIp(req), userAgent: req.headers['user-agent'] ?? null };
      if (!isForm(req)) {
        const out = await d.auth.login(req.body, ctx);
        res.status(200).json(isMfaStep(out) ? out : tokenBody(out));
        return;
      }
      const rd = rdOf(req.body?.rd);
      const username = typeof req.body?.username === 'string' ? req.body.username : '';
      try {
        const out = await d.auth.login(req.body, ctx);
        if (isMfaStep(out)) {
          // The MFA token waits in a short-lived cookie scoped to the auth prefix.
          appendCookies(res, [serializeCookie(mfaCookie, out.mfa_token, out.expires_in, d.secureCookies).replace('Path=/', `Path=${d.prefix}`)]);
          seeOther(res, `${d.prefix}/2fa?rd=${encodeURIComponent(rd)}`);
          return;
        }
        appendCookies(res, sessionCookies(d.cookies, d.secureCookies, out));
        seeOther(res, rd);
      } catch (e) {
        const err = e instanceof GatewayError ? e : undefined;
        if (!err || err.status >= 500) throw e;
        const message = err.code === AuthErrors.invalid_input.code ? 'Enter a valid username and password.' : err.message;
        for (const [k, v] of Object.entries(err.headers ?? {})) res.setHeader(k, v);
        res.status(err.status).type('html').send(loginPage(pageCtx, { rd, error: message, username: username.slice(0, 64) }));
      }
    }),
  );

  r.get('/2fa', (req, res) => {
    const rd = rdOf(req.query.rd);
    if (!parseCookies(req.headers.cookie).get(mfaCookie)) {
      seeOther(res, `${d.prefix}/login?rd=${encodeURIComponent(rd)}`);
      return;
    }
    res.type('html').send(mfaPage(pageCtx, { rd }));
  });

  r.post(
    '/2fa/verify',
    body,
    wrap(async (req, res) => {
      const ctx = { ip: d.clientIp(req), userAgent: req.headers['user-agent'] ?? null };
      if (!isForm(req)) {
        const user = await d.mfa.verifyLogin(req.body, ctx.ip);
        res.json(tokenBody(await d.auth.completeLogin(user, ['pwd', 'otp'], ctx)));
        return;
      }
      const rd = rdOf(req.body?.rd);
      const mfaToken = parseCookies(req.headers.cookie).get(mfaCookie);
      const clearMfa = serializeCookie(mfaCookie, '', 0, d.secureCookies).replace('Path=/', `Path=${d.prefix}`);
      try {
        const user = await d.mfa.verifyLogin({ mfa_token: mfaToken ?? '', code: req.body?.code }, ctx.ip);
        const out = await d.auth.completeLogin(user, ['pwd', 'otp'], ctx);
        appendCookies(res, [...sessionCookies(d.cookies, d.secureCookies, out), clearMfa]);
        seeOther(res, rd);
      } catch (e) {
        const err = e instanceof GatewayError ? e : undefined;
        if (!err || err.status >= 500) throw e;
        if (err.code === PolicyErrors.invalid_token.code) {
          // The MFA step is over (expired, used up): start again from the password.
          appendCookies(res, [clearMfa]);
          seeOther(res, `${d.prefix}/login?rd=${encodeURIComponent(rd)}`);
          return;
        }
        for (const [k, v] of Object.entries(err.headers ?? {})) res.setHeader(k, v);
        res.status(err.status).type('html').send(mfaPage(pageCtx, { rd, error: err.status === 423 ? err.message : 'That code is not valid.' }));
      }
    }),
  );

  r.get(
    '/2fa/setup',
    wrap(async (req, res) => {
      const rd = rdOf(req.query.rd);
      const a = await d.authenticate(req);
      appendCookies(res, a.setCookies);
      if (!a.identity) {
        seeOther(res, `${d.prefix}/login?rd=${encodeURIComponent(`${d.prefix}/2fa/setup?rd=${encodeURIComponent(rd)}`)}`);
        return;
      }
      const user = await d.auth.currentUser(a.identity);
      res.type('html').send(mfaSetupPage(pageCtx, { rd, enabled: user.mfaEnabled }));
    }),
  );

  r.post(
    '/2fa/setup',
    optionalBody,
    wrap(async (req, res) => {
      const { user } = await requireAuth(req, res);
      const out = await d.mfa.setup(user);
      if (!isForm(req)) {
        res.json(out);
        return;
      }
      const rd = rdOf(req.body?.rd);
      res.type('html').send(mfaSetupPage(pageCtx, { rd, setup: { qrSvg: out.qr_svg, secret: out.secret } }));
    }),
  );

  r.post(
    '/2fa/enable',
    body,
    wrap(async (req, res) => {
      const { user } = await requireAuth(req, res);
      if (!isForm(req)) {
        res.json(await d.mfa.enable(user, req.body));
        return;
      }
      const rd = rdOf(req.body?.rd);
      const out = await d.mfa.enable(user, { code: req.body?.code });
      // The current session was signed in without a code; continuing through the sign-in page
      // gets a session whose token carries amr "otp".
      res.type('html').send(recoveryCodesPage(pageCtx, { rd: link(`${d.prefix}/login?rd=${encodeURIComponent(rd)}`), codes: out.recovery_codes }));
    }),
  );

  r.post(
    '/2fa/disable',
    body,
    wrap(async (req, res) => {
      const { user } = await requireAuth(req, res);
      await d.mfa.disable(user, req.body, d.clientIp(req));
      res.status(204).end();
    }),
  );

  r.post(
    '/refresh',
    optionalBody,
    wrap(async (req, res) => {
      const fromBody = typeof req.body === 'object' && req.body !== null ? (req.body as Record<string, unknown>).refresh_token : undefined;
      if (fromBody !== undefined && typeof fromBody !== 'string') {
        throw new GatewayError(AuthErrors.invalid_input, 'Invalid fields: refresh_token.', { extra: { errors: [{ field: 'refresh_token', message: fromBody === null ? 'required' : 'must be a string' }] } });
      }
      let token: unknown = fromBody;
      let viaCookie = false;
      if (token === undefined) {
        token = parseCookies(req.headers.cookie).get(d.cookies.refresh);
        viaCookie = token !== undefined;
        if (viaCookie && !originAllowed(req.headers, d.origin(), d.allowedOrigins)) throw csrfError();
      }
      if (token === undefined) throw new GatewayError(AuthErrors.invalid_input, 'Send {"refresh_token": "…"} or the refresh cookie.', { extra: { errors: [{ field: 'refresh_token', message: 'required' }] } });
      try {
        const out = await d.auth.refresh(token);
        if (viaCookie) appendCookies(res, sessionCookies(d.cookies, d.secureCookies, out));
        res.json(tokenBody(out));
      } catch (e) {
        if (viaCookie && e instanceof GatewayError && e.status === 401) appendCookies(res, clearCookies(d.cookies, d.secureCookies));
        throw e;
      }
    }),
  );

  r.get(
    '/logout',
    wrap(async (req, res) => {
      const a = await d.authenticate(req);
      appendCookies(res, a.setCookies);
      res.type('html').send(logoutPage(pageCtx, { signedInAs: a.identity?.username ?? null }));
    }),
  );

  r.post(
    '/logout',
    optionalBody,
    wrap(async (req, res) => {
      const form = isForm(req);
      let a: Authed | undefined;
      try {
        a = await requireAuth(req, res);
      } catch (e) {
        // A browser that is already signed out just lands on the sign-in page.
        if (form && e instanceof GatewayError && e.status === 401) {
          appendCookies(res, clearCookies(d.cookies, d.secureCookies));
          seeOther(res, `${d.prefix}/login`);
          return;
        }
        throw e;
      }
      await d.auth.revokeSession(a.identity.sid, 'logout');
      if (a.via === 'cookie') appendCookies(res, clearCookies(d.cookies, d.secureCookies));
      if (form) seeOther(res, `${d.prefix}/login`);
      else res.status(204).end();
    }),
  );

  r.get(
    '/me',
    wrap(async (req, res) => {
      const { identity, user } = await requireAuth(req, res);
      res.json({ id: user.id, username: user.username, email: user.email, roles: user.roles, mfa_enabled: user.mfaEnabled, session_id: identity.sid });
    }),
  );

  r.get(
    '/sessions',
    wrap(async (req, res) => {
      const { identity, user } = await requireAuth(req, res);
      res.json({ sessions: await d.auth.listSessions(user.id, identity.sid) });
    }),
  );

  r.delete(
    '/sessions/:id',
    wrap(async (req, res) => {
      const { user } = await requireAuth(req, res);
      await d.auth.revokeOwnSession(user.id, String(req.params.id));
      res.status(204).end();
    }),
  );

  r.post(
    '/password',
    body,
    wrap(async (req, res) => {
      const { identity, user } = await requireAuth(req, res);
      await d.auth.changePassword(user, identity.sid, req.body, d.clientIp(req));
      res.status(204).end();
    }),
  );

  app.get('/.well-known/jwks.json', (_req, res) => {
    res.setHeader('cache-control', 'public, max-age=300');
    res.json(d.publicJwks());
  });
  app.use(d.prefix, r);

  app.use((req, _res, next) => next(new GatewayError(PolicyErrors.no_route, `No auth endpoint ${req.method} ${req.path}.`)));
  // express 5 error handler: map body-parser errors onto our codes; forms get an HTML page.
  app.use((err: unknown, req: Request, res: Response, _next: NextFunction) => {
    const e = mapExpressError(err);
    if (isForm(req) && e instanceof GatewayError && !res.headersSent) {
      for (const [k, v] of Object.entries(e.headers ?? {})) res.setHeader(k, v);
      res.status(e.status).type('html').send(messagePage(pageCtx, e.title, e.message, { href: `${d.prefix}/login`, text: 'Back to sign in' }));
      return;
    }
    sendError(req, res, e);
  });
  return app;
}

function mapExpressError(err: unknown): unknown {
  if (err instanceof GatewayError) return err;
  const type = (err as { type?: string }).type;
  if (type === 'entity.too.large') return new GatewayError(AuthErrors.body_too_large, 'Auth request bodies are limited to 16 KiB.');
  if (type === 'entity.parse.failed') return new GatewayError(AuthErrors.malformed_json, 'The body is not valid JSON.');
  if (type === 'parameters.too.many') return new GatewayError(AuthErrors.invalid_input, 'Too many form fields.');
  if (type === 'encoding.unsupported' || type === 'charset.unsupported') return new GatewayError(AuthErrors.unsupported_media_type, 'Unsupported body encoding.');
  if (typeof (err as { status?: number }).status === 'number' && (err as { status: number }).status < 500) {
    return new GatewayError(PolicyErrors.bad_request, 'Malformed request.');
  }
  return err;
}
