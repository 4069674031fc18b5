import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { sql } from 'kysely';
import { afterAll, describe, expect, it } from 'vitest';
import { MIGRATIONS, openDatabase } from './index.js';
import { registerStoreContract } from '../../../test/support/store-contract.js';

const ALL = MIGRATIONS.map((m) => m.name);
const dir = mkdtempSync(path.join(tmpdir(), 'portcullis-sqlite-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

registerStoreContract('sqlite file', {
  open: ({ now, name }) => openDatabase(`sqlite:${path.join(dir, 'contract', 'nested', `${name ?? 'store'}.db`)}`, { now, log: () => {} }),
});

registerStoreContract('sqlite :memory:', {
  // Every :memory: connection is a database of its own.
  open: ({ now }) => openDatabase('sqlite::memory:', { now, log: () => {} }),
});

describe('sqlite specifics', () => {
  it('resolves a relative path against cwd, creates parent dirs and makes the file 0600', async () => {
    const db = await openDatabase('sqlite:./data/sub/portcullis.db', { cwd: dir, log: () => {} });
    try {
      expect(db.dialect).toBe('sqlite');
      const file = path.join(dir, 'data', 'sub', 'portcullis.db');
      expect(statSync(file).isFile()).toBe(true);
      expect(statSync(file).mode & 0o777).toBe(0o600);
      expect(await db.migrate()).toEqual(ALL);
      // The WAL file inherits the database file's mode.
      await db.users.create({ username: 'w', email: null, roles: [], passwordHash: 'h' });
      expect(statSync(`${file}-wal`).mode & 0o777).toBe(0o600);
    } finally {
      await db.close();
    }
  });

  it('sets WAL, foreign keys and the busy timeout', async () => {
    const db = await openDatabase(`sqlite:${path.join(dir, 'pragmas.db')}`, { log: () => {} });
    try {
      const jm = await sql<{ journal_mode: string }>`pragma journal_mode`.execute(db.kysely);
      expect(jm.rows[0]?.journal_mode).toBe('wal');
      const fk = await sql<{ foreign_keys: number }>`pragma foreign_keys`.execute(db.kysely);
      expect(fk.rows[0]?.foreign_keys).toBe(1);
      const bt = await sql<{ timeout: number }>`pragma busy_timeout`.execute(db.kysely);
      expect(bt.rows[0]?.timeout).toBe(5000);
    } finally {
      await db.close();
    }
  });

  it('keeps data across reopen and does not re-apply migrations', async () => {
    const url = `sqlite:${path.join(dir, 'reopen.db')}`;
    const a = await openDatabase(url, { log: () => {} });
    expect(await a.migrate()).toEqual(ALL);
    const u = await a.users.create({ username: 'Keep', email: null, roles: ['r'], passwordHash: 'h' });
    await a.close();
    await a.close(); // idempotent

    const b = await openDatabase(url, { log: () => {} });
    try {
      expect(await b.migrate()).toEqual([]);
      expect((await b.users.findByUsername('KEEP'))?.id).toBe(u.id);
    } finally {
      await b.close();
    }
  });

  it('stores booleans as 0/1 and timestamps as integer epoch ms', async () => {
    const db = await openDatabase('sqlite::memory:', { now: () => new Date(1_700_000_000_123), log: () => {} });
    try {
      await db.migrate();
      const u = await db.users.create({ username: 'raw', email: null, roles: ['a'], passwordHash: 'h' });
      await db.users.update(u.id, { disabled: true });
      const row = await db.kysely.selectFrom('users').selectAll().where('id', '=', u.id).executeTakeFirstOrThrow();
      expect(row.disabled).toBe(1);
      expect(row.mfa_enabled).toBe(0);
      expect(row.created_at).toBe(1_700_000_000_123);
      expect(row.roles).toBe('["a"]');
    } finally {
      await db.close();
    }
  });

  it('ping fails after close', async () => {
    const db = await openDatabase('sqlite::memory:', { log: () => {} });
    await db.ping();
    await db.close();
    await expect(db.ping()).rejects.toThrow();
  });
});
