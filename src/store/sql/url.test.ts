import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { openDatabase } from './index.js';
import { parseDatabaseUrl } from './url.js';

describe('parseDatabaseUrl', () => {
  it('parses SQLite forms', () => {
    expect(parseDatabaseUrl('sqlite:./data/portcullis.db', '/srv/app')).toEqual({
      dialect: 'sqlite',
      filename: path.resolve('/srv/app', 'data/portcullis.db'),
    });
    expect(parseDatabaseUrl('sqlite:data/x.db', '/srv')).toEqual({ dialect: 'sqlite', filename: '/srv/data/x.db' });
    expect(parseDatabaseUrl('sqlite:/var/lib/p.db', '/srv')).toEqual({ dialect: 'sqlite', filename: '/var/lib/p.db' });
    expect(parseDatabaseUrl('sqlite:///var/lib/p.db', '/srv')).toEqual({ dialect: 'sqlite', filename: '/var/lib/p.db' });
    expect(parseDatabaseUrl('sqlite::memory:')).toEqual({ dialect: 'sqlite', filename: ':memory:' });
  });

  it('parses PostgreSQL URLs and the schema parameter', () => {
    expect(parseDatabaseUrl('postgres://u:p@db:5432/app')).toEqual({
      dialect: 'postgres',
      connectionString: 'postgres://u:p@db:5432/app',
      schema: undefined,
    });
    expect(parseDatabaseUrl('postgresql://u@db/app?schema=gw&sslmode=require')).toEqual({
      dialect: 'postgres',
      connectionString: 'postgresql://u@db/app?sslmode=require',
      schema: 'gw',
    });
    // An explicit option wins over the URL.
    expect(parseDatabaseUrl('postgres://db/app?schema=gw', '/', 'other')).toMatchObject({ schema: 'other' });
  });

  it('rejects unsafe schema names', () => {
    expect(() => parseDatabaseUrl('postgres://db/app?schema=a;drop')).toThrow(/schema name/);
    expect(() => parseDatabaseUrl('postgres://db/app', '/', 'Bad-Name')).toThrow(/schema name/);
  });

  it('rejects other schemes, naming the accepted forms without echoing secrets', () => {
    expect(() => parseDatabaseUrl('mysql://root:s3cret@db/app')).toThrow(/Unsupported database URL scheme "mysql:".*sqlite:.*postgres:\/\//);
    expect(() => parseDatabaseUrl('mysql://root:s3cret@db/app')).not.toThrow(/s3cret/);
    expect(() => parseDatabaseUrl('')).toThrow(/Accepted forms/);
    expect(() => parseDatabaseUrl('./data/x.db')).toThrow(/Accepted forms/);
    expect(() => parseDatabaseUrl('sqlite:')).toThrow(/no SQLite file name/);
  });

  it('openDatabase rejects an unsupported URL', async () => {
    await expect(openDatabase('redis://localhost:6379')).rejects.toThrow(/Accepted forms/);
  });
});
