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
 * Short-lived shared state: counters, locks and TOTP replay marks. In-process for one
 * process (embedded mode); Redis when several processes must agree. Every operation that
 * must be atomic is atomic in each implementation.
 */
export interface StateStore {
  readonly kind: 'memory' | 'redis';
  /**
   * Records `step` as the user's last used TOTP time step if it is greater than the one
   * stored; true when it was (the code may be accepted), false for a replay.
   */
  claimTotpStep(userId: string, step: number, ttlMs: number): Promise<boolean>;
  /** Increments a counter whose window starts at its first increment; returns the count and ms left. */
  increment(key: string, windowMs: number): Promise<{ count: number; resetMs: number }>;
  /**
   * Records one event under `key` and returns how many happened in the last `windowMs`
   * (a sliding window: "5 failures within 15 minutes" at any moment).
   */
  recordEvent(key: string, windowMs: number): Promise<number>;
  /** Sets a flag that lasts `ttlMs`. */
  setFlag(key: string, ttlMs: number): Promise<void>;
  /** Sets a flag only when none is live; true for the one caller that set it. */
  setFlagIfAbsent(key: string, ttlMs: number): Promise<boolean>;
  /** Milliseconds left on a flag, 0 when unset. */
  flagTtl(key: string): Promise<number>;
  /** Deletes counters, event logs or flags. */
  delete(...keys: string[]): Promise<void>;
  ping(): Promise<void>;
  close(): Promise<void>;
}
