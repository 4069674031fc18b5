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

const DURATION = /^\s*(\d+(ms|s|m|h|d))+\s*$/;

/**
 * A duration string (`30s`, `15m`, `7d`) parsed to milliseconds. Defaults are given as strings
 * (`prefault`), so the JSON Schema shows them as they are written in the file.
 */
const duration = z
  .string()
  .regex(DURATION, { error: (iss) => `not a duration: "${String(iss.input)}" (use e.g. 500ms, 30s, 15m, 1h, 7d)` })
  .transform((s, ctx) => {
    const ms = parseDuration(s);
    if (ms === undefined || ms <= 0) {
      ctx.addIssue({ code: 'custom', message: `not a duration: "${s}" (use e.g. 500ms, 30s, 15m, 1h, 7d)` });
      return z.NEVER;
    }
    return ms;
  });

/** Node's timers hold at most 2^31-1 ms (~24.8 days); a longer one fires after 1 ms instead. */
const MAX_TIMER_MS = 2_147_483_647;

/** A duration the gateway arms a timer with (timeouts, the shutdown grace): at most ~24 days. */
const timerDuration = duration.refine((ms) => ms <= MAX_TIMER_MS, { message: 'too long: a timeout can be at most 24d (2147483647 ms)' });

const LISTEN = /^\s*(?:\[([0-9a-fA-F:.]+)\]|([^:\s]*)):(\d{1,5})\s*$/;

/** `host:port`, `:port` or `[v6]:port`, parsed. */
const listenAddr = z
  .string()
  .regex(LISTEN, { error: (iss) => `not a listen address: "${String(iss.input)}" (use host:port, e.g. 127.0.0.1:8080)` })
  .transform((s, ctx) => {
    const m = LISTEN.exec(s) as RegExpExecArray;
    const port = Number(m[3]);
    if (port > 65535) {
      ctx.addIssue({ code: 'custom', message: `not a listen address: "${s}" (port ${port} is above 65535)` });
      return z.NEVER;
    }
    return { host: m[1] ?? (m[2] || '0.0.0.0'), port };
  });
export type ListenAddr = { host: string; port: number };

/** An http:// or https:// URL; the JSON Schema says so too (a `format: uri` alone would take any scheme). */
const httpUrl = (error: string) => z.url({ protocol: /^https?$/, error }).meta({ pattern: '^[hH][tT][tT][pP][sS]?://' });

const headerName = z.string().regex(/^[A-Za-z0-9-]+$/, 'not an HTTP header name');

const HEADER_DOC = {
  user: 'Header carrying the username.',
  user_id: 'Header carrying the user id.',
  email: "Header carrying the user's email address.",
  roles: "Header carrying the user's roles, comma-separated.",
} as const;

const identityHeaders = z
  .strictObject({
    user: headerName.default('X-Auth-User').describe(HEADER_DOC.user),
    user_id: headerName.default('X-Auth-User-Id').describe(HEADER_DOC.user_id),
    email: headerName.default('X-Auth-Email').describe(HEADER_DOC.email),
    roles: headerName.default('X-Auth-Roles').describe(HEADER_DOC.roles),
  })
  .describe('Names of the identity headers set on forwarded requests (every incoming copy is stripped first).');

/** Per upstream: only the names given override the top-level `identity_headers` (no defaults of its own). */
const upstreamIdentityHeaders = z
  .strictObject({
    user: headerName.optional().describe(`${HEADER_DOC.user} Default: the top-level identity_headers.user.`),
    user_id: headerName.optional().describe(`${HEADER_DOC.user_id} Default: the top-level identity_headers.user_id.`),
    email: headerName.optional().describe(`${HEADER_DOC.email} Default: the top-level identity_headers.email.`),
    roles: headerName.optional().describe(`${HEADER_DOC.roles} Default: the top-level identity_headers.roles.`),
  })
  .describe("This upstream's own identity header names, over the top-level identity_headers.");

/**
 * An IP address or CIDR range, by shape. Whether it really is one (octets up to 255, a prefix
 * length the family allows) is checked by `trust_proxy`'s parser itself (see src/preflight.ts),
 * so the check and the gateway cannot disagree.
 */
const cidr = z.string().regex(/^[0-9a-fA-F:.]+(\/\d{1,3})?$/, 'not an IP address or CIDR range');

const rateLimit = z.strictObject({
  requests: z.number().int().positive().describe('Requests allowed per window.'),
  per: duration.describe('The window, e.g. 1m.'),
});

const role = z.string().regex(/^[A-Za-z0-9_.:-]{1,64}$/, 'role names use letters, digits and _ . : -');

const access = z
  .union(
    [
      z.enum(['public', 'authenticated', 'deny']),
      z.strictObject({ roles: z.array(role).min(1, 'list at least one role').describe('Any one of these roles grants access.') }),
    ],
    { error: 'one of public, authenticated, deny, or { roles: [role, …] }' },
  )
  .describe('Who may pass: public (anyone), authenticated (any signed-in user), deny (nobody: 403), or { roles: [...] } (any of these roles).');

const route = z
  .strictObject({
    name: z
      .string()
      .regex(/^[A-Za-z0-9_.-]{1,64}$/, 'route names use letters, digits and _ . -')
      .describe('Unique name: metric and log label, `policy explain` and `policy test` refer to it.'),
    match: z
      .strictObject({
        host: z
          .string()
          .regex(/^(\*\.)?[A-Za-z0-9.-]+(:\d+)?$/, 'a host name, or *.domain for any subdomain')
          .optional()
          .describe('Host name (case-insensitive; a port only when given here), or *.example.com for any subdomain. Absent: any host.'),
        path: z
          .string()
          .regex(/^\//, 'a path pattern starts with /')
          .default('/**')
          .describe('Path pattern: `*` matches within one segment, `**` (a whole segment) any number of segments.'),
        methods: z
          .array(
            z
              .string()
              .regex(/^[A-Za-z]+$/, 'an HTTP method')
              .transform((m) => m.toUpperCase()),
          )
          .min(1)
          .optional()
          .describe('HTTP methods this route takes (GET also takes HEAD). Absent: every method. The others fall through to later routes.'),
        case_sensitive: z.boolean().default(false).describe('Match the path case-sensitively. Default: case-folded, as IIS and Express read paths.'),
      })
      .describe('What requests this route takes: host, path and methods. All given must match.'),
    upstream: z.string().optional().describe('Name of the upstream (under `upstreams`) to forward to; required unless access is deny.'),
    access,
    mfa: z.boolean().default(false).describe('The token must carry the second factor (amr "otp"); else 403 mfa_required.'),
    rate_limit: rateLimit.optional().describe('Requests per client IP on this route; more is 429.'),
    allow_semicolons: z.boolean().default(false).describe('Allow `;` (or %3B) in paths of this route; else 400.'),
  })
  .describe('One route; the first route that matches a request decides.');

const upstream = z
  .strictObject({
    url: httpUrl('an http:// or https:// URL').describe('Base URL of the application: http:// or https://.'),
    timeout: timerDuration.prefault('30s').describe('Time the upstream has to answer; longer is 504.'),
    assertion: z.boolean().default(false).describe('Add X-Auth-Assertion: a JWT signed by the gateway (aud = upstream name, 60 s), verifiable with the JWKS.'),
    max_sockets: z.number().int().positive().default(128).describe('Keep-alive pool size towards this upstream.'),
    method_override: z
      .boolean()
      .default(false)
      .describe(
        'The upstream honours X-HTTP-Method-Override / X-HTTP-Method / X-Method-Override: they are forwarded and the overriding method is the one authorized. Default: removed.',
      ),
    identity_headers: upstreamIdentityHeaders.optional(),
  })
  .describe('An application behind the gateway.');

/**
 * `storage.database_url` by scheme (the letters in either case, as the database layer reads
 * them); the rest of the URL is checked by the database layer's own parser (src/preflight.ts).
 */
const DATABASE_SCHEME = /^(?:[sS][qQ][lL][iI][tT][eE]:|[pP][oO][sS][tT][gG][rR][eE][sS](?:[qQ][lL])?:\/\/)/;

export const configSchema = z
  .strictObject({
    name: z.string().min(1).default('Portcullis').describe('Display name: page titles and the TOTP issuer.'),
    listen: listenAddr.prefault('127.0.0.1:8080').describe('Where the gateway listens: host:port, or [v6]:port.'),
    tls: z
      .strictObject({
        cert: z.string().min(1).describe('PEM certificate file (with its chain). Read at start; `config check` reads it too.'),
        key: z.string().min(1).describe('PEM private key file of the certificate.'),
        min_version: z.enum(['TLSv1.2', 'TLSv1.3']).default('TLSv1.2').describe('Lowest protocol version the HTTPS listener accepts.'),
        ciphers: z
          .string()
          .min(1)
          .superRefine((s, ctx) => {
            try {
              createSecureContext({ ciphers: s });
            } catch (e) {
              const reason = (e as Error).message.replace(/^error:[0-9A-F]+:[^:]*::?/, '');
              ctx.addIssue({ code: 'custom', message: `not a usable OpenSSL cipher string (${reason})` });
            }
          })
          .default(DEFAULT_TLS_CIPHERS)
          .describe(
            'OpenSSL cipher string. TLS 1.2 suites by OpenSSL name; TLS 1.3 suites (TLS_*) may be listed too. Default: forward-secret AEAD suites only.',
          ),
      })
      .optional()
      .describe('TLS termination. When set: HTTPS only, HSTS on every response, Secure __Host- cookies.'),
    public_url: httpUrl('an http:// or https:// URL')
      .optional()
      .describe(
        'The URL users reach the gateway at: token issuer, redirects, cookie and CSRF origin. Same on every replica; required in production. Default: derived from listen.',
      ),
    trust_proxy: z.array(cidr).default([]).describe('Peers (IP addresses or CIDR ranges) whose X-Forwarded-For and X-Request-Id are believed. Default: none.'),
    admin: z
      .strictObject({ listen: listenAddr.prefault('127.0.0.1:9464').describe('Where the admin listener listens: host:port.') })
      .prefault({})
      .describe('Admin listener: /metrics, /healthz, /readyz. Keep it private.'),
    data_dir: z.string().min(1).default('./data').describe('Where embedded mode keeps its SQLite file and generated keys.'),
    log_level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info').describe('Log level (JSON lines on stdout).'),
    shutdown_grace: timerDuration.prefault('25s').describe('On SIGTERM, how long in-flight requests get to finish.'),
    limits: z
      .strictObject({
        max_header_lines: z.number().int().min(16).max(1000).default(100).describe('Header lines a request may carry; more is 431 (never silently truncated).'),
        headers_timeout: timerDuration.prefault('20s').describe('Time to receive a whole request head.'),
        request_timeout: timerDuration.prefault('5m').describe('Time to receive a whole request (head and body); long uploads need more.'),
        keep_alive_timeout: timerDuration.prefault('5s').describe('How long an idle client keep-alive connection is kept open.'),
      })
      .prefault({})
      .describe('Limits of the HTTP listeners (gateway and admin), set explicitly rather than left to Node.'),
    workers: z
      .union([z.literal('auto'), z.number().int().min(1).max(256)])
      .default(1)
      .describe('Worker processes (node:cluster): a number, or auto (one per CPU). More than 1 needs storage.redis_url.'),
    storage: z
      .strictObject({
        database_url: z
          .string()
          .regex(DATABASE_SCHEME, 'not a database URL: use sqlite:./file.db, sqlite::memory: or postgres://user@host:5432/db (postgresql:// too)')
          .default('sqlite:./data/portcullis.db')
          .describe('sqlite:./data/portcullis.db (embedded), or postgres://user:pass@host:5432/db[?schema=name] (postgresql:// too).'),
        redis_url: z
          .string()
          .superRefine((url, ctx) => {
            const problem = redisUrlProblem(url);
            if (problem) ctx.addIssue({ code: 'custom', message: problem });
          })
          .default('')
          .describe(
            'Empty: in-process state (one process only). Else redis://host:6379[/db], rediss:// (TLS), a Unix socket path, or redis+sentinel://host:26379,host2:26379/<master-name> (rediss+sentinel:// for TLS).',
          ),
        redis_prefix: z
          .string()
          .regex(/^[A-Za-z0-9:_.-]{1,64}$/, 'letters, digits and : _ . -')
          .default('portcullis:')
          .describe('Prefix of every Redis key and pub/sub channel (several gateways can share a Redis).'),
      })
      .prefault({})
      .describe('Durable data (SQL) and shared state (Redis, or in process).'),
    keys: z
      .strictObject({
        signing_keys_file: z
          .string()
          .default('')
          .describe(
            'JWKS file of private Ed25519 signing keys (`portcullis keys generate`); the first key signs, the rest still verify. Empty: PORTCULLIS_SIGNING_KEYS, else embedded mode generates one into data_dir (refused in production).',
          ),
      })
      .prefault({})
      .describe('Token signing keys.'),
    auth: z
      .strictObject({
        prefix: z
          .string()
          .regex(/^\/[A-Za-z0-9/_-]*[A-Za-z0-9_-]$/, 'a path such as /api/auth')
          .default('/api/auth')
          .describe("Path under which the gateway's own auth API and pages live."),
        access_ttl: duration.prefault('15m').describe('Lifetime of an access token.'),
        refresh_ttl: duration.prefault('7d').describe('Lifetime of a refresh token (single use; each refresh issues a new one).'),
        session_max_age: duration.prefault('30d').describe('Absolute session lifetime, refreshes or not.'),
        issuer: z.string().optional().describe('Token issuer (iss). Default: public_url.'),
        audience: z.string().default('portcullis').describe('Token audience (aud).'),
        allowed_origins: z
          .array(httpUrl('an http(s) origin such as https://app.example.com'))
          .default([])
          .describe('Other origins trusted for CSRF checks, CORS on the auth API and absolute rd targets.'),
        lockout: z
          .strictObject({
            max_failures: z.number().int().positive().default(5).describe('Failed sign-ins, 2FA codes or password confirmations that lock a username.'),
            window: duration.prefault('15m').describe('Window in which the failures are counted.'),
            duration: duration.prefault('15m').describe('How long the username stays locked (423).'),
          })
          .prefault({})
          .describe('Username lockout after repeated failures.'),
        login_rate_limit: rateLimit.prefault({ requests: 5, per: '1m' }).describe('Sign-in requests per client IP; more is 429.'),
        api_rate_limit: rateLimit.prefault({ requests: 120, per: '1m' }).describe('Every other auth API request (refresh, 2FA, sessions, …) per client IP.'),
        password: z
          .strictObject({
            min_length: z.number().int().min(8).default(12).describe('Shortest password accepted.'),
            max_length: z.number().int().max(1024).default(128).describe('Longest password accepted.'),
            min_zxcvbn_score: z.number().int().min(0).max(4).default(3).describe('Lowest zxcvbn strength score accepted (0-4).'),
          })
          .prefault({})
          .describe('Password policy.'),
        argon2: z
          .strictObject({
            memory_kib: z.number().int().min(19_456, 'at least 19456 KiB (19 MiB)').default(19_456).describe('argon2id memory in KiB (floor 19456).'),
            time_cost: z.number().int().min(2).default(2).describe('argon2id passes (floor 2).'),
            parallelism: z.number().int().min(1).default(1).describe('argon2id lanes.'),
            max_concurrent: z
              .number()
              .int()
              .min(1)
              .max(1024)
              .optional()
              .describe('argon2 runs at once per process. Default: one per core less one, at least 1 (shared among workers).'),
            max_queue: z
              .number()
              .int()
              .min(0)
              .max(100_000)
              .default(32)
              .describe('Sign-ins waiting for an argon2 slot; one more is answered 503 busy with Retry-After.'),
          })
          .prefault({})
          .describe('Password hashing cost (raise only) and its bounded queue.'),
      })
      .prefault({})
      .describe('Sign-in, tokens, lockout, rate limits and passwords.'),
    identity_headers: identityHeaders.prefault({}),
    upstreams: z
      .record(z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, 'upstream names use letters, digits and _ . -'), upstream)
      .default({})
      .describe('Applications behind the gateway, by name.'),
    routes: z.array(route).default([]).describe('Ordered: the first route that matches a request decides; no match is 404.'),
    demo_upstream: z
      .strictObject({ listen: listenAddr.describe('Where the echo app listens: host:port.') })
      .optional()
      .describe('Runs the bundled echo app in-process (npm start, demos). Ignored, with a warning, in production.'),
  })
  .meta({
    title: 'Portcullis gateway configuration',
    // biome-ignore lint/suspicious/noTemplateCurlyInString: the config syntax, quoted
    description: 'One YAML file. ${VAR} and ${VAR:-default} are replaced from the environment. Unknown keys are errors. Durations: 500ms, 30s, 15m, 1h, 7d.',
  });

/** What the file may hold, after interpolation (before defaults and parsing). */
export type ConfigInput = z.input<typeof configSchema>;
/** The config as the schema returns it (defaults filled, durations in ms), before freezing. */
export type ParsedConfig = z.output<typeof configSchema>;
type Parsed = ParsedConfig;
type DeepReadonly<T> = T extends (infer U)[] ? readonly DeepReadonly<U>[] : T extends object ? { readonly [K in keyof T]: DeepReadonly<T[K]> } : T;

/** The deep-frozen configuration every module receives. */
export type Config = DeepReadonly<Parsed & { /** Where the config came from (for messages). */ source: string; publicUrl: string; issuer: string }>;
export type RouteConfig = Config['routes'][number];
export type UpstreamConfig = Config['upstreams'][string];
export type Access = RouteConfig['access'];
export type IdentityHeaders = Config['identity_headers'];
