import { randomUUID } from 'node:crypto';
import { SignJWT, errors as joseErrors, jwtVerify, type JWTPayload } from 'jose';
import { GatewayError, Errors } from '../errors/index.js';
import { SIGNING_ALG, type KeySet } from './keys.js';
import { VerifiedTokenCache } from './verified-cache.js';

/**
 * The `typ` header of each token kind. Every kind has its own value and every verification pins
 * it, so no kind is accepted where another is expected (an assertion handed to an upstream cannot
 * be replayed as an access token, and so on). `refresh` and `mfa` are reserved for those flows.
 */
export const TokenTypes = Object.freeze({
  /** RFC 9068 access token. */
  access: 'at+jwt',
  /** Signed identity assertion sent to upstreams (`X-Auth-Assertion`). */
  assertion: 'portcullis-assertion+jwt',
  /** Reserved (refresh tokens are opaque, never JWTs). */
  refresh: 'portcullis-refresh+jwt',
  /** The short-lived token between password and second factor. */
  mfa: 'portcullis-mfa+jwt',
} as const);

/** A token kind (key of {@link TokenTypes}). */
export type TokenKind = keyof typeof TokenTypes;

/** Lifetime of an MFA token, in seconds. */
export const MFA_TTL_SECONDS = 300;

/** Lifetime of an upstream assertion, in seconds. */
export const ASSERTION_TTL_SECONDS = 60;

/** Verified access-token claims (frozen; shared between cache hits). */
export interface AccessClaims {
  readonly iss: string;
  readonly aud: string;
  /** User id. */
  readonly sub: string;
  readonly jti: string;
  /** Issued at, seconds since the epoch. */
  readonly iat: number;
  /** Expiry, seconds since the epoch. */
  readonly exp: number;
  /** Session id. */
  readonly sid: string;
  readonly username: string;
  /** The user's email when the token carries one, else null. */
  readonly email: string | null;
  readonly roles: readonly string[];
  /** Authentication methods: `["pwd"]` or `["pwd","otp"]`. */
  readonly amr: readonly string[];
}

/** What goes into an access token. */
export interface AccessTokenInput {
  sub: string;
  sid: string;
  username: string;
  /** Optional; carried as the `email` claim (for the identity email header) when a string. */
  email?: string | null;
  roles: readonly string[];
  amr: readonly string[];
}

/** What goes into an upstream assertion. */
export interface AssertionInput {
  sub: string;
  username: string;
  email?: string | null;
  roles: readonly string[];
  /** Upstream name; becomes `aud`. */
  upstream: string;
}

/** Verified assertion claims. */
export interface AssertionClaims {
  readonly iss: string;
  /** The upstream name. */
  readonly aud: string;
  readonly sub: string;
  readonly jti: string;
  readonly iat: number;
  readonly exp: number;
  readonly username: string;
  readonly email: string | null;
  readonly roles: readonly string[];
}

/** {@link TokenService} options. */
export interface TokenServiceOptions {
  keySet: KeySet;
  /** `iss` of every token (the gateway's public URL). */
  issuer: string;
  /** `aud` of access tokens. */
  audience: string;
  /** Access-token lifetime in milliseconds (rounded up to whole seconds). */
  accessTtlMs: number;
  /**
   * Clock; tests inject one to move time.
   * @default () => new Date()
   */
  now?: () => Date;
  /**
   * Generates `jti` values.
   * @default crypto.randomUUID
   */
  randomId?: () => string;
  /**
   * How many verified access tokens to keep (0 disables the cache).
   * @default 10000
   */
  cacheMaxEntries?: number;
}

// Hard upper bound on what we even try to parse; real tokens are well under 2 KiB.
const MAX_TOKEN_LENGTH = 8192;

const isStringArray = (v: unknown): v is string[] => Array.isArray(v) && v.every((s) => typeof s === 'string');
const isNonEmptyString = (v: unknown): v is string => typeof v === 'string' && v !== '';

function invalid(reason: string, cause?: unknown): GatewayError {
  return new GatewayError(Errors.invalid_token, reason, cause === undefined ? {} : { cause });
}

/** Maps a jose failure to a short reason (the `detail` of the invalid_token error). */
function reasonFor(e: unknown): string {
  if (e instanceof joseErrors.JWTExpired) return 'token expired';
  if (e instanceof joseErrors.JWTClaimValidationFailed) {
    if (e.claim === 'nbf') return 'token not yet valid';
    if (e.reason === 'missing') return `missing ${e.claim}`;
    return `unexpected ${e.claim}`;
  }
  if (e instanceof joseErrors.JOSEAlgNotAllowed) return 'algorithm not allowed';
  if (e instanceof joseErrors.JWKSNoMatchingKey) return 'unknown signing key';
  if (e instanceof joseErrors.JWKSMultipleMatchingKeys) return 'ambiguous signing key';
  if (e instanceof joseErrors.JWSSignatureVerificationFailed) return 'bad signature';
  return 'malformed token';
}

/**
 * Signs and verifies the gateway's JWTs (EdDSA over the {@link KeySet}). Verification pins the
 * algorithm, `typ`, `iss`, `aud` and the key (by `kid`, from our own key set only), and uses the
 * injected clock. Verified access tokens are cached until `exp`; revocation is not checked here
 * and must be checked by the caller on every request.
 */
export class TokenService {
  private readonly keySet: KeySet;
  private readonly issuer: string;
  private readonly audience: string;
  private readonly accessTtlSec: number;
  private readonly now: () => Date;
  private readonly randomId: () => string;
  private readonly accessCache: VerifiedTokenCache<AccessClaims>;

  constructor(opts: TokenServiceOptions) {
    if (!isNonEmptyString(opts.issuer)) throw new TypeError('issuer is required');
    if (!isNonEmptyString(opts.audience)) throw new TypeError('audience is required');
    if (!Number.isFinite(opts.accessTtlMs) || opts.accessTtlMs < 1000) throw new RangeError('accessTtlMs must be at least 1000');
    this.keySet = opts.keySet;
    this.issuer = opts.issuer;
    this.audience = opts.audience;
    this.accessTtlSec = Math.ceil(opts.accessTtlMs / 1000);
    this.now = opts.now ?? (() => new Date());
    this.randomId = opts.randomId ?? randomUUID;
    this.accessCache = new VerifiedTokenCache(opts.cacheMaxEntries ?? 10_000);
  }

  /** Number of verified access tokens currently cached. */
  get cacheSize(): number {
    return this.accessCache.size;
  }

  /** Signs an access token (`typ: at+jwt`) valid for the configured access TTL. */
  async signAccess(input: AccessTokenInput): Promise<{ token: string; expiresIn: number; jti: string }> {
    if (!isNonEmptyString(input.sub) || !isNonEmptyString(input.sid) || typeof input.username !== 'string') {
      throw new TypeError('sub, sid and username are required');
    }
    if (!isStringArray(input.roles) || !isStringArray(input.amr)) throw new TypeError('roles and amr must be string arrays');
    const claims: Record<string, unknown> = { sid: input.sid, username: input.username, roles: [...input.roles], amr: [...input.amr] };
    if (typeof input.email === 'string') claims.email = input.email;
    const { token, jti } = await this.sign('access', claims, { sub: input.sub, audience: this.audience, ttlSec: this.accessTtlSec });
    return { token, expiresIn: this.accessTtlSec, jti };
  }

  /**
   * Verifies an access token. Repeat verifications of the same token string within its
   * lifetime are answered from a bounded cache (no signature check).
   *
   * @throws GatewayError `invalid_token` (detail: a short reason) on any failure
   */
  async verifyAccess(token: string): Promise<AccessClaims> {
    const nowSec = Math.floor(this.now().getTime() / 1000);
    if (typeof token === 'string') {
      const hit = this.accessCache.get(token, nowSec);
      if (hit !== undefined) return hit;
    }
    const payload = await this.verify('access', token, this.audience, ['sub', 'sid', 'jti', 'exp', 'iat']);
    const { sub, sid, jti, username, email, roles, amr } = payload;
    if (!isNonEmptyString(sub)) throw invalid('invalid sub');
    if (!isNonEmptyString(sid)) throw invalid('invalid sid');
    if (!isNonEmptyString(jti)) throw invalid('invalid jti');
    if (typeof username !== 'string') throw invalid('invalid username');
    if (email !== undefined && typeof email !== 'string') throw invalid('invalid email');
    if (!isStringArray(roles)) throw invalid('invalid roles');
    if (!isStringArray(amr)) throw invalid('invalid amr');
    const claims: AccessClaims = Object.freeze({
      iss: this.issuer,
      aud: this.audience,
      sub,
      jti,
      iat: payload.iat as number,
      exp: payload.exp as number,
      sid,
      username,
      email: email ?? null,
      roles: Object.freeze([...roles]),
      amr: Object.freeze([...amr]),
    });
    this.accessCache.set(token, claims, claims.exp, typeof payload.nbf === 'number' ? payload.nbf : undefined);
    return claims;
  }

  /** Signs a 60-second identity assertion for the named upstream (`aud` = upstream name). */
  async signAssertion(input: AssertionInput): Promise<string> {
    if (!isNonEmptyString(input.sub) || !isNonEmptyString(input.upstream) || typeof input.username !== 'string') {
      throw new TypeError('sub, username and upstream are required');
    }
    if (!isStringArray(input.roles)) throw new TypeError('roles must be a string array');
    const claims: Record<string, unknown> = { username: input.username, roles: [...input.roles] };
    if (typeof input.email === 'string') claims.email = input.email;
    const { token } = await this.sign('assertion', claims, { sub: input.sub, audience: input.upstream, ttlSec: ASSERTION_TTL_SECONDS });
    return token;
  }

  /**
   * Verifies an upstream assertion the way an upstream should (for tests and documentation).
   *
   * @throws GatewayError `invalid_token` on any failure
   */
  /**
   * The MFA token of SPEC §5: proves the password step, accepted only by `/2fa/verify`
   * (its own `typ` and audience), 5 minutes.
   */
  async signMfa(input: { sub: string; username: string }): Promise<{ token: string; expiresIn: number; jti: string }> {
    if (!isNonEmptyString(input.sub) || !isNonEmptyString(input.username)) throw new TypeError('sub and username are required');
    const t = await this.sign('mfa', { username: input.username }, { sub: input.sub, audience: `${this.audience}:mfa`, ttlSec: MFA_TTL_SECONDS });
    return { token: t.token, expiresIn: MFA_TTL_SECONDS, jti: t.jti };
  }

  /** Verifies an MFA token; any failure is `invalid_token`. */
  async verifyMfa(token: string): Promise<{ sub: string; username: string; jti: string; exp: number }> {
    const payload = await this.verify('mfa', token, `${this.audience}:mfa`, ['sub', 'jti', 'exp', 'iat']);
    const { sub, jti, username, exp } = payload;
    if (!isNonEmptyString(sub) || !isNonEmptyString(jti) || !isNonEmptyString(username)) throw invalid('invalid mfa token claims');
    return { sub, jti, username, exp: exp as number };
  }

  async verifyAssertion(token: string, upstream: string): Promise<AssertionClaims> {
    const payload = await this.verify('assertion', token, upstream, ['sub', 'jti', 'exp', 'iat']);
    const { sub, jti, username, email, roles } = payload;
    if (!isNonEmptyString(sub)) throw invalid('invalid sub');
    if (!isNonEmptyString(jti)) throw invalid('invalid jti');
    if (typeof username !== 'string') throw invalid('invalid username');
    if (email !== undefined && typeof email !== 'string') throw invalid('invalid email');
    if (!isStringArray(roles)) throw invalid('invalid roles');
    return Object.freeze({
      iss: this.issuer,
      aud: upstream,
      sub,
      jti,
      iat: payload.iat as number,
      exp: payload.exp as number,
      username,
      email: email ?? null,
      roles: Object.freeze([...roles]),
    });
  }

  /** Signs a token of the given kind with the active key. Shared by every token kind. */
  private async sign(
    kind: TokenKind,
    claims: Record<string, unknown>,
    opts: { sub: string; audience: string; ttlSec: number },
  ): Promise<{ token: string; jti: string; iat: number; exp: number }> {
    const key = this.keySet.active;
    const iat = Math.floor(this.now().getTime() / 1000);
    const exp = iat + opts.ttlSec;
    const jti = this.randomId();
    const payload: JWTPayload = { ...claims, iss: this.issuer, aud: opts.audience, sub: opts.sub, jti, iat, exp };
    const token = await new SignJWT(payload).setProtectedHeader({ alg: SIGNING_ALG, typ: TokenTypes[kind], kid: key.kid }).sign(key.privateKey);
    return { token, jti, iat, exp };
  }

  /**
   * Full verification of a token of the given kind: algorithm, `typ`, key by `kid` from our key
   * set, signature, `iss`, `aud`, `exp`/`nbf` against the injected clock, required claims.
   */
  private async verify(kind: TokenKind, token: string, audience: string, requiredClaims: string[]): Promise<JWTPayload> {
    if (typeof token !== 'string' || token.length === 0 || token.length > MAX_TOKEN_LENGTH) throw invalid('malformed token');
    try {
      const { payload } = await jwtVerify(token, this.keySet.resolveVerificationKey, {
        algorithms: [SIGNING_ALG],
        typ: TokenTypes[kind],
        issuer: this.issuer,
        audience,
        requiredClaims,
        currentDate: this.now(),
      });
      // We only ever issue a single string audience; an array is not one of ours.
      if (payload.aud !== audience) throw invalid('unexpected aud');
      return payload;
    } catch (e) {
      if (e instanceof GatewayError) throw e;
      throw invalid(reasonFor(e), e);
    }
  }
}
