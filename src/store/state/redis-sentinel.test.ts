/**
 * The Redis client through Sentinel (`redis+sentinel://`): the ioredis options it builds, what it
 * logs when the Sentinels or the master cannot be reached, and — against a private master,
 * replica and Sentinel (test/support/sentinel.ts) — that the state client, the revocation bus
 * and the Redis clock follow a failover whose old master stays up (`SENTINEL FAILOVER`), and
 * that `rediss+sentinel://` speaks TLS to both the Sentinel and the servers.
 *
 * The SIGKILL failover under sign-in traffic, through real gateways, is test/sentinel.e2e.test.ts.
 * CI rule: with CI=true a missing redis-server fails this file; elsewhere those suites skip, loudly.
 */
import { performance } from 'node:perf_hooks';
import { rmSync } from 'node:fs';
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseRedisUrl, RedisUrlError } from '../../config/redis-url.js';
import { closeRedisClient, createRedisClient, redisConnectionOptions, redisReady, RedisRevocationBus, RedisTimeClock, sentinelRetryDelay } from './redis.js';
import { RedisLockoutStore } from './redis-stores.js';
import { freePort, selfSigned } from '../../../test/support/services.js';
import { haveRedisServer, SentinelSet } from '../../../test/support/sentinel.js';

const IN_CI = process.env.CI === 'true';
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

async function waitFor(what: string, check: () => boolean | Promise<boolean>, timeoutMs: number): Promise<number> {
  const start = performance.now();
  while (!(await check())) {
    if (performance.now() - start > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
  }
  return Math.round(performance.now() - start);
}

describe('Sentinel options', () => {
  it('maps the URL onto ioredis Sentinel options', () => {
    const { url, options } = redisConnectionOptions(
      parseRedisUrl('redis+sentinel://app:pw@10.0.0.1:26380,10.0.0.2/main/4?sentinel_username=mon&sentinel_password=spw'),
    );
    expect(url).toBeUndefined();
    expect(options).toMatchObject({
      sentinels: [
        { host: '10.0.0.1', port: 26380 },
        { host: '10.0.0.2', port: 26379 },
      ],
      name: 'main',
      role: 'master',
      db: 4,
      username: 'app',
      password: 'pw',
      sentinelUsername: 'mon',
      sentinelPassword: 'spw',
      sentinelCommandTimeout: 800,
      failoverDetector: false,
    });
    expect(options.tls).toBeUndefined();
    expect(options.enableTLSForSentinelMode).toBeUndefined();
    const tls = redisConnectionOptions(parseRedisUrl('rediss+sentinel://h/m')).options;
    expect(tls).toMatchObject({ tls: {}, sentinelTLS: {}, enableTLSForSentinelMode: true });
    expect(redisConnectionOptions(parseRedisUrl('redis://h:1/2'))).toEqual({ url: 'redis://h:1/2', options: {} });
  });

  it('keeps the fail-fast options in Sentinel mode, and never stops asking the Sentinels', () => {
    const client = createRedisClient('redis+sentinel://127.0.0.1:1/m', { lazyConnect: true });
    try {
      expect(client.options).toMatchObject({
        enableOfflineQueue: false,
        commandTimeout: 800,
        socketTimeout: 3000,
        connectTimeout: 1500,
        maxRetriesPerRequest: 1,
        autoResendUnfulfilledCommands: false,
        name: 'm',
      });
      expect(client.options.sentinels).toEqual([{ host: '127.0.0.1', port: 1 }]);
      for (const times of [1, 2, 5, 50, 10_000]) {
        // Reconnecting to the master asks the Sentinels each time: often (≤ 500 ms).
        const r = client.options.retryStrategy?.(times);
        expect(typeof r).toBe('number');
        expect(r).toBeLessThanOrEqual(500);
        const d = sentinelRetryDelay(times);
        expect(typeof d).toBe('number');
        expect(d).toBeGreaterThanOrEqual(0);
        expect(d).toBeLessThanOrEqual(2000);
      }
      expect(client.options.reconnectOnError?.(new Error("READONLY You can't write against a read only replica."))).toBe(1);
      expect(client.options.reconnectOnError?.(new Error('ERR something else'))).toBe(false);
    } finally {
      client.disconnect();
    }
  });

  it('refuses a malformed URL with the same message as the config check', () => {
    expect(() => createRedisClient('redis+sentinel://h1:26379', { lazyConnect: true })).toThrow(RedisUrlError);
    expect(() => createRedisClient('redis+sentinel://h1:26379', { lazyConnect: true })).toThrow(/no master name/);
  });
});

describe('Sentinel mode, nothing listening', () => {
  it('says plainly that no Sentinel answered, once, and redisReady and the bus fail fast with that reason', async () => {
    const [a, b] = [await freePort(), await freePort()];
    const url = `redis+sentinel://127.0.0.1:${a},127.0.0.1:${b}/pcmaster`;
    const logs: string[] = [];
    const client = createRedisClient(url, { log: (m) => logs.push(m) });
    const bus = new RedisRevocationBus(client, url, 'pc-test-sentinel-down:', { onRevoked: () => undefined, onResync: async () => undefined });
    try {
      const started = performance.now();
      await expect(redisReady(client, 1000)).rejects.toThrow(
        `redis not ready after 1000 ms: Redis (state store) unreachable: no Sentinel gave the address of master "pcmaster" (127.0.0.1:${a}: cannot connect; 127.0.0.1:${b}: cannot connect)`,
      );
      await expect(client.ping()).rejects.toThrow();
      // The bus does not wait for ioredis's endless Sentinel lookup: its first failed round ends start().
      await expect(bus.start()).rejects.toThrow(/^Redis \(revocation channel\) unreachable: no Sentinel gave the address of master "pcmaster"/);
      expect(performance.now() - started).toBeLessThan(2500);
      await sleep(500);
      // Many lookup rounds failed meanwhile; one line said so.
      expect(logs).toEqual([expect.stringMatching(/^Redis \(state store\) unreachable: no Sentinel gave/)]);
    } finally {
      await bus.close();
      await closeRedisClient(client);
    }
  });
});

if (!haveRedisServer()) {
  if (IN_CI) {
    describe('Sentinel against redis-server', () => {
      it('needs redis-server on PATH (CI=true: this must not be skipped)', () => {
        expect.fail('redis-server is not on PATH');
      });
    });
  } else {
    console.warn('\n⚠  SKIPPING the Sentinel failover tests: redis-server is not on PATH (CI=true makes this a failure)\n');
  }
}

const withRedisServer = describe.runIf(haveRedisServer());

withRedisServer('Sentinel failover while the old master stays up (SENTINEL FAILOVER)', () => {
  const set = new SentinelSet({ password: 'data-pw', sentinelPassword: 'sentinel-pw' });
  const PREFIX = `pc-test-sentinel:${process.pid}:`;
  const closers: (() => Promise<void> | void)[] = [];

  beforeAll(async () => {
    await set.start();
  });
  afterAll(async () => {
    for (const c of closers.reverse()) await c();
    await set.stop();
  });

  it('an unknown master name is named in the log line', async () => {
    const logs: string[] = [];
    const client = createRedisClient(`redis+sentinel://127.0.0.1:${set.sentinelPort}/nosuchmaster?sentinel_password=sentinel-pw`, { log: (m) => logs.push(m) });
    try {
      await expect(redisReady(client, 1000)).rejects.toThrow(/not ready/);
      expect(logs[0]).toBe(
        `Redis (state store) unreachable: no Sentinel gave the address of master "nosuchmaster" (127.0.0.1:${set.sentinelPort} does not know master "nosuchmaster")`,
      );
    } finally {
      await closeRedisClient(client);
    }
  });

  it('state client, revocation bus and Redis clock move to the new master within seconds of the switch', async () => {
    const url = `redis+sentinel://:data-pw@127.0.0.1:${set.sentinelPort}/${set.name}/2?sentinel_password=sentinel-pw`;
    const logs: string[] = [];
    const log = (m: string) => logs.push(m);
    const client = createRedisClient(url, { log });
    closers.push(() => closeRedisClient(client));
    await redisReady(client, 3000);
    const clock = new RedisTimeClock(client);
    await clock.start();
    closers.push(() => clock.stop());
    const received: string[] = [];
    let resyncs = 0;
    const bus = new RedisRevocationBus(client, url, PREFIX, {
      log,
      onRevoked: (sid) => received.push(sid),
      onResync: async () => {
        resyncs++;
      },
    });
    closers.push(() => bus.close());
    await bus.start();
    const lockouts = new RedisLockoutStore(client, PREFIX, clock.now);
    const policy = { maxFailures: 100, windowMs: 60_000, durationMs: 60_000 };

    const [first, second] = set.ports;
    expect((await set.master()).port).toBe(first);
    await lockouts.recordFailure('before', policy);
    expect(await set.node(first, 2).zcard(`${PREFIX}lockout:fail:before`)).toBe(1);

    const syncedBefore = clock.syncedAt!;
    const asked = performance.now();
    expect(await set.sentinel().call('SENTINEL', 'FAILOVER', set.name)).toBe('OK');
    const switched = await waitFor('the Sentinel to name the new master', async () => (await set.master()).port === second, 10_000);

    // Writes land on the new master (not on the old one, which still takes writes until the
    // Sentinel demotes it ~10 s later): the client followed +switch-master.
    const moved = await waitFor(
      'a lockout failure to land on the new master',
      async () => {
        try {
          await lockouts.recordFailure('after', policy);
        } catch {
          return false;
        }
        return (await set.node(second, 2).exists(`${PREFIX}lockout:fail:after`)) === 1;
      },
      5000,
    );
    console.log(`[redis-sentinel] SENTINEL FAILOVER: switch seen after ${switched} ms; the client wrote to the new master ${moved} ms later`);
    // Sentinel demotes the old master only ~10 s after the switch; until then it takes writes.
    expect(moved).toBeLessThan(3000);
    // From then on every write goes to the new master and none to the old one.
    const oldCount = await set.node(first, 2).zcard(`${PREFIX}lockout:fail:after`);
    const newCount = await set.node(second, 2).zcard(`${PREFIX}lockout:fail:after`);
    for (let i = 0; i < 5; i++) await lockouts.recordFailure('after', policy);
    expect(await set.node(second, 2).zcard(`${PREFIX}lockout:fail:after`)).toBe(newCount + 5);
    expect(await set.node(first, 2).zcard(`${PREFIX}lockout:fail:after`)).toBe(oldCount);
    expect(logs).toContain(`Redis (state store) master changed from 127.0.0.1:${first} to 127.0.0.1:${second} (failover)`);

    // The bus re-subscribed on the new master (and resynced); a revocation published now arrives.
    await waitFor('the bus to resubscribe', () => resyncs >= 1, 5000);
    await bus.publish('after-failover', new Date(Date.now() + 60_000));
    await waitFor('the revocation to arrive over the new master', () => received.includes('after-failover'), 2000);
    // The clock measured the new master's time on reconnect.
    expect(clock.syncedAt!).toBeGreaterThan(syncedBefore);
    expect(Math.abs(clock.now() - Date.now())).toBeLessThan(2000);
    expect(performance.now() - asked).toBeLessThan(15_000);
  });
});

withRedisServer('rediss+sentinel:// (TLS to the Sentinel and to the servers)', () => {
  const cert = selfSigned();
  const set = new SentinelSet({ tls: cert });
  afterAll(async () => {
    await set.stop();
    rmSync(cert.dir, { recursive: true, force: true });
  });

  it('connects and writes over TLS; an untrusted certificate is named in the log', async () => {
    await set.start();
    const url = `rediss+sentinel://127.0.0.1:${set.sentinelPort}/${set.name}`;
    const ca = set.ca!;
    const client: Redis = createRedisClient(url, { redisOptions: { tls: { ca }, sentinelTLS: { ca } } });
    try {
      await redisReady(client, 3000);
      expect(await client.set('pc-test-tls', '1')).toBe('OK');
      expect(await set.node(set.ports[0]).get('pc-test-tls')).toBe('1');
      expect((client.stream as { encrypted?: boolean }).encrypted).toBe(true);
    } finally {
      await closeRedisClient(client);
    }
    // A Sentinel whose certificate is not trusted: the lookup fails, and the log says how.
    const logs: string[] = [];
    const untrusted = createRedisClient(url, { log: (m) => logs.push(m) });
    try {
      await expect(redisReady(untrusted, 1500)).rejects.toThrow(/not ready/);
      expect(logs[0]).toBe(
        `Redis (state store) unreachable: no Sentinel gave the address of master "${set.name}" (127.0.0.1:${set.sentinelPort}: cannot connect (TCP or TLS handshake failed))`,
      );
    } finally {
      await closeRedisClient(untrusted);
    }
    // A trusted Sentinel but an untrusted master certificate: named as such.
    const masterLogs: string[] = [];
    const masterUntrusted = createRedisClient(url, { log: (m) => masterLogs.push(m), redisOptions: { sentinelTLS: { ca } } });
    try {
      await expect(redisReady(masterUntrusted, 1500)).rejects.toThrow(/TLS certificate rejected/);
      // (a TLS error carries no address)
      expect(masterLogs[0]).toBe(
        `Redis (state store) unreachable: TLS certificate rejected (self-signed certificate) (master "${set.name}", Sentinel 127.0.0.1:${set.sentinelPort})`,
      );
    } finally {
      await closeRedisClient(masterUntrusted);
    }
  });
});
