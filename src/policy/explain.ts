import { decideRequest, isVerdict, matchRequest, parseRequest, type PolicyContext, type PolicyDecision, type Verdict } from './decide.js';
import { Errors } from '../errors/index.js';
import type { NormalizedTarget } from './normalize.js';

/** Input of {@link explain}, as given to `portcullis policy explain`. */
export interface ExplainRequest {
  readonly method: string;
  /** `https://host/path?query` or `/path?query`. */
  readonly url: string;
  /**
   * The `Host` header; overrides the URL's host. With neither, the request is judged as sent to
   * the gateway's own host (the host of `public_url`), as every real client sends one.
   */
  readonly host?: string;
  /** Roles of the hypothetical signed-in user. */
  readonly roles: readonly string[];
  /** Whether that user completed two-factor authentication (amr `['pwd','otp']`). */
  readonly mfa: boolean;
}

/** Why one route was or was not chosen. */
export interface ExplainAttempt {
  readonly name: string;
  readonly index: number;
  readonly matched: boolean;
  /** One line per failing check (host, method, path); empty when `matched`. */
  readonly mismatches: readonly string[];
}

/** What the gateway would answer for one caller. */
export interface ExplainVerdict {
  /** `allow` means forwarded to the upstream. */
  readonly outcome: PolicyDecision;
  /** The HTTP status the gateway answers; 200 stands for "forwarded" (the upstream's status wins). */
  readonly status: number;
  /** The problem+json code the gateway answers with; `null` for `allow`. */
  readonly code: string | null;
  readonly reason: string;
}

/** The result of {@link explain}. */
export interface ExplainResult {
  readonly method: string;
  /** The `Host` judged: `--host`, else the URL's, else the gateway's own (see `hostDefaulted`). */
  readonly host: string | undefined;
  /** True when no Host was given and the gateway's own (from `public_url`) was used. */
  readonly hostDefaulted: boolean;
  /** The request-target as it would arrive (path and query). */
  readonly target: string;
  /** The normalization result; `undefined` when the path was rejected. */
  readonly normalized: NormalizedTarget | undefined;
  /** Routes tried in order, up to and including the matching one. */
  readonly tried: readonly ExplainAttempt[];
  /** The matching route, if any. */
  readonly route: { readonly name: string; readonly index: number; readonly upstream: string | undefined } | undefined;
  /** The answer to a request without credentials. */
  readonly anonymous: ExplainVerdict;
  /** The answer to a signed-in user with the given roles. */
  readonly identity: { readonly roles: readonly string[]; readonly amr: readonly string[]; readonly verdict: ExplainVerdict };
}

/** Splits `scheme://[userinfo@]host[:port]/path?q` or `/path?q` without resolving anything. */
function splitUrl(url: string): { host: string | undefined; target: string } | string {
  const m = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/([^/?#]*)(.*)$/s.exec(url);
  if (m) {
    if (!/^https?$/i.test(m[1])) return `unsupported URL scheme "${m[1]}" (use http:// or https://)`;
    const authority = m[2];
    const host = authority.slice(authority.lastIndexOf('@') + 1);
    if (host === '') return 'the URL has no host';
    const rest = m[3];
    return { host, target: rest.startsWith('/') ? rest : `/${rest}` };
  }
  // `*` (asterisk-form, OPTIONS *) goes to the gateway's own check, which refuses it.
  if (url.startsWith('/') || url === '*') return { host: undefined, target: url };
  return 'give an absolute http(s):// URL or a path starting with "/"';
}

/** The host (with port) of the gateway's own origin, or `undefined` if it is not a URL. */
function ownHost(origin: string): string | undefined {
  try {
    return new URL(origin).host || undefined;
  } catch {
    return undefined;
  }
}

function verdict(v: Verdict): ExplainVerdict {
  return { outcome: v.decision, status: v.status, code: v.code, reason: v.reason };
}

/**
 * Explains how the gateway would treat a request: normalization, which routes were tried and why
 * each did not match, the matching route, and the decision both for an anonymous caller and for
 * a user holding `roles` (amr `['pwd','otp']` when `mfa`, else `['pwd']`). The decision comes
 * from the gateway's own {@link resolveRequest} and {@link decideRequest}. Never throws for a bad
 * URL or path: the rejection is reported as a `bad_request` verdict.
 */
export function explain(ctx: PolicyContext, req: ExplainRequest): ExplainResult {
  const method = req.method.toUpperCase();
  const roles = [...req.roles];
  const amr = req.mfa ? ['pwd', 'otp'] : ['pwd'];
  const split = splitUrl(req.url);
  if (typeof split === 'string') {
    const v: ExplainVerdict = { outcome: 'bad_request', status: Errors.bad_path.status, code: Errors.bad_path.code, reason: split };
    return {
      method,
      host: req.host,
      hostDefaulted: false,
      target: req.url,
      normalized: undefined,
      tried: [],
      route: undefined,
      anonymous: v,
      identity: { roles, amr, verdict: v },
    };
  }
  // Every request the gateway decides carries a Host (one without is refused before matching):
  // without one given, the client is taken to have asked the gateway's own host.
  // Node drops the spaces and tabs around a header value before the gateway reads it.
  const given = (req.host ?? split.host)?.replace(/^[ \t]+|[ \t]+$/g, '');
  const host = given ?? ownHost(ctx.ownOrigin);
  const facts = { method, target: split.target, host };
  // The gateway's own stages: a request refused before matching tried no route at all.
  const parsed = parseRequest(ctx, facts);
  const resolved = isVerdict(parsed) ? parsed : matchRequest(ctx, parsed, facts);
  const normalized: NormalizedTarget | undefined = isVerdict(parsed) ? undefined : parsed.normalized;
  const found = isVerdict(resolved) ? (resolved.route ?? undefined) : resolved.route;
  const tried: ExplainAttempt[] = [];
  if (!isVerdict(parsed)) {
    const key = parsed.key;
    for (const r of ctx.table.routes) {
      const mismatches: string[] = [];
      if (!r.matchesHost(host)) mismatches.push(`host ${host === undefined ? '(none)' : `"${host}"`} is not "${r.config.match.host}"`);
      const m = isVerdict(resolved) ? method : resolved.method;
      if (!r.matchesMethod(m)) mismatches.push(`method ${m} is not in [${(r.config.match.methods ?? []).join(', ')}]`);
      if (!r.matchesKey(key))
        mismatches.push(`path "${parsed.normalized.path}" does not match "${r.pathPattern}"${r.config.match.case_sensitive ? ' (case-sensitive)' : ''}`);
      tried.push({ name: r.name, index: r.index, matched: r === found, mismatches });
      if (r === found) break;
    }
  }
  const route = found ? { name: found.name, index: found.index, upstream: found.config.upstream } : undefined;
  const anonymous = verdict(decideRequest(ctx, resolved, { identity: null, via: null }, facts));
  const signedIn = verdict(decideRequest(ctx, resolved, { identity: { sub: 'explain', username: 'explain', roles, amr }, via: 'bearer' }, facts));
  return {
    method,
    host,
    hostDefaulted: given === undefined && host !== undefined,
    target: split.target,
    normalized,
    tried,
    route,
    anonymous,
    identity: { roles, amr, verdict: signedIn },
  };
}

function verdictLine(v: ExplainVerdict): string {
  const status = v.outcome === 'allow' ? 'forwarded' : String(v.status);
  return `${v.outcome} (${status}): ${v.reason}`;
}

/** Renders an {@link ExplainResult} as readable multi-line text (no trailing newline). */
export function formatExplain(r: ExplainResult): string {
  const lines: string[] = [];
  const hostNote = r.host === undefined ? '' : `  (host ${r.host}${r.hostDefaulted ? ": the gateway's own, from public_url; --host to change" : ''})`;
  lines.push(`request:    ${r.method} ${r.target}${hostNote}`);
  if (r.normalized === undefined) {
    if (r.anonymous.outcome === 'auth_api') lines.push(`served by:  ${r.anonymous.reason}`);
    else lines.push(`rejected:   ${verdictLine(r.anonymous)}`);
    return lines.join('\n');
  }
  const n = r.normalized;
  const rawPath = r.target.split('?')[0];
  lines.push(`path:       ${n.path}${n.path === rawPath ? '' : `  (normalized from ${rawPath})`}`);
  if (n.query !== '') lines.push(`query:      ${n.query}  (not used for matching)`);
  if (n.hasSemicolon) lines.push('note:       the path contains ";" (allowed only on routes with allow_semicolons)');
  lines.push('routes tried:');
  if (r.tried.length === 0) lines.push('  (no routes configured)');
  for (const t of r.tried) {
    lines.push(`  #${t.index} ${t.name}: ${t.matched ? 'MATCH' : `no match: ${t.mismatches.join('; ')}`}`);
  }
  if (r.route === undefined) {
    lines.push(`result:     ${verdictLine(r.anonymous)}`);
    return lines.join('\n');
  }
  lines.push(`route:      ${r.route.name}${r.route.upstream === undefined ? '' : ` → upstream ${r.route.upstream}`}`);
  lines.push(`anonymous:  ${verdictLine(r.anonymous)}`);
  const who = `roles [${r.identity.roles.join(', ')}], amr [${r.identity.amr.join(', ')}]`;
  lines.push(`signed in:  ${verdictLine(r.identity.verdict)}`);
  lines.push(`            (as a user with ${who})`);
  return lines.join('\n');
}
