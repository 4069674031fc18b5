import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Logger } from 'pino';
import { generateSecret, generateURI, verify as verifyTotp } from 'otplib';
import { Errors, GatewayError, unauthenticated } from '../errors/index.js';
import type { Metrics } from '../metrics/index.js';
import type { AttemptCounter, Database, TotpReplayGuard, UserRecord } from '../store/ports.js';
import type { TokenService } from '../tokens/index.js';
import type { Lockout } from './lockout.js';
import { dependency, requireStrings } from './login-flow.js';
import type { SecretBox } from './secret-box.js';
import type { PasswordHasher } from './password.js';

/** RFC 6238 parameters (SPEC §7): SHA-1, 6 digits, 30 s, one step of skew either way. */
export const TOTP_PERIOD_SECONDS = 30;
const SKEW_SECONDS = 30;
/** How long a used step is remembered: longer than the whole acceptance window. */
const STEP_MEMORY_MS = 5 * 60_000;
/** An MFA token allows at most this many codes (SPEC §5). */
export const MFA_MAX_ATTEMPTS = 5;
const RECOVERY_CODES = 10;
const SECRET_PURPOSE = 'totp-secret';

const mfaError = (detail: string) => new GatewayError(Errors.invalid_mfa_code, detail);

/** A recovery code: 16 base32 characters (80 bits) in four groups, e.g. `K7QX-2MPA-…`. */
function newRecoveryCode(): string {
  const alphabet = 'ABCDEFGHJKLMNPQRSTUVWXYZ23456789';
  const bytes = randomBytes(16);
  const chars = Array.from(bytes, (b) => alphabet[b & 31]).join('');
  return chars.match(/.{4}/g)!.join('-');
}

/** Codes are hashed with the user id: 80 bits of entropy need no slow hash. */
function hashRecoveryCode(userId: string, code: string): string {
  const canonical = code.toUpperCase().replace(/[^A-Z0-9]/g, '');
  return createHash('sha256').update(`${userId}:${canonical}`).digest('base64url');
}

/**
 * Exactly one of `fields`, as a string: neither, both, or a wrong type is 422 `invalid_input`
 * listing the fields (the shape {@link requireStrings} answers with).
 */
function oneOfStrings<K extends string>(body: unknown, fields: readonly K[]): { field: K; value: string } {
  const bad = (message: string, only?: K) =>
    new GatewayError(Errors.invalid_input, `Send exactly one of: ${fields.join(', ')}.`, {
      extra: { errors: (only ? [only] : fields).map((f) => ({ field: f, message })) },
    });
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw bad('required (exactly one)');
  const present = fields.filter((f) => {
    const v = (body as Record<string, unknown>)[f];
    return v !== undefined && v !== null;
  });
  if (present.length !== 1) throw bad(present.length ? 'only one of these may be sent' : 'required (exactly one)');
  const field = present[0];
  const value = (body as Record<string, unknown>)[field];
  if (typeof value !== 'string') throw bad('must be a string', field);
  return { field, value };
}

export interface MfaDeps {
  db: Database;
  /** Accepts each TOTP time step once per user. */
  totpSteps: TotpReplayGuard;
  /** Codes tried and sign-ins completed per MFA token. */
  mfaAttempts: AttemptCounter;
  box: SecretBox;
  tokens: TokenService;
  lockout: Lockout;
  hasher: PasswordHasher;
  metrics: Metrics;
  log: Logger;
  now: () => Date;
  issuer: string;
}

/** What a checked second factor was. */
export type FactorKind = 'totp' | 'recovery_code';
/** A check's outcome: the factor, a replayed TOTP step, or nothing valid. */
export type CheckResult = FactorKind | 'replay' | null;

/**
 * TOTP enrollment and verification. Secrets are encrypted at rest (AES-256-GCM, key id kept
 * with each ciphertext, re-encrypted under the active key on use); a code's time step is
 * accepted once per user (claimed atomically in the replay guard); recovery codes are single
 * use and stored hashed.
 */
export class MfaService {
  constructor(private readonly d: MfaDeps) {}

  private secretOf(user: UserRecord): { secret: string; stale: boolean } {
    if (!user.totpSecret) throw new GatewayError(Errors.mfa_not_set_up, 'Call /2fa/setup first.');
    try {
      const { plaintext, stale } = this.d.box.decrypt(user.totpSecret, SECRET_PURPOSE, user.id);
      return { secret: plaintext, stale };
    } catch (e) {
      // Fails closed: most likely the key that encrypted it is not configured (rotation).
      const keyId = user.totpSecret.split('.')[1] ?? '?';
      this.d.log.error(
        { event: 'mfa_secret_unreadable', user_id: user.id, key_id: keyId, err: (e as Error).message },
        'cannot decrypt a TOTP secret; is its key in PORTCULLIS_ENCRYPTION_KEYS_PREVIOUS?',
      );
      throw new GatewayError(Errors.service_unavailable, 'Two-factor authentication is temporarily unavailable.');
    }
  }

  /** Starts enrollment: a fresh secret (stored encrypted, pending), its otpauth URI and a QR code. */
  async setup(user: UserRecord): Promise<{ secret: string; otpauth_uri: string; qr_svg: string }> {
    if (user.mfaEnabled) throw new GatewayError(Errors.mfa_already_enabled, 'Disable it first to enroll a new authenticator.');
    const secret = generateSecret();
    const totpSecret = this.d.box.encrypt(secret, SECRET_PURPOSE, user.id);
    await dependency(() => this.d.db.users.update(user.id, { totpSecret, mfaEnabled: false }));
    return this.enrollment(user, secret);
  }

  /**
   * The enrollment in progress, shown again (the account page's confirm step after a wrong
   * code) to a caller that proves it was shown it: `claimedSecret` (sent back by the confirm
   * form) must be the pending secret. Another session of the same account, which never saw
   * it, gets nothing: the secret is never handed out twice. The user is read afresh, so an
   * enrollment completed meanwhile is 409 `mfa_already_enabled`; a restarted or missing one
   * is 409 `mfa_not_set_up`.
   */
  async pendingSetup(userId: string, claimedSecret: string): Promise<{ secret: string; otpauth_uri: string; qr_svg: string }> {
    const user = await dependency(() => this.d.db.users.findById(userId));
    if (!user) throw new GatewayError(Errors.invalid_token, 'The account is no longer active.');
    if (user.mfaEnabled) throw new GatewayError(Errors.mfa_already_enabled, 'It is already enabled.');
    const { secret } = this.secretOf(user);
    const a = createHash('sha256').update(secret).digest();
    const b = createHash('sha256').update(claimedSecret).digest();
    if (!timingSafeEqual(a, b)) throw new GatewayError(Errors.mfa_not_set_up, 'The enrollment was restarted; call /2fa/setup again.');
    return this.enrollment(user, secret);
  }

  private async enrollment(user: UserRecord, secret: string): Promise<{ secret: string; otpauth_uri: string; qr_svg: string }> {
    const otpauth_uri = generateURI({ issuer: this.d.issuer, label: user.username, secret });
    // Loaded here, on 2FA setup only: nothing else needs a QR encoder in memory.
    const { default: QRCode } = await import('qrcode');
    const qr_svg = await QRCode.toString(otpauth_uri, { type: 'svg', errorCorrectionLevel: 'M', margin: 2 });
    return { secret, otpauth_uri, qr_svg };
  }

  /** Confirms enrollment with a current code: 2FA on, ten recovery codes (shown once). */
  async enable(user: UserRecord, body: unknown): Promise<{ recovery_codes: string[] }> {
    const { code } = requireStrings(body, ['code'] as const);
    if (user.mfaEnabled) throw new GatewayError(Errors.mfa_already_enabled, 'It is already enabled.');
    const kind = await this.check(user, code, { allowRecovery: false });
    if (!kind || kind === 'replay')
      throw new GatewayError(Errors.invalid_input, 'The code is not valid for the pending secret.', {
        extra: { errors: [{ field: 'code', message: 'invalid' }] },
      });
    const codes = Array.from({ length: RECOVERY_CODES }, newRecoveryCode);
    const now = this.d.now();
    await dependency(() =>
      this.d.db.recoveryCodes.replace(
        user.id,
        codes.map((c) => hashRecoveryCode(user.id, c)),
        now,
      ),
    );
    await dependency(() => this.d.db.users.update(user.id, { mfaEnabled: true }));
    this.d.log.info({ event: 'mfa_enabled', user_id: user.id }, 'two-factor authentication enabled');
    return { recovery_codes: codes };
  }

  /**
   * Turns 2FA off; needs the password and a current code. Both are guesses like a sign-in
   * (SPEC §4): refused with 423 while the username is locked (even when right), a wrong
   * password or code counts toward the same lockout, and a success resets the count.
   */
  async disable(user: UserRecord, body: unknown, ip: string | null = null): Promise<void> {
    const { password, code } = requireStrings(body, ['password', 'code'] as const);
    const release = await dependency(() => this.d.lockout.acquire(user.username));
    try {
      if (!user.mfaEnabled) throw new GatewayError(Errors.mfa_not_set_up, 'It is not enabled.');
      const passwordOk = await this.d.hasher.verify(user.passwordHash, password);
      const kind = passwordOk ? await this.check(user, code, { allowRecovery: true }) : null;
      if (!passwordOk || !kind || kind === 'replay') {
        this.d.log.info(
          { event: 'mfa_disable_failure', user_id: user.id, username: user.username, ip, reason: passwordOk ? 'wrong_code' : 'wrong_password' },
          '2FA disable refused',
        );
        await dependency(() => this.d.lockout.fail(user.username, ip));
        throw new GatewayError(Errors.wrong_password, 'The password or the code is wrong.');
      }
      await dependency(() => this.d.lockout.succeed(user.username));
    } finally {
      await release();
    }
    await this.reset(user.id);
    this.d.log.info({ event: 'mfa_disabled', user_id: user.id }, 'two-factor authentication disabled');
  }

  /**
   * `POST /2fa/recovery-codes`: ten new recovery codes, confirmed with either a current TOTP
   * code (`{code}`, replay-guarded) or the password (`{password}`), exactly one of them. The
   * confirmation is a guess like a sign-in (SPEC §4), as in {@link disable}: 423 while the
   * username is locked (even when right), a wrong answer counts toward the lockout, a right
   * code resets the count (a right password does not: with 2FA on only a code does). The new
   * set replaces the old one in one step (the store's transaction).
   */
  async regenerateRecoveryCodes(user: UserRecord, body: unknown, ip: string | null = null): Promise<{ recovery_codes: string[] }> {
    const proof = oneOfStrings(body, ['code', 'password'] as const);
    const release = await dependency(() => this.d.lockout.acquire(user.username));
    try {
      if (!user.mfaEnabled) throw new GatewayError(Errors.mfa_not_set_up, 'It is not enabled.');
      let ok: boolean;
      if (proof.field === 'password') {
        ok = await this.d.hasher.verify(user.passwordHash, proof.value);
      } else {
        const kind = await this.check(user, proof.value, { allowRecovery: false });
        ok = kind === 'totp';
        if (!kind) this.d.metrics.mfaAttempts.inc({ result: 'invalid' });
      }
      if (!ok) {
        const reason = proof.field === 'password' ? 'wrong_password' : 'wrong_code';
        this.d.log.info({ event: 'recovery_codes_regenerate_failure', user_id: user.id, username: user.username, ip, reason }, 'new recovery codes refused');
        await dependency(() => this.d.lockout.fail(user.username, ip));
        if (proof.field === 'password') throw new GatewayError(Errors.wrong_password, 'The password is wrong.');
        throw mfaError('The code is not valid.');
      }
      // With 2FA on only a success that included a code resets the count (SPEC §4, as at
      // sign-in): a right password must not buy more guesses at the second factor.
      if (proof.field === 'code') await dependency(() => this.d.lockout.succeed(user.username));
    } finally {
      await release();
    }
    const codes = Array.from({ length: RECOVERY_CODES }, newRecoveryCode);
    // One transaction: the old codes are deleted as the new ones are stored.
    await dependency(() =>
      this.d.db.recoveryCodes.replace(
        user.id,
        codes.map((c) => hashRecoveryCode(user.id, c)),
        this.d.now(),
      ),
    );
    this.d.log.info({ event: 'recovery_codes_regenerated', user_id: user.id }, 'recovery codes regenerated');
    return { recovery_codes: codes };
  }

  /** Clears the secret and the recovery codes (also `portcullis user reset-2fa`); returns how many codes went. */
  async reset(userId: string): Promise<number> {
    await dependency(() => this.d.db.users.update(userId, { mfaEnabled: false, totpSecret: null }));
    return dependency(() => this.d.db.recoveryCodes.deleteForUser(userId));
  }

  /**
   * Checks a TOTP code (its time step claimed once per user) or, when allowed, an unused
   * recovery code. Returns what matched, or null. Replays are logged and counted here.
   */
  async check(user: UserRecord, code: string, opts: { allowRecovery: boolean }): Promise<CheckResult> {
    const { d } = this;
    const trimmed = code.replace(/\s+/g, '');
    if (/^\d{6}$/.test(trimmed)) {
      const { secret, stale } = this.secretOf(user);
      const epoch = Math.floor(d.now().getTime() / 1000);
      const r = await verifyTotp({ secret, token: trimmed, epoch, epochTolerance: SKEW_SECONDS });
      if (!r.valid) return null;
      const step = (r as { timeStep: number }).timeStep;
      const claimed = await dependency(() => d.totpSteps.claim(user.id, step, STEP_MEMORY_MS));
      if (!claimed) {
        d.metrics.mfaAttempts.inc({ result: 'replay' });
        d.log.warn({ event: 'mfa_replay', user_id: user.id, username: user.username, step }, 'a TOTP code was replayed');
        return 'replay';
      }
      if (stale) {
        // Rotate the secret's encryption onto the active key while we hold the plaintext.
        const totpSecret = d.box.encrypt(secret, SECRET_PURPOSE, user.id);
        await dependency(() => d.db.users.update(user.id, { totpSecret }));
      }
      return 'totp';
    }
    if (opts.allowRecovery && /^[A-Za-z0-9]{4}(-?[A-Za-z0-9]{4}){3}$/.test(trimmed)) {
      const used = await dependency(() => d.db.recoveryCodes.use(user.id, hashRecoveryCode(user.id, trimmed), d.now()));
      return used ? 'recovery_code' : null;
    }
    return null;
  }

  /**
   * `/2fa/verify`: the MFA token (5 minutes, at most five codes) plus a code completes the
   * sign-in. Failures count toward the username lockout.
   */
  async verifyLogin(body: unknown, ip: string | null): Promise<UserRecord> {
    const { d } = this;
    const { mfa_token, code } = requireStrings(body, ['mfa_token', 'code'] as const);
    let claims: Awaited<ReturnType<typeof d.tokens.verifyMfa>>;
    try {
      claims = await d.tokens.verifyMfa(mfa_token);
    } catch {
      throw unauthenticated(true, 'The MFA token is invalid or expired; sign in again.');
    }
    // One guess per username at a time (see Lockout.acquire), then the lock check.
    const release = await dependency(() => d.lockout.acquire(claims.username));
    try {
      const count = await dependency(() => d.mfaAttempts.attempt(claims.jti, Math.max(1000, claims.exp * 1000 - d.now().getTime())));
      if (count > MFA_MAX_ATTEMPTS) throw new GatewayError(Errors.invalid_token, 'This MFA token has used up its attempts; sign in again.');
      const user = await dependency(() => d.db.users.findById(claims.sub));
      if (!user || user.disabled || !user.mfaEnabled) throw new GatewayError(Errors.invalid_token, 'The account can no longer complete this sign-in.');
      const kind = await this.check(user, code, { allowRecovery: true });
      if (!kind || kind === 'replay') {
        // A replay was counted and logged as such by check(); both count toward the lockout.
        if (!kind) {
          d.metrics.mfaAttempts.inc({ result: 'invalid' });
          d.log.info({ event: 'mfa_failure', user_id: user.id, username: user.username, ip, attempt: count }, 'second factor refused');
        }
        await dependency(() => d.lockout.fail(user.username, ip));
        throw mfaError('The code is not valid.');
      }
      // An MFA token completes one sign-in only.
      const first = await dependency(() => d.mfaAttempts.complete(claims.jti, Math.max(1000, claims.exp * 1000 - d.now().getTime())));
      if (!first) throw new GatewayError(Errors.invalid_token, 'This MFA token has already been used; sign in again.');
      d.metrics.mfaAttempts.inc({ result: kind === 'totp' ? 'success' : 'recovery_code' });
      await dependency(() => d.lockout.succeed(user.username));
      if (kind === 'recovery_code') {
        const left = await dependency(() => d.db.recoveryCodes.remaining(user.id));
        d.log.info({ event: 'recovery_code_used', user_id: user.id, remaining: left }, 'recovery code used');
      }
      return user;
    } finally {
      await release();
    }
  }
}
