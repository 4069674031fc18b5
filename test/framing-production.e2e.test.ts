/**
 * Issue 8, class 1 in production mode: the header-cap smuggle was reported "in every storage
 * mode". The framing stage runs before any store is touched, and this file shows it with the
 * gateway on PostgreSQL (its own schema, dropped after) and Redis (its own key prefix, deleted
 * after). Under CI=true an unreachable PostgreSQL or Redis fails the file.
 */
import pg from 'pg';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addUser, login, rawRequest, startHarness, type Harness } from './support/helpers.js';
import { startRecorder, type Recorder } from './support/recorder.js';
import { postgresReachable, redisReachable } from './support/services.js';

const PG_URL = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const RUN = `${process.pid}_${Date.now().toString(36)}`;
const SCHEMA = `pc_framing_${RUN}`;
const PREFIX = `pc-framing:${RUN}:`;

const up = (await postgresReachable(PG_URL)) && (await redisReachable(REDIS_URL));
if (!up && process.env.CI === 'true')
  throw new Error(`framing-production.e2e needs PostgreSQL (${PG_URL}) and Redis (${REDIS_URL}), and CI=true requires them`);
if (!up) console.warn('[framing-production.e2e] skipped: PostgreSQL or Redis unreachable');

describe.runIf(up)('the header-cap smuggle on PostgreSQL + Redis', () => {
  let rec: Recorder;
  let h: Harness;
  let token: string;
  /** What reached the upstream: method, URL and the identity header. */
  const seen = () => rec.seen.map((s) => ({ method: s.method, url: s.url, user: s.headers['x-auth-user'] as string | undefined }));

  beforeAll(async () => {
    rec = await startRecorder({ maxHeadersCount: 0 });
    h = await startHarness({
      databaseUrl: `${PG_URL}${PG_URL.includes('?') ? '&' : '?'}schema=${SCHEMA}`,
      redisUrl: REDIS_URL,
      redisPrefix: PREFIX,
      upstreamExtra: `  rec:\n    url: ${rec.url}\n    timeout: 5s\n`,
      routes: `
routes:
  - name: public
    match: { path: /public/** }
    upstream: rec
    access: public
  - name: app
    match: { path: /** }
    upstream: rec
    access: authenticated
`,
    });
    await addUser(h, 'carol', ['staff']);
    token = await login(h, 'carol');
  });

  afterAll(async () => {
    await h?.close();
    await rec?.close();
    const c = new pg.Client({ connectionString: PG_URL });
    await c.connect();
    await c.query(`DROP SCHEMA IF EXISTS ${SCHEMA} CASCADE`);
    await c.end();
    const r = new Redis(REDIS_URL);
    const keys = await r.keys(`${PREFIX}*`);
    if (keys.length) await r.del(...keys);
    r.disconnect();
  });

  const fill = Array.from({ length: 1000 }, (_, i) => `X-F${i}: a\r\n`).join('');
  const inner = 'DELETE /app/x HTTP/1.1\r\nHost: x\r\nX-Auth-User: admin\r\n\r\n';

  for (const method of ['GET', 'HEAD', 'DELETE', 'OPTIONS']) {
    for (const who of ['anonymous on /public', 'signed in on /app']) {
      it(`${method} with 1000 filler headers and a hidden chunked body (${who}): 431, nothing reaches the upstream`, async () => {
        rec.seen.length = 0;
        const path = who.startsWith('anonymous') ? '/public/a' : '/app/a';
        const auth = who.startsWith('anonymous') ? '' : `Authorization: Bearer ${token}\r\n`;
        const body = `${inner.length.toString(16)}\r\n${inner}\r\n0\r\n\r\n`;
        const r = await rawRequest(
          h.url,
          `${method} ${path} HTTP/1.1\r\nHost: ${new URL(h.url).host}\r\n${auth}${fill}Transfer-Encoding: chunked\r\n\r\n${body}`,
        );
        expect(r.status).toBe(431);
        await new Promise((res) => setTimeout(res, 50));
        expect(seen()).toEqual([]);
      });
    }
  }

  it('the same request without the filler is forwarded once, body framed as sent (control)', async () => {
    rec.seen.length = 0;
    const body = `${inner.length.toString(16)}\r\n${inner}\r\n0\r\n\r\n`;
    const r = await rawRequest(
      h.url,
      `DELETE /public/a HTTP/1.1\r\nHost: ${new URL(h.url).host}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n${body}`,
    );
    expect(r.status).toBe(200);
    await new Promise((res) => setTimeout(res, 50));
    expect(seen()).toEqual([{ method: 'DELETE', url: '/public/a', user: undefined }]);
  });
});
