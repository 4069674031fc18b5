import type { Server } from 'node:http';
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { ConfigError, formatProblem, loadConfig, type Config } from './config/index.js';
import { isProduction } from './config/production.js';
import type { Metrics } from './metrics/index.js';
import { configChecks } from './preflight.js';
import type { Database } from './store/ports.js';
import type { KeySet, TokenService } from './tokens/index.js';
import type { Lockout, MfaService, PasswordHasher } from './auth/index.js';
import type { AuthService } from './auth/login-flow.js';
import { startEchoServer } from './demo/echo.js';
import { openServices, type AppState } from './services.js';
import { createServers } from './servers.js';
import { fileDigest, watchConfigFile } from './watch.js';

export type { AppState } from './services.js';
export { applyListenerLimits } from './servers.js';
export { randomPassword } from './services.js';

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
  /**
   * Graceful stop (SPEC §10): `/readyz` answers 503 from the first moment, the listener stops
   * accepting, in-flight requests get `graceMs` to finish, then tunnels and stuck sockets are
   * closed, then pools. Every step is bounded, so it ends within the grace plus a few seconds.
   */
  stop(graceMs?: number): Promise<void>;
  /** Applies a new config's routes, upstreams and headers; keeps the old one on failure. */
  reload(file?: string): { ok: true } | { ok: false; error: string };
  /** The config in force now (the last successful reload's; `config` is the one it started with). */
  currentConfig(): Config;
}

/** Keys whose change a reload cannot apply to a running process. */
const RESTART_KEYS = ['listen', 'tls', 'admin', 'storage', 'keys', 'auth', 'data_dir'] as const;

/** How long each teardown step after the grace may take before it is abandoned. */
const TEARDOWN_STEP_MS = 2000;

/**
 * The composition root: services (stores, tokens, auth; services.ts), the HTTP listeners over
 * them (servers.ts), and the lifecycle (start, reload, drain and stop) here.
 */
export async function createApp(opts: AppOptions): Promise<App> {
  const env = opts.env ?? process.env;
  // What the config was loaded from, as near to its loading as this gets: an edit made while the
  // gateway starts (migrations, the first admin) is still seen by the watch.
  const loadedDigest = fileDigest(opts.config.source);
  const svc = await openServices({ config: opts.config, env, logger: opts.logger, now: opts.now, revocationPollMs: opts.revocationPollMs });
  const { log, metrics } = svc;
  let config = svc.config;
  // In production the demo app never runs (SPEC §1): a demo_upstream key is ignored, loudly.
  const demoListen = config.demo_upstream && !isProduction(env) ? config.demo_upstream.listen : undefined;
  if (config.demo_upstream && !demoListen)
    log.warn({ event: 'demo_upstream_ignored' }, 'demo_upstream is ignored in production (NODE_ENV=production): the demo app does not run');

  if (isProduction(env) && config.public_url?.startsWith('http:'))
    log.warn(
      { event: 'public_url_insecure', public_url: config.publicUrl },
      'public_url is http:// in production: cookies are not Secure and tokens name an http issuer; put TLS in front and use https://',
    );

  /** Set at the first moment of a shutdown: /readyz answers 503 from then on. */
  let draining = false;
  // In-process lockout state lives in this process only: the CLI reaches it through the admin
  // listener with a token it reads from the data directory.
  const adminToken = svc.state.backend === 'memory' ? randomBytes(32).toString('base64url') : undefined;
  let servers: ReturnType<typeof createServers>;
  try {
    servers = createServers(svc, { ready: () => !draining, adminUnlockToken: adminToken });
  } catch (e) {
    // E.g. an unreadable TLS certificate: what was opened is closed again, then the error goes on.
    await svc.close();
    throw e;
  }
  const { server, admin } = servers;
  let demo: Awaited<ReturnType<typeof startEchoServer>> | undefined;
  let stopping: Promise<void> | undefined;
  let watcher: ReturnType<typeof watchConfigFile> | undefined;

  const listen = (s: Server, host: string, port: number) =>
    new Promise<AddressInfo>((resolve, reject) => {
      s.once('error', reject);
      s.listen(port, host, () => {
        s.off('error', reject);
        resolve(s.address() as AddressInfo);
      });
    });
  const urlOf = (scheme: string, a: AddressInfo) => `${scheme}://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`;

  function reload(file = config.source): { ok: true } | { ok: false; error: string } {
    try {
      const next = loadConfig(file, env, configChecks);
      servers.reload(next); // compiles the routes: throws before anything changes
      for (const key of RESTART_KEYS) {
        if (JSON.stringify(next[key]) !== JSON.stringify(config[key]))
          log.warn({ event: 'config_reloaded', key }, `config key "${key}" changed: it takes effect after a restart`);
      }
      config = next;
      // The bytes now in force, however the reload came (SIGHUP or the watch): not applied twice.
      watcher?.sync();
      metrics.configReloaded(true);
      log.info({ event: 'config_reloaded', result: 'success', routes: next.routes.length }, 'config reloaded');
      return { ok: true };
    } catch (e) {
      metrics.configReloaded(false);
      // Each problem as file:line: key.path: message, as `config check` prints it.
      const problems = e instanceof ConfigError ? e.problems.map(formatProblem) : undefined;
      log.error({ event: 'config_reloaded', result: 'failure', error: (e as Error).message, problems }, 'config reload failed; keeping the old config');
      return { ok: false, error: (e as Error).message };
    }
  }

  async function drainAndClose(graceMs: number): Promise<void> {
    watcher?.close();
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeIdleConnections();
    const deadline = Date.now() + graceMs;
    while (servers.inFlight() > 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 25));
      server.closeIdleConnections();
    }
    // Past the grace (or drained): upstream pools and WebSocket tunnels go first, since
    // server.close() waits for tunnels that closeAllConnections() does not see.
    servers.closeUpstreams();
    server.closeAllConnections();
    await bounded(closed, 'gateway listener', log);
    const adminClosed = new Promise<void>((resolve) => admin.close(() => resolve()));
    admin.closeAllConnections();
    await bounded(adminClosed, 'admin listener', log);
    if (demo) await bounded(demo.close(), 'demo app', log);
    await bounded(svc.close(), 'database and state store', log, 3 * TEARDOWN_STEP_MS);
    log.info({ event: 'stopped' }, 'portcullis stopped');
  }

  return {
    config,
    db: svc.db,
    keySet: svc.keySet,
    tokens: svc.tokens,
    auth: svc.auth,
    metrics,
    log,
    hasher: svc.hasher,
    mfa: svc.mfa,
    lockout: svc.lockout,
    state: svc.state,
    async start() {
      // Build the dummy hash now, so the first unknown-user login is not measurably slower.
      await svc.hasher.warmUp();
      if (opts.bootstrapAdmin !== false) await svc.bootstrapAdmin(opts.announce ?? ((l) => process.stderr.write(`${l}\n`)));
      await svc.startBackground();
      if (demoListen) demo = await startEchoServer(demoListen);
      const a = await listen(server, config.listen.host, config.listen.port);
      const b = await listen(admin, config.admin.listen.host, config.admin.listen.port);
      metrics.dependencyUp.set({ dependency: 'database' }, 1);
      metrics.dependencyUp.set({ dependency: 'state_store' }, 1);
      const out = { url: urlOf(config.tls ? 'https' : 'http', a), adminUrl: urlOf('http', b), demoUrl: demo?.url };
      if (!config.public_url) servers.setOrigin(new URL(out.url).origin);
      if (adminToken) writeAdminToken(join(config.data_dir, 'admin.token'), out.adminUrl, adminToken);
      // Reload when the file changes on disk, as on SIGHUP (debounced; an invalid file keeps the old config).
      watcher = watchConfigFile(config.source, {
        since: loadedDigest,
        onChange: () => {
          log.info({ event: 'config_changed', file: config.source }, 'config file changed on disk; reloading');
          reload();
        },
        onError: (e) => log.warn({ event: 'config_watch_failed', file: config.source, err: e.message }, 'cannot watch the config file; reload with SIGHUP'),
      });
      log.info({ event: 'listening', url: out.url, admin: out.adminUrl, demo: out.demoUrl }, 'portcullis is listening');
      return out;
    },
    stop(graceMs = config.shutdown_grace) {
      // Not ready from this very moment (before any await): load balancers stop sending.
      draining = true;
      stopping ??= drainAndClose(graceMs);
      return stopping;
    },
    currentConfig: () => config,
    reload,
  };
}

/** Waits for a teardown step, but not past `ms`: a stuck pool or socket must not hold the exit. */
async function bounded(step: Promise<unknown>, what: string, log: Logger, ms = TEARDOWN_STEP_MS): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const outcome = await Promise.race([
    step.then(
      () => 'done' as const,
      (e: Error) => e,
    ),
    new Promise<'late'>((resolve) => {
      timer = setTimeout(() => resolve('late'), ms);
    }),
  ]);
  clearTimeout(timer);
  if (outcome === 'late') log.warn({ event: 'shutdown_step_abandoned', step: what, after_ms: ms }, `shutdown: ${what} did not close in time; going on`);
  else if (outcome !== 'done') log.warn({ event: 'shutdown_step_failed', step: what, err: outcome.message }, `shutdown: closing the ${what} failed`);
}

/** Where the CLI finds this process's admin listener, and the token it needs (a 0600 file). */
function writeAdminToken(path: string, url: string, token: string): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  writeFileSync(path, `${JSON.stringify({ url, token })}\n`, { mode: 0o600 });
  chmodSync(path, 0o600);
}
