import type { Kysely } from 'kysely';
import type { RecoveryCodeStore } from '../ports.js';
import type { SqlDialect, Tables } from './schema.js';

/** {@link RecoveryCodeStore} over kysely (SQLite or PostgreSQL). */
export class SqlRecoveryCodeStore implements RecoveryCodeStore {
  constructor(
    private readonly db: Kysely<Tables>,
    private readonly dialect: SqlDialect,
  ) {}

  /**
   * Deletes the user's codes and inserts `hashes` (unused, `created_at = at`) in one
   * transaction: a reader sees the old set or the new one, never a mix or none. On
   * PostgreSQL the user row is locked first (`FOR NO KEY UPDATE`), so concurrent replaces
   * for one user serialize instead of merging their sets; SQLite has one writer anyway.
   * Duplicate hashes in `hashes` are stored once. An unknown user rejects with the driver's
   * foreign-key error (unless `hashes` is empty) and nothing changes.
   */
  async replace(userId: string, hashes: readonly string[], at: Date): Promise<void> {
    const unique = [...new Set(hashes)];
    await this.db.transaction().execute(async (trx) => {
      if (this.dialect === 'postgres') {
        await trx.selectFrom('users').select('id').where('id', '=', userId).forNoKeyUpdate().execute();
      }
      await trx.deleteFrom('recovery_codes').where('user_id', '=', userId).execute();
      if (unique.length === 0) return;
      await trx
        .insertInto('recovery_codes')
        .values(unique.map((hash) => ({ user_id: userId, hash, created_at: at.getTime(), used_at: null })))
        .execute();
    });
  }

  /**
   * One conditional UPDATE (`… WHERE user_id = ? AND hash = ? AND used_at IS NULL`): the
   * database serializes writers on the row (PostgreSQL re-checks the condition after a
   * concurrent update's row lock; SQLite has a single writer), so exactly one concurrent
   * caller changes it and gets true. Unknown, spent or another user's code: false.
   */
  async use(userId: string, hash: string, at: Date): Promise<boolean> {
    const res = await this.db
      .updateTable('recovery_codes')
      .set({ used_at: at.getTime() })
      .where('user_id', '=', userId)
      .where('hash', '=', hash)
      .where('used_at', 'is', null)
      .executeTakeFirst();
    return Number(res.numUpdatedRows) === 1;
  }

  async remaining(userId: string): Promise<number> {
    const row = await this.db
      .selectFrom('recovery_codes')
      .select((eb) => eb.fn.countAll().as('n'))
      .where('user_id', '=', userId)
      .where('used_at', 'is', null)
      .executeTakeFirstOrThrow();
    return Number(row.n);
  }

  /** Deletes all of the user's codes, used or not; returns how many. */
  async deleteForUser(userId: string): Promise<number> {
    const res = await this.db.deleteFrom('recovery_codes').where('user_id', '=', userId).executeTakeFirst();
    return Number(res.numDeletedRows);
  }
}
