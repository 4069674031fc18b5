import { randomUUID } from 'node:crypto';
import type { Kysely, Selectable, Updateable } from 'kysely';
import { Errors, GatewayError } from '../../errors/index.js';
import type { NewUser, UserPatch, UserRecord, UserStore } from '../ports.js';
import { fromBool, toBool, toDate, toStringList, type SqlDialect, type Tables, type UsersTable } from './schema.js';

/** True when `err` is a unique-constraint violation from better-sqlite3 or pg. */
export function isUniqueViolation(err: unknown): boolean {
  if (typeof err !== 'object' || err === null) return false;
  const code = (err as { code?: unknown }).code;
  // pg: SQLSTATE 23505; better-sqlite3: extended result code names.
  return code === '23505' || code === 'SQLITE_CONSTRAINT_UNIQUE' || code === 'SQLITE_CONSTRAINT_PRIMARYKEY';
}

function toUser(row: Selectable<UsersTable>): UserRecord {
  return {
    id: row.id,
    username: row.username,
    email: row.email,
    roles: toStringList(row.roles, 'users.roles'),
    passwordHash: row.password_hash,
    disabled: toBool(row.disabled),
    mfaEnabled: toBool(row.mfa_enabled),
    totpSecret: row.totp_secret,
    createdAt: toDate(row.created_at),
    updatedAt: toDate(row.updated_at),
  };
}

/** {@link UserStore} over kysely (SQLite or PostgreSQL). */
export class SqlUserStore implements UserStore {
  constructor(
    private readonly db: Kysely<Tables>,
    private readonly dialect: SqlDialect,
    private readonly now: () => Date,
  ) {}

  async create(user: NewUser): Promise<UserRecord> {
    const at = this.now().getTime();
    const username = user.username.toLowerCase();
    try {
      const row = await this.db
        .insertInto('users')
        .values({
          id: randomUUID(),
          username,
          email: user.email,
          roles: JSON.stringify(user.roles),
          password_hash: user.passwordHash,
          disabled: fromBool(this.dialect, false),
          mfa_enabled: fromBool(this.dialect, false),
          totp_secret: null,
          created_at: at,
          updated_at: at,
        })
        .returningAll()
        .executeTakeFirstOrThrow();
      return toUser(row);
    } catch (err) {
      // The id is a fresh UUID, so the only unique key that can collide is the username.
      if (isUniqueViolation(err)) {
        throw new GatewayError(Errors.user_exists, `User "${username}" already exists`, { cause: err });
      }
      throw err;
    }
  }

  async findByUsername(username: string): Promise<UserRecord | undefined> {
    const row = await this.db.selectFrom('users').selectAll().where('username', '=', username.toLowerCase()).executeTakeFirst();
    return row ? toUser(row) : undefined;
  }

  async findById(id: string): Promise<UserRecord | undefined> {
    const row = await this.db.selectFrom('users').selectAll().where('id', '=', id).executeTakeFirst();
    return row ? toUser(row) : undefined;
  }

  /** All users, ordered by username. */
  async list(): Promise<UserRecord[]> {
    const rows = await this.db.selectFrom('users').selectAll().orderBy('username').execute();
    return rows.map(toUser);
  }

  async update(id: string, patch: UserPatch): Promise<UserRecord | undefined> {
    const set: Updateable<UsersTable> = { updated_at: this.now().getTime() };
    if (patch.email !== undefined) set.email = patch.email;
    if (patch.roles !== undefined) set.roles = JSON.stringify(patch.roles);
    if (patch.passwordHash !== undefined) set.password_hash = patch.passwordHash;
    if (patch.disabled !== undefined) set.disabled = fromBool(this.dialect, patch.disabled);
    if (patch.mfaEnabled !== undefined) set.mfa_enabled = fromBool(this.dialect, patch.mfaEnabled);
    if (patch.totpSecret !== undefined) set.totp_secret = patch.totpSecret;
    const row = await this.db.updateTable('users').set(set).where('id', '=', id).returningAll().executeTakeFirst();
    return row ? toUser(row) : undefined;
  }

  async delete(id: string): Promise<boolean> {
    // Sessions go with it through the foreign key's ON DELETE CASCADE.
    const res = await this.db.deleteFrom('users').where('id', '=', id).executeTakeFirst();
    return Number(res.numDeletedRows) > 0;
  }

  async count(): Promise<number> {
    const row = await this.db
      .selectFrom('users')
      .select((eb) => eb.fn.countAll().as('n'))
      .executeTakeFirstOrThrow();
    return Number(row.n);
  }
}
