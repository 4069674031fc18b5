import type { IncomingMessage, ServerResponse } from 'node:http';
import express, { type Request, type RequestHandler, type Response } from 'express';
import { Errors, GatewayError, unauthenticated } from '../../errors/index.js';
import type { AuthService, MfaService, TokenIdentity, TokenResponse } from '../../auth/index.js';
import type { UserRecord } from '../../store/ports.js';
import type { Authenticate } from '../authenticate.js';
import { errorPage } from '../pages.js';
import type { Responder } from '../respond.js';
import type { AuthContext } from './context.js';

/** What every router of the auth app is given. */
export interface RouterDeps {
  ctx: AuthContext;
  auth: AuthService;
  mfa: MfaService;
  authenticate: Authenticate;
  respond: Responder;
  clientIp: (req: IncomingMessage) => string;
  /** The gateway's clock (injected; tests move it). */
  now: () => Date;
}

/** A signed-in caller of the auth API. */
export interface Authed {
  identity: TokenIdentity;
  user: UserRecord;
  via: 'bearer' | 'cookie';
}

const UNSAFE = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

/** A url-encoded form post (from the gateway's own pages): exactly that type (`…urlencoded+json` is not one). */
export const isForm = (req: IncomingMessage): boolean => /^application\/x-www-form-urlencoded\s*(?:;|$)/i.test(req.headers['content-type'] ?? '');
const isJson = (req: IncomingMessage): boolean => /^application\/(?:[\w.+-]+\+)?json\b/i.test(req.headers['content-type'] ?? '');

/** The client facts a sign-in records. */
export const clientOf = (d: RouterDeps, req: Request) => ({ ip: d.clientIp(req), userAgent: req.headers['user-agent'] ?? null });

/** An async route handler; what it throws goes to the app's error handler (and so the responder). */
export const wrap =
  (fn: (req: Request, res: Response) => Promise<void>): RequestHandler =>
  (req, res, next) => {
    fn(req, res).catch(next);
  };

/** Adds `Set-Cookie` values to the response (none: nothing). */
export const appendCookies = (res: Response, cookies: readonly string[]): void => {
  if (cookies.length) res.append('set-cookie', [...cookies]);
};

/** The token pair as the API returns it (the refresh lifetime stays inside the gateway). */
export const tokenBody = (t: TokenResponse) => ({
  access_token: t.access_token,
  refresh_token: t.refresh_token,
  token_type: t.token_type,
  expires_in: t.expires_in,
});

/**
 * Every 303 of the auth API: the exact string sent as `Location` passes the final-value check
 * (set as is; express's own re-encoding never runs on it).
 */
export const seeOther = (ctx: AuthContext, res: Response, location: string): void => {
  res.setHeader('location', ctx.link(location));
  res.status(303).end();
};

/** The 403 of a request that did not come from a page of this site. */
export const csrfError = () => new GatewayError(Errors.csrf, 'This request did not come from a page of this site.');

/** The body parsers of the auth API: `body` requires one, `optionalBody` accepts none. */
export function bodyParsers(ctx: AuthContext): { body: RequestHandler; optionalBody: RequestHandler } {
  const json = express.json({ limit: '16kb', type: () => true });
  const form = express.urlencoded({ limit: '16kb', extended: false, type: () => true, parameterLimit: 20 });
  /** JSON for API clients, url-encoded forms from our pages; forms must come from our origin. */
  const body: RequestHandler = (req, res, next) => {
    if (isJson(req)) return json(req, res, next);
    if (isForm(req)) {
      if (!ctx.fromOurPages(req.headers)) return next(csrfError());
      return form(req, res, next);
    }
    next(new GatewayError(Errors.unsupported_media_type, 'Send a JSON body with Content-Type: application/json.'));
  };
  const optionalBody: RequestHandler = (req, res, next) =>
    req.headers['content-length'] === '0' || (!req.headers['content-length'] && !req.headers['transfer-encoding']) ? next() : body(req, res, next);
  return { body, optionalBody };
}

/** Bearer or cookie; cookie-authenticated unsafe requests must pass the CSRF origin check. */
export async function requireAuth(d: RouterDeps, req: Request, res: Response): Promise<Authed> {
  const r = await d.authenticate(req);
  appendCookies(res, r.setCookies);
  if (r.bearerError) throw r.bearerError;
  if (!r.identity || !r.via) throw unauthenticated(false);
  if (r.via === 'cookie' && UNSAFE.has(req.method) && !d.ctx.fromOurPages(req.headers)) throw csrfError();
  const user = await d.auth.currentUser(r.identity);
  return { identity: r.identity, user, via: r.via };
}

/**
 * How a form post's error is answered: a gateway error gets the error page with a way back to
 * sign in; anything else (an internal error) is answered as any API error.
 */
export function formErrorResponder(ctx: AuthContext, respond: Responder): (req: IncomingMessage, res: ServerResponse, e: unknown) => void {
  const back = { href: ctx.signIn(), text: 'Back to sign in' };
  return (req, res, e) => respond.send(req, res, e, isForm(req) && e instanceof GatewayError ? { html: (err) => errorPage(ctx.pages, err, back) } : undefined);
}
