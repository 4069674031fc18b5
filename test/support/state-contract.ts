import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { StateStore } from '../../src/store/ports.js';

/**
 * What the shared {@link StateStore} contract needs from an implementation under test.
 * One harness is made per test; every store it opens sees the same state (as replicas do).
 */
export interface StateStoreHarness {
  /** Opens a store on the harness's shared state (a new connection for Redis, the same instance in memory). */
  open(): Promise<StateStore>;
  /** Lets `ms` milliseconds pass: moves the fake clock of an in-process store, really waits for Redis. */
  sleep(ms: number): Promise<void>;
  /** Closes what `open` opened and deletes what the test wrote. */
  cleanup(): Promise<void>;
}

/**
 * A TTL short enough to wait out for real against Redis, long enough that two consecutive
 * round trips on a loaded 2-core machine still land inside it.
 */
const SHORT = 400;
/** Waiting this long after setting a SHORT ttl is safely past it. */
const PAST_SHORT = SHORT + 250;
const LONG = 60_000;

/** Fisher–Yates with a fixed seed, so a failing race replays the same order. */
function shuffled<T>(items: T[], seed = 42): T[] {
  const out = [...items];
  let s = seed;
  for (let i = out.length - 1; i > 0; i--) {
    s = (s * 1_103_515_245 + 12_345) % 2 ** 31;
    const j = s % (i + 1);
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

/**
 * Registers the StateStore contract suite. Run it from `<impl>.test.ts` with a harness factory;
 * every implementation must pass the same cases, including the concurrency races.
 */
export function describeStateStoreContract(name: string, makeHarness: () => Promise<StateStoreHarness>): void {
  describe(`StateStore contract: ${name}`, () => {
    let h: StateStoreHarness;
    let store: StateStore;
    /** Several stores on the same state, for the races (several connections with Redis). */
    const replicas = async (n: number): Promise<StateStore[]> => {
      const out = [store];
      for (let i = 1; i < n; i++) out.push(await h.open());
      return out;
    };

    beforeEach(async () => {
      h = await makeHarness();
      store = await h.open();
    });
    afterEach(async () => {
      await h?.cleanup();
    });

    it('answers ping', async () => {
      await expect(store.ping()).resolves.toBeUndefined();
    });

    describe('claimTotpStep', () => {
      it('accepts a greater step, rejects an equal or lower one', async () => {
        expect(await store.claimTotpStep('u1', 100, LONG)).toBe(true);
        expect(await store.claimTotpStep('u1', 100, LONG)).toBe(false);
        expect(await store.claimTotpStep('u1', 99, LONG)).toBe(false);
        expect(await store.claimTotpStep('u1', 0, LONG)).toBe(false);
        expect(await store.claimTotpStep('u1', 101, LONG)).toBe(true);
        expect(await store.claimTotpStep('u1', 100, LONG)).toBe(false);
        expect(await store.claimTotpStep('u1', 101, LONG)).toBe(false);
        expect(await store.claimTotpStep('u1', 200, LONG)).toBe(true);
      });

      it('keeps one step per user', async () => {
        expect(await store.claimTotpStep('alice', 100, LONG)).toBe(true);
        expect(await store.claimTotpStep('bob', 100, LONG)).toBe(true);
        expect(await store.claimTotpStep('bob', 50, LONG)).toBe(false);
        expect(await store.claimTotpStep('carol', 50, LONG)).toBe(true);
        expect(await store.claimTotpStep('alice', 100, LONG)).toBe(false);
        expect(await store.claimTotpStep('alice', 101, LONG)).toBe(true);
      });

      it('forgets the step after its ttl', async () => {
        expect(await store.claimTotpStep('u1', 100, SHORT)).toBe(true);
        expect(await store.claimTotpStep('u1', 100, SHORT)).toBe(false);
        await h.sleep(PAST_SHORT);
        // Forgotten: even a lower step is accepted once, then remembered again.
        expect(await store.claimTotpStep('u1', 99, LONG)).toBe(true);
        expect(await store.claimTotpStep('u1', 99, LONG)).toBe(false);
        expect(await store.claimTotpStep('u1', 100, LONG)).toBe(true);
      });

      it('a rejected claim does not extend the ttl', async () => {
        expect(await store.claimTotpStep('u1', 100, SHORT)).toBe(true);
        expect(await store.claimTotpStep('u1', 100, LONG)).toBe(false);
        expect(await store.claimTotpStep('u1', 90, LONG)).toBe(false);
        await h.sleep(PAST_SHORT);
        expect(await store.claimTotpStep('u1', 100, LONG)).toBe(true);
      });

      it('race: 50 concurrent claims of the same step, from several replicas → exactly one accepted', async () => {
        const stores = await replicas(5);
        const results = await Promise.all(Array.from({ length: 50 }, (_, i) => stores[i % stores.length].claimTotpStep('racer', 777, LONG)));
        expect(results.filter(Boolean)).toHaveLength(1);
        expect(await store.claimTotpStep('racer', 777, LONG)).toBe(false);
        expect(await store.claimTotpStep('racer', 778, LONG)).toBe(true);
      });

      it('race: concurrent claims of steps 1..50 → the greatest wins, no step accepted twice', async () => {
        const stores = await replicas(5);
        const steps = shuffled(Array.from({ length: 50 }, (_, i) => i + 1));
        const results = await Promise.all(steps.map((step, i) => stores[i % stores.length].claimTotpStep('climber', step, LONG)));
        const accepted = steps.filter((_, i) => results[i]);
        expect(new Set(accepted).size).toBe(accepted.length);
        // Whatever order they ran in, the greatest step cannot have been refused.
        expect(accepted).toContain(50);
        expect(await store.claimTotpStep('climber', 50, LONG)).toBe(false);
        expect(await store.claimTotpStep('climber', 51, LONG)).toBe(true);
      });
    });

    describe('increment', () => {
      it('counts from 1 and reports the time left in the window', async () => {
        const a = await store.increment('k', LONG);
        expect(a.count).toBe(1);
        expect(a.resetMs).toBeLessThanOrEqual(LONG);
        expect(a.resetMs).toBeGreaterThan(LONG - 2000);
        const b = await store.increment('k', LONG);
        const c = await store.increment('k', LONG);
        expect([b.count, c.count]).toEqual([2, 3]);
        expect(b.resetMs).toBeLessThanOrEqual(a.resetMs);
        expect(c.resetMs).toBeLessThanOrEqual(b.resetMs);
        expect(c.resetMs).toBeGreaterThan(LONG - 2000);
      });

      it('resetMs decreases as time passes (the window starts at the first increment)', async () => {
        const a = await store.increment('k', LONG);
        await h.sleep(300);
        const b = await store.increment('k', LONG);
        expect(b.count).toBe(2);
        // Timers may fire a millisecond early and clocks tick in whole ms: allow a little slack.
        expect(b.resetMs).toBeLessThanOrEqual(a.resetMs - 280);
        expect(b.resetMs).toBeGreaterThan(a.resetMs - 3000);
      });

      it('a later increment does not extend the window', async () => {
        await store.increment('k', SHORT);
        const b = await store.increment('k', LONG);
        expect(b.count).toBe(2);
        expect(b.resetMs).toBeLessThanOrEqual(SHORT);
      });

      it('starts a new window after the old one ends', async () => {
        await store.increment('k', SHORT);
        await store.increment('k', SHORT);
        const c = await store.increment('k', SHORT);
        expect(c.count).toBe(3);
        await h.sleep(PAST_SHORT);
        const d = await store.increment('k', LONG);
        expect(d.count).toBe(1);
        expect(d.resetMs).toBeGreaterThan(LONG - 2000);
        expect((await store.increment('k', LONG)).count).toBe(2);
      });

      it('keeps counters apart', async () => {
        await store.increment('a', LONG);
        await store.increment('a', LONG);
        expect((await store.increment('b', LONG)).count).toBe(1);
        expect((await store.increment('a', LONG)).count).toBe(3);
      });

      it('race: 50 concurrent increments, from several replicas → counts are exactly 1..50', async () => {
        const stores = await replicas(5);
        const results = await Promise.all(Array.from({ length: 50 }, (_, i) => stores[i % stores.length].increment('hot', LONG)));
        const counts = results.map((r) => r.count).sort((x, y) => x - y);
        expect(counts).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
        for (const r of results) {
          expect(r.resetMs).toBeGreaterThan(0);
          expect(r.resetMs).toBeLessThanOrEqual(LONG);
        }
        expect((await store.increment('hot', LONG)).count).toBe(51);
      });
    });

    describe('recordEvent (sliding window)', () => {
      it('counts the events of the last window only', async () => {
        expect(await store.recordEvent('ev', 600)).toBe(1);
        await h.sleep(350);
        expect(await store.recordEvent('ev', 600)).toBe(2);
        await h.sleep(350);
        // The first event is now older than the window; the second is not.
        expect(await store.recordEvent('ev', 600)).toBe(2);
      });

      it('is cleared by delete', async () => {
        await store.recordEvent('ev2', LONG);
        await store.recordEvent('ev2', LONG);
        await store.delete('ev2');
        expect(await store.recordEvent('ev2', LONG)).toBe(1);
      });

      it('race: 50 concurrent events, from several replicas → counts are exactly 1..50', async () => {
        const stores = await replicas(5);
        const counts = await Promise.all(Array.from({ length: 50 }, (_, i) => stores[i % stores.length].recordEvent('hot-ev', LONG)));
        expect(counts.sort((x, y) => x - y)).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
      });
    });

    describe('setFlagIfAbsent', () => {
      it('sets a missing flag once, and again after it expired', async () => {
        expect(await store.setFlagIfAbsent('once', 300)).toBe(true);
        expect(await store.setFlagIfAbsent('once', 300)).toBe(false);
        expect(await store.flagTtl('once')).toBeGreaterThan(0);
        await h.sleep(400);
        expect(await store.setFlagIfAbsent('once', 300)).toBe(true);
      });

      it('race: 50 concurrent calls, from several replicas → exactly one sets it', async () => {
        const stores = await replicas(5);
        const results = await Promise.all(Array.from({ length: 50 }, (_, i) => stores[i % stores.length].setFlagIfAbsent('lock-race', LONG)));
        expect(results.filter(Boolean)).toHaveLength(1);
      });
    });

    describe('flags', () => {
      it('an unset flag has 0 ms left', async () => {
        expect(await store.flagTtl('nope')).toBe(0);
      });

      it('a set flag reports the ms left', async () => {
        await store.setFlag('f', LONG);
        const left = await store.flagTtl('f');
        expect(left).toBeLessThanOrEqual(LONG);
        expect(left).toBeGreaterThan(LONG - 2000);
        await h.sleep(300);
        const later = await store.flagTtl('f');
        expect(later).toBeLessThanOrEqual(left - 280);
        expect(later).toBeGreaterThan(0);
      });

      it('expires after its ttl', async () => {
        await store.setFlag('f', SHORT);
        const left = await store.flagTtl('f');
        expect(left).toBeGreaterThan(0);
        expect(left).toBeLessThanOrEqual(SHORT);
        await h.sleep(PAST_SHORT);
        expect(await store.flagTtl('f')).toBe(0);
      });

      it('setting it again replaces the ttl', async () => {
        await store.setFlag('f', LONG);
        await store.setFlag('f', SHORT);
        expect(await store.flagTtl('f')).toBeLessThanOrEqual(SHORT);
        await h.sleep(PAST_SHORT);
        expect(await store.flagTtl('f')).toBe(0);
        await store.setFlag('f', LONG);
        expect(await store.flagTtl('f')).toBeGreaterThan(LONG - 2000);
      });

      it('a flag and a counter of the same name are separate', async () => {
        await store.increment('same', LONG);
        expect(await store.flagTtl('same')).toBe(0);
        await store.setFlag('same', LONG);
        expect((await store.increment('same', LONG)).count).toBe(2);
        expect(await store.flagTtl('same')).toBeGreaterThan(LONG - 2000);
      });
    });

    describe('delete', () => {
      it('deletes counters and flags', async () => {
        await store.increment('c', LONG);
        await store.increment('c', LONG);
        await store.setFlag('f', LONG);
        await store.setFlag('c', LONG);
        await store.delete('c', 'f');
        expect(await store.flagTtl('f')).toBe(0);
        expect(await store.flagTtl('c')).toBe(0);
        expect((await store.increment('c', LONG)).count).toBe(1);
      });

      it('leaves other keys alone and accepts missing keys or none', async () => {
        await store.increment('keep', LONG);
        await store.setFlag('keep-flag', LONG);
        await store.delete('missing', 'also-missing');
        await store.delete();
        expect((await store.increment('keep', LONG)).count).toBe(2);
        expect(await store.flagTtl('keep-flag')).toBeGreaterThan(0);
      });

      it('does not forget TOTP steps (unlocking an account must not re-open replays)', async () => {
        expect(await store.claimTotpStep('u1', 100, LONG)).toBe(true);
        await store.delete('u1');
        expect(await store.claimTotpStep('u1', 100, LONG)).toBe(false);
      });
    });
  });
}
