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

/** One `Set-Cookie` value: HttpOnly, SameSite=Lax, Path=/, no Domain; Secure when asked. */
export function serializeCookie(name: string, value: string, maxAgeSeconds: number, secure: boolean): string {
  const parts = [`${name}=${value}`, 'Path=/', 'HttpOnly', 'SameSite=Lax', `Max-Age=${Math.max(0, Math.floor(maxAgeSeconds))}`];
  if (secure) parts.push('Secure');
  return parts.join('; ');
}

/** The `Set-Cookie` values that clear both gateway cookies. */
export function clearCookies(names: CookieNames, secure: boolean): string[] {
  return [serializeCookie(names.access, '', 0, secure), serializeCookie(names.refresh, '', 0, secure)];
}
