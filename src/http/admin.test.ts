import { connect, createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { Metrics } from '../metrics/index.js';
import { createRedisClient } from '../store/state/redis.js';
import { openDatabase } from '../store/sql/index.js';
import { createAdminServer, databaseLabel, describeDependencyError, describeFailure, type Dependency } from './admin.js';

/** A port nothing listens on. */
async function closedPort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address() as AddressInfo;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** The error a real refused TCP connection gives. */
async function refusedError(port: number): Promise<Error> {
  return new Promise((resolve) => connect(port, '127.0.0.1').once('error', resolve));
}

describe('describeFailure: a dependency failure in words', () => {
  it('a refused connection names the address and the reason, not the errno', async () => {
    const port = await closedPort();
    const err = await refusedError(port);
    expect(describeFailure({ name: 'database' }, err)).toEqual({ reason: 'refused', error: `database unreachable at 127.0.0.1:${port}: connection refused` });
    expect(describeFailure({ name: 'database', what: `PostgreSQL at 127.0.0.1:${port}` }, err).error).toBe(
      `PostgreSQL at 127.0.0.1:${port} (database) unreachable: connection refused`,
    );
  });

  it('SQLite: a closed database and its result codes', async () => {
    const db = await openDatabase('sqlite::memory:', { log: () => undefined });
    await db.ping();
    await db.close();
    const err = await db.ping().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeDefined();
    expect(describeFailure({ name: 'database' }, err)).toEqual({ reason: 'not_connected', error: 'database unreachable: the database is closed' });
    const busy = Object.assign(new Error('database is locked'), { code: 'SQLITE_BUSY' });
    expect(describeFailure({ name: 'database' }, busy).error).toBe('SQLite (database) unreachable: the database file is locked by another process');
  });

  it('Redis without a connection: "not connected", never the client library\'s wording', async () => {
    const port = await closedPort();
    const redis = createRedisClient(`redis://127.0.0.1:${port}`);
    try {
      await new Promise((r) => setTimeout(r, 100));
      const err = await redis.ping().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(Error);
      const d = describeFailure({ name: 'state_store' }, err);
      expect(d).toEqual({ reason: 'not_connected', error: 'Redis (state store) unreachable: not connected' });
      expect(describeDependencyError(err)).toBe(d.error);
    } finally {
      redis.disconnect();
    }
  });

  it('PostgreSQL answers that are not about the connection are "failing", with what they mean', () => {
    const pgError = (code: string, message: string) => Object.assign(new Error(message), { code, severity: 'FATAL' });
    expect(describeFailure({ name: 'database' }, pgError('3D000', 'database "x" does not exist'))).toEqual({
      reason: 'not_found',
      error: 'PostgreSQL (database) failing: the database does not exist',
    });
    expect(describeFailure({ name: 'database' }, pgError('28P01', 'password authentication failed for user "u"')).error).toBe(
      'PostgreSQL (database) failing: password authentication failed',
    );
    // An unknown SQLSTATE keeps the server's first line, and says which code.
    expect(describeFailure({ name: 'database' }, pgError('XX000', 'internal error\nDETAIL: more')).error).toBe(
      'PostgreSQL (database) failing: internal error (SQLSTATE XX000)',
    );
  });

  it('a sign-in failure with no address says just the reason', () => {
    expect(describeDependencyError(new Error('dependency did not answer within 1500 ms'))).toBe('dependency did not answer within 1500 ms');
  });

  it('databaseLabel never shows a password', () => {
    expect(databaseLabel('postgres://portcullis:s3cret@db.internal:6543/gw?schema=a')).toBe('PostgreSQL at db.internal:6543');
    expect(databaseLabel('postgresql://u:p@db/x')).toBe('PostgreSQL at db:5432');
    expect(databaseLabel('sqlite:./data/portcullis.db')).toBe('SQLite file ./data/portcullis.db');
  });
});

describe('createAdminServer /readyz', () => {
  const servers: ReturnType<typeof createAdminServer>[] = [];
  afterEach(async () => {
    for (const s of servers.splice(0)) await new Promise((r) => s.close(r));
  });

  async function start(deps: Dependency[], ready: () => boolean = () => true) {
    const lines: { level: string; obj: Record<string, unknown>; msg: string }[] = [];
    const at = (level: string) => (obj: Record<string, unknown>, msg: string) => lines.push({ level, obj, msg });
    const metrics = new Metrics({ processMetrics: false });
    const server = createAdminServer({
      metrics,
      dependencies: () => deps,
      ready,
      log: { error: at('error'), warn: at('warn'), info: at('info') } as never,
    });
    servers.push(server);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    return { url, lines, metrics };
  }

  it('a ping that never answers is a timeout, answered within the bound', async () => {
    const { url } = await start([{ name: 'database', ping: () => new Promise(() => undefined) }]);
    const t0 = Date.now();
    const r = await fetch(`${url}/readyz`);
    expect(Date.now() - t0).toBeLessThan(2_000);
    expect(r.status).toBe(503);
    expect(await r.json()).toEqual({
      status: 'not_ready',
      checks: { config: { ok: true }, database: { ok: false, reason: 'timeout', error: 'database unreachable: no answer within 1500 ms' } },
    });
  });

  it("a dependency's own description wins; the log line carries the same words", async () => {
    const port = await closedPort();
    const said = `Redis (state store) unreachable at 127.0.0.1:${port}: connection refused`;
    const { url, lines } = await start([
      { name: 'database', ping: async () => undefined },
      { name: 'state_store', ping: () => refusedError(port).then((e) => Promise.reject(e)), describe: () => said },
    ]);
    const body = (await (await fetch(`${url}/readyz`)).json()) as { checks: Record<string, unknown> };
    expect(body.checks.state_store).toEqual({ ok: false, reason: 'refused', error: said });
    expect(lines).toEqual([{ level: 'warn', obj: { event: 'dependency_failure', dependency: 'state_store', reason: 'refused', error: said }, msg: said }]);
  });

  it('draining: 503 at once, without pinging anything', async () => {
    let pinged = 0;
    const { url } = await start(
      [
        {
          name: 'database',
          ping: async () => {
            pinged++;
          },
        },
      ],
      () => false,
    );
    const r = await fetch(`${url}/readyz`);
    expect(r.status).toBe(503);
    expect(await r.json()).toEqual({ status: 'draining' });
    expect(pinged).toBe(0);
  });
});
