import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { AttemptCounter, LockoutStore, RateLimitStore, TotpReplayGuard } from '../../src/store/ports.js';

/**
 * The short-lived state contracts: one suite per port (`lockout-store-contract.ts`,
 * `totp-replay-guard-contract.ts`, `attempt-counter-contract.ts`, `rate-limit-store-contract.ts`)
 * plus the checks that the ports of one backend never touch each other's data. Each backend's
 * test file (`src/store/state/memory.test.ts`, `redis.test.ts`) runs all of them.
 *
 * Every adapter reads an injected clock, Redis ones included, so the suites move time exactly
 * instead of sleeping, and the same assertions hold on every backend.
 */

/** One adapter per port, on one backend. */
export interface StatePorts {
  lockouts: LockoutStore;
  totpSteps: TotpReplayGuard;
  mfaAttempts: AttemptCounter;
  rateLimits: RateLimitStore;
}

/**
 * What the contracts need from a backend under test. One harness is made per test; everything
 * it opens sees the same state and the same clock (as replicas do).
 */
export interface StateHarness {
  /** Opens the adapters on the harness's shared state (a new connection for Redis, the same instances in memory). */
  open(): Promise<StatePorts>;
  /** Moves the injected clock forward. */
  advance(ms: number): void;
  /** Closes what `open` opened and deletes what the test wrote. */
  cleanup(): Promise<void>;
}

/** A long ttl or window that no test runs out by accident. */
export const LONG = 60_000;
/** A short one that tests run out by moving the clock. */
export const SHORT = 400;

/** Fisher–Yates with a fixed seed, so a failing race replays the same order. */
export function shuffled<T>(items: T[], seed = 42): T[] {
  const out = [...items];
  let s = seed;
  for (let i = out.length - 1; i > 0; i--) {
    s = (s * 1_103_515_245 + 12_345) % 2 ** 31;
    const j = s % (i + 1);
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

/**
 * Registers a per-port suite: `body` gets accessors for the harness, the port under test, and
 * `replicas(n)` (n adapters on the same state, several connections with Redis) for the races.
 */
export function describePort<P>(
  title: string,
  makeHarness: () => Promise<StateHarness>,
  pick: (ports: StatePorts) => P,
  body: (t: { harness: () => StateHarness; port: () => P; replicas: (n: number) => Promise<P[]> }) => void,
): void {
  describe(title, () => {
    let h: StateHarness;
    let port: P;
    beforeEach(async () => {
      h = await makeHarness();
      port = pick(await h.open());
    });
    afterEach(async () => {
      await h?.cleanup();
    });
    body({
      harness: () => h,
      port: () => port,
      replicas: async (n) => {
        const out = [port];
        for (let i = 1; i < n; i++) out.push(pick(await h.open()));
        return out;
      },
    });
  });
}

/** The ports of one backend keep apart: the same name in two of them is two things. */
export function describeStatePortsIsolation(name: string, makeHarness: () => Promise<StateHarness>): void {
  describePort(
    `state ports on one backend keep apart: ${name}`,
    makeHarness,
    (p) => p,
    ({ port }) => {
      it('unlocking a username does not forget its TOTP steps (an unlock must not re-open replays)', async () => {
        const { lockouts, totpSteps } = port();
        expect(await totpSteps.claim('u1', 100, LONG)).toBe(true);
        await lockouts.recordFailure('u1', { maxFailures: 1, windowMs: LONG, durationMs: LONG });
        expect(await lockouts.unlock('u1')).toBe(true);
        await lockouts.clearFailures('u1');
        expect(await totpSteps.claim('u1', 100, LONG)).toBe(false);
      });

      it('the same name as a rate-limit client, an MFA token and a username is three things', async () => {
        const { lockouts, mfaAttempts, rateLimits } = port();
        expect((await rateLimits.hit('login', 'same', LONG)).count).toBe(1);
        expect(await mfaAttempts.attempt('same', LONG)).toBe(1);
        expect(await mfaAttempts.complete('same', LONG)).toBe(true);
        expect(await lockouts.takeTurn('same', 'h1', LONG)).toBe(true);
        expect(await lockouts.recordFailure('same', { maxFailures: 10, windowMs: LONG, durationMs: LONG })).toEqual({ failures: 1, locked: false });
        expect((await rateLimits.hit('login', 'same', LONG)).count).toBe(2);
        expect(await mfaAttempts.attempt('same', LONG)).toBe(2);
        expect(await lockouts.lockedFor('same')).toBe(0);
      });

      it("one limiter's counts are not another's", async () => {
        const { rateLimits } = port();
        await rateLimits.hit('login', '198.51.100.1', LONG);
        await rateLimits.hit('login', '198.51.100.1', LONG);
        expect((await rateLimits.hit('auth_api', '198.51.100.1', LONG)).count).toBe(1);
        expect((await rateLimits.hit('route:a', '198.51.100.1', LONG)).count).toBe(1);
        expect((await rateLimits.hit('login', '198.51.100.1', LONG)).count).toBe(3);
      });
    },
  );
}
