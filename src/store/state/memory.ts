import type { StateStore } from '../ports.js';

/**
 * In-process state for one process (embedded mode). Every method is synchronous inside, so
 * each is atomic with respect to the event loop.
 */
export class MemoryStateStore implements StateStore {
  readonly kind = 'memory' as const;
  private readonly counters = new Map<string, { count: number; resetAt: number }>();
  private readonly flags = new Map<string, number>();
  private readonly steps = new Map<string, { step: number; until: number }>();
  private readonly events = new Map<string, number[]>();
  private ops = 0;

  constructor(private readonly now: () => number = Date.now) {}

  async claimTotpStep(userId: string, step: number, ttlMs: number): Promise<boolean> {
    const t = this.now();
    this.sweep(t);
    const last = this.steps.get(userId);
    if (last && last.until > t && step <= last.step) return false;
    this.steps.set(userId, { step, until: t + ttlMs });
    return true;
  }

  async increment(key: string, windowMs: number): Promise<{ count: number; resetMs: number }> {
    const t = this.now();
    this.sweep(t);
    const c = this.counters.get(key);
    if (!c || c.resetAt <= t) {
      this.counters.set(key, { count: 1, resetAt: t + windowMs });
      return { count: 1, resetMs: windowMs };
    }
    c.count++;
    return { count: c.count, resetMs: c.resetAt - t };
  }

  async recordEvent(key: string, windowMs: number): Promise<number> {
    const t = this.now();
    this.sweep(t);
    const list = (this.events.get(key) ?? []).filter((at) => at > t - windowMs);
    list.push(t);
    this.events.set(key, list);
    return list.length;
  }

  async setFlag(key: string, ttlMs: number): Promise<void> {
    this.flags.set(key, this.now() + ttlMs);
  }

  async setFlagIfAbsent(key: string, ttlMs: number): Promise<boolean> {
    // No await between the check and the set: that is what makes it atomic here.
    const t = this.now();
    const until = this.flags.get(key);
    if (until !== undefined && until > t) return false;
    this.flags.set(key, t + ttlMs);
    return true;
  }

  async flagTtl(key: string): Promise<number> {
    const until = this.flags.get(key);
    if (until === undefined) return 0;
    const left = until - this.now();
    if (left <= 0) {
      this.flags.delete(key);
      return 0;
    }
    return left;
  }

  async delete(...keys: string[]): Promise<void> {
    for (const k of keys) {
      this.counters.delete(k);
      this.flags.delete(k);
      this.events.delete(k);
    }
  }

  async ping(): Promise<void> {}

  async close(): Promise<void> {}

  /** Drops expired entries every few hundred operations, so memory stays bounded. */
  private sweep(t: number): void {
    if (++this.ops % 512 !== 0) return;
    for (const [k, c] of this.counters) if (c.resetAt <= t) this.counters.delete(k);
    for (const [k, until] of this.flags) if (until <= t) this.flags.delete(k);
    for (const [k, s] of this.steps) if (s.until <= t) this.steps.delete(k);
    // Event logs are kept for at most a day here; windows are far shorter.
    for (const [k, list] of this.events) if (list.length === 0 || list[list.length - 1] <= t - 86_400_000) this.events.delete(k);
  }
}
