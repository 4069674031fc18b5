import { Redis, type RedisOptions } from 'ioredis';
import { formatHost, parseRedisUrl, type RedisTarget, type SentinelRedisTarget } from '../../config/redis-url.js';

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
  /** What this connection is for, named in its log lines ("Redis (state store) unreachable …"). @default 'state store' */
  purpose?: string;
  /**
   * Called with a plain description each time the connection is found unreachable (first error
   * of an outage or a changed reason, as logged). The revocation bus uses it to fail `start()`.
   */
  onUnreachable?: (description: string) => void;
  /** Raw ioredis options applied over the fail-fast defaults (tests, the subscriber). */
  redisOptions?: Partial<RedisOptions>;
}

/** Reconnect delay: 50 ms doubling, capped at 2 s, with a little jitter; never gives up. */
export function retryDelay(times: number): number {
  const base = Math.min(2000, 50 * 2 ** Math.min(times - 1, 16));
  return Math.min(2000, base + Math.floor(Math.random() * 50));
}

/**
 * How long to wait before asking the Sentinels again after a round in which none gave a master.
 * ioredis also ends a round when it merely reached the end of its list (it continues where the
 * last successful round stopped): that first "round" retries at once.
 */
export function sentinelRetryDelay(times: number): number {
  return times <= 1 ? 0 : retryDelay(times - 1);
}

/** Reconnect delay in Sentinel mode: as {@link retryDelay}, capped at 500 ms. */
export function sentinelReconnectDelay(times: number): number {
  return Math.min(500, retryDelay(times));
}

/** Per-command timeout, also for the Sentinel queries. */
const COMMAND_TIMEOUT_MS = 800;

/**
 * The ioredis options for a `storage.redis_url` (throws `RedisUrlError` for a malformed one;
 * the config loader has refused those already). Plain URLs are handed to ioredis as they are.
 */
export function redisConnectionOptions(target: RedisTarget): { url?: string; options: Partial<RedisOptions> } {
  if (target.kind === 'standalone') return { url: target.url, options: {} };
  return { options: sentinelOptions(target) };
}

function sentinelOptions(t: SentinelRedisTarget): Partial<RedisOptions> {
  const options: Partial<RedisOptions> = {
    sentinels: t.sentinels.map((s) => ({ host: s.host, port: s.port })),
    name: t.name,
    role: 'master',
    db: t.db,
    // The master went away: every attempt asks the Sentinels first, and they name the new master
    // as soon as the failover is done, so retry often (capped at 500 ms, not 2 s).
    retryStrategy: sentinelReconnectDelay,
    // All Sentinels down (or none knows the master): keep asking, with the usual capped backoff.
    sentinelRetryStrategy: sentinelRetryDelay,
    // A Sentinel that accepts the connection but never answers must not stall the lookup.
    sentinelCommandTimeout: COMMAND_TIMEOUT_MS,
    // Off on purpose: its extra Sentinel connections have no 'error' listener, so a Sentinel going
    // away prints raw "[ioredis] Unhandled error event" stacks on stderr. followSwitches() does
    // its job quietly.
    failoverDetector: false,
  };
  if (t.username !== undefined) options.username = t.username;
  if (t.password !== undefined) options.password = t.password;
  if (t.sentinelUsername !== undefined) options.sentinelUsername = t.sentinelUsername;
  if (t.sentinelPassword !== undefined) options.sentinelPassword = t.sentinelPassword;
  if (t.tls) {
    // TLS to the master (resolved through Sentinel) and to the Sentinels; certificates are
    // checked against Node's CA store (NODE_EXTRA_CA_CERTS adds a private CA).
    options.tls = {};
    options.sentinelTLS = {};
    options.enableTLSForSentinelMode = true;
  }
  return options;
}

/** Stored on each client made here: the last "unreachable" description (for {@link redisReady}). */
const LAST_FAILURE = Symbol('portcullis.redisLastFailure');
type Described = Redis & { [LAST_FAILURE]?: string };

/** The last plain description of why `client` could not reach Redis, while it cannot. */
export function redisFailure(client: Redis): string | undefined {
  return (client as Described)[LAST_FAILURE];
}

/**
 * An ioredis client that fails fast instead of queueing: while disconnected every command
 * rejects at once (no offline queue), a command without a reply rejects after 800 ms, and a
 * socket that stops answering is torn down and reconnected. It keeps reconnecting forever
 * (capped backoff) and never throws from an `error` event.
 *
 * `url` is a `storage.redis_url`: `redis://`, `rediss://`, a socket path, or
 * `redis+sentinel://h1:26379,h2:26379/<master>` — then every (re)connection asks the Sentinels
 * for the current master, so after a failover the client reconnects to the new one.
 *
 * Connection trouble is logged once per outage (and again when the reason changes), as one
 * plain line: "Redis (state store) unreachable at 127.0.0.1:6379: connection refused".
 */
export function createRedisClient(url: string, opts: RedisClientOptions = {}): Redis {
  const log = opts.log;
  const target = parseRedisUrl(url);
  const { url: plainUrl, options: targetOptions } = redisConnectionOptions(target);
  const options: RedisOptions = {
    lazyConnect: opts.lazyConnect ?? false,
    enableOfflineQueue: false,
    commandTimeout: COMMAND_TIMEOUT_MS,
    // A connection that accepted a command but sends nothing back for this long is dead
    // (half-open TCP, frozen server): drop it and reconnect rather than wait for keepalive.
    socketTimeout: 3000,
    connectTimeout: 1500,
    maxRetriesPerRequest: 1,
    // A command that timed out was reported as failed; replaying it after a reconnect would
    // count a login failure twice or burn a TOTP step behind the caller's back.
    autoResendUnfulfilledCommands: false,
    retryStrategy: retryDelay,
    // A write refused with READONLY means we are talking to a demoted master (failover behind a
    // DNS name or a Sentinel that has not cut us off yet): reconnect, the command still fails.
    reconnectOnError: (err) => (err.message.startsWith('READONLY') ? 1 : false),
    connectionName: opts.connectionName ?? 'portcullis',
    ...targetOptions,
    ...opts.redisOptions,
  };
  const client: Described = plainUrl === undefined ? new Redis(options) : new Redis(plainUrl, options);
  const connection = opts.connectionName ?? 'portcullis';
  const purpose = opts.purpose ?? 'state store';
  const base = { event: 'state_store', connection, target: target.display };

  // Without an `error` listener ioredis prints every failed reconnect to stderr. Log the first
  // error of an outage (and any change of reason), not one line per retry.
  let lastLogged: string | undefined;
  // What each Sentinel said in the current lookup round (ioredis reports them one by one).
  let sentinelErrors: string[] = [];
  let master: string | undefined;
  if (target.kind === 'sentinel') {
    client.on('sentinelError', (err: Error) => sentinelErrors.push(err.message));
    // Each reconnection starts a new lookup.
    client.on('reconnecting', () => {
      sentinelErrors = [];
    });
  }
  client.on('error', (err: Error & { code?: string }) => {
    let description: string;
    if (target.kind === 'sentinel' && err.message.startsWith('All sentinels are unreachable')) {
      const round = sentinelErrors;
      sentinelErrors = [];
      // The end of ioredis's list, not a failed round: nothing was asked. Not an outage.
      if (round.length === 0 && !err.message.includes('Last error')) return;
      description = `Redis (${purpose}) unreachable: no Sentinel gave the address of master "${target.name}" (${describeSentinelRound(round, target)})`;
    } else {
      // The Sentinels answered (this is the master connection failing): that round is over.
      sentinelErrors = [];
      description = describeConnectionError(err, target, purpose);
    }
    client[LAST_FAILURE] = description;
    opts.onUnreachable?.(description);
    if (description === lastLogged) return;
    lastLogged = description;
    log?.(description, { ...base, err: err.message, cause_code: err.code ?? null });
  });
  if (target.kind === 'sentinel') followSwitches(client, target, options);
  client.on('ready', () => {
    sentinelErrors = [];
    const was = master;
    master =
      target.kind === 'sentinel' && client.stream?.remoteAddress
        ? formatHost({ host: client.stream.remoteAddress, port: client.stream.remotePort ?? 0 })
        : undefined;
    const where = target.kind === 'sentinel' ? ` (${master ? `${master}, ` : ''}${sentinelContext(target)})` : ` (${target.display})`;
    if (lastLogged !== undefined) log?.(`Redis (${purpose}) connection restored${where}`, { ...base, master });
    else if (was !== undefined && master !== was)
      log?.(`Redis (${purpose}) master changed from ${was} to ${master} (failover)`, { ...base, master, previous_master: was });
    lastLogged = undefined;
    client[LAST_FAILURE] = undefined;
  });
  return client;
}

/**
 * Reconnects `client` as soon as the Sentinels announce that its master moved (`+switch-master`),
 * instead of writing to the old master until Sentinel demotes it and cuts its clients off (about
 * 10 s after a failover whose old master is still up, e.g. `SENTINEL FAILOVER`): lockout counts
 * or TOTP steps written there meanwhile would be lost. ioredis's own `failoverDetector` does this
 * too, but its Sentinel connections have no `error` listener (raw stack traces on stderr when a
 * Sentinel goes away), so this keeps one quiet connection of its own, to one Sentinel at a time.
 */
function followSwitches(client: Redis, target: SentinelRedisTarget, options: RedisOptions): void {
  /** The master the Sentinels announced last, until the client has been checked against it. */
  let announced: { host: string; port: number } | undefined;
  const onMaster = (): void => {
    const stream = client.stream;
    if (!announced || client.status !== 'ready' || !stream) return;
    const { host, port } = announced;
    announced = undefined;
    // Still on the old one (or connected just before the switch): drop the socket; the
    // reconnect asks the Sentinels again, 50 ms later.
    if (stream.remoteAddress !== host || stream.remotePort !== port) stream.destroy();
  };
  const watch = new SentinelSwitchWatch(target, options, (host, port) => {
    announced = { host, port };
    onMaster();
  });
  client.on('ready', () => {
    watch.start();
    onMaster();
  });
  client.on('end', () => watch.stop());
}

/** A subscription to `+switch-master` on one Sentinel at a time, moving on when it fails. */
class SentinelSwitchWatch {
  private conn: Redis | undefined;
  private timer: NodeJS.Timeout | undefined;
  private next = 0;
  private attempts = 0;
  private stopped = false;

  constructor(
    private readonly target: SentinelRedisTarget,
    private readonly options: RedisOptions,
    private readonly onSwitch: (host: string, port: number) => void,
  ) {}

  start(): void {
    if (!this.stopped && !this.conn && !this.timer) this.connect();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    this.conn?.disconnect();
    this.conn = undefined;
  }

  private connect(): void {
    const sentinels = this.target.sentinels;
    const at = sentinels[this.next++ % sentinels.length];
    const conn = new Redis({
      host: at.host,
      port: at.port,
      username: this.options.sentinelUsername ?? undefined,
      password: this.options.sentinelPassword ?? undefined,
      tls: this.options.sentinelTLS,
      lazyConnect: true,
      connectTimeout: this.options.connectTimeout,
      commandTimeout: COMMAND_TIMEOUT_MS,
      retryStrategy: () => null,
      autoResubscribe: false,
      enableReadyCheck: false,
    });
    this.conn = conn;
    // A Sentinel going away is not an outage (the data connection reports those): move on quietly.
    conn.on('error', () => undefined);
    conn.on('message', (channel: string, message: string) => {
      // "<master-name> <old-ip> <old-port> <new-ip> <new-port>"
      const [name, , , host, port] = message.split(' ');
      if (channel === '+switch-master' && name === this.target.name && host && Number(port) > 0) this.onSwitch(host, Number(port));
    });
    conn.once('end', () => {
      if (this.conn === conn) this.conn = undefined;
      if (this.stopped) return;
      this.timer = setTimeout(
        () => {
          this.timer = undefined;
          this.connect();
        },
        retryDelay(++this.attempts),
      );
      this.timer.unref();
    });
    conn.subscribe('+switch-master').then(
      () => {
        this.attempts = 0;
      },
      () => conn.disconnect(),
    );
  }
}

/** Plain words for the usual socket errors. */
const REASONS: Record<string, string> = {
  ECONNREFUSED: 'connection refused',
  ETIMEDOUT: 'connection timed out',
  ECONNRESET: 'connection reset',
  EPIPE: 'connection closed',
  ENOTFOUND: 'host not found',
  EAI_AGAIN: 'host name lookup failed (temporary)',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
};

/** The reason in plain words: "connection refused", "authentication failed (WRONGPASS …)", … */
function reasonOf(message: string, code: string | undefined): string {
  const c = code ?? /\b(E[A-Z]{4,})\b/.exec(message)?.[1];
  if (c && REASONS[c]) return REASONS[c];
  if (/^(WRONGPASS|NOAUTH)|invalid password|AUTH failed|invalid username-password/i.test(message)) return `authentication failed (${message})`;
  if (c && /CERT|SSL|TLS|SIGNATURE|ALTNAME/.test(c)) return `TLS certificate rejected (${message})`;
  if (message === 'Command timed out') return `no answer within ${COMMAND_TIMEOUT_MS} ms`;
  // What ioredis reports for a Sentinel it could not connect to (refused, timed out, reset).
  if (message === 'Connection is closed.') return 'cannot connect';
  return message;
}

function describeConnectionError(err: Error & { code?: string; address?: string; port?: number }, target: RedisTarget, purpose: string): string {
  const reason = reasonOf(err.message, err.code);
  if (target.kind === 'standalone') return `Redis (${purpose}) unreachable at ${target.display}: ${reason}`;
  // The master's address when the socket error names it (a TLS error does not).
  const at = err.address ? ` at ${formatHost({ host: err.address, port: err.port ?? 0 })}` : '';
  return `Redis (${purpose}) unreachable${at}: ${reason} (${sentinelContext(target)})`;
}

/** `master "mymaster", Sentinel 10.0.0.1:26379,10.0.0.2:26379` */
function sentinelContext(target: SentinelRedisTarget): string {
  return `master "${target.name}", Sentinel ${target.sentinels.map(formatHost).join(',')}`;
}

/** "127.0.0.1:26379: connection refused; 127.0.0.1:26380 does not know master "m"" */
function describeSentinelRound(round: string[], target: SentinelRedisTarget): string {
  if (round.length === 0) return 'no answer';
  return round
    .map((m) => {
      const failed = /^failed to connect to sentinel (\S+) because (.*)$/s.exec(m);
      if (failed && /No such master/i.test(failed[2])) return `${failed[1]} does not know master "${target.name}"`;
      // ioredis drops the socket error of a Sentinel connection; over TLS a refused certificate looks the same.
      if (failed && target.tls && reasonOf(failed[2], undefined) === 'cannot connect') return `${failed[1]}: cannot connect (TCP or TLS handshake failed)`;
      if (failed) return `${failed[1]}: ${reasonOf(failed[2], undefined)}`;
      const empty = /^connected to sentinel (\S+) successfully, but got an invalid reply/.exec(m);
      if (empty) return `${empty[1]} does not know master "${target.name}"`;
      return m;
    })
    .join('; ');
}

/**
 * The Redis server's time, read through this process's clock: the offset between the two is
 * measured with `TIME` (halving the round trip) at start, every `intervalMs`, and each time the
 * client (re)connects — after a Sentinel failover the new master's clock may differ from the
 * old one's. Every replica's Redis state adapters read it, so windows, locks and TOTP steps are
 * judged on one shared time even when the replicas' own clocks drift apart. A failed
 * measurement keeps the last offset.
 */
export class RedisTimeClock {
  private offset = 0;
  private timer: NodeJS.Timeout | undefined;
  private measuredAt: number | undefined;
  private readonly onReady = (): void => void this.sync().catch(() => undefined);

  /** @param intervalMs how often the offset is measured again. @default 30000 */
  constructor(
    private readonly client: Pick<Redis, 'time'> & Partial<Pick<Redis, 'on' | 'off'>>,
    private readonly intervalMs = 30_000,
  ) {}

  /** Milliseconds since the epoch, by the Redis server's clock. */
  readonly now = (): number => Date.now() + this.offset;

  /** When the offset was last measured (this process's epoch ms), undefined before the first success. */
  get syncedAt(): number | undefined {
    return this.measuredAt;
  }

  /** Measures the offset once. */
  async sync(): Promise<void> {
    const before = Date.now();
    const [seconds, micros] = await this.client.time();
    const after = Date.now();
    this.offset = Number(seconds) * 1000 + Math.floor(Number(micros) / 1000) - Math.round((before + after) / 2);
    this.measuredAt = after;
  }

  /** Measures now (best effort), then every `intervalMs` and on every reconnect, until {@link stop}. */
  async start(): Promise<void> {
    await this.sync().catch(() => undefined);
    this.timer = setInterval(() => void this.sync().catch(() => undefined), this.intervalMs);
    this.timer.unref();
    this.client.on?.('ready', this.onReady);
  }

  stop(): void {
    clearInterval(this.timer);
    this.client.off?.('ready', this.onReady);
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
    const timer = setTimeout(() => {
      const why = redisFailure(client);
      done(new Error(`redis not ready after ${timeoutMs} ms${why ? `: ${why}` : ''}`));
    }, timeoutMs);
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
  /**
   * `start()` rejects when not subscribed within this long (it also rejects at the first
   * connection error; this bounds a lookup that neither succeeds nor fails). @default 5000
   */
  startTimeoutMs?: number;
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
      purpose: 'revocation channel',
      onUnreachable: (why) => this.settleStart(new Error(why)),
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
   * Connects and subscribes. Resolves once subscribed; rejects (with a plain description) when
   * the first connection attempt fails or after `startTimeoutMs` (the bus keeps retrying in the
   * background until `close()`, and a later successful subscription calls `onResync`).
   */
  start(): Promise<void> {
    if (this.startPromise) return this.startPromise;
    if (this.closed) return Promise.reject(new Error('revocation bus closed'));
    this.startPromise = new Promise<void>((resolve, reject) => {
      this.startWaiter = { resolve, reject };
    });
    this.subscriber.connect().catch((e: Error) => this.settleStart(new Error(redisFailure(this.subscriber) ?? e.message)));
    // With Sentinel, connect() stays pending through an outage (ioredis keeps asking the
    // Sentinels): the caller must not wait for it.
    const limit = this.opts.startTimeoutMs ?? 5000;
    const startTimer = setTimeout(
      () =>
        this.settleStart(
          new Error(`revocation channel not subscribed after ${limit} ms${redisFailure(this.subscriber) ? `: ${redisFailure(this.subscriber)}` : ''}`),
        ),
      limit,
    );
    startTimer.unref();
    void this.startPromise.then(
      () => clearTimeout(startTimer),
      () => clearTimeout(startTimer),
    );
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
