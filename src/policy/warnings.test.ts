import { describe, expect, it } from 'vitest';
import { compileRoutes, methodFallthroughWarnings } from './index.js';
import { loadConfig } from '../config/index.js';
import { route } from '../../test/support/routes.js';

describe('methodFallthroughWarnings', () => {
  it('warns when unlisted methods of a role route fall through to a weaker catch-all (the shipped demo-admin bug)', () => {
    const table = compileRoutes([
      route('admin', { path: '/admin/**', methods: ['GET', 'HEAD', 'POST'] }, { access: { roles: ['admin'] } }),
      route('app', { path: '/**' }, { access: 'authenticated' }),
    ]);
    const w = methodFallthroughWarnings(table);
    expect(w).toHaveLength(1);
    expect(w[0].path).toEqual(['routes', 0, 'match', 'methods']);
    expect(w[0].message).toContain('PUT, PATCH, DELETE, OPTIONS /admin/x fall through to route "app" (authenticated)');
  });

  it('does not warn when the fall-through route is as strict (deny, same roles) or nothing catches the method', () => {
    expect(
      methodFallthroughWarnings(
        compileRoutes([
          route('read', { path: '/docs/**', methods: ['GET'] }, { access: { roles: ['viewer'] } }),
          route('write-deny', { path: '/docs/**' }, { access: 'deny', upstream: undefined }),
        ]),
      ),
    ).toEqual([]);
    expect(
      methodFallthroughWarnings(
        compileRoutes([
          route('read', { path: '/docs/**', methods: ['GET'] }, { access: { roles: ['viewer', 'editor'] } }),
          route('write', { path: '/docs/**' }, { access: { roles: ['editor'] } }),
        ]),
      ),
    ).toEqual([]);
    expect(methodFallthroughWarnings(compileRoutes([route('read', { path: '/docs/**', methods: ['GET'] }, { access: 'authenticated' })]))).toEqual([]);
  });

  it('warns on other roles, on a lost second factor, and per host', () => {
    const w = methodFallthroughWarnings(
      compileRoutes([
        route('ops', { host: 'ops.example.com', path: '/api/*', methods: ['POST'] }, { access: { roles: ['ops'] }, mfa: true }),
        route('other-host', { host: 'www.example.com', path: '/**' }, { access: 'public' }),
        route('ops-read', { path: '/api/**' }, { access: { roles: ['ops'] } }),
      ]),
    );
    expect(w).toHaveLength(1);
    expect(w[0].message).toContain('fall through to route "ops-read" (roles [ops])');
  });

  it('finds nothing to warn about in the shipped config', () => {
    const c = loadConfig('config/gateway.yaml', {}, []);
    expect(methodFallthroughWarnings(compileRoutes(c.routes))).toEqual([]);
  });
});
