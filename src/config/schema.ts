import { createSecureContext } from 'node:tls';
import { z } from 'zod';
import { parseDuration } from './duration.js';
import { redisUrlProblem } from './redis-url.js';

/**
 * The default `tls.ciphers`: forward-secret AEAD suites only. TLS 1.3 (all AEAD + ephemeral
 * key exchange), then ECDHE with AES-GCM or ChaCha20-Poly1305 for TLS 1.2. No static-RSA key
 * exchange (no forward secrecy), no CBC (padding oracles, SHA-1 MACs), no RC4/3DES, no DHE
 * (slow, and weak groups in the wild).
 */
export const DEFAULT_TLS_CIPHERS = [
  'TLS_AES_128_GCM_SHA256',
  'TLS_AES_256_GCM_SHA384',
  'TLS_CHACHA20_POLY1305_SHA256',
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-CHACHA20-POLY1305',
].join(':');

/** A duration string (`30s`, `15m`, `7d`) parsed to milliseconds. */
const duration = z.string().transform((s, ctx) => {
  const ms = parseDuration(s);
  if (ms === undefined || ms <= 0) {
    ctx.addIssue({ code: 'custom', message: `not a duration: "${s}" (use e.g. 500ms, 30s, 15m, 1h, 7d)` });
    return z.NEVER;
  }
  return ms;
});

/** `host:port`, `:port` or `[v6]:port`, parsed. */
const listenAddr = z.string().transform((s, ctx) => {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\s]*)):(\d{1,5})$/.exec(s.trim());
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) {
    ctx.addIssue({ code: 'custom', message: `not a listen address: "${s}" (use host:port, e.g. 127.0.0.1:8080)` });
    return z.NEVER;
  }
  return { host: m[1] ?? (m[2] || '0.0.0.0'), port };
});
export type ListenAddr = { host: string; port: number };

const headerName = z.string().regex(/^[A-Za-z0-9-]+$/, 'not an HTTP header name');

const identityHeaders = z.strictObject({
  user: headerName.default('X-Auth-User'),
  user_id: headerName.default('X-Auth-User-Id'),
  email: headerName.default('X-Auth-Email'),
  roles: headerName.default('X-Auth-Roles'),
});

const cidr = z.string().refine((s) => /^[0-9a-fA-F:.]+(\/\d{1,3})?$/.test(s), 'not an IP address or CIDR range');

const rateLimit = z.strictObject({
  requests: z.number().int().positive(),
  per: duration,
});

const role = z.string().regex(/^[A-Za-z0-9_.:-]{1,64}$/, 'role names use letters, digits and _ . : -');

const access = z.union([z.enum(['public', 'authenticated', 'deny']), z.strictObject({ roles: z.array(role).min(1, 'list at least one role') })]);

const route = z.strictObject({
  name: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, 'route names use letters, digits and _ . -'),
  match: z.strictObject({
    host: z
      .string()
      .regex(/^(\*\.)?[A-Za-z0-9.-]+(:\d+)?$/, 'a host name, or *.domain for any subdomain')
      .optional(),
    path: z.string().startsWith('/', 'a path pattern starts with /').default('/**'),
    methods: z
      .array(
        z
          .string()
          .regex(/^[A-Za-z]+$/, 'an HTTP method')
          .transform((m) => m.toUpperCase()),
      )
      .min(1)
      .optional(),
    /** Match the path case-sensitively. Default: case-folded, as IIS and Express read paths. */
    case_sensitive: z.boolean().default(false),
  }),
  upstream: z.string().optional(),
  access,
  mfa: z.boolean().default(false),
  rate_limit: rateLimit.optional(),
  allow_semicolons: z.boolean().default(false),
});

const upstream = z.strictObject({
  url: z.url({ protocol: /^https?$/, error: 'an http:// or https:// URL' }),
  timeout: duration.default(30_000),
  assertion: z.boolean().default(false),
  max_sockets: z.number().int().positive().default(128),
  /**
   * The upstream honours X-HTTP-Method-Override / X-HTTP-Method / X-Method-Override: those
   * headers are forwarded and the overriding method is the one authorized. Default: removed.
   */
  method_override: z.boolean().default(false),
  identity_headers: identityHeaders.partial().optional(),
});

export const configSchema = z
  .strictObject({
    /** Gateway display name (TOTP issuer, page titles). */
    name: z.string().min(1).default('Portcullis'),
    listen: listenAddr.default({ host: '127.0.0.1', port: 8080 }),
    tls: z
      .strictObject({
        cert: z.string().min(1),
        key: z.string().min(1),
        /** Lowest protocol version the HTTPS listener accepts. */
        min_version: z.enum(['TLSv1.2', 'TLSv1.3']).default('TLSv1.2'),
        /**
         * OpenSSL cipher string. TLS 1.2 suites by OpenSSL name; TLS 1.3 suites (`TLS_*`) may be
         * listed too (when none are, OpenSSL's TLS 1.3 defaults apply: all AEAD + forward-secret).
         */
        ciphers: z
          .string()
          .min(1)
          .superRefine((s, ctx) => {
            try {
              createSecureContext({ ciphers: s });
            } catch (e) {
              ctx.addIssue({ code: 'custom', message: `not a usable OpenSSL cipher string (${(e as Error).message})` });
            }
          })
          .default(DEFAULT_TLS_CIPHERS),
      })
      .optional(),
    public_url: z.url({ protocol: /^https?$/ }).optional(),
    trust_proxy: z.array(cidr).default([]),
    admin: z.strictObject({ listen: listenAddr.default({ host: '127.0.0.1', port: 9464 }) }).prefault({}),
    data_dir: z.string().min(1).default('./data'),
    log_level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    shutdown_grace: duration.default(25_000),
    /** Limits of the HTTP listeners (gateway and admin), set explicitly rather than left to Node's defaults. */
    limits: z
      .strictObject({
        /**
         * Header lines a request may carry; more is 431 (Node would otherwise drop the excess
         * silently while still framing the body by it). Apache's LimitRequestFields default.
         */
        max_header_lines: z.number().int().min(16).max(1000).default(100),
        /** Time to receive the whole request head. */
        headers_timeout: duration.default(20_000),
        /** Time to receive the whole request (head and body); long uploads need more. */
        request_timeout: duration.default(300_000),
        /** How long an idle client keep-alive connection is kept open. */
        keep_alive_timeout: duration.default(5_000),
      })
      .prefault({}),
    /** Worker processes (node:cluster): a number, or auto (one per CPU). Needs Redis-shared state. */
    workers: z.union([z.literal('auto'), z.number().int().min(1).max(256)]).default(1),
    storage: z
      .strictObject({
        database_url: z.string().min(1).default('sqlite:./data/portcullis.db'),
        /** Empty: in-process state. Else redis://, rediss://, a socket path, or redis+sentinel:// (see config/redis-url.ts). */
        redis_url: z
          .string()
          .superRefine((url, ctx) => {
            const problem = redisUrlProblem(url);
            if (problem) ctx.addIssue({ code: 'custom', message: problem });
          })
          .default(''),
        /** Prefix of every Redis key and channel (several gateways, or test runs, can share a Redis). */
        redis_prefix: z
          .string()
          .regex(/^[A-Za-z0-9:_.-]{1,64}$/, 'letters, digits and : _ . -')
          .default('portcullis:'),
      })
      .prefault({}),
    keys: z
      .strictObject({
        /** JWKS file with the private signing keys; the first key is the active one. */
        signing_keys_file: z.string().default(''),
      })
      .prefault({}),
    auth: z
      .strictObject({
        prefix: z
          .string()
          .regex(/^\/[A-Za-z0-9/_-]*[A-Za-z0-9_-]$/, 'a path such as /api/auth')
          .default('/api/auth'),
        access_ttl: duration.default(15 * 60_000),
        refresh_ttl: duration.default(7 * 86_400_000),
        session_max_age: duration.default(30 * 86_400_000),
        issuer: z.string().optional(),
        audience: z.string().default('portcullis'),
        /** Origins trusted for CSRF checks, CORS on the auth API and absolute `rd` targets. */
        allowed_origins: z.array(z.url({ protocol: /^https?$/, error: 'an http(s) origin such as https://app.example.com' })).default([]),
        lockout: z
          .strictObject({
            max_failures: z.number().int().positive().default(5),
            window: duration.default(15 * 60_000),
            duration: duration.default(15 * 60_000),
          })
          .prefault({}),
        login_rate_limit: rateLimit.default({ requests: 5, per: 60_000 }),
        /** Per client IP, every other auth API request (refresh, 2FA, sessions, …). */
        api_rate_limit: rateLimit.default({ requests: 120, per: 60_000 }),
        password: z
          .strictObject({
            min_length: z.number().int().min(8).default(12),
            max_length: z.number().int().max(1024).default(128),
            min_zxcvbn_score: z.number().int().min(0).max(4).default(3),
          })
          .prefault({}),
        argon2: z
          .strictObject({
            memory_kib: z.number().int().min(19_456, 'at least 19456 KiB (19 MiB)').default(19_456),
            time_cost: z.number().int().min(2).default(2),
            parallelism: z.number().int().min(1).default(1),
            /** argon2 runs at once (per process); unset: one per core less one, at least 1. */
            max_concurrent: z.number().int().min(1).max(1024).optional(),
            /** Sign-ins waiting for an argon2 slot; one more is answered 503 `busy` with Retry-After. */
            max_queue: z.number().int().min(0).max(100_000).default(32),
          })
          .prefault({}),
      })
      .prefault({}),
    identity_headers: identityHeaders.prefault({}),
    upstreams: z.record(z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, 'upstream names use letters, digits and _ . -'), upstream).default({}),
    routes: z.array(route).default([]),
    /** Runs the bundled echo app in-process (for `npm start` and demos). */
    demo_upstream: z.strictObject({ listen: listenAddr }).optional(),
  })
  .superRefine((cfg, ctx) => {
    const seen = new Set<string>();
    cfg.routes.forEach((r, i) => {
      if (seen.has(r.name)) ctx.addIssue({ code: 'custom', path: ['routes', i, 'name'], message: `duplicate route name "${r.name}"` });
      seen.add(r.name);
      if (r.access !== 'deny' && r.upstream === undefined) {
        ctx.addIssue({ code: 'custom', path: ['routes', i, 'upstream'], message: 'required unless access is deny' });
      }
      if (r.upstream !== undefined && !(r.upstream in cfg.upstreams)) {
        ctx.addIssue({ code: 'custom', path: ['routes', i, 'upstream'], message: `no upstream named "${r.upstream}"` });
      }
      if (r.mfa && r.access === 'public') {
        ctx.addIssue({ code: 'custom', path: ['routes', i, 'mfa'], message: 'mfa: true makes no sense on a public route' });
      }
    });
    if (cfg.limits.headers_timeout > cfg.limits.request_timeout) {
      ctx.addIssue({ code: 'custom', path: ['limits', 'headers_timeout'], message: 'greater than request_timeout' });
    }
    if (cfg.auth.password.min_length > cfg.auth.password.max_length) {
      ctx.addIssue({ code: 'custom', path: ['auth', 'password', 'min_length'], message: 'greater than max_length' });
    }
    if ((cfg.tls === undefined) !== true && cfg.public_url?.startsWith('http:')) {
      ctx.addIssue({ code: 'custom', path: ['public_url'], message: 'must be https:// when tls is set' });
    }
  });

/** The validated configuration, as parsed (before freezing). */
export type ConfigInput = z.input<typeof configSchema>;
type Parsed = z.output<typeof configSchema>;
type DeepReadonly<T> = T extends (infer U)[] ? readonly DeepReadonly<U>[] : T extends object ? { readonly [K in keyof T]: DeepReadonly<T[K]> } : T;

/** The deep-frozen configuration every module receives. */
export type Config = DeepReadonly<Parsed & { /** Where the config came from (for messages). */ source: string; publicUrl: string; issuer: string }>;
export type RouteConfig = Config['routes'][number];
export type UpstreamConfig = Config['upstreams'][string];
export type Access = RouteConfig['access'];
export type IdentityHeaders = Config['identity_headers'];
