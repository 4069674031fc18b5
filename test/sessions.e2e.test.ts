/**
 * End-to-end: refresh tokens, sessions and revocation (SPEC §4–§6, §9) over real HTTP against
 * a real gateway and echo upstream, plus `portcullis` CLI commands acting on the same database.
 *
 * Time-dependent behaviour (absolute session lifetime, refresh-token expiry) runs on harnesses
 * with an injected clock that the tests move; nothing sleeps through a TTL. Revocations made by
 * the CLI (its `main()` run in this process, with its own database connection and nothing
 * shared with the gateway, as a separate process would) reach the gateway through its
 * revocation poll (100 ms in the harness), so those tests poll with a deadline.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeJwt } from 'jose';
import { GOOD_PASSWORD, addUser, metricsText, runCliInProcess, sample, startHarness, type Harness } from './support/helpers.js';

/** Generous abuse limits: this file logs in a lot and tests sessions, not abuse protection. */
const authYaml = (extra = '') => `
auth:
  login_rate_limit: { requests: 100000, per: 1m }
  lockout: { max_failures: 100000, window: 15m, duration: 15m }
${extra}`;

const NEW_PASSWORD = 'quiet meadow lantern 97 orbit';
const MIN = 60_000;
const DAY = 86_400_000;

interface Pair {
  access_token: string;
  refresh_token: string;
  token_type: string;
  expires_in: number;
}

interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  code: string;
  errors?: { field: string; message: string }[];
  reasons?: string[];
}

interface Reply {
  status: number;
  headers: Headers;
  text: string;
  json: () => any;
}

interface SessionView {
  id: string;
  current: boolean;
  amr: string[];
  created_at: string;
  last_seen_at: string;
  expires_at: string;
  user_agent: string | null;
  ip: string | null;
}

async function send(
  h: Harness,
  method: string,
  path: string,
  opts: { token?: string; body?: unknown; rawBody?: string; headers?: Record<string, string> } = {},
): Promise<Reply> {
  const headers: Record<string, string> = { ...(opts.headers ?? {}) };
  if (opts.token !== undefined) headers.authorization = `Bearer ${opts.token}`;
  let body: string | undefined;
  if (opts.rawBody !== undefined) body = opts.rawBody;
  else if (opts.body !== undefined) body = JSON.stringify(opts.body);
  if (body !== undefined && !headers['content-type']) headers['content-type'] = 'application/json';
  const res = await fetch(`${h.url}${path}`, { method, headers, body });
  const text = await res.text();
  return { status: res.status, headers: res.headers, text, json: () => JSON.parse(text) };
}

function expectProblem(r: Reply, status: number, code: string): Problem {
  expect({ status: r.status, body: r.text }).toMatchObject({ status });
  expect(r.headers.get('content-type')).toBe('application/problem+json');
  const p = JSON.parse(r.text) as Problem;
  expect(p.status).toBe(status);
  expect(p.code).toBe(code);
  return p;
}

async function loginPair(h: Harness, username: string, password = GOOD_PASSWORD, userAgent = 'sessions-e2e'): Promise<Pair> {
  const r = await send(h, 'POST', '/api/auth/login', { body: { username, password }, headers: { 'user-agent': userAgent } });
  if (r.status !== 200) throw new Error(`login of ${username} failed: ${r.status} ${r.text}`);
  const pair = r.json() as Pair;
  expect(typeof pair.refresh_token).toBe('string');
  return pair;
}

const refresh = (h: Harness, token: unknown) => send(h, 'POST', '/api/auth/refresh', { body: { refresh_token: token } });
const appGet = (h: Harness, token: string) => send(h, 'GET', '/app/x', { token });
const me = (h: Harness, token: string) => send(h, 'GET', '/api/auth/me', { token });
const sessionsOf = async (h: Harness, token: string): Promise<SessionView[]> => {
  const r = await send(h, 'GET', '/api/auth/sessions', { token });
  expect(r.status).toBe(200);
  return (r.json() as { sessions: SessionView[] }).sessions;
};
const sidOf = (token: string) => decodeJwt(token).sid as string;
const sha256b64u = (s: string) => createHash('sha256').update(s).digest('base64url');

/** The access token is refused like a bad bearer token: 401 invalid_token with the challenge. */
async function expectAccessRefused(h: Harness, token: string): Promise<void> {
  const r = await appGet(h, token);
  expectProblem(r, 401, 'invalid_token');
  expect(r.headers.get('www-authenticate')).toBe('Bearer realm="portcullis", error="invalid_token"');
  expectProblem(await me(h, token), 401, 'invalid_token');
}

async function expectAccessWorks(h: Harness, token: string, username: string): Promise<void> {
  const r = await appGet(h, token);
  expect({ status: r.status, body: r.text }).toMatchObject({ status: 200 });
  expect(r.json().headers['x-auth-user']).toBe(username);
}

async function expectRefreshRefused(h: Harness, token: string): Promise<void> {
  expectProblem(await refresh(h, token), 401, 'invalid_refresh_token');
}

async function refreshCounts(h: Harness): Promise<{ success: number; invalid: number; reuse_detected: number }> {
  const text = await metricsText(h);
  return {
    success: sample(text, 'portcullis_token_refresh_total', { result: 'success' }),
    invalid: sample(text, 'portcullis_token_refresh_total', { result: 'invalid' }),
    reuse_detected: sample(text, 'portcullis_token_refresh_total', { result: 'reuse_detected' }),
  };
}

async function refreshDelta(h: Harness, before: Awaited<ReturnType<typeof refreshCounts>>) {
  const after = await refreshCounts(h);
  return { success: after.success - before.success, invalid: after.invalid - before.invalid, reuse_detected: after.reuse_detected - before.reuse_detected };
}

/** Polls `check` until it returns true or the deadline passes; returns the elapsed ms. */
async function eventually(check: () => Promise<boolean>, timeoutMs: number, what: string): Promise<number> {
  const t0 = performance.now();
  for (;;) {
    if (await check()) return performance.now() - t0;
    if (performance.now() - t0 > timeoutMs) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** Runs a `portcullis` command (in process; cli.e2e starts the real binary). */
const cli = (args: string[], stdin = '') => runCliInProcess(args, { stdin });

/** How long a revocation made by another process may take to reach the running gateway. */
const PROPAGATION_MS = 2_000;

// ---------------------------------------------------------------------------------------------
// Real clock: rotation, reuse detection, storage, sessions, password change, token kinds, CLI.
// ---------------------------------------------------------------------------------------------
describe('with the real clock', () => {
  let h: Harness;
  const ids: Record<string, string> = {};

  beforeAll(async () => {
    h = await startHarness({ extraYaml: authYaml() });
    for (const [name, roles] of [
      ['rita', []],
      ['ruth', []],
      ['hana', []],
      ['cora', []],
      ['sam', []],
      ['other', []],
      ['lou', []],
      ['pam', []],
      ['kim', []],
      ['meg', []],
      ['cleo', []],
      ['rolf', ['admin']],
      ['pia', []],
    ] as [string, string[]][]) {
      ids[name] = (await addUser(h, name, roles)).id;
    }
  });

  afterAll(async () => {
    await h?.close();
  });

  describe('POST /api/auth/refresh — rotation', () => {
    it('login returns a refresh token; refresh returns a new, different pair that works', async () => {
      const first = await loginPair(h, 'rita');
      expect(first.refresh_token).toMatch(/^prt_[A-Za-z0-9_-]{43}$/);
      const before = await refreshCounts(h);

      const r = await refresh(h, first.refresh_token);
      expect(r.status).toBe(200);
      expect(r.headers.get('content-type')).toMatch(/^application\/json\b/);
      expect(r.headers.get('cache-control')).toBe('no-store');
      const next = r.json() as Pair;
      expect(Object.keys(next).sort()).toEqual(['access_token', 'expires_in', 'refresh_token', 'token_type']);
      expect(next.token_type).toBe('Bearer');
      expect(next.expires_in).toBe(900);
      expect(next.access_token).not.toBe(first.access_token);
      expect(next.refresh_token).not.toBe(first.refresh_token);
      expect(next.refresh_token).toMatch(/^prt_[A-Za-z0-9_-]{43}$/);

      // Same session, same user, fresh token.
      const a = decodeJwt(first.access_token);
      const b = decodeJwt(next.access_token);
      expect(b.sid).toBe(a.sid);
      expect(b.sub).toBe(ids.rita);
      expect(b.jti).not.toBe(a.jti);

      await expectAccessWorks(h, next.access_token, 'rita');
      const meBody = (await me(h, next.access_token)).json();
      expect(meBody).toMatchObject({ id: ids.rita, username: 'rita', session_id: a.sid });

      // The new refresh token rotates again.
      const third = await refresh(h, next.refresh_token);
      expect(third.status).toBe(200);
      await expectAccessWorks(h, (third.json() as Pair).access_token, 'rita');

      expect(await refreshDelta(h, before)).toEqual({ success: 2, invalid: 0, reuse_detected: 0 });
    });

    it('a spent refresh token presented again: 401, the whole session revoked, logged and counted; other sessions unaffected', async () => {
      const s1 = await loginPair(h, 'ruth');
      const s2 = await loginPair(h, 'ruth'); // another session of the same user
      const sid = sidOf(s1.access_token);
      expect(sidOf(s2.access_token)).not.toBe(sid);

      const r1 = await refresh(h, s1.refresh_token);
      expect(r1.status).toBe(200);
      const newest = r1.json() as Pair;
      await expectAccessWorks(h, newest.access_token, 'ruth');

      const before = await refreshCounts(h);
      const logFrom = h.logs.length;
      const reuse = await refresh(h, s1.refresh_token);
      expectProblem(reuse, 401, 'invalid_refresh_token');
      expect(reuse.text).not.toContain(s1.refresh_token);
      expect((await refreshDelta(h, before)).reuse_detected).toBe(1);

      const events = h.logs.slice(logFrom).filter((l) => l.event === 'refresh_reuse_detected');
      expect(events).toHaveLength(1);
      expect(events[0]).toMatchObject({ event: 'refresh_reuse_detected', session_id: sid, user_id: ids.ruth });
      expect(h.logs.slice(logFrom).some((l) => l.event === 'session_revoked' && l.session_id === sid && l.reason === 'refresh_reuse')).toBe(true);
      // Tokens never show up in logs.
      expect(JSON.stringify(h.logs.slice(logFrom))).not.toContain(s1.refresh_token);

      // Every token of that session is refused from now on, on the very next request.
      await expectAccessRefused(h, newest.access_token);
      await expectAccessRefused(h, s1.access_token);
      await expectRefreshRefused(h, newest.refresh_token);
      await expectAccessRefused(h, newest.access_token); // and stays refused

      // The other session of the same user is untouched.
      await expectAccessWorks(h, s2.access_token, 'ruth');
      const s2b = await refresh(h, s2.refresh_token);
      expect(s2b.status).toBe(200);
      await expectAccessWorks(h, (s2b.json() as Pair).access_token, 'ruth');
      const listed = await sessionsOf(h, s2.access_token);
      expect(listed.map((s) => s.id)).toEqual([sidOf(s2.access_token)]);
    });

    it('refresh tokens are stored only as SHA-256 (base64url) hashes', async () => {
      const first = await loginPair(h, 'hana');
      const second = (await refresh(h, first.refresh_token)).json() as Pair;
      const kysely = (h.app.db as any).kysely;
      expect(kysely).toBeDefined();

      const rows = (await kysely.selectFrom('refresh_tokens').selectAll().execute()) as { hash: string; session_id: string; used_at: unknown }[];
      const dump = JSON.stringify({
        refresh_tokens: rows,
        sessions: await kysely.selectFrom('sessions').selectAll().execute(),
        users: await kysely.selectFrom('users').selectAll().execute(),
      });
      const sid = sidOf(first.access_token);
      for (const token of [first.refresh_token, second.refresh_token]) {
        expect(dump).not.toContain(token);
        expect(dump).not.toContain(token.slice(4)); // not even without its prefix
        const row = rows.find((r) => r.hash === sha256b64u(token));
        expect(row, 'a row keyed by the token hash').toBeDefined();
        expect(row!.session_id).toBe(sid);
      }
      // The spent one is marked used, the live one is not.
      expect(rows.find((r) => r.hash === sha256b64u(first.refresh_token))!.used_at).not.toBeNull();
      expect(rows.find((r) => r.hash === sha256b64u(second.refresh_token))!.used_at).toBeNull();

      // And not in the database files either (main file + WAL), while the hash is.
      const files = ['test.db', 'test.db-wal'].map((f) => join(h.dir, f)).filter((f) => existsSync(f));
      const bytes = Buffer.concat(files.map((f) => readFileSync(f)));
      expect(bytes.includes(Buffer.from(sha256b64u(second.refresh_token)))).toBe(true);
      expect(bytes.includes(Buffer.from(first.refresh_token))).toBe(false);
      expect(bytes.includes(Buffer.from(second.refresh_token))).toBe(false);
    });

    it('20 concurrent refreshes with the same token: exactly one 200, and the session ends revoked', async () => {
      const pair = await loginPair(h, 'cora');
      const bystander = await loginPair(h, 'cora');
      const sid = sidOf(pair.access_token);
      const before = await refreshCounts(h);

      const replies = await Promise.all(Array.from({ length: 20 }, () => refresh(h, pair.refresh_token)));
      const statuses = replies.map((r) => r.status);
      expect(statuses.filter((s) => s === 200)).toHaveLength(1);
      expect(statuses.filter((s) => s === 401)).toHaveLength(19);
      for (const r of replies.filter((x) => x.status === 401)) expect(r.json().code).toBe('invalid_refresh_token');

      const winner = replies.find((r) => r.status === 200)!.json() as Pair;
      expect(sidOf(winner.access_token)).toBe(sid);
      // Reuse was detected: the winner's brand-new pair is dead too.
      await expectAccessRefused(h, winner.access_token);
      await expectRefreshRefused(h, winner.refresh_token);
      await expectAccessRefused(h, pair.access_token);
      const listed = await sessionsOf(h, bystander.access_token);
      expect(listed.map((s) => s.id)).toEqual([sidOf(bystander.access_token)]);
      await expectAccessWorks(h, bystander.access_token, 'cora');

      const d = await refreshDelta(h, before);
      expect(d.success).toBe(1);
      expect(d.reuse_detected).toBeGreaterThanOrEqual(1);
      // Losers are reuse (the token was spent) or invalid (the session's tokens were already
      // deleted by an earlier detection); the winner's refresh above adds one invalid.
      expect(d.reuse_detected + d.invalid).toBe(19 + 1);
      expect(h.logs.some((l) => l.event === 'refresh_reuse_detected' && l.session_id === sid)).toBe(true);
    });
  });

  describe('sessions and revocation', () => {
    it("GET /sessions lists only the caller's active sessions, with current: true on its own", async () => {
      const a = await loginPair(h, 'sam', GOOD_PASSWORD, 'agent-a/1.0');
      const b = await loginPair(h, 'sam', GOOD_PASSWORD, 'agent-b/2.0');
      const foreign = await loginPair(h, 'other');

      const fromA = await sessionsOf(h, a.access_token);
      expect(fromA).toHaveLength(2);
      // Newest first.
      expect(fromA.map((s) => s.id)).toEqual([sidOf(b.access_token), sidOf(a.access_token)]);
      expect(fromA.filter((s) => s.current).map((s) => s.id)).toEqual([sidOf(a.access_token)]);
      const viewA = fromA.find((s) => s.id === sidOf(a.access_token))!;
      const viewB = fromA.find((s) => s.id === sidOf(b.access_token))!;
      expect(viewA.user_agent).toBe('agent-a/1.0');
      expect(viewB.user_agent).toBe('agent-b/2.0');
      expect(viewA.amr).toEqual(['pwd']);
      expect(typeof viewA.ip).toBe('string');
      expect(viewA.ip).toMatch(/127\.0\.0\.1|::1/);
      const created = Date.parse(viewA.created_at);
      expect(Math.abs(created - Date.now())).toBeLessThan(60_000);
      // Default absolute lifetime: 30 days from creation.
      expect(Date.parse(viewA.expires_at) - created).toBe(30 * DAY);
      expect(Date.parse(viewA.last_seen_at)).toBeGreaterThanOrEqual(created);
      expect(JSON.stringify(fromA)).not.toContain(sidOf(foreign.access_token));

      const fromB = await sessionsOf(h, b.access_token);
      expect(fromB.filter((s) => s.current).map((s) => s.id)).toEqual([sidOf(b.access_token)]);
      const fromForeign = await sessionsOf(h, foreign.access_token);
      expect(fromForeign.map((s) => [s.id, s.current])).toEqual([[sidOf(foreign.access_token), true]]);
    });

    it('DELETE /sessions/{id} of another own session: 204, its tokens refused on the very next request', async () => {
      const mine = await loginPair(h, 'lou');
      const victim = await loginPair(h, 'lou');
      await expectAccessWorks(h, victim.access_token, 'lou'); // verified (and cached) before

      const del = await send(h, 'DELETE', `/api/auth/sessions/${encodeURIComponent(sidOf(victim.access_token))}`, { token: mine.access_token });
      expect(del.status).toBe(204);
      expect(del.text).toBe('');

      await expectAccessRefused(h, victim.access_token);
      await expectRefreshRefused(h, victim.refresh_token);
      await expectAccessWorks(h, mine.access_token, 'lou');
      expect((await sessionsOf(h, mine.access_token)).map((s) => s.id)).toEqual([sidOf(mine.access_token)]);
      expect(h.logs.some((l) => l.event === 'session_revoked' && l.session_id === sidOf(victim.access_token) && l.reason === 'revoked_by_user')).toBe(true);

      // Deleting it again: it is no longer an active session.
      const again = await send(h, 'DELETE', `/api/auth/sessions/${encodeURIComponent(sidOf(victim.access_token))}`, { token: mine.access_token });
      expectProblem(again, 404, 'session_not_found');
    });

    it("DELETE /sessions/{id} of another user's session (or an unknown id): 404, and nothing is revoked", async () => {
      const mine = await loginPair(h, 'lou');
      const theirs = await loginPair(h, 'other');
      const r = await send(h, 'DELETE', `/api/auth/sessions/${encodeURIComponent(sidOf(theirs.access_token))}`, { token: mine.access_token });
      const p = expectProblem(r, 404, 'session_not_found');
      const unknown = await send(h, 'DELETE', '/api/auth/sessions/no-such-session-id', { token: mine.access_token });
      expect(unknown.text).toBe(r.text); // indistinguishable from "exists but not yours"
      expect(p.detail).not.toContain('other');

      await expectAccessWorks(h, theirs.access_token, 'other');
      const rt = await refresh(h, theirs.refresh_token);
      expect(rt.status).toBe(200);

      // Without a token: 401, not 404.
      expectProblem(await send(h, 'DELETE', `/api/auth/sessions/${encodeURIComponent(sidOf(theirs.access_token))}`), 401, 'unauthenticated');
    });

    it('POST /logout: 204, then the access token and the refresh token are refused', async () => {
      const keep = await loginPair(h, 'kim');
      const pair = await loginPair(h, 'kim');
      await expectAccessWorks(h, pair.access_token, 'kim');
      const out = await send(h, 'POST', '/api/auth/logout', { token: pair.access_token });
      expect(out.status).toBe(204);
      expect(out.text).toBe('');

      await expectAccessRefused(h, pair.access_token);
      await expectRefreshRefused(h, pair.refresh_token);
      // Logging out again with the dead token: 401.
      expectProblem(await send(h, 'POST', '/api/auth/logout', { token: pair.access_token }), 401, 'invalid_token');
      // Only that session ended.
      await expectAccessWorks(h, keep.access_token, 'kim');
      expect((await sessionsOf(h, keep.access_token)).map((s) => s.id)).toEqual([sidOf(keep.access_token)]);
    });
  });

  describe('POST /api/auth/password', () => {
    it('wrong current password: 403 wrong_password; weak new: 422 weak_password with reasons; bad fields: 422', async () => {
      const pair = await loginPair(h, 'meg');
      const other = await loginPair(h, 'meg');

      const wrong = await send(h, 'POST', '/api/auth/password', {
        token: pair.access_token,
        body: { current_password: 'not the password at all 1', new_password: NEW_PASSWORD },
      });
      expectProblem(wrong, 403, 'wrong_password');

      const weak = await send(h, 'POST', '/api/auth/password', { token: pair.access_token, body: { current_password: GOOD_PASSWORD, new_password: 'short1' } });
      const p = expectProblem(weak, 422, 'weak_password');
      expect(Array.isArray(p.reasons)).toBe(true);
      expect(p.reasons).toContain('Password must be at least 12 characters long.');

      const withName = await send(h, 'POST', '/api/auth/password', {
        token: pair.access_token,
        body: { current_password: GOOD_PASSWORD, new_password: 'meg-unusual-violet-harbor-42' },
      });
      expect(expectProblem(withName, 422, 'weak_password').reasons).toContain('Password must not contain the username.');

      const missing = await send(h, 'POST', '/api/auth/password', { token: pair.access_token, body: { current_password: GOOD_PASSWORD } });
      expect(expectProblem(missing, 422, 'invalid_input').errors).toEqual([{ field: 'new_password', message: 'required' }]);
      const typed = await send(h, 'POST', '/api/auth/password', { token: pair.access_token, body: { current_password: 42, new_password: NEW_PASSWORD } });
      expect(expectProblem(typed, 422, 'invalid_input').errors).toEqual([{ field: 'current_password', message: 'must be a string' }]);
      const anon = await send(h, 'POST', '/api/auth/password', { body: { current_password: GOOD_PASSWORD, new_password: NEW_PASSWORD } });
      expectProblem(anon, 401, 'unauthenticated');

      // None of those changed anything.
      await expectAccessWorks(h, other.access_token, 'meg');
      await loginPair(h, 'meg', GOOD_PASSWORD);
    });

    it('a change ends every other session at once, keeps the current one, and retires the old password', async () => {
      const current = await loginPair(h, 'pam');
      const other1 = await loginPair(h, 'pam');
      const other2 = await loginPair(h, 'pam');
      await expectAccessWorks(h, other1.access_token, 'pam');

      const r = await send(h, 'POST', '/api/auth/password', {
        token: current.access_token,
        body: { current_password: GOOD_PASSWORD, new_password: NEW_PASSWORD },
      });
      expect({ status: r.status, body: r.text }).toEqual({ status: 204, body: '' });

      for (const o of [other1, other2]) {
        await expectAccessRefused(h, o.access_token);
        await expectRefreshRefused(h, o.refresh_token);
      }
      await expectAccessWorks(h, current.access_token, 'pam');
      expect((await me(h, current.access_token)).status).toBe(200);
      expect((await sessionsOf(h, current.access_token)).map((s) => [s.id, s.current])).toEqual([[sidOf(current.access_token), true]]);
      // The current session still refreshes.
      const rotated = await refresh(h, current.refresh_token);
      expect(rotated.status).toBe(200);
      await expectAccessWorks(h, (rotated.json() as Pair).access_token, 'pam');

      const old = await send(h, 'POST', '/api/auth/login', { body: { username: 'pam', password: GOOD_PASSWORD } });
      expectProblem(old, 401, 'invalid_credentials');
      const fresh = await loginPair(h, 'pam', NEW_PASSWORD);
      await expectAccessWorks(h, fresh.access_token, 'pam');
      expect(JSON.stringify(h.logs)).not.toContain(NEW_PASSWORD);
    });
  });

  describe('token kinds never cross', () => {
    it('a refresh token as a bearer token: 401 on a proxied route and on /me', async () => {
      const pair = await loginPair(h, 'kim');
      await expectAccessRefused(h, pair.refresh_token);
      // ...and presenting it there did not spend it.
      expect((await refresh(h, pair.refresh_token)).status).toBe(200);
    });

    it('an access token sent to /refresh: 401 invalid_refresh_token (and the session is not harmed)', async () => {
      const pair = await loginPair(h, 'kim');
      const before = await refreshCounts(h);
      await expectRefreshRefused(h, pair.access_token);
      expect(await refreshDelta(h, before)).toEqual({ success: 0, invalid: 1, reuse_detected: 0 });
      await expectAccessWorks(h, pair.access_token, 'kim');
      expect((await refresh(h, pair.refresh_token)).status).toBe(200);
    });

    it('garbage, empty and unknown refresh tokens: 401 invalid_refresh_token', async () => {
      for (const t of ['garbage', '', 'prt_', `prt_${'A'.repeat(43)}`, `prt_${'x'.repeat(300)}`]) {
        await expectRefreshRefused(h, t);
      }
    });

    it('a missing refresh_token (and no cookie): 422 invalid_input naming the field; malformed JSON: 400', async () => {
      const missing = await send(h, 'POST', '/api/auth/refresh', { body: {} });
      expect(expectProblem(missing, 422, 'invalid_input').errors).toEqual([{ field: 'refresh_token', message: 'required' }]);
      const noBody = await send(h, 'POST', '/api/auth/refresh');
      expect(expectProblem(noBody, 422, 'invalid_input').errors).toEqual([{ field: 'refresh_token', message: 'required' }]);
      expectProblem(await send(h, 'POST', '/api/auth/refresh', { rawBody: '{"refresh_token":' }), 400, 'malformed_json');
    });

    // SPEC §4: "wrong field types: 422 listing the fields" (as /login and /password do).
    it('a refresh_token of the wrong type: 422 invalid_input naming the field', async () => {
      for (const v of [12345, ['prt_x'], { token: 'prt_x' }, true, null]) {
        const r = await refresh(h, v);
        const p = expectProblem(r, 422, 'invalid_input');
        expect(p.errors?.map((e) => e.field)).toEqual(['refresh_token']);
      }
    });
  });

  describe('metrics', () => {
    it('portcullis_token_refresh_total counts success, invalid and reuse_detected exactly', async () => {
      const pair = await loginPair(h, 'kim');
      const before = await refreshCounts(h);
      expect((await refresh(h, pair.refresh_token)).status).toBe(200);
      expect(await refreshDelta(h, before)).toEqual({ success: 1, invalid: 0, reuse_detected: 0 });
      await expectRefreshRefused(h, 'prt_not-a-real-token');
      expect(await refreshDelta(h, before)).toEqual({ success: 1, invalid: 1, reuse_detected: 0 });
      await expectRefreshRefused(h, pair.refresh_token);
      expect(await refreshDelta(h, before)).toEqual({ success: 1, invalid: 1, reuse_detected: 1 });
      const text = await metricsText(h);
      expect(text).toContain('# TYPE portcullis_token_refresh_total counter');
    });
  });

  describe('the CLI revokes sessions of the running gateway (same database)', () => {
    const cfg = () => join(h.dir, 'gateway.yaml');

    it("the harness config file points the CLI at the gateway's SQLite database", () => {
      const text = readFileSync(cfg(), 'utf8');
      expect(text).toContain(`sqlite:${join(h.dir, 'test.db')}`);
    });

    it('user disable: the access tokens are refused within ~1 s, refresh and login fail', async () => {
      const s1 = await loginPair(h, 'cleo');
      const s2 = await loginPair(h, 'cleo');
      await expectAccessWorks(h, s1.access_token, 'cleo');
      await expectAccessWorks(h, s2.access_token, 'cleo');

      const run = await cli(['user', 'disable', 'cleo', '--config', cfg()]);
      expect({ code: run.code, stderr: run.stderr }).toEqual({ code: 0, stderr: '' });
      expect(run.stdout).toBe('cleo disabled; 2 session(s) revoked\n');

      const ms = await eventually(async () => (await appGet(h, s1.access_token)).status === 401, PROPAGATION_MS, "disabled user's token refused");
      expect(ms).toBeLessThan(PROPAGATION_MS);
      await expectAccessRefused(h, s1.access_token);
      await expectAccessRefused(h, s2.access_token);
      await expectRefreshRefused(h, s1.refresh_token);
      await expectRefreshRefused(h, s2.refresh_token);
      expectProblem(await send(h, 'POST', '/api/auth/login', { body: { username: 'cleo', password: GOOD_PASSWORD } }), 401, 'invalid_credentials');
    });

    it('user set-roles: the old token is refused within ~1 s; a fresh login carries the new roles', async () => {
      const old = await loginPair(h, 'rolf');
      const before = await send(h, 'GET', '/admin/x', { token: old.access_token });
      expect(before.status).toBe(200);
      expect(before.json().headers['x-auth-roles']).toBe('admin');

      const run = await cli(['user', 'set-roles', 'rolf', 'viewer', '--config', cfg()]);
      expect({ code: run.code, stderr: run.stderr }).toEqual({ code: 0, stderr: '' });
      expect(run.stdout).toBe('roles of rolf: viewer; 1 session(s) revoked\n');

      await eventually(async () => (await appGet(h, old.access_token)).status === 401, PROPAGATION_MS, 'token with the old roles refused');
      await expectAccessRefused(h, old.access_token);
      expectProblem(await send(h, 'GET', '/admin/x', { token: old.access_token }), 401, 'invalid_token');
      await expectRefreshRefused(h, old.refresh_token);

      const fresh = await loginPair(h, 'rolf');
      expect(decodeJwt(fresh.access_token).roles).toEqual(['viewer']);
      const echo = await appGet(h, fresh.access_token);
      expect(echo.status).toBe(200);
      expect(echo.json().headers['x-auth-roles']).toBe('viewer');
      expect((await me(h, fresh.access_token)).json().roles).toEqual(['viewer']);
      expectProblem(await send(h, 'GET', '/admin/x', { token: fresh.access_token }), 403, 'forbidden');
    });

    it('user passwd: existing sessions are refused within ~1 s; only the new password logs in', async () => {
      const old = await loginPair(h, 'pia');
      await expectAccessWorks(h, old.access_token, 'pia');
      const run = await cli(['user', 'passwd', 'pia', '--password-stdin', '--config', cfg()], `${NEW_PASSWORD}\n`);
      expect({ code: run.code, stderr: run.stderr }).toEqual({ code: 0, stderr: '' });
      expect(run.stdout).toBe('password of pia changed; 1 session(s) revoked\n');

      await eventually(async () => (await appGet(h, old.access_token)).status === 401, PROPAGATION_MS, 'token refused after passwd');
      await expectAccessRefused(h, old.access_token);
      await expectRefreshRefused(h, old.refresh_token);
      expectProblem(await send(h, 'POST', '/api/auth/login', { body: { username: 'pia', password: GOOD_PASSWORD } }), 401, 'invalid_credentials');
      await expectAccessWorks(h, (await loginPair(h, 'pia', NEW_PASSWORD)).access_token, 'pia');
    });
  });
});

// ---------------------------------------------------------------------------------------------
// Injected clock: absolute session lifetime.
// ---------------------------------------------------------------------------------------------
describe('absolute session lifetime (injected clock, session_max_age 1h)', () => {
  let h: Harness;
  let offset = 0;

  beforeAll(async () => {
    h = await startHarness({ extraYaml: authYaml('  session_max_age: 1h\n  refresh_ttl: 7d\n'), now: () => new Date(Date.now() + offset) });
    await addUser(h, 'tim');
  });
  afterAll(async () => {
    await h?.close();
  });

  it('refresh works at +30 min, fails at +61 min', async () => {
    const first = await loginPair(h, 'tim');
    const [created] = await sessionsOf(h, first.access_token);
    expect(Date.parse(created.expires_at) - Date.parse(created.created_at)).toBe(60 * MIN);

    offset = 30 * MIN;
    const r = await refresh(h, first.refresh_token);
    expect(r.status).toBe(200);
    const second = r.json() as Pair;
    await expectAccessWorks(h, second.access_token, 'tim');
    const [seen] = await sessionsOf(h, second.access_token);
    // The refresh touched the session at the (moved) clock time; the expiry did not slide.
    expect(Date.parse(seen.last_seen_at) - Date.parse(created.created_at)).toBeGreaterThanOrEqual(30 * MIN - 5_000);
    expect(seen.expires_at).toBe(created.expires_at);

    const before = await refreshCounts(h);
    offset = 61 * MIN;
    await expectRefreshRefused(h, second.refresh_token);
    expect(await refreshDelta(h, before)).toEqual({ success: 0, invalid: 1, reuse_detected: 0 });
    await expectAccessRefused(h, second.access_token); // expired too (15 min)
    // A fresh login starts a new session with a new hour.
    const fresh = await loginPair(h, 'tim');
    await expectAccessWorks(h, fresh.access_token, 'tim');
    expect((await sessionsOf(h, fresh.access_token)).map((s) => s.id)).toEqual([sidOf(fresh.access_token)]);
  });
});

// ---------------------------------------------------------------------------------------------
// Injected clock: 7-day refresh-token expiry (default config).
// ---------------------------------------------------------------------------------------------
describe('refresh-token expiry (injected clock, default refresh_ttl 7d)', () => {
  let h: Harness;
  let offset = 0;

  beforeAll(async () => {
    h = await startHarness({ extraYaml: authYaml(), now: () => new Date(Date.now() + offset) });
    await addUser(h, 'ivy');
  });
  afterAll(async () => {
    await h?.close();
  });

  let expired: Pair;

  it('a refresh token works just before 7 days and is refused 1 s after', async () => {
    const control = await loginPair(h, 'ivy');
    expired = await loginPair(h, 'ivy');

    offset = 7 * DAY - MIN;
    const r = await refresh(h, control.refresh_token);
    expect(r.status).toBe(200);
    const rotated = r.json() as Pair;

    const before = await refreshCounts(h);
    offset = 7 * DAY + 1_000;
    await expectRefreshRefused(h, expired.refresh_token);
    expect(await refreshDelta(h, before)).toEqual({ success: 0, invalid: 1, reuse_detected: 0 });

    // Expiry is per token: the one issued a minute before 7 days is still good.
    const again = await refresh(h, rotated.refresh_token);
    expect(again.status).toBe(200);
    await expectAccessWorks(h, (again.json() as Pair).access_token, 'ivy');
  });

  // An expired token bought nothing: presenting it again is a retry, not theft of a spent token.
  it('presenting an expired refresh token again is still "invalid", not reuse_detected', async () => {
    const before = await refreshCounts(h);
    const logFrom = h.logs.length;
    await expectRefreshRefused(h, expired.refresh_token);
    expect(await refreshDelta(h, before)).toEqual({ success: 0, invalid: 1, reuse_detected: 0 });
    expect(h.logs.slice(logFrom).filter((l) => l.event === 'refresh_reuse_detected')).toEqual([]);
  });
});
