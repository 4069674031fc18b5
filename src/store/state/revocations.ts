import type { Revocation, RevocationList, SessionStore } from '../ports.js';

/** In-process revocation list: a map of session id to the time it can be forgotten. */
export class MemoryRevocationList implements RevocationList {
  private readonly entries = new Map<string, number>();
  private readonly listeners: ((sessionId: string) => void)[] = [];
  constructor(private readonly now: () => Date = () => new Date()) {}

  /** Calls `fn` for every revocation added from now on (local, broadcast or synced). */
  onAdd(fn: (sessionId: string) => void): void {
    this.listeners.push(fn);
  }

  isRevoked(sessionId: string): boolean {
    const until = this.entries.get(sessionId);
    if (until === undefined) return false;
    if (until <= this.now().getTime()) {
      // The session is past its absolute expiry: its tokens are dead anyway.
      this.entries.delete(sessionId);
      return true;
    }
    return true;
  }

  add(sessionId: string, expiresAt: Date): void {
    const known = this.entries.has(sessionId);
    this.entries.set(sessionId, expiresAt.getTime());
    if (!known) for (const fn of this.listeners) fn(sessionId);
  }

  size(): number {
    return this.entries.size;
  }

  /** Drops entries whose sessions have expired. */
  prune(): void {
    const now = this.now().getTime();
    for (const [id, until] of this.entries) if (until <= now) this.entries.delete(id);
  }
}

/**
 * Keeps a local revocation list in step with the database: loads every live revocation at
 * start, then polls for new ones. This is how a revocation made by the CLI or by another
 * replica reaches this process without the hot path ever querying the database.
 */
export class RevocationSync {
  private timer: NodeJS.Timeout | undefined;
  private since = new Date(0);
  private running: Promise<void> | undefined;

  constructor(
    private readonly sessions: SessionStore,
    readonly list: MemoryRevocationList,
    private readonly opts: { intervalMs: number; now?: () => Date; onError?: (e: unknown) => void },
  ) {}

  /** Loads all live revocations, then starts polling. */
  async start(): Promise<void> {
    await this.poll();
    this.timer = setInterval(() => void this.tick(), this.opts.intervalMs);
    this.timer.unref();
  }

  private async tick(): Promise<void> {
    if (this.running) return;
    await this.exclusive(() => this.poll()).catch((e) => this.opts.onError?.(e));
  }

  /** One synchronisation round (new revocations since the last one, with a minute of overlap). */
  async poll(): Promise<void> {
    // Look back a minute: a revocation committed while the previous query ran, or stamped by a
    // process whose clock lags ours, is still picked up (adding one twice is harmless).
    await this.load(new Date(Math.max(0, this.since.getTime() - 60_000)));
  }

  /**
   * Reloads every live revocation from the database, after waiting for a running round. For
   * when revocation messages may have been lost (the Redis subscriber reconnected). Rejects
   * when the database query fails.
   */
  async resync(): Promise<void> {
    while (this.running) await this.running;
    await this.exclusive(() => this.load(new Date(0)));
  }

  /** Runs one round with `running` set, so periodic ticks do not overlap it. */
  private exclusive(round: () => Promise<void>): Promise<void> {
    const result = round();
    const running = result
      .catch(() => undefined)
      .finally(() => {
        if (this.running === running) this.running = undefined;
      });
    this.running = running;
    return result;
  }

  private async load(from: Date): Promise<void> {
    const now = (this.opts.now ?? (() => new Date()))();
    const found: Revocation[] = await this.sessions.revokedSince(from, now);
    for (const r of found) this.list.add(r.sessionId, r.expiresAt);
    this.since = now;
    this.list.prune();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }
}
