const SERIALIZED_ORIGIN = /^[A-Za-z][A-Za-z0-9+.-]*:\/\/[^/@?#\\\s]+$/;

/** The origin of a URL string, or undefined when it does not parse. */
function originOf(url: string): string | undefined {
  try {
    return new URL(url).origin;
  } catch {
    return undefined;
  }
}

/**
 * CSRF origin check (SPEC §3.1): the request's `Origin` — or, lacking it, the origin of its
 * `Referer` — must be the gateway's own origin or an allowed one. A request with neither, or with
 * `Origin: null`, is refused: every browser that sends cookies on a cross-site request also
 * sends `Origin`.
 */
export function originAllowed(
  headers: { origin?: string | string[]; referer?: string | string[] },
  ownOrigin: string,
  allowedOrigins: readonly string[],
): boolean {
  const first = (v: string | string[] | undefined) => (Array.isArray(v) ? v[0] : v);
  let origin = first(headers.origin);
  // `Origin: null` is what browsers send from sandboxed frames, data: URLs and after a
  // cross-origin redirect: the request was not made by a page of ours. Only a missing Origin
  // falls back to the Referer.
  if (origin === 'null') return false;
  if (origin === undefined) {
    const referer = first(headers.referer);
    if (!referer) return false;
    origin = originOf(referer);
    if (origin === undefined) return false;
  }
  // A browser sends a serialized origin (`https://host[:port]`): a value with userinfo, a path, a
  // query or a fragment is not one, and is refused rather than parsed into one.
  if (headers.origin !== undefined && !SERIALIZED_ORIGIN.test(origin)) return false;
  const o = originOf(origin);
  if (o === undefined || o === 'null') return false;
  return o === originOf(ownOrigin) || allowedOrigins.some((a) => originOf(a) === o);
}
