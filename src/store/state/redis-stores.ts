import { createHash, randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { AttemptCounter, LockoutPolicy, LockoutStore, RateLimitStore, StateClock, TotpReplayGuard } from '../ports.js';

/**
 * Redis adapters of the short-lived state ports, for several gateway processes acting as one.
 * Each adapter owns its keys (all under the configured prefix; the layout is in README.md).
 *
 * Time is the injected clock, passed to every script as an argument and kept in the data (an
 * entry's end is stored as an absolute time), so the same clock drives the memory and the
 * Redis adapters and tests move it instead of sleeping. Key expiry (PX/PEXPIRE) is only garbage
 * collection: it is the span plus {@link GC_MARGIN_MS}, so the stored end time always decides,
 * even when the clock runs behind Redis's. In production the clock is Redis's own time
 * (`RedisTimeClock`), so replicas whose clocks differ still agree on every window and lock.
 *
 * Every read-modify-write is one Lua script (atomic across processes). Scripts run by EVALSHA
 * and fall back to EVAL when the server lost them.
 */

/** A Lua script run by EVALSHA, falling back to EVAL (which caches it) when the server lost it. */
class LuaScript {
  private readonly sha: string;
  constructor(private readonly lua: string) {
    this.sha = createHash('sha1').update(lua).digest('hex');
  }

  async run(client: Redis, keys: string[], args: (string | number)[]): Promise<unknown> {
    try {
      return await client.evalsha(this.sha, keys.length, ...keys, ...args);
    } catch (e) {
      // NOSCRIPT: first use on this server, or it restarted / ran SCRIPT FLUSH.
      if (!(e instanceof Error) || !e.message.includes('NOSCRIPT')) throw e;
      return client.eval(this.lua, keys.length, ...keys, ...args);
    }
  }
}

/** How long a key outlives its logical end before Redis drops it. */
export const GC_MARGIN_MS = 60_000;

// Absolute times are computed in JS and passed as strings: Lua would print a large number in
// floating-point notation on older servers.

// KEYS[1] = failure log (sorted set, scored by time), KEYS[2] = lock (its end time).
// ARGV: now, window ms, max failures, lock key expiry ms, a unique member, lock end, failure log expiry ms.
const RECORD_FAILURE = new LuaScript(`
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[5])
local failures = redis.call('ZCARD', KEYS[1])
if failures < tonumber(ARGV[3]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[7])
  return {failures, 0}
end
redis.call('DEL', KEYS[1])
local lockedUntil = tonumber(redis.call('GET', KEYS[2]))
if lockedUntil and lockedUntil > now then return {failures, 0} end
redis.call('SET', KEYS[2], ARGV[6], 'PX', ARGV[4])
return {failures, 1}
`);

// KEYS[1] = lock, KEYS[2] = failure log; ARGV[1] = now. 1 when a live lock was cleared.
const UNLOCK = new LuaScript(`
local lockedUntil = tonumber(redis.call('GET', KEYS[1]))
redis.call('DEL', KEYS[1], KEYS[2])
if lockedUntil and lockedUntil > tonumber(ARGV[1]) then return 1 end
return 0
`);

// KEYS[1] = a claim (its end time); ARGV: now, end, key expiry ms. 1 when taken, 0 while another holds it.
const CLAIM_UNTIL = new LuaScript(`
local heldUntil = tonumber(redis.call('GET', KEYS[1]))
if heldUntil and heldUntil > tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
`);

// KEYS[1] = a turn ("<end>:<holder>"); ARGV: now, the new value, key expiry ms. 1 when taken.
const TAKE_TURN = new LuaScript(`
local held = redis.call('GET', KEYS[1])
if held then
  local heldUntil = tonumber(string.match(held, '^(%d+):'))
  if heldUntil and heldUntil > tonumber(ARGV[1]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
`);

// KEYS[1] = a turn; ARGV[1] = the holder. Deletes it only while that holder holds it.
const RELEASE_TURN = new LuaScript(`
local held = redis.call('GET', KEYS[1])
if held and string.sub(held, -string.len(ARGV[1]) - 1) == ':' .. ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
`);

// KEYS[1] = last step (hash: step, until); ARGV: now, step, end, key expiry ms. Accept only a greater step.
const CLAIM_TOTP_STEP = new LuaScript(`
local last = redis.call('HMGET', KEYS[1], 'step', 'until')
if last[1] and last[2] and tonumber(last[2]) > tonumber(ARGV[1]) and tonumber(last[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], 'step', ARGV[2], 'until', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
`);

// KEYS[1] = a fixed-window counter (hash: count, reset); ARGV: now, the end of a window starting
// now, the garbage-collection margin ms.
// The window starts at the first hit and later hits do not extend it.
const HIT_WINDOW = new LuaScript(`
local now = tonumber(ARGV[1])
local reset = redis.call('HGET', KEYS[1], 'reset')
if reset and tonumber(reset) <= now then
  redis.call('DEL', KEYS[1])
  reset = false
end
if not reset then
  -- A new window. A count left without an end (written by something else) gets one too,
  -- rather than counting forever.
  reset = ARGV[2]
  redis.call('HSET', KEYS[1], 'reset', reset)
end
local count = redis.call('HINCRBY', KEYS[1], 'count', 1)
local left = tonumber(reset) - now
redis.call('PEXPIRE', KEYS[1], left + tonumber(ARGV[3]))
return {count, left}
`);

/** Milliseconds as Redis wants them: a positive integer. */
function ms(value: number, what: string): number {
  if (!Number.isFinite(value)) throw new RangeError(`${what} must be a finite number of milliseconds, got ${value}`);
  return Math.max(1, Math.ceil(value));
}

/** What every Redis adapter shares: the client, the key prefix and the clock. */
abstract class RedisAdapter {
  constructor(
    protected readonly client: Redis,
    protected readonly prefix: string,
    private readonly clock: StateClock = Date.now,
  ) {}

  /** The injected time as a whole millisecond (scripts compare integers). */
  protected now(): number {
    return Math.floor(this.clock());
  }

  /** Takes a claim that lasts `ttlMs` unless a live one exists (see CLAIM_UNTIL). */
  protected async claimUntil(key: string, ttlMs: number): Promise<boolean> {
    const ttl = ms(ttlMs, 'ttlMs');
    const t = this.now();
    return Number(await CLAIM_UNTIL.run(this.client, [key], [t, String(t + ttl), ttl + GC_MARGIN_MS])) === 1;
  }

  /** Counts one hit in a fixed window (see HIT_WINDOW). */
  protected async hitWindow(key: string, windowMs: number): Promise<{ count: number; resetMs: number }> {
    const window = ms(windowMs, 'windowMs');
    const t = this.now();
    const [count, resetMs] = (await HIT_WINDOW.run(this.client, [key], [t, String(t + window), GC_MARGIN_MS])) as [number, number];
    return { count: Number(count), resetMs: Number(resetMs) };
  }
}

/**
 * {@link LockoutStore} in Redis. Keys: `lockout:fail:<username>` (sorted set of failure
 * times), `lockout:lock:<username>` and `lockout:turn:<username>` (their end times).
 */
export class RedisLockoutStore extends RedisAdapter implements LockoutStore {
  private failKey(username: string): string {
    return `${this.prefix}lockout:fail:${username}`;
  }

  private lockKey(username: string): string {
    return `${this.prefix}lockout:lock:${username}`;
  }

  private turnKey(username: string): string {
    return `${this.prefix}lockout:turn:${username}`;
  }

  async recordFailure(username: string, policy: LockoutPolicy): Promise<{ failures: number; locked: boolean }> {
    const window = ms(policy.windowMs, 'windowMs');
    const duration = ms(policy.durationMs, 'durationMs');
    const t = this.now();
    // Two failures in the same millisecond are two members.
    const member = `${t}:${randomBytes(6).toString('hex')}`;
    const reply = await RECORD_FAILURE.run(
      this.client,
      [this.failKey(username), this.lockKey(username)],
      [t, window, policy.maxFailures, duration + GC_MARGIN_MS, member, String(t + duration), window + GC_MARGIN_MS],
    );
    const [failures, locked] = reply as [number, number];
    return { failures: Number(failures), locked: Number(locked) === 1 };
  }

  async clearFailures(username: string): Promise<void> {
    await this.client.del(this.failKey(username));
  }

  async lockedFor(username: string): Promise<number> {
    const until = Number(await this.client.get(this.lockKey(username)));
    // null reads as 0: not locked.
    return Math.max(0, until - this.now());
  }

  async unlock(username: string): Promise<boolean> {
    return Number(await UNLOCK.run(this.client, [this.lockKey(username), this.failKey(username)], [this.now()])) === 1;
  }

  async takeTurn(username: string, holder: string, ttlMs: number): Promise<boolean> {
    const ttl = ms(ttlMs, 'ttlMs');
    const t = this.now();
    return Number(await TAKE_TURN.run(this.client, [this.turnKey(username)], [t, `${t + ttl}:${holder}`, ttl + GC_MARGIN_MS])) === 1;
  }

  async releaseTurn(username: string, holder: string): Promise<void> {
    await RELEASE_TURN.run(this.client, [this.turnKey(username)], [holder]);
  }
}

/** {@link TotpReplayGuard} in Redis. Key: `totp:last:<userId>` (hash: last step and until when it is remembered). */
export class RedisTotpReplayGuard extends RedisAdapter implements TotpReplayGuard {
  async claim(userId: string, step: number, ttlMs: number): Promise<boolean> {
    if (!Number.isSafeInteger(step)) throw new RangeError(`TOTP step must be an integer, got ${step}`);
    const ttl = ms(ttlMs, 'ttlMs');
    const t = this.now();
    return Number(await CLAIM_TOTP_STEP.run(this.client, [`${this.prefix}totp:last:${userId}`], [t, step, String(t + ttl), ttl + GC_MARGIN_MS])) === 1;
  }
}

/** {@link AttemptCounter} in Redis. Keys: `mfa:attempts:<jti>` (a fixed-window counter) and `mfa:done:<jti>`. */
export class RedisAttemptCounter extends RedisAdapter implements AttemptCounter {
  async attempt(jti: string, ttlMs: number): Promise<number> {
    return (await this.hitWindow(`${this.prefix}mfa:attempts:${jti}`, ttlMs)).count;
  }

  async complete(jti: string, ttlMs: number): Promise<boolean> {
    return this.claimUntil(`${this.prefix}mfa:done:${jti}`, ttlMs);
  }
}

/** {@link RateLimitStore} in Redis. Key: `ratelimit:<limiter>:<client>` (a fixed-window counter). */
export class RedisRateLimitStore extends RedisAdapter implements RateLimitStore {
  async hit(limiter: string, client: string, windowMs: number): Promise<{ count: number; resetMs: number }> {
    return this.hitWindow(`${this.prefix}ratelimit:${limiter}:${client}`, windowMs);
  }
}
