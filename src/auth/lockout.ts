import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { Errors, GatewayError } from '../errors/index.js';
import type { Metrics } from '../metrics/index.js';
import type { LockoutPolicy, LockoutStore } from '../store/ports.js';

/** `auth.lockout`: `maxFailures` within `windowMs` lock for `durationMs`. */
export type LockoutOptions = LockoutPolicy;

/** How long one guess may hold its username's turn (a process that dies mid-check frees it then). */
const TURN_TTL_MS = 5_000;
/** How long a guess waits for its turn before it is answered 429. */
const TURN_WAIT_MS = 1_000;
const TURN_POLL_MS = 20;

/**
 * Username lockout (SPEC §4): `maxFailures` failed passwords (at sign-in, or as a confirmation
 * on `/password`, `/2fa/disable` or `/2fa/recovery-codes`) or second-factor codes within `windowMs` lock the username
 * for `durationMs` — for existing and unknown usernames alike, so the answer says nothing
 * about which exist. Counts, locks and turns live in the {@link LockoutStore}, so with
 * Redis they are shared by every replica.
 */
export class Lockout {
  constructor(
    private readonly store: LockoutStore,
    private readonly opts: LockoutOptions,
    private readonly metrics: Metrics,
    private readonly log: Logger,
  ) {}

  /**
   * Takes the username's turn for one guess (password or code) and checks the lock. Guesses for
   * one username are checked one at a time, on every replica (the turn lives in the lockout store):
   * without that, N concurrent guesses all pass the lock check before any failure is counted,
   * and a burst gets N tries instead of `maxFailures`. A guess waits up to 1 s for its turn,
   * then gets 429. Throws 423 while the username is locked. Call the returned function when the
   * guess is judged (failure counted or success recorded).
   */
  async acquire(username: string): Promise<() => Promise<void>> {
    // Real time, not the store's clock: this waits for another request to finish its check,
    // which takes real time whatever a test's clock says (a frozen clock would wait forever).
    const until = Date.now() + TURN_WAIT_MS;
    // Who holds the turn: a guess that overran its ttl must not free the next guess's turn.
    const holder = randomUUID();
    while (!(await this.store.takeTurn(username, holder, TURN_TTL_MS))) {
      if (Date.now() >= until) {
        throw new GatewayError(Errors.rate_limited, 'Another attempt for this account is being checked; try again in a moment.', {
          headers: { 'retry-after': '1' },
        });
      }
      await new Promise((r) => setTimeout(r, TURN_POLL_MS));
    }
    const release = async (): Promise<void> => {
      await this.store.releaseTurn(username, holder).catch(() => undefined);
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
    const ms = await this.store.lockedFor(username);
    if (ms > 0) throw lockedError(ms);
  }

  /** Counts a failure; the one that reaches the limit locks the username (and says so). */
  async fail(username: string, ip: string | null): Promise<void> {
    // Sliding window: any `maxFailures` within `windowMs`; the log starts over once locked.
    // Requests that passed the lock check before the lock existed also reach the limit: only
    // the one that actually set the lock reports it.
    const { failures, locked } = await this.store.recordFailure(username, this.opts);
    if (!locked) return;
    this.metrics.lockouts.inc();
    this.log.warn({ event: 'account_locked', username, ip, failures, duration_ms: this.opts.durationMs }, 'username locked after repeated failures');
  }

  /** A success resets the failure count. */
  async succeed(username: string): Promise<void> {
    await this.store.clearFailures(username);
  }

  /** Clears both the lock and the count (`portcullis user unlock`). */
  async unlock(username: string): Promise<boolean> {
    return this.store.unlock(username);
  }
}

/** 423 with Retry-After in whole seconds. */
export function lockedError(ms: number): GatewayError {
  const seconds = Math.max(1, Math.ceil(ms / 1000));
  return new GatewayError(Errors.account_locked, `Too many failed attempts; try again in ${seconds} s.`, { headers: { 'retry-after': String(seconds) } });
}
