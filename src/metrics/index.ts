import { readFileSync } from 'node:fs';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** Outcomes of an authorization decision, as counted and logged (SPEC §9). */
export const AUTH_DECISIONS = ['allow', 'unauthenticated', 'forbidden', 'mfa_required', 'csrf', 'deny'] as const;
export type AuthDecision = (typeof AUTH_DECISIONS)[number];
/** Results of `portcullis_login_attempts_total`. */
export const LOGIN_RESULTS = ['success', 'invalid_credentials', 'locked', 'rate_limited', 'mfa_required', 'invalid_input'] as const;
export type LoginResult = (typeof LOGIN_RESULTS)[number];
/** Results of `portcullis_mfa_attempts_total`. */
export const MFA_RESULTS = ['success', 'invalid', 'replay', 'recovery_code'] as const;
/** Results of `portcullis_token_refresh_total`. */
export const REFRESH_RESULTS = ['success', 'invalid', 'reuse_detected'] as const;
/** Results of `portcullis_config_reloads_total`. */
export const RELOAD_RESULTS = ['success', 'failure'] as const;
/** Reasons of `portcullis_upstream_errors_total`. */
export const UPSTREAM_FAILURES = ['refused', 'reset', 'timeout'] as const;
/** The limiters every gateway has (sign-in, and the rest of the auth API); routes add `route:<name>`. */
export const FIXED_LIMITERS = ['login', 'auth_api'] as const;

/** The name of a route's rate limiter, as `portcullis_rate_limited_total{limiter}` shows it. */
export function routeLimiterName(route: string): string {
  return `route:${route}`;
}

/**
 * What {@link Metrics.prime} reads of a config: route names (and which have a `rate_limit`) and
 * upstream names. The loaded `Config` is one.
 */
export interface MetricsPrimeInput {
  readonly routes: readonly { readonly name: string; readonly rate_limit?: unknown }[];
  readonly upstreams: Readonly<Record<string, unknown>>;
}

/** Options of {@link Metrics}. */
export interface MetricsOptions {
  /** Collect the default process metrics (`process_*`, `nodejs_*`). @default true */
  processMetrics?: boolean;
  /** `portcullis_build_info{version}`. @default the version in package.json */
  version?: string;
  /** When the config this process runs was loaded (the reload gauges start from it). @default now */
  configLoadedAt?: Date;
}

/** The package version: package.json sits two folders up from src/metrics/ and dist/metrics/ alike. */
function packageVersion(): string {
  try {
    const v = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version?: unknown }).version;
    return typeof v === 'string' ? v : 'unknown';
  } catch {
    return 'unknown';
  }
}

/**
 * The named metrics of SPEC §9 behind one small interface. Label values come from config
 * names (route, upstream) or fixed enums, never raw paths, so cardinality stays bounded.
 *
 * Counters whose label values are known up front are exported at 0 from the start (a first
 * failure is then a visible change, and `rate()` works from the first scrape): the fixed enums
 * here, the config's routes, upstreams and limiters through {@link prime}. The default process
 * metrics keep their standard names (`process_*`, `nodejs_*`), as common dashboards expect.
 */
export class Metrics {
  readonly registry = new Registry();
  readonly httpRequests: Counter<'route' | 'method' | 'status'>;
  readonly httpDuration: Histogram<'route' | 'method' | 'status'>;
  readonly upstreamDuration: Histogram<'upstream' | 'status'>;
  readonly upstreamErrors: Counter<'upstream' | 'reason'>;
  readonly authDecisions: Counter<'route' | 'decision'>;
  readonly loginAttempts: Counter<'result'>;
  readonly lockouts: Counter;
  readonly mfaAttempts: Counter<'result'>;
  readonly tokenRefresh: Counter<'result'>;
  readonly rateLimited: Counter<'limiter'>;
  readonly configReloads: Counter<'result'>;
  readonly dependencyUp: Gauge<'dependency'>;
  readonly passwordQueueRejections: Counter;
  readonly passwordQueueDepth: Gauge;
  readonly buildInfo: Gauge<'version' | 'node'>;
  readonly configLastReloadSuccessful: Gauge;
  readonly configLastReloadSuccessTimestamp: Gauge;
  /** The configs already primed (by identity): a reload's new config primes its new names once. */
  private readonly primed = new WeakSet<MetricsPrimeInput>();
  private primeSource: (() => MetricsPrimeInput | undefined) | undefined;

  constructor(opts: MetricsOptions = {}) {
    const registers = [this.registry];
    if (opts.processMetrics !== false) collectDefaultMetrics({ register: this.registry });
    const buckets = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
    this.httpRequests = new Counter({
      name: 'portcullis_http_requests_total',
      help: 'Requests answered, by route (config name), method and status.',
      labelNames: ['route', 'method', 'status'],
      registers,
    });
    this.httpDuration = new Histogram({
      name: 'portcullis_http_request_duration_seconds',
      help: 'Time from request to response end.',
      labelNames: ['route', 'method', 'status'],
      buckets,
      registers,
    });
    this.upstreamDuration = new Histogram({
      name: 'portcullis_upstream_request_duration_seconds',
      help: 'Time spent waiting on upstreams.',
      labelNames: ['upstream', 'status'],
      buckets,
      registers,
    });
    this.upstreamErrors = new Counter({
      name: 'portcullis_upstream_errors_total',
      help: 'Upstream failures by reason (refused, reset, timeout).',
      labelNames: ['upstream', 'reason'],
      registers,
    });
    this.authDecisions = new Counter({
      name: 'portcullis_auth_decisions_total',
      help: 'Authorization decisions per route.',
      labelNames: ['route', 'decision'],
      registers,
    });
    this.loginAttempts = new Counter({ name: 'portcullis_login_attempts_total', help: 'Login attempts by result.', labelNames: ['result'], registers });
    this.lockouts = new Counter({ name: 'portcullis_lockouts_total', help: 'Usernames locked after repeated failures.', registers });
    this.mfaAttempts = new Counter({ name: 'portcullis_mfa_attempts_total', help: 'Second-factor attempts by result.', labelNames: ['result'], registers });
    this.tokenRefresh = new Counter({ name: 'portcullis_token_refresh_total', help: 'Refresh token uses by result.', labelNames: ['result'], registers });
    this.rateLimited = new Counter({ name: 'portcullis_rate_limited_total', help: 'Requests refused by a rate limiter.', labelNames: ['limiter'], registers });
    this.configReloads = new Counter({ name: 'portcullis_config_reloads_total', help: 'Config reloads by result.', labelNames: ['result'], registers });
    this.dependencyUp = new Gauge({
      name: 'portcullis_dependency_up',
      help: '1 when the dependency answered its last check.',
      labelNames: ['dependency'],
      registers,
    });
    // SPEC §12: argon2 work is bounded; a full queue answers 503 `busy` and is counted here.
    this.passwordQueueRejections = new Counter({
      name: 'portcullis_password_hash_queue_rejections_total',
      help: 'Password hash/verify runs refused because the argon2 queue was full (answered 503 busy).',
      registers,
    });
    this.passwordQueueDepth = new Gauge({
      name: 'portcullis_password_hash_queue_depth',
      help: 'Password hash/verify runs waiting for an argon2 slot.',
      registers,
    });
    this.buildInfo = new Gauge({
      name: 'portcullis_build_info',
      help: 'Always 1; the labels say which Portcullis version runs on which Node.js.',
      labelNames: ['version', 'node'],
      registers,
    });
    this.buildInfo.set({ version: opts.version ?? packageVersion(), node: process.version }, 1);
    this.configLastReloadSuccessful = new Gauge({
      name: 'portcullis_config_last_reload_successful',
      help: '1 when the last config load (start or reload) succeeded, 0 when the last reload failed.',
      registers,
    });
    this.configLastReloadSuccessTimestamp = new Gauge({
      name: 'portcullis_config_last_reload_success_timestamp_seconds',
      help: 'When the config in use was loaded (start or last successful reload), Unix seconds.',
      registers,
    });
    // A gateway only starts with a loaded, valid config: the one it was built from.
    this.configLastReloadSuccessful.set(1);
    this.configLastReloadSuccessTimestamp.set((opts.configLoadedAt ?? new Date()).getTime() / 1000);
    for (const result of LOGIN_RESULTS) this.loginAttempts.inc({ result }, 0);
    for (const result of MFA_RESULTS) this.mfaAttempts.inc({ result }, 0);
    for (const result of REFRESH_RESULTS) this.tokenRefresh.inc({ result }, 0);
    for (const result of RELOAD_RESULTS) this.configReloads.inc({ result }, 0);
    for (const limiter of FIXED_LIMITERS) this.rateLimited.inc({ limiter }, 0);
  }

  /**
   * Exports at 0 the series a config makes known: `auth_decisions` for each route × decision,
   * `upstream_errors` for each upstream × reason, `rate_limited` for each route limiter. Call it
   * with every config the gateway runs (start and each reload); series of names a reload removed
   * stay (a counter that vanishes would look like a reset). Calling it again is harmless.
   */
  prime(config: MetricsPrimeInput): void {
    if (this.primed.has(config)) return;
    this.primed.add(config);
    for (const { name, rate_limit } of config.routes) {
      for (const decision of AUTH_DECISIONS) this.authDecisions.inc({ route: name, decision }, 0);
      if (rate_limit) this.rateLimited.inc({ limiter: routeLimiterName(name) }, 0);
    }
    for (const upstream of Object.keys(config.upstreams)) {
      for (const reason of UPSTREAM_FAILURES) this.upstreamErrors.inc({ upstream, reason }, 0);
    }
  }

  /**
   * Where the config in use can be read: each {@link render} primes it (see {@link prime}) when
   * it is a config not seen before, so a reload's new routes and upstreams show up at 0 on the
   * next scrape without anyone calling {@link prime}. The pipeline registers its state here.
   */
  primeFrom(source: () => MetricsPrimeInput | undefined): void {
    this.primeSource = source;
  }

  /**
   * A config reload (SIGHUP or file change) finished: counts it in
   * `portcullis_config_reloads_total{result}` and sets `portcullis_config_last_reload_successful`
   * (and, on success, the success timestamp). A failed reload keeps the old config, so the
   * timestamp keeps saying when the config in use was loaded.
   */
  configReloaded(ok: boolean, at: Date = new Date()): void {
    this.configReloads.inc({ result: ok ? 'success' : 'failure' });
    this.configLastReloadSuccessful.set(ok ? 1 : 0);
    if (ok) this.configLastReloadSuccessTimestamp.set(at.getTime() / 1000);
  }

  private readonly requestChildren = new Map<string, { count: { inc(): void }; duration: { observe(v: number): void } }>();

  /**
   * One answered request. The labelled children are cached: label values are config names
   * and fixed enums (bounded), and resolving labels on every request is hot-path work.
   */
  requestDone(route: string, method: string, status: number, seconds: number): void {
    const key = `${route}\u0000${method}\u0000${status}`;
    let c = this.requestChildren.get(key);
    if (!c) {
      const labels = { route, method, status: String(status) };
      c = { count: this.httpRequests.labels(labels), duration: this.httpDuration.labels(labels) };
      this.requestChildren.set(key, c);
    }
    c.count.inc();
    c.duration.observe(seconds);
  }

  /** Prometheus text exposition. */
  async render(): Promise<{ contentType: string; body: string }> {
    const current = this.primeSource?.();
    if (current) this.prime(current);
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}
