import { describe, expect, it } from 'vitest';
import type { Revocation, SessionStore } from '../ports.js';
import { MemoryRevocationList, RevocationSync } from './revocations.js';

/** Just enough of a SessionStore: revocations, and a log of the `since` each query used. */
function fakeSessions(rows: Revocation[]) {
  const queries: number[] = [];
  let gate: Promise<void> | undefined;
  const sessions = {
    async revokedSince(since: Date, now: Date) {
      queries.push(since.getTime());
      if (gate) await gate;
      return rows.filter((r) => r.revokedAt >= since && r.expiresAt > now);
    },
  } as unknown as SessionStore;
  return { sessions, queries, hold: (p: Promise<void> | undefined) => (gate = p) };
}

describe('RevocationSync', () => {
  const t0 = Date.parse('2030-01-01T00:00:00Z');

  it('resync reloads revocations older than the poll look-back', async () => {
    let now = t0;
    const rows: Revocation[] = [];
    const { sessions, queries } = fakeSessions(rows);
    const list = new MemoryRevocationList(() => new Date(now));
    const sync = new RevocationSync(sessions, list, { intervalMs: 60_000, now: () => new Date(now) });
    await sync.poll();
    // Stamped two minutes before the last poll but only now visible (a slow commit, or a
    // replica whose clock lags): older than the one-minute look-back of the next poll.
    rows.push({ sessionId: 'old', revokedAt: new Date(t0 - 120_000), expiresAt: new Date(t0 + 3_600_000) });
    now = t0 + 600_000;
    await sync.poll();
    expect(list.isRevoked('old')).toBe(false);
    await sync.resync();
    expect(list.isRevoked('old')).toBe(true);
    expect(queries).toEqual([0, t0 - 60_000, 0]);
  });

  it('resync waits for a running poll and then runs a full load', async () => {
    const rows: Revocation[] = [{ sessionId: 's1', revokedAt: new Date(t0), expiresAt: new Date(t0 + 3_600_000) }];
    const { sessions, queries, hold } = fakeSessions(rows);
    const list = new MemoryRevocationList(() => new Date(t0));
    const sync = new RevocationSync(sessions, list, { intervalMs: 10, now: () => new Date(t0 + 120_000) });
    await sync.start();
    let release!: () => void;
    hold(new Promise<void>((r) => (release = r)));
    // Let a periodic tick start and block inside the query.
    const started = queries.length;
    while (queries.length === started) await new Promise((r) => setTimeout(r, 5));
    const before = queries.length;
    const resynced = sync.resync();
    await new Promise((r) => setTimeout(r, 30));
    expect(queries.length).toBe(before); // still waiting for the blocked tick
    hold(undefined);
    release();
    await resynced;
    sync.stop();
    expect(queries.at(-1)).toBe(0);
    expect(list.isRevoked('s1')).toBe(true);
  });

  it('resync rejects when the database fails (the caller logs it)', async () => {
    const sessions = {
      revokedSince: async () => {
        throw new Error('db down');
      },
    } as unknown as SessionStore;
    const sync = new RevocationSync(sessions, new MemoryRevocationList(), { intervalMs: 60_000 });
    await expect(sync.resync()).rejects.toThrow('db down');
  });
});
