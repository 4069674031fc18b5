import { randomBytes } from 'node:crypto';
import { sql } from 'kysely';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { MIGRATIONS, openDatabase, type SqlDatabase } from './index.js';
import { registerStoreContract } from '../../../test/support/store-contract.js';

const DATABASE_URL = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const IN_CI = process.env.CI === 'true';
/** One fresh schema per test file, dropped at the end. */
const SCHEMA = `portcullis_test_${process.pid}_${randomBytes(4).toString('hex')}`;
const ALL = MIGRATIONS.map((m) => m.name);

async function reachable(): Promise<string | undefined> {
  const client = new pg.Client({ connectionString: DATABASE_URL, connectionTimeoutMillis: 2000 });
  client.on('error', () => {});
  try {
    await client.connect();
    await client.query('select 1');
    return undefined;
  } catch (err) {
    return err instanceof Error ? err.message : String(err);
  } finally {
    await client.end().catch(() => {});
  }
}

async function dropSchema(name: string): Promise<void> {
  const client = new pg.Client({ connectionString: DATABASE_URL, connectionTimeoutMillis: 2000 });
  await client.connect();
  try {
    await client.query(`drop schema if exists "${name}" cascade`);
  } finally {
    await client.end();
  }
}

const problem = await reachable();

if (problem !== undefined && IN_CI) {
  // In CI a missing database is a broken pipeline, not a reason to skip.
  describe('postgres', () => {
    it('is reachable (required when CI=true)', () => {
      throw new Error(`PostgreSQL at DATABASE_URL is unreachable: ${problem}`);
    });
  });
} else if (problem !== undefined) {
  console.warn(
    `\n[store.pg.test] SKIPPING PostgreSQL store tests: cannot reach ${redact(DATABASE_URL)} (${problem}). Set DATABASE_URL or start PostgreSQL; in CI (CI=true) this is a failure.\n`,
  );
} else {
  /** Schemas the contract asked for by name (`${SCHEMA}_${name}`). */
  const contractSchemas = new Set<string>();
  afterAll(async () => {
    await dropSchema(SCHEMA);
    await dropSchema(`${SCHEMA}_url`);
    await dropSchema(`${SCHEMA}_race`);
  });

  registerStoreContract('postgres', {
    open: ({ now, name }) => {
      const schema = name === undefined ? SCHEMA : `${SCHEMA}_c_${name}`;
      contractSchemas.add(schema);
      return openDatabase(DATABASE_URL, { schema, now, log: () => {} });
    },
    cleanup: async () => {
      for (const s of contractSchemas) if (s !== SCHEMA) await dropSchema(s);
    },
  });

  describe('postgres specifics', () => {
    it('takes the schema from ?schema=, creates it on migrate and keeps tables in it', async () => {
      const url = new URL(DATABASE_URL);
      url.searchParams.set('schema', `${SCHEMA}_url`);
      const db = await openDatabase(url.toString(), { log: () => {} });
      try {
        expect(db.dialect).toBe('postgres');
        expect(db.schema).toBe(`${SCHEMA}_url`);
        expect(await db.migrate()).toEqual(ALL);
        const cur = await sql<{ s: string }>`select current_schema() as s`.execute(db.kysely);
        expect(cur.rows[0]?.s).toBe(`${SCHEMA}_url`);
        const t = await sql<{ table_name: string }>`
          select table_name from information_schema.tables where table_schema = ${`${SCHEMA}_url`} order by table_name`.execute(db.kysely);
        expect(t.rows.map((r) => r.table_name)).toEqual(['portcullis_migrations', 'recovery_codes', 'refresh_tokens', 'sessions', 'users']);
      } finally {
        await db.close();
      }
    });

    it('stores booleans as boolean and timestamps as bigint epoch ms', async () => {
      const db = await openDatabase(DATABASE_URL, { schema: SCHEMA, now: () => new Date(1_700_000_000_123), log: () => {} });
      try {
        await db.migrate();
        const u = await db.users.create({ username: `raw_${randomBytes(3).toString('hex')}`, email: null, roles: ['a'], passwordHash: 'h' });
        await db.users.update(u.id, { disabled: true });
        const row = await db.kysely.selectFrom('users').selectAll().where('id', '=', u.id).executeTakeFirstOrThrow();
        expect(row.disabled).toBe(true);
        expect(row.mfa_enabled).toBe(false);
        expect(row.created_at).toBe('1700000000123'); // pg returns bigint as a string; the store converts
        expect(u.createdAt).toEqual(new Date(1_700_000_000_123));
        await db.users.delete(u.id);
      } finally {
        await db.close();
      }
    });

    it('concurrent migrate() calls apply each migration exactly once', async () => {
      const open = () => openDatabase(DATABASE_URL, { schema: `${SCHEMA}_race`, log: () => {} });
      const dbs: SqlDatabase[] = await Promise.all([open(), open(), open()]);
      try {
        const results = await Promise.all(dbs.map((d) => d.migrate()));
        // Each migration is applied by exactly one of them (not necessarily the same one).
        expect(results.flat().sort()).toEqual([...ALL].sort());
        const rows = await dbs[0]!.kysely.selectFrom('portcullis_migrations').select('name').orderBy('name').execute();
        expect(rows.map((r) => r.name)).toEqual([...ALL].sort());
      } finally {
        await Promise.all(dbs.map((d) => d.close()));
      }
    });

    it('an unreachable server fails ping fast instead of hanging', async () => {
      const db = await openDatabase('postgres://postgres@127.0.0.1:1/test', { log: () => {} });
      const t0 = Date.now();
      try {
        await expect(db.ping()).rejects.toThrow();
        expect(Date.now() - t0).toBeLessThan(2500);
      } finally {
        await db.close();
      }
    });

    it('a pool error is logged, not thrown', async () => {
      const logged: Array<{ msg: string; extra?: object }> = [];
      const db = await openDatabase(DATABASE_URL, { schema: SCHEMA, log: (msg, extra) => logged.push({ msg, extra }) });
      try {
        const own = await sql<{ pid: number }>`select pg_backend_pid() as pid`.execute(db.kysely);
        const pid = own.rows[0]!.pid;
        // Kill our (now idle) pooled connection from the server side: the pool emits 'error'.
        const killer = new pg.Client({ connectionString: DATABASE_URL });
        await killer.connect();
        const killed = await killer.query('select pg_terminate_backend($1) as ok', [pid]);
        await killer.end();
        expect(killed.rows[0].ok).toBe(true);
        await expect.poll(() => logged.length, { timeout: 3000 }).toBeGreaterThan(0);
        // The idle client's own listener and the pool's both report it; neither throws.
        expect(logged.map((l) => l.msg)).toContain('database pool error');
        // The pool recovers with a fresh connection.
        await db.ping();
      } finally {
        await db.close();
      }
    });
  });
}

function redact(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '(unparseable DATABASE_URL)';
  }
}
