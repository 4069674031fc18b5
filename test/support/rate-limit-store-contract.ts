import { expect, it } from 'vitest';
import { describePort, LONG, SHORT, type StateHarness } from './state-contract.js';

/** The {@link RateLimitStore} contract: fixed windows that start at a client's first hit. */
export function describeRateLimitStoreContract(name: string, makeHarness: () => Promise<StateHarness>): void {
  describePort(
    `RateLimitStore contract: ${name}`,
    makeHarness,
    (p) => p.rateLimits,
    ({ harness, port, replicas }) => {
      it('counts from 1 and reports the time left in the window', async () => {
        const store = port();
        expect(await store.hit('login', 'k', LONG)).toEqual({ count: 1, resetMs: LONG });
        expect(await store.hit('login', 'k', LONG)).toEqual({ count: 2, resetMs: LONG });
        expect(await store.hit('login', 'k', LONG)).toEqual({ count: 3, resetMs: LONG });
      });

      it('resetMs decreases as time passes (the window starts at the first hit)', async () => {
        const store = port();
        const a = await store.hit('login', 'k', LONG);
        harness().advance(300);
        expect(await store.hit('login', 'k', LONG)).toEqual({ count: 2, resetMs: a.resetMs - 300 });
      });

      it('a later hit does not extend the window', async () => {
        const store = port();
        await store.hit('login', 'k', SHORT);
        expect(await store.hit('login', 'k', LONG)).toEqual({ count: 2, resetMs: SHORT });
      });

      it('starts a new window after the old one ends', async () => {
        const store = port();
        await store.hit('login', 'k', SHORT);
        await store.hit('login', 'k', SHORT);
        harness().advance(SHORT - 1);
        expect(await store.hit('login', 'k', SHORT)).toEqual({ count: 3, resetMs: 1 });
        harness().advance(1);
        expect(await store.hit('login', 'k', LONG)).toEqual({ count: 1, resetMs: LONG });
        expect((await store.hit('login', 'k', LONG)).count).toBe(2);
      });

      it('keeps clients apart', async () => {
        const store = port();
        await store.hit('login', 'a', LONG);
        await store.hit('login', 'a', LONG);
        expect((await store.hit('login', 'b', LONG)).count).toBe(1);
        expect((await store.hit('login', 'a', LONG)).count).toBe(3);
      });

      it('race: 50 concurrent hits, from several replicas → counts are exactly 1..50', async () => {
        const stores = await replicas(5);
        const results = await Promise.all(Array.from({ length: 50 }, (_, i) => stores[i % stores.length].hit('login', 'hot', LONG)));
        expect(results.map((r) => r.count).sort((x, y) => x - y)).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
        for (const r of results) expect(r.resetMs).toBe(LONG);
        expect((await port().hit('login', 'hot', LONG)).count).toBe(51);
      });
    },
  );
}
