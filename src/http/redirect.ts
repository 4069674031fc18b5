/**
 * The `rd` (return-to) check of SPEC §6. Only a relative path on the gateway's own origin, or
 * an absolute URL whose origin is the gateway's or an allowed one, is returned; everything
 * else — `//evil`, `/\evil`, `/%09/evil`, `https://good.evil`, `https://good@evil`,
 * `javascript:`, and their percent-encoded forms — falls back to `/`.
 */
export function safeRedirect(rd: unknown, ownOrigin: string, allowedOrigins: readonly string[] = []): string {
  if (typeof rd !== 'string' || rd === '' || rd.length > 2048) return '/';
  // Any control character, space or backslash, raw or percent-encoded at any depth, is refused:
  // browsers strip tabs/newlines and treat `\` as `/`, which turns `/\t/evil` into `//evil`.
  let probe = rd;
  for (let i = 0; i < 3; i++) {
    if (/[\u0000-\u0020\u007f\\]/.test(probe)) return '/';
    let next: string;
    try {
      next = decodeURIComponent(probe);
    } catch {
      return '/';
    }
    if (next === probe) break;
    probe = next;
    // A decoded form that would read as protocol-relative is an escape attempt.
    if (/^\/\//.test(probe) || /^\/\\/.test(probe)) return '/';
  }
  if (/[\u0000-\u0020\u007f\\]/.test(probe)) return '/';

  if (rd.startsWith('/')) {
    if (rd.startsWith('//')) return '/';
    let u: URL;
    try {
      u = new URL(rd, ownOrigin);
    } catch {
      return '/';
    }
    if (u.origin !== new URL(ownOrigin).origin) return '/';
    return u.pathname + u.search + u.hash;
  }
  let u: URL;
  try {
    u = new URL(rd);
  } catch {
    return '/';
  }
  if (u.protocol !== 'https:' && u.protocol !== 'http:') return '/';
  if (u.username || u.password) return '/';
  const own = new URL(ownOrigin).origin;
  if (u.origin === own) return u.pathname + u.search + u.hash;
  if (allowedOrigins.some((o) => sameOrigin(o, u.origin))) return u.href;
  return '/';
}

function sameOrigin(a: string, b: string): boolean {
  try {
    return new URL(a).origin === new URL(b).origin;
  } catch {
    return false;
  }
}

/**
 * CSRF origin check (SPEC §3): the request's `Origin` — or, lacking it, the origin of its
 * `Referer` — must be the gateway's own origin or an allowed one. A request with neither is
 * refused: every browser that sends cookies on a cross-site POST also sends `Origin`.
 */
export function originAllowed(headers: { origin?: string | string[]; referer?: string | string[] }, ownOrigin: string, allowedOrigins: readonly string[]): boolean {
  const first = (v: string | string[] | undefined) => (Array.isArray(v) ? v[0] : v);
  let origin = first(headers.origin);
  if (origin === undefined || origin === 'null') {
    const referer = first(headers.referer);
    if (!referer) return false;
    try {
      origin = new URL(referer).origin;
    } catch {
      return false;
    }
  }
  return sameOrigin(origin, ownOrigin) || allowedOrigins.some((o) => sameOrigin(o, origin!));
}
