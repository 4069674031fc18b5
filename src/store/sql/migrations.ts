import { sql, type Kysely } from 'kysely';
import type { SqlDialect } from './schema.js';

/**
 * The handle a migration gets. Untyped on purpose: a migration is written against the schema
 * as it was when it shipped, not against today's `Schema` type (kysely's own advice).
 */
// biome-ignore lint/suspicious/noExplicitAny: see above
export type MigrationDb = Kysely<any>;

/**
 * One forward-only migration. `up` runs inside a transaction together with the row that
 * records it, so a failing migration leaves the database exactly as it was. It must use the
 * `db` it is given (the transaction), never another handle.
 */
export interface Migration {
  /** Unique, stable name; recorded in `portcullis_migrations`. Never rename one that shipped. */
  readonly name: string;
  up(db: MigrationDb, dialect: SqlDialect): Promise<void>;
}

/** Log sink used by the migrator. */
export type MigrationLog = (msg: string, extra?: object) => void;

const MIGRATIONS_TABLE = 'portcullis_migrations';

function epochType(dialect: SqlDialect) {
  return dialect === 'sqlite' ? sql`integer` : sql`bigint`;
}

/** Column type and check for a portable boolean. */
function boolType(dialect: SqlDialect) {
  return dialect === 'sqlite' ? sql`integer` : sql`boolean`;
}

function boolDefault(dialect: SqlDialect) {
  return dialect === 'sqlite' ? sql`0` : sql`false`;
}

/**
 * The migrations, in the order they are applied. Append only: never edit or reorder one
 * that has shipped.
 */
export const MIGRATIONS: readonly Migration[] = Object.freeze([
  {
    name: '0001_initial',
    async up(db: MigrationDb, dialect: SqlDialect) {
      await db.schema
        .createTable('users')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('username', 'text', (c) => c.notNull())
        .addColumn('email', 'text')
        .addColumn('roles', 'text', (c) => c.notNull().defaultTo('[]'))
        .addColumn('password_hash', 'text', (c) => c.notNull())
        .addColumn('disabled', boolType(dialect), (c) => c.notNull().defaultTo(boolDefault(dialect)))
        .addColumn('mfa_enabled', boolType(dialect), (c) => c.notNull().defaultTo(boolDefault(dialect)))
        .addColumn('totp_secret', 'text')
        .addColumn('created_at', epochType(dialect), (c) => c.notNull())
        .addColumn('updated_at', epochType(dialect), (c) => c.notNull())
        .addUniqueConstraint('users_username_key', ['username'])
        .$call((b) =>
          dialect === 'sqlite'
            ? b.addCheckConstraint('users_disabled_bool', sql`disabled in (0, 1)`).addCheckConstraint('users_mfa_enabled_bool', sql`mfa_enabled in (0, 1)`)
            : b,
        )
        .execute();

      await db.schema
        .createTable('sessions')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('user_id', 'text', (c) => c.notNull().references('users.id').onDelete('cascade'))
        .addColumn('amr', 'text', (c) => c.notNull().defaultTo('[]'))
        .addColumn('created_at', epochType(dialect), (c) => c.notNull())
        .addColumn('expires_at', epochType(dialect), (c) => c.notNull())
        .addColumn('last_seen_at', epochType(dialect), (c) => c.notNull())
        .addColumn('revoked_at', epochType(dialect))
        .addColumn('revoked_reason', 'text')
        .addColumn('user_agent', 'text')
        .addColumn('ip', 'text')
        .execute();
      await db.schema.createIndex('sessions_user_id_idx').on('sessions').column('user_id').execute();
      await db.schema.createIndex('sessions_revoked_at_idx').on('sessions').column('revoked_at').execute();
      // purgeExpired scans by expiry.
      await db.schema.createIndex('sessions_expires_at_idx').on('sessions').column('expires_at').execute();
    },
  },
  {
    name: '0002_refresh_tokens',
    async up(db: MigrationDb, dialect: SqlDialect) {
      // Single-use refresh tokens, stored only as base64url SHA-256 hashes. A session's
      // tokens go with it (and so with its user) through the cascading foreign key.
      await db.schema
        .createTable('refresh_tokens')
        .addColumn('hash', 'text', (c) => c.primaryKey())
        .addColumn('session_id', 'text', (c) => c.notNull().references('sessions.id').onDelete('cascade'))
        .addColumn('created_at', epochType(dialect), (c) => c.notNull())
        .addColumn('expires_at', epochType(dialect), (c) => c.notNull())
        .addColumn('used_at', epochType(dialect))
        .execute();
      // deleteForSession and the cascade look tokens up by session; purgeExpired by expiry.
      await db.schema.createIndex('refresh_tokens_session_id_idx').on('refresh_tokens').column('session_id').execute();
      await db.schema.createIndex('refresh_tokens_expires_at_idx').on('refresh_tokens').column('expires_at').execute();
    },
  },
  {
    name: '0003_recovery_codes',
    async up(db: MigrationDb, dialect: SqlDialect) {
      // Hashed single-use 2FA recovery codes; a user's codes go with it (cascading foreign
      // key). The primary key (user_id, hash) also serves every lookup by user.
      await db.schema
        .createTable('recovery_codes')
        .addColumn('user_id', 'text', (c) => c.notNull().references('users.id').onDelete('cascade'))
        .addColumn('hash', 'text', (c) => c.notNull())
        .addColumn('created_at', epochType(dialect), (c) => c.notNull())
        .addColumn('used_at', epochType(dialect))
        .addPrimaryKeyConstraint('recovery_codes_pkey', ['user_id', 'hash'])
        .execute();
    },
  },
]);

/** Options for {@link runMigrations}. */
export interface RunMigrationsOptions {
  /** PostgreSQL schema to create if missing (it is also expected on the connection's search_path). */
  schema?: string;
  log?: MigrationLog;
  /** Clock for `applied_at`. @default () => new Date() */
  now?: () => Date;
}

/**
 * Applies the migrations of `migrations` that are not yet recorded, in order, each in its own
 * transaction. Returns the names applied (empty when up to date). Concurrent runners (several
 * replicas starting at once) are serialized: PostgreSQL takes a transaction-scoped advisory
 * lock, SQLite uses `BEGIN IMMEDIATE` (the write lock).
 *
 * SQLite DDL is transactional, but kysely's `Migrator` does not wrap SQLite migrations in a
 * transaction (its SQLite adapter reports no transactional DDL), which is why this is our own.
 *
 * @throws the migration's error (after rollback) when one fails; later migrations are not run.
 */
export async function runMigrations(
  db: MigrationDb,
  dialect: SqlDialect,
  migrations: readonly Migration[],
  opts: RunMigrationsOptions = {},
): Promise<string[]> {
  const log = opts.log ?? (() => {});
  const now = opts.now ?? (() => new Date());
  const names = new Set<string>();
  for (const m of migrations) {
    if (!m.name || names.has(m.name)) throw new Error(`Migration list is invalid: duplicate or empty name "${m.name}"`);
    names.add(m.name);
  }
  const lockKey = `portcullis:migrate:${opts.schema ?? ''}`;

  await inTransaction(db, dialect, lockKey, async (trx) => {
    if (dialect === 'postgres' && opts.schema) {
      await sql`create schema if not exists ${sql.id(opts.schema)}`.execute(trx);
    }
    await trx.schema
      .createTable(MIGRATIONS_TABLE)
      .ifNotExists()
      .addColumn('name', 'text', (c) => c.primaryKey())
      .addColumn('applied_at', epochType(dialect), (c) => c.notNull())
      .execute();
  });

  const applied = await db.selectFrom(MIGRATIONS_TABLE).select('name').execute();
  const unknown = applied.map((r) => r.name as string).filter((n) => !names.has(n));
  if (unknown.length > 0) {
    // A newer release migrated this database; older code keeps working during a rolling deploy.
    log('database has migrations this version does not know', { migrations: unknown });
  }

  const done: string[] = [];
  for (const m of migrations) {
    const ran = await inTransaction(db, dialect, lockKey, async (trx) => {
      // Re-checked under the lock: another replica may have applied it meanwhile.
      const row = await trx.selectFrom(MIGRATIONS_TABLE).select('name').where('name', '=', m.name).executeTakeFirst();
      if (row) return false;
      await m.up(trx, dialect);
      await trx.insertInto(MIGRATIONS_TABLE).values({ name: m.name, applied_at: now().getTime() }).execute();
      return true;
    }).catch((err: unknown) => {
      log('migration failed; rolled back', { migration: m.name, error: err instanceof Error ? err.message : String(err) });
      throw err;
    });
    if (ran) {
      log('migration applied', { migration: m.name });
      done.push(m.name);
    }
  }
  return done;
}

/** Runs `fn` in a write transaction holding the migration lock; rolls back on any error. */
async function inTransaction<T>(db: MigrationDb, dialect: SqlDialect, lockKey: string, fn: (trx: MigrationDb) => Promise<T>): Promise<T> {
  if (dialect === 'postgres') {
    return db.transaction().execute(async (trx) => {
      await sql`select pg_advisory_xact_lock(hashtext(${lockKey}))`.execute(trx);
      return fn(trx);
    });
  }
  // kysely's SQLite transactions use a deferred BEGIN; IMMEDIATE takes the write lock up
  // front so two processes cannot both decide a migration is pending.
  return db.connection().execute(async (conn) => {
    await sql`begin immediate`.execute(conn);
    try {
      const result = await fn(conn);
      await sql`commit`.execute(conn);
      return result;
    } catch (err) {
      try {
        await sql`rollback`.execute(conn);
      } catch {
        // SQLite may already have rolled back on its own; the original error matters.
      }
      throw err;
    }
  });
}
