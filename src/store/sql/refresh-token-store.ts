import type { Kysely, Selectable } from 'kysely';
import type { RefreshTokenRecord, RefreshTokenStore, RefreshUse } from '../ports.js';
import { toDate, toDateOrNull, type RefreshTokensTable, type Tables } from './schema.js';

function toRefreshToken(row: Selectable<RefreshTokensTable>): RefreshTokenRecord {
  return {
    hash: row.hash,
    sessionId: row.session_id,
    createdAt: toDate(row.created_at),
    expiresAt: toDate(row.expires_at),
    usedAt: toDateOrNull(row.used_at),
  };
}

/** {@link RefreshTokenStore} over kysely (SQLite or PostgreSQL). */
export class SqlRefreshTokenStore implements RefreshTokenStore {
  constructor(private readonly db: Kysely<Tables>) {}

  /**
   * Inserts an unused token. Rejects (driver error) when the session does not exist (foreign
   * key) or the hash is already stored (primary key).
   */
  async create(token: Omit<RefreshTokenRecord, 'usedAt'>): Promise<void> {
    await this.db
      .insertInto('refresh_tokens')
      .values({
        hash: token.hash,
        session_id: token.sessionId,
        created_at: token.createdAt.getTime(),
        expires_at: token.expiresAt.getTime(),
        used_at: null,
      })
      .execute();
  }

  /**
   * One conditional UPDATE decides the winner: the database serializes writers on the row
   * (PostgreSQL re-checks `used_at is null` after waiting on a concurrent update's row lock;
   * SQLite has a single writer), so exactly one caller sees a returned row. Losers then read
   * the row to tell reuse from an unknown hash. `used_at` never goes back to null, so a row
   * that reads as unused there did not exist at the time of the UPDATE: `unknown`.
   */
  async use(hash: string, at: Date): Promise<RefreshUse> {
    const spent = await this.db
      .updateTable('refresh_tokens')
      .set({ used_at: at.getTime() })
      .where('hash', '=', hash)
      .where('used_at', 'is', null)
      .returningAll()
      .executeTakeFirst();
    if (spent) return { status: 'ok', record: toRefreshToken(spent) };

    const row = await this.db.selectFrom('refresh_tokens').selectAll().where('hash', '=', hash).executeTakeFirst();
    if (!row || row.used_at === null) return { status: 'unknown' };
    return { status: 'reused', record: toRefreshToken(row) };
  }

  async hasSuccessor(sessionId: string, since: Date): Promise<boolean> {
    const row = await this.db
      .selectFrom('refresh_tokens')
      .select('hash')
      .where('session_id', '=', sessionId)
      .where('created_at', '>=', since.getTime())
      .limit(1)
      .executeTakeFirst();
    return row !== undefined;
  }

  async deleteForSession(sessionId: string): Promise<number> {
    const res = await this.db.deleteFrom('refresh_tokens').where('session_id', '=', sessionId).executeTakeFirst();
    return Number(res.numDeletedRows);
  }

  /** Deletes `expires_at < before`, used or not. */
  async purgeExpired(before: Date): Promise<number> {
    const res = await this.db.deleteFrom('refresh_tokens').where('expires_at', '<', before.getTime()).executeTakeFirst();
    return Number(res.numDeletedRows);
  }
}
