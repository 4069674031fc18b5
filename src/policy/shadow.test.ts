import { describe, expect, it } from 'vitest';
import { route } from '../../test/support/routes.js';
import { loadConfig } from '../config/index.js';
import { compileRoutes } from './routes.js';
import { globCovers, patternCovers, shadowedRouteWarnings } from './shadow.js';

type M = Parameters<typeof route>[1];
/** The warnings for routes given as [name, match] in order (every route public on one upstream). */
const warn = (...routes: [string, M][]) => shadowedRouteWarnings(compileRoutes(routes.map(([n, m]) => route(n, m))));
/** Whether the second route is reported as shadowed by the first. */
const shadows = (a: M, b: M) => warn(['first', a], ['second', b]).length === 1;

describe('shadowedRouteWarnings: a route that can never match', () => {
  it('reports it at the later route, naming the route that takes its requests', () => {
    const w = warn(['app', { path: '/**' }], ['admin', { path: '/admin/**' }]);
    expect(w).toEqual([
      {
        path: ['routes', 1],
        message:
          'route "admin" can never match: route "app" (routes[0]) takes every request it would (any host, path /admin/**, any method). ' +
          'Move it above "app", narrow that route, or remove it.',
      },
    ]);
  });

  describe('shadowed', () => {
    it.each<[string, M, M]>([
      ['/** before /admin/**', { path: '/**' }, { path: '/admin/**' }],
      ['/api/* before /api/users', { path: '/api/*' }, { path: '/api/users' }],
      ['the same pattern twice', { path: '/x/**' }, { path: '/x/**' }],
      ['/a/** before /a (** is zero segments too)', { path: '/a/**' }, { path: '/a' }],
      ['/a/** before /a/**/b', { path: '/a/**' }, { path: '/a/**/b' }],
      ['/**/secret/** before /a/secret', { path: '/**/secret/**' }, { path: '/a/secret' }],
      ['/**/*.js before /static/**/*.js', { path: '/**/*.js' }, { path: '/static/**/*.js' }],
      ['/files/*.png before /files/a*.png', { path: '/files/*.png' }, { path: '/files/a*.png' }],
      ['/* before / (a * segment matches the root)', { path: '/*' }, { path: '/' }],
      ['spellings of one key: /Admin/** before /admin/x (both case-folded)', { path: '/Admin/**' }, { path: '/admin/x' }],
      ['escapes and trailing dots: /%61dmin/** before /admin./x', { path: '/%61dmin/**' }, { path: '/admin./x' }],
      ['a case-folded route before a case-sensitive one: /admin/** before /Admin/Panel', { path: '/admin/**' }, { path: '/Admin/Panel', case_sensitive: true }],
      ['a case-sensitive route without letters before a folded one: /** before /x', { path: '/**', case_sensitive: true }, { path: '/x' }],
      ['a case-sensitive route without letters: /2024/** before /2024/q1', { path: '/2024/**', case_sensitive: true }, { path: '/2024/q1' }],
      ['any host before one host', { path: '/**' }, { path: '/x', host: 'api.example.com' }],
      ['a wildcard host before a subdomain', { path: '/**', host: '*.example.com' }, { path: '/x', host: 'api.example.com' }],
      ['a wildcard host before a narrower wildcard', { path: '/**', host: '*.example.com' }, { path: '/x', host: '*.eu.example.com' }],
      ['one host spelled twice (case, trailing dot)', { path: '/**', host: 'api.example.com' }, { path: '/x', host: 'API.Example.com.' }],
      ['a host without a port before the same host with one', { path: '/**', host: 'api.example.com' }, { path: '/x', host: 'api.example.com:8443' }],
      ['every method before a method list', { path: '/api/**' }, { path: '/api/x', methods: ['DELETE'] }],
      ['a method list before a subset of it', { path: '/api/**', methods: ['GET', 'POST'] }, { path: '/api/x', methods: ['post'] }],
      ['GET before HEAD (a GET route takes HEAD)', { path: '/api/**', methods: ['GET'] }, { path: '/api/x', methods: ['HEAD'] }],
    ])('%s', (_what, a, b) => {
      expect(shadows(a, b)).toBe(true);
    });

    it('by several earlier routes together, each taking some of its methods', () => {
      const w = warn(
        ['read', { path: '/docs/**', methods: ['GET'] }],
        ['write', { path: '/docs/**', methods: ['PUT', 'DELETE'] }],
        ['edit', { path: '/docs/x', methods: ['GET', 'PUT'] }],
      );
      expect(w).toHaveLength(1);
      expect(w[0].path).toEqual(['routes', 2]);
      expect(w[0].message).toContain('route "read" (routes[0], GET HEAD) and route "write" (routes[1], PUT) take every request it would');
    });
  });

  describe('not shadowed', () => {
    it.each<[string, M, M]>([
      ['a broader route after a narrower one: /admin/** before /**', { path: '/admin/**' }, { path: '/**' }],
      ['a partial overlap: /api/users/* before /api/*/profile', { path: '/api/users/*' }, { path: '/api/*/profile' }],
      ['a longer path: /api/* before /api/users/**', { path: '/api/*' }, { path: '/api/users/**' }],
      ['a wider glob: /files/*.png before /files/*', { path: '/files/*.png' }, { path: '/files/*' }],
      ['a prefix glob: /files/a* before /files/*a', { path: '/files/a*' }, { path: '/files/*a' }],
      ['the root only: / before /*', { path: '/' }, { path: '/*' }],
      ['one segment is not any number: /*/x before /**/x', { path: '/*/x' }, { path: '/**/x' }],
      ['another path: /a/** before /b', { path: '/a/**' }, { path: '/b' }],
      ['another host', { path: '/**', host: 'a.example.com' }, { path: '/x', host: 'b.example.com' }],
      ['a host rule before a route for any host', { path: '/**', host: 'a.example.com' }, { path: '/x' }],
      ['a wildcard host before its own apex', { path: '/**', host: '*.example.com' }, { path: '/x', host: 'example.com' }],
      ['a wildcard host before a look-alike domain', { path: '/**', host: '*.example.com' }, { path: '/x', host: '*.badexample.com' }],
      ['an exact host before a wildcard', { path: '/**', host: 'api.example.com' }, { path: '/x', host: '*.example.com' }],
      ['a host with a port before the host on any port', { path: '/**', host: 'api.example.com:8443' }, { path: '/x', host: 'api.example.com' }],
      ['another port', { path: '/**', host: 'api.example.com:8443' }, { path: '/x', host: 'api.example.com:9443' }],
      ['a method list before a route for every method', { path: '/api/**', methods: ['GET'] }, { path: '/api/x' }],
      ['a method list before a wider one', { path: '/api/**', methods: ['GET'] }, { path: '/api/x', methods: ['GET', 'DELETE'] }],
      ['HEAD before GET', { path: '/api/**', methods: ['HEAD'] }, { path: '/api/x', methods: ['GET'] }],
      ['a case-sensitive route before a folded one: /admin/** before /admin/x', { path: '/admin/**', case_sensitive: true }, { path: '/admin/x' }],
      ['two case-sensitive spellings: /Admin/** before /admin/x', { path: '/Admin/**', case_sensitive: true }, { path: '/admin/x', case_sensitive: true }],
    ])('%s', (_what, a, b) => {
      expect(shadows(a, b)).toBe(false);
    });

    it('methods covered only in part by several earlier routes', () => {
      expect(
        warn(
          ['read', { path: '/docs/**', methods: ['GET'] }],
          ['write', { path: '/docs/**', methods: ['PUT'] }],
          ['edit', { path: '/docs/x', methods: ['GET', 'PUT', 'DELETE'] }],
        ),
      ).toEqual([]);
    });

    it('an earlier route that covers the path on another host does not count towards the methods', () => {
      expect(
        warn(
          ['read', { path: '/docs/**', methods: ['GET'] }],
          ['write-b', { path: '/docs/**', methods: ['PUT'], host: 'b.example.com' }],
          ['edit', { path: '/docs/x', methods: ['GET', 'PUT'] }],
        ),
      ).toEqual([]);
    });
  });

  it('finds nothing in the shipped config', () => {
    const c = loadConfig(new URL('../../config/gateway.yaml', import.meta.url).pathname, {});
    expect(shadowedRouteWarnings(compileRoutes(c.routes))).toEqual([]);
  });
});

describe('patternCovers / globCovers', () => {
  it('decide inclusion of segment patterns and segment globs', () => {
    expect(patternCovers(['**'], ['a', '**', 'b'])).toBe(true);
    expect(patternCovers(['a', '**'], ['**'])).toBe(false);
    expect(patternCovers(['**', 'b'], ['a', '**', 'b'])).toBe(true);
    expect(patternCovers(['**', 'b', '**'], ['**', 'b'])).toBe(true);
    expect(patternCovers(['*', '*'], ['**'])).toBe(false);
    expect(globCovers('*x*', 'x*')).toBe(true);
    expect(globCovers('*x*', '*')).toBe(false);
    expect(globCovers('a*b', 'ab')).toBe(true);
    expect(globCovers('a*b', 'a*')).toBe(false);
    expect(globCovers('*.min.js', '*.js')).toBe(false);
    expect(globCovers('*.js', '*.min.js')).toBe(true);
  });

  it('answer long patterns quickly (a bounded search: when in doubt, nothing is reported)', () => {
    const many = Array.from({ length: 40 }, () => '*');
    const started = performance.now();
    // A needs at least 40 segments; B matches some with 20.
    expect(patternCovers(['**', ...many, '**'], [...many.map((_s, i) => (i % 2 ? '**' : 'x')), '**'])).toBe(false);
    expect(patternCovers(['**', '*', '**', '*', '**', '*', '**'], ['a', '**', 'b', '**', 'c', '**', 'd'])).toBe(true);
    expect(performance.now() - started).toBeLessThan(500);
  });
});
