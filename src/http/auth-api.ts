import express, { type NextFunction, type Request, type Response } from 'express';
import type { RequestHandler } from 'express';
import { AuthErrors, GatewayError, PolicyErrors } from '../errors/index.js';
import type { AuthService, TokenIdentity } from '../auth/login-flow.js';
import type { UserRecord } from '../store/ports.js';
import { sendError, unauthenticated } from './problem.js';

export interface AuthApiDeps {
  auth: AuthService;
  prefix: string;
  publicJwks: () => unknown;
  helmet: RequestHandler;
  clientIp: (req: Request) => string;
}

type Authed = { identity: TokenIdentity; user: UserRecord };

/** Reads `Authorization: Bearer …`; undefined when absent. */
export function bearerToken(header: string | undefined): string | undefined {
  if (!header) return undefined;
  const m = /^Bearer[ \t]+([A-Za-z0-9\-._~+/]+=*)[ \t]*$/i.exec(header);
  return m ? m[1] : '';
}

/**
 * The gateway's own small web app: login and token endpoints under `auth.prefix`, plus the
 * JWKS. Proxied traffic never passes through express (no body parser may touch it).
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

  const json = express.json({ limit: '16kb', type: () => true });
  /** Only JSON bodies are accepted on the API (forms arrive with the browser sign-in pages). */
  const jsonBody: RequestHandler = (req, _res, next) => {
    const type = req.headers['content-type'] ?? '';
    if (!/^application\/(?:[\w.+-]+\+)?json\b/i.test(type)) {
      next(new GatewayError(AuthErrors.unsupported_media_type, 'Send a JSON body with Content-Type: application/json.'));
      return;
    }
    json(req, _res, next);
  };

  const wrap =
    (fn: (req: Request, res: Response) => Promise<void>): RequestHandler =>
    (req, res, next) => {
      fn(req, res).catch(next);
    };

  const requireAuth = async (req: Request): Promise<Authed> => {
    const token = bearerToken(req.headers.authorization);
    if (token === undefined) throw unauthenticated(false);
    if (token === '') throw unauthenticated(true, 'Malformed Authorization header.');
    try {
      return await d.auth.authenticate(token);
    } catch (e) {
      if (e instanceof GatewayError && e.code === PolicyErrors.invalid_token.code) throw unauthenticated(true, e.message);
      throw e;
    }
  };

  const r = express.Router();
  r.post(
    '/login',
    jsonBody,
    wrap(async (req, res) => {
      const out = await d.auth.login(req.body, { ip: d.clientIp(req), userAgent: req.headers['user-agent'] ?? null });
      res.status(200).json({ access_token: out.access_token, token_type: out.token_type, expires_in: out.expires_in });
    }),
  );
  r.get(
    '/me',
    wrap(async (req, res) => {
      const { identity, user } = await requireAuth(req);
      res.json({ id: user.id, username: user.username, email: user.email, roles: user.roles, mfa_enabled: user.mfaEnabled, session_id: identity.sid });
    }),
  );
  r.post(
    '/logout',
    wrap(async (req, res) => {
      const { identity } = await requireAuth(req);
      await d.auth.revokeSession(identity.sid, 'logout');
      res.status(204).end();
    }),
  );

  app.get('/.well-known/jwks.json', (_req, res) => {
    res.setHeader('cache-control', 'public, max-age=300');
    res.json(d.publicJwks());
  });
  app.use(d.prefix, r);

  app.use((req, _res, next) => next(new GatewayError(PolicyErrors.no_route, `No auth endpoint ${req.method} ${req.path}.`)));
  // express 5 error handler: map body-parser errors onto our codes, everything else as-is.
  app.use((err: unknown, req: Request, res: Response, _next: NextFunction) => {
    sendError(req, res, mapExpressError(err));
  });
  return app;
}

function mapExpressError(err: unknown): unknown {
  if (err instanceof GatewayError) return err;
  const type = (err as { type?: string }).type;
  if (type === 'entity.too.large') return new GatewayError(AuthErrors.body_too_large, 'Auth request bodies are limited to 16 KiB.');
  if (type === 'entity.parse.failed') return new GatewayError(AuthErrors.malformed_json, 'The body is not valid JSON.');
  if (type === 'encoding.unsupported' || type === 'charset.unsupported') return new GatewayError(AuthErrors.unsupported_media_type, 'Unsupported body encoding.');
  if (typeof (err as { status?: number }).status === 'number' && (err as { status: number }).status < 500) {
    return new GatewayError(PolicyErrors.bad_request, 'Malformed request.');
  }
  return err;
}
