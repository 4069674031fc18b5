import { spawnSync } from 'node:child_process';
import type { Redis } from 'ioredis';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { closeRedisClient, createRedisClient, RedisTimeClock, redisReady, RedisRevocationBus } from './redis.js';
import { GC_MARGIN_MS, RedisAttemptCounter, RedisLockoutStore, RedisRateLimitStore, RedisTotpReplayGuard } from './redis-stores.js';
import { describeStatePortsIsolation, type StateHarness, type StatePorts } from '../../../test/support/state-contract.js';
import { describeLockoutStoreContract } from '../../../test/support/lockout-store-contract.js';
import { describeTotpReplayGuardContract } from '../../../test/support/totp-replay-guard-contract.js';
import { describeAttemptCounterContract } from '../../../test/support/attempt-counter-contract.js';
import { describeRateLimitStoreContract } from '../../../test/support/rate-limit-store-contract.js';
import { freePort, PrivateRedis } from '../../../test/support/services.js';

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const IN_CI = process.env.CI === 'true';
/** Every key and channel of this run lives under it, so runs sharing a Redis never meet. */
const RUN_PREFIX = `pc-test:${process.pid}:${Date.now()}:`;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

async function probe(url: string): Promise<boolean> {
  const client = createRedisClient(url, { lazyConnect: true, redisOptions: { retryStrategy: () => null } });
  try {
    await redisReady(client, 2000);
    return (await client.ping()) === 'PONG';
  } catch {
    return false;
  } finally {
    client.disconnect();
  }
}

/** SCAN + DEL of every key under `prefix`; returns how many were deleted. */
async function deleteByPrefix(client: Redis, prefix: string): Promise<number> {
  let cursor = '0';
  let deleted = 0;
  do {
    const [next, keys] = await client.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 500);
    cursor = next;
    if (keys.length) deleted += await client.del(...keys);
  } while (cursor !== '0');
  return deleted;
}

async function countByPrefix(client: Redis, prefix: string): Promise<number> {
  let cursor = '0';
  let n = 0;
  do {
    const [next, keys] = await client.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 500);
    cursor = next;
    n += keys.length;
  } while (cursor !== '0');
  return n;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Polls `check` until it returns true; fails with `what` after `timeoutMs`. */
async function waitFor(what: string, check: () => boolean, timeoutMs: number): Promise<number> {
  const start = Date.now();
  while (!check()) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(10);
  }
  return Date.now() - start;
}

/** The four Redis adapters on one client, prefix and clock. */
function redisPorts(client: Redis, prefix: string, clock: () => number = Date.now): StatePorts {
  return {
    lockouts: new RedisLockoutStore(client, prefix, clock),
    totpSteps: new RedisTotpReplayGuard(client, prefix, clock),
    mfaAttempts: new RedisAttemptCounter(client, prefix, clock),
    rateLimits: new RedisRateLimitStore(client, prefix, clock),
  };
}

// ---------------------------------------------------------------------------------------------
// Reachability: in CI a missing Redis fails the run; elsewhere the suites skip, loudly.
// ---------------------------------------------------------------------------------------------

const reachable = await probe(REDIS_URL);
const haveRedisServer = spawnSync('redis-server', ['--version']).status === 0;

if (!reachable) {
  if (IN_CI) {
    describe('Redis state store', () => {
      it(`needs a Redis at ${REDIS_URL} (CI=true: this must not be skipped)`, () => {
        expect.fail(`Redis is unreachable at ${REDIS_URL}; start it or set REDIS_URL`);
      });
    });
  } else {
    console.warn(`\n⚠  SKIPPING the Redis state store tests: no Redis at ${REDIS_URL} (set REDIS_URL, or CI=true to make this a failure)\n`);
  }
}
if (!haveRedisServer) {
  if (IN_CI) {
    describe('Redis outage tests', () => {
      it('need redis-server on PATH (CI=true: this must not be skipped)', () => {
        expect.fail('redis-server is not on PATH');
      });
    });
  } else {
    console.warn('\n⚠  SKIPPING the Redis outage tests: redis-server is not on PATH\n');
  }
}

const withRedis = describe.runIf(reachable);
const withRedisServer = describe.runIf(haveRedisServer);

// ---------------------------------------------------------------------------------------------
// The contract, against the shared Redis
// ---------------------------------------------------------------------------------------------

let testNo = 0;
const admin = reachable ? createRedisClient(REDIS_URL, { connectionName: 'portcullis-test-admin' }) : undefined;

afterAll(async () => {
  if (!admin) return;
  await redisReady(admin, 3000);
  await deleteByPrefix(admin, RUN_PREFIX);
  const left = await countByPrefix(admin, RUN_PREFIX);
  admin.disconnect();
  expect(left).toBe(0);
});

withRedis('Redis', () => {
  // A prefix per test (tests never see each other's keys) and a fake clock shared by every
  // connection the test opens: the scripts take their time from it, so nothing sleeps.
  const harness = async (): Promise<StateHarness> => {
    const prefix = `${RUN_PREFIX}contract:${++testNo}:`;
    let now = 1_700_000_000_000;
    const clients: Redis[] = [];
    return {
      open: async () => {
        const client = createRedisClient(REDIS_URL);
        await redisReady(client, 3000);
        clients.push(client);
        return redisPorts(client, prefix, () => now);
      },
      advance: (ms) => {
        now += ms;
      },
      cleanup: async () => {
        await deleteByPrefix(admin!, prefix);
        await Promise.all(clients.map((c) => closeRedisClient(c)));
      },
    };
  };
  describeLockoutStoreContract('redis', harness);
  describeTotpReplayGuardContract('redis', harness);
  describeAttemptCounterContract('redis', harness);
  describeRateLimitStoreContract('redis', harness);
  describeStatePortsIsolation('redis', harness);

  describe('Redis adapter specifics', () => {
    let client: Redis | undefined;
    let n = 0;
    const fresh = async () => {
      client = createRedisClient(REDIS_URL);
      await redisReady(client);
      return `${RUN_PREFIX}specifics:${++n}:`;
    };

    afterEach(async () => {
      if (client) await closeRedisClient(client);
      client = undefined;
    });

    it('keeps every key under its prefix, named by purpose, with an expiry', async () => {
      const prefix = await fresh();
      const p = redisPorts(client!, prefix);
      await p.rateLimits.hit('login', '203.0.113.9', 60_000);
      await p.lockouts.recordFailure('bob', { maxFailures: 5, windowMs: 60_000, durationMs: 60_000 });
      await p.lockouts.recordFailure('carl', { maxFailures: 1, windowMs: 60_000, durationMs: 60_000 });
      await p.lockouts.takeTurn('bob', 'h1', 5000);
      await p.totpSteps.claim('user-1', 5, 60_000);
      await p.mfaAttempts.attempt('j1', 60_000);
      await p.mfaAttempts.complete('j1', 60_000);
      const [, keys] = await admin!.scan('0', 'MATCH', `${prefix}*`, 'COUNT', 1000);
      expect(keys.sort()).toEqual(
        ['lockout:fail:bob', 'lockout:lock:carl', 'lockout:turn:bob', 'mfa:attempts:j1', 'mfa:done:j1', 'ratelimit:login:203.0.113.9', 'totp:last:user-1'].map(
          (k) => `${prefix}${k}`,
        ),
      );
      for (const k of keys) {
        const ttl = await admin!.pttl(k);
        expect(ttl, k).toBeGreaterThan(0);
        // The logical span plus the garbage-collection margin, never unbounded.
        expect(ttl, k).toBeLessThanOrEqual(60_000 + GC_MARGIN_MS);
      }
      expect(await admin!.hget(`${prefix}totp:last:user-1`, 'step')).toBe('5');
    });

    it('the injected clock drives the logic; key expiry only collects garbage', async () => {
      const prefix = await fresh();
      let now = Date.now();
      const p = redisPorts(client!, prefix, () => now);
      await p.lockouts.recordFailure('lee', { maxFailures: 1, windowMs: 60_000, durationMs: 60_000 });
      expect(await p.totpSteps.claim('lee', 7, 60_000)).toBe(true);
      now += 60_000;
      // The keys are still there (no real time passed), yet the lock and the step are over.
      expect(await admin!.pttl(`${prefix}lockout:lock:lee`)).toBeGreaterThan(50_000);
      expect(await p.lockouts.lockedFor('lee')).toBe(0);
      expect(await p.totpSteps.claim('lee', 7, 60_000)).toBe(true);
    });

    it('a key outlives its logical end by the margin, so a clock behind real time still decides', async () => {
      const prefix = await fresh();
      const p = redisPorts(client!, prefix, () => 1_000_000);
      await p.lockouts.recordFailure('lou', { maxFailures: 1, windowMs: 200, durationMs: 200 });
      expect(await admin!.pttl(`${prefix}lockout:lock:lou`)).toBeGreaterThan(200 + GC_MARGIN_MS - 5_000);
      expect(await p.lockouts.lockedFor('lou')).toBe(200);
    });

    it('RedisTimeClock reads the time of the Redis server, not of this process', async () => {
      await fresh();
      const server = await client!.time();
      const serverMs = Number(server[0]) * 1000 + Math.floor(Number(server[1]) / 1000);
      // A server whose clock is 20 minutes ahead of ours: the clock follows the server.
      const ahead = { time: async () => [String(Math.floor((Date.now() + 1_200_000) / 1000)), '0'] } as unknown as Redis;
      const skewed = new RedisTimeClock(ahead);
      await skewed.sync();
      expect(Math.abs(skewed.now() - (Date.now() + 1_200_000))).toBeLessThan(2_000);
      // The real server on this machine agrees with the local clock within a second.
      const real = new RedisTimeClock(client!);
      await real.sync();
      expect(Math.abs(real.now() - serverMs)).toBeLessThan(1_000);
      // A failed sync keeps the last offset.
      const broken = { time: async () => Promise.reject(new Error('down')) } as unknown as Redis;
      const kept = new RedisTimeClock(broken);
      await expect(kept.sync()).rejects.toThrow('down');
      expect(Math.abs(kept.now() - Date.now())).toBeLessThan(1_000);
    });

    it('gives a counter left without an end a window instead of counting forever', async () => {
      const prefix = await fresh();
      const p = redisPorts(client!, prefix);
      await admin!.hset(`${prefix}ratelimit:login:stuck`, 'count', '7');
      const r = await p.rateLimits.hit('login', 'stuck', 5000);
      expect(r.count).toBe(8);
      expect(r.resetMs).toBeGreaterThan(0);
      expect(r.resetMs).toBeLessThanOrEqual(5000);
      expect(await admin!.pttl(`${prefix}ratelimit:login:stuck`)).toBeGreaterThan(0);
    });

    it('rejects a non-integer step and a non-finite ttl or window', async () => {
      const prefix = await fresh();
      const p = redisPorts(client!, prefix);
      await expect(p.totpSteps.claim('u', 1.5, 1000)).rejects.toThrow(RangeError);
      await expect(p.rateLimits.hit('login', 'k', Number.NaN)).rejects.toThrow(RangeError);
      await expect(p.lockouts.takeTurn('k', 'h1', Number.POSITIVE_INFINITY)).rejects.toThrow(RangeError);
      await expect(p.lockouts.recordFailure('k', { maxFailures: 5, windowMs: Number.NaN, durationMs: 1000 })).rejects.toThrow(RangeError);
      await expect(p.mfaAttempts.attempt('k', Number.NaN)).rejects.toThrow(RangeError);
    });
  });

  describe('RedisRevocationBus', () => {
    const buses: RedisRevocationBus[] = [];
    const clients: Redis[] = [];
    afterEach(async () => {
      await Promise.all(buses.splice(0).map((b) => b.close()));
      for (const c of clients.splice(0)) c.disconnect();
    });

    async function bus(prefix: string, logs: string[] = []) {
      const publisher = createRedisClient(REDIS_URL);
      clients.push(publisher);
      await redisReady(publisher);
      const received: { sessionId: string; expiresAt: Date }[] = [];
      let resyncs = 0;
      const b = new RedisRevocationBus(publisher, REDIS_URL, prefix, {
        log: (msg) => logs.push(msg),
        onRevoked: (sessionId, expiresAt) => received.push({ sessionId, expiresAt }),
        onResync: async () => {
          resyncs++;
        },
      });
      buses.push(b);
      await b.start();
      return { bus: b, publisher, received, resyncs: () => resyncs };
    }

    it('a revocation published on one bus reaches the other within 1 s', async () => {
      const prefix = `${RUN_PREFIX}bus-a:`;
      const a = await bus(prefix);
      const b = await bus(prefix);
      expect(a.bus.channel).toBe(`${prefix}revocations`);
      const expiresAt = new Date('2031-05-06T07:08:09.123Z');
      await a.bus.publish('sess-123', expiresAt);
      const ms = await waitFor('delivery to the other bus', () => b.received.length > 0, 1000);
      expect(ms).toBeLessThan(1000);
      expect(b.received).toEqual([{ sessionId: 'sess-123', expiresAt }]);
      // The publisher hears itself too (harmless: adding a revocation twice is a no-op).
      await waitFor('delivery to the publishing bus', () => a.received.length > 0, 1000);
      expect(a.received).toEqual([{ sessionId: 'sess-123', expiresAt }]);
      expect(a.resyncs()).toBe(0);
      expect(b.resyncs()).toBe(0);
    });

    it('a bus on another prefix hears nothing', async () => {
      const a = await bus(`${RUN_PREFIX}bus-x:`);
      const same = await bus(`${RUN_PREFIX}bus-x:`);
      const other = await bus(`${RUN_PREFIX}bus-y:`);
      await a.bus.publish('sess-x', new Date(Date.now() + 60_000));
      await waitFor('delivery on the same prefix', () => same.received.length > 0, 1000);
      await sleep(200);
      expect(same.received.map((r) => r.sessionId)).toEqual(['sess-x']);
      expect(other.received).toEqual([]);
    });

    it('ignores malformed messages (and logs them), and survives a throwing handler', async () => {
      const prefix = `${RUN_PREFIX}bus-bad:`;
      const logs: string[] = [];
      const b = await bus(prefix, logs);
      const raw = b.publisher;
      const channel = `${prefix}revocations`;
      for (const junk of [
        'not json',
        'null',
        '[]',
        '{"sessionId":5,"expiresAt":1}',
        '{"sessionId":"s"}',
        '{"sessionId":"","expiresAt":1}',
        '{"sessionId":"s","expiresAt":"soon"}',
      ]) {
        await raw.publish(channel, junk);
      }
      await raw.publish(channel, JSON.stringify({ sessionId: 'good', expiresAt: 2_000_000_000_000 }));
      await waitFor('the valid message', () => b.received.length > 0, 1000);
      expect(b.received).toEqual([{ sessionId: 'good', expiresAt: new Date(2_000_000_000_000) }]);
      expect(logs.filter((m) => m === 'malformed revocation message ignored')).toHaveLength(7);

      // A handler that throws must not take the subscriber (or the process) down.
      const throwing = new RedisRevocationBus(raw, REDIS_URL, prefix, {
        log: (msg) => logs.push(msg),
        onRevoked: () => {
          throw new Error('boom');
        },
        onResync: async () => undefined,
      });
      buses.push(throwing);
      await throwing.start();
      await raw.publish(channel, JSON.stringify({ sessionId: 'after-throw', expiresAt: 2_000_000_000_000 }));
      await waitFor('delivery after a throwing handler', () => logs.includes('revocation handler failed'), 1000);
      await waitFor('the next message', () => b.received.some((r) => r.sessionId === 'after-throw'), 1000);
      expect(throwing.connected).toBe(true);
    });

    it('rejects publishing an invalid revocation', async () => {
      const b = await bus(`${RUN_PREFIX}bus-inv:`);
      await expect(b.bus.publish('', new Date())).rejects.toThrow(RangeError);
      await expect(b.bus.publish('s', new Date(Number.NaN))).rejects.toThrow(RangeError);
    });
  });
});

// ---------------------------------------------------------------------------------------------
// Failure modes, against closed ports and a private redis-server we kill and freeze
// ---------------------------------------------------------------------------------------------

describe('fail-fast', () => {
  it('a store whose Redis port is closed rejects at once instead of hanging', async () => {
    const port = await freePort();
    const logs: string[] = [];
    const client = createRedisClient(`redis://127.0.0.1:${port}`, { log: (m) => logs.push(m) });
    const p = redisPorts(client, 'pc-test-closed:');
    try {
      for (const op of [
        () => p.rateLimits.hit('login', 'k', 1000),
        () => p.totpSteps.claim('u', 1, 1000),
        () => p.lockouts.lockedFor('f'),
        () => p.mfaAttempts.attempt('j', 1000),
        () => client.ping(),
      ]) {
        const start = Date.now();
        await expect(op()).rejects.toThrow();
        expect(Date.now() - start).toBeLessThan(1500);
      }
      // Reconnect attempts keep failing; the error is logged once, not once per attempt.
      await sleep(600);
      expect(logs).toEqual([`Redis (state store) unreachable at 127.0.0.1:${port}: connection refused`]);
    } finally {
      const start = Date.now();
      await closeRedisClient(client);
      expect(Date.now() - start).toBeLessThan(500);
    }
  });

  it('redisReady rejects after its timeout when Redis is down', async () => {
    const port = await freePort();
    const client = createRedisClient(`redis://127.0.0.1:${port}`);
    const start = Date.now();
    await expect(redisReady(client, 300)).rejects.toThrow(/not ready/);
    expect(Date.now() - start).toBeLessThan(1000);
    client.disconnect();
  });

  it('a bus whose first connection fails rejects start()', async () => {
    const port = await freePort();
    const publisher = createRedisClient(`redis://127.0.0.1:${port}`);
    const bus = new RedisRevocationBus(publisher, `redis://127.0.0.1:${port}`, 'pc-test:', {
      onRevoked: () => undefined,
      onResync: async () => undefined,
    });
    const start = Date.now();
    await expect(bus.start()).rejects.toThrow();
    expect(Date.now() - start).toBeLessThan(2000);
    await expect(bus.publish('s', new Date())).rejects.toThrow();
    await bus.close();
    publisher.disconnect();
  });
});

withRedisServer('outages (private redis-server)', () => {
  let server: PrivateRedis | undefined;
  const cleanups: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    server?.thaw();
    for (const c of cleanups.splice(0).reverse()) await c();
    await server?.kill();
    server = undefined;
  });

  async function privateServer(): Promise<PrivateRedis> {
    server = new PrivateRedis(await freePort());
    await server.start();
    return server;
  }

  function watchedBus(url: string, opts: { pingIntervalMs?: number } = {}) {
    const publisher = createRedisClient(url);
    const received: string[] = [];
    let resyncs = 0;
    const logs: string[] = [];
    const bus = new RedisRevocationBus(publisher, url, 'pc-outage:', {
      log: (m) => logs.push(m),
      onRevoked: (sid) => received.push(sid),
      onResync: async () => {
        resyncs++;
      },
      pingIntervalMs: opts.pingIntervalMs,
    });
    cleanups.push(async () => {
      await bus.close();
      publisher.disconnect();
    });
    return { bus, publisher, received, logs, resyncs: () => resyncs };
  }

  it('reloads its scripts after SCRIPT FLUSH or a restart (EVALSHA falls back to EVAL)', async () => {
    // On a private server: flushing the shared one would disturb anyone else's scripts.
    const srv = await privateServer();
    const client = createRedisClient(srv.url);
    const p = redisPorts(client, 'pc-scripts:');
    cleanups.push(() => closeRedisClient(client));
    await redisReady(client);
    expect((await p.rateLimits.hit('login', 'k', 60_000)).count).toBe(1);
    expect(await p.totpSteps.claim('u', 1, 60_000)).toBe(true);
    const admin = createRedisClient(srv.url);
    cleanups.push(() => admin.disconnect());
    await redisReady(admin);
    await admin.script('FLUSH');
    expect((await p.rateLimits.hit('login', 'k', 60_000)).count).toBe(2);
    expect(await p.totpSteps.claim('u', 1, 60_000)).toBe(false);
    // A restart loses scripts and data alike (no persistence here).
    await srv.kill();
    await srv.start();
    await redisReady(client, 10_000);
    expect((await p.rateLimits.hit('login', 'k', 60_000)).count).toBe(1);
    expect(await p.totpSteps.claim('u', 1, 60_000)).toBe(true);
  });

  it('a frozen server: commands reject after the 800 ms command timeout, then recover', async () => {
    const srv = await privateServer();
    const client = createRedisClient(srv.url);
    const limits = new RedisRateLimitStore(client, 'pc-frozen:');
    cleanups.push(() => closeRedisClient(client));
    await redisReady(client);
    expect((await limits.hit('login', 'k', 60_000)).count).toBe(1);

    srv.freeze();
    const start = Date.now();
    await expect(limits.hit('login', 'k', 60_000)).rejects.toThrow(/timed out/i);
    const took = Date.now() - start;
    expect(took).toBeGreaterThanOrEqual(700);
    expect(took).toBeLessThan(1500);

    srv.thaw();
    // Back to normal once the server answers again (the timed-out INCR did run: count 3 next).
    let next: { count: number } | undefined;
    const deadline = Date.now() + 10_000;
    while (!next && Date.now() < deadline) {
      next = await limits.hit('login', 'k', 60_000).catch(() => undefined);
      if (!next) await sleep(100);
    }
    expect(next?.count).toBe(3);
  });

  it('after a Redis restart the bus re-subscribes, calls onResync once, and delivers again', async () => {
    const srv = await privateServer();
    const w = watchedBus(srv.url);
    await redisReady(w.publisher);
    await w.bus.start();
    expect(w.resyncs()).toBe(0);
    await w.bus.publish('before', new Date(Date.now() + 60_000));
    await waitFor('delivery before the outage', () => w.received.includes('before'), 1000);

    await srv.kill();
    await waitFor('the bus to notice the outage', () => !w.bus.connected, 5000);
    await expect(w.bus.publish('during', new Date(Date.now() + 60_000))).rejects.toThrow();
    await sleep(300);
    expect(w.resyncs()).toBe(0);

    await srv.start();
    await waitFor('onResync after the restart', () => w.resyncs() === 1, 10_000);
    expect(w.bus.connected).toBe(true);
    await redisReady(w.publisher, 10_000);
    await w.bus.publish('after', new Date(Date.now() + 60_000));
    await waitFor('delivery after the restart', () => w.received.includes('after'), 1000);
    expect(w.received).toEqual(['before', 'after']);
    await sleep(200);
    expect(w.resyncs()).toBe(1);
  });

  it('a frozen subscriber connection is noticed by the health ping; thawing triggers onResync', async () => {
    const srv = await privateServer();
    const w = watchedBus(srv.url, { pingIntervalMs: 200 });
    await redisReady(w.publisher);
    await w.bus.start();

    srv.freeze();
    await waitFor('the health ping to drop the connection', () => !w.bus.connected, 5000);
    expect(w.logs).toContain('revocation subscriber did not answer a ping; reconnecting');
    expect(w.resyncs()).toBe(0);

    srv.thaw();
    await waitFor('onResync after the thaw', () => w.resyncs() >= 1, 10_000);
    await redisReady(w.publisher, 10_000);
    await w.bus.publish('after-freeze', new Date(Date.now() + 60_000));
    await waitFor('delivery after the thaw', () => w.received.includes('after-freeze'), 1000);
  });

  it('a bus started while Redis was down resyncs once it connects', async () => {
    const srv = await privateServer();
    await srv.kill();
    const w = watchedBus(srv.url);
    await expect(w.bus.start()).rejects.toThrow();
    await srv.start();
    await waitFor('onResync after the late connection', () => w.resyncs() === 1, 10_000);
    await redisReady(w.publisher, 10_000);
    await w.bus.publish('late', new Date(Date.now() + 60_000));
    await waitFor('delivery after the late connection', () => w.received.includes('late'), 1000);
  });
});
