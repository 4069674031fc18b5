/** Longest `rd` considered at all. */
const MAX_LENGTH = 2048;
/** Percent-decoding depth examined; a value still changing after this many passes is refused. */
const MAX_DECODES = 8;
/**
 * Never acceptable anywhere in a target, raw or after any number of percent-decodings: C0 and
 * C1 controls, space, DEL, the Unicode line separators and backslash. Browsers strip tabs and
 * newlines and read `\` as `/`, which turns `/\t/evil` or `/\\evil` into `//evil`.
 */
// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are exactly what must be refused
const UNSAFE_CHAR = /[\u0000-\u0020\u007f-\u009f\u2028\u2029\\]/;
/** Printable ASCII the URL serializer may leave raw but that express's `encodeurl` would rewrite. */
const LOOSE_CHAR = /["<>`{}]/g;

/** `s` and each successive percent-decoding of it; null when undecodable or not settling. */
function decodings(s: string): string[] | null {
  const layers = [s];
  let cur = s;
  for (let i = 0; i < MAX_DECODES; i++) {
    let next: string;
    try {
      next = decodeURIComponent(cur);
    } catch {
      return null;
    }
    if (next === cur) return layers;
    layers.push(next);
    cur = next;
  }
  return null;
}

function parse(s: string, base?: string): URL | null {
  try {
    return new URL(s, base);
  } catch {
    return null;
  }
}

const pathForm = (u: URL) => (u.pathname + u.search + u.hash).replace(LOOSE_CHAR, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
const absoluteForm = (u: URL) => u.href.replace(LOOSE_CHAR, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);

/**
 * One normalization pass, as a browser would read the value: dot segments (`.`, `..`, `%2e`)
 * resolved, characters percent-encoded. Returns the candidate target, or null.
 */
function normalize(rd: string, own: string, allowedOrigins: readonly string[]): string | null {
  if (rd.startsWith('/')) {
    const u = parse(rd, own);
    if (!u || u.origin !== own) return null;
    return pathForm(u);
  }
  const u = parse(rd);
  if (!u || (u.protocol !== 'https:' && u.protocol !== 'http:') || u.username || u.password) return null;
  if (u.origin === own) return pathForm(u);
  if (allowedOrigins.some((o) => sameOrigin(o, u.origin))) return absoluteForm(u);
  return null;
}

/**
 * The check on a FINAL target — the exact string about to go into `Location` or an `href`.
 * True only for:
 * - a path on the gateway's own origin: starts with one `/` (never `//` or `/\`), and neither
 *   it nor any percent-decoding of it, once dot segments are resolved, has a path starting
 *   with `//` (so `/.//evil`, `/%2e//evil`, `/.%2f/evil`, `/%2F%2Fevil` all fail); or
 * - an absolute http(s) URL, without credentials, on an allowed origin;
 * with no control character, space or backslash raw or percent-encoded at any depth, and
 * already in the canonical form a browser would read it as (nothing left to normalize).
 */
export function isSafeLocation(loc: unknown, ownOrigin: string, allowedOrigins: readonly string[] = []): loc is string {
  if (typeof loc !== 'string' || loc === '' || loc.length > MAX_LENGTH) return false;
  const own = parse(ownOrigin)?.origin;
  if (!own) return false;
  const layers = decodings(loc);
  if (!layers || layers.some((l) => UNSAFE_CHAR.test(l))) return false;
  if (loc.startsWith('/')) {
    for (const l of layers) {
      if (!l.startsWith('/') || l.startsWith('//')) return false;
      const u = parse(l, own);
      if (!u || u.origin !== own || u.pathname.startsWith('//')) return false;
    }
  } else {
    const u = parse(loc);
    if (!u || (u.protocol !== 'https:' && u.protocol !== 'http:') || u.username || u.password) return false;
    if (u.origin === own || !allowedOrigins.some((o) => sameOrigin(o, u.origin))) return false;
  }
  return normalize(loc, own, allowedOrigins) === loc;
}

/**
 * The `rd` (return-to) check of SPEC §6. Only a relative path on the gateway's own origin, or
 * an absolute URL whose origin is an allowed one, is returned; everything else — `//evil`,
 * `/\evil`, `/%09/evil`, `/.//evil`, `/%2e//evil`, `/a/..//evil`, `https://good.evil`,
 * `https://good@evil`, `javascript:`, and their percent-encoded forms — falls back to `/`.
 *
 * The decision is made on the value returned, after every normalization (dot segments,
 * percent-encoding), never on the input alone: the result passes {@link isSafeLocation} and is
 * a fixpoint (`safeRedirect(safeRedirect(x)) === safeRedirect(x)`). The gateway's own absolute
 * URLs are reduced to their path.
 */
export function safeRedirect(rd: unknown, ownOrigin: string, allowedOrigins: readonly string[] = []): string {
  if (typeof rd !== 'string' || rd === '' || rd.length > MAX_LENGTH) return '/';
  const own = parse(ownOrigin)?.origin;
  if (!own) return '/';
  // The input itself: no control character, space or backslash, raw or encoded at any depth
  // (the URL parser would silently strip or rewrite them before the output is seen).
  const layers = decodings(rd);
  if (!layers || layers.some((l) => UNSAFE_CHAR.test(l))) return '/';
  const out = normalize(rd, own, allowedOrigins);
  if (out === null || !isSafeLocation(out, own, allowedOrigins)) return '/';
  return out;
}

function sameOrigin(a: string, b: string): boolean {
  try {
    return new URL(a).origin === new URL(b).origin;
  } catch {
    return false;
  }
}

/** The CSRF origin check lives with the decision function; the auth API uses the same one. */
export { originAllowed } from '../policy/origin.js';
