import type { RouteConfig } from '../config/schema.js';
import { Errors, GatewayError } from '../errors/index.js';
import { canonicalSegment, keySegment, matchKey, type MatchKey } from './normalize.js';

/** What route matching looks at. `path` must come from `normalizePath`. */
export interface RouteRequest {
  /** The `Host` header as received (port included or not); `undefined` when absent. */
  readonly host: string | undefined;
  /** The request method, any case. */
  readonly method: string;
  /** The normalized path (`normalizePath(...).path`). */
  readonly path: string;
  /** `matchKey(path)`, when the caller has it already (it throws for disguised dot segments). */
  readonly key?: MatchKey;
}

/** One route, compiled once per config load. */
export interface CompiledRoute {
  /** The route's `name` from the config. */
  readonly name: string;
  /** Position in `routes` (0-based): the first matching route decides. */
  readonly index: number;
  /** The route as configured. */
  readonly config: RouteConfig;
  /** The canonical path pattern actually matched (escapes normalized like request paths). */
  readonly pathPattern: string;
  /** True when the route's host rule accepts this `Host` header (always true without a host rule). */
  matchesHost(host: string | undefined): boolean;
  /** True when the route's method list accepts this method (always true without a list). */
  matchesMethod(method: string): boolean;
  /** True when the normalized path (through its matching key) matches the route's path pattern. */
  matchesPath(path: string): boolean;
  /** True when the matching key matches the route's path pattern. */
  matchesKey(key: MatchKey): boolean;
}

/** The compiled, ordered route list. */
export interface RouteTable {
  /** All routes, in config order. */
  readonly routes: readonly CompiledRoute[];
  /** The first route matching host, method and path, or `undefined` (the gateway answers 404). */
  match(req: RouteRequest): CompiledRoute | undefined;
}

/** A `Host` value split into its lower-cased name and port. */
export interface HostName {
  name: string;
  port: string | undefined;
}

/**
 * Splits a `Host` value into a lower-cased name (one trailing dot dropped) and a port.
 * `[v6]:port` is understood; a bare IPv6 address without brackets is kept whole.
 */
export function parseHost(host: string | undefined): HostName | undefined {
  if (host === undefined) return undefined;
  const h = host.trim().toLowerCase();
  if (h === '') return undefined;
  let name = h;
  let port: string | undefined;
  if (h.startsWith('[')) {
    const end = h.indexOf(']');
    if (end > 0) {
      name = h.slice(0, end + 1);
      if (h.charCodeAt(end + 1) === 0x3a) port = h.slice(end + 2);
    }
  } else {
    const i = h.indexOf(':');
    if (i >= 0 && h.indexOf(':', i + 1) < 0) {
      name = h.slice(0, i);
      port = h.slice(i + 1);
    }
  }
  if (name.endsWith('.')) name = name.slice(0, -1);
  return { name, port };
}

type HostTest = (h: HostName | undefined) => boolean;

function compileHost(pattern: string): HostTest {
  const p = parseHost(pattern);
  if (p === undefined) return () => true;
  const { port } = p;
  const portOk = (h: HostName): boolean => port === undefined || h.port === port;
  if (p.name.startsWith('*.')) {
    const suffix = p.name.slice(1); // ".example.com"
    return (h) => {
      if (h === undefined || !portOk(h) || !h.name.endsWith(suffix)) return false;
      const labels = h.name.slice(0, h.name.length - suffix.length);
      // One or more non-empty labels before the suffix: not "example.com", not ".example.com".
      return labels !== '' && !labels.startsWith('.') && !labels.endsWith('.') && !labels.includes('..');
    };
  }
  const name = p.name;
  return (h) => h !== undefined && h.name === name && portOk(h);
}

function compileMethods(methods: readonly string[] | undefined): Set<string> | undefined {
  if (methods === undefined) return undefined;
  const set = new Set(methods.map((m) => m.toUpperCase()));
  // A HEAD is a GET without the body: a route that serves GET serves HEAD too.
  if (set.has('GET')) set.add('HEAD');
  return set;
}

/** Thrown for an unusable path pattern; `extra.path` is the config key path. */
function patternError(route: RouteConfig, index: number, pattern: string, why: string): GatewayError {
  return new GatewayError(Errors.invalid_config, `routes[${index}] "${route.name}": path pattern "${pattern}": ${why}`, {
    extra: { path: ['routes', index, 'match', 'path'] },
  });
}

/**
 * Splits a path pattern into canonical segments: runs of `/` collapse (a request path never has
 * an empty segment except a trailing one), literal parts are canonicalized like request paths
 * so `/%61dmin` and `/admin` are the same pattern.
 */
function patternSegments(route: RouteConfig, index: number, pattern: string): string[] {
  if (!pattern.startsWith('/')) throw patternError(route, index, pattern, 'must start with "/"');
  if (/[?#]/.test(pattern)) throw patternError(route, index, pattern, 'must not contain "?" or "#" (the query never takes part in matching)');
  if (/;|%3b/i.test(pattern)) throw patternError(route, index, pattern, 'must not contain ";" (matching ignores path parameters)');
  const raw = pattern.slice(1).split('/');
  const segs: string[] = [];
  const fold = !route.match.case_sensitive;
  raw.forEach((seg) => {
    // Matching keys have no empty segments and no trailing slash (see matchKey).
    if (seg === '') return;
    if (seg === '**') {
      segs.push(seg);
      return;
    }
    if (seg.includes('**')) throw patternError(route, index, pattern, '"**" must be a whole segment (e.g. /static/**/*.js)');
    let canon: string;
    try {
      canon = canonicalSegment(seg);
    } catch (e) {
      throw patternError(route, index, pattern, e instanceof Error ? e.message : String(e));
    }
    if (canon === '.' || canon === '..') throw patternError(route, index, pattern, '"." and ".." segments can never match a normalized path');
    // The same key form as request paths: `/internal.`, `/internal%20` and `/internal` are one
    // pattern, `/%40admin` and `/@admin` too.
    let keyed: string;
    try {
      keyed = keySegment(canon);
    } catch (e) {
      throw patternError(route, index, pattern, e instanceof Error ? e.message.replace(/ in the path$/, '') : String(e));
    }
    segs.push(fold ? keyed.toLowerCase() : keyed);
  });
  return segs;
}

const REGEX_META = /[.*+?^${}()|[\]\\/]/g;

function segmentRegex(seg: string): string {
  return seg
    .split('*')
    .map((lit) => lit.replace(REGEX_META, '\\$&'))
    .join('[^/]*');
}

/**
 * One glob segment without `**`: `*` matches any run of characters inside the segment. Parts are
 * found leftmost-first, which is exact for `*`-only globs and needs no backtracking.
 */
function segmentTest(seg: string): (s: string) => boolean {
  const parts = seg.split('*');
  if (parts.length === 1) return (s) => s === seg;
  const first = parts[0];
  const last = parts[parts.length - 1];
  const mids = parts.slice(1, -1);
  const minLen = parts.reduce((n, p) => n + p.length, 0);
  return (s) => {
    if (s.length < minLen || !s.startsWith(first) || !s.endsWith(last)) return false;
    let pos = first.length;
    const end = s.length - last.length;
    for (const m of mids) {
      const at = s.indexOf(m, pos);
      if (at < 0 || at + m.length > end) return false;
      pos = at + m.length;
    }
    return true;
  };
}

/**
 * The general matcher, for patterns a backtracking RegExp could make slow on hostile paths
 * (two or more `**`, or two or more `*` in one segment: `^(?:/.*)?/a(?:/.*)?/b$` is quadratic
 * in the path length, cubic with three `**`). Groups of segments between `**` are found
 * leftmost-first, which is exact because every non-`**` segment consumes exactly one segment.
 */
function segmentsMatcher(segs: string[]): (path: string) => boolean {
  const groups: ((s: string) => boolean)[][] = [[]];
  for (const seg of segs) {
    if (seg === '**') groups.push([]);
    else groups[groups.length - 1].push(segmentTest(seg));
  }
  const at = (g: ((s: string) => boolean)[], parts: string[], start: number): boolean => {
    for (let i = 0; i < g.length; i++) if (!g[i](parts[start + i])) return false;
    return true;
  };
  if (groups.length === 1) {
    const only = groups[0];
    return (path) => {
      const parts = path.slice(1).split('/');
      return parts.length === only.length && at(only, parts, 0);
    };
  }
  const head = groups[0];
  const tail = groups[groups.length - 1];
  const mids = groups.slice(1, -1);
  return (path) => {
    const parts = path.slice(1).split('/');
    const n = parts.length;
    if (n < head.length + tail.length || !at(head, parts, 0) || !at(tail, parts, n - tail.length)) return false;
    let pos = head.length;
    const end = n - tail.length;
    for (const g of mids) {
      let k = pos;
      while (k + g.length <= end && !at(g, parts, k)) k++;
      if (k + g.length > end) return false;
      pos = k + g.length;
    }
    return true;
  };
}

/**
 * Compiles a path pattern against matching keys (see `matchKey`: no empty segments, no trailing
 * slash). `*` matches within one segment (`/files/*` matches `/files/a`, and `/files/a/`, whose
 * key is `/files/a`, but not `/files/`, whose key is `/files`); a whole-segment `**` matches zero
 * or more segments (`/admin/**` matches `/admin`, `/admin/`, `/admin/x/y`). Patterns with at most one `**` and at most one `*` per
 * segment become one anchored RegExp (linear on any input); others use {@link segmentsMatcher}.
 * @internal exported for tests
 */
export function compilePathPattern(segs: string[]): { test: (path: string) => boolean; regex: RegExp | undefined } {
  if (segs.length === 0) return { test: (path) => path === '/', regex: /^\/$/ };
  const globstars = segs.filter((s) => s === '**').length;
  const simple = globstars <= 1 && segs.every((s) => s === '**' || s.split('*').length <= 2);
  if (!simple) return { test: segmentsMatcher(segs), regex: undefined };
  const body = segs.map((s) => (s === '**' ? '(?:/.*)?' : `/${segmentRegex(s)}`)).join('');
  const regex = new RegExp(`^${body}$`);
  return { test: (path) => regex.test(path), regex };
}

class Route implements CompiledRoute {
  readonly name: string;
  readonly pathPattern: string;
  /** @internal */ readonly hostTest: HostTest;
  /** @internal */ readonly methods: Set<string> | undefined;
  /** @internal */ readonly pathTest: (path: string) => boolean;
  /** @internal */ readonly caseSensitive: boolean;

  constructor(
    readonly config: RouteConfig,
    readonly index: number,
  ) {
    this.name = config.name;
    const segs = patternSegments(config, index, config.match.path ?? '/**');
    this.pathPattern = `/${segs.join('/')}`;
    this.pathTest = compilePathPattern(segs).test;
    this.caseSensitive = config.match.case_sensitive === true;
    this.hostTest = config.match.host === undefined ? () => true : compileHost(config.match.host);
    this.methods = compileMethods(config.match.methods);
  }

  matchesHost(host: string | undefined): boolean {
    return this.hostTest(parseHost(host));
  }

  matchesMethod(method: string): boolean {
    return this.methods === undefined || this.methods.has(method.toUpperCase());
  }

  matchesPath(path: string): boolean {
    return this.matchesKey(matchKey(path));
  }

  matchesKey(key: MatchKey): boolean {
    return this.pathTest(this.caseSensitive ? key.sensitive : key.folded);
  }
}

/**
 * Compiles the ordered route list once per config load.
 *
 * Host rules: exact and case-insensitive, one trailing dot ignored; the request's port is
 * ignored unless the pattern has one (then it must be equal); `*.example.com` matches one or more
 * labels before `.example.com` but not `example.com`; a route without `host` matches any host,
 * including a request without one. Methods: case-insensitive; a list containing `GET` also
 * accepts `HEAD`; no list accepts every method. Paths: patterns and request paths are both
 * reduced to matching keys (`matchKey`: case-folded unless `match.case_sensitive`, trailing dots
 * and spaces, path parameters, empty segments and the trailing slash ignored, escapes of
 * printable ASCII decoded), then compared; see {@link compilePathPattern}.
 *
 * @throws GatewayError `invalid_config` with `extra.path = ['routes', i, 'match', 'path']` for a
 *   pattern that can never match (`..` segments, `**` inside a segment, invalid escapes, …)
 */
export function compileRoutes(routes: readonly RouteConfig[]): RouteTable {
  const compiled = routes.map((r, i) => new Route(r, i));
  return {
    routes: compiled,
    match(req: RouteRequest): CompiledRoute | undefined {
      const method = req.method.toUpperCase();
      const host = parseHost(req.host); // parsed once per request, not once per route
      const key = req.key ?? matchKey(req.path);
      for (const r of compiled) {
        if ((r.methods === undefined || r.methods.has(method)) && r.hostTest(host) && r.pathTest(r.caseSensitive ? key.sensitive : key.folded)) return r;
      }
      return undefined;
    },
  };
}
