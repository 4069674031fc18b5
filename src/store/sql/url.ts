import path from 'node:path';

/** Where a database URL points, after parsing. */
export type DatabaseTarget =
  | {
      dialect: 'sqlite';
      /** Absolute file path, or `:memory:`. */
      filename: string;
    }
  | {
      dialect: 'postgres';
      /** The URL to hand to `pg`, with Portcullis' own `schema` parameter removed. */
      connectionString: string;
      /** Schema to use as `search_path`, when one was given. */
      schema: string | undefined;
    };

/** The accepted URL forms, for error messages. */
export const ACCEPTED_DATABASE_URLS =
  'sqlite:./relative/file.db, sqlite:/absolute/file.db, sqlite::memory:, ' + 'postgres://user:pass@host:5432/db[?schema=name] or postgresql://…';

// A plain identifier: it ends up in a `-c search_path=` startup option and in DDL,
// so nothing that needs quoting is accepted.
const SCHEMA_NAME = /^[a-z_][a-z0-9_]{0,62}$/;

/**
 * Parses a `storage.database_url` value.
 *
 * - `sqlite:PATH` — PATH relative to `cwd` unless absolute (`sqlite://PATH` and
 *   `sqlite:///abs/path` are accepted too); `sqlite::memory:` for an in-memory database.
 * - `postgres://…` / `postgresql://…` — an optional `?schema=name` query parameter (or
 *   `schemaOverride`) selects the schema.
 *
 * @throws Error naming the accepted forms for anything else, or for a bad schema name.
 */
export function parseDatabaseUrl(url: string, cwd: string = process.cwd(), schemaOverride?: string): DatabaseTarget {
  const trimmed = url.trim();
  if (/^sqlite:/i.test(trimmed)) {
    let rest = trimmed.slice('sqlite:'.length);
    if (rest.startsWith('//')) rest = rest.slice(2);
    if (rest === ':memory:') return { dialect: 'sqlite', filename: ':memory:' };
    if (rest === '' || rest.endsWith('/')) {
      throw new Error(`Invalid database URL "${url}": no SQLite file name. Accepted forms: ${ACCEPTED_DATABASE_URLS}`);
    }
    return { dialect: 'sqlite', filename: path.resolve(cwd, rest) };
  }
  if (/^postgres(ql)?:\/\//i.test(trimmed)) {
    let parsed: URL;
    try {
      parsed = new URL(trimmed);
    } catch {
      throw new Error(`Invalid database URL: cannot parse the PostgreSQL URL. Accepted forms: ${ACCEPTED_DATABASE_URLS}`);
    }
    const fromUrl = parsed.searchParams.get('schema') ?? undefined;
    parsed.searchParams.delete('schema');
    const schema = schemaOverride ?? (fromUrl === '' ? undefined : fromUrl);
    if (schema !== undefined && !SCHEMA_NAME.test(schema)) {
      throw new Error(`Invalid PostgreSQL schema name "${schema}": use lower-case letters, digits and _ (starting with a letter or _), at most 63 characters`);
    }
    return { dialect: 'postgres', connectionString: parsed.toString(), schema };
  }
  // Never echo a URL that may carry a password.
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(trimmed)?.[1];
  throw new Error(`Unsupported database URL${scheme ? ` scheme "${scheme}:"` : ''}. Accepted forms: ${ACCEPTED_DATABASE_URLS}`);
}
