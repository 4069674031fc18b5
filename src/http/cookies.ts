/** Names and attributes of the gateway's own cookies (SPEC §6). */
export interface CookieNames {
  access: string;
  refresh: string;
}

/**
 * With a secure origin the cookies are `Secure` and `__Host-` prefixed (which also pins them
 * to `Path=/` with no `Domain`); over plain HTTP (development) the prefix would be refused
 * by browsers, so plain names are used.
 */
export function cookieNames(secure: boolean): CookieNames {
  return secure ? { access: '__Host-portcullis_at', refresh: '__Host-portcullis_rt' } : { access: 'portcullis_at', refresh: 'portcullis_rt' };
}

/** The MFA step cookie (`__Secure-` prefixed with a secure origin; scoped to the auth prefix). */
export function mfaCookieName(secure: boolean): string {
  return secure ? '__Secure-portcullis_mfa' : 'portcullis_mfa';
}

/** Every cookie the gateway owns, by base name (no prefix): upstreams may not set them. */
export function reservedCookieNames(): string[] {
  const plain = cookieNames(false);
  return [plain.access, plain.refresh, mfaCookieName(false)];
}

/** Parses a `Cookie` header into a map (first occurrence of a name wins). */
export function parseCookies(header: string | undefined): Map<string, string> {
  const out = new Map<string, string>();
  if (!header) return out;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq === -1) continue;
    const name = part.slice(0, eq).trim();
    if (!name || out.has(name)) continue;
    let value = part.slice(eq + 1).trim();
    if (value.startsWith('"') && value.endsWith('"')) value = value.slice(1, -1);
    out.set(name, value);
  }
  return out;
}

/** One `Set-Cookie` value: HttpOnly, SameSite=Lax, no Domain, on `path`; Secure when asked. */
export function serializeCookie(name: string, value: string, maxAgeSeconds: number, secure: boolean, path = '/'): string {
  const parts = [`${name}=${value}`, `Path=${path}`, 'HttpOnly', 'SameSite=Lax', `Max-Age=${Math.max(0, Math.floor(maxAgeSeconds))}`];
  if (secure) parts.push('Secure');
  return parts.join('; ');
}

/** The tokens of a signed-in browser's two cookies. */
export interface SessionTokens {
  access_token: string;
  expires_in: number;
  refresh_token: string;
  refresh_expires_in: number;
}

/**
 * The gateway's cookies as one object, made once from the secure flag and the auth prefix:
 * their names, and every `Set-Cookie` value the gateway sends.
 */
export interface GatewayCookies {
  /** The session cookies' names. */
  readonly names: CookieNames;
  /** The MFA step cookie's name. */
  readonly mfa: string;
  /** `Secure` (and prefixed names): the gateway's origin is https. */
  readonly secure: boolean;
  /** Both session cookies of a completed sign-in or refresh. */
  session(t: SessionTokens): string[];
  /** The access cookie alone (a silent refresh within the grace period). */
  access(token: string, maxAgeSeconds: number): string;
  /** Clears both session cookies. */
  clear(): string[];
  /** Clears the access cookie only. */
  clearAccess(): string;
  /** The MFA token between the password form and the code form (scoped to the auth prefix, so no `__Host-`). */
  mfaStep(token: string, maxAgeSeconds: number): string;
  /** Clears the MFA step cookie. */
  clearMfaStep(): string;
}

/** Builds {@link GatewayCookies} for an origin that is (or is not) https, with the auth API under `prefix`. */
export function gatewayCookies(secure: boolean, prefix: string): GatewayCookies {
  const names = cookieNames(secure);
  const mfa = mfaCookieName(secure);
  const cookie = (name: string, value: string, maxAge: number, path = '/') => serializeCookie(name, value, maxAge, secure, path);
  return {
    names,
    mfa,
    secure,
    session: (t) => [cookie(names.access, t.access_token, t.expires_in), cookie(names.refresh, t.refresh_token, t.refresh_expires_in)],
    access: (token, maxAge) => cookie(names.access, token, maxAge),
    clear: () => [cookie(names.access, '', 0), cookie(names.refresh, '', 0)],
    clearAccess: () => cookie(names.access, '', 0),
    mfaStep: (token, maxAge) => cookie(mfa, token, maxAge, prefix),
    clearMfaStep: () => cookie(mfa, '', 0, prefix),
  };
}
