import { createHash } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { isIPv6 } from 'node:net';
import type { Logger } from 'pino';
import { Errors, GatewayError } from '../errors/index.js';
import type { Metrics } from '../metrics/index.js';
import { parseIp } from '../proxy/ip.js';
import type { RateLimitStore } from '../store/ports.js';
import { writeError } from './respond.js';

export interface LimiterOptions {
  /** Label for `portcullis_rate_limited_total{limiter}` and logs (`login`, `auth_api`, `route:<name>`). */
  name: string;
  requests: number;
  perMs: number;
  /** Where the counts live: in process, or in Redis (shared by every replica). */
  store: RateLimitStore;
  clientIp: (req: IncomingMessage) => string;
  metrics: Metrics;
  log: Logger;
  /**
   * What a store failure (Redis down) does. Closed (sign-in): 503 — never let a dependency
   * outage switch abuse protection off. Open (proxied routes): the request goes through.
   */
  onStoreError: 'closed' | 'open';
  /** Extra work when a request is refused (e.g. counting a login attempt). */
  onLimited?: () => void;
  /**
   * Writes the 429 and logs it, once: the app passes its responder (the sign-in form's, which
   * answers a form with an HTML page). That one line carries `event: rate_limited` and the
   * limiter's name (the error's `log` fields) with the client address.
   */
  respond: (req: IncomingMessage, res: ServerResponse, err: GatewayError) => void;
}

/** A limiter callable on raw requests: resolves true to continue; false when it answered (429/503). */
export type Limiter = (req: IncomingMessage, res: ServerResponse) => Promise<boolean>;

/** One customer's IPv6 allocation is usually a /56: grouping by it makes it one client. */
const IPV6_CLIENT_PREFIX_BITS = 56;

/**
 * The key a client is counted under: an IPv4 address as it is; an IPv4-mapped IPv6 address
 * (or the old IPv4-compatible `::a.b.c.d` form) as the IPv4 address it carries; any other IPv6
 * address as its /56 network in compressed form (`2001:db8:1::/56`), so rotating through one
 * allocation buys no fresh budget. Anything else is used as given.
 */
export function rateLimitKey(ip: string): string {
  if (!isIPv6(ip)) return ip;
  const parsed = parseIp(ip);
  if (!parsed) return ip;
  const b = parsed.bytes;
  if (parsed.family === 4) return b.join('.');
  // `::a.b.c.d`: only the dotted notation tells it apart from `::1` and friends.
  if (ip.includes('.') && b.subarray(0, 12).every((x) => x === 0)) return Array.from(b.subarray(12)).join('.');
  const groups: number[] = [];
  for (let i = 0; i < 8; i++) {
    const bits = Math.max(0, Math.min(16, IPV6_CLIENT_PREFIX_BITS - i * 16));
    const mask = bits === 0 ? 0 : (0xffff << (16 - bits)) & 0xffff;
    groups.push(((b[i * 2] << 8) | b[i * 2 + 1]) & mask);
  }
  // The zero groups past the prefix are always the longest run, so "::" stands for them.
  let end = groups.length;
  while (end > 0 && groups[end - 1] === 0) end--;
  const head = groups.slice(0, end).map((g) => g.toString(16));
  return `${head.join(':')}::/${IPV6_CLIENT_PREFIX_BITS}`;
}

/** The draft-8 partition key: a short, stable, non-reversible token of the client key. */
function partitionKey(key: string): string {
  return Buffer.from(createHash('sha256').update(key).digest('hex').slice(0, 12)).toString('base64');
}

/**
 * A fixed-window limiter over a {@link RateLimitStore}, keyed by the client IP the gateway
 * resolved through `trust_proxy` — never a client-supplied header — with IPv6 clients grouped
 * by /56 ({@link rateLimitKey}). Every counted answer carries the draft-8 `RateLimit` and
 * `RateLimit-Policy` headers; past the limit it answers 429 problem+json with `Retry-After`.
 */
export function createLimiter(o: LimiterOptions): Limiter {
  const policy = `q=${o.requests}; w=${Math.ceil(o.perMs / 1000)}`;
  return async (req, res) => {
    const key = rateLimitKey(o.clientIp(req));
    let hit: { count: number; resetMs: number };
    try {
      hit = await o.store.hit(o.name, key, o.perMs);
    } catch (err) {
      o.log.error({ event: 'rate_limit_store_error', limiter: o.name, err: (err as Error).message, fail: o.onStoreError }, 'rate limit store unavailable');
      if (o.onStoreError === 'open') return true;
      // Logged just above, with the limiter's name: written without a second log line, and as
      // problem+json whatever the Accept (the responder would give a browser's GET a page).
      writeError(
        req,
        res,
        new GatewayError(Errors.service_unavailable, 'A backing service is unavailable; try again shortly.', { headers: { 'retry-after': '2' } }),
      );
      return false;
    }
    try {
      const resetSeconds = Math.max(0, Math.ceil(hit.resetMs / 1000));
      if (!res.headersSent) {
        res.appendHeader('RateLimit', `"${o.name}"; r=${Math.max(o.requests - hit.count, 0)}; t=${resetSeconds}`);
        res.appendHeader('RateLimit-Policy', `"${o.name}"; ${policy}; pk=:${partitionKey(key)}:`);
      }
      if (hit.count <= o.requests) return true;
      if (!res.headersSent) res.setHeader('Retry-After', String(resetSeconds));
      o.metrics.rateLimited.inc({ limiter: o.name });
      o.onLimited?.();
      o.respond(req, res, new GatewayError(Errors.rate_limited, 'Too many requests; slow down.', { log: { event: 'rate_limited', limiter: o.name } }));
      return false;
    } catch (e) {
      // The responder's one line: 500 at error, with the cause's stack.
      o.respond(req, res, new GatewayError(Errors.internal_error, undefined, { cause: e, log: { event: 'rate_limit_error', limiter: o.name } }));
      return false;
    }
  };
}

/** The same limiter as express middleware (for the auth API). */
export function asMiddleware(limiter: Limiter) {
  return (req: IncomingMessage, res: ServerResponse, next: (err?: unknown) => void): void => {
    limiter(req, res).then((ok) => ok && next(), next);
  };
}
