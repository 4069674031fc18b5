import type { IncomingMessage, ServerResponse } from 'node:http';
import { ipKeyGenerator, MemoryStore, rateLimit, type Store } from 'express-rate-limit';
import { RedisStore } from 'rate-limit-redis';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { AuthErrors, GatewayError } from '../errors/index.js';
import type { Metrics } from '../metrics/index.js';
import { sendError } from './problem.js';

/** Where a limiter keeps its counts: in process, or in Redis (shared by every replica). */
export type LimiterBackend = { kind: 'memory' } | { kind: 'redis'; client: Redis; prefix: string };

export interface LimiterOptions {
  /** Label for `portcullis_rate_limited_total{limiter}` and logs (`login`, `auth_api`, `route:<name>`). */
  name: string;
  requests: number;
  perMs: number;
  backend: LimiterBackend;
  clientIp: (req: IncomingMessage) => string;
  metrics: Metrics;
  log: Logger;
  /**
   * What a store failure (Redis down) does. Closed (sign-in): 503 — never let a dependency
   * outage switch abuse protection off. Open (proxied routes): the request goes through.
   */
  onStoreError: 'closed' | 'open';
  /** Extra work when a request is refused (e.g. counting a login attempt). */
  onLimited?: () => void;
  /** Writes the 429 (default: problem+json; the sign-in form wants an HTML page). */
  respond?: (req: IncomingMessage, res: ServerResponse, err: GatewayError) => void;
}

/** A limiter callable on raw requests: resolves true to continue; false when it answered (429/503). */
export type Limiter = (req: IncomingMessage, res: ServerResponse) => Promise<boolean>;

/**
 * rate-limit-redis caches the promise of its script upload: one failure (Redis down at start,
 * or during the upload) would poison it for good. Start the upload over after any failure.
 */
class ResilientRedisStore extends RedisStore {
  override async retryableIncrement(key: string) {
    // A failed upload is retried now, not one request later.
    this.incrementScriptSha = this.incrementScriptSha.catch(() => this.loadIncrementScript());
    this.getScriptSha = this.getScriptSha.catch(() => this.loadGetScript());
    this.getScriptSha.catch(() => undefined);
    return super.retryableIncrement(key);
  }
}

function storeFor(o: LimiterOptions): Store {
  if (o.backend.kind === 'memory') return new MemoryStore();
  const client = o.backend.client;
  return new ResilientRedisStore({
    prefix: `${o.backend.prefix}rl:${o.name}:`,
    // ioredis's call() takes the command name and its arguments.
    sendCommand: (command: string, ...args: string[]) => client.call(command, ...args) as never,
  });
}

/**
 * express-rate-limit (fixed window) keyed by the client IP the gateway resolved through
 * `trust_proxy` — never a client-supplied header — with IPv6 clients grouped by /56 (one
 * customer's prefix is one client). Answers 429 problem+json with `Retry-After` and the
 * draft-8 `RateLimit`/`RateLimit-Policy` headers.
 */
export function createLimiter(o: LimiterOptions): Limiter {
  // The wrapper below learns through this map that the handler refused a request.
  const refused = new WeakMap<IncomingMessage, () => void>();
  const mw = rateLimit({
    windowMs: o.perMs,
    limit: o.requests,
    standardHeaders: 'draft-8',
    legacyHeaders: false,
    identifier: o.name,
    store: storeFor(o),
    // Store errors always come to the wrapper below, which logs them and applies onStoreError.
    passOnStoreError: false,
    // The raw request has no req.ip; this is the only key and it is already trust-proxy aware.
    keyGenerator: (req) => ipKeyGenerator(o.clientIp(req as unknown as IncomingMessage), 56),
    validate: false,
    handler: (req, res) => {
      const raw = req as unknown as IncomingMessage;
      o.metrics.rateLimited.inc({ limiter: o.name });
      o.onLimited?.();
      o.log.info({ event: 'rate_limited', limiter: o.name, ip: o.clientIp(raw) }, 'rate limit reached');
      const err = new GatewayError(AuthErrors.rate_limited, 'Too many requests; slow down.');
      (o.respond ?? sendError)(raw, res as unknown as ServerResponse, err);
      refused.get(raw)?.();
    },
  });
  return (req, res) =>
    new Promise<boolean>((resolve) => {
      let settled = false;
      const settle = (v: boolean) => {
        if (settled) return;
        settled = true;
        refused.delete(req);
        resolve(v);
      };
      refused.set(req, () => settle(false));
      // express-rate-limit writes its headers with res.append, which plain Node responses lack.
      const r = res as ServerResponse & { append?: (name: string, value: string | string[]) => unknown };
      if (typeof r.append !== 'function') r.append = (name, value) => r.appendHeader(name, value);
      Promise.resolve(
        mw(req as never, res as never, (err?: unknown) => {
          if (settled) return;
          if (err) {
            o.log.error({ event: 'rate_limit_store_error', limiter: o.name, err: (err as Error).message, fail: o.onStoreError }, 'rate limit store unavailable');
            if (o.onStoreError === 'open') {
              settle(true);
              return;
            }
            sendError(req, res, new GatewayError(AuthErrors.service_unavailable, 'A backing service is unavailable; try again shortly.', { headers: { 'retry-after': '2' } }));
            settle(false);
            return;
          }
          settle(true);
        }),
      ).catch((e: unknown) => {
        o.log.error({ event: 'rate_limit_error', limiter: o.name, err: (e as Error).message }, 'rate limiter failed');
        if (!settled) {
          sendError(req, res, e);
          settle(false);
        }
      });
    });
}

/** The same limiter as express middleware (for the auth API). */
export function asMiddleware(limiter: Limiter) {
  return (req: IncomingMessage, res: ServerResponse, next: (err?: unknown) => void): void => {
    limiter(req, res).then((ok) => ok && next(), next);
  };
}
