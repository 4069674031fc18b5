import { beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { SignJWT, base64url, decodeJwt, decodeProtectedHeader, importJWK, type CryptoKey, type JWK, type JWTPayload } from 'jose';
import { type GatewayError, Errors, is } from '../errors/index.js';
import { generateSigningJwk, loadKeySet, type KeySet } from './keys.js';
import { TokenService, TokenTypes } from './token-service.js';

const ISS = 'https://gw.example.com';
const AUD = 'portcullis';
const T0 = new Date('2030-01-01T00:00:00Z');
const T0_SEC = T0.getTime() / 1000;
const TTL_MS = 15 * 60_000;

let jwkA: JWK; // active key
let jwkB: JWK; // older key, verify only
let attackerJwk: JWK;
let keySet: KeySet;
let privA: CryptoKey;
let privAttacker: CryptoKey;
let clock: Date;
let svc: TokenService;

const user = { sub: 'user-1', sid: 'session-1', username: 'alice', roles: ['user', 'billing'], amr: ['pwd'] };

function service(over: Partial<ConstructorParameters<typeof TokenService>[0]> = {}): TokenService {
  return new TokenService({ keySet, issuer: ISS, audience: AUD, accessTtlMs: TTL_MS, now: () => clock, ...over });
}

/** A payload that would be accepted if signed by our key with our header. */
function goodPayload(over: Record<string, unknown> = {}): JWTPayload {
  return {
    iss: ISS,
    aud: AUD,
    sub: 'user-1',
    sid: 'session-1',
    jti: 'jti-1',
    iat: T0_SEC,
    exp: T0_SEC + 900,
    username: 'alice',
    roles: ['user'],
    amr: ['pwd'],
    ...over,
  };
}

function forge(header: Record<string, unknown>, payload: JWTPayload, key: CryptoKey | Uint8Array): Promise<string> {
  return new SignJWT(payload).setProtectedHeader(header as { alg: string }).sign(key);
}

function ourHeader(over: Record<string, unknown> = {}): Record<string, unknown> {
  return { alg: 'EdDSA', typ: 'at+jwt', kid: jwkA.kid, ...over };
}

const b64json = (v: unknown): string => base64url.encode(JSON.stringify(v));

async function expectInvalid(p: Promise<unknown>, reason: string | RegExp): Promise<GatewayError> {
  const err = await p.then(
    () => {
      throw new Error('token was accepted');
    },
    (e: unknown) => e,
  );
  expect(is(err, Errors.invalid_token)).toBe(true);
  const ge = err as GatewayError;
  expect(ge.status).toBe(401);
  expect(ge.code).toBe('invalid_token');
  expect(ge.message).toMatch(reason);
  return ge;
}

beforeAll(async () => {
  jwkA = await generateSigningJwk();
  jwkB = await generateSigningJwk();
  attackerJwk = await generateSigningJwk();
  privA = (await importJWK(jwkA, 'EdDSA')) as CryptoKey;
  privAttacker = (await importJWK(attackerJwk, 'EdDSA')) as CryptoKey;
});

beforeEach(async () => {
  clock = T0;
  keySet = await loadKeySet({ keys: [jwkA, jwkB] });
  svc = service();
});

describe('access tokens: round trip', () => {
  it('signs the contract header and claims, and verifies them back', async () => {
    const { token, expiresIn, jti } = await svc.signAccess(user);
    expect(expiresIn).toBe(900);
    expect(decodeProtectedHeader(token)).toEqual({ alg: 'EdDSA', typ: 'at+jwt', kid: jwkA.kid });
    const raw = decodeJwt(token);
    expect(raw).toEqual({
      iss: ISS,
      aud: AUD,
      sub: 'user-1',
      jti,
      iat: T0_SEC,
      exp: T0_SEC + 900,
      sid: 'session-1',
      username: 'alice',
      roles: ['user', 'billing'],
      amr: ['pwd'],
    });

    const claims = await svc.verifyAccess(token);
    expect(claims).toEqual({ ...raw, email: null });
    expect(claims.jti).toBe(jti);
  });

  it('uses a fresh random jti per token', async () => {
    const a = await svc.signAccess(user);
    const b = await svc.signAccess(user);
    expect(a.jti).not.toBe(b.jti);
    expect(a.jti).toMatch(/^[0-9a-f-]{36}$/);
  });

  it('carries an optional email claim', async () => {
    const { token } = await svc.signAccess({ ...user, email: 'alice@example.com' });
    expect((await svc.verifyAccess(token)).email).toBe('alice@example.com');
  });

  it('rounds the TTL up to whole seconds', async () => {
    const s = service({ accessTtlMs: 1500 });
    const { token, expiresIn } = await s.signAccess(user);
    expect(expiresIn).toBe(2);
    expect(decodeJwt(token).exp).toBe(T0_SEC + 2);
  });

  it('an older key (second in the set) still verifies after rotation', async () => {
    const before = new TokenService({ keySet: await loadKeySet({ keys: [jwkB] }), issuer: ISS, audience: AUD, accessTtlMs: TTL_MS, now: () => clock });
    const { token } = await before.signAccess(user);
    expect(decodeProtectedHeader(token).kid).toBe(jwkB.kid);
    const claims = await svc.verifyAccess(token);
    expect(claims.sub).toBe('user-1');
    // New tokens are signed with the active (first) key.
    expect(decodeProtectedHeader((await svc.signAccess(user)).token).kid).toBe(jwkA.kid);
  });

  it('a retired key (removed from the set) no longer verifies', async () => {
    const { token } = await svc.signAccess(user);
    const after = service({ keySet: await loadKeySet({ keys: [jwkB] }) });
    await expectInvalid(after.verifyAccess(token), 'unknown signing key');
  });

  it('accepts a valid token until one second before exp, and not at exp', async () => {
    const { token } = await svc.signAccess(user);
    clock = new Date(T0.getTime() + TTL_MS - 1000);
    expect((await service().verifyAccess(token)).sub).toBe('user-1');
    clock = new Date(T0.getTime() + TTL_MS);
    await expectInvalid(service().verifyAccess(token), 'token expired');
  });
});

describe('access tokens: attacks, each answered with invalid_token', () => {
  it('alg: none (unsigned token)', async () => {
    const token = `${b64json({ alg: 'none', typ: 'at+jwt', kid: jwkA.kid })}.${b64json(goodPayload())}.`;
    await expectInvalid(svc.verifyAccess(token), 'algorithm not allowed');
    const noKid = `${b64json({ alg: 'none' })}.${b64json(goodPayload())}.`;
    await expectInvalid(svc.verifyAccess(noKid), /algorithm not allowed|malformed/);
  });

  it('HS256 signed with the public key bytes or the JWK x as the HMAC secret', async () => {
    const publicJwk = keySet.publicJwks().keys[0];
    const secrets = [base64url.decode(publicJwk.x!), new TextEncoder().encode(publicJwk.x!), new TextEncoder().encode(JSON.stringify(publicJwk))];
    for (const secret of secrets) {
      const token = await forge(ourHeader({ alg: 'HS256' }), goodPayload(), secret);
      await expectInvalid(svc.verifyAccess(token), 'algorithm not allowed');
    }
  });

  it('the fully-specified alg "Ed25519" is not accepted either (algorithm pinned to EdDSA)', async () => {
    const token = await forge(ourHeader({ alg: 'Ed25519' }), goodPayload(), privA);
    await expectInvalid(svc.verifyAccess(token), 'algorithm not allowed');
  });

  it('unknown kid', async () => {
    const token = await forge(ourHeader({ kid: attackerJwk.kid }), goodPayload(), privAttacker);
    await expectInvalid(svc.verifyAccess(token), 'unknown signing key');
  });

  it('no kid at all, even when signed by our own key', async () => {
    const token = await forge({ alg: 'EdDSA', typ: 'at+jwt' }, goodPayload(), privA);
    await expectInvalid(svc.verifyAccess(token), 'missing kid');
  });

  it('a different Ed25519 key presented under our kid', async () => {
    const token = await forge(ourHeader(), goodPayload(), privAttacker);
    await expectInvalid(svc.verifyAccess(token), 'bad signature');
  });

  it('wrong typ: plain JWT, none, and every other token kind', async () => {
    await expectInvalid(svc.verifyAccess(await forge(ourHeader({ typ: 'JWT' }), goodPayload(), privA)), 'unexpected typ');
    await expectInvalid(svc.verifyAccess(await forge(ourHeader({ typ: undefined }), goodPayload(), privA)), 'unexpected typ');
    for (const typ of [TokenTypes.assertion, TokenTypes.refresh, TokenTypes.mfa]) {
      await expectInvalid(svc.verifyAccess(await forge(ourHeader({ typ }), goodPayload(), privA)), 'unexpected typ');
    }
    // Our own forgery control: the same payload with the right typ is accepted.
    expect((await svc.verifyAccess(await forge(ourHeader(), goodPayload(), privA))).sub).toBe('user-1');
  });

  it('an upstream assertion replayed as an access token (even for an upstream named like the audience)', async () => {
    const assertion = await svc.signAssertion({ sub: 'user-1', username: 'alice', roles: ['admin'], upstream: AUD });
    await expectInvalid(svc.verifyAccess(assertion), 'unexpected typ');
  });

  it('wrong iss', async () => {
    const { token } = await service({ issuer: 'https://evil.example.com' }).signAccess(user);
    await expectInvalid(svc.verifyAccess(token), 'unexpected iss');
    await expectInvalid(svc.verifyAccess(await forge(ourHeader(), goodPayload({ iss: undefined }), privA)), 'missing iss');
  });

  it('wrong aud, and an aud array that merely contains ours', async () => {
    const { token } = await service({ audience: 'someone-else' }).signAccess(user);
    await expectInvalid(svc.verifyAccess(token), 'unexpected aud');
    const arr = await forge(ourHeader(), goodPayload({ aud: [AUD, 'other'] }), privA);
    await expectInvalid(svc.verifyAccess(arr), 'unexpected aud');
  });

  it('expired (clock moved past exp)', async () => {
    const { token } = await svc.signAccess(user);
    clock = new Date(T0.getTime() + TTL_MS + 60_000);
    await expectInvalid(svc.verifyAccess(token), 'token expired');
  });

  it('nbf in the future', async () => {
    const token = await forge(ourHeader(), goodPayload({ nbf: T0_SEC + 60 }), privA);
    await expectInvalid(svc.verifyAccess(token), 'token not yet valid');
    clock = new Date(T0.getTime() + 60_000);
    expect((await svc.verifyAccess(token)).sub).toBe('user-1');
  });

  it('tampered payload (roles raised) with the original signature, even after the original was cached', async () => {
    const { token } = await svc.signAccess(user);
    expect((await svc.verifyAccess(token)).roles).toEqual(['user', 'billing']);
    const [h, p, s] = token.split('.');
    const payload = JSON.parse(new TextDecoder().decode(base64url.decode(p))) as JWTPayload;
    payload.roles = ['admin'];
    const tampered = `${h}.${b64json(payload)}.${s}`;
    await expectInvalid(svc.verifyAccess(tampered), 'bad signature');
    // The failure is not cached in any way that changes the answer.
    await expectInvalid(svc.verifyAccess(tampered), 'bad signature');
  });

  it('missing or mistyped required claims, even when correctly signed', async () => {
    const cases: [Record<string, unknown>, string][] = [
      [{ sid: undefined }, 'missing sid'],
      [{ jti: undefined }, 'missing jti'],
      [{ sub: undefined }, 'missing sub'],
      [{ exp: undefined }, 'missing exp'],
      [{ iat: undefined }, 'missing iat'],
      [{ sid: 42 }, 'invalid sid'],
      [{ sub: '' }, 'invalid sub'],
      [{ username: 7 }, 'invalid username'],
      [{ username: undefined }, 'invalid username'],
      [{ roles: 'admin' }, 'invalid roles'],
      [{ roles: ['admin', 1] }, 'invalid roles'],
      [{ amr: [{ m: 'otp' }] }, 'invalid amr'],
      [{ email: ['a@b'] }, 'invalid email'],
    ];
    for (const [over, reason] of cases) {
      await expectInvalid(svc.verifyAccess(await forge(ourHeader(), goodPayload(over), privA)), reason);
    }
  });

  it('garbage, empty and oversized input', async () => {
    await expectInvalid(svc.verifyAccess('not-a-jwt'), 'malformed token');
    await expectInvalid(svc.verifyAccess(''), 'malformed token');
    await expectInvalid(svc.verifyAccess('a.b.c'), 'malformed token');
    await expectInvalid(svc.verifyAccess(`${b64json(ourHeader())}.${'A'.repeat(9000)}.x`), 'malformed token');
    await expectInvalid(svc.verifyAccess(undefined as unknown as string), 'malformed token');
  });
});

describe('access tokens: verified-token cache', () => {
  it('returns the same frozen claims without a second signature check', async () => {
    const resolve = vi.spyOn(keySet, 'resolveVerificationKey');
    const { token } = await svc.signAccess(user);
    const first = await svc.verifyAccess(token);
    const second = await svc.verifyAccess(token);
    expect(second).toBe(first);
    expect(resolve).toHaveBeenCalledTimes(1);
    expect(svc.cacheSize).toBe(1);
    expect(Object.isFrozen(first)).toBe(true);
    expect(() => (first.roles as string[]).push('admin')).toThrow(TypeError);
  });

  it('drops a cached entry at exp: the token then fails', async () => {
    const { token } = await svc.signAccess(user);
    await svc.verifyAccess(token);
    expect(svc.cacheSize).toBe(1);
    clock = new Date(T0.getTime() + TTL_MS - 1000);
    expect((await svc.verifyAccess(token)).sub).toBe('user-1');
    clock = new Date(T0.getTime() + TTL_MS);
    await expectInvalid(svc.verifyAccess(token), 'token expired');
    expect(svc.cacheSize).toBe(0);
  });

  it('does not serve a cached nbf token when the clock goes back before nbf', async () => {
    clock = new Date(T0.getTime() + 120_000);
    const token = await forge(ourHeader(), goodPayload({ nbf: T0_SEC + 60 }), privA);
    await svc.verifyAccess(token);
    clock = T0;
    await expectInvalid(svc.verifyAccess(token), 'token not yet valid');
  });

  it('stays bounded', async () => {
    const small = service({ cacheMaxEntries: 2 });
    const tokens = await Promise.all([1, 2, 3].map((i) => small.signAccess({ ...user, sid: `s${i}` })));
    for (const t of tokens) await small.verifyAccess(t.token);
    expect(small.cacheSize).toBe(2);
    // The evicted (oldest) token still verifies, through the full path.
    expect((await small.verifyAccess(tokens[0].token)).sid).toBe('s1');
    expect(small.cacheSize).toBe(2);
  });

  it('can be disabled', async () => {
    const none = service({ cacheMaxEntries: 0 });
    const { token } = await none.signAccess(user);
    await none.verifyAccess(token);
    expect(none.cacheSize).toBe(0);
  });
});

describe('upstream assertions', () => {
  it('signs a 60 s assertion for one upstream and verifies it', async () => {
    const token = await svc.signAssertion({ sub: 'user-1', username: 'alice', email: 'alice@example.com', roles: ['user'], upstream: 'crm' });
    expect(decodeProtectedHeader(token)).toEqual({ alg: 'EdDSA', typ: 'portcullis-assertion+jwt', kid: jwkA.kid });
    const claims = await svc.verifyAssertion(token, 'crm');
    expect(claims).toEqual({
      iss: ISS,
      aud: 'crm',
      sub: 'user-1',
      jti: expect.stringMatching(/^[0-9a-f-]{36}$/),
      iat: T0_SEC,
      exp: T0_SEC + 60,
      username: 'alice',
      email: 'alice@example.com',
      roles: ['user'],
    });
  });

  it('omits email when there is none', async () => {
    const token = await svc.signAssertion({ sub: 'user-1', username: 'alice', email: null, roles: [], upstream: 'crm' });
    expect(decodeJwt(token)).not.toHaveProperty('email');
    expect((await svc.verifyAssertion(token, 'crm')).email).toBeNull();
  });

  it('is rejected for another upstream, after 60 s, and an access token is not an assertion', async () => {
    const token = await svc.signAssertion({ sub: 'user-1', username: 'alice', roles: [], upstream: 'crm' });
    await expectInvalid(svc.verifyAssertion(token, 'reports'), 'unexpected aud');
    clock = new Date(T0.getTime() + 60_000);
    await expectInvalid(svc.verifyAssertion(token, 'crm'), 'token expired');
    clock = T0;
    const { token: access } = await svc.signAccess(user);
    await expectInvalid(svc.verifyAssertion(access, AUD), 'unexpected typ');
  });

  it('verifies with nothing but the published JWKS (what an upstream does)', async () => {
    const { createLocalJWKSet, jwtVerify } = await import('jose');
    const token = await svc.signAssertion({ sub: 'user-1', username: 'alice', roles: ['user'], upstream: 'crm' });
    const { payload } = await jwtVerify(token, createLocalJWKSet(keySet.publicJwks()), {
      algorithms: ['EdDSA'],
      typ: 'portcullis-assertion+jwt',
      issuer: ISS,
      audience: 'crm',
      currentDate: clock,
    });
    expect(payload.username).toBe('alice');
  });
});

describe('TokenService options', () => {
  it('rejects nonsense', () => {
    expect(() => service({ issuer: '' })).toThrow(/issuer/);
    expect(() => service({ audience: '' })).toThrow(/audience/);
    expect(() => service({ accessTtlMs: 0 })).toThrow(/accessTtlMs/);
  });

  it('distinct typ per token kind', () => {
    expect(new Set(Object.values(TokenTypes)).size).toBe(Object.keys(TokenTypes).length);
    expect(TokenTypes.access).toBe('at+jwt');
  });
});
