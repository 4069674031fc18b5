import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ERROR_DOCS_PAGE, Errors, GatewayError, errorAnchor, errorDef, is, unauthenticated } from './index.js';

/**
 * The whole registry, pinned: codes are public contract strings, and statuses and titles are
 * what clients see. A change here must be deliberate (and documented in docs/auth-api.md).
 */
const PINNED: Record<string, [number, string]> = {
  bad_request: [400, 'Malformed request'],
  bad_path: [400, 'Bad request path'],
  bad_framing: [400, 'Ambiguous message framing'],
  bad_host: [400, 'Invalid Host header'],
  too_many_headers: [431, 'Too many header fields'],
  method_not_allowed: [405, 'Method not allowed'],
  no_route: [404, 'Not found'],
  unauthenticated: [401, 'Authentication required'],
  invalid_token: [401, 'Invalid or expired token'],
  access_denied: [403, 'Access denied'],
  forbidden: [403, 'Forbidden'],
  mfa_required: [403, 'Multi-factor authentication required'],
  csrf: [403, 'Cross-site request refused'],
  upstream_unavailable: [502, 'Upstream unavailable'],
  upstream_timeout: [504, 'Upstream timed out'],
  unsupported_media_type: [415, 'Unsupported media type'],
  malformed_json: [400, 'Malformed JSON body'],
  body_too_large: [413, 'Request body too large'],
  invalid_input: [422, 'Invalid input'],
  invalid_credentials: [401, 'Invalid username or password'],
  wrong_password: [403, 'Current password is wrong'],
  weak_password: [422, 'Password rejected by policy'],
  invalid_refresh_token: [401, 'Invalid refresh token'],
  session_not_found: [404, 'Session not found'],
  invalid_mfa_code: [401, 'Invalid code'],
  mfa_not_set_up: [409, 'Two-factor authentication is not set up'],
  mfa_already_enabled: [409, 'Two-factor authentication is already on'],
  user_exists: [409, 'User already exists'],
  account_locked: [423, 'Account temporarily locked'],
  rate_limited: [429, 'Too many requests'],
  busy: [503, 'Too busy; try again shortly'],
  service_unavailable: [503, 'Service temporarily unavailable'],
  internal_error: [500, 'Internal error'],
  invalid_config: [500, 'Invalid configuration'],
  missing_keys: [500, 'Signing or encryption keys missing'],
};

/** Codes SPEC names outright (§3): they must always exist, with these statuses. */
const SPEC_CODES: Record<string, number> = { mfa_required: 403, csrf: 403 };

const docs = readFileSync(new URL(`../../${ERROR_DOCS_PAGE}`, import.meta.url), 'utf8');

/** The rows of the "Error codes" table: anchor, code, status. */
function documentedCodes(): { anchor: string; code: string; status: number }[] {
  const section = docs.slice(docs.indexOf('\n## Error codes'));
  const end = section.indexOf('\n## ', 1);
  const rows = (end === -1 ? section : section.slice(0, end)).split('\n').filter((l) => l.startsWith('| <a id='));
  return rows.map((l) => {
    const m = /^\| <a id="([a-z0-9-]+)"><\/a>`([a-z_]+)` \| (\d{3}) \|/.exec(l);
    if (!m) throw new Error(`malformed row in the table of codes: ${l}`);
    return { anchor: m[1], code: m[2], status: Number(m[3]) };
  });
}

describe('the error registry', () => {
  it('is exactly the pinned table (code → status, title)', () => {
    expect(Object.fromEntries(Object.values(Errors).map((d) => [d.code, [d.status, d.title]]))).toEqual(PINNED);
  });

  it('keys every definition by its own code, frozen', () => {
    for (const [key, def] of Object.entries(Errors)) {
      expect(def.code).toBe(key);
      expect(def.code).toMatch(/^[a-z]+(?:_[a-z]+)*$/);
      expect(Object.isFrozen(def)).toBe(true);
    }
    expect(Object.isFrozen(Errors)).toBe(true);
  });

  it('keeps every code SPEC names', () => {
    for (const [code, status] of Object.entries(SPEC_CODES)) expect(errorDef(code)?.status, code).toBe(status);
  });

  it('names a docs anchor for every code in docs/auth-api.md', () => {
    for (const def of Object.values(Errors)) expect(def.docs).toBe(`docs/auth-api.md#${errorAnchor(def.code)}`);
  });

  it('docs/auth-api.md documents every code, under the anchor the registry names, with its status', () => {
    const rows = documentedCodes();
    expect(rows.map((r) => r.code).sort()).toEqual(Object.keys(Errors).sort());
    for (const r of rows) {
      const def = errorDef(r.code)!;
      expect(`${ERROR_DOCS_PAGE}#${r.anchor}`, r.code).toBe(def.docs);
      expect(r.status, r.code).toBe(def.status);
    }
  });

  it('errorDef finds registered codes only', () => {
    expect(errorDef('csrf')).toBe(Errors.csrf);
    expect(errorDef('constructor')).toBeUndefined();
    expect(errorDef('payload_too_large')).toBeUndefined();
  });
});

describe('GatewayError and is()', () => {
  it('refuses a definition that is not the registry row itself (an inline or spread copy)', () => {
    expect(() => new GatewayError({ ...Errors.bad_request, code: 'made_up_inline' } as typeof Errors.bad_request)).toThrow(TypeError);
    expect(() => new GatewayError({ ...Errors.bad_request } as typeof Errors.bad_request)).toThrow(/unregistered/);
    expect(new GatewayError(Errors.bad_request).code).toBe('bad_request');
  });

  it('carries its definition, and is() branches on identity', () => {
    const e = new GatewayError(Errors.account_locked, 'Try again in 60 s.', { headers: { 'retry-after': '60' } });
    expect(e).toMatchObject({
      code: 'account_locked',
      status: 423,
      title: 'Account temporarily locked',
      message: 'Try again in 60 s.',
      def: Errors.account_locked,
    });
    expect(is(e, Errors.account_locked)).toBe(true);
    // Same status, another error: identity, not the number, decides.
    expect(is(new GatewayError(Errors.busy), Errors.service_unavailable)).toBe(false);
    expect(is(new Error('account_locked'), Errors.account_locked)).toBe(false);
    expect(is(undefined, Errors.account_locked)).toBe(false);
  });

  it("withHeaders adds headers under the error's own", () => {
    const e = new GatewayError(Errors.rate_limited, 'slow down', { headers: { 'retry-after': '5' }, extra: { a: 1 } }).withHeaders({
      'retry-after': '1',
      hsts: 'x',
    });
    expect(e).toMatchObject({ code: 'rate_limited', message: 'slow down', headers: { 'retry-after': '5', hsts: 'x' }, extra: { a: 1 } });
  });

  it('unauthenticated() carries the RFC 6750 challenge', () => {
    expect(unauthenticated(false)).toMatchObject({ code: 'unauthenticated', headers: { 'www-authenticate': 'Bearer realm="portcullis"' } });
    expect(unauthenticated(true, 'expired')).toMatchObject({
      code: 'invalid_token',
      message: 'expired',
      headers: { 'www-authenticate': 'Bearer realm="portcullis", error="invalid_token"' },
    });
  });
});
