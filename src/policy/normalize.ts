import { GatewayError, Errors } from '../errors/index.js';

/** The result of {@link normalizePath}. */
export interface NormalizedTarget {
  /** Canonical path: what route matching sees and exactly what the upstream receives. */
  readonly path: string;
  /** The raw query string without the leading `?` (`''` when none). Never used for matching. */
  readonly query: string;
  /**
   * True when the raw path contains a `;`, literal or encoded (`%3B`). The request is refused
   * with 400 unless the matched route sets `allow_semicolons`.
   */
  readonly hasSemicolon: boolean;
}

function reject(reason: string): never {
  throw new GatewayError(Errors.bad_path, reason);
}

function hex2(n: number): string {
  return n.toString(16).toUpperCase().padStart(2, '0');
}

/** Describes a rejected character without echoing raw bytes into logs or responses. */
function describeChar(c: number): string {
  if (c === 0x20) return 'a space';
  if (c === 0x09) return 'a tab';
  if (c === 0x0a || c === 0x0d) return 'a line break';
  if (c < 0x20 || c === 0x7f) return `the control character 0x${hex2(c)}`;
  return `the non-ASCII character U+${c.toString(16).toUpperCase().padStart(4, '0')}`;
}

function isHexDigit(c: number): boolean {
  return (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66);
}

const UTF8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Refuses a run of escaped bytes that is not valid UTF-8 (overlong forms such as `%C0%AE`, which
 * lenient decoders read as "."; stray continuation bytes; `%FF`), then empties the run.
 */
function checkUtf8(bytes: number[]): void {
  if (bytes.length === 0) return;
  try {
    UTF8.decode(Uint8Array.from(bytes));
  } catch {
    reject('percent-escapes that are not valid UTF-8 in the path');
  }
  bytes.length = 0;
}

/** RFC 3986 unreserved: ALPHA / DIGIT / "-" / "." / "_" / "~". */
function isUnreserved(c: number): boolean {
  return (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39) || c === 0x2d || c === 0x2e || c === 0x5f || c === 0x7e;
}

/**
 * Printable ASCII that RFC 3986 does not allow raw in a path segment. Browsers send some of them
 * (`|`, `^`, `[`, `]`) unencoded; we percent-encode them so the forwarded path is valid and a raw
 * and an encoded spelling of the same character end up identical.
 */
const MUST_ENCODE = new Set([0x22, 0x3c, 0x3e, 0x5b, 0x5d, 0x5e, 0x60, 0x7b, 0x7c, 0x7d]);

/**
 * Canonicalizes one path segment (no `/` inside): validates characters and escapes, decodes
 * escaped unreserved characters, upper-cases the hex of other escapes, percent-encodes printable
 * characters that are not valid in a path. Returns `.` / `..` only for literal dot segments; dot
 * segments spelled with escapes or carrying `;` parameters (`%2e`, `.%2E`, `..;x`) throw, because
 * servers such as Tomcat treat `..;` as `..` and would resolve a path the gateway did not match.
 * Also used for the literal parts of route path patterns.
 * @internal
 */
export function canonicalSegment(seg: string): string {
  let out = '';
  let escaped = false;
  // Every escape decoded: only used to recognise disguised dot segments.
  let decoded = '';
  // A run of escaped bytes ≥ 0x80: must be valid UTF-8 (no overlong `%C0%AE` for ".").
  const high: number[] = [];
  for (let i = 0; i < seg.length; i++) {
    const c = seg.charCodeAt(i);
    if (c === 0x25) {
      const h1 = seg.charCodeAt(i + 1);
      const h2 = seg.charCodeAt(i + 2);
      if (!isHexDigit(h1) || !isHexDigit(h2)) {
        reject(`invalid percent-escape "${seg.slice(i, i + 3).replace(/[^\x21-\x7e]/g, '?')}" (a % must be followed by two hex digits)`);
      }
      const v = parseInt(seg.slice(i + 1, i + 3), 16);
      if (v === 0x00) reject('encoded NUL (%00) in the path');
      if (v < 0x20 || v === 0x7f) reject(`encoded control character (%${hex2(v)}) in the path`);
      if (v === 0x2f) reject('encoded "/" (%2F) in the path');
      if (v === 0x5c) reject('encoded "\\" (%5C) in the path');
      escaped = true;
      if (v >= 0x80) high.push(v);
      else checkUtf8(high);
      out += isUnreserved(v) ? String.fromCharCode(v) : `%${hex2(v)}`;
      decoded += String.fromCharCode(v);
      i += 2;
    } else {
      if (c < 0x21 || c > 0x7e) reject(`${describeChar(c)} in the path`);
      if (c === 0x5c) reject('a literal "\\" in the path');
      checkUtf8(high);
      out += MUST_ENCODE.has(c) ? `%${hex2(c)}` : seg[i];
      decoded += seg[i];
    }
  }
  checkUtf8(high);
  if (out === '.' || out === '..') {
    if (escaped) reject(`encoded dot segment "${seg}" in the path`);
    return out;
  }
  // `%25` followed by two hex digits in the result is a double-encoded byte (`%252e`, `%252f`,
  // `%2541`, and `%25%32%65`, whose digits were escaped too): an upstream that decodes twice
  // would read another path than the one matched. Checked on the output, so every spelling
  // that ends up double-encoded is caught, and normalizing stays idempotent.
  const dbl = escaped ? /%25[0-9A-F]{2}/i.exec(out) : null;
  if (dbl) reject(`double-encoded character "${dbl[0]}" in the path`);
  const semi = decoded.indexOf(';');
  const head = semi < 0 ? decoded : decoded.slice(0, semi);
  if (head === '.' || head === '..') reject(`dot segment with parameters "${seg}" in the path`);
  return out;
}

/**
 * A path that is already canonical: segments of pchar without `%` (and without the characters we
 * re-encode), no empty segment except a trailing one, no `.`/`..` segment (nor `..;x`). Each
 * repetition starts at a `/` the character class excludes, so the regex runs in linear time.
 */
const CANONICAL = /^(?:\/(?!\.\.?(?:[/;]|$))[A-Za-z0-9\-._~!$&'()*+,;=:@]+)*\/?$/;
const QUERY_BAD = /[^\x21-\x7e]/;

/** The slow path of {@link normalizePath}: `rawPath` starts with `/` and has no `?` or `#`. @internal */
export function normalizeRawPath(rawPath: string): string {
  const segs = rawPath.split('/');
  const out: string[] = [];
  let last = '';
  for (let i = 1; i < segs.length; i++) {
    const s = canonicalSegment(segs[i]);
    last = s;
    if (s === '' || s === '.') continue; // '' collapses runs of '/'
    if (s === '..') {
      if (out.length === 0) reject('".." climbs above the root of the path');
      out.pop();
      continue;
    }
    out.push(s);
  }
  if (out.length === 0) return '/';
  // RFC 3986 remove_dot_segments keeps the slash after a final "." or ".." (`/a/b/..` → `/a/`).
  const trailing = last === '' || last === '.' || last === '..';
  return `/${out.join('/')}${trailing ? '/' : ''}`;
}

/**
 * Normalizes a raw HTTP request-target (`req.url` as Node gives it) into the canonical path used
 * for route matching and forwarded to the upstream (SPEC §3 rule 1).
 *
 * - Splits at the first `?`; the query is returned raw and never takes part in matching. It must
 *   still be printable ASCII (0x21–0x7E): control characters, spaces and non-ASCII are rejected
 *   there too, because the query is forwarded verbatim.
 * - Only origin-form (`/path`) is accepted. Absolute-form (`http://host/path`), authority-form and
 *   `*` are rejected: the gateway is not a forward proxy, and accepting absolute-form would let the
 *   target's host disagree with the `Host` header used for route matching.
 * - `#` anywhere, bytes outside 0x21–0x7E in the path, a literal `\`, invalid escapes, encoded
 *   `/`, `\`, NUL or other control characters, encoded dot segments, dot segments with `;`
 *   parameters, and `..` above the root are rejected.
 * - Escaped unreserved characters are decoded (`/%61dmin` → `/admin`), other escapes keep their
 *   encoding with upper-case hex (`%3b` → `%3B`), printable characters that are not valid in a path
 *   (`"<>[]^\`{|}`) are percent-encoded; runs of `/` collapse, `.` and `..` segments are resolved
 *   (after collapsing: `/a//../b` → `/b`), and a trailing slash is kept.
 *
 * The result is idempotent: normalizing an output path returns it unchanged.
 *
 * @param rawTarget the request-target, e.g. `/public/../admin?x=1`
 * @throws GatewayError with code `bad_path` (400) and a one-line reason
 */
export function normalizePath(rawTarget: string): NormalizedTarget {
  if (rawTarget.includes('#')) reject('"#" is not allowed in a request target');
  const q = rawTarget.indexOf('?');
  const rawPath = q < 0 ? rawTarget : rawTarget.slice(0, q);
  const query = q < 0 ? '' : rawTarget.slice(q + 1);
  if (rawPath.charCodeAt(0) !== 0x2f) {
    if (rawTarget === '*') reject('the asterisk-form request target "*" is not accepted');
    if (/^[A-Za-z][A-Za-z0-9+.-]*:\/\//.test(rawTarget)) {
      reject('absolute-form request targets (scheme://host/path) are not accepted; send the path only');
    }
    reject('the request target must start with "/"');
  }
  const bad = QUERY_BAD.exec(query);
  if (bad) reject(`${describeChar(bad[0].charCodeAt(0))} in the query string`);
  // `%3B` is a `;` to servers that decode before splitting off path parameters.
  const hasSemicolon = rawPath.includes(';') || /%3b/i.test(rawPath);
  // Hot path: most request paths are already canonical and need no rebuilding.
  const path = CANONICAL.test(rawPath) ? rawPath : normalizeRawPath(rawPath);
  return { path, query, hasSemicolon };
}

/**
 * The key routes match on (SPEC §3.1), in both forms: `sensitive` for routes with
 * `match.case_sensitive: true`, `folded` (ASCII lower-cased) for all others.
 */
export interface MatchKey {
  readonly sensitive: string;
  readonly folded: string;
}

/** Fast path: no `;`, no escape, no `:`, no `~`, no trailing dot before a `/` or the end, no trailing slash. */
const PLAIN_KEY = /^(?:\/[^/;%:~]*[^/;%:~.])*$/;
const TRIM_TAIL = /[. ]+$/;
/** NTFS stream syntax (`x::$DATA`, `dir::$INDEX_ALLOCATION`, `dir:$i30:$INDEX_ALLOCATION`). */
const NTFS_STREAM = /:\$/;
/** An 8.3 short name (`ADMINI~1`, `PROGRA~1.TXT`), which Windows resolves to the long one. */
const SHORT_NAME = /^[^~.]{1,6}~[0-9]+(?:\.[^.]{0,3})?$/;

/**
 * Decodes, for matching only, every escape of a printable ASCII character except `%`, `/` and
 * `\` (`%40` → `@`, `%3B` → `;`, `%20` → space): Tomcat, Spring and most frameworks decode them
 * before routing, so `/%40admin` must meet the route of `/@admin`. Other bytes stay escaped.
 */
function decodeForKey(seg: string): string {
  if (!seg.includes('%')) return seg;
  return seg.replace(/%([0-9A-Fa-f]{2})/g, (m, h: string) => {
    const v = parseInt(h, 16);
    return v >= 0x20 && v <= 0x7e && v !== 0x25 && v !== 0x2f && v !== 0x5c ? String.fromCharCode(v) : m;
  });
}

/**
 * The key form of one canonical segment: escapes of printable ASCII decoded, path parameters cut
 * (`a;x` → `a`), trailing dots and spaces trimmed. `''` for a segment that is empty or only
 * parameters.
 * @throws GatewayError `bad_path` for a segment made only of dots and spaces (a disguised dot
 *   segment), NTFS stream syntax (`:$`) or an 8.3 short name (`ADMINI~1`)
 * @internal also used for the literal parts of route patterns
 */
export function keySegment(raw: string): string {
  let seg = decodeForKey(raw);
  const semi = seg.indexOf(';');
  if (semi >= 0) seg = seg.slice(0, semi);
  if (seg === '') return '';
  const trimmed = seg.replace(TRIM_TAIL, '');
  if (trimmed === '') reject(`path segment "${raw}" is made only of dots and spaces`);
  // IIS serves `admin::$INDEX_ALLOCATION` as the directory `admin`, and `ADMINI~1` as
  // `administration`: spellings no route pattern could anticipate, so they are refused.
  if (NTFS_STREAM.test(trimmed)) reject(`NTFS stream syntax (":$") in path segment "${raw}"`);
  if (SHORT_NAME.test(trimmed)) reject(`8.3 short file name "${raw}" in the path`);
  return trimmed;
}

/**
 * Derives the canonical matching key of a normalized path, so that every spelling an upstream
 * may treat as the same resource matches the same route:
 * - escapes of printable ASCII are decoded (`/%40admin` ≡ `/@admin`, `%3B` ≡ `;`);
 * - path parameters are cut from each segment (`/admin;x/y` → `/admin/y`), as Tomcat, Jetty and
 *   Spring read them;
 * - each segment loses its trailing dots and spaces (`/internal./x`, `/internal%20/x`), as
 *   Windows and IIS read them; a segment made only of dots and spaces (`...`, `..%20`), NTFS
 *   stream syntax (`admin::$INDEX_ALLOCATION`) and 8.3 short names (`ADMINI~1`) are refused (400);
 * - empty segments and the trailing slash are dropped (`/admin/` ≡ `/admin`, as Express's
 *   default non-strict routing reads it);
 * - `folded` is lower-cased (IIS, Express and most Windows-hosted apps route case-insensitively).
 * The upstream still receives the normalized path, never this key.
 * @throws GatewayError `bad_path` for a disguised dot segment
 */
export function matchKey(path: string): MatchKey {
  if (PLAIN_KEY.test(path)) return { sensitive: path, folded: path.toLowerCase() };
  const out: string[] = [];
  for (const raw of path.split('/')) {
    const seg = keySegment(raw);
    if (seg !== '') out.push(seg);
  }
  const sensitive = `/${out.join('/')}`;
  return { sensitive, folded: sensitive.toLowerCase() };
}
