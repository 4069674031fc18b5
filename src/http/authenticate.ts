import type { IncomingMessage } from 'node:http';
import { GatewayError, PolicyErrors } from '../errors/index.js';
import type { AuthService } from '../auth/index.js';
import type { RequestAuth } from '../pipeline/handler.js';
import { bearerToken } from './bearer.js';
import { clearCookies, parseCookies, serializeCookie, type CookieNames } from './cookies.js';
import { unauthenticated } from './problem.js';

/** Who sent a request, and how: the pipeline's authenticate stage result. */
export type { RequestAuth } from '../pipeline/handler.js';

export interface AuthenticatorDeps {
  auth: AuthService;
  cookies: CookieNames;
  secureCookies: boolean;
  isGatewayToken: (token: string) => boolean;
}

/**
 * Authentication shared by the proxied pipeline and the auth API: a bearer token, else the
 * access cookie, else — when the access cookie is missing or expired — a silent refresh with
 * the refresh cookie. Only the refresh touches the database; the common case is local.
 */
export function createAuthenticator(d: AuthenticatorDeps) {
  return async function authenticate(req: IncomingMessage): Promise<RequestAuth> {
    const out: RequestAuth = { identity: null, via: null, bearerError: null, stripBearer: false, setCookies: [] };
    const bearer = bearerToken(req.headers.authorization);
    if (bearer !== undefined) {
      if (bearer === '') {
        out.bearerError = unauthenticated(true, 'Malformed Authorization header.');
        // It may still carry one of our tokens (`Bearer <token> x`): never forward it.
        out.stripBearer = true;
        return out;
      }
      try {
        out.identity = await d.auth.verify(bearer);
        out.via = 'bearer';
        out.stripBearer = true;
      } catch (e) {
        if (!(e instanceof GatewayError) || e.status !== 401) throw e;
        out.bearerError = unauthenticated(true, e.message);
        out.stripBearer = d.isGatewayToken(bearer);
      }
      return out;
    }
    const header = req.headers.cookie;
    if (!header || (!header.includes(d.cookies.access) && !header.includes(d.cookies.refresh))) return out;
    const jar = parseCookies(header);
    const access = jar.get(d.cookies.access);
    if (access) {
      try {
        out.identity = await d.auth.verify(access);
        out.via = 'cookie';
        return out;
      } catch (e) {
        if (!(e instanceof GatewayError) || e.code !== PolicyErrors.invalid_token.code) throw e;
      }
    }
    const refresh = jar.get(d.cookies.refresh);
    if (!refresh) {
      if (access) out.setCookies = clearCookies(d.cookies, d.secureCookies).slice(0, 1);
      return out;
    }
    const r = await d.auth.silentRefresh(refresh);
    if (r.kind === 'invalid') {
      out.setCookies = clearCookies(d.cookies, d.secureCookies);
      return out;
    }
    out.identity = r.identity;
    out.via = 'cookie';
    if (r.kind === 'pair') out.setCookies = sessionCookies(d.cookies, d.secureCookies, r.tokens);
    else out.setCookies = [serializeCookie(d.cookies.access, r.access, r.expiresIn, d.secureCookies)];
    return out;
  };
}

/** The two cookies of a signed-in browser. */
export function sessionCookies(names: CookieNames, secure: boolean, t: { access_token: string; expires_in: number; refresh_token: string; refresh_expires_in: number }): string[] {
  return [serializeCookie(names.access, t.access_token, t.expires_in, secure), serializeCookie(names.refresh, t.refresh_token, t.refresh_expires_in, secure)];
}

export type Authenticate = ReturnType<typeof createAuthenticator>;
