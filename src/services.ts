import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { availableParallelism } from 'node:os';
import type { Logger } from 'pino';
import type { Redis } from 'ioredis';
import type { Config } from './config/index.js';
import { assertProductionReady } from './config/production.js';
import { configuredKeys } from './preflight.js';
import { Errors, is } from './errors/index.js';
import { Metrics } from './metrics/index.js';
import { openDatabase } from './store/sql/index.js';
import type { AttemptCounter, Database, LockoutStore, RateLimitStore, RevocationList, StateClock, TotpReplayGuard } from './store/ports.js';
import { MemoryRevocationList, RevocationSync } from './store/state/revocations.js';
import { MemoryAttemptCounter, MemoryLockoutStore, MemoryRateLimitStore, MemoryTotpReplayGuard } from './store/state/memory.js';
import { RedisAttemptCounter, RedisLockoutStore, RedisRateLimitStore, RedisTotpReplayGuard } from './store/state/redis-stores.js';
import { TokenService, generateSigningJwk, loadKeySet, loadOrCreateKeyFile, type KeySet } from './tokens/index.js';
import { Lockout, MfaService, SecretBox, loadSecretBox, passwordTools, type PasswordHasher, type PasswordPolicy } from './auth/index.js';
import { AuthService } from './auth/login-flow.js';
import { UserAdmin } from './auth/user-admin.js';
import { createLogger } from './http/log.js';
import { databaseLabel, type Dependency } from './http/admin.js';

/** The short-lived state: one adapter per purpose, all on one backend and one clock. */
export interface AppState {
  /** Where it lives: in this process (embedded), or in Redis, shared by every replica. */
  readonly backend: 'memory' | 'redis';
  readonly lockouts: LockoutStore;
  readonly totpSteps: TotpReplayGuard;
  readonly mfaAttempts: AttemptCounter;
}

/** A dependency `/readyz` checks (declared beside the admin listener that reports on it). */
export type { Dependency } from './http/admin.js';

export interface ServicesOptions {
  config: Config;
  env?: NodeJS.ProcessEnv;
  logger?: Logger;
  /** Injected clock (tests move time instead of sleeping). */
  now?: () => Date;
  /** Poll interval of the revocation list sync. @default 1000 */
  revocationPollMs?: number;
  /**
   * `gateway`: a long-running server (waits for Redis at start, reads the Redis server's time).
   * `command`: a one-shot CLI command (Redis is connected only by {@link Services.connectState},
   * by the commands that need it). @default 'gateway'
   */
  role?: 'gateway' | 'command';
}

/**
 * Everything the gateway and the CLI do, built from one config: the only place that picks
 * SQLite or PostgreSQL, and memory or Redis. The HTTP servers (servers.ts) and the CLI
 * commands both call these services; neither builds a store of its own.
 */
export interface Services {
  readonly config: Config;
  readonly env: NodeJS.ProcessEnv;
  readonly log: Logger;
  readonly metrics: Metrics;
  readonly now: () => Date;
  readonly db: Database;
  /** Migrations applied when the services opened (serve and every command apply pending ones). */
  readonly migrated: readonly string[];
  readonly keySet: KeySet;
  readonly tokens: TokenService;
  readonly hasher: PasswordHasher;
  readonly policy: PasswordPolicy;
  /** Revocations: made durable by the caller, then local at once and broadcast to replicas (Redis). */
  readonly revocations: RevocationList;
  /** This process's copy of the revocation list (listeners close tunnels of revoked sessions). */
  readonly localRevocations: MemoryRevocationList;
  readonly state: AppState;
  readonly lockout: Lockout;
  readonly auth: AuthService;
  readonly mfa: MfaService;
  readonly users: UserAdmin;
  /** What `/readyz` checks. */
  readonly dependencies: readonly Dependency[];
  /** A rate-limit store: Redis counts are shared (namespaced per limiter); in process each limiter gets its own. */
  rateLimitStore(): RateLimitStore;
  /** Connects the state store now (a no-op without Redis); rejects with a plain message when it cannot. */
  connectState(timeoutMs?: number): Promise<void>;
  /** Creates the first admin account when there is no user at all. */
  bootstrapAdmin(announce: (line: string) => void): Promise<void>;
  /** Background work of a server: revocation sync and broadcast subscription, hourly purge. */
  startBackground(): Promise<void>;
  /** Stops background work, waits briefly for pending broadcasts, closes Redis and the database. */
  close(): Promise<void>;
}

/**
 * Signing keys and the encryption key of TOTP secrets. A gateway reads the configured ones, or
 * in embedded mode generates them into `data_dir` (with a warning). A command signs no token
 * and decrypts no secret: it gets throwaway keys in memory and touches no key file, so
 * `migrate` or `user list` need neither the keys nor a writable `data_dir`.
 */
async function loadSecrets(config: Config, env: NodeJS.ProcessEnv, log: Logger, role: 'gateway' | 'command'): Promise<{ keySet: KeySet; box: SecretBox }> {
  if (role === 'command') return { keySet: await loadKeySet({ keys: [await generateSigningJwk()] }), box: new SecretBox(randomBytes(32).toString('base64')) };
  const warn = (msg: string) => log.warn({ event: 'keys_generated' }, msg);
  const keySet = (await configuredKeys(config, env)) ?? (await loadOrCreateKeyFile(join(config.data_dir, 'signing-keys.json'), warn));
  return { keySet, box: loadSecretBox(env, join(config.data_dir, 'encryption.key'), warn) };
}

/** How long close() waits for revocation broadcasts still in flight. */
const BROADCAST_DRAIN_MS = 2000;

/** Builds the services a config describes (see {@link Services}). */
export async function openServices(opts: ServicesOptions): Promise<Services> {
  const { config } = opts;
  const env = opts.env ?? process.env;
  const role = opts.role ?? 'gateway';
  const now = opts.now ?? (() => new Date());
  const log = opts.logger ?? createLogger(config.log_level);
  // Production refuses to guess: one line naming everything missing, before anything is opened.
  // (A command needs none of it: it signs nothing and decrypts nothing.)
  if (role === 'gateway') assertProductionReady(config, env);
  const metrics = new Metrics();
  const { keySet, box } = await loadSecrets(config, env, log, role);
  const db = await openDatabase(config.storage.database_url, {
    log: (msg, extra) => (msg === 'migration applied' ? log.info(extra ?? {}, msg) : log.warn(extra ?? {}, msg)),
  });
  let migrated: string[];
  try {
    const applied = await db.migrate();
    migrated = applied;
    if (applied.length) log.info({ event: 'migrated', applied }, 'database migrations applied');
  } catch (e) {
    await db.close();
    throw e;
  }

  const tokens = new TokenService({ keySet, issuer: config.issuer, audience: config.auth.audience, accessTtlMs: config.auth.access_ttl, now });
  // argon2 runs are bounded per process (SPEC §12); worker processes share the default slots.
  const { hasher, policy } = passwordTools(config.auth, { metrics, processes: config.workers === 'auto' ? availableParallelism() : config.workers });

  // Shared state: Redis when configured (several replicas act as one), else in process.
  // ioredis is loaded only when Redis is configured (it costs ~8 MB of RSS).
  const redisModule = config.storage.redis_url ? await import('./store/state/redis.js') : undefined;
  const redis: Redis | undefined = redisModule?.createRedisClient(config.storage.redis_url, {
    // A command reports its own failure in one line; a server logs each outage once.
    log: role === 'command' ? undefined : (msg, extra) => log.warn(extra ?? {}, msg),
    lazyConnect: role === 'command',
  });
  const prefix = config.storage.redis_prefix;
  if (redis && role === 'gateway') {
    // Wait briefly for Redis so the first requests find it connected; if it is down the
    // gateway still starts (not ready, sign-in answering 503) and recovers when Redis returns.
    await redisModule!
      .redisReady(redis, 3000)
      .catch((e) => log.error({ event: 'state_store', err: (e as Error).message }, 'Redis is not reachable at start; sign-in will answer 503 until it is'));
  }
  // Every state adapter reads one clock. Tests inject theirs (and move it). A gateway's Redis
  // adapters read the Redis server's time, so replicas with drifting clocks still agree on
  // every window and lock; in process there is only this process's clock.
  const redisClock = redis && role === 'gateway' && !opts.now ? new redisModule!.RedisTimeClock(redis) : undefined;
  await redisClock?.start();
  const stateClock: StateClock = redisClock ? redisClock.now : () => now().getTime();
  const state: AppState = redis
    ? {
        backend: 'redis',
        lockouts: new RedisLockoutStore(redis, prefix, stateClock),
        totpSteps: new RedisTotpReplayGuard(redis, prefix, stateClock),
        mfaAttempts: new RedisAttemptCounter(redis, prefix, stateClock),
      }
    : {
        backend: 'memory',
        lockouts: new MemoryLockoutStore(stateClock),
        totpSteps: new MemoryTotpReplayGuard(stateClock),
        mfaAttempts: new MemoryAttemptCounter(stateClock),
      };
  const redisRateLimits = redis ? new RedisRateLimitStore(redis, prefix, stateClock) : undefined;

  const localRevocations = new MemoryRevocationList(now);
  const revocationSync = new RevocationSync(db.sessions, localRevocations, {
    intervalMs: opts.revocationPollMs ?? 1000,
    now,
    onError: (e) => log.warn({ err: (e as Error).message }, 'revocation sync failed; keeping the last known list'),
  });
  const bus = redis
    ? new redisModule!.RedisRevocationBus(redis, config.storage.redis_url, prefix, {
        log: (msg, extra) => log.warn(extra ?? {}, msg),
        onRevoked: (sid, until) => localRevocations.add(sid, until),
        // Messages sent while disconnected are lost: reload the whole list from the database.
        onResync: () => revocationSync.resync(),
      })
    : undefined;
  /** Broadcasts not yet answered: close() waits for them (a CLI command exits right after). */
  const pending = new Set<Promise<void>>();
  /** Set while broadcasts fail: one warning an outage, not one a revoked session. */
  let broadcastDown = false;
  const broadcastFailed = (why: string) => {
    if (broadcastDown) return;
    broadcastDown = true;
    log.warn(
      { event: 'revocation_not_broadcast', err: why },
      'revocations are not broadcast through Redis; gateways pick them up from the database within a second',
    );
  };
  const revocations: RevocationList = {
    isRevoked: (sid) => localRevocations.isRevoked(sid),
    size: () => localRevocations.size(),
    add: (sid, until) => {
      localRevocations.add(sid, until);
      if (!bus) return;
      if (redis!.status !== 'ready') return broadcastFailed('Redis is not connected');
      const p = bus
        .publish(sid, until)
        .then(
          () => {
            broadcastDown = false;
          },
          (e) => broadcastFailed((e as Error).message),
        )
        .finally(() => pending.delete(p));
      pending.add(p);
    },
  };

  const lockout = new Lockout(
    state.lockouts,
    { maxFailures: config.auth.lockout.max_failures, windowMs: config.auth.lockout.window, durationMs: config.auth.lockout.duration },
    metrics,
    log,
  );
  const auth = new AuthService({
    db,
    tokens,
    hasher,
    policy,
    revocations,
    metrics,
    log,
    now,
    sessionMaxAgeMs: config.auth.session_max_age,
    refreshTtlMs: config.auth.refresh_ttl,
    lockout,
  });
  const mfa = new MfaService({
    db,
    totpSteps: state.totpSteps,
    mfaAttempts: state.mfaAttempts,
    box,
    tokens,
    lockout,
    hasher,
    metrics,
    log,
    now,
    issuer: config.name,
  });
  const users = new UserAdmin({ db, hasher, policy, auth, mfa, lockout, now });

  let purgeTimer: NodeJS.Timeout | undefined;
  /** Hourly: drop sessions (and with them their refresh tokens) a day past their expiry. */
  async function purge(): Promise<void> {
    try {
      const cutoff = new Date(now().getTime() - 86_400_000);
      const sessions = await db.sessions.purgeExpired(cutoff);
      const refresh = await db.refreshTokens.purgeExpired(cutoff);
      if (sessions || refresh) log.info({ event: 'purged', sessions, refresh_tokens: refresh }, 'expired sessions purged');
    } catch (e) {
      log.warn({ err: (e as Error).message }, 'purge failed');
    }
  }

  return {
    config,
    env,
    log,
    metrics,
    now,
    db,
    migrated,
    keySet,
    tokens,
    hasher,
    policy,
    revocations,
    localRevocations,
    state,
    lockout,
    auth,
    mfa,
    users,
    dependencies: [
      // Named plainly in /readyz and the log: the kind and where it is (never a password).
      { name: 'database', what: databaseLabel(config.storage.database_url), ping: () => db.ping() },
      { name: 'state_store', ping: async () => void (await redis?.ping()), describe: () => (redis ? redisModule!.redisFailure(redis) : undefined) },
    ],
    rateLimitStore: () => redisRateLimits ?? new MemoryRateLimitStore(stateClock),
    async connectState(timeoutMs = 3000) {
      if (!redis || redis.status === 'ready') return;
      try {
        await redisModule!.redisReady(redis, timeoutMs);
      } catch (e) {
        throw new Error(`cannot reach Redis (storage.redis_url): ${(e as Error).message}`);
      }
    },
    async bootstrapAdmin(announce) {
      if ((await db.users.count()) > 0) return;
      const given = env.PORTCULLIS_BOOTSTRAP_ADMIN_PASSWORD;
      const password = given || randomPassword();
      if (given) policy.assert(given, { username: 'admin' });
      try {
        await db.users.create({ username: 'admin', email: null, roles: ['admin'], passwordHash: await hasher.hash(password) });
      } catch (e) {
        // Another replica or worker starting at the same moment created it first.
        if (is(e, Errors.user_exists)) return;
        throw e;
      }
      log.warn({ event: 'bootstrap_admin', username: 'admin' }, 'created the first admin account');
      if (!given) announce(`portcullis: first admin account created: username "admin", password "${password}" (shown once; change it)`);
    },
    async startBackground() {
      await revocationSync.start();
      // A bus that cannot connect now keeps trying, and resynchronises from the database
      // once it is subscribed; the database poll covers the gap.
      if (bus) await bus.start().catch((e) => log.error({ event: 'state_store', err: (e as Error).message }, 'revocation broadcast not connected yet'));
      purgeTimer = setInterval(() => void purge(), 3_600_000);
      purgeTimer.unref();
    },
    async close() {
      revocationSync.stop();
      if (purgeTimer) clearInterval(purgeTimer);
      if (pending.size) await Promise.race([Promise.allSettled([...pending]), new Promise((r) => setTimeout(r, BROADCAST_DRAIN_MS).unref())]);
      redisClock?.stop();
      await bus?.close();
      if (redis) await redisModule!.closeRedisClient(redis);
      await db.close();
    },
  };
}

/** 24 random characters from an unambiguous alphabet (strong enough for any policy). */
export function randomPassword(): string {
  const alphabet = 'abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789';
  const bytes = randomBytes(24);
  return Array.from(bytes, (b) => alphabet[b % alphabet.length]).join('');
}
