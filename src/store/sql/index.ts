/**
 * Durable storage over kysely: SQLite (embedded default, better-sqlite3) or PostgreSQL (pg),
 * chosen by the database URL. `app.ts` calls {@link openDatabase}; everything else sees the
 * `Database` port from `../ports.ts`.
 */
import { chmodSync, closeSync, existsSync, mkdirSync, openSync } from 'node:fs';
import path from 'node:path';
import type BetterSqlite3 from 'better-sqlite3';
import { Kysely, PostgresDialect, SqliteDialect, sql } from 'kysely';
import type pg from 'pg';
import type { Database } from '../ports.js';
import { MIGRATIONS, runMigrations, type Migration } from './migrations.js';
import { SqlRecoveryCodeStore } from './recovery-code-store.js';
import { SqlRefreshTokenStore } from './refresh-token-store.js';
import { SqlSessionStore } from './session-store.js';
import type { SqlDialect, Tables } from './schema.js';
import { parseDatabaseUrl } from './url.js';
import { SqlUserStore } from './user-store.js';

export { MIGRATIONS, runMigrations, type Migration, type RunMigrationsOptions } from './migrations.js';
export { parseDatabaseUrl, ACCEPTED_DATABASE_URLS, type DatabaseTarget } from './url.js';
export type { Tables, SqlDialect } from './schema.js';

/** Options for {@link openDatabase}. */
export interface OpenDatabaseOptions {
  /**
   * Log sink for pool errors and migrations (`msg`, structured `extra`).
   * @default a JSON line on stderr
   */
  log?: (msg: string, extra?: object) => void;
  /** PostgreSQL schema (search_path); overrides the URL's `?schema=`. Ignored for SQLite. */
  schema?: string;
  /** Clock for users' `createdAt`/`updatedAt` and migration records. @default () => new Date() */
  now?: () => Date;
  /** Working directory relative SQLite paths resolve against. @default process.cwd() */
  cwd?: string;
}

/** A {@link Database} backed by kysely, with hooks for tests and tooling. */
export interface SqlDatabase extends Database {
  /** The kysely handle (shared pool / connection). Do not `destroy()` it; call `close()`. */
  readonly kysely: Kysely<Tables>;
  /** PostgreSQL schema in use, when one was configured. */
  readonly schema: string | undefined;
  /**
   * Runs migrations from a custom list instead of {@link MIGRATIONS} (test hook: the list
   * may extend `MIGRATIONS` with deliberately failing entries). Same semantics as `migrate()`.
   */
  migrateWith(migrations: readonly Migration[]): Promise<string[]>;
}

/** Pool sizing and timeouts for PostgreSQL. Small and fail-fast: an outage answers in ~2 s. */
const PG_POOL = {
  max: 10,
  connectionTimeoutMillis: 2000,
  idleTimeoutMillis: 30_000,
  // Client-side (network stalls) and server-side (slow queries) limits.
  query_timeout: 5000,
  statement_timeout: 5000,
  keepAlive: true,
  application_name: 'portcullis',
} as const;

function defaultLog(msg: string, extra?: object): void {
  process.stderr.write(`${JSON.stringify({ level: 'warn', time: new Date().toISOString(), msg, ...extra })}\n`);
}

/**
 * Opens the durable database named by `url`:
 *
 * - `sqlite:./data/portcullis.db` (relative to `cwd`; parent directories are created, the
 *   file is made mode 0600; WAL, foreign keys on, busy timeout 5 s) or `sqlite::memory:`;
 * - `postgres://…` / `postgresql://…`, optionally `?schema=name` (or `opts.schema`): a pg
 *   pool of at most 10 connections whose `search_path` is that schema; connect timeout 2 s,
 *   statement/query timeout 5 s; pool errors are logged, never thrown.
 *
 * Opening PostgreSQL does not connect yet: call `ping()` to check reachability and
 * `migrate()` to create the schema (if configured) and apply pending migrations.
 *
 * @throws Error naming the accepted forms when the URL is neither SQLite nor PostgreSQL.
 */
export async function openDatabase(url: string, opts: OpenDatabaseOptions = {}): Promise<SqlDatabase> {
  const log = opts.log ?? defaultLog;
  const now = opts.now ?? (() => new Date());
  const target = parseDatabaseUrl(url, opts.cwd, opts.schema);

  // Each driver is loaded only when its URL is used: an embedded gateway never holds pg in
  // memory, nor a PostgreSQL one the SQLite addon.
  if (target.dialect === 'sqlite') {
    const { default: Sqlite } = await import('better-sqlite3');
    const sqlite = openSqliteFile(Sqlite, target.filename);
    const kysely = new Kysely<Tables>({ dialect: new SqliteDialect({ database: sqlite }) });
    return new KyselyDatabase('sqlite', kysely, undefined, now, log, async (list) => runMigrations(kysely, 'sqlite', list, { log, now }));
  }

  const { connectionString, schema } = target;
  const { default: pg } = await import('pg');
  const base: pg.PoolConfig = {
    connectionString,
    ...PG_POOL,
    ...(schema ? { options: `-c search_path=${schema}` } : {}),
  };
  const pool = new pg.Pool(base);
  // An idle client losing its connection emits 'error' on the pool; unhandled, it would
  // crash the process. The next query reconnects (or fails fast).
  pool.on('error', (err) => log('database pool error', { dialect: 'postgres', error: err.message }));
  // The pool only watches idle clients: a connection cut mid-query errors on the checked-out
  // client, and an unhandled 'error' there would crash the process.
  pool.on('connect', (client) => client.on('error', (err: Error) => log('database connection error', { dialect: 'postgres', error: err.message })));
  const kysely = new Kysely<Tables>({ dialect: new PostgresDialect({ pool }) });

  const migrate = async (list: readonly Migration[]): Promise<string[]> => {
    // Migrations get their own single connection without the 5 s timeouts: a migration may
    // legitimately run long, and replicas wait on the advisory lock while another migrates.
    const migrationPool = new pg.Pool({
      ...base,
      max: 1,
      query_timeout: undefined,
      statement_timeout: false,
      application_name: 'portcullis-migrate',
    });
    migrationPool.on('error', (err) => log('database pool error', { dialect: 'postgres', error: err.message }));
    migrationPool.on('connect', (client) => client.on('error', (err: Error) => log('database connection error', { dialect: 'postgres', error: err.message })));
    const migrationDb = new Kysely<unknown>({ dialect: new PostgresDialect({ pool: migrationPool }) });
    try {
      return await runMigrations(migrationDb, 'postgres', list, { schema, log, now });
    } finally {
      await migrationDb.destroy();
    }
  };
  return new KyselyDatabase('postgres', kysely, schema, now, log, migrate);
}

/** Opens (creating if needed) a SQLite file with the pragmas the stores rely on. */
function openSqliteFile(Sqlite: typeof BetterSqlite3, filename: string): BetterSqlite3.Database {
  if (filename !== ':memory:') {
    mkdirSync(path.dirname(filename), { recursive: true, mode: 0o700 });
    if (!existsSync(filename)) closeSync(openSync(filename, 'a', 0o600));
    // Also tightens a file created earlier with looser permissions. SQLite gives the -wal
    // and -shm files the database file's mode.
    chmodSync(filename, 0o600);
  }
  const db = new Sqlite(filename, { timeout: 5000 });
  try {
    db.pragma('journal_mode = WAL');
    db.pragma('foreign_keys = ON');
    db.pragma('busy_timeout = 5000');
    // WAL + NORMAL is durable across application crashes; only an OS crash may lose the last commits.
    db.pragma('synchronous = NORMAL');
  } catch (err) {
    db.close();
    throw err;
  }
  return db;
}

class KyselyDatabase implements SqlDatabase {
  readonly users: SqlUserStore;
  readonly sessions: SqlSessionStore;
  readonly refreshTokens: SqlRefreshTokenStore;
  readonly recoveryCodes: SqlRecoveryCodeStore;
  #closed: Promise<void> | undefined;

  constructor(
    readonly dialect: SqlDialect,
    readonly kysely: Kysely<Tables>,
    readonly schema: string | undefined,
    now: () => Date,
    private readonly log: (msg: string, extra?: object) => void,
    private readonly runner: (list: readonly Migration[]) => Promise<string[]>,
  ) {
    this.users = new SqlUserStore(kysely, dialect, now);
    this.sessions = new SqlSessionStore(kysely);
    this.refreshTokens = new SqlRefreshTokenStore(kysely);
    this.recoveryCodes = new SqlRecoveryCodeStore(kysely, dialect);
  }

  migrate(): Promise<string[]> {
    return this.runner(MIGRATIONS);
  }

  migrateWith(migrations: readonly Migration[]): Promise<string[]> {
    return this.runner(migrations);
  }

  async ping(): Promise<void> {
    await sql`select 1`.execute(this.kysely);
  }

  /** Destroys the pool / closes the file; safe to call more than once. */
  close(): Promise<void> {
    this.#closed ??= this.kysely.destroy().catch((err: unknown) => {
      this.log('error closing database', { error: err instanceof Error ? err.message : String(err) });
    });
    return this.#closed;
  }
}
