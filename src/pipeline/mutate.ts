import type http from 'node:http';
import type { Config, IdentityHeaders } from '../config/schema.js';
import {
  HOP_BY_HOP,
  connectionListed,
  deleteRequestHeaders,
  filterCookieHeader,
  getRequestHeader,
  headerSafe,
  setRequestHeader,
} from '../proxy/headers.js';
import { createIpMatcher, normalizeIp } from '../proxy/ip.js';

/** The authenticated user whose identity is forwarded to the upstream. */
export interface ForwardIdentity {
  /** User id (token `sub`) → `user_id` header. */
  readonly sub: string;
  /** → `user` header. */
  readonly username: string;
  /** → `email` header; omitted when null. */
  readonly email: string | null;
  /** → `roles` header, comma-separated (empty value when there are none). */
  readonly roles: readonly string[];
}

/** What the mutate stage does to one request's headers before it is forwarded. */
export interface HeaderPlan {
  /** Upstream name: its `identity_headers` override the global names. */
  readonly upstream: string;
  /** The signed-in user, or null (anonymous): no identity headers are sent. */
  readonly identity: ForwardIdentity | null;
  /** A signed upstream assertion (JWT) sent as `X-Auth-Assertion`. */
  readonly assertion?: string;
  /** The gateway's own cookie names, removed from `Cookie`. */
  readonly gatewayCookieNames: readonly string[];
  /** Remove `Authorization` (it carried the gateway's bearer token). */
  readonly stripBearer: boolean;
  /** The scheme the client used to reach the gateway (this hop). */
  readonly proto: 'http' | 'https';
  /** Forward the method-override headers (the upstream honours them and they were authorized). */
  readonly keepMethodOverride?: boolean;
  /** A WebSocket upgrade: `Connection: Upgrade` and `Upgrade: websocket` are (re)set. */
  readonly websocket?: boolean;
}

/** Options of {@link createHeaderMutator}. */
export interface HeaderMutatorOptions {
  readonly identityHeaders: IdentityHeaders;
  readonly upstreams: Config['upstreams'];
  /** Peers whose `X-Forwarded-*` headers are believed. */
  readonly trustProxy: readonly string[];
}

/** Headers that make some upstream act on another method than the one the gateway saw. */
export const METHOD_OVERRIDE_HEADERS = ['x-http-method-override', 'x-http-method', 'x-method-override'] as const;
/**
 * Headers that make IIS/Symfony/Zend-style upstreams serve another path than the request line's,
 * or another virtual host than the `Host` the route matched on.
 */
const URL_OVERRIDE_HEADERS = new Set(['x-original-url', 'x-rewrite-url', 'x-host', 'x-original-host', 'x-forwarded-server']);
const ASSERTION_HEADER = 'X-Auth-Assertion';
/** Client-address claims other proxies and CDNs set: believed from `trust_proxy` peers only. */
const CLIENT_IP_HEADERS = new Set(['x-real-ip', 'true-client-ip', 'client-ip', 'x-client-ip', 'cf-connecting-ip', 'x-cluster-client-ip', 'fastly-client-ip']);

const lowerDashed = (name: string): string => name.toLowerCase().replace(/_/g, '-');

/** The values of every method-override header a request carries (all copies). */
export function methodOverrideValues(req: http.IncomingMessage): string[] {
  const out: string[] = [];
  for (const name of METHOD_OVERRIDE_HEADERS) {
    const v = req.headersDistinct[name];
    if (v) out.push(...v);
  }
  // CGI-style frameworks read `X_HTTP_METHOD_OVERRIDE` as the same variable.
  for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) {
    const n = req.rawHeaders[i];
    if (n.includes('_') && (METHOD_OVERRIDE_HEADERS as readonly string[]).includes(lowerDashed(n))) out.push(req.rawHeaders[i + 1]);
  }
  return out;
}

/**
 * The mutate stage: every header change between the client and the upstream, in one place.
 * The transport (`src/proxy`) forwards what it is given.
 */
export function createHeaderMutator(opts: HeaderMutatorOptions) {
  const isTrusted = createIpMatcher(opts.trustProxy);
  // Every configured identity header name, everywhere: a header that is an identity header for
  // one upstream must never reach any upstream from a client.
  const strippedNames = new Set<string>([lowerDashed(ASSERTION_HEADER)]);
  for (const n of Object.values(opts.identityHeaders)) strippedNames.add(lowerDashed(n));
  for (const u of Object.values(opts.upstreams)) {
    for (const n of Object.values(u.identity_headers ?? {})) if (n) strippedNames.add(lowerDashed(n));
  }
  const namesOf = (upstream: string): IdentityHeaders => ({ ...opts.identityHeaders, ...(opts.upstreams[upstream]?.identity_headers ?? {}) }) as IdentityHeaders;

  /**
   * Removes every incoming copy of the identity headers: all configured names (global and
   * per-upstream), any `X-Auth-*` and `X-Auth-Assertion`. Matching is case-insensitive and treats
   * `_` as `-` (CGI-style frameworks map both to the same variable). Runs on every request,
   * public routes and the auth API included.
   */
  function strip(req: http.IncomingMessage): void {
    deleteRequestHeaders(req, (n) => {
      const d = n.includes('_') ? n.replace(/_/g, '-') : n;
      return d.startsWith('x-auth-') || strippedNames.has(d);
    });
  }

  /** Applies `plan` to `req`'s headers (`req.headers`, `headersDistinct` and `rawHeaders` alike). */
  function apply(req: http.IncomingMessage, plan: HeaderPlan): void {
    // Hop-by-hop headers, and any header the client lists in Connection, end at this hop. This
    // runs first: a client listing X-Forwarded-For or an identity header in Connection must not
    // make us drop the values we set below. `Expect` is answered here, never forwarded.
    const listed = connectionListed(req);
    const keepOverride = plan.keepMethodOverride === true;
    deleteRequestHeaders(req, (n) => {
      if (HOP_BY_HOP.has(n) || listed.has(n) || n === 'expect') return true;
      const d = n.includes('_') ? n.replace(/_/g, '-') : n;
      if (URL_OVERRIDE_HEADERS.has(d)) return true;
      return !keepOverride && (METHOD_OVERRIDE_HEADERS as readonly string[]).includes(d);
    });
    if (plan.websocket) {
      setRequestHeader(req, 'Connection', 'Upgrade');
      setRequestHeader(req, 'Upgrade', 'websocket');
    }
    strip(req);

    // X-Forwarded-*: extend a trusted proxy's chain, otherwise describe this hop only.
    const peer = req.socket?.remoteAddress;
    const peerText = normalizeIp(peer ?? '');
    const host = getRequestHeader(req, 'host');
    if (isTrusted(peer)) {
      const xff = getRequestHeader(req, 'x-forwarded-for');
      setRequestHeader(req, 'X-Forwarded-For', xff ? `${xff}, ${peerText}` : peerText);
      if (!getRequestHeader(req, 'x-forwarded-proto')) setRequestHeader(req, 'X-Forwarded-Proto', plan.proto);
      if (!getRequestHeader(req, 'x-forwarded-host') && host) setRequestHeader(req, 'X-Forwarded-Host', host);
    } else {
      deleteRequestHeaders(req, (n) => {
        const d = n.replace(/_/g, '-');
        return d.startsWith('x-forwarded-') || d === 'forwarded' || CLIENT_IP_HEADERS.has(d);
      });
      setRequestHeader(req, 'X-Forwarded-For', peerText);
      setRequestHeader(req, 'X-Forwarded-Proto', plan.proto);
      if (host) setRequestHeader(req, 'X-Forwarded-Host', host);
    }

    // The gateway's own credentials stay at the gateway.
    if (plan.gatewayCookieNames.length) {
      const cookie = getRequestHeader(req, 'cookie');
      if (cookie !== undefined) {
        // Node joins repeated Cookie headers with "; ".
        const kept = filterCookieHeader(cookie, new Set(plan.gatewayCookieNames));
        if (kept === '') deleteRequestHeaders(req, (n) => n === 'cookie');
        else if (kept !== cookie) setRequestHeader(req, 'Cookie', kept);
      }
    }
    if (plan.stripBearer) deleteRequestHeaders(req, (n) => n === 'authorization');

    const id = plan.identity;
    if (id) {
      const names = namesOf(plan.upstream);
      setRequestHeader(req, names.user, headerSafe(id.username));
      setRequestHeader(req, names.user_id, headerSafe(id.sub));
      if (id.email !== null) setRequestHeader(req, names.email, headerSafe(id.email));
      setRequestHeader(req, names.roles, headerSafe(id.roles.join(',')));
    }
    if (plan.assertion) setRequestHeader(req, ASSERTION_HEADER, headerSafe(plan.assertion));
  }

  return { strip, apply };
}

export type HeaderMutator = ReturnType<typeof createHeaderMutator>;
