/**
 * A bounded map from token string to its already-verified claims, valid until the token's
 * `exp`. Only successful verifications are stored, so a token that failed can never be served
 * from here; a token that differs by one byte is a different key.
 *
 * Eviction is FIFO: all tokens of one kind share one TTL, so the oldest insertion is also (about)
 * the first to expire, and FIFO costs O(1) per insert.
 */
export class VerifiedTokenCache<T> {
  private readonly entries = new Map<string, { value: T; exp: number; nbf: number | undefined }>();

  /** @param maxEntries - upper bound on cached tokens */
  constructor(private readonly maxEntries: number) {
    if (!Number.isInteger(maxEntries) || maxEntries < 0) throw new RangeError('maxEntries must be a non-negative integer');
  }

  /** Number of cached tokens (expired ones may linger until looked up or evicted). */
  get size(): number {
    return this.entries.size;
  }

  /**
   * The cached value, or undefined when absent, expired (`exp <= nowSec`, as jose decides) or
   * not yet valid (`nbf > nowSec`, e.g. after the clock went back).
   */
  get(token: string, nowSec: number): T | undefined {
    const hit = this.entries.get(token);
    if (hit === undefined) return undefined;
    if (hit.exp <= nowSec || (hit.nbf !== undefined && hit.nbf > nowSec)) {
      this.entries.delete(token);
      return undefined;
    }
    return hit.value;
  }

  /** Stores a verified token until `exp` (seconds since the epoch). */
  set(token: string, value: T, exp: number, nbf?: number): void {
    if (this.maxEntries === 0) return;
    this.entries.delete(token);
    while (this.entries.size >= this.maxEntries) {
      const oldest = this.entries.keys().next();
      if (oldest.done) break;
      this.entries.delete(oldest.value);
    }
    this.entries.set(token, { value, exp, nbf });
  }

  /** Drops everything (e.g. after a key set change). */
  clear(): void {
    this.entries.clear();
  }
}
