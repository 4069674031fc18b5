import { describe, expect, it } from 'vitest';
import { MemoryStateStore } from './memory.js';
import { describeStateStoreContract } from '../../../test/support/state-contract.js';

// Time is a fake clock: `sleep` moves it, so the suite runs instantly and exactly.
describeStateStoreContract('memory', async () => {
  let now = 1_700_000_000_000;
  const store = new MemoryStateStore(() => now);
  return {
    open: async () => store,
    sleep: async (ms) => {
      now += ms;
    },
    cleanup: () => store.close(),
  };
});

describe('MemoryStateStore', () => {
  it('is kind memory and reports exact times on its injected clock', async () => {
    let now = 0;
    const store = new MemoryStateStore(() => now);
    expect(store.kind).toBe('memory');
    expect(await store.increment('k', 1000)).toEqual({ count: 1, resetMs: 1000 });
    now += 250;
    expect(await store.increment('k', 1000)).toEqual({ count: 2, resetMs: 750 });
    await store.setFlag('f', 500);
    now += 499;
    expect(await store.flagTtl('f')).toBe(1);
    now += 1;
    expect(await store.flagTtl('f')).toBe(0);
  });
});
