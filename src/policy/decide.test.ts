import { describe, expect, it } from 'vitest';
import type { RouteConfig } from '../config/schema.js';
import {
  compileRoutes,
  decide,
  decisionError,
  isVerdict,
  policyContext,
  resolveRequest,
  type Decision,
  type Identity,
  type Resolved,
  type Verdict,
} from './index.js';
import { route } from '../../test/support/routes.js';

function compiled(name: string, rest: Partial<Omit<RouteConfig, 'name' | 'match'>>) {
  return compileRoutes([route(name, { path: '/**' }, rest)]).routes[0];
}

const user = (roles: string[], amr: string[] = ['pwd']): Identity => ({ sub: 'u1', username: 'alice', roles, amr });

describe('decide', () => {
  /** [case, route settings, identity, decision, reason] */
  const cases: [string, Partial<Omit<RouteConfig, 'name' | 'match'>>, Identity | null, Decision['decision'], string][] = [
    ['deny, anonymous', { access: 'deny' }, null, 'deny', 'route "r" denies all access'],
    ['deny, even an admin with otp', { access: 'deny' }, user(['admin'], ['pwd', 'otp']), 'deny', 'route "r" denies all access'],
    ['public, anonymous', { access: 'public' }, null, 'allow', 'route "r" is public'],
    ['public, signed in', { access: 'public' }, user([]), 'allow', 'route "r" is public'],
    ['public ignores mfa', { access: 'public', mfa: true }, null, 'allow', 'route "r" is public'],
    ['authenticated, anonymous', { access: 'authenticated' }, null, 'unauthenticated', 'route "r" requires authentication; request is not authenticated'],
    ['authenticated, user without roles', { access: 'authenticated' }, user([]), 'allow', 'route "r": authenticated user'],
    ['roles, anonymous', { access: { roles: ['admin'] } }, null, 'unauthenticated', 'route "r" requires one of roles [admin]; request is not authenticated'],
    ['roles, missing role', { access: { roles: ['admin'] } }, user(['viewer']), 'forbidden', 'route "r" requires one of roles [admin]; user has [viewer]'],
    ['roles, no roles at all', { access: { roles: ['admin', 'ops'] } }, user([]), 'forbidden', 'route "r" requires one of roles [admin, ops]; user has []'],
    ['roles are case-sensitive', { access: { roles: ['admin'] } }, user(['Admin']), 'forbidden', 'route "r" requires one of roles [admin]; user has [Admin]'],
    ['roles, any one of them', { access: { roles: ['admin', 'ops'] } }, user(['viewer', 'ops']), 'allow', 'route "r": user has one of roles [admin, ops]'],
    [
      'forbidden comes before mfa_required',
      { access: { roles: ['admin'] }, mfa: true },
      user(['viewer']),
      'forbidden',
      'route "r" requires one of roles [admin]; user has [viewer]',
    ],
    [
      'mfa, role held, no otp',
      { access: { roles: ['admin'] }, mfa: true },
      user(['admin'], ['pwd']),
      'mfa_required',
      'route "r" requires two-factor authentication; token amr is [pwd]',
    ],
    [
      'mfa, authenticated, no otp',
      { access: 'authenticated', mfa: true },
      user([], []),
      'mfa_required',
      'route "r" requires two-factor authentication; token amr is []',
    ],
    ['mfa, anonymous', { access: 'authenticated', mfa: true }, null, 'unauthenticated', 'route "r" requires authentication; request is not authenticated'],
    [
      'mfa, otp present',
      { access: { roles: ['admin'] }, mfa: true },
      user(['admin'], ['pwd', 'otp']),
      'allow',
      'route "r": user has one of roles [admin] with two-factor authentication',
    ],
    [
      'mfa, authenticated, otp present',
      { access: 'authenticated', mfa: true },
      user([], ['otp']),
      'allow',
      'route "r": authenticated user with two-factor authentication',
    ],
  ];

  it.each(cases)('%s', (_, settings, identity, decision, reason) => {
    expect(decide(compiled('r', settings), identity)).toEqual({ decision, reason });
  });

  it('uses the route name in the reason', () => {
    expect(decide(compiled('crm-admin', { access: { roles: ['admin'] } }), user(['viewer'])).reason).toBe(
      'route "crm-admin" requires one of roles [admin]; user has [viewer]',
    );
  });
});

describe('decisionError', () => {
  it.each([
    ['allow', undefined, undefined],
    ['deny', 'access_denied', 403],
    ['unauthenticated', 'unauthenticated', 401],
    ['forbidden', 'forbidden', 403],
    ['mfa_required', 'mfa_required', 403],
  ] as const)('%s → %s %s', (decision, code, status) => {
    const def = decisionError({ decision, reason: 'x' });
    expect(def?.code).toBe(code);
    expect(def?.status).toBe(status);
  });
});

// assertSemicolonsAllowed is gone: the semicolon rule now lives in resolveRequest (matchRequest),
// so the same checks go through it, for a literal ";" and for "%3B" alike.
describe('semicolons (through resolveRequest)', () => {
  const ctx = policyContext(
    compileRoutes([route('plain', { path: '/plain/**' }), route('semi', { path: '/semi/**' }, { allow_semicolons: true })]),
    { upstreams: {}, auth: { prefix: '/api/auth', allowed_origins: [] } },
    'https://gw.example.com',
  );
  const resolve = (target: string) => resolveRequest(ctx, { method: 'GET', target, host: 'gw.example.com' });

  it.each(['/plain/a;x', '/plain;jsessionid=1/a', '/plain/a%3Bx', '/plain/a%3bx', '/plain/a;'])('rejects %j on a route without allow_semicolons', (target) => {
    const r = resolve(target);
    expect(isVerdict(r)).toBe(true);
    const v = r as Verdict;
    expect(v.decision).toBe('bad_request');
    expect(v.code).toBe('bad_path');
    expect(v.status).toBe(400);
    expect(v.reason).toBe('";" in the path is not allowed on route "plain" (set allow_semicolons: true to permit it)');
    expect(v.route?.name).toBe('plain');
  });

  it.each(['/semi/a;x', '/semi;jsessionid=1/a', '/semi/a%3Bx', '/semi/a%3bx'])('accepts %j when the route allows it', (target) => {
    const r = resolve(target);
    expect(isVerdict(r)).toBe(false);
    expect((r as Resolved).route.name).toBe('semi');
    expect((r as Resolved).normalized.hasSemicolon).toBe(true);
  });

  it('accepts paths without ";" anywhere', () => {
    const r = resolve('/plain/a');
    expect(isVerdict(r)).toBe(false);
    expect((r as Resolved).route.name).toBe('plain');
    expect((r as Resolved).normalized.hasSemicolon).toBe(false);
  });

  it('with no matching route, ";" is still a bad path (400), not a miss (404)', () => {
    for (const target of ['/nowhere;x', '/nowhere%3Bx']) {
      const v = resolve(target) as Verdict;
      expect(isVerdict(v), target).toBe(true);
      expect(v, target).toMatchObject({ decision: 'bad_request', code: 'bad_path', status: 400, route: null });
    }
    expect(resolve('/nowhere')).toMatchObject({ decision: 'no_route', code: 'no_route', status: 404, route: null });
  });
});
