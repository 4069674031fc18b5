import type { IncomingMessage } from 'node:http';
import { Errors, is, unauthenticated } from '../errors/index.js';
import type { AuthService } from '../auth/index.js';
import type { RequestAuth } from '../pipeline/handler.js';
import { bearerToken } from './bearer.js';
import { parseCookies, type GatewayCookies } from './cookies.js';

/** Who sent a request, and how: the pipeline's authenticate stage result. */
export type { RequestAuth } from '../pipeline/handler.js';

export interface AuthenticatorDeps {
  auth: AuthService;
  /** The gateway's cookies (names and `Set-Cookie` values). */
  cookies: GatewayCookies;
  /** True when a bearer token carries one of the gateway's own key ids (it is never forwarded). */
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
        if (!is(e, Errors.invalid_token)) throw e;
        out.bearerError = unauthenticated(true, e.message);
        out.stripBearer = d.isGatewayToken(bearer);
      }
      return out;
    }
    const header = req.headers.cookie;
    const names = d.cookies.names;
    if (!header || (!header.includes(names.access) && !header.includes(names.refresh))) return out;
    const jar = parseCookies(header);
    const access = jar.get(names.access);
    if (access) {
      try {
        out.identity = await d.auth.verify(access);
        out.via = 'cookie';
        return out;
      } catch (e) {
        if (!is(e, Errors.invalid_token)) throw e;
      }
    }
    const refresh = jar.get(names.refresh);
    if (!refresh) {
      if (access) out.setCookies = [d.cookies.clearAccess()];
      return out;
    }
    const r = await d.auth.silentRefresh(refresh);
    if (r.kind === 'invalid') {
      out.setCookies = d.cookies.clear();
      return out;
    }
    out.identity = r.identity;
    out.via = 'cookie';
    if (r.kind === 'pair') out.setCookies = d.cookies.session(r.tokens);
    else out.setCookies = [d.cookies.access(r.access, r.expiresIn)];
    return out;
  };
}

export type Authenticate = ReturnType<typeof createAuthenticator>;
