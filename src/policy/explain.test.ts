import type { RouteConfig } from '../config/schema.js';
import { describe, expect, it } from 'vitest';
import { compileRoutes, explain, formatExplain } from './index.js';
import { route } from './test-support.js';


const table = compileRoutes([
  route('crm-admin', { path: '/admin/**', methods: ['GET', 'POST'] }, { upstream: 'crm', access: { roles: ['admin'] }, mfa: true }),
  route('crm-public-assets', { path: '/static/**' }, { upstream: 'crm', access: 'public' }),
  route('reports', { host: 'reports.example.com', path: '/**' }, { upstream: 'reports', access: 'authenticated' }),
  route('legacy', { path: '/legacy/**' }, { upstream: 'crm', access: 'authenticated', allow_semicolons: true }),
  route('blocked', { path: '/internal/**' }, { access: 'deny', upstream: undefined }),
]);

describe('explain', () => {
  it('normalizes, lists the routes tried and decides for both callers', () => {
    const r = explain(table, { method: 'get', url: 'https://reports.example.com/public/../admin/users?x=1', roles: ['viewer'], mfa: false });
    expect(r.method).toBe('GET');
    expect(r.host).toBe('reports.example.com');
    expect(r.target).toBe('/public/../admin/users?x=1');
    expect(r.normalized).toEqual({ path: '/admin/users', query: 'x=1', hasSemicolon: false });
    expect(r.tried).toEqual([{ name: 'crm-admin', index: 0, matched: true, mismatches: [] }]);
    expect(r.route).toEqual({ name: 'crm-admin', index: 0, upstream: 'crm' });
    expect(r.anonymous).toEqual({
      outcome: 'unauthenticated',
      status: 401,
      reason: 'route "crm-admin" requires one of roles [admin]; request is not authenticated',
    });
    expect(r.identity).toEqual({
      roles: ['viewer'],
      amr: ['pwd'],
      verdict: { outcome: 'forbidden', status: 403, reason: 'route "crm-admin" requires one of roles [admin]; user has [viewer]' },
    });
  });

  it('says why each earlier route did not match', () => {
    const r = explain(table, { method: 'DELETE', url: 'https://reports.example.com/admin/x', roles: [], mfa: false });
    expect(r.tried).toEqual([
      { name: 'crm-admin', index: 0, matched: false, mismatches: ['method DELETE is not in [GET, POST]'] },
      { name: 'crm-public-assets', index: 1, matched: false, mismatches: ['path "/admin/x" does not match "/static/**"'] },
      { name: 'reports', index: 2, matched: true, mismatches: [] },
    ]);
    expect(r.identity.verdict).toEqual({ outcome: 'allow', status: 200, reason: 'route "reports": authenticated user' });
  });

  it('reports a host mismatch, and a bare path has no host', () => {
    const r = explain(table, { method: 'GET', url: '/reports/1', roles: [], mfa: false });
    expect(r.host).toBeUndefined();
    expect(r.tried[2]).toEqual({
      name: 'reports',
      index: 2,
      matched: false,
      mismatches: ['host (none) is not "reports.example.com"'],
    });
    expect(r.route).toBeUndefined();
    expect(r.anonymous).toEqual({ outcome: 'no_route', status: 404, reason: 'no route matches this request' });
    expect(r.identity.verdict).toEqual(r.anonymous);
    expect(r.tried).toHaveLength(5);
  });

  it('gives amr ["pwd","otp"] with mfa', () => {
    const r = explain(table, { method: 'POST', url: '/admin', roles: ['admin'], mfa: true });
    expect(r.identity.amr).toEqual(['pwd', 'otp']);
    expect(r.identity.verdict.outcome).toBe('allow');
    const noMfa = explain(table, { method: 'POST', url: '/admin', roles: ['admin'], mfa: false });
    expect(noMfa.identity.verdict).toEqual({
      outcome: 'mfa_required',
      status: 403,
      reason: 'route "crm-admin" requires two-factor authentication; token amr is [pwd]',
    });
  });

  it('reports deny for everyone', () => {
    const r = explain(table, { method: 'GET', url: '/internal/x', roles: ['admin'], mfa: true });
    expect(r.anonymous).toEqual({ outcome: 'deny', status: 403, reason: 'route "blocked" denies all access' });
    expect(r.identity.verdict).toEqual(r.anonymous);
  });

  it('reports a normalization rejection instead of throwing', () => {
    const r = explain(table, { method: 'GET', url: '/public/%2e%2e/admin', roles: [], mfa: false });
    expect(r.normalized).toBeUndefined();
    expect(r.tried).toEqual([]);
    expect(r.anonymous).toEqual({ outcome: 'bad_path', status: 400, reason: 'encoded dot segment "%2e%2e" in the path' });
    expect(r.identity.verdict).toEqual(r.anonymous);
  });

  it('rejects ";" unless the matched route allows it', () => {
    const r = explain(table, { method: 'GET', url: '/static/a;jsessionid=1', roles: [], mfa: false });
    expect(r.route?.name).toBe('crm-public-assets');
    expect(r.anonymous).toEqual({
      outcome: 'bad_path',
      status: 400,
      reason: '";" in the path is not allowed on route "crm-public-assets" (set allow_semicolons: true to permit it)',
    });
    const ok = explain(table, { method: 'GET', url: '/legacy/a;jsessionid=1', roles: [], mfa: false });
    expect(ok.normalized?.hasSemicolon).toBe(true);
    expect(ok.anonymous.outcome).toBe('unauthenticated');
    expect(ok.identity.verdict.outcome).toBe('allow');
  });

  it.each([
    ['ftp://example.com/x', 'unsupported URL scheme "ftp" (use http:// or https://)'],
    ['https:///x', 'the URL has no host'],
    ['admin/x', 'give an absolute http(s):// URL or a path starting with "/"'],
  ])('reports the bad URL %j', (url, reason) => {
    const r = explain(table, { method: 'GET', url, roles: [], mfa: false });
    expect(r.anonymous).toEqual({ outcome: 'bad_path', status: 400, reason });
  });

  it('parses absolute URLs without resolving the path, dropping userinfo, keeping the port', () => {
    const r = explain(table, { method: 'GET', url: 'https://u:p@Reports.Example.com:8443?x=1', roles: [], mfa: false });
    expect(r.host).toBe('Reports.Example.com:8443');
    expect(r.target).toBe('/?x=1');
    expect(r.route?.name).toBe('reports');
  });
});

describe('formatExplain', () => {
  it('renders a match', () => {
    const text = formatExplain(explain(table, { method: 'DELETE', url: 'https://reports.example.com//admin/./x?y=1', roles: ['ops'], mfa: true }));
    expect(text).toBe(
      [
        'request:    DELETE //admin/./x?y=1  (host reports.example.com)',
        'path:       /admin/x  (normalized from //admin/./x)',
        'query:      y=1  (not used for matching)',
        'routes tried:',
        '  #0 crm-admin: no match: method DELETE is not in [GET, POST]',
        '  #1 crm-public-assets: no match: path "/admin/x" does not match "/static/**"',
        '  #2 reports: MATCH',
        'route:      reports → upstream reports',
        'anonymous:  unauthenticated (401): route "reports" requires authentication; request is not authenticated',
        'signed in:  allow (forwarded): route "reports": authenticated user',
        '            (as a user with roles [ops], amr [pwd, otp])',
      ].join('\n'),
    );
  });

  it('renders a rejection and a miss', () => {
    expect(formatExplain(explain(table, { method: 'GET', url: '/a/../../b', roles: [], mfa: false }))).toBe(
      ['request:    GET /a/../../b', 'rejected:   bad_path (400): ".." climbs above the root of the path'].join('\n'),
    );
    const miss = formatExplain(explain(compileRoutes([]), { method: 'GET', url: '/x', roles: [], mfa: false }));
    expect(miss).toBe(['request:    GET /x', 'path:       /x', 'routes tried:', '  (no routes configured)', 'result:     no_route (404): no route matches this request'].join('\n'));
  });
});
