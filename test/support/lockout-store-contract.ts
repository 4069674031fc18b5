import { expect, it } from 'vitest';
import type { LockoutPolicy } from '../../src/store/ports.js';
import { describePort, LONG, SHORT, type StateHarness } from './state-contract.js';

/** A policy that never locks: the failure counts themselves are under test. */
const COUNT_ONLY: LockoutPolicy = { maxFailures: 1_000, windowMs: LONG, durationMs: LONG };
/** Three failures within a minute lock for a minute. */
const THREE: LockoutPolicy = { maxFailures: 3, windowMs: LONG, durationMs: LONG };

/** The {@link LockoutStore} contract: failures in a sliding window, the lock, the per-username turn. */
export function describeLockoutStoreContract(name: string, makeHarness: () => Promise<StateHarness>): void {
  describePort(
    `LockoutStore contract: ${name}`,
    makeHarness,
    (p) => p.lockouts,
    ({ harness, port, replicas }) => {
      const fail = async (username: string, n: number, policy = THREE) => {
        const out: { failures: number; locked: boolean }[] = [];
        for (let i = 0; i < n; i++) out.push(await port().recordFailure(username, policy));
        return out;
      };

      it('counts the failures of the last window only (sliding)', async () => {
        const store = port();
        const policy = { ...COUNT_ONLY, windowMs: 600 };
        expect(await store.recordFailure('ev', policy)).toEqual({ failures: 1, locked: false });
        harness().advance(350);
        expect((await store.recordFailure('ev', policy)).failures).toBe(2);
        harness().advance(250);
        // The first failure is now exactly one window old: out. The second is not.
        expect((await store.recordFailure('ev', policy)).failures).toBe(2);
      });

      it('the failure that reaches the limit locks for the duration, once; the count starts over', async () => {
        expect(await fail('alice', 3)).toEqual([
          { failures: 1, locked: false },
          { failures: 2, locked: false },
          { failures: 3, locked: true },
        ]);
        expect(await port().lockedFor('alice')).toBe(LONG);
        // The log started over: the next failure is the first again, and locks nothing new.
        expect(await fail('alice', 1)).toEqual([{ failures: 1, locked: false }]);
      });

      it('reaching the limit again while locked neither reports nor extends the lock', async () => {
        await fail('alice', 3);
        harness().advance(1000);
        expect((await fail('alice', 3)).map((r) => r.locked)).toEqual([false, false, false]);
        expect(await port().lockedFor('alice')).toBe(LONG - 1000);
      });

      it('an unlocked username has 0 ms left; a lock counts down with the clock and ends after its duration', async () => {
        const store = port();
        expect(await store.lockedFor('nope')).toBe(0);
        await fail('f', 3, { ...THREE, durationMs: SHORT });
        expect(await store.lockedFor('f')).toBe(SHORT);
        harness().advance(300);
        expect(await store.lockedFor('f')).toBe(SHORT - 300);
        harness().advance(SHORT - 300 - 1);
        expect(await store.lockedFor('f')).toBe(1);
        harness().advance(1);
        expect(await store.lockedFor('f')).toBe(0);
        // Ended: the next limit reached locks again.
        expect((await fail('f', 3)).map((r) => r.locked)).toEqual([false, false, true]);
        expect(await store.lockedFor('f')).toBe(LONG);
      });

      it('clearFailures forgets the count and leaves a lock alone', async () => {
        const store = port();
        await fail('bob', 2);
        await store.clearFailures('bob');
        expect((await fail('bob', 2)).map((r) => r.failures)).toEqual([1, 2]);
        await fail('bob', 1);
        await store.clearFailures('bob');
        expect(await store.lockedFor('bob')).toBe(LONG);
      });

      it('unlock clears the lock and the count, says whether there was a live lock, and leaves others alone', async () => {
        const store = port();
        await fail('alice', 3);
        await fail('carol', 3);
        await fail('dave', 2);
        expect(await store.unlock('alice')).toBe(true);
        expect(await store.lockedFor('alice')).toBe(0);
        expect(await store.unlock('alice')).toBe(false);
        expect(await store.unlock('missing')).toBe(false);
        // Two counted for dave: unlock says "not locked" and forgets them.
        expect(await store.unlock('dave')).toBe(false);
        expect((await fail('dave', 1))[0].failures).toBe(1);
        expect(await store.lockedFor('carol')).toBe(LONG);
      });

      it('an expired lock is not reported by unlock', async () => {
        await fail('alice', 3, { ...THREE, durationMs: SHORT });
        harness().advance(SHORT);
        expect(await port().unlock('alice')).toBe(false);
      });

      it('a turn is taken once until given back, or until its ttl ends', async () => {
        const store = port();
        expect(await store.takeTurn('t', 'h1', SHORT)).toBe(true);
        expect(await store.takeTurn('t', 'h2', SHORT)).toBe(false);
        expect(await store.takeTurn('other', 'h2', SHORT)).toBe(true);
        await store.releaseTurn('t', 'h1');
        expect(await store.takeTurn('t', 'h3', SHORT)).toBe(true);
        harness().advance(SHORT - 1);
        expect(await store.takeTurn('t', 'h4', SHORT)).toBe(false);
        harness().advance(1);
        expect(await store.takeTurn('t', 'h4', SHORT)).toBe(true);
        // Giving back a turn nobody holds is harmless.
        await store.releaseTurn('nobody', 'h1');
      });

      it("a holder that overran its ttl cannot give back the next holder's turn", async () => {
        const store = port();
        expect(await store.takeTurn('slow', 'first', SHORT)).toBe(true);
        harness().advance(SHORT);
        expect(await store.takeTurn('slow', 'second', SHORT)).toBe(true);
        // The first holder finishes late and gives back "its" turn: the second keeps it.
        await store.releaseTurn('slow', 'first');
        expect(await store.takeTurn('slow', 'third', SHORT)).toBe(false);
        await store.releaseTurn('slow', 'second');
        expect(await store.takeTurn('slow', 'third', SHORT)).toBe(true);
      });

      it("a username's turn, lock and failures are separate", async () => {
        const store = port();
        expect(await store.takeTurn('same', 'h1', LONG)).toBe(true);
        expect(await store.lockedFor('same')).toBe(0);
        await fail('same', 3);
        expect(await store.takeTurn('same', 'h2', LONG)).toBe(false);
        await store.releaseTurn('same', 'h1');
        expect(await store.lockedFor('same')).toBe(LONG);
        expect(await store.unlock('same')).toBe(true);
        expect(await store.takeTurn('same', 'h3', LONG)).toBe(true);
      });

      it('race: 50 concurrent failures, from several replicas → counts are exactly 1..50', async () => {
        const stores = await replicas(5);
        const results = await Promise.all(Array.from({ length: 50 }, (_, i) => stores[i % stores.length].recordFailure('hot', COUNT_ONLY)));
        expect(results.map((r) => r.failures).sort((x, y) => x - y)).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
      });

      it('race: 50 concurrent failures past the limit, from several replicas → exactly one reports the lock', async () => {
        const stores = await replicas(5);
        const policy = { ...THREE, maxFailures: 5 };
        const results = await Promise.all(Array.from({ length: 50 }, (_, i) => stores[i % stores.length].recordFailure('burst', policy)));
        expect(results.filter((r) => r.locked)).toHaveLength(1);
        expect(await port().lockedFor('burst')).toBe(LONG);
      });

      it('race: 50 concurrent turns, from several replicas → exactly one is taken', async () => {
        const stores = await replicas(5);
        const results = await Promise.all(Array.from({ length: 50 }, (_, i) => stores[i % stores.length].takeTurn('turn-race', `h${i}`, LONG)));
        expect(results.filter(Boolean)).toHaveLength(1);
      });
    },
  );
}
