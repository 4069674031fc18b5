import type http from 'node:http';

/**
 * Request-header edits that keep `req.headers`, `req.headersDistinct` and `req.rawHeaders`
 * in agreement: http-proxy forwards `req.headers`, while loggers and other middleware may
 * read the raw list.
 */

/** Deletes every header whose lower-cased name satisfies `drop`. */
export function deleteRequestHeaders(req: http.IncomingMessage, drop: (lowerName: string) => boolean): void {
  // Materialize Node's lazy header objects first: their getters walk rawHeaders using the
  // parser's original header count, so they must not run after rawHeaders shrank.
  const headers = req.headers as Record<string, unknown>;
  const distinct = req.headersDistinct as Record<string, unknown>;
  const raw = req.rawHeaders;
  let w = 0;
  for (let r = 0; r + 1 < raw.length; r += 2) {
    if (drop(raw[r].toLowerCase())) continue;
    raw[w] = raw[r];
    raw[w + 1] = raw[r + 1];
    w += 2;
  }
  raw.length = w;
  for (const k of Object.keys(headers)) if (drop(k)) delete headers[k];
  for (const k of Object.keys(distinct)) if (drop(k)) delete distinct[k];
}

/**
 * Replaces all of `req`'s headers with the flat `[name, value, …]` list, keeping `rawHeaders`,
 * `headers` (repeated values joined as Node joins them: `; ` for Cookie, an array for
 * Set-Cookie, `, ` otherwise) and `headersDistinct` in agreement.
 */
export function replaceRequestHeaders(req: http.IncomingMessage, list: readonly string[]): void {
  const headers: Record<string, string | string[]> = {};
  const distinct: Record<string, string[]> = {};
  for (let i = 0; i + 1 < list.length; i += 2) {
    const l = list[i].toLowerCase();
    const v = list[i + 1];
    distinct[l] ??= [];
    distinct[l].push(v);
    const prev = headers[l];
    if (prev === undefined) headers[l] = l === 'set-cookie' ? [v] : v;
    else if (Array.isArray(prev)) prev.push(v);
    else headers[l] = `${prev}${l === 'cookie' ? '; ' : ', '}${v}`;
  }
  req.rawHeaders.length = 0;
  req.rawHeaders.push(...list);
  Object.defineProperty(req, 'headers', { value: headers, writable: true, configurable: true, enumerable: true });
  Object.defineProperty(req, 'headersDistinct', { value: distinct, writable: true, configurable: true, enumerable: true });
}

/** Replaces every copy of header `name` with one header carrying `value`. */
export function setRequestHeader(req: http.IncomingMessage, name: string, value: string): void {
  const lower = name.toLowerCase();
  deleteRequestHeaders(req, (n) => n === lower);
  req.rawHeaders.push(name, value);
  (req.headers as Record<string, unknown>)[lower] = value;
  (req.headersDistinct as Record<string, unknown>)[lower] = [value];
}

/** The (joined) value of a request header, or undefined. */
export function getRequestHeader(req: http.IncomingMessage, lowerName: string): string | undefined {
  const v = req.headers[lowerName];
  if (v === undefined) return undefined;
  return Array.isArray(v) ? v.join(', ') : v;
}

/**
 * Makes a value safe for an HTTP header: visible ASCII, space and tab pass through; anything
 * else (control characters, non-ASCII) is percent-encoded as UTF-8, so an identity value can
 * never split a header or make Node throw.
 */
export function headerSafe(value: string): string {
  if (/^[\x20-\x7e\t]*$/.test(value)) return value;
  let out = '';
  for (const ch of value) {
    const c = ch.codePointAt(0) as number;
    if ((c >= 0x20 && c <= 0x7e) || c === 0x09) {
      out += ch;
    } else {
      for (const b of Buffer.from(ch, 'utf8')) out += `%${b.toString(16).toUpperCase().padStart(2, '0')}`;
    }
  }
  return out;
}

/**
 * Removes the cookies named in `drop` from a `Cookie` header value, keeping the others in
 * their original order and spelling. Returns '' when nothing remains.
 */
export function filterCookieHeader(value: string, drop: ReadonlySet<string>): string {
  const kept: string[] = [];
  for (const part of value.split(';')) {
    const p = part.trim();
    if (p === '') continue;
    const eq = p.indexOf('=');
    const name = (eq === -1 ? p : p.slice(0, eq)).trim();
    if (drop.has(name)) continue;
    kept.push(p);
  }
  return kept.join('; ');
}

/** Hop-by-hop request headers (RFC 9110 §7.6.1) that a proxy must not forward. */
export const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authorization', 'te', 'trailer', 'upgrade']);

/**
 * Headers a client may not remove by listing them in `Connection`: dropping them would change
 * how the forwarded body is framed or where the request goes.
 */
export const CONNECTION_PROTECTED = new Set(['content-length', 'transfer-encoding', 'host']);

/**
 * Hop-by-hop response headers: removed from upstream responses; Node frames the client
 * response itself (Content-Length when given, otherwise chunked or close-delimited).
 */
export const HOP_BY_HOP_RESPONSE = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);
