import type http from 'node:http';
import type { Config, IdentityHeaders } from '../config/schema.js';
import { CONNECTION_PROTECTED, HOP_BY_HOP, deleteRequestHeaders, filterCookieHeader, headerSafe } from '../proxy/headers.js';
import { createIpMatcher, normalizeIp } from '../proxy/ip.js';
import { REQUEST_ID_HEADER, newRequestId, validRequestId } from './access-log.js';

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
  /** The request id ({@link HeaderMutator.requestId}), sent as `X-Request-Id` instead of any client copy. */
  readonly requestId?: string;
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
/**
 * Headers Node keeps only the first copy of in `req.headers` (what every stage judged): the
 * upstream gets that first copy only, never a second one the gateway did not look at (a second
 * `Authorization` carrying the gateway's own token, a second `Referer`…).
 */
const FIRST_ONLY = new Set([
  'age',
  'authorization',
  'content-length',
  'content-type',
  'etag',
  'expires',
  'from',
  'host',
  'if-modified-since',
  'if-unmodified-since',
  'last-modified',
  'location',
  'max-forwards',
  'proxy-authorization',
  'referer',
  'retry-after',
  'server',
  'user-agent',
]);
/** Client-address claims other proxies and CDNs set: believed from `trust_proxy` peers only. */
const CLIENT_IP_HEADERS = new Set(['x-real-ip', 'true-client-ip', 'client-ip', 'x-client-ip', 'cf-connecting-ip', 'x-cluster-client-ip', 'fastly-client-ip']);

const lowerDashed = (name: string): string => name.toLowerCase().replace(/_/g, '-');

/** A client connection's peer. */
interface Peer {
  /** Its address as headers show it (IPv4-mapped IPv6 as dotted IPv4). */
  readonly text: string;
  /** A `trust_proxy` peer. */
  readonly trusted: boolean;
}

/** The values of every method-override header a request carries (all copies). */
export function methodOverrideValues(req: http.IncomingMessage): string[] | undefined {
  // One pass over the raw list, which has every copy; `_` spellings count too (CGI-style
  // frameworks read `X_HTTP_METHOD_OVERRIDE` as the same variable). Undefined when none.
  let out: string[] | undefined;
  const raw = req.rawHeaders;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const n = raw[i];
    if (n.length < 13 || n.length > 22 || (n.charCodeAt(0) | 0x20) !== 0x78) continue; // "x…", 13–22 chars
    if ((METHOD_OVERRIDE_HEADERS as readonly string[]).includes(lowerDashed(n))) {
      out ??= [];
      out.push(raw[i + 1]);
    }
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
  /** Identity header names per upstream (its `identity_headers` over the global ones), built once. */
  const namesByUpstream = new Map<string, IdentityHeaders>();
  const namesOf = (upstream: string): IdentityHeaders => {
    let n = namesByUpstream.get(upstream);
    if (!n) {
      n = { ...opts.identityHeaders, ...(opts.upstreams[upstream]?.identity_headers ?? {}) } as IdentityHeaders;
      namesByUpstream.set(upstream, n);
    }
    return n;
  };
  /**
   * The identity header lines of one identity for one upstream, made once: identities are one
   * object per verified token, so repeat requests reuse the lines.
   */
  const identityLines = new WeakMap<ForwardIdentity, Map<string, string[]>>();
  const identityHeaders = (id: ForwardIdentity, upstream: string): string[] => {
    let byUpstream = identityLines.get(id);
    if (!byUpstream) {
      byUpstream = new Map();
      identityLines.set(id, byUpstream);
    }
    let lines = byUpstream.get(upstream);
    if (!lines) {
      const names = namesOf(upstream);
      lines = [names.user, headerSafe(id.username), names.user_id, headerSafe(id.sub)];
      if (id.email !== null) lines.push(names.email, headerSafe(id.email));
      lines.push(names.roles, headerSafe(id.roles.join(',')));
      byUpstream.set(upstream, lines);
    }
    return lines;
  };
  /**
   * The peer of each connection (its address as headers show it, and whether it is a
   * `trust_proxy` peer), worked out once per connection: keep-alive clients send many requests.
   */
  const peers = new WeakMap<object, Peer>();
  function peer(req: http.IncomingMessage): Peer {
    const socket = req.socket;
    let p = socket ? peers.get(socket) : undefined;
    if (!p) {
      const address = socket?.remoteAddress;
      p = { text: normalizeIp(address ?? ''), trusted: isTrusted(address) };
      if (socket) peers.set(socket, p);
    }
    return p;
  }
  const isIdentity = (lower: string): boolean => {
    const d = lower.includes('_') ? lower.replace(/_/g, '-') : lower;
    return d.startsWith('x-auth-') || strippedNames.has(d);
  };

  /**
   * Removes every incoming copy of the identity headers: all configured names (global and
   * per-upstream), any `X-Auth-*` and `X-Auth-Assertion`. Matching is case-insensitive and treats
   * `_` as `-` (CGI-style frameworks map both to the same variable). Runs on every request,
   * public routes and the auth API included.
   */
  function strip(req: http.IncomingMessage): void {
    // Hot path: most requests carry none, and a scan is cheaper than rebuilding the header objects.
    const raw = req.rawHeaders;
    let found = false;
    for (let i = 0; i < raw.length; i += 2) {
      if (isIdentity(raw[i].toLowerCase())) {
        found = true;
        break;
      }
    }
    if (found) deleteRequestHeaders(req, isIdentity);
  }

  /**
   * The request's id: the `X-Request-Id` a `trust_proxy` peer sent, when it is one valid value
   * (see `validRequestId`), else a new one. An untrusted client's value is never taken: it could
   * pin its requests to another request's id in the logs (the upstream gets ours instead).
   */
  function requestId(req: http.IncomingMessage): string {
    const given = req.headers[REQUEST_ID_HEADER];
    if (typeof given === 'string' && validRequestId(given) && peer(req).trusted) return given;
    return newRequestId();
  }

  /**
   * The header list (flat `[name, value, …]`) the upstream receives for `req` under `plan`, built
   * in one pass over the client's raw headers:
   * - hop-by-hop headers, and any header the client lists in `Connection`, end at this hop (the
   *   values the gateway sets below are added after, so listing them removes nothing of ours);
   *   `Expect` is answered here; `Transfer-Encoding` goes (the transport frames the body);
   * - URL and method override headers go (method overrides stay when the plan keeps them);
   * - identity headers go, then the gateway's are added; `X-Forwarded-*` extend a trusted
   *   peer's chain or describe this hop only (other client-address claims of untrusted peers
   *   go); the gateway's cookies and bearer token go;
   * - `X-Request-Id` is the plan's (every client copy goes).
   */
  function headersFor(req: http.IncomingMessage, plan: HeaderPlan): string[] {
    const raw = req.rawHeaders;
    let listed: Set<string> | undefined;
    for (let i = 0; i < raw.length; i += 2) {
      if (raw[i].length === 10 && raw[i].toLowerCase() === 'connection') {
        for (const t of raw[i + 1].split(',')) {
          const n = t.trim().toLowerCase();
          if (n && !CONNECTION_PROTECTED.has(n)) {
            listed ??= new Set();
            listed.add(n);
          }
        }
      }
    }
    const keepOverride = plan.keepMethodOverride === true;
    const from = peer(req);
    const trusted = from.trusted;
    const cookieNames = plan.gatewayCookieNames.length ? plan.gatewayCookieNames : undefined;
    const out: string[] = [];
    let host: string | undefined;
    let xff: string | undefined;
    let cookieAt = -1;
    let seen: Set<string> | undefined;
    let hasProto = false;
    let hasXfHost = false;
    for (let i = 0; i < raw.length; i += 2) {
      const name = raw[i];
      const value = raw[i + 1];
      const l = name.toLowerCase();
      if (HOP_BY_HOP.has(l) || l === 'expect' || l === 'transfer-encoding' || listed?.has(l)) continue;
      const d = l.includes('_') ? l.replace(/_/g, '-') : l;
      if (URL_OVERRIDE_HEADERS.has(d)) continue;
      if (!keepOverride && (METHOD_OVERRIDE_HEADERS as readonly string[]).includes(d)) continue;
      if (d.startsWith('x-auth-') || strippedNames.has(d)) continue;
      if (d.startsWith('x-forwarded-') || d === 'forwarded' || CLIENT_IP_HEADERS.has(d)) {
        if (!trusted) continue;
        if (l === 'x-forwarded-for') {
          xff = xff === undefined ? value : `${xff}, ${value}`;
          continue;
        }
        if (l === 'x-forwarded-proto') hasProto = true;
        if (l === 'x-forwarded-host') hasXfHost = true;
      }
      if (FIRST_ONLY.has(l)) {
        if (seen?.has(l)) continue;
        seen ??= new Set();
        seen.add(l);
      }
      if (l === 'host') host ??= value;
      if (l === 'cookie') {
        // One Cookie line, as Node presents it to the gateway (copies joined with "; "), with the
        // gateway's own cookies removed.
        const kept = cookieNames ? filterCookieHeader(value, new Set(cookieNames)) : value;
        if (kept === '') continue;
        if (cookieAt >= 0) out[cookieAt + 1] = `${out[cookieAt + 1]}; ${kept}`;
        else {
          cookieAt = out.length;
          out.push(name, kept);
        }
        continue;
      }
      if (l === 'authorization' && plan.stripBearer) continue;
      if (d === REQUEST_ID_HEADER && plan.requestId !== undefined) continue; // `_` spellings too (CGI reads both)
      out.push(name, value);
    }
    if (plan.websocket) out.push('Connection', 'Upgrade', 'Upgrade', 'websocket');
    out.push('X-Forwarded-For', xff ? `${xff}, ${from.text}` : from.text);
    if (!trusted || !hasProto) out.push('X-Forwarded-Proto', plan.proto);
    if ((!trusted || !hasXfHost) && host) out.push('X-Forwarded-Host', host);
    const id = plan.identity;
    if (id) for (const v of identityHeaders(id, plan.upstream)) out.push(v);
    if (plan.assertion) out.push(ASSERTION_HEADER, headerSafe(plan.assertion));
    if (plan.requestId !== undefined) out.push('X-Request-Id', plan.requestId);
    return out;
  }

  /**
   * The client address for logs when the peer is not a `trust_proxy` peer (then it is the peer
   * itself, known per connection); undefined for a trusted peer, whose client is read from
   * `X-Forwarded-For` per request (`clientIpFrom`).
   */
  function untrustedPeerAddress(req: http.IncomingMessage): string | undefined {
    const p = peer(req);
    return p.trusted ? undefined : p.text;
  }

  return { strip, headersFor, requestId, untrustedPeerAddress };
}

export type HeaderMutator = ReturnType<typeof createHeaderMutator>;
