/**
 * Lockout against concurrent guessing (SPEC §4: 5 failures lock the username). Guesses that
 * arrive together used to all pass the lock check before any failure was counted, so a burst of
 * N got N tries. Guesses for one username are now judged one at a time (on every replica, through
 * the state store): a burst gets at most `max_failures` verdicts, the rest 423 (or 429 while
 * waiting for their turn). In-process state and Redis alike; CI=true requires Redis.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { GOOD_PASSWORD, addUser, login, startHarness, type Harness } from './support/helpers.js';
import { redisReachable } from './support/services.js';

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const PREFIX = `pc-burst:${process.pid}:${Date.now().toString(36)}:`;
const redisUp = await redisReachable(REDIS_URL);
if (!redisUp && process.env.CI === 'true') throw new Error(`lockout-burst.e2e needs Redis at ${REDIS_URL}, and CI=true requires it`);

const AUTH = `
auth:
  login_rate_limit: { requests: 100000, per: 1m }
  api_rate_limit: { requests: 100000, per: 1m }
`;
const WRONG = 'definitely not the password 11';
const BURST = 20;

afterAll(async () => {
  if (!redisUp) return;
  const r = new Redis(REDIS_URL);
  const keys = await r.keys(`${PREFIX}*`);
  if (keys.length) await r.del(...keys);
  r.disconnect();
});

for (const kind of ['memory', 'redis'] as const) {
  describe.runIf(kind === 'memory' || redisUp)(`a burst of concurrent guesses (${kind} state)`, () => {
    let h: Harness;
    afterAll(async () => {
      await h?.close();
    });

    it(`${BURST} concurrent wrong sign-ins for one username: at most 5 are judged, then the username is locked`, async () => {
      h = await startHarness({ extraYaml: AUTH, ...(kind === 'redis' ? { redisUrl: REDIS_URL, redisPrefix: `${PREFIX}${kind}:` } : {}) });
      await addUser(h, 'carol', ['staff']);
      const statuses = await Promise.all(
        Array.from({ length: BURST }, () =>
          fetch(`${h.url}/api/auth/login`, {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ username: 'carol', password: WRONG }),
          }).then((r) => r.status),
        ),
      );
      const judged = statuses.filter((s) => s === 401).length;
      expect(judged, statuses.join(',')).toBeLessThanOrEqual(5);
      expect(
        statuses.every((s) => s === 401 || s === 423 || s === 429),
        statuses.join(','),
      ).toBe(true);
      const right = await fetch(`${h.url}/api/auth/login`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ username: 'carol', password: GOOD_PASSWORD }),
      });
      expect(right.status).toBe(423);
    });

    it(`${BURST} concurrent wrong password confirmations (POST /password): at most 5 are judged`, async () => {
      await addUser(h, 'dave', ['staff']);
      const token = await login(h, 'dave');
      const statuses = await Promise.all(
        Array.from({ length: BURST }, () =>
          fetch(`${h.url}/api/auth/password`, {
            method: 'POST',
            headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
            body: JSON.stringify({ current_password: WRONG, new_password: 'another long unusual passphrase 77' }),
          }).then((r) => r.status),
        ),
      );
      const judged = statuses.filter((s) => s === 403).length;
      expect(judged, statuses.join(',')).toBeLessThanOrEqual(5);
      expect(
        statuses.every((s) => s === 403 || s === 423 || s === 429),
        statuses.join(','),
      ).toBe(true);
      const right = await fetch(`${h.url}/api/auth/password`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
        body: JSON.stringify({ current_password: GOOD_PASSWORD, new_password: 'another long unusual passphrase 77' }),
      });
      expect(right.status).toBe(423);
    });
  });
}
