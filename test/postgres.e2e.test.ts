import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import { addUser, login, startHarness, type Harness } from './support/helpers.js';
import { postgresReachable } from './support/services.js';

const URL_ = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const schema = `pc_e2e_${process.pid}_${Date.now().toString(36)}`;

const reachable = (): Promise<boolean> => postgresReachable(URL_);

const up = await reachable();
if (!up && process.env.CI === 'true') throw new Error(`PostgreSQL at ${URL_} is unreachable, and CI=true requires it`);
if (!up) console.warn(`[postgres.e2e] skipped: PostgreSQL at ${URL_} is unreachable`);

describe.runIf(up)('gateway on PostgreSQL', () => {
  let h: Harness;
  beforeAll(async () => {
    const sep = URL_.includes('?') ? '&' : '?';
    h = await startHarness({ databaseUrl: `${URL_}${sep}schema=${schema}` });
  });
  afterAll(async () => {
    await h?.close();
    const c = new pg.Client({ connectionString: URL_ });
    await c.connect();
    await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await c.end();
  });

  it('stores users and sessions in its own schema, and signs in', async () => {
    expect(h.app.db.dialect).toBe('postgres');
    await addUser(h, 'pat', ['admin']);
    const token = await login(h, 'PAT');
    const me = await (await fetch(`${h.url}/api/auth/me`, { headers: { authorization: `Bearer ${token}` } })).json();
    expect(me).toMatchObject({ username: 'pat', roles: ['admin'] });
    const c = new pg.Client({ connectionString: URL_ });
    await c.connect();
    const rows = await c.query(`SELECT count(*)::int AS n FROM ${schema}.sessions`);
    await c.end();
    expect(rows.rows[0].n).toBe(1);
    const echo = await (await fetch(`${h.url}/admin/p`, { headers: { authorization: `Bearer ${token}` } })).json();
    expect(echo.headers['x-auth-user']).toBe('pat');
  });
});
