import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** Outcome of an authorization decision, as counted and logged. */
export type AuthDecision = 'allow' | 'unauthenticated' | 'forbidden' | 'mfa_required' | 'csrf' | 'deny';
export type LoginResult = 'success' | 'invalid_credentials' | 'locked' | 'rate_limited' | 'mfa_required' | 'invalid_input';

/**
 * The named metrics of SPEC §9 behind one small interface. Label values come from config
 * names (route, upstream) or fixed enums, never raw paths, so cardinality stays bounded.
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

  constructor(opts: { processMetrics?: boolean } = {}) {
    const registers = [this.registry];
    if (opts.processMetrics !== false) collectDefaultMetrics({ register: this.registry, prefix: 'portcullis_' });
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
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}
