import type { Kysely, Selectable } from 'kysely';
import type { NewSession, Revocation, SessionRecord, SessionStore } from '../ports.js';
import { toDate, toDateOrNull, toStringList, type SessionsTable, type Tables } from './schema.js';

function toSession(row: Selectable<SessionsTable>): SessionRecord {
  return {
    id: row.id,
    userId: row.user_id,
    amr: toStringList(row.amr, 'sessions.amr'),
    createdAt: toDate(row.created_at),
    expiresAt: toDate(row.expires_at),
    lastSeenAt: toDate(row.last_seen_at),
    revokedAt: toDateOrNull(row.revoked_at),
    revokedReason: row.revoked_reason,
    userAgent: row.user_agent,
    ip: row.ip,
  };
}

/** {@link SessionStore} over kysely (SQLite or PostgreSQL). */
export class SqlSessionStore implements SessionStore {
  constructor(private readonly db: Kysely<Tables>) {}

  /** Inserts the session; `lastSeenAt` starts at `createdAt`, not revoked. */
  async create(session: NewSession): Promise<SessionRecord> {
    const row = await this.db
      .insertInto('sessions')
      .values({
        id: session.id,
        user_id: session.userId,
        amr: JSON.stringify(session.amr),
        created_at: session.createdAt.getTime(),
        expires_at: session.expiresAt.getTime(),
        last_seen_at: session.createdAt.getTime(),
        revoked_at: null,
        revoked_reason: null,
        user_agent: session.userAgent,
        ip: session.ip,
      })
      .returningAll()
      .executeTakeFirstOrThrow();
    return toSession(row);
  }

  async get(id: string): Promise<SessionRecord | undefined> {
    const row = await this.db.selectFrom('sessions').selectAll().where('id', '=', id).executeTakeFirst();
    return row ? toSession(row) : undefined;
  }

  async listActive(userId: string, now: Date): Promise<SessionRecord[]> {
    const rows = await this.db
      .selectFrom('sessions')
      .selectAll()
      .where('user_id', '=', userId)
      .where('revoked_at', 'is', null)
      .where('expires_at', '>', now.getTime())
      .orderBy('created_at', 'desc')
      .orderBy('id', 'desc')
      .execute();
    return rows.map(toSession);
  }

  async revoke(id: string, reason: string, at: Date): Promise<boolean> {
    const res = await this.db
      .updateTable('sessions')
      .set({ revoked_at: at.getTime(), revoked_reason: reason })
      .where('id', '=', id)
      .where('revoked_at', 'is', null)
      .executeTakeFirst();
    return Number(res.numUpdatedRows) > 0;
  }

  /** "Active" is judged at `at`: sessions already expired then are left alone. */
  async revokeAllForUser(userId: string, reason: string, at: Date, exceptId?: string): Promise<string[]> {
    let q = this.db
      .updateTable('sessions')
      .set({ revoked_at: at.getTime(), revoked_reason: reason })
      .where('user_id', '=', userId)
      .where('revoked_at', 'is', null)
      .where('expires_at', '>', at.getTime());
    if (exceptId !== undefined) q = q.where('id', '!=', exceptId);
    const rows = await q.returning('id').execute();
    return rows.map((r) => r.id).sort();
  }

  async revokedSince(since: Date, now: Date): Promise<Revocation[]> {
    const rows = await this.db
      .selectFrom('sessions')
      .select(['id', 'expires_at', 'revoked_at'])
      .where('revoked_at', '>=', since.getTime())
      .where('expires_at', '>', now.getTime())
      .orderBy('revoked_at')
      .orderBy('id')
      .execute();
    return rows.map((r) => ({
      sessionId: r.id,
      expiresAt: toDate(r.expires_at),
      // Not null: the `>=` filter excludes null.
      revokedAt: toDate(r.revoked_at as number | string),
    }));
  }

  /** Also deletes the purged sessions' refresh tokens (foreign key cascade). */
  async purgeExpired(before: Date): Promise<number> {
    const res = await this.db.deleteFrom('sessions').where('expires_at', '<', before.getTime()).executeTakeFirst();
    return Number(res.numDeletedRows);
  }

  /**
   * Sets `last_seen_at` to `at` unconditionally (revoked or expired sessions included; not
   * monotonic). True whenever the session exists, even if the value was already `at`.
   */
  async touch(id: string, at: Date): Promise<boolean> {
    const res = await this.db.updateTable('sessions').set({ last_seen_at: at.getTime() }).where('id', '=', id).executeTakeFirst();
    return Number(res.numUpdatedRows) > 0;
  }
}
