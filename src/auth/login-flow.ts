import { createHash, randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { Errors, GatewayError, is } from '../errors/index.js';
import type { Database, RevocationList, SessionRecord, UserRecord } from '../store/ports.js';
import type { Metrics } from '../metrics/index.js';
import type { TokenService } from '../tokens/index.js';
import type { PasswordHasher } from './password.js';
import type { PasswordPolicy } from './policy.js';
import { validateUsername } from './username.js';
import type { Lockout } from './lockout.js';

/** What a completed sign-in returns (SPEC §4). */
export interface TokenResponse {
  access_token: string;
  refresh_token: string;
  token_type: 'Bearer';
  expires_in: number;
  /** Seconds until the refresh token expires (for the refresh cookie's Max-Age). */
  refresh_expires_in: number;
  session_id: string;
}

/** A session as `GET /sessions` shows it. */
export interface SessionView {
  id: string;
  current: boolean;
  amr: string[];
  created_at: string;
  last_seen_at: string;
  expires_at: string;
  user_agent: string | null;
  ip: string | null;
}

/**
 * How long a spent refresh token still buys a new *access* token on the silent-refresh path
 * (never on `POST /refresh`): a browser that fires several requests the moment its access
 * cookie expires presents the same refresh cookie on each, possibly to different replicas.
 */
export const SILENT_REFRESH_GRACE_MS = 10_000;

const REFRESH_PREFIX = 'prt_';

/** SHA-256 of a refresh token: high-entropy secrets need no slow hash, and lookups stay indexed. */
export function hashRefreshToken(token: string): string {
  return createHash('sha256').update(token).digest('base64url');
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
  refreshTtlMs: number;
  lockout: Lockout;
}

/** A login answer: a completed sign-in, or the MFA step (SPEC §4). */
export type LoginResult = TokenResponse | { mfa_required: true; mfa_token: string; expires_in: number };

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
 * state store failed, and auth endpoints then fail closed with 503. Not logged here: the
 * responder's one line for the 503 carries `event: dependency_failure` and the failure's
 * message and stack (its cause).
 */
export async function dependency<T>(fn: () => Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  // A hung dependency (accepting connections, answering nothing) must not hold a sign-in past
  // the 2 s promise: give up at 1.5 s and answer 503.
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`dependency did not answer within ${DEPENDENCY_TIMEOUT_MS} ms`)), DEPENDENCY_TIMEOUT_MS);
  });
  try {
    return await Promise.race([fn(), deadline]);
  } catch (e) {
    if (e instanceof GatewayError) throw e;
    throw new GatewayError(Errors.service_unavailable, 'A backing service is unavailable; try again shortly.', {
      headers: { 'retry-after': '2' },
      cause: e,
      log: { event: 'dependency_failure' },
    });
  } finally {
    clearTimeout(timer);
  }
}

/** How long one database or state-store call may take before sign-in answers 503. */
export const DEPENDENCY_TIMEOUT_MS = 1500;

/** After this long, a spend without a successor token is known to have been abandoned. */
const UNFINISHED_SPEND_MS = 3000;

/** Checks a JSON body's field types; throws 422 listing every bad field. */
export function requireStrings<K extends string>(body: unknown, fields: readonly K[]): Record<K, string> {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new GatewayError(Errors.invalid_input, 'The body must be a JSON object.', {
      extra: { errors: fields.map((f) => ({ field: f, message: 'required' })) },
    });
  }
  const errors: { field: string; message: string }[] = [];
  const out = {} as Record<K, string>;
  for (const f of fields) {
    const v = (body as Record<string, unknown>)[f];
    if (v === undefined || v === null) errors.push({ field: f, message: 'required' });
    else if (typeof v !== 'string') errors.push({ field: f, message: 'must be a string' });
    else out[f] = v;
  }
  if (errors.length) throw new GatewayError(Errors.invalid_input, `Invalid fields: ${errors.map((e) => e.field).join(', ')}.`, { extra: { errors } });
  return out;
}

/** Sign-in, session and account flows shared by the HTTP API and the CLI. */
export class AuthService {
  constructor(private readonly d: AuthServiceDeps) {}

  /**
   * Password sign-in. Unknown, disabled and wrong-password outcomes are indistinguishable
   * from outside: same error, and each runs exactly one argon2 verification.
   */
  async login(body: unknown, ctx: { ip: string | null; userAgent: string | null }): Promise<LoginResult> {
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
    let release: () => Promise<void>;
    try {
      // One guess per username at a time (see Lockout.acquire), then the lock check.
      release = await dependency(() => d.lockout.acquire(username));
    } catch (e) {
      if (is(e, Errors.account_locked)) {
        d.metrics.loginAttempts.inc({ result: 'locked' });
        d.log.info({ event: 'login_failure', username, reason: 'locked', ip: ctx.ip }, 'login refused: username locked');
      } else if (is(e, Errors.rate_limited)) {
        d.metrics.loginAttempts.inc({ result: 'rate_limited' });
      }
      throw e;
    }
    let user: Awaited<ReturnType<typeof d.db.users.findByUsername>>;
    try {
      user = await dependency(() => d.db.users.findByUsername(username));
      // A full argon2 queue throws 503 `busy` from either call below: no verdict, so nothing
      // is counted toward the lockout, and the turn is released (finally) all the same.
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
        await dependency(() => d.lockout.fail(username, ctx.ip));
        throw new GatewayError(Errors.invalid_credentials, 'The username or password is wrong.');
      }
      // With 2FA on, the password alone is not a success: the count resets only once the code
      // is right (otherwise a password holder could guess codes forever, 4 at a time).
      if (!user.mfaEnabled) await dependency(() => d.lockout.succeed(username));
    } finally {
      await release();
    }
    if (d.hasher.needsRehash(user.passwordHash)) {
      // Best effort: with the argon2 queue full (503 busy), the sign-in still succeeds and the
      // upgrade waits for the next one.
      const passwordHash = await d.hasher.hash(fields.password).catch((e: unknown) => {
        if (is(e, Errors.busy)) return undefined;
        throw e;
      });
      if (passwordHash) {
        await dependency(() => d.db.users.update(user.id, { passwordHash }));
        d.log.info({ event: 'password_rehashed', user_id: user.id }, 'password hash upgraded');
      }
    }
    if (user.mfaEnabled) {
      const mfa = await d.tokens.signMfa({ sub: user.id, username: user.username });
      d.metrics.loginAttempts.inc({ result: 'mfa_required' });
      d.log.info({ event: 'login_mfa_required', username, user_id: user.id, ip: ctx.ip }, 'password accepted; second factor required');
      return { mfa_required: true, mfa_token: mfa.token, expires_in: mfa.expiresIn };
    }
    return this.completeLogin(user, ['pwd'], ctx);
  }

  /** Starts the session of a fully authenticated sign-in (password, or password and code). */
  async completeLogin(user: UserRecord, amr: string[], ctx: { ip: string | null; userAgent: string | null }): Promise<TokenResponse> {
    const result = await this.startSession(user, amr, ctx);
    this.d.metrics.loginAttempts.inc({ result: 'success' });
    this.d.log.info({ event: 'login_success', username: user.username, user_id: user.id, session_id: result.session_id, amr, ip: ctx.ip }, 'login succeeded');
    return result;
  }

  /** Creates a session and its first access token. */
  async startSession(user: UserRecord, amr: string[], ctx: { ip: string | null; userAgent: string | null }): Promise<TokenResponse> {
    const { d } = this;
    const now = d.now();
    const session = await dependency(() =>
      d.db.sessions.create({
        id: randomBytes(16).toString('base64url'),
        userId: user.id,
        amr,
        createdAt: now,
        expiresAt: new Date(now.getTime() + d.sessionMaxAgeMs),
        userAgent: ctx.userAgent?.slice(0, 256) ?? null,
        ip: ctx.ip,
      }),
    );
    return this.issue(user, session);
  }

  private async issue(user: UserRecord, session: SessionRecord): Promise<TokenResponse> {
    const { d } = this;
    const now = d.now();
    const refresh = REFRESH_PREFIX + randomBytes(32).toString('base64url');
    // A refresh token never outlives its session's absolute lifetime.
    const expiresAt = new Date(Math.min(now.getTime() + d.refreshTtlMs, session.expiresAt.getTime()));
    await dependency(() => d.db.refreshTokens.create({ hash: hashRefreshToken(refresh), sessionId: session.id, createdAt: now, expiresAt }));
    const access = await this.signFor(user, session);
    return {
      access_token: access.token,
      refresh_token: refresh,
      token_type: 'Bearer',
      expires_in: access.expiresIn,
      refresh_expires_in: Math.max(0, Math.floor((expiresAt.getTime() - now.getTime()) / 1000)),
      session_id: session.id,
    };
  }

  private signFor(user: UserRecord, session: SessionRecord) {
    return this.d.tokens.signAccess({ sub: user.id, sid: session.id, username: user.username, email: user.email, roles: user.roles, amr: session.amr });
  }

  private readonly inflight = new Map<string, Promise<RefreshOutcome>>();

  /**
   * `POST /refresh`: spends a refresh token and returns a new pair. A token spent before is
   * reuse: the whole session is revoked (every token of it refused from then on).
   */
  async refresh(token: unknown): Promise<TokenResponse> {
    const out = await this.spend(token, false);
    if (out.kind !== 'pair') throw new GatewayError(Errors.invalid_refresh_token, 'The refresh token is invalid.');
    return out.tokens;
  }

  /**
   * The silent refresh a browser gets on a proxied request. Concurrent calls with the same
   * cookie in this process share one rotation; a token spent within SILENT_REFRESH_GRACE_MS
   * (by a sibling request, perhaps on another replica) yields an access token only.
   */
  silentRefresh(token: string): Promise<RefreshOutcome> {
    const key = hashRefreshToken(token);
    const running = this.inflight.get(key);
    if (running) return running;
    // Shared only while running: later siblings go through the grace path, which re-checks
    // the session (a cached result could outlive a logout).
    const p = this.spend(token, true).finally(() => this.inflight.delete(key));
    this.inflight.set(key, p);
    return p;
  }

  private async spend(token: unknown, silent: boolean): Promise<RefreshOutcome> {
    const { d } = this;
    const invalid = (reason: string): RefreshOutcome => {
      d.metrics.tokenRefresh.inc({ result: 'invalid' });
      d.log.info({ event: 'refresh_failure', reason }, 'refresh refused');
      return { kind: 'invalid', reason };
    };
    // Only our opaque refresh tokens: an access or MFA token (a JWT) is not one.
    if (typeof token !== 'string' || !token.startsWith(REFRESH_PREFIX) || token.length > 200) return invalid('not a refresh token');
    const now = d.now();
    const used = await dependency(() => d.db.refreshTokens.use(hashRefreshToken(token), now));
    if (used.status === 'unknown') return invalid('unknown refresh token');
    const session = await dependency(() => d.db.sessions.get(used.record.sessionId));
    if (used.status === 'reused') {
      // A token that was already dead at its first use (expired, or its session over) bought
      // nothing: retrying it is a confused client, not theft.
      const firstUse = used.record.usedAt!;
      if (used.record.expiresAt <= firstUse || !session || (session.revokedAt !== null && session.revokedAt <= firstUse) || session.expiresAt <= firstUse) {
        return invalid('refresh token no longer valid');
      }
      const withinGrace = silent && used.record.usedAt !== null && now.getTime() - used.record.usedAt.getTime() <= SILENT_REFRESH_GRACE_MS;
      if (withinGrace && session && !session.revokedAt && session.expiresAt > now) {
        const user = await dependency(() => d.db.users.findById(session.userId));
        if (user && !user.disabled) {
          const access = await this.signFor(user, session);
          d.metrics.tokenRefresh.inc({ result: 'success' });
          return { kind: 'access', access: access.token, expiresIn: access.expiresIn, identity: identityOf(user, session) };
        }
      }
      // A spend that never issued a successor (the database stalled after marking the token
      // used, and the client got a 503) gave nobody a new token: the retry is not theft. Only
      // once the first spend must be over (past the dependency deadline): concurrent
      // presentations stay strict, since the winner's successor may not be written yet.
      const settled = now.getTime() - firstUse.getTime() >= UNFINISHED_SPEND_MS;
      const completed = !settled || (await dependency(() => d.db.refreshTokens.hasSuccessor(used.record.sessionId, firstUse)));
      if (!completed && session && !session.revokedAt && session.expiresAt > now) {
        const user = await dependency(() => d.db.users.findById(session.userId));
        if (user && !user.disabled) {
          d.log.info({ event: 'refresh_retry', session_id: session.id }, 'refresh retried after an unfinished spend');
          await dependency(() => d.db.sessions.touch(session.id, now));
          const tokens = await this.issue(user, session);
          d.metrics.tokenRefresh.inc({ result: 'success' });
          return { kind: 'pair', tokens, identity: identityOf(user, session) };
        }
      }
      d.metrics.tokenRefresh.inc({ result: 'reuse_detected' });
      d.log.warn(
        { event: 'refresh_reuse_detected', session_id: used.record.sessionId, user_id: session?.userId ?? null },
        'a spent refresh token was presented: session revoked',
      );
      if (session) await this.revokeSession(session.id, 'refresh_reuse');
      return { kind: 'invalid', reason: 'refresh token reuse' };
    }
    if (used.record.expiresAt <= now) return invalid('refresh token expired');
    if (!session || session.revokedAt || session.expiresAt <= now) return invalid('session ended');
    const user = await dependency(() => d.db.users.findById(session.userId));
    if (!user || user.disabled) {
      await this.revokeSession(session.id, 'user_disabled');
      return invalid('account disabled');
    }
    await dependency(() => d.db.sessions.touch(session.id, now));
    const tokens = await this.issue(user, session);
    d.metrics.tokenRefresh.inc({ result: 'success' });
    return { kind: 'pair', tokens, identity: identityOf(user, session) };
  }

  /** The caller's active sessions, newest first. */
  async listSessions(userId: string, currentSid: string): Promise<SessionView[]> {
    const list = await dependency(() => this.d.db.sessions.listActive(userId, this.d.now()));
    return list.map((s) => ({
      id: s.id,
      current: s.id === currentSid,
      amr: s.amr,
      created_at: s.createdAt.toISOString(),
      last_seen_at: s.lastSeenAt.toISOString(),
      expires_at: s.expiresAt.toISOString(),
      user_agent: s.userAgent,
      ip: s.ip,
    }));
  }

  /** Revokes one of the caller's own sessions; another user's session id is "not found". */
  async revokeOwnSession(userId: string, sessionId: string): Promise<void> {
    const s = await dependency(() => this.d.db.sessions.get(sessionId));
    if (!s || s.userId !== userId || s.revokedAt) throw new GatewayError(Errors.session_not_found, 'No such active session.');
    await this.revokeSession(sessionId, 'revoked_by_user');
  }

  /**
   * Password change: checks the current password and the policy, then ends every other session.
   * The confirmation is a password guess like a sign-in (SPEC §4): refused with 423 while the
   * username is locked (even when right), and a wrong one counts toward the same lockout.
   */
  async changePassword(user: UserRecord, currentSid: string, body: unknown, ip: string | null = null): Promise<void> {
    const { d } = this;
    const f = requireStrings(body, ['current_password', 'new_password'] as const);
    const release = await dependency(() => d.lockout.acquire(user.username));
    try {
      if (!(await d.hasher.verify(user.passwordHash, f.current_password))) {
        d.log.info({ event: 'password_change_failure', user_id: user.id, username: user.username, ip }, 'wrong current password');
        await dependency(() => d.lockout.fail(user.username, ip));
        throw new GatewayError(Errors.wrong_password, 'The current password is wrong.');
      }
      // As at sign-in: with 2FA on, a right password alone does not reset the count.
      if (!user.mfaEnabled) await dependency(() => d.lockout.succeed(user.username));
    } finally {
      await release();
    }
    d.policy.assert(f.new_password, { username: user.username, email: user.email });
    const passwordHash = await d.hasher.hash(f.new_password);
    await dependency(() => d.db.users.update(user.id, { passwordHash }));
    await this.revokeUserSessions(user.id, 'password_changed', currentSid);
    d.log.info({ event: 'password_changed', user_id: user.id }, 'password changed');
  }

  /** Revokes every session of a user (except one), durably and in the local list. */
  async revokeUserSessions(userId: string, reason: string, exceptSid?: string): Promise<string[]> {
    const { d } = this;
    const now = d.now();
    const ids = await dependency(() => d.db.sessions.revokeAllForUser(userId, reason, now, exceptSid));
    // The absolute max age bounds every session's expiry, so it is a safe retention time.
    const until = new Date(now.getTime() + d.sessionMaxAgeMs);
    for (const id of ids) {
      d.revocations.add(id, until);
      await dependency(() => d.db.refreshTokens.deleteForSession(id));
      d.log.info({ event: 'session_revoked', session_id: id, user_id: userId, reason }, 'session revoked');
    }
    return ids;
  }

  /** The current user record behind a verified identity; a deleted or disabled account is 401. */
  async currentUser(identity: TokenIdentity): Promise<UserRecord> {
    const user = await dependency(() => this.d.db.users.findById(identity.sub));
    if (!user || user.disabled) throw new GatewayError(Errors.invalid_token, 'The account is no longer active.');
    return user;
  }

  /** Local verification: signature, claims and the revocation list. No I/O. */
  async verify(token: string): Promise<TokenIdentity> {
    const c = await this.d.tokens.verifyAccess(token);
    if (this.d.revocations.isRevoked(c.sid)) throw new GatewayError(Errors.invalid_token, 'The session has been revoked.');
    // Hot path: verified claims are cached per token, so is the identity made from them (one
    // object per token, which later stages may key their own caches on).
    let id = this.identities.get(c);
    if (id === undefined) {
      id = Object.freeze({ sub: c.sub, sid: c.sid, username: c.username, roles: c.roles, amr: c.amr, email: c.email ?? null });
      this.identities.set(c, id);
    }
    return id;
  }

  /** The identity of each verified claims object (claims objects are cached per token). */
  private readonly identities = new WeakMap<object, TokenIdentity>();

  /** Revokes one session everywhere (durably, then in the local list). */
  async revokeSession(sessionId: string, reason: string): Promise<boolean> {
    const { d } = this;
    const session = await dependency(() => d.db.sessions.get(sessionId));
    if (!session) return false;
    const changed = await dependency(() => d.db.sessions.revoke(sessionId, reason, d.now()));
    d.revocations.add(sessionId, session.expiresAt);
    await dependency(() => d.db.refreshTokens.deleteForSession(sessionId));
    if (changed) d.log.info({ event: 'session_revoked', session_id: sessionId, user_id: session.userId, reason }, 'session revoked');
    return changed;
  }
}

/** Result of spending a refresh token. */
export type RefreshOutcome =
  | { kind: 'pair'; tokens: TokenResponse; identity: TokenIdentity }
  | { kind: 'access'; access: string; expiresIn: number; identity: TokenIdentity }
  | { kind: 'invalid'; reason: string };

function identityOf(user: UserRecord, session: SessionRecord): TokenIdentity {
  return { sub: user.id, sid: session.id, username: user.username, roles: user.roles, amr: session.amr, email: user.email };
}
