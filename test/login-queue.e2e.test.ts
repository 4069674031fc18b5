/**
 * End-to-end: argon2 work is bounded (SPEC §12, issue 9 part 4). With one argon2 slot and two
 * waiting places, a flood of concurrent sign-ins gets some 503 `busy` problems with
 * `Retry-After` while the others complete; a refused sign-in is no verdict (nothing counted
 * toward the lockout, its username's turn released), and the refusals are counted in
 * `portcullis_password_hash_queue_rejections_total`.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GOOD_PASSWORD, addUser, metricsText, sample, startHarness, type Harness } from './support/helpers.js';

const SLOTS = 1;
const QUEUE = 2;
const FLOOD = 24;
const WRONG = 'definitely not the password 11';

let h: Harness;
const users = Array.from({ length: FLOOD }, (_, i) => `flood${String(i).padStart(2, '0')}`);

beforeAll(async () => {
  h = await startHarness({
    extraYaml: `
auth:
  argon2: { max_concurrent: ${SLOTS}, max_queue: ${QUEUE} }
  login_rate_limit: { requests: 100000, per: 1m }
  lockout: { max_failures: 1, window: 15m, duration: 15m }
`,
  });
  for (const u of users) await addUser(h, u);
});

afterAll(async () => {
  await h?.close();
});

async function loginReq(username: string, password: string) {
  const res = await fetch(`${h.url}/api/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ username, password }),
  });
  return { status: res.status, headers: res.headers, body: (await res.json()) as Record<string, unknown> };
}

describe('a full argon2 queue', () => {
  it('exports the rejection counter and the queue depth at 0 from the start', async () => {
    const text = await metricsText(h);
    expect(text).toMatch(/^portcullis_password_hash_queue_rejections_total 0$/m);
    expect(text).toMatch(/^portcullis_password_hash_queue_depth 0$/m);
    expect(h.app.hasher.queue.concurrency).toBe(SLOTS);
    expect(h.app.hasher.queue.maxQueue).toBe(QUEUE);
  });

  it('answers 503 busy (problem+json, Retry-After) past the queue; the rest complete; a refusal is no guess', async () => {
    // Wrong passwords, one per username, lockout after ONE failure: a username whose attempt was
    // judged is locked; one whose attempt was refused by the queue must not be.
    const flood = await Promise.all(users.map((u) => loginReq(u, WRONG)));
    const judged = users.filter((_, i) => flood[i].status === 401);
    const refused = users.filter((_, i) => flood[i].status === 503);
    expect(judged.length + refused.length, JSON.stringify(flood.map((r) => r.status))).toBe(FLOOD);
    // At least the running one and the waiting ones are judged; a flood of 24 overflows 1 + 2.
    expect(judged.length).toBeGreaterThanOrEqual(SLOTS + QUEUE);
    expect(refused.length).toBeGreaterThan(0);
    for (const [i, r] of flood.entries()) {
      if (r.status !== 503) continue;
      expect(r.headers.get('content-type'), users[i]).toBe('application/problem+json');
      expect(r.body).toMatchObject({ status: 503, code: 'busy' });
      expect(Number(r.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
      expect(r.headers.get('cache-control')).toBe('no-store');
    }

    const text = await metricsText(h);
    expect(sample(text, 'portcullis_password_hash_queue_rejections_total')).toBe(refused.length);
    expect(sample(text, 'portcullis_password_hash_queue_depth')).toBe(0);
    expect(sample(text, 'portcullis_login_attempts_total', { result: 'invalid_credentials' })).toBe(judged.length);
    expect(sample(text, 'portcullis_lockouts_total')).toBe(judged.length);

    // Refused ones: not locked, turn released — the right password signs in at once (one at a
    // time, so the queue has room).
    for (const u of refused) {
      const r = await loginReq(u, GOOD_PASSWORD);
      expect(r.status, `${u}: ${JSON.stringify(r.body)}`).toBe(200);
      expect(typeof r.body.access_token).toBe('string');
    }
    // Judged ones: their one failure locked them.
    for (const u of judged.slice(0, 3)) expect((await loginReq(u, GOOD_PASSWORD)).status).toBe(423);
  });

  it('with right passwords, the accepted sign-ins of a flood succeed and the others may retry', async () => {
    const fresh = Array.from({ length: 12 }, (_, i) => `fresh${i}`);
    for (const u of fresh) await addUser(h, u);
    const flood = await Promise.all(fresh.map((u) => loginReq(u, GOOD_PASSWORD)));
    const statuses = flood.map((r) => r.status);
    expect(
      statuses.every((s) => s === 200 || s === 503),
      JSON.stringify(statuses),
    ).toBe(true);
    expect(statuses.filter((s) => s === 200).length).toBeGreaterThanOrEqual(SLOTS + QUEUE);
    expect(statuses).toContain(503);
    // Once the flood is over, a retry gets everyone in.
    for (const [i, r] of flood.entries()) {
      if (r.status === 503) expect((await loginReq(fresh[i], GOOD_PASSWORD)).status).toBe(200);
    }
  });

  it('an unknown username takes its turn in the queue like a known one (dummy verify, same 503)', async () => {
    const names = Array.from({ length: 16 }, (_, i) => `nobody${i}`);
    const flood = await Promise.all(names.map((u) => loginReq(u, WRONG)));
    const statuses = flood.map((r) => r.status);
    expect(
      statuses.every((s) => s === 401 || s === 503),
      JSON.stringify(statuses),
    ).toBe(true);
    expect(statuses).toContain(503);
    // The refused unknown names are not locked either.
    const refused = names.filter((_, i) => statuses[i] === 503);
    expect((await loginReq(refused[0], WRONG)).status).toBe(401);
  });
});
