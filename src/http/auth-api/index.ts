import express, { type NextFunction, type Request, type RequestHandler, type Response } from 'express';
import { Errors, GatewayError } from '../../errors/index.js';
import { asMiddleware, type Limiter } from '../rate-limit.js';
import { accountRoutes } from './account-routes.js';
import { formErrorResponder, type RouterDeps } from './kit.js';
import { pageRoutes } from './page-routes.js';
import { passwordRoutes } from './password-routes.js';
import { sessionRoutes } from './session-routes.js';
import { signInRoutes } from './sign-in-routes.js';

export { createAuthContext, type AuthContext, type AuthContextOptions } from './context.js';
export { formErrorResponder, type RouterDeps } from './kit.js';

/** What the auth app is built from. */
export interface AuthApiDeps extends RouterDeps {
  /** The public signing keys (`/.well-known/jwks.json`). */
  publicJwks: () => unknown;
  /** Security headers (helmet) for every answer. */
  helmet: RequestHandler;
  /** Per-IP limit on POST /login (both forms). */
  loginLimiter: Limiter;
  /** Per-IP limit on every other auth API request. */
  apiLimiter: Limiter;
}

/**
 * The gateway's own small web app: the auth API, the sign-in pages and the JWKS, composed here
 * from one router per endpoint group. Proxied traffic never passes through express (no body
 * parser may touch it).
 */
export function createAuthApi(d: AuthApiDeps): express.Express {
  const { ctx } = d;
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.use(d.helmet);
  app.use((_req, res, next) => {
    res.setHeader('cache-control', 'no-store');
    next();
  });

  // CORS for the auth API: an explicit allowlist, echoed back; never `*` with credentials.
  app.use(ctx.prefix, (req, res, next) => {
    const origin = req.headers.origin;
    if (origin && ctx.allowedOrigins.some((o) => new URL(o).origin === origin)) {
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

  const r = express.Router();
  const loginLimit = asMiddleware(d.loginLimiter);
  const apiLimit = asMiddleware(d.apiLimiter);
  // Sign-in has its own, tighter limit; everything else under the prefix shares a looser one.
  // (The sign-in route carries its limit itself: it also covers the spellings express routes
  // there, such as `/LOGIN` and `/login/`.)
  r.use((req, res, next) => (req.method === 'POST' && req.path === '/login' ? next() : apiLimit(req, res, next)));
  r.use(pageRoutes(d));
  r.use(signInRoutes(d, loginLimit));
  r.use(sessionRoutes(d));
  r.use(passwordRoutes(d));
  r.use(accountRoutes(d));

  app.get('/.well-known/jwks.json', (_req, res) => {
    res.setHeader('cache-control', 'public, max-age=300');
    res.json(d.publicJwks());
  });
  app.use(ctx.prefix, r);

  app.use((req, _res, next) => next(new GatewayError(Errors.no_route, `No auth endpoint ${req.method} ${req.path}.`)));
  // express 5 error handler: body-parser errors mapped onto our codes; forms get an HTML page;
  // the responder writes (and logs) every answer.
  const respond = formErrorResponder(ctx, d.respond);
  app.use((err: unknown, req: Request, res: Response, _next: NextFunction) => respond(req, res, mapExpressError(err)));
  return app;
}

/** body-parser's errors (http-errors, told apart by `type`) as gateway errors; anything else as is. */
function mapExpressError(err: unknown): unknown {
  if (err instanceof GatewayError) return err;
  const type = (err as { type?: string }).type;
  if (type === 'entity.too.large') return new GatewayError(Errors.body_too_large, 'Auth request bodies are limited to 16 KiB.');
  if (type === 'entity.parse.failed') return new GatewayError(Errors.malformed_json, 'The body is not valid JSON.');
  if (type === 'parameters.too.many') return new GatewayError(Errors.invalid_input, 'Too many form fields.');
  if (type === 'encoding.unsupported' || type === 'charset.unsupported') return new GatewayError(Errors.unsupported_media_type, 'Unsupported body encoding.');
  // Any other client error express or body-parser raised (they carry only a status).
  if (typeof (err as { status?: number }).status === 'number' && (err as { status: number }).status < 500) {
    return new GatewayError(Errors.bad_request, 'Malformed request.');
  }
  return err;
}
