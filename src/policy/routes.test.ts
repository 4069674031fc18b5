import { describe, expect, it } from 'vitest';
import { GatewayError } from '../errors/index.js';
import { compileRoutes, matchKey, normalizePath } from './index.js';
import { compilePathPattern } from './routes.js';
import { route } from '../../test/support/routes.js';

/** Does `pattern` match `path` (any host, any method)? */
function pathMatches(pattern: string, path: string): boolean {
  return compileRoutes([route('r', { path: pattern })]).match({ host: undefined, method: 'GET', path }) !== undefined;
}

/** [pattern, path, matches] */
const pathCases: [string, string, boolean][] = [
  // literals
  ['/admin', '/admin', true],
  ['/admin', '/admin/', true], // by design: keys drop the trailing slash (Express non-strict routing)
  ['/admin', '/admin/x', false],
  ['/admin', '/administrator', false],
  ['/admin', '/Admin', true], // by design: case-insensitive unless match.case_sensitive (see below)
  ['/admin/', '/admin/', true],
  ['/admin/', '/admin', true], // by design: the pattern's trailing slash is dropped too
  ['/', '/', true],
  ['/', '/a', false],
  // "*" stays inside one segment
  ['/files/*', '/files/a', true],
  ['/files/*', '/files/a.txt', true],
  ['/files/*', '/files/', false], // by design: the key of /files/ is /files (no empty last segment)
  ['/files/*', '/files', false],
  ['/files/*', '/files/a/b', false],
  ['/files/*', '/files/a/', true], // by design: trailing slash ignored, key /files/a
  ['/*', '/', true],
  ['/*', '/anything', true],
  ['/*', '/a/b', false],
  ['/img/*.png', '/img/cat.png', true],
  ['/img/*.png', '/img/.png', true],
  ['/img/*.png', '/img/cat.png/x', false],
  ['/img/*.png', '/img/a/cat.png', false],
  ['/img/*.png', '/img/cat.pngx', false],
  ['/img/*.png', '/img/catxpng', false],
  ['/api/*/users', '/api/v1/users', true],
  ['/api/*/users', '/api/v1/v2/users', false],
  ['/api/v*-*/x', '/api/v1-beta/x', true],
  ['/api/v*-*/x', '/api/v1beta/x', false],
  ['/a/*b*c*/z', '/a/xbycz/z', true],
  ['/a/*b*c*/z', '/a/cb/z', false],
  ['/a/*b*c*/z', '/a/bc/z', true],
  // "**" matches zero or more whole segments
  ['/admin/**', '/admin', true],
  ['/admin/**', '/admin/', true],
  ['/admin/**', '/admin/x', true],
  ['/admin/**', '/admin/x/y/z', true],
  ['/admin/**', '/administrator', false],
  ['/admin/**', '/admin.php', false],
  ['/admin/**', '/', false],
  ['/admin/**', '/x/admin', false],
  ['/**', '/', true],
  ['/**', '/a', true],
  ['/**', '/a/b/c/', true],
  ['/**/*.js', '/app.js', true],
  ['/**/*.js', '/static/js/app.js', true],
  ['/**/*.js', '/static/app.json', false],
  ['/a/**/b', '/a/b', true],
  ['/a/**/b', '/a/x/b', true],
  ['/a/**/b', '/a/x/y/b', true],
  ['/a/**/b', '/a/xb', false],
  ['/a/**/b', '/ab', false],
  ['/a/**/b', '/a/b/c', false],
  ['/a/**/b/', '/a/x/b/', true],
  ['/a/**/b/', '/a/x/b', true], // by design: trailing slash ignored on both sides
  // several "**" (general matcher)
  ['/api/**/admin/**', '/api/admin', true],
  ['/api/**/admin/**', '/api/v1/admin/users/1', true],
  ['/api/**/admin/**', '/api/v1/administrator', false],
  ['/api/**/admin/**', '/admin', false],
  ['/**/a/**/b/**', '/a/b', true],
  ['/**/a/**/b/**', '/x/a/y/b/z', true],
  ['/**/a/**/b/**', '/x/b/y/a/z', false],
  ['/**/a/b/**/c', '/a/a/b/c', true],
  ['/**/a/b/**/c', '/a/b', false],
  ['/**/**', '/', true],
  // regex metacharacters in literal parts are literal
  ['/a.b', '/a.b', true],
  ['/a.b', '/axb', false],
  ['/a+b', '/a+b', true],
  ['/a+b', '/aab', false],
  ['/a+b', '/ab', false],
  ['/a.b', '/a+b', false],
  ['/(x)', '/(x)', true],
  ['/(x)', '/x', false],
  ['/$x', '/$x', true],
  ['/a$', '/a', false],
  ['/x=1&y', '/x=1&y', true],
  ['/a|b', '/a', false],
  ['/a|b', '/b', false],
  ['/a|b', '/a%7Cb', true], // pattern literals are canonicalized like request paths
  ['/%61dmin/**', '/admin/x', true],
  // '/a%3bb' and '/a;b' used to be literal patterns; ';' in a pattern is now a config error (see below)
  ['/a', '/a;b', true], // by design: path parameters are cut from the key
  ['/a', '/a%3Bb', true], // %3B is a ';'
  ['/a/b', '/a;x/b;y', true],
  // escapes left in the path are compared literally
  ['/files/*', '/files/a%2Fb', true],
  ['/caf%C3%A9', '/caf%C3%A9', true],
];

describe('path patterns', () => {
  it.each(pathCases)('%s vs %s → %s', (pattern, path, expected) => {
    expect(pathMatches(pattern, path)).toBe(expected);
  });

  it('matches normalized paths, so traversal cannot dodge a rule', () => {
    const table = compileRoutes([route('admin', { path: '/admin/**' }), route('rest', { path: '/**' })]);
    for (const raw of ['/public/../admin/users', '//admin', '/./admin', '/%61dmin/x', '/admin/']) {
      expect(table.match({ host: undefined, method: 'GET', path: normalizePath(raw).path })?.name, raw).toBe('admin');
    }
  });

  it('compiles simple patterns to one anchored RegExp and escapes metacharacters', () => {
    const src = (re: string): string => new RegExp(re).source; // V8 escapes "/" in .source
    expect(compilePathPattern(['admin', '**']).regex?.source).toBe(src(String.raw`^\/admin(?:/.*)?$`));
    expect(compilePathPattern(['a.b+c', '*.png']).regex?.source).toBe(src(String.raw`^\/a\.b\+c\/[^/]*\.png$`));
    expect(compilePathPattern(['**']).regex?.source).toBe(src('^(?:/.*)?$'));
    expect(compilePathPattern(['**', 'a', '**']).regex).toBeUndefined();
    expect(compilePathPattern(['*a*']).regex).toBeUndefined();
  });

  it('the RegExp and the general matcher agree', () => {
    // Force both implementations over the same patterns by comparing against a slow reference.
    const reference = (segs: string[], path: string): boolean => {
      const parts = path.slice(1).split('/');
      const go = (i: number, j: number): boolean => {
        if (i === segs.length) return j === parts.length;
        if (segs[i] === '**') return go(i + 1, j) || (j < parts.length && go(i, j + 1));
        if (j === parts.length) return false;
        const re = new RegExp(
          `^${segs[i]
            .split('*')
            .map((l) => l.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))
            .join('.*')}$`,
        );
        return re.test(parts[j]) && go(i + 1, j + 1);
      };
      return go(0, 0);
    };
    const segChoices = ['a', 'b', '*', '**', 'a*', '*b', '*a*', 'a*b*', ''];
    const paths = ['/', '/a', '/b', '/a/', '/a/b', '/b/a', '/a/a/b', '/ab', '/ba/ab', '/a/b/a/b', '/aab/b', '/x/a/y/b/'];
    let seed = 7;
    const next = (): number => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed / 2 ** 31;
    };
    for (let n = 0; n < 400; n++) {
      const len = 1 + Math.floor(next() * 4);
      const segs = Array.from({ length: len }, () => segChoices[Math.floor(next() * segChoices.length)]).filter((s, i, a) => s !== '' || i === a.length - 1);
      if (segs.length === 0) continue;
      const { test } = compilePathPattern(segs);
      for (const p of paths) expect(test(p), `/${segs.join('/')} vs ${p}`).toBe(reference(segs, p));
    }
  });

  it('stays fast with several "**" on a hostile path', () => {
    const table = compileRoutes([route('r', { path: '/**/a/**/b/**/c' })]);
    const path = `/${'a/'.repeat(5000)}x`;
    const t0 = performance.now();
    expect(table.match({ host: undefined, method: 'GET', path })).toBeUndefined();
    expect(performance.now() - t0).toBeLessThan(200);
  });

  it.each([
    ['/a/../b', /"\." and "\.\." segments/],
    ['/a/./b', /"\." and "\.\." segments/],
    ['/static/**.js', /"\*\*" must be a whole segment/],
    ['/a**', /"\*\*" must be a whole segment/],
    ['/a/%2e%2e', /encoded dot segment/],
    ['/a%2Fb', /encoded "\/"/],
    ['/a%zz', /invalid percent-escape/],
    ['/a?x=1', /"\?" or "#"/],
    ['/a#x', /"\?" or "#"/],
    ['admin/**', /must start with "\/"/],
    ['/a b', /a space/],
    ['/a;b', /must not contain ";"/],
    ['/a%3bb', /must not contain ";"/],
    ['/a%3Bb/**', /must not contain ";"/],
    ['/a/...', /made only of dots and spaces/],
    ['/a/%20./b', /made only of dots and spaces/],
    ['/%252e/x', /double-encoded/],
  ])('rejects the pattern %j at compile time', (pattern, why) => {
    let err: unknown;
    try {
      compileRoutes([route('ok'), route('bad', { path: pattern })]);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(GatewayError);
    const g = err as GatewayError;
    expect(g.code).toBe('invalid_config');
    expect(g.message).toMatch(/^routes\[1\] "bad": path pattern /);
    expect(g.message).toMatch(why);
    expect(g.extra).toEqual({ path: ['routes', 1, 'match', 'path'] });
  });

  it('collapses runs of "/" in a pattern and exposes the canonical pattern', () => {
    const table = compileRoutes([route('r', { path: '//a///%62/' })]);
    // by design: the canonical pattern has no trailing slash (it is keyed like request paths)
    expect(table.routes[0].pathPattern).toBe('/a/b');
    expect(table.match({ host: undefined, method: 'GET', path: '/a/b/' })?.name).toBe('r');
    expect(table.match({ host: undefined, method: 'GET', path: '/a/b' })?.name).toBe('r');
  });
});

describe('hosts', () => {
  /** [route host, request Host header, matches] */
  const cases: [string | undefined, string | undefined, boolean][] = [
    [undefined, 'anything.example', true],
    [undefined, undefined, true],
    ['example.com', 'example.com', true],
    ['example.com', 'EXAMPLE.com', true],
    ['Example.COM', 'example.com', true],
    ['example.com', 'example.com:8443', true],
    ['example.com', 'example.com.', true],
    ['example.com', ' example.com ', true],
    ['example.com', 'www.example.com', false],
    ['example.com', 'example.com.evil', false],
    ['example.com', 'evilexample.com', false],
    ['example.com', undefined, false],
    ['example.com', '', false],
    ['example.com:8443', 'example.com:8443', true],
    ['example.com:8443', 'example.com:443', false],
    ['example.com:8443', 'example.com', false],
    ['*.example.com', 'a.example.com', true],
    ['*.example.com', 'A.Example.Com', true],
    ['*.example.com', 'a.b.example.com', true],
    ['*.example.com', 'a.example.com:8080', true],
    ['*.example.com', 'example.com', false],
    ['*.example.com', '.example.com', false],
    ['*.example.com', 'a..example.com', false],
    ['*.example.com', 'evilexample.com', false],
    ['*.example.com', 'a.example.com.evil', false],
    ['*.example.com', undefined, false],
    ['*.example.com:8443', 'a.example.com:8443', true],
    ['*.example.com:8443', 'a.example.com', false],
    ['127.0.0.1', '127.0.0.1:8080', true],
    ['127.0.0.1', '127.0.0.2', false],
  ];
  it.each(cases)('route host %j vs Host %j → %s', (pattern, host, expected) => {
    const table = compileRoutes([route('r', pattern === undefined ? {} : { host: pattern })]);
    expect(table.match({ host, method: 'GET', path: '/' }) !== undefined).toBe(expected);
    expect(table.routes[0].matchesHost(host)).toBe(expected);
  });
});

describe('methods', () => {
  /** [route methods, request method, matches] */
  const cases: [string[] | undefined, string, boolean][] = [
    [undefined, 'GET', true],
    [undefined, 'DELETE', true],
    [undefined, 'PROPFIND', true],
    [['GET', 'POST'], 'GET', true],
    [['GET', 'POST'], 'post', true],
    [['GET', 'POST'], 'PUT', false],
    [['get'], 'GET', true],
    [['GET'], 'HEAD', true],
    [['GET'], 'head', true],
    [['POST'], 'HEAD', false],
    [['HEAD'], 'GET', false],
    [['DELETE'], 'DELETE', true],
  ];
  it.each(cases)('route methods %j vs %s → %s', (methods, method, expected) => {
    const table = compileRoutes([route('r', methods === undefined ? {} : { methods })]);
    expect(table.match({ host: undefined, method, path: '/x' }) !== undefined).toBe(expected);
    expect(table.routes[0].matchesMethod(method)).toBe(expected);
  });
});

describe('route table', () => {
  const table = compileRoutes([
    route('crm-admin', { path: '/admin/**', methods: ['GET', 'POST'] }, { access: { roles: ['admin'] }, mfa: true }),
    route('crm-static', { path: '/static/**' }),
    route('reports', { host: 'reports.example.com', path: '/**' }, { access: 'authenticated' }),
    route('wild', { host: '*.example.com', path: '/**' }, { access: 'authenticated' }),
    route('catch-all', { path: '/**' }, { access: 'deny' }),
  ]);
  const at = (host: string | undefined, method: string, path: string): string | undefined => table.match({ host, method, path })?.name;

  it('exposes the compiled routes in order', () => {
    expect(table.routes.map((r) => [r.index, r.name])).toEqual([
      [0, 'crm-admin'],
      [1, 'crm-static'],
      [2, 'reports'],
      [3, 'wild'],
      [4, 'catch-all'],
    ]);
    expect(table.routes[0].config.access).toEqual({ roles: ['admin'] });
  });

  it('the first match decides', () => {
    expect(at('reports.example.com', 'GET', '/admin/x')).toBe('crm-admin');
    expect(at('reports.example.com', 'GET', '/static/a.css')).toBe('crm-static');
    expect(at('reports.example.com', 'GET', '/report/1')).toBe('reports');
    expect(at('x.example.com', 'GET', '/report/1')).toBe('wild');
    expect(at('other.test', 'GET', '/report/1')).toBe('catch-all');
  });

  it('a method mismatch falls through to later routes', () => {
    expect(at(undefined, 'DELETE', '/admin/x')).toBe('catch-all');
    expect(at('reports.example.com', 'DELETE', '/admin/x')).toBe('reports');
    expect(at(undefined, 'HEAD', '/admin/x')).toBe('crm-admin');
  });

  it('returns undefined when nothing matches', () => {
    const t = compileRoutes([route('only', { path: '/api/**' })]);
    expect(t.match({ host: 'a', method: 'GET', path: '/' })).toBeUndefined();
    expect(compileRoutes([]).match({ host: 'a', method: 'GET', path: '/' })).toBeUndefined();
  });

  it('matchesPath reports the path check alone', () => {
    expect(table.routes[0].matchesPath('/admin')).toBe(true);
    expect(table.routes[0].matchesPath('/adminx')).toBe(false);
  });
});

describe('matching keys (SPEC §3.1)', () => {
  const at = (table: ReturnType<typeof compileRoutes>, path: string): string | undefined => table.match({ host: undefined, method: 'GET', path })?.name;

  it('folds case by default; match.case_sensitive compares the unfolded key', () => {
    const folded = compileRoutes([route('r', { path: '/Admin/**' })]);
    expect(folded.routes[0].pathPattern).toBe('/admin/**');
    for (const p of ['/Admin/x', '/admin/x', '/ADMIN/X', '/aDmIn']) expect(at(folded, p), p).toBe('r');
    const sensitive = compileRoutes([route('r', { path: '/Admin/**', case_sensitive: true })]);
    expect(sensitive.routes[0].pathPattern).toBe('/Admin/**');
    expect(at(sensitive, '/Admin/x')).toBe('r');
    expect(at(sensitive, '/admin/x')).toBeUndefined();
    expect(at(sensitive, '/ADMIN/x')).toBeUndefined();
  });

  it('case-sensitive routes still cut parameters and trim trailing dots and spaces', () => {
    const sensitive = compileRoutes([route('r', { path: '/Admin/**', case_sensitive: true })]);
    for (const p of ['/Admin./x', '/Admin%20/x', '/Admin;v=1/x', '/Admin%3Bv/x', '/Admin/', '/Admin.']) expect(at(sensitive, p), p).toBe('r');
    expect(at(sensitive, '/admin./x')).toBeUndefined();
  });

  it('trailing dots and spaces of each segment are ignored, on both sides', () => {
    const table = compileRoutes([route('internal', { path: '/internal/**' }), route('dotted', { path: '/files./a%20' })]);
    expect(table.routes[1].pathPattern).toBe('/files/a');
    for (const p of ['/internal./x', '/internal%20/x', '/internal.%20./x', '/internal...', '/internal/x./y%20', '/INTERNAL./']) {
      expect(at(table, p), p).toBe('internal');
    }
    for (const p of ['/files/a', '/files./a.', '/FILES/A/']) expect(at(table, p), p).toBe('dotted');
    // inner dots and leading dots are data
    expect(at(table, '/inter.nal/x')).toBeUndefined();
    expect(at(table, '/.internal/x')).toBeUndefined();
  });

  it('escapes are compared in one case too', () => {
    const table = compileRoutes([route('r', { path: '/caf%c3%a9' })]);
    expect(at(table, normalizePath('/CAF%C3%A9').path)).toBe('r');
    expect(at(table, normalizePath('/caf%c3%a9/').path)).toBe('r');
  });

  it('a disguised dot segment in the path throws bad_path instead of matching', () => {
    const table = compileRoutes([route('r')]);
    for (const p of ['/a/...', '/a/..%20/b', '/a/.%20', '/a/%20', '/a/...;x']) {
      let err: unknown;
      try {
        table.match({ host: undefined, method: 'GET', path: p });
      } catch (e) {
        err = e;
      }
      expect(err, p).toBeInstanceOf(GatewayError);
      expect((err as GatewayError).code, p).toBe('bad_path');
    }
  });

  it('uses the key given with the request, and matchesKey agrees with matchesPath', () => {
    const table = compileRoutes([route('admin', { path: '/admin/**' }), route('rest', { path: '/**' })]);
    expect(table.match({ host: undefined, method: 'GET', path: '/x', key: matchKey('/ADMIN./y') })?.name).toBe('admin');
    for (const p of ['/admin', '/Admin./x', '/admin;x', '/administrator', '/x/admin']) {
      expect(table.routes[0].matchesKey(matchKey(p)), p).toBe(table.routes[0].matchesPath(p));
    }
  });
});
