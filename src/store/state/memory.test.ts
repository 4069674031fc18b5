import { describe, expect, it } from 'vitest';
import { MemoryAttemptCounter, MemoryLockoutStore, MemoryRateLimitStore, MemoryTotpReplayGuard } from './memory.js';
import { describeStatePortsIsolation, type StateHarness, type StatePorts } from '../../../test/support/state-contract.js';
import { describeLockoutStoreContract } from '../../../test/support/lockout-store-contract.js';
import { describeTotpReplayGuardContract } from '../../../test/support/totp-replay-guard-contract.js';
import { describeAttemptCounterContract } from '../../../test/support/attempt-counter-contract.js';
import { describeRateLimitStoreContract } from '../../../test/support/rate-limit-store-contract.js';

// One set of adapters per test on one fake clock: "replicas" are the same instances, as
// every caller in one process shares them.
async function harness(): Promise<StateHarness> {
  let now = 1_700_000_000_000;
  const clock = () => now;
  const ports: StatePorts = {
    lockouts: new MemoryLockoutStore(clock),
    totpSteps: new MemoryTotpReplayGuard(clock),
    mfaAttempts: new MemoryAttemptCounter(clock),
    rateLimits: new MemoryRateLimitStore(clock),
  };
  return {
    open: async () => ports,
    advance: (ms) => {
      now += ms;
    },
    cleanup: async () => undefined,
  };
}

describeLockoutStoreContract('memory', harness);
describeTotpReplayGuardContract('memory', harness);
describeAttemptCounterContract('memory', harness);
describeRateLimitStoreContract('memory', harness);
describeStatePortsIsolation('memory', harness);

describe('memory adapters', () => {
  it('report exact times on their injected clock', async () => {
    let now = 0;
    const limits = new MemoryRateLimitStore(() => now);
    const lockouts = new MemoryLockoutStore(() => now);
    expect(await limits.hit('l', 'k', 1000)).toEqual({ count: 1, resetMs: 1000 });
    now += 250;
    expect(await limits.hit('l', 'k', 1000)).toEqual({ count: 2, resetMs: 750 });
    await lockouts.recordFailure('f', { maxFailures: 1, windowMs: 1000, durationMs: 500 });
    now += 499;
    expect(await lockouts.lockedFor('f')).toBe(1);
    now += 1;
    expect(await lockouts.lockedFor('f')).toBe(0);
  });

  it('forget expired entries without being read again (memory stays bounded)', async () => {
    let now = 0;
    const limits = new MemoryRateLimitStore(() => now);
    for (let i = 0; i < 600; i++) await limits.hit('l', `client-${i}`, 1000);
    now += 1000;
    // Writes after the window ended sweep the expired clients out.
    for (let i = 0; i < 600; i++) await limits.hit('l', `later-${i}`, 1000);
    const held = (limits as unknown as { limiters: Map<string, { entries: Map<string, unknown> }> }).limiters.get('l')!.entries;
    expect([...held.keys()].some((k) => k.startsWith('client-'))).toBe(false);
    expect(held.size).toBeLessThanOrEqual(600);
  });
});
