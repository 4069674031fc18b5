import type { Logger } from 'pino';
import { Errors, GatewayError } from '../errors/index.js';
import type { Metrics } from '../metrics/index.js';
import type { StateStore } from '../store/ports.js';

export interface LockoutOptions {
  maxFailures: number;
  windowMs: number;
  durationMs: number;
}

const failKey = (u: string) => `lockout:fail:${u}`;
const lockKey = (u: string) => `lockout:lock:${u}`;
const busyKey = (u: string) => `lockout:busy:${u}`;
/** How long one guess may hold its username's turn (a process that dies mid-check frees it then). */
const TURN_TTL_MS = 5_000;
/** How long a guess waits for its turn before it is answered 429. */
const TURN_WAIT_MS = 1_000;
const TURN_POLL_MS = 20;

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

  /**
   * Takes the username's turn for one guess (password or code) and checks the lock. Guesses for
   * one username are checked one at a time, on every replica (the turn lives in the state store):
   * without that, N concurrent guesses all pass the lock check before any failure is counted,
   * and a burst gets N tries instead of `maxFailures`. A guess waits up to 1 s for its turn,
   * then gets 429. Throws 423 while the username is locked. Call the returned function when the
   * guess is judged (failure counted or success recorded).
   */
  async acquire(username: string): Promise<() => Promise<void>> {
    const key = busyKey(username);
    const until = Date.now() + TURN_WAIT_MS;
    while (!(await this.state.setFlagIfAbsent(key, TURN_TTL_MS))) {
      if (Date.now() >= until) {
        throw new GatewayError(Errors.rate_limited, 'Another attempt for this account is being checked; try again in a moment.', { headers: { 'retry-after': '1' } });
      }
      await new Promise((r) => setTimeout(r, TURN_POLL_MS));
    }
    const release = async (): Promise<void> => {
      await this.state.delete(key).catch(() => undefined);
    };
    try {
      await this.assertUnlocked(username);
    } catch (e) {
      await release();
      throw e;
    }
    return release;
  }

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
  return new GatewayError(Errors.account_locked, `Too many failed attempts; try again in ${seconds} s.`, { headers: { 'retry-after': String(seconds) } });
}
