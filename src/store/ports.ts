/**
 * Storage ports. `app.ts` picks the implementations (SQLite or PostgreSQL through kysely for
 * the durable data; in-process or Redis for the shared state). Everything else sees only these.
 */

/** A user as stored. */
export interface UserRecord {
  id: string;
  /** Lower-case username (usernames are case-insensitive). */
  username: string;
  email: string | null;
  roles: string[];
  passwordHash: string;
  disabled: boolean;
  mfaEnabled: boolean;
  /** Encrypted TOTP secret (ciphertext with key id), null when 2FA is off. */
  totpSecret: string | null;
  createdAt: Date;
  updatedAt: Date;
}

export interface NewUser {
  username: string;
  email: string | null;
  roles: string[];
  passwordHash: string;
}

export type UserPatch = Partial<Pick<UserRecord, 'email' | 'roles' | 'passwordHash' | 'disabled' | 'mfaEnabled' | 'totpSecret'>>;

/** Durable user records. Throws GatewayError `user_exists` on a duplicate username. */
export interface UserStore {
  create(user: NewUser): Promise<UserRecord>;
  findByUsername(username: string): Promise<UserRecord | undefined>;
  findById(id: string): Promise<UserRecord | undefined>;
  list(): Promise<UserRecord[]>;
  /** Returns the updated record, or undefined when there is no such user. */
  update(id: string, patch: UserPatch): Promise<UserRecord | undefined>;
  /** Returns true when a user was deleted. Deleting a user deletes its sessions. */
  delete(id: string): Promise<boolean>;
  count(): Promise<number>;
}

/** A sign-in session; access tokens carry its id as `sid`. */
export interface SessionRecord {
  id: string;
  userId: string;
  /** Authentication methods used (`pwd`, `otp`). */
  amr: string[];
  createdAt: Date;
  /** Absolute end of the session, whatever refreshes happen. */
  expiresAt: Date;
  lastSeenAt: Date;
  revokedAt: Date | null;
  revokedReason: string | null;
  userAgent: string | null;
  ip: string | null;
}

export type NewSession = Pick<SessionRecord, 'id' | 'userId' | 'amr' | 'createdAt' | 'expiresAt' | 'userAgent' | 'ip'>;

/** A revoked session, as the revocation list needs it. */
export interface Revocation {
  sessionId: string;
  /** When the revocation can be forgotten (the session's absolute expiry). */
  expiresAt: Date;
  revokedAt: Date;
}

/** Durable sessions. */
export interface SessionStore {
  create(session: NewSession): Promise<SessionRecord>;
  get(id: string): Promise<SessionRecord | undefined>;
  /** Active (not revoked, not expired at `now`) sessions of a user, newest first. */
  listActive(userId: string, now: Date): Promise<SessionRecord[]>;
  /** Marks a session revoked; returns false when it did not exist or was already revoked. */
  revoke(id: string, reason: string, at: Date): Promise<boolean>;
  /** Revokes every active session of a user except `exceptId`; returns the revoked ids. */
  revokeAllForUser(userId: string, reason: string, at: Date, exceptId?: string): Promise<string[]>;
  /** Revocations made at or after `since` whose session has not expired at `now` (for the local revocation list). */
  revokedSince(since: Date, now: Date): Promise<Revocation[]>;
  /** Deletes sessions that expired before `before`; returns how many. */
  purgeExpired(before: Date): Promise<number>;
  /** Sets `lastSeenAt` (on refresh); returns false when there is no such session. */
  touch(id: string, at: Date): Promise<boolean>;
}

/** A refresh token as stored: only its SHA-256 hash, never the token. */
export interface RefreshTokenRecord {
  /** base64url SHA-256 of the token string; the primary key. */
  hash: string;
  sessionId: string;
  createdAt: Date;
  expiresAt: Date;
  /** When it was spent (single use); null while unused. */
  usedAt: Date | null;
}

/** Outcome of spending a refresh token. */
export type RefreshUse =
  /** It was unused; it is now marked used at `at`. Exactly one concurrent caller gets this. */
  | { status: 'ok'; record: RefreshTokenRecord }
  /** It had been spent before (`record.usedAt` is the first use): reuse. */
  | { status: 'reused'; record: RefreshTokenRecord }
  | { status: 'unknown' };

/** Server-side refresh tokens: single use, bound to a session. */
export interface RefreshTokenStore {
  create(token: Omit<RefreshTokenRecord, 'usedAt'>): Promise<void>;
  /** Atomically spends a token (see RefreshUse). Does not look at expiry: the caller does. */
  use(hash: string, at: Date): Promise<RefreshUse>;
  /** True when the session got a refresh token at or after `since` (a spend that completed). */
  hasSuccessor(sessionId: string, since: Date): Promise<boolean>;
  /** Deletes every refresh token of a session; returns how many. */
  deleteForSession(sessionId: string): Promise<number>;
  /** Deletes tokens that expired before `before`; returns how many. */
  purgeExpired(before: Date): Promise<number>;
}

/** Hashed single-use 2FA recovery codes. */
export interface RecoveryCodeStore {
  /** Replaces all of a user's codes with these hashes (unused). */
  replace(userId: string, hashes: readonly string[], at: Date): Promise<void>;
  /** Atomically spends one code; true only for the one caller that found it unused. */
  use(userId: string, hash: string, at: Date): Promise<boolean>;
  /** Unused codes left. */
  remaining(userId: string): Promise<number>;
  deleteForUser(userId: string): Promise<number>;
}

/** The durable database: stores plus lifecycle. */
export interface Database {
  readonly dialect: 'sqlite' | 'postgres';
  readonly users: UserStore;
  readonly sessions: SessionStore;
  readonly refreshTokens: RefreshTokenStore;
  readonly recoveryCodes: RecoveryCodeStore;
  /** Applies pending migrations; returns the names applied. */
  migrate(): Promise<string[]>;
  /** Throws when the database cannot be reached. */
  ping(): Promise<void>;
  close(): Promise<void>;
}

/**
 * The local revocation list the proxied hot path consults. `isRevoked` is synchronous and
 * local on purpose: the hot path never waits on a network round trip. Implementations keep
 * the list current from the database (and, with Redis, from pub/sub).
 */
export interface RevocationList {
  isRevoked(sessionId: string): boolean;
  /** Records a revocation locally (the caller has already made it durable). */
  add(sessionId: string, expiresAt: Date): void;
  /** Number of revocations held (for tests and metrics). */
  size(): number;
}

/**
 * The clock every short-lived state adapter reads, in epoch milliseconds. `app.ts` passes one
 * clock to all of them (tests pass a fake one and move it instead of sleeping).
 */
export type StateClock = () => number;

/** The limits one failure is judged against (`auth.lockout`). */
export interface LockoutPolicy {
  /** Failures within `windowMs` that lock the username. */
  maxFailures: number;
  /** The sliding window the failures are counted in. */
  windowMs: number;
  /** How long the lock lasts. */
  durationMs: number;
}

/**
 * Username lockout state (SPEC §4): a sliding window of failures, the lock, and the per-username
 * "turn" that lets one guess at a time be judged. Keyed by username; implementations own
 * their key names. All times come from the adapter's injected clock.
 */
export interface LockoutStore {
  /**
   * Records one failure and counts the failures of the last `windowMs` (a sliding window:
   * "5 within 15 minutes" at any moment). When the count reaches `maxFailures` the failure log
   * starts over and the username is locked for `durationMs`, unless a live lock exists: `locked`
   * is true only for the one caller that set the lock. One atomic step.
   */
  recordFailure(username: string, policy: LockoutPolicy): Promise<{ failures: number; locked: boolean }>;
  /** Forgets the failures (a success). Leaves a lock alone. */
  clearFailures(username: string): Promise<void>;
  /** Milliseconds left on the lock, 0 when not locked. */
  lockedFor(username: string): Promise<number>;
  /** Clears the lock and the failures; true when a live lock was cleared. One atomic step. */
  unlock(username: string): Promise<boolean>;
  /**
   * Takes the username's turn for `holder` (a value unique to the caller) for `ttlMs` unless
   * another live turn holds it; true for the one caller that took it. The ttl frees a turn whose
   * holder died mid-check.
   */
  takeTurn(username: string, holder: string, ttlMs: number): Promise<boolean>;
  /**
   * Gives the turn back, only if `holder` still holds it: a holder that overran its ttl cannot
   * free the turn of the next one.
   */
  releaseTurn(username: string, holder: string): Promise<void>;
}

/** TOTP replay prevention: each time step is accepted once per user, and never an older one. */
export interface TotpReplayGuard {
  /**
   * Claims `step` for the user when it is greater than the last step claimed within `ttlMs`;
   * true when claimed (the code may be accepted), false for a replay. One atomic step.
   */
  claim(userId: string, step: number, ttlMs: number): Promise<boolean>;
}

/** Per-MFA-token bookkeeping (SPEC §5: at most five codes, one completed sign-in), keyed by the token's `jti`. */
export interface AttemptCounter {
  /** Counts one code attempt; returns the attempts so far. Remembered for `ttlMs` from the first. */
  attempt(jti: string, ttlMs: number): Promise<number>;
  /** Marks the token as having completed its sign-in; true for the one caller that did. Remembered for `ttlMs`. */
  complete(jti: string, ttlMs: number): Promise<boolean>;
}

/** Fixed-window request counts per client (the per-IP rate limits). */
export interface RateLimitStore {
  /**
   * Counts one request of `client` for `limiter`. The window starts at the client's first hit
   * and lasts `windowMs`; later hits do not extend it. Returns the count in the window and the
   * milliseconds until it ends. One atomic step.
   */
  hit(limiter: string, client: string, windowMs: number): Promise<{ count: number; resetMs: number }>;
}
