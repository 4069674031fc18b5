/**
 * Unit tests of the username lockout (SPEC §4 abuse protection, §9 metric and event) over the
 * in-process lockout store with a fake clock: 5 failures within 15 minutes lock the username for
 * 15 minutes (423 with Retry-After), a success resets the count, unlock clears everything.
 */
import { Writable } from 'node:stream';
import { beforeEach, describe, expect, it } from 'vitest';
import { GatewayError } from '../errors/index.js';
import { createLogger } from '../http/log.js';
import { Metrics } from '../metrics/index.js';
import { MemoryLockoutStore } from '../store/state/memory.js';
import { Lockout, lockedError } from './lockout.js';

const SEC = 1000;
const MIN = 60 * SEC;
const T0 = Date.UTC(2026, 0, 1, 12, 0, 0);

let t: number;
let state: MemoryLockoutStore;
let metrics: Metrics;
let logs: Record<string, unknown>[];
let lockout: Lockout;

function make(opts = { maxFailures: 5, windowMs: 15 * MIN, durationMs: 15 * MIN }): Lockout {
  const sink = new Writable({
    write(chunk, _enc, cb) {
      for (const line of String(chunk).split('\n')) if (line) logs.push(JSON.parse(line));
      cb();
    },
  });
  return new Lockout(state, opts, metrics, createLogger('info', sink));
}

beforeEach(() => {
  t = T0;
  state = new MemoryLockoutStore(() => t);
  metrics = new Metrics({ processMetrics: false });
  logs = [];
  lockout = make();
});

const lockouts = async () => (await metrics.lockouts.get()).values.reduce((n, v) => n + v.value, 0);

/** The 423 error of assertUnlocked, or null when the username is not locked. */
async function lockError(username: string): Promise<GatewayError | null> {
  try {
    await lockout.assertUnlocked(username);
    return null;
  } catch (e) {
    expect(e).toBeInstanceOf(GatewayError);
    return e as GatewayError;
  }
}

async function expectLocked(username: string, retryAfter: number) {
  const e = await lockError(username);
  expect(e, `${username} should be locked`).not.toBeNull();
  expect(e!.status).toBe(423);
  expect(e!.code).toBe('account_locked');
  expect(e!.headers?.['retry-after']).toBe(String(retryAfter));
}

async function expectUnlocked(username: string) {
  expect(await lockError(username), `${username} should not be locked`).toBeNull();
}

async function fail(username: string, n: number, ip: string | null = '203.0.113.9') {
  for (let i = 0; i < n; i++) await lockout.fail(username, ip);
}

describe('Lockout', () => {
  it('locks on the 5th failure (not before) for 15 minutes, counted once and logged as account_locked', async () => {
    await fail('alice', 4);
    await expectUnlocked('alice');
    expect(await lockouts()).toBe(0);
    expect(logs.filter((l) => l.event === 'account_locked')).toEqual([]);

    await fail('alice', 1);
    await expectLocked('alice', 900);
    expect(await lockouts()).toBe(1);
    const events = logs.filter((l) => l.event === 'account_locked');
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({ level: 'warn', username: 'alice', ip: '203.0.113.9', failures: 5, duration_ms: 15 * MIN });
  });

  it('counts Retry-After down with the clock (whole seconds, rounded up) and lifts the lock after 15 minutes', async () => {
    await fail('alice', 5);
    t += 60 * SEC;
    await expectLocked('alice', 840);
    t += 13 * MIN + 59 * SEC + 500;
    await expectLocked('alice', 1);
    t += 499;
    await expectLocked('alice', 1);
    t += 1;
    await expectUnlocked('alice');
  });

  it('starts a fresh count after a lock has run out', async () => {
    await fail('alice', 5);
    t += 15 * MIN;
    await expectUnlocked('alice');
    await fail('alice', 4);
    await expectUnlocked('alice');
    await fail('alice', 1);
    await expectLocked('alice', 900);
    expect(await lockouts()).toBe(2);
  });

  it('forgets failures older than the window', async () => {
    await fail('alice', 4);
    t += 15 * MIN + 1;
    await fail('alice', 4);
    await expectUnlocked('alice');
  });

  it("locks on any 5 failures within 15 minutes, also across the first failure's window (sliding window)", async () => {
    await fail('alice', 1); // t = 0
    t += 14 * MIN;
    await fail('alice', 3); // t = 14 min: 4 within the last 15 minutes
    t += 2 * MIN;
    await fail('alice', 2); // t = 16 min: the three at 14 min and these two, all within the last 2 minutes
    await expectLocked('alice', 900);
  });

  it('resets the count on success', async () => {
    await fail('alice', 4);
    await lockout.succeed('alice');
    await fail('alice', 4);
    await expectUnlocked('alice');
    await fail('alice', 1);
    await expectLocked('alice', 900);
  });

  it('a success does not lift an active lock', async () => {
    await fail('alice', 5);
    await lockout.succeed('alice');
    await expectLocked('alice', 900);
  });

  it('keeps usernames apart and treats unknown names like any other (the lockout never asks who exists)', async () => {
    await fail('alice', 4);
    await fail('ghost-user', 5);
    await expectLocked('ghost-user', 900);
    await expectUnlocked('alice');
    await expectUnlocked('bob');
    await fail('alice', 1);
    await expectLocked('alice', 900);
    expect(await lockouts()).toBe(2);
  });

  it('unlock clears the lock and the count, and says whether there was a lock', async () => {
    await fail('alice', 5);
    expect(await lockout.unlock('alice')).toBe(true);
    await expectUnlocked('alice');
    expect(await lockout.unlock('alice')).toBe(false);

    await fail('bob', 3);
    expect(await lockout.unlock('bob')).toBe(false);
    await fail('bob', 4); // 3 + 4 would have locked had the count survived
    await expectUnlocked('bob');
    await fail('bob', 1);
    await expectLocked('bob', 900);

    expect(await lockout.unlock('nobody')).toBe(false);
  });

  it('an expired lock is not reported as a lock by unlock', async () => {
    await fail('alice', 5);
    t += 15 * MIN;
    expect(await lockout.unlock('alice')).toBe(false);
  });

  it('honours configured limits', async () => {
    lockout = make({ maxFailures: 3, windowMs: 60 * SEC, durationMs: 2 * MIN });
    await fail('alice', 2);
    t += 61 * SEC;
    await fail('alice', 2);
    await expectUnlocked('alice');
    await fail('alice', 1);
    await expectLocked('alice', 120);
    t += 2 * MIN;
    await expectUnlocked('alice');
  });
});

describe('lockedError', () => {
  it('is 423 account_locked with Retry-After in whole seconds, at least 1', () => {
    for (const [ms, s] of [
      [900_000, '900'],
      [1500, '2'],
      [1, '1'],
      [0, '1'],
    ] as const) {
      const e = lockedError(ms);
      expect(e.status).toBe(423);
      expect(e.code).toBe('account_locked');
      expect(e.headers?.['retry-after']).toBe(s);
      expect(e.message).toContain(`${s} s`);
    }
  });
});
