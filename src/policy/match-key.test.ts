import { describe, expect, it } from 'vitest';
import { GatewayError } from '../errors/index.js';
import { matchKey, normalizePath } from './index.js';

/** [normalized path, sensitive key, folded key] */
const keys: [string, string, string][] = [
  ['/', '/', '/'],
  ['/admin', '/admin', '/admin'],
  ['/a/b/c', '/a/b/c', '/a/b/c'],
  // case: only `folded` is lower-cased
  ['/Admin/Users', '/Admin/Users', '/admin/users'],
  ['/ADMIN', '/ADMIN', '/admin'],
  ['/caf%C3%A9', '/caf%C3%A9', '/caf%c3%a9'],
  // trailing slash and empty segments are dropped
  ['/admin/', '/admin', '/admin'],
  ['/a//b', '/a/b', '/a/b'],
  ['/a/b//', '/a/b', '/a/b'],
  // path parameters are cut from each segment, literal or %3B
  ['/admin;jsessionid=1', '/admin', '/admin'],
  ['/admin;x/users;y=2', '/admin/users', '/admin/users'],
  ['/admin;', '/admin', '/admin'],
  ['/admin%3Bx/users', '/admin/users', '/admin/users'],
  ['/admin%3bx', '/admin', '/admin'],
  ['/;x/admin', '/admin', '/admin'],
  ['/a/%3B', '/a', '/a'],
  // trailing dots and spaces of each segment
  ['/admin./users', '/admin/users', '/admin/users'],
  ['/admin.../users', '/admin/users', '/admin/users'],
  ['/admin%20/users', '/admin/users', '/admin/users'],
  ['/admin%20%20', '/admin', '/admin'],
  ['/admin.%20./x', '/admin/x', '/admin/x'],
  ['/Admin.;x/', '/Admin', '/admin'],
  ['/admin;x./', '/admin', '/admin'],
  ['/admin%20;x', '/admin', '/admin'],
  ['/data.json.', '/data.json', '/data.json'],
  // inner and leading dots, inner spaces, other escapes are data
  ['/a.b/c', '/a.b/c', '/a.b/c'],
  ['/.well-known/x', '/.well-known/x', '/.well-known/x'],
  ['/..a/b', '/..a/b', '/..a/b'],
  // Escapes of printable ASCII are decoded in the key (Tomcat and Spring decode before routing).
  ['/a%20b', '/a b', '/a b'],
  ['/a%2Bb', '/a+b', '/a+b'],
  ['/%20a', '/ a', '/ a'],
  ['/%40admin/x', '/@admin/x', '/@admin/x'],
  ['/api/users%3Apurge', '/api/users:purge', '/api/users:purge'],
];

describe('matchKey', () => {
  it.each(keys)('%j → %j / %j', (path, sensitive, folded) => {
    expect(matchKey(path)).toEqual({ sensitive, folded });
  });

  it('cuts parameters segment by segment, not the rest of the path', () => {
    expect(matchKey('/admin;a/b;c/')).toEqual({ sensitive: '/admin/b', folded: '/admin/b' });
  });

  it.each(['/...', '/a/...', '/a/..%20', '/a/.%20', '/a/%20', '/a/%20%20/b', '/a/...;x', '/a/.%20.%3Bx', '/a/..;x'])(
    'refuses the disguised dot segment in %j (400 bad_path)',
    (path) => {
      let err: unknown;
      try {
        matchKey(path);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(GatewayError);
      expect((err as GatewayError).code).toBe('bad_path');
      expect((err as GatewayError).status).toBe(400);
      expect((err as GatewayError).message).toMatch(/made only of dots and spaces/);
    },
  );

  it('the fast path and the full derivation agree', () => {
    // `/x/` and `/x` have the same key; a plain path is its own key.
    for (const p of ['/a', '/a/b', '/a-b_c/d~e', "/!$&'()*+,=:@", '/a.b', '/A/B']) {
      expect(matchKey(p).sensitive, p).toBe(p);
      expect(matchKey(`${p}/`), p).toEqual(matchKey(p));
      expect(matchKey(`${p}.`), p).toEqual(matchKey(p));
      expect(matchKey(`${p};x`), p).toEqual(matchKey(p));
    }
  });

  it('is idempotent, and the key of a key is itself', () => {
    for (const [path] of keys) {
      const k = matchKey(path);
      expect(matchKey(k.sensitive), path).toEqual(k);
      expect(matchKey(k.folded).sensitive, path).toBe(k.folded);
    }
  });

  it('works on normalizePath output (escaped dots are decoded before trimming)', () => {
    expect(matchKey(normalizePath('/admin%2e/x').path).sensitive).toBe('/admin/x');
    expect(matchKey(normalizePath('/admin%2E%2e/x').path).sensitive).toBe('/admin/x');
    expect(matchKey(normalizePath('/%61dmin%3b/x/').path).sensitive).toBe('/admin/x');
  });
});

describe('matchKey: Windows spellings no pattern could anticipate are refused', () => {
  it.each(['/app/a.json::$DATA', '/admin::$INDEX_ALLOCATION/x', '/admin:$i30:$INDEX_ALLOCATION/x', '/admin::$DATA::$DATA/x', '/ADMINI~1/x', '/PROGRA~12.TXT'])(
    '%s → 400',
    (p) => {
      expect(() => matchKey(p)).toThrow(/NTFS stream|8\.3 short/);
    },
  );
  it('keeps colons and tildes that are no such thing', () => {
    expect(matchKey('/v1/users:purge').sensitive).toBe('/v1/users:purge');
    expect(matchKey('/~alice/notes').sensitive).toBe('/~alice/notes');
    expect(matchKey('/files/report~final.txt').sensitive).toBe('/files/report~final.txt');
  });
});
