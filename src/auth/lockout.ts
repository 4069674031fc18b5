import type { Logger } from 'pino';
import { AuthErrors, GatewayError } from '../errors/index.js';
import type { Metrics } from '../metrics/index.js';
import type { StateStore } from '../store/ports.js';

export interface LockoutOptions {
  maxFailures: number;
  windowMs: number;
  durationMs: number;
}

const failKey = (u: string) => `lockout:fail:${u}`;
const lockKey = (u: string) => `lockout:lock:${u}`;

/**
 * Username lockout (SPEC §4): `maxFailures` failed passwords (at sign-in, or as a confirmation
 * on `/password` or `/2fa/disable`) or second-factor codes within `windowMs` lock the username
 * for `durationMs` — for existing and unknown usernames alike, so the answer says nothing
 * about which exist. Counts live in the state store, so with
 * Redis they are shared by every replica.
 */
export class Lockout {
  constructor(
    private readonly state: StateStore,
    private readonly opts: LockoutOptions,
    private readonly metrics: Metrics,
    private readonly log: Logger,
  ) {}

  /** Throws 423 with Retry-After while the username is locked. */
  async assertUnlocked(username: string): Promise<void> {
    const ms = await this.state.flagTtl(lockKey(username));
    if (ms > 0) throw lockedError(ms);
  }

  /** Counts a failure; the one that reaches the limit locks the username (and says so). */
  async fail(username: string, ip: string | null): Promise<void> {
    // Sliding window: any `maxFailures` within `windowMs`; the log starts over once locked.
    const count = await this.state.recordEvent(failKey(username), this.opts.windowMs);
    if (count >= this.opts.maxFailures) {
      // Requests that passed the lock check before the lock existed also reach the limit:
      // only the one that actually sets the lock reports it.
      const first = await this.state.setFlagIfAbsent(lockKey(username), this.opts.durationMs);
      await this.state.delete(failKey(username));
      if (!first) return;
      this.metrics.lockouts.inc();
      this.log.warn({ event: 'account_locked', username, ip, failures: count, duration_ms: this.opts.durationMs }, 'username locked after repeated failures');
    }
  }

  /** A success resets the failure count. */
  async succeed(username: string): Promise<void> {
    await this.state.delete(failKey(username));
  }

  /** Clears both the lock and the count (`portcullis user unlock`). */
  async unlock(username: string): Promise<boolean> {
    const locked = (await this.state.flagTtl(lockKey(username))) > 0;
    await this.state.delete(lockKey(username), failKey(username));
    return locked;
  }
}

/** 423 with Retry-After in whole seconds. */
export function lockedError(ms: number): GatewayError {
  const seconds = Math.max(1, Math.ceil(ms / 1000));
  return new GatewayError(AuthErrors.account_locked, `Too many failed attempts; try again in ${seconds} s.`, { headers: { 'retry-after': String(seconds) } });
}
