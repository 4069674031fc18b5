import type { AttemptCounter, LockoutPolicy, LockoutStore, RateLimitStore, StateClock, TotpReplayGuard } from '../ports.js';

/**
 * In-process adapters of the short-lived state ports, for one process (embedded mode). Every
 * method runs synchronously up to its return (no await between a check and a write), so each
 * is atomic with respect to the event loop. Time comes from the injected clock only.
 */

/** How many writes pass between two sweeps of expired entries (keeps memory bounded without a timer). */
const SWEEP_EVERY = 512;

/** A map whose entries end at an absolute time on the injected clock; expired entries read as absent. */
class ExpiringMap<V> {
  private readonly entries = new Map<string, { value: V; until: number }>();
  private writes = 0;

  constructor(private readonly now: StateClock) {}

  /** The live entry, or undefined (an expired one is dropped on the way). */
  get(key: string, t = this.now()): { value: V; until: number } | undefined {
    const e = this.entries.get(key);
    if (e && e.until <= t) {
      this.entries.delete(key);
      return undefined;
    }
    return e;
  }

  set(key: string, value: V, until: number, t = this.now()): void {
    if (++this.writes % SWEEP_EVERY === 0) this.sweep(t);
    this.entries.set(key, { value, until });
  }

  delete(key: string): boolean {
    return this.entries.delete(key);
  }

  private sweep(t: number): void {
    for (const [k, e] of this.entries) if (e.until <= t) this.entries.delete(k);
  }
}

/** "Take it unless someone holds it": the shared step of turns, locks and completions. */
function claimUntil(map: ExpiringMap<true>, key: string, ttlMs: number, t: number): boolean {
  if (map.get(key, t)) return false;
  map.set(key, true, t + ttlMs, t);
  return true;
}

/** {@link LockoutStore} in process. */
export class MemoryLockoutStore implements LockoutStore {
  /** Failure times per username (newest last); the entry ends one window after the newest. */
  private readonly failures: ExpiringMap<number[]>;
  private readonly locks: ExpiringMap<true>;
  private readonly turns: ExpiringMap<string>;

  constructor(private readonly now: StateClock = Date.now) {
    this.failures = new ExpiringMap(now);
    this.locks = new ExpiringMap(now);
    this.turns = new ExpiringMap(now);
  }

  async recordFailure(username: string, policy: LockoutPolicy): Promise<{ failures: number; locked: boolean }> {
    const t = this.now();
    const log = (this.failures.get(username, t)?.value ?? []).filter((at) => at > t - policy.windowMs);
    log.push(t);
    if (log.length < policy.maxFailures) {
      this.failures.set(username, log, t + policy.windowMs, t);
      return { failures: log.length, locked: false };
    }
    // The log starts over once the limit is reached, whoever sets the lock.
    this.failures.delete(username);
    return { failures: log.length, locked: claimUntil(this.locks, username, policy.durationMs, t) };
  }

  async clearFailures(username: string): Promise<void> {
    this.failures.delete(username);
  }

  async lockedFor(username: string): Promise<number> {
    const t = this.now();
    const lock = this.locks.get(username, t);
    return lock ? lock.until - t : 0;
  }

  async unlock(username: string): Promise<boolean> {
    const wasLocked = this.locks.get(username) !== undefined;
    this.locks.delete(username);
    this.failures.delete(username);
    return wasLocked;
  }

  async takeTurn(username: string, holder: string, ttlMs: number): Promise<boolean> {
    const t = this.now();
    if (this.turns.get(username, t)) return false;
    this.turns.set(username, holder, t + ttlMs, t);
    return true;
  }

  async releaseTurn(username: string, holder: string): Promise<void> {
    if (this.turns.get(username)?.value === holder) this.turns.delete(username);
  }
}

/** {@link TotpReplayGuard} in process. */
export class MemoryTotpReplayGuard implements TotpReplayGuard {
  private readonly steps: ExpiringMap<number>;

  constructor(private readonly now: StateClock = Date.now) {
    this.steps = new ExpiringMap(now);
  }

  async claim(userId: string, step: number, ttlMs: number): Promise<boolean> {
    const t = this.now();
    const last = this.steps.get(userId, t);
    if (last && step <= last.value) return false;
    this.steps.set(userId, step, t + ttlMs, t);
    return true;
  }
}

/** A fixed-window counter: the window starts at the first hit; later hits do not extend it. */
function hitWindow(map: ExpiringMap<number>, key: string, windowMs: number, t: number): { count: number; resetMs: number } {
  const e = map.get(key, t);
  const count = (e?.value ?? 0) + 1;
  const until = e?.until ?? t + windowMs;
  map.set(key, count, until, t);
  return { count, resetMs: until - t };
}

/** {@link AttemptCounter} in process. */
export class MemoryAttemptCounter implements AttemptCounter {
  private readonly attempts: ExpiringMap<number>;
  private readonly completed: ExpiringMap<true>;

  constructor(private readonly now: StateClock = Date.now) {
    this.attempts = new ExpiringMap(now);
    this.completed = new ExpiringMap(now);
  }

  async attempt(jti: string, ttlMs: number): Promise<number> {
    return hitWindow(this.attempts, jti, ttlMs, this.now()).count;
  }

  async complete(jti: string, ttlMs: number): Promise<boolean> {
    return claimUntil(this.completed, jti, ttlMs, this.now());
  }
}

/** {@link RateLimitStore} in process. */
export class MemoryRateLimitStore implements RateLimitStore {
  /** One counter map per limiter, so no client key can collide with another limiter's. */
  private readonly limiters = new Map<string, ExpiringMap<number>>();

  constructor(private readonly now: StateClock = Date.now) {}

  async hit(limiter: string, client: string, windowMs: number): Promise<{ count: number; resetMs: number }> {
    let counts = this.limiters.get(limiter);
    if (!counts) {
      counts = new ExpiringMap(this.now);
      this.limiters.set(limiter, counts);
    }
    return hitWindow(counts, client, windowMs, this.now());
  }
}
