import type { ColumnType } from 'kysely';

/**
 * Row shapes as kysely sees them.
 *
 * Portability choices (the same on both dialects):
 * - timestamps are integer epoch milliseconds (`integer` in SQLite, `bigint` in PostgreSQL;
 *   `pg` returns bigint as a string, so rows are read with `Number(...)`);
 * - booleans are `integer` 0/1 in SQLite (better-sqlite3 cannot bind JS booleans) and
 *   `boolean` in PostgreSQL; values are encoded per dialect and read with `toBool`;
 * - lists (`roles`, `amr`) are JSON text.
 */

/** Epoch milliseconds: written as a number, read as a number (SQLite) or string (pg bigint). */
export type EpochMs = ColumnType<number | string, number, number>;
/** Written as 0/1 (SQLite) or true/false (PostgreSQL). */
export type Bool = ColumnType<number | boolean, number | boolean, number | boolean>;

/** `users` table. */
export interface UsersTable {
  id: string;
  username: string;
  email: string | null;
  /** JSON array of strings. */
  roles: string;
  password_hash: string;
  disabled: Bool;
  mfa_enabled: Bool;
  totp_secret: string | null;
  created_at: EpochMs;
  updated_at: EpochMs;
}

/** `sessions` table. */
export interface SessionsTable {
  id: string;
  user_id: string;
  /** JSON array of strings. */
  amr: string;
  created_at: EpochMs;
  expires_at: EpochMs;
  last_seen_at: EpochMs;
  revoked_at: ColumnType<number | string | null, number | null, number | null>;
  revoked_reason: string | null;
  user_agent: string | null;
  ip: string | null;
}

/** `refresh_tokens` table (migration 0002): single-use refresh tokens, stored only as hashes. */
export interface RefreshTokensTable {
  /** base64url SHA-256 of the token; primary key. */
  hash: string;
  /** References `sessions.id`, ON DELETE CASCADE. */
  session_id: string;
  created_at: EpochMs;
  expires_at: EpochMs;
  used_at: ColumnType<number | string | null, number | null, number | null>;
}

/** `recovery_codes` table (migration 0003): hashed single-use 2FA recovery codes. */
export interface RecoveryCodesTable {
  /** References `users.id`, ON DELETE CASCADE. Primary key (`user_id`, `hash`). */
  user_id: string;
  /** Hash of the code, as computed by the caller. */
  hash: string;
  created_at: EpochMs;
  used_at: ColumnType<number | string | null, number | null, number | null>;
}

/** `portcullis_migrations` table (one row per applied migration). */
export interface MigrationsTable {
  name: string;
  applied_at: EpochMs;
}

/** The whole schema. */
export interface Tables {
  users: UsersTable;
  sessions: SessionsTable;
  refresh_tokens: RefreshTokensTable;
  recovery_codes: RecoveryCodesTable;
  portcullis_migrations: MigrationsTable;
}

/** Which SQL dialect a database speaks. */
export type SqlDialect = 'sqlite' | 'postgres';

/** Reads an epoch-ms column (number from SQLite, string from pg bigint). */
export function toDate(v: number | string): Date {
  return new Date(Number(v));
}

/** Reads a nullable epoch-ms column. */
export function toDateOrNull(v: number | string | null): Date | null {
  return v === null ? null : new Date(Number(v));
}

/** Reads a boolean column (0/1 from SQLite, boolean from pg). */
export function toBool(v: number | boolean): boolean {
  return v === true || v === 1;
}

/** Encodes a boolean for the dialect. */
export function fromBool(dialect: SqlDialect, v: boolean): number | boolean {
  return dialect === 'sqlite' ? (v ? 1 : 0) : v;
}

/** Parses a JSON list column; anything but an array of strings is a corrupt row. */
export function toStringList(v: string, column: string): string[] {
  const parsed: unknown = JSON.parse(v);
  if (!Array.isArray(parsed) || !parsed.every((x) => typeof x === 'string')) {
    throw new Error(`Corrupt ${column} column: expected a JSON array of strings`);
  }
  return parsed;
}
