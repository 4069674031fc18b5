import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { AuthErrors, GatewayError, PolicyErrors } from '../errors/index.js';
import type { Database, RevocationList, SessionRecord, UserRecord } from '../store/ports.js';
import type { Metrics } from '../metrics/index.js';
import type { TokenService } from '../tokens/index.js';
import type { PasswordHasher } from './password.js';
import type { PasswordPolicy } from './policy.js';
import { validateUsername } from './username.js';

/** What a completed sign-in returns (SPEC §4). */
export interface TokenResponse {
  access_token: string;
  token_type: 'Bearer';
  expires_in: number;
  session_id: string;
}

export interface AuthServiceDeps {
  db: Database;
  tokens: TokenService;
  hasher: PasswordHasher;
  policy: PasswordPolicy;
  revocations: RevocationList;
  metrics: Metrics;
  log: Logger;
  now: () => Date;
  sessionMaxAgeMs: number;
}

/** The identity a verified access token carries. */
export interface TokenIdentity {
  sub: string;
  sid: string;
  username: string;
  roles: readonly string[];
  amr: readonly string[];
  email: string | null;
}

/**
 * Runs a dependency call; anything that is not already a GatewayError means the database or
 * state store failed, and auth endpoints then fail closed with 503.
 */
export async function dependency<T>(fn: () => Promise<T>, log?: Logger): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    if (e instanceof GatewayError) throw e;
    log?.error({ err: (e as Error).message }, 'dependency failure');
    throw new GatewayError(AuthErrors.service_unavailable, 'A backing service is unavailable; try again shortly.', { headers: { 'retry-after': '2' }, cause: e });
  }
}

/** Checks a JSON body's field types; throws 422 listing every bad field. */
export function requireStrings<K extends string>(body: unknown, fields: readonly K[]): Record<K, string> {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new GatewayError(AuthErrors.invalid_input, 'The body must be a JSON object.', { extra: { errors: fields.map((f) => ({ field: f, message: 'required' })) } });
  }
  const errors: { field: string; message: string }[] = [];
  const out = {} as Record<K, string>;
  for (const f of fields) {
    const v = (body as Record<string, unknown>)[f];
    if (v === undefined || v === null) errors.push({ field: f, message: 'required' });
    else if (typeof v !== 'string') errors.push({ field: f, message: 'must be a string' });
    else out[f] = v;
  }
  if (errors.length) throw new GatewayError(AuthErrors.invalid_input, `Invalid fields: ${errors.map((e) => e.field).join(', ')}.`, { extra: { errors } });
  return out;
}

/** Sign-in, session and account flows shared by the HTTP API and the CLI. */
export class AuthService {
  constructor(private readonly d: AuthServiceDeps) {}

  /**
   * Password sign-in. Unknown, disabled and wrong-password outcomes are indistinguishable
   * from outside: same error, and each runs exactly one argon2 verification.
   */
  async login(body: unknown, ctx: { ip: string | null; userAgent: string | null }): Promise<TokenResponse> {
    const { d } = this;
    let fields: Record<'username' | 'password', string>;
    let username: string;
    try {
      fields = requireStrings(body, ['username', 'password'] as const);
      username = validateUsername(fields.username);
    } catch (e) {
      d.metrics.loginAttempts.inc({ result: 'invalid_input' });
      throw e;
    }
    const user = await dependency(() => d.db.users.findByUsername(username), d.log);
    let ok: boolean;
    if (!user) {
      await d.hasher.dummyVerify(fields.password);
      ok = false;
    } else {
      ok = await d.hasher.verify(user.passwordHash, fields.password);
    }
    if (!user || !ok || user.disabled) {
      const cause = !user ? 'unknown_user' : user.disabled ? 'user_disabled' : 'wrong_password';
      d.metrics.loginAttempts.inc({ result: 'invalid_credentials' });
      d.log.info({ event: 'login_failure', username, reason: cause, ip: ctx.ip }, 'login failed');
      throw new GatewayError(AuthErrors.invalid_credentials, 'The username or password is wrong.');
    }
    if (d.hasher.needsRehash(user.passwordHash)) {
      const passwordHash = await d.hasher.hash(fields.password);
      await dependency(() => d.db.users.update(user.id, { passwordHash }), d.log);
      d.log.info({ event: 'password_rehashed', user_id: user.id }, 'password hash upgraded');
    }
    const result = await this.startSession(user, ['pwd'], ctx);
    d.metrics.loginAttempts.inc({ result: 'success' });
    d.log.info({ event: 'login_success', username, user_id: user.id, session_id: result.session_id, ip: ctx.ip }, 'login succeeded');
    return result;
  }

  /** Creates a session and its first access token. */
  async startSession(user: UserRecord, amr: string[], ctx: { ip: string | null; userAgent: string | null }): Promise<TokenResponse> {
    const { d } = this;
    const now = d.now();
    const session = await dependency(
      () =>
        d.db.sessions.create({
          id: randomBytes(16).toString('base64url'),
          userId: user.id,
          amr,
          createdAt: now,
          expiresAt: new Date(now.getTime() + d.sessionMaxAgeMs),
          userAgent: ctx.userAgent?.slice(0, 256) ?? null,
          ip: ctx.ip,
        }),
      d.log,
    );
    return this.issue(user, session);
  }

  private async issue(user: UserRecord, session: SessionRecord): Promise<TokenResponse> {
    const access = await this.d.tokens.signAccess({ sub: user.id, sid: session.id, username: user.username, email: user.email, roles: user.roles, amr: session.amr });
    return { access_token: access.token, token_type: 'Bearer', expires_in: access.expiresIn, session_id: session.id };
  }

  /**
   * Verifies a bearer token for the auth API. Unlike the hot path, this also reads the user,
   * so `/me` always shows current data.
   */
  async authenticate(token: string): Promise<{ identity: TokenIdentity; user: UserRecord }> {
    const identity = await this.verify(token);
    const user = await dependency(() => this.d.db.users.findById(identity.sub), this.d.log);
    if (!user || user.disabled) throw new GatewayError(PolicyErrors.invalid_token, 'The account is no longer active.');
    return { identity, user };
  }

  /** Local verification: signature, claims and the revocation list. No I/O. */
  async verify(token: string): Promise<TokenIdentity> {
    const c = await this.d.tokens.verifyAccess(token);
    if (this.d.revocations.isRevoked(c.sid)) throw new GatewayError(PolicyErrors.invalid_token, 'The session has been revoked.');
    return { sub: c.sub, sid: c.sid, username: c.username, roles: c.roles, amr: c.amr, email: c.email ?? null };
  }

  /** Revokes one session everywhere (durably, then in the local list). */
  async revokeSession(sessionId: string, reason: string): Promise<boolean> {
    const { d } = this;
    const session = await dependency(() => d.db.sessions.get(sessionId), d.log);
    if (!session) return false;
    const changed = await dependency(() => d.db.sessions.revoke(sessionId, reason, d.now()), d.log);
    d.revocations.add(sessionId, session.expiresAt);
    if (changed) d.log.info({ event: 'session_revoked', session_id: sessionId, user_id: session.userId, reason }, 'session revoked');
    return changed;
  }
}
