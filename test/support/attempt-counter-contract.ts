import { expect, it } from 'vitest';
import { describePort, LONG, SHORT, type StateHarness } from './state-contract.js';

/** The {@link AttemptCounter} contract: codes tried per MFA token, and one completed sign-in. */
export function describeAttemptCounterContract(name: string, makeHarness: () => Promise<StateHarness>): void {
  describePort(
    `AttemptCounter contract: ${name}`,
    makeHarness,
    (p) => p.mfaAttempts,
    ({ harness, port, replicas }) => {
      it('counts attempts per token from 1', async () => {
        const store = port();
        expect(await store.attempt('jti-a', LONG)).toBe(1);
        expect(await store.attempt('jti-a', LONG)).toBe(2);
        expect(await store.attempt('jti-b', LONG)).toBe(1);
        expect(await store.attempt('jti-a', LONG)).toBe(3);
      });

      it('remembers attempts for the ttl from the first (a later attempt does not extend it)', async () => {
        const store = port();
        await store.attempt('j', SHORT);
        harness().advance(SHORT - 1);
        expect(await store.attempt('j', LONG)).toBe(2);
        harness().advance(1);
        expect(await store.attempt('j', LONG)).toBe(1);
      });

      it('a token completes once while remembered', async () => {
        const store = port();
        expect(await store.complete('j', SHORT)).toBe(true);
        expect(await store.complete('j', SHORT)).toBe(false);
        expect(await store.complete('other', SHORT)).toBe(true);
        harness().advance(SHORT - 1);
        expect(await store.complete('j', SHORT)).toBe(false);
        harness().advance(1);
        expect(await store.complete('j', SHORT)).toBe(true);
      });

      it('attempts and completion of one token are separate', async () => {
        const store = port();
        expect(await store.complete('j', LONG)).toBe(true);
        expect(await store.attempt('j', LONG)).toBe(1);
        expect(await store.complete('j', LONG)).toBe(false);
      });

      it('race: 50 concurrent attempts, from several replicas → counts are exactly 1..50', async () => {
        const stores = await replicas(5);
        const counts = await Promise.all(Array.from({ length: 50 }, (_, i) => stores[i % stores.length].attempt('hot', LONG)));
        expect(counts.sort((x, y) => x - y)).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
      });

      it('race: 50 concurrent completions, from several replicas → exactly one', async () => {
        const stores = await replicas(5);
        const results = await Promise.all(Array.from({ length: 50 }, (_, i) => stores[i % stores.length].complete('done-race', LONG)));
        expect(results.filter(Boolean)).toHaveLength(1);
      });
    },
  );
}
