import type { IncomingHttpHeaders } from 'node:http';
import { gatewayCookies, type GatewayCookies } from '../cookies.js';
import type { PageContext } from '../pages.js';
import { isSafeLocation, originAllowed, safeRedirect } from '../redirect.js';

/**
 * Where the gateway's own web app is served and what it may trust, made once at startup and
 * handed to every router, the authenticator and the responder: no config value is looked up
 * twice or threaded through call after call.
 */
export interface AuthContext {
  /** `auth.prefix` (default `/api/auth`). */
  readonly prefix: string;
  /** The gateway's display name. */
  readonly name: string;
  /** What the pages need (name and prefix). */
  readonly pages: PageContext;
  /** The gateway's own origin (known once the listener is bound). */
  readonly origin: () => string;
  /** `auth.allowed_origins`: other origins trusted for redirects, CSRF and CORS. */
  readonly allowedOrigins: readonly string[];
  /** The gateway's cookies: names, secure flag and every `Set-Cookie` value. */
  readonly cookies: GatewayCookies;
  /** `rd` from a query or form, checked on its final (normalized) value (SPEC §6); `/` when refused. */
  returnTo(rd: unknown): string;
  /** An href or `Location` built from `rd`: the exact string passes the final-value check, else `/`. */
  link(href: string): string;
  /** `Origin` (or `Referer`) is the gateway's own origin or an allowed one: the CSRF check. */
  fromOurPages(headers: IncomingHttpHeaders): boolean;
  /** `{prefix}/login`, returning to `rd` afterwards when given. */
  signIn(rd?: string): string;
}

/** Options of {@link createAuthContext}. */
export interface AuthContextOptions {
  prefix: string;
  name: string;
  origin: () => string;
  allowedOrigins: readonly string[];
  /** The gateway's origin is https (TLS, or an https `public_url`): cookies are `Secure` and prefixed. */
  secure: boolean;
}

/** Builds the {@link AuthContext}. */
export function createAuthContext(o: AuthContextOptions): AuthContext {
  const { prefix, allowedOrigins, origin } = o;
  return {
    prefix,
    name: o.name,
    pages: { name: o.name, prefix },
    origin,
    allowedOrigins,
    cookies: gatewayCookies(o.secure, prefix),
    returnTo: (rd) => safeRedirect(rd, origin(), allowedOrigins),
    link: (href) => (isSafeLocation(href, origin(), allowedOrigins) ? href : '/'),
    fromOurPages: (headers) => originAllowed(headers, origin(), allowedOrigins),
    signIn: (rd) => (rd === undefined ? `${prefix}/login` : `${prefix}/login?rd=${encodeURIComponent(rd)}`),
  };
}
