import { GatewayError, PolicyErrors, type ErrorDef } from '../errors/index.js';
import type { CompiledRoute } from './routes.js';

/** Who is asking, as established by a verified access token or session cookie. */
export interface Identity {
  /** User id (token `sub`). */
  readonly sub: string;
  readonly username: string;
  /** Role names; compared case-sensitively with the route's `access.roles`. */
  readonly roles: readonly string[];
  /** Authentication methods (token `amr`): `['pwd']` or `['pwd', 'otp']`. */
  readonly amr: readonly string[];
}

/** The outcome of authorizing one request; `decision` is also the metric label value. */
export interface Decision {
  readonly decision: 'allow' | 'unauthenticated' | 'forbidden' | 'mfa_required' | 'deny';
  /** A short human explanation, the same string for the log event and the explain output. */
  readonly reason: string;
}

const list = (xs: readonly string[]): string => `[${xs.join(', ')}]`;

/**
 * Decides whether `identity` (or an anonymous caller, `null`) may use `route`. Checks run in a
 * fixed order: `access: deny` → `deny` (everyone, anonymous included); `public` → `allow` (mfa
 * is not considered); no identity → `unauthenticated`; `{roles}` with none held → `forbidden`;
 * route `mfa: true` and no `otp` in `amr` → `mfa_required`; otherwise `allow`.
 */
export function decide(route: CompiledRoute, identity: Identity | null): Decision {
  const { access, mfa } = route.config;
  const name = route.name;
  if (access === 'deny') return { decision: 'deny', reason: `route "${name}" denies all access` };
  if (access === 'public') return { decision: 'allow', reason: `route "${name}" is public` };
  if (identity === null) {
    const need = access === 'authenticated' ? 'authentication' : `one of roles ${list(access.roles)}`;
    return { decision: 'unauthenticated', reason: `route "${name}" requires ${need}; request is not authenticated` };
  }
  if (access !== 'authenticated' && !access.roles.some((r) => identity.roles.includes(r))) {
    return {
      decision: 'forbidden',
      reason: `route "${name}" requires one of roles ${list(access.roles)}; user has ${list(identity.roles)}`,
    };
  }
  if (mfa && !identity.amr.includes('otp')) {
    return { decision: 'mfa_required', reason: `route "${name}" requires two-factor authentication; token amr is ${list(identity.amr)}` };
  }
  const why = access === 'authenticated' ? 'authenticated user' : `user has one of roles ${list(access.roles)}`;
  return { decision: 'allow', reason: `route "${name}": ${why}${mfa ? ' with two-factor authentication' : ''}` };
}

/**
 * The error a denying decision maps to (`deny` → `access_denied` 403, `unauthenticated` → 401,
 * `forbidden` → 403, `mfa_required` → 403); `undefined` for `allow`.
 */
export function decisionError(d: Decision): ErrorDef | undefined {
  switch (d.decision) {
    case 'allow':
      return undefined;
    case 'deny':
      return PolicyErrors.access_denied;
    case 'unauthenticated':
      return PolicyErrors.unauthenticated;
    case 'forbidden':
      return PolicyErrors.forbidden;
    case 'mfa_required':
      return PolicyErrors.mfa_required;
  }
}

/**
 * Throws `bad_path` (400) when the raw path had a literal `;` and the matched route does not set
 * `allow_semicolons`. Call it after matching, before authorizing. A path no route matches gets
 * 404, whatever it contains.
 */
export function assertSemicolonsAllowed(route: CompiledRoute, hasSemicolon: boolean): void {
  if (hasSemicolon && !route.config.allow_semicolons) {
    throw new GatewayError(PolicyErrors.bad_path, `";" in the path is not allowed on route "${route.name}" (set allow_semicolons: true to permit it)`);
  }
}
