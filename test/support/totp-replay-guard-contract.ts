import { expect, it } from 'vitest';
import { describePort, LONG, SHORT, shuffled, type StateHarness } from './state-contract.js';

/** The {@link TotpReplayGuard} contract: a step is accepted once per user, never an older one. */
export function describeTotpReplayGuardContract(name: string, makeHarness: () => Promise<StateHarness>): void {
  describePort(
    `TotpReplayGuard contract: ${name}`,
    makeHarness,
    (p) => p.totpSteps,
    ({ harness, port, replicas }) => {
      it('accepts a greater step, rejects an equal or lower one', async () => {
        const store = port();
        expect(await store.claim('u1', 100, LONG)).toBe(true);
        expect(await store.claim('u1', 100, LONG)).toBe(false);
        expect(await store.claim('u1', 99, LONG)).toBe(false);
        expect(await store.claim('u1', 0, LONG)).toBe(false);
        expect(await store.claim('u1', 101, LONG)).toBe(true);
        expect(await store.claim('u1', 100, LONG)).toBe(false);
        expect(await store.claim('u1', 101, LONG)).toBe(false);
        expect(await store.claim('u1', 200, LONG)).toBe(true);
      });

      it('keeps one step per user', async () => {
        const store = port();
        expect(await store.claim('alice', 100, LONG)).toBe(true);
        expect(await store.claim('bob', 100, LONG)).toBe(true);
        expect(await store.claim('bob', 50, LONG)).toBe(false);
        expect(await store.claim('carol', 50, LONG)).toBe(true);
        expect(await store.claim('alice', 100, LONG)).toBe(false);
        expect(await store.claim('alice', 101, LONG)).toBe(true);
      });

      it('forgets the step after its ttl', async () => {
        const store = port();
        expect(await store.claim('u1', 100, SHORT)).toBe(true);
        expect(await store.claim('u1', 100, SHORT)).toBe(false);
        harness().advance(SHORT - 1);
        expect(await store.claim('u1', 100, SHORT)).toBe(false);
        harness().advance(1);
        // Forgotten: even a lower step is accepted once, then remembered again.
        expect(await store.claim('u1', 99, LONG)).toBe(true);
        expect(await store.claim('u1', 99, LONG)).toBe(false);
        expect(await store.claim('u1', 100, LONG)).toBe(true);
      });

      it('a rejected claim does not extend the ttl', async () => {
        const store = port();
        expect(await store.claim('u1', 100, SHORT)).toBe(true);
        expect(await store.claim('u1', 100, LONG)).toBe(false);
        expect(await store.claim('u1', 90, LONG)).toBe(false);
        harness().advance(SHORT);
        expect(await store.claim('u1', 100, LONG)).toBe(true);
      });

      it('race: 50 concurrent claims of the same step, from several replicas → exactly one accepted', async () => {
        const stores = await replicas(5);
        const results = await Promise.all(Array.from({ length: 50 }, (_, i) => stores[i % stores.length].claim('racer', 777, LONG)));
        expect(results.filter(Boolean)).toHaveLength(1);
        expect(await port().claim('racer', 777, LONG)).toBe(false);
        expect(await port().claim('racer', 778, LONG)).toBe(true);
      });

      it('race: concurrent claims of steps 1..50 → the greatest wins, no step accepted twice', async () => {
        const stores = await replicas(5);
        const steps = shuffled(Array.from({ length: 50 }, (_, i) => i + 1));
        const results = await Promise.all(steps.map((step, i) => stores[i % stores.length].claim('climber', step, LONG)));
        const accepted = steps.filter((_, i) => results[i]);
        expect(new Set(accepted).size).toBe(accepted.length);
        // Whatever order they ran in, the greatest step cannot have been refused.
        expect(accepted).toContain(50);
        expect(await port().claim('climber', 50, LONG)).toBe(false);
        expect(await port().claim('climber', 51, LONG)).toBe(true);
      });
    },
  );
}
