import { Redis, type RedisOptions } from 'ioredis';

/** Structured log sink (the app passes a pino child, tests a collector). */
export type RedisLog = (msg: string, extra?: object) => void;

/** Options of {@link createRedisClient}. */
export interface RedisClientOptions {
  /** Where connection errors and recoveries are reported. @default no logging */
  log?: RedisLog;
  /** Do not connect until `connect()` or the first command. @default false */
  lazyConnect?: boolean;
  /** `CLIENT SETNAME` of the connection (shows in `CLIENT LIST`). @default 'portcullis' */
  connectionName?: string;
  /** Raw ioredis options applied over the fail-fast defaults (tests, the subscriber). */
  redisOptions?: Partial<RedisOptions>;
}

/** Reconnect delay: 50 ms doubling, capped at 2 s, with a little jitter; never gives up. */
export function retryDelay(times: number): number {
  const base = Math.min(2000, 50 * 2 ** Math.min(times - 1, 16));
  return Math.min(2000, base + Math.floor(Math.random() * 50));
}

/**
 * An ioredis client that fails fast instead of queueing: while disconnected every command
 * rejects at once (no offline queue), a command without a reply rejects after 800 ms, and a
 * socket that stops answering is torn down and reconnected. It keeps reconnecting forever
 * (capped backoff) and never throws from an `error` event.
 */
export function createRedisClient(url: string, opts: RedisClientOptions = {}): Redis {
  const log = opts.log;
  const client = new Redis(url, {
    lazyConnect: opts.lazyConnect ?? false,
    enableOfflineQueue: false,
    commandTimeout: 800,
    // A connection that accepted a command but sends nothing back for this long is dead
    // (half-open TCP, frozen server): drop it and reconnect rather than wait for keepalive.
    socketTimeout: 3000,
    connectTimeout: 1500,
    maxRetriesPerRequest: 1,
    // A command that timed out was reported as failed; replaying it after a reconnect would
    // count a login failure twice or burn a TOTP step behind the caller's back.
    autoResendUnfulfilledCommands: false,
    retryStrategy: retryDelay,
    connectionName: opts.connectionName ?? 'portcullis',
    ...opts.redisOptions,
  });
  // Without an `error` listener ioredis prints every failed reconnect to stderr. Log the first
  // error of an outage (and any change of error), not one line per retry.
  let lastError: string | undefined;
  client.on('error', (err: Error & { code?: string }) => {
    const text = err.code ?? err.message;
    if (text === lastError) return;
    lastError = text;
    log?.('redis connection error', { err: err.message, code: err.code, connection: opts.connectionName ?? 'portcullis' });
  });
  client.on('ready', () => {
    if (lastError !== undefined) log?.('redis connection restored', { connection: opts.connectionName ?? 'portcullis' });
    lastError = undefined;
  });
  return client;
}

/**
 * The Redis server's time, read through this process's clock: the offset between the two is
 * measured with `TIME` (halving the round trip) at start and every `intervalMs`. Every replica's
 * Redis state adapters read it, so windows, locks and TOTP steps are judged on one shared time
 * even when the replicas' own clocks drift apart. A failed measurement keeps the last offset.
 */
export class RedisTimeClock {
  private offset = 0;
  private timer: NodeJS.Timeout | undefined;

  /** @param intervalMs how often the offset is measured again. @default 30000 */
  constructor(
    private readonly client: Pick<Redis, 'time'>,
    private readonly intervalMs = 30_000,
  ) {}

  /** Milliseconds since the epoch, by the Redis server's clock. */
  readonly now = (): number => Date.now() + this.offset;

  /** Measures the offset once. */
  async sync(): Promise<void> {
    const before = Date.now();
    const [seconds, micros] = await this.client.time();
    const after = Date.now();
    this.offset = Number(seconds) * 1000 + Math.floor(Number(micros) / 1000) - Math.round((before + after) / 2);
  }

  /** Measures now (best effort) and then every `intervalMs` until {@link stop}. */
  async start(): Promise<void> {
    await this.sync().catch(() => undefined);
    this.timer = setInterval(() => void this.sync().catch(() => undefined), this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }
}

/** Resolves once `client` is ready to take commands; rejects after `timeoutMs` (the client keeps trying). */
export function redisReady(client: Redis, timeoutMs = 3000): Promise<void> {
  if (client.status === 'ready') return Promise.resolve();
  if (client.status === 'end') return Promise.reject(new Error('redis client is closed'));
  if (client.status === 'wait') client.connect().catch(() => undefined);
  return new Promise((resolve, reject) => {
    const done = (err?: Error) => {
      clearTimeout(timer);
      client.off('ready', onReady);
      client.off('end', onEnd);
      if (err) reject(err);
      else resolve();
    };
    const onReady = () => done();
    const onEnd = () => done(new Error('redis client is closed'));
    const timer = setTimeout(() => done(new Error(`redis not ready after ${timeoutMs} ms`)), timeoutMs);
    client.on('ready', onReady);
    client.on('end', onEnd);
  });
}

/** Closes a client (QUIT when connected, else drops it); never hangs. */
export async function closeRedisClient(client: Redis): Promise<void> {
  if (client.status === 'end') return;
  try {
    if (client.status === 'ready') await client.quit();
  } catch {
    // Fall through: the connection is going away either way.
  } finally {
    client.disconnect();
  }
}

/** Options of {@link RedisRevocationBus}. */
export interface RevocationBusOptions {
  log?: RedisLog;
  /** Called for every revocation broadcast by any process on the same prefix (including this one). */
  onRevoked: (sessionId: string, expiresAt: Date) => void;
  /**
   * Called after the subscription is re-established following a disconnect (messages sent
   * meanwhile are lost): reload the revocation list from the database. Not called for the
   * subscription that resolves `start()`. Calls never overlap; errors are logged.
   */
  onResync: () => Promise<void>;
  /**
   * How often the idle subscriber connection is pinged, so a connection that died silently
   * (no FIN/RST) is noticed and re-established. 0 disables. @default 5000
   */
  pingIntervalMs?: number;
}

/** The wire format of a revocation message. */
interface RevocationMessage {
  sessionId: string;
  /** Epoch milliseconds. */
  expiresAt: number;
}

/**
 * Broadcasts revocations to every gateway process sharing a Redis and a key prefix, so a
 * session revoked on one replica is refused by all of them within milliseconds (the database
 * poll remains the safety net). Publishes on the shared client; listens on its own
 * subscriber connection, which it re-subscribes itself after every reconnect and then calls
 * `onResync`, because pub/sub does not replay missed messages.
 */
export class RedisRevocationBus {
  /** The pub/sub channel: `${prefix}revocations`. */
  readonly channel: string;
  private readonly subscriber: Redis;
  private readonly log: RedisLog;
  private startWaiter: { resolve: () => void; reject: (e: Error) => void } | undefined;
  private startPromise: Promise<void> | undefined;
  private closed = false;
  private pingTimer: NodeJS.Timeout | undefined;
  private resyncRunning: Promise<void> | undefined;
  private resyncAgain = false;
  private pinging = false;

  constructor(
    private readonly publisher: Redis,
    subscriberUrl: string,
    prefix: string,
    private readonly opts: RevocationBusOptions,
  ) {
    this.channel = `${prefix}revocations`;
    this.log = opts.log ?? (() => undefined);
    this.subscriber = createRedisClient(subscriberUrl, {
      log: opts.log,
      lazyConnect: true,
      connectionName: 'portcullis-revocations',
      // We subscribe ourselves on every 'ready', so we know when the subscription is back
      // (and only then resync: a resync before it could miss a message sent in between).
      redisOptions: { autoResubscribe: false },
    });
    this.subscriber.on('message', (channel: string, message: string) => {
      if (channel === this.channel) this.deliver(message);
    });
    this.subscriber.on('ready', () => void this.subscribe());
  }

  /**
   * Connects and subscribes. Resolves once subscribed; rejects when the first connection
   * attempt fails (the bus keeps retrying in the background until `close()`, and a later
   * successful subscription calls `onResync`).
   */
  start(): Promise<void> {
    if (this.startPromise) return this.startPromise;
    if (this.closed) return Promise.reject(new Error('revocation bus closed'));
    this.startPromise = new Promise<void>((resolve, reject) => {
      this.startWaiter = { resolve, reject };
    });
    this.subscriber.connect().catch((e: Error) => this.settleStart(e));
    if ((this.opts.pingIntervalMs ?? 5000) > 0) {
      this.pingTimer = setInterval(() => void this.healthCheck(), this.opts.pingIntervalMs ?? 5000);
      this.pingTimer.unref();
    }
    return this.startPromise;
  }

  /** Broadcasts a revocation (the caller has already made it durable). Rejects when Redis is unavailable. */
  async publish(sessionId: string, expiresAt: Date): Promise<void> {
    const at = expiresAt.getTime();
    if (!sessionId || !Number.isFinite(at)) throw new RangeError('publish needs a session id and a valid expiry');
    const message: RevocationMessage = { sessionId, expiresAt: at };
    await this.publisher.publish(this.channel, JSON.stringify(message));
  }

  /** Whether the subscriber connection is currently up (for health reporting). */
  get connected(): boolean {
    return this.subscriber.status === 'ready';
  }

  /** Closes the subscriber connection (not the publisher, which the app shares with the state adapters). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.pingTimer) clearInterval(this.pingTimer);
    this.settleStart(new Error('revocation bus closed'));
    this.subscriber.disconnect();
    await this.resyncRunning;
  }

  private settleStart(err?: Error): void {
    const waiter = this.startWaiter;
    if (!waiter) return;
    this.startWaiter = undefined;
    if (err) waiter.reject(err);
    else waiter.resolve();
  }

  private async subscribe(): Promise<void> {
    if (this.closed) return;
    try {
      await this.subscriber.subscribe(this.channel);
    } catch (e) {
      if (this.closed) return;
      this.log('revocation channel subscription failed; reconnecting', { err: (e as Error).message, channel: this.channel });
      // Force a new connection: its 'ready' tries again.
      if (this.subscriber.status === 'ready') this.dropConnection();
      return;
    }
    if (this.closed) return;
    if (this.startWaiter) {
      this.settleStart();
      return;
    }
    this.log('revocation channel re-subscribed; reloading revocations from the database', { channel: this.channel });
    await this.resync();
  }

  /** Runs onResync; a request arriving while one runs schedules exactly one more. */
  private resync(): Promise<void> {
    if (this.resyncRunning) {
      this.resyncAgain = true;
      return this.resyncRunning;
    }
    this.resyncRunning = (async () => {
      do {
        this.resyncAgain = false;
        try {
          await this.opts.onResync();
        } catch (e) {
          this.log('revocation resync failed', { err: (e as Error).message });
        }
      } while (this.resyncAgain && !this.closed);
    })().finally(() => {
      this.resyncRunning = undefined;
    });
    return this.resyncRunning;
  }

  private async healthCheck(): Promise<void> {
    if (this.closed || this.pinging || this.subscriber.status !== 'ready') return;
    const stream = this.subscriber.stream;
    this.pinging = true;
    try {
      await this.subscriber.ping();
    } catch (e) {
      if (this.closed || this.subscriber.stream !== stream) return;
      this.log('revocation subscriber did not answer a ping; reconnecting', { err: (e as Error).message });
      this.dropConnection();
    } finally {
      this.pinging = false;
    }
  }

  /**
   * Tears the subscriber socket down so ioredis reconnects (and we re-subscribe on 'ready').
   * Not `disconnect(true)`: that ends the socket politely and waits up to 2 s for a server that
   * is not answering, while the client still claims to be ready.
   */
  private dropConnection(): void {
    const stream = this.subscriber.stream;
    if (stream && !stream.destroyed) stream.destroy();
    else if (this.subscriber.status === 'ready') this.subscriber.disconnect(true);
  }

  private deliver(raw: string): void {
    let msg: Partial<RevocationMessage>;
    try {
      msg = JSON.parse(raw) as Partial<RevocationMessage>;
    } catch {
      this.log('malformed revocation message ignored', { channel: this.channel, length: raw.length });
      return;
    }
    if (
      msg === null ||
      typeof msg !== 'object' ||
      typeof msg.sessionId !== 'string' ||
      msg.sessionId.length === 0 ||
      typeof msg.expiresAt !== 'number' ||
      !Number.isFinite(msg.expiresAt)
    ) {
      this.log('malformed revocation message ignored', { channel: this.channel, length: raw.length });
      return;
    }
    try {
      this.opts.onRevoked(msg.sessionId, new Date(msg.expiresAt));
    } catch (e) {
      // ioredis rethrows listener errors as uncaught exceptions: never let one escape.
      this.log('revocation handler failed', { err: (e as Error).message });
    }
  }
}
