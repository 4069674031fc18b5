/**
 * The shared contract for the SQL `Database` implementations. Each dialect's test file calls
 * {@link registerStoreContract} with a factory; the same assertions run on SQLite and PostgreSQL.
 */
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { GatewayError } from '../../src/errors/index.js';
import type { NewSession, NewUser, RefreshTokenRecord } from '../../src/store/ports.js';
import { MIGRATIONS, type Migration, type SqlDatabase } from '../../src/store/sql/index.js';

/** How a dialect's test file provides databases to the contract. */
export interface StoreContractHarness {
  /**
   * Opens a fresh, un-migrated, isolated database, passing `now` through to `openDatabase` so
   * the contract controls the users' clock. Called once without `name` in `beforeAll` (the
   * suite's shared database), and by single tests with a distinct `name` (e.g. `upgrade`):
   * each name must get a database of its own, isolated from the others. The contract closes
   * what it opens.
   */
  open(opts: { now: () => Date; name?: string }): Promise<SqlDatabase>;
  /** Releases whatever `open` created (called in `afterAll`, after `close()`). */
  cleanup?(): Promise<void>;
}

const T0 = Date.UTC(2030, 0, 1, 12, 0, 0, 123);
const MIN = 60_000;
const HOUR_MS = 60 * MIN;
const DAY = 24 * HOUR_MS;

/** A fresh refresh-token hash, shaped like the real ones (base64url SHA-256). */
function tokenHash(): string {
  return createHash('sha256').update(randomBytes(32)).digest('base64url');
}

function newUser(username: string, extra: Partial<NewUser> = {}): NewUser {
  return { username, email: `${username.toLowerCase()}@example.com`, roles: ['user'], passwordHash: `$argon2id$hash-of-${username}`, ...extra };
}

/** Lists tables in the database's own schema (SQLite file or the configured pg schema). */
async function tableExists(db: SqlDatabase, name: string): Promise<boolean> {
  if (db.dialect === 'sqlite') {
    const r = await sql<{ name: string }>`select name from sqlite_master where type = 'table' and name = ${name}`.execute(db.kysely);
    return r.rows.length === 1;
  }
  const r = await sql<{ table_name: string }>`
    select table_name from information_schema.tables
    where table_schema = current_schema() and table_name = ${name}`.execute(db.kysely);
  return r.rows.length === 1;
}

/** Registers the contract tests for one dialect. */
export function registerStoreContract(label: string, harness: StoreContractHarness): void {
  describe(`${label}: Database contract`, () => {
    let db: SqlDatabase;
    let clock = T0;
    /** What the store's injected clock returns. */
    let storeNow = T0;
    let firstMigration: string[] = [];

    beforeAll(async () => {
      db = await harness.open({ now: () => new Date(storeNow) });
      firstMigration = await db.migrate();
    });

    afterAll(async () => {
      await db?.close();
      await harness.cleanup?.();
    });

    function newSession(userId: string, opts: Partial<NewSession> = {}): NewSession {
      clock += MIN;
      return {
        id: randomUUID(),
        userId,
        amr: ['pwd'],
        createdAt: new Date(clock),
        expiresAt: new Date(clock + 7 * DAY),
        userAgent: 'Mozilla/5.0 test',
        ip: '203.0.113.7',
        ...opts,
      };
    }

    async function countTokens(where?: { sessionId: string }): Promise<number> {
      let q = db.kysely.selectFrom('refresh_tokens').select((eb) => eb.fn.countAll().as('n'));
      if (where) q = q.where('session_id', '=', where.sessionId);
      return Number((await q.executeTakeFirstOrThrow()).n);
    }

    beforeEach(async () => {
      // Users cascade to sessions, and sessions to refresh tokens: a clean slate per test.
      for (const u of await db.users.list()) await db.users.delete(u.id);
      clock = T0;
      storeNow = T0;
    });

    describe('migrations', () => {
      it('applies the initial migration once, then nothing', async () => {
        expect(firstMigration).toEqual(MIGRATIONS.map((m) => m.name));
        expect(firstMigration).toContain('0001_initial');
        expect(await db.migrate()).toEqual([]);
        expect(await db.migrate()).toEqual([]);
        for (const t of ['users', 'sessions', 'refresh_tokens', 'recovery_codes', 'portcullis_migrations']) expect(await tableExists(db, t)).toBe(true);
        const rows = await db.kysely.selectFrom('portcullis_migrations').select('name').orderBy('name').execute();
        expect(rows.map((r) => r.name)).toEqual(MIGRATIONS.map((m) => m.name));
      });

      it('a failing migration rolls back entirely and records nothing', async () => {
        const tag = randomUUID().replaceAll('-', '').slice(0, 8);
        const ok: Migration = {
          name: `9000_ok_${tag}`,
          async up(trx) {
            await trx.schema.createTable(`ok_${tag}`).addColumn('x', 'integer').execute();
          },
        };
        const failing: Migration = {
          name: `9001_fail_${tag}`,
          async up(trx) {
            await trx.schema.createTable(`fail_${tag}`).addColumn('x', 'integer').execute();
            await trx
              .insertInto('users')
              .values({
                id: 'from-failed-migration',
                username: 'ghost',
                email: null,
                roles: '[]',
                password_hash: 'x',
                disabled: db.dialect === 'sqlite' ? 0 : false,
                mfa_enabled: db.dialect === 'sqlite' ? 0 : false,
                totp_secret: null,
                created_at: 1,
                updated_at: 1,
              })
              .execute();
            throw new Error('deliberate migration failure');
          },
        };
        const never: Migration = {
          name: `9002_never_${tag}`,
          async up(trx) {
            await trx.schema.createTable(`never_${tag}`).addColumn('x', 'integer').execute();
          },
        };

        await expect(db.migrateWith([...MIGRATIONS, ok, failing, never])).rejects.toThrow('deliberate migration failure');

        // The migration before it committed on its own.
        expect(await tableExists(db, `ok_${tag}`)).toBe(true);
        // Nothing of the failed one survived: no table, no data, no record.
        expect(await tableExists(db, `fail_${tag}`)).toBe(false);
        expect(await db.users.findById('from-failed-migration')).toBeUndefined();
        expect(await db.users.count()).toBe(0);
        // Later migrations did not run.
        expect(await tableExists(db, `never_${tag}`)).toBe(false);
        const recorded = await db.kysely.selectFrom('portcullis_migrations').select('name').execute();
        const names = recorded.map((r) => r.name);
        expect(names).toContain(ok.name);
        expect(names).not.toContain(failing.name);
        expect(names).not.toContain(never.name);

        // The database stays usable and the normal list has nothing pending.
        expect(await db.migrate()).toEqual([]);
        const u = await db.users.create(newUser('after-failure'));
        expect((await db.users.findById(u.id))?.username).toBe('after-failure');

        // Fixing the migration lets it (and the rest) apply.
        const fixed: Migration = {
          ...failing,
          async up(trx) {
            await trx.schema.createTable(`fail_${tag}`).addColumn('x', 'integer').execute();
          },
        };
        expect(await db.migrateWith([...MIGRATIONS, ok, fixed, never])).toEqual([fixed.name, never.name]);
        expect(await tableExists(db, `fail_${tag}`)).toBe(true);
      });

      it('upgrades a database at 0001_initial to 0002_refresh_tokens, keeping its data', async () => {
        const old = await harness.open({ now: () => new Date(storeNow), name: 'upgrade' });
        try {
          const first = MIGRATIONS.find((m) => m.name === '0001_initial')!;
          expect(await old.migrateWith([first])).toEqual(['0001_initial']);
          expect(await tableExists(old, 'refresh_tokens')).toBe(false);
          const u = await old.users.create(newUser('legacy'));
          const s = await old.sessions.create(newSession(u.id));

          const applied = await old.migrate();
          expect(applied).toEqual(MIGRATIONS.slice(1).map((m) => m.name));
          expect(applied[0]).toBe('0002_refresh_tokens');
          expect(await old.migrate()).toEqual([]);
          expect(await tableExists(old, 'refresh_tokens')).toBe(true);

          // Old rows survived and work with the new table, foreign key and cascade included.
          expect((await old.sessions.get(s.id))?.userId).toBe(u.id);
          const hash = tokenHash();
          await old.refreshTokens.create({ hash, sessionId: s.id, createdAt: new Date(T0), expiresAt: new Date(T0 + DAY) });
          await expect(
            old.refreshTokens.create({ hash: tokenHash(), sessionId: randomUUID(), createdAt: new Date(T0), expiresAt: new Date(T0 + DAY) }),
          ).rejects.toThrow();
          expect((await old.refreshTokens.use(hash, new Date(T0 + MIN))).status).toBe('ok');
          expect(await old.users.delete(u.id)).toBe(true);
          expect(await old.refreshTokens.use(hash, new Date(T0 + 2 * MIN))).toEqual({ status: 'unknown' });
        } finally {
          await old.close();
        }
      });

      it('upgrades a database at 0002_refresh_tokens to 0003_recovery_codes, keeping its data', async () => {
        const old = await harness.open({ now: () => new Date(storeNow), name: 'upgrade3' });
        try {
          const firstTwo = MIGRATIONS.slice(0, 2);
          expect(firstTwo.map((m) => m.name)).toEqual(['0001_initial', '0002_refresh_tokens']);
          expect(await old.migrateWith(firstTwo)).toEqual(['0001_initial', '0002_refresh_tokens']);
          expect(await tableExists(old, 'recovery_codes')).toBe(false);
          const u = await old.users.create(newUser('legacy3', { roles: ['admin'] }));
          await old.users.update(u.id, { mfaEnabled: true, totpSecret: 'k1:secret' });
          const s = await old.sessions.create(newSession(u.id));
          const spent = tokenHash();
          const fresh = tokenHash();
          await old.refreshTokens.create({ hash: spent, sessionId: s.id, createdAt: new Date(T0), expiresAt: new Date(T0 + DAY) });
          await old.refreshTokens.create({ hash: fresh, sessionId: s.id, createdAt: new Date(T0), expiresAt: new Date(T0 + DAY) });
          const spentAt = new Date(T0 + MIN);
          expect((await old.refreshTokens.use(spent, spentAt)).status).toBe('ok');

          const applied = await old.migrate();
          expect(applied).toEqual(MIGRATIONS.slice(2).map((m) => m.name));
          expect(applied[0]).toBe('0003_recovery_codes');
          expect(await old.migrate()).toEqual([]);
          expect(await tableExists(old, 'recovery_codes')).toBe(true);

          // Old rows survived unchanged.
          const user = await old.users.findById(u.id);
          expect(user?.mfaEnabled).toBe(true);
          expect(user?.totpSecret).toBe('k1:secret');
          expect(user?.roles).toEqual(['admin']);
          expect((await old.sessions.get(s.id))?.userId).toBe(u.id);
          expect(await old.refreshTokens.use(spent, new Date(T0 + 2 * MIN))).toMatchObject({ status: 'reused', record: { usedAt: spentAt } });
          expect((await old.refreshTokens.use(fresh, new Date(T0 + 2 * MIN))).status).toBe('ok');

          // The new table works with the old users, foreign key and cascade included.
          const codes = [tokenHash(), tokenHash()];
          await old.recoveryCodes.replace(u.id, codes, new Date(T0 + 3 * MIN));
          expect(await old.recoveryCodes.remaining(u.id)).toBe(2);
          await expect(old.recoveryCodes.replace(randomUUID(), [tokenHash()], new Date(T0))).rejects.toThrow();
          expect(await old.recoveryCodes.use(u.id, codes[0]!, new Date(T0 + 4 * MIN))).toBe(true);
          expect(await old.users.delete(u.id)).toBe(true);
          const left = await old.kysely
            .selectFrom('recovery_codes')
            .select((eb) => eb.fn.countAll().as('n'))
            .executeTakeFirstOrThrow();
          expect(Number(left.n)).toBe(0);
        } finally {
          await old.close();
        }
      });

      it('rejects a migration list with duplicate names', async () => {
        await expect(db.migrateWith([...MIGRATIONS, MIGRATIONS[0]!])).rejects.toThrow(/duplicate/);
      });
    });

    it('ping succeeds', async () => {
      await expect(db.ping()).resolves.toBeUndefined();
    });

    describe('users', () => {
      it('creates a user with a UUID, lower-case username and the given fields', async () => {
        const u = await db.users.create(newUser('Alice', { email: 'alice@example.com', roles: ['admin', 'ops'] }));
        expect(u.id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
        expect(u.username).toBe('alice');
        expect(u.email).toBe('alice@example.com');
        expect(u.roles).toEqual(['admin', 'ops']);
        expect(u.passwordHash).toBe('$argon2id$hash-of-Alice');
        expect(u.disabled).toBe(false);
        expect(u.mfaEnabled).toBe(false);
        expect(u.totpSecret).toBeNull();
        expect(u.createdAt).toEqual(new Date(T0));
        expect(u.updatedAt).toEqual(new Date(T0));
        expect(await db.users.findById(u.id)).toEqual(u);
      });

      it('finds by username case-insensitively, and by id', async () => {
        const u = await db.users.create(newUser('Bob.Smith@corp'));
        expect((await db.users.findByUsername('bob.smith@corp'))?.id).toBe(u.id);
        expect((await db.users.findByUsername('BOB.SMITH@CORP'))?.id).toBe(u.id);
        expect((await db.users.findByUsername('Bob.Smith@Corp'))?.id).toBe(u.id);
        expect(await db.users.findByUsername('bob')).toBeUndefined();
        expect((await db.users.findById(u.id))?.username).toBe('bob.smith@corp');
        expect(await db.users.findById(randomUUID())).toBeUndefined();
      });

      it('rejects a duplicate username (any case) with user_exists', async () => {
        await db.users.create(newUser('carol'));
        const err = await db.users.create(newUser('CAROL')).then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(err).toBeInstanceOf(GatewayError);
        expect((err as GatewayError).code).toBe('user_exists');
        expect((err as GatewayError).status).toBe(409);
        expect(await db.users.count()).toBe(1);
      });

      it('lists users ordered by username and counts them', async () => {
        expect(await db.users.list()).toEqual([]);
        expect(await db.users.count()).toBe(0);
        await db.users.create(newUser('zed'));
        await db.users.create(newUser('amy'));
        await db.users.create(newUser('Mia'));
        const list = await db.users.list();
        expect(list.map((u) => u.username)).toEqual(['amy', 'mia', 'zed']);
        expect(await db.users.count()).toBe(3);
      });

      it('round-trips roles, including empty and unusual strings', async () => {
        const roles = ['admin', 'read:reports', 'ünïcode', 'with,comma', 'quote"s'];
        const u = await db.users.create(newUser('roles', { roles }));
        expect((await db.users.findById(u.id))?.roles).toEqual(roles);
        const none = await db.users.create(newUser('noroles', { roles: [] }));
        expect((await db.users.findByUsername('noroles'))?.roles).toEqual([]);
        expect((await db.users.update(none.id, { roles: ['ops'] }))?.roles).toEqual(['ops']);
        expect((await db.users.findById(none.id))?.roles).toEqual(['ops']);
      });

      it('updates fields, round-trips booleans and bumps updatedAt', async () => {
        const u = await db.users.create(newUser('dave', { email: null }));
        expect(u.email).toBeNull();
        storeNow = T0 + 5 * MIN;
        const up = await db.users.update(u.id, {
          email: 'dave@example.org',
          passwordHash: 'new-hash',
          disabled: true,
          mfaEnabled: true,
          totpSecret: 'k1:ciphertext',
        });
        expect(up).toBeDefined();
        expect(up!.email).toBe('dave@example.org');
        expect(up!.passwordHash).toBe('new-hash');
        expect(up!.disabled).toBe(true);
        expect(up!.mfaEnabled).toBe(true);
        expect(up!.totpSecret).toBe('k1:ciphertext');
        expect(up!.roles).toEqual(['user']);
        expect(up!.createdAt).toEqual(new Date(T0));
        expect(up!.updatedAt).toEqual(new Date(T0 + 5 * MIN));

        const again = await db.users.findById(u.id);
        expect(again).toEqual(up);
        expect(again!.disabled).toBe(true);
        expect(again!.mfaEnabled).toBe(true);

        const back = await db.users.update(u.id, { disabled: false, mfaEnabled: false, totpSecret: null, email: null });
        expect(back!.disabled).toBe(false);
        expect(back!.mfaEnabled).toBe(false);
        expect(back!.totpSecret).toBeNull();
        expect(back!.email).toBeNull();
        // Untouched fields stay.
        expect(back!.passwordHash).toBe('new-hash');
        expect(await db.users.findById(u.id)).toEqual(back);
      });

      it('update of an unknown id returns undefined', async () => {
        expect(await db.users.update(randomUUID(), { disabled: true })).toBeUndefined();
      });

      it('deletes a user (true once, then false)', async () => {
        const u = await db.users.create(newUser('erin'));
        const keep = await db.users.create(newUser('frank'));
        expect(await db.users.delete(u.id)).toBe(true);
        expect(await db.users.delete(u.id)).toBe(false);
        expect(await db.users.findById(u.id)).toBeUndefined();
        expect(await db.users.findByUsername('erin')).toBeUndefined();
        expect(await db.users.count()).toBe(1);
        expect((await db.users.findById(keep.id))?.username).toBe('frank');
        // The username is free again.
        expect((await db.users.create(newUser('erin'))).username).toBe('erin');
      });
    });

    describe('sessions', () => {
      it('creates and gets a session with every field', async () => {
        const u = await db.users.create(newUser('gina'));
        const ns = newSession(u.id, { amr: ['pwd', 'otp'], ip: '2001:db8::1' });
        const s = await db.sessions.create(ns);
        expect(s).toEqual({
          id: ns.id,
          userId: u.id,
          amr: ['pwd', 'otp'],
          createdAt: ns.createdAt,
          expiresAt: ns.expiresAt,
          lastSeenAt: ns.createdAt,
          revokedAt: null,
          revokedReason: null,
          userAgent: 'Mozilla/5.0 test',
          ip: '2001:db8::1',
        });
        expect(s.createdAt.getTime()).toBe(ns.createdAt.getTime());
        expect(await db.sessions.get(ns.id)).toEqual(s);
        expect(await db.sessions.get(randomUUID())).toBeUndefined();

        const bare = await db.sessions.create(newSession(u.id, { userAgent: null, ip: null }));
        expect(bare.userAgent).toBeNull();
        expect(bare.ip).toBeNull();
      });

      it('rejects a session for an unknown user (foreign key)', async () => {
        await expect(db.sessions.create(newSession(randomUUID()))).rejects.toThrow();
      });

      it("listActive: only the user's unrevoked, unexpired sessions, newest first", async () => {
        const u = await db.users.create(newUser('hank'));
        const other = await db.users.create(newUser('ivy'));
        const s1 = await db.sessions.create(newSession(u.id));
        const s2 = await db.sessions.create(newSession(u.id));
        const s3 = await db.sessions.create(newSession(u.id));
        const revoked = await db.sessions.create(newSession(u.id));
        const shortLived = await db.sessions.create(newSession(u.id, { expiresAt: new Date(T0 + 10 * MIN) }));
        await db.sessions.create(newSession(other.id));
        await db.sessions.revoke(revoked.id, 'logout', new Date(clock));

        const now = new Date(T0 + 10 * MIN);
        const active = await db.sessions.listActive(u.id, now);
        expect(active.map((s) => s.id)).toEqual([s3.id, s2.id, s1.id]);
        expect(active.every((s) => s.userId === u.id && s.revokedAt === null)).toBe(true);

        // Just before its expiry the short-lived one is still active.
        const earlier = await db.sessions.listActive(u.id, new Date(T0 + 10 * MIN - 1));
        expect(earlier.map((s) => s.id)).toEqual([shortLived.id, s3.id, s2.id, s1.id]);

        expect(await db.sessions.listActive(u.id, new Date(T0 + 30 * DAY))).toEqual([]);
        expect(await db.sessions.listActive(randomUUID(), now)).toEqual([]);
      });

      it('revoke: true the first time, false after or for unknown ids', async () => {
        const u = await db.users.create(newUser('jack'));
        const s = await db.sessions.create(newSession(u.id));
        const at = new Date(T0 + 2 * DAY);
        expect(await db.sessions.revoke(s.id, 'logout', at)).toBe(true);
        expect(await db.sessions.revoke(s.id, 'admin', new Date(T0 + 3 * DAY))).toBe(false);
        expect(await db.sessions.revoke(randomUUID(), 'logout', at)).toBe(false);
        const got = await db.sessions.get(s.id);
        expect(got!.revokedAt).toEqual(at);
        expect(got!.revokedReason).toBe('logout');
      });

      it('revokeAllForUser revokes active sessions except exceptId and returns their ids', async () => {
        const u = await db.users.create(newUser('kate'));
        const other = await db.users.create(newUser('liam'));
        const a = await db.sessions.create(newSession(u.id));
        const b = await db.sessions.create(newSession(u.id));
        const keep = await db.sessions.create(newSession(u.id));
        const already = await db.sessions.create(newSession(u.id));
        const expired = await db.sessions.create(newSession(u.id, { expiresAt: new Date(T0 + 30 * MIN) }));
        const foreign = await db.sessions.create(newSession(other.id));
        const firstRevoke = new Date(T0 + HOUR_MS);
        await db.sessions.revoke(already.id, 'logout', firstRevoke);

        const at = new Date(T0 + 2 * HOUR_MS);
        const ids = await db.sessions.revokeAllForUser(u.id, 'password_changed', at, keep.id);
        expect([...ids].sort()).toEqual([a.id, b.id].sort());

        expect((await db.sessions.get(a.id))!.revokedReason).toBe('password_changed');
        expect((await db.sessions.get(a.id))!.revokedAt).toEqual(at);
        expect((await db.sessions.get(keep.id))!.revokedAt).toBeNull();
        // Already revoked: first reason and time kept.
        expect((await db.sessions.get(already.id))!.revokedReason).toBe('logout');
        expect((await db.sessions.get(already.id))!.revokedAt).toEqual(firstRevoke);
        // Expired before `at`: not active, left alone.
        expect((await db.sessions.get(expired.id))!.revokedAt).toBeNull();
        expect((await db.sessions.get(foreign.id))!.revokedAt).toBeNull();
        expect((await db.sessions.listActive(u.id, at)).map((s) => s.id)).toEqual([keep.id]);

        // Without exceptId everything active goes; a second call finds nothing.
        expect(await db.sessions.revokeAllForUser(u.id, 'disabled', at)).toEqual([keep.id]);
        expect(await db.sessions.revokeAllForUser(u.id, 'disabled', at)).toEqual([]);
        expect(await db.sessions.listActive(u.id, at)).toEqual([]);
      });

      it('revokedSince returns revocations at/after `since` whose session is unexpired at `now`', async () => {
        const u = await db.users.create(newUser('mona'));
        const early = await db.sessions.create(newSession(u.id));
        const atSince = await db.sessions.create(newSession(u.id));
        const late = await db.sessions.create(newSession(u.id, { expiresAt: new Date(T0 + 10 * DAY) }));
        const expiringSoon = await db.sessions.create(newSession(u.id, { expiresAt: new Date(T0 + 3 * HOUR_MS) }));
        const neverRevoked = await db.sessions.create(newSession(u.id));

        const since = new Date(T0 + 2 * HOUR_MS);
        await db.sessions.revoke(early.id, 'logout', new Date(since.getTime() - 1));
        await db.sessions.revoke(atSince.id, 'logout', since);
        await db.sessions.revoke(late.id, 'admin', new Date(since.getTime() + MIN));
        await db.sessions.revoke(expiringSoon.id, 'logout', new Date(since.getTime() + 2 * MIN));

        const now = new Date(T0 + 4 * HOUR_MS);
        const revs = await db.sessions.revokedSince(since, now);
        const byId = new Map(revs.map((r) => [r.sessionId, r]));
        expect([...byId.keys()].sort()).toEqual([atSince.id, late.id].sort());
        expect(byId.get(atSince.id)).toEqual({ sessionId: atSince.id, revokedAt: since, expiresAt: atSince.expiresAt });
        expect(byId.get(late.id)).toEqual({
          sessionId: late.id,
          revokedAt: new Date(since.getTime() + MIN),
          expiresAt: new Date(T0 + 10 * DAY),
        });
        expect(byId.has(neverRevoked.id)).toBe(false);

        // With an earlier `now`, the soon-expiring one is still relevant.
        const before = await db.sessions.revokedSince(since, new Date(T0 + 3 * HOUR_MS - 1));
        expect(before.map((r) => r.sessionId).sort()).toEqual([atSince.id, late.id, expiringSoon.id].sort());
        // Everything from the beginning of time.
        expect((await db.sessions.revokedSince(new Date(0), new Date(T0))).length).toBe(4);
      });

      it('purgeExpired deletes sessions expired before the cut-off and counts them', async () => {
        const u = await db.users.create(newUser('nina'));
        const old1 = await db.sessions.create(newSession(u.id, { expiresAt: new Date(T0 + HOUR_MS) }));
        const old2 = await db.sessions.create(newSession(u.id, { expiresAt: new Date(T0 + 2 * HOUR_MS) }));
        const edge = await db.sessions.create(newSession(u.id, { expiresAt: new Date(T0 + 3 * HOUR_MS) }));
        const live = await db.sessions.create(newSession(u.id));
        await db.sessions.revoke(live.id, 'logout', new Date(T0));

        expect(await db.sessions.purgeExpired(new Date(T0 + 3 * HOUR_MS))).toBe(2);
        expect(await db.sessions.get(old1.id)).toBeUndefined();
        expect(await db.sessions.get(old2.id)).toBeUndefined();
        expect((await db.sessions.get(edge.id))?.id).toBe(edge.id);
        // Revoked but unexpired sessions stay (the revocation list still needs them).
        expect((await db.sessions.get(live.id))?.revokedReason).toBe('logout');
        expect(await db.sessions.purgeExpired(new Date(T0 + 3 * HOUR_MS))).toBe(0);
      });

      it('touch sets lastSeenAt only, and is false for an unknown id', async () => {
        const u = await db.users.create(newUser('quinn'));
        const s = await db.sessions.create(newSession(u.id));
        const other = await db.sessions.create(newSession(u.id));
        const at = new Date(T0 + 3 * HOUR_MS + 17);
        expect(await db.sessions.touch(s.id, at)).toBe(true);
        expect(await db.sessions.get(s.id)).toEqual({ ...s, lastSeenAt: at });
        expect((await db.sessions.get(other.id))!.lastSeenAt).toEqual(other.createdAt);
        // The same time again still finds the session.
        expect(await db.sessions.touch(s.id, at)).toBe(true);
        // A revoked session can still be touched (the caller decides whether that is allowed).
        await db.sessions.revoke(s.id, 'logout', at);
        const later = new Date(at.getTime() + MIN);
        expect(await db.sessions.touch(s.id, later)).toBe(true);
        expect((await db.sessions.get(s.id))!.lastSeenAt).toEqual(later);
        expect(await db.sessions.touch(randomUUID(), at)).toBe(false);
      });

      it('deleting a user deletes its sessions', async () => {
        const u = await db.users.create(newUser('oscar'));
        const other = await db.users.create(newUser('pam'));
        const s1 = await db.sessions.create(newSession(u.id));
        const s2 = await db.sessions.create(newSession(u.id));
        const so = await db.sessions.create(newSession(other.id));
        expect(await db.users.delete(u.id)).toBe(true);
        expect(await db.sessions.get(s1.id)).toBeUndefined();
        expect(await db.sessions.get(s2.id)).toBeUndefined();
        expect((await db.sessions.get(so.id))?.userId).toBe(other.id);
      });
    });

    describe('refresh tokens', () => {
      async function newToken(sessionId: string, opts: Partial<Omit<RefreshTokenRecord, 'usedAt'>> = {}) {
        const token = { hash: tokenHash(), sessionId, createdAt: new Date(clock), expiresAt: new Date(clock + DAY), ...opts };
        await db.refreshTokens.create(token);
        return token;
      }

      it('use: ok once (marking it used), then reused with the first use time; unknown hashes are unknown', async () => {
        const u = await db.users.create(newUser('rita'));
        const s = await db.sessions.create(newSession(u.id));
        const t = await newToken(s.id, { createdAt: new Date(T0 + 7), expiresAt: new Date(T0 + DAY + 9) });
        const first = new Date(T0 + HOUR_MS + 123);

        const r1 = await db.refreshTokens.use(t.hash, first);
        expect(r1).toEqual({ status: 'ok', record: { ...t, usedAt: first } });

        const r2 = await db.refreshTokens.use(t.hash, new Date(T0 + 2 * HOUR_MS));
        expect(r2).toEqual({ status: 'reused', record: { ...t, usedAt: first } });
        // Still the first use time on every later attempt.
        const r3 = await db.refreshTokens.use(t.hash, new Date(T0 + 3 * HOUR_MS));
        expect(r3.status === 'reused' && r3.record.usedAt).toEqual(first);

        expect(await db.refreshTokens.use(tokenHash(), first)).toEqual({ status: 'unknown' });
        expect(await db.refreshTokens.use('', first)).toEqual({ status: 'unknown' });
      });

      it('use ignores expiry (the caller checks it)', async () => {
        const u = await db.users.create(newUser('sam'));
        const s = await db.sessions.create(newSession(u.id));
        const t = await newToken(s.id, { expiresAt: new Date(T0 + MIN) });
        const at = new Date(T0 + 30 * DAY);
        expect(await db.refreshTokens.use(t.hash, at)).toEqual({ status: 'ok', record: { ...t, usedAt: at } });
      });

      it("exactly one of 50 concurrent use() calls wins; the others see reuse at the winner's time", async () => {
        const u = await db.users.create(newUser('tess'));
        const s = await db.sessions.create(newSession(u.id));
        const t = await newToken(s.id);
        // Distinct times, so the reported usedAt identifies the winner.
        const results = await Promise.all(Array.from({ length: 50 }, (_, i) => db.refreshTokens.use(t.hash, new Date(T0 + HOUR_MS + i))));
        const ok = results.filter((r) => r.status === 'ok');
        const reused = results.filter((r) => r.status === 'reused');
        expect(ok).toHaveLength(1);
        expect(reused).toHaveLength(49);
        const winner = ok[0]!.record.usedAt!;
        expect(winner.getTime() - (T0 + HOUR_MS)).toBe(results.indexOf(ok[0]!));
        for (const r of reused) expect(r.record).toEqual({ ...t, usedAt: winner });
        expect(await db.refreshTokens.use(t.hash, new Date(T0 + 2 * HOUR_MS))).toEqual({ status: 'reused', record: { ...t, usedAt: winner } });
      });

      it('concurrent use() of different tokens all succeed', async () => {
        const u = await db.users.create(newUser('uma'));
        const s = await db.sessions.create(newSession(u.id));
        const tokens = await Promise.all(Array.from({ length: 20 }, () => newToken(s.id)));
        const results = await Promise.all(tokens.map((t) => db.refreshTokens.use(t.hash, new Date(T0 + HOUR_MS))));
        expect(results.map((r) => r.status)).toEqual(tokens.map(() => 'ok'));
      });

      it('create rejects an unknown session (foreign key) and a duplicate hash', async () => {
        const u = await db.users.create(newUser('vera'));
        const s = await db.sessions.create(newSession(u.id));
        await expect(newToken(randomUUID())).rejects.toThrow();
        const t = await newToken(s.id);
        await expect(newToken(s.id, { hash: t.hash })).rejects.toThrow();
        expect(await countTokens()).toBe(1);
        // The original is untouched.
        expect((await db.refreshTokens.use(t.hash, new Date(T0 + MIN))).status).toBe('ok');
      });

      it('hasSuccessor: a token created at or after the time, in that session only', async () => {
        const u = await db.users.create(newUser('sue'));
        const s = await db.sessions.create(newSession(u.id));
        const other = await db.sessions.create(newSession(u.id));
        await newToken(s.id, { createdAt: new Date(T0 + MIN) });
        await newToken(other.id, { createdAt: new Date(T0 + 10 * MIN) });
        expect(await db.refreshTokens.hasSuccessor(s.id, new Date(T0 + MIN))).toBe(true);
        expect(await db.refreshTokens.hasSuccessor(s.id, new Date(T0 + 2 * MIN))).toBe(false);
        expect(await db.refreshTokens.hasSuccessor(other.id, new Date(T0 + 5 * MIN))).toBe(true);
      });

      it("deleteForSession deletes that session's tokens, used or not, and counts them", async () => {
        const u = await db.users.create(newUser('walt'));
        const s = await db.sessions.create(newSession(u.id));
        const keep = await db.sessions.create(newSession(u.id));
        const a = await newToken(s.id);
        const b = await newToken(s.id);
        await newToken(s.id);
        const k = await newToken(keep.id);
        await db.refreshTokens.use(a.hash, new Date(T0 + MIN));

        expect(await db.refreshTokens.deleteForSession(s.id)).toBe(3);
        expect(await countTokens({ sessionId: s.id })).toBe(0);
        expect(await db.refreshTokens.use(a.hash, new Date(T0 + 2 * MIN))).toEqual({ status: 'unknown' });
        expect(await db.refreshTokens.use(b.hash, new Date(T0 + 2 * MIN))).toEqual({ status: 'unknown' });
        expect(await db.refreshTokens.deleteForSession(s.id)).toBe(0);
        expect(await db.refreshTokens.deleteForSession(randomUUID())).toBe(0);
        // Other sessions' tokens and the session itself stay.
        expect((await db.refreshTokens.use(k.hash, new Date(T0 + 2 * MIN))).status).toBe('ok');
        expect((await db.sessions.get(s.id))?.id).toBe(s.id);
      });

      it('purgeExpired deletes tokens expired before the cut-off, used or not, and counts them', async () => {
        const u = await db.users.create(newUser('xena'));
        const s = await db.sessions.create(newSession(u.id));
        const old1 = await newToken(s.id, { expiresAt: new Date(T0 + HOUR_MS) });
        const oldUsed = await newToken(s.id, { expiresAt: new Date(T0 + 2 * HOUR_MS) });
        const edge = await newToken(s.id, { expiresAt: new Date(T0 + 3 * HOUR_MS) });
        const liveUsed = await newToken(s.id, { expiresAt: new Date(T0 + DAY) });
        const live = await newToken(s.id, { expiresAt: new Date(T0 + DAY) });
        const usedAt = new Date(T0 + MIN);
        await db.refreshTokens.use(oldUsed.hash, usedAt);
        await db.refreshTokens.use(liveUsed.hash, usedAt);

        const cut = new Date(T0 + 3 * HOUR_MS);
        expect(await db.refreshTokens.purgeExpired(cut)).toBe(2);
        expect(await db.refreshTokens.purgeExpired(cut)).toBe(0);
        expect(await countTokens()).toBe(3);
        const later = new Date(T0 + 4 * HOUR_MS);
        expect(await db.refreshTokens.use(old1.hash, later)).toEqual({ status: 'unknown' });
        expect(await db.refreshTokens.use(oldUsed.hash, later)).toEqual({ status: 'unknown' });
        // Used but unexpired tokens stay, so reuse is still detected.
        expect(await db.refreshTokens.use(liveUsed.hash, later)).toEqual({ status: 'reused', record: { ...liveUsed, usedAt } });
        expect((await db.refreshTokens.use(edge.hash, later)).status).toBe('ok');
        expect((await db.refreshTokens.use(live.hash, later)).status).toBe('ok');
        // The session is not the token store's business.
        expect((await db.sessions.get(s.id))?.id).toBe(s.id);
      });

      it("deleting a user deletes its sessions' refresh tokens", async () => {
        const u = await db.users.create(newUser('yuri'));
        const other = await db.users.create(newUser('zoe'));
        const s1 = await db.sessions.create(newSession(u.id));
        const s2 = await db.sessions.create(newSession(u.id));
        const so = await db.sessions.create(newSession(other.id));
        const t1 = await newToken(s1.id);
        await newToken(s2.id);
        const to = await newToken(so.id);
        expect(await countTokens()).toBe(3);
        expect(await db.users.delete(u.id)).toBe(true);
        expect(await countTokens()).toBe(1);
        expect(await db.refreshTokens.use(t1.hash, new Date(T0 + MIN))).toEqual({ status: 'unknown' });
        expect((await db.refreshTokens.use(to.hash, new Date(T0 + MIN))).status).toBe('ok');
      });

      it('deleting a session (sessions.purgeExpired or directly) deletes its refresh tokens', async () => {
        const u = await db.users.create(newUser('abe'));
        const expiring = await db.sessions.create(newSession(u.id, { expiresAt: new Date(T0 + HOUR_MS) }));
        const direct = await db.sessions.create(newSession(u.id));
        const live = await db.sessions.create(newSession(u.id));
        const te = await newToken(expiring.id, { expiresAt: new Date(T0 + HOUR_MS) });
        await newToken(direct.id);
        const tl = await newToken(live.id);

        expect(await db.sessions.purgeExpired(new Date(T0 + 2 * HOUR_MS))).toBe(1);
        expect(await countTokens({ sessionId: expiring.id })).toBe(0);
        expect(await db.refreshTokens.use(te.hash, new Date(T0 + MIN))).toEqual({ status: 'unknown' });

        // The port has no session delete; the foreign key is what is under test here.
        await db.kysely.deleteFrom('sessions').where('id', '=', direct.id).execute();
        expect(await countTokens({ sessionId: direct.id })).toBe(0);

        expect(await countTokens()).toBe(1);
        expect((await db.refreshTokens.use(tl.hash, new Date(T0 + MIN))).status).toBe('ok');
      });

      it("revoking a session keeps its tokens (deleting them is the caller's choice)", async () => {
        const u = await db.users.create(newUser('bea'));
        const s = await db.sessions.create(newSession(u.id));
        await newToken(s.id);
        await db.sessions.revoke(s.id, 'logout', new Date(T0 + MIN));
        await db.sessions.revokeAllForUser(u.id, 'disabled', new Date(T0 + MIN));
        expect(await countTokens({ sessionId: s.id })).toBe(1);
      });
    });

    describe('recovery codes', () => {
      /** Fresh code hashes (the store does not care how they were computed). */
      const hashes = (n: number) => Array.from({ length: n }, () => tokenHash());

      async function rows(userId: string) {
        const r = await db.kysely.selectFrom('recovery_codes').selectAll().where('user_id', '=', userId).orderBy('hash').execute();
        return r.map((x) => ({
          hash: x.hash,
          createdAt: Number(x.created_at),
          usedAt: x.used_at === null ? null : Number(x.used_at),
        }));
      }

      it('replace stores the hashes unused at `at`; remaining counts them', async () => {
        const u = await db.users.create(newUser('rc-anna'));
        expect(await db.recoveryCodes.remaining(u.id)).toBe(0);
        const codes = hashes(10);
        await db.recoveryCodes.replace(u.id, codes, new Date(T0 + 17));
        expect(await db.recoveryCodes.remaining(u.id)).toBe(10);
        expect(await rows(u.id)).toEqual([...codes].sort().map((hash) => ({ hash, createdAt: T0 + 17, usedAt: null })));
        expect(await db.recoveryCodes.remaining(randomUUID())).toBe(0);
      });

      it('use: true once (recording the time), then false; remaining goes down', async () => {
        const u = await db.users.create(newUser('rc-ben'));
        const codes = hashes(3);
        await db.recoveryCodes.replace(u.id, codes, new Date(T0));
        const at = new Date(T0 + HOUR_MS + 5);
        expect(await db.recoveryCodes.use(u.id, codes[1]!, at)).toBe(true);
        expect(await db.recoveryCodes.remaining(u.id)).toBe(2);
        expect(await db.recoveryCodes.use(u.id, codes[1]!, new Date(T0 + 2 * HOUR_MS))).toBe(false);
        expect(await db.recoveryCodes.remaining(u.id)).toBe(2);
        // The first use time stays.
        expect((await rows(u.id)).find((r) => r.hash === codes[1])?.usedAt).toBe(at.getTime());
        expect(await db.recoveryCodes.use(u.id, codes[0]!, at)).toBe(true);
        expect(await db.recoveryCodes.use(u.id, codes[2]!, at)).toBe(true);
        expect(await db.recoveryCodes.remaining(u.id)).toBe(0);
      });

      it('use of an unknown hash, or for an unknown user, is false and changes nothing', async () => {
        const u = await db.users.create(newUser('rc-cleo'));
        const codes = hashes(2);
        await db.recoveryCodes.replace(u.id, codes, new Date(T0));
        expect(await db.recoveryCodes.use(u.id, tokenHash(), new Date(T0))).toBe(false);
        expect(await db.recoveryCodes.use(u.id, '', new Date(T0))).toBe(false);
        expect(await db.recoveryCodes.use(randomUUID(), codes[0]!, new Date(T0))).toBe(false);
        expect(await db.recoveryCodes.remaining(u.id)).toBe(2);
      });

      it("another user's code is false; the same hash may exist for two users independently", async () => {
        const a = await db.users.create(newUser('rc-dina'));
        const b = await db.users.create(newUser('rc-egon'));
        const [onlyA, shared] = hashes(2) as [string, string];
        await db.recoveryCodes.replace(a.id, [onlyA, shared], new Date(T0));
        await db.recoveryCodes.replace(b.id, [shared], new Date(T0));
        expect(await db.recoveryCodes.use(b.id, onlyA, new Date(T0 + MIN))).toBe(false);
        expect(await db.recoveryCodes.remaining(a.id)).toBe(2);
        // Spending the shared hash for b leaves a's copy unused.
        expect(await db.recoveryCodes.use(b.id, shared, new Date(T0 + MIN))).toBe(true);
        expect(await db.recoveryCodes.remaining(b.id)).toBe(0);
        expect(await db.recoveryCodes.use(a.id, shared, new Date(T0 + MIN))).toBe(true);
        expect(await db.recoveryCodes.use(a.id, onlyA, new Date(T0 + MIN))).toBe(true);
      });

      it('replace discards the old codes, used or not; a re-issued hash is unused again', async () => {
        const u = await db.users.create(newUser('rc-finn'));
        const other = await db.users.create(newUser('rc-gail'));
        const old = hashes(4);
        await db.recoveryCodes.replace(u.id, old, new Date(T0));
        await db.recoveryCodes.replace(other.id, hashes(2), new Date(T0));
        expect(await db.recoveryCodes.use(u.id, old[0]!, new Date(T0 + MIN))).toBe(true);

        const next = [...hashes(2), old[0]!];
        await db.recoveryCodes.replace(u.id, next, new Date(T0 + HOUR_MS));
        expect(await db.recoveryCodes.remaining(u.id)).toBe(3);
        expect(await rows(u.id)).toEqual([...next].sort().map((hash) => ({ hash, createdAt: T0 + HOUR_MS, usedAt: null })));
        for (const h of old.slice(1)) expect(await db.recoveryCodes.use(u.id, h, new Date(T0 + 2 * HOUR_MS))).toBe(false);
        expect(await db.recoveryCodes.use(u.id, old[0]!, new Date(T0 + 2 * HOUR_MS))).toBe(true);
        // Another user's codes are untouched.
        expect(await db.recoveryCodes.remaining(other.id)).toBe(2);

        // Duplicates are stored once; an empty list clears.
        const dup = tokenHash();
        await db.recoveryCodes.replace(u.id, [dup, dup], new Date(T0));
        expect(await db.recoveryCodes.remaining(u.id)).toBe(1);
        await db.recoveryCodes.replace(u.id, [], new Date(T0));
        expect(await db.recoveryCodes.remaining(u.id)).toBe(0);
        expect(await rows(u.id)).toEqual([]);
      });

      it('replace is one transaction: a failing insert keeps the old codes', async () => {
        const u = await db.users.create(newUser('rc-hugo'));
        const codes = hashes(3);
        await db.recoveryCodes.replace(u.id, codes, new Date(T0));
        await db.recoveryCodes.use(u.id, codes[0]!, new Date(T0 + MIN));
        const before = await rows(u.id);
        // A null hash violates NOT NULL after the delete already ran inside the transaction.
        await expect(db.recoveryCodes.replace(u.id, [tokenHash(), null as unknown as string], new Date(T0 + HOUR_MS))).rejects.toThrow();
        expect(await rows(u.id)).toEqual(before);
        expect(await db.recoveryCodes.remaining(u.id)).toBe(2);
        // An unknown user is a foreign-key error, and stores nothing.
        await expect(db.recoveryCodes.replace(randomUUID(), hashes(1), new Date(T0))).rejects.toThrow();
        expect(await db.kysely.selectFrom('recovery_codes').select('hash').where('user_id', '!=', u.id).execute()).toEqual([]);
      });

      it('exactly one of 50 concurrent use() calls of one code gets true', async () => {
        const u = await db.users.create(newUser('rc-ivy'));
        const codes = hashes(5);
        await db.recoveryCodes.replace(u.id, codes, new Date(T0));
        // Distinct times, so the stored usedAt identifies the winner.
        const results = await Promise.all(Array.from({ length: 50 }, (_, i) => db.recoveryCodes.use(u.id, codes[2]!, new Date(T0 + HOUR_MS + i))));
        expect(results.filter((r) => r)).toHaveLength(1);
        expect((await rows(u.id)).find((r) => r.hash === codes[2])?.usedAt).toBe(T0 + HOUR_MS + results.indexOf(true));
        expect(await db.recoveryCodes.remaining(u.id)).toBe(4);
      });

      it('concurrent replaces leave exactly one whole set; concurrent readers never see a mix or none', async () => {
        const u = await db.users.create(newUser('rc-jack'));
        await db.recoveryCodes.replace(u.id, hashes(5), new Date(T0));
        const sets = Array.from({ length: 10 }, () => hashes(5));
        const counts: number[] = [];
        await Promise.all([
          ...sets.map((set, i) => db.recoveryCodes.replace(u.id, set, new Date(T0 + i))),
          ...Array.from({ length: 20 }, async () => counts.push(await db.recoveryCodes.remaining(u.id))),
        ]);
        expect(counts).toEqual(counts.map(() => 5));
        const final = (await rows(u.id)).map((r) => r.hash);
        expect(sets.some((set) => JSON.stringify([...set].sort()) === JSON.stringify(final))).toBe(true);
      });

      it("deleteForUser deletes that user's codes, used or not, and counts them", async () => {
        const u = await db.users.create(newUser('rc-kim'));
        const other = await db.users.create(newUser('rc-lou'));
        const codes = hashes(4);
        await db.recoveryCodes.replace(u.id, codes, new Date(T0));
        await db.recoveryCodes.replace(other.id, hashes(2), new Date(T0));
        await db.recoveryCodes.use(u.id, codes[0]!, new Date(T0 + MIN));
        expect(await db.recoveryCodes.deleteForUser(u.id)).toBe(4);
        expect(await db.recoveryCodes.deleteForUser(u.id)).toBe(0);
        expect(await db.recoveryCodes.deleteForUser(randomUUID())).toBe(0);
        expect(await db.recoveryCodes.remaining(u.id)).toBe(0);
        expect(await db.recoveryCodes.use(u.id, codes[1]!, new Date(T0 + MIN))).toBe(false);
        expect(await db.recoveryCodes.remaining(other.id)).toBe(2);
        // The user itself stays.
        expect((await db.users.findById(u.id))?.id).toBe(u.id);
      });

      it('deleting a user deletes its recovery codes', async () => {
        const u = await db.users.create(newUser('rc-max'));
        const other = await db.users.create(newUser('rc-ned'));
        const codes = hashes(3);
        await db.recoveryCodes.replace(u.id, codes, new Date(T0));
        await db.recoveryCodes.replace(other.id, hashes(3), new Date(T0));
        await db.recoveryCodes.use(u.id, codes[0]!, new Date(T0 + MIN));
        expect(await db.users.delete(u.id)).toBe(true);
        expect(await rows(u.id)).toEqual([]);
        expect(await db.recoveryCodes.use(u.id, codes[1]!, new Date(T0 + MIN))).toBe(false);
        expect(await db.recoveryCodes.remaining(other.id)).toBe(3);
      });
    });
  });
}
