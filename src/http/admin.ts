import type { Logger } from 'pino';
import { timingSafeEqual } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { Metrics } from '../metrics/index.js';

/** A dependency the readiness check pings. */
export interface Dependency {
  name: 'database' | 'state_store';
  ping: () => Promise<void>;
  /**
   * What it is and where, for people: "PostgreSQL at db.internal:5432" (see {@link databaseLabel}).
   * Never a password. @default guessed from the failure ("PostgreSQL", "SQLite", "Redis") with the
   * address the socket error names, if any
   */
  what?: string;
  /**
   * A plain description of why the last ping failed, when the dependency's client knows better
   * than its error (the Redis client keeps one: "Redis (state store) unreachable at
   * 127.0.0.1:6379: connection refused"). Undefined falls back to {@link describeFailure}.
   */
  describe?: (err: unknown) => string | undefined;
}

/** The outcome of one dependency check. */
export type CheckResult = { ok: true } | { ok: false; reason: FailureReason; error: string };

/** Why a dependency failed, as one stable word (for alerts and scripts); `error` says it in a sentence. */
export type FailureReason =
  | 'refused'
  | 'timeout'
  | 'host_not_found'
  | 'unreachable'
  | 'connection_lost'
  | 'not_connected'
  | 'authentication'
  | 'not_found'
  | 'unavailable'
  | 'failed';

const PING_TIMEOUT_MS = 1500;

/** Raised by the readiness check itself when a ping does not settle in time. */
class PingTimeout extends Error {
  constructor() {
    super(`no answer within ${PING_TIMEOUT_MS} ms`);
  }
}

function withTimeout(p: Promise<void>, ms: number): Promise<void> {
  let t: NodeJS.Timeout;
  return Promise.race([p, new Promise<void>((_, reject) => (t = setTimeout(() => reject(new PingTimeout()), ms)))]).finally(() => clearTimeout(t));
}

/** Socket and DNS error codes, in words. */
const SOCKET_REASONS: Record<string, [FailureReason, string]> = {
  ECONNREFUSED: ['refused', 'connection refused'],
  ETIMEDOUT: ['timeout', 'connection timed out'],
  ECONNRESET: ['connection_lost', 'connection reset'],
  EPIPE: ['connection_lost', 'connection closed'],
  ENOTFOUND: ['host_not_found', 'host name not found'],
  EAI_AGAIN: ['host_not_found', 'host name lookup failed (temporary)'],
  EAI_FAIL: ['host_not_found', 'host name lookup failed'],
  EHOSTUNREACH: ['unreachable', 'host unreachable'],
  ENETUNREACH: ['unreachable', 'network unreachable'],
  EADDRNOTAVAIL: ['unreachable', 'address not available'],
};

/** PostgreSQL SQLSTATE codes (https://www.postgresql.org/docs/current/errcodes-appendix.html), in words. */
const POSTGRES_REASONS: Record<string, [FailureReason, string]> = {
  '28P01': ['authentication', 'password authentication failed'],
  '28000': ['authentication', 'login refused (no such role, or not allowed by pg_hba.conf)'],
  '3D000': ['not_found', 'the database does not exist'],
  '3F000': ['not_found', 'the schema does not exist'],
  '53300': ['unavailable', 'too many connections'],
  '57P01': ['unavailable', 'the server is shutting down'],
  '57P02': ['unavailable', 'the server is shutting down'],
  '57P03': ['unavailable', 'the server is starting up or shutting down'],
  '08006': ['connection_lost', 'connection failure'],
  '08001': ['refused', 'could not establish a connection'],
};

/** SQLite result codes, in words (better-sqlite3 puts them in `code`). */
const SQLITE_REASONS: Record<string, [FailureReason, string]> = {
  SQLITE_BUSY: ['unavailable', 'the database file is locked by another process'],
  SQLITE_LOCKED: ['unavailable', 'the database file is locked'],
  SQLITE_CANTOPEN: ['not_found', 'the database file cannot be opened'],
  SQLITE_READONLY: ['failed', 'the database file is read-only'],
  SQLITE_FULL: ['failed', 'the disk is full'],
  SQLITE_CORRUPT: ['failed', 'the database file is corrupt'],
  SQLITE_NOTADB: ['failed', 'the file is not a SQLite database'],
  SQLITE_IOERR: ['failed', 'disk I/O error'],
  SQLITE_PERM: ['failed', 'permission denied on the database file'],
};

type ErrorLike = { message?: unknown; code?: unknown; address?: unknown; port?: unknown; severity?: unknown; errors?: unknown };

function firstLine(s: string, max = 200): string {
  const line = s.split('\n', 1)[0].trim();
  return line.length > max ? `${line.slice(0, max)}…` : line;
}

/**
 * Why `err` happened, in words: a stable reason word and a phrase ("connection refused").
 * Library messages that say nothing to an operator ("Stream isn't writeable and
 * enableOfflineQueue options is false") become what they mean ("not connected").
 */
export function plainReason(err: unknown): { reason: FailureReason; text: string; kind?: 'PostgreSQL' | 'SQLite' | 'Redis'; at?: string } {
  if (err instanceof PingTimeout) return { reason: 'timeout', text: err.message };
  const e = (typeof err === 'object' && err !== null ? err : { message: String(err) }) as ErrorLike;
  // A connection attempt to several addresses (IPv6 and IPv4 of one name) fails as one AggregateError.
  const inner = Array.isArray(e.errors) && e.errors.length > 0 ? (e.errors[0] as ErrorLike) : undefined;
  const code = typeof e.code === 'string' ? e.code : typeof inner?.code === 'string' ? inner.code : undefined;
  const message = typeof e.message === 'string' && e.message !== '' ? e.message : typeof inner?.message === 'string' ? inner.message : '';
  const address = typeof e.address === 'string' ? e.address : typeof inner?.address === 'string' ? inner.address : undefined;
  const port = typeof e.port === 'number' ? e.port : typeof inner?.port === 'number' ? inner.port : undefined;
  const at = address === undefined ? undefined : port === undefined ? address : address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
  if (code && SOCKET_REASONS[code]) {
    const [reason, text] = SOCKET_REASONS[code];
    return { reason, text, at };
  }
  if (code?.startsWith('SQLITE_')) {
    const base = /^SQLITE_[A-Z]+/.exec(code)?.[0] ?? code;
    const [reason, text] = SQLITE_REASONS[base] ?? ['failed', `SQLite error ${code}`];
    return { reason, text, kind: 'SQLite' };
  }
  if (code && typeof e.severity === 'string') {
    const [reason, text] = POSTGRES_REASONS[code] ?? ['failed', `${firstLine(message)} (SQLSTATE ${code})`];
    return { reason, text, kind: 'PostgreSQL' };
  }
  // ioredis while disconnected (no offline queue), or after its retries.
  if (/enableOfflineQueue|Connection is closed|max retries per request/i.test(message))
    return { reason: 'not_connected', text: 'not connected', kind: 'Redis' };
  if (message === 'Command timed out') return { reason: 'timeout', text: 'no answer to a command', kind: 'Redis' };
  if (/^(WRONGPASS|NOAUTH)/.test(message)) return { reason: 'authentication', text: 'authentication failed', kind: 'Redis' };
  // pg
  if (/connection timeout/i.test(message)) return { reason: 'timeout', text: 'connection timed out', kind: 'PostgreSQL' };
  if (/Connection terminated/i.test(message)) return { reason: 'connection_lost', text: 'connection closed unexpectedly', kind: 'PostgreSQL' };
  // better-sqlite3 / kysely after close
  if (/database connection is not open|driver has already been destroyed/i.test(message)) return { reason: 'not_connected', text: 'the database is closed' };
  return { reason: 'failed', text: message ? firstLine(message) : 'failed' };
}

const DEFAULT_WHAT: Record<Dependency['name'], string> = { database: 'database', state_store: 'state store' };

/**
 * One sentence naming the dependency, where it is and what went wrong, without library
 * internals or stack: "PostgreSQL (database) unreachable at 127.0.0.1:5432: connection refused",
 * "Redis (state store) unreachable: not connected". `/readyz` and the log line say the same.
 */
export function describeFailure(dep: Pick<Dependency, 'name' | 'what'>, err: unknown): { reason: FailureReason; error: string } {
  const r = plainReason(err);
  const role = DEFAULT_WHAT[dep.name];
  const what = dep.what ? `${dep.what} (${role})` : r.kind ? `${r.kind} (${role})` : role === 'state store' ? `Redis (${role})` : role;
  // The address the socket error names, unless the label already says where.
  const at = r.at && !dep.what?.includes(' at ') ? ` at ${r.at}` : '';
  const connection = r.reason !== 'authentication' && r.reason !== 'not_found' && r.reason !== 'failed';
  return { reason: r.reason, error: `${what} ${connection ? 'unreachable' : 'failing'}${at}: ${r.text}` };
}

/**
 * The plain sentence for a failure met while serving a request (sign-in's `dependency_failure`),
 * where which dependency failed is read from the error itself: "Redis (state store)
 * unreachable: not connected", "PostgreSQL (database) unreachable at 10.0.0.5:5432: connection
 * refused"; just the reason when the error does not say ("no answer within 1500 ms").
 */
export function describeDependencyError(err: unknown): string {
  const r = plainReason(err);
  if (!r.kind && !r.at) return r.text;
  return describeFailure({ name: r.kind === 'Redis' ? 'state_store' : 'database' }, err).error;
}

/**
 * A label for `storage.database_url` that names the kind and where it is, never the password:
 * "PostgreSQL at db.internal:5432", "SQLite file ./data/portcullis.db".
 */
export function databaseLabel(url: string): string {
  if (url.startsWith('sqlite:')) return `SQLite file ${url.slice('sqlite:'.length).replace(/\?.*$/, '') || '(memory)'}`;
  try {
    const u = new URL(url);
    if (u.protocol === 'postgres:' || u.protocol === 'postgresql:') return `PostgreSQL at ${u.hostname || 'localhost'}:${u.port || '5432'}`;
  } catch {
    // fall through: not a URL we can read
  }
  return 'database';
}

/**
 * Checks every dependency (bounded by a timeout so /readyz answers fast during an outage)
 * and records `portcullis_dependency_up`.
 */
export async function checkDependencies(deps: readonly Dependency[], metrics: Metrics): Promise<Record<string, CheckResult>> {
  const out: Record<string, CheckResult> = {};
  await Promise.all(
    deps.map(async (dep) => {
      try {
        await withTimeout(dep.ping(), PING_TIMEOUT_MS);
        out[dep.name] = { ok: true };
        metrics.dependencyUp.set({ dependency: dep.name }, 1);
      } catch (e) {
        const plain = describeFailure(dep, e);
        const own = e instanceof PingTimeout ? undefined : dep.describe?.(e);
        out[dep.name] = { ok: false, reason: plain.reason, error: own ?? plain.error };
        metrics.dependencyUp.set({ dependency: dep.name }, 0);
      }
    }),
  );
  return out;
}

/** Options of {@link createAdminServer}. */
export interface AdminServerOptions {
  metrics: Metrics;
  dependencies: () => readonly Dependency[];
  /**
   * Whether the gateway takes traffic. `false` means it is draining (a shutdown has begun: the
   * only way a running gateway stops being ready of its own accord, since it only starts with a
   * loaded config): `/readyz` then answers 503 `{"status":"draining"}` at once, without pinging
   * anything.
   */
  ready: () => boolean;
  /** `POST /unlock {username}` for `portcullis user unlock` when lockout state is in process. */
  unlock?: { token: string; run: (username: string) => Promise<boolean> };
  /**
   * Where the listener's own failures (a 5xx it answers, with the stack) and dependency
   * outages and recoveries (`event: dependency_failure` / `dependency_recovered`, once per
   * change) are logged.
   */
  log?: Pick<Logger, 'error' | 'warn' | 'info'>;
}

/**
 * The admin listener: `/metrics`, `/healthz` (alive), `/readyz` (config loaded, dependencies
 * reachable; see docs/observability.md for the bodies).
 */
export function createAdminServer(opts: AdminServerOptions): Server {
  /** The admin listener answers in its own small JSON, but a 5xx of its own still leaves a line. */
  const failed = (what: string, e: unknown): void => {
    const err = e instanceof Error ? e : new Error(String(e));
    opts.log?.error({ event: 'admin_error', what, err: err.message, stack: err.stack }, `admin listener: ${what} failed`);
  };
  /** The last outcome of each dependency (its error, or '' when up), so each change is logged once. */
  const last = new Map<string, string>();
  const check = async (): Promise<Record<string, CheckResult>> => {
    const results = await checkDependencies(opts.dependencies(), opts.metrics);
    for (const [dependency, r] of Object.entries(results)) {
      const now = r.ok ? '' : r.error;
      const before = last.get(dependency);
      if (before === now) continue;
      last.set(dependency, now);
      if (!r.ok) opts.log?.warn({ event: 'dependency_failure', dependency, reason: r.reason, error: r.error }, r.error);
      else if (before !== undefined) opts.log?.info({ event: 'dependency_recovered', dependency }, `${dependency} reachable again`);
    }
    return results;
  };
  return createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    const send = (status: number, body: unknown) => {
      const text = JSON.stringify(body);
      res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
      res.end(text);
    };
    if (path === '/unlock' && req.method === 'POST' && opts.unlock) {
      const unlock = opts.unlock;
      // Only a holder of the token file in the data directory (the CLI on this host) may unlock.
      const given = Buffer.from(req.headers.authorization ?? '');
      const want = Buffer.from(`Bearer ${unlock.token}`);
      if (given.length !== want.length || !timingSafeEqual(given, want)) return send(401, { status: 'unauthorized' });
      let body = '';
      req.setEncoding('utf8');
      req.on('data', (c: string) => {
        body += c;
        if (body.length > 1024) req.destroy();
      });
      req.on('end', () => {
        let username: unknown;
        try {
          username = (JSON.parse(body) as { username?: unknown }).username;
        } catch {
          return send(400, { status: 'bad_request' });
        }
        if (typeof username !== 'string') return send(400, { status: 'bad_request' });
        unlock.run(username).then(
          (wasLocked) => send(200, { status: 'ok', was_locked: wasLocked }),
          (e: unknown) => {
            failed('unlock', e);
            send(503, { status: 'unavailable' });
          },
        );
      });
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(405, { status: 'method_not_allowed' });
    if (path === '/healthz') return send(200, { status: 'ok' });
    if (path === '/readyz') {
      // Draining: 503 at once (SPEC §10), so load balancers stop sending without waiting on pings.
      if (!opts.ready()) return send(503, { status: 'draining' });
      check()
        .then((checks) => {
          const ready = Object.values(checks).every((x) => x.ok);
          send(ready ? 200 : 503, { status: ready ? 'ready' : 'not_ready', checks: { config: { ok: true }, ...checks } });
        })
        .catch((e: unknown) => {
          failed('readyz', e);
          send(503, { status: 'not_ready' });
        });
      return;
    }
    if (path === '/metrics') {
      check()
        .then(() => opts.metrics.render())
        .then(({ contentType, body }) => {
          res.writeHead(200, { 'content-type': contentType });
          res.end(body);
        })
        .catch((e: unknown) => {
          failed('metrics', e);
          send(500, { status: 'error' });
        });
      return;
    }
    send(404, { status: 'not_found' });
  });
}
