import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';
import type { AddressInfo, Socket } from 'node:net';
import { availableParallelism } from 'node:os';
import helmet from 'helmet';
import { decodeProtectedHeader } from 'jose';
import type { Logger } from 'pino';
import { loadConfig, type Config } from './config/index.js';
import { Errors, GatewayError, is } from './errors/index.js';
import { Metrics } from './metrics/index.js';
import { compileRoutes, policyContext, routePatternCheck } from './policy/index.js';
import { createProxy, type GatewayProxy } from './proxy/index.js';
import { clientIpFrom } from './proxy/ip.js';
import { openDatabase } from './store/sql/index.js';
import type { Database } from './store/ports.js';
import { MemoryRevocationList, RevocationSync } from './store/state/revocations.js';
import { TokenService, loadKeySet, loadOrCreateKeyFile, readKeyFile, type KeySet } from './tokens/index.js';
import { Lockout, MfaService, loadSecretBox, passwordTools, type PasswordHasher } from './auth/index.js';
import { MemoryAttemptCounter, MemoryLockoutStore, MemoryRateLimitStore, MemoryTotpReplayGuard } from './store/state/memory.js';
import { RedisAttemptCounter, RedisLockoutStore, RedisRateLimitStore, RedisTotpReplayGuard } from './store/state/redis-stores.js';
import type { AttemptCounter, LockoutStore, RateLimitStore, RevocationList, StateClock, TotpReplayGuard } from './store/ports.js';
import { AuthService } from './auth/login-flow.js';
import { createAuthApi, createAuthContext, formErrorResponder } from './http/auth-api/index.js';
import { createAuthenticator } from './http/authenticate.js';
import { createLimiter } from './http/rate-limit.js';
import { reservedCookieNames } from './http/cookies.js';
import { createGateway, createHeaderMutator, type GatewayState } from './pipeline/index.js';
import { createAdminServer, type Dependency } from './http/admin.js';
import { createLogger } from './http/log.js';
import { createResponder } from './http/respond.js';
import { startEchoServer } from './demo/echo.js';

export interface AppOptions {
  config: Config;
  env?: NodeJS.ProcessEnv;
  logger?: Logger;
  /** Injected clock (tests move time instead of sleeping). */
  now?: () => Date;
  /** Create the first admin account when the user table is empty. @default true */
  bootstrapAdmin?: boolean;
  /** Where the one-time bootstrap password is printed. @default process.stderr */
  announce?: (line: string) => void;
  /** Poll interval of the revocation list sync. @default 1000 */
  revocationPollMs?: number;
}

/** HSTS under TLS (the same value helmet sets on the gateway's own pages). */
const HSTS_HEADERS: Readonly<Record<string, string>> = Object.freeze({ 'strict-transport-security': 'max-age=31536000; includeSubDomains' });

/**
 * Explicit limits on a listener (SPEC §3.1), never Node's defaults: every header line is kept
 * (`maxHeadersCount: 0`; the framing stage answers 431 past `limits.max_header_lines`, so no
 * line is ever dropped silently), and the three timeouts come from `limits`.
 */
export function applyListenerLimits(server: Server, limits: Config['limits']): void {
  server.maxHeadersCount = 0;
  server.headersTimeout = limits.headers_timeout;
  server.requestTimeout = limits.request_timeout;
  server.keepAliveTimeout = limits.keep_alive_timeout;
}

/** The short-lived state a gateway built: one adapter per purpose, all on one backend and one clock. */
export interface AppState {
  /** Where it lives: in this process (embedded), or in Redis, shared by every replica. */
  readonly backend: 'memory' | 'redis';
  readonly lockouts: LockoutStore;
  readonly totpSteps: TotpReplayGuard;
  readonly mfaAttempts: AttemptCounter;
}

/** A running (or ready-to-run) gateway: both listeners and everything they need. */
export interface App {
  readonly config: Config;
  readonly db: Database;
  readonly keySet: KeySet;
  readonly tokens: TokenService;
  readonly auth: AuthService;
  readonly metrics: Metrics;
  readonly log: Logger;
  readonly hasher: PasswordHasher;
  readonly mfa: MfaService;
  readonly lockout: Lockout;
  readonly state: AppState;
  start(): Promise<{ url: string; adminUrl: string; demoUrl?: string }>;
  /** Graceful stop: stop accepting, let in-flight requests finish within `graceMs`, close pools. */
  stop(graceMs?: number): Promise<void>;
  /** Applies a new config's routes, upstreams and headers; keeps the old one on failure. */
  reload(file?: string): { ok: true } | { ok: false; error: string };
}

/** Reads signing keys: configured file, `PORTCULLIS_SIGNING_KEYS` (JWKS JSON), or embedded generation. */
async function loadKeys(config: Config, env: NodeJS.ProcessEnv, log: Logger): Promise<KeySet> {
  if (config.keys.signing_keys_file) return readKeyFile(config.keys.signing_keys_file);
  if (env.PORTCULLIS_SIGNING_KEYS) {
    let jwks: unknown;
    try {
      jwks = JSON.parse(env.PORTCULLIS_SIGNING_KEYS);
    } catch {
      throw new GatewayError(Errors.missing_keys, 'PORTCULLIS_SIGNING_KEYS is not valid JSON (expected a JWKS with private keys).');
    }
    return loadKeySet(jwks as Parameters<typeof loadKeySet>[0]);
  }
  if (env.NODE_ENV === 'production') {
    throw new GatewayError(
      Errors.missing_keys,
      'NODE_ENV=production needs signing keys: set keys.signing_keys_file or PORTCULLIS_SIGNING_KEYS (make one with `portcullis keys generate`).',
    );
  }
  return loadOrCreateKeyFile(join(config.data_dir, 'signing-keys.json'), (msg: string) => log.warn({ event: 'keys_generated' }, msg));
}

/** The composition root: builds every adapter from the config and wires them together. */
export async function createApp(opts: AppOptions): Promise<App> {
  const env = opts.env ?? process.env;
  const now = opts.now ?? (() => new Date());
  let config = opts.config;
  const log = opts.logger ?? createLogger(config.log_level);
  const metrics = new Metrics();

  const keySet = await loadKeys(config, env, log);
  const box = loadSecretBox(env, join(config.data_dir, 'encryption.key'), (msg) => log.warn({ event: 'keys_generated' }, msg));
  const db = await openDatabase(config.storage.database_url, {
    log: (msg, extra) => (msg === 'migration applied' ? log.info(extra ?? {}, msg) : log.warn(extra ?? {}, msg)),
  });
  try {
    const applied = await db.migrate();
    if (applied.length) log.info({ event: 'migrated', applied }, 'database migrations applied');
  } catch (e) {
    await db.close();
    throw e;
  }

  const tokens = new TokenService({ keySet, issuer: config.issuer, audience: config.auth.audience, accessTtlMs: config.auth.access_ttl, now });
  // argon2 runs are bounded per process (SPEC §12); worker processes share the default slots.
  const { hasher, policy } = passwordTools(config.auth, { metrics, processes: config.workers === 'auto' ? availableParallelism() : config.workers });
  const localRevocations = new MemoryRevocationList(now);
  // A revoked session's WebSocket tunnels close at once, wherever the revocation came from.
  localRevocations.onAdd((sid) => {
    proxy.closeSession(sid);
    for (const old of retired) old.closeSession(sid);
  });
  // Revocations made here go to the local list at once and, with Redis, to every replica.
  const revocations: RevocationList = {
    isRevoked: (sid) => localRevocations.isRevoked(sid),
    size: () => localRevocations.size(),
    add: (sid, until) => {
      localRevocations.add(sid, until);
      bus?.publish(sid, until).catch((e) => log.warn({ err: (e as Error).message }, 'revocation broadcast failed; replicas will catch up from the database'));
    },
  };
  const revocationSync = new RevocationSync(db.sessions, localRevocations, {
    intervalMs: opts.revocationPollMs ?? 1000,
    now,
    onError: (e) => log.warn({ err: (e as Error).message }, 'revocation sync failed; keeping the last known list'),
  });
  // Shared state: Redis when configured (several replicas act as one), else in process.
  // ioredis is loaded only when Redis is configured (it costs ~8 MB of RSS).
  const redisModule = config.storage.redis_url ? await import('./store/state/redis.js') : undefined;
  const redis = redisModule?.createRedisClient(config.storage.redis_url, { log: (msg, extra) => log.warn(extra ?? {}, msg) });
  const prefix = config.storage.redis_prefix;
  if (redis) {
    // Wait briefly for Redis so the first requests find it connected; if it is down the
    // gateway still starts (not ready, sign-in answering 503) and recovers when Redis returns.
    await redisModule!
      .redisReady(redis, 3000)
      .catch((e) => log.error({ event: 'state_store', err: (e as Error).message }, 'Redis is not reachable at start; sign-in will answer 503 until it is'));
  }
  // Every state adapter reads one clock. Tests inject theirs (and move it). In production the
  // Redis adapters read the Redis server's time, so replicas with drifting clocks still agree on
  // every window and lock; in process there is only this process's clock.
  const redisClock = redis && !opts.now ? new redisModule!.RedisTimeClock(redis) : undefined;
  await redisClock?.start();
  const stateClock: StateClock = redisClock ? redisClock.now : () => now().getTime();
  const shortLived: AppState = redis
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
  /** Redis counts are shared and namespaced by limiter; in process each limiter counts on its own (a reload's new route limiters start afresh). */
  const rateLimitStore = (): RateLimitStore => redisRateLimits ?? new MemoryRateLimitStore(stateClock);
  const bus = redis
    ? new redisModule!.RedisRevocationBus(redis, config.storage.redis_url, prefix, {
        log: (msg, extra) => log.warn(extra ?? {}, msg),
        onRevoked: (sid, until) => localRevocations.add(sid, until),
        // Messages sent while disconnected are lost: reload the whole list from the database.
        onResync: () => revocationSync.resync(),
      })
    : undefined;
  const lockout = new Lockout(
    shortLived.lockouts,
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
    totpSteps: shortLived.totpSteps,
    mfaAttempts: shortLived.mfaAttempts,
    box,
    tokens,
    lockout,
    hasher,
    metrics,
    log,
    now,
    issuer: config.name,
  });
  // The gateway's own origin: public_url, else the address actually bound (known after listen).
  let origin = new URL(config.publicUrl).origin;
  // Where the gateway's own app is served and what it trusts (prefix, name, origins, cookies,
  // the rd check), made once for the auth app, the authenticator and the responder.
  const site = createAuthContext({
    prefix: config.auth.prefix,
    name: config.name,
    origin: () => origin,
    allowedOrigins: config.auth.allowed_origins,
    secure: Boolean(config.tls) || origin.startsWith('https:'),
  });
  // The one responder: every error answer (auth app, pipeline, proxy, limiters, raw sockets) is
  // written and logged by it. clientIp is read lazily (it needs the state built below).
  const responder = createResponder({ log, pages: site.pages, clientIp: (req) => clientIp(req) });

  const makeProxy = (c: Config): GatewayProxy =>
    createProxy({
      upstreams: c.upstreams,
      log,
      respond: responder,
      onUpstreamResult: (r) => {
        metrics.upstreamDuration.observe({ upstream: r.upstream, status: r.status === null ? 'error' : String(r.status) }, r.durationSeconds);
        if (r.reason) metrics.upstreamErrors.inc({ upstream: r.upstream, reason: r.reason });
      },
    });
  let proxy = makeProxy(config);
  /** Proxies replaced by a reload, still draining: stop() closes them too (their tunnels would keep server.close() waiting). */
  const retired = new Set<GatewayProxy>();
  let state: GatewayState;

  const makeHelmet = (c: Config) =>
    helmet({
      // HSTS only when this listener speaks TLS: over plain HTTP it would be a lie.
      strictTransportSecurity: c.tls ? { maxAge: 31_536_000, includeSubDomains: true } : false,
      contentSecurityPolicy: {
        directives: {
          defaultSrc: ["'none'"],
          styleSrc: ["'self'"],
          imgSrc: ["'self'", 'data:'],
          formAction: ["'self'", ...c.auth.allowed_origins],
          frameAncestors: ["'none'"],
          baseUri: ["'none'"],
          upgradeInsecureRequests: c.tls ? [] : null,
        },
      },
      crossOriginEmbedderPolicy: false,
      // Not no-referrer: with it, browsers send `Origin: null` on form posts, and the CSRF check
      // needs the real origin of our own sign-in form.
      referrerPolicy: { policy: 'same-origin' },
      xFrameOptions: { action: 'deny' },
    });
  const helmetMw = makeHelmet(config);
  const ourKids = new Set(keySet.kids);
  const clientIp = (req: IncomingMessage) => clientIpFrom(req, state.config.trust_proxy);
  const isGatewayToken = (token: string) => {
    try {
      const kid = decodeProtectedHeader(token).kid;
      return typeof kid === 'string' && ourKids.has(kid);
    } catch {
      return false;
    }
  };
  const authenticate = createAuthenticator({ auth, cookies: site.cookies, isGatewayToken });
  const limiterBase = { clientIp, metrics, log, respond: responder.send };
  const loginLimiter = createLimiter({
    ...limiterBase,
    store: rateLimitStore(),
    name: 'login',
    requests: config.auth.login_rate_limit.requests,
    perMs: config.auth.login_rate_limit.per,
    onStoreError: 'closed',
    onLimited: () => metrics.loginAttempts.inc({ result: 'rate_limited' }),
    // The sign-in form gets a page, like its other errors; API clients get problem+json.
    respond: formErrorResponder(site, responder),
  });
  const apiLimiter = createLimiter({
    ...limiterBase,
    store: rateLimitStore(),
    name: 'auth_api',
    requests: config.auth.api_rate_limit.requests,
    perMs: config.auth.api_rate_limit.per,
    onStoreError: 'closed',
  });
  /** Per-route limiters, rebuilt with the routes on reload; a store outage lets traffic through. */
  const routeLimiters = (c: Config) =>
    new Map(
      c.routes
        .filter((r) => r.rate_limit)
        .map((r) => [
          r.name,
          createLimiter({
            ...limiterBase,
            store: rateLimitStore(),
            name: `route:${r.name}`,
            requests: r.rate_limit!.requests,
            perMs: r.rate_limit!.per,
            onStoreError: 'open',
          }),
        ]),
    );
  const authApp = createAuthApi({
    loginLimiter,
    apiLimiter,
    auth,
    mfa,
    authenticate,
    ctx: site,
    respond: responder,
    publicJwks: () => keySet.publicJwks(),
    helmet: helmetMw,
    clientIp,
  });
  const gateway = createGateway({
    state: () => state,
    auth,
    proxy: {
      forward: (req, res, t) => proxy.forward(req, res, t),
      upgrade: (req, socket, head, t) => proxy.upgrade(req, socket, head, t),
      close: () => proxy.close(),
      closeSession: (sid) => proxy.closeSession(sid),
    } as GatewayProxy,
    metrics,
    log,
    authApp: authApp as unknown as (req: IncomingMessage, res: ServerResponse) => void,
    securityHeaders: (req, res) => helmetMw(req as never, res as never, () => undefined),
    // HSTS on every response under TLS, proxied ones included (helmet covers our own pages).
    responseHeaders: () => (state.config.tls ? HSTS_HEADERS : undefined),
    sendError: responder.send,
    sendSocketError: responder.sendToSocket,
    clientIp,
    signAssertion: (input) => tokens.signAssertion(input),
    authenticate,
    cookieNames: [site.cookies.names.access, site.cookies.names.refresh],
    reservedCookies: reservedCookieNames(),
  });

  /** Everything the pipeline needs from one config, built once per load. */
  const buildState = (c: Config): GatewayState => {
    const routes = compileRoutes(c.routes);
    return {
      config: c,
      routes,
      policy: policyContext(routes, c, origin),
      mutator: createHeaderMutator({ identityHeaders: c.identity_headers, upstreams: c.upstreams, trustProxy: c.trust_proxy }),
      limiters: routeLimiters(c),
    };
  };
  state = buildState(config);

  const server: Server = config.tls
    ? createHttpsServer(
        {
          cert: readFileSync(config.tls.cert),
          key: readFileSync(config.tls.key),
          // TLS 1.2+ with forward-secret AEAD suites by default (SPEC §3.1), the server's order
          // first, ECDHE over X25519 / P-256 / P-384 only.
          minVersion: config.tls.min_version,
          ciphers: config.tls.ciphers,
          honorCipherOrder: true,
          ecdhCurve: 'X25519:P-256:P-384',
        },
        gateway.handle,
      )
    : createHttpServer(gateway.handle);
  server.on('upgrade', gateway.upgrade);
  applyListenerLimits(server, config.limits);
  // CONNECT is a forward proxy's business, never a gateway's: 405 (without a listener Node
  // would drop the connection without a word).
  server.on('connect', (req: IncomingMessage, socket: Socket) => {
    responder.sendToSocket(
      req,
      socket,
      new GatewayError(Errors.method_not_allowed, 'The CONNECT method is not accepted.', { headers: config.tls ? { ...HSTS_HEADERS } : {} }),
    );
  });
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
    // Requests Node's parser refuses (bad request line, conflicting framing, oversized head) get
    // a bare 400 (431 for an oversized head) and the connection is closed: nothing after the
    // unparseable part can be trusted to be a request of its own. Bare: the method is unknown,
    // and after a HEAD a body would be read as the next response. A connection that is already
    // gone (a reset) gets nothing and is not an error of the client's request.
    if (!socket.writable || socket.destroyed) {
      socket.destroy();
      return;
    }
    const refused =
      err.code === 'HPE_HEADER_OVERFLOW'
        ? new GatewayError(Errors.too_many_headers, 'The request head is too large.')
        : new GatewayError(Errors.bad_request, 'The request could not be parsed.');
    responder.sendToSocket(undefined, socket, config.tls ? refused.withHeaders(HSTS_HEADERS) : refused, { body: false });
  });
  let inFlight = 0;
  server.on('request', (_req: IncomingMessage, res: ServerResponse) => {
    inFlight++;
    res.once('close', () => inFlight--);
  });

  const dependencies: Dependency[] = [
    { name: 'database', ping: () => db.ping() },
    { name: 'state_store', ping: async () => void (await redis?.ping()) },
  ];
  // createApp only runs with a loaded, valid config.
  const configLoaded = true;
  // In-process lockout state lives in this process only: the CLI reaches it through the admin
  // listener with a token it reads from the data directory.
  const adminToken = redis ? undefined : randomBytes(32).toString('base64url');
  const admin = createAdminServer({
    metrics,
    dependencies: () => dependencies,
    ready: () => configLoaded,
    unlock: adminToken ? { token: adminToken, run: (u) => lockout.unlock(u) } : undefined,
    log,
  });
  applyListenerLimits(admin, config.limits);
  let demo: Awaited<ReturnType<typeof startEchoServer>> | undefined;
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

  async function bootstrap(): Promise<void> {
    if (opts.bootstrapAdmin === false) return;
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
    if (!given)
      (opts.announce ?? ((l) => process.stderr.write(`${l}\n`)))(
        `portcullis: first admin account created: username "admin", password "${password}" (shown once; change it)`,
      );
  }

  const listen = (s: Server, host: string, port: number) =>
    new Promise<AddressInfo>((resolve, reject) => {
      s.once('error', reject);
      s.listen(port, host, () => {
        s.off('error', reject);
        resolve(s.address() as AddressInfo);
      });
    });
  const urlOf = (scheme: string, a: AddressInfo) => `${scheme}://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`;

  return {
    config,
    db,
    keySet,
    tokens,
    auth,
    metrics,
    log,
    hasher,
    mfa,
    lockout,
    state: shortLived,
    async start() {
      // Build the dummy hash now, so the first unknown-user login is not measurably slower.
      await hasher.warmUp();
      await bootstrap();
      await revocationSync.start();
      // A bus that cannot connect now keeps trying, and resynchronises from the database
      // once it is subscribed; the database poll covers the gap.
      if (bus) await bus.start().catch((e) => log.error({ event: 'state_store', err: (e as Error).message }, 'revocation broadcast not connected yet'));
      if (config.demo_upstream) demo = await startEchoServer(config.demo_upstream.listen);
      const a = await listen(server, config.listen.host, config.listen.port);
      const b = await listen(admin, config.admin.listen.host, config.admin.listen.port);
      metrics.dependencyUp.set({ dependency: 'database' }, 1);
      metrics.dependencyUp.set({ dependency: 'state_store' }, 1);
      const out = { url: urlOf(config.tls ? 'https' : 'http', a), adminUrl: urlOf('http', b), demoUrl: demo?.url };
      if (!config.public_url) {
        origin = new URL(out.url).origin;
        state = { ...state, policy: policyContext(state.routes, state.config, origin) };
      }
      if (adminToken) writeAdminToken(join(config.data_dir, 'admin.token'), out.adminUrl, adminToken);
      purgeTimer = setInterval(() => void purge(), 3_600_000);
      purgeTimer.unref();
      log.info({ event: 'listening', url: out.url, admin: out.adminUrl, demo: out.demoUrl }, 'portcullis is listening');
      return out;
    },
    async stop(graceMs = config.shutdown_grace) {
      revocationSync.stop();
      if (purgeTimer) clearInterval(purgeTimer);
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      const deadline = Date.now() + graceMs;
      while (inFlight > 0 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 25));
        server.closeIdleConnections();
      }
      // Past the grace (or drained): upstream agents and WebSocket tunnels go first, since
      // server.close() waits for tunnels that closeAllConnections() does not see; proxies
      // retired by a reload still hold theirs.
      proxy.close();
      for (const old of retired) old.close();
      retired.clear();
      server.closeAllConnections();
      await closed;
      await new Promise<void>((resolve) => admin.close(() => resolve()));
      admin.closeAllConnections();
      await demo?.close();
      redisClock?.stop();
      await bus?.close();
      if (redis) await redisModule!.closeRedisClient(redis);
      await db.close();
      log.info({ event: 'stopped' }, 'portcullis stopped');
    },
    reload(file = config.source) {
      try {
        const next = loadConfig(file, env, [routePatternCheck]);
        const upstreamsChanged =
          JSON.stringify(next.upstreams) !== JSON.stringify(config.upstreams) ||
          JSON.stringify(next.identity_headers) !== JSON.stringify(config.identity_headers) ||
          JSON.stringify(next.trust_proxy) !== JSON.stringify(config.trust_proxy);
        const nextState = buildState(next); // compiles the routes: throws before anything changes
        if (upstreamsChanged) {
          const old = proxy;
          proxy = makeProxy(next);
          // In-flight requests keep their sockets; idle ones go when the old agents close.
          retired.add(old);
          setTimeout(() => {
            retired.delete(old);
            old.close();
          }, config.shutdown_grace).unref();
        }
        for (const key of ['listen', 'tls', 'admin', 'storage', 'keys', 'auth', 'data_dir'] as const) {
          if (JSON.stringify(next[key]) !== JSON.stringify(config[key]))
            log.warn({ event: 'config_reloaded', key }, `config key "${key}" changed: it takes effect after a restart`);
        }
        config = next;
        state = nextState;
        metrics.configReloads.inc({ result: 'success' });
        log.info({ event: 'config_reloaded', result: 'success', routes: next.routes.length }, 'config reloaded');
        return { ok: true };
      } catch (e) {
        metrics.configReloads.inc({ result: 'failure' });
        log.error({ event: 'config_reloaded', result: 'failure', error: (e as Error).message }, 'config reload failed; keeping the old config');
        return { ok: false, error: (e as Error).message };
      }
    },
  };
}

/** 24 random characters from an unambiguous alphabet (strong enough for any policy). */
export function randomPassword(): string {
  const alphabet = 'abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789';
  const bytes = new Uint8Array(24);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => alphabet[b % alphabet.length]).join('');
}

/** Where the CLI finds this process's admin listener, and the token it needs (a 0600 file). */
function writeAdminToken(path: string, url: string, token: string): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  writeFileSync(path, `${JSON.stringify({ url, token })}\n`, { mode: 0o600 });
  chmodSync(path, 0o600);
}
