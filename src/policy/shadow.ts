import { type CompiledRoute, parseHost, type RouteTable } from './routes.js';
import type { PolicyWarning } from './warnings.js';

/**
 * Routes that can never match (SPEC §2): every request a route would take is taken first by
 * earlier routes. Decided exactly on the compiled patterns, never by sampling, and only ever
 * claimed when it holds (a case it cannot decide is not reported):
 *
 * - host: an earlier route without `host` takes every host; `*.example.com` takes its
 *   subdomains and narrower wildcards; an exact name takes that name; a port in the earlier
 *   pattern must be in the later one too. A later route without `host` (any host, or none) is
 *   only covered by routes without `host`.
 * - path: the earlier pattern's language contains the later one's ({@link patternCovers}),
 *   on the matching keys each route really compares (case-folded or not).
 * - methods: each method the later route takes is taken by some earlier route that covers its
 *   host and path; a route without a method list takes every method, so only earlier routes
 *   without a list can cover it.
 */
export function shadowedRouteWarnings(table: RouteTable): PolicyWarning[] {
  const out: PolicyWarning[] = [];
  const routes = table.routes;
  for (let j = 0; j < routes.length; j++) {
    const b = routes[j];
    const covering = routes.slice(0, j).filter((a) => hostCovers(a, b) && pathCovers(a, b));
    if (covering.length === 0) continue;
    const all = covering.find((a) => a.config.match.methods === undefined);
    let by: { route: CompiledRoute; methods?: string[] }[] | undefined;
    if (all) by = [{ route: all }];
    else if (b.config.match.methods !== undefined) by = methodCover(methodSet(b.config.match.methods), covering);
    if (by === undefined) continue;
    const who = by.map(({ route, methods }) => `route "${route.name}" (routes[${route.index}]${methods ? `, ${methods.join(' ')}` : ''})`).join(' and ');
    out.push({
      path: ['routes', j],
      message:
        `route "${b.name}" can never match: ${who} ${by.length > 1 ? 'take' : 'takes'} every request it would (${describeMatch(b)}). ` +
        `Move it above ${by.length > 1 ? 'them' : `"${by[0].route.name}"`}, narrow ${by.length > 1 ? 'those routes' : 'that route'}, or remove it.`,
    });
  }
  return out;
}

/** The methods a route's list takes: upper-cased, HEAD with GET (as `compileRoutes` does). */
function methodSet(methods: readonly string[]): string[] {
  const set = new Set(methods.map((m) => m.toUpperCase()));
  if (set.has('GET')) set.add('HEAD');
  return [...set];
}

/** The first earlier route taking each method, when every method is taken; else undefined. */
function methodCover(methods: string[], covering: CompiledRoute[]): { route: CompiledRoute; methods: string[] }[] | undefined {
  const by = new Map<CompiledRoute, string[]>();
  for (const m of methods) {
    const a = covering.find((r) => r.matchesMethod(m));
    if (!a) return undefined;
    by.set(a, [...(by.get(a) ?? []), m]);
  }
  return [...by].map(([route, ms]) => ({ route, methods: ms }));
}

function describeMatch(r: CompiledRoute): string {
  const m = r.config.match;
  return [m.host ? `host ${m.host}` : 'any host', `path ${m.path ?? '/**'}`, m.methods ? `methods ${m.methods.join(', ')}` : 'any method'].join(', ');
}

/** True when route `a` matches every Host header that route `b` matches. */
export function hostCovers(a: CompiledRoute, b: CompiledRoute): boolean {
  const ah = a.config.match.host;
  const bh = b.config.match.host;
  if (ah === undefined) return true;
  if (bh === undefined) return false;
  const pb = parseHost(bh);
  const pa = parseHost(ah);
  if (!pa || !pb) return false;
  if (!pb.name.startsWith('*.')) return a.matchesHost(bh);
  // `b` is a wildcard: `a` must be a wildcard over the same or a wider domain, on any port or b's.
  if (pa.port !== undefined && pa.port !== pb.port) return false;
  if (!pa.name.startsWith('*.')) return false;
  const suffix = pa.name.slice(1); // ".example.com"
  return pb.name.slice(1).endsWith(suffix);
}

/** The canonical pattern's segments (`/` alone, which matches only the root, is one empty segment). */
function segmentsOf(r: CompiledRoute): string[] {
  return r.pathPattern.slice(1).split('/');
}

const CASELESS_ASCII = /^[\x20-\x7e]*$/;

/** True when route `a`'s path pattern matches every path route `b`'s matches, on the keys each compares. */
export function pathCovers(a: CompiledRoute, b: CompiledRoute): boolean {
  const aSensitive = a.config.match.case_sensitive === true;
  const bSensitive = b.config.match.case_sensitive === true;
  let as = segmentsOf(a);
  let bs = segmentsOf(b);
  if (!aSensitive && bSensitive) {
    // `a` compares the folded key: fold b's pattern the same way.
    bs = bs.map((s) => s.toLowerCase());
  } else if (aSensitive && !bSensitive) {
    // `b` takes every case spelling; `a` only the one it names. Covered only when a's literal
    // characters have no case (digits, punctuation).
    const literals = as.join('').replace(/\*/g, '');
    if (!CASELESS_ASCII.test(literals) || /[A-Za-z]/.test(literals)) return false;
    as = as.map((s) => s.toLowerCase());
  }
  return patternCovers(as, bs);
}

/** A bound on the search (patterns are short; a pathological pair is simply not reported). */
const BUDGET = 20_000;

/**
 * True when every segment list matched by pattern `b` is matched by pattern `a`. Segments are
 * `**` (zero or more segments) or globs where `*` matches any run of characters within one
 * segment. Sound: `true` only when the inclusion holds; `false` when it does not, or when the
 * search would exceed its budget.
 */
export function patternCovers(a: readonly string[], b: readonly string[]): boolean {
  let budget = BUDGET;
  const memo = new Map<string, boolean>();
  const go = (i: number, rest: readonly string[]): boolean => {
    if (--budget < 0) return false;
    const key = `${i}\u0000${rest.join('/')}`;
    const hit = memo.get(key);
    if (hit !== undefined) return hit;
    let r: boolean;
    if (rest.length === 0) r = a.slice(i).every((s) => s === '**');
    else if (i === a.length) r = false;
    else if (a[i] === '**') {
      // a's `**` ends here, or takes b's next part (a segment, or b's whole `**`) and goes on.
      r = go(i + 1, rest) || go(i, rest.slice(1));
    } else if (rest[0] === '**') {
      // b's `**` is nothing, or one segment and then `**` again: both must be covered.
      r = go(i, rest.slice(1)) && go(i, ['*', ...rest]);
    } else r = globCovers(a[i], rest[0]) && go(i + 1, rest.slice(1));
    memo.set(key, r);
    return r;
  };
  return go(0, b) && budget >= 0;
}

/** True when every string glob `b` matches (no `/`; `*` = any run) is matched by glob `a`. */
export function globCovers(a: string, b: string): boolean {
  if (a === b || a === '*') return true;
  const memo = new Map<number, boolean>();
  const go = (i: number, j: number): boolean => {
    const k = i * (b.length + 1) + j;
    const hit = memo.get(k);
    if (hit !== undefined) return hit;
    let r: boolean;
    if (j === b.length) r = [...a.slice(i)].every((c) => c === '*');
    else if (i === a.length) r = false;
    else if (a[i] === '*') r = go(i + 1, j) || go(i, j + 1);
    else if (b[j] === '*')
      r = false; // b's `*` takes characters a's literal cannot all be
    else r = a[i] === b[j] && go(i + 1, j + 1);
    memo.set(k, r);
    return r;
  };
  return go(0, 0);
}
