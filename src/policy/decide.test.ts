import { describe, expect, it } from 'vitest';
import type { RouteConfig } from '../config/schema.js';
import { GatewayError } from '../errors/index.js';
import { assertSemicolonsAllowed, compileRoutes, decide, decisionError, type Decision, type Identity } from './index.js';
import { route } from './test-support.js';


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
    [
      'authenticated, anonymous',
      { access: 'authenticated' },
      null,
      'unauthenticated',
      'route "r" requires authentication; request is not authenticated',
    ],
    ['authenticated, user without roles', { access: 'authenticated' }, user([]), 'allow', 'route "r": authenticated user'],
    [
      'roles, anonymous',
      { access: { roles: ['admin'] } },
      null,
      'unauthenticated',
      'route "r" requires one of roles [admin]; request is not authenticated',
    ],
    [
      'roles, missing role',
      { access: { roles: ['admin'] } },
      user(['viewer']),
      'forbidden',
      'route "r" requires one of roles [admin]; user has [viewer]',
    ],
    [
      'roles, no roles at all',
      { access: { roles: ['admin', 'ops'] } },
      user([]),
      'forbidden',
      'route "r" requires one of roles [admin, ops]; user has []',
    ],
    [
      'roles are case-sensitive',
      { access: { roles: ['admin'] } },
      user(['Admin']),
      'forbidden',
      'route "r" requires one of roles [admin]; user has [Admin]',
    ],
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
    ['mfa, authenticated, otp present', { access: 'authenticated', mfa: true }, user([], ['otp']), 'allow', 'route "r": authenticated user with two-factor authentication'],
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

describe('assertSemicolonsAllowed', () => {
  it('rejects ";" on a route without allow_semicolons', () => {
    const r = compiled('plain', {});
    expect(() => assertSemicolonsAllowed(r, true)).toThrow(GatewayError);
    try {
      assertSemicolonsAllowed(r, true);
    } catch (e) {
      expect((e as GatewayError).code).toBe('bad_path');
      expect((e as GatewayError).status).toBe(400);
      expect((e as GatewayError).message).toBe('";" in the path is not allowed on route "plain" (set allow_semicolons: true to permit it)');
    }
  });

  it('accepts ";" when the route allows it, and paths without ";" anywhere', () => {
    expect(assertSemicolonsAllowed(compiled('semi', { allow_semicolons: true }), true)).toBeUndefined();
    expect(assertSemicolonsAllowed(compiled('plain', {}), false)).toBeUndefined();
  });
});
